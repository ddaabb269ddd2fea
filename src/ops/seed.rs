//! `myvault seed-replica`: a new replica of a running source, from the repository's newest
//! snapshot (logical into a running target, or physical into a data directory) or by a
//! direct clone. Planned and checked first, so `--plan` shows it all and changes nothing.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::mysql::gtid::GtidSet;
use crate::mysql::privileges;
use crate::mysql::session::Session;
use crate::mysql::wire::ConnectOptions;
use crate::repo::Repo;
use crate::repo::manifest::SnapshotManifest;
use crate::restore::datadir::Owner;
use crate::restore::logical::settings::put_back_variables_on;
use crate::restore::logical::{LoadOptions, LoadProgress};
use crate::secret::Secret;
use crate::seed::checksum::{self, Verified};
use crate::seed::preflight::{self, SourceState, TargetState};
use crate::seed::resume::{self, Earlier};
use crate::seed::{attach, direct_clone};

/// How the target gets its data.
pub enum Fill {
    /// A logical snapshot loaded into the running, empty target.
    Logical,
    /// A clone or cold snapshot restored as the target's data directory, which is then
    /// started (by `start_command`, or by the operator) and reached at the target URL.
    Datadir { dir: PathBuf, owner: Option<Owner> },
    /// `CLONE INSTANCE FROM` the source, run on the target.
    DirectClone,
}

