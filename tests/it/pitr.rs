//! Point-in-time restore against real MySQL 9.7 under load: five instants (inside a burst,
//! exactly at a commit timestamp, just after a snapshot, after a rotation, after a source
//! restart), each checked against an independent truth: mysqlbinlog's commit timestamps say
//! which transactions belong before the instant, and a replica stopped exactly there holds
//! the data the restore must equal.

use std::collections::BTreeMap;
use std::time::Duration;

use myvault::mysql::gtid::GtidSet;

use crate::support::load::{self, Load};
use crate::support::streamer::Streamer;
use crate::support::{Flavor, Scratch, TestServer, myvault, testbed};

fn server_now_us(src: &TestServer) -> i64 {
    src.value("SELECT CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED)")
        .unwrap()
        .parse()
        .unwrap()
}

fn rfc3339(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// (GTID, immediate commit timestamp) of every transaction, as mysqlbinlog 9.7 prints them.
fn commits_by_mysqlbinlog(src: &TestServer) -> Vec<(String, i64)> {
    let mut files: Vec<_> = std::fs::read_dir(src.datadir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("binlog.0")
        })
        .collect();
    files.sort();
    let mysqlbinlog = testbed().path("MYVAULT_TESTBED").join("bin/mysqlbinlog");
    let out = std::process::Command::new(mysqlbinlog)
        .args(&files)
        .output()
        .expect("run mysqlbinlog");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut commits = Vec::new();
    let mut ts = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# immediate_commit_timestamp=") {
            ts = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<i64>().ok());
        } else if let Some(rest) = line.strip_prefix("SET @@SESSION.GTID_NEXT= '") {
            let gtid = rest.split('\'').next().unwrap().to_string();
            if gtid != "AUTOMATIC"
                && let Some(t) = ts.take()
            {
                commits.push((gtid, t));
            }
        }
    }
    commits
}

