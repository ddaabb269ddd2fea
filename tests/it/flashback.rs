//! `myvault flashback` and `myvault binlog search` against real MySQL 9.7: a bad
//! `DELETE FROM t` found in the archive and undone while sysbench writes to other tables;
//! a flashback of several transactions killed between and inside them, finished by
//! running it again; rows changed since refused (and skipped
//! with --force); DDL refused; a 100k-row UPDATE undone in bounded memory; a table of every
//! column type back to its checksum after an update, a delete and an insert are undone.

use std::collections::BTreeMap;

use myvault::mysql::gtid::GtidSet;

use crate::support::load::{self, Load};
use crate::support::streamer;
use crate::support::{Background, Flavor, Scratch, TestServer, myvault};

/// The GTID of the transaction `sql` (statements separated by `;\n`) made, read from the
/// session's own last transaction, so other writers (sysbench) do not blur it.
fn run_one(src: &TestServer, sql: &str) -> String {
    let mut s = src.session();
    for stmt in sql.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
        s.exec(stmt)
            .unwrap_or_else(|e| panic!("`{stmt}` failed: {e}"));
    }
    let gtid = s
        .query_value(
            "SELECT GTID FROM performance_schema.events_transactions_current \
             WHERE THREAD_ID = PS_CURRENT_THREAD_ID() AND STATE = 'COMMITTED'",
        )
        .unwrap()
        .unwrap_or_else(|| panic!("`{sql}` committed no transaction"));
    let set = myvault::mysql::gtid::GtidSet::parse(&gtid).unwrap();
    assert!(
        set.count() == 1 && set.is_subset(&src.gtid_executed()),
        "`{sql}` made {gtid}"
    );
    gtid
}

fn took(what: &str, started: std::time::Instant) {
    eprintln!("{what}: {:.1} s", started.elapsed().as_secs_f64());
}

fn checksum(src: &TestServer, table: &str) -> String {
    src.session()
        .query(&format!("CHECKSUM TABLE {table}"))
        .expect("checksum")
        .first()
        .and_then(|r| r.text_at(1))
        .expect("a checksum")
}

struct Bed {
    src: TestServer,
    dir: Scratch,
    repo: String,
}

impl Bed {
    fn start(tag: &str, options: &[&str]) -> Bed {
        let mut b = TestServer::builder(Flavor::Mysql97);
        for o in options {
            b = b.option(o);
        }
        let src = b.start();
        let dir = Scratch::new(tag);
        let repo = dir.join("repo").to_str().unwrap().to_string();
        myvault(&["init", "--repo", &repo]).expect_code(0);
        Bed { src, dir, repo }
    }

    /// Archives everything the server has written so far.
    fn archive(&self) {
        streamer::drain(&self.src, &self.repo, &self.dir.join("spool"));
    }

    fn flashback(&self, extra: &[&str]) -> crate::support::Run {
        let url = self.src.url();
        let mut args = vec!["flashback", "--repo", &self.repo, "--target", &url];
        args.extend_from_slice(extra);
        myvault(&args)
    }
}

fn schema(src: &TestServer) {
    src.sql(
        "CREATE DATABASE fb;
         SET SESSION cte_max_recursion_depth = 200000;
         CREATE TABLE fb.t (id INT PRIMARY KEY, k INT NOT NULL, c VARCHAR(60), pad CHAR(20), KEY (k));
         CREATE TABLE fb.u (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(30));
         INSERT INTO fb.t WITH RECURSIVE s AS (SELECT 1 AS i UNION ALL SELECT i + 1 FROM s WHERE i < 2000)
           SELECT i, i % 97, CONCAT('row ', i), IF(i % 3 = 0, NULL, 'p') FROM s;
         INSERT INTO fb.u (v) VALUES ('a'), ('b'), ('c');",
    );
}

