//! Point-in-time restores that go wrong half-way (issue 18, items 7 and 8), against real
//! MySQL 9.7 with compressed transaction payloads and tagged GTIDs:
//! - a damaged binlog chunk is found before the target is touched, and named (exit 8);
//! - a restore killed during the load, just after it, or during the replay (either engine)
//!   is finished by running the same command again, ending with exactly the source's data
//!   at the boundary, no replication channel, and no trace of the restore.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use myvault::mysql::gtid::GtidSet;

use crate::support::load::{self, Load};
use crate::support::{Flavor, Run, Scratch, TestServer, failpoints, myvault, myvault_env, testbed};

/// A source's history in a repository: a logical snapshot, then write load (sysbench, and
/// transactions under a GTID tag) over two binlog files up to `goal`, then a few transactions
/// after it. Everything is archived.
struct History {
    dir: Scratch,
    repo: String,
    uuid: String,
    server_id: String,
    /// The source's gtid_executed at the boundary, and its data there.
    goal: GtidSet,
    sums: BTreeMap<String, String>,
}

fn history(tag: &str, load_seconds: u32, with_clone: bool) -> History {
    let src = TestServer::builder(Flavor::Mysql97)
        .option("--binlog-transaction-compression=ON")
        .start();
    load::prepare(&src, "sb", 2, 3000);
    let dir = Scratch::new(tag);
    let repo = dir.join("repo").to_str().unwrap().to_string();
    // Small chunks: an archived file is several, so a damage can be put in the middle of one.
    myvault(&["init", "--repo", &repo, "--chunk-size", "65536"]).expect_code(0);
    myvault(&["backup", "--repo", &repo, "--source", &src.url()]).expect_code(0);
    if with_clone {
        let (url, mysqld) = (src.url(), mysqld());
        myvault(&[
            "backup", "--method", "clone", "--repo", &repo, "--source", &url, "--mysqld", &mysqld,
        ])
        .expect_code(0);
    }
    let load = Load::start(&src, "sb", 2, 3000, 2, load_seconds);
    std::thread::sleep(Duration::from_millis(u64::from(load_seconds) * 1000 + 500));
    load.stop();
    load::wait_for_idle(&src, "sb");
    src.sql("FLUSH BINARY LOGS");
    let mut s = src.session();
    for stmt in [
        "CREATE TABLE sb.tagged (id INT PRIMARY KEY, v VARCHAR(20))",
        "SET gtid_next = 'AUTOMATIC:pitr'",
        "INSERT INTO sb.tagged VALUES (1, 'tagged')",
        "UPDATE sb.sbtest1 SET k = k + 1 WHERE id <= 50",
        "SET gtid_next = 'AUTOMATIC'",
        "INSERT INTO sb.tagged VALUES (2, 'plain')",
    ] {
        s.exec(stmt).unwrap_or_else(|e| panic!("{stmt}: {e}"));
    }
    let goal = src.gtid_executed();
    let sums = load::checksums(&src, "sb");
    // After the boundary: must never reach a target.
    src.sql(
        "INSERT INTO sb.tagged VALUES (3, 'too late');\nDELETE FROM sb.sbtest2 WHERE id <= 100",
    );
    src.sql("FLUSH BINARY LOGS");
    crate::support::streamer::drain(&src, &repo, &dir.join("spool"));
    let uuid = src.value("SELECT @@server_uuid").unwrap();
    let server_id = src.value("SELECT @@server_id").unwrap();
    // The source is not needed any more: everything is in the archive.
    drop(src);
    History {
        dir,
        repo,
        uuid,
        server_id,
        goal,
        sums,
    }
}

fn mysqld() -> String {
    testbed()
        .path("MYVAULT_MYSQLD_97")
        .to_string_lossy()
        .into_owned()
}

fn count(srv: &TestServer, sql: &str) -> u64 {
    srv.value(sql).unwrap().parse().unwrap()
}

fn channels(srv: &TestServer) -> u64 {
    count(
        srv,
        "SELECT COUNT(*) FROM performance_schema.replication_connection_configuration",
    )
}

/// Databases on `srv` besides the server's own.
fn user_databases(srv: &TestServer) -> Vec<String> {
    let mut s = srv.session();
    s.query("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN ('mysql', 'sys', 'information_schema', 'performance_schema') ORDER BY 1")
        .unwrap()
        .iter()
        .filter_map(|r| r.text_at(0))
        .collect()
}

