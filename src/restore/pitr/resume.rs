//! What a point-in-time restore keeps on its target, so that a rerun of the same command
//! after a kill finishes the job instead of refusing a "non-empty" target: which restore it
//! is (snapshot and boundary), the target's own `server_id` (the applier engine may swap it),
//! its phase, and, once the load is done, the server settings the load changed and left for
//! the replay to put back.
//!
//! The record lives in the `myvault_pitr` schema, is written with `sql_log_bin = 0` (the
//! target's GTID state stays exactly the snapshot's plus what the replay applied) before
//! anything else changes on the target, and is dropped when the restore ends. Where the
//! replay had got to needs no record: the target's `gtid_executed` says it, and both replay
//! engines skip what the target has.

use serde::Serialize;

use super::plan::PitrPlan;
use super::replay::{CHANNEL, gtid_executed};
use crate::error::{Error, Result};
use crate::mysql::error::codes;
use crate::mysql::session::{Session, quote_str};
use crate::mysql::wire::ConnectOptions;
use crate::restore::PITR_SCHEMA;
use crate::restore::logical::progress::{self, State};
use crate::restore::logical::settings::SettingChange;
use crate::restore::logical::user_databases;

/// How far an interrupted run got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Load,
    Replay,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Load => "load",
            Phase::Replay => "replay",
        }
    }
}

/// The record of a restore on its target.
#[derive(Debug, Clone)]
pub struct Record {
    pub snapshot: String,
    /// As [`PitrPlan::boundary`] gives it.
    pub boundary: String,
    /// The target's `server_id` before the restore began.
    pub server_id: u64,
    pub phase: Phase,
    /// Settings the load changed and left for after the replay (phase `replay` only).
    pub settings: Vec<SettingChange>,
}

/// A session on the target for the record: nothing it writes reaches the binary log (the
/// loader's session settings, `sql_log_bin = 0` among them).
pub fn connect(target: &ConnectOptions) -> Result<Session> {
    crate::restore::logical::connect_loader(target, "utf8mb4")
}

/// Holds the target for this restore while `s` lives: a second run into the same target
/// (a rerun typed while the first still runs) is refused instead of fighting over it. The
/// server frees the lock when the session ends, also when the process is killed.
pub fn lock(s: &mut Session) -> Result<()> {
    // The session idles through the load and the replay: keep the server from closing it.
    s.exec("SET SESSION wait_timeout = 31536000")?;
    let got = s.query_value(&format!("SELECT GET_LOCK({}, 0)", quote_str(PITR_SCHEMA)))?;
    if got.as_deref() != Some("1") {
        return Err(Error::TargetRefused(
            "another myvault restore is running into this target; wait for it to end".into(),
        ));
    }
    Ok(())
}

fn missing_schema(e: &crate::mysql::Error) -> bool {
    // No such table; 1049: no such database.
    matches!(e.server_code(), Some(codes::NO_SUCH_TABLE) | Some(1049))
}

