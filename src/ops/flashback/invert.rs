//! The inverse of a transaction as SQL, newest change first: a deleted row is inserted
//! back, an inserted row deleted, an updated row set back to its before image. Every
//! statement names the row by exactly the values the transaction left (the key finds it,
//! the other columns make it exact), so a row changed since matches nothing: that is the
//! conflict check, done by the statement that would change the row, in the same
//! transaction, with the row locked.

use std::collections::HashMap;

use super::collect::{Spill, TxRecord};
use super::schema::TableSchema;
use crate::binlog::rows::literal::{literal, matches};
use crate::binlog::rows::{RowsEvent, RowsKind, Value};
use crate::error::{Error, Result};

/// One statement of the inverse.
#[derive(Debug, Clone)]
pub enum Op {
    /// Rows the transaction deleted, inserted back (one statement).
    Insert { rows: Vec<Vec<Value>> },
    /// A row the transaction inserted, deleted.
    Delete { row: Vec<Value> },
    /// A row the transaction updated, set back: the row holding exactly `after` gets the
    /// values of `before`. (Walking forward, the two are the other way round.)
    Update {
        before: Vec<Value>,
        after: Vec<Value>,
    },
}

fn writable(t: &TableSchema) -> impl Iterator<Item = usize> + '_ {
    (0..t.columns.len()).filter(|i| !t.columns[*i].generated)
}

/// `WHERE` that holds only for a row of exactly these values.
fn exactly(t: &TableSchema, row: &[Value]) -> String {
    writable(t)
        .map(|i| matches(&row[i], &t.columns[i].sql))
        .collect::<Vec<_>>()
        .join(" AND ")
}

pub fn insert_sql(t: &TableSchema, rows: &[Vec<Value>]) -> String {
    let cols: Vec<&str> = writable(t)
        .map(|i| t.columns[i].sql.quoted.as_str())
        .collect();
    let values: Vec<String> = rows
        .iter()
        .map(|r| {
            let v: Vec<String> = writable(t)
                .map(|i| literal(&r[i], &t.columns[i].sql))
                .collect();
            format!("({})", v.join(", "))
        })
        .collect();
    format!(
        "INSERT INTO {} ({}) VALUES {}",
        t.qualified,
        cols.join(", "),
        values.join(", ")
    )
}

pub fn delete_sql(t: &TableSchema, row: &[Value]) -> String {
    format!(
        "DELETE FROM {} WHERE {} LIMIT 1",
        t.qualified,
        exactly(t, row)
    )
}

/// `None` when the update changed nothing the statement could set back.
pub fn update_sql(t: &TableSchema, before: &[Value], after: &[Value]) -> Option<String> {
    let set: Vec<String> = writable(t)
        .filter(|i| before[*i] != after[*i])
        .map(|i| {
            format!(
                "{} = {}",
                t.columns[i].sql.quoted,
                literal(&before[i], &t.columns[i].sql)
            )
        })
        .collect();
    (!set.is_empty()).then(|| {
        format!(
            "UPDATE {} SET {} WHERE {} LIMIT 1",
            t.qualified,
            set.join(", "),
            exactly(t, after)
        )
    })
}

/// A value short enough to name a row in a message.
fn show(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Decimal(d) => d.clone(),
        Value::Bytes(b) => {
            let s = String::from_utf8_lossy(b);
            let short: String = s.chars().take(40).collect();
            format!(
                "'{short}{}'",
                if s.chars().count() > 40 { "..." } else { "" }
            )
        }
        other => {
            let col = crate::binlog::rows::literal::SqlColumn {
                quoted: String::new(),
                charset: None,
                binary_len: None,
            };
            let l = literal(other, &col);
            l.chars().take(60).collect()
        }
    }
}

