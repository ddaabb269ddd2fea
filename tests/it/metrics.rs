//! Prometheus metrics against real servers: what the streamer serves on `/metrics` and what
//! backup and verify write with `--metrics-file`, each accepted by `promtool check metrics`;
//! the shipped alert rules checked and unit-tested by promtool; and an S3 outage under
//! sysbench load that the metrics, `status.json` and `myvault status` report within a minute,
//! naming the repository, and stop reporting once S3 is back, with the archive complete.
//!
//! promtool comes from Debian's prometheus package (`scripts/testbed` installs it); without
//! it these tests fail, they never skip.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::load::{self, Load};
use crate::support::s3::S3Server;
use crate::support::streamer::Streamer;
use crate::support::{Scratch, TestServer, myvault, myvault_env, testbed, within};

const UNHEALTHY: i32 = 14;

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// `promtool ARGS` with `stdin`; its exit status and everything it printed.
fn promtool(args: &[&str], stdin: &str) -> (bool, String) {
    let bin = testbed().path("MYVAULT_PROMTOOL");
    let mut child = Command::new(&bin)
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/prometheus"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): run scripts/testbed as root (it installs Debian's prometheus package)",
                bin.display()
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `promtool check metrics` finds neither an error nor a lint problem in `text`.
#[track_caller]
fn assert_promtool_accepts(text: &str, what: &str) {
    assert!(!text.is_empty(), "{what}: no metrics");
    let (ok, said) = promtool(&["check", "metrics"], text);
    assert!(
        ok && said.trim().is_empty(),
        "promtool check metrics on {what}:\n{said}\n--- metrics:\n{text}"
    );
}

/// The value of `name{labels...}` (the sample whose labels include `labels`).
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let families = myvault::metrics::parse(text).expect("myvault's exposition text parses");
    let f = families.into_iter().find(|f| f.name == name)?;
    f.samples
        .into_iter()
        .find(|s| {
            labels
                .iter()
                .all(|(n, v)| s.labels.iter().any(|(ln, lv)| ln == n && lv == v))
        })
        .map(|s| s.value)
}

/// GET /metrics: the body, after checking the status line and the content type.
fn scrape(addr: SocketAddr) -> String {
    let mut c = TcpStream::connect(addr).expect("connect to /metrics");
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).expect("read /metrics");
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.to_string()
}

/// The address the streamer says it serves metrics on (`--metrics-listen 127.0.0.1:0`).
fn metrics_addr(streamer: &mut Streamer) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = streamer.log_text();
        if let Some(rest) = log.split("serving metrics on http://").nth(1) {
            let addr = rest.split('/').next().unwrap_or_default();
            return addr.parse().expect("a socket address");
        }
        assert!(
            streamer.running() && Instant::now() < deadline,
            "the streamer does not serve metrics:\n{log}"
        );
        sleep_ms(100);
    }
}

fn status_json(spool: &Path) -> Value {
    std::fs::read(spool.join("status.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

fn repo_entry<'a>(status: &'a Value, repo: &str) -> &'a Value {
    status["repos"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["repo"] == repo))
        .unwrap_or(&Value::Null)
}

