//! The consistent point of a logical dump.
//!
//! Worker connections are opened first; then a brief global read lock is taken, every worker
//! starts a consistent-snapshot transaction, and the binlog coordinates and GTID set are read
//! while nothing can commit. The lock is released at once; the workers keep reading the
//! state of that instant. On MySQL 8.0+, `LOCK INSTANCE FOR BACKUP` (when the account has
//! BACKUP_ADMIN) also blocks DDL until the dump ends.
//!
//! MariaDB 10.4+ blocks commits with `BACKUP STAGE BLOCK_COMMIT` instead of the global read
//! lock. `FLUSH TABLES WITH READ LOCK` first stops new writes and then waits for running
//! statements to close their tables; under write load one of those statements can be waiting
//! for a row lock of a transaction that the read lock keeps from going on, and the flush then
//! waits out the whole lock timeout (seen with sysbench on MariaDB 10.11). Blocking commits
//! waits only for commits already under way.

use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::error::{Error, Result};
use crate::mysql::error::codes;
use crate::mysql::session::Session;
use crate::mysql::wire::{Conn, ConnectOptions};

#[derive(Debug, Clone)]
pub struct ConsistentPoint {
    pub binlog_file: String,
    pub binlog_position: u64,
    /// MySQL: `gtid_executed`. MariaDB: `gtid_binlog_pos`.
    pub gtid_executed: String,
    /// The server's clock (UTC) while the lock was held.
    pub server_time: DateTime<Utc>,
    pub lock_seconds: f64,
    /// True when DDL is blocked for the rest of the dump.
    pub ddl_blocked: bool,
}

/// Settings every dump worker needs: raw bytes, UTC for TIMESTAMP columns, and patience with
/// a client that is slowed down by compression or an upload.
/// One round trip each (a remote server's latency is paid per statement and per worker).
const WORKER_SETUP: &[&str] = &[
    "SET NAMES binary, SESSION time_zone = '+00:00', SESSION net_write_timeout = 3600, \
     SESSION net_read_timeout = 3600, SESSION wait_timeout = 86400",
    "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
];

/// Opens the worker connections at once: each costs several round trips.
pub fn connect_workers(opts: &ConnectOptions, n: usize) -> Result<Vec<Conn>> {
    let connect = || -> Result<Conn> {
        let mut c = Conn::connect(opts)?;
        for stmt in WORKER_SETUP {
            c.exec(stmt)?;
        }
        Ok(c)
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n).map(|_| s.spawn(connect)).collect();
        handles
            .into_iter()
            .map(|h| crate::error::joined(h.join(), "connecting"))
            .collect()
    })
}

/// Refuses to lock behind a query that has run for longer than `guard`: the global read lock
/// would wait for it and stall every writer meanwhile.
fn check_long_queries(coord: &mut Session, guard: Duration) -> Result<()> {
    let rows = coord.query(&format!(
        "SELECT ID, TIME, LEFT(IFNULL(INFO, ''), 80) FROM information_schema.PROCESSLIST \
         WHERE COMMAND = 'Query' AND TIME > {} AND ID <> CONNECTION_ID() ORDER BY TIME DESC LIMIT 1",
        guard.as_secs()
    ))?;
    if let Some(r) = rows.first() {
        return Err(Error::SourceNotReady(format!(
            "query {} has been running for {} s ({}); the global read lock would wait behind it and block writes. \
             Retry later, kill it, or raise --long-query-guard",
            r.text_at(0).unwrap_or_default(),
            r.text_at(1).unwrap_or_default(),
            r.text_at(2).unwrap_or_default()
        )));
    }
    Ok(())
}

fn lock_error(e: crate::mysql::Error, what: &str, timeout: u64) -> Error {
    match e.server_code() {
        Some(codes::LOCK_WAIT_TIMEOUT) => Error::SourceNotReady(format!(
            "{what} did not get the lock within --lock-wait-timeout {timeout} s (a long query or transaction holds it); \
             the backup was aborted so the server is not stalled"
        )),
        Some(codes::SPECIFIC_ACCESS_DENIED) => Error::SourceNotReady(format!(
            "{what} needs the RELOAD privilege: GRANT RELOAD ON *.* TO the backup account"
        )),
        _ => e.into(),
    }
}

/// How long one attempt at a flush may wait (`lock_wait_timeout` counts whole seconds).
const LOCK_ATTEMPT_SECONDS: u64 = 1;
const LOCK_PAUSE: Duration = Duration::from_millis(200);
/// `INNODB_TRX` is served from a cache that is refreshed only when it was last read more than
/// 100 ms ago: polled faster, it never changes.
const LOCK_WAIT_POLL: Duration = Duration::from_millis(150);

/// How many statements wait for a row lock; `None` when the account may not see InnoDB's
/// transactions (that takes PROCESS).
///
/// A flush waits for every running statement to close its tables, and statements that open a
/// table after it started wait for the flush. A statement waiting for a row lock can be
/// waiting for a transaction whose next statement is one of those: then nothing moves until
/// InnoDB's lock wait timeout (50 s by default) ends the row lock wait, even when the flush
/// itself has given up, as the tables it marked for reopening stay marked (seen under sysbench
/// on MySQL 9.7: every writer stalled, and the backup failed after its 30 s). Flushing only
/// while no statement waits for a row lock keeps out of that cycle.
fn row_lock_waits(coord: &mut Session) -> Option<u64> {
    coord
        .query_value(
            "SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_state = 'LOCK WAIT'",
        )
        .ok()
        .flatten()
        .and_then(|n| n.parse().ok())
}

