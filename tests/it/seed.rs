//! `myvault seed-replica` against real MySQL 9.7: while sysbench writes to one primary, three
//! replicas are seeded (from a logical snapshot, from a clone snapshot restored as a data
//! directory, and by a direct clone); all converge with their own identities and equal data.
//! And the checks that refuse a seeding before anything is changed.

use std::time::{Duration, Instant};

use crate::support::load::{self, Load};
use crate::support::{Background, Flavor, Run, Scratch, TestServer, myvault, myvault_env, testbed};

const REPL_ENV: &[(&str, &str)] = &[("MYVAULT_REPLICATION_PASSWORD", "Repl-1")];

fn repl_args() -> [&'static str; 2] {
    ["--replication-user", "repl"]
}

fn primary() -> TestServer {
    let src = TestServer::mysql97();
    load::prepare(&src, "sb", 4, 5000);
    src.add_replication_user();
    src
}

fn assert_seeded(run: &Run, what: &str) {
    run.expect_code(0);
    let j = run.json();
    assert!(
        j["caught_up_seconds"].is_number(),
        "{what}: no catch-up reported: {j}"
    );
    assert!(
        j["verified"]["tables"].as_u64().unwrap_or(0) >= 4,
        "{what}: no verification: {j}"
    );
}

/// Waits until the replica has everything the (now idle) source has.
pub(crate) fn converge(src: &TestServer, replica: &TestServer, what: &str) {
    let goal = src.gtid_executed();
    let deadline = Instant::now() + Duration::from_secs(180);
    while !goal.is_subset(&replica.gtid_executed()) {
        assert!(
            Instant::now() < deadline,
            "{what} did not converge to {goal}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for table in [
        "replication_connection_status",
        "replication_applier_status",
    ] {
        assert_eq!(
            replica
                .value(&format!(
                    "SELECT SERVICE_STATE FROM performance_schema.{table}"
                ))
                .as_deref(),
            Some("ON"),
            "{what}: {table}"
        );
    }
    assert_eq!(
        replica.value(
            "SELECT COUNT(*) FROM performance_schema.replication_applier_status_by_worker WHERE LAST_ERROR_NUMBER <> 0"
        ),
        Some("0".into()),
        "{what}: applier errors"
    );
    assert_eq!(
        replica.value("SELECT @@GLOBAL.super_read_only").as_deref(),
        Some("1"),
        "{what}: super_read_only"
    );
}

/// Runs `seed-replica --clone` (`args`) on `recipient`, which is not supervised: it stops
/// after the clone, and the test starts it again, as systemd would.
fn seed_by_clone(args: &[&str], recipient: &mut TestServer) -> Run {
    let mut seeding = Background::start(args, REPL_ENV);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        assert!(
            Instant::now() < deadline,
            "the clone recipient never stopped"
        );
        if !seeding.running() {
            panic!("seed-replica --clone ended early: {:?}", seeding.finish());
        }
        if recipient
            .server
            .wait_exit(Duration::from_millis(500))
            .is_ok()
        {
            recipient
                .server
                .restart(Duration::from_secs(120))
                .expect("restart the clone recipient");
            break;
        }
    }
    seeding.finish()
}

