//! The head: every active series in memory, sharded by label hash so many connections append at
//! once. Appends to a known series look it up by the hash of the borrowed labels and touch no
//! label strings; only a new series interns and allocates.

use crate::chunk::{XorAppender, XorIter, SAMPLES_PER_CHUNK};
use crate::error::AppendError;
use crate::labels::{hash_label_refs, Interner, LabelRef, Labels, LabelsHash, Sym};
use crate::matcher::Matcher;
use crate::postings::{postings_for_matchers, PostingsSource};
use crate::series::{ChunkBytes, ChunkData, ChunkSrc, Series};
use parking_lot::{Mutex, RwLock};
use rustc_hash::FxHashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Series ids carry their shard in the low bits so a reader can go from id to shard directly.
pub type SeriesRef = u64;
const SHARD_BITS: u32 = 5;
const SHARDS: usize = 1 << SHARD_BITS;

/// Folds the high half in so the shard does not depend on the low bits alone.
#[inline]
fn shard_of(hash: u64) -> usize {
    ((hash ^ (hash >> 32)) as usize) & (SHARDS - 1)
}

#[derive(Debug, Clone)]
pub struct HeadOptions {
    /// Samples up to this much older than a series' newest sample are kept (0: none).
    pub out_of_order_window_ms: i64,
    /// New series beyond this many are rejected (0: unlimited).
    pub max_series: usize,
    /// Block span; chunks never straddle a multiple of it, so blocks take whole chunks.
    pub block_range_ms: i64,
}

impl Default for HeadOptions {
    fn default() -> Self {
        HeadOptions { out_of_order_window_ms: 0, max_series: 0, block_range_ms: 2 * 3600 * 1000 }
    }
}

struct HeadChunk {
    mint: i64,
    maxt: i64,
    data: Arc<[u8]>,
}

struct OpenChunk {
    app: XorAppender,
    mint: i64,
    maxt: i64,
}

/// A hint to start loading `p`'s cache line; never faults, whatever `p` points at.
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch only hints the cache; it does not dereference and cannot fault.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p as *const i8, std::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// One sample for `Head::append_batch`: sorted, clean labels and their hash.
pub(crate) struct BatchItem<'a> {
    pub labels: &'a [LabelRef<'a>],
    pub hash: LabelsHash,
    pub t: i64,
    pub v: f64,
}

pub(crate) struct MemSeries {
    r: SeriesRef,
    labels: Labels,
    closed: Vec<HeadChunk>,
    open: Option<OpenChunk>,
    /// Out-of-order samples, sorted by time; empty (unallocated) for nearly every series.
    ooo: Vec<(i64, f64)>,
    /// Newest in-order timestamp ever appended (survives truncation), i64::MIN if none.
    max_t: i64,
    last_v: u64,
}

/// How strict an append is about order.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Live,
    /// WAL replay: every logged sample was acknowledged, so order is not checked again.
    Replay,
}

impl MemSeries {
    fn new(r: SeriesRef, labels: Labels) -> Self {
        MemSeries { r, labels, closed: Vec::new(), open: None, ooo: Vec::new(), max_t: i64::MIN, last_v: 0 }
    }

    fn append(&mut self, t: i64, v: f64, opts: &HeadOptions, mode: Mode) -> Result<(), AppendError> {
        if t < 0 {
            return Err(AppendError::NegativeTimestamp { t });
        }
        if t > self.max_t {
            self.append_in_order(t, v, opts.block_range_ms);
            return Ok(());
        }
        if t == self.max_t {
            return if v.to_bits() == self.last_v { Ok(()) } else { Err(AppendError::Duplicate { t }) };
        }
        // An older timestamp the head already holds is a resend (a client retrying after a 5xx):
        // the same value is accepted silently wherever it sits, another value is a duplicate.
        let held = self
            .in_order_value_at(t)
            .or_else(|| self.ooo.binary_search_by_key(&t, |s| s.0).ok().map(|i| self.ooo[i].1.to_bits()));
        if let Some(existing) = held {
            return if existing == v.to_bits() { Ok(()) } else { Err(AppendError::Duplicate { t }) };
        }
        let window = opts.out_of_order_window_ms;
        if mode == Mode::Live && (window == 0 || t < self.max_t - window) {
            return Err(AppendError::OutOfOrder { t, newest: self.max_t, window_ms: window });
        }
        let i = self.ooo.partition_point(|s| s.0 < t);
        self.ooo.insert(i, (t, v));
        Ok(())
    }

