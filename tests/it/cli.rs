//! The command line's contract for scripts (issue 19 item 8): under `--json`, stdout holds
//! exactly one JSON document, also when the command fails.

use crate::support::myvault;

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
