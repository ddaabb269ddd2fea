//! The fault matrix's seed-replica table (see `faults.rs`): a logical seeding killed while it
//! loads, after it loaded, and after it attached the replica; the same command run again must
//! finish the replica, caught up with the source and equal to it.

use crate::faults::{Dice, Row, cases, env_with, killed_at, row, traced};
use crate::seed::converge;
use crate::support::load;
use crate::support::{Scratch, TestServer, myvault, myvault_env};

const SEED: &[Row] = &[
    row("load", "restore-chunk-loaded", true),
    row("load settings", "restore-before-put-back", false),
    row("loaded", "seed-after-load", true),
    // Fixed: a rerun found the channel configured, took it as running, and failed on its
    // stopped threads (the random kill found it).
    row("attached, not started", "seed-attach-before-start", true),
    row("attached", "seed-after-attach", true),
];

/// A source with a logical snapshot and transactions after it, and an empty server to seed.
struct Seeding {
    src: TestServer,
    replica: TestServer,
    _dir: Scratch,
    repo: String,
    env: Vec<(String, String)>,
}

impl Seeding {
    fn new(rows: u32) -> Seeding {
        let src = crate::restore_resume::fast_server();
        load::prepare(&src, "sb", 2, rows);
        src.add_replication_user();
        let dir = Scratch::new("fm-seed");
        let repo = dir.join("repo").to_str().unwrap().to_string();
        myvault(&["init", "--repo", &repo]).expect_code(0);
        myvault(&["backup", "--repo", &repo, "--source", &src.url()]).expect_code(0);
        // Transactions after the snapshot: the replica must fetch them from the source.
        src.sql(
            "CREATE TABLE sb.later (id INT PRIMARY KEY);\nINSERT INTO sb.later VALUES (1), (2)",
        );
        Seeding {
            src,
            replica: crate::restore_resume::fast_server(),
            _dir: dir,
            repo,
            env: vec![(
                "MYVAULT_REPLICATION_PASSWORD".to_string(),
                "Repl-1".to_string(),
            )],
        }
    }

    /// `seed-replica` of the empty server, waiting until it has caught up and verified.
    fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = ["seed-replica", "--source", &self.src.url(), "--repo"]
            .map(String::from)
            .to_vec();
        args.push(self.repo.clone());
        args.extend(["--target".into(), self.replica.url()]);
        args.extend(["--replication-user", "repl", "--wait", "120", "--json"].map(String::from));
        args
    }

    /// Makes the replica a fresh, empty server again: no channel, data, accounts or GTIDs.
    fn reset_replica(&self) {
        self.replica.sql(
            "STOP REPLICA;\nRESET REPLICA ALL;\nSET GLOBAL super_read_only = OFF;\nSET GLOBAL read_only = OFF",
        );
        crate::restore_resume::reset_target(&self.replica);
    }

    /// Runs the seeding again after `case`'s kill: it completes, and the replica converges to
    /// the source (checksums, GTIDs, both replication threads running, read-only).
    fn rerun_converges(&self, args: &[&str], case: &str) -> serde_json::Value {
        let rerun = myvault_env(args, &env_with(&self.env, &[]));
        assert_eq!(rerun.code, 0, "{case}: the rerun failed:\n{}", rerun.stderr);
        let report = rerun.json();
        assert!(
            report["caught_up_seconds"].is_number() && report["verified"].is_object(),
            "{case}: {report}"
        );
        converge(&self.src, &self.replica, case);
        assert_eq!(
            load::checksums(&self.replica, "sb"),
            load::checksums(&self.src, "sb"),
            "{case}"
        );
        report
    }
}

/// seed-replica from a logical snapshot, killed at each failpoint and at a random moment:
/// run again, it completes and the replica converges to the source.
#[test]
fn fault_matrix_seed_replica() {
    let mut dice = Dice::new("seed-replica");
    let s = Seeding::new(3_000);
    let args = s.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_, hits, took) = traced(&args, &s.env, SEED);
    for c in cases(&mut dice, "seed-replica", SEED, &hits) {
        s.reset_replica();
        c.kill(&args, &s.env, &mut dice, took);
        s.rerun_converges(&args, &c.name);
    }
}

/// Found by the fault matrix: a logical seeding killed after its load could not be run again
/// ("the target is not empty ... pass --force", which would load it all over again), nor one
/// killed after it attached the replica ("already has replication configured"). The rerun
/// now sees what the killed run did (the snapshot's GTIDs; a channel to this source and no
/// transactions of the replica's own) and goes on from there.
#[test]
fn a_seeding_killed_after_loading_or_attaching_is_finished_by_running_it_again() {
    let s = Seeding::new(1_000);
    let args = s.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    for point in ["seed-after-load", "seed-after-attach"] {
        s.reset_replica();
        killed_at(&args, &s.env, point, 1, point);
        let report = s.rerun_converges(&args, point);
        assert!(
            report["plan"]["steps"]
                .to_string()
                .contains("an earlier seeding"),
            "{point}: the plan says what it skips: {report}"
        );
    }
}
