//! The fallback replay engine: the archived events as SQL in one session of the target
//! (`BINLOG '<base64>'` for row events, statements for DDL), as `mysqlbinlog | mysql` would
//! run them but with myvault's exact boundaries and verified input. For targets that cannot
//! replicate from myvault (no route back to this host, no privilege to configure a channel).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::replay::{Progress, ReplayReport, check_target, gtid_executed, walk_error};
use crate::binlog::statements::{Exec, SqlSink};
use crate::binlog::table_filter::TableFilter;
use crate::binlog::walk::{ReplayFile, ReplayProgress, StopAt, Walk, WalkError};
use crate::error::{Error, Result};
use crate::mysql::gtid::GtidSet;
use crate::mysql::session::Session;
use crate::mysql::wire::ConnectOptions;

pub fn replay(
    target: &ConnectOptions,
    files: Vec<ReplayFile>,
    stop: StopAt,
    expected: &GtidSet,
    progress: Progress<'_>,
) -> Result<ReplayReport> {
    let started = Instant::now();
    let mut s = Session::connect(target)?;
    check_target(&mut s)?;
    let start_set = gtid_executed(&mut s)?;
    // As mysqlbinlog's output does: the session applies events the way a replica would.
    if s.exec("SET SESSION pseudo_replica_mode = 1").is_err() {
        s.exec("SET SESSION pseudo_slave_mode = 1")?;
    }
    let counters = ReplayProgress::default();
    let cancel = AtomicBool::new(false);
    let walk = Walk {
        files: &files,
        stop_at: &stop,
        cancel: &cancel,
        progress: &counters,
    };
    let walked = {
        let conn = s.conn();
        let mut exec = |sql: &[u8]| {
            conn.exec_bytes(sql)
                .map(|_| ())
                .map_err(|e| std::io::Error::other(e.to_string()))
        };
        let mut sink = SqlSink::new(&mut exec);
        let mut started_tx = 0u64;
        walk.run(&start_set, &mut sink, &mut |_| {
            crate::failpoint::hit("pitr-sql-transaction");
            started_tx += 1;
            progress(
                started_tx,
                counters.bytes.load(Ordering::Relaxed),
                started_tx,
            );
        })
    };
    match walked {
        Ok(_) => {}
        // The session's open transaction, if any, is rolled back when it closes.
        Err(e @ WalkError::Archive { .. }) => return Err(walk_error(e)),
        Err(e) => return Err(Error::TargetRefused(format!("the SQL replay stopped: {e}"))),
    }
    let final_set = gtid_executed(&mut s)?;
    if &final_set != expected {
        return Err(Error::Internal(format!(
            "the target ended with {final_set}, not the planned {expected}"
        )));
    }
    Ok(ReplayReport {
        transactions: final_set.subtract(&start_set).count(),
        bytes: counters.bytes.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
        final_gtids: final_set.to_string(),
        server_id_swapped: false,
    })
}

/// Walks `files` from the state `have` (a snapshot's GTID set) to `stop`, handing what
/// `filter` keeps to `exec` as SQL.
fn walk_tables(
    files: &[ReplayFile],
    stop: &StopAt,
    have: &GtidSet,
    filter: &mut dyn TableFilter,
    exec: &mut Exec<'_>,
    progress: Progress<'_>,
) -> Result<u64> {
    let counters = ReplayProgress::default();
    let cancel = AtomicBool::new(false);
    let walk = Walk {
        files,
        stop_at: stop,
        cancel: &cancel,
        progress: &counters,
    };
    let mut sink = SqlSink::filtered(exec, filter);
    let mut walked = 0u64;
    let result = walk.run(have, &mut sink, &mut |_| {
        walked += 1;
        progress(walked, counters.bytes.load(Ordering::Relaxed), walked);
    });
    match result {
        Ok(_) => Ok(counters.bytes.load(Ordering::Relaxed)),
        Err(e @ WalkError::Archive { .. }) => Err(walk_error(e)),
        Err(WalkError::Other(e)) => Err(Error::Usage(format!(
            "the single-table replay cannot go on: {e}"
        ))),
    }
}

/// What a single-table replay would do, without a server: `filter` counts the transactions
/// that touch its tables and those left out, and notes their DDL; a statement it cannot
/// replay fails here, before anything is written.
pub fn dry_run_tables(
    files: &[ReplayFile],
    stop: &StopAt,
    have: &GtidSet,
    filter: &mut dyn TableFilter,
) -> Result<()> {
    let mut nothing = |_: &[u8]| Ok(());
    walk_tables(files, stop, have, filter, &mut nothing, &|_, _, _| {}).map(drop)
}

/// Replays into `target` only what `filter` keeps, under the names it gives, in one session
/// that sets no GTID of the source's: each kept transaction commits as the target's own (a
/// new GTID of the target's, which its replicas apply), or with `binlog` off under no GTID and
/// outside the binary log, so the target's `gtid_executed` and its replicas see nothing of it.
/// Row events apply as `BINLOG` statements.
pub fn replay_tables(
    (target, binlog): (&ConnectOptions, bool),
    files: &[ReplayFile],
    stop: &StopAt,
    have: &GtidSet,
    filter: &mut dyn TableFilter,
    progress: Progress<'_>,
) -> Result<ReplayReport> {
    let started = Instant::now();
    let mut s = Session::connect(target)?;
    check_target(&mut s)?;
    // Each kept transaction commits under GTID_NEXT = AUTOMATIC (see `SqlSink::filtered`).
    if !binlog {
        s.exec(crate::restore::logical::NO_BINLOG)?;
    }
    let progress = |walked: u64, bytes: u64, applied: u64| {
        crate::failpoint::hit("tables-mid-replay");
        progress(walked, bytes, applied)
    };
    let bytes = {
        let conn = s.conn();
        let mut exec = |sql: &[u8]| {
            conn.exec_bytes(sql)
                .map(|_| ())
                .map_err(|e| std::io::Error::other(e.to_string()))
        };
        walk_tables(files, stop, have, filter, &mut exec, &progress)
    }
    .map_err(|e| match e {
        Error::Usage(m) => Error::TargetRefused(m),
        other => other,
    })?;
    // Others may write to a live target meanwhile: its set grows, by this session too.
    let after = gtid_executed(&mut s)?;
    Ok(ReplayReport {
        transactions: 0,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
        final_gtids: after.to_string(),
        server_id_swapped: false,
    })
}
