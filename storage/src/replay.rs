//! WAL replay at start-up: the newest checkpoint, then every later segment, into the head.

use crate::db::DbStats;
use crate::error::{IoContext, Result};
use crate::head::Head;
use crate::wal::{self, Record};
use rustc_hash::FxHashMap;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

type Buckets = Vec<Vec<(u64, i64, f64)>>;

/// Samples per hand-over to the appending thread (two such batches live at once, 192 MiB each
/// at most): large enough that each series gets several samples per batch.
const BATCH: usize = 1 << 23;

fn new_buckets() -> Buckets {
    (0..Head::SHARDS).map(|_| Vec::new()).collect()
}

/// Replays the WAL into `head`. Decoding (this thread) overlaps with appending (another thread,
/// which spreads each batch over the cores by shard, see `Head::append_replayed`). Series
/// records are applied as they are read, so every sample of a handed-over batch finds its
/// series. A corrupt or torn record ends the log: the file is truncated there, later files are
/// deleted, and both are counted and logged.
pub(crate) fn replay_wal(dir: &Path, head: &Head, stats: &DbStats) -> Result<()> {
    fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    let files = wal::list(dir)?;
    let mut order: Vec<PathBuf> = files.checkpoint.iter().map(|c| c.1.clone()).collect();
    order.extend(files.segments.iter().map(|s| s.1.clone()));
    if order.is_empty() {
        return Ok(());
    }
    let total = order.len();
    let started = Instant::now();
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Buckets>(0);
    let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Buckets>();
    let (series, samples, dropped) = std::thread::scope(|scope| -> Result<(u64, u64, u64)> {
        let appender = scope.spawn(move || {
            let (mut ok, mut bad) = (0u64, 0u64);
            for mut b in full_rx {
                let (o, d) = head.append_replayed(&mut b);
                ok += o;
                bad += d;
                let _ = empty_tx.send(b);
            }
            (ok, bad)
        });
        let mut remap: FxHashMap<u64, u64> = FxHashMap::default();
        let mut series = 0u64;
        let mut buckets = new_buckets();
        let mut buffered = 0usize;
        let hand_over = |buckets: &mut Buckets, buffered: &mut usize| {
            let next = empty_rx.try_recv().unwrap_or_else(|_| new_buckets());
            let full = std::mem::replace(buckets, next);
            full_tx.send(full).expect("replay appender thread alive");
            *buffered = 0;
        };
        for (i, path) in order.iter().enumerate() {
            let (valid, len) = wal::read_records(path, |rec| match rec {
                Record::Series(list) => {
                    for (logged, labels) in list {
                        let r = head.create_replayed(logged, &labels);
                        if r != logged {
                            remap.insert(logged, r);
                        }
                        series += 1;
                    }
                }
                Record::Samples(dec) => {
                    for (r, t, v) in dec {
                        let r = if remap.is_empty() { r } else { remap.get(&r).copied().unwrap_or(r) };
                        buckets[Head::shard_of_ref(r)].push((r, t, v));
                        buffered += 1;
                    }
                    if buffered >= BATCH {
                        hand_over(&mut buckets, &mut buffered);
                    }
                }
            })?;
            if valid < len {
                stats.wal_corruptions.fetch_add(1, Ordering::Relaxed);
                let mut lost = len - valid;
                OpenOptions::new()
                    .write(true)
                    .open(path)
                    .and_then(|f| f.set_len(valid))
                    .ctx(|| format!("truncating {}", path.display()))?;
                for later in &order[i + 1..] {
                    lost += fs::metadata(later).map(|m| m.len()).unwrap_or(0);
                    let _ = fs::remove_file(later);
                }
                stats.wal_truncated_bytes.fetch_add(lost, Ordering::Relaxed);
                tracing::warn!(file = %path.display(), valid_bytes = valid, dropped_bytes = lost, "WAL corruption: truncated at the last good record");
                break;
            }
            if total > 1 {
                tracing::info!(file = %path.display(), done = i + 1, total, "WAL replay progress");
            }
        }
        if buffered > 0 {
            hand_over(&mut buckets, &mut buffered);
        }
        drop(full_tx);
        let (ok, bad) = appender.join().expect("replay appender thread");
        Ok((series, ok, bad))
    })?;
    stats.wal_replay_dropped_samples.store(dropped, Ordering::Relaxed);
    tracing::info!(series, samples, dropped, elapsed_ms = started.elapsed().as_millis() as u64, "WAL replay done");
    Ok(())
}
