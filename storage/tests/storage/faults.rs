//! Faults while persisting, through the public API and the fault-injection hooks
//! (`Db::faults`): a failed WAL fsync refuses writes until a later one succeeds; a corrupt block
//! is quarantined and the rest of the job goes on; partial blocks and checkpoints are removed at
//! once; retention never measures from a time that has not come yet.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use toolwatch_storage::fault::Fault;
use toolwatch_storage::{wall_clock_ms, Db, DbOptions, FsyncMode, LabelRef, Matcher, StorageError};

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

fn lr<'a>(pairs: &'a [(&'a str, &'a str)]) -> Vec<LabelRef<'a>> {
    pairs.iter().map(|(n, v)| LabelRef { name: n, value: v }).collect()
}

/// One batch: a sample per timestamp of series `name`, value = timestamp.
fn write(db: &Db, name: &str, ts: impl IntoIterator<Item = i64>) {
    let mut app = db.appender().unwrap();
    for t in ts {
        app.append(&lr(&[("__name__", name)]), t, t as f64).unwrap();
    }
    app.commit().unwrap();
}

fn timestamps(db: &Db, name: &str) -> Vec<i64> {
    let got = db.querier(i64::MIN, i64::MAX).select(&[Matcher::eq("__name__", name)]).unwrap();
    got.first()
        .map(|s| {
            s.iter()
                .map(|(t, v)| {
                    assert_eq!(v, t as f64, "value of t={t}");
                    t
                })
                .collect()
        })
        .unwrap_or_default()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect();
    v.sort();
    v
}

/// Flips the last data byte of the last chunk of the block in `block_dir` (its CRC then fails).
fn corrupt_last_chunk(block_dir: &Path) {
    let p = block_dir.join("chunks");
    let mut b = std::fs::read(&p).unwrap();
    let n = b.len();
    b[n - 5] ^= 0x5a;
    std::fs::write(&p, &b).unwrap();
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn failed_fsync_refuses_writes_until_a_later_sync_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DbOptions { wal_fsync: FsyncMode::Batch, ..Default::default() };
    let db = Db::open(dir.path(), opts.clone()).unwrap();
    write(&db, "m", [1000]);
    assert!(db.wal_healthy());

    db.faults().set(Fault::WalFsync, true);
    let mut app = db.appender().unwrap();
    app.append(&lr(&[("__name__", "m")]), 2000, 2000.0).unwrap();
    let err = app.commit().unwrap_err();
    assert!(matches!(err, StorageError::WalUnhealthy { .. }), "{err}");
    assert!(err.to_string().contains("retry"), "{err}");
    assert!(!db.wal_healthy());
    assert_eq!(db.wal_fsync_failures(), 1);
    // Refused before anything reaches the head while the WAL is unhealthy.
    assert!(matches!(db.appender().err(), Some(StorageError::WalUnhealthy { .. })));
    // A retry that fails again keeps it so, and is counted.
    assert!(matches!(db.sync_wal(), Err(StorageError::WalUnhealthy { .. })));
    assert_eq!(db.wal_fsync_failures(), 2);
    assert!(db.appender().is_err());

    db.faults().set(Fault::WalFsync, false);
    db.sync_wal().unwrap();
    assert!(db.wal_healthy());
    write(&db, "m", [3000]);
    assert_eq!(db.wal_fsync_failures(), 2);
    drop(db);
    let db = Db::open(dir.path(), opts).unwrap();
    assert_eq!(timestamps(&db, "m"), vec![1000, 2000, 3000]);
}

