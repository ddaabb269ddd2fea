//! `myvault prune`: retention. Decides which snapshots and archived binlog files are no longer
//! wanted, then has the repository delete them and every pack nothing else needs.
//!
//! Planning is separate from executing: [`plan`] reads the repository and decides everything
//! (snapshots, binlog segments, packs, leftovers); [`execute`] deletes exactly what a plan
//! names and reads nothing to decide again. `--plan` prints the plan; a run makes the same
//! plan under the same lock and executes it, so the two agree unless the repository changed
//! between them (a backup that reused a pack's chunks keeps that pack).
//!
//! Prune needs the repository to itself. A streamer holds its lock only while it uploads and
//! loads the index again after a prune (see `repo::PRUNED_KEY`), so prune waits for the upload
//! in progress; a backup holds its lock to the end, and prune gives up after two minutes.
//!
//! Which snapshots stay is `repo::retention`'s business (per origin, the newest always). A
//! binlog file is removed only when no kept snapshot can need it for point-in-time recovery:
//! per server, only the oldest files go, up to the first one that holds a transaction some
//! kept snapshot lacks, that a kept snapshot's coordinates point into, that is not sealed, or
//! that is the server's newest. Removing only a prefix never leaves a hole in the archive.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::mysql::gtid::GtidSet;
use crate::repo::lock::{LockGuard, LockKind};
use crate::repo::manifest::{BinlogSegment, SnapshotManifest};
use crate::repo::prune::{self, Forget, GcPlan};
use crate::repo::repack::MaxUnused;
use crate::repo::retention::{self, KeepReason, RetentionPolicy};
use crate::repo::{Repo, binlog_key, snapshot_key};

/// What a prune of one repository removes (or, planned only, would remove).
#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    pub repo: String,
    /// True when nothing was deleted (`--plan`).
    pub planned_only: bool,
    pub policy: RetentionPolicy,
    /// The instant the policy was applied at (`keep_within` and the PITR window end there).
    pub evaluated_at: DateTime<Utc>,
    pub snapshots_kept: Vec<String>,
    /// Why each kept snapshot stays (`newest`, `last`, `within`, `hourly`, `daily`,
    /// `weekly`, `monthly`, `yearly`, `pitr_window`).
    pub keep_reasons: BTreeMap<String, Vec<KeepReason>>,
    pub snapshots_removed: Vec<String>,
    /// `<server uuid> <file>`, oldest first per server.
    pub binlog_files_removed: Vec<String>,
    #[serde(flatten)]
    pub gc: GcPlan,
}

/// How long prune waits for shared locks to go: a streamer holds one only while it uploads.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// The exclusive lock, retried while other processes hold theirs.
pub fn lock_exclusively(repo: &Repo) -> Result<LockGuard> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match LockGuard::acquire(repo.storage().clone(), LockKind::Exclusive, "prune") {
            Err(crate::repo::RepoError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
            other => return Ok(other?),
        }
    }
}

/// Refuses a policy that cannot be what was meant.
pub fn check_policy(policy: &RetentionPolicy) -> Result<()> {
    if policy.is_empty() {
        return Err(Error::Usage(
            "prune needs a retention policy: --keep-last, --keep-within, --keep-hourly/daily/\
             weekly/monthly/yearly or --keep-pitr-window (or keep_* in the repository's \
             [[repo]] section of the config)"
                .into(),
        ));
    }
    policy.check().map_err(Error::Usage)
}

/// Plans (and unless `plan_only`, executes) a prune of `repo` under its exclusive lock,
/// repacking partly used packs while their unused bytes exceed `max_unused`.
pub fn run(
    repo: &Repo,
    policy: &RetentionPolicy,
    max_unused: MaxUnused,
    plan_only: bool,
    now: DateTime<Utc>,
) -> Result<PruneReport> {
    check_policy(policy)?;
    let lock = lock_exclusively(repo)?;
    let mut report = plan(repo, &lock, policy, max_unused, now)?;
    if !plan_only {
        execute(repo, &lock, &report)?;
        report.planned_only = false;
    }
    Ok(report)
}

