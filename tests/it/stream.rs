//! `myvault binlog stream` against real MySQL 9.7 under sysbench load: kill -9, source
//! restarts and outages, and at the end archived files byte-identical to the server's and
//! GTID coverage without gaps or duplicates.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use myvault::mysql::gtid::GtidSet;

use crate::support::load::{self, Load};
use crate::support::streamer::{Streamer, drain};
use crate::support::{Flavor, Scratch, TestServer, myvault};

fn new_repo(dir: &Scratch) -> String {
    let repo = dir.join("repo").to_str().unwrap().to_string();
    myvault(&["init", "--repo", &repo]).expect_code(0);
    repo
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

struct Archived {
    files: Vec<serde_json::Value>,
}

fn archived(repo: &str, env: &[(&str, &str)]) -> Archived {
    let run = crate::support::myvault_env(&["binlog", "list", "--repo", repo, "--json"], env);
    run.expect_code(0);
    Archived {
        files: run.json()["files"].as_array().unwrap().clone(),
    }
}

/// Every archived file equals the server's own (closed files exactly; the open one except
/// for the in-use flag the server sets in it while writing), and the GTIDs are continuous,
/// complete and without duplicates.
pub(crate) fn assert_archive_matches(src: &TestServer, repo: &str, scratch: &Scratch) {
    assert_archive_matches_with_env(src, repo, scratch, &[]);
}

/// [`assert_archive_matches`] for a repository that needs `env` (S3).
pub(crate) fn assert_archive_matches_with_env(
    src: &TestServer,
    repo: &str,
    scratch: &Scratch,
    env: &[(&str, &str)],
) {
    let dest = scratch.join("fetched");
    crate::support::streamer::fetch(repo, &dest, env).expect_code(0);
    let arch = archived(repo, env);
    let current = src.current_binlog();
    assert!(!arch.files.is_empty());
    let mut union = GtidSet::new();
    let mut total = 0u64;
    let mut by_seq: BTreeMap<u64, (GtidSet, GtidSet)> = BTreeMap::new();
    for f in &arch.files {
        let name = f["file"].as_str().unwrap();
        let ours = std::fs::read(dest.join(name)).unwrap();
        let theirs = std::fs::read(src.datadir().join(name)).unwrap();
        if name == current {
            assert!(
                ours.len() <= theirs.len(),
                "{name}: archived more than the server has"
            );
            let mut masked = theirs[..ours.len()].to_vec();
            masked[21] &= !1; // LOG_EVENT_BINLOG_IN_USE_F of the open file
            assert!(
                ours == masked,
                "{name}: archived bytes differ from the server's"
            );
        } else {
            assert_eq!(ours.len(), theirs.len(), "{name}: size");
            assert!(
                ours == theirs,
                "{name}: archived bytes differ from the server's"
            );
            assert_eq!(f["sealed"], true, "{name}");
        }
        let g = GtidSet::parse(f["gtids"].as_str().unwrap()).unwrap();
        let prev = GtidSet::parse(f["previous_gtids"].as_str().unwrap()).unwrap();
        assert!(
            g.intersect(&union).is_empty(),
            "{name} repeats GTIDs of earlier files"
        );
        total += g.count();
        union = union.union(&g);
        by_seq.insert(name.rsplit('.').next().unwrap().parse().unwrap(), (prev, g));
    }
    // Continuity: each file's header lists exactly what came before it.
    let seqs: Vec<u64> = by_seq.keys().copied().collect();
    for w in seqs.windows(2) {
        assert_eq!(
            w[1],
            w[0] + 1,
            "archived files are not consecutive: {seqs:?}"
        );
        let (prev0, g0) = &by_seq[&w[0]];
        let (prev1, _) = &by_seq[&w[1]];
        assert_eq!(
            prev1,
            &prev0.union(g0),
            "gap between file {} and {}",
            w[0],
            w[1]
        );
    }
    let executed = GtidSet::parse(&src.value("SELECT @@GLOBAL.gtid_executed").unwrap()).unwrap();
    let first_prev = by_seq.values().next().unwrap().0.clone();
    assert_eq!(
        union.union(&first_prev),
        executed,
        "archived GTIDs do not add up to gtid_executed"
    );
    assert_eq!(total, union.count(), "a GTID was archived twice");
}

#[test]
fn stream_survives_kill9_source_restart_and_outage_under_load() {
    let mut src = TestServer::builder(Flavor::Mysql97)
        .option("--max-binlog-size=4194304")
        .option("--sync-binlog=0")
        .option("--innodb-flush-log-at-trx-commit=2")
        .start();
    load::prepare(&src, "sb", 4, 10_000);
    let dir = Scratch::new("stream");
    let repo = new_repo(&dir);
    let spool = dir.join("spool");
    let mut load = Load::start(&src, "sb", 4, 10_000, 4, 600);
    let mut streamer = Streamer::start(&src.url(), &repo, &spool, &[]);
    let started_tx = src.value("SELECT COUNT_STAR FROM performance_schema.events_transactions_summary_global_by_event_name WHERE EVENT_NAME = 'transaction'").unwrap();

    let mut seed = std::process::id() as u64 ^ 0x9E37_79B9_7F4A_7C15;
    let mut random = move |lo: u64, hi: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        lo + seed % (hi - lo)
    };
    for i in 0..5 {
        sleep_ms(random(1500, 4500));
        streamer.kill9();
        if i == 2 {
            // A clean restart of the source while the streamer is down.
            load.stop();
            src.server
                .restart(Duration::from_secs(60))
                .expect("restart source");
            load = Load::start(&src, "sb", 4, 10_000, 4, 600);
        }
        streamer = Streamer::start(&src.url(), &repo, &spool, &[]);
    }
    // The source goes away for 10 s while the streamer runs: it must reconnect by itself.
    sleep_ms(2000);
    load.stop();
    src.server
        .stop(Duration::from_secs(60))
        .expect("stop source");
    sleep_ms(10_000);
    src.server
        .restart(Duration::from_secs(60))
        .expect("start source again");
    let load = Load::start(&src, "sb", 4, 10_000, 4, 600);
    sleep_ms(4000);
    assert!(
        streamer.running(),
        "the streamer gave up during the outage:\n{}",
        streamer.log_text()
    );
    load.stop();
    let done_tx: u64 = src
        .value("SELECT COUNT(*) FROM sb.sbtest1")
        .unwrap()
        .parse()
        .unwrap();
    assert!(done_tx > 0);
    src.sql("FLUSH BINARY LOGS");
    sleep_ms(3000);
    assert_eq!(
        streamer.terminate(),
        0,
        "SIGTERM must end the streamer cleanly:\n{}",
        streamer.log_text()
    );
    drain(&src, &repo, &spool);
    let _ = started_tx;
    assert_archive_matches(&src, &repo, &dir);
    myvault(&["verify", "--repo", &repo]).expect_code(0);
}

