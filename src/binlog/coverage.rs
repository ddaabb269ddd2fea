//! What the binlog archive of each source covers: its holes, and the point-in-time recovery
//! windows they leave.
//!
//! A **hole** is a stretch of a source's binlog that a restore replaying across it would need
//! and that no archived segment holds: a file missing from the sequence, a file archived only
//! as a prefix although a later file exists, or a file whose previous-GTIDs header names
//! transactions that the files before it do not hold. A **window** is a run of archived files
//! without a hole, from the oldest snapshot that starts in it to the last commit it holds:
//! every instant in it can be restored.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;

use super::file_sequence;
use crate::mysql::gtid::{GtidSet, MariaGtidList};
use crate::repo::manifest::{BinlogSegment, SnapshotManifest};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HoleKind {
    /// Files of the sequence that no segment holds.
    MissingFiles,
    /// A file archived only up to some byte, though the server went on to a later file.
    PrefixOnly,
    /// Consecutive files, but the later one's header names transactions the earlier ones lack.
    TransactionsMissing,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArchiveHole {
    pub server_uuid: String,
    pub kind: HoleKind,
    /// The archived files on either side of the hole.
    pub after_file: String,
    pub before_file: String,
    /// The files no segment holds (`MissingFiles`): the first, the last, how many.
    pub first_missing_file: Option<String>,
    pub last_missing_file: Option<String>,
    pub missing_file_count: u64,
    /// The transactions lost: a GTID set (MySQL) or ranges of sequence numbers (MariaDB);
    /// empty when the server writes no GTIDs.
    pub lost_gtids: String,
    /// Transactions committed after this instant (the last commit archived before the hole)
    /// and before `lost_before` (the first archived after it) are lost.
    pub lost_after: Option<DateTime<Utc>>,
    pub lost_before: Option<DateTime<Utc>>,
    /// The restorable windows the hole ends and starts again (`None`: no snapshot starts
    /// in that run of files, so nothing in it can be restored).
    pub window_before: Option<PitrWindow>,
    pub window_after: Option<PitrWindow>,
    /// One sentence saying all of the above.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PitrWindow {
    /// The oldest snapshot the window starts at, and its time.
    pub first_snapshot: String,
    pub start: DateTime<Utc>,
    /// The latest restorable instant: the last archived commit (or a later moment the
    /// streamer saw the server idle, for the newest file).
    pub end: Option<DateTime<Utc>>,
    pub first_file: String,
    pub last_file: String,
}

/// The holes and windows of one source's archive.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceCoverage {
    pub server_uuid: String,
    pub holes: Vec<ArchiveHole>,
    pub windows: Vec<PitrWindow>,
}

/// A segment manifest whose file name has no sequence number: servers always number their
/// binlog files, so the manifest was not written by a streamer (or is damaged), and ordering
/// the archive around it would be a guess.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the archived binlog `{file}` of {server_uuid} has no file sequence number")]
pub struct UnnumberedFile {
    pub server_uuid: String,
    pub file: String,
}

/// Archived files by server uuid, then by file sequence number.
pub type ArchiveFiles = BTreeMap<String, BTreeMap<u64, BinlogSegment>>;

/// The newest segment of every archived file, per server, in file order.
pub fn newest_segments(
    segments: impl IntoIterator<Item = BinlogSegment>,
) -> Result<ArchiveFiles, UnnumberedFile> {
    let mut out: ArchiveFiles = BTreeMap::new();
    for seg in segments {
        let seq = file_sequence(&seg.file).ok_or_else(|| UnnumberedFile {
            server_uuid: seg.source_uuid.clone(),
            file: seg.file.clone(),
        })?;
        let files = out.entry(seg.source_uuid.clone()).or_default();
        match files.get(&seq) {
            Some(have) if have.size >= seg.size => {}
            _ => {
                files.insert(seq, seg);
            }
        }
    }
    Ok(out)
}

/// The holes and windows of every source's archive.
pub fn coverage(archive: &ArchiveFiles, snapshots: &[SnapshotManifest]) -> Vec<SourceCoverage> {
    archive
        .iter()
        .map(|(uuid, files)| source_coverage(uuid, files, snapshots))
        .collect()
}

/// A run of consecutive archived files without a hole, as indexes into the file list.
struct Run {
    first: usize,
    last: usize,
}

