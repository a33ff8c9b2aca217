//! Storage figures that are not per-operation timings:
//!   figures bytes  [SERIES] [HOURS]       disk bytes per sample after cut + compaction (10000, 12)
//!   figures replay [SERIES] [SAMPLES]     WAL replay time (1000000, 120)
//!   figures rss    [SERIES] [SAMPLES]     in-process peak RSS after appending (100000, 30)
//! Run with `cargo run --release -p toolwatch-benches --bin figures -- <what>`.

use std::time::Instant;
use toolwatch_benches::mix::Workload;
use toolwatch_storage::{Db, DbOptions, FsyncMode, LabelRef};

fn arg(i: usize, default: usize) -> usize {
    std::env::args().nth(i).and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn append_steps(db: &Db, w: &mut Workload, steps: usize, start_t: i64, mut each_step: impl FnMut(usize, i64)) -> u64 {
    let owned = w.labels.clone();
    let labels: Vec<Vec<LabelRef<'_>>> =
        owned.iter().map(|l| l.iter().map(|(n, v)| LabelRef { name: n, value: v }).collect()).collect();
    let mut total = 0u64;
    for step in 0..steps {
        let t = start_t + step as i64 * w.interval_ms;
        let values = w.step().to_vec();
        for part in (0..labels.len()).collect::<Vec<_>>().chunks(2000) {
            let mut app = db.appender().unwrap();
            for &i in part {
                app.append(&labels[i], t, values[i]).unwrap();
            }
            total += app.commit().unwrap() as u64;
        }
        each_step(step, t);
    }
    total
}

fn dir_bytes(p: &std::path::Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(p).unwrap().flatten() {
        let m = e.metadata().unwrap();
        n += if m.is_dir() { dir_bytes(&e.path()) } else { m.len() };
    }
    n
}

fn status(field: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with(field))
        .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    let what = std::env::args().nth(1).unwrap_or_default();
    let dir = tempfile::tempdir().unwrap();
    // FIGURES_DATA keeps the data dir (e.g. to profile `replay` again without rewriting it).
    let data = std::env::var("FIGURES_DATA").map(std::path::PathBuf::from).unwrap_or_else(|_| dir.path().join("data"));
    let opts = DbOptions { wal_fsync: FsyncMode::Never, ..Default::default() };
    match what.as_str() {
        "bytes" => {
            let (series, hours) = (arg(2, 10_000), arg(3, 12));
            let mut w = Workload::new(series, 15_000);
            let db = Db::open(&data, opts).unwrap();
            let steps = hours * 240;
            let start = 1_700_000_000_000 / 7_200_000 * 7_200_000;
            let t0 = Instant::now();
            let samples = append_steps(&db, &mut w, steps, start, |step, _| {
                if step % 240 == 239 {
                    db.persist_due().unwrap();
                }
            });
            db.flush().unwrap();
            let blocks = db.blocks();
            let bytes: u64 = blocks.iter().map(|b| dir_bytes(&b.dir)).sum();
            let chunk_bytes: u64 = blocks.iter().map(|b| std::fs::metadata(b.dir.join("chunks")).unwrap().len()).sum();
            let index_bytes: u64 = blocks.iter().map(|b| std::fs::metadata(b.dir.join("index")).unwrap().len()).sum();
            let stored: u64 = blocks.iter().map(|b| b.meta.num_samples).sum();
            assert_eq!(stored, samples, "every sample is in a block");
            println!(
                "bytes: {series} series x {hours}h at 15s = {samples} samples in {} blocks (spans {:?} h): {bytes} bytes on disk = {:.3} bytes/sample (chunks {:.3}, index {:.3}); took {:.1}s",
                blocks.len(),
                blocks.iter().map(|b| (b.meta.max_time - b.meta.min_time + 15_000) as f64 / 3.6e6).collect::<Vec<_>>(),
                bytes as f64 / samples as f64,
                chunk_bytes as f64 / samples as f64,
                index_bytes as f64 / samples as f64,
                t0.elapsed().as_secs_f64()
            );
        }
        "replay" => {
            let (series, samples) = (arg(2, 1_000_000), arg(3, 120));
            if !data.join("wal").exists() {
                let mut w = Workload::new(series, 15_000);
                let db = Db::open(&data, opts.clone()).unwrap();
                let t0 = Instant::now();
                let n = append_steps(&db, &mut w, samples, 1_700_000_000_000, |_, _| {});
                db.close().unwrap();
                println!(
                    "replay: wrote {n} samples in {:.1}s; WAL {} bytes",
                    t0.elapsed().as_secs_f64(),
                    dir_bytes(&data.join("wal"))
                );
            }
            let t0 = Instant::now();
            let db = Db::open(&data, opts).unwrap();
            println!(
                "replay: {series} series x {samples} samples replayed in {:.2}s ({} series in head); VmHWM {}",
                t0.elapsed().as_secs_f64(),
                db.num_series(),
                status("VmHWM")
            );
        }
        "rss" => {
            let (series, samples) = (arg(2, 100_000), arg(3, 30));
            let mut w = Workload::new(series, 15_000);
            let before = status("VmRSS");
            let db = Db::open(&data, opts).unwrap();
            append_steps(&db, &mut w, samples, 1_700_000_000_000, |_, _| {});
            println!(
                "rss: {series} series x {samples} samples: VmRSS {} (before storage: {before}), VmHWM {}",
                status("VmRSS"),
                status("VmHWM")
            );
        }
        "analyze" => {
            // Per metric: bytes/sample of the chosen block encoding over 120-sample chunks.
            let mut w = Workload::new(arg(2, 300), 15_000);
            let n = w.labels.len();
            let mut per: Vec<Vec<(i64, f64)>> = vec![Vec::new(); n];
            for step in 0..480 {
                let v = w.step().to_vec();
                for i in 0..n {
                    per[i].push((step * 15_000, v[i]));
                }
            }
            let mut by_name: std::collections::BTreeMap<String, (usize, usize, usize)> = Default::default();
            for (i, s) in per.iter().enumerate() {
                let name = w.labels[i].iter().find(|l| l.0 == "__name__").unwrap().1.clone();
                for c in s.chunks(toolwatch_storage::chunk::BLOCK_SAMPLES_PER_CHUNK) {
                    let (enc, data) = toolwatch_storage::chunk::encode_best(c);
                    let e = by_name.entry(name.clone()).or_default();
                    e.0 += data.len();
                    e.1 += c.len();
                    e.2 += (enc == toolwatch_storage::chunk::ENCODING_INT) as usize;
                }
            }
            let total: usize = by_name.values().map(|e| e.0).sum();
            let samples: usize = by_name.values().map(|e| e.1).sum();
            for (name, (b, s, ints)) in &by_name {
                println!(
                    "{name:40} {:6.3} B/sample  {:5.1}% of bytes  int chunks {ints}/{}",
                    *b as f64 / *s as f64,
                    100.0 * *b as f64 / total as f64,
                    s / toolwatch_storage::chunk::BLOCK_SAMPLES_PER_CHUNK
                );
            }
            println!("total {:.3} B/sample", total as f64 / samples as f64);
        }
        _ => eprintln!("usage: figures bytes|replay|rss [args]"),
    }
}
