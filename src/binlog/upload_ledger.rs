//! What each repository holds of the spool, and since when it lacks something: the truth
//! behind the streamer's per-repository status and metrics.
//!
//! Every upload job that brings new commits leaves a mark: its file, its length, and the
//! time of the oldest commit it is the first to carry. A repository's upload lag is the age
//! of the oldest mark it has not archived yet (or of commits received but not yet handed to
//! the uploader), so it grows for as long as a repository falls behind, and is 0 when it
//! holds everything. Marks come one per upload of the open file or per sealed file, and go
//! once every repository holds them: a day's outage at the default interval is ~1500 marks.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::archive::UploadJob;

/// A file of one server.
type FileKey = (String, String);

fn key(server_uuid: &str, file: &str) -> FileKey {
    (server_uuid.to_string(), file.to_string())
}

/// One repository's upload state, as `status.json` and `/metrics` show it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RepoUploadStatus {
    /// The repository, as messages name it.
    pub repo: String,
    /// No error since the last successful upload.
    pub healthy: bool,
    /// When an upload last reached this repository.
    pub last_success_time: Option<DateTime<Utc>>,
    /// The newest commit this repository holds (of what this process uploaded).
    pub last_archived_commit_time: Option<DateTime<Utc>>,
    /// The oldest commit received that this repository does not hold yet.
    pub oldest_pending_time: Option<DateTime<Utc>>,
    /// Now minus `oldest_pending_time`; 0 when it holds everything received.
    pub upload_lag_seconds: f64,
    /// Bytes received that this repository does not hold yet.
    pub pending_bytes: u64,
    /// Binlog bytes this process archived in this repository (each byte once).
    pub archived_bytes: u64,
    pub uploads: u64,
    pub failed_uploads: u64,
    /// Why the last upload to it failed; cleared by the next success.
    pub last_error: Option<String>,
    pub last_error_time: Option<DateTime<Utc>>,
    /// The first failure since the last success.
    pub failing_since: Option<DateTime<Utc>>,
    /// Gap records in this repository that no later snapshot of their server made
    /// harmless (filled in by the streamer, which reads them).
    pub gaps: u64,
}

/// What the stream has received beyond what it gave the uploader: the open file's length and
/// the oldest commit in it since the last upload job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Receiving {
    pub server_uuid: String,
    pub file: String,
    pub len: u64,
    pub unsubmitted_since: Option<DateTime<Utc>>,
}

#[derive(Debug)]
struct Mark {
    file: FileKey,
    end: u64,
    since: DateTime<Utc>,
}

#[derive(Debug, Default)]
struct RepoLedger {
    status: RepoUploadStatus,
    /// Bytes of each file this repository holds.
    archived: HashMap<FileKey, u64>,
}

impl RepoLedger {
    fn holds(&self, file: &FileKey, end: u64) -> bool {
        self.archived.get(file).copied().unwrap_or(0) >= end
    }
}

/// How an upload went in one repository.
pub struct RepoOutcome<'a> {
    pub repo: &'a str,
    pub error: Option<&'a str>,
    /// What it held of the file before (found while replacing the older segment).
    pub held_before: u64,
}

#[derive(Debug, Default)]
pub struct UploadLedger {
    repos: Vec<RepoLedger>,
    /// Most bytes of each file handed to the uploader.
    received: HashMap<FileKey, u64>,
    marks: VecDeque<Mark>,
    /// Bytes that reached every repository.
    archived_everywhere: u64,
}

fn commit_time(job: &UploadJob) -> Option<DateTime<Utc>> {
    let s = &job.summary;
    s.last_commit_us
        .and_then(|us| DateTime::from_timestamp_micros(i64::try_from(us).ok()?))
        .or_else(|| DateTime::from_timestamp(i64::from(s.last_event_time?), 0))
}

