//! End-to-end content checks: a restore proves that the restored tables hold what the backup
//! read from the source, not only that the repository's bytes are intact. A row changed on
//! the target between the load and the check (by a test, while a failpoint holds the restore
//! there) must fail the restore and the restore test with exit 8, naming the table.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use myvault::mysql::session::Session;
use myvault::mysql::wire::{ConnectOptions, SslOptions};

use crate::support::load;
use crate::support::{Background, Scratch, TestServer, failpoints, myvault, testbed};

/// Three tables: one with a key and a secondary index, one without any key, one left alone.
const SHOP: &str = "CREATE DATABASE shop;
CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(40), price DECIMAL(8,2), KEY by_name (name));
INSERT INTO shop.items VALUES (1, 'apple', 0.50), (2, 'pear', 0.75), (3, 'fig\\tjam', 3.20), (4, NULL, NULL);
CREATE TABLE shop.log (at DATETIME, what TEXT);
INSERT INTO shop.log VALUES ('2026-01-01 10:00:00', 'opened'), ('2026-01-01 10:00:00', 'opened'), (NULL, 'closed');
CREATE TABLE shop.untouched (id INT PRIMARY KEY, v INT);
INSERT INTO shop.untouched VALUES (1, 1), (2, 2)";

/// What the test changes on a restored server before its check reads it: one column of one
/// keyed row, one row of the table without a key.
const TAMPER: &str = "UPDATE shop.items SET price = 0.51 WHERE id = 1;
UPDATE shop.log SET what = 'closed!' WHERE what = 'closed'";

/// How long the failpoint holds a restore between its load and its check: the test changes a
/// row meanwhile.
const HOLD: &str = "restore-before-content-check=sleep(10000)";

fn mysqld() -> String {
    testbed()
        .path("MYVAULT_MYSQLD_97")
        .to_string_lossy()
        .into_owned()
}

fn shop_repo(src: &TestServer, dir: &Scratch) -> String {
    src.sql(SHOP);
    let repo = dir.join("repo").to_str().unwrap().to_string();
    myvault(&["init", "--repo", &repo]).expect_code(0);
    myvault(&["backup", "--repo", &repo, "--source", &src.url()]).expect_code(0);
    repo
}

/// Runs statements separated by `;\n`.
fn run_sql(s: &mut Session, statements: &str) {
    for stmt in statements.split(";\n").map(str::trim) {
        s.exec(stmt)
            .unwrap_or_else(|e| panic!("`{stmt}` failed: {e}"));
    }
}

