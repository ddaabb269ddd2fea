//! `myvault binlog search --table DB.T [--from T] [--to T] [--gtid SET]`: the archived
//! transactions that touched a table, with their GTID, commit time, kind of change and rows
//! per table. Fast: a transaction is judged by its table maps (names only) and its
//! statements; rows are decoded only to count them, and only in transactions that touch
//! the table. Memory stays bounded: one transaction's state at a time, each found one
//! handed to the caller as soon as it ends.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::binlog::event::{GtidInfo, types};
use crate::binlog::rows::tx_events::{TxHandler, TxSink};
use crate::binlog::rows::{RowsEvent, RowsKind, TableMap};
use crate::binlog::walk::{ReplayFile, ReplayProgress, StopAt, Walk, WalkError};
use crate::error::{Error, Result};
use crate::mysql::gtid::GtidSet;
use crate::repo::Repo;

/// `db.table`, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct TableName {
    pub db: String,
    pub table: String,
}

impl TableName {
    pub fn parse(s: &str) -> Result<TableName> {
        match s.split_once('.') {
            Some((db, table)) if !db.is_empty() && !table.is_empty() && !table.contains('.') => {
                Ok(TableName {
                    db: db.trim_matches('`').to_string(),
                    table: table.trim_matches('`').to_string(),
                })
            }
            _ => Err(Error::Usage(format!(
                "'{s}' is not a table name of the form DB.TABLE"
            ))),
        }
    }

    pub fn is(&self, db: &str, table: &str) -> bool {
        self.db == db && self.table == table
    }

    /// Whether a statement (run with default schema `default_db`) names this table: the
    /// table's name as a word, and its schema either named or the default.
    pub fn named_by(&self, default_db: &str, sql: &str) -> bool {
        let lower = sql.to_lowercase();
        let word = |w: &str| {
            let w = w.to_lowercase();
            lower.match_indices(&w).any(|(i, _)| {
                let ident = |c: char| c.is_alphanumeric() || c == '_' || c == '$';
                let before = lower[..i].chars().next_back().is_none_or(|c| !ident(c));
                let after = lower[i + w.len()..]
                    .chars()
                    .next()
                    .is_none_or(|c| !ident(c));
                before && after
            })
        };
        word(&self.table) && (default_db == self.db || word(&self.db))
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.db, self.table)
    }
}

/// What selects transactions: commit time bounds and a GTID set, each optional.
#[derive(Debug, Clone, Default)]
pub struct Window {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub gtids: Option<GtidSet>,
}

impl Window {
    pub(crate) fn selects(&self, info: &GtidInfo) -> bool {
        let t = i64::try_from(info.immediate_commit_us).unwrap_or(i64::MAX);
        self.from.is_none_or(|f| t >= f.timestamp_micros())
            && self.to.is_none_or(|to| t <= to.timestamp_micros())
            && self
                .gtids
                .as_ref()
                .is_none_or(|set| info.gtid.as_ref().is_some_and(|g| set.contains(g)))
    }
}

/// The archived files that may hold transactions of the window, oldest first: files of
/// every server the archive has (after a failover, the same transactions appear under two
/// servers; the walk hands each GTID over once).
pub(crate) fn archive_files(repo: &Arc<Repo>, window: &Window) -> Result<Vec<ReplayFile>> {
    let mut segments = super::binlog_files::newest_segments(repo)?;
    let from = window.from.map(|t| t.timestamp_micros());
    let to = window.to.map(|t| t.timestamp_micros());
    segments.retain(|s| {
        let last = s
            .last_commit_us
            .or(s.last_event_time.map(|t| t.timestamp_micros()));
        let first = s
            .first_commit_us
            .or(s.first_event_time.map(|t| t.timestamp_micros() - 1_000_000));
        let ends_before = matches!((from, last), (Some(f), Some(l)) if s.sealed && l < f);
        let starts_after = matches!((to, first), (Some(t), Some(f)) if f > t);
        !ends_before && !starts_after
    });
    segments.sort_by_key(|s| {
        (
            s.first_event_time,
            crate::binlog::file_sequence(&s.file).unwrap_or(0),
        )
    });
    Ok(segments
        .into_iter()
        .map(|segment| ReplayFile {
            repo: repo.clone(),
            segment,
        })
        .collect())
}

