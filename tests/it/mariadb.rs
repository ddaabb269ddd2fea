//! MariaDB 10.11 as a source: a logical backup under a write load restores into another
//! MariaDB with equal data and its GTID position, and `binlog stream` archives the source's
//! binlogs byte for byte.

use std::time::Duration;

use crate::support::load::{self, Load};
use crate::support::streamer;
use crate::support::{Scratch, TestServer, myvault};

#[test]
fn mariadb_backup_restores_equal_data_and_its_binlogs_stream_byte_identical() {
    let src = TestServer::mariadb1011();
    load::prepare(&src, "sb", 3, 3000);
    src.sql(
        "CREATE DATABASE odd;\n\
         CREATE TABLE odd.t (id INT PRIMARY KEY, b VARBINARY(300), j LONGTEXT, d DATETIME(6), n DECIMAL(30,10), s SET('a','b')) DEFAULT CHARSET=utf8mb4;\n\
         INSERT INTO odd.t VALUES (1, UNHEX('00FF0A09095C0D'), '{\"k\": \"v\\\\t\"}', '2026-01-02 03:04:05.123456', -12345.6789, 'a,b'), (2, NULL, 'ünïcødé 😀', NULL, 0, '');\n\
         CREATE TABLE odd.nopk (a INT, b TEXT);\n\
         INSERT INTO odd.nopk VALUES (1, 'x'), (1, 'x'), (NULL, NULL);\n\
         CREATE VIEW odd.v AS SELECT id FROM odd.t;\n\
         CREATE PROCEDURE odd.p() SELECT 1",
    );
    let dir = Scratch::new("mariadb");
    let repo = dir.join("repo").to_str().unwrap().to_string();
    myvault(&["init", "--repo", &repo]).expect_code(0);

    // A backup while sysbench writes: the restore equals the source at the snapshot's GTIDs.
    let load = Load::start(&src, "sb", 3, 3000, 2, 60);
    std::thread::sleep(Duration::from_secs(1));
    let backup = myvault(&["backup", "--source", &src.url(), "--repo", &repo, "--json"]);
    drop(load);
    backup.expect_code(0);
    let snap_gtids = backup.json()["gtid_executed"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        snap_gtids.contains('-'),
        "MariaDB GTIDs are domain-server-seq: {}",
        backup.stdout
    );

    // A redo log smaller than the load wants: grown for it (innodb_log_file_size on MariaDB),
    // then put back.
    let target = TestServer::builder(crate::support::Flavor::Mariadb1011)
        .option("--innodb-log-buffer-size=2M")
        .option("--innodb-log-file-size=4M")
        .start();
    let restore = myvault(&[
        "restore",
        "--repo",
        &repo,
        "--target",
        &target.url(),
        "--json",
    ]);
    restore.expect_code(0);
    let change = &restore.json()["server_settings"][0];
    assert_eq!(change["name"], "innodb_log_file_size", "{}", restore.stdout);
    assert_eq!(change["before"], (4 << 20).to_string());
    assert!(change["during"].as_str().unwrap().parse::<u64>().unwrap() > 4 << 20);
    assert_eq!(
        target
            .value("SELECT @@GLOBAL.innodb_log_file_size")
            .as_deref(),
        Some((4 << 20).to_string().as_str())
    );
    assert_eq!(
        target.value("SELECT @@GLOBAL.gtid_slave_pos").as_deref(),
        Some(snap_gtids.as_str())
    );
    // `odd` is not written by the load: equal to the source, byte values and all.
    assert_eq!(
        load::checksums(&src, "odd"),
        load::checksums(&target, "odd")
    );
    assert_eq!(
        target.value("SELECT COUNT(*) FROM odd.nopk").as_deref(),
        Some("3")
    );
    assert_eq!(
        target
            .value("SELECT HEX(b) FROM odd.t WHERE id = 1")
            .as_deref(),
        Some("00FF0A09095C0D")
    );
    assert_eq!(
        target
            .value("SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = 'odd'")
            .as_deref(),
        Some("1")
    );

    // The binlogs: streamed until caught up, fetched back identical to the server's files.
    src.sql("FLUSH BINARY LOGS");
    let spool = dir.join("spool");
    streamer::drain(&src, &repo, &spool);
    let dest = dir.join("fetched");
    myvault(&[
        "binlog",
        "fetch",
        "--repo",
        &repo,
        "--dest",
        dest.to_str().unwrap(),
    ])
    .expect_code(0);
    let list = myvault(&["binlog", "list", "--repo", &repo, "--json"]);
    list.expect_code(0);
    let files = list.json()["files"].as_array().cloned().unwrap_or_default();
    let current = src.current_binlog();
    let sealed: Vec<&str> = files
        .iter()
        .filter_map(|f| f["file"].as_str())
        .filter(|name| *name != current)
        .collect();
    assert!(
        !sealed.is_empty(),
        "no sealed file archived: {}",
        list.stdout
    );
    for name in sealed {
        let ours = std::fs::read(dest.join(name)).unwrap();
        let theirs = std::fs::read(src.datadir().join(name)).unwrap();
        assert!(
            ours == theirs,
            "{name}: archived bytes differ from the server's"
        );
    }
}
