//! Replaying only some tables: the few bytes of row events a table filter needs. A
//! TABLE_MAP event names a table (its id, database and name) for the row events after it;
//! those name it only by the id. A filtered replay keeps the table maps (renamed to where the
//! rows go) and row events of the selected tables and drops the rest.
//!
//! Only the TABLE_MAP header is read (id, database, table: `rows::table_map::TableMapHeader`,
//! the row decoder's parser); the row images are left as they are.

use std::io;

/// Rows event flag: the last event of a statement.
pub const STMT_END_F: u16 = 0x0001;

/// Decides, for a replay of some tables only, what of each transaction reaches the target.
/// The SQL sink asks it about every table map and statement it meets.
pub trait TableFilter {
    /// A transaction begins; `gtid` as text, when it has one.
    fn transaction(&mut self, gtid: Option<String>);
    /// Where row changes of `db`.`table` go, `(database, table)`, or `None` to drop them.
    fn rows_target(&mut self, db: &str, table: &str) -> Option<(String, String)>;
    /// A statement (DDL, or statement-based DML) run with `default_db` selected: the
    /// statement to run in its place (fully qualified), `None` to leave it out, or why it
    /// cannot be replayed for the selected tables.
    fn statement(&mut self, default_db: &str, sql: &str) -> Result<Option<String>, String>;
    /// The transaction ended.
    fn transaction_end(&mut self);
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

pub use crate::binlog::rows::table_map::TableMapHeader;

/// The TABLE_MAP header (id, database, table), parsed by the row decoder's own parser.
pub fn parse_table_map(body: &[u8]) -> io::Result<TableMapHeader> {
    TableMapHeader::parse(body).map_err(|e| bad(&format!("table map event: {e}")))
}

/// The same TABLE_MAP body naming `db`.`table` instead.
pub fn rename_table_map(
    body: &[u8],
    map: &TableMapHeader,
    db: &str,
    table: &str,
) -> io::Result<Vec<u8>> {
    if db.len() > 64 || table.len() > 64 {
        return Err(bad("a table name longer than 64 bytes"));
    }
    let mut out = Vec::with_capacity(body.len() + db.len() + table.len());
    let short = || bad("a table map shorter than its header");
    out.extend_from_slice(body.get(..8).ok_or_else(short)?);
    for name in [db, table] {
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        out.push(0);
    }
    out.extend_from_slice(body.get(map.names_end..).ok_or_else(short)?);
    Ok(out)
}

/// The table id a rows event's body starts with.
pub fn rows_table_id(body: &[u8]) -> io::Result<u64> {
    let id = body.get(..6).ok_or_else(|| bad("truncated rows event"))?;
    Ok(id
        .iter()
        .rev()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

/// The flags of a rows event body (after the table id).
pub fn rows_flags(body: &[u8]) -> u16 {
    match body.get(6..8) {
        Some(f) => u16::from_le_bytes([f[0], f[1]]),
        None => 0,
    }
}

/// Marks a rows event body as its statement's last.
pub fn set_stmt_end(body: &mut [u8]) {
    if let Some(f) = body.get_mut(6..8) {
        let flags = u16::from_le_bytes([f[0], f[1]]) | STMT_END_F;
        f.copy_from_slice(&flags.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_map(id: u64, db: &str, table: &str, rest: &[u8]) -> Vec<u8> {
        let mut b = id.to_le_bytes()[..6].to_vec();
        b.extend_from_slice(&[1, 0]);
        for n in [db, table] {
            b.push(n.len() as u8);
            b.extend_from_slice(n.as_bytes());
            b.push(0);
        }
        b.extend_from_slice(rest);
        b
    }

    #[test]
    fn a_table_map_is_read_and_renamed_keeping_its_columns() {
        let body = table_map(0x0102_0304_0506, "shop", "orders", &[3, 8, 15, 3]);
        let map = parse_table_map(&body).unwrap();
        assert_eq!(map.table_id, 0x0102_0304_0506);
        assert_eq!((map.db.as_str(), map.table.as_str()), ("shop", "orders"));
        let renamed = rename_table_map(&body, &map, "shop_restored", "o").unwrap();
        assert_eq!(
            renamed,
            table_map(0x0102_0304_0506, "shop_restored", "o", &[3, 8, 15, 3])
        );
    }

    #[test]
    fn a_truncated_table_map_is_an_error_not_an_empty_name() {
        let body = table_map(7, "shop", "orders", &[]);
        for cut in [3, 9, 14, body.len() - 1] {
            assert!(parse_table_map(&body[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn the_statement_end_flag_is_set_in_place() {
        let mut body = vec![9, 0, 0, 0, 0, 0, 0x02, 0x00, 0xAA];
        assert_eq!(rows_table_id(&body).unwrap(), 9);
        set_stmt_end(&mut body);
        assert_eq!(rows_flags(&body), 0x0003);
    }
}
