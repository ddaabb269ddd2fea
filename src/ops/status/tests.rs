//! The verdict rules on repositories made of manifests (no store, no server): each rule
//! alone makes the status unhealthy, and what is not a problem (different retention, a hole
//! before every kept snapshot, an ignored source) does not.

use chrono::{DateTime, TimeZone, Utc};

use super::gather::{Readable, RepoFacts};
use super::verifications::VerificationRecord;
use super::*;
use crate::repo::manifest::{BinlogSegment, GapRecord, SnapshotManifest};

const U: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + s, 0).single().unwrap()
}

fn snapshot(id: &str, time: i64, file: u64) -> SnapshotManifest {
    serde_json::from_value(serde_json::json!({
        "id": id, "method": "logical", "time": t(time), "started": t(time),
        "finished": t(time), "host": "h", "size": 0, "new_bytes": 0, "files": [],
        "source": {"address": "db1:3306", "server_uuid": U, "server_id": 1,
                   "flavor": "MySQL", "version": "9.7.0"},
        "binlog_file": format!("binlog.{file:06}"), "binlog_position": 4,
        "gtid_executed": "",
    }))
    .expect("a snapshot manifest")
}

/// Snapshots s1 (at 100, in file 1) and s2 (at 1000, in file 3).
fn snaps() -> Vec<SnapshotManifest> {
    vec![snapshot("s1", 100, 1), snapshot("s2", 1000, 3)]
}

/// Of files 1..=4 (transactions 1-100, 101-200, 201-1000, 1001-1100), those named.
fn files(which: &[u64]) -> Vec<BinlogSegment> {
    let spans = [(1, 100), (101, 200), (201, 1000), (1001, 1100)];
    which
        .iter()
        .map(|&n| seg(n, spans[n as usize - 1].0, spans[n as usize - 1].1))
        .collect()
}

fn verified_ok() -> Vec<VerificationRecord> {
    vec![verified(500, true, false)]
}

#[track_caller]
fn assert_says(p: &Problem, text: &str) {
    assert!(p.what.contains(text), "{:?} does not say {text:?}", p.what);
}

/// File `seq` holding transactions `from..=to`, committed at seconds `from` .. `to` and
/// archived at `to`.
fn seg(seq: u64, from: i64, to: i64) -> BinlogSegment {
    let prev = if from > 1 {
        format!("{U}:1-{}", from - 1)
    } else {
        String::new()
    };
    let mut s = BinlogSegment::sample(
        U,
        &format!("binlog.{seq:06}"),
        &format!("{U}:{from}-{to}"),
        &prev,
    );
    s.first_commit_us = Some(t(from).timestamp_micros());
    s.last_commit_us = Some(t(to).timestamp_micros());
    s.archived_at = t(to);
    s
}

fn verified(time: i64, ok: bool, restore_test: bool) -> VerificationRecord {
    VerificationRecord {
        time: t(time),
        started: t(time),
        host: "h".into(),
        read_data: true,
        restore_test,
        snapshot: None,
        ok,
        problems: usize::from(!ok && !restore_test),
        detail: (!ok).then(|| "packs/ab/abcd: damaged".into()),
        version: "test".into(),
    }
}

fn repo(
    name: &str,
    snapshots: Vec<SnapshotManifest>,
    segments: Vec<BinlogSegment>,
    verifications: Vec<VerificationRecord>,
) -> RepoFacts {
    RepoFacts {
        location: name.into(),
        content: Ok(
            Readable::new(name, false, snapshots, segments, Vec::new(), verifications)
                .expect("numbered files"),
        ),
    }
}

/// Two copies: snapshots at 100 and 1000, files 1..=4 covering 1..=1100, verified at 500.
fn copies() -> Vec<RepoFacts> {
    vec![
        repo("/local", snaps(), files(&[1, 2, 3, 4]), verified_ok()),
        repo("s3://b/p", snaps(), files(&[1, 2, 3, 4]), verified_ok()),
    ]
}

