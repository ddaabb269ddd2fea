//! The command line's contract for scripts (issue 19 item 8): under `--json`, stdout holds
//! exactly one JSON document, also when the command fails.

use crate::support::streamer::Streamer;
use crate::support::{Scratch, TestServer, myvault};

fn error_object(stdout: &str) -> serde_json::Value {
    let doc: serde_json::Value = serde_json::from_str(stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {stdout:?}"));
    doc["error"].clone()
}

#[test]
fn json_errors_are_one_object_on_stdout_with_the_exit_code() {
    let run = myvault(&["list", "--repo", "/nonexistent/myvault-repo", "--json"]);
    run.expect_code(10);
    let err = error_object(&run.stdout);
    assert_eq!(err["exit_code"], 10);
    assert_eq!(err["kind"], "Storage");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/myvault-repo"),
        "{err}"
    );
    assert!(
        run.stderr.contains("/nonexistent/myvault-repo"),
        "{}",
        run.stderr
    );

    let usage = myvault(&["backup", "--json", "--jobs", "0", "--repo", "/tmp/x"]);
    usage.expect_code(2);
    let err = error_object(&usage.stdout);
    assert_eq!(err["exit_code"], 2);
    assert!(err["message"].as_str().unwrap().contains("jobs"), "{err}");

    // Without --json, stdout stays empty on failure.
    let plain = myvault(&["list", "--repo", "/nonexistent/myvault-repo"]);
    plain.expect_code(10);
    assert_eq!(plain.stdout, "");
}

#[test]
fn completions_and_manual_pages_cover_every_command() {
    let commands = [
        "backup",
        "restore",
        "list",
        "verify",
        "binlog",
        "check",
        "init",
        "copy",
        "unlock",
        "prune",
        "seed-replica",
        "status",
        "config",
    ];
    let bash = myvault(&["completions", "bash"]);
    bash.expect_code(0);
    for c in commands {
        assert!(bash.stdout.contains(c), "bash completion lacks {c}");
    }
    let script = crate::support::Scratch::new("completions");
    let path = script.join("myvault.bash");
    std::fs::write(&path, &bash.stdout).unwrap();
    let syntax = std::process::Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
        .unwrap();
    assert!(syntax.status.success(), "{syntax:?}");
    for shell in ["zsh", "fish"] {
        let run = myvault(&["completions", shell]);
        run.expect_code(0);
        assert!(run.stdout.contains("seed-replica"), "{shell}");
    }
    myvault(&["completions", "tcsh"]).expect_code(2);

    let dir = script.join("man1");
    myvault(&["man", "--dir", dir.to_str().unwrap()]).expect_code(0);
    for c in commands
        .iter()
        .map(|c| format!("myvault-{c}.1"))
        .chain(["myvault.1".into(), "myvault-binlog-stream.1".into()])
    {
        let page = std::fs::read_to_string(dir.join(&c)).unwrap_or_else(|e| panic!("{c}: {e}"));
        assert!(
            page.starts_with(".ie") || page.contains(".TH"),
            "{c} is not a man page"
        );
    }

    // Options come under headings, every one described.
    let help = myvault(&["backup", "--help"]);
    help.expect_code(0);
    for heading in [
        "Output:",
        "Source connection and TLS:",
        "Repository storage: S3 and encryption:",
        "Logging:",
    ] {
        assert!(
            help.stdout.contains(heading),
            "no {heading} in\n{}",
            help.stdout
        );
    }
}