fn source_coverage(
    uuid: &str,
    files: &BTreeMap<u64, BinlogSegment>,
    snapshots: &[SnapshotManifest],
) -> SourceCoverage {
    let files: Vec<(u64, &BinlogSegment)> = files.iter().map(|(s, f)| (*s, f)).collect();
    let mut found = Vec::new();
    let mut runs = vec![Run { first: 0, last: 0 }];
    for i in 1..files.len() {
        let ((a_seq, a), (b_seq, b)) = (files[i - 1], files[i]);
        match hole_between(a_seq, a, b_seq, b) {
            Some(hole) => {
                found.push(hole);
                runs.push(Run { first: i, last: i });
            }
            None => {
                if let Some(run) = runs.last_mut() {
                    run.last = i;
                }
            }
        }
    }
    if files.is_empty() {
        runs.clear();
    }
    let newest = runs.len().saturating_sub(1);
    let windows: Vec<Option<PitrWindow>> = runs
        .iter()
        .enumerate()
        .map(|(n, run)| window(uuid, &files, run, n == newest, snapshots))
        .collect();
    let holes = found
        .into_iter()
        .enumerate()
        .map(|(n, mut hole)| {
            hole.window_before = windows[n].clone();
            hole.window_after = windows[n + 1].clone();
            hole.detail = describe(&hole);
            hole
        })
        .collect();
    SourceCoverage {
        server_uuid: uuid.to_string(),
        holes,
        windows: windows.into_iter().flatten().collect(),
    }
}

/// The window of a run: from the oldest snapshot of this source whose binlog coordinates lie
/// in it, to its last commit.
fn window(
    uuid: &str,
    files: &[(u64, &BinlogSegment)],
    run: &Run,
    newest: bool,
    snapshots: &[SnapshotManifest],
) -> Option<PitrWindow> {
    let (first_seq, last_seq) = (files[run.first].0, files[run.last].0);
    let first = snapshots
        .iter()
        .filter(|s| matches!(s.method.as_str(), "logical" | "clone" | "cold"))
        .filter(|s| s.source.as_ref().is_some_and(|src| src.server_uuid == uuid))
        .filter(|s| {
            s.binlog_file
                .as_deref()
                .and_then(file_sequence)
                .is_some_and(|seq| (first_seq..=last_seq).contains(&seq))
        })
        .min_by_key(|s| s.time)?;
    let last = files[run.last].1;
    let mut end = last_commit(last);
    if newest {
        // The streamer saw the server idle after the last commit: the archive reaches then.
        let complete = last
            .extra
            .get("complete_at")
            .and_then(|v| serde_json::from_value::<DateTime<Utc>>(v.clone()).ok());
        end = end.max(complete);
    }
    Some(PitrWindow {
        first_snapshot: first.id.clone(),
        start: first.time,
        end: end.filter(|e| *e >= first.time).or(Some(first.time)),
        first_file: files[run.first].1.file.clone(),
        last_file: last.file.clone(),
    })
}

fn micros(us: Option<i64>) -> Option<DateTime<Utc>> {
    us.and_then(|us| Utc.timestamp_micros(us).single())
}

fn last_commit(seg: &BinlogSegment) -> Option<DateTime<Utc>> {
    micros(seg.last_commit_us).or(seg.last_event_time)
}

fn first_commit(seg: &BinlogSegment) -> Option<DateTime<Utc>> {
    micros(seg.first_commit_us).or(seg.first_event_time)
}

/// The hole between two archived files of one source (`a` before `b`), if there is one.
fn hole_between(
    a_seq: u64,
    a: &BinlogSegment,
    b_seq: u64,
    b: &BinlogSegment,
) -> Option<ArchiveHole> {
    let missing = b_seq.saturating_sub(a_seq + 1);
    let lost = lost_between(a, b);
    let kind = if missing > 0 {
        HoleKind::MissingFiles
    } else if !a.sealed {
        HoleKind::PrefixOnly
    } else if lost.as_ref().is_ok_and(|l| !l.is_empty()) {
        HoleKind::TransactionsMissing
    } else {
        return None;
    };
    let name = |seq: u64| file_name(&a.file, seq);
    Some(ArchiveHole {
        server_uuid: a.source_uuid.clone(),
        kind,
        after_file: a.file.clone(),
        before_file: b.file.clone(),
        first_missing_file: (missing > 0).then(|| name(a_seq + 1)),
        last_missing_file: (missing > 0).then(|| name(b_seq - 1)),
        missing_file_count: missing,
        lost_gtids: lost.unwrap_or_else(|e| format!("unknown ({e})")),
        lost_after: last_commit(a),
        lost_before: first_commit(b),
        window_before: None,
        window_after: None,
        detail: match kind {
            // Completed by `describe` once the windows are known.
            HoleKind::PrefixOnly => format!(
                "{} is archived only up to byte {} though the server went on to {}",
                a.file, a.size, b.file
            ),
            _ => String::new(),
        },
    })
}

