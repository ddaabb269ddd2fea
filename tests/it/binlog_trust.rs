//! Trust in the binlog archive (issue 18): files a crashed server left behind, holes in the
//! archive, and who may read what myvault writes outside a repository.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use myvault::mysql::gtid::GtidSet;

use crate::support::{Flavor, Scratch, TestServer, myvault};

fn new_repo(dir: &Scratch) -> String {
    let repo = dir.join("repo").to_str().unwrap().to_string();
    myvault(&["init", "--repo", &repo]).expect_code(0);
    repo
}

/// Writers committing transactions of several rows events each (2,000 rows of ~100 bytes:
/// the server copies such a transaction into the binlog in many writes), remembering which
/// commits the server acknowledged.
struct Writers {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Vec<u32>>>,
}

const ROWS_PER_COMMIT: u64 = 2000;

impl Writers {
    fn start(src: &TestServer, n: u32) -> Writers {
        src.sql(
            "CREATE DATABASE c;\n\
             CREATE TABLE c.n (i INT PRIMARY KEY);\n\
             SET SESSION cte_max_recursion_depth = 10000;\n\
             INSERT INTO c.n WITH RECURSIVE s AS (SELECT 1 AS i UNION ALL SELECT i + 1 FROM s WHERE i < 2000) SELECT i FROM s;\n\
             CREATE TABLE c.t (id BIGINT AUTO_INCREMENT PRIMARY KEY, writer INT, batch INT, v VARCHAR(200))",
        );
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|w| {
                let mut s = src.session();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut acknowledged = Vec::new();
                    for batch in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let sql = format!(
                            "INSERT INTO c.t (writer, batch, v) SELECT {w}, {batch}, REPEAT('y', 100) FROM c.n"
                        );
                        // Autocommit: the insert returns once its commit is durable.
                        if s.exec(&sql).is_err() {
                            break;
                        }
                        acknowledged.push(batch);
                    }
                    acknowledged
                })
            })
            .collect();
        Writers { stop, threads }
    }

    /// Per writer, the batches whose commit the server acknowledged.
    fn finish(self) -> Vec<Vec<u32>> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .map(|t| t.join().expect("writer thread"))
            .collect()
    }
}

/// The binlog file the server writes now, from its index; `None` while a rotation has the
/// index or the new file half made (the server replaces `binlog.index` through a rename, and a
/// SIGSTOP can land between the two steps).
fn newest_binlog(datadir: &Path) -> Option<PathBuf> {
    let index = std::fs::read_to_string(datadir.join("binlog.index")).ok()?;
    let last = index.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    let file = datadir.join(Path::new(last).file_name()?);
    file.exists().then_some(file)
}

/// Where the event the bytes end inside starts, or `None` when they end on an event boundary.
fn incomplete_event_at(bytes: &[u8]) -> Option<u64> {
    let mut off = 4usize;
    while off < bytes.len() {
        let Some(size) = bytes.get(off + 9..off + 13) else {
            return Some(off as u64);
        };
        let size = u32::from_le_bytes(size.try_into().unwrap()) as usize;
        assert!(size >= 19, "event of {size} bytes at {off}");
        if off + size > bytes.len() {
            return Some(off as u64);
        }
        off += size;
    }
    None
}

/// Every thread of `pid` is stopped.
fn all_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(") ")
                    .and_then(|(_, rest)| rest.chars().next())
            })
            .is_some_and(|state| state == 'T' || state == 't')
    })
}

/// Kills the server with SIGKILL at a moment its newest binlog file ends inside an event:
/// it is frozen (SIGSTOP) at random moments and let go again until it is caught between two
/// of the writes that copy a transaction into the file. Returns the file and where its
/// incomplete event starts.
fn kill_inside_a_binlog_write(src: &mut TestServer) -> (PathBuf, u64) {
    let pid = src.server.pid().expect("server pid") as i32;
    let datadir = src.datadir();
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut rng = std::process::id() as u64 | 1;
    loop {
        assert!(
            Instant::now() < deadline,
            "the server was never caught inside a binlog write"
        );
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_micros(rng % 5000));
        // SAFETY: signalling the test's own server process.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        while !all_stopped(pid as u32) {
            std::thread::sleep(Duration::from_micros(200));
        }
        if let Some(file) = newest_binlog(&datadir) {
            let bytes = std::fs::read(&file).unwrap();
            if let Some(at) = incomplete_event_at(&bytes) {
                src.server.kill();
                return (file, at);
            }
        }
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGCONT) };
    }
}

