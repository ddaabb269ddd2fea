//! Bounds-checked little-endian decoding of MySQL wire and binlog structures.
//!
//! Everything here reads bytes that came from a server or a file, so nothing may panic: every
//! read that would run past the end returns [`Truncated`].

use std::fmt;

/// A read ran past the end of the buffer: the packet or event is shorter than its format says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncated;

impl fmt::Display for Truncated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("truncated data")
    }
}

impl std::error::Error for Truncated {}

/// A cursor over a byte slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The bytes not read yet, consuming them.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub fn peek(&self) -> Option<u8> {
        self.buf.first().copied()
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Truncated> {
        if n > self.buf.len() {
            return Err(Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub fn skip(&mut self, n: usize) -> Result<(), Truncated> {
        self.take(n).map(|_| ())
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], Truncated> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, Truncated> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u16(&mut self) -> Result<u16, Truncated> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub fn u24(&mut self) -> Result<u32, Truncated> {
        let b = self.array::<3>()?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], 0]))
    }

    pub fn u32(&mut self) -> Result<u32, Truncated> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn u48(&mut self) -> Result<u64, Truncated> {
        let b = self.array::<6>()?;
        Ok(u64::from_le_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], 0, 0,
        ]))
    }

    pub fn u56(&mut self) -> Result<u64, Truncated> {
        let b = self.array::<7>()?;
        Ok(u64::from_le_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], 0,
        ]))
    }

    pub fn u64(&mut self) -> Result<u64, Truncated> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A length-encoded integer; `None` for the NULL marker 0xFB.
    pub fn lenenc_int_or_null(&mut self) -> Result<Option<u64>, Truncated> {
        match self.u8()? {
            0xFB => Ok(None),
            0xFC => Ok(Some(u64::from(self.u16()?))),
            0xFD => Ok(Some(u64::from(self.u24()?))),
            0xFE => Ok(Some(self.u64()?)),
            b => Ok(Some(u64::from(b))),
        }
    }

    pub fn lenenc_int(&mut self) -> Result<u64, Truncated> {
        self.lenenc_int_or_null()?.ok_or(Truncated)
    }

    /// A length-encoded string; `None` for NULL.
    pub fn lenenc_bytes_or_null(&mut self) -> Result<Option<&'a [u8]>, Truncated> {
        match self.lenenc_int_or_null()? {
            None => Ok(None),
            Some(len) => {
                let len = usize::try_from(len).map_err(|_| Truncated)?;
                self.take(len).map(Some)
            }
        }
    }

    pub fn lenenc_bytes(&mut self) -> Result<&'a [u8], Truncated> {
        self.lenenc_bytes_or_null()?.ok_or(Truncated)
    }

    /// Bytes up to a NUL terminator, which is consumed but not returned.
    pub fn nul_terminated(&mut self) -> Result<&'a [u8], Truncated> {
        let end = self.buf.iter().position(|&b| b == 0).ok_or(Truncated)?;
        let s = &self.buf[..end];
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }
}

/// Appends a length-encoded integer.
pub fn put_lenenc_int(out: &mut Vec<u8>, v: u64) {
    if v < 0xFB {
        out.push(v as u8);
    } else if v <= 0xFFFF {
        out.push(0xFC);
        out.extend_from_slice(&(v as u16).to_le_bytes());
    } else if v <= 0xFF_FFFF {
        out.push(0xFD);
        out.extend_from_slice(&(v as u32).to_le_bytes()[..3]);
    } else {
        out.push(0xFE);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Appends a length-encoded string.
pub fn put_lenenc_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_lenenc_int(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_round_trip_at_every_width_boundary() {
        for v in [
            0u64,
            250,
            251,
            0xFFFF,
            0x1_0000,
            0xFF_FFFF,
            0x100_0000,
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            put_lenenc_int(&mut buf, v);
            let mut r = Reader::new(&buf);
            assert_eq!(r.lenenc_int().unwrap(), v, "value {v}");
            assert!(r.is_empty());
        }
    }

    #[test]
    fn reads_past_the_end_are_errors_not_panics() {
        let mut r = Reader::new(&[0xFC, 0x01]);
        assert_eq!(r.lenenc_int(), Err(Truncated));
        let mut r = Reader::new(&[5, b'a']);
        assert_eq!(r.lenenc_bytes(), Err(Truncated));
        let mut r = Reader::new(b"no terminator");
        assert_eq!(r.nul_terminated(), Err(Truncated));
        let mut r = Reader::new(&[]);
        assert_eq!(r.u64(), Err(Truncated));
    }

    #[test]
    fn null_marker_is_distinct_from_empty_string() {
        let mut r = Reader::new(&[0xFB, 0x00]);
        assert_eq!(r.lenenc_bytes_or_null().unwrap(), None);
        assert_eq!(r.lenenc_bytes_or_null().unwrap(), Some(&b""[..]));
    }
}
