//! The Debian package (issue 19 item 9): built by `scripts/package` from the binary under
//! test, installed with dpkg into a clean Debian bookworm root, and run there.

use std::path::Path;
use std::process::Command;

use crate::support::{Scratch, deb, testbed};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn in_root(root: &Path, args: &[&str]) -> String {
    run(Command::new("chroot").arg(root).args(args))
}

/// `myvault ARGS` in `root` as the package's service user.
fn as_service_user(root: &Path, args: &[&str]) -> String {
    let mut all = vec![
        "setpriv",
        "--reuid=myvault",
        "--regid=myvault",
        "--clear-groups",
        "/usr/bin/myvault",
    ];
    all.extend_from_slice(args);
    in_root(root, &all)
}

#[test]
fn the_deb_installs_into_a_clean_debian_root_and_runs_there() {
    let scratch = Scratch::new("package");
    let deb = deb();
    assert!(deb.is_file(), "{}", deb.display());

    // A copy of the clean root, so that every run starts from a machine that never saw myvault.
    let root = scratch.join("root");
    run(Command::new("cp")
        .arg("-a")
        .arg(testbed().path("MYVAULT_CLEAN_ROOT"))
        .arg(&root));
    std::fs::copy(deb, root.join("tmp/myvault.deb")).unwrap();
    in_root(&root, &["dpkg", "-i", "/tmp/myvault.deb"]);

    let version = in_root(&root, &["/usr/bin/myvault", "--version"]);
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    let user = in_root(&root, &["getent", "passwd", "myvault"]);
    assert!(user.contains("/var/lib/myvault"), "{user}");
    for file in [
        "lib/systemd/system/myvault-backup.service",
        "lib/systemd/system/myvault-backup.timer",
        "lib/systemd/system/myvault-binlog-stream.service",
        "etc/myvault/myvault.toml",
        "usr/share/bash-completion/completions/myvault",
        "usr/share/man/man1/myvault.1.gz",
        "usr/share/man/man1/myvault-restore.1.gz",
        "usr/share/doc/myvault/examples/prometheus/alerts.yml",
    ] {
        assert!(root.join(file).is_file(), "{file} is not installed");
    }
    let unit =
        std::fs::read_to_string(root.join("lib/systemd/system/myvault-backup.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/myvault backup"), "{unit}");
    in_root(
        &root,
        &[
            "bash",
            "-n",
            "/usr/share/bash-completion/completions/myvault",
        ],
    );
    // The config is the package's conffile, readable by the service user's group only.
    let conffiles = in_root(&root, &["cat", "/var/lib/dpkg/info/myvault.conffiles"]);
    assert!(
        conffiles.contains("/etc/myvault/myvault.toml"),
        "{conffiles}"
    );

    // The service user can create and use a repository where the units write.
    as_service_user(&root, &["init", "--repo", "/var/backups/myvault/r"]);
    let listed = as_service_user(
        &root,
        &["list", "--repo", "/var/backups/myvault/r", "--json"],
    );
    assert!(listed.contains("\"snapshots\""), "{listed}");

    // Another user cannot read the default configuration (0640 root:myvault): exit 2, saying
    // which file and the ways out, rather than running with other repositories than it names.
    let other = Command::new("chroot")
        .arg(&root)
        .args([
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
        ])
        .args(["/usr/bin/myvault", "list"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert_eq!(other.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot read the default configuration /etc/myvault/myvault.toml")
            && stderr.contains("--config FILE"),
        "{stderr}"
    );

    // And the package goes away cleanly, keeping the configuration.
    in_root(&root, &["dpkg", "-r", "myvault"]);
    assert!(!root.join("usr/bin/myvault").exists());
    assert!(root.join("etc/myvault/myvault.toml").exists());
}

/// Regression: the package did not ask for CA certificates, so on a minimal Debian without
/// ca-certificates no S3 repository over HTTPS could be reached (and the AWS SDK's debug
/// build panicked opening any S3 repository: "no valid root certificates").
#[test]
fn the_package_recommends_ca_certificates_for_s3_over_https() {
    let recommends = run(Command::new("dpkg-deb")
        .args(["-f"])
        .arg(deb())
        .arg("Recommends"));
    assert!(
        recommends.split(',').any(|r| r.trim() == "ca-certificates"),
        "Recommends: {recommends}"
    );
}
