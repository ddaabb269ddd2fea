//! Rows from the text protocol to `LOAD DATA` files, without copying each value: the raw
//! row packet is escaped straight into the output buffer.

use std::io::{self, Read};

use crate::mysql::wire::{RawRow, RowStream};

/// Where escaped bytes go: a growable buffer, or a slice known to be large enough.
pub trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// The caller's buffer of a `read`: rows are escaped straight into it when their worst case
/// fits, which saves copying every byte of the dump once more.
struct SliceSink<'a> {
    out: &'a mut [u8],
    len: usize,
}

impl SliceSink<'_> {
    fn room(&self) -> usize {
        self.out.len() - self.len
    }
}

impl Sink for SliceSink<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.out[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }
}

/// Appends one field, escaped for `ESCAPED BY '\\'`; `None` is SQL NULL (`\N`).
pub fn push_field(out: &mut impl Sink, value: Option<&[u8]>) {
    let Some(v) = value else {
        out.put(b"\\N");
        return;
    };
    // Most values (numbers, dates, plain text) need no escaping: copy them whole.
    if !has_special(v) {
        out.put(v);
        return;
    }
    // Runs without special bytes are copied whole, each special byte as its escape.
    let mut rest = v;
    while let Some(i) = rest.iter().position(|&b| needs_escape(b)) {
        out.put(&rest[..i]);
        out.put(match rest[i] {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => b"\\0",
        });
        rest = &rest[i + 1..];
    }
    out.put(rest);
}

#[inline]
fn needs_escape(b: u8) -> bool {
    matches!(b, b'\\' | b'\t' | b'\n' | b'\r' | 0)
}

/// One row as a line: fields escaped, tab-separated.
fn push_row(out: &mut impl Sink, row: &RawRow<'_>) -> Result<(), crate::mysql::Error> {
    for (i, field) in row.fields().enumerate() {
        if i > 0 {
            out.put(b"\t");
        }
        push_field(out, field?);
    }
    out.put(b"\n");
    Ok(())
}

/// Writes a row that needs no escaping as its line, if it is one: no byte to escape, no NULL
/// and no value of 251 bytes or more (so every length prefix is one byte). Such a line is the
/// packet itself moved one byte to the front, each later prefix turned into a tab and a newline
/// at the end: one copy instead of one per field. Most rows of most tables take this path.
/// Returns the line's length, or `None` (having written nothing) when the row needs the
/// general path.
fn put_plain_row(out: &mut [u8], payload: &[u8], columns: usize) -> Option<usize> {
    let n = payload.len();
    if n == 0 || out.len() < n {
        return None;
    }
    // One pass over the whole packet clears most rows; when it finds a special byte, that may
    // be only a length prefix (an empty value is 0x00, a DATE's ten bytes 0x0A), so the values
    // are then looked at one by one.
    let suspect = has_special(payload);
    // Checked before anything is copied: rows bound for the general path (NULLs) cost no copy.
    let mut prefix = 0;
    for _ in 0..columns {
        let len = usize::from(*payload.get(prefix)?);
        if len >= 0xFB || (suspect && has_special(payload.get(prefix + 1..prefix + 1 + len)?)) {
            return None;
        }
        prefix += 1 + len;
    }
    if prefix != n {
        return None;
    }
    out[..n - 1].copy_from_slice(&payload[1..]);
    out[n - 1] = b'\n';
    // The prefixes are known good now: each one after the first becomes a tab.
    let mut prefix = 1 + usize::from(payload[0]);
    for _ in 1..columns {
        out[prefix - 1] = b'\t';
        prefix += 1 + usize::from(payload[prefix]);
    }
    Some(n)
}

/// Whether any byte needs escaping; without an early exit, so that it compiles to a vector loop.
fn has_special(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .fold(false, |found, &b| found | needs_escape(b))
}

/// The most bytes a row can take as a line: every value byte escaped to two, a NULL marker
/// to `\N`, and a separator per field (each field has at least one byte of length prefix).
fn line_bound(row: &RawRow<'_>) -> usize {
    2 * row.payload_len() + row.columns() + 1
}

/// The server's error behind a failed read of a [`TsvReader`] (which can only pass it on as
/// an I/O error); any other error as it is.
pub fn server_error(e: io::Error) -> Result<crate::mysql::Error, io::Error> {
    if !e
        .get_ref()
        .is_some_and(|inner| inner.is::<crate::mysql::Error>())
    {
        return Err(e);
    }
    match e.into_inner().map(|i| i.downcast::<crate::mysql::Error>()) {
        Some(Ok(server)) => Ok(*server),
        Some(Err(other)) => Err(io::Error::other(other)),
        None => Err(io::Error::other("the read failed")),
    }
}

/// Reads a running query's rows as a `LOAD DATA` file.
pub struct TsvReader<'c> {
    rows: RowStream<'c>,
    /// A row that did not surely fit into the caller's buffer, and how much of it was read.
    spill: Vec<u8>,
    pos: usize,
    row_count: u64,
    done: bool,
}

