//! What an earlier, interrupted seeding of the same replica left, so that running the same
//! command again finishes the replica instead of refusing a target that is "not empty" or
//! "already replicating" (and instead of `--force`, which would load it all again).
//!
//! Nothing is recorded for it: the target's state says it. A logical load ends by setting
//! `GTID_PURGED` to the snapshot's GTID set and dropping its progress schema, so a target
//! without that schema or a channel, whose `gtid_executed` is exactly the snapshot's, holds
//! the snapshot. A target replicating from this source as this seeding attaches it, with no
//! transaction of its own (its `gtid_executed` within the source's), only needs to catch up.
//! A replica that did write transactions of its own (drift) is not taken for one: seeding it
//! again needs `--force`.

use crate::error::Result;
use crate::mysql::gtid::GtidSet;
use crate::mysql::session::{Session, quote_str};

use super::preflight::{SourceState, TargetState};

/// How far an earlier seeding of this target got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Earlier {
    /// Nothing to reuse: fill the target.
    Nothing,
    /// The snapshot is loaded: attach.
    Loaded,
    /// Attached to this source: catch up (and verify).
    Attached,
}

impl Earlier {
    /// The plan's line for what is skipped.
    pub fn step(self, snapshot: &str) -> Option<String> {
        match self {
            Earlier::Nothing => None,
            Earlier::Loaded => Some(format!(
                "the target already holds snapshot {snapshot} (its gtid_executed is the snapshot's: an earlier seeding loaded it); the load is skipped"
            )),
            Earlier::Attached => Some(
                "the target already replicates from this source without transactions of its own (an earlier seeding attached it); loading and attaching are skipped"
                    .into(),
            ),
        }
    }

    /// What the report warns of when an earlier run is continued: its load's settings were
    /// kept for catching up and are not known to this run.
    pub fn warning(self) -> Option<String> {
        (self != Earlier::Nothing).then(|| {
            "continued an earlier seeding: if it did not end, the settings its load changed \
             (innodb_redo_log_capacity, local_infile) may still have the load's values"
                .into()
        })
    }
}

/// Where an earlier seeding of `tgt` (whose state is `state`) from a logical snapshot holding
/// `snapshot` got, for a seeding that attaches it to `source` at `host:port` as `user`.
pub fn earlier(
    tgt: &mut Session,
    state: &TargetState,
    source: &SourceState,
    snapshot: &GtidSet,
    (host, port, user): (&str, u16, &str),
) -> Result<Earlier> {
    if snapshot.is_empty() || !snapshot.is_subset(&state.gtid_executed) {
        return Ok(Earlier::Nothing);
    }
    let own_transactions = !state.gtid_executed.is_subset(&source.gtid_executed);
    match state.channels.as_slice() {
        [] if state.gtid_executed == *snapshot && !loading(tgt)? => Ok(Earlier::Loaded),
        [default] if default.is_empty() && !own_transactions => {
            let attached_here = tgt
                .query(
                    "SELECT HOST, PORT, USER, AUTO_POSITION FROM performance_schema.replication_connection_configuration \
                     WHERE CHANNEL_NAME = ''",
                )?
                .first()
                .is_some_and(|r| {
                    r.text_at(0).as_deref() == Some(host)
                        && r.u64_at(1) == Some(u64::from(port))
                        && r.text_at(2).as_deref() == Some(user)
                        && r.text_at(3).as_deref() == Some("1")
                });
            Ok(if attached_here {
                Earlier::Attached
            } else {
                Earlier::Nothing
            })
        }
        _ => Ok(Earlier::Nothing),
    }
}

/// Whether a logical load's progress schema is on the target (a load to resume, not done).
fn loading(tgt: &mut Session) -> Result<bool> {
    Ok(tgt
        .query_value(&format!(
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {}",
            quote_str(crate::restore::PROGRESS_SCHEMA)
        ))?
        .as_deref()
        != Some("0"))
}
