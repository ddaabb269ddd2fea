//! One column's value in a row image, decoded by its table-map type and metadata
//! (`Field::pack` of each field type in `sql/field.cc`).

use super::table_map::Column;
use super::{RowsError, col, decimal, json};
use crate::mysql::decode::Reader;

/// A decoded value. Strings and blobs stay bytes: their character set is the column's.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    UInt(u64),
    Float(f32),
    Double(f64),
    /// Exact decimal text.
    Decimal(String),
    /// BIT(n), as a number.
    Bit(u64),
    /// 0 (the zero year) or 1901..=2155.
    Year(u16),
    Date {
        year: u16,
        month: u8,
        day: u8,
    },
    DateTime {
        year: u16,
        month: u8,
        day: u8,
        hour: u8,
        minute: u8,
        second: u8,
        micros: u32,
        fsp: u8,
    },
    /// Seconds since the epoch, UTC.
    Timestamp {
        seconds: u32,
        micros: u32,
        fsp: u8,
    },
    Time {
        negative: bool,
        hours: u32,
        minute: u8,
        second: u8,
        micros: u32,
        fsp: u8,
    },
    /// CHAR, VARCHAR, BINARY, VARBINARY, BLOB, TEXT: the stored bytes.
    Bytes(Vec<u8>),
    /// ENUM: the 1-based index of the member (0 for the empty error value).
    Enum(u16),
    /// SET: the bit mask of its members.
    Set(u64),
    /// JSON: its text, and the typed values inside it.
    Json(json::Json),
    /// MySQL's internal geometry: 4-byte SRID then WKB.
    Geometry(Vec<u8>),
    /// VECTOR: little-endian float32 values.
    Vector(Vec<u8>),
}

fn be_uint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

fn le_uint(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

/// The fractional seconds of DATETIME2/TIMESTAMP2/TIME2: (fsp + 1) / 2 big-endian bytes,
/// scaled to microseconds.
fn frac_micros(r: &mut Reader<'_>, fsp: u8) -> Result<u32, RowsError> {
    Ok(match fsp {
        0 => 0,
        1 | 2 => u32::from(r.u8()?) * 10_000,
        3 | 4 => be_uint(r.take(2)?) as u32 * 100,
        5 | 6 => be_uint(r.take(3)?) as u32,
        _ => return Err(RowsError::malformed(format!("fractional seconds {fsp}"))),
    })
}

fn fsp_of(c: &Column) -> Result<u8, RowsError> {
    u8::try_from(c.meta)
        .ok()
        .filter(|f| *f <= 6)
        .ok_or_else(|| RowsError::malformed(format!("fsp {}", c.meta)))
}

/// A length-prefixed value: `prefix` bytes of little-endian length, then the bytes.
fn prefixed<'a>(r: &mut Reader<'a>, prefix: usize) -> Result<&'a [u8], RowsError> {
    if !(1..=4).contains(&prefix) {
        return Err(RowsError::malformed(format!(
            "length prefix of {prefix} bytes"
        )));
    }
    let len = le_uint(r.take(prefix)?) as usize;
    Ok(r.take(len)?)
}

fn signed(unsigned: Option<bool>) -> bool {
    // Without SIGNEDNESS metadata the server's default (signed) is the only guess; callers
    // that can ask the server's schema do (see ops::flashback).
    !unsigned.unwrap_or(false)
}