/// Runs the streamer while `work` writes, then catches up and checks the archive.
fn stream_while(src: &TestServer, work: impl FnOnce()) -> (Scratch, String, u64) {
    let dir = Scratch::new("stream");
    let repo = new_repo(&dir);
    let spool = dir.join("spool");
    let mut streamer = Streamer::start(&src.url(), &repo, &spool, &[]);
    sleep_ms(1500);
    work();
    src.sql("FLUSH BINARY LOGS");
    sleep_ms(3000);
    let rss = streamer.peak_rss_kib();
    assert_eq!(streamer.terminate(), 0, "{}", streamer.log_text());
    drain(src, &repo, &spool);
    assert_archive_matches(src, &repo, &dir);
    (dir, repo, rss)
}

#[test]
fn tagged_gtids_compressed_payloads_and_a_150_mb_transaction_in_bounded_memory() {
    let src = TestServer::builder(Flavor::Mysql97)
        .option("--binlog-transaction-compression=ON")
        .option("--max-allowed-packet=1073741824")
        .option("--innodb-redo-log-capacity=512M")
        .option("--innodb-buffer-pool-size=512M")
        .start();
    let uuid = src.value("SELECT @@server_uuid").unwrap();
    let (_dir, _repo, rss) = stream_while(&src, || {
        src.sql(&format!(
            "CREATE DATABASE big;\n\
             CREATE TABLE big.t (id INT PRIMARY KEY AUTO_INCREMENT, b LONGBLOB);\n\
             SET gtid_next = 'AUTOMATIC:nightly';\n\
             INSERT INTO big.t (b) VALUES ('tagged');\n\
             SET gtid_next = '{uuid}:manual:42';\n\
             INSERT INTO big.t (b) VALUES ('explicit tag');\n\
             SET gtid_next = 'AUTOMATIC'"
        ));
        // 150 rows of 1 MiB of random bytes in one transaction: one compressed payload
        // event of about 150 MB, far past the 16 MiB a protocol packet holds.
        let mut s = src.session();
        s.exec("SET SESSION binlog_transaction_compression = ON")
            .unwrap();
        s.exec("SET SESSION group_concat_max_len = 4194304")
            .unwrap();
        s.exec("SET SESSION cte_max_recursion_depth = 2000")
            .unwrap();
        s.exec("BEGIN").unwrap();
        for _ in 0..150 {
            s.exec(
                "INSERT INTO big.t (b) SELECT GROUP_CONCAT(RANDOM_BYTES(1024) SEPARATOR '') \
                 FROM (WITH RECURSIVE n AS (SELECT 1 AS i UNION ALL SELECT i + 1 FROM n WHERE i < 1024) SELECT i FROM n) AS k",
            )
            .unwrap();
        }
        s.exec("COMMIT").unwrap();
        let biggest: u64 = src
            .value("SELECT MAX(LENGTH(b)) FROM big.t")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(biggest, 1 << 20);
    });
    eprintln!("streamer peak RSS: {rss} KiB");
    // Constant, whatever the transaction's size: per repository up to three pack buffers of
    // ~20 MiB (one filling, one waiting, one uploading; the filling one is a reused buffer, so
    // all of it is resident), the chunker's 2 x 4 MiB, and the allocator's slack: 64-83 MiB
    // measured over runs.
    assert!(
        rss > 0 && rss < 96 * 1024,
        "peak RSS {rss} KiB while a 150 MB transaction passed"
    );
}