/// `binlog.000007` for sequence 7, shaped like `template`.
fn file_name(template: &str, seq: u64) -> String {
    match template.rsplit_once('.') {
        Some((base, digits)) => format!("{base}.{seq:0width$}", width = digits.len()),
        None => format!("{template}.{seq}"),
    }
}

fn is_mariadb(seg: &BinlogSegment) -> bool {
    // The streamer names a MariaDB source `mariadb-<server_id>` (it has no server_uuid).
    seg.source_uuid.starts_with("mariadb-")
}

/// The transactions `b`'s header says came before it that neither `a` nor the files before
/// `a` hold; empty when none are missing (or the server writes no GTIDs).
fn lost_between(a: &BinlogSegment, b: &BinlogSegment) -> Result<String, String> {
    if is_mariadb(a) {
        let parse = |t: &str| MariaGtidList::parse(t).map_err(|e| e.to_string());
        let mut after_a = parse(&a.previous_gtids)?;
        for g in parse(&a.gtids)?.last.values() {
            after_a.update(*g);
        }
        let lost: Vec<String> = parse(&b.previous_gtids)?
            .last
            .values()
            .filter(|g| !after_a.includes(g))
            .map(|g| {
                let from = after_a.last.get(&g.domain).map_or(1, |have| have.seq + 1);
                format!("{}-{}-{from}..{}", g.domain, g.server_id, g.seq)
            })
            .collect();
        return Ok(lost.join(","));
    }
    let parse = |t: &str| GtidSet::parse(t).map_err(|e| e.to_string());
    let after_a = parse(&a.previous_gtids)?.union(&parse(&a.gtids)?);
    Ok(parse(&b.previous_gtids)?.subtract(&after_a).to_string())
}

fn at(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S%.6f UTC").to_string())
        .unwrap_or_else(|| "an unknown time".into())
}