#[test]
fn background_sync_reports_and_recovers_and_honours_a_long_interval() {
    let dir = tempfile::tempdir().unwrap();
    let opts =
        DbOptions { wal_fsync: FsyncMode::Interval, wal_fsync_interval: Duration::from_secs(3), ..Default::default() };
    let db = Db::open(dir.path(), opts).unwrap();
    db.start_background(Duration::from_secs(3600));
    let started = Instant::now();
    db.faults().set(Fault::WalFsync, true);
    // Interval mode: the commit does not fsync, so it is acknowledged.
    write(&db, "m", [1000]);
    std::thread::sleep(Duration::from_millis(1500));
    if started.elapsed() < Duration::from_millis(2800) {
        assert_eq!(db.wal_fsync_failures(), 0, "fsynced before wal_fsync_interval (3s) was up");
    }
    wait_until("the background fsync to fail", || db.wal_fsync_failures() >= 1);
    assert!(started.elapsed() >= Duration::from_millis(2900), "first fsync after {:?}", started.elapsed());
    assert!(!db.wal_healthy());
    assert!(matches!(db.appender().err(), Some(StorageError::WalUnhealthy { .. })));
    // Retried every tick while failing.
    let seen = db.wal_fsync_failures();
    wait_until("a retry", || db.wal_fsync_failures() > seen);
    db.faults().set(Fault::WalFsync, false);
    wait_until("the WAL to be healthy again", || db.wal_healthy());
    write(&db, "m", [2000]);
    assert_eq!(timestamps(&db, "m"), vec![1000, 2000]);
    db.close().unwrap();
}

#[test]
fn torn_wal_append_is_an_error_and_the_retry_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    write(&db, "m", [1000]);
    db.faults().set(Fault::WalWrite, true);
    let mut app = db.appender().unwrap();
    app.append(&lr(&[("__name__", "m")]), 2000, 2000.0).unwrap();
    app.append(&lr(&[("__name__", "n")]), 2000, 2000.0).unwrap();
    let err = app.commit().unwrap_err();
    assert!(matches!(err, StorageError::Io { .. }), "a write error, not an unhealthy WAL: {err}");
    assert!(db.wal_healthy());
    db.faults().set(Fault::WalWrite, false);
    // The client's retry of the same batch: equal samples are accepted again.
    write(&db, "m", [2000]);
    write(&db, "n", [2000]);
    db.close().unwrap();
    drop(db);
    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    assert_eq!(timestamps(&db, "m"), vec![1000, 2000]);
    assert_eq!(timestamps(&db, "n"), vec![2000]);
    assert_eq!(db.stats().wal_corruptions.load(Ordering::Relaxed), 0, "the torn record was cut back");
}

#[test]
fn corrupt_block_found_by_compaction_is_quarantined_and_the_rest_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    // Phase 1: one block per 2h window (no compaction), retention off.
    let write_opts = DbOptions { retention_ms: 0, max_block_span_ms: 2 * HOUR, ..Default::default() };
    let bad_dir;
    {
        let db = Db::open(dir.path(), write_opts).unwrap();
        let ranges = [(0, 2 * HOUR), (12 * HOUR, 18 * HOUR), (20 * HOUR, 22 * HOUR)];
        for (a, b) in ranges {
            write(&db, "m", (a..b).step_by(MIN as usize));
        }
        db.flush().unwrap();
        let blocks = db.blocks();
        assert_eq!(blocks.len(), 5, "{:?}", blocks.iter().map(|b| &b.meta).collect::<Vec<_>>());
        bad_dir = blocks.iter().find(|b| b.meta.min_time == 14 * HOUR).unwrap().dir.clone();
        db.close().unwrap();
    }
    corrupt_last_chunk(&bad_dir);

    // Phase 2: compaction of [12h, 18h) meets the bad block; retention (11h) must still run.
    let opts = DbOptions { retention_ms: 11 * HOUR, max_block_span_ms: 6 * HOUR, ..Default::default() };
    let db = Db::open(dir.path(), opts.clone()).unwrap();
    assert_eq!(db.blocks().len(), 5, "a block with a bad chunk CRC still opens (CRCs are checked on first read)");
    let report = db.persist_due().unwrap();
    assert_eq!(report.blocks_quarantined, 1, "{report:?}");
    assert_eq!(report.blocks_compacted, 2, "{report:?}");
    assert_eq!(report.blocks_deleted, 1, "retention ran: {report:?}");
    assert_eq!(db.stats().blocks_quarantined.load(Ordering::Relaxed), 1);
    assert!(!bad_dir.exists());
    let aside = format!("{}.corrupt", bad_dir.file_name().unwrap().to_string_lossy());
    assert!(names(&dir.path().join("blocks")).contains(&aside), "{:?}", names(&dir.path().join("blocks")));
    let want: Vec<i64> = [(12 * HOUR, 14 * HOUR), (16 * HOUR, 18 * HOUR), (20 * HOUR, 22 * HOUR)]
        .into_iter()
        .flat_map(|(a, b)| (a..b).step_by(MIN as usize))
        .collect();
    assert_eq!(timestamps(&db, "m"), want);
    drop(db);
    let db = Db::open(dir.path(), opts).unwrap();
    assert_eq!(timestamps(&db, "m"), want, "the quarantined block is not opened again");
    assert_eq!(db.stats().blocks_dropped.load(Ordering::Relaxed), 0);
}

