//! Storage behaviour through the public API: append, query, restart, flush, compaction.

use toolwatch_storage::{AppendError, Db, DbOptions, HeadOptions, LabelRef, Labels, MatchOp, Matcher};

fn lr<'a>(pairs: &'a [(&'a str, &'a str)]) -> Vec<LabelRef<'a>> {
    pairs.iter().map(|(n, v)| LabelRef { name: n, value: v }).collect()
}

fn samples(db: &Db, matchers: &[Matcher]) -> Vec<(String, Vec<(i64, u64)>)> {
    db.querier(i64::MIN, i64::MAX)
        .select(matchers)
        .unwrap()
        .into_iter()
        .map(|s| (s.labels.to_string(), s.iter().map(|(t, v)| (t, v.to_bits())).collect()))
        .collect()
}

const HOUR: i64 = 3600 * 1000;

#[test]
fn append_query_restart_flush_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let stale = f64::from_bits(0x7ff0_0000_0000_0002);
    let vals = [1.0, -0.0, stale, f64::INFINITY, f64::NEG_INFINITY, f64::from_bits(0x7ff8_dead_beef_0001)];
    {
        let db = Db::open(dir.path(), DbOptions::default()).unwrap();
        let mut app = db.appender().unwrap();
        for (i, v) in vals.iter().enumerate() {
            app.append(&lr(&[("__name__", "up"), ("job", "a")]), i as i64 * 15_000, *v).unwrap();
        }
        // Unsorted labels are sorted, empty values dropped.
        app.append(&lr(&[("job", "b"), ("__name__", "up"), ("x", "")]), 0, 7.0).unwrap();
        assert_eq!(app.commit().unwrap(), vals.len() + 1);
        db.close().unwrap();
    }
    let want_a: Vec<(i64, u64)> = vals.iter().enumerate().map(|(i, v)| (i as i64 * 15_000, v.to_bits())).collect();
    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    let got = samples(&db, &[Matcher::eq("__name__", "up")]);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], (r#"{__name__="up", job="a"}"#.to_string(), want_a.clone()));
    assert_eq!(got[1].1, vec![(0, 7f64.to_bits())]);

    let report = db.flush().unwrap();
    assert_eq!(report.blocks_written.len(), 1);
    assert_eq!(db.head().num_series(), 0, "flushed series without recent samples leave the head");
    assert_eq!(samples(&db, &[Matcher::eq("job", "a")])[0].1, want_a);
    drop(db);
    // From blocks only, after a restart: the WAL checkpoint holds nothing.
    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    assert_eq!(samples(&db, &[Matcher::eq("job", "a")])[0].1, want_a);
    assert_eq!(db.querier(0, i64::MAX).label_values("job", &[]), vec!["a", "b"]);
    assert_eq!(db.querier(0, i64::MAX).label_names(&[Matcher::eq("job", "a")]), vec!["__name__", "job"]);
}

