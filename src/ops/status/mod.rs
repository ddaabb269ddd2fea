//! `myvault status`: every source in every repository side by side, and a verdict.
//!
//! For each source (a server, by its uuid, or a backed-up path) and each repository: the
//! newest snapshot and its age, the restorable windows, how fresh the binlog archive is, its
//! holes; for each repository: whether it can be read and its last verify and restore test;
//! across repositories: what one holds and another lacks. [`verdict`] turns that into
//! problems, and any critical problem makes the whole status unhealthy (its own exit code).
//!
//! Everything here is read from the repositories themselves, so `status` tells the same on
//! any host that can reach them; the streamer's spool adds, on its host, the bytes waiting
//! there for each repository.

mod divergence;
mod gather;
pub mod spool;
mod verdict;
pub mod verifications;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::binlog::coverage::{ArchiveHole, PitrWindow};
use crate::error::Result;
use crate::ops::list::ArchivedRange;
use crate::repo::manifest::GapRecord;
use crate::storage::OpenOptions;
pub use divergence::{Divergence, DivergenceKind};
use verifications::VerificationRecord;

/// What `status` looks at, and the limits it judges by.
#[derive(Debug, Clone)]
pub struct StatusOptions {
    pub repos: Vec<String>,
    pub store: OpenOptions,
    /// The streamer's spool directory, when it is on this host.
    pub spool: Option<PathBuf>,
    pub limits: Limits,
    /// Sources not judged (retired servers, an old primary after a failover): shown only.
    pub ignore_sources: Vec<String>,
    pub now: DateTime<Utc>,
}

/// The thresholds of the verdict; `None` turns a check off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A source's newest snapshot may be this old in every repository.
    pub max_snapshot_age: Option<chrono::Duration>,
    /// A repository's binlog archive may trail now by this much.
    pub max_archive_lag: Option<chrono::Duration>,
    /// Every repository must have been verified this recently.
    pub max_verify_age: Option<chrono::Duration>,
}

impl Limits {
    /// 26 hours (a nightly backup, with slack) and 5 minutes; verify age not judged.
    pub const DEFAULT: Limits = Limits {
        max_snapshot_age: Some(chrono::Duration::hours(26)),
        max_archive_lag: Some(chrono::Duration::minutes(5)),
        max_verify_age: None,
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Healthy,
    Unhealthy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Makes the status unhealthy.
    Critical,
    /// Worth knowing; the verdict stays as it is.
    Warning,
}

/// What is wrong, as a stable name for machines (the `what` text is for people).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemCode {
    RepoUnreadable,
    NoSnapshot,
    SnapshotTooOld,
    ArchiveMissing,
    ArchiveStale,
    ArchiveHole,
    ArchiveGap,
    Diverged,
    VerifyFailed,
    RestoreTestFailed,
    VerifyTooOld,
    NeverVerified,
    StreamerDown,
    StreamerError,
    /// The running streamer's uploads to a repository fail (its `status.json`).
    UploadFailing,
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub severity: Severity,
    pub code: ProblemCode,
    /// The repository it is about, if one.
    pub repo: Option<String>,
    /// The source it is about, if one.
    pub source: Option<String>,
    /// One sentence for people.
    pub what: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Thresholds {
    pub max_snapshot_age_seconds: Option<i64>,
    pub max_archive_lag_seconds: Option<i64>,
    pub max_verify_age_seconds: Option<i64>,
}

impl From<Limits> for Thresholds {
    fn from(l: Limits) -> Thresholds {
        Thresholds {
            max_snapshot_age_seconds: l.max_snapshot_age.map(|d| d.num_seconds()),
            max_archive_lag_seconds: l.max_archive_lag.map(|d| d.num_seconds()),
            max_verify_age_seconds: l.max_verify_age.map(|d| d.num_seconds()),
        }
    }
}

/// The whole status: the shape of `status --json`, documented in the operator guide.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub verdict: Verdict,
    pub checked_at: DateTime<Utc>,
    pub thresholds: Thresholds,
    /// Critical ones first.
    pub problems: Vec<Problem>,
    pub sources: Vec<SourceStatus>,
    pub repos: Vec<RepoStatus>,
    /// Snapshots and binlog files one repository has and another lacks.
    pub diverged: Vec<Divergence>,
    /// The streamer's spool on this host, when given.
    pub streamer: Option<spool::StreamerStatus>,
}

