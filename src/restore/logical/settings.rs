//! Server settings a load changes on the target, and puts back at the end: `local_infile`
//! (needed), the redo log's size (a 100 MiB redo log, MySQL's default, makes a bulk load stall
//! on checkpoints) and, when asked, the redo log itself.
//!
//! Each original value is recorded in the progress schema before it is changed, so a restore
//! that was killed and run again puts back what the first run found, not what it left behind.

use std::collections::HashSet;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::mysql::error::codes;
use crate::mysql::server_info::Version;
use crate::mysql::session::Session;
use crate::mysql::wire::ConnectOptions;

use super::progress;

/// A global variable as the load found it and as it set it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SettingChange {
    pub name: String,
    pub before: String,
    pub during: String,
}

/// What was changed, to put back.
#[derive(Debug, Default)]
pub struct Changed {
    variables: Vec<SettingChange>,
    redo_log_disabled: bool,
}

impl Changed {
    pub fn redo_log_disabled(&self) -> bool {
        self.redo_log_disabled
    }

    pub fn variables(&self) -> &[SettingChange] {
        &self.variables
    }
}

/// What the load wants of the target.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    /// Redo log size in bytes to raise the target's to, if smaller; 0 leaves it.
    pub redo_log_capacity: u64,
    pub disable_redo_log: bool,
}

/// How the records of original values begin, among the progress schema's items.
pub(crate) const RECORD: &str = "setting:";
const REDO_LOG_OFF: &str = "setting:redo_log=off";

/// The original value an earlier, interrupted run recorded for `name`.
fn recorded(done: &HashSet<String>, name: &str) -> Option<String> {
    let prefix = format!("{RECORD}{name}=");
    done.iter()
        .find_map(|item| item.strip_prefix(&prefix).map(str::to_string))
}

/// Records `item` in the progress schema unless an earlier run did.
fn record(s: &mut Session, done: &HashSet<String>, item: &str) -> Result<(), crate::mysql::Error> {
    if !done.contains(item) {
        s.exec(&progress::mark_sql(item))?;
    }
    Ok(())
}

/// Sets global `name` to `value` (when given) after recording its original value, and notes
/// what to put back: also when nothing is set now, if an earlier run recorded an original.
fn set_variable(
    s: &mut Session,
    done: &HashSet<String>,
    changed: &mut Changed,
    name: &str,
    current: String,
    value: Option<&str>,
) -> Result<(), crate::mysql::Error> {
    let earlier = recorded(done, name);
    let Some(value) = value else {
        if let Some(before) = earlier {
            changed.variables.push(SettingChange {
                name: name.to_string(),
                before,
                during: current,
            });
        }
        return Ok(());
    };
    let before = match earlier {
        Some(before) => before,
        None => {
            record(s, done, &format!("{RECORD}{name}={current}"))?;
            current
        }
    };
    s.exec(&format!("SET GLOBAL {name} = {value}"))?;
    changed.variables.push(SettingChange {
        name: name.to_string(),
        before,
        during: value.to_string(),
    });
    Ok(())
}

/// The redo log size to load a dump of `dump_bytes` with, in whole MiB: three times the dump
/// (loading a sysbench dump wrote 1.4 times its size of redo, and InnoDB flushes harder the
/// fuller its redo log is), at most `limit` (0: leave the server's).
pub fn redo_size_for(dump_bytes: u64, limit: u64) -> u64 {
    const MIB: u64 = 1 << 20;
    dump_bytes
        .saturating_mul(3)
        .min(limit)
        .div_ceil(MIB)
        .saturating_mul(MIB)
}

/// The variable that sizes InnoDB's redo log, where it can be changed while the server runs.
fn redo_size_variable(s: &Session) -> Option<&'static str> {
    let info = s.info();
    if info.is_mysql() && info.version >= Version(8, 0, 30) {
        Some("innodb_redo_log_capacity")
    } else if !info.is_mysql() && info.version >= Version(10, 9, 0) {
        Some("innodb_log_file_size")
    } else {
        None
    }
}

/// Applies what the load needs and wants. `done` holds the steps of an interrupted run of the
/// same restore, including the settings it recorded.
pub fn apply(
    s: &mut Session,
    done: &HashSet<String>,
    wanted: Wanted,
    warnings: &mut Vec<String>,
) -> Result<Changed> {
    let mut changed = Changed::default();
    enable_local_infile(s, done, &mut changed)?;
    // A killed run that had switched the redo log off: the log stays off only if asked again.
    if done.contains(REDO_LOG_OFF) {
        if wanted.disable_redo_log {
            changed.redo_log_disabled = true;
        } else {
            s.exec("ALTER INSTANCE ENABLE INNODB REDO_LOG")?;
        }
    } else if wanted.disable_redo_log {
        changed.redo_log_disabled = disable_redo_log(s, done, warnings)?;
    }
    // The redo log's size does not matter while it is off.
    let size = if changed.redo_log_disabled {
        0
    } else {
        wanted.redo_log_capacity
    };
    raise_redo_size(s, done, size, &mut changed, warnings)?;
    Ok(changed)
}

fn enable_local_infile(
    s: &mut Session,
    done: &HashSet<String>,
    changed: &mut Changed,
) -> Result<()> {
    let current = s.global_var("local_infile")?.unwrap_or_default();
    let on = matches!(current.as_str(), "1" | "ON");
    let value = (!on).then_some("1");
    set_variable(s, done, changed, "local_infile", current, value).map_err(|e| {
        match e.server_code() {
            Some(codes::SPECIFIC_ACCESS_DENIED) => Error::TargetRefused(
                "the target has local_infile=OFF and this account cannot change it: run SET GLOBAL local_infile = ON on the target"
                    .into(),
            ),
            _ => e.into(),
        }
    })
}

