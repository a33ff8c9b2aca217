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

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Delta = 0,
    DeltaOfDelta = 1,
}

// Header flag bits (byte 2), after the 2-byte sample count.
const F_DOD: u8 = 1;
const F_REGULAR: u8 = 1 << 1;
const F_UNSIGNED: u8 = 1 << 2;
const F_NO_EXCEPTIONS: u8 = 1 << 3;
const SCALE_SHIFT: u8 = 4;

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

fn bits_needed(u: u64) -> u8 {
    (64 - u.leading_zeros()) as u8
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

/// Layout: count u16, flags, width k, then the bitstream: first timestamp and value as
/// varints; the first delta as a varint; then per sample a timestamp delta-of-delta (absent
/// when F_REGULAR) and a value residual in k bits (with a 1-bit escape to a 7-bit width and
/// that many bits, unless F_NO_EXCEPTIONS). k is chosen per chunk to minimise the size.
fn encode_mode(samples: &[(i64, f64)], scale: u8, ints: &[i64], mode: Mode) -> Vec<u8> {
    let n = samples.len();
    let mut residuals = Vec::with_capacity(n.saturating_sub(1));
    let (mut prev_dv, mut regular, mut unsigned) = (0i64, true, true);
    for i in 1..n {
        let dv = ints[i].wrapping_sub(ints[i - 1]);
        let r = if mode == Mode::DeltaOfDelta { dv.wrapping_sub(prev_dv) } else { dv };
        prev_dv = dv;
        unsigned &= r >= 0;
        residuals.push(r);
        if i >= 2 {
            regular &= samples[i].0 - samples[i - 1].0 == samples[i - 1].0 - samples[i - 2].0;
        }
    }
    let codes: Vec<u64> = residuals.iter().map(|&r| if unsigned { r as u64 } else { zigzag(r) }).collect();
    // Pick the width with the fewest bits: k each, plus 1 + 7 + w for every exception.
    let widths: Vec<u8> = codes.iter().map(|&c| bits_needed(c)).collect();
    let max_w = widths.iter().copied().max().unwrap_or(0);
    let mut best = (u64::MAX, max_w, true);
    for k in 0..=max_w {
        let exceptions: u64 = widths.iter().filter(|&&w| w > k).map(|&w| 1 + 7 + w as u64).sum();
        let no_exc = k == max_w;
        let size = codes.len() as u64 * (k as u64 + if no_exc { 0 } else { 1 }) + exceptions;
        if size < best.0 {
            best = (size, k, no_exc);
        }
    }
    let (_, k, no_exc) = best;
    let mut flags = (scale << SCALE_SHIFT) | if mode == Mode::DeltaOfDelta { F_DOD } else { 0 };
    flags |= if regular { F_REGULAR } else { 0 } | if unsigned { F_UNSIGNED } else { 0 };
    flags |= if no_exc { F_NO_EXCEPTIONS } else { 0 };
    let mut head = (n as u16).to_be_bytes().to_vec();
    head.push(flags);
    head.push(k);
    let mut w = BitWriter::with_bytes(head);
    write_varint(&mut w, zigzag(samples[0].0));
    write_varint(&mut w, zigzag(ints[0]));
    for i in 1..n {
        let dt = samples[i].0 - samples[i - 1].0;
        if i == 1 {
            write_varint(&mut w, zigzag(dt));
        } else if !regular {
            write_dod(&mut w, dt.wrapping_sub(samples[i - 1].0 - samples[i - 2].0));
        }
        let c = codes[i - 1];
        let cw = widths[i - 1];
        if no_exc {
            w.write_bits(c, k);
        } else if cw <= k {
            w.write_bit(false);
            w.write_bits(c, k);
        } else {
            w.write_bit(true);
            w.write_bits(cw as u64, 7);
            w.write_bits(c, cw);
        }
    }
    w.buf
}

pub struct IntIter<'a> {
    r: BitReader<'a>,
    left: u16,
    read: u16,
    div: f64,
    mode: Mode,
    regular: bool,
    unsigned: bool,
    no_exceptions: bool,
    k: u8,
    t: i64,
    dt: i64,
    v: i64,
    dv: i64,
}

impl<'a> IntIter<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        let (count, flags, k) = if data.len() >= 4 {
            (u16::from_be_bytes([data[0], data[1]]), data[2], data[3].min(64))
        } else {
            (0, 0, 0)
        };
        let scale = (flags >> SCALE_SHIFT).min(MAX_SCALE);
        IntIter {
            r: BitReader::new(data.get(4..).unwrap_or(&[])),
            left: count,
            read: 0,
            div: POW10[scale as usize],
            mode: if flags & F_DOD != 0 { Mode::DeltaOfDelta } else { Mode::Delta },
            regular: flags & F_REGULAR != 0,
            unsigned: flags & F_UNSIGNED != 0,
            no_exceptions: flags & F_NO_EXCEPTIONS != 0,
            k,
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
            } else if !self.regular {
                self.dt = self.dt.wrapping_add(read_dod(&mut self.r)?);
            }
            self.t = self.t.wrapping_add(self.dt);
            let code = if self.no_exceptions || !self.r.read_bit()? {
                self.r.read_bits(self.k)?
            } else {
                let w = self.r.read_bits(7)? as u8;
                if w > 64 {
                    return None;
                }
                self.r.read_bits(w)?
            };
            let residual = if self.unsigned { code as i64 } else { unzigzag(code) };
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
