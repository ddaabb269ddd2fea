//! Values as SQL: literals that put back exactly the bytes the row event holds, and
//! conditions that hold only when a column has exactly that value.
//!
//! Rules that make this exact: strings and blobs go as hex with the column's character
//! set introducer (no escaping, no conversion); FLOAT and DOUBLE as the shortest double
//! literal that reads back to the same bits (a FLOAT widened to double compares equal to
//! it); TIMESTAMP as UTC text, so the session that runs the statements sets
//! `time_zone = '+00:00'`; ENUM and SET as their numbers.

use std::fmt::Write as _;

use super::col;
use super::json::{Json, Opaque};
use super::value::Value;

/// What rendering needs to know of a column beyond its binlog type: the server's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlColumn {
    /// The column name, quoted.
    pub quoted: String,
    /// The character set of a text column; `None` for binary strings and other types.
    pub charset: Option<String>,
    /// BINARY(n): the server pads with zero bytes and the binlog leaves them off.
    pub binary_len: Option<usize>,
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2 + 3);
    s.push_str("X'");
    for b in bytes {
        let _ = write!(s, "{b:02X}");
    }
    s.push('\'');
    s
}

fn frac(micros: u32, fsp: u8) -> String {
    if fsp == 0 {
        return String::new();
    }
    let digits = format!("{micros:06}");
    format!(".{}", &digits[..usize::from(fsp.min(6))])
}

/// A double literal (`1.5e0`): the exponent makes the server read it as a double, and the
/// shortest round-trip digits make it the same double.
fn double(d: f64) -> String {
    format!("{d:e}")
}

fn padded(bytes: &[u8], col: &SqlColumn) -> Vec<u8> {
    let mut v = bytes.to_vec();
    if let Some(n) = col.binary_len
        && v.len() < n
    {
        v.resize(n, 0);
    }
    v
}

/// `value` as a literal for column `col`, for INSERT values and SET assignments.
pub fn literal(value: &Value, col: &SqlColumn) -> String {
    match value {
        Value::Null => "NULL".into(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) | Value::Bit(u) | Value::Set(u) => u.to_string(),
        Value::Float(f) => double(f64::from(*f)),
        Value::Double(d) => double(*d),
        Value::Decimal(s) => s.clone(),
        Value::Year(y) => y.to_string(),
        Value::Enum(i) => i.to_string(),
        Value::Date { year, month, day } => format!("'{year:04}-{month:02}-{day:02}'"),
        Value::DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            micros,
            fsp,
        } => format!(
            "'{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}{}'",
            frac(*micros, *fsp)
        ),
        Value::Timestamp {
            seconds,
            micros,
            fsp,
        } => {
            if *seconds == 0 {
                return format!("'0000-00-00 00:00:00{}'", frac(*micros, *fsp));
            }
            let t = chrono::DateTime::from_timestamp(i64::from(*seconds), 0).unwrap_or_default();
            format!("'{}{}'", t.format("%Y-%m-%d %H:%M:%S"), frac(*micros, *fsp))
        }
        Value::Time {
            negative,
            hours,
            minute,
            second,
            micros,
            fsp,
        } => format!(
            "'{}{hours:02}:{minute:02}:{second:02}{}'",
            if *negative { "-" } else { "" },
            frac(*micros, *fsp)
        ),
        Value::Bytes(b) => match &col.charset {
            Some(cs) => format!("_{cs} {}", hex(b)),
            None => hex(&padded(b, col)),
        },
        Value::Json(j) => json(j),
        Value::Geometry(b) | Value::Vector(b) => hex(b),
    }
}

fn utf8(text: &str) -> String {
    format!("CONVERT({} USING utf8mb4)", hex(text.as_bytes()))
}

/// A JSON document from its text, with each opaque value set back with its MySQL type
/// (JSON text has no form for a DATE or a DECIMAL: it would read back as a string or a
/// double, which is another value).
fn json(j: &Json) -> String {
    let doc = format!("CAST({} AS JSON)", utf8(&j.text));
    if j.typed.is_empty() {
        return doc;
    }
    let mut out = format!("JSON_SET({doc}");
    for (path, v) in &j.typed {
        let _ = write!(out, ", {}, {}", utf8(path), opaque(v));
    }
    out.push(')');
    out
}

/// An SQL expression of the opaque value's own type.
fn opaque(v: &Opaque) -> String {
    match v {
        Opaque::Decimal {
            text,
            precision,
            scale,
        } => {
            // What the server wrote; a CAST needs 1 <= M <= 65, D <= 30, D <= M.
            let scale = (*scale).min(30);
            let precision = (*precision).clamp(scale.max(1), 65);
            format!("CAST('{text}' AS DECIMAL({precision},{scale}))")
        }
        Opaque::Temporal { field_type, text } => match *field_type {
            col::DATE => format!("CAST('{text}' AS DATE)"),
            col::TIME => format!("CAST('{text}' AS TIME(6))"),
            // SQL has no TIMESTAMP cast: a JSON_TABLE column of that type gives one (read
            // in the session's time zone, UTC, which is how it is written back too).
            col::TIMESTAMP => format!(
                "(SELECT t FROM JSON_TABLE('[\"{text}\"]', '$[*]' COLUMNS (t TIMESTAMP(6) \
                 PATH '$' ERROR ON ERROR)) AS myvault_ts)"
            ),
            _ => format!("CAST('{text}' AS DATETIME(6))"),
        },
        Opaque::Binary(b) => format!("CAST({} AS BINARY)", hex(b)),
    }
}

/// A condition true only when column `col` holds exactly `value` (bytes for strings, not
/// the collation's idea of equal).
pub fn matches(value: &Value, col: &SqlColumn) -> String {
    let c = &col.quoted;
    match value {
        Value::Null => format!("{c} IS NULL"),
        // The collation's comparison finds the row through an index; the binary one makes
        // it exact ('a' vs 'A', trailing spaces).
        Value::Bytes(b) => match &col.charset {
            Some(_) => format!(
                "{c} = {} AND CAST({c} AS BINARY) = {}",
                literal(value, col),
                hex(b)
            ),
            None => format!("{c} = {}", hex(&padded(b, col))),
        },
        // Geometry and vectors have no `=`; their stored bytes compare as hex text.
        Value::Geometry(b) | Value::Vector(b) => {
            let h = hex(b);
            format!("HEX({c}) = '{}'", &h[2..h.len() - 1])
        }
        other => format!("{c} = {}", literal(other, col)),
    }
}
