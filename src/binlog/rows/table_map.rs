//! TABLE_MAP_EVENT: which table a table id stands for, its columns' types with the metadata
//! their values need, and the optional metadata (signedness, character sets, and with
//! `binlog_row_metadata=FULL` names, primary key, ENUM/SET strings).

use super::{RowsError, col};
use crate::mysql::decode::Reader;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The real type: STRING's metadata trick undone (ENUM and SET are written as STRING).
    pub type_code: u8,
    /// Type metadata: a length, a pack length, (precision, scale), fsp...
    pub meta: u16,
    pub nullable: bool,
    /// From the SIGNEDNESS optional metadata; `None` when the server wrote none.
    pub unsigned: Option<bool>,
    /// Collation id of a character column, where the optional metadata gives one.
    pub collation: Option<u64>,
    /// With binlog_row_metadata=FULL.
    pub name: Option<String>,
}

impl Column {
    /// Numeric columns carry a bit in the SIGNEDNESS metadata.
    fn is_numeric(&self) -> bool {
        matches!(
            self.type_code,
            col::TINY
                | col::SHORT
                | col::INT24
                | col::LONG
                | col::LONGLONG
                | col::NEWDECIMAL
                | col::FLOAT
                | col::DOUBLE
        )
    }

    /// Character columns (binary ones too) carry a collation in the charset metadata.
    fn is_character(&self) -> bool {
        matches!(
            self.type_code,
            col::STRING
                | col::VAR_STRING
                | col::VARCHAR
                | col::BLOB
                | col::TINY_BLOB
                | col::MEDIUM_BLOB
                | col::LONG_BLOB
        )
    }

    /// The type as `mysqlbinlog -v` names it, for messages.
    pub fn type_name(&self) -> String {
        let name = match self.type_code {
            col::TINY => "TINYINT",
            col::SHORT => "SMALLINT",
            col::INT24 => "MEDIUMINT",
            col::LONG => "INT",
            col::LONGLONG => "BIGINT",
            col::FLOAT => "FLOAT",
            col::DOUBLE => "DOUBLE",
            col::NEWDECIMAL | col::DECIMAL => "DECIMAL",
            col::BIT => "BIT",
            col::YEAR => "YEAR",
            col::DATE | col::NEWDATE => "DATE",
            col::DATETIME | col::DATETIME2 => "DATETIME",
            col::TIMESTAMP | col::TIMESTAMP2 => "TIMESTAMP",
            col::TIME | col::TIME2 => "TIME",
            col::STRING => "CHAR",
            col::VARCHAR | col::VAR_STRING => "VARCHAR",
            col::BLOB | col::TINY_BLOB | col::MEDIUM_BLOB | col::LONG_BLOB => "BLOB",
            col::ENUM => "ENUM",
            col::SET => "SET",
            col::JSON => "JSON",
            col::GEOMETRY => "GEOMETRY",
            col::VECTOR => "VECTOR",
            col::TYPED_ARRAY => "TYPED_ARRAY",
            _ => return format!("type {}", self.type_code),
        };
        name.to_string()
    }
}

/// The header of a TABLE_MAP event body: the 6-byte table id, 2 bytes of flags, then the
/// database and table names, each a length byte, the name and a NUL. The columns follow.
/// Row decoding ([`TableMap::parse`]) and the table filter of a single-table replay (which
/// only renames tables) both read it here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableMapHeader {
    pub table_id: u64,
    pub flags: u16,
    pub db: String,
    pub table: String,
    /// Where the bytes after the table name's NUL (the column count) start.
    pub names_end: usize,
}

