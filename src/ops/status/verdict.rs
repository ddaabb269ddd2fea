//! The rules that turn what `status` read into problems (documented in the operator guide,
//! "status"). Critical problems make the status unhealthy:
//!
//! - a repository cannot be read;
//! - a repository has no snapshot of a source, or its newest is older than
//!   `max_snapshot_age`;
//! - a repository has no binlog archive of a source another repository archives, or its
//!   archive is complete only up to longer ago than `max_archive_lag`;
//! - a hole in an archive, or a purge the streamer found, after the oldest snapshot kept
//!   there (earlier ones no restore can cross);
//! - a repository lacks a snapshot or binlog file another one holds (`divergence`);
//! - the last verify, or the last restore test, failed; or the last verify is older than
//!   `max_verify_age`, when that is given.
//!
//! Warnings: never verified (without `max_verify_age`), and what the streamer's spool says.
//! Sources named by `--ignore-source` are not judged.

use super::{
    Problem, ProblemCode, RepoStatus, Severity, SourceInRepo, SourceStatus, StatusOptions,
    StatusReport, human_age,
};
use crate::binlog::coverage::ArchiveHole;

pub(super) fn problems(report: &StatusReport, opts: &StatusOptions) -> Vec<Problem> {
    let mut out = Vec::new();
    for r in report.repos.iter().filter(|r| !r.readable) {
        out.push(problem(
            Severity::Critical,
            ProblemCode::RepoUnreadable,
            Some(&r.repo),
            None,
            format!(
                "cannot read {}: {}",
                r.repo,
                r.error.as_deref().unwrap_or("unknown error")
            ),
        ));
    }
    for s in report.sources.iter().filter(|s| !s.ignored) {
        source_problems(s, opts, &mut out);
        divergence_problems(report, s, &mut out);
    }
    for r in report.repos.iter().filter(|r| r.readable) {
        verify_problems(r, opts, &mut out);
    }
    if let Some(st) = &report.streamer {
        if !st.running {
            let written = match st.status_written_at {
                Some(t) => format!(
                    "its status.json was last written {} ago",
                    human_age((opts.now - t).num_seconds())
                ),
                None => "it has no status.json".into(),
            };
            out.push(problem(
                Severity::Warning,
                ProblemCode::StreamerDown,
                None,
                st.server_uuid.as_deref(),
                format!(
                    "no streamer is running on the spool {}: {written}",
                    st.spool
                ),
            ));
        }
        let failing: Vec<_> = st
            .repos
            .iter()
            .filter(|r| st.running && r.last_error.is_some())
            .collect();
        for r in &failing {
            out.push(problem(
                Severity::Critical,
                ProblemCode::UploadFailing,
                Some(&r.repo),
                st.server_uuid.as_deref(),
                upload_failing_text(r, opts.now),
            ));
        }
        // The streamer's own error (the source, the spool); repositories' errors are above.
        if let Some(e) = st
            .last_error
            .as_deref()
            .filter(|_| st.running && failing.is_empty())
        {
            out.push(problem(
                Severity::Warning,
                ProblemCode::StreamerError,
                None,
                st.server_uuid.as_deref(),
                format!("the streamer reports: {e}"),
            ));
        }
        if let Some(e) = &st.error {
            out.push(problem(
                Severity::Warning,
                ProblemCode::StreamerError,
                None,
                None,
                format!("cannot read the spool {}: {e}", st.spool),
            ));
        }
    }
    out.sort_by_key(|p| p.severity);
    out
}

fn problem(
    severity: Severity,
    code: ProblemCode,
    repo: Option<&str>,
    source: Option<&str>,
    what: String,
) -> Problem {
    Problem {
        severity,
        code,
        repo: repo.map(str::to_string),
        source: source.map(str::to_string),
        what,
    }
}

fn upload_failing_text(
    r: &super::spool::StreamerRepo,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    let since = r
        .failing_since
        .map(|t| format!(" for {}", human_age((now - t).num_seconds())))
        .unwrap_or_default();
    format!(
        "the streamer's uploads to {} have failed{since} (its archive is {} behind, {} bytes wait in the spool): {}",
        r.repo,
        human_age(r.upload_lag_seconds as i64),
        r.pending_bytes,
        r.last_error.as_deref().unwrap_or_default()
    )
}

