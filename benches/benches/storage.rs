//! Append throughput for known series (1 and 2 threads) and chunk decoding speed.
//! `cargo bench -p toolwatch-benches --bench storage`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::{Duration, Instant};
use toolwatch_benches::mix::Workload;
use toolwatch_storage::{Db, DbOptions, FsyncMode, LabelRef};

const SERIES: usize = 10_000;
/// Samples per appender commit: one remote-write request's worth.
const BATCH: usize = 2_000;

fn open_db() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let opts = DbOptions { wal_fsync: FsyncMode::Never, ..Default::default() };
    let db = Db::open(&dir.path().join("data"), opts).unwrap();
    (dir, db)
}

/// Appends one step (`t`) of `values` for the series `range` of `labels`.
fn append_step(db: &Db, labels: &[Vec<LabelRef<'_>>], values: &[f64], range: std::ops::Range<usize>, t: i64) {
    for chunk in range.collect::<Vec<_>>().chunks(BATCH) {
        let mut app = db.appender().unwrap();
        let items: Vec<(&[LabelRef<'_>], i64, f64)> = chunk.iter().map(|&i| (&labels[i][..], t, values[i])).collect();
        app.append_batch(&items, |i, e| panic!("sample {i} rejected: {e}"));
        app.commit().unwrap();
    }
}

fn bench_append(c: &mut Criterion) {
    let mut w = Workload::new(SERIES, 15_000);
    // Label strings laid out one after another in one buffer, as they are in a decompressed
    // remote-write request (where the ingest decoder borrows them from).
    let arena: String = w.labels.iter().flatten().map(|(n, v)| format!("{n}{v}")).collect();
    let mut pos = 0;
    let labels: Vec<Vec<LabelRef<'_>>> = w
        .labels
        .iter()
        .map(|l| {
            l.iter()
                .map(|(n, v)| {
                    let name = &arena[pos..pos + n.len()];
                    let value = &arena[pos + n.len()..pos + n.len() + v.len()];
                    pos += n.len() + v.len();
                    LabelRef { name, value }
                })
                .collect()
        })
        .collect();
    let values: Vec<f64> = w.step().to_vec();
    let mut g = c.benchmark_group("append_known_series");
    g.throughput(Throughput::Elements(SERIES as u64));
    g.measurement_time(Duration::from_secs(8));
    for threads in [1usize, 2] {
        let (_dir, db) = open_db();
        append_step(&db, &labels, &values, 0..SERIES, 0); // create the series first
        let part = SERIES / threads;
        // Long-lived workers, each owning a share of the series (as connections do), so the
        // measurement holds appends only, not thread start-up.
        std::thread::scope(|s| {
            let mut work = Vec::new();
            let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
            for k in 0..threads {
                let (tx, rx) = std::sync::mpsc::channel::<i64>();
                work.push(tx);
                let (db, labels, values, done) = (&db, &labels, &values, done_tx.clone());
                s.spawn(move || {
                    for t in rx {
                        append_step(db, labels, values, k * part..(k + 1) * part, t);
                        done.send(()).unwrap();
                    }
                });
            }
            let mut t = 0i64;
            g.bench_function(format!("{threads}_thread"), |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        t += 15_000;
                        for tx in &work {
                            tx.send(t).unwrap();
                        }
                        for _ in 0..threads {
                            done_rx.recv().unwrap();
                        }
                    }
                    start.elapsed()
                })
            });
            drop(work);
        });
    }
    g.finish();
}

fn bench_decode(c: &mut Criterion) {
    let mut w = Workload::new(300, 15_000);
    let mut per_series: Vec<Vec<(i64, f64)>> = vec![Vec::new(); 300];
    for step in 0..120 {
        let v = w.step().to_vec();
        for (i, s) in per_series.iter_mut().enumerate() {
            s.push((step * 15_000, v[i]));
        }
    }
    let chunks: Vec<(u8, Vec<u8>)> = per_series.iter().map(|s| toolwatch_storage::chunk::encode_best(s)).collect();
    let mut g = c.benchmark_group("decode_block_chunks");
    g.throughput(Throughput::Elements(300 * 120));
    g.bench_function("mixed", |b| {
        b.iter(|| {
            let mut acc = 0f64;
            for (enc, data) in &chunks {
                for (_, v) in toolwatch_storage::chunk::decode(*enc, data) {
                    acc += v;
                }
            }
            acc
        })
    });
    g.finish();
}

criterion_group!(benches, bench_append, bench_decode);
criterion_main!(benches);