fn describe(h: &ArchiveHole) -> String {
    let what = match h.kind {
        HoleKind::MissingFiles if h.missing_file_count == 1 => format!(
            "{} is missing from the archive (between {} and {})",
            h.first_missing_file.as_deref().unwrap_or("?"),
            h.after_file,
            h.before_file
        ),
        HoleKind::MissingFiles => format!(
            "{} files are missing from the archive ({} .. {}, between {} and {})",
            h.missing_file_count,
            h.first_missing_file.as_deref().unwrap_or("?"),
            h.last_missing_file.as_deref().unwrap_or("?"),
            h.after_file,
            h.before_file
        ),
        HoleKind::PrefixOnly => h.detail.clone(),
        HoleKind::TransactionsMissing => format!(
            "{}'s header names transactions that {} and the files before it do not hold",
            h.before_file, h.after_file
        ),
    };
    let lost = if h.lost_gtids.is_empty() {
        "transactions".to_string()
    } else {
        format!("transactions {}", h.lost_gtids)
    };
    let split = match (&h.window_before, &h.window_after) {
        (Some(w), Some(n)) => format!(
            "; point-in-time recovery from snapshot {} on ends at {}, and starts again only with snapshot {} ({})",
            w.first_snapshot,
            at(w.end),
            n.first_snapshot,
            at(Some(n.start))
        ),
        (Some(w), None) => format!(
            "; point-in-time recovery from snapshot {} on ends at {}, and no snapshot after the hole starts another",
            w.first_snapshot,
            at(w.end)
        ),
        (None, Some(n)) => format!(
            "; point-in-time recovery starts only with snapshot {} ({})",
            n.first_snapshot,
            at(Some(n.start))
        ),
        (None, None) => String::new(),
    };
    format!(
        "binlog archive of {}: {what}; lost: {lost} committed after {} and before {}{split}",
        h.server_uuid,
        at(h.lost_after),
        at(h.lost_before)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::manifest::SourceInfo;

    const U: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).single().unwrap()
    }

    /// File `seq` holding transactions `from..=to` committed at seconds `from` .. `to`.
    fn seg(uuid: &str, seq: u64, from: u64, to: u64) -> BinlogSegment {
        let gtids = format!("{uuid}:{from}-{to}");
        let prev = if from > 1 {
            format!("{uuid}:1-{}", from - 1)
        } else {
            String::new()
        };
        let mut s = BinlogSegment::sample(uuid, &format!("binlog.{seq:06}"), &gtids, &prev);
        s.first_commit_us = Some(t(from as i64).timestamp_micros());
        s.last_commit_us = Some(t(to as i64).timestamp_micros());
        s
    }

    fn snapshot(id: &str, time: i64, file: u64) -> SnapshotManifest {
        SnapshotManifest {
            id: id.into(),
            method: "logical".into(),
            time: t(time),
            started: t(time),
            finished: t(time),
            host: "h".into(),
            source: Some(SourceInfo {
                address: "db:3306".into(),
                server_uuid: U.into(),
                server_id: 1,
                flavor: "MySQL".into(),
                version: "9.7.0".into(),
            }),
            binlog_file: Some(format!("binlog.{file:06}")),
            binlog_position: Some(4),
            gtid_executed: Some(String::new()),
            lock_seconds: None,
            size: 0,
            new_bytes: 0,
            files: Vec::new(),
            extra: BTreeMap::new(),
        }
    }

    fn cover(segs: Vec<BinlogSegment>, snaps: &[SnapshotManifest]) -> SourceCoverage {
        coverage(&newest_segments(segs).expect("numbered files"), snaps).remove(0)
    }

    #[test]
    fn an_unbroken_archive_has_no_hole_and_one_window() {
        let c = cover(
            vec![seg(U, 1, 1, 10), seg(U, 2, 11, 20), seg(U, 3, 21, 30)],
            &[snapshot("s1", 5, 1)],
        );
        assert!(c.holes.is_empty(), "{:?}", c.holes);
        assert_eq!(c.windows.len(), 1);
        assert_eq!((c.windows[0].start, c.windows[0].end), (t(5), Some(t(30))));
    }

    #[test]
    fn a_missing_file_is_a_hole_that_splits_the_window() {
        let c = cover(
            vec![seg(U, 1, 1, 10), seg(U, 3, 21, 30), seg(U, 4, 31, 40)],
            &[snapshot("s1", 5, 1), snapshot("s2", 25, 3)],
        );
        assert_eq!(c.holes.len(), 1);
        let h = &c.holes[0];
        assert_eq!(h.kind, HoleKind::MissingFiles);
        assert_eq!(h.first_missing_file.as_deref(), Some("binlog.000002"));
        assert_eq!(h.missing_file_count, 1);
        assert_eq!(h.lost_gtids, format!("{U}:11-20"));
        assert_eq!((h.lost_after, h.lost_before), (Some(t(10)), Some(t(21))));
        assert_eq!(h.window_before.as_ref().unwrap().end, Some(t(10)));
        assert_eq!(h.window_after.as_ref().unwrap().first_snapshot, "s2");
        assert!(
            h.detail.contains("binlog.000002 is missing"),
            "{}",
            h.detail
        );
        assert!(h.detail.contains(&format!("{U}:11-20")), "{}", h.detail);
        assert!(
            h.detail.contains("starts again only with snapshot s2"),
            "{}",
            h.detail
        );
        assert_eq!(c.windows.len(), 2);
    }

    #[test]
    fn a_prefix_followed_by_a_later_file_is_a_hole() {
        let mut first = seg(U, 1, 1, 10);
        first.sealed = false;
        first.size = 5000;
        // The server wrote 11-20 into file 1 after what was archived.
        let c = cover(vec![first, seg(U, 2, 21, 30)], &[snapshot("s1", 5, 1)]);
        assert_eq!(c.holes.len(), 1);
        let h = &c.holes[0];
        assert_eq!(h.kind, HoleKind::PrefixOnly);
        assert_eq!(h.lost_gtids, format!("{U}:11-20"));
        assert!(h.detail.contains("only up to byte 5000"), "{}", h.detail);
        assert!(h.window_after.is_none());
        assert!(
            h.detail.contains("no snapshot after the hole"),
            "{}",
            h.detail
        );
    }

    #[test]
    fn a_header_naming_unarchived_transactions_is_a_hole() {
        let c = cover(vec![seg(U, 1, 1, 10), seg(U, 2, 15, 20)], &[]);
        assert_eq!(c.holes.len(), 1);
        assert_eq!(c.holes[0].kind, HoleKind::TransactionsMissing);
        assert_eq!(c.holes[0].lost_gtids, format!("{U}:11-14"));
        assert!(c.windows.is_empty(), "no snapshot, no window");
    }

    #[test]
    fn mariadb_positions_find_the_lost_sequence_numbers() {
        let m = "mariadb-4343";
        let mut a = BinlogSegment::sample(m, "mysql-bin.000001", "0-4343-10", "0-4343-2");
        a.sealed = true;
        let b = BinlogSegment::sample(m, "mysql-bin.000002", "0-4343-30", "0-4343-10");
        let c = BinlogSegment::sample(m, "mysql-bin.000003", "0-4343-40", "0-4343-35");
        let cov = cover(vec![a, b, c], &[]);
        assert_eq!(cov.holes.len(), 1, "{:?}", cov.holes);
        assert_eq!(cov.holes[0].before_file, "mysql-bin.000003");
        assert_eq!(cov.holes[0].lost_gtids, "0-4343-31..35");
    }
}
