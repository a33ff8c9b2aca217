//! A full disk is a failure a retry can fix: the write gets 500 (not 400, not a crash), the
//! server keeps running, writes succeed again once space is back, and nothing acknowledged is
//! lost — the failed write leaves no torn record behind for replay to stop at.
//! The same across ENOSPC while a block is written: the partial block is removed at once and
//! the WAL still holds every acknowledged sample after a SIGKILL.
//! A failed WAL fsync answers 503 until a later fsync succeeds (injected through
//! `TOOLWATCH_FAULT_DIR`; runs anywhere).
//! The ENOSPC tests need root to mount a small tmpfs; skipped (with a message) where mounting is
//! not allowed.


use crate::common::*;
use std::process::Command;
use std::time::Duration;
use toolwatch_storage::{Db, DbOptions, Matcher};

struct Mount(std::path::PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn disk_full_gives_500_then_recovers_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("fs");
    std::fs::create_dir_all(&mnt).unwrap();
    let ok =
        Command::new("mount").args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"]).arg(&mnt).status().map(|s| s.success());
    if !matches!(ok, Ok(true)) {
        eprintln!("skipping: cannot mount a tmpfs here (needs root)");
        return;
    }
    let _m = Mount(mnt.clone());
    let data = mnt.join("data");
    let cfg = dir.path().join("c.yml");
    std::fs::write(&cfg, "storage:\n  wal_segment_bytes: 1048576\n").unwrap();
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    // Leave well under a megabyte free.
    let ballast = mnt.join("ballast");
    let free = fs_free(&mnt);
    std::fs::write(&ballast, vec![1u8; (free - 300_000) as usize]).unwrap();

    let mut acked: Vec<i64> = Vec::new();
    let mut t = 0i64;
    let mut saw_500 = false;
    for _ in 0..2000 {
        let series: Vec<(Vec<(&str, &str)>, Vec<(i64, f64)>)> =
            vec![(vec![("__name__", "full")], (0..200).map(|k| (t + k, (t + k) as f64 * 1.5)).collect())];
        let (code, body) = remote_write(&server.addr, &series).unwrap();
        match code {
            204 => acked.extend(t..t + 200),
            500 => {
                assert!(body.contains("retry"), "{body}");
                saw_500 = true;
                break;
            }
            other => panic!("unexpected {other}: {body}"),
        }
        t += 200;
    }
    assert!(saw_500, "the disk never filled up");
    // Space comes back: the same request is retried and succeeds.
    std::fs::remove_file(&ballast).unwrap();
    let series =
        vec![(vec![("__name__", "full")], (0..200).map(|k| (t + k, (t + k) as f64 * 1.5)).collect::<Vec<_>>())];
    let (code, body) = remote_write(&server.addr, &series).unwrap();
    assert_eq!(code, 204, "{body}");
    acked.extend(t..t + 200);
    t += 200;
    let series =
        vec![(vec![("__name__", "full")], (0..200).map(|k| (t + k, (t + k) as f64 * 1.5)).collect::<Vec<_>>())];
    assert_eq!(remote_write(&server.addr, &series).unwrap().0, 204);
    acked.extend(t..t + 200);

    let mut server = server;
    server.kill9();
    let db = Db::open(&data, DbOptions::default()).unwrap();
    let got = db.querier(0, i64::MAX).select(&[Matcher::eq("__name__", "full")]).unwrap();
    let have: std::collections::BTreeMap<i64, f64> = got[0].samples().into_iter().collect();
    for ts in &acked {
        assert_eq!(have.get(ts), Some(&(*ts as f64 * 1.5)), "acknowledged t={ts} lost after the disk-full episode");
    }
    assert_eq!(db.stats().wal_corruptions.load(std::sync::atomic::Ordering::Relaxed), 0, "no torn record left behind");
    drop(db);
    let _ = Duration::from_secs(0);
}

