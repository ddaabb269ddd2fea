//! Reading back, before anything touches a target, every archived byte a replay will need:
//! each chunk against its id, each event against its CRC32. A damaged segment then stops the
//! restore with an integrity error naming it, instead of failing half-way through the replay
//! with the snapshot already loaded.

use std::io::BufReader;
use std::time::Instant;

use serde::Serialize;

use crate::binlog::index::{SummaryBuilder, TxInfo};
use crate::binlog::reader::{EventReader, ReadError};
use crate::binlog::walk::ReplayFile;
use crate::error::{Error, Result};
use crate::repo::manifest::BinlogSegment;
use crate::repo::{Repo, RepoError};
use crate::storage::StorageError;

/// An archived file a replay reads, and how much of it.
#[derive(Debug, Clone)]
pub struct NeededFile {
    pub file: ReplayFile,
    /// The replay reads the events that start before this offset: the whole file, or up to
    /// the end of the transaction at the boundary.
    pub read_to: u64,
    /// The plan read those bytes already (to find the boundary), with the same checks.
    pub read_by_plan: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// Files whose needed bytes are checked, and those bytes.
    pub files: usize,
    pub bytes: u64,
    /// Of those, what the plan had read already (to find the boundary).
    pub bytes_read_by_plan: u64,
    pub seconds: f64,
}

/// How a segment is named to the operator: `binlog.000012 of <server_uuid>`.
pub fn segment_name(seg: &BinlogSegment) -> String {
    format!("{} of {}", seg.file, seg.source_uuid)
}

/// A failure to read an archived segment back, as the operator sees it. Damage (a chunk that
/// does not match its id, a chunk or pack that is missing, an object that does not decrypt)
/// is an integrity failure naming the segment; anything else (an unreachable store) keeps its
/// own kind.
pub fn segment_error(segment: &str, e: RepoError) -> Error {
    let damaged = |store: String, detail: String| {
        Error::Repo(RepoError::Integrity {
            store,
            what: segment.to_string(),
            detail,
        })
    };
    match e {
        RepoError::Integrity {
            store,
            what,
            detail,
        } => damaged(store, format!("{what}: {detail}")),
        RepoError::Storage(StorageError::Damaged { store, key, detail }) => {
            damaged(store, format!("{key} {detail}"))
        }
        RepoError::Storage(StorageError::NotFound { store, key }) => {
            damaged(store, format!("{key} is missing"))
        }
        RepoError::NotFound { store, what } => damaged(store, format!("{what} is missing")),
        other => other.into(),
    }
}

fn read_error(repo: &Repo, seg: &BinlogSegment, e: ReadError) -> Error {
    let segment = segment_name(seg);
    match e {
        ReadError::Io(io) => segment_error(
            &segment,
            crate::repo::reader::unwrap_io(io, &format!("reading binlog {segment}")),
        ),
        // The manifest says the archived bytes go on: a file that ends inside an event here
        // lost its end.
        other => segment_error(
            &segment,
            RepoError::integrity(repo.name(), "its events", other.to_string()),
        ),
    }
}

/// Reads `seg` back from `repo`, every event that starts before `read_to`, with every check
/// the repository and the binlog format allow, and hands each complete transaction to
/// `on_tx` until it returns false. Returns the offset read to.
pub fn scan(
    repo: &Repo,
    seg: &BinlogSegment,
    read_to: u64,
    mut on_tx: impl FnMut(&TxInfo) -> bool,
) -> Result<u64> {
    let reader = repo
        .open_file(&seg.file_entry())
        .map_err(|e| segment_error(&segment_name(seg), e))?;
    let mut events = EventReader::new(BufReader::with_capacity(1 << 20, reader))
        .map_err(|e| read_error(repo, seg, e))?;
    let mut summary = SummaryBuilder::new();
    // Reading a whole file to its end also checks it against its manifest's size and digest.
    let whole = read_to >= seg.size;
    while whole || events.offset() < read_to {
        let item = match events.next_event() {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(e) => return Err(read_error(repo, seg, e)),
        };
        let tx = summary
            .feed(item.offset, &item.header, item.raw.as_ref())
            .map_err(|e| read_error(repo, seg, e.into()))?;
        if let Some(tx) = tx
            && !on_tx(&tx)
        {
            return Ok(tx.end);
        }
    }
    Ok(events.offset())
}

/// Reads back what the replay of `needed` will read and the plan has not: before the target
/// is touched. `progress` sees (files done, files, bytes read).
pub fn check(needed: &[NeededFile], progress: &dyn Fn(usize, usize, u64)) -> Result<CheckReport> {
    let started = Instant::now();
    let (read, todo): (Vec<&NeededFile>, Vec<&NeededFile>) =
        needed.iter().partition(|n| n.read_by_plan);
    let mut bytes = 0u64;
    for (done, n) in todo.iter().enumerate() {
        progress(done, todo.len(), bytes);
        bytes += scan(&n.file.repo, &n.file.segment, n.read_to, |_| true)?;
    }
    progress(todo.len(), todo.len(), bytes);
    let bytes_read_by_plan = read.iter().map(|n| n.read_to).sum();
    Ok(CheckReport {
        files: needed.len(),
        bytes: bytes + bytes_read_by_plan,
        bytes_read_by_plan,
        seconds: started.elapsed().as_secs_f64(),
    })
}
