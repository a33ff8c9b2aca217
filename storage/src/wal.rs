//! Write-ahead log: numbered segment files of checksummed records, plus at most one checkpoint
//! that stands in for all segments up to its number. Format: docs/format/wal.md.

use crate::error::{IoContext, Result, StorageError};
use crate::fault::{self, Fault, Faults};
use crate::labels::{LabelRef, Labels};
use parking_lot::Mutex;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub const REC_SERIES: u8 = 1;
pub const REC_SAMPLES: u8 = 2;
const HEADER: usize = 9;
/// Bigger than any sane record; a length beyond it is corruption, not an allocation request.
const MAX_RECORD: usize = 1 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    /// fsync before every commit returns.
    Batch,
    /// fsync from a background thread every `wal_fsync_interval`.
    Interval,
    /// Leave it to the OS.
    Never,
}

pub struct Wal {
    dir: PathBuf,
    /// Guards the open segment and its pending bytes; held to append one record (and, in batch
    /// mode, for its fsync so a commit never returns before its own bytes are durable).
    inner: Mutex<Writer>,
    fsync: FsyncMode,
    segment_bytes: u64,
    health: WalHealth,
    /// Test hooks (`Db::faults`); every check is one relaxed load.
    pub(crate) faults: Faults,
}

/// Whether the WAL's last fsync succeeded. A failed fsync may have lost written pages (Linux
/// marks them clean after reporting the error once), so appends are refused until a later
/// fsync of the segment succeeds; failures are counted for `/metrics`.
#[derive(Default)]
struct WalHealth {
    fsync_failures: AtomicU64,
    /// Set by a failed fsync of a segment, cleared by the next successful one. Read on every
    /// `Db::appender` call, hence an atomic and not under the writer lock.
    failed: AtomicBool,
    /// What the last failure said, for the refusal's message.
    last_error: Mutex<String>,
}

struct Writer {
    file: File,
    seg: u32,
    size: u64,
    /// Series records wait here (no syscall per new series) until the next samples record or
    /// sync writes them, always ahead of any samples that refer to them.
    pending: Vec<u8>,
    dirty: bool,
}

impl Writer {
    /// Writes the queued series records. On failure the file is cut back to its last good
    /// length (no torn record for replay to stop at) and the records stay queued.
    fn flush_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.file.write_all(&self.pending) {
            self.file.set_len(self.size).ctx(|| "truncating WAL segment after a failed write".to_string())?;
            return Err(e).ctx(|| format!("writing WAL segment {}", segment_name(self.seg)));
        }
        self.size += self.pending.len() as u64;
        self.dirty = true;
        self.pending.clear();
        Ok(())
    }
}

pub fn segment_name(n: u32) -> String {
    format!("{n:08}")
}

fn checkpoint_name(n: u32) -> String {
    format!("checkpoint.{n:08}")
}

/// Segments and the checkpoint found in a WAL directory.
pub struct WalFiles {
    pub checkpoint: Option<(u32, PathBuf)>,
    pub segments: Vec<(u32, PathBuf)>,
}