/// `db.t (id=5)`: the row by its primary key, or by its first columns without one.
pub fn row_name(table: &str, t: &TableSchema, row: &[Value]) -> String {
    let cols: Vec<usize> = if t.key.is_empty() {
        writable(t).take(4).collect()
    } else {
        t.key.clone()
    };
    let parts: Vec<String> = cols
        .iter()
        .map(|i| format!("{}={}", t.columns[*i].name, show(&row[*i])))
        .collect();
    format!("{table} ({})", parts.join(", "))
}

/// A fingerprint of the row's identity in its table: its primary key's values (every
/// column's without one). Two ops of one transaction with the same fingerprint may touch
/// the same row; a rare collision only costs a second check.
pub fn row_fingerprint(table: &str, t: &TableSchema, row: &[Value]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    table.hash(&mut h);
    let cols: Vec<usize> = if t.key.is_empty() {
        writable(t).collect()
    } else {
        t.key.clone()
    };
    for i in cols {
        literal(&row[i], &t.columns[i].sql).hash(&mut h);
    }
    h.finish()
}

fn image(img: Option<Vec<Option<Value>>>, table: &str) -> Result<Vec<Value>> {
    img.unwrap_or_default()
        .into_iter()
        .collect::<Option<Vec<Value>>>()
        .ok_or_else(|| {
            Error::TargetRefused(format!(
                "{table}: a row image lacks columns (binlog_row_image is not FULL)"
            ))
        })
}

/// Which way to walk a transaction's changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The inverse, newest change first: what flashback applies.
    Undo,
    /// The transaction itself, oldest change first: it applies cleanly only to rows as they
    /// were before it, which is how a rerun recognises a transaction it already undid.
    Redo,
}

/// Hands the statements of `tx` walked in `direction` to `each`. One event's rows are held
/// at a time.
pub fn for_each_op(
    tx: &TxRecord,
    spill: &Spill,
    schemas: &HashMap<String, TableSchema>,
    direction: Direction,
    each: &mut dyn FnMut(&str, &TableSchema, Op) -> Result<()>,
) -> Result<()> {
    let undo = direction == Direction::Undo;
    let mut buf = Vec::new();
    let events: Box<dyn Iterator<Item = _>> = if undo {
        Box::new(tx.events.iter().rev())
    } else {
        Box::new(tx.events.iter())
    };
    for e in events {
        let map = tx.maps.get(&e.table_id).ok_or_else(|| {
            Error::Internal(format!(
                "spilled rows of table id {} without a map",
                e.table_id
            ))
        })?;
        let name = map.name();
        let schema = schemas
            .get(&name)
            .ok_or_else(|| Error::Internal(format!("no schema loaded for {name}")))?;
        spill.read(e, &mut buf)?;
        let ev = RowsEvent::parse(e.type_code, &buf)
            .map_err(|err| Error::Internal(format!("re-reading spilled rows of {name}: {err}")))?;
        let mut rows = ev
            .rows(map)
            .and_then(|r| r.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(|err| Error::DamagedFile(format!("decoding rows of {name}: {err}")))?;
        if undo {
            rows.reverse();
        }
        match (ev.kind, undo) {
            // Rows to put in: the deleted ones undone, the inserted ones redone.
            (RowsKind::Delete, true) | (RowsKind::Insert, false) => {
                let rows = rows
                    .into_iter()
                    .map(|r| image(if undo { r.before } else { r.after }, &name))
                    .collect::<Result<Vec<_>>>()?;
                each(&name, schema, Op::Insert { rows })?;
            }
            // Rows to take out: the inserted ones undone, the deleted ones redone.
            (RowsKind::Insert, true) | (RowsKind::Delete, false) => {
                for r in rows {
                    let row = image(if undo { r.after } else { r.before }, &name)?;
                    each(&name, schema, Op::Delete { row })?;
                }
            }
            (RowsKind::Update, _) => {
                for r in rows {
                    let old = image(r.before, &name)?;
                    let new = image(r.after, &name)?;
                    let (before, after) = if undo { (old, new) } else { (new, old) };
                    each(&name, schema, Op::Update { before, after })?;
                }
            }
        }
    }
    Ok(())
}
