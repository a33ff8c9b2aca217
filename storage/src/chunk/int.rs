//! Scaled-integer chunk for blocks: when every value of a chunk is an integer, or a decimal with
//! at most `MAX_SCALE` digits after the point, values are stored as integers times 10^-scale, by
//! delta or delta-of-delta with variable-width residuals. Counters, histogram buckets and
//! rounded gauges (most of real telemetry) shrink far below XOR's size; anything that does not
//! round-trip bit-exactly (NaN, -0.0, full-precision floats) stays XOR. Layout: docs/format/chunks.md.

use super::bstream::{read_dod, read_varint, unzigzag, write_dod, write_varint, zigzag, BitReader, BitWriter};

const MAX_SCALE: u8 = 6;
/// Integers above this lose precision as f64 anyway; stay XOR.
const MAX_ABS: f64 = (1u64 << 53) as f64;
const POW10: [f64; 7] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6];

/// Residual buckets: prefix of n ones then a zero (none for the last), then `WIDTHS[n]` bits.
const WIDTHS: [u8; 6] = [0, 4, 8, 14, 22, 64];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Delta = 0,
    DeltaOfDelta = 1,
}

/// The integer form of every value at the smallest scale that round-trips bit-exactly.
fn scaled(samples: &[(i64, f64)]) -> Option<(u8, Vec<i64>)> {
    'scale: for scale in 0..=MAX_SCALE {
        let p = POW10[scale as usize];
        let mut out = Vec::with_capacity(samples.len());
        for &(_, v) in samples {
            let x = (v * p).round();
            if !(x.abs() < MAX_ABS) || ((x as i64) as f64 / p).to_bits() != v.to_bits() {
                continue 'scale;
            }
            out.push(x as i64);
        }
        return Some((scale, out));
    }
    None
}

/// Encodes samples (time-ordered, at most u16::MAX) or returns None when values do not fit.
pub fn encode(samples: &[(i64, f64)]) -> Option<Vec<u8>> {
    if samples.is_empty() || samples.len() > u16::MAX as usize {
        return None;
    }
    let (scale, ints) = scaled(samples)?;
    let a = encode_mode(samples, scale, &ints, Mode::Delta);
    let b = encode_mode(samples, scale, &ints, Mode::DeltaOfDelta);
    Some(if b.len() < a.len() { b } else { a })
}

fn encode_mode(samples: &[(i64, f64)], scale: u8, ints: &[i64], mode: Mode) -> Vec<u8> {
    let mut head = (samples.len() as u16).to_be_bytes().to_vec();
    head.push((scale << 1) | mode as u8);
    let mut w = BitWriter::with_bytes(head);
    let (mut prev_t, mut prev_dt, mut prev_v, mut prev_dv) = (0i64, 0i64, 0i64, 0i64);
    for (i, (&(t, _), &v)) in samples.iter().zip(ints).enumerate() {
        match i {
            0 => {
                write_varint(&mut w, zigzag(t));
                write_varint(&mut w, zigzag(v));
            }
            _ => {
                let dt = t - prev_t;
                if i == 1 {
                    write_varint(&mut w, zigzag(dt));
                } else {
                    write_dod(&mut w, dt.wrapping_sub(prev_dt));
                }
                prev_dt = dt;
                let dv = v.wrapping_sub(prev_v);
                let residual = if mode == Mode::DeltaOfDelta { dv.wrapping_sub(prev_dv) } else { dv };
                write_residual(&mut w, zigzag(residual));
                prev_dv = dv;
            }
        }
        prev_t = t;
        prev_v = v;
    }
    w.buf
}

#[inline]
fn write_residual(w: &mut BitWriter, u: u64) {
    for (n, &width) in WIDTHS.iter().enumerate() {
        let last = n == WIDTHS.len() - 1;
        if last || (width < 64 && u < (1u64 << width)) {
            // n ones, then a terminating zero unless this is the widest bucket.
            if n > 0 {
                w.write_bits((1u64 << n) - 1, n as u8);
            }
            if !last {
                w.write_bit(false);
            }
            w.write_bits(u, width);
            return;
        }
    }
}