#[test]
fn promtool_accepts_metrics_served_by_the_streamer_and_written_by_backup_verify_copy_prune() {
    let src = TestServer::mysql97();
    src.sql("CREATE DATABASE shop;\nCREATE TABLE shop.t (id INT PRIMARY KEY, v TEXT);\nINSERT INTO shop.t VALUES (1, 'a'), (2, 'b')");
    let dir = Scratch::new("metrics");
    let repo = dir.join("repo").to_str().unwrap().to_string();
    let prom = dir.join("myvault.prom");
    let prom_arg = prom.to_str().unwrap();
    myvault(&["init", "--repo", &repo]).expect_code(0);
    let url = src.url();
    myvault(&[
        "backup",
        "--source",
        &url,
        "--repo",
        &repo,
        "--metrics-file",
        prom_arg,
    ])
    .expect_code(0);
    let after_backup = std::fs::read_to_string(&prom).expect("backup wrote the textfile");
    assert_promtool_accepts(&after_backup, "the textfile of backup");
    let source = format!("127.0.0.1:{}", src.port());
    let l: &[(&str, &str)] = &[("source", &source), ("repo", &repo)];
    let snapshot_time = value(
        &after_backup,
        "myvault_backup_last_success_timestamp_seconds",
        l,
    )
    .expect("backup's last success time");
    let age = chrono::Utc::now().timestamp_micros() as f64 / 1e6 - snapshot_time;
    assert!((0.0..600.0).contains(&age), "snapshot {age} s old");
    assert!(value(&after_backup, "myvault_backup_last_size_bytes", l).unwrap() > 0.0);
    assert!(value(&after_backup, "myvault_backup_last_new_bytes", l).unwrap() > 0.0);
    assert_eq!(
        value(
            &after_backup,
            "myvault_last_run_success",
            &[("command", "backup")]
        ),
        Some(1.0)
    );

    myvault(&["verify", "--repo", &repo, "--metrics-file", prom_arg]).expect_code(0);
    let after_verify = std::fs::read_to_string(&prom).unwrap();
    assert_promtool_accepts(&after_verify, "the textfile of backup and verify");
    let r: &[(&str, &str)] = &[("repo", &repo)];
    assert_eq!(
        value(&after_verify, "myvault_verify_last_success", r),
        Some(1.0)
    );
    assert_eq!(
        value(&after_verify, "myvault_verify_problems", r),
        Some(0.0)
    );
    assert_eq!(value(&after_verify, "myvault_binlog_gaps", r), Some(0.0));
    // verify replaced nothing of backup's.
    assert_eq!(
        value(
            &after_verify,
            "myvault_backup_last_success_timestamp_seconds",
            l
        ),
        Some(snapshot_time)
    );
    // copy and prune add theirs to the same file.
    let copy = dir.join("copy").to_str().unwrap().to_string();
    myvault(&["init", "--repo", &copy]).expect_code(0);
    myvault(&[
        "copy",
        "--from",
        &repo,
        "--to",
        &copy,
        "--metrics-file",
        prom_arg,
    ])
    .expect_code(0);
    myvault(&[
        "prune",
        "--repo",
        &copy,
        "--keep-last",
        "1",
        "--metrics-file",
        prom_arg,
    ])
    .expect_code(0);
    let all = std::fs::read_to_string(&prom).unwrap();
    assert_promtool_accepts(&all, "the textfile of backup, verify, copy and prune");
    let c: &[(&str, &str)] = &[("repo", &copy), ("from", &repo)];
    assert_eq!(value(&all, "myvault_copy_last_snapshots", c), Some(1.0));
    assert!(value(&all, "myvault_copy_last_success_timestamp_seconds", c).is_some());
    assert_eq!(
        value(&all, "myvault_prune_snapshots_kept", &[("repo", &copy)]),
        Some(1.0)
    );
    assert_eq!(
        value(&all, "myvault_verify_last_success", r),
        Some(1.0),
        "earlier runs' series are kept"
    );
    // Atomic replacement leaves no temporary file behind.
    let mut names: Vec<String> = std::fs::read_dir(dir.path.as_path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("myvault.prom"))
        .collect();
    names.sort();
    assert_eq!(names, ["myvault.prom", "myvault.prom.lock"]);

    let spool = dir.join("spool");
    let mut streamer = Streamer::start(&url, &repo, &spool, &["--metrics-listen", "127.0.0.1:0"]);
    let addr = metrics_addr(&mut streamer);
    src.sql("INSERT INTO shop.t VALUES (3, 'c')");
    let (page, _) = within(
        Duration::from_secs(60),
        "an upload to the repository",
        || {
            let page = scrape(addr);
            (value(&page, "myvault_archive_uploads_total", r)? >= 1.0).then_some(page)
        },
    );
    assert_promtool_accepts(&page, "the streamer's /metrics");
    assert_eq!(
        value(&page, "myvault_stream_connected", &[("source", &source)]),
        Some(1.0)
    );
    assert_eq!(value(&page, "myvault_archive_upload_healthy", r), Some(1.0));
    assert!(value(&page, "myvault_archive_last_commit_timestamp_seconds", r).is_some());
    assert_eq!(streamer.terminate(), 0, "{}", streamer.log_text());
}

