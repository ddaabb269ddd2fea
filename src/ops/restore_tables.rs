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
//! Either way the tables are built in a staging database of the restore's own and moved to
//! their destinations at the end by one atomic `RENAME TABLE` (`restore::table_staging`): a
//! restore killed at any point and run again finishes without `--replace-existing` and leaves
//! nothing behind; so does the temporary server's directory, named after the restore too.
//!
//! Binary log and GTIDs: by default the restore is written to the target's binary log like
//! any other write, under the target's own new GTIDs (never the source's), so the target's
//! replicas get the restored tables and nothing else, and a failover keeps them. With
//! `--no-binlog` nothing of it reaches the binary log (`sql_log_bin = 0`, which needs
//! SESSION_VARIABLES_ADMIN or SYSTEM_VARIABLES_ADMIN): the tables then exist on the target
//! only. The applier engine would record the source's GTIDs as executed (or, on the server
//! the snapshot came from, skip every transaction as already executed), so it only ever runs
//! on the temporary server of a clone or cold snapshot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::binlog::walk::StopAt;
use crate::error::{Error, Result};
use crate::mysql::session::{Session, quote_ident};
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
use crate::restore::table_staging::{Found, Staging};
use crate::restore::{table_staging, table_transport};
use crate::server::Mysqld;
use crate::snapshot::clone::temporary_server;

/// How a clone or cold snapshot's tables go from the temporary server to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMethod {
    /// Transport where both sides allow it, otherwise the logical copy.
    Auto,
    /// Tablespace files (`restore::table_transport`); refused where not allowed.
    Transport,
    /// Rows streamed through `LOAD DATA` (`restore::table_copy`).
    Logical,
}

impl CopyMethod {
    pub fn parse(text: &str) -> Result<CopyMethod> {
        match text {
            "auto" => Ok(CopyMethod::Auto),
            "transport" => Ok(CopyMethod::Transport),
            "logical" => Ok(CopyMethod::Logical),
            other => Err(Error::Usage(format!(
                "--copy-method: `{other}` is not auto, transport or logical"
            ))),
        }
    }
}