#[test]
fn flashback_undoes_a_delete_without_where_found_by_binlog_search() {
    let started = std::time::Instant::now();
    let bed = Bed::start("flashback", &[]);
    let src = &bed.src;
    src.add_replication_user();
    let replica = TestServer::builder(Flavor::Mysql97).start();
    replica.replicate_from(src, "repl", "Repl-1");
    // Other tables of the same server under a sysbench write load through the bad
    // statement, the writes after it, and the flashback. (It pauses while the archive
    // catches up: `--until-caught-up` waits for an idle moment of the server.)
    load::prepare(src, "sb", 2, 1000);
    let sysbench = Load::start(src, "sb", 2, 1000, 1, 600);
    schema(src);
    // Writes to both tables, then the bad statement, then more writes elsewhere.
    src.sql("UPDATE fb.t SET c = 'changed' WHERE id % 100 = 0;\nINSERT INTO fb.u (v) VALUES ('d')");
    let before_delete = checksum(src, "fb.t");
    let bad = run_one(src, "DELETE FROM fb.t");
    src.sql("INSERT INTO fb.u (v) VALUES ('e'), ('f');\nUPDATE fb.u SET v = 'B' WHERE id = 2");
    let ddl = run_one(src, "CREATE TABLE fb.later (i INT PRIMARY KEY)");
    let u_now = checksum(src, "fb.u");
    sysbench.stop();
    load::wait_for_idle(src, "sb");
    bed.archive();
    let sysbench = Load::start(src, "sb", 2, 1000, 1, 600);

    // binlog search names the DELETE with its GTID and row count.
    let found = myvault(&[
        "binlog", "search", "--repo", &bed.repo, "--table", "fb.t", "--json",
    ]);
    found.expect_code(0);
    let txs = found.json()["transactions"].as_array().unwrap().clone();
    let delete = txs
        .iter()
        .find(|t| t["gtid"] == bad.as_str())
        .unwrap_or_else(|| panic!("{bad} not listed: {}", found.stdout));
    assert_eq!(delete["kinds"], serde_json::json!(["DELETE"]));
    assert_eq!(delete["tables"][0]["table"], "fb.t");
    assert_eq!(delete["tables"][0]["deleted"], 2000);
    assert!(
        txs.iter()
            .any(|t| t["kinds"].as_array().unwrap().contains(&"DDL".into())),
        "the CREATE TABLE of fb.t"
    );
    assert!(
        !txs.iter().any(|t| t["gtid"] == ddl.as_str()),
        "fb.later is another table"
    );
    // The text form names it too.
    let text = myvault(&["binlog", "search", "--repo", &bed.repo, "--table", "fb.t"]);
    assert!(
        text.stdout.contains(&bad) && text.stdout.contains("2000 del"),
        "{}",
        text.stdout
    );

    // --plan prints the inverse and changes nothing.
    let plan = bed.flashback(&["--gtid", &bad, "--plan"]);
    plan.expect_code(0);
    assert!(
        plan.stdout.contains("INSERT INTO `fb`.`t`"),
        "{}",
        plan.stdout
    );
    assert_eq!(src.value("SELECT COUNT(*) FROM fb.t").as_deref(), Some("0"));

    // DDL in the selection is refused, and nothing changes.
    let refused = bed.flashback(&["--gtid", &ddl]);
    refused.expect_code(12);
    assert!(refused.stderr.contains("DDL"), "{}", refused.stderr);

    let before = src.gtid_executed();
    let done = bed.flashback(&["--gtid", &bad, "--json"]);
    done.expect_code(0);
    assert_eq!(
        checksum(src, "fb.t"),
        before_delete,
        "fb.t is back as before the DELETE"
    );
    assert_eq!(checksum(src, "fb.u"), u_now, "fb.u untouched");
    // Applied as an ordinary transaction of the target: one new GTID, which replicas get.
    let new = done.json()["new_gtids"].as_str().unwrap().to_string();
    let new_set = GtidSet::parse(&new).unwrap();
    assert_eq!(new_set.count(), 1, "{new}");
    assert!(
        new_set.is_subset(&src.gtid_executed().subtract(&before)),
        "{new}"
    );
    // In the archive: the flashback's transaction changed fb.t and nothing else, while
    // sysbench's went on beside it.
    sysbench.stop();
    load::wait_for_idle(src, "sb");
    bed.archive();
    let search = |table: &str| -> Vec<serde_json::Value> {
        let r = myvault(&[
            "binlog", "search", "--repo", &bed.repo, "--table", table, "--json",
        ]);
        r.expect_code(0);
        r.json()["transactions"].as_array().unwrap().clone()
    };
    let undo: Vec<_> = search("fb.t")
        .into_iter()
        .filter(|t| t["gtid"] == new.as_str())
        .collect();
    assert_eq!(undo.len(), 1, "{undo:?}");
    assert_eq!(undo[0]["tables"].as_array().unwrap().len(), 1, "{undo:?}");
    assert_eq!(undo[0]["tables"][0]["table"], "fb.t");
    assert_eq!(undo[0]["tables"][0]["inserted"], 2000);
    for table in ["sb.sbtest1", "sb.sbtest2", "fb.u"] {
        let txs = search(table);
        assert!(
            !txs.iter().any(|t| t["gtid"] == new.as_str()),
            "the flashback touched {table}"
        );
        if table.starts_with("sb.") {
            assert!(txs.len() > 10, "sysbench wrote to {table}: {}", txs.len());
        }
    }
    // The replica follows: it applies the undoing transaction like any other.
    replica.replicate_until(&src.gtid_executed().to_string());
    assert_eq!(
        checksum(&replica, "fb.t"),
        before_delete,
        "the replica's fb.t is back too"
    );
    took("flashback under sysbench load", started);
}

