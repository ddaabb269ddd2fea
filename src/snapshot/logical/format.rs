//! The logical dump format, shared by the dumper and the loader.
//!
//! A logical snapshot holds `dump.json` (everything but row data) and one tab-separated file
//! per chunk of rows under `data/`. Row files are written for `LOAD DATA ... CHARACTER SET
//! binary FIELDS TERMINATED BY '\t' ESCAPED BY '\\' LINES TERMINATED BY '\n'`: bytes are
//! exactly the column's stored bytes, with `\\`, tab, newline, carriage return and NUL escaped
//! and SQL NULL written as `\N`. Columns whose text form does not load back faithfully (BIT,
//! spatial, VECTOR) are dumped as hex, ENUM and SET by index, FLOAT through DOUBLE (the
//! text protocol prints it with six digits); JSON is loaded through utf8mb4.

use serde::{Deserialize, Serialize};

pub const FORMAT: &str = "myvault-logical-1";
pub const META_FILE: &str = "dump.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DumpMeta {
    pub format: String,
    pub flavor: String,
    pub version: String,
    pub databases: Vec<Database>,
    pub users: Vec<Account>,
    /// Rows dumped in all tables.
    pub rows: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Database {
    pub name: String,
    pub create: String,
    pub tables: Vec<Table>,
    pub views: Vec<View>,
    /// Procedures and functions.
    pub routines: Vec<StoredObject>,
    /// In the order they fire (ACTION_ORDER), so re-creating them keeps the order.
    pub triggers: Vec<StoredObject>,
    pub events: Vec<StoredObject>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Table {
    pub name: String,
    pub engine: String,
    /// `CREATE TABLE` without the indexes in `deferred_indexes`.
    pub create: String,
    /// `ADD ...` clauses for secondary indexes, built after the data is loaded.
    pub deferred_indexes: Vec<String>,
    /// Loaded columns in file order (generated columns are not dumped).
    pub columns: Vec<Column>,
    pub chunks: Vec<Chunk>,
    pub rows: u64,
    /// The tables this one's foreign keys reference (itself for a self-reference). `None` in
    /// snapshots from before it was recorded. The restore creates tables that foreign keys tie
    /// together on one connection: created at once, they can deadlock in the data dictionary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub references: Option<Vec<TableName>>,
    /// What the dump read of the rows, for a restore to compare with what it loaded. Absent in
    /// catalogs from before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<ContentSum>,
}

/// A table by database and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TableName {
    pub database: String,
    pub table: String,
}

/// A checksum of a table's rows exactly as the dump read them: the bytes of its row files
/// (escaped, tab-separated lines, in the column encodings above), which a restore recomputes
/// by reading the restored table through the same encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "order", rename_all = "snake_case")]
pub enum ContentSum {
    /// Rows in primary-key order (the row files in catalog order, each sorted by the key):
    /// the CRC-64/NVME of all of them as one stream, combined from the files' own CRCs.
    PrimaryKey { bytes: u64, crc64: Hex64 },
    /// A table without a primary key, read in no defined order: the wrapping sum of each
    /// line's BLAKE3 hash (its first 16 bytes, little-endian), which no order changes.
    Unordered { bytes: u64, row_hash_sum: Hex128 },
}

/// A `u64` written as 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hex64(pub u64);

/// A `u128` written as 32 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hex128(pub u128);

impl std::fmt::Display for Hex64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl std::fmt::Display for Hex128 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl Serialize for Hex64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Serialize for Hex128 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The value of exactly `digits` lower- or upper-case hex digits.
fn parse_hex<'de, D: serde::Deserializer<'de>>(d: D, digits: usize) -> Result<u128, D::Error> {
    let text = String::deserialize(d)?;
    if text.len() != digits || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(serde::de::Error::custom(format!(
            "expected {digits} hex digits, found {text:?}"
        )));
    }
    u128::from_str_radix(&text, 16).map_err(serde::de::Error::custom)
}

impl<'de> Deserialize<'de> for Hex64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // 16 hex digits always fit.
        parse_hex(d, 16).map(|v| Hex64(v as u64))
    }
}

impl<'de> Deserialize<'de> for Hex128 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_hex(d, 32).map(Hex128)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnEncoding {
    /// The stored bytes, escaped.
    Raw,
    /// HEX() of the stored bytes; loaded with UNHEX().
    Hex,
    /// JSON text; loaded with CONVERT(... USING utf8mb4).
    Json,
    /// ENUM index or SET bitmask (`col + 0`); loaded as an integer.
    Index,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    pub encoding: ColumnEncoding,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Chunk {
    /// Path of the row file in the snapshot.
    pub file: String,
    pub rows: u64,
}

/// A view, routine, trigger or event, with the session settings it was created under.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredObject {
    pub name: String,
    /// `PROCEDURE`, `FUNCTION`, `TRIGGER`, `EVENT`.
    pub kind: String,
    pub create: String,
    pub sql_mode: String,
    pub character_set_client: String,
    pub collation_connection: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct View {
    pub name: String,
    pub create: String,
    pub character_set_client: String,
    pub collation_connection: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    pub user: String,
    pub host: String,
    pub create: String,
    pub grants: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_sums_are_tagged_hex_and_malformed_ones_are_refused() {
        let keyed = ContentSum::PrimaryKey {
            bytes: 5,
            crc64: Hex64(0xab),
        };
        let text = serde_json::to_string(&keyed).unwrap();
        assert_eq!(
            text,
            r#"{"order":"primary_key","bytes":5,"crc64":"00000000000000ab"}"#
        );
        assert_eq!(serde_json::from_str::<ContentSum>(&text).unwrap(), keyed);
        let unordered = ContentSum::Unordered {
            bytes: 1,
            row_hash_sum: Hex128(u128::MAX - 1),
        };
        let text = serde_json::to_string(&unordered).unwrap();
        assert!(text.contains(r#""row_hash_sum":"fffffffffffffffffffffffffffffffe""#));
        assert_eq!(
            serde_json::from_str::<ContentSum>(&text).unwrap(),
            unordered
        );
        for bad in [
            r#"{"order":"primary_key","bytes":5,"crc64":"ab"}"#,
            r#"{"order":"primary_key","bytes":5,"crc64":"+0000000000000ab"}"#,
            r#"{"order":"primary_key","bytes":5,"crc64":"zz000000000000ab"}"#,
            r#"{"order":"sorted","bytes":5,"crc64":"00000000000000ab"}"#,
            r#"{"order":"unordered","bytes":5,"row_hash_sum":"00000000000000ab"}"#,
        ] {
            assert!(serde_json::from_str::<ContentSum>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn catalogs_from_before_content_sums_still_read() {
        let old = r#"{"name":"t","engine":"InnoDB","create":"CREATE TABLE t (a int)",
            "deferred_indexes":[],"columns":[],"chunks":[],"rows":0}"#;
        let table: Table = serde_json::from_str(old).unwrap();
        assert_eq!(table.content, None);
        assert!(!serde_json::to_string(&table).unwrap().contains("content"));
    }
}