pub struct SeedRequest<'a> {
    pub source: &'a ConnectOptions,
    pub target: &'a ConnectOptions,
    pub repo: Option<&'a Arc<Repo>>,
    pub snapshot: &'a str,
    pub fill: Fill,
    /// The replication account, connecting to the source as myvault does.
    pub replication: &'a ConnectOptions,
    /// The source's address as the replica reaches it.
    pub replica_source: (&'a str, u16),
    pub start_command: Option<&'a str>,
    pub start_timeout: Duration,
    pub super_read_only: bool,
    pub wait: Option<Duration>,
    pub verify: bool,
    pub force: bool,
    pub load: LoadOptions,
    pub lock_wait_timeout: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SeedPlan {
    pub method: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_gtids: Option<String>,
    pub source: String,
    pub source_server_id: u64,
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_server_id: Option<u64>,
    pub replication_source: String,
    pub replication_user: String,
    pub steps: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SeedReport {
    pub plan: SeedPlan,
    pub fill_seconds: f64,
    pub server_id: u64,
    pub server_uuid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caught_up_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<Verified>,
    /// What the load could not do or put back (as the restore reports them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

fn repo<'a>(req: &SeedRequest<'a>) -> Result<&'a Arc<Repo>> {
    req.repo.ok_or_else(|| {
        Error::Usage(
            "seeding from a snapshot needs --repo (or --clone to clone the source directly)".into(),
        )
    })
}

/// The newest snapshot of the right kind, or the one asked for.
fn pick_snapshot(repo: &Repo, wanted: &str, physical: bool) -> Result<SnapshotManifest> {
    let fits = |s: &SnapshotManifest| {
        if physical {
            s.method == "clone" || s.method == "cold"
        } else {
            s.method == "logical"
        }
    };
    let kind = if physical { "clone or cold" } else { "logical" };
    if wanted != "latest" {
        let snap = repo.find_snapshot(wanted)?;
        if !fits(&snap) {
            return Err(Error::Usage(format!(
                "snapshot {} is a {} snapshot; this seeding method takes a {kind} one",
                snap.id, snap.method
            )));
        }
        return Ok(snap);
    }
    repo.snapshots()?
        .into_iter()
        .rev()
        .find(fits)
        .ok_or_else(|| {
            Error::NotFound(format!(
                "the repository has no {kind} snapshot to seed from"
            ))
        })
}

fn snapshot_gtids(snap: &SnapshotManifest) -> Result<GtidSet> {
    GtidSet::parse(snap.gtid_executed.as_deref().unwrap_or_default())
        .map_err(|e| Error::Internal(format!("snapshot {}: {e}", snap.id)))
}

struct Checked {
    plan: SeedPlan,
    source: SourceState,
    snapshot: Option<SnapshotManifest>,
    /// With --force, what to undo on a used target before filling it (a logical load or a
    /// clone).
    detach: attach::Detach,
    /// What an interrupted run of the same seeding left (logical seeding without --force).
    earlier: Earlier,
}

/// Everything that would make seeding fail, checked without changing anything.
fn check(req: &SeedRequest<'_>) -> Result<Checked> {
    let mut src = Session::connect(req.source)?;
    let source = preflight::source_state(&mut src)?;
    preflight::check_replication_account(req.replication)?;
    let target_state = |req: &SeedRequest<'_>| -> Result<(Session, TargetState)> {
        let mut tgt = Session::connect(req.target)?;
        let state = preflight::target_state(&mut tgt)?;
        preflight::check_identity(&source, &state, req.force)?;
        Ok((tgt, state))
    };
    let mut detach = attach::Detach::default();
    let mut earlier = Earlier::Nothing;
    let (method, snapshot, target_id, mut steps) = match &req.fill {
        Fill::Logical => {
            let snap = pick_snapshot(repo(req)?, req.snapshot, false)?;
            let snap_gtids = snapshot_gtids(&snap)?;
            preflight::check_binlogs_kept(&source, &snap_gtids)?;
            let mut tgt = Session::connect(req.target)?;
            let state = preflight::target_state(&mut tgt)?;
            if !req.force {
                let attachment = (
                    req.replica_source.0,
                    req.replica_source.1,
                    req.replication.user.as_str(),
                );
                earlier = resume::earlier(&mut tgt, &state, &source, &snap_gtids, attachment)?;
            }
            let attached = earlier == Earlier::Attached;
            preflight::check_identity(&source, &state, req.force || attached)?;
            if earlier == Earlier::Nothing {
                crate::restore::logical::check_target(&mut tgt, &snap.id, req.force)?;
            }
            if req.force {
                detach = attach::Detach {
                    channels: !state.channels.is_empty(),
                    read_only: state.read_only,
                    gtids: !state.gtid_executed.is_empty(),
                };
            }
            let mut steps = detach.steps();
            steps.push(earlier.step(&snap.id).unwrap_or_else(|| {
                format!(
                    "load logical snapshot {} into {} and set GTID_PURGED to its GTID set",
                    snap.id,
                    tgt.address()
                )
            }));
            ("logical", Some(snap), Some(state.server_id), steps)
        }
        Fill::Datadir { dir, .. } => {
            let snap = pick_snapshot(repo(req)?, req.snapshot, true)?;
            preflight::check_binlogs_kept(&source, &snapshot_gtids(&snap)?)?;
            match crate::restore::files::is_empty_destination(dir) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(Error::TargetRefused(format!(
                        "{} is not empty; a replica's data directory is restored into a new or empty one",
                        dir.display()
                    )));
                }
                Err(e) => return Err(Error::io(format!("cannot read {}", dir.display()), e)),
            }
            let mut steps = vec![format!(
                "restore {} snapshot {} into {} (auto.cnf removed: the new server gets its own server_uuid)",
                snap.method,
                snap.id,
                dir.display()
            )];
            steps.push(match req.start_command {
                Some(c) => format!("start the server with: {c}"),
                None => format!(
                    "wait up to {} s for a server to be started on it",
                    req.start_timeout.as_secs()
                ),
            });
            steps.push("check its server_id and server_uuid".into());
            ("physical", Some(snap), None, steps)
        }
        Fill::DirectClone => {
            let (mut tgt, state) = target_state(req)?;
            preflight::check_empty(&state, req.force)?;
            preflight::check_same_series(&source, &state)?;
            privileges::require(
                &mut src,
                direct_clone::DONOR_NEEDS,
                "be the donor of a clone",
            )?;
            privileges::require(&mut tgt, direct_clone::RECIPIENT_NEEDS, "receive a clone")?;
            // A replica being rebuilt: super_read_only refuses the clone (and the plugin's
            // installation). Its GTIDs need no reset: the clone brings the source's.
            if req.force {
                detach = attach::Detach {
                    channels: !state.channels.is_empty(),
                    read_only: state.read_only,
                    gtids: false,
                };
            }
            let mut steps = detach.steps();
            steps.extend([
                "install the clone plugin on both servers where it is missing".into(),
                format!(
                    "CLONE INSTANCE FROM {}:{} on {} (replaces all of its data and accounts with the source's)",
                    req.replica_source.0,
                    req.replica_source.1,
                    tgt.address()
                ),
                match req.start_command {
                    Some(c) => format!("wait for its restart, running `{c}` if it stops"),
                    None => "wait for it to restart (it must run under a supervisor such as systemd, or be started by hand)".into(),
                },
            ]);
            ("clone", None, Some(state.server_id), steps)
        }
    };
    if earlier != Earlier::Attached {
        if req.super_read_only {
            steps.push("SET PERSIST super_read_only = ON".into());
        }
        steps.push(format!(
            "CHANGE REPLICATION SOURCE TO {}:{} as {} with SOURCE_AUTO_POSITION = 1, then START REPLICA",
            req.replica_source.0, req.replica_source.1, req.replication.user
        ));
    }
    if let Some(w) = req.wait {
        steps.push(format!(
            "wait up to {} s until it has caught up",
            w.as_secs()
        ));
        if req.verify {
            steps.push("compare every table's rows with the source's at one GTID point".into());
        }
    }
    let plan = SeedPlan {
        method,
        snapshot: snapshot.as_ref().map(|s| s.id.clone()),
        snapshot_gtids: snapshot.as_ref().and_then(|s| s.gtid_executed.clone()),
        source: src.address().to_string(),
        source_server_id: source.server_id,
        target: match &req.fill {
            Fill::Datadir { dir, .. } => format!(
                "{} (then {}:{})",
                dir.display(),
                req.target.host,
                req.target.port
            ),
            _ => format!("{}:{}", req.target.host, req.target.port),
        },
        target_server_id: target_id,
        replication_source: format!("{}:{}", req.replica_source.0, req.replica_source.1),
        replication_user: req.replication.user.clone(),
        steps,
    };
    Ok(Checked {
        plan,
        source,
        snapshot,
        detach,
        earlier,
    })
}

