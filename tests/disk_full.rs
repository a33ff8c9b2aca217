//! A full disk is a failure a retry can fix: the write gets 500 (not 400, not a crash), the
//! server keeps running, writes succeed again once space is back, and nothing acknowledged is
//! lost — the failed write leaves no torn record behind for replay to stop at.
//! Needs root to mount a small tmpfs; skipped (with a message) where mounting is not allowed.

mod common;

use common::*;
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

fn fs_free(p: &std::path::Path) -> u64 {
    let out = Command::new("df").arg("-B1").arg("--output=avail").arg(p).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().nth(1).unwrap().trim().parse().unwrap()
}
