//! `myvault verify`: repository integrity, and holes in the binlog archive.

use crate::binlog::coverage::{self, ArchiveHole, HoleKind};
use crate::error::Result;
use crate::repo::Repo;
use crate::repo::lock::{LockGuard, LockKind};
use crate::repo::verify::Problem;
pub use crate::repo::verify::VerifyReport;

pub fn run(
    repo: &Repo,
    read_data: bool,
    progress: impl FnMut(usize, usize),
) -> Result<VerifyReport> {
    let _lock = LockGuard::acquire(repo.storage().clone(), LockKind::Shared, "verify")?;
    let mut report = crate::repo::verify::verify(repo, read_data, progress)?;
    report.problems.extend(archive_holes(repo)?);
    Ok(report)
}

/// Every hole in every source's binlog archive, as a problem: intact objects, but a restore
/// across the hole cannot be done.
fn archive_holes(repo: &Repo) -> Result<Vec<Problem>> {
    let archive = coverage::newest_segments(repo.binlog_segments()?)?;
    let snapshots = repo.snapshots()?;
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
