//! Persistence: cutting head data into blocks, merging blocks (compaction), deleting them
//! (retention), and checkpointing the WAL once its data is in blocks.

use crate::block::{dir_size, Block, BlockMeta, BlockWriter};
use crate::db::{wall_clock_ms, Db};
use crate::error::{IoContext, Result, StorageError};
use crate::fault::{Fault, Faults};
use crate::head::CutSeries;
use crate::labels::Labels;
use crate::series::{ChunkSrc, Series};
use std::collections::BTreeMap;
use std::fs;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// What one persistence run did, for logs and the flush endpoint.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PersistReport {
    pub blocks_written: Vec<BlockMeta>,
    pub blocks_compacted: usize,
    pub blocks_deleted: usize,
    pub series_removed_from_head: usize,
    /// Blocks moved aside as `<id>.corrupt` because a chunk failed its check.
    pub blocks_quarantined: usize,
}

/// Keeps the first error of a persistence run and logs every one: a failed step (disk full, a
/// corrupt block) never stops the steps after it, least of all retention, which frees space.
fn note(first: &mut Option<StorageError>, step: &str, res: Result<()>) {
    if let Err(e) = res {
        tracing::error!(error = %e, step, "persistence step failed; the others go on");
        first.get_or_insert(e);
    }
}

impl Db {
    /// Writes everything in the head into blocks now (for backups and measurements), then
    /// compacts and applies retention.
    pub fn flush(&self) -> Result<PersistReport> {
        let _g = self.inner.persist.lock();
        let mut report = PersistReport::default();
        let mut first = None;
        self.quarantine_flagged(&mut report);
        if let Some((_, maxt)) = self.inner.head.time_range() {
            note(&mut first, "cut", self.cut_head(maxt.saturating_add(1), &mut report));
        }
        note(&mut first, "compaction", self.compact(&mut report, i64::MAX));
        note(&mut first, "retention", self.apply_retention(&mut report));
        first.map_or(Ok(report), Err)
    }

    /// The periodic job: cut the head once it spans 1.5 block ranges (keeping the newest half
    /// range in memory for queries and late samples), compact finished windows, apply retention.
    pub fn persist_due(&self) -> Result<PersistReport> {
        let _g = self.inner.persist.lock();
        let mut report = PersistReport::default();
        let mut first = None;
        self.quarantine_flagged(&mut report);
        let range = self.inner.opts.head.block_range_ms;
        if let Some((mint, maxt)) = self.inner.head.time_range() {
            if maxt.saturating_sub(mint) > range * 3 / 2 {
                let before = (maxt - range / 2).div_euclid(range) * range;
                if before > mint {
                    note(&mut first, "cut", self.cut_head(before, &mut report));
                }
            }
        }
        let head_min = self.inner.head.time_range().map_or(i64::MAX, |r| r.0);
        note(&mut first, "compaction", self.compact(&mut report, head_min));
        note(&mut first, "retention", self.apply_retention(&mut report));
        first.map_or(Ok(report), Err)
    }

    /// Quarantines blocks in which a query found a chunk failing its check (queries only flag
    /// them; moving files is this job's).
    fn quarantine_flagged(&self, report: &mut PersistReport) {
        let flagged: Vec<Arc<Block>> = self.inner.blocks.read().iter().filter(|b| b.is_corrupt()).cloned().collect();
        for b in flagged {
            let err = b.verify().err().map_or_else(|| "a read found damage".to_string(), |e| e.to_string());
            self.quarantine(&b, &err);
            report.blocks_quarantined += 1;
        }
    }

    fn cut_head(&self, before: i64, report: &mut PersistReport) -> Result<()> {
        let inner = &self.inner;
        let cut = inner.head.cut(before);
        if cut.is_empty() {
            return Ok(());
        }
        // On failure the head keeps everything (it is truncated only below) and so does the WAL.
        let bdir = inner.dir.join("blocks");
        let metas = write_windows(&bdir, &cut, inner.opts.head.block_range_ms, &inner.wal.faults)?;
        let mut opened = Vec::new();
        for m in &metas {
            match Block::open(&bdir.join(&m.id)) {
                Ok(b) => opened.push(Arc::new(b)),
                Err(e) => {
                    // Not live yet, and the head still holds their data: take them all back.
                    for m in &metas {
                        let _ = remove_block_dir(&bdir.join(&m.id));
                    }
                    return Err(e);
                }
            }
        }
        {
            let mut blocks = inner.blocks.write();
            blocks.extend(opened);
            blocks.sort_by_key(|b| (b.meta.min_time, b.meta.max_time));
        }
        inner.stats.blocks_cut.fetch_add(metas.len() as u64, Ordering::Relaxed);
        report.series_removed_from_head += inner.head.truncate(&cut, before);
        report.blocks_written.extend(metas);
        self.checkpoint()?;
        tracing::info!(before, blocks = report.blocks_written.len(), "head persisted into blocks");
        Ok(())
    }

