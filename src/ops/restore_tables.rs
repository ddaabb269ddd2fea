//! `myvault restore --tables DB.T[,..] (--to-time T | --to-gtid S | --before-gtid S)`:
//! some tables, to a point in time, restored beside the live data of a running server
//! (`--into-database`, `--rename`), touching nothing else on it.
//!
//! - A logical snapshot: only those tables' definitions and chunks are loaded, under their
//!   destinations' names, then only their changes are replayed, in one session of the target
//!   (the SQL engine, filtered by table; see `restore::pitr::table_ddl`).
//! - A clone or cold snapshot: it is brought up on a temporary server of its own, replayed
//!   there (the applier with replication filters on its channel, or the filtered SQL engine),
//!   and the tables are copied to the target (`restore::table_copy`).
//!
//! GTIDs: nothing of this reaches the target's binary log (`sql_log_bin = 0`) and no
//! transaction takes the source's GTIDs, so the target's `gtid_executed` stays its own and
//! its replicas see nothing of the restore: the restored tables exist on the target only.
//! The applier engine would record the source's GTIDs as executed (or, on the server the
//! snapshot came from, skip every transaction as already executed), so it only ever runs on
//! the temporary server of a clone or cold snapshot.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::binlog::walk::StopAt;
use crate::error::{Error, Result};
use crate::mysql::session::Session;
use crate::mysql::wire::ConnectOptions;
use crate::repo::Repo;
use crate::repo::lock::{LockGuard, LockKind};
use crate::repo::manifest::SnapshotManifest;
use crate::restore::logical::{self, LoadOptions, LoadProgress, tables};
use crate::restore::pitr::archive_check::CheckReport;
use crate::restore::pitr::plan::{self, Kind, PitrPlan, Target};
use crate::restore::pitr::replay::{self, Engine};
use crate::restore::pitr::sql_replay;
use crate::restore::pitr::table_ddl::{DdlNote, Name, Selection, qualified};
use crate::restore::table_copy::{self, CopyReport};
use crate::server::Mysqld;
use crate::snapshot::clone::temporary_server;

pub struct TablesRequest<'a> {
    pub boundary: &'a Target,
    /// A snapshot id, or `None` for the newest logical one before the boundary (the newest
    /// clone or cold one when no logical one fits and `mysqld` is given).
    pub snapshot: Option<&'a str>,
    /// Source name (as at the snapshot) -> destination.
    pub tables: &'a BTreeMap<Name, Name>,
    pub replace_existing: bool,
    pub load: &'a LoadOptions,
    /// `None`: the SQL engine for a logical snapshot, the applier for the others.
    pub engine: Option<Engine<'a>>,
    /// A server of the snapshot's version, for clone and cold snapshots.
    pub mysqld: Option<&'a Path>,
    /// Where a clone or cold snapshot's temporary data directory goes (default: the system's
    /// temporary directory).
    pub scratch: Option<&'a Path>,
    pub check_archive: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableDest {
    pub source: String,
    pub destination: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TablesPlan {
    #[serde(flatten)]
    pub pitr: PitrPlan,
    pub method: String,
    /// How the tables get their changes: `sql` (filtered, into the target) or `applier`
    /// (filtered channel, on the temporary server).
    pub engine: String,
    pub tables: Vec<TableDest>,
    /// Transactions of the window that touch the tables (in part, for those that touch
    /// others too), and those left out.
    pub transactions_touching: u64,
    pub transactions_left_out: u64,
    /// DDL on the tables inside the window, and statements about them left out.
    pub ddl: Vec<DdlNote>,
    /// Foreign keys to tables not restored (left out of the definitions), and the like.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TablesReport {
    pub plan: TablesPlan,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_check: Option<CheckReport>,
    /// A logical snapshot's load of the tables.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load: Option<tables::TablesLoadReport>,
    /// A clone or cold snapshot's tables, copied from the temporary server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy: Option<CopyReport>,
    pub replay_seconds: f64,
    pub seconds: f64,
    pub warnings: Vec<String>,
}

/// The plan's snapshot and boundary, which every plan has.
fn snapshot_and_stop(pitr: &PitrPlan) -> Result<(SnapshotManifest, StopAt)> {
    let snap = pitr
        .snapshot_manifest
        .clone()
        .ok_or_else(|| Error::Internal("plan without snapshot".into()))?;
    let stop = pitr
        .stop
        .clone()
        .ok_or_else(|| Error::Internal("plan without boundary".into()))?;
    Ok((snap, stop))
}

fn names(map: &BTreeMap<Name, Name>) -> Vec<TableDest> {
    map.iter()
        .map(|(s, d)| TableDest {
            source: qualified(s),
            destination: qualified(d),
        })
        .collect()
}

/// Which engine replays, given the snapshot's method and the operator's choice.
fn engine_for<'a>(method: &str, asked: Option<Engine<'a>>, sel: &Selection) -> Result<Engine<'a>> {
    if method == "logical" {
        return match asked {
            Some(Engine::Applier { .. }) => Err(Error::Usage(
                "--engine applier does not go with --tables from a logical snapshot: the target's \
                 applier would record the source's GTIDs as its own executed transactions (and on \
                 the server the snapshot came from skip them all as done); the default, --engine \
                 sql, replays the tables' changes without GTIDs"
                    .into(),
            )),
            _ => Ok(Engine::Sql),
        };
    }
    match asked {
        Some(Engine::Applier { .. }) if sel.renamed => Err(Error::Usage(
            "a restored table is renamed inside the window, which the applier's replication \
             filters cannot follow: use --engine sql"
                .into(),
        )),
        Some(e) => Ok(e),
        None if sel.renamed => Ok(Engine::Sql),
        None => Ok(Engine::Applier { listen: None }),
    }
}