impl TableMapHeader {
    pub fn parse(body: &[u8]) -> Result<TableMapHeader, RowsError> {
        let mut r = Reader::new(body);
        let table_id = r.u48()?;
        let flags = r.u16()?;
        let db = name(&mut r)?;
        let table = name(&mut r)?;
        Ok(TableMapHeader {
            table_id,
            flags,
            db,
            table,
            names_end: body.len() - r.remaining(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableMap {
    pub table_id: u64,
    pub schema: String,
    pub table: String,
    pub columns: Vec<Column>,
    /// Column indexes of the primary key (FULL metadata only; empty when not written).
    pub primary_key: Vec<usize>,
}

/// Optional metadata field types (`Table_map_event::Optional_metadata_field_type`).
mod opt {
    pub const SIGNEDNESS: u8 = 1;
    pub const DEFAULT_CHARSET: u8 = 2;
    pub const COLUMN_CHARSET: u8 = 3;
    pub const COLUMN_NAME: u8 = 4;
    pub const SIMPLE_PRIMARY_KEY: u8 = 8;
    pub const PRIMARY_KEY_WITH_PREFIX: u8 = 9;
}

/// The metadata bytes each column type has in the table map.
fn meta_len(type_code: u8) -> usize {
    match type_code {
        col::FLOAT
        | col::DOUBLE
        | col::BLOB
        | col::TINY_BLOB
        | col::MEDIUM_BLOB
        | col::LONG_BLOB
        | col::GEOMETRY
        | col::JSON
        | col::VECTOR
        | col::TIME2
        | col::DATETIME2
        | col::TIMESTAMP2 => 1,
        col::VARCHAR
        | col::VAR_STRING
        | col::BIT
        | col::NEWDECIMAL
        | col::STRING
        | col::ENUM
        | col::SET => 2,
        col::TYPED_ARRAY => 1,
        _ => 0,
    }
}

impl TableMap {
    /// `db.t`, for messages and matching `--table`.
    pub fn name(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }

    /// Parses a TABLE_MAP_EVENT body (without the checksum).
    pub fn parse(body: &[u8]) -> Result<TableMap, RowsError> {
        let header = TableMapHeader::parse(body)?;
        let mut r = Reader::new(&body[header.names_end..]);
        let count = usize::try_from(r.lenenc_int()?)
            .ok()
            .filter(|n| *n <= 4096)
            .ok_or_else(|| RowsError::malformed("table map column count"))?;
        let types = r.take(count)?.to_vec();
        let meta_block = r.lenenc_bytes()?;
        let nullable = r.take(count.div_ceil(8))?;
        let mut m = Reader::new(meta_block);
        let mut columns = Vec::with_capacity(count);
        for (i, &t) in types.iter().enumerate() {
            let (type_code, meta) = match meta_len(t) {
                0 => (t, 0u16),
                1 => (t, u16::from(m.u8()?)),
                _ => {
                    let b = m.array::<2>()?;
                    match t {
                        col::STRING | col::ENUM | col::SET => string_meta(b[0], b[1]),
                        // (precision, scale) as one number, precision high.
                        col::NEWDECIMAL => (t, u16::from_be_bytes(b)),
                        _ => (t, u16::from_le_bytes(b)),
                    }
                }
            };
            columns.push(Column {
                type_code,
                meta,
                nullable: nullable[i / 8] & (1 << (i % 8)) != 0,
                unsigned: None,
                collation: None,
                name: None,
            });
        }
        let mut map = TableMap {
            table_id: header.table_id,
            schema: header.db,
            table: header.table,
            columns,
            primary_key: Vec::new(),
        };
        while !r.is_empty() {
            let kind = r.u8()?;
            let value = r.lenenc_bytes()?;
            map.optional(kind, value)?;
        }
        Ok(map)
    }

    fn optional(&mut self, kind: u8, value: &[u8]) -> Result<(), RowsError> {
        let mut v = Reader::new(value);
        let bad = |what: &str| RowsError::malformed(format!("table map {what} metadata"));
        match kind {
            opt::SIGNEDNESS => {
                let numeric = self.columns.iter_mut().filter(|c| c.is_numeric());
                for (bit, c) in numeric.enumerate() {
                    let byte = value.get(bit / 8).ok_or_else(|| bad("signedness"))?;
                    c.unsigned = Some(byte & (0x80 >> (bit % 8)) != 0);
                }
            }
            opt::DEFAULT_CHARSET => {
                let default = v.lenenc_int()?;
                let mut exceptions = Vec::new();
                while !v.is_empty() {
                    exceptions.push((v.lenenc_int()?, v.lenenc_int()?));
                }
                for (nth, c) in self
                    .columns
                    .iter_mut()
                    .filter(|c| c.is_character())
                    .enumerate()
                {
                    let own = exceptions.iter().find(|(i, _)| *i == nth as u64);
                    c.collation = Some(own.map_or(default, |(_, coll)| *coll));
                }
            }
            opt::COLUMN_CHARSET => {
                for c in self.columns.iter_mut().filter(|c| c.is_character()) {
                    c.collation = Some(v.lenenc_int()?);
                }
            }
            opt::COLUMN_NAME => {
                for c in self.columns.iter_mut() {
                    let n = v.lenenc_bytes()?;
                    c.name = Some(String::from_utf8_lossy(n).into_owned());
                }
            }
            opt::SIMPLE_PRIMARY_KEY => {
                while !v.is_empty() {
                    self.primary_key.push(self.column_index(v.lenenc_int()?)?);
                }
            }
            opt::PRIMARY_KEY_WITH_PREFIX => {
                while !v.is_empty() {
                    let i = self.column_index(v.lenenc_int()?)?;
                    let _prefix = v.lenenc_int()?;
                    self.primary_key.push(i);
                }
            }
            // ENUM/SET strings, geometry types, visibility, vector dimensions: values decode
            // without them (ENUM and SET as their numbers, which the server takes back).
            _ => {}
        }
        Ok(())
    }

    fn column_index(&self, i: u64) -> Result<usize, RowsError> {
        usize::try_from(i)
            .ok()
            .filter(|i| *i < self.columns.len())
            .ok_or_else(|| RowsError::malformed("table map primary key metadata"))
    }
}

/// STRING's two metadata bytes: the real type (STRING, ENUM or SET) and the length, whose
/// bits above 255 hide in the real type's byte (`Field_string::do_save_field_metadata`).
fn string_meta(b0: u8, b1: u8) -> (u8, u16) {
    if b0 & 0x30 != 0x30 {
        let len = u16::from(b1) | (u16::from((b0 & 0x30) ^ 0x30) << 4);
        (b0 | 0x30, len)
    } else {
        (b0, u16::from(b1))
    }
}

/// A length byte, the name, a NUL (checked: a missing one means the lengths are wrong).
fn name(r: &mut Reader<'_>) -> Result<String, RowsError> {
    let len = usize::from(r.u8()?);
    let bytes = r.take(len)?;
    if r.u8()? != 0 {
        return Err(RowsError::malformed("table map name without its NUL"));
    }
    Ok(String::from_utf8_lossy(bytes).into_owned())
}
