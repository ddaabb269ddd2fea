//! The fault matrix (issue 18 item 14): every command that changes a repository or a server,
//! killed as `kill -9` would at each of its failpoints, on real servers. The rows of each
//! command's table are its phases; this file holds the harness and the backup and restore
//! tables, `faults_repo.rs` prune and copy, `faults_stream.rs` the streamer, `faults_seed.rs`
//! seed-replica, and `faults_storage.rs` S3 killed inside a multipart upload and full disks.
//!
//! Each case arms `failpoint=abort(N)`, with N drawn by a seeded generator between 1 and the
//! number of hits the failpoint has in an uninterrupted run of the same command (counted with
//! `trace()`), checks that the command died there, and then that: `verify` is clean (packs no
//! index names are fine), every snapshot `list` shows restores, the same command run again
//! completes, and its result equals the source. The seed is printed at the start of each
//! table (`MYVAULT_FAULTS_SEED=S` replays it). Rows marked `ci` run always; the others only
//! with `MYVAULT_FAULTS=full`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::restore_resume::{fast_server, reset_target};
use crate::support::load;
use crate::support::{Run, Scratch, TestServer, failpoints, myvault, myvault_env, testbed};

/// Seeded random numbers (xorshift): the seed comes from `MYVAULT_FAULTS_SEED` or the clock,
/// and is printed, so a failing case can be run again exactly.
pub(crate) struct Dice(u64);

impl Dice {
    pub(crate) fn new(table: &str) -> Dice {
        let seed = std::env::var("MYVAULT_FAULTS_SEED")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            })
            .max(1);
        eprintln!("fault matrix, {table}: seed {seed} (MYVAULT_FAULTS_SEED={seed} replays it)");
        Dice(seed)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number from 1 to `n`.
    pub(crate) fn upto(&mut self, n: u64) -> u64 {
        1 + self.next() % n.max(1)
    }

    /// `fraction` of `d`, `fraction` drawn between `lo` and `hi` (0..1).
    pub(crate) fn part_of(&mut self, d: Duration, lo: f64, hi: f64) -> Duration {
        let f = lo + (hi - lo) * (self.next() % 10_000) as f64 / 10_000.0;
        d.mul_f64(f)
    }
}

/// `MYVAULT_FAULTS=full`: every row, not only the CI subset.
pub(crate) fn full() -> bool {
    std::env::var("MYVAULT_FAULTS").is_ok_and(|v| v == "full")
}

/// One row of a command's table: a phase and the failpoint that kills the command in it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Row {
    pub phase: &'static str,
    pub failpoint: &'static str,
    /// In the CI subset; every row runs with `MYVAULT_FAULTS=full`.
    pub ci: bool,
}

pub(crate) const fn row(phase: &'static str, failpoint: &'static str, ci: bool) -> Row {
    Row {
        phase,
        failpoint,
        ci,
    }
}

impl Row {
    /// Whether this run covers the row.
    pub(crate) fn runs(&self) -> bool {
        self.ci || full()
    }
}

/// The rows this run covers.
pub(crate) fn selected(rows: &[Row]) -> Vec<Row> {
    rows.iter().filter(|r| r.runs()).copied().collect()
}

/// Where one case kills its command.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// At the N-th hit of the row's failpoint.
    At(Row, u64),
    /// A plain kill -9 at a random moment of the run.
    Anytime,
}

/// One case of a command's table.
pub(crate) struct Case {
    pub name: String,
    kill: Kill,
}

impl Case {
    /// Runs `args` until this case kills it, and checks that it died there. `took`: how long
    /// an uninterrupted run took.
    pub(crate) fn kill(
        &self,
        args: &[&str],
        env: &[(String, String)],
        dice: &mut Dice,
        took: Duration,
    ) {
        match self.kill {
            Kill::At(r, n) => {
                killed_at(args, env, r.failpoint, n, &self.name);
            }
            Kill::Anytime => killed_after(args, env, dice.part_of(took, 0.1, 0.9), &self.name),
        }
    }
}