#[test]
fn ordering_rules() {
    let dir = tempfile::tempdir().unwrap();
    let opts =
        DbOptions { head: HeadOptions { out_of_order_window_ms: 60_000, ..Default::default() }, ..Default::default() };
    let db = Db::open(dir.path(), opts).unwrap();
    let l = lr(&[("__name__", "m")]);
    let mut app = db.appender().unwrap();
    // A new series takes any timestamp >= 0, far in the past too.
    app.append(&l, 1_000_000, 1.0).unwrap();
    app.append(&l, 1_000_000, 1.0).unwrap();
    assert_eq!(app.append(&l, 1_000_000, 2.0), Err(AppendError::Duplicate { t: 1_000_000 }));
    app.append(&l, 990_000, 0.5).unwrap();
    assert_eq!(app.append(&l, 990_000, 0.6), Err(AppendError::Duplicate { t: 990_000 }));
    assert!(matches!(app.append(&l, 900_000, 0.1), Err(AppendError::OutOfOrder { .. })));
    assert!(matches!(app.append(&l, -1, 0.1), Err(AppendError::NegativeTimestamp { .. })));
    app.append(&l, 1_010_000, 3.0).unwrap();
    // A resend of samples the head holds (a retry after a 5xx) is accepted, even when older.
    app.append(&l, 1_000_000, 1.0).unwrap();
    app.append(&l, 990_000, 0.5).unwrap();
    app.append(&lr(&[("__name__", "old")]), 5, 1.0).unwrap();
    app.commit().unwrap();
    let want = vec![(990_000, 0.5f64.to_bits()), (1_000_000, 1f64.to_bits()), (1_010_000, 3f64.to_bits())];
    assert_eq!(samples(&db, &[Matcher::eq("__name__", "m")])[0].1, want);
    drop(db);
    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    assert_eq!(samples(&db, &[Matcher::eq("__name__", "m")])[0].1, want, "out-of-order data survives replay");
    db.flush().unwrap();
    assert_eq!(samples(&db, &[Matcher::eq("__name__", "m")])[0].1, want, "and a flush");
}

#[test]
fn series_limit_rejects_only_new_series() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DbOptions { head: HeadOptions { max_series: 2, ..Default::default() }, ..Default::default() };
    let db = Db::open(dir.path(), opts).unwrap();
    let mut app = db.appender().unwrap();
    app.append(&lr(&[("__name__", "a")]), 1, 1.0).unwrap();
    app.append(&lr(&[("__name__", "b")]), 1, 1.0).unwrap();
    let err = app.append(&lr(&[("__name__", "c")]), 1, 1.0).unwrap_err();
    assert_eq!(err, AppendError::SeriesLimit { limit: 2 });
    assert!(err.to_string().contains("storage.max_series = 2"));
    app.append(&lr(&[("__name__", "a")]), 2, 1.0).unwrap();
    app.commit().unwrap();
}

#[test]
fn matchers_and_label_queries() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    let mut app = db.appender().unwrap();
    for tool in ["search", "fetch", "write"] {
        for status in ["ok", "error"] {
            app.append(&lr(&[("__name__", "mcp_tool_calls_total"), ("status", status), ("tool", tool)]), 1000, 1.0)
                .unwrap();
        }
    }
    app.append(&lr(&[("__name__", "up")]), 1000, 1.0).unwrap();
    app.commit().unwrap();
    let names = |ms: Vec<Matcher>| -> Vec<String> { samples(&db, &ms).into_iter().map(|s| s.0).collect() };
    let m = |op, n: &str, v: &str| Matcher::new(op, n, v).unwrap();
    assert_eq!(names(vec![m(MatchOp::Regex, "tool", "search|fetch"), Matcher::eq("status", "ok")]).len(), 2);
    assert_eq!(
        names(vec![m(MatchOp::NotEqual, "tool", "search"), Matcher::eq("__name__", "mcp_tool_calls_total")]).len(),
        4
    );
    assert_eq!(names(vec![Matcher::eq("tool", "")]), vec![r#"{__name__="up"}"#]);
    assert_eq!(names(vec![m(MatchOp::Regex, "tool", "s.*")]).len(), 2);
    assert_eq!(names(vec![m(MatchOp::Regex, "__name__", ".+")]).len(), 7);
    assert_eq!(db.querier(0, 2000).series_count(&[m(MatchOp::Regex, "__name__", ".+")]), 7);
    db.flush().unwrap();
    let mut app = db.appender().unwrap();
    app.append(&lr(&[("__name__", "up")]), 2000, 1.0).unwrap();
    app.commit().unwrap();
    // The same series in a block and in the head counts once.
    assert_eq!(db.querier(0, 3000).series_count(&[Matcher::eq("__name__", "up")]), 1);
    assert_eq!(db.querier(1500, 3000).series_count(&[Matcher::eq("tool", "search")]), 0);
    assert_eq!(
        db.querier(0, 2000).label_values("tool", &[Matcher::eq("status", "ok")]),
        vec!["fetch", "search", "write"]
    );
    assert!(db.querier(5000, 6000).label_values("tool", &[Matcher::eq("status", "ok")]).is_empty());
}

#[test]
fn cut_compact_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DbOptions { retention_ms: 7 * HOUR, max_block_span_ms: 6 * HOUR, ..Default::default() };
    let db = Db::open(dir.path(), opts.clone()).unwrap();
    let mut want: Vec<(i64, u64)> = Vec::new();
    // 14h of data, 1 sample a minute, persisted as it goes.
    for i in 0..(14 * 60) {
        let t = i * 60_000;
        let mut app = db.appender().unwrap();
        app.append(&lr(&[("__name__", "g"), ("i", "1")]), t, i as f64).unwrap();
        app.commit().unwrap();
        want.push((t, (i as f64).to_bits()));
        if i % 60 == 0 {
            db.persist_due().unwrap();
        }
    }
    db.flush().unwrap();
    let blocks = db.blocks();
    assert!(
        blocks.iter().any(|b| b.meta.level > 1),
        "compaction merged blocks: {:?}",
        blocks.iter().map(|b| &b.meta).collect::<Vec<_>>()
    );
    assert!(blocks.iter().all(|b| b.meta.max_time - b.meta.min_time < 6 * HOUR));
    let got = samples(&db, &[Matcher::eq("__name__", "g")]);
    let oldest_kept = got[0].1[0].0;
    // Retention drops whole blocks: the compacted [0h, 6h) block ends before now - 7h.
    assert_eq!(oldest_kept, 6 * HOUR, "retention removed the oldest block only");
    let tail: Vec<_> = want.iter().copied().filter(|s| s.0 >= oldest_kept).collect();
    assert_eq!(got[0].1, tail);
    drop(db);
    let db = Db::open(dir.path(), opts).unwrap();
    assert_eq!(samples(&db, &[Matcher::eq("__name__", "g")])[0].1, tail);
}

