//! `myvault restore --to-time | --to-gtid | --before-gtid`: plan, then (unless `--plan`)
//! restore the chosen snapshot and replay the archive up to the boundary.

use std::sync::Arc;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::mysql::gtid::GtidSet;
use crate::mysql::wire::ConnectOptions;
use crate::repo::Repo;
use crate::repo::lock::{LockGuard, LockKind};
use crate::restore::logical::{self, LoadOptions, LoadProgress, LoadReport};
use crate::restore::pitr::plan::{self, PitrPlan, Target};
use crate::restore::pitr::replay::{self, ReplayReport};

#[derive(Debug, Clone, Serialize)]
pub struct PitrReport {
    pub plan: PitrPlan,
    pub load: LoadReport,
    pub replay: ReplayReport,
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
}

pub fn run(
    repo: &Arc<Repo>,
    req: &PitrRequest<'_>,
    load_progress: &LoadProgress,
    replay_progress: replay::Progress<'_>,
) -> Result<PitrReport> {
    let (target, snapshot, server, load_opts, engine) =
        (req.target, req.snapshot, req.server, req.load, req.engine);
    let _lock = LockGuard::acquire(repo.storage().clone(), LockKind::Shared, "restore")?;
    let plan = plan::plan(repo, target, snapshot, plan::Kind::Logical)?;
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
    // Everything is checked before the target changes: the plan above, and the target here.
    let mut s = logical::connect_loader(server, "utf8mb4")?;
    logical::check_target(&mut s, &snap.id, load_opts.force)?;
    drop(s);
    // The replay writes as much as the load: the load's settings stay until it is done.
    let load_opts = LoadOptions {
        keep_load_settings: true,
        ..load_opts.clone()
    };
    let mut load = logical::load(repo, &snap, server, &load_opts, load_progress)?;
    let expected =
        GtidSet::parse(&plan.expected_gtids).map_err(|e| Error::Internal(e.to_string()))?;
    let stop = plan
        .stop
        .clone()
        .ok_or_else(|| Error::Internal("plan without boundary".into()))?;
    let replay = replay::run(
        engine,
        server,
        plan.replay.clone(),
        stop,
        &expected,
        replay_progress,
    );
    logical::settings::put_back_variables_on(server, &load.server_settings, &mut load.warnings);
    let replay = replay?;
    Ok(PitrReport { plan, load, replay })
}