fn options(now: i64) -> StatusOptions {
    StatusOptions {
        repos: Vec::new(),
        store: crate::storage::OpenOptions::default(),
        spool: None,
        limits: Limits::DEFAULT,
        ignore_sources: Vec::new(),
        now: t(now),
    }
}

fn critical(r: &StatusReport) -> Vec<(ProblemCode, Option<&str>)> {
    r.problems
        .iter()
        .filter(|p| p.severity == Severity::Critical)
        .map(|p| (p.code, p.repo.as_deref()))
        .collect()
}

#[test]
fn identical_fresh_verified_copies_are_healthy() {
    let r = judge(&copies(), None, &options(1150));
    assert_eq!(r.verdict, Verdict::Healthy, "{:#?}", r.problems);
    assert!(r.problems.is_empty(), "{:#?}", r.problems);
    let local = &r.sources[0].repos[0];
    assert_eq!(
        local.newest_snapshot.as_ref().map(|s| s.id.as_str()),
        Some("s2")
    );
    assert_eq!(local.newest_snapshot_age_seconds, Some(150));
    let a = local.archive.as_ref().expect("archive");
    assert_eq!((a.files, a.lag_seconds), (4, Some(50)));
    assert_eq!(local.windows.len(), 1);
    assert_eq!(r.sources[0].address.as_deref(), Some("db1:3306"));
}

#[test]
fn an_old_snapshot_is_unhealthy_in_every_repository_unless_the_check_is_off() {
    let mut opts = options(1000 + 27 * 3600);
    opts.limits.max_archive_lag = None;
    let r = judge(&copies(), None, &opts);
    assert_eq!(
        critical(&r),
        [
            (ProblemCode::SnapshotTooOld, Some("/local")),
            (ProblemCode::SnapshotTooOld, Some("s3://b/p"))
        ]
    );
    assert_says(&r.problems[0], "1 d 3 h old");
    opts.limits.max_snapshot_age = None;
    assert_eq!(judge(&copies(), None, &opts).verdict, Verdict::Healthy);
}

#[test]
fn an_archive_that_stopped_advancing_is_stale_and_one_without_archive_is_missing() {
    let mut facts = copies();
    facts[1] = repo("s3://b/p", snaps(), Vec::new(), verified_ok());
    let r = judge(&facts, None, &options(1100 + 301));
    assert_eq!(
        critical(&r),
        [
            (ProblemCode::ArchiveStale, Some("/local")),
            (ProblemCode::ArchiveMissing, Some("s3://b/p"))
        ]
    );
    assert_says(&r.problems[0], "5 min");
}

#[test]
fn the_streamers_idle_mark_keeps_an_archive_without_commits_fresh() {
    let mut facts = copies();
    for f in &mut facts {
        let Ok(r) = &mut f.content else {
            unreachable!()
        };
        let newest = r
            .archive
            .get_mut(U)
            .and_then(|f| f.values_mut().next_back())
            .unwrap();
        newest
            .extra
            .insert("complete_at".into(), serde_json::json!(t(5000)));
    }
    let r = judge(&facts, None, &options(5100));
    assert_eq!(r.verdict, Verdict::Healthy, "{:#?}", r.problems);
    assert_eq!(
        r.sources[0].repos[0]
            .archive
            .as_ref()
            .unwrap()
            .complete_until,
        Some(t(5000))
    );
}

#[test]
fn a_missing_file_is_a_hole_and_a_divergence_of_that_repository_only() {
    let mut facts = copies();
    facts[0] = repo("/local", snaps(), files(&[1, 3, 4]), verified_ok());
    let r = judge(&facts, None, &options(1150));
    assert_eq!(
        critical(&r),
        [
            (ProblemCode::ArchiveHole, Some("/local")),
            (ProblemCode::Diverged, Some("/local"))
        ]
    );
    assert_says(&r.problems[1], "binlog.000002");
    assert_says(&r.problems[1], "s3://b/p");
    assert_eq!(r.diverged.len(), 1);
    assert_eq!(r.diverged[0].kind, DivergenceKind::BinlogFile);
    assert_eq!(r.diverged[0].missing_from, ["/local"]);
}

