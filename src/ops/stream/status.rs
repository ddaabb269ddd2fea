//! What the streamer reports (`status.json`, the status line, `/metrics`): the stream's own
//! state, kept by the streaming thread, joined with each repository's upload state, kept by
//! the upload thread. Either thread may be busy (a slow upload, a blocked read) without
//! holding up the other or a reader: both only publish their state under short locks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::binlog::upload_ledger::{Receiving, RepoUploadStatus};
use crate::binlog::uploader::UploadObserver;

/// The streamer's state; `status.json` holds it as JSON. Field names are stable (the operator
/// guide documents each); new fields may be added.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamStatus {
    /// The source streamed from (`host:port`).
    pub source: String,
    pub server_uuid: String,
    pub file: String,
    pub position: u64,
    /// How far the off-site copy is behind: the largest of `receive_lag_seconds` and every
    /// repository's `upload_lag_seconds`. Grows while any repository falls behind.
    pub lag_seconds: f64,
    /// Seconds between the last event's timestamp and now; 0 when a heartbeat says the
    /// stream has everything the source wrote.
    pub receive_lag_seconds: f64,
    /// Receiving from the source now (false while reconnecting).
    pub connected: bool,
    pub last_event_time: Option<DateTime<Utc>>,
    pub received_bytes: u64,
    /// Binlog bytes this run archived in every repository, each byte once.
    pub archived_bytes: u64,
    pub spool_bytes: u64,
    /// Upload jobs queued or running (one per file at most; see `pending_bytes`).
    pub pending_uploads: usize,
    /// Bytes received that the repository furthest behind does not hold yet.
    pub pending_bytes: u64,
    pub reconnects: u64,
    /// What is wrong now (the stream's error, else each failing repository's), with its
    /// time; null when all is well.
    pub last_error: Option<String>,
    pub last_error_time: Option<DateTime<Utc>>,
    /// When this status was made.
    pub updated_at: Option<DateTime<Utc>>,
    /// Each repository's upload state.
    pub repos: Vec<RepoUploadStatus>,
    /// Per repository, gap records no later snapshot of their server has made harmless.
    #[serde(skip)]
    pub gaps: BTreeMap<String, u64>,
    /// The stream's own problem (connection, full spool), cleared when it streams again.
    #[serde(skip)]
    pub stream_error: Option<(String, DateTime<Utc>)>,
    /// What the stream holds beyond the jobs it gave the uploader.
    #[serde(skip)]
    pub receiving: Option<Receiving>,
}

impl StreamStatus {
    pub fn set_stream_error(&mut self, e: impl Into<String>) {
        self.stream_error = Some((e.into(), Utc::now()));
    }

    /// Fills in the repositories' state and everything derived from it, as of `now`.
    pub fn complete(&mut self, uploads: &UploadObserver, now: DateTime<Utc>) {
        let stats = uploads.stats_at(now, self.receiving.as_ref());
        self.archived_bytes = stats.archived_bytes;
        self.pending_uploads = stats.pending;
        self.repos = stats.repos;
        for r in &mut self.repos {
            r.gaps = self.gaps.get(&r.repo).copied().unwrap_or(0);
        }
        self.pending_bytes = self
            .repos
            .iter()
            .map(|r| r.pending_bytes)
            .max()
            .unwrap_or(0);
        self.lag_seconds = self
            .repos
            .iter()
            .map(|r| r.upload_lag_seconds)
            .fold(self.receive_lag_seconds, f64::max);
        let failing: Vec<&RepoUploadStatus> = self
            .repos
            .iter()
            .filter(|r| r.last_error.is_some())
            .collect();
        (self.last_error, self.last_error_time) = match &self.stream_error {
            Some((e, t)) => (Some(e.clone()), Some(*t)),
            None if failing.is_empty() => (None, None),
            None => (
                Some(
                    failing
                        .iter()
                        .filter_map(|r| r.last_error.as_deref())
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
                failing.iter().filter_map(|r| r.last_error_time).max(),
            ),
        };
        self.updated_at = Some(now);
    }
}

/// The latest state the streaming thread published, for readers on other threads.
#[derive(Clone, Default)]
pub struct Published(Arc<Mutex<StreamStatus>>);

impl Published {
    pub fn publish(&self, status: &StreamStatus) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = status.clone();
    }

    /// The published state, completed with the upload state as of now.
    pub fn read(&self, uploads: &UploadObserver) -> StreamStatus {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        s.complete(uploads, Utc::now());
        s
    }
}
