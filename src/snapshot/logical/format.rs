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
}

/// A table by database and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TableName {
    pub database: String,
    pub table: String,
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
