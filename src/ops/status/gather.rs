//! Reading what each repository holds, and arranging it by source.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeZone, Utc};

use super::spool::StreamerStatus;
use super::verifications::{self, VerificationRecord};
use super::{ArchiveState, RepoStatus, SnapshotMark, SourceInRepo, SourceStatus, StatusOptions};
use crate::binlog::coverage::{self, ArchiveFiles};
use crate::error::Result;
use crate::ops::list::{self, BinlogSourceSummary};
use crate::repo::RepoError;
use crate::repo::manifest::{BinlogSegment, GapRecord, SnapshotManifest};
use crate::storage::OpenOptions;

/// One repository as given, and what could be read of it.
pub(super) struct RepoFacts {
    pub location: String,
    pub content: std::result::Result<Readable, String>,
}

/// Everything `status` needs of a repository it could read.
pub(super) struct Readable {
    pub location: String,
    pub encrypted: bool,
    /// Oldest first, without their file lists (not needed here, and they can be long).
    pub snapshots: Vec<SnapshotManifest>,
    /// The newest segment of every archived file, by source and file number.
    pub archive: ArchiveFiles,
    pub binlog: Vec<BinlogSourceSummary>,
    pub gaps: Vec<GapRecord>,
    pub verifications: Vec<VerificationRecord>,
}

pub(super) fn repo(location: &str, store: &OpenOptions) -> RepoFacts {
    RepoFacts {
        location: location.to_string(),
        content: read(location, store).map_err(|e| e.to_string()),
    }
}

