//! `myvault flashback` and `myvault binlog search` against real MySQL 9.7: a bad
//! `DELETE FROM t` found in the archive and undone; rows changed since refused (and skipped
//! with --force); DDL refused; a 100k-row UPDATE undone in bounded memory; a table of every
//! column type back to its checksum after an update, a delete and an insert are undone.

use std::collections::BTreeMap;

use crate::support::streamer;
use crate::support::{Background, Flavor, Scratch, TestServer, myvault};

/// The transaction `sql` made, on a server nothing else writes to.
fn run_one(src: &TestServer, sql: &str) -> String {
    let before = src.gtid_executed();
    src.sql(sql);
    let made = src.gtid_executed().subtract(&before);
    assert_eq!(made.count(), 1, "`{sql}` made {made}");
    made.to_string()
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
    let bed = Bed::start("flashback", &[]);
    let src = &bed.src;
    src.add_replication_user();
    let replica = TestServer::builder(Flavor::Mysql97).start();
    replica.replicate_from(src, "repl", "Repl-1");
    schema(src);
    // Writes to both tables, then the bad statement, then more writes elsewhere.
    src.sql("UPDATE fb.t SET c = 'changed' WHERE id % 100 = 0;\nINSERT INTO fb.u (v) VALUES ('d')");
    let before_delete = checksum(src, "fb.t");
    let bad = run_one(src, "DELETE FROM fb.t");
    src.sql("INSERT INTO fb.u (v) VALUES ('e'), ('f');\nUPDATE fb.u SET v = 'B' WHERE id = 2");
    let ddl = run_one(src, "CREATE TABLE fb.later (i INT PRIMARY KEY)");
    let u_now = checksum(src, "fb.u");
    bed.archive();

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
    let new = src.gtid_executed().subtract(&before);
    assert_eq!(new.count(), 1, "{new}");
    assert_eq!(done.json()["new_gtids"], new.to_string());
    // The replica follows: it applies the undoing transaction like any other.
    replica.replicate_until(&src.gtid_executed().to_string());
    assert_eq!(
        checksum(&replica, "fb.t"),
        before_delete,
        "the replica's fb.t is back too"
    );
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