    fn append_in_order(&mut self, t: i64, v: f64, range: i64) {
        let cut = match &self.open {
            None => true,
            Some(o) => o.app.count() >= SAMPLES_PER_CHUNK || t >= (o.mint / range + 1) * range,
        };
        if cut {
            self.seal_open();
            self.open = Some(OpenChunk { app: XorAppender::new(), mint: t, maxt: t });
        }
        let o = self.open.as_mut().expect("open chunk exists after cut");
        o.app.append(t, v);
        o.maxt = t;
        self.max_t = t;
        self.last_v = v.to_bits();
    }

    fn seal_open(&mut self) {
        if let Some(o) = self.open.take() {
            self.closed.push(HeadChunk { mint: o.mint, maxt: o.maxt, data: o.app.into_bytes().into() });
        }
    }

    fn in_order_value_at(&self, t: i64) -> Option<u64> {
        let closed = self.closed.iter().map(|c| (c.mint, c.maxt, &c.data[..]));
        let open = self.open.iter().map(|o| (o.mint, o.maxt, o.app.bytes()));
        closed
            .chain(open)
            .filter(|(mint, maxt, _)| *mint <= t && t <= *maxt)
            .find_map(|(_, _, b)| XorIter::new(b).find(|s| s.0 == t))
            .map(|s| s.1.to_bits())
    }

    fn has_data(&self) -> bool {
        !self.closed.is_empty() || self.open.is_some() || !self.ooo.is_empty()
    }

    /// Chunks overlapping [mint, maxt], as shareable sources. The open chunk is copied: it is
    /// small and still being appended to.
    fn chunks_in(&self, mint: i64, maxt: i64) -> Vec<ChunkSrc> {
        let mut out = Vec::new();
        for c in &self.closed {
            if c.maxt >= mint && c.mint <= maxt {
                out.push(ChunkSrc {
                    mint: c.mint,
                    maxt: c.maxt,
                    data: ChunkData::Xor(ChunkBytes::Heap(c.data.clone())),
                });
            }
        }
        if let Some(o) = &self.open {
            if o.maxt >= mint && o.mint <= maxt {
                out.push(ChunkSrc {
                    mint: o.mint,
                    maxt: o.maxt,
                    data: ChunkData::Xor(ChunkBytes::Heap(o.app.bytes().into())),
                });
            }
        }
        let ooo: Vec<(i64, f64)> = self.ooo.iter().copied().filter(|s| s.0 >= mint && s.0 <= maxt).collect();
        if let (Some(first), Some(last)) = (ooo.first(), ooo.last()) {
            out.push(ChunkSrc { mint: first.0, maxt: last.0, data: ChunkData::Raw(ooo.into()) });
        }
        out
    }
}

/// One shard's series. The series live in a slab and the hash tables hold only slot numbers:
/// small tables stay in cache, so an append of a known series costs one miss for its state.
#[derive(Default)]
struct Shard {
    slab: Vec<Option<MemSeries>>,
    free: Vec<u32>,
    /// Bucket hash → (check hash, slot).
    by_hash: FxHashMap<u64, (u64, u32)>,
    /// Further series whose bucket hash equals the one in `by_hash` (rare).
    collisions: FxHashMap<u64, Vec<(u64, u32)>>,
    /// Series id → slot, for the paths addressed by id (replay, reads, truncation).
    slot_of: FxHashMap<SeriesRef, u32>,
}

impl Shard {
    #[inline]
    fn at(&self, slot: u32) -> &MemSeries {
        self.slab[slot as usize].as_ref().expect("indexed slots are occupied")
    }

    #[inline]
    fn find_slot(&self, h: LabelsHash) -> Option<u32> {
        let &(check, slot) = self.by_hash.get(&h.bucket)?;
        if check == h.check {
            return Some(slot);
        }
        self.collisions.get(&h.bucket)?.iter().find(|(c, _)| *c == h.check).map(|(_, s)| *s)
    }

    fn get(&self, r: SeriesRef) -> Option<&MemSeries> {
        self.slot_of.get(&r).map(|&i| self.at(i))
    }

