//! Ranged reads of packs fetched ahead of their use, for stores across a network.
//!
//! A reader that asks for one range at a time waits a round trip for each: at 20 ms, one
//! 16 MiB range after another reads a file at a fraction of what the path carries (issue 20:
//! `restore --dest` from S3 took 4x `aws s3 cp`). [`ReadAhead`] keeps the next few ranges of
//! a file in flight, each fetched on a short-lived thread of its own, and hands them back in
//! the order they were asked for. At most [`REMOTE_DEPTH`] ranges of at most
//! [`REMOTE_RANGE`] bytes are in flight per reader, so memory stays the same whatever the
//! size of the file or snapshot.
//!
//! A local store answers in microseconds, so its ranges are read inline when their turn comes,
//! as large as before, with no thread and nothing held ahead.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};

use super::id::Id;
use super::index::BlobLocation;
use super::pack_key;
use crate::storage::{self, Storage};

/// Ranges in flight per reader of a remote store.
const REMOTE_DEPTH: usize = 4;
/// Largest ranged read from a remote store: smaller than a pack, so that one pack's chunks
/// are fetched over several connections at once.
const REMOTE_RANGE: u64 = 4 * 1024 * 1024;
/// Largest ranged read from a local store.
const LOCAL_RANGE: u64 = 16 * 1024 * 1024;

/// Neighbouring chunks of one pack, read with one ranged read.
#[derive(Debug)]
pub(crate) struct PlannedRange {
    pub pack: Id,
    pub start: u64,
    pub len: u64,
    pub chunks: Vec<(Id, BlobLocation)>,
}

enum Fetch {
    /// Read inline when its turn comes.
    Later,
    /// Being read on its own thread.
    InFlight(Receiver<storage::Result<Vec<u8>>>),
}

pub(crate) struct ReadAhead {
    storage: Arc<dyn Storage>,
    depth: usize,
    queue: VecDeque<(PlannedRange, Fetch)>,
}

impl ReadAhead {
    pub fn new(storage: Arc<dyn Storage>) -> ReadAhead {
        let depth = if storage.is_remote() { REMOTE_DEPTH } else { 0 };
        ReadAhead {
            storage,
            depth,
            queue: VecDeque::new(),
        }
    }

    /// The largest range worth asking for.
    pub fn max_range(&self) -> u64 {
        if self.depth > 0 {
            REMOTE_RANGE
        } else {
            LOCAL_RANGE
        }
    }

    /// Whether another range should be planned now: while fewer than the depth are queued
    /// (inline reads queue one at a time).
    pub fn wants_more(&self) -> bool {
        self.queue.len() < self.depth.max(1)
    }

    pub fn push(&mut self, range: PlannedRange) {
        let fetch = if self.depth == 0 {
            Fetch::Later
        } else {
            self.spawn(&range)
        };
        self.queue.push_back((range, fetch));
    }

    /// The oldest range asked for and its bytes (or the storage error reading it); `None`
    /// when nothing is queued.
    pub fn pop(&mut self) -> Option<(PlannedRange, storage::Result<Vec<u8>>)> {
        let (range, fetch) = self.queue.pop_front()?;
        let data = match fetch {
            Fetch::InFlight(rx) => match rx.recv() {
                Ok(data) => data,
                // The thread died without an answer (it panicked): read it here instead.
                Err(_) => self.read(&range),
            },
            Fetch::Later => self.read(&range),
        };
        Some((range, data))
    }

    fn read(&self, range: &PlannedRange) -> storage::Result<Vec<u8>> {
        self.storage
            .get_range(&pack_key(&range.pack), range.start, range.len)
    }

    fn spawn(&self, range: &PlannedRange) -> Fetch {
        let (tx, rx) = sync_channel(1);
        let storage = self.storage.clone();
        let (key, start, len) = (pack_key(&range.pack), range.start, range.len);
        let started = std::thread::Builder::new()
            .name("read-ahead".into())
            .spawn(move || {
                // A reader dropped early no longer listens: nothing to do with the bytes.
                let _ = tx.send(storage.get_range(&key, start, len));
            });
        match started {
            Ok(_) => Fetch::InFlight(rx),
            // No thread to be had (a process limit): read it inline instead.
            Err(_) => Fetch::Later,
        }
    }
}
