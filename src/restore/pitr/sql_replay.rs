//! The fallback replay engine: the archived events as SQL in one session of the target
//! (`BINLOG '<base64>'` for row events, statements for DDL), as `mysqlbinlog | mysql` would
//! run them but with myvault's exact boundaries and verified input. For targets that cannot
//! replicate from myvault (no route back to this host, no privilege to configure a channel).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::replay::{Progress, ReplayReport, check_target, gtid_executed, walk_error};
use crate::binlog::statements::SqlSink;
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