#[test]
fn second_open_names_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    let err = Db::open(dir.path(), DbOptions::default()).err().expect("second open fails").to_string();
    assert!(err.contains("locked") && err.contains(&format!("pid {}", std::process::id())), "{err}");
    assert!(!other_process_can_lock(&dir.path().join("lock")), "the failed second open must not release the lock");
    drop(db);
    assert!(other_process_can_lock(&dir.path().join("lock")), "dropping the Db releases the lock");
}

/// Whether a forked child can take a write lock on `path` (the child uses only
/// async-signal-safe calls: open, fcntl, _exit).
fn other_process_can_lock(path: &std::path::Path) -> bool {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: see above; everything the child touches was prepared before the fork.
    let child = unsafe { libc::fork() };
    if child == 0 {
        unsafe {
            let fd = libc::open(c.as_ptr(), libc::O_RDWR);
            libc::_exit(if fd >= 0 && libc::fcntl(fd, libc::F_SETLK, &fl) == 0 { 0 } else { 1 });
        }
    }
    assert!(child > 0, "fork failed");
    let mut status = 0;
    unsafe { libc::waitpid(child, &mut status, 0) };
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

/// The CI failure this guards against: a process spawned by another thread forks while a Db is
/// open, and until it execs the child shared the lock (a flock then); a reopen right after the
/// Db was dropped found the directory still locked — by this very process.
#[test]
fn reopen_is_not_blocked_by_a_forked_child() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    // SAFETY: the child only sleeps and _exits (async-signal-safe); it stands for the window
    // between fork and exec in which it shares this process's open files.
    let child = unsafe { libc::fork() };
    if child == 0 {
        unsafe {
            libc::usleep(300_000);
            libc::_exit(0);
        }
    }
    assert!(child > 0, "fork failed");
    drop(db);
    let reopened = Db::open(dir.path(), DbOptions::default());
    let mut status = 0;
    unsafe { libc::waitpid(child, &mut status, 0) };
    reopened.expect("the lock is free once the child lets go of it");
}