#[test]
fn corrupt_chunk_found_by_a_query_is_an_error_then_quarantined_by_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DbOptions { max_block_span_ms: 2 * HOUR, ..Default::default() };
    let bad_dir;
    {
        let db = Db::open(dir.path(), opts.clone()).unwrap();
        write(&db, "m", (0..4 * HOUR).step_by(MIN as usize));
        db.flush().unwrap();
        assert_eq!(db.blocks().len(), 2);
        bad_dir = db.blocks()[1].dir.clone();
        db.close().unwrap();
    }
    corrupt_last_chunk(&bad_dir);
    let db = Db::open(dir.path(), opts).unwrap();
    // The intact block answers; the damaged one gives this query an error, not a panic.
    let ok = db.querier(0, HOUR).select(&[Matcher::eq("__name__", "m")]).unwrap();
    assert_eq!(ok[0].iter().count(), 61);
    let err = db.querier(0, 4 * HOUR).select(&[Matcher::eq("__name__", "m")]).err().expect("the query fails");
    assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
    // Readers never move files: the block stays until the background job runs.
    assert!(bad_dir.exists());
    assert!(db.blocks()[1].is_corrupt());
    let report = db.persist_due().unwrap();
    assert_eq!(report.blocks_quarantined, 1);
    assert!(!bad_dir.exists());
    assert_eq!(db.blocks().len(), 1);
    assert_eq!(timestamps(&db, "m"), (0..2 * HOUR).step_by(MIN as usize).collect::<Vec<_>>());
}

#[test]
fn failed_block_write_leaves_no_tmp_keeps_the_head_and_retention_still_runs() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Db::open(dir.path(), DbOptions { retention_ms: 0, ..Default::default() }).unwrap();
        write(&db, "old", (0..HOUR).step_by(MIN as usize));
        db.flush().unwrap();
        db.close().unwrap();
    }
    let opts = DbOptions { retention_ms: 3 * HOUR, ..Default::default() };
    let db = Db::open(dir.path(), opts.clone()).unwrap();
    let recent: Vec<i64> = (10 * HOUR..13 * HOUR + 30 * MIN).step_by(MIN as usize).collect();
    write(&db, "m", recent.iter().copied());
    db.faults().set(Fault::BlockWrite, true);
    let err = db.persist_due().unwrap_err();
    assert!(matches!(err, StorageError::Io { .. }), "{err}");
    let blocks_dir = dir.path().join("blocks");
    assert!(
        names(&blocks_dir).iter().all(|n| !n.ends_with(".tmp")),
        "partial blocks removed at once: {:?}",
        names(&blocks_dir)
    );
    assert_eq!(db.stats().blocks_deleted_by_retention.load(Ordering::Relaxed), 1, "retention ran after the failed cut");
    assert!(timestamps(&db, "old").is_empty());
    assert_eq!(timestamps(&db, "m"), recent, "the head keeps what could not be written");
    assert_eq!(db.stats().blocks_cut.load(Ordering::Relaxed), 0);

    db.faults().set(Fault::BlockWrite, false);
    db.persist_due().unwrap();
    assert_eq!(db.stats().blocks_cut.load(Ordering::Relaxed), 1);
    assert_eq!(timestamps(&db, "m"), recent);
    drop(db);
    let db = Db::open(dir.path(), opts).unwrap();
    assert_eq!(timestamps(&db, "m"), recent);
}