#[test]
fn binlog_checksum_none_is_archived_too() {
    let src = TestServer::builder(Flavor::Mysql97)
        .option("--binlog-checksum=NONE")
        .start();
    stream_while(&src, || {
        load::prepare(&src, "sb", 2, 2000);
        src.sql("CREATE TABLE sb.x (id INT PRIMARY KEY);\nINSERT INTO sb.x VALUES (1), (2)");
    });
}

#[test]
fn refuses_disabled_binlog_missing_privilege_and_taken_server_id() {
    let dir = Scratch::new("stream");
    let repo = new_repo(&dir);
    let spool = dir.join("spool");

    let nolog = TestServer::builder(Flavor::Mysql97).no_binlog().start();
    let mut s = Streamer::start(&nolog.url(), &repo, &spool, &[]);
    assert_eq!(s.wait(), 6, "{}", s.log_text());
    assert!(s.log_text().contains("log_bin"), "{}", s.log_text());

    let src = TestServer::mysql97();
    src.sql("CREATE USER 'nr'@'%' IDENTIFIED BY 'Nr-pass-1';\nGRANT SELECT ON *.* TO 'nr'@'%'");
    let mut s = Streamer::start(&src.url_as("nr", "Nr-pass-1"), &repo, &spool, &[]);
    assert_eq!(s.wait(), 4, "{}", s.log_text());
    assert!(
        s.log_text()
            .contains("GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'nr'@'%'"),
        "{}",
        s.log_text()
    );

    let own_id = src.value("SELECT @@server_id").unwrap();
    let mut s = Streamer::start(&src.url(), &repo, &spool, &["--server-id", &own_id]);
    assert_eq!(s.wait(), 2, "{}", s.log_text());
    assert!(
        s.log_text()
            .contains(&format!("server id {own_id} is already used")),
        "{}",
        s.log_text()
    );

    // A second streamer on the same spool is refused while the first runs.
    let mut first = Streamer::start(&src.url(), &repo, &spool, &[]);
    sleep_ms(1500);
    let mut second = Streamer::start(&src.url(), &repo, &spool, &[]);
    assert_eq!(second.wait(), 7, "{}", second.log_text());
    assert_eq!(first.terminate(), 0, "{}", first.log_text());
}

#[test]
fn purged_binlogs_are_a_gap_with_the_lost_gtids_named() {
    let src = TestServer::mysql97();
    let dir = Scratch::new("stream");
    let repo = new_repo(&dir);
    let spool = dir.join("spool");
    src.sql("CREATE DATABASE g;\nCREATE TABLE g.t (id INT PRIMARY KEY)");
    drain(&src, &repo, &spool);
    // While no streamer runs, the source writes and purges what the archive has not seen.
    src.sql("FLUSH BINARY LOGS;\nINSERT INTO g.t VALUES (1);\nINSERT INTO g.t VALUES (2);\nFLUSH BINARY LOGS;\nINSERT INTO g.t VALUES (3)");
    let newest: String = src.current_binlog();
    src.sql(&format!("PURGE BINARY LOGS TO '{newest}'"));
    let mut s = Streamer::start(&src.url(), &repo, &spool, &[]);
    assert_eq!(s.wait(), 11, "{}", s.log_text());
    let uuid = src.value("SELECT @@server_uuid").unwrap();
    assert!(
        s.log_text().contains(&format!("{uuid}:")) && s.log_text().contains("no longer has"),
        "{}",
        s.log_text()
    );
    let list = myvault(&["list", "--repo", &repo, "--json"]);
    list.expect_code(0);
    let gaps = list.json()["gaps"].as_array().cloned().unwrap_or_default();
    assert_eq!(gaps.len(), 1, "{}", list.stdout);
}