/// Walks `files` handing every transaction to `handler`.
pub(crate) fn walk(files: &[ReplayFile], handler: &mut dyn TxHandler) -> Result<()> {
    let cancel = AtomicBool::new(false);
    let progress = ReplayProgress::default();
    let walk = Walk {
        files,
        stop_at: &StopAt::End,
        cancel: &cancel,
        progress: &progress,
    };
    let mut sink = TxSink::new(handler);
    match walk.run(&GtidSet::default(), &mut sink, &mut |_| {}) {
        Ok(_) => Ok(()),
        Err(WalkError::Archive { segment, error }) => {
            Err(Error::Repo(error).during(format!("reading archived binlog {segment}")))
        }
        Err(WalkError::Other(m)) => Err(Error::DamagedFile(format!(
            "reading the binlog archive: {m}"
        ))),
    }
}

/// Rows a transaction changed in one table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableRows {
    pub table: String,
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
    /// False when some of the table's rows could not be counted (partial JSON updates, or
    /// more row data ahead of the searched table than is held to count later).
    pub counted: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct FoundTransaction {
    pub gtid: Option<String>,
    pub commit_time: Option<DateTime<Utc>>,
    /// Where its GTID event is: `binlog.000012:4567`.
    pub position: String,
    /// INSERT, UPDATE, DELETE (row changes) or DDL and statement words (CREATE, ALTER...)
    /// for the statements that name the table.
    pub kinds: Vec<String>,
    pub tables: Vec<TableRows>,
    /// The first statement naming the table (DDL), shortened.
    pub statement: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SearchSummary {
    pub table: String,
    pub files: usize,
    pub transactions_read: u64,
    pub transactions_found: u64,
}

/// Row data of other tables held until the transaction is known to touch the table.
const STASH_MAX: usize = 4 << 20;

struct Current {
    found: FoundTransaction,
    matched: bool,
    maps: HashMap<u64, TableMap>,
    counts: BTreeMap<String, TableRows>,
    kinds: BTreeSet<String>,
    stash: Vec<(u8, Vec<u8>)>,
    stash_bytes: usize,
}

struct Search<'a> {
    table: &'a TableName,
    window: &'a Window,
    on_found: &'a mut dyn FnMut(&FoundTransaction) -> Result<()>,
    current: Option<Current>,
    read: u64,
    found: u64,
}

fn io_err(e: impl ToString) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

pub(crate) fn kind_word(kind: RowsKind) -> &'static str {
    match kind {
        RowsKind::Insert => "INSERT",
        RowsKind::Update => "UPDATE",
        RowsKind::Delete => "DELETE",
    }
}

impl Current {
    fn count(&mut self, type_code: u8, body: &[u8]) -> std::io::Result<bool> {
        let ev = RowsEvent::parse(type_code, body).map_err(io_err)?;
        let Some(map) = self.maps.get(&ev.table_id) else {
            return Err(io_err(format!(
                "a rows event for table id {} without its table map",
                ev.table_id
            )));
        };
        let name = map.name();
        let entry = self.counts.entry(name.clone()).or_insert(TableRows {
            table: name,
            counted: true,
            ..TableRows::default()
        });
        if ev.partial_json {
            entry.counted = false;
            return Ok(true);
        }
        let n = ev
            .rows(map)
            .map_err(io_err)?
            .try_fold(0u64, |n, r| r.map(|_| n + 1).map_err(io_err))?;
        match ev.kind {
            RowsKind::Insert => entry.inserted += n,
            RowsKind::Update => entry.updated += n,
            RowsKind::Delete => entry.deleted += n,
        }
        Ok(true)
    }
}