/// The cases of `command`'s table this run covers: each row killed at a hit drawn between 1
/// and its count in an uninterrupted run (`hits`), and one kill at a random moment.
pub(crate) fn cases(
    dice: &mut Dice,
    command: &str,
    rows: &[Row],
    hits: &BTreeMap<String, u64>,
) -> Vec<Case> {
    let mut cases: Vec<Case> = selected(rows)
        .into_iter()
        .map(|r| {
            let n = dice.upto(hits[r.failpoint]);
            Case {
                name: format!("{command}, {}: hit {n} of {}", r.phase, r.failpoint),
                kill: Kill::At(r, n),
            }
        })
        .collect();
    cases.push(Case {
        name: format!("{command}, killed at a random moment"),
        kill: Kill::Anytime,
    });
    cases
}

/// An environment for `myvault_env`: `base` plus `extra`.
pub(crate) fn env_with<'a>(
    base: &'a [(String, String)],
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    base.iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(extra.iter().copied())
        .collect()
}

/// Runs `args` uninterrupted with every failpoint of `rows` traced: the run, how many times
/// each was hit, and how long it took.
pub(crate) fn traced(
    args: &[&str],
    env: &[(String, String)],
    rows: &[Row],
) -> (Run, BTreeMap<String, u64>, Duration) {
    let spec: Vec<String> = rows
        .iter()
        .map(|r| format!("{}=trace()", r.failpoint))
        .collect();
    let spec = spec.join(";");
    let started = Instant::now();
    let run = myvault_env(args, &env_with(env, &[failpoints(&spec)]));
    let took = started.elapsed();
    assert_eq!(run.code, 0, "the traced run failed:\n{}", run.stderr);
    let hits = rows
        .iter()
        .map(|r| {
            let line = format!("myvault: failpoint {}: hit", r.failpoint);
            let n = run.stderr.lines().filter(|l| *l == line).count() as u64;
            (r.failpoint.to_string(), n)
        })
        .collect();
    eprintln!(
        "{}: {took:.1?} uninterrupted, failpoint hits {hits:?}",
        args.join(" ")
    );
    (run, hits, took)
}

/// Runs `args` armed to die at the `n`-th hit of `failpoint`, and checks that it died there.
#[track_caller]
pub(crate) fn killed_at(
    args: &[&str],
    env: &[(String, String)],
    failpoint: &str,
    n: u64,
    case: &str,
) -> Run {
    eprintln!("{case}");
    let spec = format!("{failpoint}=abort({n})");
    let run = myvault_env(args, &env_with(env, &[failpoints(&spec)]));
    let died = run
        .stderr
        .contains(&format!("myvault: failpoint {failpoint}: aborting"));
    assert!(
        died && run.code != 0,
        "{case}: not killed at hit {n} of {failpoint} (exit {}):\n{}",
        run.code,
        run.stderr
    );
    run
}

/// Runs `args` and kills it with SIGKILL after `delay`; a run that ends first is started
/// again with half the delay, so the kill lands while it works. Ten halvings: a command of
/// tens of milliseconds (a small prune) on a loaded machine can outrun the first few.
pub(crate) fn killed_after(
    args: &[&str],
    env: &[(String, String)],
    mut delay: Duration,
    case: &str,
) {
    for _ in 0..10 {
        let mut run = crate::support::Background::start(args, &env_with(env, &[]));
        let deadline = Instant::now() + delay;
        // Short naps: a 10 ms one made every kill land after the run of a quick command
        // (a prune with nothing left to do) had ended, whatever the delay.
        while Instant::now() < deadline && run.running() {
            std::thread::sleep(Duration::from_micros(500));
        }
        if run.running() {
            // SAFETY: signalling our own child.
            unsafe {
                libc::kill(run.pid() as i32, libc::SIGKILL);
            }
            let r = run.finish();
            // Exit 0: it ended between the check and the signal; try again, sooner.
            if r.code != 0 {
                assert_eq!(r.code, -1, "{case}: {}", r.stderr);
                eprintln!("{case}: killed after {delay:?}");
                return;
            }
            delay /= 2;
            continue;
        }
        let r = run.finish();
        assert_eq!(r.code, 0, "{case}: failed before the kill:\n{}", r.stderr);
        delay /= 2;
    }
    panic!("{case}: the command always ended before the kill");
}

