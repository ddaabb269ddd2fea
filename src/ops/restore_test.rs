//! `myvault verify --restore-test`: restores a snapshot on a temporary server of myvault's
//! own and checks that what comes back is what the manifest promises: the server starts on it,
//! every table reads to the end, the GTID set is the snapshot's, (logical snapshots) the
//! row count is the one dumped, and every table's content equals what the backup read (see
//! `restore::content_check`). A backup is only as good as its last restore.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::mysql::gtid::GtidSet;
use crate::mysql::session::{Session, quote_ident};
use crate::repo::Repo;
use crate::repo::lock::{LockGuard, LockKind};
use crate::repo::manifest::SnapshotManifest;
use crate::restore::content_check::{self, ContentCheckReport};
use crate::restore::datadir;
use crate::restore::logical::{LoadOptions, LoadProgress};
use crate::server::{Mysqld, RunningServer, ServerConfig};
use crate::snapshot::clone::{run_dir, temporary_server};

#[derive(Debug, Clone, Serialize)]
pub struct RestoreTestReport {
    pub snapshot: String,
    pub method: String,
    pub restore_seconds: f64,
    pub check_seconds: f64,
    /// Base tables read to the end with CHECKSUM TABLE.
    pub tables: usize,
    pub rows: u64,
    /// Rows the logical dump recorded, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_dumped: Option<u64>,
    pub gtid_executed: String,
    /// Every table against the snapshot's checksums; absent with `--no-content-check`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_check: Option<ContentCheckReport>,
}

pub struct RestoreTestRequest<'a> {
    pub snapshot: &'a str,
    pub mysqld: &'a Path,
    /// Where the temporary data directory goes (default: the system's temporary directory).
    pub scratch: Option<&'a Path>,
    /// Compare every table with the checksums the backup recorded.
    pub content_check: bool,
}

pub fn run(
    repo: &Arc<Repo>,
    req: &RestoreTestRequest<'_>,
    status: &dyn Fn(&str),
) -> Result<RestoreTestReport> {
    let _lock = LockGuard::acquire(repo.storage().clone(), LockKind::Shared, "restore test")?;
    let mysqld = Mysqld::detect(req.mysqld).map_err(|e| Error::Usage(format!("--mysqld: {e}")))?;
    let snap = repo.find_snapshot(req.snapshot)?;
    if snap.method == "files" {
        return Err(Error::Usage(format!(
            "snapshot {} holds plain files, not a database: `verify` (without --restore-test) checks it",
            snap.id
        )));
    }
    let work = work_dir(req.scratch, "myvault-restore-test");
    let datadir = work.join("data");
    let started = Instant::now();
    status(&format!(
        "restoring snapshot {} into {}",
        snap.id,
        datadir.display()
    ));
    let recorded = content_check::recorded_checksums(&snap)?;
    let (server, restored) = match restore(repo, &snap, &mysqld, &work, &datadir, req.content_check)
    {
        Ok(restored) => restored,
        Err(e) => {
            return Err(e.with_note(&format!("the test's files are kept in {}", work.display())));
        }
    };
    let restore_seconds = started.elapsed().as_secs_f64();
    status("reading every table back");
    let checked = Instant::now();
    let result = (|| {
        // A logical load compared the rows as it finished; a data directory is compared here.
        let content = match (restored, req.content_check) {
            (Restored::Loaded(checked), _) => checked,
            // Every full row is read (CHECKSUM TABLE) even when no values were recorded.
            (Restored::Datadir, true) => Some(content_check::physical(
                &server.root_options(),
                recorded.as_ref(),
                CHECK_JOBS,
                true,
            )?),
            (Restored::Datadir, false) => None,
        };
        let (tables, rows, gtids) = check(&server, &snap, content.is_none())?;
        Ok::<_, Error>((tables, rows, gtids, content))
    })();
    let log = server.config().error_log();
    let run = server.config().rundir.clone();
    let shutdown = server.shutdown();
    let (tables, rows, gtids, content_check) = result.map_err(|e| {
        e.with_note(&format!(
            "the test's files are kept in {}; the server's log is {}",
            work.display(),
            log.display()
        ))
    })?;
    shutdown.map_err(|e| Error::Internal(format!("stopping the test server: {e}")))?;
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_dir_all(&run);
    Ok(RestoreTestReport {
        snapshot: snap.id.clone(),
        method: snap.method.clone(),
        restore_seconds,
        check_seconds: checked.elapsed().as_secs_f64(),
        tables,
        rows,
        rows_dumped: rows_dumped(&snap),
        gtid_executed: gtids,
        content_check,
    })
}

