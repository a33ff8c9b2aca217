//! Bit-level writer and reader for the Gorilla chunk encoding. Hand-written because the
//! encoding needs unaligned writes of 1..64 bits into a growable buffer that the head keeps
//! appending to, and the reader must be a few instructions per call on the query path.

#[derive(Clone, Default, Debug)]
pub struct BitWriter {
    pub buf: Vec<u8>,
    /// Bits still free in the last byte of `buf` (0 means the next write starts a new byte).
    free: u8,
}

impl BitWriter {
    pub fn with_bytes(buf: Vec<u8>) -> Self {
        BitWriter { buf, free: 0 }
    }

    #[inline]
    pub fn write_bit(&mut self, bit: bool) {
        if self.free == 0 {
            self.buf.push(0);
            self.free = 8;
        }
        self.free -= 1;
        if bit {
            *self.buf.last_mut().unwrap() |= 1 << self.free;
        }
    }

    /// Writes the low `n` bits of `v`, most significant first.
    #[inline]
    pub fn write_bits(&mut self, v: u64, mut n: u8) {
        debug_assert!(n <= 64);
        while n > 0 {
            if self.free == 0 {
                self.buf.push(0);
                self.free = 8;
            }
            let take = n.min(self.free);
            let shift = n - take;
            let chunk = ((v >> shift) & ((1u64 << take) - 1)) as u8;
            self.free -= take;
            *self.buf.last_mut().unwrap() |= chunk << self.free;
            n -= take;
        }
    }

    pub fn write_byte(&mut self, b: u8) {
        self.write_bits(b as u64, 8);
    }
}

#[derive(Clone, Debug)]
pub struct BitReader<'a> {
    data: &'a [u8],
    /// Next bit position from the start of `data`.
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    #[inline]
    pub fn read_bit(&mut self) -> Option<bool> {
        let byte = *self.data.get(self.pos >> 3)?;
        let bit = (byte >> (7 - (self.pos & 7))) & 1;
        self.pos += 1;
        Some(bit == 1)
    }

    /// Reads `n` (<= 64) bits, most significant first.
    #[inline]
    pub fn read_bits(&mut self, n: u8) -> Option<u64> {
        if n == 0 {
            return Some(0);
        }
        let n = n as usize;
        if self.pos + n > self.data.len() * 8 {
            return None;
        }
        let mut out: u64 = 0;
        let mut left = n;
        while left > 0 {
            let byte = self.data[self.pos >> 3];
            let off = self.pos & 7;
            let avail = 8 - off;
            let take = avail.min(left);
            let bits = (byte >> (avail - take)) & ((1u16 << take) - 1) as u8;
            out = if take == 64 { bits as u64 } else { (out << take) | bits as u64 };
            self.pos += take;
            left -= take;
        }
        Some(out)
    }

    pub fn read_byte(&mut self) -> Option<u8> {
        self.read_bits(8).map(|b| b as u8)
    }
}

#[inline]
pub fn fits(v: i64, bits: u32) -> bool {
    let lim = 1i64 << (bits - 1);
    -lim <= v && v < lim
}

#[inline]
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
pub fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

pub fn write_varint(w: &mut BitWriter, mut u: u64) {
    while u >= 0x80 {
        w.write_byte((u as u8) | 0x80);
        u >>= 7;
    }
    w.write_byte(u as u8);
}

pub fn read_varint(r: &mut BitReader<'_>) -> Option<u64> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = r.read_byte()?;
        out |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            return Some(out);
        }
    }
    None
}

/// Sign-extends the low `bits` of `v`.
#[inline]
pub fn sign_extend(v: u64, bits: u8) -> i64 {
    let shift = 64 - bits as u32;
    ((v << shift) as i64) >> shift
}

/// Timestamp delta-of-delta buckets, sized for scrape jitter: regular series take 1 bit.
#[inline]
pub fn write_dod(w: &mut BitWriter, dod: i64) {
    if dod == 0 {
        w.write_bit(false);
    } else if fits(dod, 14) {
        w.write_bits(0b10, 2);
        w.write_bits(dod as u64, 14);
    } else if fits(dod, 17) {
        w.write_bits(0b110, 3);
        w.write_bits(dod as u64, 17);
    } else if fits(dod, 20) {
        w.write_bits(0b1110, 4);
        w.write_bits(dod as u64, 20);
    } else {
        w.write_bits(0b1111, 4);
        w.write_bits(dod as u64, 64);
    }
}

#[inline]
pub fn read_dod(r: &mut BitReader<'_>) -> Option<i64> {
    Some(if !r.read_bit()? {
        0
    } else if !r.read_bit()? {
        sign_extend(r.read_bits(14)?, 14)
    } else if !r.read_bit()? {
        sign_extend(r.read_bits(17)?, 17)
    } else if !r.read_bit()? {
        sign_extend(r.read_bits(20)?, 20)
    } else {
        r.read_bits(64)? as i64
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(items in proptest::collection::vec((any::<u64>(), 0u8..=64), 0..200)) {
            let mut w = BitWriter::default();
            for (v, n) in &items {
                w.write_bits(*v, *n);
            }
            let mut r = BitReader::new(&w.buf);
            for (v, n) in &items {
                let mask = if *n == 64 { u64::MAX } else { (1u64 << n) - 1 };
                prop_assert_eq!(r.read_bits(*n).unwrap(), v & mask);
            }
        }
    }
}
