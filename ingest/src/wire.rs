//! Protobuf wire primitives for the zero-copy remote-write decoders. Hand-written because prost
//! decodes every label into an owned `String`, and those allocations are most of the cost of a
//! write request; here strings are borrowed from the decompressed buffer. Every length is
//! checked against the bytes that remain before use, so a hostile length prefix can neither
//! panic nor make the decoder allocate.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub type WireResult<T> = Result<T, WireError>;

fn err<T>(msg: impl Into<String>) -> WireResult<T> {
    Err(WireError(msg.into()))
}

#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

impl<'a> Value<'a> {
    pub fn bytes(self, what: &str) -> WireResult<&'a [u8]> {
        match self {
            Value::Bytes(b) => Ok(b),
            _ => err(format!("{what}: expected a length-delimited field")),
        }
    }

    pub fn str(self, what: &str) -> WireResult<&'a str> {
        std::str::from_utf8(self.bytes(what)?).or_else(|_| err(format!("{what}: invalid UTF-8")))
    }

    pub fn varint(self, what: &str) -> WireResult<u64> {
        match self {
            Value::Varint(v) => Ok(v),
            _ => err(format!("{what}: expected a varint field")),
        }
    }

    pub fn double(self, what: &str) -> WireResult<f64> {
        match self {
            Value::Fixed64(v) => Ok(f64::from_bits(v)),
            _ => err(format!("{what}: expected a 64-bit field")),
        }
    }
}

/// Iterates the fields of one message.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    #[inline]
    pub fn varint(&mut self) -> WireResult<u64> {
        let mut out = 0u64;
        for shift in (0..70).step_by(7) {
            let Some(&b) = self.buf.get(self.pos) else { return err("truncated varint") };
            self.pos += 1;
            if shift == 63 && b > 1 {
                return err("varint overflows 64 bits");
            }
            out |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        err("varint longer than 10 bytes")
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn take(&mut self, n: usize) -> WireResult<&'a [u8]> {
        if n > self.buf.len() - self.pos {
            return err(format!("length {n} exceeds the {} bytes left", self.buf.len() - self.pos));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// The next (field number, value), or None at the end of the message.
    #[inline]
    pub fn field(&mut self) -> WireResult<Option<(u32, Value<'a>)>> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (num, wt) = ((key >> 3) as u32, key & 7);
        if num == 0 {
            return err("field number 0");
        }
        let v = match wt {
            0 => Value::Varint(self.varint()?),
            1 => Value::Fixed64(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes"))),
            2 => {
                let n = self.varint()?;
                let n = usize::try_from(n).or_else(|_| err("length overflows"))?;
                Value::Bytes(self.take(n)?)
            }
            5 => Value::Fixed32(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"))),
            other => return err(format!("unsupported wire type {other} for field {num}")),
        };
        Ok(Some((num, v)))
    }
}

/// Decodes a packed repeated uint32 (or a single unpacked element) into `out`.
pub fn packed_u32(v: Value<'_>, out: &mut Vec<u32>, what: &str) -> WireResult<()> {
    match v {
        Value::Varint(x) => out.push(u32::try_from(x).or_else(|_| err(format!("{what}: {x} exceeds 32 bits")))?),
        Value::Bytes(b) => {
            let mut r = Reader::new(b);
            while r.pos < b.len() {
                let x = r.varint()?;
                out.push(u32::try_from(x).or_else(|_| err(format!("{what}: {x} exceeds 32 bits")))?);
            }
        }
        _ => return err(format!("{what}: expected varints")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_lengths_are_errors_not_allocations() {
        // Field 1, length-delimited, length 2^62.
        let mut buf = vec![0x0a];
        let mut n: u64 = 1 << 62;
        while n >= 0x80 {
            buf.push((n as u8) | 0x80);
            n >>= 7;
        }
        buf.push(n as u8);
        let e = Reader::new(&buf).field().unwrap_err();
        assert!(e.0.contains("exceeds"), "{e}");
        assert!(Reader::new(&[0x0a]).field().is_err());
        assert!(Reader::new(&[0xff; 12]).field().is_err());
        assert!(Reader::new(&[0x0b]).field().is_err(), "wire type 3 (groups) is refused");
    }
}
