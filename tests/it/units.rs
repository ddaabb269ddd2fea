//! The shipped systemd units (issue 19 item 8): sandboxed well enough that
//! `systemd-analyze security` scores each below 5, and described by the operator guide as
//! they are.

use std::path::{Path, PathBuf};

fn units() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/systemd");
    let mut units: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "service"))
        .collect();
    units.sort();
    assert!(units.len() >= 2, "{units:?}");
    units
}

/// `Key=value` of a unit file (the first, when repeated).
fn setting(unit: &str, key: &str) -> Option<String> {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
}

#[test]
fn every_shipped_unit_scores_below_5_with_systemd_analyze_security() {
    for unit in units() {
        let out = std::process::Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&unit)
            .output()
            .expect("systemd-analyze (Debian's systemd package; scripts/testbed installs it)");
        let text = String::from_utf8_lossy(&out.stdout);
        let score: f64 = text
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|rest| rest.split(": ").nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "no score for {}:\n{text}\n{}",
                    unit.display(),
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        eprintln!("{}: exposure {score}", unit.display());
        assert!(score < 5.0, "{}: exposure {score}\n{text}", unit.display());
        let body = std::fs::read_to_string(&unit).unwrap();
        assert_eq!(
            setting(&body, "User").as_deref(),
            Some("myvault"),
            "{}",
            unit.display()
        );
    }
}

#[test]
fn the_operator_guide_says_what_the_stream_unit_does() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let guide = std::fs::read_to_string(root.join("docs/operator-guide.md")).unwrap();
    let unit = std::fs::read_to_string(root.join("examples/systemd/myvault-binlog-stream.service"))
        .unwrap();
    for key in [
        "RestartPreventExitStatus",
        "TimeoutStopSec",
        "RestartSec",
        "ReadWritePaths",
    ] {
        let value = setting(&unit, key).unwrap_or_else(|| panic!("the unit has no {key}="));
        assert!(
            guide.contains(&format!("{key}={value}")),
            "the guide does not say `{key}={value}` as the unit does"
        );
    }
}