/// A segment manifest's chunk ids (hex), read from the local repository's files.
fn segment_chunks(repo: &Path, uuid: &str, file: &str) -> Vec<String> {
    let dir = repo.join("binlog").join(uuid).join(file);
    let manifest = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .max()
        .expect("a segment manifest");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let json: serde_json::Value = serde_json::from_str(text.split_once('\n').unwrap().1).unwrap();
    json["chunks"]
        .as_array()
        .expect("the segment lists its chunks inline")
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Flips one byte in the middle of the stored bytes of chunk `id` in whichever pack holds
/// it (packs end with their header: entries of id, codec, raw and stored length; a count; a
/// SHA-256; the magic).
fn damage_chunk(repo: &Path, id: &str) {
    for pack in files_under(&repo.join("packs")) {
        let mut bytes = std::fs::read(&pack).unwrap();
        let n = bytes.len();
        let count = u32::from_le_bytes(bytes[n - 44..n - 40].try_into().unwrap()) as usize;
        let header = n - 44 - count * 41;
        let mut offset = 8;
        for i in 0..count {
            let e = &bytes[header + i * 41..header + (i + 1) * 41];
            let stored = u32::from_le_bytes(e[37..41].try_into().unwrap()) as usize;
            let hex: String = e[..32].iter().map(|b| format!("{b:02x}")).collect();
            if hex == id {
                bytes[offset + stored / 2] ^= 0x20;
                std::fs::write(&pack, &bytes).unwrap();
                return;
            }
            offset += stored;
        }
    }
    panic!("chunk {id} is in no pack");
}

fn assert_untouched(target: &TestServer, what: &str) {
    assert_eq!(
        user_databases(target),
        Vec::<String>::new(),
        "{what}: databases"
    );
    assert!(target.gtid_executed().is_empty(), "{what}: gtid_executed");
    assert_eq!(channels(target), 0, "{what}: a replication channel");
}

/// Where a restore goes.
enum Dest<'a> {
    Server(&'a TestServer),
    Datadir(&'a Path),
    /// Nowhere: `--plan`.
    Plan,
}

/// `myvault restore --repo R --to-gtid TO (--target URL | --datadir DIR --mysqld M | --plan)
/// EXTRA...`
fn restore(h: &History, to: &str, into: Dest<'_>, extra: &[&str], env: &[(&str, &str)]) -> Run {
    let mut args: Vec<String> = ["restore", "--repo", &h.repo, "--to-gtid", to]
        .map(String::from)
        .to_vec();
    match into {
        Dest::Server(t) => args.extend(["--target".into(), t.url()]),
        Dest::Datadir(d) => args.extend([
            "--datadir".into(),
            d.to_string_lossy().into_owned(),
            "--mysqld".into(),
            mysqld(),
        ]),
        Dest::Plan => args.push("--plan".into()),
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    myvault_env(&args.iter().map(String::as_str).collect::<Vec<_>>(), env)
}

/// Issue 18, item 7: a damaged chunk of an archived binlog the restore needs failed a PITR
/// with exit 1 after the snapshot was loaded and part of the log replayed. Now the archive is
/// read back before the target is touched (both engines, and --datadir), and a damage found
/// during the replay anyway (the check skipped, standing for a damage that happens after
/// it) is exit 8 naming the segment too.
#[test]
fn a_damaged_binlog_chunk_fails_pitr_with_exit_8_naming_the_segment_before_the_target_is_touched() {
    // A clone snapshot too, for the --datadir variant.
    let h = history("damaged", 2, true);
    let repo = Path::new(&h.repo);
    let goal = h.goal.to_string();
    let plan = restore(&h, &goal, Dest::Plan, &["--json"], &[]);
    plan.expect_code(0);
    let files: Vec<String> = plan.json()["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["file"].as_str().unwrap().to_string())
        .collect();
    assert!(
        files.len() >= 2,
        "the boundary is past a rotation: {files:?}"
    );
    // The first file, which the replay reads whole and the plan does not read at all (the
    // manifest says the boundary is further on); its last chunk, so that without the check
    // the replay applies the transactions before it into a loaded snapshot first.
    let damaged = files[0].clone();
    let chunks = segment_chunks(repo, &h.uuid, &damaged);
    assert!(chunks.len() >= 2, "{damaged} is one chunk");
    damage_chunk(repo, chunks.last().unwrap());
    let segment = format!("{damaged} of {}", h.uuid);

    let target = TestServer::mysql97();
    for engine in ["applier", "sql"] {
        let run = restore(&h, &goal, Dest::Server(&target), &["--engine", engine], &[]);
        run.expect_code(8);
        assert!(run.stderr.contains(&segment), "{engine}: {}", run.stderr);
        assert_eq!(
            run.stderr.trim().lines().count(),
            1,
            "{engine}: {}",
            run.stderr
        );
        assert_untouched(&target, engine);
    }
    let datadir = h.dir.join("datadir");
    let run = restore(&h, &goal, Dest::Datadir(&datadir), &[], &[]);
    run.expect_code(8);
    assert!(run.stderr.contains(&segment), "--datadir: {}", run.stderr);
    assert!(
        !datadir.exists() || std::fs::read_dir(&datadir).unwrap().next().is_none(),
        "--datadir: the directory was written"
    );

    // Found during the replay instead: still exit 8 naming the segment, whichever engine
    // was reading.
    for engine in ["applier", "sql"] {
        reset(&target);
        let extra = ["--engine", engine, "--skip-archive-check"];
        let run = restore(&h, &goal, Dest::Server(&target), &extra, &[]);
        run.expect_code(8);
        assert!(
            run.stderr.contains(&segment),
            "{engine}, during the replay: {}",
            run.stderr
        );
        assert_eq!(
            channels(&target),
            0,
            "{engine}: the channel was left behind"
        );
    }
    // The applier reads a file's head before serving it: damage there is the same failure.
    damage_chunk(repo, &chunks[0]);
    reset(&target);
    let run = restore(
        &h,
        &goal,
        Dest::Server(&target),
        &["--skip-archive-check"],
        &[],
    );
    run.expect_code(8);
    assert!(
        run.stderr.contains(&segment),
        "the file's head: {}",
        run.stderr
    );
}

/// The restore to the goal, killed at `failpoint`'s `nth` hit (unless it was killed
/// already: `None`), then run again: the rerun must finish with exactly the source's data
/// at the goal and leave nothing behind. Returns the rerun's report.
fn killed_then_rerun(
    h: &History,
    target: &TestServer,
    engine: &str,
    kill: Option<(&str, u32)>,
) -> serde_json::Value {
    let goal = h.goal.to_string();
    let args = ["--engine", engine, "--json"];
    if let Some((failpoint, nth)) = kill {
        let spec = format!("{failpoint}=abort({nth})");
        let arm = [failpoints(&spec)];
        let killed = restore(h, &goal, Dest::Server(target), &args, &arm);
        assert!(
            killed
                .stderr
                .contains(&format!("failpoint {failpoint}: aborting")),
            "{failpoint}: the restore was not killed there: {}\n{}",
            killed.stderr,
            killed.stdout
        );
    }
    let what = kill.map_or("rerun", |(f, _)| f);
    let rerun = restore(h, &goal, Dest::Server(target), &args, &[]);
    assert!(
        !rerun.stderr.contains("--force"),
        "{what}: {}",
        rerun.stderr
    );
    rerun.expect_code(0);
    assert_eq!(target.gtid_executed(), h.goal, "{what}: gtid_executed");
    assert_eq!(load::checksums(target, "sb"), h.sums, "{what}: data");
    assert_eq!(
        target
            .value("SELECT GROUP_CONCAT(v ORDER BY id) FROM sb.tagged")
            .as_deref(),
        Some("tagged,plain"),
        "{what}: the tagged transactions, and nothing after the boundary"
    );
    assert_eq!(channels(target), 0, "{what}: a replication channel is left");
    assert_eq!(
        user_databases(target),
        vec!["sb".to_string()],
        "{what}: traces left"
    );
    rerun.json()
}

/// Empties a target for the next round: what a fresh server is.
fn reset(target: &TestServer) {
    target.sql(
        "DROP DATABASE IF EXISTS sb;\nDROP DATABASE IF EXISTS myvault_pitr;\nDROP DATABASE IF EXISTS myvault_restore;\nRESET BINARY LOGS AND GTIDS;\nSET GLOBAL innodb_redo_log_capacity = 8388608",
    );
}

/// Issue 18, item 8: a PITR killed after its load could not be resumed: the target's replay
/// channel kept running, and the rerun called the target "not empty" and suggested --force.
/// Killed during the load, just after it, and during the replay with either engine (the
/// applier's channel still applying after myvault died), the same command run again
/// finishes: the source's data at the boundary, its GTIDs, no channel, no trace.
#[test]
fn a_killed_pitr_is_finished_by_running_the_same_command_again() {
    let h = history("resume", 4, false);
    // The source's server_id: the applier engine swaps it for the replay (a replica skips
    // events with its own id), and a kill leaves it swapped.
    let target = TestServer::builder(Flavor::Mysql97)
        .option("--innodb-redo-log-capacity=8M")
        .option(&format!("--server-id={}", h.server_id))
        .start();
    let server_id = || target.value("SELECT @@GLOBAL.server_id").unwrap();
    let redo = || {
        target
            .value("SELECT @@GLOBAL.innodb_redo_log_capacity")
            .unwrap()
    };

    // During the load: the load resumes where it stopped.
    let report = killed_then_rerun(&h, &target, "applier", Some(("restore-after-chunk", 1)));
    assert!(report["load"].is_object(), "{report}");
    assert_eq!(redo(), "8388608", "the load's settings are put back");
    reset(&target);

    // Just after the load, before it was recorded: the rerun sees the loaded snapshot and
    // goes on with the replay.
    let report = killed_then_rerun(&h, &target, "applier", Some(("pitr-after-load", 1)));
    assert!(report["load"].is_null(), "{report}");
    assert_eq!(report["resumed"]["load_done"], true, "{report}");
    assert!(
        report["warnings"].to_string().contains("not recorded"),
        "the settings the load changed are unknown: {report}"
    );
    reset(&target);

    // During the applier's replay: the channel goes on applying after myvault died, and the
    // rerun stops it.
    let goal = h.goal.to_string();
    let arm = [failpoints("pitr-replay-waiting=abort(1)")];
    let killed = restore(&h, &goal, Dest::Server(&target), &[], &arm);
    assert!(killed.stderr.contains("aborting"), "{}", killed.stderr);
    assert_eq!(
        channels(&target),
        1,
        "the killed run's channel is on the target"
    );
    assert_ne!(server_id(), h.server_id, "the replay had swapped server_id");
    let report = killed_then_rerun(&h, &target, "applier", None);
    assert_eq!(report["resumed"]["channel_removed"], true, "{report}");
    assert!(report["load"].is_null(), "{report}");
    assert_eq!(redo(), "8388608", "the recorded settings are put back");
    assert_eq!(
        server_id(),
        h.server_id,
        "the swapped server_id is put back"
    );
    reset(&target);

    // During the SQL engine's replay, inside a transaction. A rerun to an earlier boundary
    // than the target has reached cannot continue it: it says what the target holds.
    let arm = [failpoints("pitr-sql-transaction=abort(40)")];
    let killed = restore(&h, &goal, Dest::Server(&target), &["--engine", "sql"], &arm);
    assert!(killed.stderr.contains("aborting"), "{}", killed.stderr);
    let reached = target.gtid_executed();
    let plan = restore(&h, &goal, Dest::Plan, &["--json"], &[]);
    let snapshot = GtidSet::parse(plan.json()["snapshot_gtids"].as_str().unwrap()).unwrap();
    let applied = reached.subtract(&snapshot);
    assert_eq!(
        applied.count(),
        39,
        "the 40th transaction was rolled back: {applied}"
    );
    let first = applied
        .intervals()
        .next()
        .map(|(_, start, _)| start)
        .unwrap();
    let earlier = format!("{}:{first}", h.uuid);
    let refused = restore(
        &h,
        &earlier,
        Dest::Server(&target),
        &["--engine", "sql"],
        &[],
    );
    refused.expect_code(12);
    let line = refused.stderr.trim();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(!line.contains("--force"), "{line}");
    assert!(
        line.contains(&reached.to_string())
            && line.contains(&format!("--to-gtid {goal}"))
            && line.contains("fresh server"),
        "says what the target holds, which restore left it, and what to do: {line}"
    );
    assert_eq!(
        target.gtid_executed(),
        reached,
        "the refused run changed nothing"
    );
    let report = killed_then_rerun(&h, &target, "sql", None);
    assert_eq!(report["resumed"]["load_done"], true, "{report}");
    reset(&target);

    // A channel left by a restore that recorded nothing (an older myvault; here the record
    // is dropped): nothing to continue from, but the channel is removed and the line says so.
    let arm = [failpoints("pitr-replay-waiting=abort(1)")];
    let killed = restore(&h, &goal, Dest::Server(&target), &[], &arm);
    assert!(killed.stderr.contains("aborting"), "{}", killed.stderr);
    target.sql("DROP DATABASE myvault_pitr");
    let refused = restore(&h, &goal, Dest::Server(&target), &[], &[]);
    refused.expect_code(12);
    let line = refused.stderr.trim();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(!line.contains("--force"), "{line}");
    assert!(
        line.contains("myvault_replay was stopped and removed") && line.contains("fresh server"),
        "{line}"
    );
    assert_eq!(channels(&target), 0, "the leftover channel is removed");
}