impl TxHandler for Search<'_> {
    fn begin(&mut self, info: &GtidInfo, file: &str, pos: u64) -> std::io::Result<()> {
        self.read += 1;
        self.current = self.window.selects(info).then(|| Current {
            found: FoundTransaction {
                gtid: info.gtid.as_ref().map(|g| g.to_string()),
                commit_time: DateTime::from_timestamp_micros(
                    i64::try_from(info.immediate_commit_us).unwrap_or(0),
                )
                .filter(|_| info.immediate_commit_us > 0),
                position: format!("{file}:{pos}"),
                kinds: Vec::new(),
                tables: Vec::new(),
                statement: None,
            },
            matched: false,
            maps: HashMap::new(),
            counts: BTreeMap::new(),
            kinds: BTreeSet::new(),
            stash: Vec::new(),
            stash_bytes: 0,
        });
        Ok(())
    }

    fn statement(&mut self, db: &str, sql: &str) -> std::io::Result<()> {
        let Some(cur) = self.current.as_mut() else {
            return Ok(());
        };
        if self.table.named_by(db, sql) {
            cur.matched = true;
            let word = sql
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            if !matches!(word.as_str(), "INSERT" | "UPDATE" | "DELETE" | "REPLACE") {
                cur.kinds.insert("DDL".into());
            }
            cur.kinds.insert(word);
            if cur.found.statement.is_none() {
                cur.found.statement = Some(sql.chars().take(200).collect());
            }
        }
        Ok(())
    }

    fn row_event(&mut self, type_code: u8, body: &[u8]) -> std::io::Result<()> {
        let Some(cur) = self.current.as_mut() else {
            return Ok(());
        };
        if type_code == types::TABLE_MAP {
            let map = TableMap::parse(body).map_err(io_err)?;
            if self.table.is(&map.schema, &map.table) {
                cur.matched = true;
            }
            cur.maps.insert(map.table_id, map);
            return Ok(());
        }
        let Some(kind) = RowsKind::of(type_code) else {
            return Ok(());
        };
        let id = RowsEvent::table_id_of(body).map_err(io_err)?;
        let ours = cur
            .maps
            .get(&id)
            .is_some_and(|m| self.table.is(&m.schema, &m.table));
        if ours {
            cur.kinds.insert(kind_word(kind).into());
        }
        // Once the transaction is known to touch the table, other tables' rows are counted
        // as they come.
        if ours || cur.matched {
            cur.count(type_code, body)?;
        } else if cur.stash_bytes + body.len() <= STASH_MAX {
            cur.stash_bytes += body.len();
            cur.stash.push((type_code, body.to_vec()));
        } else if let Some(m) = cur.maps.get(&id) {
            let name = m.name();
            cur.counts
                .entry(name.clone())
                .or_insert(TableRows {
                    table: name,
                    ..TableRows::default()
                })
                .counted = false;
        }
        Ok(())
    }

    fn end(&mut self, committed: bool) -> std::io::Result<()> {
        let Some(mut cur) = self.current.take() else {
            return Ok(());
        };
        if !committed || !cur.matched {
            return Ok(());
        }
        for (t, body) in std::mem::take(&mut cur.stash) {
            cur.count(t, &body)?;
        }
        cur.found.kinds = cur.kinds.into_iter().collect();
        cur.found.tables = cur.counts.into_values().collect();
        self.found += 1;
        (self.on_found)(&cur.found).map_err(io_err)
    }
}

/// Lists the transactions of `window` that touched `table`, each to `on_found` as it is
/// found.
pub fn search(
    repo: &Arc<Repo>,
    table: &TableName,
    window: &Window,
    on_found: &mut dyn FnMut(&FoundTransaction) -> Result<()>,
) -> Result<SearchSummary> {
    let files = archive_files(repo, window)?;
    let mut s = Search {
        table,
        window,
        on_found,
        current: None,
        read: 0,
        found: 0,
    };
    walk(&files, &mut s)?;
    Ok(SearchSummary {
        table: table.to_string(),
        files: files.len(),
        transactions_read: s.read,
        transactions_found: s.found,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_name_a_table_by_word_and_schema() {
        let t = TableName::parse("shop.orders").unwrap();
        assert!(t.named_by("shop", "DROP TABLE orders"));
        assert!(t.named_by("", "ALTER TABLE `shop`.`orders` ADD c INT"));
        assert!(!t.named_by("shop", "DROP TABLE orders_old"));
        assert!(!t.named_by("other", "DROP TABLE orders"));
        assert!(TableName::parse("nodot").is_err());
        assert!(TableName::parse("a.b.c").is_err());
    }
}