    fn get_mut(&mut self, r: SeriesRef) -> Option<&mut MemSeries> {
        let i = *self.slot_of.get(&r)?;
        self.slab[i as usize].as_mut()
    }

    fn insert(&mut self, h: LabelsHash, s: MemSeries) -> u32 {
        let r = s.r;
        let slot = match self.free.pop() {
            Some(i) => {
                self.slab[i as usize] = Some(s);
                i
            }
            None => {
                self.slab.push(Some(s));
                (self.slab.len() - 1) as u32
            }
        };
        self.slot_of.insert(r, slot);
        if self.by_hash.contains_key(&h.bucket) {
            self.collisions.entry(h.bucket).or_default().push((h.check, slot));
        } else {
            self.by_hash.insert(h.bucket, (h.check, slot));
        }
        slot
    }

    fn remove(&mut self, r: SeriesRef) -> Option<MemSeries> {
        let slot = self.slot_of.remove(&r)?;
        let s = self.slab[slot as usize].take()?;
        self.free.push(slot);
        let h = s.labels.hash_key().bucket;
        if self.by_hash.get(&h).is_some_and(|e| e.1 == slot) {
            self.by_hash.remove(&h);
            if let Some(mut rest) = self.collisions.remove(&h) {
                self.by_hash.insert(h, rest.remove(0));
                if !rest.is_empty() {
                    self.collisions.insert(h, rest);
                }
            }
        } else if let Some(list) = self.collisions.get_mut(&h) {
            list.retain(|e| e.1 != slot);
            if list.is_empty() {
                self.collisions.remove(&h);
            }
        }
        Some(s)
    }

    fn iter(&self) -> impl Iterator<Item = &MemSeries> {
        self.slab.iter().flatten()
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut MemSeries> {
        self.slab.iter_mut().flatten()
    }
}

/// The head's inverted index: label name → value → sorted series ids.
#[derive(Default)]
struct MemPostings {
    all: Vec<SeriesRef>,
    by_label: FxHashMap<Sym, FxHashMap<Sym, Vec<SeriesRef>>>,
}

fn insert_sorted(v: &mut Vec<SeriesRef>, r: SeriesRef) {
    match v.last() {
        Some(&last) if last > r => {
            let i = v.partition_point(|x| *x < r);
            v.insert(i, r);
        }
        _ => v.push(r),
    }
}

impl MemPostings {
    fn add(&mut self, r: SeriesRef, labels: &Labels) {
        insert_sorted(&mut self.all, r);
        for l in labels.iter() {
            let values = self.by_label.entry(l.name.clone()).or_default();
            insert_sorted(values.entry(l.value.clone()).or_default(), r);
        }
    }

    fn remove(&mut self, gone: &[SeriesRef]) {
        let keep = |v: &mut Vec<SeriesRef>| v.retain(|r| gone.binary_search(r).is_err());
        keep(&mut self.all);
        for values in self.by_label.values_mut() {
            for list in values.values_mut() {
                keep(list);
            }
            values.retain(|_, l| !l.is_empty());
        }
        self.by_label.retain(|_, v| !v.is_empty());
    }
}

impl PostingsSource for MemPostings {
    fn label_values(&self, name: &str) -> Vec<String> {
        self.by_label.get(name).map(|v| v.keys().map(|s| s.to_string()).collect()).unwrap_or_default()
    }
    fn postings(&self, name: &str, value: &str) -> Vec<u64> {
        self.by_label.get(name).and_then(|v| v.get(value)).cloned().unwrap_or_default()
    }
    fn all_postings(&self) -> Vec<u64> {
        self.all.clone()
    }
}

/// Chunks taken out of the head for a block; `Head::truncate` later drops exactly these.
pub(crate) struct CutSeries {
    pub labels: Labels,
    r: SeriesRef,
    chunks: Vec<Arc<[u8]>>,
    ooo: Vec<(i64, f64)>,
}

impl CutSeries {
    /// The cut samples in time order (decoded only when the block writer asks).
    pub fn samples(&self) -> Vec<(i64, f64)> {
        let mut samples: Vec<(i64, f64)> = self.chunks.iter().flat_map(|c| XorIter::new(c)).collect();
        if !self.ooo.is_empty() {
            samples.extend(self.ooo.iter().copied());
            samples.sort_by_key(|x| x.0);
            samples.dedup_by_key(|x| x.0);
        }
        samples
    }
}

pub struct Head {
    /// One lock per shard: it guards that shard's series map and every series' chunks in it.
    /// Held for a lookup plus one sample append, or for copying one series' chunks on read.
    shards: Box<[Mutex<Shard>]>,
    next_id: AtomicU64,
    /// Guards the inverted index; written only when a series is created or collected. Lock
    /// order: a shard lock may be held while taking this one, never the other way round.
    postings: RwLock<MemPostings>,
    interner: Interner,
    num_series: AtomicUsize,
    min_t: AtomicI64,
    max_t: AtomicI64,
    opts: HeadOptions,
}

impl Head {
    pub fn new(opts: HeadOptions) -> Head {
        Head {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            next_id: AtomicU64::new(1),
            postings: RwLock::new(MemPostings::default()),
            interner: Interner::default(),
            num_series: AtomicUsize::new(0),
            min_t: AtomicI64::new(i64::MAX),
            max_t: AtomicI64::new(i64::MIN),
            opts,
        }
    }

