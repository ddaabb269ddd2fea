//! `CHECKSUM TABLE` of every table of a physical snapshot, read at backup time on the
//! temporary server that runs on the copied data directory, so the values are exactly those of
//! the snapshot's consistent point. A restore that starts a server on the restored directory
//! computes them again and compares (`restore::content_check`).
//!
//! `CHECKSUM TABLE` reads every row, off-page columns included, and its value depends only on
//! the rows and the table's row format, both of which a data directory carries unchanged.

use std::collections::BTreeMap;

use crate::error::Result;
use crate::first_error::on_each;
use crate::mysql::session::{Session, quote_list};
use crate::mysql::wire::ConnectOptions;
use crate::snapshot::logical::catalog::SYSTEM_SCHEMAS;
use crate::snapshot::logical::qualified;

/// `CHECKSUM TABLE` values by database and table; `None` where the server gave none (an
/// engine that cannot compute one).
pub type TableChecksums = BTreeMap<String, BTreeMap<String, Option<u64>>>;

/// The name under which the values are kept in a snapshot manifest's `extra`.
pub const MANIFEST_KEY: &str = "table_checksums";

/// Every base table outside the server's own schemas, as (database, table), sorted.
pub fn base_tables(s: &mut Session) -> Result<Vec<(String, String)>> {
    let rows = s.query(&format!(
        "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
         WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN ({}) ORDER BY 1, 2",
        quote_list(SYSTEM_SCHEMAS)
    ))?;
    Ok(rows
        .iter()
        .filter_map(|r| Some((r.text_at(0)?, r.text_at(1)?)))
        .collect())
}

/// `CHECKSUM TABLE` of one table.
pub fn checksum_table(s: &mut Session, db: &str, table: &str) -> Result<Option<u64>> {
    let sql = format!("CHECKSUM TABLE {}", qualified(db, table));
    let rows = s.query(&sql)?;
    let row = rows.first().ok_or_else(|| s.unexpected(&sql, "no row"))?;
    // NULL: the engine has no checksum. Anything else must be a number.
    match row.text("Checksum") {
        None => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|_| s.unexpected(&sql, format!("checksum {text:?}")).into()),
    }
}

/// `first` and as many more sessions to `server` as make `count` (at least one in all).
pub fn sessions(first: Session, server: &ConnectOptions, count: usize) -> Result<Vec<Session>> {
    let mut all = vec![first];
    while all.len() < count {
        all.push(Session::connect(server)?);
    }
    Ok(all)
}

/// The values of every table of the server at `server`, read on up to `jobs` connections.
pub fn read_all(server: &ConnectOptions, jobs: usize) -> Result<TableChecksums> {
    let mut first = Session::connect(server)?;
    let tables = base_tables(&mut first)?;
    let mut conns = sessions(first, server, jobs.clamp(1, tables.len().max(1)))?;
    let values = on_each(&mut conns, tables.clone(), |s, (db, table)| {
        checksum_table(s, &db, &table)
    })?;
    let mut out = TableChecksums::new();
    for ((db, table), value) in tables.into_iter().zip(values) {
        out.entry(db).or_default().insert(table, value);
    }
    Ok(out)
}

/// Connections for reading checksums on a temporary server of this host's.
pub fn local_jobs() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4))
}