/// Waits until `connect` reaches a server on which shop's rows are all loaded and `by_name`
/// is built (the restore is then at its check), and changes rows there.
fn tamper_once_loaded(connect: impl Fn() -> Option<Session>, restore: &mut Background) {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        assert!(restore.running(), "the restore ended before its check");
        assert!(
            Instant::now() < deadline,
            "the restore never finished loading"
        );
        if let Some(mut s) = connect() {
            let loaded = s
                .query_value(
                    "SELECT (SELECT COUNT(*) FROM shop.items) + (SELECT COUNT(*) FROM shop.log) \
                     + (SELECT COUNT(*) FROM information_schema.STATISTICS \
                        WHERE TABLE_SCHEMA = 'shop' AND INDEX_NAME = 'by_name')",
                )
                .ok()
                .flatten();
            if loaded.as_deref() == Some("8") {
                run_sql(&mut s, TAMPER);
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_names_the_tampered_tables(run: &crate::support::Run) {
    run.expect_code(8);
    for t in ["`shop`.`items`", "`shop`.`log`"] {
        assert!(run.stderr.contains(t), "{t} not named: {}", run.stderr);
    }
    assert!(!run.stderr.contains("`shop`.`untouched`"), "{}", run.stderr);
}

#[test]
fn a_row_changed_between_load_and_check_fails_the_restore_naming_its_table() {
    let src = TestServer::mysql97();
    let dir = Scratch::new("content");
    let repo = shop_repo(&src, &dir);

    let dst = TestServer::mysql97();
    let url = dst.url();
    let mut restore = Background::start(
        &["restore", "--repo", &repo, "--target", &url, "--json"],
        &[failpoints(HOLD)],
    );
    tamper_once_loaded(|| dst.server.session().ok(), &mut restore);
    assert_names_the_tampered_tables(&restore.finish());

    // Left alone, the same restore checks every table; --no-content-check skips it.
    for (skip, args) in [(false, &[][..]), (true, &["--no-content-check"][..])] {
        let dst = TestServer::mysql97();
        let url = dst.url();
        let mut full = vec!["restore", "--repo", &repo, "--target", &url, "--json"];
        full.extend_from_slice(args);
        let run = myvault(&full);
        run.expect_code(0);
        let check = &run.json()["content_check"];
        if skip {
            assert!(check.is_null(), "{check}");
            continue;
        }
        assert_eq!(check["outcome"], "match", "{check}");
        assert_eq!(check["compared"], "rows", "{check}");
        let mut tables: Vec<&str> = check["tables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        tables.sort();
        assert_eq!(
            tables,
            ["`shop`.`items`", "`shop`.`log`", "`shop`.`untouched`"]
        );
        assert_eq!(check["rows"], 9, "{check}");
    }
}

/// The socket of the one temporary server a restore test has started under `tmp`.
fn restore_test_socket(tmp: &Path) -> Option<PathBuf> {
    std::fs::read_dir(tmp)
        .ok()?
        .flatten()
        .map(|e| e.path().join("mysqld.sock"))
        .find(|p| p.exists())
}

/// A root session over `socket` (the restore test's server listens on nothing else).
fn socket_session(socket: &Path) -> Option<Session> {
    Session::connect(&ConnectOptions {
        host: "localhost".into(),
        port: 0,
        socket: Some(socket.display().to_string()),
        user: "root".into(),
        password: Default::default(),
        ssl: SslOptions::default(),
        connect_timeout: Duration::from_secs(5),
        read_timeout: None,
    })
    .ok()
}

/// `verify --restore-test` with the restore held at its check; the test changes rows on the
/// temporary server meanwhile.
fn tampered_restore_test(repo: &str, dir: &Scratch) -> crate::support::Run {
    // The test server's socket goes under TMPDIR, where the test can find it.
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let mysqld = mysqld();
    let mut test = Background::start(
        &[
            "verify",
            "--repo",
            repo,
            "--restore-test",
            "--mysqld",
            &mysqld,
            "--json",
        ],
        &[failpoints(HOLD), ("TMPDIR", tmp.to_str().unwrap())],
    );
    tamper_once_loaded(
        || restore_test_socket(&tmp).and_then(|s| socket_session(&s)),
        &mut test,
    );
    test.finish()
}

#[test]
fn a_row_changed_under_the_restore_test_fails_it_naming_its_table() {
    let src = TestServer::mysql97();
    let dir = Scratch::new("content");
    let repo = shop_repo(&src, &dir);
    assert_names_the_tampered_tables(&tampered_restore_test(&repo, &dir));

    let tested = crate::support::restore_test(&repo, &[]);
    tested.expect_code(0);
    let check = &tested.json()["restore_test"]["content_check"];
    assert_eq!(check["outcome"], "match", "{check}");
    assert_eq!(check["tables"].as_array().unwrap().len(), 3, "{check}");
}

/// A snapshot written before checksums were recorded (by the myvault of 2026-12-07, kept in
/// fixtures/repos) restores as before, and says that it could not be compared.
#[test]
fn a_snapshot_without_checksums_restores_and_says_so() {
    let dir = Scratch::new("content");
    let repo = dir.join("repo");
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/repos/logical-before-content-checksums"
    );
    let status = std::process::Command::new("cp")
        .args(["-r", fixture])
        .arg(&repo)
        .status()
        .unwrap();
    assert!(status.success());
    let repo = repo.to_str().unwrap();
    let dst = TestServer::mysql97();
    let run = myvault(&["restore", "--repo", repo, "--target", &dst.url(), "--json"]);
    run.expect_code(0);
    let check = &run.json()["content_check"];
    assert_eq!(check["outcome"], "no_checksums_recorded", "{check}");
    assert_eq!(
        check["not_recorded"].as_array().unwrap().len(),
        2,
        "{check}"
    );
    assert_eq!(dst.value("SELECT COUNT(*) FROM shop.items").unwrap(), "3");
}

/// The manifest's `extra` of snapshot `id` in the local repository `repo`.
fn manifest_extra(repo: &str, id: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(Path::new(repo).join("snapshots").join(id)).unwrap();
    let body = text.split_once('\n').unwrap().1;
    serde_json::from_str::<serde_json::Value>(body).unwrap()["extra"].clone()
}

#[test]
fn clone_snapshots_record_the_donors_table_checksums_and_restores_compare_them() {
    let src = TestServer::mysql97();
    load::prepare(&src, "sb", 2, 2000);
    src.sql(SHOP);
    let dir = Scratch::new("content");
    let repo = dir.join("repo").to_str().unwrap().to_string();
    myvault(&["init", "--repo", &repo]).expect_code(0);
    let mysqld = mysqld();
    let clone = |extra: &[&str]| {
        let url = src.url();
        let mut args = vec!["backup", "--method", "clone", "--repo", &repo];
        args.extend(["--source", &url, "--mysqld", &mysqld, "--json"]);
        args.extend_from_slice(extra);
        let run = myvault(&args);
        run.expect_code(0);
        run.json()["snapshot"].as_str().unwrap().to_string()
    };

    // Without --table-checksums, nothing is recorded.
    let plain = clone(&[]);
    assert!(manifest_extra(&repo, &plain)["table_checksums"].is_null());

    // The recorded values are the donor's own.
    let id = clone(&["--table-checksums"]);
    let recorded = &manifest_extra(&repo, &id)["table_checksums"];
    let mut s = src.session();
    let mut compared = 0;
    for (db, table) in [
        ("sb", "sbtest1"),
        ("sb", "sbtest2"),
        ("shop", "items"),
        ("shop", "log"),
        ("shop", "untouched"),
    ] {
        let donor = s
            .query(&format!("CHECKSUM TABLE `{db}`.`{table}`"))
            .unwrap()
            .first()
            .unwrap()
            .u64("Checksum")
            .unwrap();
        assert_eq!(recorded[db][table], donor, "{db}.{table}: {recorded}");
        compared += 1;
    }
    assert_eq!(compared, 5);

    let tested = crate::support::restore_test(&repo, &["--snapshot", &id]);
    tested.expect_code(0);
    let check = &tested.json()["restore_test"]["content_check"];
    assert_eq!(check["outcome"], "match", "{check}");
    assert_eq!(check["compared"], "checksum table", "{check}");
    let tables = check["tables"].as_array().unwrap();
    assert!(
        tables.iter().any(|t| t == "`sb`.`sbtest2`") && tables.len() == 5,
        "{check}"
    );

    // A row changed on the restored data directory before the check is found.
    let tampered = tampered_restore_test(&repo, &dir);
    assert_names_the_tampered_tables(&tampered);
}