    pub fn options(&self) -> &HeadOptions {
        &self.opts
    }

    pub fn num_series(&self) -> usize {
        self.num_series.load(Ordering::Relaxed)
    }

    /// Time range of samples in the head, None when empty.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        let (a, b) = (self.min_t.load(Ordering::Relaxed), self.max_t.load(Ordering::Relaxed));
        (a <= b).then_some((a, b))
    }

    /// Appends one sample to the series named by sorted, unique, non-empty `labels`, creating
    /// it if needed. `on_create` runs under the shard lock before the series is visible, so the
    /// WAL gets its series record before any sample that refers to it.
    pub(crate) fn append(
        &self,
        labels: &[LabelRef<'_>],
        t: i64,
        v: f64,
        mode: Mode,
        on_create: &mut dyn FnMut(SeriesRef, &Labels),
    ) -> Result<SeriesRef, AppendError> {
        let hash = hash_label_refs(labels.iter().copied());
        let shard_idx = shard_of(hash.bucket);
        let mut shard = self.shards[shard_idx].lock();
        let r = self.append_locked(&mut shard, shard_idx, hash, labels, t, v, mode, on_create)?;
        drop(shard);
        self.note_time(t);
        Ok(r)
    }

    /// Appends many samples, each with its labels' hash computed by the caller. Samples are
    /// taken shard by shard (in their given order within a shard, so a series' samples keep
    /// theirs): one lock per shard instead of per sample, and one shard's tables and series
    /// stay in cache while its samples go in. Each item's outcome is written to `results`.
    pub(crate) fn append_batch(
        &self,
        items: &[BatchItem<'_>],
        results: &mut Vec<Result<SeriesRef, AppendError>>,
        mode: Mode,
        on_create: &mut dyn FnMut(SeriesRef, &Labels),
    ) {
        results.clear();
        results.resize(items.len(), Err(AppendError::InvalidLabels("not appended")));
        let mut starts = [0usize; SHARDS + 1];
        for it in items {
            starts[shard_of(it.hash.bucket) + 1] += 1;
        }
        for i in 0..SHARDS {
            starts[i + 1] += starts[i];
        }
        let mut fill = starts;
        let mut order = vec![0u32; items.len()];
        for (i, it) in items.iter().enumerate() {
            let sh = shard_of(it.hash.bucket);
            order[fill[sh]] = i as u32;
            fill[sh] += 1;
        }
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        let mut slots: Vec<Option<u32>> = Vec::new();
        // Concurrent batches start at different shards so they do not queue on the same lock.
        static ROTATE: AtomicUsize = AtomicUsize::new(0);
        let first = ROTATE.fetch_add(SHARDS / 2 + 1, Ordering::Relaxed);
        for j in 0..SHARDS {
            let sh = (first + j) % SHARDS;
            let idx = &order[starts[sh]..starts[sh + 1]];
            if idx.is_empty() {
                continue;
            }
            let mut shard = self.shards[sh].lock();
            // Look every slot up first (the shard's table is small and now hot), then append
            // while prefetching the series state a few items ahead, and its chunk buffer once
            // that state has arrived: the loads overlap instead of stalling one after another.
            slots.clear();
            slots.extend(idx.iter().map(|&i| shard.find_slot(items[i as usize].hash)));
            for (k, &i) in idx.iter().enumerate() {
                if let Some(Some(s)) = slots.get(k + 8) {
                    prefetch(&shard.slab[*s as usize]);
                }
                if let Some(Some(s)) = slots.get(k + 4) {
                    if let Some(o) = shard.slab[*s as usize].as_ref().and_then(|m| m.open.as_ref()) {
                        prefetch(o.app.bytes().as_ptr());
                    }
                }
                let it = &items[i as usize];
                let res = match slots[k] {
                    Some(slot) => {
                        let s = shard.slab[slot as usize].as_mut().expect("indexed slots are occupied");
                        s.append(it.t, it.v, &self.opts, mode).map(|_| s.r)
                    }
                    // New series, or one created by an earlier item of this batch.
                    None => self.append_locked(&mut shard, sh, it.hash, it.labels, it.t, it.v, mode, on_create),
                };
                if res.is_ok() {
                    lo = lo.min(it.t);
                    hi = hi.max(it.t);
                }
                results[i as usize] = res;
            }
        }
        if lo <= hi {
            self.note_time(lo);
            self.note_time(hi);
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn append_locked(
        &self,
        shard: &mut Shard,
        shard_idx: usize,
        hash: LabelsHash,
        labels: &[LabelRef<'_>],
        t: i64,
        v: f64,
        mode: Mode,
        on_create: &mut dyn FnMut(SeriesRef, &Labels),
    ) -> Result<SeriesRef, AppendError> {
        if let Some(slot) = shard.find_slot(hash) {
            let s = shard.slab[slot as usize].as_mut().expect("indexed slots are occupied");
            s.append(t, v, &self.opts, mode)?;
            return Ok(s.r);
        }
        if t < 0 {
            return Err(AppendError::NegativeTimestamp { t });
        }
        let labels = Labels::from_sorted_refs(labels, &self.interner);
        let r = self.create(shard_idx, hash, labels, shard, on_create)?;
        let s = shard.get_mut(r).expect("series just created");
        s.append(t, v, &self.opts, mode)?;
        Ok(r)
    }

    /// Replay path: appends samples already grouped by shard (`buckets[i]` holds shard i's, in
    /// WAL order), shards spread over the available cores and each shard locked once. Grouping
    /// keeps one shard's series hot in cache while its samples go in, instead of touching a
    /// random series per sample as the WAL order would. Returns (appended, dropped).
    pub(crate) fn append_replayed(&self, buckets: &mut [Vec<(SeriesRef, i64, f64)>]) -> (u64, u64) {
        debug_assert_eq!(buckets.len(), SHARDS);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let buckets: Vec<parking_lot::Mutex<&mut Vec<(SeriesRef, i64, f64)>>> =
            buckets.iter_mut().map(parking_lot::Mutex::new).collect();
        let totals = std::sync::Mutex::new((0u64, 0u64, i64::MAX, i64::MIN));
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    let (mut ok, mut dropped, mut lo, mut hi) = (0u64, 0u64, i64::MAX, i64::MIN);
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= SHARDS {
                            break;
                        }
                        let mut bucket = buckets[i].lock();
                        // Series-major order (stable: a series' samples keep their WAL order), so
                        // each series' chunk is touched once per flush rather than per sample.
                        bucket.sort_by_key(|s| s.0);
                        let mut shard = self.shards[i].lock();
                        let mut cached: (SeriesRef, Option<u32>) = (u64::MAX, None);
                        for &(r, t, v) in bucket.iter() {
                            if cached.0 != r {
                                cached = (r, shard.slot_of.get(&r).copied());
                            }
                            let series = cached.1.and_then(|slot| shard.slab[slot as usize].as_mut());
                            match series.map(|s| s.append(t, v, &self.opts, Mode::Replay)) {
                                Some(Ok(())) => {
                                    ok += 1;
                                    lo = lo.min(t);
                                    hi = hi.max(t);
                                }
                                _ => dropped += 1,
                            }
                        }
                        bucket.clear();
                    }
                    let mut tot = totals.lock().expect("totals lock");
                    tot.0 += ok;
                    tot.1 += dropped;
                    tot.2 = tot.2.min(lo);
                    tot.3 = tot.3.max(hi);
                });
            }
        });
        let (ok, dropped, lo, hi) = totals.into_inner().expect("totals lock");
        if ok > 0 {
            self.note_time(lo);
            self.note_time(hi);
        }
        (ok, dropped)
    }

    /// The shard a series id lives in.
    pub(crate) fn shard_of_ref(r: SeriesRef) -> usize {
        (r as usize) & (SHARDS - 1)
    }

    pub(crate) const SHARDS: usize = SHARDS;

    /// Creates a series read from the WAL or a checkpoint under its logged id, so samples
    /// records need no translation. Returns the id in use: an existing series with the same
    /// labels keeps its own, and a logged id whose shard does not match gets a fresh one.
    pub(crate) fn create_replayed(&self, logged: SeriesRef, refs: &[LabelRef<'_>]) -> SeriesRef {
        let hash = hash_label_refs(refs.iter().copied());
        let shard_idx = shard_of(hash.bucket);
        let mut shard = self.shards[shard_idx].lock();
        if let Some(slot) = shard.find_slot(hash) {
            return shard.at(slot).r;
        }
        let labels = Labels::from_sorted_refs(refs, &self.interner);
        let r = if (logged as usize) & (SHARDS - 1) == shard_idx && shard.get(logged).is_none() {
            self.next_id.fetch_max((logged >> SHARD_BITS) + 1, Ordering::Relaxed);
            logged
        } else {
            (self.next_id.fetch_add(1, Ordering::Relaxed) << SHARD_BITS) | shard_idx as u64
        };
        // Replayed series were accepted once; the limit applies to new series only.
        self.num_series.fetch_add(1, Ordering::Relaxed);
        self.postings.write().add(r, &labels);
        shard.insert(hash, MemSeries::new(r, labels));
        r
    }

    fn create(
        &self,
        shard_idx: usize,
        hash: LabelsHash,
        labels: Labels,
        shard: &mut Shard,
        on_create: &mut dyn FnMut(SeriesRef, &Labels),
    ) -> Result<SeriesRef, AppendError> {
        let limit = self.opts.max_series;
        if limit > 0 && self.num_series.fetch_add(1, Ordering::Relaxed) >= limit {
            self.num_series.fetch_sub(1, Ordering::Relaxed);
            return Err(AppendError::SeriesLimit { limit });
        } else if limit == 0 {
            self.num_series.fetch_add(1, Ordering::Relaxed);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let r = (id << SHARD_BITS) | shard_idx as u64;
        on_create(r, &labels);
        self.postings.write().add(r, &labels);
        shard.insert(hash, MemSeries::new(r, labels));
        Ok(r)
    }

    fn note_time(&self, t: i64) {
        if t < self.min_t.load(Ordering::Relaxed) {
            self.min_t.fetch_min(t, Ordering::Relaxed);
        }
        if t > self.max_t.load(Ordering::Relaxed) {
            self.max_t.fetch_max(t, Ordering::Relaxed);
        }
    }

    fn matching_refs(&self, matchers: &[Matcher]) -> Vec<SeriesRef> {
        // The postings lock is released before any shard lock is taken (see lock order).
        postings_for_matchers(&*self.postings.read(), matchers)
    }

    /// Series matching all matchers with samples in [mint, maxt] (unsorted).
    pub fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<Series> {
        let refs = self.matching_refs(matchers);
        let mut out = Vec::with_capacity(refs.len());
        self.for_each_series(&refs, |s| {
            let chunks = s.chunks_in(mint, maxt);
            if !chunks.is_empty() {
                out.push(Series { labels: s.labels.clone(), chunks, mint, maxt });
            }
        });
        out
    }

    /// Labels of matching series that have any sample in [mint, maxt].
    pub fn select_labels(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<Labels> {
        let refs = self.matching_refs(matchers);
        let mut out = Vec::new();
        self.for_each_series(&refs, |s| {
            let overlaps = s.closed.iter().any(|c| c.maxt >= mint && c.mint <= maxt)
                || s.open.as_ref().is_some_and(|o| o.maxt >= mint && o.mint <= maxt)
                || s.ooo.iter().any(|x| x.0 >= mint && x.0 <= maxt);
            if overlaps {
                out.push(s.labels.clone());
            }
        });
        out
    }

    /// Visits series by id, locking each shard once.
    fn for_each_series(&self, refs: &[SeriesRef], mut f: impl FnMut(&MemSeries)) {
        let mut by_shard: Vec<Vec<SeriesRef>> = vec![Vec::new(); SHARDS];
        for &r in refs {
            by_shard[(r as usize) & (SHARDS - 1)].push(r);
        }
        for (i, rs) in by_shard.iter().enumerate() {
            if rs.is_empty() {
                continue;
            }
            let shard = self.shards[i].lock();
            for r in rs {
                if let Some(s) = shard.get(*r) {
                    f(s);
                }
            }
        }
    }

    /// Takes every sample older than `before` out for a block: seals open chunks that start
    /// before it and snapshots the chunks and out-of-order samples. Nothing is removed yet.
    pub(crate) fn cut(&self, before: i64) -> Vec<CutSeries> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            for s in shard.iter_mut() {
                let r = s.r;
                if s.open.as_ref().is_some_and(|o| o.mint < before) {
                    s.seal_open();
                }
                let chunks: Vec<Arc<[u8]>> =
                    s.closed.iter().filter(|c| c.mint < before).map(|c| c.data.clone()).collect();
                if chunks.is_empty() && s.ooo.first().is_none_or(|x| x.0 >= before) {
                    continue;
                }
                let ooo = s.ooo.iter().copied().filter(|x| x.0 < before).collect();
                out.push(CutSeries { labels: s.labels.clone(), r, chunks, ooo });
            }
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        out
    }

    /// Drops what `cut` took (now safe in a block) and collects series that are left empty
    /// and had no sample since `stale_before`. Returns the number of series removed.
    pub(crate) fn truncate(&self, cut: &[CutSeries], stale_before: i64) -> usize {
        let mut gone = Vec::new();
        for c in cut {
            let mut shard = self.shards[(c.r as usize) & (SHARDS - 1)].lock();
            let Some(s) = shard.get_mut(c.r) else { continue };
            s.closed.retain(|hc| !c.chunks.iter().any(|x| Arc::ptr_eq(x, &hc.data)));
            // Exactly the samples that were cut: others may have arrived since.
            s.ooo.retain(|x| c.ooo.binary_search_by_key(&x.0, |y| y.0).is_err());
            if s.ooo.is_empty() {
                s.ooo = Vec::new();
            }
            if !s.has_data() && s.max_t < stale_before {
                shard.remove(c.r);
                gone.push(c.r);
            }
        }
        if !gone.is_empty() {
            gone.sort_unstable();
            self.postings.write().remove(&gone);
            self.num_series.fetch_sub(gone.len(), Ordering::Relaxed);
            self.interner.gc();
        }
        self.recompute_min_time();
        gone.len()
    }

    fn recompute_min_time(&self) {
        let mut min = i64::MAX;
        for shard in self.shards.iter() {
            let shard = shard.lock();
            for s in shard.iter() {
                let m = s
                    .closed
                    .iter()
                    .map(|c| c.mint)
                    .chain(s.open.iter().map(|o| o.mint))
                    .chain(s.ooo.first().map(|x| x.0))
                    .min();
                if let Some(m) = m {
                    min = min.min(m);
                }
            }
        }
        self.min_t.store(min, Ordering::Relaxed);
        if min == i64::MAX {
            self.max_t.store(i64::MIN, Ordering::Relaxed);
        }
    }

    /// Every live series and its samples (for WAL checkpoints), series in id order.
    pub(crate) fn snapshot(&self) -> Vec<(SeriesRef, Labels, Vec<(i64, f64)>)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            for s in shard.iter() {
                let r = s.r;
                let mut samples: Vec<(i64, f64)> =
                    s.chunks_in(i64::MIN, i64::MAX).iter().flat_map(|c| c.samples().collect::<Vec<_>>()).collect();
                samples.sort_by_key(|x| x.0);
                out.push((r, s.labels.clone(), samples));
            }
        }
        out.sort_by_key(|x| x.0);
        out
    }

    pub fn label_names(&self) -> Vec<String> {
        self.postings.read().by_label.keys().map(|k| k.to_string()).collect()
    }

    pub fn label_values(&self, name: &str) -> Vec<String> {
        self.postings.read().label_values(name)
    }
}
