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