/// Everything a prune of `repo` would remove, deciding all of it; deletes nothing. `_lock`
/// is the exclusive lock the plan is valid under.
pub fn plan(
    repo: &Repo,
    _lock: &LockGuard,
    policy: &RetentionPolicy,
    max_unused: MaxUnused,
    now: DateTime<Utc>,
) -> Result<PruneReport> {
    let snapshots = repo.snapshots()?;
    let kept = retention::keep(&snapshots, policy, now);
    let segments = repo.binlog_segments()?;
    let kept_snapshots: Vec<&SnapshotManifest> = snapshots
        .iter()
        .filter(|s| kept.contains_key(&s.id))
        .collect();
    let old_segments = removable_segments(&segments, &kept_snapshots);

    let mut forget = Forget::default();
    let mut report = PruneReport {
        repo: repo.name().to_string(),
        planned_only: true,
        policy: *policy,
        evaluated_at: now,
        snapshots_kept: Vec::new(),
        keep_reasons: BTreeMap::new(),
        snapshots_removed: Vec::new(),
        binlog_files_removed: Vec::new(),
        gc: GcPlan::default(),
    };
    for s in &snapshots {
        match kept.get(&s.id) {
            Some(reasons) => {
                report.snapshots_kept.push(s.id.clone());
                report
                    .keep_reasons
                    .insert(s.id.clone(), reasons.iter().copied().collect());
            }
            None => {
                report.snapshots_removed.push(s.id.clone());
                forget.manifests.push(snapshot_key(&s.id));
            }
        }
    }
    let mut files = Vec::new();
    for s in old_segments {
        let name = format!("{} {}", s.source_uuid, s.file);
        if files.last() != Some(&name) {
            files.push(name);
        }
        forget
            .manifests
            .push(binlog_key(&s.source_uuid, &s.file, s.size));
    }
    report.binlog_files_removed = files;
    report.gc = prune::plan(repo, &forget, max_unused)?;
    Ok(report)
}

/// Deletes what `plan` names, and nothing else: the plan is the run's only input.
pub fn execute(repo: &Repo, _lock: &LockGuard, plan: &PruneReport) -> Result<()> {
    crate::failpoint::hit("prune-before-execute");
    prune::execute(repo, &plan.gc)?;
    Ok(())
}

