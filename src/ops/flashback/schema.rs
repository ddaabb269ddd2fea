//! The target's own description of each table to change back: column names in order,
//! character sets, generated columns, signedness and the primary key. The archive's table
//! map must agree with it (same number of columns, the same names where the map has them):
//! a table altered since cannot take the old rows back.

use crate::binlog::rows::TableMap;
use crate::binlog::rows::literal::SqlColumn;
use crate::error::{Error, Result};
use crate::mysql::session::{Session, quote_ident, quote_str};

#[derive(Debug, Clone)]
pub struct TargetColumn {
    pub name: String,
    pub sql: SqlColumn,
    /// Generated columns are computed by the server: never written, never compared.
    pub generated: bool,
    pub unsigned: bool,
}

#[derive(Debug, Clone)]
pub struct TableSchema {
    pub qualified: String,
    pub columns: Vec<TargetColumn>,
    /// Column indexes of the primary key; empty when the table has none.
    pub key: Vec<usize>,
}

impl TableSchema {
    pub fn load(s: &mut Session, db: &str, table: &str) -> Result<TableSchema> {
        let q = format!(
            "SELECT COLUMN_NAME, CHARACTER_SET_NAME, DATA_TYPE, CHARACTER_OCTET_LENGTH, EXTRA, \
             COLUMN_TYPE, COLUMN_KEY FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {} ORDER BY ORDINAL_POSITION",
            quote_str(db),
            quote_str(table)
        );
        let rows = s.query(&q)?;
        if rows.is_empty() {
            return Err(Error::TargetRefused(format!(
                "the target has no table {db}.{table} to change back"
            )));
        }
        let mut columns = Vec::new();
        let mut key = Vec::new();
        for (i, r) in rows.iter().enumerate() {
            let name = r.text_at(0).unwrap_or_default();
            let data_type = r.text_at(2).unwrap_or_default().to_ascii_lowercase();
            let extra = r.text_at(4).unwrap_or_default().to_ascii_uppercase();
            let column_type = r.text_at(5).unwrap_or_default().to_ascii_lowercase();
            if r.text_at(6).as_deref() == Some("PRI") {
                key.push(i);
            }
            columns.push(TargetColumn {
                sql: SqlColumn {
                    quoted: quote_ident(&name),
                    charset: r.text_at(1).filter(|c| c != "binary"),
                    binary_len: (data_type == "binary")
                        .then(|| r.u64_at(3))
                        .flatten()
                        .map(|n| n as usize),
                },
                generated: extra.contains("GENERATED"),
                unsigned: column_type.contains("unsigned"),
                name,
            });
        }
        // COLUMN_KEY says PRI for every part of the primary key; their order is the index's.
        if key.len() > 1 {
            let q = format!(
                "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = {} \
                 AND TABLE_NAME = {} AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX",
                quote_str(db),
                quote_str(table)
            );
            key = s
                .query(&q)?
                .iter()
                .filter_map(|r| r.text_at(0))
                .filter_map(|n| columns.iter().position(|c| c.name == n))
                .collect();
        }
        Ok(TableSchema {
            qualified: format!("{}.{}", quote_ident(db), quote_ident(table)),
            columns,
            key,
        })
    }

    /// Checks the archive's table map against this schema, and fills in the signedness the
    /// map may lack (binlog_row_metadata=MINIMAL writes it; older servers did not).
    pub fn reconcile(&self, map: &mut TableMap) -> Result<()> {
        let table = map.name();
        let changed = |why: String| {
            Error::TargetRefused(format!(
                "{table} has changed since the transactions to undo ({why}); flashback needs \
                 the table as it was then"
            ))
        };
        if map.columns.len() != self.columns.len() {
            return Err(changed(format!(
                "{} columns then, {} now",
                map.columns.len(),
                self.columns.len()
            )));
        }
        for (c, t) in map.columns.iter_mut().zip(&self.columns) {
            if let Some(n) = &c.name
                && *n != t.name
            {
                return Err(changed(format!("column `{n}` is now `{}`", t.name)));
            }
            if c.unsigned.is_none() {
                c.unsigned = Some(t.unsigned);
            }
        }
        Ok(())
    }
}