/// Plans the restore without touching any server: the snapshot, the boundary, and a dry run
/// of the replay through the table filter, which counts the transactions and meets every
/// statement about the tables (one it cannot replay fails the plan).
pub fn plan(repo: &Arc<Repo>, req: &TablesRequest<'_>) -> Result<(TablesPlan, Selection)> {
    // By default a logical snapshot: it needs no temporary server. A clone or cold one when
    // none fits and there is a server binary to bring it up with.
    let pitr = match req.snapshot {
        Some(_) => plan::plan(repo, req.boundary, req.snapshot, Kind::Any)?,
        None => match plan::plan(repo, req.boundary, None, Kind::Logical) {
            Ok(p) => p,
            Err(e) if req.mysqld.is_some() => {
                plan::plan(repo, req.boundary, None, Kind::Physical).map_err(|_| e)?
            }
            Err(e) => return Err(e),
        },
    };
    let (snap, stop) = snapshot_and_stop(&pitr)?;
    let mut sel = Selection::new(req.tables.clone());
    sql_replay::dry_run_tables(&pitr.replay_files(), &stop, &pitr.snapshot_set, &mut sel)?;
    let mut warnings = Vec::new();
    if snap.method == "logical" {
        let meta = logical::read_meta(repo, &snap)?;
        warnings.extend(tables::select(&meta, &snap.id, req.tables)?.warnings);
    } else {
        warnings.push(
            "foreign keys to tables not restored are found once the snapshot is up on its \
             temporary server (they are left out of the copies and reported)"
                .into(),
        );
    }
    let engine = engine_for(&snap.method, req.engine, &sel)?;
    Ok((
        TablesPlan {
            method: snap.method.clone(),
            engine: match engine {
                Engine::Sql => "sql".into(),
                Engine::Applier { .. } => "applier".into(),
            },
            tables: names(req.tables),
            transactions_touching: sel.touched,
            transactions_left_out: sel.left_out,
            ddl: sel.notes.clone(),
            warnings,
            pitr,
        },
        sel,
    ))
}

/// A restored table dropped inside the window and not created again: there would be nothing
/// to restore; the DROP's transaction is what to restore to before.
fn refuse_dropped(sel: &Selection) -> Result<()> {
    let dropped = sel.dropped_destinations();
    let Some(first) = dropped.first() else {
        return Ok(());
    };
    let gtid = sel
        .notes
        .iter()
        .rev()
        .find(|n| n.note.ends_with("dropped"))
        .and_then(|n| n.gtid.clone())
        .unwrap_or_default();
    Err(Error::Usage(format!(
        "{} would not exist at the boundary: its table is dropped inside the window (transaction \
         {gtid}); restore to before the DROP with --before-gtid {gtid}",
        qualified(first)
    )))
}

/// Refuses destinations that exist, unless told to replace them: one line naming them.
fn check_destinations(target: &ConnectOptions, req: &TablesRequest<'_>) -> Result<()> {
    let mut s = Session::connect(target)?;
    if !s.info().is_mysql() {
        return Err(Error::Usage(
            "a single-table restore needs a MySQL target".into(),
        ));
    }
    let dests: Vec<Name> = req.tables.values().cloned().collect();
    let existing = tables::existing(&mut s, &dests)?;
    if !existing.is_empty() && !req.replace_existing {
        let list: Vec<String> = existing.iter().map(qualified).collect();
        return Err(Error::TableExists(format!(
            "{} already exist{} on the target; choose another name (--into-database, --rename) \
             or pass --replace-existing to drop and restore {}",
            list.join(", "),
            if list.len() == 1 { "s" } else { "" },
            if list.len() == 1 { "it" } else { "them" },
        )));
    }
    Ok(())
}

