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

/// Issue 18, item 1: prune deleted the base of a delta that no kept snapshot needed but that
/// shared a kept pack, and left the delta indexed; a later backup of the same content reused
/// it ("ok", exit 0) and could not be restored (exit 8). The sequence: a 1,500-row
/// table as v1, v2 (one row changed: a delta against v1), v3 (every row new);
/// `prune --keep-last 1`; the table put back to exactly v2 and backed up again. What makes
/// the delta share a kept pack: 1 MiB packs (v1's first pack holds only the chunk the delta
/// is based on) and a table created in v2 that v3 keeps (v2's pack is needed).
#[test]
fn prune_never_orphans_a_delta_and_a_backup_of_content_that_comes_back_restores() {
    let src = TestServer::mysql97();
    // Rows of ~4 KiB that share nothing: about 6 MiB in a few chunks and packs.
    let wide: Vec<String> = (0..30)
        .map(|i| format!("SHA2(CONCAT(n, '.{i}'), 512)"))
        .collect();
    src.sql(&format!(
        "CREATE DATABASE shop;\n\
         CREATE TABLE shop.items (id INT PRIMARY KEY, k INT NOT NULL, c TEXT NOT NULL);\n\
         USE shop;\n\
         SET SESSION cte_max_recursion_depth = 2000;\n\
         INSERT INTO shop.items WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < 1500) \
         SELECT n, n * 7, CONCAT_WS('-', {}) FROM seq",
        wide.join(", ")
    ));
    let dir = Scratch::new("prune-orphan");
    let repo = dir.join("repo").to_str().unwrap().to_string();
    myvault(&["init", "--repo", &repo, "--pack-size", "1048576"]).expect_code(0);
    let backup = || {
        let args = [
            "backup",
            "--repo",
            &repo,
            "--source",
            &src.url(),
            "--jobs",
            "1",
            "--json",
        ];
        let run = myvault(&args);
        run.expect_code(0);
        run.json()["snapshot"].as_str().unwrap().to_string()
    };
    backup();
    src.sql(
        "UPDATE shop.items SET k = k + 1 WHERE id = 7;\n\
         CREATE TABLE shop.settings (name VARCHAR(40) PRIMARY KEY, value VARCHAR(200));\n\
         INSERT INTO shop.settings VALUES ('currency', 'EUR'), ('theme', 'dark')",
    );
    let v2 = load::checksums(&src, "shop");
    backup();
    src.sql("UPDATE shop.items SET c = REVERSE(c)");
    backup();
    myvault(&["prune", "--repo", &repo, "--keep-last", "1"]).expect_code(0);
    myvault(&["verify", "--repo", &repo]).expect_code(0);

    src.sql("UPDATE shop.items SET c = REVERSE(c)");
    assert_eq!(load::checksums(&src, "shop"), v2, "the table is v2 again");
    let again = backup();
    myvault(&["verify", "--repo", &repo]).expect_code(0);
    let dst = TestServer::mysql97();
    let args = [
        "restore",
        "--repo",
        &repo,
        "--snapshot",
        &again,
        "--target",
        &dst.url(),
    ];
    myvault(&args).expect_code(0);
    assert_eq!(load::checksums(&dst, "shop"), v2);
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

/// Issue 20, item 4: five snapshots of a 20,000-row table, 1% of its rows (one key range)
/// rewritten between each, in 1 MiB packs. `prune --keep-last 1` without repacking
/// (`--max-unused unlimited`) keeps every pack a kept blob is in; with `--max-unused 0%` it
/// moves those blobs into new packs and frees the rest. The plan says what the run frees, to
/// the byte, and the repository verifies and restores afterwards.
#[test]
fn prune_repacks_what_snapshots_changing_one_percent_each_left_unused() {
    let src = crate::restore_resume::fast_server();
    load::prepare(&src, "sb", 1, 20_000);
    let dir = Scratch::new("prune-repack");
    let template = dir.join("template");
    let template_repo = template.to_str().unwrap();
    crate::faults::small_pack_repo(template_repo, &Vec::new());
    for round in 0..5 {
        if round > 0 {
            src.sql(&format!(
                "UPDATE sb.sbtest1 SET c = LEFT(SHA2(CONCAT(c, RAND()), 512), 120) WHERE id > {} AND id <= {}",
                round * 1000,
                round * 1000 + 200
            ));
        }
        crate::logical::backup(template_repo, &src.url(), &["--jobs", "1"]).expect_code(0);
    }
    let sums = load::checksums(&src, "sb");
    let packs = |repo: &str| walk(&std::path::Path::new(repo).join("packs")).0;
    let prune = |repo: &str, max_unused: &str, plan: bool| {
        let mut args = vec![
            "prune",
            "--repo",
            repo,
            "--keep-last",
            "1",
            "--max-unused",
            max_unused,
            "--json",
        ];
        if plan {
            args.push("--plan");
        }
        let run = myvault(&args);
        run.expect_code(0);
        run.json()
    };
    let before = packs(template_repo);
    let mut after = Vec::new();
    for max_unused in ["unlimited", "0%"] {
        let case = dir.join(max_unused.trim_end_matches('%'));
        crate::faults::copy_dir(&template, &case);
        let repo = case.to_str().unwrap();
        let plan = prune(repo, max_unused, true);
        assert_eq!(packs(repo), before, "--plan writes nothing");
        let run = prune(repo, max_unused, false);
        for field in ["packs", "bytes", "blobs", "written_bytes", "freed_bytes"] {
            assert_eq!(plan["repack"][field], run["repack"][field], "{field}");
        }
        let freed = ["pack_bytes", "orphan_bytes"]
            .iter()
            .map(|f| run[f].as_u64().unwrap())
            .sum::<u64>()
            + run["repack"]["freed_bytes"].as_u64().unwrap();
        assert_eq!(before - packs(repo), freed, "{max_unused}: {run}");
        myvault(&["verify", "--repo", repo]).expect_code(0);
        after.push((packs(repo), run));
    }
    let (kept_whole, unrepacked) = &after[0];
    let (repacked_bytes, repacked) = &after[1];
    assert!(
        unrepacked["repack"]["packs"].as_array().unwrap().is_empty()
            && unrepacked["unused_bytes_kept"].as_u64().unwrap() > 0,
        "{unrepacked}"
    );
    assert!(
        !repacked["repack"]["packs"].as_array().unwrap().is_empty(),
        "{repacked}"
    );
    assert_eq!(repacked["unused_bytes_kept"], 0);
    assert!(repacked_bytes < kept_whole);
    eprintln!(
        "prune of 5 snapshots changing 1% each, keep-last 1: packs {before} bytes before, \
         {kept_whole} without repacking, {repacked_bytes} with --max-unused 0% ({} packs \
         repacked)",
        repacked["repack"]["packs"].as_array().unwrap().len()
    );
    let dst = crate::restore_resume::fast_server();
    let repo = dir.join("0");
    myvault(&[
        "restore",
        "--repo",
        repo.to_str().unwrap(),
        "--target",
        &dst.url(),
    ])
    .expect_code(0);
    assert_eq!(load::checksums(&dst, "sb"), sums);
}
