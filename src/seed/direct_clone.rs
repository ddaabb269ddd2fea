//! `CLONE INSTANCE FROM`: the target copies the source's data directly, then restarts on it.
//!
//! A recipient under a supervisor (systemd, mysqld_safe) restarts by itself; one that is not
//! shuts down with error 3707 and has to be started again (`--start-command`, or by hand).
//! Either way the target is back when a fresh instance (uptime shorter than the time since
//! the clone ended) answers and reports the clone completed.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::mysql::privileges::{self, Need};
use crate::mysql::session::Session;
use crate::mysql::wire::ConnectOptions;
use crate::snapshot::clone::ensure_plugin;

pub const DONOR_NEEDS: &[Need] = &[("BACKUP_ADMIN", "serve a clone (CLONE INSTANCE FROM)")];
pub const RECIPIENT_NEEDS: &[Need] = &[("CLONE_ADMIN", "clone from the source and restart")];

pub use crate::snapshot::clone::Donor;

/// Privileges and plugins on both sides; installs the clone plugin where it is missing.
pub fn prepare(src: &mut Session, tgt: &mut Session) -> Result<()> {
    privileges::require(src, DONOR_NEEDS, "be the donor of a clone")?;
    privileges::require(tgt, RECIPIENT_NEEDS, "receive a clone")?;
    ensure_plugin(src)?;
    ensure_plugin(tgt)
}

#[derive(Debug, Clone)]
pub struct Cloned {
    pub seconds: f64,
    pub gtid_executed: String,
}

/// Runs the clone and waits until the target is back on the cloned data.
pub fn run(
    target: &ConnectOptions,
    donor: &Donor<'_>,
    start_command: Option<&str>,
    start_timeout: Duration,
    status: &dyn Fn(&str),
) -> Result<Cloned> {
    let started = Instant::now();
    let mut tgt = Session::connect(target)?;
    status(&format!(
        "cloning {}:{} into {} (CLONE INSTANCE FROM)",
        donor.host,
        donor.port,
        tgt.address()
    ));
    // A recipient on this host leaves its pid file until it has fully stopped; starting it
    // again before that would race the old instance for its files.
    let pid_file = tgt
        .global_var("pid_file")?
        .map(std::path::PathBuf::from)
        .filter(|p| p.exists());
    crate::snapshot::clone::clone_instance_from(&mut tgt, donor)?;
    drop(tgt);
    let ended = Instant::now();
    status("clone copied; waiting for the target to restart on it");
    let restart = Restart {
        command: start_command,
        pid_file: pid_file.as_deref(),
    };
    let mut tgt = wait_restarted(target, ended, &restart, start_timeout)?;
    let rows = tgt.query(
        "SELECT STATE, ERROR_NO, ERROR_MESSAGE, GTID_EXECUTED FROM performance_schema.clone_status",
    )?;
    let row = rows.first().ok_or_else(|| {
        Error::TargetRefused("the target reports no clone after restarting".into())
    })?;
    if row.text("STATE").as_deref() != Some("Completed") {
        return Err(Error::TargetRefused(format!(
            "the clone did not complete: {} (error {}: {})",
            row.text("STATE").unwrap_or_default(),
            row.text("ERROR_NO").unwrap_or_default(),
            row.text("ERROR_MESSAGE").unwrap_or_default()
        )));
    }
    Ok(Cloned {
        seconds: started.elapsed().as_secs_f64(),
        gtid_executed: row
            .text("GTID_EXECUTED")
            .unwrap_or_default()
            .replace('\n', ""),
    })
}

fn uptime(s: &mut Session) -> Option<u64> {
    s.query("SHOW GLOBAL STATUS LIKE 'Uptime'")
        .ok()?
        .first()?
        .u64_at(1)
}

/// Waits for a server instance started after `ended`; runs `start_command` once the old
/// instance is gone.
/// How the recipient comes back after the clone when it is not supervised.
struct Restart<'a> {
    command: Option<&'a str>,
    pid_file: Option<&'a std::path::Path>,
}

impl Restart<'_> {
    /// The old instance is gone: its pid file removed (on this host), or no answer for a
    /// few seconds (elsewhere).
    fn old_instance_gone(&self, down_since: Instant) -> bool {
        match self.pid_file {
            Some(p) => !p.exists(),
            None => down_since.elapsed() >= Duration::from_secs(5),
        }
    }
}

fn wait_restarted(
    target: &ConnectOptions,
    ended: Instant,
    restart: &Restart<'_>,
    timeout: Duration,
) -> Result<Session> {
    let mut command = restart.command;
    let mut last_start_error = None;
    let mut next_start = Instant::now();
    let mut down_since: Option<Instant> = None;
    loop {
        match Session::connect(target) {
            Ok(mut s) => {
                down_since = None;
                if let Some(up) = uptime(&mut s)
                    && up <= ended.elapsed().as_secs() + 1
                {
                    return Ok(s);
                }
            }
            // A start that fails anyway is tried again a little later.
            Err(_)
                if Instant::now() >= next_start
                    && restart.old_instance_gone(*down_since.get_or_insert_with(Instant::now)) =>
            {
                if let Some(cmd) = command {
                    match run_start_command(cmd) {
                        Ok(()) => command = None,
                        Err(e) => {
                            last_start_error = Some(e);
                            next_start = Instant::now() + Duration::from_secs(3);
                        }
                    }
                }
            }
            Err(_) => {
                down_since.get_or_insert_with(Instant::now);
            }
        }
        if ended.elapsed() > timeout {
            if let Some(e) = last_start_error {
                return Err(e);
            }
            return Err(Error::TargetRefused(format!(
                "the target did not come back within {} s after the clone. It is not under a supervisor \
                 (systemd, mysqld_safe): start mysqld on its data directory (or give --start-command), \
                 then run seed-replica again without --clone to attach it",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

pub fn run_start_command(cmd: &str) -> Result<()> {
    let status = std::process::Command::new("sh")
        .args(["-c", cmd])
        .stdin(std::process::Stdio::null())
        .status()
        .map_err(|e| Error::io(format!("cannot run --start-command `{cmd}`"), e))?;
    if !status.success() {
        return Err(Error::TargetRefused(format!(
            "--start-command `{cmd}` failed ({status})"
        )));
    }
    Ok(())
}
