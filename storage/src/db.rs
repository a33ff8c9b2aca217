//! `Db`: the data directory as a whole. Opens (lock, blocks, WAL replay), hands out appenders
//! and queriers, and runs persistence (cut, compaction, retention) in the background.

use crate::block::Block;
use crate::error::{IoContext, Result, StorageError};
use crate::head::{BatchItem, Head, HeadOptions, Mode};
use crate::labels::{hash_label_refs, LabelRef, Labels};
use crate::lock::DataDirLock;
use crate::matcher::Matcher;
use crate::series::Series;
use crate::wal::{FsyncMode, SamplesEncoder, Wal};
use crate::AppendError;
use parking_lot::{Mutex, RwLock};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct DbOptions {
    pub head: HeadOptions,
    pub wal_fsync: FsyncMode,
    pub wal_fsync_interval: Duration,
    pub wal_segment_bytes: u64,
    /// Blocks whose newest sample is older than this (relative to the newest data) are deleted.
    pub retention_ms: i64,
    /// Oldest blocks are deleted while blocks + WAL exceed this many bytes (0: no size limit).
    pub retention_bytes: u64,
    /// Compaction merges blocks up to this span.
    pub max_block_span_ms: i64,
    /// Live appends stamped more than this far past the wall clock are refused (0: no check).
    /// WAL replay does not check: what was acknowledged once is kept.
    pub max_future_ms: i64,
}

impl Default for DbOptions {
    fn default() -> Self {
        let retention_ms = 15 * 24 * 3600 * 1000;
        DbOptions {
            head: HeadOptions::default(),
            wal_fsync: FsyncMode::Interval,
            wal_fsync_interval: Duration::from_secs(1),
            wal_segment_bytes: 128 << 20,
            retention_ms,
            retention_bytes: 0,
            // As Prometheus: a tenth of the retention, at most 31 days.
            max_block_span_ms: (retention_ms / 10).min(31 * 24 * 3600 * 1000),
            max_future_ms: 10 * 60 * 1000,
        }
    }
}

/// Counters and gauges for `/metrics`; plain atomics so the hot path pays one add.
#[derive(Default, Debug)]
pub struct DbStats {
    pub samples_appended: AtomicU64,
    pub samples_rejected_out_of_order: AtomicU64,
    pub samples_rejected_duplicate: AtomicU64,
    pub samples_rejected_limit: AtomicU64,
    pub samples_rejected_other: AtomicU64,
    pub wal_corruptions: AtomicU64,
    pub wal_truncated_bytes: AtomicU64,
    pub wal_replay_dropped_samples: AtomicU64,
    pub wal_replay_seconds_x1000: AtomicU64,
    pub blocks_dropped: AtomicU64,
    /// Blocks moved aside as `<id>.corrupt`: at start-up (also in `blocks_dropped`) and by the
    /// persistence job (a chunk failing its check when compacted or read).
    pub blocks_quarantined: AtomicU64,
    pub blocks_cut: AtomicU64,
    pub compactions: AtomicU64,
    pub blocks_deleted_by_retention: AtomicU64,
    pub checkpoints: AtomicU64,
}

pub(crate) struct Inner {
    pub dir: PathBuf,
    pub opts: DbOptions,
    pub head: Head,
    pub wal: Wal,
    /// Open blocks sorted by min time. Readers clone the list (Arc bumps) and let go at once;
    /// written only when persistence swaps blocks in or out.
    pub blocks: RwLock<Vec<Arc<Block>>>,
    /// Serialises cut, compaction, retention and checkpoints (one persistence job at a time).
    pub persist: Mutex<()>,
    pub stats: DbStats,
    inflight: AtomicUsize,
    closed: AtomicBool,
    _lock: DataDirLock,
}

/// The time-series database over one data directory.
#[derive(Clone)]
pub struct Db {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("dir", &self.inner.dir).field("series", &self.num_series()).finish()
    }
}

impl Db {
    /// Opens (creating if needed) the data directory: takes its lock, opens blocks (moving
    /// unreadable ones aside), replays the WAL and starts a fresh WAL segment.
    pub fn open(dir: &Path, opts: DbOptions) -> Result<Db> {
        Db::open_locked(DataDirLock::acquire(dir)?, dir, opts)
    }