/// `3e11fa47-... (db1:3306)`
pub(crate) fn source_label(s: &SourceStatus) -> String {
    match &s.address {
        Some(a) => format!("{} ({a})", s.source),
        None => s.source.clone(),
    }
}

fn limit(d: chrono::Duration) -> String {
    human_age(d.num_seconds())
}

fn source_problems(s: &SourceStatus, opts: &StatusOptions, out: &mut Vec<Problem>) {
    let label = source_label(s);
    let archived_in = s.repos.iter().find(|r| r.archive.is_some());
    for r in &s.repos {
        let critical = |code, what| {
            problem(
                Severity::Critical,
                code,
                Some(&r.repo),
                Some(&s.source),
                what,
            )
        };
        match (&r.newest_snapshot, r.newest_snapshot_age_seconds) {
            (None, _) => out.push(critical(
                ProblemCode::NoSnapshot,
                format!("{} has no snapshot of {label}", r.repo),
            )),
            (Some(newest), Some(age)) => {
                if let Some(max) = opts
                    .limits
                    .max_snapshot_age
                    .filter(|m| age > m.num_seconds())
                {
                    out.push(critical(
                        ProblemCode::SnapshotTooOld,
                        format!(
                            "the newest snapshot of {label} in {} is {} old ({}, {}); the limit is {}",
                            r.repo,
                            human_age(age),
                            newest.id,
                            newest.time.format("%Y-%m-%d %H:%M:%S UTC"),
                            limit(max)
                        ),
                    ));
                }
            }
            (Some(_), None) => {}
        }
        match (&r.archive, archived_in) {
            (None, Some(other)) => out.push(critical(
                ProblemCode::ArchiveMissing,
                format!(
                    "{} has no binlog archive of {label}, though {} has one",
                    r.repo, other.repo
                ),
            )),
            (Some(a), _) => {
                if let Some(max) = opts.limits.max_archive_lag {
                    let stale = a.lag_seconds.is_none_or(|lag| lag > max.num_seconds());
                    if stale {
                        out.push(critical(
                            ProblemCode::ArchiveStale,
                            stale_text(&label, r, max),
                        ));
                    }
                }
            }
            (None, None) => {}
        }
        let oldest = r.snapshots.first().map(|s| s.time);
        for h in r.holes.iter().filter(|h| hole_matters(h, oldest)) {
            out.push(critical(
                ProblemCode::ArchiveHole,
                format!("{}: {}", r.repo, h.detail),
            ));
        }
        for g in r
            .gaps
            .iter()
            .filter(|g| oldest.is_none_or(|o| g.detected_at >= o))
        {
            out.push(critical(
                ProblemCode::ArchiveGap,
                format!(
                    "{}: the streamer found a gap on {}: {}",
                    r.repo,
                    g.detected_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    g.detail
                ),
            ));
        }
    }
}

fn stale_text(label: &str, r: &SourceInRepo, max: chrono::Duration) -> String {
    let Some(a) = &r.archive else {
        return String::new();
    };
    let reach = match (a.complete_until, a.lag_seconds) {
        (Some(t), Some(lag)) => format!(
            "is complete only up to {}, {} ago",
            t.format("%Y-%m-%d %H:%M:%S UTC"),
            human_age(lag)
        ),
        _ => "has no commit time at all".into(),
    };
    let waiting = match a.spool_pending_bytes {
        Some(n) if n > 0 => format!("; {n} bytes wait in the spool for it"),
        _ => String::new(),
    };
    format!(
        "the binlog archive of {label} in {} {reach} (the limit is {}){waiting}",
        r.repo,
        limit(max)
    )
}

/// Whether a restore from a snapshot kept in the repository could cross the hole: it ends
/// after the oldest snapshot (or there is no snapshot, or no time to tell).
fn hole_matters(h: &ArchiveHole, oldest_snapshot: Option<chrono::DateTime<chrono::Utc>>) -> bool {
    match (h.lost_before.or(h.lost_after), oldest_snapshot) {
        (Some(end), Some(oldest)) => end > oldest,
        _ => true,
    }
}