fn read(location: &str, store: &OpenOptions) -> Result<Readable> {
    let repo = crate::ops::repos::open(location, store)?;
    // A prune running meanwhile may delete a manifest between the listing and its reading:
    // read again rather than call the repository unreadable.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let read = repo
            .snapshots()
            .and_then(|s| Ok((s, repo.binlog_segments()?, repo.gaps()?)));
        match read {
            Ok((snapshots, segments, gaps)) => {
                return Readable::new(
                    location,
                    repo.is_encrypted(),
                    snapshots,
                    segments,
                    gaps,
                    verifications::read(&repo)?,
                );
            }
            Err(RepoError::NotFound { .. }) if attempts < 3 => {
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

impl Readable {
    pub(super) fn new(
        location: &str,
        encrypted: bool,
        mut snapshots: Vec<SnapshotManifest>,
        segments: Vec<BinlogSegment>,
        gaps: Vec<GapRecord>,
        verifications: Vec<VerificationRecord>,
    ) -> Result<Readable> {
        for s in &mut snapshots {
            s.files = Vec::new();
        }
        let archive = coverage::newest_segments(segments.iter().cloned())?;
        let binlog = list::binlog_summary(segments, &snapshots)?;
        Ok(Readable {
            location: location.to_string(),
            encrypted,
            snapshots,
            archive,
            binlog,
            gaps,
            verifications,
        })
    }
}

/// The key a snapshot is known by here: its server's uuid, or the path it backed up.
pub(super) fn source_of(s: &SnapshotManifest) -> String {
    match &s.source {
        Some(src) => src.server_uuid.clone(),
        None => format!("path:{}", s.backed_up_path().unwrap_or_default()),
    }
}

/// Every source any readable repository knows, each with its state in every one of them.
pub(super) fn sources(
    repos: &[&Readable],
    streamer: Option<&StreamerStatus>,
    opts: &StatusOptions,
) -> Vec<SourceStatus> {
    let mut ids: BTreeSet<String> = BTreeSet::new();
    for r in repos {
        ids.extend(r.snapshots.iter().map(source_of));
        ids.extend(r.archive.keys().cloned());
    }
    ids.into_iter()
        .map(|id| SourceStatus {
            address: address(&id, repos, streamer),
            ignored: opts.ignore_sources.contains(&id),
            repos: repos
                .iter()
                .map(|r| source_in_repo(&id, r, streamer, opts.now))
                .collect(),
            source: id,
        })
        .collect()
}

fn address(id: &str, repos: &[&Readable], streamer: Option<&StreamerStatus>) -> Option<String> {
    let newest = repos
        .iter()
        .flat_map(|r| r.snapshots.iter())
        .filter(|s| source_of(s) == id)
        .max_by_key(|s| s.time);
    match newest {
        Some(s) => s.source.as_ref().map(|src| src.address.clone()),
        None => streamer
            .filter(|st| st.server_uuid.as_deref() == Some(id))
            .and_then(|st| st.source.clone()),
    }
}

fn source_in_repo(
    id: &str,
    r: &Readable,
    streamer: Option<&StreamerStatus>,
    now: DateTime<Utc>,
) -> SourceInRepo {
    let snapshots: Vec<SnapshotMark> = r
        .snapshots
        .iter()
        .filter(|s| source_of(s) == id)
        .map(|s| SnapshotMark {
            id: s.id.clone(),
            time: s.time,
            method: s.method.clone(),
        })
        .collect();
    let newest = snapshots.last().cloned();
    let summary = r.binlog.iter().find(|b| b.server_uuid == id);
    SourceInRepo {
        repo: r.location.clone(),
        snapshot_count: snapshots.len(),
        newest_snapshot_age_seconds: newest.as_ref().map(|s| (now - s.time).num_seconds()),
        newest_snapshot: newest,
        snapshots,
        windows: summary.map(|b| b.windows.clone()).unwrap_or_default(),
        archive: r
            .archive
            .get(id)
            .zip(summary)
            .map(|(files, b)| archive_state(id, files, b, streamer, now)),
        holes: summary.map(|b| b.gaps.clone()).unwrap_or_default(),
        gaps: r
            .gaps
            .iter()
            .filter(|g| g.server_uuid == id)
            .cloned()
            .collect(),
    }
}

fn archive_state(
    id: &str,
    files: &BTreeMap<u64, BinlogSegment>,
    summary: &BinlogSourceSummary,
    streamer: Option<&StreamerStatus>,
    now: DateTime<Utc>,
) -> ArchiveState {
    let last_commit = files.values().filter_map(last_commit).max();
    // The streamer records, with the open file, when the source last said (by a heartbeat)
    // that it had sent everything: the archive is complete up to then even with no commit.
    let idle_since = files.values().next_back().and_then(|s| {
        s.extra
            .get("complete_at")
            .and_then(|v| serde_json::from_value::<DateTime<Utc>>(v.clone()).ok())
    });
    let complete_until = last_commit.max(idle_since);
    ArchiveState {
        files: files.len(),
        bytes: summary.bytes,
        first_file: files
            .values()
            .next()
            .map(|s| s.file.clone())
            .unwrap_or_default(),
        last_file: files
            .values()
            .next_back()
            .map(|s| s.file.clone())
            .unwrap_or_default(),
        ranges: summary.ranges.clone(),
        last_commit,
        complete_until,
        last_upload: files.values().map(|s| s.archived_at).max(),
        lag_seconds: complete_until.map(|t| (now - t).num_seconds().max(0)),
        spool_pending_bytes: streamer.and_then(|st| st.pending_bytes(id, files)),
    }
}

fn last_commit(seg: &BinlogSegment) -> Option<DateTime<Utc>> {
    seg.last_commit_us
        .and_then(|us| Utc.timestamp_micros(us).single())
        .or(seg.last_event_time)
}

pub(super) fn repo_status(f: &RepoFacts) -> RepoStatus {
    match &f.content {
        Ok(r) => RepoStatus {
            repo: f.location.clone(),
            readable: true,
            error: None,
            encrypted: Some(r.encrypted),
            snapshots: r.snapshots.len(),
            binlog_files: r.archive.values().map(BTreeMap::len).sum(),
            last_verify: r.verifications.last().cloned(),
            last_restore_test: r
                .verifications
                .iter()
                .rev()
                .find(|v| v.restore_test)
                .cloned(),
        },
        Err(e) => RepoStatus {
            repo: f.location.clone(),
            readable: false,
            error: Some(e.clone()),
            encrypted: None,
            snapshots: 0,
            binlog_files: 0,
            last_verify: None,
            last_restore_test: None,
        },
    }
}
