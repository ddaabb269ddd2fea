//! `myvault list`: snapshots, and what the binlog archive covers: archived ranges, the
//! restorable windows, and the holes between them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::binlog::coverage::{self, ArchiveHole, PitrWindow};
use crate::error::Result;
use crate::repo::Repo;
use crate::repo::manifest::{BinlogSegment, SnapshotManifest};

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotSummary {
    pub id: String,
    pub time: DateTime<Utc>,
    pub method: String,
    /// Plaintext bytes.
    pub size: u64,
    /// Bytes this snapshot added to the repository.
    pub new_bytes: u64,
    pub files: usize,
    pub duration_seconds: f64,
    pub lock_seconds: Option<f64>,
    pub gtid_executed: Option<String>,
    pub binlog_file: Option<String>,
    pub binlog_position: Option<u64>,
    pub source_uuid: Option<String>,
    pub source: Option<String>,
}

/// The archive of one server's binlogs.
#[derive(Debug, Clone, Serialize)]
pub struct BinlogSourceSummary {
    pub server_uuid: String,
    pub files: usize,
    pub bytes: u64,
    pub first_event_time: Option<DateTime<Utc>>,
    pub last_event_time: Option<DateTime<Utc>>,
    /// Archived file ranges, oldest first.
    pub ranges: Vec<ArchivedRange>,
    /// Spans of time every instant of which can be restored, oldest first.
    pub windows: Vec<PitrWindow>,
    /// Holes in the archive: what a restore across them would need and no segment holds.
    pub gaps: Vec<ArchiveHole>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ArchivedRange {
    pub first_file: String,
    pub last_file: String,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ListReport {
    pub repo: String,
    /// Whether the repository's objects are encrypted (format 3).
    pub encrypted: bool,
    pub snapshots: Vec<SnapshotSummary>,
    pub binlog: Vec<BinlogSourceSummary>,
    /// Holes in the binlog archive: transactions lost to point-in-time recovery.
    pub gaps: Vec<crate::repo::manifest::GapRecord>,
}

pub fn run(repo: &Repo) -> Result<ListReport> {
    let manifests = repo.snapshots()?;
    let binlog = binlog_summary(repo.binlog_segments()?, &manifests)?;
    let snapshots = manifests
        .into_iter()
        .map(|s| SnapshotSummary {
            duration_seconds: (s.finished - s.started).num_milliseconds() as f64 / 1000.0,
            files: s.files.len(),
            source_uuid: s.source.as_ref().map(|src| src.server_uuid.clone()),
            source: s.source.as_ref().map(|src| src.address.clone()),
            id: s.id,
            time: s.time,
            method: s.method,
            size: s.size,
            new_bytes: s.new_bytes,
            lock_seconds: s.lock_seconds,
            gtid_executed: s.gtid_executed,
            binlog_file: s.binlog_file,
            binlog_position: s.binlog_position,
        })
        .collect();
    Ok(ListReport {
        repo: repo.name().to_string(),
        encrypted: repo.is_encrypted(),
        snapshots,
        binlog,
        gaps: repo.gaps()?,
    })
}

/// Per server: the newest segment of each file, grouped into runs of consecutive files, and
/// the windows and holes they leave for the snapshots.
pub fn binlog_summary(
    segments: Vec<BinlogSegment>,
    snapshots: &[SnapshotManifest],
) -> Result<Vec<BinlogSourceSummary>> {
    let by_server = coverage::newest_segments(segments)?;
    let mut covered: BTreeMap<String, coverage::SourceCoverage> =
        coverage::coverage(&by_server, snapshots)
            .into_iter()
            .map(|c| (c.server_uuid.clone(), c))
            .collect();
    Ok(by_server
        .into_iter()
        .map(|(server_uuid, files)| {
            let mut ranges: Vec<ArchivedRange> = Vec::new();
            let mut prev_seq: Option<u64> = None;
            for (&seq, seg) in &files {
                let seq = Some(seq);
                let continues = matches!((prev_seq, seq), (Some(p), Some(s)) if s == p + 1);
                match ranges.last_mut() {
                    Some(r) if continues => {
                        r.last_file = seg.file.clone();
                        r.end = seg.last_event_time.or(r.end);
                    }
                    _ => ranges.push(ArchivedRange {
                        first_file: seg.file.clone(),
                        last_file: seg.file.clone(),
                        start: seg.first_event_time,
                        end: seg.last_event_time,
                    }),
                }
                prev_seq = seq;
            }
            let coverage = covered.remove(&server_uuid).unwrap_or_default();
            BinlogSourceSummary {
                server_uuid,
                windows: coverage.windows,
                gaps: coverage.holes,
                files: files.len(),
                bytes: files.values().map(|s| s.size).sum(),
                first_event_time: files.values().filter_map(|s| s.first_event_time).min(),
                last_event_time: files.values().filter_map(|s| s.last_event_time).max(),
                ranges,
            }
        })
        .collect())
}
