//! Where each transaction to undo stands against the target's rows, found by trying
//! statements inside a transaction and rolling them back to a savepoint: its undo applies
//! cleanly only to rows as it left them, the transaction itself (redone) only to rows as
//! they were before it. A run killed after undoing the newest `k` transactions leaves the
//! rows as they were before the `k`-th newest; [`check`] finds that `k`.

use std::collections::{HashMap, HashSet};

use super::collect::{Spill, TxRecord};
use super::invert::{self, Direction, Op};
use super::schema::TableSchema;
use super::{Conflict, TxState, apply_op};
use crate::binlog::rows::Value;
use crate::error::{Error, Result};
use crate::mysql::session::Session;

/// Where the transactions' rows are read from and the target tables they go to.
pub(super) struct Rows<'a> {
    pub spill: &'a Spill,
    pub schemas: &'a HashMap<String, TableSchema>,
}

/// What running one transaction's statements found.
struct Walk {
    conflicts: Vec<Conflict>,
    statements: u64,
    /// Two statements may touch one row, or one changes nothing: a clean run does not prove
    /// the rows were as the transaction left them rather than as before it.
    inconclusive: bool,
}

/// Runs the statements of `tx` walked in `direction` in the current transaction.
fn walk(s: &mut Session, tx: &TxRecord, rows: &Rows<'_>, direction: Direction) -> Result<Walk> {
    let mut w = Walk {
        conflicts: Vec::new(),
        statements: 0,
        inconclusive: false,
    };
    let mut seen = HashSet::new();
    invert::for_each_op(
        tx,
        rows.spill,
        rows.schemas,
        direction,
        &mut |name, t, op| {
            w.statements += 1;
            let rows: Vec<&[Value]> = match &op {
                Op::Insert { rows } => rows.iter().map(Vec::as_slice).collect(),
                Op::Delete { row } => vec![row],
                Op::Update { before, after } => {
                    w.inconclusive |= invert::update_sql(t, before, after).is_none();
                    vec![before, after]
                }
            };
            let mut own = HashSet::new();
            for r in rows {
                let f = invert::row_fingerprint(name, t, r);
                // An update that keeps its key names the row twice: that is one row.
                if own.insert(f) && !seen.insert(f) {
                    w.inconclusive = true;
                }
            }
            w.conflicts.extend(apply_op(s, name, t, &op)?);
            Ok(())
        },
    )?;
    Ok(w)
}

/// Where `tx` stands against the rows now (inside the current transaction).
pub(super) enum Verdict {
    /// Its undo is applied, uncommitted; `skipped` lists the rows `--force` left alone.
    Undo {
        statements: u64,
        skipped: Vec<Conflict>,
    },
    AlreadyUndone,
    /// Neither: rows changed since (the undo's conflicts name them).
    Conflict(Vec<Conflict>),
}

/// Classifies `tx`: its undo is tried first; when that is clean and conclusive, the rows
/// were as the transaction left them. Otherwise the transaction itself is tried too (both
/// rolled back to a savepoint): clean means the rows are as they were before it, i.e.
/// already undone. Clean both ways means every row it touched is the same either way
/// (changes that cancel out), except in a table without a primary key, where putting a
/// row back can never fail and so proves nothing: then nobody can tell, and it is refused.
/// With `force`, a conflict applies the undo of the rows that still match.
pub(super) fn classify(
    s: &mut Session,
    tx: &TxRecord,
    rows: &Rows<'_>,
    force: bool,
) -> Result<Verdict> {
    s.exec("SAVEPOINT myvault_flashback")?;
    let undo = walk(s, tx, rows, Direction::Undo)?;
    let keyless: Vec<String> = tx
        .tables()
        .into_iter()
        .filter(|n| rows.schemas.get(n).is_some_and(|t| t.key.is_empty()))
        .collect();
    let undo_clean = undo.conflicts.is_empty();
    if undo_clean && !undo.inconclusive && keyless.is_empty() {
        return Ok(Verdict::Undo {
            statements: undo.statements,
            skipped: Vec::new(),
        });
    }
    s.exec("ROLLBACK TO SAVEPOINT myvault_flashback")?;
    let redo = walk(s, tx, rows, Direction::Redo)?;
    s.exec("ROLLBACK TO SAVEPOINT myvault_flashback")?;
    let redo_clean = redo.conflicts.is_empty();
    if redo_clean && !undo_clean {
        return Ok(Verdict::AlreadyUndone);
    }
    if redo_clean && undo_clean {
        if keyless.is_empty() {
            return Ok(Verdict::AlreadyUndone);
        }
        return Err(Error::Conflict(format!(
            "{}: {} has no primary key, and its rows fit both the state the transaction \
             left and the one before it, so there is no telling whether it was undone \
             already (nothing was changed; undo it by hand, or add a primary key)",
            tx.describe(),
            keyless.join(", ")
        )));
    }
    if !undo_clean && !force {
        return Ok(Verdict::Conflict(undo.conflicts));
    }
    // The undo applies (the redo did not, and the clean undo was only inconclusive), or
    // --force takes the rows that still match.
    let again = walk(s, tx, rows, Direction::Undo)?;
    Ok(Verdict::Undo {
        statements: again.statements,
        skipped: again.conflicts,
    })
}

