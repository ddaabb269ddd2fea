//! `myvault prune`: retention. Decides which snapshots and archived binlog files are no longer
//! wanted, then has the repository delete them and every pack nothing else needs.
//!
//! Prune needs the repository to itself. A streamer holds its lock only while it uploads and
//! loads the index again after a prune (see `repo::PRUNED_KEY`), so prune waits for the upload
//! in progress; a backup holds its lock to the end, and prune gives up after two minutes.
//!
//! Snapshots are grouped by origin (the source server, or the backed-up path) and the policy
//! applies to each group; the newest snapshot of a group is always kept. A binlog file is
//! removed only when every transaction in it is already in every kept snapshot (so no kept
//! snapshot can need it for point-in-time recovery), it is sealed, and it is not its server's
//! newest file.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::mysql::gtid::GtidSet;
use crate::repo::lock::{LockGuard, LockKind};
use crate::repo::manifest::{BinlogSegment, SnapshotManifest};
use crate::repo::prune::{self, Forget, GcPlan};
use crate::repo::{Repo, binlog_key, snapshot_key};

#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    pub keep_last: Option<usize>,
    pub keep_within: Option<chrono::Duration>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    pub repo: String,
    /// True when nothing was deleted (`--plan`).
    pub planned_only: bool,
    pub snapshots_kept: Vec<String>,
    pub snapshots_removed: Vec<String>,
    pub binlog_files_removed: Vec<String>,
    #[serde(flatten)]
    pub gc: GcPlan,
}