#[test]
fn a_snapshot_one_repository_lacks_is_a_divergence() {
    let mut facts = copies();
    facts[1] = repo(
        "s3://b/p",
        vec![snapshot("s1", 100, 1)],
        files(&[1, 2, 3, 4]),
        verified_ok(),
    );
    let r = judge(&facts, None, &options(1150));
    assert_eq!(critical(&r), [(ProblemCode::Diverged, Some("s3://b/p"))]);
    assert_says(&r.problems[0], "1 snapshot(s) (s2)");
}

#[test]
fn what_a_shorter_retention_pruned_is_neither_divergence_nor_a_hole_that_matters() {
    let mut facts = copies();
    // Kept only s2 and the files from its own on.
    facts[1] = repo(
        "s3://b/p",
        vec![snapshot("s2", 1000, 3)],
        files(&[3, 4]),
        verified_ok(),
    );
    let r = judge(&facts, None, &options(1150));
    assert_eq!(r.verdict, Verdict::Healthy, "{:#?}", r.problems);
    assert!(r.diverged.is_empty(), "{:#?}", r.diverged);

    // A hole that ends before the oldest kept snapshot: no restore crosses it.
    let single = vec![repo(
        "/local",
        vec![snapshot("s2", 1000, 3)],
        files(&[1, 3, 4]),
        verified_ok(),
    )];
    let r = judge(&single, None, &options(1150));
    assert_eq!(r.verdict, Verdict::Healthy, "{:#?}", r.problems);
    assert_eq!(r.sources[0].repos[0].holes.len(), 1, "shown, not judged");
}

#[test]
fn verify_results_failed_restore_tests_and_old_verifies_are_judged() {
    let all = || files(&[1, 2, 3, 4]);
    let facts = vec![
        repo(
            "/local",
            snaps(),
            all(),
            vec![verified(400, true, false), verified(500, false, false)],
        ),
        // A restore test failed; a later plain verify passed: still a failed restore test.
        repo(
            "s3://b/p",
            snaps(),
            all(),
            vec![verified(400, false, true), verified(500, true, false)],
        ),
    ];
    let r = judge(&facts, None, &options(1150));
    assert_eq!(
        critical(&r),
        [
            (ProblemCode::VerifyFailed, Some("/local")),
            (ProblemCode::RestoreTestFailed, Some("s3://b/p"))
        ]
    );
    assert_says(&r.problems[0], "packs/ab/abcd");
    assert_eq!(
        r.repos[1].last_restore_test.as_ref().map(|v| v.ok),
        Some(false)
    );

    let mut opts = options(1150);
    opts.limits.max_verify_age = Some(chrono::Duration::seconds(600));
    let r = judge(&copies(), None, &opts);
    assert_eq!(
        critical(&r),
        [
            (ProblemCode::VerifyTooOld, Some("/local")),
            (ProblemCode::VerifyTooOld, Some("s3://b/p"))
        ]
    );
    let never = vec![repo(
        "/new",
        vec![snapshot("s1", 100, 1)],
        Vec::new(),
        Vec::new(),
    )];
    let r = judge(&never, None, &options(150));
    assert_eq!(
        r.verdict,
        Verdict::Healthy,
        "never verified is a warning without a limit"
    );
    assert_eq!(r.problems[0].code, ProblemCode::NeverVerified);
}

