//! What the streamer needs to know about a source server before it starts a dump: who it is,
//! which binary logs it still has, what came before each, and which server ids are taken.

use crate::error::{Error, Result};
use crate::mysql::gtid::{GtidSet, MariaGtidList};
use crate::mysql::session::{Session, quote_str};

#[derive(Debug, Clone)]
pub struct SourceFacts {
    /// MySQL's server_uuid; `mariadb-<server_id>` for MariaDB, which has none.
    pub server_uuid: String,
    pub server_id: u64,
    pub mariadb: bool,
    pub gtid_mode: bool,
    pub binlog_checksum: String,
    /// Binary logs the server still has, oldest first: (name, size).
    pub logs: Vec<(String, u64)>,
    pub version: String,
}

pub fn facts(s: &mut Session) -> Result<SourceFacts> {
    let mariadb = s.info().is_mariadb();
    let log_bin = s.global_var("log_bin")?.unwrap_or_default();
    if !matches!(log_bin.to_ascii_uppercase().as_str(), "1" | "ON") {
        return Err(Error::SourceNotReady(format!(
            "{} has the binary log disabled (log_bin=OFF): there is nothing to stream. In my.cnf [mysqld]: log_bin = binlog",
            s.address()
        )));
    }
    let server_id = s
        .global_var("server_id")?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let server_uuid = if mariadb {
        format!("mariadb-{server_id}")
    } else {
        s.global_var("server_uuid")?.unwrap_or_default()
    };
    let gtid_mode = if mariadb {
        true
    } else {
        s.global_var("gtid_mode")?
            .is_some_and(|m| m.eq_ignore_ascii_case("ON"))
    };
    let rows = s.query(s.info().binary_logs_sql())?;
    let logs = rows
        .iter()
        .filter_map(|r| Some((r.text("Log_name")?, r.u64("File_size").unwrap_or(0))))
        .collect();
    Ok(SourceFacts {
        server_uuid,
        server_id,
        mariadb,
        gtid_mode,
        binlog_checksum: s.global_var("binlog_checksum")?.unwrap_or_default(),
        logs,
        version: s.info().version_string.clone(),
    })
}

/// Server ids the source and its registered replicas use.
pub fn taken_server_ids(s: &mut Session, own: u64) -> Result<Vec<u64>> {
    let mut ids = vec![own];
    let sql = s.info().replicas_sql();
    let rows = s.query(sql)?;
    for r in rows.iter() {
        if let Some(id) = r.u64("Server_id").or_else(|| r.u64("Server_Id")) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// The GTID set written before `file` on the server (its Previous_gtids event).
pub fn previous_gtids(s: &mut Session, file: &str) -> Result<GtidSet> {
    let rows = s.query(&format!(
        "SHOW BINLOG EVENTS IN {} LIMIT 4",
        quote_str(file)
    ))?;
    for r in rows.iter() {
        if r.text("Event_type").as_deref() == Some("Previous_gtids") {
            let info = r.text("Info").unwrap_or_default();
            return GtidSet::parse(&info)
                .map_err(|e| s.unexpected("SHOW BINLOG EVENTS", e.to_string()).into());
        }
    }
    Ok(GtidSet::new())
}

/// MariaDB: the GTID position written at the start of `file` (its Gtid_list event).
pub fn previous_maria(s: &mut Session, file: &str) -> Result<MariaGtidList> {
    let rows = s.query(&format!(
        "SHOW BINLOG EVENTS IN {} LIMIT 4",
        quote_str(file)
    ))?;
    for r in rows.iter() {
        if r.text("Event_type").as_deref() == Some("Gtid_list") {
            let info = r.text("Info").unwrap_or_default();
            let inner = info.trim().trim_start_matches('[').trim_end_matches(']');
            return MariaGtidList::parse(inner)
                .map_err(|e| s.unexpected("SHOW BINLOG EVENTS", e.to_string()).into());
        }
    }
    Ok(MariaGtidList::default())
}

/// A server the archive has not seen yet (a new primary after a failover): the newest of its
/// files whose preceding transactions are all archived already. `None` means there is none:
/// the server purged binlogs the archive needs, and the error names the lost GTIDs.
pub fn first_needed_file(
    s: &mut Session,
    facts: &SourceFacts,
    covered: &GtidSet,
) -> Result<String> {
    let mut oldest_prev = None;
    for (name, _) in facts.logs.iter().rev() {
        let prev = previous_gtids(s, name)?;
        if prev.is_subset(covered) {
            return Ok(name.clone());
        }
        oldest_prev = Some(prev);
    }
    let lost = oldest_prev.unwrap_or_default().subtract(covered);
    Err(Error::BinlogGap(format!(
        "{} no longer has the binary logs with these transactions, and the archive lacks them: {lost}. \
         Take a new snapshot to restart point-in-time coverage",
        s.address()
    )))
}
