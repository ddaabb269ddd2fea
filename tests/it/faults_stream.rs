//! The fault matrix's streamer table (see `faults.rs`): `binlog stream` killed at each of its
//! failpoints while the source writes. Its hits depend on time, not only on data, so N is drawn
//! up to a bound each row reaches within seconds. Kills at random moments are
//! `stream.rs`'s (`stream_survives_kill9_source_restart_and_outage_under_load`).

use std::time::{Duration, Instant};

use crate::faults::{Dice, Row, assert_verified, row};
use crate::stream::assert_archive_matches;
use crate::support::load::{self, Load};
use crate::support::streamer::{Streamer, drain};
use crate::support::{Scratch, failpoints, myvault};

/// Rows, and the most hits drawn for each.
const STREAM: &[(Row, u64)] = &[
    (row("spool synced", "stream-after-spool-sync", true), 40),
    (row("pack stored", "store-after-put-packs", true), 4),
    (row("index written", "store-after-put-index", false), 4),
    (
        row("segment manifest written", "store-after-put-binlog", true),
        6,
    ),
    (
        row(
            "superseded segment deleted",
            "store-after-delete-binlog",
            false,
        ),
        3,
    ),
];

/// The streamer, killed at each failpoint under write load and started again, leaves the
/// repository verified clean, and once caught up the archive holds every binlog file of the
/// source byte for byte, its GTIDs without a gap or a repeat.
#[test]
fn fault_matrix_stream() {
    let mut dice = Dice::new("stream");
    let no_env: Vec<(String, String)> = Vec::new();
    let src = crate::support::TestServer::builder(crate::support::Flavor::Mysql97)
        .option("--max-binlog-size=262144")
        .option("--sync-binlog=0")
        .option("--innodb-flush-log-at-trx-commit=0")
        .start();
    load::prepare(&src, "sb", 2, 1_000);
    let dir = Scratch::new("fm-stream");
    let repo = dir.join("repo").to_str().unwrap().to_string();
    myvault(&["init", "--repo", &repo]).expect_code(0);
    let spool = dir.join("spool");
    for (r, most) in STREAM.iter().filter(|(r, _)| r.runs()) {
        let n = dice.upto(*most);
        let case = format!("binlog stream, {}: hit {n} of {}", r.phase, r.failpoint);
        eprintln!("{case}");
        let load = Load::start(&src, "sb", 2, 1_000, 1, 600);
        let spec = format!("{}=abort({n})", r.failpoint);
        let mut armed = Streamer::start_env(&src.url(), &repo, &spool, &[], &[failpoints(&spec)]);
        let deadline = Instant::now() + Duration::from_secs(90);
        while armed.running() {
            assert!(
                Instant::now() < deadline,
                "{case}: not killed within 90 s:\n{}",
                armed.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let code = armed.wait();
        assert!(
            code != 0
                && armed
                    .log_text()
                    .contains(&format!("myvault: failpoint {}: aborting", r.failpoint)),
            "{case}: ended otherwise (exit {code}):\n{}",
            armed.log_text()
        );
        assert_verified(&repo, &no_env, &case);
        // Started again while the source still writes, then caught up once it stops.
        let mut again = Streamer::start(&src.url(), &repo, &spool, &[]);
        std::thread::sleep(Duration::from_secs(3));
        load.stop();
        load::wait_for_idle(&src, "sb");
        src.sql("FLUSH BINARY LOGS");
        assert_eq!(again.terminate(), 0, "{case}:\n{}", again.log_text());
        drain(&src, &repo, &spool);
        assert_archive_matches(&src, &repo, &Scratch::new("fm-fetch"));
        assert_verified(&repo, &no_env, &case);
    }
}