#[test]
fn an_unreadable_repository_is_unhealthy_and_an_ignored_source_is_not_judged() {
    let mut facts = copies();
    facts.push(RepoFacts {
        location: "s3://gone/p".into(),
        content: Err("bucket does not exist".into()),
    });
    let r = judge(&facts, None, &options(1150));
    assert_eq!(
        critical(&r),
        [(ProblemCode::RepoUnreadable, Some("s3://gone/p"))]
    );
    assert_says(&r.problems[0], "bucket does not exist");
    assert!(!r.repos[2].readable);

    let mut opts = options(1000 + 40 * 86_400);
    opts.ignore_sources = vec![U.into()];
    let r = judge(&copies(), None, &opts);
    assert_eq!(r.verdict, Verdict::Healthy, "{:#?}", r.problems);
    assert!(r.sources[0].ignored);
}

#[test]
fn a_purge_the_streamer_found_after_the_oldest_snapshot_is_unhealthy() {
    let facts = |at: i64| {
        let gap = GapRecord {
            server_uuid: U.into(),
            detail: "the source purged binlog.000009".into(),
            detected_at: t(at),
        };
        let kept = vec![snapshot("s2", 1000, 3)];
        let content = Readable::new(
            "/local",
            false,
            kept,
            files(&[3, 4]),
            vec![gap],
            verified_ok(),
        );
        vec![RepoFacts {
            location: "/local".into(),
            content: Ok(content.expect("numbered files")),
        }]
    };
    let r = judge(&facts(1050), None, &options(1150));
    assert_eq!(critical(&r), [(ProblemCode::ArchiveGap, Some("/local"))]);
    let r = judge(&facts(900), None, &options(1150));
    assert_eq!(
        r.verdict,
        Verdict::Healthy,
        "before the oldest kept snapshot"
    );
}

#[test]
fn ages_read_as_people_say_them() {
    assert_eq!(human_age(42), "42 s");
    assert_eq!(human_age(301), "5 min");
    assert_eq!(human_age(3 * 3600), "3 h");
    assert_eq!(human_age(26 * 3600 + 120), "1 d 2 h");
    assert_eq!(human_age(-5), "0 s");
}

/// The issue's defect: a streamer whose uploads to one repository failed looked healthy
/// (only `last_error`, as a warning, without the repository).
#[test]
fn a_running_streamer_failing_to_upload_to_a_repository_is_unhealthy_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let status = |repos: &str| {
        std::fs::write(
            dir.path().join("status.json"),
            format!(r#"{{"server_uuid": "u1", "lag_seconds": 95.0, "last_error": "s3://b/p: connection refused", "repos": {repos}}}"#),
        )
        .expect("write status.json");
    };
    status(
        r#"[{"repo": "/local", "upload_lag_seconds": 0.4, "pending_bytes": 0, "last_error": null},
            {"repo": "s3://b/p", "upload_lag_seconds": 95.0, "pending_bytes": 31337,
             "last_error": "s3://b/p: connection refused", "last_error_time": "2026-01-01T00:01:35Z",
             "failing_since": "2026-01-01T00:00:10Z"}]"#,
    );
    let now = Utc::now();
    let streamer = spool::read(dir.path(), now).expect("read spool");
    let opts = options(1150);
    let r = judge(&copies(), Some(streamer), &opts);
    assert_eq!(r.verdict, Verdict::Unhealthy, "{:#?}", r.problems);
    assert_eq!(
        critical(&r),
        [(ProblemCode::UploadFailing, Some("s3://b/p"))]
    );
    let p = &r.problems[0];
    assert_says(p, "connection refused");
    assert_says(p, "31337 bytes");
    // The same error is not said twice as the streamer's own.
    assert!(
        !r.problems
            .iter()
            .any(|p| p.code == ProblemCode::StreamerError),
        "{:#?}",
        r.problems
    );
    // Once an upload succeeds the streamer clears the error: healthy again.
    status(
        r#"[{"repo": "s3://b/p", "upload_lag_seconds": 0.2, "pending_bytes": 0, "last_error": null}]"#,
    );
    let streamer = spool::read(dir.path(), now).expect("read spool");
    let r = judge(&copies(), Some(streamer), &opts);
    assert!(critical(&r).is_empty(), "{:#?}", r.problems);
}
