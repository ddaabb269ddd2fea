//! What seeding needs from the source and the target, read once and checked before
//! anything is changed. Each refusal names the fix.

use crate::binlog::source;
use crate::error::{Error, Result};
use crate::mysql::gtid::GtidSet;
use crate::mysql::privileges;
use crate::mysql::session::Session;
use crate::mysql::wire::ConnectOptions;

#[derive(Debug, Clone)]
pub struct SourceState {
    pub server_id: u64,
    pub server_uuid: String,
    /// major.minor: a clone needs donor and recipient of the same series.
    pub series: (u32, u32),
    pub version: String,
    pub gtid_executed: GtidSet,
    pub gtid_purged: GtidSet,
    /// Registered replicas (and streamers): (server_id, server_uuid when reported).
    pub replicas: Vec<(u64, String)>,
}

#[derive(Debug, Clone)]
pub struct TargetState {
    pub server_id: u64,
    pub server_uuid: String,
    pub series: (u32, u32),
    pub version: String,
    pub gtid_mode: bool,
    pub databases: Vec<String>,
    pub gtid_executed: GtidSet,
    pub channels: Vec<String>,
    /// `super_read_only` or `read_only` is on (an earlier seeding leaves replicas so).
    pub read_only: bool,
}

fn gtid_var(s: &mut Session, name: &str) -> Result<GtidSet> {
    let text = s.global_var(name)?.unwrap_or_default();
    GtidSet::parse(&text).map_err(|e| s.unexpected(name, e.to_string()).into())
}

fn series(s: &Session) -> (u32, u32) {
    let v = &s.info().version;
    (v.0, v.1)
}

pub fn source_state(s: &mut Session) -> Result<SourceState> {
    if s.info().is_mariadb() {
        return Err(Error::Usage(format!(
            "{} is MariaDB: seed-replica attaches replicas with MySQL's GTID auto-positioning; \
             restore a snapshot with `myvault restore` and set up MariaDB replication by hand",
            s.address()
        )));
    }
    let facts = source::facts(s)?;
    if !facts.gtid_mode {
        return Err(Error::SourceNotReady(format!(
            "{} has gtid_mode OFF; a seeded replica is attached by GTID auto-positioning. \
             Enable GTIDs on the source (enforce_gtid_consistency=ON, then gtid_mode step by step to ON)",
            s.address()
        )));
    }
    let replicas = s
        .query(s.info().replicas_sql())?
        .iter()
        .filter_map(|r| {
            let id = r.u64("Server_Id").or_else(|| r.u64("Server_id"))?;
            let uuid = r
                .text("Replica_UUID")
                .or_else(|| r.text("Slave_UUID"))
                .unwrap_or_default();
            Some((id, uuid))
        })
        .collect();
    Ok(SourceState {
        server_id: facts.server_id,
        server_uuid: facts.server_uuid,
        series: series(s),
        version: facts.version,
        gtid_executed: gtid_var(s, "gtid_executed")?,
        gtid_purged: gtid_var(s, "gtid_purged")?,
        replicas,
    })
}

pub fn target_state(s: &mut Session) -> Result<TargetState> {
    if s.info().is_mariadb() {
        return Err(Error::Usage(format!(
            "the target {} is MariaDB; seed-replica seeds MySQL replicas",
            s.address()
        )));
    }
    let vars = s.global_vars(&[
        "server_id",
        "server_uuid",
        "gtid_mode",
        "read_only",
        "super_read_only",
    ])?;
    let on = |name: &str| {
        vars.get(name)
            .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("ON"))
    };
    Ok(TargetState {
        server_id: vars
            .get("server_id")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        server_uuid: vars.get("server_uuid").cloned().unwrap_or_default(),
        series: series(s),
        version: s.info().version_string.clone(),
        gtid_mode: on("gtid_mode"),
        read_only: on("read_only") || on("super_read_only"),
        databases: crate::restore::logical::user_databases(s)?,
        gtid_executed: gtid_var(s, "gtid_executed")?,
        channels: crate::mysql::replication::channels(s)?,
    })
}