/// Binlog segment manifests no kept snapshot can need: per server, the oldest files up to the
/// first one that must stay (see the module's comment). Conservative: nothing goes when a
/// kept snapshot's GTID set or a segment's cannot be read (MariaDB positions, say).
fn removable_segments<'a>(
    segments: &'a [BinlogSegment],
    kept: &[&SnapshotManifest],
) -> Vec<&'a BinlogSegment> {
    let mut covered: Option<GtidSet> = None;
    for s in kept {
        let Some(text) = &s.gtid_executed else {
            continue;
        };
        let Ok(set) = GtidSet::parse(text) else {
            return Vec::new();
        };
        covered = Some(match covered {
            None => set,
            Some(c) => c.intersect(&set),
        });
    }
    let Some(covered) = covered else {
        return Vec::new();
    };
    // Files in the order the server wrote them. Numbers grow past six digits (binlog.999999,
    // binlog.1000000): compare length first.
    let order = |f: &str| (f.len(), f.to_string());
    let mut by_server: BTreeMap<&str, BTreeMap<(usize, String), Vec<&BinlogSegment>>> =
        BTreeMap::new();
    for s in segments {
        by_server
            .entry(s.source_uuid.as_str())
            .or_default()
            .entry(order(&s.file))
            .or_default()
            .push(s);
    }
    let mut out = Vec::new();
    for (uuid, files) in by_server {
        // A restore from a kept snapshot of this server starts reading at its coordinates.
        let first_needed = kept
            .iter()
            .filter(|s| s.source.as_ref().is_some_and(|src| src.server_uuid == uuid))
            .filter_map(|s| s.binlog_file.as_deref())
            .map(order)
            .min();
        let older_than_newest = files.len().saturating_sub(1);
        for (file, segs) in files.into_iter().take(older_than_newest) {
            if first_needed.as_ref().is_some_and(|f| file >= *f) {
                break;
            }
            // A file goes only with all its segments: each must be covered, one sealed.
            let covered = segs
                .iter()
                .all(|s| GtidSet::parse(&s.gtids).is_ok_and(|g| g.is_subset(&covered)));
            if !covered || !segs.iter().any(|s| s.sealed) {
                break;
            }
            out.extend(segs);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const U: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";

    fn snap(id: &str, minutes_ago: i64, gtids: &str, now: DateTime<Utc>) -> SnapshotManifest {
        SnapshotManifest {
            gtid_executed: Some(gtids.into()),
            ..SnapshotManifest::sample(id, now - chrono::Duration::minutes(minutes_ago), U)
        }
    }

    fn segment(file: &str, gtids: &str, sealed: bool) -> BinlogSegment {
        BinlogSegment {
            sealed,
            ..BinlogSegment::sample(U, file, gtids, "")
        }
    }

    #[test]
    fn policy_keeps_per_origin_and_always_the_newest() {
        let now = Utc::now();
        let mut all = vec![
            snap("a", 300, "", now),
            snap("b", 200, "", now),
            snap("c", 100, "", now),
            snap("d", 10, "", now),
        ];
        let ids = |p: RetentionPolicy, all: &[SnapshotManifest]| -> BTreeSet<String> {
            retention::keep(all, &p, now).into_keys().collect()
        };
        let last2 = RetentionPolicy {
            keep_last: Some(2),
            ..Default::default()
        };
        assert_eq!(ids(last2, &all), ["c", "d"].map(String::from).into());
        let within = RetentionPolicy {
            keep_within: Some(chrono::Duration::minutes(150)),
            ..Default::default()
        };
        assert_eq!(ids(within, &all), ["c", "d"].map(String::from).into());
        let short = RetentionPolicy {
            keep_within: Some(chrono::Duration::minutes(1)),
            ..Default::default()
        };
        assert_eq!(ids(short, &all), ["d"].map(String::from).into());
        // Another server's only snapshot is its newest: kept whatever its age.
        let mut other = snap("z", 900, "", now);
        other.source.as_mut().unwrap().server_uuid = "other".into();
        all.insert(0, other);
        assert!(ids(last2, &all).contains("z"));
    }

    #[test]
    fn binlogs_go_only_when_every_kept_snapshot_has_their_transactions() {
        let now = Utc::now();
        let segs = vec![
            segment("binlog.000001", &format!("{U}:1-100"), true),
            segment("binlog.000002", &format!("{U}:101-200"), true),
            segment("binlog.000003", &format!("{U}:201-300"), true),
            segment("binlog.000004", &format!("{U}:301-310"), false),
        ];
        let names = |v: Vec<&BinlogSegment>| -> Vec<String> {
            v.into_iter().map(|s| s.file.clone()).collect()
        };
        let kept = [snap("x", 5, &format!("{U}:1-250"), now)];
        let refs: Vec<&SnapshotManifest> = kept.iter().collect();
        assert_eq!(
            names(removable_segments(&segs, &refs)),
            ["binlog.000001", "binlog.000002"]
        );
        // An older kept snapshot needs more of the archive.
        let kept = [
            snap("w", 50, &format!("{U}:1-150"), now),
            snap("x", 5, &format!("{U}:1-400"), now),
        ];
        let refs: Vec<&SnapshotManifest> = kept.iter().collect();
        assert_eq!(names(removable_segments(&segs, &refs)), ["binlog.000001"]);
        // The newest file stays even when covered; unreadable sets keep everything.
        let kept = [snap("x", 5, &format!("{U}:1-400"), now)];
        let refs: Vec<&SnapshotManifest> = kept.iter().collect();
        assert_eq!(names(removable_segments(&segs, &refs)).len(), 3);
        let kept = [snap("m", 5, "0-1-100", now)];
        let refs: Vec<&SnapshotManifest> = kept.iter().collect();
        assert!(removable_segments(&segs, &refs).is_empty());
    }

    /// Files `binlog.000001..` holding `ranges` of transactions (an empty range: a file the
    /// server rotated with nothing written), each naming its predecessors in its header; all
    /// sealed but the last.
    fn archive(ranges: &[(u64, u64)]) -> Vec<BinlogSegment> {
        let mut done = 0;
        ranges
            .iter()
            .enumerate()
            .map(|(i, &(from, to))| {
                let gtids = if from > to {
                    String::new()
                } else {
                    format!("{U}:{from}-{to}")
                };
                let prev = if done == 0 {
                    String::new()
                } else {
                    format!("{U}:1-{done}")
                };
                done = done.max(to);
                BinlogSegment {
                    sealed: i + 1 < ranges.len(),
                    ..BinlogSegment::sample(U, &format!("binlog.{:06}", i + 1), &gtids, &prev)
                }
            })
            .collect()
    }

    /// What the archive left after removing `removed` covers for `snapshots`.
    fn coverage_after(
        segs: &[BinlogSegment],
        removed: &[&BinlogSegment],
        snapshots: &[SnapshotManifest],
    ) -> crate::binlog::coverage::SourceCoverage {
        let left: Vec<BinlogSegment> = segs
            .iter()
            .filter(|s| !removed.iter().any(|r| r.file == s.file))
            .cloned()
            .collect();
        let files = crate::binlog::coverage::newest_segments(left).unwrap();
        crate::binlog::coverage::coverage(&files, snapshots).remove(0)
    }

    /// A snapshot taken at the end of a file (nothing written to it afterwards) has every
    /// transaction of that file, so prune removed the file its coordinates point into, and
    /// with it the restorable window that starts at the snapshot.
    #[test]
    fn prune_keeps_the_binlog_file_a_kept_snapshots_coordinates_point_into() {
        let now = Utc::now();
        let segs = archive(&[(1, 100), (101, 200), (201, 300), (301, 310)]);
        let mut kept = snap("x", 5, &format!("{U}:1-200"), now);
        kept.binlog_file = Some("binlog.000002".into());
        kept.binlog_position = Some(9_000);
        let removed = removable_segments(&segs, &[&kept]);
        let names: Vec<&str> = removed.iter().map(|s| s.file.as_str()).collect();
        assert_eq!(names, ["binlog.000001"]);
        let cov = coverage_after(&segs, &removed, std::slice::from_ref(&kept));
        assert_eq!(cov.windows.len(), 1, "{cov:?}");
        assert_eq!(cov.windows[0].first_snapshot, "x");
    }

    /// A file with no transactions (the server rotated twice with nothing written between) is
    /// "covered" by any snapshot: prune removed it although a file before it stayed, and left
    /// a hole that cuts every restore across it.
    #[test]
    fn prune_never_removes_a_binlog_file_between_two_it_keeps() {
        let now = Utc::now();
        let segs = archive(&[(1, 100), (101, 200), (201, 200), (201, 300), (301, 310)]);
        let mut kept = snap("x", 5, &format!("{U}:1-100"), now);
        kept.binlog_file = Some("binlog.000002".into());
        let removed = removable_segments(&segs, &[&kept]);
        let names: Vec<&str> = removed.iter().map(|s| s.file.as_str()).collect();
        assert_eq!(names, ["binlog.000001"]);
        let cov = coverage_after(&segs, &removed, std::slice::from_ref(&kept));
        assert!(cov.holes.is_empty(), "{:?}", cov.holes);
        // Without coordinates the same holds: nothing after a file that stays goes.
        kept.binlog_file = None;
        let removed = removable_segments(&segs, &[&kept]);
        assert_eq!(removed.len(), 1);
    }
}