impl<'c> TsvReader<'c> {
    pub fn new(rows: RowStream<'c>) -> Self {
        TsvReader {
            rows,
            spill: Vec::new(),
            pos: 0,
            row_count: 0,
            done: false,
        }
    }

    pub fn rows(&self) -> u64 {
        self.row_count
    }
}

impl Read for TsvReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos < self.spill.len() {
            let n = out.len().min(self.spill.len() - self.pos);
            out[..n].copy_from_slice(&self.spill[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        let mut sink = SliceSink { out, len: 0 };
        while !self.done && sink.room() > 0 {
            let Some(row) = self.rows.next_row().map_err(io::Error::other)? else {
                self.done = true;
                break;
            };
            self.row_count += 1;
            if let Some(n) = put_plain_row(&mut sink.out[sink.len..], row.payload(), row.columns())
            {
                sink.len += n;
                continue;
            }
            if line_bound(&row) <= sink.room() {
                push_row(&mut sink, &row).map_err(io::Error::other)?;
                continue;
            }
            // It might not fit: escape it aside and hand out what fits now.
            self.spill.clear();
            push_row(&mut self.spill, &row).map_err(io::Error::other)?;
            let n = sink.room().min(self.spill.len());
            sink.put(&self.spill[..n]);
            self.pos = n;
            break;
        }
        Ok(sink.len)
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
    fn a_slice_receives_what_a_buffer_does() {
        let all: Vec<u8> = (0..=255u8)
            .chain(b"plain\\\\\0end".iter().copied())
            .collect();
        let values: [Option<&[u8]>; 4] = [Some(&all), None, Some(b""), Some(b"12345")];
        let mut expected = Vec::new();
        for v in values {
            push_field(&mut expected, v);
        }
        let mut space = vec![0u8; expected.len()];
        let mut sink = SliceSink {
            out: &mut space,
            len: 0,
        };
        for v in values {
            push_field(&mut sink, v);
        }
        assert_eq!(sink.len, expected.len());
        assert_eq!(sink.room(), 0);
        assert_eq!(space, expected);
    }

    /// A row packet of these values: length-encoded strings, 0xFB for NULL.
    fn packet(values: &[Option<Vec<u8>>]) -> Vec<u8> {
        let mut p = Vec::new();
        for v in values {
            match v {
                None => p.push(0xFB),
                Some(v) if v.len() < 251 => {
                    p.push(v.len() as u8);
                    p.extend_from_slice(v);
                }
                Some(v) => {
                    p.push(0xFC);
                    p.extend_from_slice(&(v.len() as u16).to_le_bytes());
                    p.extend_from_slice(v);
                }
            }
        }
        p
    }

    #[test]
    fn the_plain_row_path_writes_what_the_general_one_does() {
        let mut rng = crate::test_rng::XorShift64::new(0x9E37_79B9_7F4A_7C15);
        let mut next = move || rng.next_u64();
        let (mut plain, mut general) = (0, 0);
        for _ in 0..5000 {
            let columns = 1 + (next() % 6) as usize;
            let values: Vec<Option<Vec<u8>>> = (0..columns)
                .map(|_| {
                    let len = match next() % 10 {
                        0 => 240 + (next() % 30) as usize,
                        _ => (next() % 40) as usize,
                    };
                    let special = next() % 8 == 0;
                    (next() % 20 != 0).then(|| {
                        (0..len)
                            .map(|_| {
                                let b = next() as u8;
                                if special { b } else { b'0' + b % 40 }
                            })
                            .collect()
                    })
                })
                .collect();
            let payload = packet(&values);
            let row = RawRow::new(&payload, columns, "test");
            let mut expected = Vec::new();
            push_row(&mut expected, &row).expect("well-formed row");
            let mut out = vec![0xAA; payload.len() + 3];
            match put_plain_row(&mut out, &payload, columns) {
                Some(n) => {
                    plain += 1;
                    assert_eq!(out[..n], expected[..], "{values:?}");
                }
                None => general += 1,
            }
            // A buffer one byte short is refused, never overrun.
            assert_eq!(
                put_plain_row(&mut out[..payload.len() - 1], &payload, columns),
                None
            );
            // A packet with a byte too few or too many is left to the general path.
            assert_eq!(
                put_plain_row(&mut out, &payload[..payload.len() - 1], columns),
                None
            );
        }
        assert!(
            plain > 1000 && general > 1000,
            "plain {plain}, general {general}"
        );
        // Values whose length prefix is itself a special byte (empty, 9, 10, 13 and 92 bytes)
        // still take the one-copy path.
        let values: Vec<Option<Vec<u8>>> = [0, 9, 10, 13, 92]
            .iter()
            .map(|&n| Some(vec![b'7'; n]))
            .collect();
        let payload = packet(&values);
        let mut out = vec![0; payload.len()];
        let n = put_plain_row(&mut out, &payload, values.len());
        let mut expected = Vec::new();
        push_row(&mut expected, &RawRow::new(&payload, values.len(), "test")).unwrap();
        assert_eq!(n, Some(expected.len()));
        assert_eq!(out, expected);
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