/// The target must be a new member: its own server_id and server_uuid, GTIDs on, and no
/// replication set up already.
pub fn check_identity(src: &SourceState, tgt: &TargetState, force: bool) -> Result<()> {
    // The target itself, already registered by an earlier run, is no conflict.
    let itself = |(id, uuid): &&(u64, String)| *id == tgt.server_id && *uuid == tgt.server_uuid;
    let others: Vec<&(u64, String)> = src.replicas.iter().filter(|r| !itself(r)).collect();
    let mut taken: Vec<u64> = std::iter::once(src.server_id)
        .chain(others.iter().map(|(id, _)| *id))
        .collect();
    taken.sort_unstable();
    taken.dedup();
    let free = taken.last().copied().unwrap_or(0) + 1;
    if tgt.server_id == 0 || taken.contains(&tgt.server_id) {
        return Err(Error::TargetRefused(format!(
            "the target's server_id {} is {}; give it its own: SET PERSIST server_id = {free} (ids in use: {})",
            tgt.server_id,
            if tgt.server_id == 0 {
                "0, which cannot replicate".to_string()
            } else {
                "already used by the source or one of its replicas".to_string()
            },
            taken
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if tgt.server_uuid == src.server_uuid || others.iter().any(|(_, u)| *u == tgt.server_uuid) {
        return Err(Error::TargetRefused(format!(
            "the target has server_uuid {}, which the source or one of its replicas already has \
             (a copied auto.cnf); stop it, delete auto.cnf from its data directory and start it again",
            tgt.server_uuid
        )));
    }
    if !tgt.gtid_mode {
        return Err(Error::TargetRefused(
            "the target has gtid_mode OFF; start it with gtid_mode=ON and enforce_gtid_consistency=ON".into(),
        ));
    }
    if !tgt.channels.is_empty() && !force {
        return Err(Error::TargetRefused(format!(
            "the target already has replication configured (channel(s): {}); \
             run RESET REPLICA ALL on it first, or pass --force",
            tgt.channels
                .iter()
                .map(|c| if c.is_empty() { "default" } else { c })
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(())
}

/// A target about to be filled must hold nothing worth keeping.
pub fn check_empty(tgt: &TargetState, force: bool) -> Result<()> {
    if force {
        return Ok(());
    }
    if !tgt.databases.is_empty() {
        return Err(Error::TargetRefused(format!(
            "the target is not empty (databases: {}); seed into an empty server, or pass --force",
            tgt.databases.join(", ")
        )));
    }
    if !tgt.gtid_executed.is_empty() {
        return Err(Error::TargetRefused(format!(
            "the target has executed GTIDs ({}); run RESET BINARY LOGS AND GTIDS on it first, or pass --force",
            tgt.gtid_executed
        )));
    }
    Ok(())
}

/// A clone copies InnoDB's files as they are: donor and recipient must be the same series.
pub fn check_same_series(src: &SourceState, tgt: &TargetState) -> Result<()> {
    if src.series != tgt.series {
        return Err(Error::TargetRefused(format!(
            "the source runs MySQL {} and the target {}: a clone needs both of the same series ({}.{}); \
             install that version on the target, or seed from a logical snapshot",
            src.version, tgt.version, src.series.0, src.series.1
        )));
    }
    Ok(())
}

/// The replica will ask the source for everything after `snapshot`: the source must still
/// have it in its binary logs.
pub fn check_binlogs_kept(src: &SourceState, snapshot: &GtidSet) -> Result<()> {
    let lost = src.gtid_purged.subtract(snapshot);
    if !lost.is_empty() {
        return Err(Error::BinlogGap(format!(
            "the source has purged binary logs the new replica would need: {lost} are neither in the snapshot \
             nor in the source's binary logs. Take a new snapshot (myvault backup) or seed with --clone"
        )));
    }
    Ok(())
}

/// The account the replica will use must log in to the source and may replicate.
pub fn check_replication_account(opts: &ConnectOptions) -> Result<()> {
    let mut s = Session::connect(opts)?;
    privileges::require(
        &mut s,
        &[("REPLICATION SLAVE", "receive the binary log")],
        "serve as the replication account",
    )
}
