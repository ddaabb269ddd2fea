//! The logical loader: a snapshot's schema and rows into an empty server, rows loaded in
//! parallel with `LOAD DATA LOCAL INFILE` streamed from the repository, each table's secondary
//! indexes built after its rows, then views, routines, triggers, events and accounts, and finally
//! `GTID_PURGED`, so replication and PITR can continue from the snapshot.
//!
//! Nothing is written to the target's binary log (`sql_log_bin = 0`): the restored server's
//! GTID state is exactly the snapshot's.

pub mod objects;
pub mod progress;
pub mod settings;

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::first_error::FirstError;
use crate::mysql::session::{Session, quote_ident};
use crate::mysql::wire::ConnectOptions;
use crate::repo::manifest::{FileEntry, SnapshotManifest};
use crate::repo::{Repo, RepoError};
use crate::snapshot::logical::catalog::SYSTEM_SCHEMAS;
use crate::snapshot::logical::format::{ColumnEncoding, DumpMeta, META_FILE, Table};
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

/// Session settings for loading: nothing to the binlog, no checks that a consistent dump does
/// not need, zero stays zero in AUTO_INCREMENT columns, TIMESTAMPs in UTC as dumped.
const LOAD_SETUP: &[&str] = &[
    "SET SESSION sql_log_bin = 0",
    "SET SESSION foreign_key_checks = 0",
    "SET SESSION unique_checks = 0",
    "SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO'",
    "SET SESSION time_zone = '+00:00'",
    "SET SESSION net_read_timeout = 3600",
    "SET SESSION wait_timeout = 86400",
    // Every warning of a chunk is inspected, so all of them must be kept.
    "SET SESSION max_error_count = 65535",
];

