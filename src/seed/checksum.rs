//! Proof that a replica holds the source's data: both are read at the same GTID point and
//! every table's rows are hashed, without stopping the source.
//!
//! The replica's applier is paused; the source's point is taken with the dump's brief global
//! read lock (a consistent-snapshot transaction and `gtid_executed` of one instant); the
//! replica applies exactly up to that point and opens its own snapshot there, then replicates
//! on while both snapshots are hashed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::mysql::gtid::GtidSet;
use crate::mysql::replication::applier_stopped;
use crate::mysql::session::{Session, quote_ident, quote_list, quote_str};
use crate::mysql::wire::{Conn, ConnectOptions};
use crate::snapshot::logical::consistency;

#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    pub gtid_executed: String,
    pub tables: usize,
    pub rows: u64,
    pub seconds: f64,
}

/// (rows, order-independent hash of the rows) per `db`.`table`.
type Sums = BTreeMap<String, (u64, String)>;

fn text(v: &Option<Vec<u8>>) -> String {
    v.as_deref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

/// The base tables of the user databases, with their columns in order.
fn tables(c: &mut Conn) -> Result<Vec<(String, String, Vec<String>)>> {
    let rows = c.query(&format!(
        "SELECT c.TABLE_SCHEMA, c.TABLE_NAME, c.COLUMN_NAME FROM information_schema.COLUMNS c \
         JOIN information_schema.TABLES t ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME \
         WHERE t.TABLE_TYPE = 'BASE TABLE' AND c.TABLE_SCHEMA NOT IN ({}) \
         ORDER BY c.TABLE_SCHEMA, c.TABLE_NAME, c.ORDINAL_POSITION",
        quote_list(
            crate::snapshot::logical::catalog::SYSTEM_SCHEMAS
                .iter()
                .chain(&crate::restore::OWN_SCHEMAS)
        )
    ))?;
    let mut out: Vec<(String, String, Vec<String>)> = Vec::new();
    for r in &rows.rows {
        let (db, table, column) = (text(&r[0]), text(&r[1]), text(&r[2]));
        match out.last_mut() {
            Some((d, t, cols)) if *d == db && *t == table => cols.push(column),
            _ => out.push((db, table, vec![column])),
        }
    }
    Ok(out)
}

/// Hashes every row (values and NULL-ness of every column; SHA2, as MySQL 9 has no MD5) and
/// XORs the hashes, so the
/// order rows come in does not matter.
fn sums(c: &mut Conn) -> Result<Sums> {
    let mut out = Sums::new();
    for (db, table, cols) in tables(c)? {
        let values: Vec<String> = cols.iter().map(|c| quote_ident(c)).collect();
        let nulls: Vec<String> = cols
            .iter()
            .map(|c| format!("ISNULL({})", quote_ident(c)))
            .collect();
        let sql = format!(
            "SELECT COUNT(*), COALESCE(BIT_XOR(CAST(CONV(LEFT(SHA2(CONCAT_WS('#', {}, CONCAT({})), 256), 16), 16, 10) AS UNSIGNED)), 0) FROM {}.{}",
            values.join(", "),
            nulls.join(", "),
            quote_ident(&db),
            quote_ident(&table)
        );
        let rows = c.query(&sql)?;
        let row = rows.rows.first().cloned().unwrap_or_default();
        let count = text(row.first().unwrap_or(&None)).parse().unwrap_or(0);
        let hash = text(row.get(1).unwrap_or(&None));
        out.insert(
            format!("{}.{}", quote_ident(&db), quote_ident(&table)),
            (count, hash),
        );
    }
    Ok(out)
}

fn gtids(s: &mut Session) -> Result<GtidSet> {
    let text = s.global_var("gtid_executed")?.unwrap_or_default();
    GtidSet::parse(&text).map_err(|e| s.unexpected("gtid_executed", e.to_string()).into())
}

/// Compares source and replica at one GTID point. Replication is paused on the replica only
/// while it reaches that point.
pub fn verify(
    source: &ConnectOptions,
    replica: &ConnectOptions,
    lock_wait_timeout: u64,
    timeout: Duration,
) -> Result<Verified> {
    let started = Instant::now();
    let mut rep = Session::connect(replica)?;
    rep.exec("STOP REPLICA SQL_THREAD")?;
    let mut coord = Session::connect(source)?;
    let mut src_workers = consistency::connect_workers(source, 1)?;
    let point = consistency::take(
        &mut coord,
        &mut src_workers,
        lock_wait_timeout,
        Duration::from_secs(3600),
    )?;
    let goal = GtidSet::parse(&point.gtid_executed)
        .map_err(|e| coord.unexpected("gtid_executed", e.to_string()))?;
    let resume = |rep: &mut Session| rep.exec("START REPLICA SQL_THREAD").map(|_| ());
    let reached = (|| -> Result<Conn> {
        rep.exec(&format!(
            "START REPLICA SQL_THREAD UNTIL SQL_AFTER_GTIDS = {}",
            quote_str(&goal.to_string())
        ))?;
        let deadline = Instant::now() + timeout;
        while !applier_stopped(&mut rep, "")? {
            if Instant::now() > deadline {
                return Err(Error::TargetRefused(format!(
                    "the replica did not reach the source's point {goal} within {} s",
                    timeout.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let have = gtids(&mut rep)?;
        if have != goal {
            let errant = have.subtract(&goal);
            return Err(Error::TargetRefused(if errant.is_empty() {
                format!(
                    "the replica stopped short of the source's point: it lacks {}",
                    goal.subtract(&have)
                )
            } else {
                format!(
                    "the replica has transactions the source does not have (errant GTIDs): {errant}"
                )
            }));
        }
        let mut rep_workers = consistency::connect_workers(replica, 1)?;
        let mut w = rep_workers.remove(0);
        w.exec("START TRANSACTION WITH CONSISTENT SNAPSHOT")?;
        Ok(w)
    })();
    // The replica replicates on whatever happened; its snapshot keeps the point.
    let resumed = resume(&mut rep);
    let mut rep_worker = reached?;
    resumed?;
    let src_sums = sums(&mut src_workers[0]);
    let _ = coord.exec("UNLOCK INSTANCE");
    let src_sums = src_sums?;
    let rep_sums = sums(&mut rep_worker)?;
    let differing: Vec<String> = src_sums
        .iter()
        .filter(|(t, v)| rep_sums.get(*t) != Some(*v))
        .map(|(t, _)| t.clone())
        .chain(
            rep_sums
                .keys()
                .filter(|t| !src_sums.contains_key(*t))
                .cloned(),
        )
        .collect();
    if !differing.is_empty() {
        return Err(Error::TargetRefused(format!(
            "the replica's data differs from the source's at {goal} in {} table(s): {}",
            differing.len(),
            differing
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(Verified {
        gtid_executed: goal.to_string(),
        tables: src_sums.len(),
        rows: src_sums.values().map(|(n, _)| n).sum(),
        seconds: started.elapsed().as_secs_f64(),
    })
}