/// A failed WAL fsync against the real binary (switched on through `TOOLWATCH_FAULT_DIR`, so no
/// root is needed): it is counted and shown, writes answer 503 until a later fsync succeeds and
/// 204 after, and after a SIGKILL every acknowledged sample is there.
#[test]
fn wal_fsync_failure_gives_503_until_a_later_sync_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let faults = dir.path().join("faults");
    std::fs::create_dir_all(&faults).unwrap();
    let cfg = dir.path().join("c.yml");
    std::fs::write(&cfg, "storage:\n  wal_fsync: batch\nself_monitoring:\n  enabled: false\n").unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let log = dir.path().join("server.log");
    let child = Command::new(env!("CARGO_BIN_EXE_toolwatch"))
        .args(["--listen", &addr, "--data-dir", data.to_str().unwrap(), "--config", cfg.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .env("TOOLWATCH_FAULT_DIR", &faults)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("starting toolwatch");
    let mut server = Server { child, addr, data_dir: data.clone(), log };
    server.wait_ready(Duration::from_secs(60));
    let write = |t: i64| remote_write(&server.addr, &[(vec![("__name__", "fs")], vec![(t, t as f64)])]).unwrap();
    let mut acked: Vec<i64> = Vec::new();
    for t in 0..5 {
        let (code, body) = write(t);
        assert_eq!(code, 204, "{body}");
        acked.push(t);
    }
    assert_eq!(server.metric("toolwatch_wal_healthy"), Some(1.0));
    std::fs::write(faults.join("wal_fsync"), b"").unwrap();
    let (code, body) = write(100);
    assert_eq!(code, 503, "the batch whose fsync failed: {body}");
    assert!(body.contains("retry"), "{body}");
    assert_eq!(server.metric("toolwatch_wal_healthy"), Some(0.0));
    assert!(server.metric("toolwatch_wal_fsync_failures_total").unwrap() >= 1.0);
    let (code, body) = write(101);
    assert_eq!(code, 503, "refused while the fsync keeps failing: {body}");
    std::fs::remove_file(faults.join("wal_fsync")).unwrap();
    let start = std::time::Instant::now();
    loop {
        let (code, body) = write(102);
        if code == 204 {
            acked.push(102);
            break;
        }
        assert_eq!(code, 503, "{body}");
        assert!(start.elapsed() < Duration::from_secs(20), "writes never accepted again: {}", server.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(server.metric("toolwatch_wal_healthy"), Some(1.0));
    for t in 103..110 {
        assert_eq!(write(t).0, 204);
        acked.push(t);
    }
    assert!(server.log_text().contains("WAL fsync failed"), "{}", server.log_text());
    server.kill9();
    let db = Db::open(&data, DbOptions::default()).unwrap();
    let got = db.querier(0, i64::MAX).select(&[Matcher::eq("__name__", "fs")]).unwrap();
    let have: std::collections::BTreeMap<i64, f64> = got[0].samples().into_iter().collect();
    for t in &acked {
        assert_eq!(have.get(t), Some(&(*t as f64)), "acknowledged t={t} lost");
    }
    assert!(!have.contains_key(&101), "a refused sample was stored");
}

/// Mounts a tmpfs of `size` at `mnt`, or None (with a message) where mounting is not allowed.
fn mount_tmpfs(mnt: &std::path::Path, size: &str) -> Option<Mount> {
    std::fs::create_dir_all(mnt).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o"])
        .arg(format!("size={size}"))
        .arg("tmpfs")
        .arg(mnt)
        .status()
        .map(|s| s.success());
    if !matches!(ok, Ok(true)) {
        eprintln!("skipping: cannot mount a tmpfs here (needs root)");
        return None;
    }
    Some(Mount(mnt.to_path_buf()))
}

/// Fills the file system holding `path` to the last byte, with `path` as the ballast.
fn fill_up(path: &std::path::Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    for size in [1 << 16, 4096, 512, 1] {
        let buf = vec![7u8; size];
        while f.write_all(&buf).is_ok() {}
    }
}

fn entries(dir: &std::path::Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    rd.flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect()
}

/// ENOSPC while a block is written (a flush with a full disk): the flush fails, the partial
/// `.tmp` block is gone at once (not at the next start), nothing is quarantined, and after a
/// SIGKILL every acknowledged sample is still there (the WAL kept it).
#[test]
fn disk_full_during_block_write_then_sigkill_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("fs");
    let Some(_m) = mount_tmpfs(&mnt, "8m") else { return };
    let data = mnt.join("data");
    let cfg = dir.path().join("c.yml");
    std::fs::write(&cfg, "storage:\n  wal_segment_bytes: 1048576\nself_monitoring:\n  enabled: false\n").unwrap();
    let mut server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let value = |i: usize, t: i64| i as f64 * 1000.0 + t as f64 / 7.0;
    let names: Vec<String> = (0..20).map(|i| format!("s{i}")).collect();
    let mut acked: Vec<(usize, i64)> = Vec::new();
    // 3h of data at one sample per 10s for 20 series, 10 timestamps per request.
    for step in 0..108i64 {
        let ts: Vec<i64> = (0..10).map(|k| (step * 10 + k) * 10_000).collect();
        let series: Vec<(Vec<(&str, &str)>, Vec<(i64, f64)>)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let samples = ts.iter().map(|&t| (t, value(i, t))).collect();
                (vec![("__name__", "bf"), ("id", n.as_str())], samples)
            })
            .collect();
        let (code, body) = remote_write(&server.addr, &series).unwrap();
        assert_eq!(code, 204, "{body}");
        acked.extend((0..names.len()).flat_map(|i| ts.iter().map(move |&t| (i, t))));
    }
    fill_up(&mnt.join("ballast"));
    let (code, body) = http(&server.addr, "POST", "/api/v1/admin/flush", &[], &[]).unwrap();
    let body = String::from_utf8_lossy(&body).to_string();
    assert_eq!(code, 500, "a flush onto a full disk fails: {body}");
    let blocks = entries(&data.join("blocks"));
    assert!(blocks.is_empty(), "no block, and no partial .tmp block left behind: {blocks:?}");
    let wal = entries(&data.join("wal"));
    assert!(wal.iter().all(|n| !n.ends_with(".tmp")), "{wal:?}");
    assert_eq!(server.metric("toolwatch_tsdb_blocks_quarantined_total"), Some(0.0), "a full disk is not corruption");
    assert!(server.log_text().contains("persistence step failed"), "{}", server.log_text());
    server.kill9();
    std::fs::remove_file(mnt.join("ballast")).unwrap();

    let db = Db::open(&data, DbOptions::default()).unwrap();
    let got = db.querier(0, i64::MAX).select(&[Matcher::eq("__name__", "bf")]).unwrap();
    assert_eq!(got.len(), names.len());
    let mut have: std::collections::BTreeMap<(usize, i64), f64> = std::collections::BTreeMap::new();
    for s in &got {
        let i = names.iter().position(|n| Some(n.as_str()) == s.labels.get("id")).unwrap();
        have.extend(s.samples().into_iter().map(|(t, v)| ((i, t), v)));
    }
    for &(i, t) in &acked {
        assert_eq!(have.get(&(i, t)), Some(&value(i, t)), "acknowledged s{i} t={t} lost after ENOSPC in a block write");
    }
    assert_eq!(db.stats().wal_corruptions.load(std::sync::atomic::Ordering::Relaxed), 0);
}

fn fs_free(p: &std::path::Path) -> u64 {
    let out = Command::new("df").arg("-B1").arg("--output=avail").arg(p).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().nth(1).unwrap().trim().parse().unwrap()
}