#[test]
fn flashback_refuses_rows_changed_since_and_force_skips_them() {
    let bed = Bed::start("flashback-conflict", &[]);
    let src = &bed.src;
    schema(src);
    let at = |d: i64| {
        let us: i64 = src
            .value("SELECT CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED)")
            .unwrap()
            .parse()
            .unwrap();
        chrono::DateTime::from_timestamp_micros(us + d)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string()
    };
    let from = at(-1);
    let before_bad = checksum(src, "fb.t");
    // The bad transaction: a DELETE and an UPDATE of fb.t, and a write to fb.u.
    src.sql(
        "BEGIN;
         DELETE FROM fb.t WHERE id <= 50;
         UPDATE fb.t SET c = 'bad' WHERE id BETWEEN 51 AND 60;
         INSERT INTO fb.u (v) VALUES ('x');
         COMMIT;",
    );
    let to = at(0);
    std::thread::sleep(std::time::Duration::from_millis(20));
    // Later: a deleted key comes back, an updated row changes again, a neighbour changes.
    src.sql(
        "INSERT INTO fb.t VALUES (10, 1, 'new ten', NULL);
         UPDATE fb.t SET k = k + 1 WHERE id = 55;
         UPDATE fb.t SET c = 'neighbour' WHERE id = 70;",
    );
    bed.archive();
    let window = ["--from-time", &from, "--to-time", &to, "--tables", "fb.t"];
    let unchanged = checksum(src, "fb.t");
    let refused = bed.flashback(&window);
    refused.expect_code(15);
    assert!(
        refused.stderr.contains("fb.t (id=10)"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("fb.t (id=55)"),
        "{}",
        refused.stderr
    );
    assert!(!refused.stderr.contains("id=70"), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("nothing was changed"),
        "{}",
        refused.stderr
    );
    assert_eq!(checksum(src, "fb.t"), unchanged, "nothing changed");

    let mut args = window.to_vec();
    args.extend(["--force", "--json"]);
    let forced = bed.flashback(&args);
    forced.expect_code(0);
    let skipped: Vec<String> = forced.json()["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["row"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(skipped, vec!["fb.t (id=55)", "fb.t (id=10)"]);
    // Each transaction says how many of its rows were left, not only the list at the end.
    let left: u64 = forced.json()["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["rows_skipped"].as_u64().unwrap())
        .sum();
    assert_eq!(left, 2, "{}", forced.stdout);
    // Everything else is back; the two skipped rows keep their later values.
    assert_eq!(
        src.value("SELECT COUNT(*) FROM fb.t").as_deref(),
        Some("2000")
    );
    assert_eq!(
        src.value("SELECT c FROM fb.t WHERE id = 10").as_deref(),
        Some("new ten")
    );
    assert_eq!(
        src.value("SELECT COUNT(*) FROM fb.t WHERE c = 'bad'")
            .as_deref(),
        Some("1")
    );
    src.sql(
        "DELETE FROM fb.t WHERE id = 10;
         INSERT INTO fb.t VALUES (10, 10, 'row 10', 'p');
         UPDATE fb.t SET k = 55, c = 'row 55' WHERE id = 55;
         UPDATE fb.t SET c = 'row 70' WHERE id = 70;",
    );
    assert_eq!(
        checksum(src, "fb.t"),
        before_bad,
        "with those two put right by hand, fb.t is as before"
    );
    // fb.u was not chosen (--tables fb.t): its row stays.
    assert_eq!(
        src.value("SELECT COUNT(*) FROM fb.u WHERE v = 'x'")
            .as_deref(),
        Some("1")
    );
}

/// Peak resident memory of a running process, KiB (VmHWM), polled until it exits.
fn run_measured(args: &[&str]) -> (crate::support::Run, u64) {
    let mut bg = Background::start(args, &[]);
    let mut peak = 0;
    while bg.running() {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", bg.pid())).unwrap_or_default();
        if let Some(v) = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
        {
            peak = peak.max(v);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    (bg.finish(), peak)
}

#[test]
fn flashback_of_a_100k_row_update_stays_in_bounded_memory() {
    let bed = Bed::start("flashback-big", &["--binlog-transaction-compression=ON"]);
    let src = &bed.src;
    src.sql(
        "CREATE DATABASE fb;
         SET SESSION cte_max_recursion_depth = 200000;
         CREATE TABLE fb.big (id INT PRIMARY KEY, v INT, pad CHAR(200));
         INSERT INTO fb.big WITH RECURSIVE s AS (SELECT 1 AS i UNION ALL SELECT i + 1 FROM s WHERE i < 100000)
           SELECT i, i, REPEAT(CHAR(65 + i % 26), 200) FROM s;",
    );
    let before = checksum(src, "fb.big");
    let bad = run_one(src, "UPDATE fb.big SET v = v + 1, pad = REPEAT('z', 200)");
    bed.archive();
    // The transaction's row images: 100k rows, before and after, ~210 bytes each.
    let images_kib = 100_000 * 2 * 210 / 1024;
    let url = src.url();
    let started = std::time::Instant::now();
    let (run, peak_kib) = run_measured(&[
        "flashback",
        "--repo",
        &bed.repo,
        "--target",
        &url,
        "--gtid",
        &bad,
        "--json",
    ]);
    run.expect_code(0);
    eprintln!(
        "flashback of a 100k-row UPDATE: {:.1} s, peak RSS {} KiB (row images {} KiB)",
        started.elapsed().as_secs_f64(),
        peak_kib,
        images_kib
    );
    assert_eq!(checksum(src, "fb.big"), before);
    assert!(
        peak_kib < 64 * 1024 && peak_kib < images_kib,
        "peak RSS {peak_kib} KiB for {images_kib} KiB of row images"
    );
}

#[test]
fn flashback_round_trips_every_column_type() {
    // Minimal table-map metadata (names from information_schema), compressed transactions.
    let bed = Bed::start("flashback-types", &["--binlog-transaction-compression=ON"]);
    let src = &bed.src;
    src.sql(
        "CREATE DATABASE fx;
         CREATE TABLE fx.alltypes (
           id INT PRIMARY KEY,
           ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED,
           mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, bi BIGINT, biu BIGINT UNSIGNED,
           dec1 DECIMAL(10,2), dec2 DECIMAL(30,10), f FLOAT, d DOUBLE,
           b13 BIT(13), b64 BIT(64), y YEAR, dt DATE, dtm DATETIME, dtm6 DATETIME(6),
           ts TIMESTAMP NULL, ts6 TIMESTAMP(6) NULL, tm TIME, tm4 TIME(4),
           c CHAR(10), cbig CHAR(100) CHARACTER SET utf8mb4, vc VARCHAR(300), bn BINARY(4), vb VARBINARY(50),
           vl VARCHAR(20) CHARACTER SET latin1, ci VARCHAR(20) COLLATE utf8mb4_0900_ai_ci,
           tb TINYBLOB, bl BLOB, mb MEDIUMBLOB, tx TEXT, lt LONGTEXT,
           e ENUM('a','b','c'), s SET('x','y','z'), j JSON, g GEOMETRY, pt POINT SRID 4326, v VECTOR(3),
           gen INT AS (i + 1) VIRTUAL, gens VARCHAR(40) AS (CONCAT(c, '!')) STORED
         );
         INSERT INTO fx.alltypes (id, ti, tiu, si, siu, mi, miu, i, iu, bi, biu, dec1, dec2, f, d, b13, b64, y, dt, dtm, dtm6,
           ts, ts6, tm, tm4, c, cbig, vc, bn, vb, vl, ci, tb, bl, mb, tx, lt, e, s, j, g, pt, v) VALUES
          (1, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295, -9223372036854775808,
           18446744073709551615, -12345678.91, 12345678901234567890.0123456789, 1.1, -2.25e-300,
           b'1010101010101', b'1111111111111111111111111111111111111111111111111111111111111111', 2155,
           '2024-02-29', '9999-12-31 23:59:59', '2024-01-02 03:04:05.123456', '2038-01-19 03:14:07',
           '2024-06-01 12:00:00.654321', '-838:59:59', '12:34:56.7891', 'abc', 'héllo wörld',
           REPEAT('v', 300), X'0102', X'00FF10', 'caf\\u00e9', 'MiXeD', X'00', 'blob', REPEAT('m', 700),
           'text \\'quoted\\' \\\\ back', 'long', 'b', 'x,z',
           '{\"a\": [1, 2.5, \"s\", true, false, null, {\"n\": -7}], \"big\": 12345678901234, \"u\": \"\\\\u00e9\"}',
           ST_GeomFromText('LINESTRING(0 0, 1 1, 2 1)'), ST_GeomFromText('POINT(45 7)', 4326),
           STRING_TO_VECTOR('[1.5, -2, 3.25]')),
          (2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0.05, 0, 0.1, 0.1, 0, 0, 0, '1000-01-01', '1000-01-01 00:00:00',
           '1000-01-01 00:00:00.000001', '1970-01-01 00:00:01', '1970-01-01 00:00:01.5', '00:00:00', '-00:00:00.5',
           '', '', '', X'', X'', '', 'a ', '', '', '', '', '', 'a', '', '[]', ST_GeomFromText('POINT(0 0)'),
           ST_GeomFromText('POINT(0 0)', 4326), STRING_TO_VECTOR('[0, 0, 0]'));
         INSERT INTO fx.alltypes (id) VALUES (3);",
    );
    let original = checksum(src, "fx.alltypes");
    let bad = run_one(
        src,
        "BEGIN;
         UPDATE fx.alltypes SET ti = 5, tiu = 6, i = i + 1, dec2 = 1.5, f = 2.5, d = 3.5, b64 = 5, y = 2000,
           dtm6 = '2000-01-01 00:00:00.5', ts6 = '2001-01-01 00:00:00', tm4 = '01:02:03.4', c = 'up',
           cbig = 'ü', vc = 'vc', bn = X'AA', vb = X'BB', vl = 'l', ci = 'mixed', bl = 'b2', tx = 't2',
           e = 'c', s = 'y', j = JSON_SET(COALESCE(j, '{}'), '$.n', 1.25), g = ST_GeomFromText('POINT(9 9)'),
           pt = ST_GeomFromText('POINT(10 20)', 4326), v = STRING_TO_VECTOR('[9, 9, 9]');
         DELETE FROM fx.alltypes WHERE id = 2;
         INSERT INTO fx.alltypes (id, c, j) VALUES (4, 'new', '{\"k\": \"v\"}');
         COMMIT;",
    );
    assert_ne!(checksum(src, "fx.alltypes"), original);
    bed.archive();
    let done = bed.flashback(&["--gtid", &bad]);
    done.expect_code(0);
    let rows = |s: &TestServer| -> BTreeMap<String, String> {
        s.session()
            .query("SELECT id, HEX(CONCAT_WS('|', ti, tiu, i, dec2, f, d, b64, y, dtm6, ts6, tm4, c, cbig, vc, HEX(bn), HEX(vb), vl, ci, bl, tx, e, s, j, ST_AsText(g), ST_AsText(pt), VECTOR_TO_STRING(v), gen, gens)) FROM fx.alltypes")
            .unwrap()
            .iter()
            .map(|r| (r.text_at(0).unwrap(), r.text_at(1).unwrap_or_default()))
            .collect()
    };
    assert_eq!(
        checksum(src, "fx.alltypes"),
        original,
        "rows now: {:?}",
        rows(src)
    );
}

#[test]
fn flashback_refuses_partial_row_images_and_partial_json() {
    let bed = Bed::start(
        "flashback-partial",
        &["--binlog-row-value-options=PARTIAL_JSON"],
    );
    let src = &bed.src;
    src.sql(
        "CREATE DATABASE fb;
         CREATE TABLE fb.j (id INT PRIMARY KEY, n INT, doc JSON);
         INSERT INTO fb.j VALUES (1, 1, '{\"a\": 1, \"b\": \"long enough to be worth a diff\"}'), (2, 2, '[]');",
    );
    let minimal = run_one(
        src,
        "SET SESSION binlog_row_image = 'MINIMAL', binlog_row_value_options = '';\nUPDATE fb.j SET n = 10 WHERE id = 1",
    );
    let partial = run_one(
        src,
        "SET SESSION binlog_row_image = 'MINIMAL';\nUPDATE fb.j SET doc = JSON_SET(doc, '$.a', 2) WHERE id = 1",
    );
    bed.archive();
    let unchanged = checksum(src, "fb.j");
    let refused = bed.flashback(&["--gtid", &minimal]);
    refused.expect_code(12);
    assert!(
        refused.stderr.contains("binlog_row_image is not FULL"),
        "{}",
        refused.stderr
    );
    let refused = bed.flashback(&["--gtid", &partial]);
    refused.expect_code(12);
    assert!(
        refused.stderr.contains("PARTIAL_JSON"),
        "{}",
        refused.stderr
    );
    assert_eq!(checksum(src, "fb.j"), unchanged);
}

/// Four bad transactions on fb.t, newer ones touching rows older ones changed, then one
/// whose changes cancel out (a row deleted and inserted back identical, one updated and
/// set back); their GTIDs, oldest first, the cancelling one last.
fn bad_transactions(src: &TestServer) -> Vec<String> {
    vec![
        run_one(src, "DELETE FROM fb.t WHERE id BETWEEN 1 AND 300"),
        run_one(
            src,
            "UPDATE fb.t SET c = CONCAT(c, ' bad') WHERE id BETWEEN 301 AND 600",
        ),
        run_one(
            src,
            "INSERT INTO fb.t SELECT id + 5000, k, c, pad FROM fb.t WHERE id BETWEEN 601 AND 800",
        ),
        run_one(
            src,
            "BEGIN;
             UPDATE fb.t SET k = k + 1000 WHERE id BETWEEN 551 AND 700;
             DELETE FROM fb.t WHERE id BETWEEN 5601 AND 5650;
             COMMIT",
        ),
        run_one(
            src,
            "BEGIN;
             DELETE FROM fb.t WHERE id = 1999;
             INSERT INTO fb.t VALUES (1999, 59, 'row 1999', 'p');
             UPDATE fb.t SET c = 'tmp' WHERE id = 1998;
             UPDATE fb.t SET c = 'row 1998' WHERE id = 1998;
             COMMIT",
        ),
    ]
}

/// How a round kills the first run.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// After the second undoing transaction committed.
    BetweenTransactions,
    /// Before the third one's COMMIT (the server rolls it back).
    BeforeCommit,
    /// kill -9 after this many milliseconds.
    At(u64),
}

#[test]
fn flashback_killed_midway_finishes_when_run_again_without_undoing_twice() {
    let started = std::time::Instant::now();
    let bed = Bed::start("flashback-resume", &[]);
    let src = &bed.src;
    schema(src);
    let url = src.url();
    // Random, but reproducible from the seed printed on failure.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let random_ms = 100 + seed % 1500;
    eprintln!("random kill after {random_ms} ms (seed {seed})");
    for kill in [
        Kill::BetweenTransactions,
        Kill::BeforeCommit,
        Kill::At(random_ms),
    ] {
        let good = checksum(src, "fb.t");
        let bad = bad_transactions(src);
        bed.archive();
        let set = bad.join(",");
        let start = src.gtid_executed();

        let args = [
            "flashback",
            "--repo",
            &bed.repo,
            "--target",
            &url,
            "--gtid",
            &set,
            "--json",
        ];
        let first = match kill {
            Kill::BetweenTransactions => crate::support::myvault_env(
                &args,
                &[crate::support::failpoints("flashback-between-tx=abort(2)")],
            ),
            Kill::BeforeCommit => crate::support::myvault_env(
                &args,
                &[crate::support::failpoints(
                    "flashback-before-commit=abort(3)",
                )],
            ),
            Kill::At(ms) => {
                // Slow between transactions, so the kill can land anywhere in the run.
                let bg = Background::start(
                    &args,
                    &[crate::support::failpoints(
                        "flashback-between-tx=sleep(300)",
                    )],
                );
                std::thread::sleep(std::time::Duration::from_millis(ms));
                // SAFETY: signalling our own child.
                unsafe {
                    libc::kill(bg.pid() as i32, libc::SIGKILL);
                }
                bg.finish()
            }
        };
        let killed_made = src.gtid_executed().subtract(&start);
        eprintln!(
            "{kill:?}: the killed run exited {} having committed {}",
            first.code,
            killed_made.count()
        );
        if !matches!(kill, Kill::At(_)) {
            assert_ne!(first.code, 0, "{kill:?}: the run was not killed");
            assert_eq!(killed_made.count(), 2, "{kill:?}: {killed_made}");
        }

        if matches!(kill, Kill::BetweenTransactions) {
            // --plan names the two undone as such and changes nothing.
            let plan = bed.flashback(&["--gtid", &set, "--plan"]);
            plan.expect_code(0);
            for g in &bad[2..] {
                assert!(
                    plan.stdout
                        .contains(&format!("-- already undone: transaction {g}")),
                    "{g}: {}",
                    plan.stdout
                );
            }
            for g in &bad[..2] {
                assert!(
                    plan.stdout.contains(&format!("-- undo transaction {g}")),
                    "{g}: {}",
                    plan.stdout
                );
            }
            assert!(
                plan.stdout.contains("(3 already undone)"),
                "{}",
                plan.stdout
            );
            assert_eq!(src.gtid_executed(), start.union(&killed_made));
            // A transaction half undone by someone else is a conflict, not "already undone".
            let meddled = run_one(src, "UPDATE fb.t SET c = 'row 301' WHERE id = 301");
            let refused = bed.flashback(&["--gtid", &set]);
            refused.expect_code(15);
            assert!(
                refused.stderr.contains("fb.t (id=301)"),
                "{}",
                refused.stderr
            );
            run_one(src, "UPDATE fb.t SET c = 'row 301 bad' WHERE id = 301");
            eprintln!("meddled with {meddled} and put it back");
        }

        let before_rerun = src.gtid_executed();
        let rerun = bed.flashback(&["--gtid", &set, "--json"]);
        rerun.expect_code(0);
        assert_eq!(checksum(src, "fb.t"), good, "{kill:?}: fb.t is back");
        let report = rerun.json();
        let rerun_made = src.gtid_executed().subtract(&before_rerun);
        assert_eq!(report["new_gtids"], rerun_made.to_string());
        // Exactly one undoing transaction per transaction that changed anything, over both
        // runs; the cancelling one needs none.
        assert_eq!(
            killed_made.count() + rerun_made.count(),
            4,
            "{kill:?}: killed run {killed_made}, rerun {rerun_made}"
        );
        let states: Vec<&str> = report["transactions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["state"].as_str().unwrap())
            .collect();
        let undone_before = 1 + killed_made.count() as usize;
        assert_eq!(report["already_undone"], undone_before);
        assert!(
            states[..undone_before]
                .iter()
                .all(|s| *s == "already_undone")
                && states[undone_before..].iter().all(|s| *s == "to_undo"),
            "{kill:?}: {states:?}"
        );

        // A third run has nothing left to do.
        let settled = src.gtid_executed();
        let third = bed.flashback(&["--gtid", &set]);
        third.expect_code(0);
        assert!(
            third
                .stdout
                .contains("every transaction was already undone"),
            "{}",
            third.stdout
        );
        assert_eq!(
            src.gtid_executed(),
            settled,
            "the third run changed nothing"
        );
    }
    took("flashback resume test", started);
}

/// MySQL keeps SQL values put into JSON with their type (opaque values: DECIMAL, DATE,
/// TIME, DATETIME, TIMESTAMP, binary strings); the decoder refused them, so such rows could
/// not be flashed back. Now they are written back with their type: checksums equal.
#[test]
fn flashback_round_trips_json_holding_dates_times_and_decimals() {
    let bed = Bed::start("flashback-json", &[]);
    let src = &bed.src;
    src.sql(
        "CREATE DATABASE fb;
         CREATE TABLE fb.src (id INT PRIMARY KEY, dc DECIMAL(12,3), t TIMESTAMP(3) NULL, d DATE,
           dt DATETIME(2), tm TIME(1), vb VARBINARY(10), bl BLOB);
         SET SESSION time_zone = '+02:00';
         INSERT INTO fb.src VALUES (1, -1.5, '2020-01-02 03:04:05.678', '2020-01-01',
           '2021-02-03 04:05:06.78', '-10:11:12.5', X'00FF61', 'blob'),
           (2, 12345678.125, '2037-12-31 23:59:59.5', '1000-01-01', '9999-12-31 23:59:59.99',
           '838:59:59', X'', NULL);
         CREATE TABLE fb.j (id INT PRIMARY KEY, doc JSON);
         INSERT INTO fb.j SELECT id, JSON_OBJECT('dc', dc, 't', t, 'd', d, 'dt', dt, 'tm', tm,
           'vb', vb, 'lit', 1.50, 'now', CAST(NOW(6) AS JSON),
           'nested', JSON_ARRAY(d, JSON_OBJECT('k\"ey', CAST(0.5 AS DECIMAL(4,2)), 'w', dt)))
           FROM fb.src;
         INSERT INTO fb.j VALUES (3, CAST(CAST('2024-02-29' AS DATE) AS JSON)), (4, '[1, \"s\"]');",
    );
    assert_eq!(
        src.value("SELECT JSON_TYPE(JSON_EXTRACT(doc, '$.t')) FROM fb.j WHERE id = 1")
            .as_deref(),
        Some("TIMESTAMP")
    );
    let original = checksum(src, "fb.j");
    let bad = run_one(
        src,
        "BEGIN;
         UPDATE fb.j SET doc = JSON_SET(doc, '$.d', CAST('1999-09-09' AS DATE), '$.x', 1)
           WHERE id IN (1, 2);
         DELETE FROM fb.j WHERE id = 3;
         UPDATE fb.j SET doc = CAST(CURTIME() AS JSON) WHERE id = 4;
         INSERT INTO fb.j VALUES (5, JSON_OBJECT('d', CURDATE(), 'n', 2.25));
         COMMIT",
    );
    // A BLOB inside JSON has no typed form flashback can write back: refused, by column.
    let blob = run_one(
        src,
        "INSERT INTO fb.j SELECT 6, JSON_OBJECT('b', bl) FROM fb.src WHERE id = 1",
    );
    bed.archive();
    let refused = bed.flashback(&["--gtid", &blob]);
    refused.expect_code(12);
    assert!(
        refused.stderr.contains("column 2 (JSON) of fb.j") && refused.stderr.contains("BLOB"),
        "{}",
        refused.stderr
    );
    run_one(src, "DELETE FROM fb.j WHERE id = 6");
    assert_ne!(checksum(src, "fb.j"), original);
    let plan = bed.flashback(&["--gtid", &bad, "--plan"]);
    plan.expect_code(0);
    assert!(plan.stdout.contains("JSON_SET(CAST("), "{}", plan.stdout);
    bed.flashback(&["--gtid", &bad]).expect_code(0);
    assert_eq!(
        checksum(src, "fb.j"),
        original,
        "fb.j is back, typed values and all"
    );
}