/// Issue 18, item 4: a server that crashed leaves its last binlog marked in use (and here cut
/// inside an event). `backup --method cold` of that data directory failed with "CRC32
/// mismatch in event at offset 4"; it must succeed, record the point the server's own
/// recovery reaches, and restore every committed row.
#[test]
fn in_use_binlog_of_a_crashed_server_backs_up_cold_with_every_committed_row() {
    let mut src = TestServer::builder(Flavor::Mysql97)
        .option("--max-binlog-size=16777216")
        .start();
    let writers = Writers::start(&src, 3);
    std::thread::sleep(Duration::from_millis(1500));
    let (binlog, incomplete_at) = kill_inside_a_binlog_write(&mut src);
    let acknowledged = writers.finish();
    assert!(
        acknowledged.iter().all(|a| !a.is_empty()),
        "{acknowledged:?}"
    );
    let crashed = std::fs::read(&binlog).unwrap();
    assert_eq!(crashed[4 + 17] & 1, 1, "the crashed file is marked in use");

    let dir = Scratch::new("crashed");
    let repo = new_repo(&dir);
    let run = crate::support::cold_backup(&src.datadir(), &repo);
    run.expect_code(0);
    let snap = run.json();
    let file = binlog.file_name().unwrap().to_str().unwrap().to_string();
    assert_eq!(snap["binlog_file"], file.as_str());
    let position = snap["binlog_position"].as_u64().unwrap();
    assert!(
        position <= incomplete_at,
        "the snapshot's position {position} is past the incomplete event at {incomplete_at}"
    );
    let snap_gtids = GtidSet::parse(snap["gtid_executed"].as_str().unwrap()).unwrap();

    let restored = TestServer::restored_from(&repo);
    // The restored server recovered from the same crash: it trimmed the file where the
    // snapshot says the binlog ends, and has exactly the snapshot's transactions.
    assert_eq!(
        std::fs::metadata(restored.datadir().join(&file))
            .unwrap()
            .len(),
        position,
        "the server's recovery and the snapshot disagree on where {file} ends"
    );
    assert_eq!(restored.gtid_executed(), snap_gtids);
    let mut batches: BTreeMap<(u32, u32), u64> = BTreeMap::new();
    for row in restored
        .session()
        .query("SELECT writer, batch, COUNT(*) AS n FROM c.t GROUP BY writer, batch")
        .unwrap()
        .iter()
    {
        let w = row.u64("writer").unwrap() as u32;
        let b = row.u64("batch").unwrap() as u32;
        batches.insert((w, b), row.u64("n").unwrap());
    }
    for (w, acked) in acknowledged.iter().enumerate() {
        for b in acked {
            assert_eq!(
                batches.get(&(w as u32, *b)),
                Some(&ROWS_PER_COMMIT),
                "writer {w} batch {b} was committed before the crash but is not restored whole"
            );
        }
    }
    // At most the commit each writer had in flight when the server died comes on top.
    for ((w, b), rows) in &batches {
        assert_eq!(
            *rows, ROWS_PER_COMMIT,
            "writer {w} batch {b} restored in part"
        );
        assert!(
            acknowledged[*w as usize].contains(b) || acknowledged[*w as usize].len() == *b as usize,
            "writer {w} batch {b} was never written"
        );
    }
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Every directory and file below `root` (itself included), with its mode.
fn modes_below(root: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = vec![(root.to_path_buf(), mode(root))];
    for e in std::fs::read_dir(root).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(modes_below(&e.path()));
        } else {
            out.push((e.path(), mode(&e.path())));
        }
    }
    out
}

fn assert_private(root: &Path) {
    let all = modes_below(root);
    for (path, m) in &all {
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(
            *m,
            want,
            "{} is {m:o}: readable by others ({all:?})",
            path.display()
        );
    }
}