#[test]
fn restore_to_five_instants_equals_the_source_at_each() {
    let mut src = TestServer::builder(Flavor::Mysql97)
        .option("--max-binlog-size=1048576")
        .start();
    load::prepare(&src, "sb", 4, 5000);
    src.add_replication_user();
    let replica = TestServer::builder(Flavor::Mysql97)
        .option("--replica-parallel-workers=1")
        .start();
    replica.replicate_from(&src, "repl", "Repl-1");

    let dir = Scratch::new("pitr");
    let repo = dir.join("repo").to_str().unwrap().to_string();
    myvault(&["init", "--repo", &repo]).expect_code(0);
    let spool = dir.join("spool");
    let mut streamer = Streamer::start(&src.url(), &repo, &spool, &[]);
    let mut load = Load::start(&src, "sb", 4, 5000, 2, 600);
    std::thread::sleep(Duration::from_secs(2));

    let backup = myvault(&["backup", "--repo", &repo, "--source", &src.url(), "--json"]);
    backup.expect_code(0);
    let snap_time = chrono::DateTime::parse_from_rfc3339(backup.json()["time"].as_str().unwrap())
        .unwrap()
        .timestamp_micros();
    let mut instants: BTreeMap<&str, i64> = BTreeMap::new();
    instants.insert("just after the snapshot", snap_time + 1000);
    std::thread::sleep(Duration::from_secs(2));
    instants.insert("inside a burst of commits", server_now_us(&src));
    std::thread::sleep(Duration::from_secs(1));
    src.sql("FLUSH BINARY LOGS");
    std::thread::sleep(Duration::from_millis(700));
    instants.insert("after a binlog rotation", server_now_us(&src));
    std::thread::sleep(Duration::from_secs(1));
    load.stop();
    src.server
        .restart(Duration::from_secs(60))
        .expect("restart source");
    load = Load::start(&src, "sb", 4, 5000, 2, 600);
    std::thread::sleep(Duration::from_secs(2));
    instants.insert("after a source restart", server_now_us(&src));
    std::thread::sleep(Duration::from_secs(2));
    load.stop();
    src.sql("FLUSH BINARY LOGS");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(streamer.terminate(), 0, "{}", streamer.log_text());
    let mut drain = Streamer::start(&src.url(), &repo, &spool, &["--until-caught-up"]);
    assert_eq!(drain.wait(), 0, "{}", drain.log_text());

    let commits = commits_by_mysqlbinlog(&src);
    // Exactly at a commit timestamp: a transaction well after the snapshot.
    let after_snap: Vec<&(String, i64)> = commits
        .iter()
        .filter(|(_, t)| *t > snap_time + 500_000)
        .collect();
    instants.insert(
        "exactly at a commit timestamp",
        after_snap[after_snap.len() / 3].1,
    );

    let mut ordered: Vec<(&str, i64)> = instants.into_iter().collect();
    ordered.sort_by_key(|(_, t)| *t);
    for (what, t) in ordered {
        // The truth: every transaction committed at or before t, by mysqlbinlog's reading.
        let mut truth = GtidSet::new();
        for (g, ts) in &commits {
            if *ts <= t {
                truth = truth.union(&GtidSet::parse(g).unwrap());
            }
        }
        replica.replicate_until(&truth.to_string());
        assert_eq!(replica.gtid_executed(), truth, "{what}: replica");

        // A small redo log: grown for the load and the replay, then put back.
        let target = TestServer::builder(crate::support::Flavor::Mysql97)
            .option("--innodb-redo-log-capacity=8M")
            .start();
        let run = myvault(&[
            "restore",
            "--repo",
            &repo,
            "--to-time",
            &rfc3339(t),
            "--target",
            &target.url(),
            "--json",
        ]);
        run.expect_code(0);
        assert_eq!(
            run.json()["load"]["server_settings"][0]["name"],
            "innodb_redo_log_capacity",
            "{what}: {}",
            run.stdout
        );
        assert_eq!(
            target
                .value("SELECT @@GLOBAL.innodb_redo_log_capacity")
                .unwrap(),
            (8 << 20).to_string(),
            "{what}: the redo log was not put back"
        );
        let restored =
            GtidSet::parse(&target.value("SELECT @@GLOBAL.gtid_executed").unwrap()).unwrap();
        assert_eq!(
            restored,
            truth,
            "{what} ({}): restored GTIDs differ from the transactions committed by then",
            rfc3339(t)
        );
        assert_eq!(
            load::checksums(&target, "sb"),
            load::checksums(&replica, "sb"),
            "{what}: data differs"
        );
        assert_eq!(
            target
                .value(
                    "SELECT COUNT(*) FROM performance_schema.replication_connection_configuration"
                )
                .unwrap(),
            "0",
            "{what}: the replay channel was left behind"
        );
        // The fallback engine, on the instant whose history spans rotations and a restart.
        if what == "after a source restart" {
            let target = TestServer::mysql97();
            myvault(&[
                "restore",
                "--repo",
                &repo,
                "--to-time",
                &rfc3339(t),
                "--target",
                &target.url(),
                "--engine",
                "sql",
            ])
            .expect_code(0);
            assert_eq!(target.gtid_executed(), truth, "{what}: SQL engine GTIDs");
            assert_eq!(
                load::checksums(&target, "sb"),
                load::checksums(&replica, "sb"),
                "{what}: SQL engine data"
            );
        }
    }
}

