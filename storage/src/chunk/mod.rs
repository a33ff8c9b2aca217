//! Compressed sample chunks. One chunk holds the samples of one series over a short time span;
//! the head appends to an open chunk, blocks store closed chunks verbatim.

pub mod bstream;
pub mod int;
pub mod xor;

pub use xor::{XorAppender, XorIter};

/// Encoding byte stored in front of every chunk in a block's chunk file.
pub const ENCODING_XOR: u8 = 1;
pub const ENCODING_INT: u8 = 2;

/// Decodes a chunk of any known encoding; unknown encodings yield nothing (callers check the
/// encoding byte when they read it from disk).
/// Appends every sample of a chunk to `out`: one tight loop per encoding, no dynamic dispatch
/// per sample (what queries use to read whole series).
pub fn decode_into(enc: u8, data: &[u8], out: &mut Vec<(i64, f64)>) {
    match enc {
        ENCODING_XOR => out.extend(XorIter::new(data)),
        ENCODING_INT => out.extend(int::IntIter::new(data)),
        _ => {}
    }
}

pub fn decode(enc: u8, data: &[u8]) -> Box<dyn Iterator<Item = (i64, f64)> + '_> {
    match enc {
        ENCODING_XOR => Box::new(XorIter::new(data)),
        ENCODING_INT => Box::new(int::IntIter::new(data)),
        _ => Box::new(std::iter::empty()),
    }
}

/// The smaller of the scaled-integer and XOR encodings of `samples`.
pub fn encode_best(samples: &[(i64, f64)]) -> (u8, Vec<u8>) {
    let mut x = XorAppender::new();
    for &(t, v) in samples {
        x.append(t, v);
    }
    let xor = x.into_bytes();
    match int::encode(samples) {
        Some(i) if i.len() < xor.len() => (ENCODING_INT, i),
        _ => (ENCODING_XOR, xor),
    }
}

/// Samples per chunk before the head cuts a new one: large enough to amortise the chunk header
/// (first timestamp and value in full), small enough that a query decodes little it won't use.
pub const SAMPLES_PER_CHUNK: u16 = 120;

/// Samples per chunk in blocks: written once and read whole by range queries, so longer
/// chunks pay their header and index entry over more samples (2h at a 15s interval).
pub const BLOCK_SAMPLES_PER_CHUNK: usize = 480;