impl UploadLedger {
    pub fn new<'a>(repos: impl IntoIterator<Item = &'a str>) -> UploadLedger {
        UploadLedger {
            repos: repos
                .into_iter()
                .map(|r| RepoLedger {
                    status: RepoUploadStatus {
                        repo: r.to_string(),
                        healthy: true,
                        ..Default::default()
                    },
                    archived: HashMap::new(),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn repo_mut(&mut self, name: &str) -> Option<&mut RepoLedger> {
        self.repos.iter_mut().find(|r| r.status.repo == name)
    }

    /// `repo` is known to hold `len` bytes of the file already (from an earlier run).
    pub fn held(&mut self, repo: &str, server_uuid: &str, file: &str, len: u64) {
        if let Some(r) = self.repo_mut(repo) {
            let held = r.archived.entry(key(server_uuid, file)).or_insert(0);
            *held = (*held).max(len);
        }
    }

    /// A job was handed to the uploader.
    pub fn submitted(&mut self, job: &UploadJob) {
        let k = key(&job.server_uuid, &job.file);
        let most = self.received.entry(k.clone()).or_insert(0);
        *most = (*most).max(job.len);
        if let Some(since) = job.oldest_new_commit
            && !self.repos.iter().all(|r| r.holds(&k, job.len))
        {
            self.marks.push_back(Mark {
                file: k,
                end: job.len,
                since,
            });
        }
    }

    fn everywhere(&self, file: &FileKey) -> u64 {
        self.repos
            .iter()
            .map(|r| r.archived.get(file).copied().unwrap_or(0))
            .min()
            .unwrap_or(0)
    }

    /// The job's upload ended with `outcomes`, one per repository.
    pub fn uploaded(&mut self, job: &UploadJob, outcomes: &[RepoOutcome], now: DateTime<Utc>) {
        let k = key(&job.server_uuid, &job.file);
        let before = self.everywhere(&k);
        let commit = commit_time(job);
        for o in outcomes {
            let Some(r) = self.repo_mut(o.repo) else {
                continue;
            };
            let s = &mut r.status;
            match o.error {
                None => {
                    let held = r.archived.entry(k.clone()).or_insert(0);
                    let old = (*held).max(o.held_before);
                    *held = old.max(job.len);
                    s.archived_bytes += *held - old;
                    s.uploads += 1;
                    s.last_success_time = Some(now);
                    s.last_archived_commit_time = s.last_archived_commit_time.max(commit);
                    s.healthy = true;
                    s.last_error = None;
                    s.last_error_time = None;
                    s.failing_since = None;
                }
                Some(e) => record_failure(s, e, now),
            }
        }
        self.archived_everywhere += self.everywhere(&k).saturating_sub(before);
        let repos = &self.repos;
        self.marks
            .retain(|m| !repos.iter().all(|r| r.holds(&m.file, m.end)));
    }

    /// The upload failed before any repository was written.
    pub fn failed(&mut self, error: &str, now: DateTime<Utc>) {
        for r in &mut self.repos {
            record_failure(&mut r.status, error, now);
        }
    }

    /// A sealed file every repository holds: nothing more will come of it.
    pub fn forget(&mut self, server_uuid: &str, file: &str) {
        let k = key(server_uuid, file);
        self.received.remove(&k);
        for r in &mut self.repos {
            r.archived.remove(&k);
        }
    }

    pub fn archived_everywhere(&self) -> u64 {
        self.archived_everywhere
    }

    /// Each repository's state at `now`, counting what the stream holds beyond the jobs.
    pub fn view(&self, now: DateTime<Utc>, receiving: Option<&Receiving>) -> Vec<RepoUploadStatus> {
        let open = receiving.map(|r| (key(&r.server_uuid, &r.file), r));
        self.repos
            .iter()
            .map(|r| {
                let mut s = r.status.clone();
                let mut pending: u64 = self
                    .received
                    .iter()
                    .map(|(k, len)| len.saturating_sub(r.archived.get(k).copied().unwrap_or(0)))
                    .sum();
                let mut oldest = self
                    .marks
                    .iter()
                    .filter(|m| !r.holds(&m.file, m.end))
                    .map(|m| m.since)
                    .min();
                if let Some((k, rx)) = &open {
                    let handed = self.received.get(k).copied().unwrap_or(0);
                    let held = r.archived.get(k).copied().unwrap_or(0);
                    pending += rx.len.saturating_sub(handed.max(held));
                    oldest = match (oldest, rx.unsubmitted_since) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                s.pending_bytes = pending;
                s.oldest_pending_time = oldest;
                s.upload_lag_seconds = oldest.map_or(0.0, |t| {
                    ((now - t).num_milliseconds().max(0) as f64) / 1000.0
                });
                s
            })
            .collect()
    }
}

fn record_failure(s: &mut RepoUploadStatus, error: &str, now: DateTime<Utc>) {
    s.failed_uploads += 1;
    s.healthy = false;
    s.last_error = Some(error.to_string());
    s.last_error_time = Some(now);
    s.failing_since.get_or_insert(now);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binlog::index::FileSummary;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn job(file: &str, len: u64, since: Option<i64>, commit: Option<i64>) -> UploadJob {
        let summary = FileSummary {
            last_commit_us: commit.map(|c| (at(c).timestamp() * 1_000_000) as u64),
            ..Default::default()
        };
        UploadJob {
            server_uuid: "u".into(),
            server_id: 1,
            file: file.into(),
            path: "/nonexistent".into(),
            len,
            sealed: false,
            summary,
            complete_at: None,
            oldest_new_commit: since.map(at),
        }
    }

    fn ok<'a>(repo: &'a str) -> RepoOutcome<'a> {
        RepoOutcome {
            repo,
            error: None,
            held_before: 0,
        }
    }

    fn by_repo(
        l: &UploadLedger,
        now: i64,
        rx: Option<&Receiving>,
    ) -> HashMap<String, RepoUploadStatus> {
        l.view(at(now), rx)
            .into_iter()
            .map(|s| (s.repo.clone(), s))
            .collect()
    }

    /// The defect: each upload of the growing open file added its whole length.
    #[test]
    fn archived_bytes_read_many_times_the_real_figure_counting_each_upload_of_the_open_file_whole()
    {
        let mut l = UploadLedger::new(["local", "s3"]);
        for (len, t) in [(1000, 1), (1500, 2), (4000, 3)] {
            let j = job("binlog.000001", len, Some(t), Some(t));
            l.submitted(&j);
            l.uploaded(&j, &[ok("local"), ok("s3")], at(t));
        }
        let v = by_repo(&l, 4, None);
        assert_eq!(v["local"].archived_bytes, 4000);
        assert_eq!(v["s3"].archived_bytes, 4000);
        assert_eq!(l.archived_everywhere(), 4000);
        // What an earlier run archived is not counted again.
        let mut l = UploadLedger::new(["local"]);
        let j = job("binlog.000002", 900, Some(5), Some(5));
        l.submitted(&j);
        l.uploaded(
            &j,
            &[RepoOutcome {
                repo: "local",
                error: None,
                held_before: 600,
            }],
            at(6),
        );
        assert_eq!(by_repo(&l, 6, None)["local"].archived_bytes, 300);
    }

    /// The defect: during an S3 outage the lag stayed 0.
    #[test]
    fn lag_stayed_zero_and_last_error_stayed_set_without_its_time_during_an_s3_outage() {
        let mut l = UploadLedger::new(["local", "s3"]);
        let j1 = job("binlog.000001", 1000, Some(10), Some(10));
        l.submitted(&j1);
        let s3_down = RepoOutcome {
            repo: "s3",
            error: Some("s3: connection refused"),
            held_before: 0,
        };
        l.uploaded(&j1, &[ok("local"), s3_down], at(11));
        let j2 = job("binlog.000001", 1800, Some(40), Some(40));
        l.submitted(&j2);
        l.uploaded(
            &j2,
            &[
                ok("local"),
                RepoOutcome {
                    repo: "s3",
                    error: Some("s3: connection refused"),
                    held_before: 0,
                },
            ],
            at(41),
        );
        let rx = Receiving {
            server_uuid: "u".into(),
            file: "binlog.000001".into(),
            len: 2000,
            unsubmitted_since: Some(at(70)),
        };
        let v = by_repo(&l, 100, Some(&rx));
        assert_eq!(
            v["s3"].upload_lag_seconds, 90.0,
            "oldest commit s3 lacks: t=10"
        );
        assert_eq!(v["s3"].pending_bytes, 2000);
        assert!(!v["s3"].healthy);
        assert_eq!(
            v["s3"].last_error.as_deref(),
            Some("s3: connection refused")
        );
        assert_eq!(v["s3"].last_error_time, Some(at(41)));
        assert_eq!(v["s3"].failing_since, Some(at(11)));
        assert_eq!(v["s3"].failed_uploads, 2);
        assert_eq!(
            v["local"].upload_lag_seconds, 30.0,
            "received at 70, not handed over yet"
        );
        assert_eq!(v["local"].pending_bytes, 200);
        assert!(v["local"].healthy && v["local"].last_error.is_none());
        assert_eq!(l.archived_everywhere(), 0);

        // S3 returns: one upload of everything clears its lag, pending bytes and error.
        let j3 = job("binlog.000001", 2000, Some(70), Some(70));
        l.submitted(&j3);
        l.uploaded(&j3, &[ok("local"), ok("s3")], at(101));
        let v = by_repo(&l, 102, None);
        for r in ["local", "s3"] {
            assert_eq!(v[r].upload_lag_seconds, 0.0, "{r}");
            assert_eq!(v[r].pending_bytes, 0, "{r}");
            assert_eq!(v[r].oldest_pending_time, None, "{r}");
            assert!(v[r].healthy && v[r].last_error.is_none() && v[r].last_error_time.is_none());
            assert_eq!(v[r].archived_bytes, 2000, "{r}");
            assert_eq!(v[r].last_archived_commit_time, Some(at(70)));
            assert_eq!(v[r].last_success_time, Some(at(101)));
        }
        assert_eq!(l.archived_everywhere(), 2000);
        assert!(l.marks.is_empty(), "marks held everywhere are dropped");
    }

    #[test]
    fn a_failure_before_any_repository_is_written_counts_for_all_and_forget_frees_memory() {
        let mut l = UploadLedger::new(["a", "b"]);
        let j = job("binlog.000003", 500, Some(1), None);
        l.submitted(&j);
        l.failed("no repository could be locked", at(2));
        let v = by_repo(&l, 3, None);
        assert!(
            v.values()
                .all(|s| !s.healthy && s.upload_lag_seconds == 2.0)
        );
        l.uploaded(&j, &[ok("a"), ok("b")], at(4));
        l.forget("u", "binlog.000003");
        assert!(l.received.is_empty() && l.repos.iter().all(|r| r.archived.is_empty()));
        // A job without new commits (the same bytes again) leaves no mark.
        l.submitted(&job("binlog.000004", 4, None, None));
        assert!(l.marks.is_empty());
        // What an earlier run left archived is held: no lag for it.
        l.held("a", "u", "binlog.000005", 100);
        l.held("b", "u", "binlog.000005", 100);
        l.submitted(&job("binlog.000005", 100, Some(1), None));
        assert_eq!(by_repo(&l, 9, None)["a"].upload_lag_seconds, 0.0);
    }
}