/// A new directory name for a temporary server's files, `PREFIX-<random>` under `scratch` (default:
/// the system's temporary directory).
pub(crate) fn work_dir(scratch: Option<&Path>, prefix: &str) -> std::path::PathBuf {
    scratch
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("{prefix}-{}", crate::repo::config::random_hex(4)))
}

/// Connections of the restore test's load and content check.
const CHECK_JOBS: usize = 2;

/// How the snapshot came onto the test server.
enum Restored {
    /// A logical load, with its content check when one was asked for.
    Loaded(Option<ContentCheckReport>),
    /// A data directory, checked once its server runs.
    Datadir,
}

/// The snapshot on a running temporary server.
fn restore(
    repo: &Arc<Repo>,
    snap: &SnapshotManifest,
    mysqld: &Mysqld,
    work: &Path,
    datadir: &Path,
    content_check: bool,
) -> Result<(RunningServer, Restored)> {
    crate::private_fs::create_dir_all(work)
        .map_err(|e| Error::io(format!("cannot create {}", work.display()), e))?;
    if snap.method != "logical" {
        datadir::restore(repo, snap, datadir, None, false)?;
        return Ok((temporary_server(mysqld, datadir, &[])?, Restored::Datadir));
    }
    // A logical snapshot needs an empty server with its privilege system (it creates accounts).
    mysqld
        .initialize(datadir, &work.join("initialize.log"))
        .map_err(|e| Error::Internal(format!("initializing the test server: {e}")))?;
    let mut cfg = ServerConfig::new(
        datadir.to_path_buf(),
        run_dir()?,
        0,
        1_000_000 + rand::random::<u32>() % 1_000_000,
    );
    cfg.binlog = false;
    cfg.network = false;
    cfg.die_with_parent = true;
    let server = RunningServer::start(mysqld, cfg, Duration::from_secs(600))
        .map_err(|e| Error::Internal(format!("starting the test server: {e}")))?;
    let loaded = crate::restore::logical::load(
        repo,
        snap,
        &server.root_options(),
        &LoadOptions {
            jobs: CHECK_JOBS,
            content_check,
            ..LoadOptions::default()
        },
        &LoadProgress::default(),
    )?;
    Ok((server, Restored::Loaded(loaded.content_check)))
}

/// Counts every user table's rows, reading each to the end first unless the content check
/// has (`read_rows`); compares the GTID set and row count with the manifest.
fn check(
    server: &RunningServer,
    snap: &SnapshotManifest,
    read_rows: bool,
) -> Result<(usize, u64, String)> {
    let mut s: Session = server.session()?;
    let tables: Vec<(String, String)> = s
        .query(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
             WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN \
             ('mysql', 'sys', 'information_schema', 'performance_schema') ORDER BY 1, 2",
        )?
        .iter()
        .filter_map(|r| Some((r.text_at(0)?, r.text_at(1)?)))
        .collect();
    let mut rows = 0u64;
    for (db, table) in &tables {
        let name = format!("{}.{}", quote_ident(db), quote_ident(table));
        // CHECKSUM TABLE reads every full row (off-page columns too): a damaged page or a
        // missing file fails here. It reports no count; COUNT(*) below reads the smallest
        // index, so a second scan also checks one more index tree.
        if read_rows {
            s.query(&format!("CHECKSUM TABLE {name}"))?;
        }
        let count = s
            .query_value(&format!("SELECT COUNT(*) FROM {name}"))?
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        rows += count;
    }
    let gtids = s.global_var("gtid_executed")?.unwrap_or_default();
    if let Some(expected) = &snap.gtid_executed {
        let parse = |t: &str| GtidSet::parse(t).map_err(|e| Error::Internal(e.to_string()));
        if parse(&gtids)? != parse(expected)? {
            return Err(restore_test_failed(format!(
                "the restored server's gtid_executed is {gtids}, the snapshot says {expected}"
            )));
        }
    }
    if let Some(dumped) = rows_dumped(snap)
        && dumped != rows
    {
        return Err(restore_test_failed(format!(
            "{rows} rows restored, the dump recorded {dumped}"
        )));
    }
    Ok((tables.len(), rows, gtids.replace('\n', "")))
}

fn rows_dumped(snap: &SnapshotManifest) -> Option<u64> {
    (snap.method == "logical")
        .then(|| snap.extra.get("rows").and_then(|v| v.as_u64()))
        .flatten()
}

fn restore_test_failed(detail: String) -> Error {
    crate::repo::RepoError::integrity("restore test", "the restored snapshot", detail).into()
}
