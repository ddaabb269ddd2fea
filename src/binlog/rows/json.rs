//! MySQL's binary JSON (`sql-common/json_binary.cc`) as JSON text the server parses back
//! into the same value. Objects and arrays come in a small (16-bit offsets) and a large
//! (32-bit) form; small scalars are inlined in their parent's value entry.

use super::RowsError;

mod t {
    pub const SMALL_OBJECT: u8 = 0x00;
    pub const LARGE_OBJECT: u8 = 0x01;
    pub const SMALL_ARRAY: u8 = 0x02;
    pub const LARGE_ARRAY: u8 = 0x03;
    pub const LITERAL: u8 = 0x04;
    pub const INT16: u8 = 0x05;
    pub const UINT16: u8 = 0x06;
    pub const INT32: u8 = 0x07;
    pub const UINT32: u8 = 0x08;
    pub const INT64: u8 = 0x09;
    pub const UINT64: u8 = 0x0a;
    pub const DOUBLE: u8 = 0x0b;
    pub const STRING: u8 = 0x0c;
    pub const OPAQUE: u8 = 0x0f;
}

/// Nesting deeper than the server allows is damage (and would exhaust the stack).
const MAX_DEPTH: usize = 150;

fn bad(what: &str) -> RowsError {
    RowsError::malformed(format!("JSON value ({what})"))
}

/// The text of a binary JSON document. An empty value is JSON null (how the server stores
/// NULL assigned through some paths).
pub fn to_text(bytes: &[u8]) -> Result<String, RowsError> {
    let mut out = String::new();
    match bytes.split_first() {
        None => out.push_str("null"),
        Some((&ty, rest)) => value(ty, rest, 0, &mut out)?,
    }
    Ok(out)
}

fn slice(data: &[u8], at: usize, len: usize) -> Result<&[u8], RowsError> {
    at.checked_add(len)
        .and_then(|end| data.get(at..end))
        .ok_or_else(|| bad("offset out of range"))
}

fn uint(data: &[u8], at: usize, large: bool) -> Result<usize, RowsError> {
    Ok(if large {
        u32::from_le_bytes(slice(data, at, 4)?.try_into().map_err(|_| bad("u32"))?) as usize
    } else {
        u16::from_le_bytes(slice(data, at, 2)?.try_into().map_err(|_| bad("u16"))?) as usize
    })
}

fn value(ty: u8, data: &[u8], depth: usize, out: &mut String) -> Result<(), RowsError> {
    if depth > MAX_DEPTH {
        return Err(bad("nested too deep"));
    }
    match ty {
        t::SMALL_OBJECT | t::LARGE_OBJECT => {
            container(data, ty == t::LARGE_OBJECT, true, depth, out)
        }
        t::SMALL_ARRAY | t::LARGE_ARRAY => container(data, ty == t::LARGE_ARRAY, false, depth, out),
        t::LITERAL => literal(*data.first().ok_or_else(|| bad("literal"))?, out),
        t::INT16 => num(i16::from_le_bytes(arr(data)?), out),
        t::UINT16 => num(u16::from_le_bytes(arr(data)?), out),
        t::INT32 => num(i32::from_le_bytes(arr(data)?), out),
        t::UINT32 => num(u32::from_le_bytes(arr(data)?), out),
        t::INT64 => num(i64::from_le_bytes(arr(data)?), out),
        t::UINT64 => num(u64::from_le_bytes(arr(data)?), out),
        t::DOUBLE => {
            let d = f64::from_le_bytes(arr(data)?);
            if !d.is_finite() {
                return Err(bad("double not finite"));
            }
            // Debug keeps a '.' or an exponent, so the server reads a double back.
            out.push_str(&format!("{d:?}"));
            Ok(())
        }
        t::STRING => {
            let (len, n) = varlen(data)?;
            string(slice(data, n, len)?, out);
            Ok(())
        }
        t::OPAQUE => {
            let field_type = *data.first().ok_or_else(|| bad("opaque"))?;
            let (len, n) = varlen(&data[1..])?;
            let payload = slice(data, 1 + n, len)?;
            match (field_type, payload) {
                // A DECIMAL put into JSON from SQL (JSON_OBJECT('a', 1.50)): precision, scale,
                // then the binary decimal. As text it reads back as a number of equal value.
                (super::col::NEWDECIMAL, [precision, scale, digits @ ..]) => {
                    out.push_str(&super::decimal::decode(digits, *precision, *scale)?);
                    Ok(())
                }
                _ => Err(RowsError::Unsupported(format!(
                    "a JSON value holds an opaque MySQL value of field type {field_type} \
                     (a date, time or binary put into JSON from SQL), which has no JSON text form"
                ))),
            }
        }
        other => Err(bad(&format!("type {other}"))),
    }
}

fn arr<const N: usize>(data: &[u8]) -> Result<[u8; N], RowsError> {
    slice(data, 0, N)?.try_into().map_err(|_| bad("scalar"))
}

fn num(v: impl std::fmt::Display, out: &mut String) -> Result<(), RowsError> {
    out.push_str(&v.to_string());
    Ok(())
}

fn literal(b: u8, out: &mut String) -> Result<(), RowsError> {
    out.push_str(match b {
        0 => "null",
        1 => "true",
        2 => "false",
        _ => return Err(bad("literal")),
    });
    Ok(())
}

/// A string's length: 7 bits per byte, low bits first, high bit set on all but the last.
fn varlen(data: &[u8]) -> Result<(usize, usize), RowsError> {
    let mut len = 0usize;
    for (i, b) in data.iter().take(5).enumerate() {
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((len, i + 1));
        }
    }
    Err(bad("string length"))
}

fn string(bytes: &[u8], out: &mut String) {
    out.push('"');
    for c in String::from_utf8_lossy(bytes).chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn container(
    data: &[u8],
    large: bool,
    object: bool,
    depth: usize,
    out: &mut String,
) -> Result<(), RowsError> {
    let w = if large { 4 } else { 2 };
    let count = uint(data, 0, large)?;
    let size = uint(data, w, large)?;
    let data = data.get(..size).ok_or_else(|| bad("container size"))?;
    let header = 2 * w;
    let key_entry = w + 2;
    let value_entry = 1 + w;
    let keys_at = header;
    let values_at = header + if object { count * key_entry } else { 0 };
    if values_at
        .checked_add(count.checked_mul(value_entry).ok_or_else(|| bad("count"))?)
        .is_none_or(|end| end > data.len())
    {
        return Err(bad("container entries"));
    }
    out.push(if object { '{' } else { '[' });
    for i in 0..count {
        if i > 0 {
            out.push_str(", ");
        }
        if object {
            let at = keys_at + i * key_entry;
            let key_off = uint(data, at, large)?;
            let key_len = uint(data, at + w, false)?;
            string(slice(data, key_off, key_len)?, out);
            out.push_str(": ");
        }
        let at = values_at + i * value_entry;
        let ty = data[at];
        let inlined = match ty {
            t::LITERAL | t::INT16 | t::UINT16 => true,
            t::INT32 | t::UINT32 => large,
            _ => false,
        };
        if inlined {
            value(ty, slice(data, at + 1, w)?, depth + 1, out)?;
        } else {
            let off = uint(data, at + 1, large)?;
            let rest = data.get(off..).ok_or_else(|| bad("value offset"))?;
            value(ty, rest, depth + 1, out)?;
        }
    }
    out.push(if object { '}' } else { ']' });
    Ok(())
}