/// Both engines on a history with what a SQL replay finds hard: compressed transactions,
/// tagged GTIDs, DDL under a non-default SQL mode and character set, latin1 and binary
/// bytes, a row event larger than the walk reads whole, and a rotation.
#[test]
fn both_engines_replay_compressed_tagged_ddl_and_large_events_exactly() {
    let src = TestServer::builder(Flavor::Mysql97)
        .option("--binlog-transaction-compression=ON")
        .option("--max-allowed-packet=64M")
        .start();
    src.sql("CREATE DATABASE h;\nCREATE TABLE h.t (id INT PRIMARY KEY, b VARBINARY(255), l VARCHAR(20) CHARACTER SET latin1)");
    let dir = Scratch::new("engines");
    let repo = dir.join("repo").to_str().unwrap().to_string();
    myvault(&["init", "--repo", &repo]).expect_code(0);
    myvault(&["backup", "--repo", &repo, "--source", &src.url()]).expect_code(0);
    let spool = dir.join("spool");
    let mut streamer = Streamer::start(&src.url(), &repo, &spool, &[]);
    let mut s = src.session();
    for stmt in [
        "INSERT INTO h.t VALUES (1, UNHEX('00FF27225C0A0D1A'), 'caf\u{e9}')",
        "SET SESSION binlog_transaction_compression = OFF",
        "INSERT INTO h.t VALUES (2, 'plain', 'x')",
        "SET SESSION binlog_transaction_compression = ON",
        "START TRANSACTION",
        "INSERT INTO h.t VALUES (3, 'a', 'b'), (4, 'c', 'd')",
        "UPDATE h.t SET l = 'upd' WHERE id = 2",
        "DELETE FROM h.t WHERE id = 4",
        "COMMIT",
        "SET SESSION sql_mode = 'ANSI_QUOTES,NO_ZERO_DATE', SESSION character_set_client = latin1",
        "CREATE TABLE h.\"quoted\" (id INT PRIMARY KEY, c VARCHAR(10) DEFAULT 'd\u{e9}f', ts TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6))",
        "SET SESSION sql_mode = DEFAULT, SESSION character_set_client = utf8mb4",
        "INSERT INTO h.quoted (id) VALUES (1)",
        "SET gtid_next = 'AUTOMATIC:tagged'",
        "INSERT INTO h.t VALUES (5, 'tag', 'tag')",
        "SET gtid_next = 'AUTOMATIC'",
        "ALTER TABLE h.t ADD COLUMN big LONGBLOB",
        "FLUSH BINARY LOGS",
        "SET SESSION binlog_transaction_compression = OFF",
        "INSERT INTO h.t (id, big) VALUES (6, REPEAT(UNHEX('0123456789ABCDEF'), 800000))",
        "UPDATE h.t SET b = NULL WHERE id = 1",
    ] {
        s.exec(stmt).unwrap_or_else(|e| panic!("{stmt}: {e}"));
    }
    let goal = src.gtid_executed();
    src.sql("FLUSH BINARY LOGS");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(streamer.terminate(), 0, "{}", streamer.log_text());
    let mut drain = Streamer::start(&src.url(), &repo, &spool, &["--until-caught-up"]);
    assert_eq!(drain.wait(), 0, "{}", drain.log_text());
    let sums = load::checksums(&src, "h");
    for engine in ["applier", "sql"] {
        let target = TestServer::builder(Flavor::Mysql97)
            .option("--max-allowed-packet=64M")
            .start();
        let run = myvault(&[
            "restore",
            "--repo",
            &repo,
            "--to-gtid",
            &goal.to_string(),
            "--target",
            &target.url(),
            "--engine",
            engine,
            "--json",
        ]);
        run.expect_code(0);
        assert_eq!(target.gtid_executed(), goal, "{engine}: GTIDs");
        assert_eq!(load::checksums(&target, "h"), sums, "{engine}: data");
        assert_eq!(
            target.value("SELECT COLUMN_DEFAULT FROM information_schema.COLUMNS WHERE TABLE_NAME = 'quoted' AND COLUMN_NAME = 'c'"),
            src.value("SELECT COLUMN_DEFAULT FROM information_schema.COLUMNS WHERE TABLE_NAME = 'quoted' AND COLUMN_NAME = 'c'"),
            "{engine}: DDL under another character set"
        );
    }
}

#[test]
fn pitr_refuses_times_outside_the_archive_and_plans_without_touching_anything() {
    let src = TestServer::mysql97();
    src.sql("CREATE DATABASE d;\nCREATE TABLE d.t (id INT PRIMARY KEY)");
    let dir = Scratch::new("pitr");
    let repo = dir.join("repo").to_str().unwrap().to_string();
    myvault(&["init", "--repo", &repo]).expect_code(0);
    let before_any = server_now_us(&src) - 10_000_000;
    myvault(&["backup", "--repo", &repo, "--source", &src.url()]).expect_code(0);
    src.sql("INSERT INTO d.t VALUES (1)");
    std::thread::sleep(Duration::from_millis(300));
    // Later than the last commit; the streamer will see the server idle past it.
    let idle_instant = rfc3339(server_now_us(&src));
    let spool = dir.join("spool");
    let mut s = Streamer::start(&src.url(), &repo, &spool, &["--until-caught-up"]);
    assert_eq!(s.wait(), 0, "{}", s.log_text());

    let run = myvault(&[
        "restore",
        "--repo",
        &repo,
        "--to-time",
        &rfc3339(before_any),
        "--plan",
    ]);
    run.expect_code(13);
    assert!(
        run.stderr.contains("before the oldest snapshot"),
        "{}",
        run.stderr
    );

    let far = server_now_us(&src) + 3_600_000_000;
    let run = myvault(&[
        "restore",
        "--repo",
        &repo,
        "--to-time",
        &rfc3339(far),
        "--plan",
    ]);
    run.expect_code(13);
    assert!(
        run.stderr.contains("latest restorable instant"),
        "{}",
        run.stderr
    );

    // The streamer saw the server idle after the last commit: "now" is restorable.
    let mut s = Streamer::start(&src.url(), &repo, &spool, &["--until-caught-up"]);
    assert_eq!(s.wait(), 0, "{}", s.log_text());
    let now = idle_instant;
    let target = TestServer::mysql97();
    target.sql("CREATE DATABASE busy");
    let run = myvault(&[
        "restore",
        "--repo",
        &repo,
        "--to-time",
        &now,
        "--target",
        &target.url(),
    ]);
    run.expect_code(12);
    assert_eq!(
        target
            .value("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'd'")
            .unwrap(),
        "0"
    );

    let plan = myvault(&[
        "restore",
        "--repo",
        &repo,
        "--to-time",
        &now,
        "--plan",
        "--json",
    ]);
    plan.expect_code(0);
    let p = plan.json();
    assert_eq!(p["transactions"], 1);
    assert!(
        p["expected_gtids"].as_str().unwrap().ends_with(":1-3"),
        "{p:#}"
    );
}

