//! `myvault restore --to-time | --to-gtid | --before-gtid`: plan, check the archive the plan
//! needs, then (unless `--plan`) restore the chosen snapshot and replay the archive up to the
//! boundary. A run that was killed is continued by running the same command again: the
//! target's record and `gtid_executed` say where it had got to (see `restore::pitr::resume`).

use std::sync::Arc;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::mysql::wire::ConnectOptions;
use crate::repo::Repo;
use crate::repo::lock::{LockGuard, LockKind};
use crate::restore::logical::{self, LoadOptions, LoadProgress, LoadReport};
use crate::restore::pitr::archive_check::{self, CheckReport};
use crate::restore::pitr::plan::{self, PitrPlan, Target};
use crate::restore::pitr::replay::{self, ReplayReport};
use crate::restore::pitr::resume::{self, Phase, Record, Resume, Start};

#[derive(Debug, Clone, Serialize)]
pub struct PitrReport {
    pub plan: PitrPlan,
    /// What the archive check read back before the target was touched (`None`: skipped).
    pub archive_check: Option<CheckReport>,
    /// What an interrupted run of this restore had left, which this run continued.
    pub resumed: Option<Resume>,
    /// The snapshot's load (`None`: an interrupted run had finished it).
    pub load: Option<LoadReport>,
    pub replay: ReplayReport,
    pub warnings: Vec<String>,
}

pub fn plan(
    repo: &Arc<Repo>,
    target: &Target,
    snapshot: Option<&str>,
    kind: plan::Kind,
) -> Result<PitrPlan> {
    plan::plan(repo, target, snapshot, kind)
}

/// A point-in-time restore into a server.
pub struct PitrRequest<'a> {
    pub target: &'a Target,
    /// A snapshot id, or `None` to take the newest one before the boundary.
    pub snapshot: Option<&'a str>,
    pub server: &'a ConnectOptions,
    pub load: &'a LoadOptions,
    pub engine: replay::Engine<'a>,
    /// Read back every archived byte the replay needs before touching the target.
    pub check_archive: bool,
}

/// What the caller shows while the restore runs.
pub struct PitrProgress<'a> {
    /// (files checked, files to check, bytes read)
    pub check: &'a dyn Fn(usize, usize, u64),
    pub load: &'a LoadProgress,
    pub replay: replay::Progress<'a>,
}

/// Checks the archive the plan needs, unless told not to.
pub fn check_archive(
    plan: &PitrPlan,
    enabled: bool,
    progress: &dyn Fn(usize, usize, u64),
) -> Result<Option<CheckReport>> {
    enabled
        .then(|| archive_check::check(&plan.needed, progress))
        .transpose()
}

pub fn run(
    repo: &Arc<Repo>,
    req: &PitrRequest<'_>,
    progress: &PitrProgress<'_>,
) -> Result<PitrReport> {
    if req.load.force {
        return Err(Error::Usage(
            "--force does not go with a point-in-time restore: it needs a fresh server (or the \
             one an interrupted run of the same restore left, which a rerun continues)"
                .into(),
        ));
    }
    let _lock = LockGuard::acquire(repo.storage().clone(), LockKind::Shared, "restore")?;
    let plan = plan::plan(repo, req.target, req.snapshot, plan::Kind::Logical)?;
    let snap = plan
        .snapshot_manifest
        .clone()
        .ok_or_else(|| Error::Internal("plan without snapshot".into()))?;
    if snap.method != "logical" {
        return Err(Error::Usage(format!(
            "snapshot {} was taken with --method {}; restore it with --datadir and --mysqld",
            snap.id, snap.method
        )));
    }
    let stop = plan
        .stop
        .clone()
        .ok_or_else(|| Error::Internal("plan without boundary".into()))?;
    // Everything is checked before the target changes: the plan above, the archive, the
    // target here.
    let archive_check = check_archive(&plan, req.check_archive, progress.check)?;
    let mut guard = resume::connect(req.server)?;
    resume::lock(&mut guard)?;
    replay::check_target(&mut guard)?;
    let resumed = match resume::prepare(&mut guard, &plan)? {
        Start::Fresh => {
            let server_id = guard
                .global_var("server_id")?
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| guard.unexpected("@@server_id", "not a number"))?;
            let record = Record {
                snapshot: plan.snapshot.clone(),
                boundary: plan.boundary(),
                server_id,
                phase: Phase::Load,
                settings: Vec::new(),
            };
            resume::begin(&mut guard, &record)?;
            None
        }
        Start::Resume(r) => {
            if r.earlier_boundary.is_some() {
                resume::set_boundary(&mut guard, &plan.boundary())?;
            }
            Some(r)
        }
    };
    let mut warnings = Vec::new();
    if resumed.as_ref().is_some_and(|r| r.settings_unknown) {
        warnings.push(
            "the interrupted run had finished the load but not recorded the server settings it \
             changed for it (local_infile, the redo log's size): they stay as they are now"
                .into(),
        );
    }
    let load = match &resumed {
        Some(r) if r.load_done => None,
        _ => {
            // The replay writes as much as the load: the load's settings stay until it ends.
            let load_opts = LoadOptions {
                keep_load_settings: true,
                ..req.load.clone()
            };
            let report = logical::load(repo, &snap, req.server, &load_opts, progress.load)?;
            crate::failpoint::hit("pitr-after-load");
            resume::loaded(&mut guard, &report.server_settings)?;
            Some(report)
        }
    };
    let settings = match (&load, &resumed) {
        (Some(l), _) => l.server_settings.clone(),
        (None, Some(r)) => r.settings.clone(),
        (None, None) => Vec::new(),
    };
    let replay = replay::run(
        req.engine,
        req.server,
        plan.replay_files(),
        stop,
        &plan.end_set,
        progress.replay,
    );
    logical::settings::put_back_variables_on(req.server, &settings, &mut warnings);
    // On failure the record stays: a rerun continues from what the target has.
    let replay = replay?;
    resume::finish(&mut guard)?;
    Ok(PitrReport {
        plan,
        archive_check,
        resumed,
        load,
        replay,
        warnings,
    })
}