#[test]
fn three_replicas_seeded_under_load_converge_with_their_own_identities() {
    let src = primary();
    let src_url = src.url();
    let dir = Scratch::new("seed");
    let repo = dir.join("repo").to_str().unwrap().to_string();
    myvault(&["init", "--repo", &repo]).expect_code(0);
    let load = Load::start(&src, "sb", 4, 5000, 2, 900);
    std::thread::sleep(Duration::from_secs(1));
    myvault(&["backup", "--repo", &repo, "--source", &src.url()]).expect_code(0);
    let mysqld = testbed().path("MYVAULT_MYSQLD_97");
    myvault(&[
        "backup",
        "--method",
        "clone",
        "--repo",
        &repo,
        "--source",
        &src.url(),
        "--mysqld",
        mysqld.to_str().unwrap(),
    ])
    .expect_code(0);
    std::thread::sleep(Duration::from_secs(2));
    let wait = ["--wait", "300", "--json"];

    // 1. From the logical snapshot, into a running empty server. The load's settings (a
    //    larger redo log, local_infile) stay while the replica catches up, and are put back.
    let logical = TestServer::builder(Flavor::Mysql97)
        .option("--local-infile=0")
        .start();
    let settings = "SELECT CONCAT(@@GLOBAL.innodb_redo_log_capacity, ' ', @@GLOBAL.local_infile)";
    let before = logical.value(settings);
    let mut args = vec!["seed-replica", "--source", &src_url, "--repo", &repo];
    let target = logical.url();
    args.extend(["--target", &target]);
    args.extend(repl_args());
    args.extend(wait);
    let seeded = myvault_env(&args, REPL_ENV);
    assert_seeded(&seeded, "logical");
    assert_eq!(
        logical.value(settings),
        before,
        "logical: settings put back"
    );
    assert!(
        seeded.json().get("warnings").is_none(),
        "logical: {}",
        seeded.json()
    );

    // 2. From the clone snapshot, restored as a data directory; the test plays the operator
    //    who starts mysqld on it when told to.
    let port = myvault::server::free_port().unwrap();
    let restored_dir = dir.join("replica-datadir");
    let marker = dir.join("start-me");
    let start = format!("touch {}", marker.display());
    let target = format!("mysql://root@127.0.0.1:{port}");
    let mut args = vec!["seed-replica", "--source", &src_url, "--repo", &repo];
    let restored_arg = restored_dir.to_str().unwrap().to_string();
    args.extend(["--datadir", &restored_arg, "--start-command", &start]);
    args.extend(["--target", &target]);
    args.extend(repl_args());
    args.extend(wait);
    let mut seeding = Background::start(&args, REPL_ENV);
    let deadline = Instant::now() + Duration::from_secs(300);
    while !marker.exists() {
        assert!(seeding.running(), "{:?}", seeding.finish());
        assert!(Instant::now() < deadline, "the datadir was not restored");
        std::thread::sleep(Duration::from_millis(100));
    }
    let moved = restored_dir.clone();
    let physical = TestServer::builder(Flavor::Mysql97)
        .port(port)
        .datadir_from(move |d| std::fs::rename(&moved, d).expect("move the restored datadir"))
        .start();
    assert_seeded(&seeding.finish(), "clone snapshot");

    // 3. By a direct clone: the recipient is not supervised, so it stops after the clone
    //    and the test starts it again, as systemd would.
    let mut cloned = TestServer::mysql97();
    let target = cloned.url();
    let mut args = vec!["seed-replica", "--source", &src_url, "--clone"];
    args.extend(["--target", &target]);
    args.extend(repl_args());
    args.extend(wait);
    assert_seeded(&seed_by_clone(&args, &mut cloned), "direct clone");

    load.stop();
    load::wait_for_idle(&src, "sb");
    let replicas = [
        ("logical", &logical),
        ("clone snapshot", &physical),
        ("direct clone", &cloned),
    ];
    let sums = load::checksums(&src, "sb");
    let mut uuids = vec![src.value("SELECT @@server_uuid").unwrap()];
    let mut ids = vec![src.value("SELECT @@server_id").unwrap()];
    for (what, r) in replicas {
        converge(&src, r, what);
        assert_eq!(load::checksums(r, "sb"), sums, "{what}: data");
        uuids.push(r.value("SELECT @@server_uuid").unwrap());
        ids.push(r.value("SELECT @@server_id").unwrap());
    }
    let (mut u, mut i) = (uuids.clone(), ids.clone());
    u.sort();
    u.dedup();
    i.sort();
    i.dedup();
    assert_eq!(u.len(), 4, "server_uuids not distinct: {uuids:?}");
    assert_eq!(i.len(), 4, "server_ids not distinct: {ids:?}");
}

#[test]
fn seeding_is_refused_before_anything_changes() {
    let src = primary();
    let src_url = src.url();
    let dir = Scratch::new("seed-refuse");
    let repo = dir.join("repo").to_str().unwrap().to_string();
    myvault(&["init", "--repo", &repo]).expect_code(0);
    myvault(&["backup", "--repo", &repo, "--source", &src.url()]).expect_code(0);

    // The same server_id as the source: refused, naming a free one.
    let src_id = src.value("SELECT @@server_id").unwrap();
    let twin = TestServer::builder(Flavor::Mysql97)
        .option(&format!("--server-id={src_id}"))
        .start();
    let mut args = vec!["seed-replica", "--source", &src_url, "--repo", &repo];
    let twin_url = twin.url();
    args.extend(["--target", &twin_url]);
    args.extend(repl_args());
    let run = myvault_env(&args, REPL_ENV);
    run.expect_code(12);
    assert!(
        run.stderr.contains("SET PERSIST server_id"),
        "{}",
        run.stderr
    );
    assert_eq!(
        twin.value("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'sb'")
            .as_deref(),
        Some("0")
    );

    // A replication account that may not replicate.
    src.sql("CREATE USER 'weak'@'%' IDENTIFIED BY 'Weak-1'");
    let target = TestServer::mysql97();
    let target_url = target.url();
    let run = myvault_env(
        &[
            "seed-replica",
            "--source",
            &src.url(),
            "--repo",
            &repo,
            "--target",
            &target_url,
            "--replication-user",
            "weak",
        ],
        &[("MYVAULT_REPLICATION_PASSWORD", "Weak-1")],
    );
    run.expect_code(4);
    assert!(run.stderr.contains("REPLICATION SLAVE"), "{}", run.stderr);

    // --plan checks and prints, and changes nothing.
    let mut args = vec!["seed-replica", "--source", &src_url, "--repo", &repo];
    args.extend(["--target", &target_url, "--plan"]);
    args.extend(repl_args());
    let run = myvault_env(&args, REPL_ENV);
    run.expect_code(0);
    assert!(
        run.stdout.contains("CHANGE REPLICATION SOURCE"),
        "{}",
        run.stdout
    );
    assert_eq!(
        target
            .value("SELECT COUNT(*) FROM performance_schema.replication_connection_configuration")
            .as_deref(),
        Some("0")
    );

    // Binlogs the snapshot would need purged on the source: refused with the lost GTIDs.
    src.sql("CREATE DATABASE later;\nCREATE TABLE later.t (id INT PRIMARY KEY);\nINSERT INTO later.t VALUES (1);\nFLUSH BINARY LOGS");
    let current = src.current_binlog();
    src.sql(&format!("PURGE BINARY LOGS TO '{current}'"));
    let without_plan: Vec<&str> = args.iter().copied().filter(|a| *a != "--plan").collect();
    let run = myvault_env(&without_plan, REPL_ENV);
    run.expect_code(11);
    assert!(run.stderr.contains("purged"), "{}", run.stderr);

    // A non-empty target.
    target.sql("CREATE DATABASE mine");
    let run = myvault_env(
        &[
            "seed-replica",
            "--source",
            &src.url(),
            "--clone",
            "--target",
            &target_url,
            "--replication-user",
            "repl",
        ],
        REPL_ENV,
    );
    run.expect_code(12);
    assert!(run.stderr.contains("not empty"), "{}", run.stderr);
}