/// The repository (S3) goes away for a while: the streamer keeps spooling locally, warns,
/// and once the store is back uploads everything; the archive then equals the server's files.
#[test]
fn an_unreachable_repository_is_caught_up_from_the_spool() {
    let src = TestServer::mysql97();
    src.sql("CREATE DATABASE d;\nCREATE TABLE d.t (id INT PRIMARY KEY, v VARCHAR(100))");
    let mut s3 = crate::support::s3::S3Server::start();
    let env_owned = s3.env();
    let env: Vec<(&str, &str)> = env_owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let repo = s3.repo("stream-outage");
    crate::support::myvault_env(&["init", "--repo", &repo], &env).expect_code(0);
    let dir = Scratch::new("stream-s3");
    let spool = dir.join("spool");
    let mut streamer = Streamer::start_env(&src.url(), &repo, &spool, &[], &env);
    sleep_ms(1500);
    src.sql("INSERT INTO d.t VALUES (1, 'before')");
    sleep_ms(3000);
    s3.kill();
    for i in 2..200 {
        src.sql(&format!("INSERT INTO d.t VALUES ({i}, REPEAT('x', 100))"));
    }
    src.sql("FLUSH BINARY LOGS");
    src.sql("INSERT INTO d.t VALUES (1000, 'during')");
    // Spooling goes on; the failing repository is reported once its retries give up.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !streamer.log_text().contains("last error") {
        assert!(
            streamer.running(),
            "the streamer gave up: {}",
            streamer.log_text()
        );
        assert!(
            Instant::now() < deadline,
            "no warning while the repository is down: {}",
            streamer.log_text()
        );
        sleep_ms(500);
    }
    s3.restart();
    src.sql("FLUSH BINARY LOGS");
    sleep_ms(5000);
    assert_eq!(streamer.terminate(), 0, "{}", streamer.log_text());

    let dest = dir.join("fetched");
    crate::support::streamer::fetch(&repo, &dest, &env).expect_code(0);
    let current = src.current_binlog();
    let mut sealed = 0;
    for entry in std::fs::read_dir(src.datadir()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !name.starts_with("binlog.0") || name == current {
            continue;
        }
        let ours = std::fs::read(dest.join(&name))
            .unwrap_or_else(|e| panic!("{name} was not archived: {e}"));
        assert!(
            ours == std::fs::read(src.datadir().join(&name)).unwrap(),
            "{name} differs from the server's"
        );
        sealed += 1;
    }
    assert!(
        sealed >= 2,
        "expected the files sealed during and after the outage"
    );
}

/// Commits one transaction; returns its GTID.
fn commit_one(src: &TestServer, sql: &str) -> GtidSet {
    let before = src.gtid_executed();
    src.sql(sql);
    let gtid = src.gtid_executed().subtract(&before);
    assert_eq!(gtid.count(), 1, "{gtid}");
    gtid
}

/// Waits until the spool holds everything the server has written to its current file.
fn wait_spooled(src: &TestServer, spool: &std::path::Path, streamer: &Streamer) {
    let uuid = src.value("SELECT @@server_uuid").unwrap();
    let mut s = src.session();
    let sql = s.info().binlog_status_sql();
    let row = s.query(sql).unwrap();
    let row = row.first().unwrap();
    let (file, pos) = (row.text("File").unwrap(), row.u64("Position").unwrap());
    let path = spool.join(uuid).join(&file);
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::metadata(&path).map_or(0, |m| m.len()) < pos {
        assert!(
            Instant::now() < deadline,
            "{file} was not spooled up to {pos}:\n{}",
            streamer.log_text()
        );
        sleep_ms(100);
    }
}

/// Whether the repository's binlog archive holds every GTID of `gtids`.
fn is_archived(repo: &str, gtids: &GtidSet) -> bool {
    let all = archived(repo, &[])
        .files
        .iter()
        .map(|f| GtidSet::parse(f["gtids"].as_str().unwrap()).unwrap())
        .fold(GtidSet::new(), |acc, g| acc.union(&g));
    gtids.is_subset(&all)
}