pub fn read(s: &mut Session) -> Result<Option<Record>> {
    let rows = match s.query(&format!(
        "SELECT snapshot, boundary, server_id, phase FROM {PITR_SCHEMA}.restore"
    )) {
        Ok(rows) => rows,
        Err(e) if missing_schema(&e) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let bad = |what: &str| {
        Error::TargetRefused(format!(
            "the target's record of an interrupted restore ({PITR_SCHEMA}.restore) has no valid {what}; \
             DROP DATABASE {PITR_SCHEMA} and start over on a fresh server"
        ))
    };
    let phase = match row.text_at(3).as_deref() {
        Some("load") => Phase::Load,
        Some("replay") => Phase::Replay,
        _ => return Err(bad("phase")),
    };
    let mut record = Record {
        snapshot: row.text_at(0).ok_or_else(|| bad("snapshot"))?,
        boundary: row.text_at(1).ok_or_else(|| bad("boundary"))?,
        server_id: row.u64_at(2).ok_or_else(|| bad("server_id"))?,
        phase,
        settings: Vec::new(),
    };
    for r in s
        .query(&format!(
            "SELECT name, before_value, during_value FROM {PITR_SCHEMA}.setting ORDER BY seq"
        ))?
        .iter()
    {
        record.settings.push(SettingChange {
            name: r.text_at(0).ok_or_else(|| bad("setting"))?,
            before: r.text_at(1).ok_or_else(|| bad("setting"))?,
            during: r.text_at(2).unwrap_or_default(),
        });
    }
    Ok(Some(record))
}

/// Records the restore before it changes anything else on the target (idempotent).
pub fn begin(s: &mut Session, record: &Record) -> Result<()> {
    s.exec(&format!("CREATE DATABASE IF NOT EXISTS {PITR_SCHEMA}"))?;
    s.exec(&format!(
        "CREATE TABLE IF NOT EXISTS {PITR_SCHEMA}.restore (id TINYINT NOT NULL PRIMARY KEY, \
         snapshot VARCHAR(64) NOT NULL, boundary TEXT NOT NULL, server_id BIGINT UNSIGNED NOT NULL, \
         phase VARCHAR(16) NOT NULL) ENGINE=InnoDB"
    ))?;
    s.exec(&format!(
        "CREATE TABLE IF NOT EXISTS {PITR_SCHEMA}.setting (seq INT NOT NULL PRIMARY KEY, \
         name VARCHAR(64) NOT NULL, before_value TEXT NOT NULL, during_value TEXT NOT NULL) ENGINE=InnoDB"
    ))?;
    s.exec(&format!(
        "REPLACE INTO {PITR_SCHEMA}.restore VALUES (1, {}, {}, {}, {})",
        quote_str(&record.snapshot),
        quote_str(&record.boundary),
        record.server_id,
        quote_str(record.phase.as_str())
    ))?;
    Ok(())
}

/// Records that the load is done, with the settings it left for after the replay.
pub fn loaded(s: &mut Session, settings: &[SettingChange]) -> Result<()> {
    s.exec("START TRANSACTION")?;
    s.exec(&format!("DELETE FROM {PITR_SCHEMA}.setting"))?;
    for (i, v) in settings.iter().enumerate() {
        s.exec(&format!(
            "INSERT INTO {PITR_SCHEMA}.setting VALUES ({i}, {}, {}, {})",
            quote_str(&v.name),
            quote_str(&v.before),
            quote_str(&v.during)
        ))?;
    }
    s.exec(&format!(
        "UPDATE {PITR_SCHEMA}.restore SET phase = 'replay'"
    ))?;
    s.exec("COMMIT")?;
    Ok(())
}

/// A rerun with another boundary that the target can still reach continues towards it.
pub fn set_boundary(s: &mut Session, boundary: &str) -> Result<()> {
    s.exec(&format!(
        "UPDATE {PITR_SCHEMA}.restore SET boundary = {}",
        quote_str(boundary)
    ))?;
    Ok(())
}

/// The restore is complete: the record goes.
pub fn finish(s: &mut Session) -> Result<()> {
    s.exec(&format!("DROP DATABASE IF EXISTS {PITR_SCHEMA}"))?;
    Ok(())
}

/// Stops and removes the replay channel a killed run left (its receiver retrying a source
/// that is gone, its applier perhaps still applying what it had received). Returns whether
/// there was one. `STOP REPLICA` waits for the transaction being applied, so the target's
/// `gtid_executed` is settled afterwards.
pub fn remove_channel(s: &mut Session) -> Result<bool> {
    if !crate::mysql::replication::channels(s)?
        .iter()
        .any(|c| c == CHANNEL)
    {
        return Ok(false);
    }
    let ch = quote_str(CHANNEL);
    s.exec(&format!("STOP REPLICA FOR CHANNEL {ch}"))?;
    s.exec(&format!("RESET REPLICA ALL FOR CHANNEL {ch}"))?;
    Ok(true)
}

/// What this run starts from.
#[derive(Debug)]
pub enum Start {
    /// Nothing of a point-in-time restore is on the target (an interrupted load of the same
    /// snapshot, which the load resumes, aside).
    Fresh,
    /// An interrupted run of this restore: continue it.
    Resume(Resume),
}

#[derive(Debug, Clone, Serialize)]
pub struct Resume {
    /// The phase the interrupted run had reached.
    pub phase: Phase,
    /// The snapshot is loaded; only the replay is left.
    pub load_done: bool,
    /// The target's `gtid_executed` as the interrupted run left it (after its channel
    /// stopped).
    pub gtid_executed: String,
    /// The interrupted run's replay channel was stopped and removed.
    pub channel_removed: bool,
    /// The interrupted run was restoring to another boundary, which this run replaces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub earlier_boundary: Option<String>,
    /// The load had finished but its kept settings were not recorded: they stay as they are.
    pub settings_unknown: bool,
    #[serde(skip)]
    pub settings: Vec<SettingChange>,
}

/// Decides, before anything on the target changes (but a channel a killed run left, which is
/// stopped and removed), whether this restore starts afresh, continues an interrupted run of
/// itself, or must refuse: in that last case the error says in one line what the target
/// holds and what to do. `--force` is never the answer for a target a restore left.
pub fn prepare(s: &mut Session, plan: &PitrPlan) -> Result<Start> {
    let record = read(s)?;
    let channel_removed = remove_channel(s)?;
    let Some(record) = record else {
        if channel_removed {
            return Err(refuse(
                s,
                "it has a replay channel left by a restore that recorded nothing on it (an older \
                 myvault, or its record was dropped)",
                true,
                "start over on a fresh server",
            ));
        }
        check_fresh(s, plan)?;
        return Ok(Start::Fresh);
    };
    if record.snapshot != plan.snapshot {
        return Err(refuse(
            s,
            &format!(
                "it holds an interrupted restore of snapshot {} ({}), not of {}",
                record.snapshot, record.boundary, plan.snapshot
            ),
            channel_removed,
            "run that restore's command again to finish it, or start over on a fresh server",
        ));
    }
    // What the killed run's applier had swapped; the replay swaps again if it must.
    let now_id = s
        .global_var("server_id")?
        .and_then(|v| v.parse::<u64>().ok());
    if now_id != Some(record.server_id) {
        s.exec(&format!("SET GLOBAL server_id = {}", record.server_id))?;
    }
    let have = gtid_executed(s)?;
    let load_in_progress = matches!(progress::read(s, &plan.snapshot)?, State::Resuming(_));
    // Killed between the load's end and its record: the load's traces are gone, its data
    // and GTID state are there.
    let load_done = match record.phase {
        Phase::Replay => true,
        Phase::Load => !load_in_progress && (!have.is_empty() || !user_databases(s)?.is_empty()),
    };
    if load_done && !(plan.snapshot_set.is_subset(&have) && have.is_subset(&plan.end_set)) {
        return Err(refuse(
            s,
            &format!(
                "it holds an interrupted restore of snapshot {} ({}) whose gtid_executed is not \
                 between the snapshot's ({}) and this plan's end state ({}): it went past this \
                 boundary, or something else wrote to it",
                plan.snapshot, record.boundary, plan.snapshot_set, plan.end_set
            ),
            channel_removed,
            "rerun it with a boundary it has not passed (its own, say), or start over on a fresh \
             server",
        ));
    }
    let boundary = plan.boundary();
    Ok(Start::Resume(Resume {
        phase: record.phase,
        load_done,
        gtid_executed: have.to_string(),
        channel_removed,
        earlier_boundary: (record.boundary != boundary).then(|| record.boundary.clone()),
        settings_unknown: load_done && record.phase == Phase::Load,
        settings: record.settings,
    }))
}

/// A target nothing of a point-in-time restore is on must be empty: no databases, no GTIDs.
/// A load of the same snapshot that was interrupted is continued by the load itself.
fn check_fresh(s: &mut Session, plan: &PitrPlan) -> Result<()> {
    if let State::Resuming(_) = progress::read(s, &plan.snapshot)? {
        return Ok(());
    }
    let dbs = user_databases(s)?;
    if !dbs.is_empty() {
        return Err(Error::TargetRefused(format!(
            "the target is not empty (databases: {}); a point-in-time restore needs a fresh server",
            dbs.join(", ")
        )));
    }
    let have = gtid_executed(s)?;
    if !have.is_empty() {
        return Err(Error::TargetRefused(format!(
            "the target has executed GTIDs ({have}), so it cannot take the snapshot's; run \
             RESET BINARY LOGS AND GTIDS (8.0: RESET MASTER) on the fresh target first"
        )));
    }
    Ok(())
}

/// The one line that says what the target holds and what to do, when this run cannot
/// continue what is on it.
fn refuse(s: &mut Session, why: &str, channel_removed: bool, todo: &str) -> Error {
    let gtids = gtid_executed(s)
        .map(|g| g.to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"));
    let dbs = user_databases(s)
        .map(|d| d.join(", "))
        .unwrap_or_else(|e| format!("unknown ({e})"));
    let channel = if channel_removed {
        format!("its replication channel {CHANNEL} was stopped and removed")
    } else {
        "no replication channel of myvault is on it".to_string()
    };
    Error::TargetRefused(format!(
        "the target cannot be restored into: {why}; it has gtid_executed = {}, databases: {}; \
         {channel}; {todo}",
        if gtids.is_empty() { "(empty)" } else { &gtids },
        if dbs.is_empty() { "(none)" } else { &dbs },
    ))
}
