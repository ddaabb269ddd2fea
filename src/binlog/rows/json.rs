//! MySQL's binary JSON (`sql-common/json_binary.cc`) as JSON text the server parses back
//! into the same value. Objects and arrays come in a small (16-bit offsets) and a large
//! (32-bit) form; small scalars are inlined in their parent's value entry.
//!
//! SQL values put into JSON keep their MySQL type as "opaque" values (a DECIMAL, DATE,
//! TIME, DATETIME, TIMESTAMP or binary string from `JSON_OBJECT('d', CURDATE())`): the text
//! shows them as MySQL prints them (`JSON_EXTRACT`), and [`Json::typed`] lists where they
//! are and what they are, so a literal can set them back with their type.

use std::fmt::Write as _;

use super::{RowsError, col};

/// A JSON value: its text, and the typed MySQL values inside it that text cannot carry.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Json {
    /// As MySQL prints it.
    pub text: String,
    /// JSON path (`$."a"[0]`) and value of each opaque value, in document order.
    pub typed: Vec<(String, Opaque)>,
}

impl From<&str> for Json {
    fn from(text: &str) -> Json {
        Json {
            text: text.into(),
            typed: Vec::new(),
        }
    }
}

/// An opaque value: a MySQL value of a type JSON has not.
#[derive(Debug, Clone, PartialEq)]
pub enum Opaque {
    /// The decimal's text and the precision and scale it was stored with.
    Decimal {
        text: String,
        precision: u8,
        scale: u8,
    },
    /// DATE, TIME, DATETIME or TIMESTAMP (the field type, `col::*`), as MySQL prints it.
    Temporal { field_type: u8, text: String },
    /// A binary string (field type VARCHAR: `CAST(.. AS BINARY)`, a VARBINARY column).
    Binary(Vec<u8>),
}

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

/// A binary JSON document decoded. An empty value is JSON null (how the server stores NULL
/// assigned through some paths).
pub fn decode(bytes: &[u8]) -> Result<Json, RowsError> {
    let mut out = Out {
        json: Json::default(),
        path: "$".into(),
    };
    match bytes.split_first() {
        None => out.json.text.push_str("null"),
        Some((&ty, rest)) => value(ty, rest, 0, &mut out)?,
    }
    Ok(out.json)
}

/// The text of a binary JSON document.
pub fn to_text(bytes: &[u8]) -> Result<String, RowsError> {
    Ok(decode(bytes)?.text)
}