#[test]
fn promtool_checks_and_unit_tests_the_shipped_alert_rules() {
    let (ok, said) = promtool(&["check", "rules", "alerts.yml"], "");
    assert!(ok && said.contains("SUCCESS: 8 rules found"), "{said}");
    let (ok, said) = promtool(&["test", "rules", "alerts_test.yml"], "");
    assert!(ok && said.contains("SUCCESS"), "{said}");
}

/// The defects, all seen in one outage: the streamer's `status.json` kept
/// `lag_seconds` at 0 and `pending_uploads` at 1-2 while S3 was down, `last_error` had no
/// time and stayed set after S3 returned, and `archived_bytes` read ~15x the real figure.
#[test]
fn an_s3_outage_under_load_turns_metrics_and_status_unhealthy_naming_the_repository() {
    let src = TestServer::mysql97();
    load::prepare(&src, "sb", 1, 2000);
    let mut s3 = S3Server::start();
    let env_owned = s3.env();
    let env: Vec<(&str, &str)> = env_owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let dir = Scratch::new("metrics-outage");
    let local = dir.join("local").to_str().unwrap().to_string();
    let remote = s3.repo("outage");
    for r in [&local, &remote] {
        myvault_env(&["init", "--repo", r], &env).expect_code(0);
    }
    let url = src.url();
    myvault_env(
        &[
            "backup", "--source", &url, "--repo", &local, "--repo", &remote,
        ],
        &env,
    )
    .expect_code(0);
    let spool = dir.join("spool");
    let spool_arg = spool.to_str().unwrap();
    let mut streamer = Streamer::start_env(
        &url,
        &local,
        &spool,
        &["--repo", &remote, "--metrics-listen", "127.0.0.1:0"],
        &env,
    );
    let addr = metrics_addr(&mut streamer);
    let on_s3: &[(&str, &str)] = &[("repo", &remote)];
    // `status` judging the local repository, and the streamer's word on every repository.
    let status = |env: &[(&str, &str)]| {
        let run = myvault_env(
            &["status", "--repo", &local, "--spool", spool_arg, "--json"],
            env,
        );
        (run.code, run.json())
    };
    let load = Load::start(&src, "sb", 1, 2000, 1, 300);
    within(Duration::from_secs(60), "healthy before the outage", || {
        let page = scrape(addr);
        (value(&page, "myvault_archive_uploads_total", on_s3)? >= 1.0 && status(&env).0 == 0)
            .then_some(())
    });

    let outage = Instant::now();
    s3.kill();
    let (lag_seen, took) = within(
        Duration::from_secs(60),
        "/metrics says uploads to S3 fail and its archive falls behind",
        || {
            let page = scrape(addr);
            let lag = value(&page, "myvault_archive_upload_lag_seconds", on_s3)?;
            (value(&page, "myvault_archive_upload_healthy", on_s3)? == 0.0
                && value(&page, "myvault_archive_last_error_timestamp_seconds", on_s3)? > 0.0
                && value(&page, "myvault_archive_pending_bytes", on_s3)? > 0.0
                && lag >= 5.0)
                .then_some(lag)
        },
    );
    let seen_at = chrono::Utc::now();
    eprintln!("metrics unhealthy {took:?} after S3 went down (lag {lag_seen} s)");
    let (st, _) = within(
        Duration::from_secs(60)
            .saturating_sub(outage.elapsed())
            .max(Duration::from_secs(1)),
        "`myvault status` says uploads to S3 fail",
        || {
            let (code, st) = status(&env);
            (code == UNHEALTHY).then_some(st)
        },
    );
    let problem = st["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["code"] == "upload_failing")
        .unwrap_or_else(|| panic!("no upload_failing problem: {:#}", st["problems"]));
    assert_eq!(problem["severity"], "critical");
    assert_eq!(problem["repo"], remote.as_str());
    assert!(
        outage.elapsed() < Duration::from_secs(60),
        "status turned unhealthy only after {:?}",
        outage.elapsed()
    );
    // status.json: the lag grows (not 0), the error has its time, bytes wait for S3 only.
    // (status.json is rewritten every 10 s: one made after the scrape above.)
    let (js, _) = within(Duration::from_secs(30), "status.json rewritten", || {
        let js = status_json(&spool);
        let updated = chrono::DateTime::parse_from_rfc3339(js["updated_at"].as_str()?).ok()?;
        (updated > seen_at).then_some(js)
    });
    let s3_entry = repo_entry(&js, &remote);
    let local_entry = repo_entry(&js, &local);
    assert!(
        s3_entry["upload_lag_seconds"].as_f64().unwrap() > lag_seen,
        "lag does not grow: {js:#}"
    );
    assert!(js["lag_seconds"].as_f64().unwrap() > lag_seen, "{js:#}");
    assert!(s3_entry["pending_bytes"].as_u64().unwrap() > 0, "{js:#}");
    assert!(s3_entry["last_error"].is_string(), "{js:#}");
    assert!(s3_entry["last_error_time"].is_string(), "{js:#}");
    assert!(js["last_error_time"].is_string(), "{js:#}");
    assert!(local_entry["last_error"].is_null(), "{js:#}");
    assert!(
        local_entry["upload_lag_seconds"].as_f64().unwrap() < 30.0,
        "the local repository keeps up: {js:#}"
    );

    s3.restart();
    let back = Instant::now();
    let (_, took) = within(
        Duration::from_secs(60),
        "/metrics, status.json and status healthy after S3 returns",
        || {
            let page = scrape(addr);
            let js = status_json(&spool);
            let s3_entry = repo_entry(&js, &remote);
            (value(&page, "myvault_archive_upload_healthy", on_s3)? == 1.0
                && value(&page, "myvault_archive_upload_lag_seconds", on_s3)? < 15.0
                && value(&page, "myvault_archive_last_error_timestamp_seconds", on_s3).is_none()
                && s3_entry["last_error"].is_null()
                && s3_entry["last_error_time"].is_null()
                && status(&env).0 == 0)
                .then_some(())
        },
    );
    eprintln!("healthy again {took:?} after S3 returned");
    assert!(back.elapsed() < Duration::from_secs(60));

    load.stop();
    load::wait_for_idle(&src, "sb");
    // Everything reaches both repositories; then the streamer stops cleanly.
    within(Duration::from_secs(60), "the archive catches up", || {
        let js = status_json(&spool);
        let all_held = js["repos"]
            .as_array()?
            .iter()
            .all(|r| r["pending_bytes"] == 0 && r["upload_lag_seconds"].as_f64() == Some(0.0));
        (all_held && js["receive_lag_seconds"].as_f64() == Some(0.0)).then_some(())
    });
    assert_eq!(streamer.terminate(), 0, "{}", streamer.log_text());

    // Byte-identical to the server's files, and archived_bytes is what was archived.
    crate::stream::assert_archive_matches_with_env(&src, &remote, &dir, &env);
    let fetched: u64 = std::fs::read_dir(dir.join("fetched"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let js = status_json(&spool);
    assert_eq!(
        js["archived_bytes"].as_u64(),
        Some(fetched),
        "archived_bytes against the archive's size: {js:#}"
    );
    assert_eq!(
        repo_entry(&js, &remote)["archived_bytes"].as_u64(),
        Some(fetched)
    );
}