#[test]
fn an_existing_replica_is_seeded_again_with_force() {
    let src = primary();
    let src_url = src.url();
    let dir = Scratch::new("reseed");
    let repo = dir.join("repo").to_str().unwrap().to_string();
    myvault(&["init", "--repo", &repo]).expect_code(0);
    myvault(&["backup", "--repo", &repo, "--source", &src_url]).expect_code(0);
    let mut replica = TestServer::mysql97();
    let target = replica.url();
    let mut args = vec!["seed-replica", "--source", &src_url, "--repo", &repo];
    args.extend(["--target", &target, "--wait", "300", "--json"]);
    args.extend(repl_args());
    assert_seeded(&myvault_env(&args, REPL_ENV), "first seeding");

    // The replica drifts (someone wrote to it around super_read_only), and the source moves on.
    replica.sql(
        "SET GLOBAL super_read_only = OFF;\nCREATE DATABASE drift;\nSET GLOBAL super_read_only = ON",
    );
    src.sql(
        "CREATE TABLE sb.after_first (id INT PRIMARY KEY);\nINSERT INTO sb.after_first VALUES (1), (2)",
    );
    myvault(&["backup", "--repo", &repo, "--source", &src_url]).expect_code(0);

    // Without --force a running replica is refused, untouched.
    let run = myvault_env(&args, REPL_ENV);
    run.expect_code(12);
    assert_eq!(
        replica.value("SELECT @@GLOBAL.super_read_only").as_deref(),
        Some("1")
    );

    // The plan names what --force undoes, and changes nothing.
    args.push("--force");
    let mut plan = args.clone();
    plan.retain(|a| !["--wait", "300", "--json"].contains(a));
    plan.push("--plan");
    let run = myvault_env(&plan, REPL_ENV);
    run.expect_code(0);
    for step in [
        "RESET REPLICA ALL",
        "super_read_only = OFF",
        "RESET BINARY LOGS AND GTIDS",
    ] {
        assert!(
            run.stdout.contains(step),
            "{step} not in the plan: {}",
            run.stdout
        );
    }
    assert_eq!(
        replica.value("SELECT @@GLOBAL.super_read_only").as_deref(),
        Some("1")
    );

    // With --force it is rebuilt from the new snapshot: read-only again and caught up.
    assert_seeded(&myvault_env(&args, REPL_ENV), "seeding again");
    converge(&src, &replica, "the re-seeded replica");
    assert_eq!(
        replica
            .value("SELECT COUNT(*) FROM sb.after_first")
            .as_deref(),
        Some("2")
    );

    // Rebuilt again by a direct clone: super_read_only (which refuses a clone) is lifted and
    // the channel reset first; the clone replaces everything, the drift included.
    let drift = "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'drift'";
    assert_eq!(replica.value(drift).as_deref(), Some("1"));
    let mut args = vec!["seed-replica", "--source", &src_url, "--clone", "--force"];
    args.extend(["--target", &target, "--wait", "300", "--json"]);
    args.extend(repl_args());
    assert_seeded(
        &seed_by_clone(&args, &mut replica),
        "seeding again by a clone",
    );
    converge(&src, &replica, "the re-cloned replica");
    assert_eq!(replica.value(drift).as_deref(), Some("0"));
}
