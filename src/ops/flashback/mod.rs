//! `myvault flashback`: undo chosen transactions on a live server by applying their inverse,
//! read from the archive. Plan: read the chosen transactions' rows events into a spill file
//! (refusing DDL, statement-based changes, partial images and partial JSON before anything
//! else), check the target has them and that its tables still look as they did, then apply
//! the inverse newest first, one target transaction per transaction undone, in a normal
//! session (so it gets its own GTID and replicas follow).
//!
//! Conflicts: each statement of the inverse matches its row by exactly the values the
//! undone transaction left, so a row changed since matches nothing (or, for a row to
//! insert back, its key is taken). With one transaction to undo, that statement is the
//! check, and a conflict rolls everything back; with several, a first pass runs the whole
//! inverse in one transaction and rolls it back, so nothing is committed unless every row
//! is as expected. `--force` skips conflicting rows and lists them.

pub mod collect;
pub mod invert;
pub mod schema;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use self::collect::{Collector, Selection, Spill, TxRecord};
use self::invert::Op;
use self::schema::TableSchema;
use crate::error::{Error, Result};
use crate::mysql::gtid::GtidSet;
use crate::mysql::session::Session;
use crate::mysql::wire::ConnectOptions;
use crate::ops::binlog_search::{self, TableName, Window};
use crate::repo::Repo;

/// MySQL's ER_DUP_ENTRY: the row to insert back exists again.
const DUP_ENTRY: u16 = 1062;

pub struct FlashbackRequest<'a> {
    pub selection: &'a Selection,
    pub server: &'a ConnectOptions,
    /// Print the inverse, change nothing.
    pub plan_only: bool,
    /// Skip rows changed since (and list them) instead of stopping.
    pub force: bool,
    /// Where the spill file goes.
    pub work_dir: &'a Path,
}

