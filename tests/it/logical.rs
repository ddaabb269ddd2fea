//! Logical snapshots against real MySQL 9.7: exact round trips of a tricky schema, and a
//! backup under write load that equals the source at exactly the snapshot's GTID set.

use std::collections::BTreeMap;

use crate::support::load::{self, Load};
use crate::support::{Run, Scratch, TestServer, myvault};

/// Everything that must survive a round trip, by object: every database's definition, every
/// table's `SHOW CREATE`, `CHECKSUM TABLE`, AUTO_INCREMENT and row count, every view, routine,
/// trigger and event's definition, and the grants of every account but the server's own.
pub(crate) fn fingerprint(srv: &TestServer) -> BTreeMap<String, String> {
    let mut s = srv.session();
    s.exec("SET SESSION information_schema_stats_expiry = 0")
        .unwrap();
    let mut out = BTreeMap::new();
    let q = |s: &mut myvault::mysql::session::Session, sql: &str, col: usize| -> String {
        s.query(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .first()
            .and_then(|r| r.text_at(col))
            .unwrap_or_default()
    };
    for db in &user_databases(&mut s) {
        let qd = format!("`{}`", db.replace('`', "``"));
        out.insert(
            format!("db {db}"),
            q(&mut s, &format!("SHOW CREATE DATABASE {qd}"), 1),
        );
        let objects = s
            .query(&format!(
                "SELECT TABLE_NAME, TABLE_TYPE, IFNULL(AUTO_INCREMENT, 0) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{}' ORDER BY 1",
                db.replace('\'', "''")
            ))
            .unwrap();
        let mut tables = Vec::new();
        for r in objects.iter() {
            let (name, kind, ai) = (
                r.text_at(0).unwrap(),
                r.text_at(1).unwrap(),
                r.text_at(2).unwrap(),
            );
            let qt = format!("{qd}.`{}`", name.replace('`', "``"));
            if kind == "VIEW" {
                out.insert(
                    format!("view {db}.{name}"),
                    q(&mut s, &format!("SHOW CREATE VIEW {qt}"), 1),
                );
                continue;
            }
            out.insert(
                format!("table {db}.{name}"),
                q(&mut s, &format!("SHOW CREATE TABLE {qt}"), 1),
            );
            out.insert(format!("auto_increment {db}.{name}"), ai);
            tables.push((name, qt));
        }
        // Checksums and row counts a hundred tables a statement: a database may have 1,000.
        for batch in tables.chunks(100) {
            let names = batch.iter().map(|(_, qt)| qt.as_str()).collect::<Vec<_>>();
            let sums = s
                .query(&format!("CHECKSUM TABLE {}", names.join(", ")))
                .unwrap();
            let counts: Vec<String> = names
                .iter()
                .enumerate()
                .map(|(i, qt)| format!("SELECT {i}, COUNT(*) FROM {qt}"))
                .collect();
            let counts = s.query(&counts.join(" UNION ALL ")).unwrap();
            assert_eq!((sums.len(), counts.len()), (batch.len(), batch.len()));
            for ((name, _), sum) in batch.iter().zip(sums.iter()) {
                out.insert(
                    format!("checksum {db}.{name}"),
                    sum.text_at(1).unwrap_or_default(),
                );
            }
            for count in counts.iter() {
                let i: usize = count.text_at(0).unwrap().parse().unwrap();
                out.insert(
                    format!("rows {db}.{}", batch[i].0),
                    count.text_at(1).unwrap(),
                );
            }
        }
        let routines = s
            .query(&format!("SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = '{}'", db.replace('\'', "''")))
            .unwrap();
        for r in routines.iter() {
            let (kind, name) = (r.text_at(0).unwrap(), r.text_at(1).unwrap());
            let sql = format!("SHOW CREATE {kind} {qd}.`{}`", name.replace('`', "``"));
            let rows = s.query(&sql).unwrap();
            let row = rows.first().unwrap();
            out.insert(
                format!("{kind} {db}.{name}"),
                format!(
                    "{} | {}",
                    row.text_at(1).unwrap_or_default(),
                    row.text_at(2).unwrap_or_default()
                ),
            );
        }
        let triggers = s
            .query(&format!("SELECT TRIGGER_NAME, ACTION_ORDER FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '{}'", db.replace('\'', "''")))
            .unwrap();
        for r in triggers.iter() {
            let name = r.text_at(0).unwrap();
            let rows = s
                .query(&format!("SHOW CREATE TRIGGER {qd}.`{name}`"))
                .unwrap();
            let row = rows.first().unwrap();
            out.insert(
                format!("trigger {db}.{name}"),
                format!(
                    "{} | {} | order {}",
                    row.text_at(1).unwrap_or_default(),
                    row.text_at(2).unwrap_or_default(),
                    r.text_at(1).unwrap()
                ),
            );
        }
        let events = s
            .query(&format!(
                "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = '{}'",
                db.replace('\'', "''")
            ))
            .unwrap();
        for r in events.iter() {
            let name = r.text_at(0).unwrap();
            out.insert(
                format!("event {db}.{name}"),
                q(&mut s, &format!("SHOW CREATE EVENT {qd}.`{name}`"), 3),
            );
        }
    }
    for account in user_accounts(&mut s) {
        let grants: Vec<String> = s
            .query(&format!("SHOW GRANTS FOR {account}"))
            .map(|r| r.iter().filter_map(|g| g.text_at(0)).collect())
            .unwrap_or_default();
        out.insert(format!("grants {account}"), grants.join("; "));
    }
    out
}

/// The first column of `sql`'s rows.
fn first_column(s: &mut myvault::mysql::session::Session, sql: &str) -> Vec<String> {
    s.query(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .filter_map(|r| r.text_at(0))
        .collect()
}

/// Databases other than the server's own, in order.
pub(crate) fn user_databases(s: &mut myvault::mysql::session::Session) -> Vec<String> {
    first_column(
        s,
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN ('mysql','sys','information_schema','performance_schema') ORDER BY 1",
    )
}

/// Accounts and roles other than root and the server's own, as `'user'@'host'`.
pub(crate) fn user_accounts(s: &mut myvault::mysql::session::Session) -> Vec<String> {
    first_column(
        s,
        "SELECT CONCAT(QUOTE(User), '@', QUOTE(Host)) FROM mysql.user WHERE User NOT IN ('root', 'mysql.sys', 'mysql.session', 'mysql.infoschema') ORDER BY 1",
    )
}

/// A finished restore: the target's GTIDs are `gtids` and its progress schema is gone.
#[track_caller]
pub(crate) fn assert_restored_at(dst: &TestServer, gtids: &str) {
    assert_eq!(
        dst.value("SELECT @@GLOBAL.gtid_executed")
            .unwrap()
            .replace('\n', ""),
        gtids
    );
    assert_eq!(
        dst.value(
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'myvault_restore'"
        )
        .unwrap(),
        "0"
    );
}

/// Fails naming every object whose fingerprint differs between `source` and `restored`.
#[track_caller]
pub(crate) fn assert_same_objects(
    source: &BTreeMap<String, String>,
    restored: &BTreeMap<String, String>,
    what: &str,
) {
    let mut diffs = Vec::new();
    for k in source
        .keys()
        .chain(restored.keys().filter(|k| !source.contains_key(*k)))
    {
        let (before, after) = (source.get(k), restored.get(k));
        if before != after {
            diffs.push(format!(
                "{k}:\n  source:   {}\n  restored: {}",
                before.map(String::as_str).unwrap_or("(missing)"),
                after.map(String::as_str).unwrap_or("(missing)")
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "{what}: {} differences:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

#[test]
fn tricky_schema_round_trip_is_exact() {
    let src = TestServer::mysql97();
    load::run_fixture(
        &src,
        concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/schema/tricky.sql"),
    );
    let dir = Scratch::new("repo");
    let repo = dir.join("repo");
    let repo = repo.to_str().unwrap();
    myvault(&["init", "--repo", repo]).expect_code(0);
    let taken = backup(repo, &src.url(), &["--json"]);
    taken.expect_code(0);
    let b = taken.json();
    assert_eq!(b["method"], "logical");
    assert_eq!(
        b["gtid_executed"].as_str().unwrap(),
        src.value("SELECT @@GLOBAL.gtid_executed")
            .unwrap()
            .replace('\n', "")
    );
    assert!(b["lock_seconds"].as_f64().unwrap() < 5.0);

    // Secondary indexes are built after the rows, except in tables a foreign key points from
    // or to: `parent`'s own index stays in its CREATE (the round trip below cannot tell, as the
    // server rebuilds what it needs), `composite`'s are deferred.
    let files = dir.join("files");
    myvault(&["restore", "--repo", repo, "--dest", files.to_str().unwrap()]).expect_code(0);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(files.join("dump.json")).unwrap()).unwrap();
    let table = |name: &str| {
        meta["databases"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|d| d["tables"].as_array().unwrap())
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("no table {name} in the dump"))
            .clone()
    };
    let deferred = |name: &str| table(name)["deferred_indexes"].as_array().unwrap().len();
    assert_eq!(
        deferred("parent"),
        0,
        "a foreign key's table keeps its indexes"
    );
    assert_eq!(
        deferred("child"),
        0,
        "a foreign key's table keeps its indexes"
    );
    assert!(
        deferred("composite") >= 2,
        "composite's indexes are deferred"
    );
    // The dump recorded what it read of every table: in key order, or as a sum of row hashes
    // where there is no key.
    let content = |name: &str| table(name)["content"].clone();
    assert_eq!(
        content("ints")["order"],
        "primary_key",
        "{}",
        content("ints")
    );
    assert_eq!(content("nopk")["order"], "unordered", "{}", content("nopk"));

    let dst = TestServer::mysql97();
    let restore = myvault(&["restore", "--repo", repo, "--target", &dst.url(), "--json"]);
    restore.expect_code(0);
    // Every table was read back and equals what the dump read: each type of the schema, and
    // `nopk` (no key: compared as a multiset of rows) among them.
    let check = &restore.json()["content_check"];
    let dumped_tables: Vec<String> = meta["databases"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| {
            d["tables"].as_array().unwrap().iter().map(move |t| {
                format!(
                    "`{}`.`{}`",
                    d["name"].as_str().unwrap(),
                    t["name"].as_str().unwrap().replace('`', "``")
                )
            })
        })
        .collect();
    assert_eq!(check["outcome"], "match", "{check}");
    assert_eq!(
        check["tables"].as_array().unwrap().len(),
        dumped_tables.len(),
        "{check}"
    );
    for t in &dumped_tables {
        assert!(
            check["tables"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == t.as_str()),
            "{t} was not checked: {check}"
        );
    }
    assert!(dumped_tables.len() > 20, "{dumped_tables:?}");

    let (before, after) = (fingerprint(&src), fingerprint(&dst));
    assert_same_objects(&before, &after, "the tricky schema");
    assert!(
        before.len() > 60,
        "the fingerprint covers {} objects",
        before.len()
    );
    // The restored server continues from the snapshot's GTID state, and its own binlog holds
    // nothing of the load.
    assert_restored_at(&dst, b["gtid_executed"].as_str().unwrap());
}

#[test]
fn restore_refuses_a_non_empty_target() {
    let src = TestServer::mysql97();
    src.sql(
        "CREATE DATABASE a;\nCREATE TABLE a.t (id INT PRIMARY KEY);\nINSERT INTO a.t VALUES (1)",
    );
    let dir = Scratch::new("repo");
    let repo = dir.join("repo");
    let repo = repo.to_str().unwrap();
    myvault(&["init", "--repo", repo]).expect_code(0);
    backup(repo, &src.url(), &[]).expect_code(0);
    let dst = TestServer::mysql97();
    dst.sql("CREATE DATABASE precious");
    let run = myvault(&["restore", "--repo", repo, "--target", &dst.url()]);
    run.expect_code(12);
    assert!(
        run.stderr.contains("not empty") && run.stderr.contains("precious"),
        "{}",
        run.stderr
    );
    assert_eq!(dst.value("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN ('a', 'myvault_restore')").unwrap(), "0");
}

#[test]
fn backup_under_write_load_equals_the_source_at_the_snapshot_gtid_set() {
    let src = TestServer::mysql97();
    load::prepare(&src, "sbtest", 4, 20_000);
    src.add_replication_user();
    // A replica that will stop exactly at the snapshot's GTID set: the independent truth.
    let replica = TestServer::builder(crate::support::Flavor::Mysql97)
        .option("--replica-parallel-workers=1")
        .start();
    replica.sql(&format!(
        "CHANGE REPLICATION SOURCE TO SOURCE_HOST='127.0.0.1', SOURCE_PORT={}, SOURCE_USER='repl', SOURCE_PASSWORD='Repl-1', SOURCE_AUTO_POSITION=1, GET_SOURCE_PUBLIC_KEY=1",
        src.port()
    ));
    let load = Load::start(&src, "sbtest", 4, 20_000, 4, 60);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let dir = Scratch::new("repo");
    let repo = dir.join("repo");
    let repo = repo.to_str().unwrap();
    myvault(&["init", "--repo", repo]).expect_code(0);
    let taken = backup(repo, &src.url(), &["--jobs", "2", "--json"]);
    taken.expect_code(0);
    std::thread::sleep(std::time::Duration::from_secs(2));
    load.stop();
    let gtids = taken.json()["gtid_executed"].as_str().unwrap().to_string();
    assert_ne!(
        gtids,
        src.value("SELECT @@GLOBAL.gtid_executed")
            .unwrap()
            .replace('\n', ""),
        "the load went on after the snapshot"
    );

    replica.sql(&format!("START REPLICA UNTIL SQL_AFTER_GTIDS = '{gtids}'"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let running = replica
            .value("SELECT SERVICE_STATE FROM performance_schema.replication_applier_status")
            .unwrap();
        if running == "OFF" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replica did not reach the snapshot"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(
        replica
            .value("SELECT @@GLOBAL.gtid_executed")
            .unwrap()
            .replace('\n', ""),
        gtids
    );

    let dst = TestServer::mysql97();
    myvault(&[
        "restore",
        "--repo",
        repo,
        "--target",
        &dst.url(),
        "--jobs",
        "2",
    ])
    .expect_code(0);
    let (truth, restored) = (
        load::checksums(&replica, "sbtest"),
        load::checksums(&dst, "sbtest"),
    );
    assert_eq!(truth.len(), 4);
    assert_eq!(
        truth, restored,
        "restored data differs from the source at the snapshot's GTID set"
    );
    assert_eq!(
        dst.value("SELECT @@GLOBAL.gtid_executed")
            .unwrap()
            .replace('\n', ""),
        gtids
    );
}

/// A source with `tables` sysbench tables of `rows` rows (statistics fresh, so the chunk plan
/// is stable), and a new repository.
fn sysbench_source(tables: u32, rows: u32) -> (TestServer, Scratch, String) {
    let src = TestServer::mysql97();
    load::prepare(&src, "sb", tables, rows);
    let names: Vec<String> = (1..=tables).map(|i| format!("sb.sbtest{i}")).collect();
    src.sql(&format!("ANALYZE TABLE {}", names.join(", ")));
    let dir = Scratch::new("repo");
    let repo = new_repo(&dir);
    (src, dir, repo)
}

pub(crate) fn new_repo(dir: &Scratch) -> String {
    let repo = dir.join("repo").to_str().unwrap().to_string();
    myvault(&["init", "--repo", &repo]).expect_code(0);
    repo
}

/// `myvault backup` of `source` into `repo`, with `extra` options.
pub(crate) fn backup(repo: &str, source: &str, extra: &[&str]) -> Run {
    let mut args = vec!["backup", "--repo", repo, "--source", source];
    args.extend_from_slice(extra);
    myvault(&args)
}

fn snapshot_count(repo: &str) -> usize {
    let run = myvault(&["list", "--repo", repo, "--json"]);
    run.expect_code(0);
    run.json()["snapshots"].as_array().unwrap().len()
}

#[test]
fn missing_privileges_are_named_with_the_grant_that_fixes_them() {
    let src = TestServer::mysql97();
    src.sql("CREATE USER 'ro'@'%' IDENTIFIED BY 'Ro-pass-1';\nGRANT SELECT ON *.* TO 'ro'@'%'");
    let dir = Scratch::new("repo");
    let repo = new_repo(&dir);
    let run = backup(&repo, &src.url_as("ro", "Ro-pass-1"), &[]);
    run.expect_code(4);
    assert!(run.stderr.contains("GRANT RELOAD, LOCK TABLES, SHOW VIEW, TRIGGER, EVENT, REPLICATION CLIENT ON *.* TO 'ro'@'%'"), "{}", run.stderr);
    assert!(!run.stderr.contains("Ro-pass-1"));
    assert_eq!(snapshot_count(&repo), 0);
}

#[test]
fn lock_wait_timeout_and_long_query_guard_abort_instead_of_stalling() {
    let src = TestServer::mysql97();
    src.sql("CREATE DATABASE a;\nCREATE TABLE a.t (id INT PRIMARY KEY)");
    let dir = Scratch::new("repo");
    let repo = new_repo(&dir);

    let mut holder = src.session();
    holder.exec("LOCK TABLES a.t WRITE").unwrap();
    let started = std::time::Instant::now();
    let run = backup(&repo, &src.url(), &["--lock-wait-timeout", "2"]);
    run.expect_code(6);
    assert!(
        run.stderr.contains("--lock-wait-timeout 2"),
        "{}",
        run.stderr
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    holder.exec("UNLOCK TABLES").unwrap();

    let mut sleeper = src.session();
    let t = std::thread::spawn(move || sleeper.exec("SELECT SLEEP(8)").map(|_| ()));
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let run = backup(&repo, &src.url(), &["--long-query-guard", "1"]);
    run.expect_code(6);
    assert!(
        run.stderr.contains("SLEEP(8)") && run.stderr.contains("has been running"),
        "{}",
        run.stderr
    );
    let _ = t.join();
    assert_eq!(snapshot_count(&repo), 0);
    // Nothing was left locked: writes go through.
    src.sql("INSERT INTO a.t VALUES (1)");
}

/// The three-way wait under write load: a transaction holds a row lock, a statement waits for
/// that row, the flush waits for that statement, and the transaction's next statement waits
/// for the flush. Flushing into it stalled every writer until InnoDB's lock wait timeout and
/// failed the backup after its --lock-wait-timeout; the backup now flushes once the row lock
/// wait is over.
#[test]
fn the_flush_waits_for_row_lock_waits_to_end_instead_of_stalling_every_writer() {
    let src = TestServer::mysql97();
    src.sql(
        "CREATE DATABASE a;\nCREATE TABLE a.t (id INT PRIMARY KEY, n INT);\nINSERT INTO a.t VALUES (1, 0), (2, 0)",
    );
    let dir = Scratch::new("repo");
    let repo = new_repo(&dir);
    let mut holder = src.session();
    holder.exec("BEGIN").unwrap();
    holder
        .exec("UPDATE a.t SET n = n + 1 WHERE id = 1")
        .unwrap();
    let mut waiter = src.session();
    let waiting = std::thread::spawn(move || {
        waiter
            .exec("UPDATE a.t SET n = n + 10 WHERE id = 1")
            .map(drop)
    });
    let holding = std::thread::spawn(move || {
        // By now the backup is waiting to flush: a flush now would wait for the waiter's
        // statement, and this statement for the flush.
        std::thread::sleep(std::time::Duration::from_secs(3));
        holder.exec("UPDATE a.t SET n = n + 1 WHERE id = 2")?;
        holder.exec("COMMIT").map(drop)
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let started = std::time::Instant::now();
    let run = backup(&repo, &src.url(), &["--lock-wait-timeout", "30", "--json"]);
    run.expect_code(0);
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(15),
        "the backup took {took:?}"
    );
    holding.join().unwrap().unwrap();
    waiting.join().unwrap().unwrap();
    assert_eq!(src.value("SELECT SUM(n) FROM a.t").as_deref(), Some("12"));
    assert_eq!(snapshot_count(&repo), 1);
}

#[test]
fn ddl_during_the_dump_is_blocked_with_backup_admin_and_detected_without() {
    let src = TestServer::mysql97();
    load::prepare(&src, "sb", 2, 2000);
    src.sql(
        "CREATE USER 'nb'@'%' IDENTIFIED BY 'Nb-pass-1';\n\
         GRANT SELECT, RELOAD, LOCK TABLES, SHOW VIEW, TRIGGER, EVENT, REPLICATION CLIENT ON *.* TO 'nb'@'%'",
    );
    let dir = Scratch::new("repo");
    let repo = new_repo(&dir);
    let pause = [crate::support::failpoints(
        "dump-after-snapshot=sleep(3000)",
    )];

    // Root has BACKUP_ADMIN: the ALTER waits for the dump, which sees the old definition.
    let url = src.url();
    let backup = {
        let repo = repo.clone();
        std::thread::spawn(move || {
            crate::support::myvault_env(
                &["backup", "--repo", &repo, "--source", &url, "--json"],
                &pause,
            )
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let alter_started = std::time::Instant::now();
    src.sql("ALTER TABLE sb.sbtest1 ADD COLUMN extra INT");
    let waited = alter_started.elapsed();
    let run = backup.join().unwrap();
    run.expect_code(0);
    assert!(
        waited > std::time::Duration::from_millis(800),
        "the ALTER did not wait for the dump ({waited:?})"
    );

    // Without BACKUP_ADMIN the ALTER goes through and the dump notices.
    let url = src.url_as("nb", "Nb-pass-1");
    let backup = {
        let repo = repo.clone();
        std::thread::spawn(move || {
            crate::support::myvault_env(&["backup", "--repo", &repo, "--source", &url], &pause)
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(1500));
    src.sql("ALTER TABLE sb.sbtest2 ADD COLUMN extra INT");
    let run = backup.join().unwrap();
    run.expect_code(6);
    assert!(
        run.stderr.contains("sbtest2") && run.stderr.contains("during the dump"),
        "{}",
        run.stderr
    );
    assert_eq!(snapshot_count(&repo), 1, "only the first backup is visible");
}

#[test]
fn source_lost_in_the_middle_of_the_dump_leaves_no_snapshot() {
    let mut src = TestServer::mysql97();
    load::prepare(&src, "sb", 2, 2000);
    let dir = Scratch::new("repo");
    let repo = new_repo(&dir);
    let url = src.url();
    let backup = {
        let repo = repo.clone();
        std::thread::spawn(move || {
            crate::support::myvault_env(
                &["backup", "--repo", &repo, "--source", &url],
                &[crate::support::failpoints(
                    "dump-after-snapshot=sleep(2000)",
                )],
            )
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(1000));
    src.server.kill();
    let run = backup.join().unwrap();
    run.expect_code(3);
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    assert_eq!(snapshot_count(&repo), 0);
    myvault(&["verify", "--repo", &repo]).expect_code(0);
}

/// A restore killed after some chunks, run again, loads only the missing ones; the server
/// settings the first run changed (a larger redo log, `local_infile`) are put back to what
/// that first run found, not to what it left.
#[test]
fn killed_restore_run_again_finishes_without_duplicates() {
    let (src, _dir, repo) = sysbench_source(3, 30_000);
    // Small chunks so that the restore has many steps to be killed between.
    backup(&repo, &src.url(), &["--chunk-size", "1"]).expect_code(0);
    // A redo log smaller than three times the dump, and local_infile off: both are changed.
    let dst = TestServer::builder(crate::support::Flavor::Mysql97)
        .option("--innodb-redo-log-capacity=8M")
        .option("--local-infile=0")
        .start();
    let snapshot_size: u64 =
        myvault(&["list", "--repo", &repo, "--json"]).json()["snapshots"][0]["size"]
            .as_u64()
            .unwrap();
    let raised = (snapshot_size * 3).div_ceil(1 << 20) * (1 << 20);
    let setting = |name: &str| dst.value(&format!("SELECT @@GLOBAL.{name}")).unwrap();
    assert_eq!(setting("innodb_redo_log_capacity"), (8 << 20).to_string());
    assert_eq!(setting("local_infile"), "0");
    let killed = crate::support::myvault_env(
        &[
            "restore",
            "--repo",
            &repo,
            "--target",
            &dst.url(),
            "--jobs",
            "1",
        ],
        &[crate::support::failpoints("restore-after-chunk=abort(4)")],
    );
    assert_ne!(
        killed.code, 0,
        "the failpoint should have killed the restore"
    );
    assert_eq!(
        dst.value("SELECT COUNT(*) FROM myvault_restore.done WHERE item LIKE 'chunk:%'")
            .unwrap(),
        "4"
    );
    assert_eq!(setting("innodb_redo_log_capacity"), raised.to_string());
    assert_eq!(setting("local_infile"), "1");

    let rerun = myvault(&["restore", "--repo", &repo, "--target", &dst.url(), "--json"]);
    rerun.expect_code(0);
    assert_eq!(rerun.json()["resumed_chunks"], 4);
    assert_eq!(setting("innodb_redo_log_capacity"), (8 << 20).to_string());
    assert_eq!(setting("local_infile"), "0");
    let changes = &rerun.json()["server_settings"];
    let change = |name: &str| {
        changes
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing from {changes}"))
            .clone()
    };
    assert_eq!(
        change("innodb_redo_log_capacity")["before"],
        (8 << 20).to_string()
    );
    assert_eq!(
        change("innodb_redo_log_capacity")["during"],
        raised.to_string()
    );
    assert_eq!(change("local_infile")["before"], "0");
    assert_eq!(load::checksums(&src, "sb"), load::checksums(&dst, "sb"));
    for t in ["sbtest1", "sbtest2", "sbtest3"] {
        assert_eq!(
            dst.value(&format!("SELECT COUNT(*) FROM sb.{t}")).unwrap(),
            "30000"
        );
    }
}

/// Updating every 100th row changes every ~1 MiB chunk of the dump a little; the second
/// backup stores those chunks as deltas against the first one's and still restores exactly.
#[test]
fn spread_updates_cost_small_deltas_and_restore_exactly() {
    let (src, _dir, repo) = sysbench_source(2, 60_000);
    let new_bytes =
        |run: &crate::support::Run| run.json()["repos"][0]["new_bytes"].as_u64().unwrap();
    let first = backup(&repo, &src.url(), &["--json"]);
    first.expect_code(0);
    // A new table that sorts before the others: theirs keep their paths, so their edits
    // still find their previous versions (they were numbered by position before).
    src.sql("CREATE TABLE sb.aaa_new (id INT PRIMARY KEY);\nINSERT INTO sb.aaa_new VALUES (1)");
    src.sql("UPDATE sb.sbtest1 SET k = k + 1 WHERE id % 100 = 0;\nUPDATE sb.sbtest2 SET k = k + 1 WHERE id % 100 = 0");
    let second = backup(&repo, &src.url(), &["--json"]);
    second.expect_code(0);
    let (n1, n2) = (new_bytes(&first), new_bytes(&second));
    assert!(
        n2 * 10 < n1,
        "after updating 1% of rows spread out, {n2} new bytes of the first backup's {n1}"
    );
    myvault(&["verify", "--repo", &repo]).expect_code(0);
    let dst = TestServer::mysql97();
    let snapshot = second.json()["snapshot"].as_str().unwrap().to_string();
    myvault(&[
        "restore",
        "--repo",
        &repo,
        "--snapshot",
        &snapshot,
        "--target",
        &dst.url(),
    ])
    .expect_code(0);
    assert_eq!(load::checksums(&src, "sb"), load::checksums(&dst, "sb"));
}

/// `verify --restore-test` on a logical snapshot: loaded into a server of its own, every row
/// read back and counted against the dump; bad requests are refused before any work.
#[test]
fn restore_test_reads_a_logical_snapshot_back() {
    let (src, dir, repo) = sysbench_source(2, 3000);
    let taken = backup(&repo, &src.url(), &["--json"]);
    taken.expect_code(0);
    let tested = crate::support::restore_test(&repo, &[]);
    tested.expect_code(0);
    let t = &tested.json()["restore_test"];
    assert_eq!(t["method"], "logical");
    assert_eq!(t["rows"], 6000, "{t}");
    assert_eq!(t["rows_dumped"], 6000, "{t}");
    assert_eq!(
        t["gtid_executed"],
        taken.json()["gtid_executed"]
            .as_str()
            .unwrap()
            .replace('\n', "")
    );

    let no_binary = myvault(&["verify", "--repo", &repo, "--restore-test"]);
    no_binary.expect_code(2);
    assert!(
        no_binary.stderr.contains("--mysqld"),
        "{}",
        no_binary.stderr
    );
    let files = dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("a"), b"a").unwrap();
    myvault(&["backup", "--repo", &repo, "--path", files.to_str().unwrap()]).expect_code(0);
    let plain = crate::support::restore_test(&repo, &[]);
    plain.expect_code(2);
    assert!(plain.stderr.contains("plain files"), "{}", plain.stderr);
}
