//! Single-table point-in-time restore into the live server (issue 21 item 1), against real
//! MySQL 9.7 under a sysbench write load: one table restored beside itself to just before a
//! `DELETE` without `WHERE` equals its checksum recorded at that instant, from a logical and
//! from a clone snapshot; a table dropped, and one renamed, inside the window; a transaction
//! touching two tables of which one is restored. Nothing else on the live server changes: every
//! other table's checksum; its replica gets the restored tables (written to the binary log
//! under the server's own new GTIDs) and nothing else, or with --no-binlog nothing at all.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::load::{self, Load};
use crate::support::streamer::Streamer;
use crate::support::{Flavor, Scratch, TestServer, myvault, testbed};

pub(crate) fn now_rfc3339(src: &TestServer) -> String {
    let us: i64 = src
        .value("SELECT CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED)")
        .unwrap()
        .parse()
        .unwrap();
    chrono::DateTime::from_timestamp_micros(us)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

pub(crate) fn checksum(src: &TestServer, table: &str) -> String {
    src.session()
        .query(&format!("CHECKSUM TABLE {table}"))
        .unwrap()
        .first()
        .and_then(|r| r.text_at(1))
        .unwrap_or_else(|| panic!("no checksum of {table}"))
}

/// Every user table's checksum, by `db.table`.
fn all_checksums(src: &TestServer) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for db in ["sb", "shop"] {
        for (t, sum) in load::checksums(src, db) {
            out.insert(format!("{db}.{t}"), sum);
        }
    }
    out
}

pub(crate) fn databases(srv: &TestServer) -> Vec<String> {
    srv.session()
        .query("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA ORDER BY 1")
        .unwrap()
        .iter()
        .filter_map(|r| r.text_at(0))
        .collect()
}

/// A repository in a scratch directory of its own, `src`'s binlogs streamed into it.
pub(crate) struct Archive {
    pub dir: Scratch,
    pub repo: String,
    /// The testbed's MySQL 9.7 server binary.
    pub mysqld: String,
    streamer: Streamer,
}

impl Archive {
    pub fn start(tag: &str, src: &TestServer) -> Archive {
        let dir = Scratch::new(tag);
        let repo = dir.join("repo").to_str().unwrap().to_string();
        let mysqld = testbed()
            .path("MYVAULT_MYSQLD_97")
            .to_string_lossy()
            .into_owned();
        myvault(&["init", "--repo", &repo]).expect_code(0);
        let streamer = Streamer::start(&src.url(), &repo, &dir.join("spool"), &[]);
        Archive {
            dir,
            repo,
            mysqld,
            streamer,
        }
    }

    /// Stops the streamer once the archive holds everything `src` wrote so far.
    pub fn catch_up(mut self, src: &TestServer) -> (Scratch, String, String) {
        src.sql("FLUSH BINARY LOGS");
        assert_eq!(self.streamer.terminate(), 0, "{}", self.streamer.log_text());
        let spool = self.dir.join("spool");
        let mut drain = Streamer::start(&src.url(), &self.repo, &spool, &["--until-caught-up"]);
        assert_eq!(drain.wait(), 0, "{}", drain.log_text());
        (self.dir, self.repo, self.mysqld)
    }
}

/// A clone snapshot of `src` into `repo`: its id.
pub(crate) fn clone_backup(repo: &str, src: &TestServer, mysqld: &str) -> String {
    let clone = myvault(&[
        "backup",
        "--method",
        "clone",
        "--repo",
        repo,
        "--source",
        &src.url(),
        "--mysqld",
        mysqld,
        "--json",
    ]);
    clone.expect_code(0);
    clone.json()["snapshot"].as_str().unwrap().to_string()
}

const SCHEMA: &str = "CREATE DATABASE shop;
CREATE TABLE shop.customers (id INT PRIMARY KEY, name VARCHAR(40), balance INT NOT NULL DEFAULT 0);
CREATE TABLE shop.orders (id INT PRIMARY KEY AUTO_INCREMENT, customer INT, amount DECIMAL(10,2), note JSON,
  KEY by_customer (customer), CONSTRAINT orders_customer FOREIGN KEY (customer) REFERENCES shop.customers (id));
CREATE TABLE shop.notes (id INT PRIMARY KEY, body TEXT);
CREATE TABLE shop.doomed (id INT PRIMARY KEY, v DOUBLE);
CREATE TABLE shop.events (id INT NOT NULL, at DATE NOT NULL, what VARCHAR(20), PRIMARY KEY (id, at))
  PARTITION BY RANGE (YEAR(at)) (PARTITION p2024 VALUES LESS THAN (2025), PARTITION pmax VALUES LESS THAN MAXVALUE)";