pub fn connect_loader(target: &ConnectOptions, names: &str) -> Result<Session> {
    let mut s = Session::connect(target)?;
    s.exec(&format!("SET NAMES {names}"))?;
    for stmt in LOAD_SETUP {
        s.exec(stmt).map_err(|e| match e.server_code() {
            Some(1227) => Error::Mysql(crate::mysql::Error::AccessDenied {
                addr: s.address().to_string(),
                message: format!("`{stmt}` needs SYSTEM_VARIABLES_ADMIN (or SUPER) on the target"),
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

fn find_file<'a>(snap: &'a SnapshotManifest, path: &str) -> Result<&'a FileEntry> {
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
        .filter(|d| !SYSTEM_SCHEMAS.contains(&d.as_str()) && d != crate::restore::PROGRESS_SCHEMA)
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
    let state = check_target(&mut coord, &snap.id, opts.force)?;
    let done: HashSet<String> = match state {
        State::Fresh => {
            progress::create(&mut coord, &snap.id)?;
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
    let changed = settings::apply(&mut coord, &done, wanted, &mut report.warnings)?;
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
    settings::put_back_redo_log(&mut coord, &changed)?;
    if let Err(e) = result {
        settings::put_back_variables(&mut coord, changed.variables(), &mut report.warnings);
        return Err(e);
    }
    // The progress schema goes before the variables are put back (see put_back_variables).
    // Killed in between, the target keeps the load's settings (a larger redo log,
    // local_infile on): the restore itself is done.
    progress::drop(&mut coord)?;
    if !opts.keep_load_settings {
        settings::put_back_variables(&mut coord, changed.variables(), &mut report.warnings);
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
    let tables: Vec<(&str, &Table)> = meta
        .databases
        .iter()
        .flat_map(|db| db.tables.iter().map(move |t| (db.name.as_str(), t)))
        .collect();
    on_connections(target, "utf8mb4", opts.jobs, tables, |s, (db, t)| {
        objects::create_table(s, db, t, done)
    })?;
    load_rows_and_indexes(repo, snap, meta, target, opts, done, progress)?;
    // Before triggers and events exist, which could change rows meanwhile.
    if opts.content_check {
        let check = crate::restore::content_check::logical(target, meta, opts.jobs)?;
        report.content_check = Some(check);
    }
    report.rows = meta.rows;
    objects::create_programs(coord, meta, done)?;
    if opts.users {
        report.accounts_skipped = objects::create_accounts(coord, meta, &mut report.warnings)?;
    }
    report.gtid_purged = set_gtid_state(coord, snap, opts, &mut report.warnings)?;
    Ok(())
}

/// The `LOAD DATA` statement for a table's row files.
pub fn load_sql(db: &str, t: &Table) -> String {
    let mut cols = Vec::with_capacity(t.columns.len());
    let mut sets = Vec::new();
    for (i, c) in t.columns.iter().enumerate() {
        let name = quote_ident(&c.name);
        match c.encoding {
            ColumnEncoding::Raw => cols.push(name),
            ColumnEncoding::Hex => {
                cols.push(format!("@v{i}"));
                sets.push(format!("{name} = UNHEX(@v{i})"));
            }
            ColumnEncoding::Json => {
                cols.push(format!("@v{i}"));
                sets.push(format!("{name} = CONVERT(@v{i} USING utf8mb4)"));
            }
            ColumnEncoding::Index => {
                cols.push(format!("@v{i}"));
                sets.push(format!("{name} = CAST(@v{i} AS UNSIGNED)"));
            }
        }
    }
    let mut sql = format!(
        "LOAD DATA LOCAL INFILE 'myvault-chunk' INTO TABLE {}.{} CHARACTER SET binary \
         FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' ({})",
        quote_ident(db),
        quote_ident(&t.name),
        cols.join(", ")
    );
    if !sets.is_empty() {
        sql.push_str(" SET ");
        sql.push_str(&sets.join(", "));
    }
    sql
}

struct LoadJob<'m> {
    db: &'m str,
    table: &'m Table,
    file: &'m str,
    rows: u64,
    sql: Arc<String>,
}

/// A table's secondary indexes, built once its rows are in.
struct IndexJob {
    /// Its progress marker.
    item: String,
    sql: String,
}

/// A table's index build, waiting for its last chunks.
struct AfterRows {
    chunks_left: AtomicU64,
    index: Mutex<Option<IndexJob>>,
}

/// What a loader connection does next.
enum Work<'m> {
    Rows(LoadJob<'m>),
    Indexes(IndexJob),
}

/// Loads the rows, and builds each table's secondary indexes on the connection that loaded
/// its last chunk, right after it: index builds fill the time in which the other connections
/// finish their last chunks (the load's tail ran on one of two cores for up to 0.4 s per table
/// pair; 10-25% of a restore's CPU time was idle).
fn load_rows_and_indexes(
    repo: &Repo,
    snap: &SnapshotManifest,
    meta: &DumpMeta,
    target: &ConnectOptions,
    opts: &LoadOptions,
    done: &HashSet<String>,
    progress: &LoadProgress,
) -> Result<()> {
    let mut indexes = index_jobs(meta, done);
    let mut jobs: Vec<LoadJob<'_>> = Vec::new();
    let mut truncate = Vec::new();
    for db in &meta.databases {
        for t in &db.tables {
            let sql = Arc::new(load_sql(&db.name, t));
            let pending: Vec<_> = t
                .chunks
                .iter()
                .filter(|c| !done.contains(&format!("chunk:{}", c.file)))
                .collect();
            // A table without transactions may hold part of an interrupted chunk: reload it whole.
            let reload_all = !t.engine.eq_ignore_ascii_case("InnoDB")
                && !pending.is_empty()
                && pending.len() < t.chunks.len();
            if reload_all {
                truncate.push((db.name.as_str(), t));
            }
            for c in &t.chunks {
                if reload_all || !done.contains(&format!("chunk:{}", c.file)) {
                    jobs.push(LoadJob {
                        db: &db.name,
                        table: t,
                        file: &c.file,
                        rows: c.rows,
                        sql: sql.clone(),
                    });
                }
            }
        }
    }
    progress
        .chunks_total
        .store(jobs.len() as u64, Ordering::Relaxed);
    if !truncate.is_empty() {
        let mut s = connect_loader(target, "binary")?;
        for (db, t) in truncate {
            s.exec(&format!(
                "TRUNCATE TABLE {}.{}",
                quote_ident(db),
                quote_ident(&t.name)
            ))?;
        }
    }
    // Big chunks first, so the tail is made of small ones.
    jobs.sort_by_key(|j| std::cmp::Reverse(j.rows));
    // Per table with indexes to build: its chunks still to load, and the build.
    let mut after_rows: HashMap<(&str, &str), AfterRows> = HashMap::new();
    for job in &jobs {
        let key = (job.db, job.table.name.as_str());
        if let Some(index) = indexes.remove(&key) {
            let index = Mutex::new(Some(index));
            after_rows.insert(
                key,
                AfterRows {
                    chunks_left: AtomicU64::new(0),
                    index,
                },
            );
        }
        if let Some(after) = after_rows.get(&key) {
            after.chunks_left.fetch_add(1, Ordering::Relaxed);
        }
    }
    // Tables whose rows are all in already (an earlier run loaded them) start with their
    // indexes.
    let mut work: Vec<Work<'_>> = indexes.into_values().map(Work::Indexes).collect();
    work.extend(jobs.into_iter().map(Work::Rows));
    on_connections(target, "binary", opts.jobs, work, |s, work| match work {
        Work::Indexes(index) => build_indexes(s, &index),
        Work::Rows(job) => {
            load_chunk(repo, snap, s, &job)?;
            progress.rows.fetch_add(job.rows, Ordering::Relaxed);
            progress.chunks_done.fetch_add(1, Ordering::Relaxed);
            let Some(after) = after_rows.get(&(job.db, job.table.name.as_str())) else {
                return Ok(());
            };
            if after.chunks_left.fetch_sub(1, Ordering::AcqRel) != 1 {
                return Ok(());
            }
            let index = after.index.lock().unwrap_or_else(|e| e.into_inner()).take();
            index.map_or(Ok(()), |index| build_indexes(s, &index))
        }
    })
}

/// Runs `work` on each item, in order, on `jobs` loader connections at once (`names` their
/// character set); the first error stops them all.
fn on_connections<T: Send>(
    target: &ConnectOptions,
    names: &str,
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
                    let mut s = connect_loader(target, names)?;
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

/// Keeps the repository error of a failing chunk read, which the protocol layer only sees as
/// an I/O failure.
struct TrackedReader<'r> {
    inner: crate::repo::reader::FileReader<'r>,
    error: Option<RepoError>,
}

impl Read for TrackedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => Ok(n),
            Err(e) => {
                let err = crate::repo::reader::unwrap_io(e, self.inner.path());
                let msg = err.to_string();
                self.error = Some(err);
                Err(std::io::Error::other(msg))
            }
        }
    }
}

fn load_chunk(
    repo: &Repo,
    snap: &SnapshotManifest,
    s: &mut Session,
    job: &LoadJob<'_>,
) -> Result<()> {
    let entry = find_file(snap, job.file)?;
    let mut reader = TrackedReader {
        inner: repo.open_file(entry)?,
        error: None,
    };
    s.exec("START TRANSACTION")?;
    let result = s.conn().exec_with_infile(&job.sql, Some(&mut reader));
    let ok = match result {
        Ok(ok) => ok,
        Err(e) => {
            // The statement was abandoned mid-file: the transaction dies with the connection.
            return Err(match reader.error.take() {
                Some(repo_err) => repo_err.into(),
                None => e.into(),
            });
        }
    };
    let what = format!(
        "{}.{} ({})",
        quote_ident(job.db),
        quote_ident(&job.table.name),
        job.file
    );
    if ok.affected_rows != job.rows {
        s.exec("ROLLBACK")?;
        return Err(Error::Internal(format!(
            "{what}: loaded {} rows, the dump has {}",
            ok.affected_rows, job.rows
        )));
    }
    if ok.warnings > 0 {
        let warnings = s.query("SHOW WARNINGS")?;
        let unexpected = warnings
            .iter()
            .find(|w| !is_invalid_enum_warning(w, job.table))
            .and_then(|w| w.text("Message"));
        if unexpected.is_some() || warnings.len() as u64 != u64::from(ok.warnings) {
            s.exec("ROLLBACK")?;
            return Err(Error::Internal(format!(
                "{what}: the server changed data while loading it: {}",
                unexpected.unwrap_or_else(|| format!("{} warnings", ok.warnings))
            )));
        }
    }
    s.exec(&progress::mark_sql(&format!("chunk:{}", job.file)))?;
    s.exec("COMMIT")?;
    crate::failpoint::hit("restore-after-chunk");
    Ok(())
}

/// Storing an ENUM's invalid value (index 0), which the source holds, always warns: that
/// warning is the one expected.
fn is_invalid_enum_warning(w: &crate::mysql::session::Row<'_>, t: &Table) -> bool {
    let message = w.text("Message").unwrap_or_default();
    w.u64("Code") == Some(1265)
        && t.columns
            .iter()
            .filter(|c| c.encoding == ColumnEncoding::Index)
            .any(|c| {
                message
                    == format!(
                        "Data truncated for column '{}' at row {}",
                        c.name,
                        message.rsplit(' ').next().unwrap_or("")
                    )
            })
}

/// The index builds still to do, by database and table.
fn index_jobs<'m>(
    meta: &'m DumpMeta,
    done: &HashSet<String>,
) -> HashMap<(&'m str, &'m str), IndexJob> {
    let mut jobs = HashMap::new();
    for db in &meta.databases {
        for t in db.tables.iter().filter(|t| !t.deferred_indexes.is_empty()) {
            let item = format!("index:{}.{}", db.name, t.name);
            if !done.contains(&item) {
                let sql = format!(
                    "ALTER TABLE {}.{} {}",
                    quote_ident(&db.name),
                    quote_ident(&t.name),
                    t.deferred_indexes.join(", ")
                );
                jobs.insert((db.name.as_str(), t.name.as_str()), IndexJob { item, sql });
            }
        }
    }
    jobs
}

/// Builds a table's secondary indexes on a loader connection: its statement is text, so the
/// connection speaks utf8mb4 for it and binary again after.
fn build_indexes(s: &mut Session, index: &IndexJob) -> Result<()> {
    s.exec("SET NAMES utf8mb4")?;
    s.exec(&index.sql)?;
    s.exec(&progress::mark_sql(&index.item))?;
    s.exec("SET NAMES binary")?;
    Ok(())
}

/// Makes the target's GTID state the snapshot's, so replication and PITR continue from it.
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
        s.exec(&format!(
            "SET GLOBAL gtid_slave_pos = {}",
            crate::mysql::session::quote_str(gtids)
        ))?;
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
    s.exec(&format!(
        "SET GLOBAL gtid_purged = {}",
        crate::mysql::session::quote_str(gtids)
    ))?;
    Ok(Some(gtids.to_string()))
}