/// The check pass of several transactions (newest first), in one transaction rolled back:
/// the state of each and the rows in conflict. First as if none was undone yet; when rows
/// do not fit that, as if a killed run had undone the newest `k`: those `k` redone, oldest
/// first, must apply cleanly (which puts the rows back as the transactions left them), and
/// then the undo of all of them. The first `k` that fits wins; if none does, the one with
/// the fewest rows in conflict is reported (and, with `--force`, applied).
pub(super) fn check(
    s: &mut Session,
    txs: &[TxRecord],
    rows: &Rows<'_>,
) -> Result<(Vec<TxState>, Vec<Conflict>)> {
    s.exec("BEGIN")?;
    let found = find_undone(s, txs, rows);
    // On an error the session may be gone; the server rolls back then.
    let _ = s.exec("ROLLBACK");
    found
}

fn find_undone(
    s: &mut Session,
    txs: &[TxRecord],
    rows: &Rows<'_>,
) -> Result<(Vec<TxState>, Vec<Conflict>)> {
    s.exec("SAVEPOINT myvault_check")?;
    let mut best = undo_all(s, txs, 0, rows)?;
    // Candidates for the oldest transaction undone, oldest first: one whose redo applies to
    // the rows as they are now.
    for k in (1..=txs.len()).rev() {
        if best.1.is_empty() {
            break;
        }
        s.exec("ROLLBACK TO SAVEPOINT myvault_check")?;
        let clean = walk(s, &txs[k - 1], rows, Direction::Redo)?
            .conflicts
            .is_empty();
        if !clean {
            continue;
        }
        let mut redone = true;
        for tx in txs[..k - 1].iter().rev() {
            if !walk(s, tx, rows, Direction::Redo)?.conflicts.is_empty() {
                redone = false;
                break;
            }
        }
        if !redone {
            continue;
        }
        let fit = undo_all(s, txs, k, rows)?;
        if fit.1.len() < best.1.len() {
            best = fit;
        }
    }
    Ok(best)
}

/// Undoes `txs` (newest first) in the current transaction, the newest `undone` of them
/// counted as undone by an earlier run (the rows were redone to as they left them). A
/// transaction in conflict has its matching rows undone, so the older ones are checked
/// against the state they would meet.
fn undo_all(
    s: &mut Session,
    txs: &[TxRecord],
    undone: usize,
    rows: &Rows<'_>,
) -> Result<(Vec<TxState>, Vec<Conflict>)> {
    let mut states = Vec::with_capacity(txs.len());
    let mut conflicts = Vec::new();
    for (i, tx) in txs.iter().enumerate() {
        if i < undone {
            conflicts.extend(walk(s, tx, rows, Direction::Undo)?.conflicts);
            states.push(TxState::AlreadyUndone);
            continue;
        }
        states.push(match classify(s, tx, rows, true)? {
            Verdict::AlreadyUndone => TxState::AlreadyUndone,
            Verdict::Undo { skipped, .. } => {
                conflicts.extend(skipped);
                TxState::ToUndo
            }
            Verdict::Conflict(c) => {
                conflicts.extend(c);
                TxState::ToUndo
            }
        });
    }
    Ok((states, conflicts))
}
