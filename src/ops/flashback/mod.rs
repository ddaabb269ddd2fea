//! `myvault flashback`: undo chosen transactions on a live server by applying their inverse,
//! read from the archive. Plan: read the chosen transactions' rows events into a spill file
//! (refusing DDL, statement-based changes, partial images and partial JSON before anything
//! else), check the target has them and that its tables still look as they did, then apply
//! the inverse newest first, one target transaction per transaction undone, in a normal
//! session (so it gets its own GTID and replicas follow).
//!
//! Conflicts: each statement of the inverse matches its row by exactly the values the
//! undone transaction left, so a row changed since matches nothing (or, for a row to
//! insert back, its key is taken). `--force` skips conflicting rows and lists them.
//!
//! Resuming: before its undo is committed, each transaction is classified against the
//! target's rows (see [`classify`]): still as it left them → undo it; all as they were
//! before it (a run killed after undoing it, or changes that cancel out) → already undone,
//! skipped and reported so; anything else → someone else changed the rows: a conflict. So
//! the same command, run again after a kill, finishes the job without undoing anything
//! twice. With several transactions a first pass classifies them all in one transaction
//! that is rolled back (each against the state the newer ones' undo leaves), so nothing is
//! committed unless every one of them is either to undo or already undone.

mod classify;
pub mod collect;
pub mod invert;
pub mod schema;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use self::classify::{Rows, Verdict, classify};
use self::collect::{Collector, Selection, Spill, TxRecord};
use self::invert::{Direction, Op};
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

/// Where a transaction to undo stands against the target's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TxState {
    /// Its rows are as it left them: its undo applies.
    ToUndo,
    /// Its rows are as they were before it (undone by an earlier run, or its changes cancel
    /// out): nothing to do.
    AlreadyUndone,
}

