//! Making the filled target a replica: read-only, pointed at the source with GTID
//! auto-positioning, started, and watched until it has caught up.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::mysql::gtid::GtidSet;
use crate::mysql::replication::channel_error;
use crate::mysql::session::{Session, quote_str};
use crate::secret::Secret;

pub struct Attachment<'a> {
    /// The source as the replica reaches it.
    pub host: &'a str,
    pub port: u16,
    pub user: &'a str,
    pub password: &'a Secret,
    /// Replicate over TLS (as myvault reached the source).
    pub tls: bool,
    pub super_read_only: bool,
}

/// What `--force` undoes on a used target before it is filled, so that it comes out as a new
/// replica: its replication stopped and forgotten, writes allowed, and (before a logical load)
/// its own binlogs and GTIDs dropped (GTID_PURGED must then be the snapshot's, or auto-
/// positioning would skip or repeat transactions; a clone brings the source's instead).
/// Writes are allowed with SET GLOBAL, not persisted: should the seeding die, a restart brings
/// the server back read-only; [`attach`] persists the final setting.
#[derive(Debug, Clone, Copy, Default)]
pub struct Detach {
    pub channels: bool,
    pub read_only: bool,
    pub gtids: bool,
}

impl Detach {
    /// Whether there is anything to undo.
    pub fn any(&self) -> bool {
        self.channels || self.read_only || self.gtids
    }

    /// The plan's lines.
    pub fn steps(&self) -> Vec<String> {
        let mut steps = Vec::new();
        if self.channels {
            steps.push("STOP REPLICA and RESET REPLICA ALL on the target (--force)".into());
        }
        if self.read_only {
            steps.push(
                "SET GLOBAL super_read_only = OFF on the target while it is filled (--force)"
                    .into(),
            );
        }
        if self.gtids {
            steps.push(
                "RESET BINARY LOGS AND GTIDS on the target: its binlogs and executed GTIDs are dropped (--force)"
                    .into(),
            );
        }
        steps
    }

    pub fn run(&self, tgt: &mut Session) -> Result<()> {
        if self.channels {
            tgt.exec(tgt.info().stop_replica_sql())?;
            tgt.exec(tgt.info().reset_replica_all_sql())?;
        }
        if self.read_only {
            tgt.exec("SET GLOBAL super_read_only = OFF")?;
            tgt.exec("SET GLOBAL read_only = OFF")?;
        }
        if self.gtids {
            tgt.exec(tgt.info().reset_binlogs_sql())?;
        }
        Ok(())
    }
}

pub fn attach(tgt: &mut Session, a: &Attachment<'_>) -> Result<()> {
    if a.super_read_only {
        // Persisted, so a restart does not leave a writable replica behind.
        tgt.exec("SET PERSIST super_read_only = ON")?;
    }
    // Without TLS, caching_sha2_password needs the source's RSA key to send the password.
    tgt.exec(&format!(
        "{} SOURCE_HOST = {}, SOURCE_PORT = {}, SOURCE_USER = {}, SOURCE_PASSWORD = {}, \
         SOURCE_AUTO_POSITION = 1, SOURCE_SSL = {}, GET_SOURCE_PUBLIC_KEY = 1",
        tgt.info().change_source_sql(),
        quote_str(a.host),
        a.port,
        quote_str(a.user),
        quote_str(a.password.expose()),
        u8::from(a.tls)
    ))?;
    crate::failpoint::hit("seed-attach-before-start");
    tgt.exec(tgt.info().start_replica_sql())?;
    Ok(())
}

/// Starts the channel an earlier run attached: one killed between `CHANGE REPLICATION
/// SOURCE` and `START REPLICA` left it configured and stopped, and waiting on it would only
/// find its threads off. Starting threads that run already is a no-op (a warning).
pub fn restart(tgt: &mut Session) -> Result<()> {
    tgt.exec(tgt.info().start_replica_sql())?;
    Ok(())
}

fn gtids(s: &mut Session) -> Result<GtidSet> {
    let text = s.global_var("gtid_executed")?.unwrap_or_default();
    GtidSet::parse(&text).map_err(|e| s.unexpected("gtid_executed", e.to_string()).into())
}

/// Waits until the replica has everything the source had when the wait began; fails at the
/// first replication error.
pub fn wait_caught_up(
    src: &mut Session,
    tgt: &mut Session,
    timeout: Duration,
    progress: &dyn Fn(usize),
) -> Result<()> {
    let goal = gtids(src)?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(e) = channel_error(tgt, "")? {
            return Err(replication_failed(&e));
        }
        let have = gtids(tgt)?;
        let missing = goal.subtract(&have);
        if missing.is_empty() {
            return Ok(());
        }
        progress(usize::try_from(missing.count()).unwrap_or(usize::MAX));
        if Instant::now() > deadline {
            return Err(Error::TargetRefused(format!(
                "the replica has not caught up within {} s: it still lacks {missing}; replication keeps running",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

pub fn replication_failed(e: &str) -> Error {
    Error::TargetRefused(format!(
        "replication on the new replica failed: {e}; see SHOW REPLICA STATUS on it"
    ))
}

/// Both replication threads running and no error.
pub fn healthy(tgt: &mut Session) -> Result<()> {
    match channel_error(tgt, "")? {
        Some(e) => Err(replication_failed(&e)),
        None => Ok(()),
    }
}