    /// As `open`, with the lock taken beforehand (the server locks before it binds its port,
    /// so a second instance fails on the lock and names its holder).
    pub fn open_locked(lock: DataDirLock, dir: &Path, opts: DbOptions) -> Result<Db> {
        let stats = DbStats::default();
        let blocks = open_blocks(dir, &stats)?;
        let head = Head::new(opts.head.clone());
        let started = Instant::now();
        crate::replay::replay_wal(&dir.join("wal"), &head, &stats)?;
        stats.wal_replay_seconds_x1000.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        let wal = Wal::open(&dir.join("wal"), opts.wal_fsync, opts.wal_segment_bytes)?;
        tracing::info!(
            series = head.num_series(),
            blocks = blocks.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "storage opened"
        );
        let inner = Inner {
            dir: dir.to_path_buf(),
            opts,
            head,
            wal,
            blocks: RwLock::new(blocks),
            persist: Mutex::new(()),
            stats,
            inflight: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            _lock: lock,
        };
        Ok(Db { inner: Arc::new(inner) })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn options(&self) -> &DbOptions {
        &self.inner.opts
    }

    pub fn stats(&self) -> &DbStats {
        &self.inner.stats
    }

    pub fn head(&self) -> &Head {
        &self.inner.head
    }

    pub fn appender(&self) -> Result<Appender<'_>> {
        self.inner.inflight.fetch_add(1, Ordering::SeqCst);
        if self.inner.closed.load(Ordering::SeqCst) {
            self.inner.inflight.fetch_sub(1, Ordering::SeqCst);
            return Err(StorageError::Closed);
        }
        // After a failed fsync nothing new is acknowledged until a later fsync succeeds.
        if let Some(detail) = self.inner.wal.unhealthy() {
            self.inner.inflight.fetch_sub(1, Ordering::SeqCst);
            return Err(StorageError::WalUnhealthy { detail });
        }
        let max_future = self.inner.opts.max_future_ms;
        let now = wall_clock_ms();
        let max_t = if max_future > 0 { now.saturating_add(max_future) } else { i64::MAX };
        Ok(Appender { db: &self.inner, enc: SamplesEncoder::default(), accepted: 0, now, max_t })
    }

    pub fn querier(&self, mint: i64, maxt: i64) -> Querier {
        let blocks = self.inner.blocks.read().iter().filter(|b| b.overlaps(mint, maxt)).cloned().collect();
        Querier { inner: self.inner.clone(), blocks, mint, maxt }
    }

    pub fn num_series(&self) -> usize {
        self.inner.head.num_series()
    }

    pub fn blocks(&self) -> Vec<Arc<Block>> {
        self.inner.blocks.read().clone()
    }

    /// fsyncs the WAL (the interval-mode timer calls this). Also how the WAL becomes healthy
    /// again after a failed fsync.
    pub fn sync_wal(&self) -> Result<()> {
        self.inner.wal.sync()
    }

    /// False while the last WAL fsync has failed and no later one succeeded; appenders are
    /// refused with `StorageError::WalUnhealthy` meanwhile.
    pub fn wal_healthy(&self) -> bool {
        self.inner.wal.unhealthy().is_none()
    }

    /// Failed WAL fsyncs since the start.
    pub fn wal_fsync_failures(&self) -> u64 {
        self.inner.wal.fsync_failures()
    }

    /// Test hooks that make storage I/O fail (see `fault.rs`).
    #[doc(hidden)]
    pub fn faults(&self) -> &crate::fault::Faults {
        &self.inner.wal.faults
    }

    /// Takes `block` out of the live list and moves its directory aside as `<id>.corrupt`
    /// (persistence job only: readers never move files).
    pub(crate) fn quarantine(&self, block: &Arc<Block>, err: &dyn std::fmt::Display) {
        self.inner.blocks.write().retain(|b| !Arc::ptr_eq(b, block));
        quarantine_dir(&block.dir, &self.inner.stats, err, "quarantining corrupt block");
    }