/// Issue 18, item 10: the spool and fetched binlogs were world-readable (0755/0644) while the
/// repository is 0700/0600: every row change exposed to every local user.
#[test]
fn spool_and_fetched_binlogs_are_not_world_readable() {
    let src = TestServer::mysql97();
    src.sql("CREATE DATABASE p;\nCREATE TABLE p.t (id INT PRIMARY KEY, secret VARCHAR(100))");
    let dir = Scratch::new("private");
    let repo = new_repo(&dir);
    // A spool an older version left with the umask's mode is restricted too.
    let spool = dir.join("spool");
    std::fs::create_dir(&spool).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut streamer = crate::support::streamer::Streamer::start(&src.url(), &repo, &spool, &[]);
    for i in 0..20 {
        src.sql(&format!(
            "INSERT INTO p.t VALUES ({i}, 'card 4111-1111-1111-{i:04}')"
        ));
    }
    src.sql("FLUSH BINARY LOGS");
    src.sql("INSERT INTO p.t VALUES (100, 'in the open file')");
    // The open file stays in the spool; wait until it and status.json are there.
    let uuid = src.value("SELECT @@server_uuid").unwrap();
    let open_file = spool.join(&uuid).join(src.current_binlog());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(open_file.exists() && spool.join("status.json").exists()) {
        assert!(
            Instant::now() < deadline,
            "nothing spooled: {}",
            streamer.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_private(&spool);
    assert_eq!(streamer.terminate(), 0, "{}", streamer.log_text());
    assert_private(&spool);

    // Fetched into a directory myvault creates (with a parent it creates too).
    let dest = dir.join("fetched/binlogs");
    crate::support::streamer::fetch(&repo, &dest, &[]).expect_code(0);
    assert!(std::fs::read_dir(&dest).unwrap().count() >= 2);
    assert_private(&dir.join("fetched"));
}

/// A logical snapshot of `src`; returns its id.
fn snapshot(src: &TestServer, repo: &str) -> String {
    let run = myvault(&["backup", "--source", &src.url(), "--repo", repo, "--json"]);
    run.expect_code(0);
    run.json()["snapshot"].as_str().unwrap().to_string()
}

/// Issue 18, item 6: with one archived segment deleted from the repository, `verify` exited 0
/// and `list --json` showed no gap; only a restore past it noticed. Both must name the hole:
/// the source, the file, the GTIDs and times lost, and the restorable windows it splits.
#[test]
fn a_missing_archived_binlog_segment_is_a_hole_that_list_and_verify_report() {
    let src = TestServer::mysql97();
    src.sql("CREATE DATABASE h;\nCREATE TABLE h.t (id INT PRIMARY KEY)");
    let dir = Scratch::new("hole");
    let repo = new_repo(&dir);
    let spool = dir.join("spool");
    let first = snapshot(&src, &repo);
    let mut id = 0;
    let mut write_files = |files: u32| {
        for _ in 0..files {
            for _ in 0..3 {
                id += 1;
                src.sql(&format!("INSERT INTO h.t VALUES ({id})"));
            }
            src.sql("FLUSH BINARY LOGS");
        }
    };
    write_files(3);
    crate::support::streamer::drain(&src, &repo, &spool);
    write_files(2);
    let second = snapshot(&src, &repo);
    write_files(2);
    crate::support::streamer::drain(&src, &repo, &spool);

    let clean = myvault(&["list", "--repo", &repo, "--json"]);
    clean.expect_code(0);
    let source = &clean.json()["binlog"][0];
    assert_eq!(source["gaps"].as_array().unwrap().len(), 0, "{source}");
    assert_eq!(source["windows"].as_array().unwrap().len(), 1, "{source}");
    assert_eq!(source["windows"][0]["first_snapshot"], first.as_str());
    myvault(&["verify", "--repo", &repo]).expect_code(0);

    // One file of the stretch between the two snapshots goes missing.
    let uuid = src.value("SELECT @@server_uuid").unwrap();
    let files = myvault(&["binlog", "list", "--repo", &repo, "--json"]).json()["files"]
        .as_array()
        .unwrap()
        .clone();
    assert!(files.len() >= 6, "{files:?}");
    let lost = &files[2];
    let lost_file = lost["file"].as_str().unwrap();
    let lost_gtids = lost["gtids"].as_str().unwrap();
    assert!(!lost_gtids.is_empty());
    std::fs::remove_dir_all(Path::new(&repo).join("binlog").join(&uuid).join(lost_file)).unwrap();

    let list = myvault(&["list", "--repo", &repo, "--json"]);
    list.expect_code(0);
    let source = &list.json()["binlog"][0];
    let gaps = source["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{source}");
    let gap = &gaps[0];
    assert_eq!(gap["server_uuid"], uuid.as_str());
    assert_eq!(gap["kind"], "missing_files");
    assert_eq!(gap["first_missing_file"], lost_file);
    assert_eq!(gap["missing_file_count"], 1);
    assert_eq!(gap["lost_gtids"], lost_gtids);
    assert_eq!(gap["after_file"], files[1]["file"]);
    assert_eq!(gap["before_file"], files[3]["file"]);
    assert_eq!(gap["window_before"]["first_snapshot"], first.as_str());
    assert_eq!(gap["window_after"]["first_snapshot"], second.as_str());
    assert_eq!(source["windows"].as_array().unwrap().len(), 2, "{source}");
    let text = myvault(&["list", "--repo", &repo]);
    text.expect_code(0);
    assert!(
        text.stdout.contains("HOLE") && text.stdout.contains(lost_file),
        "{}",
        text.stdout
    );

    let verify = myvault(&["verify", "--repo", &repo, "--json"]);
    verify.expect_code(8);
    let report = verify.json();
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{report}");
    let p = &problems[0];
    assert_eq!(p["object"], format!("binlog/{uuid}/{lost_file}").as_str());
    let detail = p["detail"].as_str().unwrap();
    for needed in [
        uuid.as_str(),
        lost_file,
        lost_gtids,
        first.as_str(),
        second.as_str(),
    ] {
        assert!(detail.contains(needed), "{needed} not in: {detail}");
    }
}
