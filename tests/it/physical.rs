//! Physical snapshots against real MySQL 9.7: a clone taken under load carries coordinates
//! that PITR can start from exactly (proved against a replica stopped at the same GTIDs), a
//! cold copy of a stopped datadir, and `restore --datadir` into a new data directory.

use std::time::Duration;

use myvault::mysql::gtid::GtidSet;

use crate::support::load::{self, Load};
use crate::support::streamer::Streamer;
use crate::support::{Flavor, Scratch, TestServer, myvault, testbed};

fn mysqld() -> String {
    testbed()
        .path("MYVAULT_MYSQLD_97")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn clone_under_load_then_pitr_applies_exactly_the_transactions_after_it() {
    let src = TestServer::builder(Flavor::Mysql97)
        .option("--max-binlog-size=1048576")
        .start();
    load::prepare(&src, "sb", 4, 5000);
    src.add_replication_user();
    let replica = TestServer::mysql97();
    replica.replicate_from(&src, "repl", "Repl-1");

    let dir = Scratch::new("physical");
    let repo = dir.join("repo").to_str().unwrap().to_string();
    myvault(&["init", "--repo", &repo]).expect_code(0);
    let spool = dir.join("spool");
    let mut streamer = Streamer::start(&src.url(), &repo, &spool, &[]);
    let load = Load::start(&src, "sb", 4, 5000, 2, 600);
    std::thread::sleep(Duration::from_secs(2));

    // Under load: a local clone's point is found from the clone itself; a remote clone
    // (a temporary recipient here, CLONE INSTANCE FROM) reports its own.
    let mut snaps = Vec::new();
    for mode in ["local", "remote"] {
        let mut args = vec!["backup", "--method", "clone", "--repo", &repo];
        let (url, mysqld) = (src.url(), mysqld());
        args.extend(["--source", &url, "--mysqld", &mysqld, "--json"]);
        // The remote clone records its tables' checksums; the local one does not.
        if mode == "remote" {
            args.extend(["--remote", "--table-checksums"]);
        }
        let backup = myvault(&args);
        backup.expect_code(0);
        let snap = backup.json();
        let snap_gtids = GtidSet::parse(snap["gtid_executed"].as_str().unwrap()).unwrap();
        assert!(
            !snap_gtids.is_empty(),
            "{mode}: the clone snapshot has no GTID set"
        );
        assert!(
            snap["binlog_file"]
                .as_str()
                .is_some_and(|f| f.starts_with("binlog.")),
            "{mode}: the clone snapshot has no binlog coordinates: {snap}"
        );
        snaps.push((
            mode,
            snap["snapshot"].as_str().unwrap().to_string(),
            snap_gtids,
        ));
        std::thread::sleep(Duration::from_secs(1));
    }
    std::thread::sleep(Duration::from_secs(3));
    let goal = src.gtid_executed();
    std::thread::sleep(Duration::from_secs(1));
    load.stop();
    src.sql("FLUSH BINARY LOGS");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(streamer.terminate(), 0, "{}", streamer.log_text());
    let mut drain = Streamer::start(&src.url(), &repo, &spool, &["--until-caught-up"]);
    assert_eq!(drain.wait(), 0, "{}", drain.log_text());

    replica.replicate_until(&goal.to_string());
    assert_eq!(replica.gtid_executed(), goal);

    // A non-empty directory is refused before anything is written.
    let busy = dir.join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("keep"), b"x").unwrap();
    myvault(&[
        "restore",
        "--repo",
        &repo,
        "--datadir",
        busy.to_str().unwrap(),
    ])
    .expect_code(12);
    assert_eq!(std::fs::read(busy.join("keep")).unwrap(), b"x");

    for (mode, id, snap_gtids) in snaps {
        let (repo2, goal_text) = (repo.clone(), goal.to_string());
        let report = std::rc::Rc::new(std::cell::RefCell::new(None));
        let report_in = report.clone();
        let restored = TestServer::builder(Flavor::Mysql97)
            .datadir_from(move |d| {
                let run = myvault(&[
                    "restore",
                    "--repo",
                    &repo2,
                    "--snapshot",
                    &id,
                    "--datadir",
                    d.to_str().unwrap(),
                    "--to-gtid",
                    &goal_text,
                    "--mysqld",
                    &mysqld(),
                    "--json",
                ]);
                run.expect_code(0);
                assert!(
                    !d.join("auto.cnf").exists(),
                    "auto.cnf was left in the restored datadir"
                );
                *report_in.borrow_mut() = Some(run.json());
            })
            .start();
        let report = report.borrow_mut().take().unwrap();
        // Before the replay, CHECK TABLE found every restored table sound, and (remote) they
        // equalled the clone's recorded checksums.
        let check = &report["content_check"];
        let (outcome, compared) = match mode {
            "remote" => ("match", "tables"),
            _ => ("no_checksums_recorded", "not_recorded"),
        };
        assert_eq!(check["outcome"], outcome, "{mode}: {check}");
        assert_eq!(
            check[compared].as_array().unwrap().len(),
            4,
            "{mode}: {check}"
        );
        assert_eq!(restored.gtid_executed(), goal, "{mode}: restored GTIDs");
        // Exactly the transactions after the clone were replayed: no more, no fewer.
        assert_eq!(
            report["replay"]["transactions"].as_u64().unwrap(),
            goal.subtract(&snap_gtids).count(),
            "{mode}: replayed transactions vs the GTIDs between the clone and the goal: {report}"
        );
        assert_eq!(
            load::checksums(&restored, "sb"),
            load::checksums(&replica, "sb"),
            "{mode}: data"
        );
        assert_ne!(
            restored.value("SELECT @@server_uuid"),
            src.value("SELECT @@server_uuid"),
            "{mode}: the restored server kept the source's identity"
        );
    }
}

