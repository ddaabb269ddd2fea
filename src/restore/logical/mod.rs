//! The logical loader: a snapshot's schema and rows into an empty server, rows loaded in
//! parallel with `LOAD DATA LOCAL INFILE` streamed from the repository, each table's secondary
//! indexes built after its rows, then routines, views, triggers, events and accounts, and
//! finally `GTID_PURGED`, so replication and PITR can continue from the snapshot.
//!
//! Nothing is written to the target's binary log (`sql_log_bin = 0`): the restored server's
//! GTID state is exactly the snapshot's. (A single-table restore into a live server loads
//! with the binary log on by default, see [`LoadOptions::binlog`].) Every phase can be killed and run again (see
//! [`progress`]); every error names the phase and the object it was about.

mod indexes;
pub mod objects;
pub mod progress;
mod rows;
pub mod settings;
pub mod tables;

pub use rows::load_sql;
mod table_groups;

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::first_error::FirstError;
use crate::mysql::gtid::GtidSet;
use crate::mysql::session::{Session, quote_str};
use crate::mysql::wire::ConnectOptions;
use crate::repo::manifest::{FileEntry, SnapshotManifest};
use crate::repo::{Repo, RepoError};
use crate::snapshot::logical::catalog::SYSTEM_SCHEMAS;
use crate::snapshot::logical::format::{DumpMeta, META_FILE};
use progress::State;

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub jobs: usize,
    /// Turn InnoDB's redo log off during the load (MySQL 8.0.21+), back on at the end.
    pub disable_redo_log: bool,
    /// The most the target's redo log is raised to during the load (0: leave it); see
    /// [`settings::redo_size_for`]. Put back at the end.
    pub redo_log_capacity: u64,
    /// Leave the grown redo log (and the other settings in the report's `server_settings`) for
    /// the caller to put back with [`settings::put_back_variables`]: a replay after the load writes
    /// as much and would first wait for the shrink's flushing.
    pub keep_load_settings: bool,
    /// Load into a server that already has databases or GTIDs.
    pub force: bool,
    /// Create the snapshot's accounts (those the target lacks).
    pub users: bool,
    /// Read every table back once loaded and compare it with what the dump read.
    pub content_check: bool,
    /// Write the load to the target's binary log, under the target's own GTIDs: a
    /// single-table restore into a live server, whose replicas then get the tables. Off for a
    /// whole restore, whose GTID state is the snapshot's.
    pub binlog: bool,
}

/// With MySQL's default redo log of 100 MiB, loading a 370 MiB dump spent a sixth of its time
/// waiting for checkpoints; with 1 GiB it did not. Bounded, as the server writes the whole redo
/// log out when it grows it.
pub const DEFAULT_REDO_LOG_CAPACITY: u64 = 1 << 30;

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            jobs: 2,
            disable_redo_log: false,
            redo_log_capacity: DEFAULT_REDO_LOG_CAPACITY,
            keep_load_settings: false,
            force: false,
            users: true,
            content_check: true,
            binlog: false,
        }
    }
}

#[derive(Debug, Default)]
pub struct LoadProgress {
    pub rows: AtomicU64,
    pub chunks_done: AtomicU64,
    pub chunks_total: AtomicU64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub snapshot: String,
    pub target: String,
    pub tables: usize,
    pub rows: u64,
    pub seconds: f64,
    /// Chunks an earlier, interrupted run had loaded already.
    pub resumed_chunks: usize,
    pub gtid_purged: Option<String>,
    pub redo_log_disabled: bool,
    /// Global variables changed for the load and put back at the end.
    pub server_settings: Vec<settings::SettingChange>,
    /// Accounts that already existed on the target and were left as they are.
    pub accounts_skipped: Vec<String>,
    pub warnings: Vec<String>,
    /// The rows read back against the dump's checksums; absent when it was not asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_check: Option<crate::restore::content_check::ContentCheckReport>,
}

/// Keeps a session's writes out of the binary log (see [`connect_loader_logged`]).
pub const NO_BINLOG: &str = "SET SESSION sql_log_bin = 0";

/// Session settings for loading: no checks that a consistent dump does not need, zero stays
/// zero in AUTO_INCREMENT columns, TIMESTAMPs in UTC as dumped.
const LOAD_SETUP: &[&str] = &[
    "SET SESSION foreign_key_checks = 0",
    "SET SESSION unique_checks = 0",
    "SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO'",
    "SET SESSION time_zone = '+00:00'",
    "SET SESSION net_read_timeout = 3600",
    "SET SESSION wait_timeout = 86400",
    // Every warning of a chunk is inspected, so all of them must be kept.
    "SET SESSION max_error_count = 65535",
];

