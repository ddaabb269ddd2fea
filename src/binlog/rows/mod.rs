//! Row events decoded into typed values: the table map (column types, their metadata and the
//! optional metadata), WRITE/UPDATE/DELETE_ROWS v1 and v2 row images, and each value as an
//! SQL literal. `binlog search` counts rows with it; `flashback` inverts them.
//!
//! Layouts follow MySQL's `libbinlogevents` (`rows_event.cpp`, `table_map` optional metadata)
//! and the field packers of `sql/field.cc` (`Field::pack` per type); JSON values are the
//! binary format of `sql-common/json_binary.cc`.

pub mod decimal;
pub mod json;
pub mod literal;
pub mod payload;
pub mod rows_event;
pub mod table_map;
pub mod tx_events;
pub mod value;

#[cfg(test)]
mod tests;

pub use rows_event::{RowChange, RowsEvent, RowsKind};
pub use table_map::{Column, TableMap, TableMapHeader};
pub use value::Value;

/// Why a row event could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowsError {
    /// The bytes are not what the format says: a damaged or truncated event.
    #[error("malformed {what}")]
    Malformed { what: String },
    /// Well-formed, but something this decoder does not turn into values (partial JSON
    /// updates, typed arrays): the message says what and why.
    #[error("{0}")]
    Unsupported(String),
}

impl RowsError {
    pub(crate) fn malformed(what: impl Into<String>) -> RowsError {
        RowsError::Malformed { what: what.into() }
    }
}

impl From<crate::mysql::decode::Truncated> for RowsError {
    fn from(_: crate::mysql::decode::Truncated) -> RowsError {
        RowsError::malformed("row data (truncated)")
    }
}

/// Column type codes of the binlog (`enum_field_types`).
pub mod col {
    pub const DECIMAL: u8 = 0;
    pub const TINY: u8 = 1;
    pub const SHORT: u8 = 2;
    pub const LONG: u8 = 3;
    pub const FLOAT: u8 = 4;
    pub const DOUBLE: u8 = 5;
    pub const NULL: u8 = 6;
    pub const TIMESTAMP: u8 = 7;
    pub const LONGLONG: u8 = 8;
    pub const INT24: u8 = 9;
    pub const DATE: u8 = 10;
    pub const TIME: u8 = 11;
    pub const DATETIME: u8 = 12;
    pub const YEAR: u8 = 13;
    pub const NEWDATE: u8 = 14;
    pub const VARCHAR: u8 = 15;
    pub const BIT: u8 = 16;
    pub const TIMESTAMP2: u8 = 17;
    pub const DATETIME2: u8 = 18;
    pub const TIME2: u8 = 19;
    pub const TYPED_ARRAY: u8 = 20;
    pub const VECTOR: u8 = 242;
    pub const JSON: u8 = 245;
    pub const NEWDECIMAL: u8 = 246;
    pub const ENUM: u8 = 247;
    pub const SET: u8 = 248;
    pub const TINY_BLOB: u8 = 249;
    pub const MEDIUM_BLOB: u8 = 250;
    pub const LONG_BLOB: u8 = 251;
    pub const BLOB: u8 = 252;
    pub const VAR_STRING: u8 = 253;
    pub const STRING: u8 = 254;
    pub const GEOMETRY: u8 = 255;
}