fn divergence_problems(report: &StatusReport, s: &SourceStatus, out: &mut Vec<Problem>) {
    use super::DivergenceKind;
    for r in &s.repos {
        let lacking: Vec<_> = report
            .diverged
            .iter()
            .filter(|d| d.source == s.source && d.missing_from.contains(&r.repo))
            .collect();
        if lacking.is_empty() {
            continue;
        }
        let names = |kind: DivergenceKind| -> Vec<&str> {
            lacking
                .iter()
                .filter(|d| d.kind == kind)
                .map(|d| d.object.as_str())
                .collect()
        };
        let mut parts = Vec::new();
        for (kind, noun) in [
            (DivergenceKind::Snapshot, "snapshot"),
            (DivergenceKind::BinlogFile, "binlog file"),
        ] {
            let objects = names(kind);
            if !objects.is_empty() {
                parts.push(format!(
                    "{} {noun}(s) ({}{})",
                    objects.len(),
                    objects
                        .iter()
                        .take(5)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", "),
                    if objects.len() > 5 { ", ..." } else { "" }
                ));
            }
        }
        let mut holders: Vec<&str> = lacking
            .iter()
            .flat_map(|d| d.present_in.iter().map(String::as_str))
            .collect();
        holders.sort_unstable();
        holders.dedup();
        out.push(problem(
            Severity::Critical,
            ProblemCode::Diverged,
            Some(&r.repo),
            Some(&s.source),
            format!(
                "{} lacks {} of {} that {} holds",
                r.repo,
                parts.join(" and "),
                source_label(s),
                holders.join(" and ")
            ),
        ));
    }
}

fn verify_problems(r: &RepoStatus, opts: &StatusOptions, out: &mut Vec<Problem>) {
    let critical = |code, what| problem(Severity::Critical, code, Some(&r.repo), None, what);
    let when = |v: &super::VerificationRecord| {
        format!("{} on {}", v.time.format("%Y-%m-%d %H:%M:%S UTC"), v.host)
    };
    match &r.last_verify {
        None => match opts.limits.max_verify_age {
            Some(max) => out.push(critical(
                ProblemCode::VerifyTooOld,
                format!(
                    "{} has never been verified (the limit is {})",
                    r.repo,
                    limit(max)
                ),
            )),
            None => out.push(problem(
                Severity::Warning,
                ProblemCode::NeverVerified,
                Some(&r.repo),
                None,
                format!(
                    "{} has no record of a verify (`myvault verify` records one)",
                    r.repo
                ),
            )),
        },
        Some(v) => {
            let detail = v
                .detail
                .as_deref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            if !v.ok && v.restore_test && v.problems == 0 {
                out.push(critical(
                    ProblemCode::RestoreTestFailed,
                    format!(
                        "the last restore test of {} ({}) failed{detail}",
                        r.repo,
                        when(v)
                    ),
                ));
            } else if !v.ok {
                out.push(critical(
                    ProblemCode::VerifyFailed,
                    format!(
                        "the last verify of {} ({}) failed with {} problem(s){detail}",
                        r.repo,
                        when(v),
                        v.problems
                    ),
                ));
            } else if let Some(t) = r.last_restore_test.as_ref().filter(|t| !t.ok) {
                let detail = t
                    .detail
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default();
                out.push(critical(
                    ProblemCode::RestoreTestFailed,
                    format!(
                        "the last restore test of {} ({}) failed{detail}",
                        r.repo,
                        when(t)
                    ),
                ));
            }
            let age = (opts.now - v.time).num_seconds();
            if let Some(max) = opts.limits.max_verify_age.filter(|m| age > m.num_seconds()) {
                out.push(critical(
                    ProblemCode::VerifyTooOld,
                    format!(
                        "{} was last verified {} ago ({}); the limit is {}",
                        r.repo,
                        human_age(age),
                        when(v),
                        limit(max)
                    ),
                ));
            }
        }
    }
}