#[test]
fn labels_display() {
    assert_eq!(Labels::from_pairs(&[("a", "x\"y")]).to_string(), r#"{a="x\"y"}"#);
}

#[test]
fn append_batch_matches_single_appends() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    let names: Vec<String> = (0..300).map(|i| format!("s{i}")).collect();
    let labels: Vec<Vec<LabelRef<'_>>> = names
        .iter()
        .map(|n| vec![LabelRef { name: "__name__", value: "b" }, LabelRef { name: "id", value: n }])
        .collect();
    let mut app = db.appender().unwrap();
    // Two samples per series in one batch (order kept per series), one out of order, one
    // duplicate, one unsorted label set (slow path) and a series created inside the batch.
    let mut items: Vec<(&[LabelRef<'_>], i64, f64)> = Vec::new();
    for l in &labels {
        items.push((l, 1000, 1.0));
    }
    for l in &labels {
        items.push((l, 2000, 2.0));
    }
    items.push((&labels[0], 1500, 9.0));
    items.push((&labels[1], 2000, 3.0));
    let unsorted = [LabelRef { name: "id", value: "u" }, LabelRef { name: "__name__", value: "b" }];
    items.push((&unsorted, 1000, 5.0));
    let mut errors = Vec::new();
    let accepted = app.append_batch(&items, |i, e| errors.push((i, e)));
    app.commit().unwrap();
    assert_eq!(accepted, 601);
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0].0, 600);
    assert!(matches!(errors[0].1, AppendError::OutOfOrder { .. }));
    assert_eq!(errors[1], (601, AppendError::Duplicate { t: 2000 }));
    drop(db);
    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    let got = samples(&db, &[Matcher::eq("__name__", "b")]);
    assert_eq!(got.len(), 301);
    for (name, s) in &got {
        if name.contains("\"u\"") {
            assert_eq!(s, &vec![(1000, 5f64.to_bits())]);
        } else {
            assert_eq!(s, &vec![(1000, 1f64.to_bits()), (2000, 2f64.to_bits())], "{name}");
        }
    }
}

#[test]
fn size_retention_deletes_oldest_blocks_and_batch_fsync_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DbOptions {
        wal_fsync: toolwatch_storage::FsyncMode::Batch,
        max_block_span_ms: 2 * HOUR, // no compaction: one block per 2h window
        ..Default::default()
    };
    let db = Db::open(dir.path(), opts.clone()).unwrap();
    let names: Vec<String> = (0..50).map(|i| format!("s{i}")).collect();
    for i in 0..(8 * 60) {
        let mut app = db.appender().unwrap();
        for n in &names {
            app.append(&lr(&[("__name__", "g"), ("id", n)]), i * 60_000, (i % 7) as f64 + 0.25).unwrap();
        }
        app.commit().unwrap();
    }
    db.flush().unwrap();
    let blocks = db.blocks();
    assert_eq!(blocks.len(), 4, "four 2h blocks");
    let sizes: Vec<u64> = blocks.iter().map(|b| b.size_bytes).collect();
    drop(db);
    // Room for about two blocks plus the WAL: the two oldest must go.
    let wal: u64 =
        std::fs::read_dir(dir.path().join("wal")).unwrap().flatten().map(|e| e.metadata().unwrap().len()).sum();
    let limit = sizes[2] + sizes[3] + wal + 4096;
    let db = Db::open(dir.path(), DbOptions { retention_bytes: limit, ..opts }).unwrap();
    let report = db.persist_due().unwrap();
    assert_eq!(report.blocks_deleted, 2, "{report:?}");
    let got = samples(&db, &[Matcher::eq("id", "s0")]);
    assert_eq!(got[0].1.first().unwrap().0, 4 * HOUR, "data from 4h on is kept");
    assert_eq!(got[0].1.len(), 4 * 60);
}
