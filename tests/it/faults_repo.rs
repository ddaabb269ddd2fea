//! The fault matrix's prune and copy tables (see `faults.rs`): both only rearrange a
//! repository, so a kill must never cost a snapshot or an archived binlog that was listed.
//! Prune repacks (`--max-unused 0%`), so its table has a row for each step of that too: old
//! pack read, new pack written, new index written, old index and old packs deleted.

use std::collections::BTreeMap;

use crate::faults::{
    Dice, Row, Sums, assert_restores, assert_verified, cases, copy_dir, row, small_pack_repo,
    snapshot_ids, sums, traced,
};
use crate::restore_resume::fast_server;
use crate::stream::assert_archive_matches;
use crate::support::streamer::drain;
use crate::support::{Scratch, TestServer, load, myvault};

const PRUNE: &[Row] = &[
    row("prune mark written", "store-after-put-pruned", false),
    row(
        "snapshot manifests deleted",
        "store-after-delete-snapshots",
        true,
    ),
    row(
        "binlog manifests deleted",
        "store-after-delete-binlog",
        false,
    ),
    row("repack: old pack read", "prune-repack-after-read", true),
    row("repack: new pack written", "store-after-put-packs", true),
    row("new index written", "store-after-put-index", true),
    row("old index deleted", "store-after-delete-index", false),
    row("packs deleted", "store-after-delete-packs", true),
];

const COPY: &[Row] = &[
    row("pack copied", "store-after-put-packs", true),
    row("index written", "store-after-put-index", true),
    row(
        "snapshot manifest copied",
        "store-after-create-snapshots",
        true,
    ),
    row("binlog manifest copied", "store-after-create-binlog", false),
];

/// A repository with four logical snapshots of a changing source (rows edited in place, so
/// later snapshots hold delta blobs on earlier ones; a table rewritten; rows added), and the
/// source's binary log archived across several files. Returns the snapshots' ids, oldest
/// first, and what each restores to.
fn history(src: &TestServer, repo: &str, dir: &Scratch) -> (Vec<String>, BTreeMap<String, Sums>) {
    let no_env = Vec::new();
    small_pack_repo(repo, &no_env);
    let spool = dir.join("spool");
    drain(src, repo, &spool);
    load::prepare(src, "sb", 2, 2_000);
    src.sql(
        "SET SESSION cte_max_recursion_depth = 10000;\n\
         CREATE TABLE sb.d (id INT PRIMARY KEY, v VARCHAR(100));\n\
         INSERT INTO sb.d WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1500) SELECT i, SHA2(i, 256) FROM n",
    );
    let steps = [
        "UPDATE sb.d SET v = 'changed' WHERE id = 700",
        "UPDATE sb.d SET v = SHA2(CONCAT('new', id), 256)",
        "INSERT INTO sb.sbtest1 (k, c, pad) SELECT k, c, pad FROM sb.sbtest2 WHERE id <= 500",
    ];
    let (mut ids, mut snapshots) = (Vec::new(), BTreeMap::new());
    for step in std::iter::once("DO 0").chain(steps) {
        src.sql(&format!("{step};\nFLUSH BINARY LOGS"));
        let run = crate::logical::backup(repo, &src.url(), &["--json"]);
        run.expect_code(0);
        let id = run.json()["snapshot"].as_str().unwrap().to_string();
        snapshots.insert(id.clone(), sums(src, &["sb"]));
        ids.push(id);
    }
    drain(src, repo, &spool);
    (ids, snapshots)
}