pub struct TablesRequest<'a> {
    pub boundary: &'a Target,
    /// A snapshot id, or `None` for the newest logical one before the boundary (the newest
    /// clone or cold one when no logical one fits and `mysqld` is given).
    pub snapshot: Option<&'a str>,
    /// Source name (as at the snapshot) -> destination.
    pub tables: &'a BTreeMap<Name, Name>,
    pub replace_existing: bool,
    /// Write the restore to the target's binary log (the default; `--no-binlog` clears it).
    pub binlog: bool,
    pub load: &'a LoadOptions,
    /// `None`: the SQL engine for a logical snapshot, the applier for the others.
    pub engine: Option<Engine<'a>>,
    /// A server of the snapshot's version, for clone and cold snapshots.
    pub mysqld: Option<&'a Path>,
    /// Where a clone or cold snapshot's temporary data directory goes (default: the system's
    /// temporary directory).
    pub scratch: Option<&'a Path>,
    /// How a clone or cold snapshot's tables reach the target.
    pub copy_method: CopyMethod,
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
    /// Whether the target's binary log (and so its replicas) gets the restored tables.
    pub binlog: bool,
    /// A clone or cold snapshot's way to the target: `auto` (transport where both servers
    /// allow it, decided once the temporary server is up), `transport` or `logical`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy_method: Option<String>,
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
    /// How a clone or cold snapshot's tables reached the target (`transport` or `logical`),
    /// and why that one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy_method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy_method_why: Option<String>,
    /// The database the tables were built in (dropped at the end).
    pub staging_database: String,
    /// What an interrupted earlier run of this restore had left and what became of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub earlier_run: Option<String>,
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
    if snap.method == "logical" && req.copy_method == CopyMethod::Transport {
        return Err(Error::Usage(
            "--copy-method transport goes with a clone or cold snapshot (a logical one is \
             loaded into the target directly)"
                .into(),
        ));
    }
    Ok((
        TablesPlan {
            method: snap.method.clone(),
            engine: match engine {
                Engine::Sql => "sql".into(),
                Engine::Applier { .. } => "applier".into(),
            },
            binlog: req.binlog,
            copy_method: (snap.method != "logical").then(|| {
                match req.copy_method {
                    CopyMethod::Auto => "auto",
                    CopyMethod::Transport => "transport",
                    CopyMethod::Logical => "logical",
                }
                .to_string()
            }),
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

/// The session that takes the restore's lock, creates, moves and drops its staging database:
/// a MySQL target, the binary log off for `--no-binlog` (refused without the privilege).
fn coordinator(target: &ConnectOptions, binlog: bool) -> Result<Session> {
    let mut s = Session::connect(target)?;
    if !s.info().is_mysql() {
        return Err(Error::Usage(
            "a single-table restore needs a MySQL target".into(),
        ));
    }
    s.exec("SET SESSION wait_timeout = 86400")?;
    if !binlog {
        s.exec(logical::NO_BINLOG)
            .map_err(|e| match e.server_code() {
                Some(1227) => Error::MissingPrivileges(format!(
                    "--no-binlog: the target refused `{}` to {}: it needs SESSION_VARIABLES_ADMIN \
                 or SYSTEM_VARIABLES_ADMIN; grant it, or restore without --no-binlog (the \
                 tables then reach the binary log and the replicas)",
                    logical::NO_BINLOG,
                    target.user
                )),
                _ => e.into(),
            })?;
    }
    Ok(s)
}

/// Refuses destinations that exist, unless told to replace them: one line naming them.
fn check_destinations(s: &mut Session, req: &TablesRequest<'_>) -> Result<()> {
    let dests: Vec<Name> = req.tables.values().cloned().collect();
    let existing = tables::existing(s, &dests)?;
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

/// What identifies this restore (so a rerun of the same command finds its staging database).
fn request_text(snap: &SnapshotManifest, stop: &StopAt, req: &TablesRequest<'_>) -> String {
    let tables: Vec<String> = names(req.tables)
        .iter()
        .map(|t| format!("{}={}", t.source, t.destination))
        .collect();
    format!("snapshot {} to {stop:?}: {}", snap.id, tables.join(", "))
}

/// Deals with what an interrupted earlier run left: `Some` when it had finished all but
/// dropping its staging database (which is now done).
fn after_earlier_run(
    s: &mut Session,
    staging: &Staging,
    req: &TablesRequest<'_>,
    report: &mut TablesReport,
) -> Result<bool> {
    match staging.find(s)? {
        Found::Nothing => Ok(false),
        Found::Building { binlog } => {
            staging.drop(s, binlog || req.binlog)?;
            report.earlier_run = Some(format!(
                "an interrupted run had started to build the tables in {}: dropped, built again",
                staging.db
            ));
            Ok(false)
        }
        Found::Done { binlog } => {
            let dests: Vec<Name> = req.tables.values().cloned().collect();
            let all_there = tables::existing(s, &dests)?.len() == dests.len();
            staging.drop(s, binlog || req.binlog)?;
            report.earlier_run = Some(if all_there {
                format!(
                    "an interrupted run had put the tables in place; its staging database {} \
                     is dropped",
                    staging.db
                )
            } else {
                format!(
                    "an interrupted run had put the tables in place, and some are gone since: \
                     restored again (its staging database {} is dropped)",
                    staging.db
                )
            });
            Ok(all_there)
        }
    }
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
    let staging = Staging::new(&request_text(&snap, &stop, req), req.tables.values());
    let mut s = coordinator(target, req.binlog)?;
    staging.lock(&mut s)?;
    let mut report = TablesReport {
        plan: plan.clone(),
        archive_check: None,
        load: None,
        copy: None,
        replay_seconds: 0.0,
        seconds: 0.0,
        copy_method: None,
        copy_method_why: None,
        staging_database: staging.db.clone(),
        earlier_run: None,
        warnings: plan.warnings.clone(),
    };
    if after_earlier_run(&mut s, &staging, req, &mut report)? {
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    // Everything is checked before the target changes.
    report.archive_check = super::pitr::check_archive(pitr, req.check_archive, check_progress)?;
    check_destinations(&mut s, req)?;
    let transport = match snap.method.as_str() {
        "logical" => None,
        _ => transport_allowed(&mut s, req, &mut report)?,
    };
    // Source name -> where it is built.
    let built = req
        .tables
        .iter()
        .map(|(src, dest)| Ok((src.clone(), staging.table(dest)?)))
        .collect::<Result<BTreeMap<Name, Name>>>()?;
    staging.create(&mut s, req.binlog)?;
    let mut creates: Vec<String> = req
        .tables
        .values()
        .map(|d| format!("CREATE DATABASE IF NOT EXISTS {}", quote_ident(&d.0)))
        .collect();
    if snap.method == "logical" {
        let meta = logical::read_meta(repo, &snap)?;
        // The destinations' databases as the source's were (character set, collation).
        let dests = tables::select(&meta, &snap.id, req.tables)?;
        creates = dests
            .meta
            .databases
            .iter()
            .map(|d| {
                d.create
                    .replacen("CREATE DATABASE ", "CREATE DATABASE IF NOT EXISTS ", 1)
            })
            .collect();
        let selected = tables::select(&meta, &snap.id, &built)?;
        let opts = LoadOptions {
            binlog: req.binlog,
            ..req.load.clone()
        };
        let load = tables::load(repo, &snap, &selected.meta, target, &opts, load_progress)?;
        report.warnings.extend(load.warnings.iter().cloned());
        report.load = Some(load);
        crate::failpoint::hit("tables-after-load");
        let replay_started = Instant::now();
        replay_sql((target, req.binlog), pitr, &stop, built, replay_progress)?;
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
        let work = work_dir(req.scratch, &staging)?;
        let copy = through_temporary_server(
            repo,
            (req, &built, transport.as_deref()),
            &plan,
            (mysqld, &work),
            engine,
            target,
            replay_progress,
            &mut report,
        )?;
        report.warnings.extend(copy.warnings.iter().cloned());
        report.copy = Some(copy);
    }
    creates.sort();
    creates.dedup();
    staging.move_into_place(&mut s, &creates, req.replace_existing)?;
    crate::failpoint::hit("tables-after-rename");
    staging.drop(&mut s, req.binlog)?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The filtered SQL replay of the window into `server`: `tables` says where each restored
/// table's changes go.
fn replay_sql(
    server: (&ConnectOptions, bool),
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

/// Where a clone or cold snapshot's temporary server lives: `myvault-tables-<id>` under
/// `scratch`, named after the restore, so a rerun after a kill finds what the killed run
/// left (its server died with it) and removes it, with the server's run directory.
fn work_dir(scratch: Option<&Path>, staging: &Staging) -> Result<PathBuf> {
    let id = staging.db.trim_start_matches(table_staging::PREFIX);
    let work = scratch
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("myvault-tables-{id}"));
    if work.exists() {
        if let Ok(run_dir) = std::fs::read_to_string(work.join(RUN_DIR_FILE)) {
            remove_run_dir(Path::new(run_dir.trim()));
        }
        std::fs::remove_dir_all(&work).map_err(|e| {
            Error::io(
                format!(
                    "removing {}, left by an interrupted run of this restore",
                    work.display()
                ),
                e,
            )
        })?;
    }
    Ok(work)
}

/// Names the temporary server's run directory (socket, pid file, log), outside the work
/// directory because a socket's path must be short.
const RUN_DIR_FILE: &str = "run-dir";

/// Removes a temporary server's run directory, if it is one (`myvault-*`).
fn remove_run_dir(dir: &Path) {
    let ours = dir
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("myvault-"));
    if ours {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[allow(clippy::too_many_arguments)]
fn through_temporary_server(
    repo: &Arc<Repo>,
    (req, built, transport): (&TablesRequest<'_>, &BTreeMap<Name, Name>, Option<&Path>),
    plan: &TablesPlan,
    (mysqld, work): (&Path, &Path),
    engine: Engine<'_>,
    target: &ConnectOptions,
    replay_progress: replay::Progress<'_>,
    report: &mut TablesReport,
) -> Result<CopyReport> {
    let pitr = &plan.pitr;
    let (snap, stop) = snapshot_and_stop(pitr)?;
    let mysqld = Mysqld::detect(mysqld).map_err(|e| Error::Usage(format!("--mysqld: {e}")))?;
    let datadir = work.join("data");
    crate::restore::datadir::restore(repo, &snap, &datadir, None, false)?;
    let server = temporary_server(&mysqld, &datadir, &[])?;
    let run_dir = server.config().rundir.clone();
    let _ = std::fs::write(
        work.join(RUN_DIR_FILE),
        run_dir.to_string_lossy().as_bytes(),
    );
    let temp = server.root_options();
    let replay_started = Instant::now();
    let result = (|| -> Result<CopyReport> {
        match engine {
            Engine::Sql => {
                // On the temporary server the tables keep their names; the copy renames.
                let same: BTreeMap<Name, Name> =
                    req.tables.keys().map(|k| (k.clone(), k.clone())).collect();
                replay_sql((&temp, false), pitr, &stop, same, replay_progress)?;
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
        crate::failpoint::hit("tables-before-copy");
        copy_to_target((&temp, &datadir), (target, req), (built, transport), report)
    })();
    let log = server.config().error_log();
    let shutdown = server.shutdown();
    let copy = result.map_err(|e| {
        e.with_note(&format!(
            "the temporary server's files are kept in {} until this restore runs again; its \
             log is {}",
            work.display(),
            log.display()
        ))
    })?;
    shutdown.map_err(|e| Error::Internal(format!("stopping the temporary server: {e}")))?;
    let _ = std::fs::remove_dir_all(work);
    remove_run_dir(&run_dir);
    Ok(copy)
}

/// Whether a clone or cold snapshot's tables may be transported, as far as the target
/// says: its data directory, or (`auto`) why not; `transport` asked where not allowed is a
/// usage error, before anything happens.
fn transport_allowed(
    s: &mut Session,
    req: &TablesRequest<'_>,
    report: &mut TablesReport,
) -> Result<Option<PathBuf>> {
    if req.copy_method == CopyMethod::Logical {
        report.copy_method_why = Some("--copy-method logical".into());
        return Ok(None);
    }
    match table_transport::target_refusal(s, req.binlog)? {
        Ok(datadir) => Ok(Some(datadir)),
        Err(why) if req.copy_method == CopyMethod::Transport => Err(Error::Usage(format!(
            "--copy-method transport is not possible: {why}"
        ))),
        Err(why) => {
            report.copy_method_why = Some(format!("no transport: {why}"));
            Ok(None)
        }
    }
}

/// Moves the replayed tables from the temporary server (`temp`, its data directory
/// `temp_datadir`) to the target: as tablespace files into `transport` (the target's data
/// directory) when the tables allow it too, else logically.
fn copy_to_target(
    (temp, temp_datadir): (&ConnectOptions, &Path),
    (target, req): (&ConnectOptions, &TablesRequest<'_>),
    (built, transport): (&BTreeMap<Name, Name>, Option<&Path>),
    report: &mut TablesReport,
) -> Result<CopyReport> {
    if let Some(datadir) = transport {
        let mut t = Session::connect(target)?;
        if !req.binlog {
            t.exec(logical::NO_BINLOG)?;
        }
        let mut source = Session::connect(temp)?;
        match table_transport::tables_refusal(&mut source, &mut t, built)? {
            None => {
                report.copy_method = Some("transport".into());
                report.copy_method_why = Some(format!(
                    "both servers allow it (the target's data directory {} is here)",
                    datadir.display()
                ));
                return table_transport::transport((temp, temp_datadir), (&mut t, datadir), built);
            }
            Some(why) if req.copy_method == CopyMethod::Transport => {
                return Err(Error::Usage(format!(
                    "--copy-method transport is not possible: {why}"
                )));
            }
            Some(why) => report.copy_method_why = Some(format!("no transport: {why}")),
        }
    }
    report.copy_method = Some("logical".into());
    table_copy::copy(temp, (target, req.binlog), built, req.load.jobs)
}