fn disable_redo_log(
    s: &mut Session,
    done: &HashSet<String>,
    warnings: &mut Vec<String>,
) -> Result<bool> {
    let supported = s.info().is_mysql() && s.info().version >= Version(8, 0, 21);
    if !supported {
        warnings
            .push("--disable-redo-log needs MySQL 8.0.21 or later; the redo log stayed on".into());
        return Ok(false);
    }
    record(s, done, REDO_LOG_OFF)?;
    match s.exec("ALTER INSTANCE DISABLE INNODB REDO_LOG") {
        Ok(_) => Ok(true),
        Err(e) => {
            warnings.push(format!(
                "could not disable the redo log ({e}); loading with it on"
            ));
            Ok(false)
        }
    }
}

fn raise_redo_size(
    s: &mut Session,
    done: &HashSet<String>,
    bytes: u64,
    changed: &mut Changed,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let Some(name) = redo_size_variable(s) else {
        return Ok(());
    };
    let Some(current) = s.global_var(name)? else {
        return Ok(());
    };
    // MariaDB refuses a redo log smaller than its log buffer.
    let floor = match name {
        "innodb_log_file_size" => s
            .global_var("innodb_log_buffer_size")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        _ => 0,
    };
    let bytes = if bytes == 0 { 0 } else { bytes.max(floor) };
    // 0: nothing to raise, but an original an earlier run recorded is still put back.
    let large_enough = bytes == 0 || current.parse::<u64>().is_ok_and(|c| c >= bytes);
    let value = bytes.to_string();
    let value = (!large_enough).then_some(value.as_str());
    if let Err(e) = set_variable(s, done, changed, name, current, value) {
        let why = match e.server_code() {
            Some(codes::SPECIFIC_ACCESS_DENIED) => "it needs SYSTEM_VARIABLES_ADMIN".to_string(),
            _ => e.to_string(),
        };
        warnings.push(format!(
            "could not raise {name} for the load ({why}); loading with the server's redo log size"
        ));
    }
    Ok(())
}

/// The variables that size the redo log.
const REDO_SIZE_VARIABLES: &[&str] = &["innodb_redo_log_capacity", "innodb_log_file_size"];

/// `variables` as (all but the redo log's size, the redo log's size): the size goes back last.
pub fn split_redo_size(variables: &[SettingChange]) -> (Vec<SettingChange>, Vec<SettingChange>) {
    variables
        .iter()
        .cloned()
        .partition(|v| !REDO_SIZE_VARIABLES.contains(&v.name.as_str()))
}

/// Switches the redo log back on if the load switched it off; the restore fails if it cannot.
pub fn put_back_redo_log(s: &mut Session, changed: &Changed) -> Result<()> {
    if changed.redo_log_disabled {
        s.exec("ALTER INSTANCE ENABLE INNODB REDO_LOG")?;
    }
    Ok(())
}

/// Sets the changed variables back (a load's `Changed::variables`, or its report's
/// `server_settings` for a caller that kept them longer); one that cannot be is a warning.
/// Shrinking the redo log back makes the server flush until its checkpoint age fits, and
/// statements that write wait for that meanwhile: run this last.
pub fn put_back_variables(
    s: &mut Session,
    variables: &[SettingChange],
    warnings: &mut Vec<String>,
) {
    for v in variables.iter().rev() {
        // The value was read from the server; anything but a plain word is not sent back.
        let plain = !v.before.is_empty()
            && v.before
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        let result = if plain {
            s.exec(&format!("SET GLOBAL {} = {}", v.name, v.before))
                .map(drop)
                .map_err(|e| e.to_string())
        } else {
            Err("not a plain value".to_string())
        };
        if let Err(e) = result {
            warnings.push(not_put_back(v, &e));
        }
    }
}

/// [`put_back_variables`] on a connection of its own, for callers whose load connection is
/// gone (the settings were kept for a replay or for replication to catch up).
pub fn put_back_variables_on(
    target: &ConnectOptions,
    variables: &[SettingChange],
    warnings: &mut Vec<String>,
) {
    if variables.is_empty() {
        return;
    }
    match super::connect_loader(target, "utf8mb4") {
        Ok(mut s) => put_back_variables(&mut s, variables, warnings),
        Err(e) => warnings.extend(
            variables
                .iter()
                .rev()
                .map(|v| not_put_back(v, &e.to_string())),
        ),
    }
}

fn not_put_back(v: &SettingChange, why: &str) -> String {
    format!(
        "could not set {} back to {} ({why}); run SET GLOBAL {} = {} on the target",
        v.name, v.before, v.name, v.before
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redo_size_is_three_times_the_dump_in_whole_mib_up_to_the_limit() {
        const MIB: u64 = 1 << 20;
        assert_eq!(redo_size_for(100 * MIB + 5, 1 << 30), 301 * MIB);
        assert_eq!(redo_size_for(10 * 1024 * MIB, 1 << 30), 1 << 30);
        assert_eq!(redo_size_for(1, 1 << 30), MIB);
        assert_eq!(redo_size_for(500 * MIB, 0), 0);
        assert_eq!(redo_size_for(u64::MAX, u64::MAX), u64::MAX);
    }
}
