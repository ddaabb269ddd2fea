//! Writing several repositories in one pass when one of them missed a backup.

use crate::support::{Scratch, failpoints, myvault, myvault_env};

/// A repository that missed a backup (down, or a partial success, exit 9) lacks chunks of the
/// parent snapshot, which is read from another repository. The next backup into both stored
/// each such chunk there as a delta against itself: "ok", and a snapshot that restores with
/// exit 8 from that repository. Found by the repository's model test.
#[test]
fn a_repository_that_missed_a_backup_restores_the_next_one() {
    let dir = Scratch::new("missed");
    let (a, b) = (dir.join("a"), dir.join("b"));
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    for repo in [a, b] {
        myvault(&["init", "--repo", repo]).expect_code(0);
    }
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    // Rows of a table dump: about 6 MiB, several chunks.
    let rows = |changed: u64| -> Vec<u8> {
        (1..=60_000u64)
            .flat_map(|id| {
                let k = if id == changed {
                    0
                } else {
                    id.wrapping_mul(2_654_435_761) % 999_983
                };
                let pad = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                format!("{id}\t{k}\t{pad:020}-{:020}-{:020}\n", pad >> 7, pad >> 13).into_bytes()
            })
            .collect()
    };
    let path = data.to_str().unwrap();
    std::fs::write(data.join("table.tsv"), rows(0)).unwrap();
    // B misses the first backup.
    myvault(&["backup", "--path", path, "--repo", a]).expect_code(0);
    // One row changed: every chunk but one is the parent's, which B does not have.
    let v2 = rows(17);
    std::fs::write(data.join("table.tsv"), &v2).unwrap();
    let run = myvault(&["backup", "--path", path, "--repo", a, "--repo", b, "--json"]);
    run.expect_code(0);
    let snapshot = run.json()["snapshot"].as_str().unwrap().to_string();
    myvault(&["verify", "--repo", b]).expect_code(0);
    let out = dir.join("out");
    let args = [
        "restore",
        "--repo",
        b,
        "--snapshot",
        &snapshot,
        "--dest",
        out.to_str().unwrap(),
    ];
    myvault(&args).expect_code(0);
    assert!(
        std::fs::read(out.join("table.tsv")).unwrap() == v2,
        "restored other bytes"
    );
}

/// `unlock` took the configuration's first repository only, so a stale lock left in the
/// second (a prune killed there) stayed until someone named it with `--repo`.
#[test]
fn unlock_over_a_config_with_two_repositories_clears_each() {
    let dir = Scratch::new("unlock-each");
    let (a, b) = (dir.join("a"), dir.join("b"));
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let cfg = dir.join("myvault.toml");
    std::fs::write(
        &cfg,
        format!("[[repository]]\nlocation = \"{a}\"\n\n[[repository]]\nlocation = \"{b}\"\n"),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    myvault(&["--config", cfg, "init"]).expect_code(0);
    // A prune killed while it holds each repository's lock leaves a stale lock in both.
    for repo in [a, b] {
        let killed = myvault_env(
            &["prune", "--repo", repo, "--keep-last", "1"],
            &[failpoints("prune-before-execute=abort(1)")],
        );
        assert_ne!(killed.code, 0, "{}", killed.stderr);
    }
    let run = myvault(&["--config", cfg, "unlock", "--json"]);
    run.expect_code(0);
    let doc = run.json();
    let entries = doc["repositories"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{doc}");
    for (entry, repo) in entries.iter().zip([a, b]) {
        assert_eq!(entry["repo"], repo);
        assert_eq!(entry["removed"].as_array().unwrap().len(), 1, "{doc}");
        assert!(entry["remaining"].as_array().unwrap().is_empty(), "{doc}");
    }
    // Both are free again: a prune of each runs.
    for repo in [a, b] {
        myvault(&["prune", "--repo", repo, "--keep-last", "1"]).expect_code(0);
    }
}
