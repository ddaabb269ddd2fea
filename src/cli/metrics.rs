//! `--metrics-file PATH`: what a command run leaves for node_exporter's textfile collector.
//!
//! Every command writes when it ran, how long, and whether it succeeded
//! (`myvault_last_run_*{command}`); `backup` and `verify` add their own series. The file keeps
//! what earlier runs wrote (see `metrics::textfile`), so a failed backup leaves the time of
//! the last successful one in place, and several repositories or sources share one file.

use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::metrics::{Family, flag, timestamp};
use crate::ops::backup::BackupReport;
use crate::ops::restore_test::RestoreTestReport;

/// The series a command adds while it runs, written at its end.
#[derive(Default)]
pub struct Recorder(Mutex<Vec<Family>>);

impl Recorder {
    pub fn record(&self, families: Vec<Family>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(families);
    }

    pub fn take(&self) -> Vec<Family> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// How a command run went, for every command.
pub fn run_families(
    command: &str,
    ended: DateTime<Utc>,
    seconds: f64,
    succeeded: bool,
) -> Vec<Family> {
    let l: &[(&str, &str)] = &[("command", command)];
    let mut out = vec![
        Family::gauge(
            "myvault_last_run_timestamp_seconds",
            "When the last run of the command ended.",
        )
        .with(l, timestamp(ended)),
        Family::gauge(
            "myvault_last_run_duration_seconds",
            "How long the last run of the command took.",
        )
        .with(l, seconds),
        Family::gauge(
            "myvault_last_run_success",
            "1 when the last run of the command succeeded (exit 0), else 0.",
        )
        .with(l, flag(succeeded)),
    ];
    if succeeded {
        out.push(
            Family::gauge(
                "myvault_last_success_timestamp_seconds",
                "When the last successful run of the command ended.",
            )
            .with(l, timestamp(ended)),
        );
    }
    out
}

/// A backup of `source` (`host:port`, or the backed-up path) into `repos`: the snapshot's
/// time, size, new bytes and duration where it succeeded, and the attempt everywhere.
pub fn backup(
    source: &str,
    method: &str,
    repos: &[String],
    report: Option<&BackupReport>,
    ended: DateTime<Utc>,
) -> Vec<Family> {
    let mut attempt = Family::gauge(
        "myvault_backup_last_attempt_timestamp_seconds",
        "When the last backup attempt of the source into the repository ended.",
    );
    let mut attempt_ok = Family::gauge(
        "myvault_backup_last_attempt_success",
        "1 when the last backup attempt of the source stored a snapshot in the repository, else 0.",
    );
    let mut success = Family::gauge(
        "myvault_backup_last_success_timestamp_seconds",
        "Time of the newest snapshot of the source stored in the repository by a backup run (its consistent point).",
    );
    let mut size = Family::gauge(
        "myvault_backup_last_size_bytes",
        "Size of the files of the last successful snapshot of the source.",
    );
    let mut new_bytes = Family::gauge(
        "myvault_backup_last_new_bytes",
        "Bytes the last successful snapshot of the source newly stored in the repository (compressed, after deduplication).",
    );
    let mut duration = Family::gauge(
        "myvault_backup_last_duration_seconds",
        "How long the last successful backup of the source took.",
    );
    let outcomes: Vec<(String, Option<&crate::repo::writer::TargetOutcome>)> = match report {
        Some(r) => r.repos.iter().map(|o| (o.repo.clone(), Some(o))).collect(),
        None => repos.iter().map(|r| (r.clone(), None)).collect(),
    };
    let method = report.map_or(method, |r| r.method.as_str());
    for (repo, outcome) in &outcomes {
        let l: &[(&str, &str)] = &[("source", source), ("repo", repo), ("method", method)];
        attempt.push(l, timestamp(ended));
        let stored = outcome.filter(|o| o.error.is_none());
        attempt_ok.push(l, flag(stored.is_some()));
        if let (Some(o), Some(r)) = (stored, report) {
            success.push(l, timestamp(r.time));
            size.push(l, r.size as f64);
            new_bytes.push(l, o.new_bytes as f64);
            duration.push(l, r.seconds);
        }
    }
    vec![attempt, attempt_ok, success, size, new_bytes, duration]
}

/// A verify of one repository: when, and whether it found it intact (and its restore test,
/// if one ran, passed).
pub fn verify(repo: &str, ok: bool, seconds: f64, ended: DateTime<Utc>) -> Vec<Family> {
    let l: &[(&str, &str)] = &[("repo", repo)];
    let mut out = vec![
        Family::gauge(
            "myvault_verify_last_run_timestamp_seconds",
            "When the last verify of the repository ended.",
        )
        .with(l, timestamp(ended)),
        Family::gauge(
            "myvault_verify_last_success",
            "1 when the last verify of the repository found it intact (and its restore test, if any, passed), else 0.",
        )
        .with(l, flag(ok)),
        Family::gauge(
            "myvault_verify_last_duration_seconds",
            "How long the last verify of the repository took.",
        )
        .with(l, seconds),
    ];
    if ok {
        out.push(
            Family::gauge(
                "myvault_verify_last_success_timestamp_seconds",
                "When the last verify that found the repository intact ended.",
            )
            .with(l, timestamp(ended)),
        );
    }
    out
}

/// How many problems the integrity check of a verify found.
pub fn verify_problems(repo: &str, problems: usize) -> Vec<Family> {
    vec![
        Family::gauge(
            "myvault_verify_problems",
            "Damaged or missing objects and binlog archive holes the last verify of the repository found.",
        )
        .with(&[("repo", repo)], problems as f64),
    ]
}

/// The restore test of a verify run: whether it passed, and when.
pub fn restore_test(repo: &str, tested: Option<&RestoreTestReport>) -> Vec<Family> {
    let l: &[(&str, &str)] = &[("repo", repo)];
    let mut out = vec![
        Family::gauge(
            "myvault_restore_test_last_run_timestamp_seconds",
            "When the last restore test of the repository ended.",
        )
        .with(l, timestamp(Utc::now())),
        Family::gauge(
            "myvault_restore_test_last_success",
            "1 when the last restore test of the repository restored a snapshot and read every table back, else 0.",
        )
        .with(l, flag(tested.is_some())),
    ];
    if let Some(t) = tested {
        out.push(
            Family::gauge(
                "myvault_restore_test_last_duration_seconds",
                "How long the last restore test of the repository took (restore and check).",
            )
            .with(l, t.restore_seconds + t.check_seconds),
        );
    }
    out
}

/// Gap records in `repo` that no later snapshot of their server covers.
pub fn gaps(repo: &str, unresolved: u64) -> Vec<Family> {
    vec![crate::ops::stream::metrics::gaps_family().with(&[("repo", repo)], unresolved as f64)]
}

/// A prune of `repo` that ran (not `--plan`): what it kept, removed and freed.
pub fn prune(report: &crate::ops::prune::PruneReport, ended: DateTime<Utc>) -> Vec<Family> {
    if report.planned_only {
        return Vec::new();
    }
    let l: &[(&str, &str)] = &[("repo", &report.repo)];
    vec![
        Family::gauge(
            "myvault_prune_last_success_timestamp_seconds",
            "When the last prune of the repository ended.",
        )
        .with(l, timestamp(ended)),
        Family::gauge(
            "myvault_prune_snapshots_kept",
            "Snapshots the last prune of the repository kept.",
        )
        .with(l, report.snapshots_kept.len() as f64),
        Family::gauge(
            "myvault_prune_last_removed_snapshots",
            "Snapshots the last prune of the repository removed.",
        )
        .with(l, report.snapshots_removed.len() as f64),
        Family::gauge(
            "myvault_prune_last_freed_bytes",
            "Pack bytes the last prune of the repository freed (deleted, less its repack's new packs).",
        )
        .with(l, report.gc.freed_bytes() as f64),
        Family::gauge(
            "myvault_repo_unused_bytes",
            "Bytes of kept packs that nothing needs, as the last prune of the repository found them.",
        )
        .with(l, report.gc.unused_bytes_kept as f64),
    ]
}

/// A copy from one repository into another (`repo` is the destination).
pub fn copy(report: &crate::repo::copy::CopyReport, ended: DateTime<Utc>) -> Vec<Family> {
    let l: &[(&str, &str)] = &[("repo", &report.to), ("from", &report.from)];
    let complete = report.manifests_skipped.is_empty();
    let mut out = vec![
        Family::gauge(
            "myvault_copy_last_bytes",
            "Pack bytes the last copy into the repository transferred.",
        )
        .with(l, report.bytes_copied as f64),
        Family::gauge(
            "myvault_copy_last_snapshots",
            "Snapshots the last copy into the repository added.",
        )
        .with(l, report.snapshots_copied as f64),
        Family::gauge(
            "myvault_copy_last_skipped_manifests",
            "Manifests the last copy could not bring over (the origin is damaged: verify it).",
        )
        .with(l, report.manifests_skipped.len() as f64),
    ];
    if complete {
        out.push(
            Family::gauge(
                "myvault_copy_last_success_timestamp_seconds",
                "When the last copy that brought everything into the repository ended.",
            )
            .with(l, timestamp(ended)),
        );
    }
    out
}