/// Runs a flush once no statement waits for a row lock, in attempts of `lock_wait_timeout`
/// (set to [`LOCK_ATTEMPT_SECONDS`] by the caller) with a pause between them in which the
/// writers go on, until `deadline`.
fn flush_in_attempts(
    coord: &mut Session,
    flush: &str,
    deadline: Instant,
) -> Result<(), crate::mysql::Error> {
    let attempt = Duration::from_secs(LOCK_ATTEMPT_SECONDS);
    loop {
        while row_lock_waits(coord).is_some_and(|n| n > 0) && Instant::now() + attempt < deadline {
            std::thread::sleep(LOCK_WAIT_POLL);
        }
        match coord.exec(flush) {
            Err(e)
                if e.server_code() == Some(codes::LOCK_WAIT_TIMEOUT)
                    && Instant::now() + LOCK_PAUSE + attempt <= deadline =>
            {
                std::thread::sleep(LOCK_PAUSE);
            }
            done => return done.map(drop),
        }
    }
}

/// Takes the consistent point: every worker is in a snapshot of the same instant.
pub fn take(
    coord: &mut Session,
    workers: &mut [Conn],
    lock_wait_timeout: u64,
    long_query_guard: Duration,
) -> Result<ConsistentPoint> {
    let info = coord.info().clone();
    check_long_queries(coord, long_query_guard)?;
    coord.exec(&format!(
        "SET SESSION lock_wait_timeout = {lock_wait_timeout}"
    ))?;
    let ddl_blocked = info.has_backup_lock() && coord.exec("LOCK INSTANCE FOR BACKUP").is_ok();
    let stages = info.has_backup_stages();
    let deadline = Instant::now() + Duration::from_secs(lock_wait_timeout);
    if !stages {
        coord.exec(&format!(
            "SET SESSION lock_wait_timeout = {LOCK_ATTEMPT_SECONDS}"
        ))?;
    }
    let lock_steps: &[&str] = if stages {
        &["BACKUP STAGE START", "BACKUP STAGE BLOCK_COMMIT"]
    } else {
        // Closing tables first, without the lock, shortens the time the lock itself is held.
        &[
            "FLUSH NO_WRITE_TO_BINLOG TABLES",
            "FLUSH TABLES WITH READ LOCK",
        ]
    };
    let unlock = if stages {
        "BACKUP STAGE END"
    } else {
        "UNLOCK TABLES"
    };
    for step in lock_steps {
        let taken = if stages {
            coord.exec(step).map(drop)
        } else {
            flush_in_attempts(coord, step, deadline)
        };
        if let Err(e) = taken {
            // A stage already entered is left, not kept until the connection closes.
            let _ = coord.exec(unlock);
            return Err(lock_error(e, step, lock_wait_timeout));
        }
    }
    let locked_at = Instant::now();
    let point = (|| -> Result<ConsistentPoint> {
        for w in workers.iter_mut() {
            w.exec("START TRANSACTION WITH CONSISTENT SNAPSHOT")?;
        }
        let status_sql = info.binlog_status_sql();
        let status = coord.query(status_sql)?;
        let row = status.first().ok_or_else(|| {
            Error::SourceNotReady(format!(
                "{status_sql} returned nothing: the binary log is off, so this snapshot would have no coordinates \
                 and could not start a PITR or seed a replica. Enable log_bin on the source"
            ))
        })?;
        let binlog_file = row.text("File").unwrap_or_default();
        let binlog_position = row.u64("Position").unwrap_or(0);
        let gtid_executed = if info.is_mariadb() {
            coord
                .query_value("SELECT @@GLOBAL.gtid_binlog_pos")?
                .unwrap_or_default()
        } else {
            row.text("Executed_Gtid_Set")
                .unwrap_or_default()
                .replace('\n', "")
        };
        let now = coord
            .query_value("SELECT UTC_TIMESTAMP(6)")?
            .ok_or_else(|| coord.unexpected("SELECT UTC_TIMESTAMP(6)", "no value"))?;
        let server_time = NaiveDateTime::parse_from_str(&now, "%Y-%m-%d %H:%M:%S%.f")
            .map_err(|e| coord.unexpected("SELECT UTC_TIMESTAMP(6)", e.to_string()))?
            .and_utc();
        Ok(ConsistentPoint {
            binlog_file,
            binlog_position,
            gtid_executed,
            server_time,
            lock_seconds: 0.0,
            ddl_blocked,
        })
    })();
    // Released whatever happened above: a failed backup must not leave the server locked.
    let unlocked = coord.exec(unlock);
    let lock_seconds = locked_at.elapsed().as_secs_f64();
    let mut point = point?;
    unlocked?;
    point.lock_seconds = lock_seconds;
    Ok(point)
}