/// Decodes one non-NULL value of column `c` from `r`.
pub fn decode(r: &mut Reader<'_>, c: &Column) -> Result<Value, RowsError> {
    let int = |raw: u64, bits: u32| -> Value {
        if signed(c.unsigned) {
            let shift = 64 - bits;
            Value::Int(((raw << shift) as i64) >> shift)
        } else {
            Value::UInt(raw)
        }
    };
    Ok(match c.type_code {
        col::TINY => int(u64::from(r.u8()?), 8),
        col::SHORT => int(u64::from(r.u16()?), 16),
        col::INT24 => int(u64::from(r.u24()?), 24),
        col::LONG => int(u64::from(r.u32()?), 32),
        col::LONGLONG => int(r.u64()?, 64),
        col::FLOAT => Value::Float(f32::from_le_bytes(r.array()?)),
        col::DOUBLE => Value::Double(f64::from_le_bytes(r.array()?)),
        col::NEWDECIMAL => {
            let [precision, scale] = c.meta.to_be_bytes();
            let n = decimal::size(precision, scale)?;
            Value::Decimal(decimal::decode(r.take(n)?, precision, scale)?)
        }
        col::BIT => {
            let [bits, bytes] = c.meta.to_le_bytes();
            let n = usize::from(bytes) + usize::from(bits > 0);
            if n > 8 {
                return Err(RowsError::malformed("BIT metadata"));
            }
            Value::Bit(be_uint(r.take(n)?))
        }
        col::YEAR => {
            let y = r.u8()?;
            Value::Year(if y == 0 { 0 } else { 1900 + u16::from(y) })
        }
        col::DATE | col::NEWDATE => {
            let v = r.u24()?;
            Value::Date {
                year: (v >> 9) as u16,
                month: ((v >> 5) & 15) as u8,
                day: (v & 31) as u8,
            }
        }
        col::DATETIME2 => {
            let fsp = fsp_of(c)?;
            let int = be_uint(r.take(5)?) as i64 - 0x80_0000_0000;
            let micros = frac_micros(r, fsp)?;
            let ymd = int >> 17;
            let ym = ymd >> 5;
            let hms = int & 0x1_ffff;
            Value::DateTime {
                year: (ym / 13) as u16,
                month: (ym % 13) as u8,
                day: (ymd & 31) as u8,
                hour: (hms >> 12) as u8,
                minute: ((hms >> 6) & 63) as u8,
                second: (hms & 63) as u8,
                micros,
                fsp,
            }
        }
        col::DATETIME => {
            // Pre-5.6 format: YYYYMMDDhhmmss as a little-endian integer.
            let v = r.u64()?;
            let (d, t) = (v / 1_000_000, v % 1_000_000);
            Value::DateTime {
                year: (d / 10_000) as u16,
                month: (d / 100 % 100) as u8,
                day: (d % 100) as u8,
                hour: (t / 10_000) as u8,
                minute: (t / 100 % 100) as u8,
                second: (t % 100) as u8,
                micros: 0,
                fsp: 0,
            }
        }
        col::TIMESTAMP2 => {
            let fsp = fsp_of(c)?;
            let seconds = be_uint(r.take(4)?) as u32;
            Value::Timestamp {
                seconds,
                micros: frac_micros(r, fsp)?,
                fsp,
            }
        }
        col::TIMESTAMP => Value::Timestamp {
            seconds: r.u32()?,
            micros: 0,
            fsp: 0,
        },
        col::TIME2 => time2(r, fsp_of(c)?)?,
        col::TIME => {
            // Pre-5.6 format: +-hhmmss as a 3-byte little-endian signed integer.
            let raw = r.u24()?;
            let v = ((raw << 8) as i32) >> 8;
            let a = v.unsigned_abs();
            Value::Time {
                negative: v < 0,
                hours: a / 10_000,
                minute: (a / 100 % 100) as u8,
                second: (a % 100) as u8,
                micros: 0,
                fsp: 0,
            }
        }
        col::VARCHAR | col::VAR_STRING => {
            let prefix = if c.meta < 256 { 1 } else { 2 };
            Value::Bytes(prefixed(r, prefix)?.to_vec())
        }
        col::STRING => {
            let prefix = if c.meta < 256 { 1 } else { 2 };
            Value::Bytes(prefixed(r, prefix)?.to_vec())
        }
        col::ENUM => match c.meta {
            1 => Value::Enum(u16::from(r.u8()?)),
            2 => Value::Enum(r.u16()?),
            n => return Err(RowsError::malformed(format!("ENUM pack length {n}"))),
        },
        col::SET => {
            let n = usize::from(c.meta);
            if !(1..=8).contains(&n) {
                return Err(RowsError::malformed(format!("SET pack length {n}")));
            }
            Value::Set(le_uint(r.take(n)?))
        }
        col::BLOB | col::TINY_BLOB | col::MEDIUM_BLOB | col::LONG_BLOB => {
            Value::Bytes(prefixed(r, usize::from(c.meta))?.to_vec())
        }
        col::GEOMETRY => Value::Geometry(prefixed(r, usize::from(c.meta))?.to_vec()),
        col::VECTOR => Value::Vector(prefixed(r, usize::from(c.meta))?.to_vec()),
        col::JSON => Value::Json(json::decode(prefixed(r, usize::from(c.meta))?)?),
        col::TYPED_ARRAY => {
            return Err(RowsError::Unsupported(
                "typed array columns (multi-valued index internals) cannot be decoded".into(),
            ));
        }
        other => {
            return Err(RowsError::Unsupported(format!(
                "column type {other} cannot be decoded"
            )));
        }
    })
}

/// TIME2 (`my_time_packed_from_binary`): 3 bytes of hours, minutes and seconds offset by
/// 0x800000, fractional seconds after, read unsigned; a negative time stores its integer
/// part one lower and the fraction complemented (so the bytes sort), undone here.
fn time2(r: &mut Reader<'_>, fsp: u8) -> Result<Value, RowsError> {
    const INT_OFS: i64 = 0x80_0000;
    let packed: i64 = match fsp {
        0 => (be_uint(r.take(3)?) as i64 - INT_OFS) << 24,
        1 | 2 => {
            let mut int = be_uint(r.take(3)?) as i64 - INT_OFS;
            let mut frac = i64::from(r.u8()?);
            if int < 0 && frac != 0 {
                int += 1;
                frac -= 0x100;
            }
            (int << 24) + frac * 10_000
        }
        3 | 4 => {
            let mut int = be_uint(r.take(3)?) as i64 - INT_OFS;
            let mut frac = i64::from(u16::from_be_bytes(r.array()?));
            if int < 0 && frac != 0 {
                int += 1;
                frac -= 0x10000;
            }
            (int << 24) + frac * 100
        }
        5 | 6 => be_uint(r.take(6)?) as i64 - 0x8000_0000_0000,
        _ => return Err(RowsError::malformed(format!("TIME fsp {fsp}"))),
    };
    let negative = packed < 0;
    let a = packed.unsigned_abs();
    let hms = a >> 24;
    Ok(Value::Time {
        negative,
        hours: ((hms >> 12) % (1 << 10)) as u32,
        minute: ((hms >> 6) % 64) as u8,
        second: (hms % 64) as u8,
        micros: (a % (1 << 24)) as u32,
        fsp,
    })
}
