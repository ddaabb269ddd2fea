//! A logical restore killed in any phase (creating, loading, building indexes, creating
//! programs and accounts, setting the GTID state, putting settings back) and run again ends
//! with the same target as an uninterrupted one.

use std::time::{Duration, Instant};

use crate::logical::{
    assert_restored_at, assert_same_objects, backup, fingerprint, new_repo, user_accounts,
    user_databases,
};
use crate::support::load;
use crate::support::{
    Background, Flavor, Run, Scratch, TestServer, failpoints, myvault, myvault_env,
};

/// Servers that do not wait for the disk: these tests are about what happens, not about
/// durability, and the machine is shared.
pub(crate) fn fast_server() -> TestServer {
    TestServer::builder(Flavor::Mysql97)
        .option("--innodb-flush-log-at-trx-commit=0")
        .option("--sync-binlog=0")
        .option("--innodb-flush-method=nosync")
        .start()
}

/// `myvault restore --repo REPO --target URL EXTRA...`
pub(crate) fn restore_args<'a>(repo: &'a str, url: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["restore", "--repo", repo, "--target", url];
    args.extend_from_slice(extra);
    args
}

/// A fast server holding fixtures/schema/`name`.
pub(crate) fn fixture_source(name: &str) -> TestServer {
    let src = fast_server();
    load::run_fixture(
        &src,
        &format!("{}/fixtures/schema/{name}", env!("CARGO_MANIFEST_DIR")),
    );
    src
}

/// Empties a target for the next restore: its databases, accounts and GTID history.
pub(crate) fn reset_target(dst: &TestServer) {
    let mut s = dst.session();
    s.exec("SET SESSION foreign_key_checks = 0").unwrap();
    for db in user_databases(&mut s) {
        s.exec(&format!("DROP DATABASE `{}`", db.replace('`', "``")))
            .unwrap();
    }
    for account in user_accounts(&mut s) {
        s.exec(&format!("DROP USER {account}")).unwrap();
    }
    s.exec("RESET BINARY LOGS AND GTIDS").unwrap();
}

/// The ALTER of `table` waiting or running on `srv`, if any: (id, state).
fn running_alter(srv: &TestServer, table: &str) -> Option<(String, String)> {
    let rows = srv
        .session()
        .query(&format!(
            "SELECT ID, IFNULL(STATE, '') FROM information_schema.PROCESSLIST WHERE INFO LIKE 'ALTER TABLE {table} %'"
        ))
        .unwrap();
    rows.first()
        .map(|r| (r.text_at(0).unwrap(), r.text_at(1).unwrap()))
}

