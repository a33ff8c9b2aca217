//! A block's inverted index: symbol table, series (labels + chunk references), postings per
//! label pair, and the tables that find them. Format: docs/format/index.md.

use crate::error::{corrupt, IoContext, Result};
use crate::labels::{Label, Labels, Sym};
use crate::postings::PostingsSource;
use crate::wal::{get_uvarint, put_uvarint};
use memmap2::Mmap;
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::path::Path;

const MAGIC: &[u8; 4] = b"TWIX";
const VERSION: u8 = 1;
const TOC_LEN: usize = 6 * 8 + 4;

/// Where one chunk of a series lives in the block's chunk file, and its time bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkMeta {
    pub mint: i64,
    pub maxt: i64,
    /// Offset of the chunk's record (encoding byte) in the chunk file.
    pub offset: u64,
}

/// Series must be added in label order; ids are their positions.
pub fn write_index(path: &Path, series: &[(Labels, Vec<ChunkMeta>)]) -> Result<u64> {
    let mut symbols: BTreeSet<&str> = BTreeSet::new();
    for (labels, _) in series {
        for l in labels.iter() {
            symbols.insert(&l.name);
            symbols.insert(&l.value);
        }
    }
    let sym_id: FxHashMap<&str, u64> = symbols.iter().enumerate().map(|(i, s)| (*s, i as u64)).collect();
    let mut buf: Vec<u8> = Vec::new();
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&[VERSION, 0, 0, 0]);

    let symbols_off = buf.len() as u64;
    buf.extend_from_slice(&(symbols.len() as u32).to_le_bytes());
    for s in &symbols {
        put_uvarint(&mut buf, s.len() as u64);
        buf.extend_from_slice(s.as_bytes());
    }

    let series_off = buf.len() as u64;
    let mut offsets = Vec::with_capacity(series.len());
    let mut postings: BTreeMap<(&str, &str), Vec<u32>> = BTreeMap::new();
    for (id, (labels, chunks)) in series.iter().enumerate() {
        offsets.push(buf.len() as u64);
        put_uvarint(&mut buf, labels.len() as u64);
        for l in labels.iter() {
            put_uvarint(&mut buf, sym_id[&*l.name]);
            put_uvarint(&mut buf, sym_id[&*l.value]);
            postings.entry((&l.name, &l.value)).or_default().push(id as u32);
        }
        put_uvarint(&mut buf, chunks.len() as u64);
        let (mut prev_maxt, mut prev_off) = (0i64, 0u64);
        for c in chunks {
            let d = c.mint.wrapping_sub(prev_maxt);
            put_uvarint(&mut buf, ((d << 1) ^ (d >> 63)) as u64);
            put_uvarint(&mut buf, (c.maxt - c.mint) as u64);
            put_uvarint(&mut buf, c.offset - prev_off);
            prev_maxt = c.maxt;
            prev_off = c.offset;
        }
    }

    let series_table_off = buf.len() as u64;
    for o in &offsets {
        buf.extend_from_slice(&o.to_le_bytes());
    }

    let postings_off = buf.len() as u64;
    let mut ptable = Vec::with_capacity(postings.len());
    for ((name, value), ids) in &postings {
        ptable.push((sym_id[name], sym_id[value], buf.len() as u64));
        buf.extend_from_slice(&(ids.len() as u32).to_le_bytes());
        for id in ids {
            buf.extend_from_slice(&id.to_le_bytes());
        }
    }

    let ptable_off = buf.len() as u64;
    buf.extend_from_slice(&(ptable.len() as u32).to_le_bytes());
    for (n, v, off) in ptable {
        put_uvarint(&mut buf, n);
        put_uvarint(&mut buf, v);
        buf.extend_from_slice(&off.to_le_bytes());
    }

    for x in [symbols_off, series_off, series_table_off, postings_off, ptable_off, series.len() as u64] {
        buf.extend_from_slice(&x.to_le_bytes());
    }
    let crc = crc32fast::hash(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());

    let mut f = File::create(path).ctx(|| format!("creating {}", path.display()))?;
    f.write_all(&buf).ctx(|| format!("writing {}", path.display()))?;
    f.sync_all().ctx(|| format!("fsync {}", path.display()))?;
    Ok(buf.len() as u64)
}

pub struct IndexReader {
    map: Mmap,
    symbols: Vec<Sym>,
    /// name → (value, postings offset), values sorted.
    ptable: FxHashMap<Sym, Vec<(Sym, u64)>>,
    series_table_off: usize,
    nseries: usize,
}

