//! Planning a point-in-time restore, without touching any server: which snapshot, which
//! archived binlog files, where replay ends, and the GTID state the target will end with.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;

use crate::binlog::file_sequence;
use crate::binlog::index::{self, TxInfo};
use crate::binlog::replay::{ReplayFile, StopAt};
use crate::error::{Error, Result};
use crate::mysql::gtid::GtidSet;
use crate::repo::Repo;
use crate::repo::manifest::{BinlogSegment, SnapshotManifest};

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
    #[serde(skip)]
    pub replay: Vec<ReplayFile>,
    #[serde(skip)]
    pub stop: Option<StopAt>,
    #[serde(skip)]
    pub snapshot_manifest: Option<SnapshotManifest>,
}

fn us_to_time(us: u64) -> Option<DateTime<Utc>> {
    Utc.timestamp_micros(i64::try_from(us).ok()?).single()
}

fn gtids(text: &str) -> GtidSet {
    GtidSet::parse(text).unwrap_or_default()
}

/// The newest segment of every archived file, per server, in file order.
fn archive(repo: &Repo) -> Result<BTreeMap<String, BTreeMap<u64, BinlogSegment>>> {
    Ok(crate::binlog::coverage::newest_segments(
        repo.binlog_segments()?,
    ))
}

/// Every archived file in replay order, from the snapshot's coordinates on: the snapshot's
/// server first, then (after a failover) the server whose history continues it.
fn chain(
    archive: &BTreeMap<String, BTreeMap<u64, BinlogSegment>>,
    snap: &SnapshotManifest,
) -> Result<Vec<BinlogSegment>> {
    let source = snap.source.as_ref().ok_or_else(|| {
        Error::Usage(format!(
            "snapshot {} has no source server to replay from",
            snap.id
        ))
    })?;
    let start_file = snap.binlog_file.clone().unwrap_or_default();
    let start_pos = snap.binlog_position.unwrap_or(4);
    let no_binlog = || {
        Error::BinlogGap(format!(
            "the archive has no binlog of {} from the snapshot's position {start_file}:{start_pos}; \
             is `myvault binlog stream` running for this server?",
            source.server_uuid
        ))
    };
    let files = archive.get(&source.server_uuid).ok_or_else(no_binlog)?;
    let start_seq = file_sequence(&start_file).ok_or_else(no_binlog)?;
    let mut out: Vec<BinlogSegment> = Vec::new();
    for (expected_seq, (seq, seg)) in (start_seq..).zip(files.range(start_seq..)) {
        if *seq != expected_seq {
            return Err(Error::BinlogGap(format!(
                "binlog file {} of {} is missing from the archive (the next archived one is {})",
                format_file(&start_file, expected_seq),
                source.server_uuid,
                seg.file
            )));
        }
        if let Some(prev) = out.last() {
            let before = gtids(&prev.previous_gtids).union(&gtids(&prev.gtids));
            if !gtids(&seg.previous_gtids).is_subset(&before) && prev.sealed {
                return Err(Error::BinlogGap(format!(
                    "transactions are missing between {} and {}",
                    prev.file, seg.file
                )));
            }
        }
        out.push(seg.clone());
        if !seg.sealed {
            break;
        }
    }
    if out.first().is_none_or(|f| f.file != start_file) {
        return Err(no_binlog());
    }
    // After the last file of this server, another server may carry on (a failover).
    let mut covered = gtids(snap.gtid_executed.as_deref().unwrap_or(""));
    for seg in &out {
        covered = covered.union(&gtids(&seg.gtids));
    }
    let mut used = vec![source.server_uuid.clone()];
    loop {
        let next = archive
            .iter()
            .filter(|(uuid, _)| !used.contains(uuid))
            .find_map(|(uuid, files)| {
                // The newest file of that server whose history we already have.
                files
                    .values()
                    .rev()
                    .find(|f| {
                        gtids(&f.previous_gtids).is_subset(&covered)
                            && !gtids(&f.gtids).is_subset(&covered)
                    })
                    .map(|f| (uuid.clone(), file_sequence(&f.file).unwrap_or(0)))
            });
        let Some((uuid, seq)) = next else { break };
        for seg in archive[&uuid].range(seq..).map(|(_, s)| s) {
            covered = covered.union(&gtids(&seg.gtids));
            out.push(seg.clone());
            if !seg.sealed {
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

/// Transactions of one archived file, read back from the repository.
fn transactions(repo: &Repo, seg: &BinlogSegment) -> Result<Vec<TxInfo>> {
    let entry = seg.file_entry();
    let reader = repo.open_file(&entry)?;
    let mut txs = Vec::new();
    index::scan(std::io::BufReader::with_capacity(1 << 20, reader), |t| {
        txs.push(t.clone())
    })
    .map_err(|e| {
        Error::Repo(crate::repo::RepoError::integrity(
            repo.name(),
            format!("binlog {}", seg.file),
            e.to_string(),
        ))
    })?;
    Ok(txs)
}

/// Plans a restore of `repo` to `target`, from `snapshot` or the best one.
/// Snapshots of a server that a restore can start from: those a running server loads
/// (`logical`), or those written into a data directory (`clone`, `cold`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Logical,
    Physical,
}

impl Kind {
    fn accepts(self, method: &str) -> bool {
        match self {
            Kind::Logical => method == "logical",
            Kind::Physical => method == "clone" || method == "cold",
        }
    }
}

pub fn plan(
    repo: &Arc<Repo>,
    target: &Target,
    snapshot: Option<&str>,
    kind: Kind,
) -> Result<PitrPlan> {
    let snapshots: Vec<SnapshotManifest> = repo
        .snapshots()?
        .into_iter()
        .filter(|s| kind.accepts(&s.method) && s.gtid_executed.is_some())
        .collect();
    let archive = archive(repo)?;
    // The archive covers up to its last commit, or later when the streamer saw the server
    // idle after it (heartbeats).
    let latest_restorable = archive
        .values()
        .flat_map(|f| f.values())
        .flat_map(|s| {
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
        (Some(id), _) => repo.find_snapshot(id)?,
        (None, Target::Time(t)) => snapshots
            .iter()
            .rev()
            .find(|s| s.time <= *t)
            .cloned()
            .ok_or_else(|| {
                Error::NotFound(match snapshots.first() {
                    Some(oldest) => format!(
                        "{} is before the oldest snapshot ({}, {})",
                        t.to_rfc3339(),
                        oldest.id,
                        oldest.time.to_rfc3339()
                    ),
                    None => "the repository has no snapshot of a server".into(),
                })
            })?,
        // Newest snapshot that does not already hold the boundary.
        (None, Target::ToGtid(g)) => snapshots
            .iter()
            .rev()
            .find(|s| !g.is_subset(&gtids(s.gtid_executed.as_deref().unwrap_or(""))))
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("every snapshot already contains {g}")))?,
        (None, Target::BeforeGtid(g)) => snapshots
            .iter()
            .rev()
            .find(|s| {
                gtids(s.gtid_executed.as_deref().unwrap_or(""))
                    .intersect(g)
                    .is_empty()
            })
            .cloned()
            .ok_or_else(|| {
                Error::NotFound(format!("every snapshot already contains part of {g}"))
            })?,
    };
    if let Target::Time(t) = target
        && snap.time > *t
    {
        return Err(Error::Usage(format!(
            "snapshot {} was taken at {}, after {}",
            snap.id,
            snap.time.to_rfc3339(),
            t.to_rfc3339()
        )));
    }
    let snap_gtids = gtids(snap.gtid_executed.as_deref().unwrap_or(""));
    let files = chain(&archive, &snap)?;

    // Walk the files' transactions in order to the boundary, reading only the files the
    // manifests cannot settle.
    let mut expected = snap_gtids.clone();
    let mut count = 0u64;
    let mut last_time = None;
    let mut first_skipped = None;
    let mut used = Vec::new();
    let mut reached = false;
    let mut warnings = Vec::new();
    'walk: for seg in &files {
        let seg_gtids = gtids(&seg.gtids);
        let whole_file_fits = match target {
            Target::Time(t) => {
                seg.last_commit_us
                    .is_some_and(|l| l <= t.timestamp_micros())
                    && seg.sealed
            }
            Target::ToGtid(g) => !g.is_subset(&expected.union(&seg_gtids)) && seg.sealed,
            Target::BeforeGtid(g) => seg_gtids.intersect(g).is_empty() && seg.sealed,
        };
        used.push(seg.clone());
        if whole_file_fits {
            count += seg_gtids.subtract(&expected).count();
            expected = expected.union(&seg_gtids);
            last_time = seg
                .last_commit_us
                .and_then(|us| us_to_time(us as u64))
                .or(last_time);
            continue;
        }
        for tx in transactions(repo, seg)? {
            let stop = match (target, &tx.gtid) {
                (Target::Time(t), _) => tx.commit_us as i64 > t.timestamp_micros(),
                (Target::BeforeGtid(g), Some(gtid)) => g.contains(gtid),
                _ => false,
            };
            if stop {
                first_skipped = us_to_time(tx.commit_us);
                reached = true;
                break 'walk;
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
                break 'walk;
            }
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
    let planned = used
        .iter()
        .map(|s| PlannedFile {
            server_uuid: s.source_uuid.clone(),
            file: s.file.clone(),
            size: s.size,
            first_event_time: s.first_event_time,
            last_event_time: s.last_event_time,
        })
        .collect();
    Ok(PitrPlan {
        snapshot: snap.id.clone(),
        snapshot_time: snap.time,
        snapshot_gtids: snap_gtids.to_string(),
        snapshot_binlog: format!(
            "{}:{}",
            snap.binlog_file.clone().unwrap_or_default(),
            snap.binlog_position.unwrap_or(0)
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
        replay: used
            .into_iter()
            .map(|segment| ReplayFile {
                repo: repo.clone(),
                segment,
            })
            .collect(),
        stop: Some(stop),
        snapshot_manifest: Some(snap),
    })
}