pub fn run(
    repo: &Arc<Repo>,
    req: &TablesRequest<'_>,
    target: &ConnectOptions,
    load_progress: &LoadProgress,
    check_progress: &dyn Fn(usize, usize, u64),
    replay_progress: replay::Progress<'_>,
) -> Result<TablesReport> {
    let started = Instant::now();
    let _lock = LockGuard::acquire(repo.storage().clone(), LockKind::Shared, "restore")?;
    let (plan, sel) = plan(repo, req)?;
    refuse_dropped(&sel)?;
    let pitr = &plan.pitr;
    let (snap, stop) = snapshot_and_stop(pitr)?;
    // Everything is checked before the target changes.
    let archive_check = super::pitr::check_archive(pitr, req.check_archive, check_progress)?;
    check_destinations(target, req)?;
    let mut warnings = plan.warnings.clone();
    let mut report = TablesReport {
        plan: plan.clone(),
        archive_check,
        load: None,
        copy: None,
        replay_seconds: 0.0,
        seconds: 0.0,
        warnings: Vec::new(),
    };
    if snap.method == "logical" {
        let meta = logical::read_meta(repo, &snap)?;
        let selected = tables::select(&meta, &snap.id, req.tables)?;
        let load = tables::load(repo, &snap, &selected.meta, target, req.load, load_progress)?;
        warnings.extend(load.warnings.iter().cloned());
        report.load = Some(load);
        let replay_started = Instant::now();
        replay_sql(target, pitr, &stop, req.tables.clone(), replay_progress)?;
        report.replay_seconds = replay_started.elapsed().as_secs_f64();
    } else {
        let mysqld = req.mysqld.ok_or_else(|| {
            Error::Usage(format!(
                "snapshot {} was taken with --method {}: a single-table restore brings it up on a \
                 temporary server, which needs --mysqld PATH (a server of the snapshot's version)",
                snap.id, snap.method
            ))
        })?;
        let engine = engine_for(&snap.method, req.engine, &sel)?;
        let copy = through_temporary_server(
            repo,
            req,
            &plan,
            mysqld,
            engine,
            target,
            replay_progress,
            &mut report,
        )?;
        warnings.extend(copy.warnings.iter().cloned());
        report.copy = Some(copy);
    }
    report.warnings = warnings;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The filtered SQL replay of the window into `server`: `tables` says where each restored
/// table's changes go.
fn replay_sql(
    server: &ConnectOptions,
    pitr: &PitrPlan,
    stop: &StopAt,
    tables: BTreeMap<Name, Name>,
    progress: replay::Progress<'_>,
) -> Result<()> {
    let mut sel = Selection::new(tables);
    let files = pitr.replay_files();
    sql_replay::replay_tables(server, &files, stop, &pitr.snapshot_set, &mut sel, progress)
        .map(drop)
}

/// `REPLICATE_DO_TABLE = (db.t, ...)`: the applier's channel applies those tables' changes
/// only (transactions without any become empty ones).
fn channel_filter(tables: &BTreeMap<Name, Name>) -> String {
    let list: Vec<String> = tables.keys().map(qualified).collect();
    format!("REPLICATE_DO_TABLE = ({})", list.join(", "))
}

#[allow(clippy::too_many_arguments)]
fn through_temporary_server(
    repo: &Arc<Repo>,
    req: &TablesRequest<'_>,
    plan: &TablesPlan,
    mysqld: &Path,
    engine: Engine<'_>,
    target: &ConnectOptions,
    replay_progress: replay::Progress<'_>,
    report: &mut TablesReport,
) -> Result<CopyReport> {
    let pitr = &plan.pitr;
    let (snap, stop) = snapshot_and_stop(pitr)?;
    let mysqld = Mysqld::detect(mysqld).map_err(|e| Error::Usage(format!("--mysqld: {e}")))?;
    let work = super::restore_test::work_dir(req.scratch, "myvault-tables");
    let datadir = work.join("data");
    crate::restore::datadir::restore(repo, &snap, &datadir, None, false)?;
    let server = temporary_server(&mysqld, &datadir, &[])?;
    let temp = server.root_options();
    let replay_started = Instant::now();
    let result = (|| -> Result<CopyReport> {
        match engine {
            Engine::Sql => {
                // On the temporary server the tables keep their names; the copy renames.
                let same: BTreeMap<Name, Name> =
                    req.tables.keys().map(|k| (k.clone(), k.clone())).collect();
                replay_sql(&temp, pitr, &stop, same, replay_progress)?;
            }
            Engine::Applier { .. } => {
                replay::run_filtered(
                    engine,
                    &temp,
                    pitr.replay_files(),
                    stop.clone(),
                    &pitr.end_set,
                    Some(&channel_filter(req.tables)),
                    replay_progress,
                )?;
            }
        }
        report.replay_seconds = replay_started.elapsed().as_secs_f64();
        table_copy::copy(&temp, target, req.tables, req.load.jobs)
    })();
    let log = server.config().error_log();
    let run_dir = server.config().rundir.clone();
    let shutdown = server.shutdown();
    let copy = result.map_err(|e| {
        e.with_note(&format!(
            "the temporary server's files are kept in {}; its log is {}",
            work.display(),
            log.display()
        ))
    })?;
    shutdown.map_err(|e| Error::Internal(format!("stopping the temporary server: {e}")))?;
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_dir_all(&run_dir);
    Ok(copy)
}