/// A loader session whose writes stay out of the binary log.
pub fn connect_loader(target: &ConnectOptions, names: &str) -> Result<Session> {
    connect_loader_logged(target, names, false)
}

/// A loader session; `binlog` says whether its writes reach the target's binary log.
pub fn connect_loader_logged(
    target: &ConnectOptions,
    names: &str,
    binlog: bool,
) -> Result<Session> {
    let mut s = Session::connect(target)?;
    s.exec(&format!("SET NAMES {names}"))?;
    let no_binlog = (!binlog).then_some(NO_BINLOG);
    for stmt in no_binlog.iter().chain(LOAD_SETUP) {
        s.exec(stmt).map_err(|e| match e.server_code() {
            Some(1227) => Error::Mysql(crate::mysql::Error::AccessDenied {
                addr: s.address().to_string(),
                message: format!(
                    "`{stmt}` needs SESSION_VARIABLES_ADMIN or SYSTEM_VARIABLES_ADMIN (or SUPER) \
                     on the target"
                ),
            }),
            _ => e.into(),
        })?;
    }
    Ok(s)
}

pub fn read_meta(repo: &Repo, snap: &SnapshotManifest) -> Result<DumpMeta> {
    let entry = find_file(snap, META_FILE)?;
    let mut bytes = Vec::new();
    repo.copy_file(entry, &mut bytes)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        RepoError::integrity(
            repo.name(),
            format!("snapshot {} {META_FILE}", snap.id),
            e.to_string(),
        )
        .into()
    })
}

pub(crate) fn find_file<'a>(snap: &'a SnapshotManifest, path: &str) -> Result<&'a FileEntry> {
    snap.files.iter().find(|f| f.path == path).ok_or_else(|| {
        Error::NotFound(format!(
            "snapshot {} has no {path}; it is not a logical snapshot",
            snap.id
        ))
    })
}

/// Databases on the target other than the server's own.
pub fn user_databases(s: &mut Session) -> Result<Vec<String>> {
    let rows = s.query("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA")?;
    Ok(rows
        .iter()
        .filter_map(|r| r.text_at(0))
        .filter(|d| {
            !SYSTEM_SCHEMAS.contains(&d.as_str())
                && !crate::restore::OWN_SCHEMAS.contains(&d.as_str())
        })
        .collect())
}

/// Refuses a target that is not empty (unless forced), before anything is changed on it.
pub fn check_target(s: &mut Session, snapshot: &str, force: bool) -> Result<State> {
    let state = progress::read(s, snapshot)?;
    if matches!(state, State::Resuming(_)) || force {
        return Ok(state);
    }
    let dbs = user_databases(s)?;
    if !dbs.is_empty() {
        return Err(Error::TargetRefused(format!(
            "the target is not empty (databases: {}); restore into an empty server, or pass --force to load anyway",
            dbs.join(", ")
        )));
    }
    if s.info().is_mysql() {
        let gtids = s
            .global_var("gtid_executed")?
            .unwrap_or_default()
            .replace('\n', "");
        if !gtids.is_empty() {
            return Err(Error::TargetRefused(format!(
                "the target has executed GTIDs ({gtids}), so GTID_PURGED cannot be set to the snapshot's; \
                 run RESET BINARY LOGS AND GTIDS on the target first, or pass --force to skip GTIDs"
            )));
        }
    }
    Ok(state)
}

/// Whether the target holds `snap` already: no restore is in progress on it and its
/// `gtid_executed` is exactly the snapshot's, which a restore sets last (an earlier run of the
/// same restore killed after its end). MySQL with GTIDs only: elsewhere nothing says so.
fn already_restored(s: &mut Session, snap: &SnapshotManifest) -> Result<bool> {
    let Some(wanted) = snap.gtid_executed.as_deref().filter(|g| !g.is_empty()) else {
        return Ok(false);
    };
    if !s.info().is_mysql() || !matches!(progress::read(s, &snap.id)?, State::Fresh) {
        return Ok(false);
    }
    let have = s.global_var("gtid_executed")?.unwrap_or_default();
    Ok(parse_gtids(&have, "the target's")? == parse_gtids(wanted, "the snapshot's")?)
}

/// `set` as a GTID set; `whose` names it in the error.
fn parse_gtids(set: &str, whose: &str) -> Result<GtidSet> {
    GtidSet::parse(set)
        .map_err(|e| Error::Internal(format!("{whose} GTID set `{set}` does not parse: {e}")))
}