#[test]
fn failed_checkpoint_leaves_no_tmp_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    let ts: Vec<i64> = (0..3 * HOUR).step_by(MIN as usize).collect();
    write(&db, "m", ts.iter().copied());
    db.faults().set(Fault::CheckpointWrite, true);
    assert!(db.flush().is_err(), "the checkpoint failed");
    let wal = names(&dir.path().join("wal"));
    assert!(wal.iter().all(|n| !n.ends_with(".tmp")), "checkpoint temp file removed at once: {wal:?}");
    write(&db, "m", [3 * HOUR]);
    db.close().unwrap();
    drop(db);
    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    let mut want = ts;
    want.push(3 * HOUR);
    assert_eq!(timestamps(&db, "m"), want, "blocks and the WAL both hold the cut data; merged once");
}

#[test]
fn far_future_block_from_an_older_version_does_not_age_out_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let now = wall_clock_ms();
    let day: Vec<i64> = (now - DAY..=now).step_by(MIN as usize).collect();
    let future = now + 100 * 365 * DAY;
    {
        // As an older version would have: no max_future check, and the sample persisted.
        let db = Db::open(dir.path(), DbOptions { max_future_ms: 0, ..Default::default() }).unwrap();
        write(&db, "m", day.iter().copied());
        write(&db, "future", [future]);
        db.flush().unwrap();
        assert!(db.blocks().iter().any(|b| b.meta.max_time == future));
        db.close().unwrap();
    }
    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    for _ in 0..3 {
        db.persist_due().unwrap();
    }
    db.flush().unwrap();
    assert_eq!(db.stats().blocks_deleted_by_retention.load(Ordering::Relaxed), 0);
    assert_eq!(timestamps(&db, "m"), day, "retention measured from a time that has not come");
    assert_eq!(timestamps(&db, "future"), vec![future]);
}

#[test]
fn day_of_data_and_a_sample_just_inside_max_future_survive_persist_cycles() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DbOptions::default();
    let db = Db::open(dir.path(), opts.clone()).unwrap();
    let now = wall_clock_ms();
    let mut want: Vec<i64> = (now - DAY..=now).step_by(MIN as usize).collect();
    write(&db, "m", want.iter().copied());
    // A sample stamped 100 years ahead is refused (storage.max_future); the rest is stored.
    let mut app = db.appender().unwrap();
    assert!(app.append(&lr(&[("__name__", "m")]), now + 100 * 365 * DAY, 1.0).is_err());
    let soon = wall_clock_ms() + 9 * MIN + 30_000;
    app.append(&lr(&[("__name__", "m")]), soon, soon as f64).unwrap();
    app.commit().unwrap();
    want.push(soon);
    for _ in 0..3 {
        db.persist_due().unwrap();
        assert_eq!(timestamps(&db, "m"), want);
    }
    db.flush().unwrap();
    assert_eq!(timestamps(&db, "m"), want);
    drop(db);
    let db = Db::open(dir.path(), opts).unwrap();
    db.persist_due().unwrap();
    assert_eq!(timestamps(&db, "m"), want);
    assert_eq!(db.stats().blocks_deleted_by_retention.load(Ordering::Relaxed), 0);
}

#[test]
fn retention_time_zero_keeps_forever() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DbOptions { retention_ms: 0, max_block_span_ms: 31 * DAY, ..Default::default() };
    let db = Db::open(dir.path(), opts).unwrap();
    let old: Vec<i64> = (0..HOUR).step_by(MIN as usize).collect();
    write(&db, "old", old.iter().copied());
    db.flush().unwrap();
    let now = wall_clock_ms();
    write(&db, "new", [now - MIN, now]);
    db.flush().unwrap();
    db.persist_due().unwrap();
    assert_eq!(timestamps(&db, "old"), old);
    assert_eq!(db.stats().blocks_deleted_by_retention.load(Ordering::Relaxed), 0);
}
