//! `prune` against real MySQL 9.7 with an archive: the snapshots and binlog files the policy
//! drops are gone, the space is freed, and point-in-time recovery from what is kept still ends
//! at the source's exact state, also when the streamer keeps archiving a write load meanwhile.

use std::time::Duration;

use crate::support::load::{self, Load};
use crate::support::streamer::Streamer;
use crate::support::{Scratch, TestServer, myvault};

#[test]
fn prune_drops_old_snapshots_and_binlogs_while_streaming_and_pitr_still_works() {
    let src = TestServer::mysql97();
    load::prepare(&src, "sb", 2, 4000);
    let dir = Scratch::new("prune");
    let repo = dir.join("repo").to_str().unwrap().to_string();
    let spool = dir.join("spool");
    myvault(&["init", "--repo", &repo]).expect_code(0);
    let catch_up = || {
        let mut s = Streamer::start(&src.url(), &repo, &spool, &["--until-caught-up"]);
        assert_eq!(s.wait(), 0, "{}", s.log_text());
    };
    for round in 1..=3 {
        myvault(&["backup", "--repo", &repo, "--source", &src.url()]).expect_code(0);
        src.sql(&format!(
            "UPDATE sb.sbtest1 SET k = k + {round} WHERE id % 7 = 0;\nFLUSH BINARY LOGS"
        ));
        catch_up();
    }
    let repo_bytes = || walk(std::path::Path::new(&repo)).0;
    let before = repo_bytes();

    myvault(&["prune", "--repo", &repo]).expect_code(2);
    let plan = myvault(&[
        "prune",
        "--repo",
        &repo,
        "--keep-last",
        "1",
        "--plan",
        "--json",
    ]);
    plan.expect_code(0);
    assert_eq!(
        plan.json()["snapshots_removed"].as_array().unwrap().len(),
        2
    );
    assert_eq!(repo_bytes(), before, "--plan removes nothing");

    // The streamer keeps running under write load while prune runs between its uploads.
    let mut live = Streamer::start(&src.url(), &repo, &spool, &[]);
    let load = Load::start(&src, "sb", 2, 4000, 2, 120);
    std::thread::sleep(Duration::from_secs(2));
    let run = myvault(&["prune", "--repo", &repo, "--keep-last", "1", "--json"]);
    std::thread::sleep(Duration::from_secs(2));
    load.stop();
    run.expect_code(0);
    let report = run.json();
    assert_eq!(report["snapshots_removed"].as_array().unwrap().len(), 2);
    assert_eq!(report["snapshots_kept"].as_array().unwrap().len(), 1);
    let removed: Vec<String> = report["binlog_files_removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().replace(' ', "/"))
        .collect();
    assert!(!removed.is_empty(), "{report}");
    src.sql("INSERT INTO sb.sbtest2 (k, c, pad) VALUES (1, 'after the prune', 'x')");
    std::thread::sleep(Duration::from_millis(1100));
    // An instant after the last commit that the archive will cover.
    let now = src
        .value("SELECT DATE_FORMAT(UTC_TIMESTAMP(6), '%Y-%m-%dT%H:%i:%s.%fZ')")
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        live.running(),
        "the streamer survived the prune: {}",
        live.log_text()
    );
    live.terminate();
    catch_up();

    assert!(
        report["pack_bytes"].as_u64().unwrap() > 0,
        "packs of the removed snapshots and binlogs are freed: {report}"
    );
    myvault(&["verify", "--repo", &repo]).expect_code(0);
    for file in &removed {
        let dir = std::path::Path::new(&repo).join("binlog").join(file);
        let files: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(files.is_empty(), "{file} came back: {files:?}");
    }
    // From the kept snapshot, through the kept binlogs, to the source's state now.
    let dst = TestServer::mysql97();
    myvault(&[
        "restore",
        "--repo",
        &repo,
        "--target",
        &dst.url(),
        "--to-time",
        &now,
    ])
    .expect_code(0);
    assert_eq!(load::checksums(&src, "sb"), load::checksums(&dst, "sb"));
    assert_eq!(dst.gtid_executed(), src.gtid_executed());
}

/// Bytes and number of files under `p`.
fn walk(p: &std::path::Path) -> (u64, usize) {
    let Ok(entries) = std::fs::read_dir(p) else {
        return (0, 0);
    };
    entries
        .flatten()
        .fold((0, 0), |(bytes, files), e| match e.metadata() {
            Ok(m) if m.is_dir() => {
                let (b, f) = walk(&e.path());
                (bytes + b, files + f)
            }
            Ok(m) => (bytes + m.len(), files + 1),
            Err(_) => (bytes, files),
        })
}