/// The document being written, and the path of the value being decoded.
struct Out {
    json: Json,
    path: String,
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

fn value(ty: u8, data: &[u8], depth: usize, out: &mut Out) -> Result<(), RowsError> {
    if depth > MAX_DEPTH {
        return Err(bad("nested too deep"));
    }
    match ty {
        t::SMALL_OBJECT | t::LARGE_OBJECT => {
            container(data, ty == t::LARGE_OBJECT, true, depth, out)
        }
        t::SMALL_ARRAY | t::LARGE_ARRAY => container(data, ty == t::LARGE_ARRAY, false, depth, out),
        t::LITERAL => literal(
            *data.first().ok_or_else(|| bad("literal"))?,
            &mut out.json.text,
        ),
        t::INT16 => num(i16::from_le_bytes(arr(data)?), &mut out.json.text),
        t::UINT16 => num(u16::from_le_bytes(arr(data)?), &mut out.json.text),
        t::INT32 => num(i32::from_le_bytes(arr(data)?), &mut out.json.text),
        t::UINT32 => num(u32::from_le_bytes(arr(data)?), &mut out.json.text),
        t::INT64 => num(i64::from_le_bytes(arr(data)?), &mut out.json.text),
        t::UINT64 => num(u64::from_le_bytes(arr(data)?), &mut out.json.text),
        t::DOUBLE => {
            let d = f64::from_le_bytes(arr(data)?);
            if !d.is_finite() {
                return Err(bad("double not finite"));
            }
            // Debug keeps a '.' or an exponent, so the server reads a double back.
            out.json.text.push_str(&format!("{d:?}"));
            Ok(())
        }
        t::STRING => {
            let (len, n) = varlen(data)?;
            string(slice(data, n, len)?, &mut out.json.text);
            Ok(())
        }
        t::OPAQUE => {
            let field_type = *data.first().ok_or_else(|| bad("opaque"))?;
            let (len, n) = varlen(&data[1..])?;
            let payload = slice(data, 1 + n, len)?;
            let v = opaque(field_type, payload)?;
            match &v {
                Opaque::Decimal { text, .. } => out.json.text.push_str(text),
                Opaque::Temporal { text, .. } => string(text.as_bytes(), &mut out.json.text),
                Opaque::Binary(b) => {
                    let text = format!("base64:type{field_type}:{}", base64(b));
                    string(text.as_bytes(), &mut out.json.text);
                }
            }
            out.json.typed.push((out.path.clone(), v));
            Ok(())
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
    out: &mut Out,
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
    out.json.text.push(if object { '{' } else { '[' });
    let parent = out.path.len();
    for i in 0..count {
        if i > 0 {
            out.json.text.push_str(", ");
        }
        if object {
            let at = keys_at + i * key_entry;
            let key_off = uint(data, at, large)?;
            let key_len = uint(data, at + w, false)?;
            let key = slice(data, key_off, key_len)?;
            string(key, &mut out.json.text);
            out.json.text.push_str(": ");
            out.path.push('.');
            string(key, &mut out.path);
        } else {
            let _ = write!(out.path, "[{i}]");
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
        out.path.truncate(parent);
    }
    out.json.text.push(if object { '}' } else { ']' });
    Ok(())
}

/// An opaque value's payload by its field type. Dates and times are the server's packed
/// 64-bit form (`TIME_to_longlong_datetime_packed`, `TIME_to_longlong_time_packed`).
fn opaque(field_type: u8, payload: &[u8]) -> Result<Opaque, RowsError> {
    let packed = || -> Result<i64, RowsError> {
        Ok(i64::from_le_bytes(
            payload.try_into().map_err(|_| bad("packed temporal"))?,
        ))
    };
    Ok(match (field_type, payload) {
        // A DECIMAL: precision, scale, then the binary decimal.
        (col::NEWDECIMAL, [precision, scale, digits @ ..]) => Opaque::Decimal {
            text: super::decimal::decode(digits, *precision, *scale)?,
            precision: *precision,
            scale: *scale,
        },
        (col::DATE | col::NEWDATE, _) => Opaque::Temporal {
            field_type: col::DATE,
            text: datetime_text(packed()?)?[..10].to_string(),
        },
        (col::DATETIME | col::DATETIME2, _) => Opaque::Temporal {
            field_type: col::DATETIME,
            text: datetime_text(packed()?)?,
        },
        (col::TIMESTAMP | col::TIMESTAMP2, _) => {
            let text = datetime_text(packed()?)?;
            // It holds the wall-clock time of the session that wrote it; written back in
            // UTC, it must be a time a TIMESTAMP holds in UTC.
            if !(TIMESTAMP_MIN..=TIMESTAMP_MAX).contains(&text.as_str()) {
                return Err(RowsError::Unsupported(format!(
                    "a JSON value holds the TIMESTAMP {text}, outside what a TIMESTAMP holds \
                     in UTC ({TIMESTAMP_MIN} to {TIMESTAMP_MAX}), so it cannot be written back \
                     with its type"
                )));
            }
            Opaque::Temporal {
                field_type: col::TIMESTAMP,
                text,
            }
        }
        (col::TIME | col::TIME2, _) => Opaque::Temporal {
            field_type: col::TIME,
            text: time_text(packed()?),
        },
        (col::VARCHAR, bytes) => Opaque::Binary(bytes.to_vec()),
        _ => {
            return Err(RowsError::Unsupported(format!(
                "a JSON value holds an opaque MySQL value of field type {field_type} (a BLOB, \
                 BINARY(n) or BIT value put into JSON from SQL), which cannot be written back \
                 with its type"
            )));
        }
    })
}

const TIMESTAMP_MIN: &str = "1970-01-01 00:00:01.000000";
const TIMESTAMP_MAX: &str = "2038-01-19 03:14:07.999999";

/// A packed DATETIME as `YYYY-MM-DD hh:mm:ss.ffffff` (JSON always prints six digits).
fn datetime_text(packed: i64) -> Result<String, RowsError> {
    if packed < 0 {
        return Err(bad("negative datetime"));
    }
    let micros = packed % (1 << 24);
    let ymdhms = packed >> 24;
    let ymd = ymdhms >> 17;
    let ym = ymd >> 5;
    let hms = ymdhms % (1 << 17);
    Ok(format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{micros:06}",
        ym / 13,
        ym % 13,
        ymd % (1 << 5),
        hms >> 12,
        (hms >> 6) % (1 << 6),
        hms % (1 << 6),
    ))
}

/// A packed TIME as `[-]hh:mm:ss.ffffff`.
fn time_text(packed: i64) -> String {
    let sign = if packed < 0 { "-" } else { "" };
    let a = packed.unsigned_abs();
    let micros = a % (1 << 24);
    let hms = a >> 24;
    format!(
        "{sign}{:02}:{:02}:{:02}.{micros:06}",
        (hms >> 12) % (1 << 10),
        (hms >> 6) % (1 << 6),
        hms % (1 << 6),
    )
}

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ABC[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_temporals_print_as_mysql_prints_them_in_json() {
        // 2021-02-03 04:05:06.780000, packed as the server does.
        let ym = 2021 * 13 + 2;
        let ymdhms = (((ym << 5) | 3) << 17) | (4 << 12) | (5 << 6) | 6;
        let packed = (ymdhms << 24) | 780_000;
        assert_eq!(datetime_text(packed).unwrap(), "2021-02-03 04:05:06.780000");
        let t = -(((10i64 << 12) | (11 << 6) | 12) << 24 | 500_000);
        assert_eq!(time_text(t), "-10:11:12.500000");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(&[0, 0xff, 0x61]), "AP9h");
        assert_eq!(base64(&[5]), "BQ==");
    }

    /// `{"d": <opaque DATE 2020-01-01>}` as the server stores it.
    fn object_with_a_date() -> Vec<u8> {
        let ym: i64 = 2020 * 13 + 1;
        let packed = ((((ym << 5) | 1) << 17) << 24).to_le_bytes();
        let mut v = vec![t::SMALL_OBJECT];
        let header = 4 + 4 + 3; // counts, one key entry, one value entry
        let key_at = header;
        let value_at = key_at + 1;
        let size = value_at + 2 + 8;
        v.extend_from_slice(&1u16.to_le_bytes());
        v.extend_from_slice(&(size as u16).to_le_bytes());
        v.extend_from_slice(&(key_at as u16).to_le_bytes());
        v.extend_from_slice(&1u16.to_le_bytes());
        v.push(t::OPAQUE);
        v.extend_from_slice(&(value_at as u16).to_le_bytes());
        v.push(b'd');
        v.extend_from_slice(&[col::DATE, 8]);
        v.extend_from_slice(&packed);
        v
    }

    #[test]
    fn an_opaque_date_is_its_text_and_a_typed_value_at_its_path() {
        let j = decode(&object_with_a_date()).unwrap();
        assert_eq!(j.text, r#"{"d": "2020-01-01"}"#);
        assert_eq!(
            j.typed,
            vec![(
                r#"$."d""#.to_string(),
                Opaque::Temporal {
                    field_type: col::DATE,
                    text: "2020-01-01".into()
                }
            )]
        );
        let lit = crate::binlog::rows::literal::literal(
            &crate::binlog::rows::Value::Json(j),
            &crate::binlog::rows::literal::SqlColumn {
                quoted: "`j`".into(),
                charset: None,
                binary_len: None,
            },
        );
        assert!(
            lit.starts_with("JSON_SET(CAST(") && lit.ends_with(", CAST('2020-01-01' AS DATE))"),
            "{lit}"
        );
    }

    #[test]
    fn an_opaque_blob_is_refused_and_a_timestamp_out_of_utc_range_too() {
        let mut blob = object_with_a_date();
        let at = blob.len() - 10;
        blob[at] = col::BLOB;
        assert!(matches!(decode(&blob), Err(RowsError::Unsupported(_))));
        let mut ts = object_with_a_date();
        ts[at] = col::TIMESTAMP;
        // 2020-01-01 00:00:00 is a TIMESTAMP; the year 2040 is not.
        assert!(decode(&ts).is_ok());
        let ym: i64 = 2040 * 13 + 1;
        let packed = ((((ym << 5) | 1) << 17) << 24).to_le_bytes();
        let n = ts.len();
        ts[n - 8..].copy_from_slice(&packed);
        assert!(matches!(decode(&ts), Err(RowsError::Unsupported(_))));
    }
}
