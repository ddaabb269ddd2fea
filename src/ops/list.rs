//! `myvault list`: snapshots, and what the binlog archive covers.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::binlog::file_sequence;
use crate::error::Result;
use crate::repo::Repo;
use crate::repo::manifest::BinlogSegment;

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
    let snapshots = repo
        .snapshots()?
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
        binlog: binlog_summary(repo.binlog_segments()?),
        gaps: repo.gaps()?,
    })
}

/// Per server: the newest segment of each file, grouped into runs of consecutive files.
pub fn binlog_summary(segments: Vec<BinlogSegment>) -> Vec<BinlogSourceSummary> {
    let mut by_server: BTreeMap<String, BTreeMap<String, BinlogSegment>> = BTreeMap::new();
    for seg in segments {
        let files = by_server.entry(seg.source_uuid.clone()).or_default();
        match files.get(&seg.file) {
            Some(have) if have.size >= seg.size => {}
            _ => {
                files.insert(seg.file.clone(), seg);
            }
        }
    }
    by_server
        .into_iter()
        .map(|(server_uuid, files)| {
            let mut ranges: Vec<ArchivedRange> = Vec::new();
            let mut prev_seq: Option<u64> = None;
            for seg in files.values() {
                let seq = file_sequence(&seg.file);
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
            BinlogSourceSummary {
                server_uuid,
                files: files.len(),
                bytes: files.values().map(|s| s.size).sum(),
                first_event_time: files.values().filter_map(|s| s.first_event_time).min(),
                last_event_time: files.values().filter_map(|s| s.last_event_time).max(),
                ranges,
            }
        })
        .collect()
}
