//! Damaged data directories: the server still starts, keeps what is intact, and reports what it
//! dropped in its log and metrics.


use crate::common::*;
use std::path::{Path, PathBuf};
use toolwatch_storage::{Db, DbOptions, LabelRef, Matcher};

/// Writes `batches` one-sample batches (one WAL record each) for series `m`.
fn fill(data: &Path, batches: i64) {
    let db = Db::open(data, DbOptions::default()).unwrap();
    for t in 0..batches {
        let mut app = db.appender().unwrap();
        app.append(&[LabelRef { name: "__name__", value: "m" }], t * 1000, t as f64).unwrap();
        app.commit().unwrap();
    }
    db.close().unwrap();
}

fn largest_segment(data: &Path) -> PathBuf {
    let mut segs: Vec<(u64, PathBuf)> = std::fs::read_dir(data.join("wal"))
        .unwrap()
        .flatten()
        .map(|e| (e.metadata().unwrap().len(), e.path()))
        .filter(|(_, p)| p.file_name().unwrap().to_str().unwrap().parse::<u32>().is_ok())
        .collect();
    segs.sort();
    segs.pop().unwrap().1
}

fn stored_timestamps(data: &Path) -> Vec<i64> {
    let db = Db::open(data, DbOptions::default()).unwrap();
    let s = db.querier(0, i64::MAX).select(&[Matcher::eq("__name__", "m")]).unwrap();
    s.first().map(|s| s.iter().map(|x| x.0).collect()).unwrap_or_default()
}

#[test]
fn corrupt_wal_record_is_truncated_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fill(&data, 100);
    let seg = largest_segment(&data);
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0xff; // inside the value of the last sample record
    std::fs::write(&seg, &bytes).unwrap();

    let mut server = Server::start(&data, &[]);
    assert_eq!(server.metric("toolwatch_storage_wal_corruptions_total"), Some(1.0));
    assert!(server.metric("toolwatch_storage_wal_truncated_bytes_total").unwrap() > 0.0);
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(std::time::Duration::from_secs(10)), Some(0));
    assert!(server.log_text().contains("WAL corruption"), "{}", server.log_text());
    let ts = stored_timestamps(&data);
    assert_eq!(ts, (0..99).map(|t| t * 1000).collect::<Vec<_>>(), "all records before the bad one survive");
}

#[test]
fn torn_wal_tail_is_truncated_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fill(&data, 50);
    let seg = largest_segment(&data);
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(len - 5).unwrap();

    let mut server = Server::start(&data, &[]);
    assert_eq!(server.metric("toolwatch_storage_wal_corruptions_total"), Some(1.0));
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(std::time::Duration::from_secs(10)), Some(0));
    assert_eq!(stored_timestamps(&data).len(), 49);
}

#[test]
fn block_with_missing_file_is_moved_aside_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fill(&data, 10);
    {
        let db = Db::open(&data, DbOptions::default()).unwrap();
        assert_eq!(db.flush().unwrap().blocks_written.len(), 1);
    }
    let block = std::fs::read_dir(data.join("blocks")).unwrap().flatten().next().unwrap().path();
    std::fs::remove_file(block.join("index")).unwrap();

    let mut server = Server::start(&data, &[]);
    assert_eq!(server.metric("toolwatch_storage_blocks_dropped_total"), Some(1.0));
    assert_eq!(server.metric("toolwatch_storage_blocks"), Some(0.0));
    server.signal(libc::SIGINT);
    assert_eq!(server.wait_exit(std::time::Duration::from_secs(10)), Some(0));
    assert!(server.log_text().contains("dropping unreadable block"));
    assert!(
        block.with_extension("corrupt").exists()
            || std::path::Path::new(&format!("{}.corrupt", block.display())).exists()
    );
}

#[test]
fn second_server_on_same_dir_exits_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = Server::start(&data, &[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_toolwatch"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port()), "--data-dir", data.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("locked by another toolwatch process") && err.contains(&format!("pid {}", first.child.id())),
        "{err}"
    );
}

#[test]
fn ready_only_after_wal_replay_and_healthy_before() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        // Enough WAL that replay takes a while: 200k series x 5 samples.
        let db = Db::open(&data, DbOptions::default()).unwrap();
        let names: Vec<String> = (0..200_000).map(|i| format!("s{i}")).collect();
        for t in 0..5 {
            let mut app = db.appender().unwrap();
            for n in &names {
                app.append(
                    &[LabelRef { name: "__name__", value: "m" }, LabelRef { name: "id", value: n }],
                    t * 1000,
                    1.0,
                )
                .unwrap();
            }
            app.commit().unwrap();
        }
        db.close().unwrap();
    }
    let server = Server::spawn(&data, &[]);
    let (mut saw_503, mut healthy_while_replaying) = (false, false);
    let start = std::time::Instant::now();
    loop {
        match http(&server.addr, "GET", "/-/ready", &[], &[]) {
            Ok((503, _)) => {
                saw_503 = true;
                if let Ok((200, _)) = http(&server.addr, "GET", "/-/healthy", &[], &[]) {
                    healthy_while_replaying = true;
                }
                let (code, _) = remote_write(&server.addr, &[(vec![("__name__", "x")], vec![(1, 1.0)])]).unwrap();
                // 503 while replaying; a 204 is only fine if the replay has just finished.
                if code != 503 {
                    assert_eq!(code, 204);
                    assert_eq!(
                        http(&server.addr, "GET", "/-/ready", &[], &[]).unwrap().0,
                        200,
                        "write accepted before ready"
                    );
                }
            }
            Ok((200, _)) => break,
            _ => {}
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(120), "never ready: {}", server.log_text());
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(saw_503 && healthy_while_replaying, "/-/ready answered 503 and /-/healthy 200 during replay");
    let series = server.metric("toolwatch_storage_head_series").unwrap();
    assert!(series == 200_000.0 || series == 200_001.0, "{series}");
}