    /// Stops new appends, waits for in-flight ones, and syncs the WAL.
    pub fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::SeqCst);
        while self.inner.inflight.load(Ordering::SeqCst) > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.inner.wal.sync()
    }

    /// Starts the WAL fsync timer (interval mode) and periodic persistence; both stop when
    /// the last `Db` handle is dropped or `close` is called.
    pub fn start_background(&self, persist_every: Duration) {
        let weak = Arc::downgrade(&self.inner);
        std::thread::Builder::new()
            .name("tsdb-background".into())
            .spawn(move || {
                let mut last_persist = Instant::now();
                let mut last_sync = Instant::now();
                loop {
                    let tick = match weak.upgrade() {
                        // At least 10ms: a zero interval must not spin.
                        Some(inner) => {
                            inner.opts.wal_fsync_interval.clamp(Duration::from_millis(10), Duration::from_secs(1))
                        }
                        None => return,
                    };
                    std::thread::sleep(tick);
                    let Some(inner) = weak.upgrade() else { return };
                    if inner.closed.load(Ordering::SeqCst) {
                        return;
                    }
                    // The tick is at most 1s (for persistence and shutdown), the fsync period is
                    // `wal_fsync_interval` itself, also above 1s. After a failed fsync (any
                    // mode) it is retried every tick: writes are refused until one succeeds.
                    let unhealthy = inner.wal.unhealthy().is_some();
                    let due = inner.opts.wal_fsync == FsyncMode::Interval
                        && last_sync.elapsed() >= inner.opts.wal_fsync_interval;
                    if unhealthy || due {
                        last_sync = Instant::now();
                        match inner.wal.sync() {
                            // Counted and logged where it failed.
                            Ok(()) | Err(StorageError::WalUnhealthy { .. }) => {}
                            Err(e) => tracing::error!(error = %e, "WAL sync failed"),
                        }
                    }
                    if last_persist.elapsed() >= persist_every {
                        last_persist = Instant::now();
                        if let Err(e) = (Db { inner }).persist_due() {
                            tracing::error!(error = %e, "persisting head into blocks failed");
                        }
                    }
                }
            })
            .expect("spawning the storage background thread");
    }
}

/// Buffers one batch's samples for the WAL; each `append` is visible to readers at once, and
/// `commit` writes the batch as one WAL record before returning.
pub struct Appender<'a> {
    db: &'a Inner,
    enc: SamplesEncoder,
    accepted: usize,
    /// The wall clock when the batch began, and the newest timestamp it may hold
    /// (`storage.max_future` past it).
    now: i64,
    max_t: i64,
}

