//! What a query gets back: a series' labels plus the chunks that hold its samples in the asked
//! range, from the head, its out-of-order buffer and blocks, merged into one ordered iterator.

use crate::chunk::{decode, XorIter};
use crate::labels::Labels;
use memmap2::Mmap;
use std::sync::Arc;

/// Bytes of one encoded chunk: shared head memory or a slice of a block's mmapped chunk file.
#[derive(Clone)]
pub enum ChunkBytes {
    Heap(Arc<[u8]>),
    Mapped { map: Arc<Mmap>, start: usize, len: usize },
}

impl ChunkBytes {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            ChunkBytes::Heap(b) => b,
            ChunkBytes::Mapped { map, start, len } => &map[*start..*start + *len],
        }
    }
}

/// One source of samples of a series, with its time bounds (inclusive).
#[derive(Clone)]
pub struct ChunkSrc {
    pub mint: i64,
    pub maxt: i64,
    pub data: ChunkData,
}

#[derive(Clone)]
pub enum ChunkData {
    Xor(ChunkBytes),
    /// A block chunk with its encoding byte (`chunk::ENCODING_*`).
    Encoded(u8, ChunkBytes),
    /// Sorted raw samples (out-of-order buffer); tiny by construction.
    Raw(Arc<[(i64, f64)]>),
}

impl ChunkSrc {
    /// Appends the chunk's samples to `out`.
    pub fn decode_into(&self, out: &mut Vec<(i64, f64)>) {
        match &self.data {
            ChunkData::Xor(b) => out.extend(XorIter::new(b.as_slice())),
            ChunkData::Encoded(enc, b) => crate::chunk::decode_into(*enc, b.as_slice(), out),
            ChunkData::Raw(s) => out.extend_from_slice(s),
        }
    }

    pub fn samples(&self) -> Box<dyn Iterator<Item = (i64, f64)> + '_> {
        match &self.data {
            ChunkData::Xor(b) => Box::new(XorIter::new(b.as_slice())),
            ChunkData::Encoded(enc, b) => decode(*enc, b.as_slice()),
            ChunkData::Raw(s) => Box::new(s.iter().copied()),
        }
    }
}

/// A selected series. Samples are restricted to `[mint, maxt]` of the select call.
#[derive(Clone)]
pub struct Series {
    pub labels: Labels,
    pub chunks: Vec<ChunkSrc>,
    pub mint: i64,
    pub maxt: i64,
}

impl Series {
    /// Samples in time order, one per timestamp. Where sources overlap (out-of-order data,
    /// overlapping blocks, a head re-write of flushed data) equal timestamps are collapsed.
    pub fn iter(&self) -> SeriesIter<'_> {
        let mut chunks: Vec<&ChunkSrc> = self.chunks.iter().collect();
        chunks.sort_by_key(|c| (c.mint, c.maxt));
        let overlapping = chunks.windows(2).any(|w| w[1].mint <= w[0].maxt);
        if overlapping {
            let mut all: Vec<(i64, f64)> =
                chunks.iter().flat_map(|c| c.samples()).filter(|(t, _)| *t >= self.mint && *t <= self.maxt).collect();
            // Stable sort keeps the first source's value for a duplicated timestamp.
            all.sort_by_key(|s| s.0);
            all.dedup_by_key(|s| s.0);
            SeriesIter { inner: Inner::Merged(all.into_iter()), mint: self.mint, maxt: self.maxt }
        } else {
            let flat = chunks.into_iter().flat_map(|c| c.samples());
            SeriesIter { inner: Inner::Seq(Box::new(flat)), mint: self.mint, maxt: self.maxt }
        }
    }

    /// All samples in `[mint, maxt]`, decoded chunk by chunk into one vector (faster than
    /// collecting `iter()`, which dispatches per sample).
    pub fn samples(&self) -> Vec<(i64, f64)> {
        let mut chunks: Vec<&ChunkSrc> = self.chunks.iter().collect();
        chunks.sort_by_key(|c| (c.mint, c.maxt));
        if chunks.windows(2).any(|w| w[1].mint <= w[0].maxt) {
            return self.iter().collect();
        }
        let mut out = Vec::with_capacity(chunks.len() * 120);
        for c in chunks {
            c.decode_into(&mut out);
        }
        let lo = out.partition_point(|s| s.0 < self.mint);
        let hi = out.partition_point(|s| s.0 <= self.maxt);
        out.truncate(hi);
        out.drain(..lo);
        out
    }
}

pub struct SeriesIter<'a> {
    inner: Inner<'a>,
    mint: i64,
    maxt: i64,
}

enum Inner<'a> {
    Seq(Box<dyn Iterator<Item = (i64, f64)> + 'a>),
    Merged(std::vec::IntoIter<(i64, f64)>),
}

impl Iterator for SeriesIter<'_> {
    type Item = (i64, f64);

    fn next(&mut self) -> Option<(i64, f64)> {
        loop {
            let s = match &mut self.inner {
                Inner::Seq(i) => i.next()?,
                Inner::Merged(i) => i.next()?,
            };
            if s.0 > self.maxt {
                return None;
            }
            if s.0 >= self.mint {
                return Some(s);
            }
        }
    }
}
