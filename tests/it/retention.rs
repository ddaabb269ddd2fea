//! Retention over every repository of a config (issue 19, item 7), against real MySQL 9.7, a
//! local directory and s3s-fs: `init`, `list`, `verify` and `prune` act on both and report
//! both; each repository's own `keep_*` settings apply; `prune --plan` and the run that follows
//! remove the same snapshots, binlog files and packs; after a `--keep-pitr-window` prune every
//! instant of the window still plans, and a restore inside it equals the source.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::support::load;
use crate::support::s3::S3Server;
use crate::support::streamer::Streamer;
use crate::support::{Run, Scratch, TestServer, myvault_env};

fn rfc3339(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// What a prune report says goes.
fn removals(r: &Value) -> [BTreeSet<String>; 4] {
    [
        strings(&r["snapshots_removed"]),
        strings(&r["binlog_files_removed"]),
        strings(&r["packs"]),
        strings(&r["orphan_packs"]),
    ]
}

#[test]
fn prune_over_a_config_with_two_repositories_keeps_each_policy_and_the_pitr_window() {
    let src = TestServer::mysql97();
    let s3 = S3Server::start();
    let dir = Scratch::new("retention");
    let local = dir.join("local").to_str().unwrap().to_string();
    let remote = s3.repo("retention");
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let cfg = dir.join("myvault.toml");
    let cfg_path = cfg.to_str().unwrap().to_string();
    let write_config = |window: &str| {
        let text = format!(
            "[[repository]]\nlocation = \"{local}\"\nkeep_pitr_window = \"{window}\"\n\n\
             [[repository]]\nlocation = \"{remote}\"\nkeep_daily = 1\n"
        );
        std::fs::write(&cfg, text).unwrap();
    };
    let run = |args: &[&str]| -> Run {
        let mut all = vec!["--config", cfg_path.as_str()];
        all.extend_from_slice(args);
        myvault_env(&all, &env)
    };
    write_config("1d");

    let init = run(&["init", "--json"]);
    init.expect_code(0);
    let created = init.json();
    assert_eq!(
        created["repositories"].as_array().unwrap().len(),
        2,
        "{created}"
    );
    assert!(created["failed"].as_array().unwrap().is_empty());

    src.sql(
        "CREATE DATABASE shop;\nCREATE TABLE shop.t (id INT PRIMARY KEY, v VARCHAR(40));\n\
         INSERT INTO shop.t VALUES (1, 'first')",
    );
    let url = src.url();
    let mut snapshots: Vec<(String, DateTime<Utc>, String)> = Vec::new();
    let mut mid: Option<(DateTime<Utc>, _)> = None;
    // The archive, from the first snapshot's binlog file on (where a streamer with an empty
    // archive starts) to what the server has written.
    let catch_up = || {
        let mut streamer = Streamer::start_env(
            &url,
            &local,
            &dir.join("spool"),
            &["--repo", &remote, "--until-caught-up"],
            &env,
        );
        assert_eq!(streamer.wait(), 0, "{}", streamer.log_text());
    };
    for round in 1..=3 {
        let b = run(&["backup", "--source", &url, "--json"]);
        b.expect_code(0);
        let j = b.json();
        snapshots.push((
            j["snapshot"].as_str().unwrap().to_string(),
            DateTime::<Utc>::MIN_UTC,
            j["binlog_file"].as_str().unwrap().to_string(),
        ));
        if round == 1 {
            catch_up();
        }
        src.sql(&format!(
            "INSERT INTO shop.t VALUES ({}, 'round {round}');\nFLUSH BINARY LOGS",
            round + 1
        ));
        if round == 2 {
            // An instant after the second snapshot with a write on each side of it.
            std::thread::sleep(Duration::from_millis(1100));
            mid = Some((Utc::now(), load::checksums(&src, "shop")));
            std::thread::sleep(Duration::from_millis(1100));
            src.sql("UPDATE shop.t SET v = 'after mid' WHERE id = 1");
        }
        // Rounds far enough apart that the window's start falls between two snapshots.
        std::thread::sleep(Duration::from_secs(if round < 3 { 4 } else { 1 }));
    }
    let (mid, at_mid) = mid.unwrap();
    catch_up();
    let listed = run(&["list", "--json"]);
    listed.expect_code(0);
    let listed = listed.json();
    for (n, repo) in [&local, &remote].into_iter().enumerate() {
        let r = &listed["repositories"][n];
        assert_eq!(r["repo"], repo.as_str());
        assert_eq!(r["snapshots"].as_array().unwrap().len(), 3);
    }
    // The snapshots' own times (their consistent points), oldest first as backed up.
    for (s, listed) in snapshots
        .iter_mut()
        .zip(listed["repositories"][0]["snapshots"].as_array().unwrap())
    {
        assert_eq!(listed["id"], s.0.as_str());
        s.1 = listed["time"].as_str().unwrap().parse().unwrap();
    }

    // The window starts a second after the second snapshot: it and the third stay.
    let window = (Utc::now() - snapshots[1].1).num_seconds() - 1;
    write_config(&format!("{window}s"));
    let plan = run(&["prune", "--plan", "--json"]);
    plan.expect_code(0);
    let plan = plan.json();
    let pruned = run(&["prune", "--json"]);
    pruned.expect_code(0);
    let pruned = pruned.json();
    assert!(pruned["failed"].as_array().unwrap().is_empty());
    for n in 0..2 {
        let (p, r) = (&plan["repositories"][n], &pruned["repositories"][n]);
        assert_eq!(p["planned_only"], true);
        assert_eq!(r["planned_only"], false);
        assert_eq!(removals(p), removals(r), "plan and run of repository {n}");
    }
    let (pitr, daily) = (&pruned["repositories"][0], &pruned["repositories"][1]);
    assert_eq!(pitr["policy"]["keep_pitr_window"], window);
    assert_eq!(daily["policy"]["keep_daily"], 1);

    // The PITR window: the snapshot its start restores from, and every later one.
    let evaluated: DateTime<Utc> = pitr["evaluated_at"].as_str().unwrap().parse().unwrap();
    let start = evaluated - chrono::Duration::seconds(window);
    let anchor = snapshots
        .iter()
        .rposition(|(_, t, _)| *t <= start)
        .expect("a snapshot before the window's start");
    let kept: BTreeSet<String> = snapshots[anchor..].iter().map(|s| s.0.clone()).collect();
    assert!(anchor >= 1, "the first snapshot is older than the window");
    assert_eq!(strings(&pitr["snapshots_kept"]), kept, "{pitr:#}");
    assert!(
        pitr["keep_reasons"][&snapshots[anchor].0]
            .as_array()
            .unwrap()
            .contains(&Value::from("pitr_window"))
    );
    let gone = strings(&pitr["binlog_files_removed"]);
    assert!(!gone.is_empty(), "binlog before the anchor goes: {pitr:#}");
    // Only files older than the one the anchor's coordinates point into.
    let anchor_file = &snapshots[anchor].2;
    let order = |f: &str| (f.len(), f.to_string());
    for f in &gone {
        let file = f.split(' ').nth(1).unwrap();
        assert!(order(file) < order(anchor_file), "{file} >= {anchor_file}");
    }
    // keep_daily 1 on the other repository: the newest of each UTC day (one, unless the
    // test ran across midnight).
    let days: BTreeSet<_> = snapshots.iter().map(|s| s.1.date_naive()).collect();
    assert_eq!(
        daily["snapshots_kept"].as_array().unwrap().len(),
        days.len()
    );
    assert_eq!(
        daily["snapshots_kept"][days.len() - 1],
        snapshots[2].0.as_str()
    );

    let verified = run(&["verify", "--json"]);
    verified.expect_code(0);
    assert_eq!(verified.json()["repositories"].as_array().unwrap().len(), 2);

    // Every instant of the window still plans: its start and its last restorable instant.
    let listed = run(&["list", "--repo", &local, "--json"]).json();
    let end: DateTime<Utc> = listed["binlog"][0]["windows"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()["end"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    for t in [start, end] {
        let args = [
            "restore",
            "--repo",
            &local,
            "--to-time",
            &rfc3339(t),
            "--plan",
        ];
        run(&args).expect_code(0);
    }
    let dst = TestServer::mysql97();
    let args = [
        "restore",
        "--repo",
        &local,
        "--to-time",
        &rfc3339(mid),
        "--target",
        &dst.url(),
    ];
    run(&args).expect_code(0);
    assert_eq!(load::checksums(&dst, "shop"), at_mid);

    // A repository that cannot be opened is named and sets the exit code; the others are
    // still listed.
    let missing = dir.join("missing").to_str().unwrap().to_string();
    let text = format!(
        "[[repo]]\nlocation = \"{local}\"\n[[repo]]\nlocation = \"{missing}\"\n[[repo]]\nlocation = \"{remote}\"\n"
    );
    std::fs::write(&cfg, text).unwrap();
    let list = run(&["list"]);
    assert_ne!(list.code, 0, "{list:?}");
    assert_eq!(
        list.stdout.matches("== repository").count(),
        3,
        "{}",
        list.stdout
    );
    assert!(list.stderr.contains(&missing), "{}", list.stderr);
    assert!(list.stderr.contains("1 of 3 failed"), "{}", list.stderr);
}

/// Files of a directory backup: `rounds` versions of a ~1 MiB file (a few of its lines changed
/// each time, so later snapshots share and delta-compress chunks), and one file per round.
fn write_round(data: &std::path::Path, round: usize) -> Vec<(String, Vec<u8>)> {
    let body: Vec<u8> = (0..20_000u64)
        .flat_map(|i| {
            let v = if i % 997 == round as u64 {
                round as u64
            } else {
                i * 7919 % 104_729
            };
            format!(
                "{i:06} {v:08} the quick brown fox {:016x}\n",
                i.wrapping_mul(0x9E37)
            )
            .into_bytes()
        })
        .collect();
    let files = vec![
        ("table.tsv".to_string(), body),
        (
            format!("round-{round}.txt"),
            format!("round {round}\n").into_bytes(),
        ),
    ];
    for (name, bytes) in &files {
        std::fs::write(data.join(name), bytes).unwrap();
    }
    files
}

/// A prune of two configured repositories killed (like kill -9) at a random point of its
/// plan's execution, in either repository: each repository still verifies clean, a rerun
/// removes what the plan before the kill said, and every kept snapshot restores byte for byte.
#[test]
fn prune_of_two_repositories_killed_at_random_points_leaves_both_sound() {
    const POINTS: [&str; 6] = [
        "prune-before-execute",
        "store-after-put-pruned",
        "store-after-delete-snapshots",
        "store-after-put-index",
        "store-after-delete-index",
        "store-after-delete-packs",
    ];
    let mut dice = crate::faults::Dice::new("retention kills");
    for case in 0..4 {
        let point = POINTS[dice.upto(POINTS.len() as u64) as usize - 1];
        // Up to the second repository's hits: the first's are counted first.
        let nth = dice.upto(4);
        let dir = Scratch::new("retention-kill");
        let (a, b) = (dir.join("a"), dir.join("b"));
        let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
        let cfg = dir.join("myvault.toml");
        std::fs::write(
            &cfg,
            format!(
                "[[repo]]\nlocation = \"{a}\"\nkeep_hourly = 1\n[[repo]]\nlocation = \"{b}\"\nkeep_last = 2\n"
            ),
        )
        .unwrap();
        let cfg = cfg.to_str().unwrap();
        let run = |args: &[&str], env: &[(&str, &str)]| {
            let mut all = vec!["--config", cfg];
            all.extend_from_slice(args);
            myvault_env(&all, env)
        };
        run(&["init", "--pack-size", "1048576"], &[]).expect_code(0);
        let data = dir.join("data");
        std::fs::create_dir_all(&data).unwrap();
        let mut backed_up = std::collections::BTreeMap::new();
        for round in 0..4 {
            let mut files = write_round(&data, round);
            // The files of earlier rounds stay in the directory: the backup holds them too.
            for r in 0..round {
                files.push((
                    format!("round-{r}.txt"),
                    format!("round {r}\n").into_bytes(),
                ));
            }
            let b = run(&["backup", "--path", data.to_str().unwrap(), "--json"], &[]);
            b.expect_code(0);
            backed_up.insert(b.json()["snapshot"].as_str().unwrap().to_string(), files);
        }
        let plan = run(&["prune", "--plan", "--json"], &[]);
        plan.expect_code(0);
        let plan = plan.json();

        let spec = format!("{point}=abort({nth})");
        let killed = run(&["prune", "--json"], &[crate::support::failpoints(&spec)]);
        eprintln!("case {case}: {spec}: exit {}", killed.code);
        assert!([0, -1, 134].contains(&killed.code), "{killed:?}");
        run(&["verify"], &[]).expect_code(0);
        let rerun = run(&["prune", "--json"], &[]);
        rerun.expect_code(0);
        let rerun = rerun.json();
        for n in 0..2 {
            let (p, r) = (&plan["repositories"][n], &rerun["repositories"][n]);
            assert_eq!(
                strings(&p["snapshots_kept"]),
                strings(&r["snapshots_kept"]),
                "{spec}"
            );
            let listed = run(&["list", "--repo", [a, b][n], "--json"], &[]).json();
            let ids: BTreeSet<String> = listed["snapshots"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(ids, strings(&p["snapshots_kept"]), "{spec}: repository {n}");
            for id in &ids {
                let out = dir.join(&format!("out-{n}-{id}"));
                let args = [
                    "restore",
                    "--repo",
                    [a, b][n],
                    "--snapshot",
                    id,
                    "--dest",
                    out.to_str().unwrap(),
                ];
                run(&args, &[]).expect_code(0);
                for (name, bytes) in &backed_up[id] {
                    assert!(
                        std::fs::read(out.join(name)).unwrap() == *bytes,
                        "{spec}: {id} {name}"
                    );
                }
            }
        }
        run(&["verify"], &[]).expect_code(0);
    }
}