    /// Replaces the WAL segments written so far by a checkpoint of what is still in the head.
    /// On failure the segments stay (a later checkpoint replaces them), so the WAL still
    /// holds everything in the head; replay merges what is also in blocks.
    fn checkpoint(&self) -> Result<()> {
        let inner = &self.inner;
        let upto = inner.wal.rotate()?;
        let snapshot = inner.head.snapshot();
        inner.wal.checkpoint(upto, &snapshot)?;
        inner.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Merges groups of blocks that fall in one aligned window of growing span (x3 per level,
    /// up to `max_block_span_ms`), for windows that end before `head_min`.
    fn compact(&self, report: &mut PersistReport, head_min: i64) -> Result<()> {
        let inner = &self.inner;
        let range = inner.opts.head.block_range_ms;
        let mut span = range * 3;
        while span <= inner.opts.max_block_span_ms {
            loop {
                let blocks = inner.blocks.read().clone();
                let mut groups: BTreeMap<i64, Vec<Arc<Block>>> = BTreeMap::new();
                for b in blocks {
                    let w = b.meta.min_time.div_euclid(span);
                    if b.meta.max_time.div_euclid(span) == w && (w + 1) * span <= head_min {
                        groups.entry(w).or_default().push(b);
                    }
                }
                let Some(group) = groups.into_values().find(|g| g.len() > 1) else { break };
                // Every chunk of the sources is checked first: a damaged block is quarantined
                // and the window grouped again without it, so it never stops the others.
                let mut damaged = false;
                for b in &group {
                    if let Err(e) = b.verify() {
                        self.quarantine(b, &e);
                        report.blocks_quarantined += 1;
                        damaged = true;
                    }
                }
                if damaged {
                    continue;
                }
                // A write failure (disk full) ends compaction for this run; the partial block
                // is already removed and the sources are untouched.
                self.merge(&group)?;
                report.blocks_compacted += group.len();
            }
            span *= 3;
        }
        Ok(())
    }

    fn merge(&self, group: &[Arc<Block>]) -> Result<()> {
        let inner = &self.inner;
        let level = group.iter().map(|b| b.meta.level).max().unwrap_or(1) + 1;
        // Every (labels, block, id), sorted by labels: a k-way merge without k cursors.
        let mut entries: Vec<(Labels, usize, u64)> = Vec::new();
        for (bi, b) in group.iter().enumerate() {
            for id in 0..b.index.num_series() as u64 {
                if let Some((labels, _)) = b.index.series(id) {
                    entries.push((labels, bi, id));
                }
            }
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut w = BlockWriter::create(&inner.dir.join("blocks"), level)?;
        let mut i = 0;
        while i < entries.len() {
            let labels = entries[i].0.clone();
            let mut chunks: Vec<ChunkSrc> = Vec::new();
            while i < entries.len() && entries[i].0 == labels {
                let (_, bi, id) = &entries[i];
                chunks.extend(group[*bi].select_series_id(*id)?.chunks);
                i += 1;
            }
            let s = Series { labels: labels.clone(), chunks, mint: i64::MIN, maxt: i64::MAX };
            w.add_series(labels, &s.samples())?;
        }
        inner.wal.faults.check(Fault::BlockWrite).ctx(|| "writing a compacted block".into())?;
        let meta = w.finish()?;
        let new = match &meta {
            Some(m) => {
                let path = inner.dir.join("blocks").join(&m.id);
                match Block::open(&path) {
                    Ok(b) => Some(Arc::new(b)),
                    Err(e) => {
                        // The sources are still live and intact: drop the new block.
                        let _ = remove_block_dir(&path);
                        return Err(e);
                    }
                }
            }
            None => None,
        };
        {
            let mut blocks = inner.blocks.write();
            blocks.retain(|b| !group.iter().any(|g| Arc::ptr_eq(g, b)));
            blocks.extend(new);
            blocks.sort_by_key(|b| (b.meta.min_time, b.meta.max_time));
        }
        for b in group {
            // Already out of the live list; a leftover would only be merged again after a restart.
            if let Err(e) = remove_block_dir(&b.dir) {
                tracing::warn!(block = %b.meta.id, error = %e, "removing a compacted source block failed");
            }
        }
        inner.stats.compactions.fetch_add(1, Ordering::Relaxed);
        tracing::info!(merged = group.len(), level, "compacted blocks");
        Ok(())
    }

    fn apply_retention(&self, report: &mut PersistReport) -> Result<()> {
        let inner = &self.inner;
        let blocks = inner.blocks.read().clone();
        let mut doomed: Vec<Arc<Block>> = Vec::new();
        // retention_ms == 0: keep forever (like the other 0 limits).
        if inner.opts.retention_ms > 0 {
            // Measured from the newest sample, as Prometheus does, so backfilled or test data
            // from long ago survives when nothing newer exists; but never from a time that has
            // not come yet: one sample stamped years ahead (a wrong clock or unit, or data
            // written before storage.max_future) must not age everything else out.
            let newest = blocks.iter().map(|b| b.meta.max_time).chain(inner.head.time_range().map(|r| r.1)).max();
            if let Some(newest) = newest {
                let cutoff = newest.min(wall_clock_ms()).saturating_sub(inner.opts.retention_ms);
                doomed.extend(blocks.iter().filter(|b| b.meta.max_time < cutoff).cloned());
            }
        }
        if inner.opts.retention_bytes > 0 {
            let wal_bytes = dir_size(&inner.dir.join("wal"));
            let mut total: u64 = wal_bytes + blocks.iter().map(|b| b.size_bytes).sum::<u64>();
            for b in &blocks {
                if total <= inner.opts.retention_bytes {
                    break;
                }
                total -= b.size_bytes;
                if !doomed.iter().any(|d| Arc::ptr_eq(d, b)) {
                    doomed.push(b.clone());
                }
            }
        }
        if doomed.is_empty() {
            return Ok(());
        }
        inner.blocks.write().retain(|b| !doomed.iter().any(|d| Arc::ptr_eq(d, b)));
        for b in &doomed {
            // One block that cannot be removed does not keep the others.
            match remove_block_dir(&b.dir) {
                Ok(()) => tracing::info!(block = %b.meta.id, max_time = b.meta.max_time, "block deleted by retention"),
                Err(e) => tracing::error!(block = %b.meta.id, error = %e, "deleting a block by retention failed"),
            }
        }
        inner.stats.blocks_deleted_by_retention.fetch_add(doomed.len() as u64, Ordering::Relaxed);
        report.blocks_deleted += doomed.len();
        Ok(())
    }
}

/// Writes the cut series into one block per aligned window of `range`. All or nothing: on an
/// error, partial `.tmp` directories are removed (`BlockWriter`'s drop) and blocks of this cut
/// already renamed into place are removed again.
fn write_windows(
    blocks_dir: &std::path::Path,
    cut: &[CutSeries],
    range: i64,
    faults: &Faults,
) -> Result<Vec<BlockMeta>> {
    let mut writers: BTreeMap<i64, BlockWriter> = BTreeMap::new();
    for c in cut {
        let samples = c.samples();
        let mut start = 0;
        while start < samples.len() {
            let w = samples[start].0.div_euclid(range);
            let end = start + samples[start..].partition_point(|s| s.0.div_euclid(range) == w);
            let writer = match writers.entry(w) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => e.insert(BlockWriter::create(blocks_dir, 1)?),
            };
            writer.add_series(c.labels.clone(), &samples[start..end])?;
            start = end;
        }
    }
    let mut metas: Vec<BlockMeta> = Vec::new();
    for (_, w) in writers {
        let finished = match faults.check(Fault::BlockWrite) {
            Ok(()) => w.finish(),
            Err(e) => Err(e).ctx(|| format!("writing block {}", blocks_dir.display())),
        };
        match finished {
            Ok(m) => metas.extend(m),
            Err(e) => {
                for m in &metas {
                    let _ = remove_block_dir(&blocks_dir.join(&m.id));
                }
                return Err(e);
            }
        }
    }
    Ok(metas)
}

/// Renames first so a crash mid-delete never leaves a half block that looks live.
fn remove_block_dir(dir: &std::path::Path) -> Result<()> {
    let doomed = dir.with_extension("deleting");
    fs::rename(dir, &doomed).ctx(|| format!("renaming {} for deletion", dir.display()))?;
    fs::remove_dir_all(&doomed).ctx(|| format!("deleting {}", doomed.display()))
}