/// Where `doc` breaks the naming scheme of docs/operator-guide.md ("JSON output").
fn naming_violations(at: &str, doc: &serde_json::Value, out: &mut Vec<String>) {
    /// Older names that stay, each beside its canonical twin.
    const TWINS: [(&str, &str); 13] = [
        ("created", "created_time"),
        ("started", "started_time"),
        ("latest_restorable", "latest_restorable_time"),
        ("checked_at", "checked_time"),
        ("evaluated_at", "evaluated_time"),
        ("updated_at", "updated_time"),
        ("status_written_at", "status_written_time"),
        ("last_commit", "last_commit_time"),
        ("complete_until", "complete_until_time"),
        ("last_upload", "last_upload_time"),
        ("failing_since", "failing_since_time"),
        ("snapshot", "id"),
        ("seconds", "duration_seconds"),
    ];
    // Objects keyed by data (snapshot ids, table names), not by field names.
    const MAPS: [&str; 3] = ["keep_reasons", "checksums", "extra"];
    match doc {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                let path = format!("{at}.{key}");
                let snake = key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                if !snake {
                    out.push(format!("{path}: not snake_case"));
                }
                let instant = value
                    .as_str()
                    .is_some_and(|v| chrono::DateTime::parse_from_rfc3339(v).is_ok());
                let twin = TWINS.iter().find(|(old, _)| old == key);
                let span_bound = matches!(key.as_str(), "start" | "end");
                if instant
                    && key != "time"
                    && !key.ends_with("_time")
                    && !span_bound
                    && twin.is_none()
                {
                    out.push(format!("{path}: an instant not named `time` or `*_time`"));
                }
                if key.ends_with("_at") && twin.is_none() {
                    out.push(format!("{path}: `_at` is not the scheme's suffix"));
                }
                if value.is_number()
                    && ["secs", "_ms", "elapsed", "millis"]
                        .iter()
                        .any(|u| key.contains(u))
                {
                    out.push(format!("{path}: a duration not in `seconds`"));
                }
                // A backup report's `snapshot`/`seconds` must have list's names beside them;
                // elsewhere `snapshot` is a reference and stands alone.
                if let Some((old, new)) = twin {
                    let needs_twin = !matches!(*old, "snapshot" | "seconds")
                        || map.contains_key("method") && map.contains_key("repos");
                    if needs_twin && map.get(*new) != Some(value) {
                        out.push(format!("{path}: no `{new}` twin with the same value"));
                    }
                }
                if !MAPS.contains(&key.as_str()) {
                    naming_violations(&path, value, out);
                } else if let Some(inner) = value.as_object() {
                    for (k, v) in inner {
                        naming_violations(&format!("{path}[{k}]"), v, out);
                    }
                }
            }
        }
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                naming_violations(&format!("{at}[{i}]"), item, out);
            }
        }
        _ => {}
    }
}

#[test]
fn json_field_names_follow_one_scheme_across_commands() {
    let src = TestServer::mysql97();
    src.sql("CREATE DATABASE shop;\nCREATE TABLE shop.t (id INT PRIMARY KEY, v TEXT);\nINSERT INTO shop.t VALUES (1, 'a')");
    let dir = Scratch::new("json-names");
    let repo = dir.join("repo").to_str().unwrap().to_string();
    let spool = dir.join("spool");
    let url = src.url();
    let mut docs = vec![("init", myvault(&["init", "--repo", &repo, "--json"]))];
    docs.push((
        "backup",
        myvault(&["backup", "--repo", &repo, "--source", &url, "--json"]),
    ));
    src.sql("INSERT INTO shop.t VALUES (2, 'b');\nFLUSH BINARY LOGS;\nINSERT INTO shop.t VALUES (3, 'c')");
    let mut streamer = Streamer::start(&url, &repo, &spool, &["--until-caught-up"]);
    assert_eq!(streamer.wait(), 0, "{}", streamer.log_text());
    let gtids = src.gtid_executed().to_string();
    let spool_arg = spool.to_str().unwrap();
    for (name, args) in [
        ("list", vec!["list", "--repo", &repo, "--json"]),
        ("verify", vec!["verify", "--repo", &repo, "--json"]),
        (
            "prune",
            vec![
                "prune",
                "--repo",
                &repo,
                "--keep-last",
                "1",
                "--plan",
                "--json",
            ],
        ),
        (
            "status",
            vec!["status", "--repo", &repo, "--spool", spool_arg, "--json"],
        ),
        (
            "binlog list",
            vec!["binlog", "list", "--repo", &repo, "--json"],
        ),
        (
            "restore --plan",
            vec![
                "restore",
                "--repo",
                &repo,
                "--to-gtid",
                &gtids,
                "--plan",
                "--json",
            ],
        ),
    ] {
        docs.push((name, myvault(&args)));
    }
    let status_json = std::fs::read_to_string(spool.join("status.json")).unwrap();

    let mut violations = Vec::new();
    for (name, run) in &docs {
        assert!(
            run.code == 0 || *name == "status",
            "{name}: exit {}\n{}",
            run.code,
            run.stderr
        );
        naming_violations(name, &run.json(), &mut violations);
    }
    let status_doc: serde_json::Value = serde_json::from_str(&status_json).unwrap();
    naming_violations("status.json", &status_doc, &mut violations);
    assert!(violations.is_empty(), "{violations:#?}");

    // The rules bite: the backup report's `id` is its `snapshot`, and older names have twins.
    let backup = docs[1].1.json();
    assert_eq!(backup["id"], backup["snapshot"]);
    assert_eq!(backup["duration_seconds"], backup["seconds"]);
    let status = docs.iter().find(|(n, _)| *n == "status").unwrap().1.json();
    assert_eq!(status["checked_time"], status["checked_at"]);
    assert_eq!(status_doc["updated_time"], status_doc["updated_at"]);
    let mut planted = Vec::new();
    naming_violations(
        "planted",
        &serde_json::json!({"started_at": "2026-12-07T14:00:00Z", "elapsed_ms": 5}),
        &mut planted,
    );
    assert_eq!(planted.len(), 3, "{planted:#?}");
}
