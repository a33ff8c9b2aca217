//! Crash safety against the real binary: a writer appends by remote-write while the server is
//! killed with SIGKILL at random moments. After each restart every acknowledged sample is there
//! with its exact value, and nothing appears that was never sent.


use crate::common::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use toolwatch_storage::{Db, DbOptions, Matcher};

const SERIES: usize = 20;

/// The value every test sample has: any other value in storage is a corruption.
fn value(series: usize, t: i64) -> f64 {
    // Includes non-integers and special values to exercise exact round trips. (-0.0 cannot
    // cross remote-write: proto3 omits a zero double, so the receiver reads +0.0.)
    match t % 97 {
        0 => f64::NAN,
        1 => f64::from_bits(0x7ff0_0000_0000_0002),
        2 => f64::NEG_INFINITY,
        _ => (series as f64) * 1e6 + t as f64 / 7.0,
    }
}

#[derive(Default)]
struct Log {
    acked: Vec<i64>,
    maybe: Vec<i64>,
}

#[test]
fn sigkill_loses_no_acknowledged_sample() {
    let rounds: usize = std::env::var("TOOLWATCH_CRASH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(12);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut rng = Rng(0x9e3779b97f4a7c15 ^ std::process::id() as u64);
    let log = Arc::new(Mutex::new(Log::default()));
    let mut next_t: i64 = 1_000;
    // The test writes timestamps from 1970; toolwatch's own metrics (stored at now) would make
    // retention delete those blocks as 56 years old.
    let cfg = dir.path().join("toolwatch.yml");
    std::fs::write(&cfg, "self_monitoring:\n  enabled: false\n").unwrap();
    for round in 0..rounds {
        let mut server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
        let stop = Arc::new(AtomicBool::new(false));
        let (addr, log2, stop2) = (server.addr.clone(), log.clone(), stop.clone());
        let start_t = next_t;
        let writer = std::thread::spawn(move || {
            let mut t = start_t;
            let names: Vec<String> = (0..SERIES).map(|i| format!("s{i}")).collect();
            while !stop2.load(Ordering::Relaxed) {
                // One request: 10 timestamps for every series.
                let ts: Vec<i64> = (0..10).map(|k| t + k * 1000).collect();
                let series: Vec<(Vec<(&str, &str)>, Vec<(i64, f64)>)> = names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| {
                        (
                            vec![("__name__", "crash_test"), ("s", n.as_str())],
                            ts.iter().map(|&t| (t, value(i, t))).collect(),
                        )
                    })
                    .collect();
                log2.lock().unwrap().maybe.extend(&ts);
                match remote_write(&addr, &series) {
                    Ok((204, _)) => log2.lock().unwrap().acked.extend(&ts),
                    Ok((code, body)) => panic!("unexpected {code}: {body}"),
                    // The unanswered request may be stored: never reuse its timestamps.
                    Err(_) => return t + 10_000,
                }
                t += 10_000;
            }
            t
        });
        std::thread::sleep(Duration::from_millis(30 + rng.below(400)));
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        next_t = writer.join().unwrap();

        // Check with the storage library directly: the killed server's lock is gone.
        let db = Db::open(&data, DbOptions::default()).unwrap();
        let got = db.querier(0, i64::MAX).select(&[Matcher::eq("__name__", "crash_test")]).unwrap();
        let log = log.lock().unwrap();
        let maybe: std::collections::HashSet<i64> = log.maybe.iter().copied().collect();
        let mut by_series: BTreeMap<String, Vec<(i64, u64)>> = BTreeMap::new();
        for s in &got {
            by_series.insert(s.labels.get("s").unwrap().to_string(), s.iter().map(|(t, v)| (t, v.to_bits())).collect());
        }
        for i in 0..SERIES {
            let have = by_series.get(&format!("s{i}")).cloned().unwrap_or_default();
            let have_ts: std::collections::BTreeSet<i64> = have.iter().map(|s| s.0).collect();
            for &(t, bits) in &have {
                assert_eq!(bits, value(i, t).to_bits(), "round {round}: series s{i} t={t} has a value never sent");
                assert!(maybe.contains(&t), "round {round}: series s{i} has t={t} that was never sent");
            }
            for t in &log.acked {
                assert!(have_ts.contains(t), "round {round}: acknowledged sample s{i} t={t} lost");
            }
        }
        eprintln!("round {round}: {} acknowledged timestamps intact", log.acked.len());
        drop(log);
        if round % 4 == 3 {
            // Exercise the block path too: persist everything and restart from blocks.
            db.flush().unwrap();
        }
        db.close().unwrap();
    }
    assert!(log.lock().unwrap().acked.len() > 10, "the writer got acknowledgements");
}
