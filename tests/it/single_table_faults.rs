//! A single-table restore killed at any point (issue 21 item 1): run again, the same command
//! finishes without --replace-existing, the table equals its checksum at the boundary, nothing
//! else on the live server changed, and no staging database, progress schema or temporary
//! server directory is left. Against real MySQL 9.7, from a logical and a clone snapshot.

use std::time::{Duration, Instant};

use crate::faults::killed_at;
use crate::single_table::{Archive, checksum, clone_backup, databases, now_rfc3339};
use crate::support::{Background, Flavor, TestServer, load, myvault};

/// No staging database and no progress schema on `srv`.
#[track_caller]
fn assert_no_debris(srv: &TestServer, case: &str) {
    let dbs = databases(srv);
    assert!(
        !dbs.iter()
            .any(|d| d.starts_with("_myvault_restore") || d == "myvault_restore"),
        "{case}: left {dbs:?}"
    );
}

#[test]
fn a_killed_single_table_restore_finishes_when_run_again_without_replace_existing() {
    let started = Instant::now();
    let src = TestServer::builder(Flavor::Mysql97).start();
    src.sql(
        "CREATE DATABASE shop;
         CREATE TABLE shop.customers (id INT PRIMARY KEY, balance INT NOT NULL);
         CREATE TABLE shop.orders (id INT PRIMARY KEY AUTO_INCREMENT, customer INT, amount INT,
           KEY by_customer (customer))",
    );
    let mut s = src.session();
    for i in 1..=40 {
        s.exec(&format!("INSERT INTO shop.customers VALUES ({i}, {i})"))
            .unwrap();
        s.exec(&format!(
            "INSERT INTO shop.orders (customer, amount) VALUES ({i}, {i}), ({i}, {})",
            i * 2
        ))
        .unwrap();
    }
    let archive = Archive::start("single-table-faults", &src);
    myvault(&["backup", "--repo", &archive.repo, "--source", &src.url()]).expect_code(0);
    let clone_id = clone_backup(&archive.repo, &src, &archive.mysqld);
    // The window: transactions on orders (so a replay can be killed halfway), an ALTER, one
    // transaction touching both tables.
    for i in 1..=12 {
        s.exec(&format!(
            "UPDATE shop.orders SET amount = amount + 100 WHERE customer = {i}"
        ))
        .unwrap();
    }
    s.exec("ALTER TABLE shop.orders ADD COLUMN flag INT NOT NULL DEFAULT 3")
        .unwrap();
    s.exec("BEGIN").unwrap();
    s.exec("UPDATE shop.orders SET flag = 9 WHERE id < 10")
        .unwrap();
    s.exec("UPDATE shop.customers SET balance = -1 WHERE id < 10")
        .unwrap();
    s.exec("COMMIT").unwrap();
    let at_t = checksum(&src, "shop.orders");
    let t = now_rfc3339(&src);
    std::thread::sleep(Duration::from_millis(20));
    s.exec("DELETE FROM shop.orders").unwrap();
    s.exec("INSERT INTO shop.orders (customer, amount) VALUES (1, 1)")
        .unwrap();
    let (dir, repo, mysqld) = archive.catch_up(&src);

    // A production server with LOAD DATA LOCAL off: a kill while the load has it on must
    // not leave it on.
    src.sql("SET GLOBAL local_infile = OFF");
    let live = load::checksums(&src, "shop");
    let databases_before = databases(&src);
    let src_url = src.url();
    let args = |db: &'static str, extra: &[&'static str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "restore",
            "--repo",
            &repo,
            "--target",
            &src_url,
            "--json",
            "--tables",
            "shop.orders",
            "--to-time",
            &t,
            "--into-database",
            db,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let mut restored = Vec::new();
    // Run again after the kill: it finishes, says what it found, leaves nothing behind. A
    // run killed once its work was done (the destination in place, no staging database) is
    // a finished one: run again, it refuses to overwrite the table, as any second run does.
    let mut rerun = |db: &'static str, a: &[&str], case: &str| {
        let finished = databases(&src).contains(&db.to_string())
            && !databases(&src)
                .iter()
                .any(|d| d.starts_with("_myvault_restore"));
        let again = myvault(a);
        again.expect_code(if finished { 16 } else { 0 });
        if finished {
            eprintln!("{case}: the killed run had finished");
        }
        assert_eq!(checksum(&src, &format!("{db}.orders")), at_t, "{case}");
        assert_no_debris(&src, case);
        assert_eq!(
            src.value("SELECT @@GLOBAL.local_infile").as_deref(),
            Some("0"),
            "{case}: local_infile is not put back"
        );
        restored.push(db.to_string());
        if finished {
            return serde_json::json!({ "earlier_run": "finished" });
        }
        again.json()
    };

    // Killed at each phase: halfway through the load (local_infile switched on), after the
    // load, halfway through the replay, just before the tables move into place, and after
    // they moved but before the cleanup.
    let phases = [
        (
            "r_mid_load",
            "restore-after-chunk",
            1,
            "dropped, built again",
        ),
        (
            "r_after_load",
            "tables-after-load",
            1,
            "dropped, built again",
        ),
        (
            "r_mid_replay",
            "tables-mid-replay",
            4,
            "dropped, built again",
        ),
        (
            "r_before_rename",
            "tables-before-rename",
            1,
            "dropped, built again",
        ),
        (
            "r_after_rename",
            "tables-after-rename",
            1,
            "put the tables in place",
        ),
    ];
    let mut took = Duration::ZERO;
    for (db, failpoint, hit, found) in phases {
        let a = args(db, &[]);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let case = format!("killed at {failpoint}");
        killed_at(&a, &[], failpoint, hit, &case);
        let moved = failpoint == "tables-after-rename";
        assert_eq!(
            databases(&src).contains(&db.to_string()),
            moved,
            "{case}: the destination exists only once moved into place"
        );
        let run = Instant::now();
        let report = rerun(db, &a, &case);
        took = took.max(run.elapsed());
        eprintln!("{case}: the rerun took {took:.1?}");
        let earlier = report["earlier_run"].as_str().unwrap_or_default();
        assert!(earlier.contains(found), "{case}: {report}");
    }

    // Killed at random moments of a whole run (within half the longest rerun, which
    // started the process and did the whole work too).
    for db in ["r_random1", "r_random2", "r_random3"] {
        let bound = (took.as_millis() / 2).max(1) as u64;
        let delay = Duration::from_millis(rand::random::<u64>() % bound);
        let a = args(db, &[]);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let case = format!("killed after {delay:?}");
        let mut run = Background::start(&a, &[]);
        let deadline = Instant::now() + delay;
        while Instant::now() < deadline && run.running() {
            std::thread::sleep(Duration::from_micros(500));
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(run.pid() as i32, libc::SIGKILL) };
        let killed = run.finish();
        assert!(matches!(killed.code, -1 | 0), "{case}: {}", killed.stderr);
        eprintln!(
            "{case}: {}",
            if killed.code == 0 {
                "ended first"
            } else {
                "killed"
            }
        );
        rerun(db, &a, &case);
    }

    // From the clone snapshot, killed with its temporary server up: the rerun removes what
    // the killed run left in the scratch directory.
    let scratch = dir.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let scratch_s = scratch.to_str().unwrap();
    let extra = [
        "--snapshot",
        clone_id.as_str(),
        "--mysqld",
        mysqld.as_str(),
        "--scratch-dir",
        scratch_s,
    ];
    let mut a: Vec<String> = args("r_clone", &[]);
    a.extend(extra.iter().map(|s| s.to_string()));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    killed_at(
        &a,
        &[],
        "tables-before-copy",
        1,
        "clone: killed before the copy",
    );
    assert!(std::fs::read_dir(&scratch).unwrap().next().is_some());
    rerun("r_clone", &a, "clone: killed before the copy");
    let left: Vec<_> = std::fs::read_dir(&scratch).unwrap().collect();
    assert!(
        left.is_empty(),
        "the temporary server's files stay: {left:?}"
    );

    // Nothing else changed: the live tables, and no database but the destinations is new.
    assert_eq!(load::checksums(&src, "shop"), live);
    let mut expected: Vec<String> = databases_before.into_iter().chain(restored).collect();
    expected.sort();
    assert_eq!(databases(&src), expected);
    assert_eq!(
        src.value("SELECT @@GLOBAL.local_infile").as_deref(),
        Some("0")
    );
    eprintln!(
        "single-table kill/rerun test: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
