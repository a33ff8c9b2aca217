//! Persistence: cutting head data into blocks, merging blocks (compaction), deleting them
//! (retention), and checkpointing the WAL once its data is in blocks.

use crate::block::{dir_size, Block, BlockMeta, BlockWriter};
use crate::db::Db;
use crate::error::{IoContext, Result};
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
}

impl Db {
    /// Writes everything in the head into blocks now (for backups and measurements), then
    /// compacts and applies retention.
    pub fn flush(&self) -> Result<PersistReport> {
        let _g = self.inner.persist.lock();
        let mut report = PersistReport::default();
        if let Some((_, maxt)) = self.inner.head.time_range() {
            self.cut_head(maxt.saturating_add(1), &mut report)?;
        }
        self.compact(&mut report, i64::MAX)?;
        self.apply_retention(&mut report)?;
        Ok(report)
    }

    /// The periodic job: cut the head once it spans 1.5 block ranges (keeping the newest half
    /// range in memory for queries and late samples), compact finished windows, apply retention.
    pub fn persist_due(&self) -> Result<PersistReport> {
        let _g = self.inner.persist.lock();
        let mut report = PersistReport::default();
        let range = self.inner.opts.head.block_range_ms;
        if let Some((mint, maxt)) = self.inner.head.time_range() {
            if maxt - mint > range * 3 / 2 {
                let before = (maxt - range / 2).div_euclid(range) * range;
                if before > mint {
                    self.cut_head(before, &mut report)?;
                }
            }
        }
        let head_min = self.inner.head.time_range().map_or(i64::MAX, |r| r.0);
        self.compact(&mut report, head_min)?;
        self.apply_retention(&mut report)?;
        Ok(report)
    }

    fn cut_head(&self, before: i64, report: &mut PersistReport) -> Result<()> {
        let inner = &self.inner;
        let cut = inner.head.cut(before);
        if cut.is_empty() {
            return Ok(());
        }
        let metas = write_windows(&inner.dir.join("blocks"), &cut, inner.opts.head.block_range_ms)?;
        let mut opened = Vec::new();
        for m in &metas {
            opened.push(Arc::new(Block::open(&inner.dir.join("blocks").join(&m.id))?));
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
        let meta = w.finish()?;
        let new = match &meta {
            Some(m) => Some(Arc::new(Block::open(&inner.dir.join("blocks").join(&m.id))?)),
            None => None,
        };
        {
            let mut blocks = inner.blocks.write();
            blocks.retain(|b| !group.iter().any(|g| Arc::ptr_eq(g, b)));
            blocks.extend(new);
            blocks.sort_by_key(|b| (b.meta.min_time, b.meta.max_time));
        }
        for b in group {
            remove_block_dir(&b.dir)?;
        }
        inner.stats.compactions.fetch_add(1, Ordering::Relaxed);
        tracing::info!(merged = group.len(), level, "compacted blocks");
        Ok(())
    }

    fn apply_retention(&self, report: &mut PersistReport) -> Result<()> {
        let inner = &self.inner;
        let blocks = inner.blocks.read().clone();
        let newest = blocks.iter().map(|b| b.meta.max_time).chain(inner.head.time_range().map(|r| r.1)).max();
        let Some(newest) = newest else { return Ok(()) };
        let mut doomed: Vec<Arc<Block>> =
            blocks.iter().filter(|b| b.meta.max_time < newest - inner.opts.retention_ms).cloned().collect();
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
            remove_block_dir(&b.dir)?;
            tracing::info!(block = %b.meta.id, max_time = b.meta.max_time, "block deleted by retention");
        }
        inner.stats.blocks_deleted_by_retention.fetch_add(doomed.len() as u64, Ordering::Relaxed);
        report.blocks_deleted += doomed.len();
        Ok(())
    }
}

/// Writes the cut series into one block per aligned window of `range`.
fn write_windows(blocks_dir: &std::path::Path, cut: &[CutSeries], range: i64) -> Result<Vec<BlockMeta>> {
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
    let mut metas = Vec::new();
    for (_, w) in writers {
        metas.extend(w.finish()?);
    }
    Ok(metas)
}

/// Renames first so a crash mid-delete never leaves a half block that looks live.
fn remove_block_dir(dir: &std::path::Path) -> Result<()> {
    let doomed = dir.with_extension("deleting");
    fs::rename(dir, &doomed).ctx(|| format!("renaming {} for deletion", dir.display()))?;
    fs::remove_dir_all(&doomed).ctx(|| format!("deleting {}", doomed.display()))
}