/// Issue 18, item 2: the server finishes an `ALTER TABLE ... ADD KEY` whose client was killed,
/// and the rerun's own ALTER then failed with `ERROR 1061 Duplicate key name`, forever. Here
/// the killed run's ALTER is held up by a transaction of the test (so it is deterministically
/// still running when the rerun starts): the rerun waits for it, finds the indexes built, and
/// finishes; the target equals the source and has the snapshot's GTIDs.
#[test]
fn restore_killed_during_an_index_build_resumes_instead_of_failing_on_a_duplicate_key_name() {
    let src = fast_server();
    src.sql(
        "SET SESSION cte_max_recursion_depth = 10000;\n\
         CREATE DATABASE ix;\n\
         CREATE TABLE ix.big (id INT PRIMARY KEY, c CHAR(40), v INT, KEY kc (c), KEY kv (v));\n\
         INSERT INTO ix.big WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000) SELECT i, HEX(CRC32(i)), i % 97 FROM n;\n\
         CREATE TABLE ix.small (id INT PRIMARY KEY, t VARCHAR(10), KEY kt (t));\n\
         INSERT INTO ix.small VALUES (1, 'a'), (2, 'b')",
    );
    let dir = Scratch::new("ix");
    let repo = new_repo(&dir);
    let taken = backup(&repo, &src.url(), &["--json"]);
    taken.expect_code(0);
    let gtids = taken.json()["gtid_executed"].as_str().unwrap().to_string();
    let dst = fast_server();
    let url = dst.url();
    let args = restore_args(&repo, &url, &["--jobs", "1"]);

    // First run: killed with the rows in, before the indexes.
    let first = myvault_env(&args, &[failpoints("restore-before-index=abort(1)")]);
    assert!(
        first.stderr.contains("failpoint restore-before-index"),
        "{}",
        first.stderr
    );
    // A transaction that reads the table holds its metadata lock: an ALTER must wait for it.
    let mut holder = dst.session();
    holder.exec("START TRANSACTION").unwrap();
    holder.query("SELECT id FROM ix.big LIMIT 1").unwrap();
    holder.query("SELECT id FROM ix.small LIMIT 1").unwrap();

    // Second run: killed (as kill -9 does) while the server has its ALTER.
    let mut second = Background::start(&args, &[]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let alter = loop {
        if let Some(found) =
            running_alter(&dst, "`ix`.`big`").or_else(|| running_alter(&dst, "`ix`.`small`"))
        {
            break found;
        }
        assert!(second.running(), "{:?}", second.finish());
        assert!(Instant::now() < deadline, "no ALTER appeared on the target");
        std::thread::sleep(Duration::from_millis(20));
    };
    let status = std::process::Command::new("kill")
        .args(["-9", &second.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_ne!(second.finish().code, 0);
    assert!(
        alter.1.contains("metadata lock"),
        "the killed run's ALTER: {alter:?}"
    );

    // Third run, while the killed run's ALTER is still on the server: it waits for it.
    let mut third = Background::start(&args, &[]);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        running_alter(&dst, "`ix`.`big`").is_some()
            || running_alter(&dst, "`ix`.`small`").is_some(),
        "the killed run's ALTER is gone before the rerun could meet it"
    );
    assert!(
        third.running(),
        "the rerun did not wait for the killed run's ALTER: {:?}",
        third.finish()
    );
    holder.exec("COMMIT").unwrap();
    let third = third.finish();
    third.expect_code(0);

    assert_eq!(load::checksums(&src, "ix"), load::checksums(&dst, "ix"));
    for t in ["big", "small"] {
        let create = |srv: &TestServer| {
            srv.session()
                .query(&format!("SHOW CREATE TABLE ix.{t}"))
                .unwrap()
                .first()
                .and_then(|r| r.text_at(1))
        };
        assert_eq!(create(&src), create(&dst), "{t}");
    }
    assert_restored_at(&dst, &gtids);
}

/// Issue 18's review of every restore phase: killed at each of these points (with one loader
/// connection, so the N-th hit is always the same object) and run again, the restore ends
/// with a target equal to the source, the snapshot's GTIDs, and the settings the first run
/// found. Without the fixes: an index built by the killed run failed the rerun (1061); a
/// MyISAM table got the killed run's rows twice; accounts created but not yet granted were
/// skipped as the target's own; GTID_PURGED set by the killed run made the rerun refuse the
/// target.
#[test]
fn restore_killed_in_any_phase_runs_again_to_an_exact_copy() {
    let src = fixture_source("tricky.sql");
    // The largest table, so its chunk is the first one loaded: MyISAM keeps what a killed
    // LOAD DATA wrote.
    src.sql(
        "SET SESSION cte_max_recursion_depth = 10000;\n\
         CREATE DATABASE bulk;\n\
         CREATE TABLE bulk.m (a INT, b VARCHAR(20)) ENGINE = MyISAM;\n\
         INSERT INTO bulk.m WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000) SELECT i % 10, 'row' FROM n",
    );
    let dir = Scratch::new("phases");
    let repo = new_repo(&dir);
    let taken = backup(&repo, &src.url(), &["--json"]);
    taken.expect_code(0);
    let gtids = taken.json()["gtid_executed"].as_str().unwrap().to_string();
    let source = fingerprint(&src);
    let dst = TestServer::builder(Flavor::Mysql97)
        .option("--innodb-flush-log-at-trx-commit=0")
        .option("--sync-binlog=0")
        .option("--innodb-flush-method=nosync")
        .option("--innodb-redo-log-capacity=8M")
        .option("--local-infile=0")
        .start();
    let url = dst.url();
    let args = restore_args(&repo, &url, &["--jobs", "1", "--json"]);
    for point in [
        "restore-table-created=abort(5)",
        "restore-chunk-loaded=abort(1)",
        "restore-after-index=abort(1)",
        "restore-view-created=abort(2)",
        "restore-trigger-created=abort(2)",
        "restore-after-account=abort(1)",
        "restore-after-gtid=abort(1)",
        "restore-before-put-back=abort(1)",
    ] {
        reset_target(&dst);
        let name = point.split('=').next().unwrap();
        let killed = myvault_env(&args, &[failpoints(point)]);
        assert!(
            killed
                .stderr
                .contains(&format!("failpoint {name}: aborting")),
            "{point}: {}",
            killed.stderr
        );
        let rerun: Run = myvault(&args);
        assert_eq!(
            rerun.code, 0,
            "{point}: the rerun failed:\n{}",
            rerun.stderr
        );
        assert_same_objects(&source, &fingerprint(&dst), point);
        assert_restored_at(&dst, &gtids);
        // The target's own root only: accounts the killed run created are the restore's.
        assert_eq!(
            rerun.json()["accounts_skipped"],
            serde_json::json!(["'root'@'localhost'"]),
            "{point}"
        );
        assert_eq!(
            dst.value(
                "SELECT CONCAT(@@GLOBAL.local_infile, ' ', @@GLOBAL.innodb_redo_log_capacity)"
            )
            .unwrap(),
            format!("0 {}", 8 << 20),
            "{point}: settings not put back"
        );
    }
    // Killed after the progress schema is gone, the restore is complete and every setting but
    // the redo log's size is back: only that one goes back after the progress schema.
    reset_target(&dst);
    let killed = myvault_env(
        &args,
        &[failpoints("restore-after-progress-dropped=abort(1)")],
    );
    assert!(
        killed
            .stderr
            .contains("failpoint restore-after-progress-dropped"),
        "{}",
        killed.stderr
    );
    assert_same_objects(
        &source,
        &fingerprint(&dst),
        "killed after the progress schema",
    );
    assert_restored_at(&dst, &gtids);
    assert_eq!(dst.value("SELECT @@GLOBAL.local_infile").unwrap(), "0");
}