/// `verify --repo REPO` is clean: exit 0 and no problem (packs no index names, left by a
/// killed writer, are counted but fine).
#[track_caller]
pub(crate) fn assert_verified(repo: &str, env: &[(String, String)], case: &str) {
    let run = myvault_env(&["verify", "--repo", repo, "--json"], &env_with(env, &[]));
    assert_eq!(
        run.code, 0,
        "{case}: verify is not clean:\n{}\n{}",
        run.stdout, run.stderr
    );
}

/// The ids of the snapshots `list` shows, oldest first.
pub(crate) fn snapshot_ids(repo: &str, env: &[(String, String)]) -> Vec<String> {
    let run = myvault_env(&["list", "--repo", repo, "--json"], &env_with(env, &[]));
    run.expect_code(0);
    run.json()["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// What a logical snapshot must restore to: its databases' table checksums.
pub(crate) type Sums = BTreeMap<String, String>;

/// `CHECKSUM TABLE` of every table of `dbs` on `srv`, keyed `db.table`.
pub(crate) fn sums(srv: &TestServer, dbs: &[&str]) -> Sums {
    dbs.iter()
        .flat_map(|db| {
            load::checksums(srv, db)
                .into_iter()
                .map(move |(t, v)| (format!("{db}.{t}"), v))
        })
        .collect()
}

/// Restores logical snapshot `id` into `target` (emptied first) and checks its tables against
/// `expected`.
#[track_caller]
pub(crate) fn assert_restores(
    repo: &str,
    env: &[(String, String)],
    id: &str,
    target: &TestServer,
    expected: &Sums,
    case: &str,
) {
    reset_target(target);
    let url = target.url();
    let run = myvault_env(
        &[
            "restore",
            "--repo",
            repo,
            "--target",
            &url,
            "--snapshot",
            id,
        ],
        &env_with(env, &[]),
    );
    assert_eq!(
        run.code, 0,
        "{case}: snapshot {id} does not restore:\n{}",
        run.stderr
    );
    let dbs: Vec<String> = expected
        .keys()
        .filter_map(|k| k.split_once('.').map(|(d, _)| d.to_string()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let dbs: Vec<&str> = dbs.iter().map(String::as_str).collect();
    assert_eq!(
        &sums(target, &dbs),
        expected,
        "{case}: snapshot {id} restores other data"
    );
}

/// A copy of the repository directory `from` at `to` (a fresh starting point for one case).
pub(crate) fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    let ok = Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cp -a {} {}", from.display(), to.display());
}

/// `init --repo REPO` with small chunks and packs, so small data makes many packs to die
/// between.
pub(crate) fn small_pack_repo(repo: &str, env: &[(String, String)]) {
    myvault_env(
        &[
            "init",
            "--repo",
            repo,
            "--chunk-size",
            "65536",
            "--pack-size",
            "1048576",
        ],
        &env_with(env, &[]),
    )
    .expect_code(0);
}

fn mysqld() -> String {
    testbed()
        .path("MYVAULT_MYSQLD_97")
        .to_string_lossy()
        .into_owned()
}

/// What clone backups staged next to the source's datadir: clones and their lock files.
fn clone_staging_dirs(src: &TestServer) -> Vec<String> {
    let parent = src.datadir().parent().unwrap().to_path_buf();
    std::fs::read_dir(parent)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("myvault-clone-"))
        .collect()
}

/// Whether two directory trees hold the same files with the same bytes (`diff -r`), but for
/// the names in `except`.
fn assert_same_tree(a: &Path, b: &Path, except: &[&str], case: &str) {
    let mut cmd = Command::new("diff");
    cmd.arg("-rq");
    for x in except {
        cmd.args(["-x", x]);
    }
    let out = cmd.arg(a).arg(b).output().unwrap();
    assert!(
        out.status.success(),
        "{case}: the restored data directory differs from the source's:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

const BACKUP_LOGICAL: &[Row] = &[
    row("consistent point taken", "dump-after-snapshot", true),
    row("pack stored", "store-after-put-packs", true),
    row("index written", "store-after-put-index", true),
    row("manifest written", "store-after-create-snapshots", false),
];

const BACKUP_CLONE: &[Row] = &[
    row("clone staged", "backup-clone-after-staging", true),
    row("pack stored", "store-after-put-packs", true),
    row("index written", "store-after-put-index", false),
];

const BACKUP_COLD: &[Row] = &[
    row("pack stored", "store-after-put-packs", true),
    row("index written", "store-after-put-index", false),
    row("manifest written", "store-after-create-snapshots", false),
];

/// Backup, every method: killed at each failpoint (and at a random moment), the repository
/// verifies clean and keeps its earlier snapshot, the rerun completes, and the rerun's
/// snapshot restores equal to the source (logical: table checksums; clone: a server started on
/// the restored data directory; cold: the restored files equal the stopped server's).
#[test]
fn fault_matrix_backup_logical_clone_and_cold() {
    let mut dice = Dice::new("backup");
    let no_env: Vec<(String, String)> = Vec::new();
    let src = fast_server();
    load::prepare(&src, "sb", 4, 10_000);
    let dir = Scratch::new("fm-backup");
    let template = dir.join("template");
    let template_repo = template.to_str().unwrap();
    small_pack_repo(template_repo, &no_env);
    let url = src.url();
    let earlier = crate::logical::backup(template_repo, &url, &["--json"]);
    earlier.expect_code(0);
    let earlier_id = earlier.json()["snapshot"].as_str().unwrap().to_string();
    let earlier_sums = sums(&src, &["sb"]);
    // Changed rows (stored as deltas against the earlier snapshot) and new ones.
    src.sql(
        "UPDATE sb.sbtest1 SET c = REPEAT('x', 100) WHERE id % 40 = 0;\n\
         INSERT INTO sb.sbtest2 (k, c, pad) SELECT k, c, pad FROM sb.sbtest3 WHERE id <= 3000",
    );
    let now_sums = sums(&src, &["sb"]);
    let target = fast_server();
    let repo_path = dir.join("case");
    let repo = repo_path.to_str().unwrap();
    let mysqld = mysqld();

    for (method, rows) in [("logical", BACKUP_LOGICAL), ("clone", BACKUP_CLONE)] {
        let args = [
            "backup", "--method", method, "--source", &url, "--repo", repo, "--mysqld", &mysqld,
            "--json",
        ];
        copy_dir(&template, &repo_path);
        let (_, hits, took) = traced(&args, &no_env, rows);
        for c in cases(&mut dice, &format!("backup {method}"), rows, &hits) {
            let case = &c.name;
            copy_dir(&template, &repo_path);
            let staged_before = clone_staging_dirs(&src);
            c.kill(&args, &no_env, &mut dice, took);
            assert_verified(repo, &no_env, case);
            let listed = snapshot_ids(repo, &no_env);
            assert!(listed.contains(&earlier_id), "{case}: {listed:?}");
            let rerun = myvault(&args);
            assert_eq!(rerun.code, 0, "{case}: the rerun failed:\n{}", rerun.stderr);
            let id = rerun.json()["snapshot"].as_str().unwrap().to_string();
            assert_verified(repo, &no_env, case);
            if method == "logical" {
                // The earlier snapshot, the rerun's, and the killed run's if it got listed.
                for listed in snapshot_ids(repo, &no_env) {
                    let expected = if listed == earlier_id {
                        &earlier_sums
                    } else {
                        &now_sums
                    };
                    assert_restores(repo, &no_env, &listed, &target, expected, case);
                }
            } else if full() {
                let restored = TestServer::restored_from(repo);
                assert_eq!(sums(&restored, &["sb"]), now_sums, "{case}: snapshot {id}");
            }
            assert_eq!(
                clone_staging_dirs(&src),
                staged_before,
                "{case}: a clone's staging directory is left behind"
            );
        }
    }

    // The last clone snapshot, restored as a data directory and started, equals the source;
    // stopped, that server's data directory is the cold backups' source.
    let mut restored = TestServer::restored_from(repo);
    assert_eq!(sums(&restored, &["sb"]), now_sums, "the clone snapshot");
    restored.server.stop(Duration::from_secs(60)).unwrap();
    let datadir = restored.datadir();
    let data = datadir.to_str().unwrap();
    let args = [
        "backup",
        "--method",
        "cold",
        "--datadir",
        data,
        "--repo",
        repo,
        "--json",
    ];
    copy_dir(&template, &repo_path);
    let (_, hits, took) = traced(&args, &no_env, BACKUP_COLD);
    for c in cases(&mut dice, "backup cold", BACKUP_COLD, &hits) {
        let case = &c.name;
        copy_dir(&template, &repo_path);
        c.kill(&args, &no_env, &mut dice, took);
        assert_verified(repo, &no_env, case);
        assert!(snapshot_ids(repo, &no_env).contains(&earlier_id), "{case}");
        let rerun = myvault(&args);
        assert_eq!(rerun.code, 0, "{case}: the rerun failed:\n{}", rerun.stderr);
        assert_verified(repo, &no_env, case);
        let id = rerun.json()["snapshot"].as_str().unwrap().to_string();
        let back = dir.join("cold-restored");
        let _ = std::fs::remove_dir_all(&back);
        myvault(&[
            "restore",
            "--repo",
            repo,
            "--snapshot",
            &id,
            "--datadir",
            back.to_str().unwrap(),
        ])
        .expect_code(0);
        // The restore removes auto.cnf, so that the copy gets its own server_uuid.
        assert_same_tree(&datadir, &back, &["auto.cnf"], case);
    }
}

const RESTORE: &[Row] = &[
    row("create", "restore-table-created", true),
    row("load", "restore-chunk-loaded", true),
    row("index", "restore-after-index", true),
    row("programs", "restore-view-created", false),
    row("programs", "restore-trigger-created", false),
    row("accounts", "restore-after-account", false),
    row("gtid", "restore-after-gtid", false),
    row("settings", "restore-before-put-back", true),
    row("settings", "restore-after-progress-dropped", false),
];

/// Logical restore, every phase: killed at each failpoint (N-th hit at random, two loader
/// connections) and at a random moment, the same command run again ends with a target equal
/// to the source (every object's definition, checksum and row count, and the grants) at the
/// snapshot's GTIDs. `restore_resume.rs` kills each phase at a fixed object and checks the
/// settings; PITR's replay phase is `pitr_trust.rs`'s.
#[test]
fn fault_matrix_restore() {
    let mut dice = Dice::new("restore");
    let no_env: Vec<(String, String)> = Vec::new();
    let src = crate::restore_resume::fixture_source("tricky.sql");
    load::prepare(&src, "sb", 2, 5_000);
    let dir = Scratch::new("fm-restore");
    let repo = dir.join("repo");
    let repo = repo.to_str().unwrap();
    small_pack_repo(repo, &no_env);
    let taken = crate::logical::backup(repo, &src.url(), &["--json"]);
    taken.expect_code(0);
    let gtids = taken.json()["gtid_executed"].as_str().unwrap().to_string();
    let source = crate::logical::fingerprint(&src);
    let target = fast_server();
    let url = target.url();
    let args = ["restore", "--repo", repo, "--target", &url, "--jobs", "2"];
    reset_target(&target);
    let (_, hits, took) = traced(&args, &no_env, RESTORE);
    for c in cases(&mut dice, "restore", RESTORE, &hits) {
        let case = &c.name;
        reset_target(&target);
        c.kill(&args, &no_env, &mut dice, took);
        let rerun = myvault(&args);
        assert_eq!(rerun.code, 0, "{case}: the rerun failed:\n{}", rerun.stderr);
        crate::logical::assert_same_objects(&source, &crate::logical::fingerprint(&target), case);
        crate::logical::assert_restored_at(&target, &gtids);
    }
    assert_verified(repo, &no_env, "restore");
}

/// Found by the fault matrix: a clone backup killed after the server wrote its clone left
/// that copy of the whole data directory behind for good (every crash cost a database's worth
/// of disk), and with `--clone-dir` the rerun then refused to start ("already exists"). The
/// rerun now removes what a killed run staged, in the default place and in `--clone-dir`.
#[test]
fn a_killed_clone_backup_leaves_no_copy_of_the_data_directory_behind() {
    let no_env: Vec<(String, String)> = Vec::new();
    let src = fast_server();
    load::prepare(&src, "sb", 1, 1_000);
    let dir = Scratch::new("fm-staging");
    let repo = dir.join("repo");
    let repo = repo.to_str().unwrap();
    myvault(&["init", "--repo", repo]).expect_code(0);
    let (url, mysqld) = (src.url(), mysqld());
    let given = dir.join("clone-here");
    let given = given.to_str().unwrap();
    let default_place = [
        "backup", "--method", "clone", "--source", &url, "--repo", repo, "--mysqld", &mysqld,
    ];
    let mut in_given = default_place.to_vec();
    in_given.extend(["--clone-dir", given]);
    for (args, staged) in [
        (&default_place[..], "the default place"),
        (&in_given[..], given),
    ] {
        let case = format!("clone staged in {staged}, killed");
        killed_at(args, &no_env, "backup-clone-after-staging", 1, &case);
        let staged_dirs = clone_staging_dirs(&src)
            .iter()
            .filter(|n| !n.ends_with(".lock"))
            .count();
        let left = staged_dirs + usize::from(Path::new(given).exists());
        assert_eq!(left, 1, "{case}: the kill left its clone");
        let rerun = myvault(args);
        assert_eq!(rerun.code, 0, "{case}: the rerun failed:\n{}", rerun.stderr);
        assert!(
            clone_staging_dirs(&src).is_empty() && !Path::new(given).exists(),
            "{case}: a staged clone is left behind"
        );
        assert_verified(repo, &no_env, &case);
    }
}

/// Found by the fault matrix: a restore killed after it had dropped its progress schema (all
/// loaded, the GTIDs set; only the redo log's size was still to be put back) could not be run
/// again: "the target is not empty ... pass --force", and --force would load it all over
/// again. The rerun now sees that the target holds the snapshot and says so, exit 0.
#[test]
fn a_restore_killed_at_its_very_end_is_done_when_run_again() {
    let src = fast_server();
    load::prepare(&src, "sb", 1, 1_000);
    let dir = Scratch::new("fm-restore-end");
    let repo = crate::logical::new_repo(&dir);
    let taken = crate::logical::backup(&repo, &src.url(), &["--json"]);
    taken.expect_code(0);
    let gtids = taken.json()["gtid_executed"].as_str().unwrap().to_string();
    let target = fast_server();
    let url = target.url();
    let args = ["restore", "--repo", &repo, "--target", &url, "--json"];
    let case = "restore killed after its progress schema was dropped";
    killed_at(&args, &[], "restore-after-progress-dropped", 1, case);
    let rerun = myvault(&args);
    assert_eq!(rerun.code, 0, "{case}: the rerun failed:\n{}", rerun.stderr);
    assert!(
        rerun.json()["warnings"]
            .to_string()
            .contains("already holds snapshot"),
        "{case}: {}",
        rerun.stdout
    );
    assert_eq!(sums(&target, &["sb"]), sums(&src, &["sb"]), "{case}");
    crate::logical::assert_restored_at(&target, &gtids);
}