/// Prune and copy: killed at each failpoint and at a random moment, the repository verifies
/// clean, every snapshot it still lists restores to what was backed up, its archived binlogs
/// are still the server's bytes, and the rerun completes. After prune's rerun exactly the kept
/// snapshots are listed and a new backup (deduplicated against what prune left) restores;
/// after copy's rerun the destination has every snapshot of the source.
#[test]
fn fault_matrix_prune_and_copy() {
    let mut dice = Dice::new("prune and copy");
    let no_env: Vec<(String, String)> = Vec::new();
    let src = fast_server();
    let target = fast_server();
    let dir = Scratch::new("fm-repo");
    let template = dir.join("template");
    let template_repo = template.to_str().unwrap();
    let (ids, snapshots) = history(&src, template_repo, &dir);
    assert_eq!(snapshot_ids(template_repo, &no_env), ids);
    let kept = &ids[ids.len() - 2..];
    let case_path = dir.join("case");
    let repo = case_path.to_str().unwrap();

    // Prune keeps the last two, and repacks every partly used pack.
    let args = [
        "prune",
        "--repo",
        repo,
        "--keep-last",
        "2",
        "--max-unused",
        "0%",
        "--json",
    ];
    copy_dir(&template, &case_path);
    let (run, hits, took) = traced(&args, &no_env, PRUNE);
    assert!(
        !run.json()["repack"]["packs"].as_array().unwrap().is_empty(),
        "the history leaves partly used packs to repack: {}",
        run.stdout
    );
    for c in cases(&mut dice, "prune", PRUNE, &hits) {
        let case = &c.name;
        copy_dir(&template, &case_path);
        c.kill(&args, &no_env, &mut dice, took);
        assert_verified(repo, &no_env, case);
        for id in snapshot_ids(repo, &no_env) {
            assert_restores(repo, &no_env, &id, &target, &snapshots[&id], case);
        }
        assert_archive_matches(&src, repo, &Scratch::new("fm-fetch"));
        let rerun = myvault(&args);
        assert_eq!(rerun.code, 0, "{case}: the rerun failed:\n{}", rerun.stderr);
        assert_verified(repo, &no_env, case);
        assert_eq!(snapshot_ids(repo, &no_env), kept, "{case}");
        assert_archive_matches(&src, repo, &Scratch::new("fm-fetch"));
        let after = crate::logical::backup(repo, &src.url(), &["--json"]);
        after.expect_code(0);
        let id = after.json()["snapshot"].as_str().unwrap().to_string();
        assert_restores(repo, &no_env, &id, &target, &snapshots[&ids[3]], case);
    }

    // Copy into an empty repository.
    let empty = dir.join("empty");
    small_pack_repo(empty.to_str().unwrap(), &no_env);
    let args = ["copy", "--from", template_repo, "--to", repo, "--json"];
    copy_dir(&empty, &case_path);
    let (_, hits, took) = traced(&args, &no_env, COPY);
    for c in cases(&mut dice, "copy", COPY, &hits) {
        let case = &c.name;
        copy_dir(&empty, &case_path);
        c.kill(&args, &no_env, &mut dice, took);
        assert_verified(repo, &no_env, case);
        for id in snapshot_ids(repo, &no_env) {
            assert_restores(repo, &no_env, &id, &target, &snapshots[&id], case);
        }
        let rerun = myvault(&args);
        assert_eq!(rerun.code, 0, "{case}: the rerun failed:\n{}", rerun.stderr);
        assert_verified(repo, &no_env, case);
        assert_eq!(snapshot_ids(repo, &no_env), ids, "{case}");
        let newest = &ids[3];
        assert_restores(repo, &no_env, newest, &target, &snapshots[newest], case);
        assert_archive_matches(&src, repo, &Scratch::new("fm-fetch"));
    }
    assert_verified(template_repo, &no_env, "the copies' source");
}

/// Found by the fault matrix: copy wrote the source's index files one by one, and a copy
/// killed between two of them left the destination indexing a delta blob whose base it did
/// not index: `verify` failed (exit 8) until copy ran again, and a backup meanwhile would
/// have deduplicated against the unreadable blob. Copy now writes one index file for all it
/// copied. Killed after each of its index writes, the destination verifies clean.
#[test]
fn a_copy_killed_between_index_files_never_indexes_a_delta_without_its_base() {
    let no_env: Vec<(String, String)> = Vec::new();
    let src = fast_server();
    let dir = Scratch::new("fm-copy-index");
    let template = dir.join("template");
    let template_repo = template.to_str().unwrap();
    history(&src, template_repo, &dir);
    let (empty, case_path) = (dir.join("empty"), dir.join("case"));
    small_pack_repo(empty.to_str().unwrap(), &no_env);
    let repo = case_path.to_str().unwrap();
    let args = ["copy", "--from", template_repo, "--to", repo, "--json"];
    let index_written = [row("index written", "store-after-put-index", true)];
    copy_dir(&empty, &case_path);
    let (_, hits, _) = traced(&args, &no_env, &index_written);
    for n in 1..=hits["store-after-put-index"] {
        let case = format!("copy killed after index write {n}");
        copy_dir(&empty, &case_path);
        crate::faults::killed_at(&args, &no_env, "store-after-put-index", n, &case);
        assert_verified(repo, &no_env, &case);
    }
}
