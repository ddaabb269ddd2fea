//! Resume state of a logical restore, kept on the target itself in the `myvault_restore`
//! schema: each step is recorded in the same transaction that performs it, so a restore that
//! was killed and run again does exactly the steps that are missing.

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::mysql::error::codes;
use crate::mysql::session::{Session, quote_str};
use crate::restore::PROGRESS_SCHEMA;

pub enum State {
    /// No restore has started on this target.
    Fresh,
    /// A restore of this snapshot was interrupted; these steps are done.
    Resuming(HashSet<String>),
}

/// Reads what an earlier run of the same restore did. Refuses a target holding the remains
/// of a restore of another snapshot.
pub fn read(s: &mut Session, snapshot: &str) -> Result<State> {
    let owner = match s.query_value(&format!("SELECT snapshot FROM {PROGRESS_SCHEMA}.state")) {
        Ok(v) => v,
        Err(e) if matches!(e.server_code(), Some(codes::NO_SUCH_TABLE) | Some(1049)) => {
            return Ok(State::Fresh);
        }
        Err(e) => return Err(e.into()),
    };
    match owner {
        Some(id) if id == snapshot => {
            let rows = s.query(&format!("SELECT item FROM {PROGRESS_SCHEMA}.done"))?;
            Ok(State::Resuming(
                rows.iter().filter_map(|r| r.text_at(0)).collect(),
            ))
        }
        Some(other) => Err(Error::TargetRefused(format!(
            "the target holds an unfinished restore of snapshot {other}; run that restore again to finish it, \
             or DROP DATABASE {PROGRESS_SCHEMA} and empty the target"
        ))),
        None => Ok(State::Fresh),
    }
}

pub fn create(s: &mut Session, snapshot: &str) -> Result<()> {
    s.exec(&format!("CREATE DATABASE IF NOT EXISTS {PROGRESS_SCHEMA}"))?;
    s.exec(&format!(
        "CREATE TABLE IF NOT EXISTS {PROGRESS_SCHEMA}.state (snapshot VARCHAR(64) NOT NULL PRIMARY KEY) ENGINE=InnoDB"
    ))?;
    s.exec(&format!(
        "CREATE TABLE IF NOT EXISTS {PROGRESS_SCHEMA}.done (item VARCHAR(700) NOT NULL PRIMARY KEY) ENGINE=InnoDB"
    ))?;
    s.exec(&format!(
        "INSERT INTO {PROGRESS_SCHEMA}.state VALUES ({})",
        quote_str(snapshot)
    ))?;
    Ok(())
}

/// The statement that records `item` as done; run it inside the step's transaction. A step
/// done again (a reloaded table's chunks) records itself again harmlessly.
pub fn mark_sql(item: &str) -> String {
    format!(
        "INSERT INTO {PROGRESS_SCHEMA}.done VALUES ({}) ON DUPLICATE KEY UPDATE item = item",
        quote_str(item)
    )
}

pub fn drop(s: &mut Session) -> Result<()> {
    s.exec(&format!("DROP DATABASE IF EXISTS {PROGRESS_SCHEMA}"))?;
    Ok(())
}