#[derive(Debug, Clone, Serialize)]
pub struct InvertedTx {
    pub gtid: Option<String>,
    pub commit_time: Option<DateTime<Utc>>,
    pub position: String,
    pub tables: Vec<String>,
    pub rows: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Conflict {
    /// `db.t (id=5)`
    pub row: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FlashbackReport {
    /// Newest first, the order they are undone in.
    pub transactions: Vec<InvertedTx>,
    pub rows: u64,
    pub statements: u64,
    pub applied: bool,
    /// Rows left as they are (`--force`).
    pub skipped: Vec<Conflict>,
    /// The GTIDs the target gave the undoing transactions.
    pub new_gtids: Option<String>,
    pub spill_bytes: u64,
}

fn conflict_error(conflicts: &[Conflict], committed: usize) -> Error {
    let shown: Vec<String> = conflicts
        .iter()
        .take(10)
        .map(|c| format!("{} {}", c.row, c.reason))
        .collect();
    let more = conflicts.len().saturating_sub(10);
    let nothing = if committed == 0 {
        "nothing was changed".to_string()
    } else {
        format!(
            "{committed} transactions were undone before a row changed under the flashback; \
             the rest were not"
        )
    };
    Error::Conflict(format!(
        "{} rows changed since the transactions to undo: {}{} ({nothing}; --force skips \
         such rows)",
        conflicts.len(),
        shown.join("; "),
        if more > 0 {
            format!("; and {more} more")
        } else {
            String::new()
        }
    ))
}

/// Reads the chosen transactions out of the archive.
fn collect(repo: &Arc<Repo>, selection: &Selection, spill: &mut Spill) -> Result<Vec<TxRecord>> {
    let window = match selection {
        Selection::Gtids(set) => Window {
            gtids: Some(set.clone()),
            ..Window::default()
        },
        Selection::Window { window, .. } => window.clone(),
    };
    let mut files = binlog_search::archive_files(repo, &window)?;
    if let Selection::Gtids(set) = selection {
        // Only the files whose manifests say they hold some of the set.
        files.retain(|f| {
            GtidSet::parse(&f.segment.gtids).map_or(true, |g| !g.intersect(set).is_empty())
        });
    }
    let mut c = Collector::new(selection, spill);
    let walked = binlog_search::walk(&files, &mut c);
    if let Some(refusal) = c.refusal.take() {
        return Err(refusal);
    }
    walked?;
    if let Selection::Gtids(set) = selection {
        let missing = set.subtract(&c.found);
        if !missing.is_empty() {
            return Err(Error::NotFound(format!(
                "the archive has no transaction {missing}"
            )));
        }
    }
    if c.txs.is_empty() {
        return Err(Error::NotFound(match selection {
            Selection::Gtids(set) => format!("the transactions {set} changed no rows"),
            Selection::Window { tables, .. } => format!(
                "no archived transaction in the window changed {}",
                tables
                    .iter()
                    .map(TableName::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }));
    }
    Ok(std::mem::take(&mut c.txs))
}

/// The target must have run what is to be undone, and its tables must still take the rows.
fn prepare_target(s: &mut Session, txs: &mut [TxRecord]) -> Result<HashMap<String, TableSchema>> {
    let executed = s
        .global_var("gtid_executed")?
        .map(|g| g.replace('\n', ""))
        .unwrap_or_default();
    let executed =
        GtidSet::parse(&executed).map_err(|e| s.unexpected("@@gtid_executed", e.to_string()))?;
    let mut wanted = GtidSet::default();
    for g in txs.iter().filter_map(|t| t.gtid.as_ref()) {
        wanted.add(g);
    }
    let absent = wanted.subtract(&executed);
    if !absent.is_empty() {
        return Err(Error::TargetRefused(format!(
            "the target has not executed {absent}: it is not the server (or a replica of the \
             server) those transactions ran on"
        )));
    }
    let mut schemas: HashMap<String, TableSchema> = HashMap::new();
    for tx in txs.iter_mut() {
        for map in tx.maps.values_mut() {
            let name = map.name();
            if !schemas.contains_key(&name) {
                let schema = TableSchema::load(s, &map.schema, &map.table)?;
                schemas.insert(name.clone(), schema);
            }
            schemas[&name].reconcile(map)?;
        }
    }
    Ok(schemas)
}

/// The statements of one op, for `--plan`.
fn op_sql(t: &TableSchema, op: &Op) -> Option<String> {
    match op {
        Op::Insert { rows } => Some(invert::insert_sql(t, rows)),
        Op::Delete { row } => Some(invert::delete_sql(t, row)),
        Op::Update { before, after } => invert::update_sql(t, before, after),
    }
}

/// Runs one op on the target; the rows that did not match are returned.
fn apply_op(s: &mut Session, name: &str, t: &TableSchema, op: &Op) -> Result<Vec<Conflict>> {
    let conflict = |row: &[crate::binlog::rows::Value], reason: &str| Conflict {
        row: invert::row_name(name, t, row),
        reason: reason.into(),
    };
    match op {
        Op::Insert { rows } => {
            match s.exec(&invert::insert_sql(t, rows)) {
                Ok(_) => Ok(Vec::new()),
                Err(e) if e.server_code() == Some(DUP_ENTRY) => {
                    // The statement was rolled back whole: one row at a time finds which.
                    let mut out = Vec::new();
                    for r in rows {
                        match s.exec(&invert::insert_sql(t, std::slice::from_ref(r))) {
                            Ok(_) => {}
                            Err(e) if e.server_code() == Some(DUP_ENTRY) => {
                                out.push(conflict(r, "exists again (its key was inserted since)"))
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                    Ok(out)
                }
                Err(e) => Err(e.into()),
            }
        }
        Op::Delete { row } => {
            let ok = s.exec(&invert::delete_sql(t, row))?;
            Ok(if ok.affected_rows == 1 {
                Vec::new()
            } else {
                vec![conflict(row, "was changed or deleted since")]
            })
        }
        Op::Update { before, after } => {
            let Some(sql) = invert::update_sql(t, before, after) else {
                return Ok(Vec::new());
            };
            match s.exec(&sql) {
                Ok(ok) if rows_matched(&ok) == 1 => Ok(Vec::new()),
                Ok(_) => Ok(vec![conflict(after, "was changed or deleted since")]),
                Err(e) if e.server_code() == Some(DUP_ENTRY) => Ok(vec![conflict(
                    after,
                    "cannot take its old key back (another row has it now)",
                )]),
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// "Rows matched: 1  Changed: 1  Warnings: 0": matched, not changed, is what counts.
fn rows_matched(ok: &crate::mysql::wire::OkPacket) -> u64 {
    ok.info
        .split("Rows matched:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(ok.affected_rows)
}

/// Runs the inverse of `txs` (already newest first) in the current transaction.
fn run_inverse(
    s: &mut Session,
    tx: &TxRecord,
    spill: &Spill,
    schemas: &HashMap<String, TableSchema>,
    statements: &mut u64,
) -> Result<Vec<Conflict>> {
    let mut conflicts = Vec::new();
    invert::for_each_op(tx, spill, schemas, &mut |name, t, op| {
        *statements += 1;
        conflicts.extend(apply_op(s, name, t, &op)?);
        Ok(())
    })?;
    Ok(conflicts)
}

/// Session settings the literals rely on: UTC for TIMESTAMP text, zero keys and dates
/// taken as they are (NO_AUTO_VALUE_ON_ZERO, no strict mode).
const SESSION: &str = "SET SESSION time_zone = '+00:00', \
    sql_mode = 'NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION', character_set_client = utf8mb4";

pub fn run(
    repo: &Arc<Repo>,
    req: &FlashbackRequest<'_>,
    on_sql: &mut dyn FnMut(&str),
) -> Result<FlashbackReport> {
    let mut spill = Spill::create(req.work_dir)?;
    let mut txs = collect(repo, req.selection, &mut spill)?;
    txs.reverse();
    let mut s = Session::connect(req.server)?;
    let schemas = prepare_target(&mut s, &mut txs)?;
    let mut report = FlashbackReport {
        transactions: txs
            .iter()
            .map(|t| InvertedTx {
                gtid: t.gtid.as_ref().map(ToString::to_string),
                commit_time: DateTime::from_timestamp_micros(
                    i64::try_from(t.commit_us).unwrap_or(0),
                ),
                position: t.position.clone(),
                tables: t.tables().into_iter().collect(),
                rows: t.rows,
            })
            .collect(),
        rows: txs.iter().map(|t| t.rows).sum(),
        statements: 0,
        applied: false,
        skipped: Vec::new(),
        new_gtids: None,
        spill_bytes: spill.bytes(),
    };
    if req.plan_only {
        for tx in &txs {
            on_sql(&format!(
                "-- undo {} ({}, {} rows)",
                tx.gtid
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "anonymous transaction".into()),
                tx.position,
                tx.rows
            ));
            on_sql("BEGIN;");
            invert::for_each_op(tx, &spill, &schemas, &mut |_, t, op| {
                if let Some(sql) = op_sql(t, &op) {
                    report.statements += 1;
                    on_sql(&format!("{sql};"));
                }
                Ok(())
            })?;
            on_sql("COMMIT;");
        }
        return Ok(report);
    }
    s.exec(SESSION)?;
    let before = s.global_var("gtid_executed")?.unwrap_or_default();
    if txs.len() > 1 {
        // The check pass: everything in one transaction, always rolled back.
        s.exec("BEGIN")?;
        let mut conflicts = Vec::new();
        let mut n = 0;
        for tx in &txs {
            conflicts.extend(run_inverse(&mut s, tx, &spill, &schemas, &mut n)?);
        }
        s.exec("ROLLBACK")?;
        if !conflicts.is_empty() && !req.force {
            return Err(conflict_error(&conflicts, 0));
        }
    }
    for (done, tx) in txs.iter().enumerate() {
        s.exec("BEGIN")?;
        let conflicts = run_inverse(&mut s, tx, &spill, &schemas, &mut report.statements)?;
        if !conflicts.is_empty() && !req.force {
            s.exec("ROLLBACK")?;
            return Err(conflict_error(&conflicts, done));
        }
        crate::failpoint::hit("flashback-before-commit");
        s.exec("COMMIT")?;
        report.skipped.extend(conflicts);
    }
    report.applied = true;
    let after = s.global_var("gtid_executed")?.unwrap_or_default();
    if let (Ok(b), Ok(a)) = (
        GtidSet::parse(&before.replace('\n', "")),
        GtidSet::parse(&after.replace('\n', "")),
    ) {
        report.new_gtids = Some(a.subtract(&b).to_string());
    }
    Ok(report)
}