/// One source across the repositories.
#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    /// The server's uuid (`mariadb-<server_id>` for MariaDB), or `path:<dir>` for
    /// snapshots of plain files.
    pub source: String,
    /// host:port, from the newest snapshot (or the streamer's status).
    pub address: Option<String>,
    /// Named by `--ignore-source`: shown, not judged.
    pub ignored: bool,
    /// One entry per readable repository, in the order given.
    pub repos: Vec<SourceInRepo>,
}

/// One source in one repository.
#[derive(Debug, Clone, Serialize)]
pub struct SourceInRepo {
    pub repo: String,
    pub snapshot_count: usize,
    pub newest_snapshot: Option<SnapshotMark>,
    pub newest_snapshot_age_seconds: Option<i64>,
    /// Every snapshot of the source, oldest first.
    pub snapshots: Vec<SnapshotMark>,
    /// Spans every instant of which can be restored, oldest first.
    pub windows: Vec<PitrWindow>,
    /// The binlog archive, when the repository has one of this source.
    pub archive: Option<ArchiveState>,
    /// Holes in the archive that a restore from a kept snapshot would cross.
    pub holes: Vec<ArchiveHole>,
    /// Purges the streamer found (it could not archive what the source had deleted).
    pub gaps: Vec<GapRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotMark {
    pub id: String,
    pub time: DateTime<Utc>,
    pub method: String,
}

/// How far one repository's archive of one source reaches.
#[derive(Debug, Clone, Serialize)]
pub struct ArchiveState {
    pub files: usize,
    pub bytes: u64,
    pub first_file: String,
    pub last_file: String,
    /// Runs of consecutive files, oldest first.
    pub ranges: Vec<ArchivedRange>,
    /// The commit time of the newest archived transaction.
    pub last_commit: Option<DateTime<Utc>>,
    /// The archive holds everything the source wrote up to here: the last commit, or a later
    /// moment the streamer saw the source idle.
    pub complete_until: Option<DateTime<Utc>>,
    /// When a segment last reached this repository.
    pub last_upload: Option<DateTime<Utc>>,
    /// Now minus `complete_until`.
    pub lag_seconds: Option<i64>,
    /// Bytes in the streamer's spool this repository lacks (when the spool is on this host).
    pub spool_pending_bytes: Option<u64>,
}

/// One repository.
#[derive(Debug, Clone, Serialize)]
pub struct RepoStatus {
    pub repo: String,
    pub readable: bool,
    /// Why it cannot be read.
    pub error: Option<String>,
    pub encrypted: Option<bool>,
    pub snapshots: usize,
    pub binlog_files: usize,
    /// The newest `verify` run, and the newest with a restore test.
    pub last_verify: Option<VerificationRecord>,
    pub last_restore_test: Option<VerificationRecord>,
}

/// Reads every repository (and the spool), and judges.
pub fn run(opts: &StatusOptions) -> Result<StatusReport> {
    let streamer = opts
        .spool
        .as_deref()
        .map(|dir| spool::read(dir, opts.now))
        .transpose()?;
    let facts: Vec<gather::RepoFacts> = opts
        .repos
        .iter()
        .map(|location| gather::repo(location, &opts.store))
        .collect();
    Ok(judge(&facts, streamer, opts))
}

/// The report and its verdict, from what was read.
fn judge(
    facts: &[gather::RepoFacts],
    streamer: Option<spool::StreamerStatus>,
    opts: &StatusOptions,
) -> StatusReport {
    let readable: Vec<&gather::Readable> = facts
        .iter()
        .filter_map(|f| f.content.as_ref().ok())
        .collect();
    let sources = gather::sources(&readable, streamer.as_ref(), opts);
    let repos = facts.iter().map(gather::repo_status).collect();
    let diverged = divergence::find(&readable);
    let mut report = StatusReport {
        verdict: Verdict::Healthy,
        checked_at: opts.now,
        thresholds: opts.limits.into(),
        problems: Vec::new(),
        sources,
        repos,
        diverged,
        streamer,
    };
    report.problems = verdict::problems(&report, opts);
    if report
        .problems
        .iter()
        .any(|p| p.severity == Severity::Critical)
    {
        report.verdict = Verdict::Unhealthy;
    }
    report
}

/// A span of seconds as people say it: `45 s`, `12 min`, `3 h 5 min`, `2 d 4 h`.
pub fn human_age(seconds: i64) -> String {
    let s = seconds.max(0);
    let (d, h, m) = (s / 86_400, s % 86_400 / 3_600, s % 3_600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s} s"),
        (0, 0, m) => format!("{m} min"),
        (0, h, 0) => format!("{h} h"),
        (0, h, m) => format!("{h} h {m} min"),
        (d, 0, _) => format!("{d} d"),
        (d, h, _) => format!("{d} d {h} h"),
    }
}