/// Milliseconds since the Unix epoch by the wall clock.
pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Appender<'_> {
    /// Appends one sample. `labels` should be sorted by name; unsorted input is sorted here,
    /// labels with empty values are dropped, and empty or repeated names are rejected.
    pub fn append(&mut self, labels: &[LabelRef<'_>], t: i64, v: f64) -> Result<(), AppendError> {
        if let Err(e) = self.check_future(t) {
            self.count_rejection(&e);
            return Err(e);
        }
        let r = if is_clean(labels) {
            self.append_sorted(labels, t, v)?
        } else {
            let mut sorted: Vec<LabelRef<'_>> = labels.iter().copied().filter(|l| !l.value.is_empty()).collect();
            sorted.sort();
            if sorted.iter().any(|l| l.name.is_empty()) {
                return Err(AppendError::InvalidLabels("empty label name"));
            }
            if sorted.windows(2).any(|w| w[0].name == w[1].name) {
                return Err(AppendError::InvalidLabels("duplicate label name"));
            }
            self.append_sorted(&sorted, t, v)?
        };
        self.enc.add(r, t, v);
        self.accepted += 1;
        Ok(())
    }

    /// Appends many samples at once; the fast path for decoded write requests. Each item is
    /// (labels, t, v) with the same label rules as `append`; `on_error` hears about every
    /// rejected item by index. Returns how many were accepted.
    pub fn append_batch<'l>(
        &mut self,
        items: &[(&'l [LabelRef<'l>], i64, f64)],
        mut on_error: impl FnMut(usize, AppendError),
    ) -> usize {
        let mut batch: Vec<BatchItem<'l>> = Vec::with_capacity(items.len());
        let mut index: Vec<usize> = Vec::with_capacity(items.len());
        let before = self.accepted;
        for (i, &(labels, t, v)) in items.iter().enumerate() {
            if let Err(e) = self.check_future(t) {
                self.count_rejection(&e);
                on_error(i, e);
            } else if !labels.is_empty() && is_clean(labels) {
                batch.push(BatchItem { labels, hash: hash_label_refs(labels.iter().copied()), t, v });
                index.push(i);
            } else if let Err(e) = self.append(labels, t, v) {
                on_error(i, e);
            }
        }
        let wal = &self.db.wal;
        let mut results = Vec::new();
        self.db.head.append_batch(&batch, &mut results, Mode::Live, &mut |r, l| wal.log_series(r, l));
        for (k, res) in results.into_iter().enumerate() {
            let it = &batch[k];
            match res {
                Ok(r) => {
                    self.enc.add(r, it.t, it.v);
                    self.accepted += 1;
                }
                Err(e) => {
                    self.count_rejection(&e);
                    on_error(index[k], e);
                }
            }
        }
        self.accepted - before
    }

    fn check_future(&self, t: i64) -> Result<(), AppendError> {
        if t > self.max_t {
            return Err(AppendError::TooFarInFuture { t, now: self.now, max_future_ms: self.db.opts.max_future_ms });
        }
        Ok(())
    }

    fn count_rejection(&self, e: &AppendError) {
        let s = &self.db.stats;
        let c = match e {
            AppendError::OutOfOrder { .. } => &s.samples_rejected_out_of_order,
            AppendError::Duplicate { .. } => &s.samples_rejected_duplicate,
            AppendError::SeriesLimit { .. } => &s.samples_rejected_limit,
            _ => &s.samples_rejected_other,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn append_sorted(&mut self, labels: &[LabelRef<'_>], t: i64, v: f64) -> Result<u64, AppendError> {
        if labels.is_empty() {
            return Err(AppendError::InvalidLabels("empty label set"));
        }
        let wal = &self.db.wal;
        let res = self.db.head.append(labels, t, v, Mode::Live, &mut |r, l| wal.log_series(r, l));
        if let Err(e) = &res {
            self.count_rejection(e);
        }
        res
    }

    /// Writes the batch to the WAL (fsynced in `batch` mode). Returns the samples accepted.
    pub fn commit(mut self) -> Result<usize> {
        self.flush()?;
        Ok(self.accepted)
    }

    fn flush(&mut self) -> Result<()> {
        if self.enc.is_empty() {
            return Ok(());
        }
        let res = self.db.wal.log_samples(&self.enc.buf);
        self.enc.clear();
        self.db.stats.samples_appended.fetch_add(self.accepted as u64, Ordering::Relaxed);
        res
    }
}

impl Drop for Appender<'_> {
    fn drop(&mut self) {
        // Samples are already visible in the head; keep the WAL a superset of it.
        if let Err(e) = self.flush() {
            tracing::error!(error = %e, "WAL write of an uncommitted batch failed");
        }
        self.db.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Labels the head can take as they are: names sorted and unique, none empty, no empty values.
#[inline]
fn is_clean(labels: &[LabelRef<'_>]) -> bool {
    labels.iter().all(|l| !l.name.is_empty() && !l.value.is_empty())
        && labels.windows(2).all(|w| name_lt(w[0].name, w[1].name))
}

/// `a < b` for label names; most adjacent names differ in their first byte, which saves a
/// `memcmp` call per label on the append path.
#[inline]
fn name_lt(a: &str, b: &str) -> bool {
    let (x, y) = (a.as_bytes()[0], b.as_bytes()[0]);
    if x != y {
        x < y
    } else {
        a < b
    }
}

/// A read view over the head and the blocks that overlap [mint, maxt] at creation time.
pub struct Querier {
    inner: Arc<Inner>,
    blocks: Vec<Arc<Block>>,
    mint: i64,
    maxt: i64,
}

impl Querier {
    /// Series matching every matcher, sorted by labels, each merging all its sources.
    pub fn select(&self, matchers: &[Matcher]) -> Result<Vec<Series>> {
        let mut all = self.inner.head.select(matchers, self.mint, self.maxt);
        for b in &self.blocks {
            all.extend(b.select(matchers, self.mint, self.maxt)?);
        }
        all.sort_by(|a, b| a.labels.cmp(&b.labels));
        let mut out: Vec<Series> = Vec::with_capacity(all.len());
        for s in all {
            match out.last_mut() {
                Some(last) if last.labels == s.labels => last.chunks.extend(s.chunks),
                _ => out.push(s),
            }
        }
        Ok(out)
    }

    /// Like `select`, but in no particular order: when no block overlaps the range (the common
    /// case for recent data) the head's series need no sorting or merging, which is most of
    /// the cost of selecting tens of thousands of series.
    pub fn select_unsorted(&self, matchers: &[Matcher]) -> Result<Vec<Series>> {
        if self.blocks.is_empty() {
            return Ok(self.inner.head.select(matchers, self.mint, self.maxt));
        }
        self.select(matchers)
    }

    fn matching_labels(&self, matchers: &[Matcher]) -> Vec<Labels> {
        let mut all = self.inner.head.select_labels(matchers, self.mint, self.maxt);
        for b in &self.blocks {
            all.extend(b.select_labels(matchers, self.mint, self.maxt));
        }
        all
    }

    /// Labels of the distinct series matching `matchers` in the querier's time range, sorted.
    pub fn series_labels(&self, matchers: &[Matcher]) -> Vec<Labels> {
        let mut all = self.matching_labels(matchers);
        all.sort();
        all.dedup();
        all
    }

    /// How many distinct series match `matchers` in the querier's time range.
    pub fn series_count(&self, matchers: &[Matcher]) -> usize {
        let mut all = self.matching_labels(matchers);
        all.sort();
        all.dedup();
        all.len()
    }

    /// Label names of series matching `matchers` (all series when empty), sorted.
    pub fn label_names(&self, matchers: &[Matcher]) -> Vec<String> {
        let mut names: Vec<String> = if matchers.is_empty() {
            let mut n = self.inner.head.label_names();
            for b in &self.blocks {
                n.extend(b.index.label_names());
            }
            n
        } else {
            self.matching_labels(matchers)
                .iter()
                .flat_map(|l| l.iter().map(|x| x.name.to_string()).collect::<Vec<_>>())
                .collect()
        };
        names.sort();
        names.dedup();
        names
    }

    /// Values of label `name` among series matching `matchers`, sorted.
    pub fn label_values(&self, name: &str, matchers: &[Matcher]) -> Vec<String> {
        use crate::postings::PostingsSource;
        let mut values: Vec<String> = if matchers.is_empty() {
            let mut v = self.inner.head.label_values(name);
            for b in &self.blocks {
                v.extend(b.index.label_values(name));
            }
            v
        } else {
            self.matching_labels(matchers).iter().filter_map(|l| l.get(name).map(str::to_string)).collect()
        };
        values.sort();
        values.dedup();
        values
    }
}

fn open_blocks(dir: &Path, stats: &DbStats) -> Result<Vec<Arc<Block>>> {
    let bdir = dir.join("blocks");
    fs::create_dir_all(&bdir).ctx(|| format!("creating {}", bdir.display()))?;
    let mut blocks = Vec::new();
    for e in fs::read_dir(&bdir).ctx(|| format!("reading {}", bdir.display()))?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let path = e.path();
        if name.ends_with(".tmp") || name.ends_with(".deleting") {
            // An interrupted write or delete: the block was never (or no longer) live.
            let _ = fs::remove_dir_all(&path);
            continue;
        }
        if name.ends_with(".corrupt") {
            continue;
        }
        match Block::open(&path) {
            Ok(b) => blocks.push(Arc::new(b)),
            Err(err) => {
                quarantine_dir(&path, stats, &err, "dropping unreadable block");
                stats.blocks_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    blocks.sort_by_key(|b| (b.meta.min_time, b.meta.max_time));
    Ok(blocks)
}

/// Moves a block directory aside to `<id>.corrupt` (kept for inspection, never opened again),
/// logs why and counts it. Used at start-up for blocks that fail to open and by the
/// persistence job for blocks whose chunks fail their check.
pub(crate) fn quarantine_dir(path: &Path, stats: &DbStats, err: &dyn std::fmt::Display, why: &str) {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let aside = path.with_file_name(format!("{name}.corrupt"));
    match fs::rename(path, &aside) {
        Ok(()) => tracing::error!(block = %name, error = %err, moved_to = %aside.display(), "{why}"),
        Err(e) => tracing::error!(block = %name, error = %err, rename_error = %e, "{why} (could not move it aside)"),
    }
    stats.blocks_quarantined.fetch_add(1, Ordering::Relaxed);
}
