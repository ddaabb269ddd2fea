//! `myvault verify`: repository integrity, and holes in the binlog archive.

use crate::binlog::coverage::{self, ArchiveHole, HoleKind};
use crate::error::Result;
use crate::ops::restore_test::RestoreTestReport;
use crate::ops::status::verifications::{self, VerificationRecord};
use crate::repo::Repo;
use crate::repo::lock::{LockGuard, LockKind};
use crate::repo::manifest::{BinlogSegment, SnapshotManifest};
use crate::repo::verify::Problem;
pub use crate::repo::verify::VerifyReport;

pub fn run(
    repo: &Repo,
    read_data: bool,
    progress: impl FnMut(usize, usize),
) -> Result<VerifyReport> {
    let _lock = LockGuard::acquire(repo.storage().clone(), LockKind::Shared, "verify")?;
    let mut report = crate::repo::verify::verify(repo, read_data, progress)?;
    let holes = archive_holes(
        std::mem::take(&mut report.readable_segments),
        std::mem::take(&mut report.readable_snapshots),
    )?;
    report.problems.extend(holes);
    Ok(report)
}

/// What one verify run found, recorded in the repository it checked for `status`.
pub struct Outcome<'a> {
    pub started: chrono::DateTime<chrono::Utc>,
    pub read_data: bool,
    /// The integrity report, or the error that stopped the check.
    pub integrity: std::result::Result<&'a VerifyReport, String>,
    /// The restore test, when one ran: its report, or the error it failed with.
    pub restore_test: Option<std::result::Result<&'a RestoreTestReport, String>>,
}

pub fn record(repo: &Repo, outcome: &Outcome<'_>) -> Result<()> {
    let (problems, first_problem) = match &outcome.integrity {
        Ok(r) => (
            r.problems.len(),
            r.problems
                .first()
                .map(|p| format!("{}: {}", p.object, p.detail)),
        ),
        Err(e) => (0, Some(e.clone())),
    };
    let (snapshot, test_error) = match &outcome.restore_test {
        Some(Ok(t)) => (Some(t.snapshot.clone()), None),
        Some(Err(e)) => (None, Some(e.clone())),
        None => (None, None),
    };
    let record = VerificationRecord {
        time: chrono::Utc::now(),
        started: outcome.started,
        host: crate::repo::lock::this_host(),
        read_data: outcome.read_data,
        restore_test: outcome.restore_test.is_some(),
        snapshot,
        ok: outcome.integrity.is_ok() && problems == 0 && test_error.is_none(),
        problems,
        detail: first_problem.or(test_error),
        version: env!("CARGO_PKG_VERSION").into(),
    };
    Ok(verifications::write(repo, &record)?)
}

/// Every hole in every source's binlog archive, as a problem: intact objects, but a restore
/// across the hole cannot be done. Judged on the manifests that read (the others are damage
/// the integrity check has already reported, each with what it affects), as a restore would
/// see the archive.
fn archive_holes(
    segments: Vec<BinlogSegment>,
    mut snapshots: Vec<SnapshotManifest>,
) -> Result<Vec<Problem>> {
    let archive = coverage::newest_segments(segments)?;
    snapshots.sort_by(|a, b| a.time.cmp(&b.time).then(a.id.cmp(&b.id)));
    Ok(coverage::coverage(&archive, &snapshots)
        .into_iter()
        .flat_map(|c| c.holes)
        .map(|h| Problem {
            object: hole_object(&h),
            affects: hole_affects(&h),
            detail: h.detail,
        })
        .collect())
}

/// The missing part of the archive, named like its objects (`binlog/<server>/<files>`).
fn hole_object(h: &ArchiveHole) -> String {
    let files = match h.kind {
        HoleKind::MissingFiles if h.missing_file_count > 1 => format!(
            "{}..{}",
            h.first_missing_file.as_deref().unwrap_or("?"),
            h.last_missing_file.as_deref().unwrap_or("?")
        ),
        HoleKind::MissingFiles => h.first_missing_file.clone().unwrap_or_default(),
        HoleKind::PrefixOnly => h.after_file.clone(),
        HoleKind::TransactionsMissing => format!("{}..{}", h.after_file, h.before_file),
    };
    format!("binlog/{}/{files}", h.server_uuid)
}

/// What cannot be restored: the instants the hole spans, and the window it cuts short.
fn hole_affects(h: &ArchiveHole) -> Vec<String> {
    let at = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "an unknown time".into())
    };
    let mut affects = vec![format!(
        "point-in-time recovery to any instant after {} and before {}",
        at(h.lost_after),
        at(h.lost_before)
    )];
    if let Some(w) = &h.window_before {
        affects.push(format!(
            "snapshot {} ({}) and later ones before the hole: recovery ends at {}",
            w.first_snapshot,
            w.start.to_rfc3339(),
            at(w.end)
        ));
    }
    affects
}