/// A history with two server_uuids: the streamer follows a failover from the old primary to
/// its promoted replica, and a restore to a time after the promotion replays both servers'
/// transactions, each once.
#[test]
fn pitr_across_a_failover_replays_both_primaries_history() {
    let mut a = TestServer::mysql97();
    a.add_replication_user();
    a.sql("CREATE DATABASE d;\nCREATE TABLE d.t (id INT PRIMARY KEY, v VARCHAR(20))");
    let b = TestServer::mysql97();
    b.replicate_from(&a, "repl", "Repl-1");
    b.sql("START REPLICA");
    let dir = Scratch::new("failover");
    let repo = dir.join("repo").to_str().unwrap().to_string();
    myvault(&["init", "--repo", &repo]).expect_code(0);
    myvault(&["backup", "--repo", &repo, "--source", &a.url()]).expect_code(0);
    let spool = dir.join("spool");
    let mut streamer = Streamer::start(&a.url(), &repo, &spool, &["--source", &b.url()]);
    for i in 1..=20 {
        a.sql(&format!("INSERT INTO d.t VALUES ({i}, 'on a')"));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !a.gtid_executed().is_subset(&b.gtid_executed()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the replica did not catch up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    // The primary dies; its replica is promoted and takes writes under its own server_uuid.
    a.server.kill();
    b.sql("STOP REPLICA;\nRESET REPLICA ALL");
    b.sql("INSERT INTO d.t VALUES (100, 'on b, kept')");
    std::thread::sleep(Duration::from_millis(1200));
    let t = server_now_us(&b);
    std::thread::sleep(Duration::from_millis(1200));
    b.sql("INSERT INTO d.t VALUES (101, 'on b, too late')");
    b.sql("FLUSH BINARY LOGS");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let list = myvault(&["binlog", "list", "--repo", &repo, "--json"]);
        if list
            .stdout
            .contains(&b.value("SELECT @@server_uuid").unwrap())
            && list.stdout.contains("sealed")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the streamer did not follow the failover:\n{}",
            streamer.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(streamer.terminate(), 0, "{}", streamer.log_text());
    let mut drain = Streamer::start(&b.url(), &repo, &spool, &["--until-caught-up"]);
    assert_eq!(drain.wait(), 0, "{}", drain.log_text());

    let target = TestServer::mysql97();
    let run = myvault(&[
        "restore",
        "--repo",
        &repo,
        "--to-time",
        &rfc3339(t),
        "--target",
        &target.url(),
        "--json",
    ]);
    run.expect_code(0);
    assert_eq!(
        target
            .value("SELECT COUNT(*) FROM d.t WHERE v = 'on a'")
            .as_deref(),
        Some("20")
    );
    assert_eq!(
        target
            .value("SELECT GROUP_CONCAT(id ORDER BY id) FROM d.t WHERE id >= 100")
            .as_deref(),
        Some("100")
    );
    // Everything but B's second transaction (the one after the instant).
    let b_uuid = b.value("SELECT @@server_uuid").unwrap();
    let expected = b
        .gtid_executed()
        .subtract(&GtidSet::parse(&format!("{b_uuid}:2")).unwrap());
    assert_eq!(
        target.gtid_executed(),
        expected,
        "A's transactions and B's first, each once"
    );
}
