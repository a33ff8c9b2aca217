//! Gorilla-style chunk: delta-of-delta timestamps and XOR-compressed float bits.
//! Byte layout is specified in docs/format/chunks.md ("XOR chunk").

use super::bstream::{read_dod, read_varint, unzigzag, write_dod, write_varint, zigzag, BitReader, BitWriter};

/// Marks "no previous leading/trailing window" so the first XOR value always writes its window.
const NO_WINDOW: u8 = 0xff;

/// Appends samples to one open chunk. The state is the minimum the next sample needs.
#[derive(Clone, Debug)]
pub struct XorAppender {
    w: BitWriter,
    count: u16,
    t: i64,
    delta: i64,
    v: u64,
    leading: u8,
    trailing: u8,
}

impl Default for XorAppender {
    fn default() -> Self {
        Self::new()
    }
}

impl XorAppender {
    pub fn new() -> Self {
        XorAppender {
            w: BitWriter::with_bytes(vec![0, 0]),
            count: 0,
            t: 0,
            delta: 0,
            v: 0,
            leading: NO_WINDOW,
            trailing: 0,
        }
    }

    pub fn count(&self) -> u16 {
        self.count
    }

    pub fn bytes(&self) -> &[u8] {
        &self.w.buf
    }

    pub fn into_bytes(mut self) -> Vec<u8> {
        self.w.buf.shrink_to_fit();
        self.w.buf
    }

    /// Appends one sample; `t` must not be below the previous sample's (callers order samples).
    pub fn append(&mut self, t: i64, v: f64) {
        let bits = v.to_bits();
        match self.count {
            0 => {
                write_varint(&mut self.w, zigzag(t));
                self.w.write_bits(bits, 64);
            }
            1 => {
                let delta = t - self.t;
                write_varint(&mut self.w, zigzag(delta));
                self.write_xor(bits);
                self.delta = delta;
            }
            _ => {
                let delta = t - self.t;
                let dod = delta.wrapping_sub(self.delta);
                write_dod(&mut self.w, dod);
                self.write_xor(bits);
                self.delta = delta;
            }
        }
        self.t = t;
        self.v = bits;
        self.count += 1;
        self.w.buf[0..2].copy_from_slice(&self.count.to_be_bytes());
    }

    #[inline]
    fn write_xor(&mut self, bits: u64) {
        let x = bits ^ self.v;
        let w = &mut self.w;
        if x == 0 {
            w.write_bit(false);
            return;
        }
        w.write_bit(true);
        let leading = (x.leading_zeros() as u8).min(31);
        let trailing = x.trailing_zeros() as u8;
        if self.leading != NO_WINDOW && leading >= self.leading && trailing >= self.trailing {
            w.write_bit(false);
            let sig = 64 - self.leading - self.trailing;
            w.write_bits(x >> self.trailing, sig);
        } else {
            w.write_bit(true);
            let sig = 64 - leading - trailing;
            w.write_bits(leading as u64, 5);
            // 64 significant bits does not fit 6 bits; 0 stands for it (0 is otherwise impossible).
            w.write_bits((sig & 63) as u64, 6);
            w.write_bits(x >> trailing, sig);
            self.leading = leading;
            self.trailing = trailing;
        }
    }
}

/// Decodes an XOR chunk. Stops (returns None) early on a truncated or corrupt chunk rather than
/// panicking; the block reader checks CRCs before it hands chunks out.
pub struct XorIter<'a> {
    r: BitReader<'a>,
    left: u16,
    read: u16,
    t: i64,
    delta: i64,
    v: u64,
    leading: u8,
    trailing: u8,
}