pub fn list(dir: &Path) -> Result<WalFiles> {
    let mut checkpoint = None;
    let mut segments = Vec::new();
    for e in fs::read_dir(dir).ctx(|| format!("reading {}", dir.display()))? {
        let e = e.ctx(|| format!("reading {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(n) = name.strip_prefix("checkpoint.").and_then(|n| n.parse::<u32>().ok()) {
            if checkpoint.as_ref().is_none_or(|(c, _)| *c < n) {
                checkpoint = Some((n, e.path()));
            }
        } else if let Ok(n) = name.parse::<u32>() {
            segments.push((n, e.path()));
        }
    }
    segments.sort();
    if let Some((c, _)) = checkpoint {
        segments.retain(|(n, _)| *n > c);
    }
    Ok(WalFiles { checkpoint, segments })
}

impl Wal {
    /// Opens the log for writing in a fresh segment after every existing one.
    pub fn open(dir: &Path, fsync: FsyncMode, segment_bytes: u64) -> Result<Wal> {
        fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
        let files = list(dir)?;
        let last = files.segments.last().map(|s| s.0).or(files.checkpoint.as_ref().map(|c| c.0)).unwrap_or(0);
        let seg = last + 1;
        let file = create_segment(dir, seg)?;
        // A checkpoint interrupted by a crash leaves its `.tmp`; it never stood for anything.
        for e in fs::read_dir(dir).ctx(|| format!("reading {}", dir.display()))?.flatten() {
            if e.file_name().to_string_lossy().ends_with(".tmp") {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(Wal {
            dir: dir.to_path_buf(),
            inner: Mutex::new(Writer { file, seg, size: 0, pending: Vec::new(), dirty: false }),
            fsync,
            segment_bytes,
            health: WalHealth::default(),
            faults: Faults::from_env(),
        })
    }

    /// `Some(reason)` while the last fsync of a segment has failed and no later one succeeded.
    #[inline]
    pub fn unhealthy(&self) -> Option<String> {
        if !self.health.failed.load(Ordering::Acquire) {
            return None;
        }
        Some(self.health.last_error.lock().clone())
    }

    /// Failed fsyncs of WAL segments since the start.
    pub fn fsync_failures(&self) -> u64 {
        self.health.fsync_failures.load(Ordering::Relaxed)
    }

    /// fsyncs one segment file and keeps the health state: a failure is counted, logged and
    /// turns into `StorageError::WalUnhealthy` (writes answer 503); a success after failures
    /// ends that state.
    fn fsync_segment(&self, f: &File, seg: u32) -> Result<()> {
        let res = if self.faults.hit(Fault::WalFsync) { Err(fault::error(Fault::WalFsync)) } else { f.sync_data() };
        match res {
            Ok(()) => {
                if self.health.failed.swap(false, Ordering::AcqRel) {
                    tracing::warn!(segment = %segment_name(seg), "WAL fsync succeeded again; writes are accepted again");
                }
                Ok(())
            }
            Err(e) => {
                let detail = format!("fsync of WAL segment {} failed: {e}", segment_name(seg));
                self.health.fsync_failures.fetch_add(1, Ordering::Relaxed);
                *self.health.last_error.lock() = detail.clone();
                self.health.failed.store(true, Ordering::Release);
                tracing::error!(error = %e, segment = %segment_name(seg), "WAL fsync failed; writes answer 503 until a later fsync succeeds");
                Err(StorageError::WalUnhealthy { detail })
            }
        }
    }

    pub fn fsync_mode(&self) -> FsyncMode {
        self.fsync
    }

    /// Queues a series record; it reaches the file with the next samples record or sync.
    pub fn log_series(&self, r: u64, labels: &Labels) {
        let mut payload = Vec::with_capacity(64);
        encode_series(&mut payload, r, labels);
        let mut w = self.inner.lock();
        frame(&mut w.pending, REC_SERIES, &payload);
    }

    /// Writes one samples record (after any queued series records) before returning.
    pub fn log_samples(&self, payload: &[u8]) -> Result<()> {
        let mut w = self.inner.lock();
        if w.size >= self.segment_bytes {
            self.rotate_locked(&mut w)?;
        }
        let mut buf = std::mem::take(&mut w.pending);
        let series_len = buf.len();
        frame(&mut buf, REC_SAMPLES, payload);
        let written = if self.faults.hit(Fault::WalWrite) {
            // As a disk that fills up mid-record: part of it lands, then ENOSPC.
            let _ = w.file.write_all(&buf[..buf.len() / 2]);
            Err(fault::error(Fault::WalWrite))
        } else {
            w.file.write_all(&buf)
        };
        if let Err(e) = written {
            // A failed write (disk full, I/O error) may leave part of a record behind, and
            // replay stops at the first bad record: cut the file back to its last good length
            // so later records stay readable, and keep the queued series records for the retry.
            let good = w.size;
            let cut = w.file.set_len(good);
            buf.truncate(series_len);
            w.pending = buf;
            cut.ctx(|| format!("truncating WAL segment {} after a failed write", segment_name(w.seg)))?;
            return Err(e).ctx(|| format!("writing WAL segment {}", segment_name(w.seg)));
        }
        w.size += buf.len() as u64;
        w.dirty = true;
        buf.clear();
        w.pending = buf;
        if self.fsync == FsyncMode::Batch {
            // On failure `dirty` stays set, so the background retry fsyncs this segment again.
            self.fsync_segment(&w.file, w.seg)?;
            w.dirty = false;
        }
        Ok(())
    }

    /// Writes queued records and fsyncs the open segment (also when nothing is new but the
    /// last fsync failed: that is how the WAL becomes healthy again).
    pub fn sync(&self) -> Result<()> {
        let mut w = self.inner.lock();
        w.flush_pending()?;
        if w.dirty || self.health.failed.load(Ordering::Acquire) {
            // The fsync runs outside the lock so appends are not stalled by the disk.
            let f = w.file.try_clone().ctx(|| "cloning WAL handle".to_string())?;
            let seg = w.seg;
            w.dirty = false;
            drop(w);
            if let Err(e) = self.fsync_segment(&f, seg) {
                // Not durable yet: the next sync must fsync again.
                self.inner.lock().dirty = true;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Starts a new segment; returns the number of the last closed one.
    pub fn rotate(&self) -> Result<u32> {
        let mut w = self.inner.lock();
        self.rotate_locked(&mut w)
    }

    fn rotate_locked(&self, w: &mut Writer) -> Result<u32> {
        w.flush_pending()?;
        self.fsync_segment(&w.file, w.seg)?;
        let closed = w.seg;
        w.file = create_segment(&self.dir, closed + 1)?;
        w.seg = closed + 1;
        w.size = 0;
        w.dirty = false;
        Ok(closed)
    }

    /// Replaces segments up to `upto` by a checkpoint holding `series` and their samples.
    pub fn checkpoint(&self, upto: u32, series: &[(u64, Labels, Vec<(i64, f64)>)]) -> Result<()> {
        let tmp = self.dir.join(format!("{}.tmp", checkpoint_name(upto)));
        let mut buf = Vec::new();
        let mut payload = Vec::new();
        for (r, labels, _) in series {
            payload.clear();
            encode_series(&mut payload, *r, labels);
            frame(&mut buf, REC_SERIES, &payload);
        }
        let mut enc = SamplesEncoder::default();
        for (r, _, samples) in series {
            for &(t, v) in samples {
                enc.add(*r, t, v);
                if enc.buf.len() > 1 << 20 {
                    frame(&mut buf, REC_SAMPLES, &enc.buf);
                    enc.clear();
                }
            }
        }
        if !enc.is_empty() {
            frame(&mut buf, REC_SAMPLES, &enc.buf);
        }
        let dst = self.dir.join(checkpoint_name(upto));
        let written = (|| -> Result<()> {
            let mut f = File::create(&tmp).ctx(|| format!("creating {}", tmp.display()))?;
            if self.faults.hit(Fault::CheckpointWrite) {
                let _ = f.write_all(&buf[..buf.len() / 2]);
                return Err(fault::error(Fault::CheckpointWrite)).ctx(|| format!("writing {}", tmp.display()));
            }
            f.write_all(&buf).ctx(|| format!("writing {}", tmp.display()))?;
            f.sync_all().ctx(|| format!("fsync {}", tmp.display()))?;
            fs::rename(&tmp, &dst).ctx(|| format!("renaming {}", tmp.display()))
        })();
        if let Err(e) = written {
            // Removed at once (not at the next start): a full disk needs the space back, and
            // the segments it would have replaced are all still there.
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        sync_dir(&self.dir)?;
        for e in fs::read_dir(&self.dir).ctx(|| "listing WAL".to_string())?.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let old_cp = name.starts_with("checkpoint.") && name != checkpoint_name(upto);
            let old_seg = name.parse::<u32>().is_ok_and(|n| n <= upto);
            if old_cp || old_seg {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(())
    }
}

fn create_segment(dir: &Path, n: u32) -> Result<File> {
    let p = dir.join(segment_name(n));
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .ctx(|| format!("creating WAL segment {}", p.display()))?;
    sync_dir(dir)?;
    Ok(f)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).ctx(|| format!("fsync of directory {}", dir.display()))
}

fn frame(out: &mut Vec<u8>, typ: u8, payload: &[u8]) {
    out.push(typ);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&[typ]);
    h.update(payload);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(payload);
}

pub fn put_uvarint(out: &mut Vec<u8>, mut u: u64) {
    while u >= 0x80 {
        out.push((u as u8) | 0x80);
        u >>= 7;
    }
    out.push(u as u8);
}

pub fn get_uvarint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut out = 0u64;
    let mut shift = 0;
    loop {
        let byte = *b.get(*pos)?;
        *pos += 1;
        if shift > 63 {
            return None;
        }
        out |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Some(out);
        }
        shift += 7;
    }
}

fn encode_series(out: &mut Vec<u8>, r: u64, labels: &Labels) {
    put_uvarint(out, r);
    put_uvarint(out, labels.len() as u64);
    for l in labels.iter() {
        put_uvarint(out, l.name.len() as u64);
        out.extend_from_slice(l.name.as_bytes());
        put_uvarint(out, l.value.len() as u64);
        out.extend_from_slice(l.value.as_bytes());
    }
}

/// Builds a samples record payload: first timestamp in full, then per sample the series id,
/// the timestamp's offset from the first (zigzag varint) and the value's 8 bytes.
#[derive(Default)]
pub struct SamplesEncoder {
    pub buf: Vec<u8>,
    base: i64,
}

impl SamplesEncoder {
    pub fn add(&mut self, r: u64, t: i64, v: f64) {
        if self.buf.is_empty() {
            self.base = t;
            self.buf.extend_from_slice(&t.to_le_bytes());
        }
        put_uvarint(&mut self.buf, r);
        let d = t.wrapping_sub(self.base);
        put_uvarint(&mut self.buf, ((d << 1) ^ (d >> 63)) as u64);
        self.buf.extend_from_slice(&v.to_bits().to_le_bytes());
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn clear(&mut self) {
        self.buf.clear();
    }
}

pub enum Record<'a> {
    /// Series ids with their labels, borrowed from the record (sorted by name).
    Series(Vec<(u64, Vec<LabelRef<'a>>)>),
    Samples(SamplesDecoder<'a>),
}

pub struct SamplesDecoder<'a> {
    b: &'a [u8],
    pos: usize,
    base: i64,
}

impl Iterator for SamplesDecoder<'_> {
    type Item = (u64, i64, f64);
    #[inline]
    fn next(&mut self) -> Option<(u64, i64, f64)> {
        if self.pos >= self.b.len() {
            return None;
        }
        let r = get_uvarint(self.b, &mut self.pos)?;
        let z = get_uvarint(self.b, &mut self.pos)?;
        let d = ((z >> 1) as i64) ^ -((z & 1) as i64);
        let v = f64::from_bits(u64::from_le_bytes(self.b.get(self.pos..self.pos + 8)?.try_into().ok()?));
        self.pos += 8;
        Some((r, self.base.wrapping_add(d), v))
    }
}

fn decode_series(b: &[u8]) -> Option<Vec<(u64, Vec<LabelRef<'_>>)>> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < b.len() {
        let r = get_uvarint(b, &mut pos)?;
        let n = get_uvarint(b, &mut pos)? as usize;
        let mut labels = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            let mut s = || -> Option<&str> {
                let len = get_uvarint(b, &mut pos)? as usize;
                let bytes = b.get(pos..pos.checked_add(len)?)?;
                pos += len;
                std::str::from_utf8(bytes).ok()
            };
            let name = s()?;
            let value = s()?;
            labels.push(LabelRef { name, value });
        }
        // Written sorted; re-established here so a hand-edited log cannot break the head.
        if !labels.windows(2).all(|w| w[0].name < w[1].name) {
            labels.sort();
            labels.dedup_by(|a, b| a.name == b.name);
        }
        labels.retain(|l| !l.value.is_empty() && !l.name.is_empty());
        out.push((r, labels));
    }
    Some(out)
}

/// Reads every valid record of one file. Returns how many bytes were valid: on a torn or
/// corrupt record the caller truncates there.
pub fn read_records(path: &Path, mut f: impl FnMut(Record<'_>)) -> Result<(u64, u64)> {
    let fh = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    if fh.metadata().ctx(|| format!("reading {}", path.display()))?.len() == 0 {
        return Ok((0, 0));
    }
    // Mapped rather than read: no copy of a 128 MiB segment into fresh (page-faulting) memory.
    // SAFETY: only this process writes WAL files (it holds the data-dir lock), and a segment
    // being replayed is never written while mapped.
    // populate: fault the whole segment in one go instead of a page at a time while decoding.
    let map =
        unsafe { memmap2::MmapOptions::new().populate().map(&fh) }.ctx(|| format!("mapping {}", path.display()))?;
    let data = &map[..];
    let mut pos = 0usize;
    while pos < data.len() {
        let Some(h) = data.get(pos..pos + HEADER) else { break };
        let typ = h[0];
        let len = u32::from_le_bytes(h[1..5].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(h[5..9].try_into().unwrap());
        if len > MAX_RECORD || !(typ == REC_SERIES || typ == REC_SAMPLES) {
            break;
        }
        let Some(payload) = data.get(pos + HEADER..pos + HEADER + len) else { break };
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&[typ]);
        hasher.update(payload);
        if hasher.finalize() != crc {
            break;
        }
        if typ == REC_SERIES {
            let Some(s) = decode_series(payload) else { break };
            f(Record::Series(s));
        } else {
            if payload.len() < 8 {
                break;
            }
            let base = i64::from_le_bytes(payload[..8].try_into().unwrap());
            f(Record::Samples(SamplesDecoder { b: payload, pos: 8, base }));
        }
        pos += HEADER + len;
    }
    Ok((pos as u64, data.len() as u64))
}
