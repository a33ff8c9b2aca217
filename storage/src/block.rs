//! Immutable blocks: one directory per time range with `chunks`, `index` and `meta.json`,
//! written once through `BlockWriter` and read through mmap. Format: docs/format/chunks.md,
//! docs/format/index.md, docs/format/block.md.

use crate::chunk::{encode_best, BLOCK_SAMPLES_PER_CHUNK, ENCODING_INT, ENCODING_XOR};
use crate::error::{corrupt, IoContext, Result};
use crate::index::{write_index, ChunkMeta, IndexReader};
use crate::labels::Labels;
use crate::matcher::Matcher;
use crate::postings::postings_for_matchers;
use crate::series::{ChunkBytes, ChunkData, ChunkSrc, Series};
use crate::wal::{get_uvarint, put_uvarint, sync_dir};
use memmap2::Mmap;
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

const CHUNKS_MAGIC: &[u8; 4] = b"TWCH";
const CHUNKS_VERSION: u8 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BlockMeta {
    pub version: u32,
    pub id: String,
    /// Inclusive bounds of the samples in the block.
    pub min_time: i64,
    pub max_time: i64,
    pub num_series: u64,
    pub num_samples: u64,
    pub num_chunks: u64,
    /// 1 for blocks cut from the head, +1 per compaction.
    pub level: u32,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Sortable, unique block id: creation time, then a per-process counter.
pub fn new_block_id() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!(
        "{:016x}{:04x}{:04x}",
        now.as_micros(),
        std::process::id() & 0xffff,
        NEXT_ID.fetch_add(1, Ordering::Relaxed) & 0xffff
    )
}

/// Removes a block's `.tmp` directory when dropped while still armed: a write that fails half
/// way (disk full) gives the space back at once instead of at the next start.
struct TmpDir {
    path: PathBuf,
    armed: bool,
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = fs::remove_dir_all(&self.path) {
                tracing::warn!(dir = %self.path.display(), error = %e, "removing a partial block failed");
            }
        }
    }
}

/// Streams series (in label order) into a new block directory, atomically renamed into place.
/// Dropped before `finish` succeeds (an error on the way), it removes its `.tmp` directory.
pub struct BlockWriter {
    dir: PathBuf,
    tmp: PathBuf,
    cleanup: TmpDir,
    id: String,
    chunks: BufWriter<File>,
    offset: u64,
    series: Vec<(Labels, Vec<ChunkMeta>)>,
    meta: BlockMeta,
    scratch: Vec<u8>,
}

impl BlockWriter {
    pub fn create(blocks_dir: &Path, level: u32) -> Result<BlockWriter> {
        let id = new_block_id();
        let tmp = blocks_dir.join(format!("{id}.tmp"));
        fs::create_dir_all(&tmp).ctx(|| format!("creating {}", tmp.display()))?;
        let cleanup = TmpDir { path: tmp.clone(), armed: true };
        let path = tmp.join("chunks");
        let f = File::create(&path).ctx(|| format!("creating {}", path.display()))?;
        let mut chunks = BufWriter::with_capacity(1 << 20, f);
        chunks
            .write_all(CHUNKS_MAGIC)
            .and_then(|_| chunks.write_all(&[CHUNKS_VERSION, 0, 0, 0]))
            .ctx(|| "writing chunks header".into())?;
        let meta = BlockMeta {
            version: 1,
            id: id.clone(),
            min_time: i64::MAX,
            max_time: i64::MIN,
            num_series: 0,
            num_samples: 0,
            num_chunks: 0,
            level,
        };
        Ok(BlockWriter {
            dir: blocks_dir.join(&id),
            tmp,
            cleanup,
            id,
            chunks,
            offset: 8,
            series: Vec::new(),
            meta,
            scratch: Vec::new(),
        })
    }

    /// Adds one series with its samples in time order; a series without samples is skipped.
    pub fn add_series(&mut self, labels: Labels, samples: &[(i64, f64)]) -> Result<()> {
        if samples.is_empty() {
            return Ok(());
        }
        debug_assert!(self.series.last().is_none_or(|(l, _)| *l < labels), "series out of order");
        let mut metas = Vec::with_capacity(samples.len() / BLOCK_SAMPLES_PER_CHUNK + 1);
        for part in samples.chunks(BLOCK_SAMPLES_PER_CHUNK) {
            let (enc, data) = encode_best(part);
            metas.push(ChunkMeta { mint: part[0].0, maxt: part[part.len() - 1].0, offset: self.offset });
            self.write_chunk(enc, &data)?;
        }
        self.meta.min_time = self.meta.min_time.min(samples[0].0);
        self.meta.max_time = self.meta.max_time.max(samples[samples.len() - 1].0);
        self.meta.num_samples += samples.len() as u64;
        self.meta.num_chunks += metas.len() as u64;
        self.meta.num_series += 1;
        self.series.push((labels, metas));
        Ok(())
    }

