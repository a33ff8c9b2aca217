//! Compressed sample chunks. One chunk holds the samples of one series over a short time span;
//! the head appends to an open chunk, blocks store closed chunks verbatim.

pub mod bstream;
pub mod xor;

pub use xor::{XorAppender, XorIter};

/// Encoding byte stored in front of every chunk in a block's chunk file.
pub const ENCODING_XOR: u8 = 1;

/// Samples per chunk before the head cuts a new one: large enough to amortise the chunk header
/// (first timestamp and value in full), small enough that a query decodes little it won't use.
pub const SAMPLES_PER_CHUNK: u16 = 120;