impl<'a> XorIter<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        let count = if data.len() >= 2 { u16::from_be_bytes([data[0], data[1]]) } else { 0 };
        XorIter {
            r: BitReader::new(data.get(2..).unwrap_or(&[])),
            left: count,
            read: 0,
            t: 0,
            delta: 0,
            v: 0,
            leading: 0,
            trailing: 0,
        }
    }

    fn next_inner(&mut self) -> Option<(i64, f64)> {
        match self.read {
            0 => {
                self.t = unzigzag(read_varint(&mut self.r)?);
                self.v = self.r.read_bits(64)?;
            }
            1 => {
                self.delta = unzigzag(read_varint(&mut self.r)?);
                self.t = self.t.wrapping_add(self.delta);
                self.read_xor()?;
            }
            _ => {
                let dod = read_dod(&mut self.r)?;
                self.delta = self.delta.wrapping_add(dod);
                self.t = self.t.wrapping_add(self.delta);
                self.read_xor()?;
            }
        }
        self.read += 1;
        Some((self.t, f64::from_bits(self.v)))
    }

    #[inline]
    fn read_xor(&mut self) -> Option<()> {
        if !self.r.read_bit()? {
            return Some(());
        }
        if self.r.read_bit()? {
            self.leading = self.r.read_bits(5)? as u8;
            let mut sig = self.r.read_bits(6)? as u8;
            if sig == 0 {
                sig = 64;
            }
            // A corrupt chunk can claim more bits than a value has: stop instead of wrapping.
            self.trailing = 64u8.checked_sub(self.leading)?.checked_sub(sig)?;
        }
        let sig = 64 - self.leading - self.trailing;
        let x = self.r.read_bits(sig)?;
        self.v ^= x.checked_shl(self.trailing as u32).unwrap_or(0);
        Some(())
    }
}

impl Iterator for XorIter<'_> {
    type Item = (i64, f64);

    #[inline]
    fn next(&mut self) -> Option<(i64, f64)> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let s = self.next_inner();
        if s.is_none() {
            self.left = 0;
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(samples: &[(i64, f64)]) {
        let mut a = XorAppender::new();
        for &(t, v) in samples {
            a.append(t, v);
        }
        let got: Vec<(i64, u64)> = XorIter::new(a.bytes()).map(|(t, v)| (t, v.to_bits())).collect();
        let want: Vec<(i64, u64)> = samples.iter().map(|&(t, v)| (t, v.to_bits())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn special_values_round_trip_bit_exactly() {
        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        let vals = [
            0.0,
            -0.0,
            stale,
            f64::NAN,
            f64::from_bits(0xfff8_0000_0000_0001),
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE,
            f64::MAX,
            1.5,
            -0.0,
        ];
        let s: Vec<_> = vals.iter().enumerate().map(|(i, &v)| (i as i64 * 15_000, v)).collect();
        round_trip(&s);
    }

    #[test]
    fn regular_counter_is_small() {
        let mut a = XorAppender::new();
        for i in 0..120 {
            a.append(1_700_000_000_000 + i * 15_000, (i * 3) as f64);
        }
        // 120 samples of a steady integer counter: well under 2 bytes each.
        assert!(a.bytes().len() < 240, "{} bytes", a.bytes().len());
    }

    proptest! {
        #[test]
        fn adversarial_round_trip(
            start in 0i64..i64::MAX / 4,
            steps in proptest::collection::vec((0i64..1i64 << 40, any::<u64>(), 0u8..4), 1..300)
        ) {
            let mut t = start;
            let mut prev = 0f64;
            let mut s = Vec::new();
            for (dt, bits, mode) in steps {
                // Mix of arbitrary bit patterns, repeats and small steps, and irregular gaps.
                let v = match mode { 0 => f64::from_bits(bits), 1 => prev, 2 => prev + (bits % 7) as f64, _ => (bits % 1000) as f64 / 100.0 };
                t += if mode == 3 { dt } else { dt % 30_000 };
                s.push((t, v));
                prev = v;
            }
            round_trip(&s);
        }
    }
}

#[cfg(test)]
mod corrupt_tests {
    use super::*;

    /// Found by the chunk_decode fuzz target: a window wider than 64 bits must end the chunk.
    #[test]
    fn corrupt_window_ends_iteration() {
        let mut data = vec![0, 3];
        data.extend_from_slice(&[0x00; 9]);
        // second sample: delta varint 0, then control `11`, leading 31, sig 63 (31 + 63 > 64)
        data.extend_from_slice(&[0x00, 0b1111_1111, 0b1111_1100, 0xff, 0xff]);
        let n = XorIter::new(&data).count();
        assert!(n <= 3);
    }
}