    fn write_chunk(&mut self, enc: u8, data: &[u8]) -> Result<()> {
        let s = &mut self.scratch;
        s.clear();
        s.push(enc);
        put_uvarint(s, data.len() as u64);
        s.extend_from_slice(data);
        let mut h = crc32fast::Hasher::new();
        h.update(&[enc]);
        h.update(data);
        s.extend_from_slice(&h.finalize().to_le_bytes());
        self.chunks.write_all(s).ctx(|| "writing block chunks".into())?;
        self.offset += s.len() as u64;
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Writes index and meta, fsyncs, and renames the block into place. Returns None (and
    /// removes the directory) when no series was added.
    pub fn finish(self) -> Result<Option<BlockMeta>> {
        // `cleanup` stays armed until the rename: any `?` below removes the `.tmp` directory.
        let BlockWriter { dir, tmp, mut cleanup, chunks, series, meta, id, .. } = self;
        if series.is_empty() {
            drop(chunks);
            return Ok(None);
        }
        let f = chunks.into_inner().map_err(|e| e.into_error()).ctx(|| "flushing block chunks".into())?;
        f.sync_all().ctx(|| "fsync block chunks".into())?;
        write_index(&tmp.join("index"), &series)?;
        let mp = tmp.join("meta.json");
        let mut mf = File::create(&mp).ctx(|| format!("creating {}", mp.display()))?;
        mf.write_all(&serde_json::to_vec_pretty(&meta).expect("meta serialises")).ctx(|| "writing meta.json".into())?;
        mf.sync_all().ctx(|| "fsync meta.json".into())?;
        sync_dir(&tmp)?;
        fs::rename(&tmp, &dir).ctx(|| format!("renaming block {id} into place"))?;
        cleanup.armed = false;
        sync_dir(dir.parent().expect("blocks dir"))?;
        Ok(Some(meta))
    }
}

/// An open block: its meta, mmapped chunk file and index.
pub struct Block {
    pub dir: PathBuf,
    pub meta: BlockMeta,
    chunks: Arc<Mmap>,
    pub index: IndexReader,
    pub size_bytes: u64,
    /// One bit per series id, set once every chunk of that series has passed its CRC check.
    /// Chunk CRCs are checked once, lazily, not on every read: the first read of a series (a
    /// query or compaction) checks all its chunks — they lie next to each other in the file,
    /// and the read is about to touch them anyway — and later reads skip the check. Series
    /// ids are dense (0..num_series), so this costs num_series / 8 bytes and no chunk
    /// numbering; atomics, because readers share the block without a lock (two readers may
    /// both check a series the first time, which is harmless).
    verified: Box<[AtomicU64]>,
    /// Set when a read finds a chunk or series entry that fails its check. The query gets an
    /// error; the background persistence job quarantines the block (readers never move files).
    corrupt: AtomicBool,
}

impl Block {
    pub fn open(dir: &Path) -> Result<Block> {
        let what = || dir.display().to_string();
        let mp = dir.join("meta.json");
        let meta: BlockMeta = serde_json::from_slice(&fs::read(&mp).ctx(|| format!("reading {}", mp.display()))?)
            .map_err(|e| corrupt(what(), format!("meta.json: {e}")))?;
        let cp = dir.join("chunks");
        let f = File::open(&cp).ctx(|| format!("opening {}", cp.display()))?;
        // SAFETY: see IndexReader::open; chunk files are never modified after the rename.
        let chunks = unsafe { Mmap::map(&f) }.ctx(|| format!("mapping {}", cp.display()))?;
        if chunks.len() < 8 || &chunks[..4] != CHUNKS_MAGIC {
            return Err(corrupt(cp.display().to_string(), "bad magic"));
        }
        let index = IndexReader::open(&dir.join("index"))?;
        let size_bytes = dir_size(dir);
        let verified = (0..index.num_series().div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        Ok(Block {
            dir: dir.to_path_buf(),
            meta,
            chunks: Arc::new(chunks),
            index,
            size_bytes,
            verified,
            corrupt: AtomicBool::new(false),
        })
    }

    /// Whether a read found damage in this block (it will be quarantined by the next
    /// persistence run).
    pub fn is_corrupt(&self) -> bool {
        self.corrupt.load(Ordering::Relaxed)
    }

    fn is_verified(&self, id: u64) -> bool {
        self.verified.get((id / 64) as usize).is_some_and(|w| w.load(Ordering::Relaxed) & (1u64 << (id % 64)) != 0)
    }

    /// Checks the CRC and encoding of every chunk of series `id` (once; see `verified`).
    fn verify_series(&self, id: u64, metas: &[ChunkMeta]) -> Result<()> {
        if self.is_verified(id) {
            return Ok(());
        }
        for m in metas {
            let Some((enc, _, _)) = self.chunk(m.offset) else {
                self.corrupt.store(true, Ordering::Relaxed);
                return Err(corrupt(
                    self.dir.join("chunks").display().to_string(),
                    format!("chunk at {} fails its checksum", m.offset),
                ));
            };
            if enc != ENCODING_XOR && enc != ENCODING_INT {
                self.corrupt.store(true, Ordering::Relaxed);
                return Err(corrupt(self.dir.display().to_string(), format!("unknown chunk encoding {enc}")));
            }
        }
        if let Some(w) = self.verified.get((id / 64) as usize) {
            w.fetch_or(1u64 << (id % 64), Ordering::Relaxed);
        }
        Ok(())
    }

    /// Series `id`'s labels and chunk references; a missing or unreadable entry marks the
    /// block corrupt.
    fn series_entry(&self, id: u64) -> Result<(Labels, Vec<ChunkMeta>)> {
        self.index.series(id).ok_or_else(|| {
            self.corrupt.store(true, Ordering::Relaxed);
            corrupt(self.dir.display().to_string(), format!("series {id}"))
        })
    }

    /// Checks every series entry and every chunk of the block (compaction does this before it
    /// reads a block, so a damaged block is quarantined instead of failing the merge).
    pub fn verify(&self) -> Result<()> {
        for id in 0..self.index.num_series() as u64 {
            if !self.is_verified(id) {
                let (_, metas) = self.series_entry(id)?;
                self.verify_series(id, &metas)?;
            }
        }
        Ok(())
    }

    pub fn overlaps(&self, mint: i64, maxt: i64) -> bool {
        self.meta.max_time >= mint && self.meta.min_time <= maxt
    }

    /// The chunk at `offset` without its CRC checked (bounds still are): for series already
    /// verified.
    fn chunk_unchecked(&self, offset: u64) -> Option<(u8, usize, usize)> {
        let b = &self.chunks[..];
        let mut pos = offset as usize;
        let enc = *b.get(pos)?;
        pos += 1;
        let len = get_uvarint(b, &mut pos)? as usize;
        b.get(pos..pos.checked_add(len)?)?;
        Some((enc, pos, len))
    }

    /// The chunk at `offset`, its CRC checked.
    fn chunk(&self, offset: u64) -> Option<(u8, usize, usize)> {
        let b = &self.chunks[..];
        let mut pos = offset as usize;
        let enc = *b.get(pos)?;
        pos += 1;
        let len = get_uvarint(b, &mut pos)? as usize;
        let data = b.get(pos..pos.checked_add(len)?)?;
        let crc = u32::from_le_bytes(b.get(pos + len..pos + len + 4)?.try_into().ok()?);
        let mut h = crc32fast::Hasher::new();
        h.update(&[enc]);
        h.update(data);
        (h.finalize() == crc).then_some((enc, pos, len))
    }

    pub fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<Series>> {
        let ids = postings_for_matchers(&self.index, matchers);
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let (labels, metas) = self.series_entry(id)?;
            let chunks = self.chunk_srcs(id, &metas, mint, maxt)?;
            if !chunks.is_empty() {
                out.push(Series { labels, chunks, mint, maxt });
            }
        }
        Ok(out)
    }

    /// One series by id with all its chunks (compaction reads whole blocks this way).
    pub fn select_series_id(&self, id: u64) -> Result<Series> {
        let (labels, metas) = self.series_entry(id)?;
        let chunks = self.chunk_srcs(id, &metas, i64::MIN, i64::MAX)?;
        Ok(Series { labels, chunks, mint: i64::MIN, maxt: i64::MAX })
    }

    fn chunk_srcs(&self, id: u64, metas: &[ChunkMeta], mint: i64, maxt: i64) -> Result<Vec<ChunkSrc>> {
        self.verify_series(id, metas)?;
        let mut chunks = Vec::new();
        for m in metas.iter().filter(|m| m.maxt >= mint && m.mint <= maxt) {
            // Verified above (CRC and encoding), so only its bounds are read here.
            let (enc, start, len) = self.chunk_unchecked(m.offset).ok_or_else(|| {
                self.corrupt.store(true, Ordering::Relaxed);
                corrupt(self.dir.join("chunks").display().to_string(), format!("chunk at {} out of bounds", m.offset))
            })?;
            let bytes = ChunkBytes::Mapped { map: self.chunks.clone(), start, len };
            chunks.push(ChunkSrc { mint: m.mint, maxt: m.maxt, data: ChunkData::Encoded(enc, bytes) });
        }
        Ok(chunks)
    }

    /// Labels of matching series with chunks in [mint, maxt], without touching chunk data.
    pub fn select_labels(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<Labels> {
        postings_for_matchers(&self.index, matchers)
            .into_iter()
            .filter_map(|id| self.index.series(id))
            .filter(|(_, m)| m.iter().any(|m| m.maxt >= mint && m.mint <= maxt))
            .map(|(l, _)| l)
            .collect()
    }
}

/// Bytes of the files directly in `dir`.
pub(crate) fn dir_size(dir: &Path) -> u64 {
    fs::read_dir(dir).map(|rd| rd.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum()).unwrap_or(0)
}