/// Issue 18, item 5: when the source died, the streamer went into reconnect backoff without
/// uploading what it had received, and a SIGTERM then exited without uploading it either:
/// the last transactions were in the spool and in no repository. The upload interval is 600 s
/// here, so only the loss of the source can send them.
#[test]
fn transactions_received_before_the_source_dies_reach_the_archive_at_once_and_on_sigterm() {
    let mut src = TestServer::mysql97();
    src.sql("CREATE DATABASE lost;\nCREATE TABLE lost.t (id INT PRIMARY KEY)");
    let dir = Scratch::new("stream-loss");
    let repo = new_repo(&dir);
    let spool = dir.join("spool");
    let slow = ["--upload-interval", "600"];
    let mut streamer = Streamer::start(&src.url(), &repo, &spool, &slow);
    wait_spooled(&src, &spool, &streamer);

    // The reproduction: the source restarts, one transaction is committed, the
    // source stops, and the streamer is stopped with SIGTERM 3 s later.
    src.server.restart(Duration::from_secs(60)).unwrap();
    let first = commit_one(&src, "INSERT INTO lost.t VALUES (1)");
    wait_spooled(&src, &spool, &streamer);
    src.server.stop(Duration::from_secs(60)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !is_archived(&repo, &first) {
        assert!(
            Instant::now() < deadline,
            "{first} is not archived 20 s after the source stopped:\n{}",
            streamer.log_text()
        );
        sleep_ms(500);
    }
    sleep_ms(3000);
    assert_eq!(streamer.terminate(), 0, "{}", streamer.log_text());
    assert!(is_archived(&repo, &first));

    // Any state: a streamer killed after receiving a transaction, its source stopped, and a
    // new streamer stopped with SIGTERM while it waits to reconnect to the dead source.
    src.server.restart(Duration::from_secs(60)).unwrap();
    let mut streamer = Streamer::start(&src.url(), &repo, &spool, &slow);
    let second = commit_one(&src, "INSERT INTO lost.t VALUES (2)");
    wait_spooled(&src, &spool, &streamer);
    streamer.kill9();
    assert!(!is_archived(&repo, &second), "uploaded before the kill");
    src.server.stop(Duration::from_secs(60)).unwrap();
    let mut streamer = Streamer::start(&src.url(), &repo, &spool, &slow);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !streamer.log_text().contains("reconnecting in") {
        assert!(Instant::now() < deadline, "{}", streamer.log_text());
        sleep_ms(200);
    }
    assert_eq!(streamer.terminate(), 0, "{}", streamer.log_text());
    assert!(
        is_archived(&repo, &second),
        "{second} stayed in the spool:\n{}",
        streamer.log_text()
    );
}

/// `binlog stream --until-caught-up` judged itself caught up only on a heartbeat, which the
/// server sends only when it has nothing else to send: beside a write load that never pauses
/// it never ended. It must end once it has what the source had written when it began.
#[test]
fn until_caught_up_ends_beside_a_write_load_that_never_pauses() {
    let src = TestServer::mysql97();
    load::prepare(&src, "sb", 1, 1000);
    let dir = Scratch::new("caught-up");
    let repo = new_repo(&dir);
    let spool = dir.join("spool");
    let writes = Load::start(&src, "sb", 1, 1000, 2, 120);
    sleep_ms(2000);
    let before = src.gtid_executed();
    let spool_arg = spool.to_str().unwrap();
    let server_id = crate::support::next_server_id().to_string();
    let mut run = crate::support::Background::start(
        &[
            "binlog",
            "stream",
            "--source",
            &src.url(),
            "--repo",
            &repo,
            "--spool",
            spool_arg,
            "--server-id",
            &server_id,
            "--until-caught-up",
        ],
        &[],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while run.running() && Instant::now() < deadline {
        sleep_ms(200);
    }
    if run.running() {
        let _ = std::process::Command::new("kill")
            .arg(run.pid().to_string())
            .status();
        panic!(
            "--until-caught-up was still streaming after 60 s of a write load:\n{}",
            run.finish().stderr
        );
    }
    let after_stream = src.gtid_executed();
    drop(writes);
    run.finish().expect_code(0);
    assert!(
        after_stream.subtract(&before).count() > 0,
        "the load wrote nothing while the stream ran"
    );
    assert!(
        is_archived(&repo, &before),
        "the archive lacks transactions committed before the stream began"
    );
}