impl IndexReader {
    pub fn open(path: &Path) -> Result<IndexReader> {
        let f = File::open(path).ctx(|| format!("opening {}", path.display()))?;
        // SAFETY: block files are immutable once renamed into place and only this process
        // (holding the data-dir lock) deletes them; a deleted file stays mapped until unmapped.
        let map = unsafe { Mmap::map(&f) }.ctx(|| format!("mapping {}", path.display()))?;
        let what = || path.display().to_string();
        if map.len() < 8 + TOC_LEN || &map[..4] != MAGIC {
            return Err(corrupt(what(), "bad magic or too short"));
        }
        let body = map.len() - 4;
        let crc = u32::from_le_bytes(map[body..].try_into().unwrap());
        if crc32fast::hash(&map[..body]) != crc {
            return Err(corrupt(what(), "checksum mismatch"));
        }
        let toc = map.len() - TOC_LEN;
        let rd = |i: usize| u64::from_le_bytes(map[toc + i * 8..toc + i * 8 + 8].try_into().unwrap()) as usize;
        let (symbols_off, series_table_off, ptable_off, nseries) = (rd(0), rd(2), rd(4), rd(5));
        let bad = |d: &str| corrupt(what(), d.to_string());

        let mut pos = symbols_off;
        let n = u32::from_le_bytes(map.get(pos..pos + 4).ok_or_else(|| bad("symbols"))?.try_into().unwrap());
        pos += 4;
        let mut symbols = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let len = get_uvarint(&map, &mut pos).ok_or_else(|| bad("symbol length"))? as usize;
            let s = map.get(pos..pos + len).and_then(|b| std::str::from_utf8(b).ok()).ok_or_else(|| bad("symbol"))?;
            symbols.push(Sym::from(s));
            pos += len;
        }

        let mut pos = ptable_off;
        let n = u32::from_le_bytes(map.get(pos..pos + 4).ok_or_else(|| bad("postings table"))?.try_into().unwrap());
        pos += 4;
        let mut ptable: FxHashMap<Sym, Vec<(Sym, u64)>> = FxHashMap::default();
        for _ in 0..n {
            let name = get_uvarint(&map, &mut pos)
                .and_then(|i| symbols.get(i as usize))
                .ok_or_else(|| bad("postings name"))?;
            let value = get_uvarint(&map, &mut pos)
                .and_then(|i| symbols.get(i as usize))
                .ok_or_else(|| bad("postings value"))?;
            let off = map.get(pos..pos + 8).ok_or_else(|| bad("postings offset"))?;
            ptable.entry(name.clone()).or_default().push((value.clone(), u64::from_le_bytes(off.try_into().unwrap())));
            pos += 8;
        }
        if series_table_off + nseries * 8 > toc {
            return Err(bad("series table"));
        }
        Ok(IndexReader { map, symbols, ptable, series_table_off, nseries })
    }

    pub fn num_series(&self) -> usize {
        self.nseries
    }

    pub fn label_names(&self) -> Vec<String> {
        self.ptable.keys().map(|k| k.to_string()).collect()
    }

    /// Labels and chunk references of series `id`.
    pub fn series(&self, id: u64) -> Option<(Labels, Vec<ChunkMeta>)> {
        let id = id as usize;
        if id >= self.nseries {
            return None;
        }
        let t = self.series_table_off + id * 8;
        let mut pos = u64::from_le_bytes(self.map[t..t + 8].try_into().unwrap()) as usize;
        let b = &self.map[..];
        let n = get_uvarint(b, &mut pos)? as usize;
        let mut labels = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            let name = self.symbols.get(get_uvarint(b, &mut pos)? as usize)?.clone();
            let value = self.symbols.get(get_uvarint(b, &mut pos)? as usize)?.clone();
            labels.push(Label { name, value });
        }
        let nc = get_uvarint(b, &mut pos)? as usize;
        let mut chunks = Vec::with_capacity(nc.min(4096));
        let (mut prev_maxt, mut prev_off) = (0i64, 0u64);
        for _ in 0..nc {
            let z = get_uvarint(b, &mut pos)?;
            let mint = prev_maxt.wrapping_add(((z >> 1) as i64) ^ -((z & 1) as i64));
            // wrapping: a damaged index must give wrong numbers (caught by the chunk checks), not a panic.
            let maxt = mint.wrapping_add(get_uvarint(b, &mut pos)? as i64);
            let offset = prev_off.wrapping_add(get_uvarint(b, &mut pos)?);
            chunks.push(ChunkMeta { mint, maxt, offset });
            prev_maxt = maxt;
            prev_off = offset;
        }
        Some((Labels::from_vec_sorted(labels), chunks))
    }
}

impl PostingsSource for IndexReader {
    fn label_values(&self, name: &str) -> Vec<String> {
        self.ptable.get(name).map(|v| v.iter().map(|(s, _)| s.to_string()).collect()).unwrap_or_default()
    }

    fn postings(&self, name: &str, value: &str) -> Vec<u64> {
        let Some(values) = self.ptable.get(name) else { return Vec::new() };
        let Ok(i) = values.binary_search_by(|(v, _)| (**v).cmp(value)) else { return Vec::new() };
        let off = values[i].1 as usize;
        let Some(n) = self.map.get(off..off + 4) else { return Vec::new() };
        let n = u32::from_le_bytes(n.try_into().unwrap()) as usize;
        let Some(ids) = self.map.get(off + 4..off + 4 + n * 4) else { return Vec::new() };
        ids.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap()) as u64).collect()
    }

    fn all_postings(&self) -> Vec<u64> {
        (0..self.nseries as u64).collect()
    }
}