pub fn plan(req: &SeedRequest<'_>) -> Result<SeedPlan> {
    check(req).map(|c| c.plan)
}

/// Waits until a server answers at the target address.
fn wait_for_target(target: &ConnectOptions, timeout: Duration) -> Result<Session> {
    let deadline = Instant::now() + timeout;
    loop {
        match Session::connect(target) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() > deadline => {
                return Err(Error::TargetRefused(format!(
                    "no server answered at {}:{} within {} s after the data directory was restored ({e})",
                    target.host,
                    target.port,
                    timeout.as_secs()
                )));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

pub fn run(req: &SeedRequest<'_>, status: &dyn Fn(&str)) -> Result<SeedReport> {
    let checked = check(req)?;
    let started = Instant::now();
    let mut warnings = Vec::new();
    // Server settings a logical load changed (a larger redo log, local_infile) and left for
    // catching up, which writes as much again; put back once the seeding has ended, caught up
    // and verified or failed.
    let mut kept_settings = Vec::new();
    if checked.detach.any() {
        status("detaching the existing replica (--force)");
        checked.detach.run(&mut Session::connect(req.target)?)?;
    }
    match &req.fill {
        Fill::Logical if checked.earlier != Earlier::Nothing => {
            status("continuing an earlier seeding of this target");
            warnings.extend(checked.earlier.warning());
        }
        Fill::Logical => {
            let snap = checked
                .snapshot
                .as_ref()
                .ok_or_else(|| Error::Internal("no snapshot".into()))?;
            status(&format!("loading snapshot {}", snap.id));
            let load = LoadOptions {
                keep_load_settings: req.wait.is_some(),
                ..req.load.clone()
            };
            let report = crate::ops::restore_logical::run(
                repo(req)?,
                &snap.id,
                req.target,
                &load,
                &LoadProgress::default(),
            )?;
            warnings = report.warnings;
            if load.keep_load_settings {
                kept_settings = report.server_settings;
            }
        }
        Fill::Datadir { dir, owner } => {
            let snap = checked
                .snapshot
                .as_ref()
                .ok_or_else(|| Error::Internal("no snapshot".into()))?;
            status(&format!(
                "restoring snapshot {} into {}",
                snap.id,
                dir.display()
            ));
            let request = crate::ops::restore_datadir::DatadirRequest {
                snapshot: Some(&snap.id),
                dir,
                owner: *owner,
                keep_uuid: false,
                engine: crate::restore::pitr::replay::Engine::Applier { listen: None },
                pitr: None,
                // Without a replay no server is started here to check on.
                content_check: false,
                jobs: 1,
            };
            crate::ops::restore_datadir::run(repo(req)?, &request, &|_, _, _| {})?;
            match req.start_command {
                Some(cmd) => {
                    status(&format!("starting the server: {cmd}"));
                    direct_clone::run_start_command(cmd)?;
                }
                None => status(&format!(
                    "waiting for a server to be started on {} at {}:{}",
                    dir.display(),
                    req.target.host,
                    req.target.port
                )),
            }
            wait_for_target(req.target, req.start_timeout)?;
        }
        Fill::DirectClone => {
            let mut src = Session::connect(req.source)?;
            let mut tgt = Session::connect(req.target)?;
            direct_clone::prepare(&mut src, &mut tgt)?;
            let donor = direct_clone::Donor {
                host: req.replica_source.0,
                port: req.replica_source.1,
                user: &req.source.user,
                password: &req.source.password,
            };
            direct_clone::run(
                req.target,
                &donor,
                req.start_command,
                req.start_timeout,
                status,
            )?;
        }
    }
    let fill_seconds = started.elapsed().as_secs_f64();
    crate::failpoint::hit("seed-after-load");
    let result = attach_and_follow(req, checked, fill_seconds, status);
    put_back_variables_on(req.target, &kept_settings, &mut warnings);
    let mut report = result?;
    report.warnings = warnings;
    Ok(report)
}

/// Makes the filled target a replica of the source, and with `--wait` waits until it has
/// caught up and (unless `--no-verify`) compares every table with the source.
fn attach_and_follow(
    req: &SeedRequest<'_>,
    checked: Checked,
    fill_seconds: f64,
    status: &dyn Fn(&str),
) -> Result<SeedReport> {
    let mut tgt = Session::connect(req.target)?;
    let state = preflight::target_state(&mut tgt)?;
    let attached = checked.earlier == Earlier::Attached;
    // A physical copy brings the source's state along; this is where a copied identity shows.
    preflight::check_identity(&checked.source, &state, req.force || attached)?;
    if !attached {
        status("attaching the replica");
        attach::attach(
            &mut tgt,
            &attach::Attachment {
                host: req.replica_source.0,
                port: req.replica_source.1,
                user: &req.replication.user,
                password: &req.replication.password,
                tls: Session::connect(req.replication)?.is_tls(),
                super_read_only: req.super_read_only,
            },
        )?;
        crate::failpoint::hit("seed-after-attach");
    } else {
        status("starting replication on the replica an earlier run attached");
        attach::restart(&mut tgt)?;
    }
    let mut report = SeedReport {
        plan: checked.plan,
        fill_seconds,
        server_id: state.server_id,
        server_uuid: state.server_uuid,
        caught_up_seconds: None,
        verified: None,
        warnings: Vec::new(),
    };
    let Some(timeout) = req.wait else {
        return Ok(report);
    };
    let waited = Instant::now();
    let mut src = Session::connect(req.source)?;
    attach::wait_caught_up(&mut src, &mut tgt, timeout, &|missing| {
        status(&format!("catching up: {missing} transactions to go"))
    })?;
    report.caught_up_seconds = Some(waited.elapsed().as_secs_f64());
    attach::healthy(&mut tgt)?;
    if req.verify {
        status("comparing every table with the source at one GTID point");
        report.verified = Some(checksum::verify(
            req.source,
            req.target,
            req.lock_wait_timeout,
            timeout,
        )?);
        attach::healthy(&mut tgt)?;
    }
    Ok(report)
}

/// The replication account: given, or the one myvault uses for the source.
pub fn replication_account(
    source: &ConnectOptions,
    user: Option<&str>,
    password: Option<Secret>,
) -> ConnectOptions {
    let mut o = source.clone();
    if let Some(u) = user {
        o.user = u.to_string();
        o.password = password.unwrap_or_default();
    }
    o
}
