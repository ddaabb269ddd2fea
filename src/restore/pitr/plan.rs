//! Planning a point-in-time restore, without touching any server: which snapshot, which
//! archived binlog files, where replay ends, and the GTID state the target will end with.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;

use super::archive_check::{self, NeededFile, segment_name};
use crate::binlog::file_sequence;
use crate::binlog::replay::{ReplayFile, StopAt};
use crate::error::{Error, Result};
use crate::mysql::gtid::GtidSet;
use crate::repo::manifest::{BinlogSegment, SnapshotManifest};
use crate::repo::{Repo, RepoError};

#[derive(Debug, Clone)]
pub enum Target {
    Time(DateTime<Utc>),
    /// Up to and including these GTIDs.
    ToGtid(GtidSet),
    /// Everything before the first of these GTIDs.
    BeforeGtid(GtidSet),
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedFile {
    pub server_uuid: String,
    pub file: String,
    pub size: u64,
    pub first_event_time: Option<DateTime<Utc>>,
    pub last_event_time: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PitrPlan {
    pub snapshot: String,
    pub snapshot_time: DateTime<Utc>,
    pub snapshot_gtids: String,
    pub snapshot_binlog: String,
    /// The requested instant, resolved to UTC.
    pub to_time: Option<DateTime<Utc>>,
    pub to_gtid: Option<String>,
    pub before_gtid: Option<String>,
    pub files: Vec<PlannedFile>,
    /// Transactions replay will apply.
    pub transactions: u64,
    /// Commit time of the last transaction applied.
    pub last_transaction_time: Option<DateTime<Utc>>,
    pub first_skipped_time: Option<DateTime<Utc>>,
    /// The GTID set the target will have when replay ends.
    pub expected_gtids: String,
    /// The latest instant the archive can restore to.
    pub latest_restorable: Option<DateTime<Utc>>,
    pub warnings: Vec<String>,
    /// The files of `files`, and how much of each the replay reads.
    #[serde(skip)]
    pub needed: Vec<NeededFile>,
    /// `snapshot_gtids` and `expected_gtids`, typed.
    #[serde(skip)]
    pub snapshot_set: GtidSet,
    #[serde(skip)]
    pub end_set: GtidSet,
    #[serde(skip)]
    pub stop: Option<StopAt>,
    #[serde(skip)]
    pub snapshot_manifest: Option<SnapshotManifest>,
}

fn us_to_time(us: u64) -> Option<DateTime<Utc>> {
    Utc.timestamp_micros(i64::try_from(us).ok()?).single()
}

impl PitrPlan {
    /// The files to replay, in order.
    pub fn replay_files(&self) -> Vec<ReplayFile> {
        self.needed.iter().map(|n| n.file.clone()).collect()
    }

    /// The boundary as the command line gave it: `--to-time T`, `--to-gtid S` or
    /// `--before-gtid S` (T in UTC).
    pub fn boundary(&self) -> String {
        match (&self.to_time, &self.to_gtid, &self.before_gtid) {
            (Some(t), _, _) => format!("--to-time {}", t.format("%Y-%m-%dT%H:%M:%S%.6fZ")),
            (_, Some(g), _) => format!("--to-gtid {g}"),
            (_, _, Some(g)) => format!("--before-gtid {g}"),
            _ => String::new(),
        }
    }
}

/// A manifest field that does not parse: the manifest is damaged (or written by a bug), and
/// a plan built on a guess could replay the wrong transactions.
fn bad_manifest(repo: &Repo, what: String, detail: String) -> Error {
    Error::Repo(RepoError::integrity(repo.name(), what, detail))
}

/// An archived segment with its manifest's GTID sets parsed, once.
#[derive(Debug, Clone)]
struct Archived {
    segment: BinlogSegment,
    gtids: GtidSet,
    /// Everything before the file (its previous-GTIDs header).
    previous: GtidSet,
}

impl Archived {
    fn parse(repo: &Repo, segment: BinlogSegment) -> Result<Archived> {
        let field = |name: &str, text: &str| {
            GtidSet::parse(text).map_err(|e| {
                bad_manifest(
                    repo,
                    format!("the manifest of {}", segment_name(&segment)),
                    format!("its {name} `{text}` is not a GTID set: {e}"),
                )
            })
        };
        Ok(Archived {
            gtids: field("gtids", &segment.gtids)?,
            previous: field("previous_gtids", &segment.previous_gtids)?,
            segment,
        })
    }
}

/// Archived files by server_uuid, then by file number.
type Archive = BTreeMap<String, BTreeMap<u64, Archived>>;

/// The newest segment of every archived file, per server, in file order.
fn archive(repo: &Repo) -> Result<Archive> {
    let mut out: Archive = BTreeMap::new();
    for (uuid, files) in crate::binlog::coverage::newest_segments(repo.binlog_segments()?)? {
        let parsed = files
            .into_iter()
            .map(|(seq, seg)| Ok((seq, Archived::parse(repo, seg)?)))
            .collect::<Result<_>>()?;
        out.insert(uuid, parsed);
    }
    Ok(out)
}

/// A snapshot with the GTID set it recorded, parsed once.
#[derive(Debug, Clone)]
struct Candidate {
    manifest: SnapshotManifest,
    gtids: GtidSet,
}

impl Candidate {
    fn parse(repo: &Repo, manifest: SnapshotManifest) -> Result<Candidate> {
        let Some(text) = manifest.gtid_executed.as_deref() else {
            return Err(Error::Usage(format!(
                "snapshot {} recorded no GTID set; a point-in-time restore needs one (was the source's gtid_mode ON?)",
                manifest.id
            )));
        };
        let gtids = GtidSet::parse(text).map_err(|e| {
            bad_manifest(
                repo,
                format!("snapshot {}", manifest.id),
                format!("its gtid_executed `{text}` is not a GTID set: {e}"),
            )
        })?;
        Ok(Candidate { manifest, gtids })
    }
}

/// Every archived file in replay order, from the snapshot's coordinates on: the snapshot's
/// server first, then (after a failover) the server whose history continues it.
fn chain(archive: &Archive, snap: &Candidate) -> Result<Vec<Archived>> {
    let manifest = &snap.manifest;
    let source = manifest.source.as_ref().ok_or_else(|| {
        Error::Usage(format!(
            "snapshot {} has no source server to replay from",
            manifest.id
        ))
    })?;
    let start_file = manifest.binlog_file.clone().unwrap_or_default();
    let start_pos = manifest.binlog_position.unwrap_or(4);
    let no_binlog = || {
        Error::BinlogGap(format!(
            "the archive has no binlog of {} from the snapshot's position {start_file}:{start_pos}; \
             is `myvault binlog stream` running for this server?",
            source.server_uuid
        ))
    };
    let files = archive.get(&source.server_uuid).ok_or_else(no_binlog)?;
    let start_seq = file_sequence(&start_file).ok_or_else(no_binlog)?;
    let mut out: Vec<Archived> = Vec::new();
    for (expected_seq, (seq, file)) in (start_seq..).zip(files.range(start_seq..)) {
        if *seq != expected_seq {
            return Err(Error::BinlogGap(format!(
                "binlog file {} of {} is missing from the archive (the next archived one is {})",
                format_file(&start_file, expected_seq),
                source.server_uuid,
                file.segment.file
            )));
        }
        if let Some(prev) = out.last() {
            let before = prev.previous.union(&prev.gtids);
            if !file.previous.is_subset(&before) && prev.segment.sealed {
                return Err(Error::BinlogGap(format!(
                    "transactions are missing between {} and {}",
                    prev.segment.file, file.segment.file
                )));
            }
        }
        out.push(file.clone());
        if !file.segment.sealed {
            break;
        }
    }
    if out.first().is_none_or(|f| f.segment.file != start_file) {
        return Err(no_binlog());
    }
    // After the last file of this server, another server may carry on (a failover).
    let mut covered = snap.gtids.clone();
    for file in &out {
        covered = covered.union(&file.gtids);
    }
    let mut used = vec![source.server_uuid.clone()];
    loop {
        let next = archive
            .iter()
            .filter(|(uuid, _)| !used.contains(uuid))
            .find_map(|(uuid, files)| {
                // The newest file of that server whose history we already have.
                files
                    .iter()
                    .rev()
                    .find(|(_, f)| f.previous.is_subset(&covered) && !f.gtids.is_subset(&covered))
                    .map(|(seq, _)| (uuid.clone(), *seq))
            });
        let Some((uuid, seq)) = next else { break };
        for file in archive[&uuid].range(seq..).map(|(_, f)| f) {
            covered = covered.union(&file.gtids);
            out.push(file.clone());
            if !file.segment.sealed {
                break;
            }
        }
        used.push(uuid);
    }
    Ok(out)
}

fn format_file(template: &str, seq: u64) -> String {
    match template.rsplit_once('.') {
        Some((base, digits)) => format!("{base}.{seq:0width$}", width = digits.len()),
        None => template.to_string(),
    }
}

/// Plans a restore of `repo` to `target`, from `snapshot` or the best one.
/// Snapshots of a server that a restore can start from: those a running server loads
/// (`logical`), or those written into a data directory (`clone`, `cold`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Logical,
    Physical,
    /// Either (a single-table restore reads both).
    Any,
}

impl Kind {
    fn accepts(self, method: &str) -> bool {
        match self {
            Kind::Logical => method == "logical",
            Kind::Physical => method == "clone" || method == "cold",
            Kind::Any => Kind::Logical.accepts(method) || Kind::Physical.accepts(method),
        }
    }
}

pub fn plan(
    repo: &Arc<Repo>,
    target: &Target,
    snapshot: Option<&str>,
    kind: Kind,
) -> Result<PitrPlan> {
    let snapshots: Vec<Candidate> = repo
        .snapshots()?
        .into_iter()
        .filter(|s| kind.accepts(&s.method) && s.gtid_executed.is_some())
        .map(|s| Candidate::parse(repo, s))
        .collect::<Result<_>>()?;
    let archive = archive(repo)?;
    // The archive covers up to its last commit, or later when the streamer saw the server
    // idle after it (heartbeats).
    let latest_restorable = archive
        .values()
        .flat_map(|f| f.values())
        .flat_map(|f| {
            let s = &f.segment;
            let commit = s.last_commit_us.and_then(|us| us_to_time(us as u64));
            let complete = s
                .extra
                .get("complete_at")
                .and_then(|v| serde_json::from_value::<DateTime<Utc>>(v.clone()).ok());
            [commit, complete]
        })
        .flatten()
        .max();
    let snap = match (snapshot, target) {
        (Some(id), _) => Candidate::parse(repo, repo.find_snapshot(id)?)?,
        (None, Target::Time(t)) => snapshots
            .iter()
            .rev()
            .find(|s| s.manifest.time <= *t)
            .cloned()
            .ok_or_else(|| {
                Error::NotFound(match snapshots.first() {
                    Some(oldest) => format!(
                        "{} is before the oldest snapshot ({}, {})",
                        t.to_rfc3339(),
                        oldest.manifest.id,
                        oldest.manifest.time.to_rfc3339()
                    ),
                    None => "the repository has no snapshot of a server".into(),
                })
            })?,
        // Newest snapshot that does not already hold the boundary.
        (None, Target::ToGtid(g)) => snapshots
            .iter()
            .rev()
            .find(|s| !g.is_subset(&s.gtids))
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("every snapshot already contains {g}")))?,
        (None, Target::BeforeGtid(g)) => snapshots
            .iter()
            .rev()
            .find(|s| s.gtids.intersect(g).is_empty())
            .cloned()
            .ok_or_else(|| {
                Error::NotFound(format!("every snapshot already contains part of {g}"))
            })?,
    };
    if let Target::Time(t) = target
        && snap.manifest.time > *t
    {
        return Err(Error::Usage(format!(
            "snapshot {} was taken at {}, after {}",
            snap.manifest.id,
            snap.manifest.time.to_rfc3339(),
            t.to_rfc3339()
        )));
    }
    let files = chain(&archive, &snap)?;

    // Walk the files' transactions in order to the boundary, reading only the files the
    // manifests cannot settle, and only up to the boundary.
    let mut expected = snap.gtids.clone();
    let mut count = 0u64;
    let mut last_time = None;
    let mut first_skipped = None;
    let mut needed = Vec::new();
    let mut reached = false;
    let mut warnings = Vec::new();
    for file in &files {
        let seg = &file.segment;
        let whole_file_fits = seg.sealed
            && match target {
                Target::Time(t) => seg
                    .last_commit_us
                    .is_some_and(|l| l <= t.timestamp_micros()),
                Target::ToGtid(g) => !g.is_subset(&expected.union(&file.gtids)),
                Target::BeforeGtid(g) => file.gtids.intersect(g).is_empty(),
            };
        let replay_file = ReplayFile {
            repo: repo.clone(),
            segment: seg.clone(),
        };
        if whole_file_fits {
            count = count.saturating_add(file.gtids.subtract(&expected).count());
            expected = expected.union(&file.gtids);
            last_time = seg
                .last_commit_us
                .and_then(|us| us_to_time(us as u64))
                .or(last_time);
            needed.push(NeededFile {
                file: replay_file,
                read_to: seg.size,
                read_by_plan: false,
            });
            continue;
        }
        let read_to = archive_check::scan(repo, seg, seg.size, |tx| {
            let stop = match (target, &tx.gtid) {
                (Target::Time(t), _) => tx.commit_us as i64 > t.timestamp_micros(),
                (Target::BeforeGtid(g), Some(gtid)) => g.contains(gtid),
                _ => false,
            };
            if stop {
                first_skipped = us_to_time(tx.commit_us);
                reached = true;
                return false;
            }
            if let Some(g) = &tx.gtid
                && !expected.contains(g)
            {
                expected.add(g);
                count += 1;
                last_time = us_to_time(tx.commit_us);
            }
            if let Target::ToGtid(g) = target
                && g.is_subset(&expected)
            {
                reached = true;
                return false;
            }
            true
        })?;
        needed.push(NeededFile {
            file: replay_file,
            read_to,
            read_by_plan: true,
        });
        if reached {
            break;
        }
    }
    match target {
        Target::Time(t) if !reached => {
            let latest = latest_restorable
                .map(|l| l.to_rfc3339())
                .unwrap_or_else(|| "none".into());
            if latest_restorable.is_none_or(|l| l < *t) {
                return Err(Error::NotFound(format!(
                    "{} is later than the archive covers; the latest restorable instant is {latest}",
                    t.to_rfc3339()
                )));
            }
            warnings.push("the boundary is at the end of the archive".into());
        }
        Target::ToGtid(g) if !g.is_subset(&expected) => {
            return Err(Error::NotFound(format!(
                "the archive does not contain {}",
                g.subtract(&expected)
            )));
        }
        _ => {}
    }
    let stop = match target {
        Target::Time(t) => StopAt::Time(t.timestamp_micros().max(0) as u64),
        Target::ToGtid(g) => StopAt::AfterGtids(g.clone()),
        Target::BeforeGtid(g) => StopAt::BeforeGtids(g.clone()),
    };
    let planned = needed
        .iter()
        .map(|n| {
            let s = &n.file.segment;
            PlannedFile {
                server_uuid: s.source_uuid.clone(),
                file: s.file.clone(),
                size: s.size,
                first_event_time: s.first_event_time,
                last_event_time: s.last_event_time,
            }
        })
        .collect();
    let manifest = snap.manifest;
    Ok(PitrPlan {
        snapshot: manifest.id.clone(),
        snapshot_time: manifest.time,
        snapshot_gtids: snap.gtids.to_string(),
        snapshot_binlog: format!(
            "{}:{}",
            manifest.binlog_file.clone().unwrap_or_default(),
            manifest.binlog_position.unwrap_or(0)
        ),
        to_time: match target {
            Target::Time(t) => Some(*t),
            _ => None,
        },
        to_gtid: match target {
            Target::ToGtid(g) => Some(g.to_string()),
            _ => None,
        },
        before_gtid: match target {
            Target::BeforeGtid(g) => Some(g.to_string()),
            _ => None,
        },
        files: planned,
        transactions: count,
        last_transaction_time: last_time,
        first_skipped_time: first_skipped,
        expected_gtids: expected.to_string(),
        latest_restorable,
        warnings,
        needed,
        snapshot_set: snap.gtids,
        end_set: expected,
        stop: Some(stop),
        snapshot_manifest: Some(manifest),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::repo::config::RepoConfig;
    use crate::repo::manifest::{SourceInfo, encode};
    use crate::repo::{binlog_key, snapshot_key};
    use crate::storage::Storage;
    use crate::storage::memory::MemoryStorage;

    const UUID: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";

    /// A repository holding one logical snapshot with `snapshot_gtids` at binlog.000001:4,
    /// then two sealed segments: binlog.000001 with transactions 6-10 and binlog.000002 with
    /// `second_gtids`. No data: the plans below are settled by the manifests alone.
    fn repo_with(snapshot_gtids: &str, second_gtids: &str) -> Arc<Repo> {
        let segments = [
            (
                "binlog.000001",
                format!("{UUID}:6-10"),
                format!("{UUID}:1-5"),
            ),
            (
                "binlog.000002",
                second_gtids.to_string(),
                format!("{UUID}:1-10"),
            ),
        ];
        let mem = Arc::new(MemoryStorage::new());
        let repo = Repo::init(mem.clone(), RepoConfig::new()).unwrap();
        let now = Utc::now();
        let snap = SnapshotManifest {
            id: crate::repo::writer::new_snapshot_id(now),
            method: "logical".into(),
            time: now,
            started: now,
            finished: now,
            host: "test".into(),
            source: Some(SourceInfo {
                server_uuid: UUID.into(),
                ..SourceInfo::default()
            }),
            binlog_file: Some("binlog.000001".into()),
            binlog_position: Some(4),
            gtid_executed: Some(snapshot_gtids.into()),
            lock_seconds: None,
            size: 0,
            new_bytes: 0,
            files: Vec::new(),
            extra: BTreeMap::new(),
        };
        mem.put(&snapshot_key(&snap.id), &encode("snapshot", &snap))
            .unwrap();
        for (file, gtids, previous) in &segments {
            let seg = BinlogSegment::sample(UUID, file, gtids, previous);
            mem.put(&binlog_key(UUID, file, seg.size), &encode("binlog", &seg))
                .unwrap();
        }
        Arc::new(repo)
    }

    /// The control for the tests below: with sets that parse, a plan settled by the
    /// manifests alone (a boundary in no file: every file is replayed whole).
    #[test]
    fn a_plan_from_well_formed_manifests_counts_their_transactions() {
        let repo = repo_with(&format!("{UUID}:1-5"), &format!("{UUID}:11-20"));
        let before = Target::BeforeGtid(GtidSet::parse(&format!("{UUID}:100")).unwrap());
        let p = plan(&repo, &before, None, Kind::Logical).unwrap();
        assert_eq!(p.transactions, 15);
        assert_eq!(p.end_set.to_string(), format!("{UUID}:1-20"));
        assert_eq!(p.needed.len(), 2);
        assert!(p.needed.iter().all(|n| !n.read_by_plan));
    }

    /// The plan to `set` (a GTID boundary).
    fn plan_to(repo: &Arc<Repo>, set: &str) -> Result<PitrPlan> {
        let target = Target::ToGtid(GtidSet::parse(set).unwrap());
        plan(repo, &target, None, Kind::Logical)
    }

    /// The plan fails with one line, an integrity error that names every one of `names`.
    fn assert_fails_naming(result: Result<PitrPlan>, names: &[&str]) {
        let e = result.expect_err("a manifest whose GTID set does not parse must fail the plan");
        assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
        let msg = e.to_string();
        assert!(names.iter().all(|n| msg.contains(n)), "{names:?}: {msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");
    }

    /// Issue 18, item 12: the planner parsed a segment manifest's GTID set with
    /// `unwrap_or_default`, so a set it could not parse became an empty one and the plan went
    /// on as if the file held no transactions.
    #[test]
    fn a_garbled_gtid_set_in_a_binlog_manifest_fails_the_plan_instead_of_reading_as_empty() {
        let repo = repo_with(&format!("{UUID}:1-5"), "3e11fa47-zzzz:11-20");
        let segment = format!("binlog.000002 of {UUID}");
        assert_fails_naming(
            plan_to(&repo, &format!("{UUID}:1-10")),
            &[&segment, "gtids"],
        );
    }

    #[test]
    fn a_garbled_gtid_set_in_a_snapshot_manifest_fails_the_plan_instead_of_reading_as_empty() {
        let repo = repo_with("not a gtid set", &format!("{UUID}:11-20"));
        assert_fails_naming(plan_to(&repo, &format!("{UUID}:1-10")), &["gtid_executed"]);
    }
}
