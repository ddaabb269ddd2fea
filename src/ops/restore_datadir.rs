//! `myvault restore --datadir DIR`: a clone or cold snapshot into a data directory, and with
//! `--to-time`/`--to-gtid`/`--before-gtid` a replay of the archive on a temporary server
//! started on it, shut down cleanly afterwards. That server first checks the restored tables
//! against the `CHECKSUM TABLE` values the backup recorded (see `restore::content_check`).

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::repo::Repo;
use crate::repo::lock::{LockGuard, LockKind};
use crate::restore::content_check::{self, ContentCheckReport};
use crate::restore::datadir::{self, Owner};
use crate::restore::files::FilesRestored;
use crate::restore::pitr::archive_check::CheckReport;
use crate::restore::pitr::plan::{self, Kind, PitrPlan, Target};
use crate::restore::pitr::replay::{self, ReplayReport};
use crate::server::Mysqld;
use crate::snapshot::clone::temporary_server;

#[derive(Debug, Clone, Serialize)]
pub struct DatadirReport {
    pub restored: FilesRestored,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<PitrPlan>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_check: Option<CheckReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplayReport>,
    /// The restored tables against the snapshot's checksums, before the replay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_check: Option<ContentCheckReport>,
}

pub struct DatadirRequest<'a> {
    pub snapshot: Option<&'a str>,
    pub dir: &'a Path,
    pub owner: Option<Owner>,
    pub keep_uuid: bool,
    pub engine: replay::Engine<'a>,
    /// Replay the archive up to a point, on a temporary server.
    pub pitr: Option<DatadirPitr<'a>>,
    /// Check the restored tables (on the server started for the replay) before replaying.
    pub content_check: bool,
    /// Connections for the content check.
    pub jobs: usize,
}

pub struct DatadirPitr<'a> {
    pub target: &'a Target,
    /// A server binary of the snapshot's version.
    pub mysqld: &'a Path,
    /// Read back every archived byte the replay needs before writing the directory.
    pub check_archive: bool,
    /// Sees the archive check's (files checked, files to check, bytes read).
    pub check_progress: &'a dyn Fn(usize, usize, u64),
}

pub fn run(
    repo: &Arc<Repo>,
    req: &DatadirRequest<'_>,
    progress: replay::Progress<'_>,
) -> Result<DatadirReport> {
    let _lock = LockGuard::acquire(repo.storage().clone(), LockKind::Shared, "restore")?;
    let Some(pitr) = &req.pitr else {
        let snap = repo.find_snapshot(req.snapshot.unwrap_or("latest"))?;
        let restored = datadir::restore(repo, &snap, req.dir, req.owner, req.keep_uuid)?;
        return Ok(DatadirReport {
            restored,
            plan: None,
            archive_check: None,
            replay: None,
            content_check: None,
        });
    };
    // Everything is planned and checked before anything is written.
    let mysqld = Mysqld::detect(pitr.mysqld).map_err(|e| Error::Usage(format!("--mysqld: {e}")))?;
    let plan = plan::plan(repo, pitr.target, req.snapshot, Kind::Physical)?;
    let snap = plan
        .snapshot_manifest
        .clone()
        .ok_or_else(|| Error::Internal("plan without snapshot".into()))?;
    let archive_check = super::pitr::check_archive(&plan, pitr.check_archive, pitr.check_progress)?;
    let recorded = content_check::recorded_checksums(&snap)?;
    let stop = plan
        .stop
        .clone()
        .ok_or_else(|| Error::Internal("plan without boundary".into()))?;
    let restored = datadir::restore(repo, &snap, req.dir, None, req.keep_uuid)?;
    let server = temporary_server(&mysqld, req.dir, &[])?;
    // The snapshot as restored, before the replay changes it: CHECK TABLE, and CHECKSUM TABLE
    // where the backup recorded values.
    let checked = match req.content_check {
        true => content_check::physical(&server.root_options(), recorded.as_ref(), req.jobs, false)
            .map(Some),
        false => Ok(None),
    };
    let result = checked.and_then(|checked| {
        let replayed = replay::run(
            req.engine,
            &server.root_options(),
            plan.replay_files(),
            stop,
            &plan.end_set,
            progress,
        )?;
        Ok((checked, replayed))
    });
    let run_dir = server.config().rundir.clone();
    let log = server.config().error_log();
    // A clean shutdown, so the directory starts without crash recovery.
    server
        .shutdown()
        .map_err(|e| Error::Internal(e.to_string()))?;
    // On failure the temporary server's log is kept: it says why the replay stopped.
    let (content_check, replay) = result
        .map_err(|e| e.with_note(&format!("the temporary server's log is {}", log.display())))?;
    let _ = std::fs::remove_dir_all(run_dir);
    if !req.keep_uuid {
        let _ = std::fs::remove_file(req.dir.join("auto.cnf"));
    }
    if let Some(o) = req.owner {
        datadir::chown_tree(req.dir, o)?;
    }
    Ok(DatadirReport {
        restored,
        plan: Some(plan),
        archive_check,
        replay: Some(replay),
        content_check,
    })
}