/// How long prune waits for shared locks to go: a streamer holds one only while it uploads.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// The exclusive lock, retried while other processes hold theirs.
fn lock_exclusively(repo: &Repo) -> Result<LockGuard> {
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

pub fn run(
    repo: &Repo,
    policy: Policy,
    plan_only: bool,
    now: DateTime<Utc>,
) -> Result<PruneReport> {
    if policy.keep_last.is_none() && policy.keep_within.is_none() {
        return Err(Error::Usage(
            "prune needs a retention policy: --keep-last N and/or --keep-within DURATION".into(),
        ));
    }
    if policy.keep_last == Some(0) {
        return Err(Error::Usage(
            "--keep-last must be at least 1 (the newest snapshot is always kept)".into(),
        ));
    }
    let _lock = lock_exclusively(repo)?;
    let snapshots = repo.snapshots()?;
    let kept = keep(&snapshots, policy, now);
    let segments = repo.binlog_segments()?;
    let kept_snapshots: Vec<&SnapshotManifest> =
        snapshots.iter().filter(|s| kept.contains(&s.id)).collect();
    let old_segments = removable_segments(&segments, &kept_snapshots);

    let mut forget = Forget::default();
    let mut report = PruneReport {
        repo: repo.name().to_string(),
        planned_only: plan_only,
        snapshots_kept: Vec::new(),
        snapshots_removed: Vec::new(),
        binlog_files_removed: Vec::new(),
        gc: GcPlan::default(),
    };
    for s in &snapshots {
        if kept.contains(&s.id) {
            report.snapshots_kept.push(s.id.clone());
        } else {
            report.snapshots_removed.push(s.id.clone());
            forget.manifests.push(snapshot_key(&s.id));
        }
    }
    let mut files = BTreeSet::new();
    for s in old_segments {
        files.insert(format!("{} {}", s.source_uuid, s.file));
        forget
            .manifests
            .push(binlog_key(&s.source_uuid, &s.file, s.size));
    }
    report.binlog_files_removed = files.into_iter().collect();
    report.gc = prune::plan(repo, &forget)?;
    if !plan_only {
        prune::execute(repo, &report.gc)?;
    }
    Ok(report)
}

/// Where a snapshot came from: retention applies per origin.
fn origin(m: &SnapshotManifest) -> String {
    match &m.source {
        Some(s) => format!("server {}", s.server_uuid),
        None => format!("path {}", m.backed_up_path().unwrap_or_default()),
    }
}

/// The ids of the snapshots the policy keeps (`snapshots` oldest first).
fn keep(snapshots: &[SnapshotManifest], policy: Policy, now: DateTime<Utc>) -> BTreeSet<String> {
    let mut groups: BTreeMap<String, Vec<&SnapshotManifest>> = BTreeMap::new();
    for s in snapshots {
        groups.entry(origin(s)).or_default().push(s);
    }
    let mut kept = BTreeSet::new();
    for group in groups.values() {
        let newest_first = group.iter().rev();
        for (i, s) in newest_first.enumerate() {
            let recent = policy.keep_within.is_some_and(|w| s.time >= now - w);
            let among_last = policy.keep_last.is_some_and(|n| i < n);
            if i == 0 || recent || among_last {
                kept.insert(s.id.clone());
            }
        }
    }
    kept
}

/// Binlog segment manifests no kept snapshot can need. Conservative: nothing goes when a kept
/// snapshot's GTID set or a segment's cannot be read (MariaDB positions, say).
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
    // Per server, its newest file (by name, which the server numbers in order) stays.
    // Numbers grow past six digits (binlog.999999, binlog.1000000): compare length first.
    let order = |f: &str| (f.len(), f.to_string());
    let mut newest: BTreeMap<&str, &str> = BTreeMap::new();
    for s in segments {
        let e = newest
            .entry(s.source_uuid.as_str())
            .or_insert(s.file.as_str());
        if order(&s.file) > order(e) {
            *e = s.file.as_str();
        }
    }
    // A file goes only with all its segments: each must be sealed-or-superseded and covered.
    let mut by_file: BTreeMap<(&str, &str), Vec<&BinlogSegment>> = BTreeMap::new();
    for s in segments {
        by_file
            .entry((s.source_uuid.as_str(), s.file.as_str()))
            .or_default()
            .push(s);
    }
    let mut out = Vec::new();
    for ((uuid, file), segs) in by_file {
        if newest.get(uuid) == Some(&file) || !segs.iter().any(|s| s.sealed) {
            continue;
        }
        let all_covered = segs
            .iter()
            .all(|s| GtidSet::parse(&s.gtids).is_ok_and(|g| g.is_subset(&covered)));
        if all_covered {
            out.extend(segs);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";

    fn snap(id: &str, minutes_ago: i64, gtids: &str, now: DateTime<Utc>) -> SnapshotManifest {
        SnapshotManifest {
            id: id.into(),
            method: "logical".into(),
            time: now - chrono::Duration::minutes(minutes_ago),
            started: now,
            finished: now,
            host: "h".into(),
            source: Some(crate::repo::manifest::SourceInfo {
                address: "db1:3306".into(),
                server_uuid: U.into(),
                server_id: 1,
                flavor: "MySQL".into(),
                version: "9.7".into(),
            }),
            binlog_file: None,
            binlog_position: None,
            gtid_executed: Some(gtids.into()),
            lock_seconds: None,
            size: 0,
            new_bytes: 0,
            files: Vec::new(),
            extra: Default::default(),
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
        let last2 = Policy {
            keep_last: Some(2),
            keep_within: None,
        };
        assert_eq!(keep(&all, last2, now), ["c", "d"].map(String::from).into());
        let within = Policy {
            keep_last: None,
            keep_within: Some(chrono::Duration::minutes(150)),
        };
        assert_eq!(keep(&all, within, now), ["c", "d"].map(String::from).into());
        let short = Policy {
            keep_last: None,
            keep_within: Some(chrono::Duration::minutes(1)),
        };
        assert_eq!(keep(&all, short, now), ["d"].map(String::from).into());
        // Another server's only snapshot is its newest: kept whatever its age.
        let mut other = snap("z", 900, "", now);
        other.source.as_mut().unwrap().server_uuid = "other".into();
        all.insert(0, other);
        assert!(keep(&all, last2, now).contains("z"));
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
}
