//! A replication channel's health as performance_schema reports it, shared by the PITR
//! replay (its private channel) and replica seeding (the default channel).

use super::error::Error;
use super::session::{Session, quote_str};

/// The first problem of `channel`, if any: an error number or message of the receiver, the
/// coordinator or a worker, or one of those threads stopped.
pub fn channel_error(s: &mut Session, channel: &str) -> Result<Option<String>, Error> {
    let ch = quote_str(channel);
    for (table, what) in [
        ("replication_connection_status", "receiver"),
        ("replication_applier_status_by_coordinator", "coordinator"),
        ("replication_applier_status_by_worker", "worker"),
    ] {
        let sql = format!(
            "SELECT LAST_ERROR_NUMBER, LAST_ERROR_MESSAGE, SERVICE_STATE FROM performance_schema.{table} WHERE CHANNEL_NAME = {ch}"
        );
        for r in s.query(&sql)?.iter() {
            let (number, message, state) = (
                r.u64_at(0).unwrap_or(0),
                r.text_at(1).unwrap_or_default(),
                r.text_at(2).unwrap_or_default(),
            );
            if number != 0 || !message.is_empty() {
                return Ok(Some(format!("{what} error {number}: {message}")));
            }
            if state == "OFF" {
                return Ok(Some(format!("the {what} thread stopped")));
            }
        }
    }
    Ok(None)
}

/// True once the applier of `channel` has stopped (after `START REPLICA ... UNTIL`).
pub fn applier_stopped(s: &mut Session, channel: &str) -> Result<bool, Error> {
    let state = s.query_value(&format!(
        "SELECT SERVICE_STATE FROM performance_schema.replication_applier_status WHERE CHANNEL_NAME = {}",
        quote_str(channel)
    ))?;
    Ok(state.as_deref() != Some("ON"))
}

/// Channels configured on the server.
pub fn channels(s: &mut Session) -> Result<Vec<String>, Error> {
    Ok(
        s.query(
            "SELECT CHANNEL_NAME FROM performance_schema.replication_connection_configuration",
        )?
        .iter()
        .filter_map(|r| r.text_at(0))
        .collect(),
    )
}