#[test]
fn single_table_restores_beside_the_live_data_and_change_nothing_else() {
    let started = std::time::Instant::now();
    let src = TestServer::builder(Flavor::Mysql97).start();
    src.add_replication_user();
    load::prepare(&src, "sb", 2, 2000);
    src.sql(SCHEMA);
    let mut s = src.session();
    for i in 1..=50 {
        s.exec(&format!(
            "INSERT INTO shop.customers VALUES ({i}, 'c{i}', {i})"
        ))
        .unwrap();
        s.exec(&format!(
            "INSERT INTO shop.orders (customer, amount, note) VALUES ({i}, {i}.25, '{{\"n\": {i}}}')"
        ))
        .unwrap();
        s.exec(&format!(
            "INSERT INTO shop.notes VALUES ({i}, REPEAT('x', {i}))"
        ))
        .unwrap();
    }
    let replica = TestServer::builder(Flavor::Mysql97).start();
    replica.replicate_from(&src, "repl", "Repl-1");
    replica.sql("START REPLICA");

    let archive = Archive::start("single-table", &src);
    let load = Load::start(&src, "sb", 2, 2000, 1, 600);
    myvault(&["backup", "--repo", &archive.repo, "--source", &src.url()]).expect_code(0);
    let clone_id = clone_backup(&archive.repo, &src, &archive.mysqld);

    // Changes inside the window, one transaction touching orders and customers.
    for i in 1..=20 {
        s.exec(&format!(
            "UPDATE shop.orders SET amount = amount + 1 WHERE id = {i}"
        ))
        .unwrap();
    }
    s.exec("ALTER TABLE shop.orders ADD COLUMN flag INT NOT NULL DEFAULT 7")
        .unwrap();
    s.exec("UPDATE shop.orders SET flag = 1 WHERE id <= 5")
        .unwrap();
    s.exec("BEGIN").unwrap();
    s.exec("UPDATE shop.orders SET amount = 999.99 WHERE id = 30")
        .unwrap();
    s.exec("UPDATE shop.customers SET balance = balance - 999 WHERE id = 30")
        .unwrap();
    s.exec("COMMIT").unwrap();
    s.exec("INSERT INTO shop.orders (customer, amount) VALUES (7, 7.5)")
        .unwrap();
    for i in 1..=30 {
        s.exec(&format!(
            "INSERT INTO shop.events VALUES ({i}, '202{}-06-01', 'e{i}')",
            3 + i % 3
        ))
        .unwrap();
    }
    let orders_at_t = checksum(&src, "shop.orders");
    let events_at_t = checksum(&src, "shop.events");
    let t = now_rfc3339(&src);
    std::thread::sleep(Duration::from_millis(20));
    // The bad statement, and more writes to the table and others after it.
    s.exec("DELETE FROM shop.orders").unwrap();
    s.exec("DELETE FROM shop.events WHERE id > 10").unwrap();
    s.exec("INSERT INTO shop.orders (customer, amount) VALUES (1, 1.0), (2, 2.0)")
        .unwrap();
    s.exec("UPDATE shop.customers SET balance = 0").unwrap();

    // A table renamed inside the window, written under both names.
    s.exec("INSERT INTO shop.notes VALUES (100, 'before the rename')")
        .unwrap();
    s.exec("RENAME TABLE shop.notes TO shop.notes_old").unwrap();
    s.exec("UPDATE shop.notes_old SET body = 'after the rename' WHERE id <= 10")
        .unwrap();
    let notes_at_t2 = checksum(&src, "shop.notes_old");
    let t2 = now_rfc3339(&src);
    std::thread::sleep(Duration::from_millis(20));
    s.exec("DELETE FROM shop.notes_old WHERE id > 5").unwrap();

    // A table dropped at the end of its window: its last state is before the DROP.
    for i in 1..=30 {
        s.exec(&format!("INSERT INTO shop.doomed VALUES ({i}, {i} / 7)"))
            .unwrap();
    }
    s.exec("TRUNCATE TABLE shop.doomed").unwrap();
    for i in 1..=20 {
        s.exec(&format!("INSERT INTO shop.doomed VALUES ({i}, {i} / 3)"))
            .unwrap();
    }
    s.exec("UPDATE shop.doomed SET v = -v WHERE id % 3 = 0")
        .unwrap();
    let doomed_before_drop = checksum(&src, "shop.doomed");
    load.stop();
    load::wait_for_idle(&src, "sb");
    let before_drop = src.gtid_executed();
    s.exec("DROP TABLE shop.doomed").unwrap();
    let drop_gtid = src.gtid_executed().subtract(&before_drop).to_string();
    s.exec("INSERT INTO shop.customers VALUES (51, 'late', 0)")
        .unwrap();
    let (dir, repo, mysqld) = archive.catch_up(&src);

    let live = all_checksums(&src);
    let live_gtids = src.gtid_executed();
    let src_url = src.url();
    // `restore --tables TABLE FLAG BOUNDARY --into-database DB EXTRA...` into the source.
    let restore_into = |table: &str, flag: &str, boundary: &str, db: &str, extra: &[&str]| {
        let mut args = vec![
            "restore",
            "--repo",
            &repo,
            "--target",
            &src_url,
            "--json",
            "--tables",
            table,
            flag,
            boundary,
            "--into-database",
            db,
        ];
        args.extend_from_slice(extra);
        myvault(&args)
    };
    let restore = |extra: &[&str]| {
        let mut args = vec!["restore", "--repo", &repo, "--target", &src_url, "--json"];
        args.extend_from_slice(extra);
        myvault(&args)
    };

    // The plan: what touches the table, what is left out, the foreign key it cannot keep.
    let plan_args = [
        "restore",
        "--repo",
        &repo,
        "--tables",
        "shop.orders",
        "--to-time",
        &t,
        "--into-database",
        "shop_restored",
        "--plan",
    ];
    let plan = myvault(&[&plan_args[..], &["--json"]].concat());
    plan.expect_code(0);
    // The same plan for a person: what is created where, what touches it, what is left out.
    let text = myvault(&plan_args);
    text.expect_code(0);
    for line in [
        "`shop`.`orders` -> `shop_restored`.`orders`",
        "touch these tables (only their part is applied)",
        "inside the window: `shop`.`orders` altered",
        "warning: `shop`.`orders` has a foreign key to `shop`.`customers`",
    ] {
        assert!(text.stdout.contains(line), "{line}:\n{}", text.stdout);
    }
    let p = plan.json();
    assert_eq!(p["engine"], "sql", "{p}");
    assert_eq!(
        p["tables"][0]["destination"], "`shop_restored`.`orders`",
        "{p}"
    );
    assert!(p["transactions_touching"].as_u64().unwrap() >= 24, "{p}");
    assert!(p["transactions_left_out"].as_u64().unwrap() > 0, "{p}");
    assert!(
        p["ddl"].to_string().contains("`shop`.`orders` altered"),
        "{p}"
    );
    let warnings = p["warnings"].to_string();
    assert!(
        warnings.contains("`shop`.`customers`, which is not restored"),
        "{warnings}"
    );

    // A production server with LOAD DATA LOCAL off: switched on for the loads, put back.
    src.sql("SET GLOBAL local_infile = OFF");

    // The bad DELETE undone beside the table, from the logical snapshot.
    let orders = |db: &str, extra: &[&str]| restore_into("shop.orders", "--to-time", &t, db, extra);
    orders("shop_restored", &[]).expect_code(0);
    assert_eq!(checksum(&src, "shop_restored.orders"), orders_at_t);
    // Of the transaction that changed orders and customers, only the orders part came.
    assert_eq!(load::checksums(&src, "shop_restored").len(), 1);
    // A second run refuses to overwrite it, naming it, with its own exit code.
    let again = orders("shop_restored", &[]);
    again.expect_code(16);
    assert!(
        again
            .stderr
            .contains("`shop_restored`.`orders` already exists")
            && again.stderr.trim().lines().count() == 1,
        "{}",
        again.stderr
    );
    restore(&[
        "--tables",
        "shop.orders",
        "--to-time",
        &t,
        "--rename",
        "shop.orders=shop_restored.orders",
        "--replace-existing",
    ])
    .expect_code(0);
    assert_eq!(checksum(&src, "shop_restored.orders"), orders_at_t);

    // The same from the clone snapshot, through a temporary server in the test's scratch.
    let scratch = dir.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let scratch = scratch.to_str().unwrap();
    let clone_args = [
        "--snapshot",
        &clone_id,
        "--mysqld",
        &mysqld,
        "--scratch-dir",
        scratch,
    ];
    // Written to the binary log, the tables are copied logically (a replica could not
    // import a tablespace).
    let logical_copy = orders("shop_clone", &clone_args);
    logical_copy.expect_code(0);
    let report = logical_copy.json();
    assert_eq!(report["copy_method"], "logical", "{report}");
    assert!(
        report["copy_method_why"]
            .as_str()
            .unwrap()
            .contains("binary log"),
        "{report}"
    );
    assert_eq!(checksum(&src, "shop_clone.orders"), orders_at_t);
    // Kept out of the binary log, as tablespace files (the server's data directory is here).
    let transport_args = [
        &clone_args[..],
        &["--no-binlog", "--copy-method", "transport"],
    ]
    .concat();
    // A partitioned table goes with it, partition by partition.
    let transported = restore_into(
        "shop.orders,shop.events",
        "--to-time",
        &t,
        "shop_transport",
        &transport_args,
    );
    transported.expect_code(0);
    assert_eq!(transported.json()["copy_method"], "transport");
    assert_eq!(checksum(&src, "shop_transport.orders"), orders_at_t);
    assert_eq!(checksum(&src, "shop_transport.events"), events_at_t);
    // Asked for where not allowed (written to the binary log): a usage error naming why.
    let refused = restore_into(
        "shop.orders",
        "--to-time",
        &t,
        "shop_refused",
        &[&clone_args[..], &["--copy-method", "transport"]].concat(),
    );
    refused.expect_code(2);
    assert!(
        refused
            .stderr
            .contains("--copy-method transport is not possible")
            && refused.stderr.contains("--no-binlog"),
        "{}",
        refused.stderr
    );
    let left: Vec<_> = std::fs::read_dir(scratch).unwrap().collect();
    assert!(
        left.is_empty(),
        "the temporary server's files stay: {left:?}"
    );

    // Renamed inside the window: followed to its new name, restored under its old one; kept
    // out of the binary log, so the server's GTIDs do not move and the replica gets nothing.
    let before_no_binlog = src.gtid_executed();
    restore_into(
        "shop.notes",
        "--to-time",
        &t2,
        "shop_renamed",
        &["--no-binlog"],
    )
    .expect_code(0);
    assert_eq!(checksum(&src, "shop_renamed.notes"), notes_at_t2);
    assert_eq!(src.gtid_executed(), before_no_binlog);

    // Dropped: up to the DROP it is refused (nothing would be left), just before it restored.
    let dropped = restore_into("shop.doomed", "--to-gtid", &drop_gtid, "shop_dropped", &[]);
    dropped.expect_code(2);
    let hint = format!("--before-gtid {drop_gtid}");
    assert!(dropped.stderr.contains(&hint), "{}", dropped.stderr);
    restore_into(
        "shop.doomed",
        "--before-gtid",
        &drop_gtid,
        "shop_dropped",
        &[],
    )
    .expect_code(0);
    assert_eq!(checksum(&src, "shop_dropped.doomed"), doomed_before_drop);

    // Nothing else on the live server changed, and no staging database is left.
    assert_eq!(all_checksums(&src), live);
    assert_eq!(
        src.value("SELECT @@GLOBAL.local_infile").as_deref(),
        Some("0")
    );
    let on_source = databases(&src);
    assert!(
        !on_source
            .iter()
            .any(|d| d.starts_with("_myvault_restore") || d == "myvault_restore"),
        "{on_source:?}"
    );
    // The restores wrote under the server's own new GTIDs (one server UUID, no source's),
    // and its replica follows: the restored tables, equal, nothing else changed.
    let uuid = src.value("SELECT @@server_uuid").unwrap();
    let written = src.gtid_executed().subtract(&live_gtids).to_string();
    assert!(
        written.starts_with(&format!("{uuid}:")) && !written.contains(','),
        "{written}"
    );
    let end_gtids = src.gtid_executed();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while replica.gtid_executed() != end_gtids {
        assert!(
            std::time::Instant::now() < deadline,
            "the replica did not catch up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(all_checksums(&replica), live);
    for db in ["shop_restored", "shop_clone", "shop_dropped"] {
        assert_eq!(
            load::checksums(&replica, db),
            load::checksums(&src, db),
            "{db} on the replica"
        );
    }
    let on_replica = databases(&replica);
    let expected: Vec<String> = on_source
        .into_iter()
        .filter(|d| d != "shop_renamed" && d != "shop_transport")
        .collect();
    assert_eq!(on_replica, expected);
    assert!(
        replica
            .value("SELECT LAST_ERROR_NUMBER FROM performance_schema.replication_applier_status_by_worker LIMIT 1")
            .is_none_or(|e| e == "0"),
        "the replica's applier failed"
    );
    eprintln!(
        "single-table test: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
