//! Logging (issue 19 item 5): timestamped lines at the level asked for, as text or JSON, a line
//! when a command starts and stops, progress records when nobody watches a terminal, the S3
//! client's diagnostics at debug level, and never a secret.

use crate::support::s3::{S3Server, SECRET_KEY};
use crate::support::{Flavor, Scratch, TestServer, failpoints, myvault, myvault_env};

const PASSWORD: &str = "Log-Sekr3t-pw";

/// Every non-empty stderr line as a JSON object; a line that is not one fails the test.
fn json_lines(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"))
        })
        .collect()
}

#[test]
fn json_logs_have_start_stop_progress_and_s3_diagnostics_and_never_a_secret() {
    let src = TestServer::builder(Flavor::Mysql97).start();
    src.sql(&format!(
        "CREATE USER 'bk'@'%' IDENTIFIED BY '{PASSWORD}';\n\
         GRANT ALL ON *.* TO 'bk'@'%';\n\
         CREATE DATABASE shop;\n\
         CREATE TABLE shop.t (id INT PRIMARY KEY, v VARCHAR(20));\n\
         INSERT INTO shop.t VALUES (1, 'a'), (2, 'b')"
    ));
    let s3 = S3Server::start();
    let env = s3.env();
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let repo = s3.repo("logs");
    myvault_env(&["init", "--repo", &repo], &env).expect_code(0);
    // The dump waits 2.5 s at its consistent point: long enough for two progress records.
    env.push(failpoints("dump-after-snapshot=sleep(2500)"));
    let source = src.url_as("bk", PASSWORD);
    let run = myvault_env(
        &[
            "-vv",
            "--log-format",
            "json",
            "--progress-interval",
            "1",
            "backup",
            "--source",
            &source,
            "--repo",
            &repo,
        ],
        &env,
    );
    run.expect_code(0);
    assert!(
        !run.stderr.contains(PASSWORD),
        "the MySQL password is logged"
    );
    assert!(
        !run.stderr.contains(SECRET_KEY),
        "the S3 secret key is logged"
    );

    let lines = json_lines(&run.stderr);
    for l in &lines {
        let time = l["timestamp"].as_str().unwrap_or_default();
        assert!(
            chrono::DateTime::parse_from_rfc3339(time).is_ok(),
            "no RFC 3339 timestamp: {l}"
        );
        assert!(l["level"].is_string(), "no level: {l}");
    }
    let message = |l: &serde_json::Value| l["message"].as_str().unwrap_or_default().to_string();
    let start = lines
        .iter()
        .find(|l| message(l) == "myvault backup starting")
        .unwrap_or_else(|| panic!("no start line in\n{}", run.stderr));
    assert_eq!(start["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        start["args"].as_str().unwrap().contains("127.0.0.1"),
        "the start line names the source: {start}"
    );
    let stop = lines
        .iter()
        .find(|l| message(l) == "myvault backup done")
        .unwrap_or_else(|| panic!("no stop line in\n{}", run.stderr));
    assert_eq!(stop["outcome"], "ok");
    let progress: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["progress"].as_str())
        .collect();
    assert!(
        !progress.is_empty(),
        "no progress record in 2.5 s at a 1 s interval:\n{}",
        run.stderr
    );
    // The record tells how fast it goes, not only how far it got.
    assert!(
        progress.iter().all(|p| p.contains(" rows/s")),
        "{progress:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["target"].as_str().is_some_and(|t| t.starts_with("aws"))),
        "the S3 client's diagnostics are not there at debug level"
    );
}

#[test]
fn one_shot_commands_log_nothing_but_warnings_unless_asked() {
    let dir = Scratch::new("logging");
    let repo = dir.join("repo").to_str().unwrap().to_string();
    let init = myvault(&["init", "--repo", &repo]);
    init.expect_code(0);
    assert_eq!(init.stderr, "", "a quiet cron job stays quiet");
    let list = myvault(&["-v", "list", "--repo", &repo]);
    list.expect_code(0);
    let lines: Vec<&str> = list.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "a start and a stop line: {lines:?}");
    for l in &lines {
        let time = l.split_whitespace().next().unwrap_or_default();
        assert!(
            chrono::DateTime::parse_from_rfc3339(time).is_ok(),
            "a timestamp first: {l}"
        );
        assert!(l.contains("INFO"), "{l}");
    }
    assert!(lines[0].contains("myvault list starting"), "{}", lines[0]);
    assert!(lines[1].contains("myvault list done"), "{}", lines[1]);
    let failed = myvault(&["--log-level", "info", "list", "--repo", "/nonexistent/repo"]);
    failed.expect_code(10);
    assert!(
        failed.stderr.contains("myvault list failed"),
        "{}",
        failed.stderr
    );
}