pub fn load(
    repo: &Repo,
    snap: &SnapshotManifest,
    target: &ConnectOptions,
    opts: &LoadOptions,
    progress: &LoadProgress,
) -> Result<LoadReport> {
    let started = Instant::now();
    let meta = read_meta(repo, snap)?;
    let mut coord = connect_loader(target, "utf8mb4")?;
    if !opts.force && already_restored(&mut coord, snap)? {
        return Ok(LoadReport {
            snapshot: snap.id.clone(),
            target: coord.address().to_string(),
            tables: meta.databases.iter().map(|d| d.tables.len()).sum(),
            rows: 0,
            seconds: started.elapsed().as_secs_f64(),
            resumed_chunks: 0,
            gtid_purged: snap.gtid_executed.clone(),
            redo_log_disabled: false,
            server_settings: Vec::new(),
            accounts_skipped: Vec::new(),
            // The target may have taken writes since that run: nothing here to compare.
            content_check: None,
            warnings: vec![format!(
                "the target already holds snapshot {} (its gtid_executed is the snapshot's: an earlier run \
                 of this restore loaded it); nothing was loaded. If that run was killed at its very end, \
                 innodb_redo_log_capacity may still be the load's",
                snap.id
            )],
        });
    }
    let state = check_target(&mut coord, &snap.id, opts.force)?;
    let done: HashSet<String> = match state {
        State::Fresh => {
            progress::create(&mut coord, &snap.id)
                .map_err(|e| e.during("recording the restore's progress on the target"))?;
            HashSet::new()
        }
        State::Resuming(done) => done,
    };
    let mut report = LoadReport {
        snapshot: snap.id.clone(),
        target: coord.address().to_string(),
        tables: meta.databases.iter().map(|d| d.tables.len()).sum(),
        rows: 0,
        seconds: 0.0,
        resumed_chunks: done.iter().filter(|d| d.starts_with("chunk:")).count(),
        gtid_purged: None,
        redo_log_disabled: false,
        server_settings: Vec::new(),
        accounts_skipped: Vec::new(),
        warnings: Vec::new(),
        content_check: None,
    };

    let wanted = settings::Wanted {
        redo_log_capacity: settings::redo_size_for(snap.size, opts.redo_log_capacity),
        disable_redo_log: opts.disable_redo_log,
    };
    let changed = settings::apply(&mut coord, &done, wanted, &mut report.warnings)
        .map_err(|e| e.during("changing the target's settings for the load"))?;
    report.redo_log_disabled = changed.redo_log_disabled();
    report.server_settings = changed.variables().to_vec();
    let result = load_all(
        repo,
        snap,
        &meta,
        target,
        opts,
        &mut coord,
        &done,
        progress,
        &mut report,
    );
    // Whatever happened, the server must not be left without its redo log.
    settings::put_back_redo_log(&mut coord, &changed)
        .map_err(|e| e.during("switching the target's redo log back on"))?;
    if let Err(e) = result {
        settings::put_back_variables(&mut coord, changed.variables(), &mut report.warnings);
        return Err(e);
    }
    crate::failpoint::hit("restore-before-put-back");
    // Settings go back while the progress schema still holds their originals, so a run killed
    // meanwhile puts them back when run again; all but the redo log's size, which goes last
    // (see put_back_variables), after the progress schema. Killed in between, the target keeps
    // the larger redo log: the restore itself is done.
    let (others, redo_size) = settings::split_redo_size(changed.variables());
    if !opts.keep_load_settings {
        settings::put_back_variables(&mut coord, &others, &mut report.warnings);
    }
    progress::drop(&mut coord).map_err(|e| e.during("removing the restore's progress schema"))?;
    crate::failpoint::hit("restore-after-progress-dropped");
    if !opts.keep_load_settings {
        settings::put_back_variables(&mut coord, &redo_size, &mut report.warnings);
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
fn load_all(
    repo: &Repo,
    snap: &SnapshotManifest,
    meta: &DumpMeta,
    target: &ConnectOptions,
    opts: &LoadOptions,
    coord: &mut Session,
    done: &HashSet<String>,
    progress: &LoadProgress,
    report: &mut LoadReport,
) -> Result<()> {
    objects::create_databases(coord, meta, done)?;
    // Tables tied by foreign keys one after the other on one connection, the groups in parallel.
    let groups = table_groups::creation_groups(meta);
    on_connections(
        target,
        ("utf8mb4", false),
        ddl_connections(opts.jobs),
        groups,
        |s, group| {
            group
                .into_iter()
                .try_for_each(|(db, t)| objects::create_table(s, db, t, done))
        },
    )?;
    rows::load_rows_and_indexes(repo, snap, meta, target, opts, done, progress)?;
    // Before triggers and events exist, which could change rows meanwhile.
    if opts.content_check {
        let check = crate::restore::content_check::logical(target, meta, opts.jobs)?;
        report.content_check = Some(check);
    }
    report.rows = meta.rows;
    objects::create_programs(coord, meta, done)?;
    if opts.users {
        report.accounts_skipped =
            objects::create_accounts(coord, meta, done, &mut report.warnings)?;
    }
    report.gtid_purged = set_gtid_state(coord, snap, opts, &mut report.warnings)
        .map_err(|e| e.during("setting the target's GTID state to the snapshot's"))?;
    crate::failpoint::hit("restore-after-gtid");
    Ok(())
}

/// Connections that create tables. A CREATE TABLE waits on the server's durable writes of its
/// data dictionary, not on CPU, so a few more connections than `--jobs` keep the server busy:
/// with 1,000 small tables on 2 cores, 2 connections took 24 s and 4 took 11 s (myloader creates
/// on 4 by default for the same reason, its --max-threads-for-schema-creation).
fn ddl_connections(jobs: usize) -> usize {
    jobs.max(MIN_DDL_CONNECTIONS)
}

const MIN_DDL_CONNECTIONS: usize = 4;

/// Runs `work` on each item, in order, on `jobs` loader connections at once (`names` their
/// character set, `binlog` whether they write to the binary log); the first error stops them
/// all.
pub(crate) fn on_connections<T: Send>(
    target: &ConnectOptions,
    (names, binlog): (&str, bool),
    jobs: usize,
    items: Vec<T>,
    work: impl Fn(&mut Session, T) -> Result<()> + Sync,
) -> Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    // No more connections than items: each costs a login and a session setup.
    let connections = jobs.clamp(1, items.len());
    let queue = Mutex::new(items.into_iter());
    let first_error: FirstError<Error> = FirstError::new();
    std::thread::scope(|scope| {
        for _ in 0..connections {
            let (queue, first_error, work) = (&queue, &first_error, &work);
            scope.spawn(move || {
                let run = || -> Result<()> {
                    let mut s = connect_loader_logged(target, names, binlog)?;
                    while !first_error.failed() {
                        let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                        let Some(item) = next else { break };
                        work(&mut s, item)?;
                    }
                    Ok(())
                };
                if let Err(e) = run() {
                    first_error.set(e);
                }
            });
        }
    });
    first_error.into_result()
}

/// Makes the target's GTID state the snapshot's, so replication and PITR continue from it.
/// A target that has exactly the snapshot's GTIDs already (an earlier, killed run set them)
/// is left as it is.
fn set_gtid_state(
    s: &mut Session,
    snap: &SnapshotManifest,
    opts: &LoadOptions,
    warnings: &mut Vec<String>,
) -> Result<Option<String>> {
    let Some(gtids) = snap.gtid_executed.as_deref().filter(|g| !g.is_empty()) else {
        return Ok(None);
    };
    if s.info().is_mariadb() {
        s.exec(&format!("SET GLOBAL gtid_slave_pos = {}", quote_str(gtids)))?;
        return Ok(Some(gtids.to_string()));
    }
    let mode = s.global_var("gtid_mode")?.unwrap_or_default();
    if !mode.eq_ignore_ascii_case("ON") {
        warnings.push(format!(
            "the target has gtid_mode={mode}: GTID_PURGED not set; replicate by file and position"
        ));
        return Ok(None);
    }
    let executed = s
        .global_var("gtid_executed")?
        .unwrap_or_default()
        .replace('\n', "");
    if !executed.is_empty()
        && parse_gtids(&executed, "the target's")? == parse_gtids(gtids, "the snapshot's")?
    {
        return Ok(Some(gtids.to_string()));
    }
    if !executed.is_empty() {
        if opts.force {
            warnings.push(format!(
                "the target already had GTIDs ({executed}); GTID_PURGED left alone (--force)"
            ));
            return Ok(None);
        }
        return Err(Error::TargetRefused(format!(
            "the target's gtid_executed is not empty ({executed}); cannot set GTID_PURGED"
        )));
    }
    s.exec(&format!("SET GLOBAL gtid_purged = {}", quote_str(gtids)))?;
    Ok(Some(gtids.to_string()))
}
