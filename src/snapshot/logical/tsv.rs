//! Rows from the text protocol to `LOAD DATA` files, without copying each value: the raw
//! row packet is escaped straight into the output buffer.

use std::io::{self, Read};

use crate::mysql::wire::RowStream;

/// Appends one field, escaped for `ESCAPED BY '\\'`; `None` is SQL NULL (`\N`).
pub fn push_field(out: &mut Vec<u8>, value: Option<&[u8]>) {
    let Some(v) = value else {
        out.extend_from_slice(b"\\N");
        return;
    };
    // Most values (numbers, dates, plain text) need no escaping: copy them whole. The check
    // has no early exit so that it compiles to a vector loop.
    if !v.iter().fold(false, |found, &b| found | needs_escape(b)) {
        out.extend_from_slice(v);
        return;
    }
    out.reserve(v.len() + 8);
    for &b in v {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            0 => out.extend_from_slice(b"\\0"),
            b => out.push(b),
        }
    }
}

#[inline]
fn needs_escape(b: u8) -> bool {
    matches!(b, b'\\' | b'\t' | b'\n' | b'\r' | 0)
}

/// Reads a running query's rows as a `LOAD DATA` file.
pub struct TsvReader<'c> {
    rows: RowStream<'c>,
    buf: Vec<u8>,
    pos: usize,
    row_count: u64,
    done: bool,
}

impl<'c> TsvReader<'c> {
    pub fn new(rows: RowStream<'c>) -> Self {
        TsvReader {
            rows,
            buf: Vec::with_capacity(256 * 1024),
            pos: 0,
            row_count: 0,
            done: false,
        }
    }

    pub fn rows(&self) -> u64 {
        self.row_count
    }

    /// Encodes rows until the buffer holds at least 128 KiB or the result ends.
    fn fill(&mut self) -> Result<(), crate::mysql::Error> {
        self.buf.clear();
        self.pos = 0;
        while self.buf.len() < 128 * 1024 {
            let Some(row) = self.rows.next_row()? else {
                self.done = true;
                break;
            };
            for (i, field) in row.fields().enumerate() {
                if i > 0 {
                    self.buf.push(b'\t');
                }
                push_field(&mut self.buf, field?);
            }
            self.buf.push(b'\n');
            self.row_count += 1;
        }
        Ok(())
    }
}

impl Read for TsvReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.buf.len() {
            if self.done {
                return Ok(0);
            }
            self.fill().map_err(io::Error::other)?;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_exactly_what_load_data_interprets() {
        let mut out = Vec::new();
        push_field(&mut out, Some(b"plain 123"));
        out.push(b'|');
        push_field(&mut out, None);
        out.push(b'|');
        push_field(&mut out, Some(b""));
        out.push(b'|');
        push_field(&mut out, Some(b"a\\b\tc\nd\re\0f\\N"));
        assert_eq!(out, b"plain 123|\\N||a\\\\b\\tc\\nd\\re\\0f\\\\N".to_vec());
    }

    #[test]
    fn every_byte_value_survives_unescaping() {
        let all: Vec<u8> = (0..=255u8).collect();
        let mut out = Vec::new();
        push_field(&mut out, Some(&all));
        // Undo the escaping as LOAD DATA does.
        let mut back = Vec::new();
        let mut it = out.iter();
        while let Some(&b) = it.next() {
            if b == b'\\' {
                match it.next() {
                    Some(b't') => back.push(b'\t'),
                    Some(b'n') => back.push(b'\n'),
                    Some(b'r') => back.push(b'\r'),
                    Some(b'0') => back.push(0),
                    Some(&c) => back.push(c),
                    None => panic!("dangling escape"),
                }
            } else {
                assert!(b != b'\t' && b != b'\n', "unescaped separator");
                back.push(b);
            }
        }
        assert_eq!(back, all);
    }
}