#[inline]
fn read_residual(r: &mut BitReader<'_>) -> Option<u64> {
    let mut n = 0;
    while n < WIDTHS.len() - 1 && r.read_bit()? {
        n += 1;
    }
    r.read_bits(WIDTHS[n])
}

pub struct IntIter<'a> {
    r: BitReader<'a>,
    left: u16,
    read: u16,
    div: f64,
    mode: Mode,
    t: i64,
    dt: i64,
    v: i64,
    dv: i64,
}

impl<'a> IntIter<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        let (count, flags) = if data.len() >= 3 { (u16::from_be_bytes([data[0], data[1]]), data[2]) } else { (0, 0) };
        let scale = (flags >> 1).min(MAX_SCALE);
        IntIter {
            r: BitReader::new(data.get(3..).unwrap_or(&[])),
            left: count,
            read: 0,
            div: POW10[scale as usize],
            mode: if flags & 1 == 1 { Mode::DeltaOfDelta } else { Mode::Delta },
            t: 0,
            dt: 0,
            v: 0,
            dv: 0,
        }
    }

    fn next_inner(&mut self) -> Option<(i64, f64)> {
        if self.read == 0 {
            self.t = unzigzag(read_varint(&mut self.r)?);
            self.v = unzigzag(read_varint(&mut self.r)?);
        } else {
            if self.read == 1 {
                self.dt = unzigzag(read_varint(&mut self.r)?);
            } else {
                self.dt = self.dt.wrapping_add(read_dod(&mut self.r)?);
            }
            self.t = self.t.wrapping_add(self.dt);
            let residual = unzigzag(read_residual(&mut self.r)?);
            self.dv = if self.mode == Mode::DeltaOfDelta { self.dv.wrapping_add(residual) } else { residual };
            self.v = self.v.wrapping_add(self.dv);
        }
        self.read += 1;
        Some((self.t, self.v as f64 / self.div))
    }
}

impl Iterator for IntIter<'_> {
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

    fn round_trip(s: &[(i64, f64)]) -> Option<usize> {
        let enc = encode(s)?;
        let got: Vec<(i64, u64)> = IntIter::new(&enc).map(|(t, v)| (t, v.to_bits())).collect();
        let want: Vec<(i64, u64)> = s.iter().map(|&(t, v)| (t, v.to_bits())).collect();
        assert_eq!(got, want);
        Some(enc.len())
    }

    #[test]
    fn integers_and_decimals_shrink_and_others_refuse() {
        let counter: Vec<_> = (0..120).map(|i| (i * 15_000, (1000 + i * 7) as f64)).collect();
        // Steady counter: 2 bits a sample (timestamp and value delta-of-delta both zero).
        assert!(round_trip(&counter).unwrap() < 50);
        let gauge: Vec<_> = (0..120).map(|i| (i * 15_000, ((100 + i * 37 % 100) as f64) / 100.0)).collect();
        assert!(round_trip(&gauge).is_some());
        assert!(encode(&[(0, 0.1 + 0.2)]).is_none(), "full-precision float");
        assert!(encode(&[(0, -0.0)]).is_none());
        assert!(encode(&[(0, f64::NAN)]).is_none());
        assert!(encode(&[(0, 1e300)]).is_none());
    }

    proptest! {
        #[test]
        fn decimal_round_trip(start in 0i64..1 << 45, steps in proptest::collection::vec((0i64..100_000, -1_000_000i64..1_000_000, 0u8..7), 1..300)) {
            let mut t = start;
            let mut s = Vec::new();
            for (dt, v, scale) in steps {
                t += dt;
                s.push((t, v as f64 / POW10[scale as usize]));
            }
            round_trip(&s);
        }
    }
}