#[test]
fn cold_backup_refuses_a_running_server_and_restores_a_stopped_one() {
    let mut src = TestServer::mysql97();
    load::prepare(&src, "sb", 2, 2000);
    src.sql("CREATE DATABASE cold;\nCREATE TABLE cold.t (id INT PRIMARY KEY, v VARCHAR(20));\nINSERT INTO cold.t VALUES (1, 'kept'), (2, 'also kept')");
    let dir = Scratch::new("cold");
    let repo = dir.join("repo").to_str().unwrap().to_string();
    myvault(&["init", "--repo", &repo]).expect_code(0);
    let datadir = src.datadir();
    let data = datadir.to_str().unwrap().to_string();

    let busy = myvault(&[
        "backup",
        "--method",
        "cold",
        "--datadir",
        &data,
        "--repo",
        &repo,
    ]);
    busy.expect_code(12);
    assert!(busy.stderr.contains("in use"), "{}", busy.stderr);

    let sums = load::checksums(&src, "sb");
    let gtids = src.gtid_executed();
    src.server.stop(Duration::from_secs(60)).unwrap();
    let run = crate::support::cold_backup(&datadir, &repo);
    run.expect_code(0);
    assert_eq!(
        GtidSet::parse(run.json()["gtid_executed"].as_str().unwrap()).unwrap(),
        gtids,
        "the cold snapshot's GTID set comes from the binlogs in the datadir"
    );
    let restored = TestServer::restored_from(&repo);
    assert_eq!(load::checksums(&restored, "sb"), sums);
    assert_eq!(restored.gtid_executed(), gtids);
    assert_eq!(
        restored
            .value("SELECT GROUP_CONCAT(v ORDER BY id) FROM cold.t")
            .as_deref(),
        Some("kept,also kept")
    );

    // The restore test brings the same snapshot up on a server of its own and reads it all.
    let scratch = dir.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let tested = crate::support::restore_test(&repo, &["--scratch-dir", scratch.to_str().unwrap()]);
    tested.expect_code(0);
    let t = &tested.json()["restore_test"];
    assert_eq!(t["method"], "cold");
    assert_eq!(t["rows"], 4002, "{t}");
    assert_eq!(
        GtidSet::parse(t["gtid_executed"].as_str().unwrap()).unwrap(),
        gtids
    );
    assert_eq!(
        std::fs::read_dir(&scratch).unwrap().count(),
        0,
        "a passed restore test leaves nothing behind"
    );
}