#[derive(Debug, Clone, Serialize)]
pub struct InvertedTx {
    pub gtid: Option<String>,
    pub state: TxState,
    pub commit_time: Option<DateTime<Utc>>,
    pub position: String,
    pub tables: Vec<String>,
    pub rows: u64,
    /// Of `rows`, those left as they are because they changed since (`--force`).
    pub rows_skipped: u64,
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
    /// How many of `transactions` were found already undone (and skipped).
    pub already_undone: usize,
    /// The GTIDs the target gave the undoing transactions of this run.
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
            "{committed} transactions were undone before a row changed under the flashback \
             (a rerun finds them undone and skips them); the rest were not"
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

/// The GTID the target gave this session's last commit, from its own transaction event in
/// performance_schema; `None` where that is not recorded.
fn own_last_gtid(s: &mut Session) -> Option<GtidSet> {
    let rows = s
        .query(
            "SELECT GTID FROM performance_schema.events_transactions_current \
             WHERE THREAD_ID = PS_CURRENT_THREAD_ID() AND STATE = 'COMMITTED'",
        )
        .ok()?;
    let text = rows.first()?.text_at(0)?;
    GtidSet::parse(&text).ok().filter(|g| g.count() == 1)
}

/// Session settings the literals rely on: UTC for TIMESTAMP text, zero keys and dates
/// taken as they are (NO_AUTO_VALUE_ON_ZERO, no strict mode).
const SESSION: &str = "SET SESSION time_zone = '+00:00', \
    sql_mode = 'NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION', character_set_client = utf8mb4";

fn gtid_executed(s: &mut Session) -> Result<Option<GtidSet>> {
    Ok(s.global_var("gtid_executed")?
        .and_then(|g| GtidSet::parse(&g.replace('\n', "")).ok()))
}

/// `--plan`: the inverse of each transaction to undo, the others named as already undone
/// or in conflict.
fn print_plan(
    txs: &[TxRecord],
    spill: &Spill,
    schemas: &HashMap<String, TableSchema>,
    report: &mut FlashbackReport,
    on_sql: &mut dyn FnMut(&str),
) -> Result<()> {
    for (tx, t) in txs.iter().zip(&report.transactions) {
        let what = tx.describe();
        if t.state == TxState::AlreadyUndone {
            on_sql(&format!("-- already undone: {what} ({} rows)", tx.rows));
            continue;
        }
        on_sql(&format!("-- undo {what} ({} rows)", tx.rows));
        on_sql("BEGIN;");
        invert::for_each_op(tx, spill, schemas, Direction::Undo, &mut |_, t, op| {
            if let Some(sql) = op_sql(t, &op) {
                report.statements += 1;
                on_sql(&format!("{sql};"));
            }
            Ok(())
        })?;
        on_sql("COMMIT;");
    }
    for c in &report.skipped {
        on_sql(&format!("-- conflict: {} {}", c.row, c.reason));
    }
    Ok(())
}

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
                state: TxState::ToUndo,
                commit_time: DateTime::from_timestamp_micros(
                    i64::try_from(t.commit_us).unwrap_or(0),
                ),
                position: t.position.clone(),
                tables: t.tables().into_iter().collect(),
                rows: t.rows,
                rows_skipped: 0,
            })
            .collect(),
        rows: txs.iter().map(|t| t.rows).sum(),
        statements: 0,
        applied: false,
        skipped: Vec::new(),
        already_undone: 0,
        new_gtids: None,
        spill_bytes: spill.bytes(),
    };
    s.exec(SESSION)?;
    let rows = Rows {
        spill: &spill,
        schemas: &schemas,
    };
    if txs.len() > 1 || req.plan_only {
        // The check pass: every transaction classified, everything rolled back.
        let (states, conflicts) = classify::check(&mut s, &txs, &rows)?;
        for (t, state) in report.transactions.iter_mut().zip(states) {
            t.state = state;
        }
        if req.plan_only {
            report.skipped = conflicts;
            report.already_undone = count_undone(&report);
            print_plan(&txs, &spill, &schemas, &mut report, on_sql)?;
            return Ok(report);
        }
        if !conflicts.is_empty() && !req.force {
            return Err(conflict_error(&conflicts, 0));
        }
    }
    let before = gtid_executed(&mut s)?;
    let mut new = GtidSet::default();
    let mut exact = true;
    let mut done = 0;
    for (tx, t) in txs.iter().zip(report.transactions.iter_mut()) {
        if t.state == TxState::AlreadyUndone {
            continue;
        }
        s.exec("BEGIN")?;
        match classify(&mut s, tx, &rows, req.force)? {
            Verdict::Undo {
                statements,
                skipped,
            } => {
                report.statements += statements;
                t.rows_skipped = skipped.len() as u64;
                report.skipped.extend(skipped);
            }
            Verdict::AlreadyUndone => {
                s.exec("ROLLBACK")?;
                t.state = TxState::AlreadyUndone;
                continue;
            }
            Verdict::Conflict(conflicts) => {
                s.exec("ROLLBACK")?;
                return Err(conflict_error(&conflicts, done));
            }
        }
        crate::failpoint::hit("flashback-before-commit");
        s.exec("COMMIT")?;
        done += 1;
        match own_last_gtid(&mut s) {
            Some(g) => new = new.union(&g),
            None => exact = false,
        }
        crate::failpoint::hit("flashback-between-tx");
    }
    report.applied = true;
    report.already_undone = count_undone(&report);
    report.new_gtids = if exact {
        Some(new.to_string())
    } else {
        // No performance_schema: what gtid_executed gained, which under other writes
        // holds theirs too.
        match (before, gtid_executed(&mut s)?) {
            (Some(b), Some(a)) => Some(a.subtract(&b).to_string()),
            _ => None,
        }
    };
    Ok(report)
}

fn count_undone(report: &FlashbackReport) -> usize {
    report
        .transactions
        .iter()
        .filter(|t| t.state == TxState::AlreadyUndone)
        .count()
}
