//! The configuration file: defaults for every command, checked by `config check`.

use crate::support::{Scratch, TestServer, myvault};

#[test]
fn config_file_supplies_source_repositories_and_password() {
    let src = TestServer::mysql97();
    src.sql("CREATE USER 'bk'@'%' IDENTIFIED BY 'Conf-pass-1';\nGRANT ALL ON *.* TO 'bk'@'%'");
    let dir = Scratch::new("cfg");
    let repo = dir.join("repo");
    let pw = dir.join("password");
    std::fs::write(&pw, "Conf-pass-1\n").unwrap();
    let cfg = dir.join("myvault.toml");
    std::fs::write(
        &cfg,
        format!(
            "[source]\nurl = \"mysql://bk@127.0.0.1:{}\"\npassword_file = \"{}\"\n\n[[repo]]\nlocation = \"{}\"\n\n[backup]\njobs = 1\n",
            src.port(),
            pw.display(),
            repo.display()
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    myvault(&["--config", c, "init"]).expect_code(0);
    myvault(&["--config", c, "config", "check"]).expect_code(0);
    myvault(&["--config", c, "check", "-q"]).expect_code(0);
    let backup = myvault(&["--config", c, "backup", "--json"]);
    backup.expect_code(0);
    let list = myvault(&["--config", c, "list", "--json"]);
    assert_eq!(list.json()["snapshots"].as_array().unwrap().len(), 1);
    assert_eq!(list.json()["encrypted"], false);
    // The password never lands in the repository.
    let status = std::process::Command::new("grep")
        .args(["-rq", "Conf-pass-1"])
        .arg(&repo)
        .status()
        .unwrap();
    assert!(
        !status.success(),
        "the password was found in the repository"
    );

    std::fs::write(&cfg, "[source]\nurll = \"x\"\n").unwrap();
    let run = myvault(&["--config", c, "config", "check"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("unknown field `urll`"),
        "{}",
        run.stderr
    );
    myvault(&["backup"]).expect_code(2);
}

#[test]
fn init_chooses_the_content_hash_and_repositories_of_different_hashes_are_not_mixed() {
    let dir = Scratch::new("hash");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f"), vec![7u8; 300_000]).unwrap();
    let (old, new) = (dir.join("sha"), dir.join("b3"));
    let (old, new, data) = (
        old.to_str().unwrap(),
        new.to_str().unwrap(),
        data.to_str().unwrap(),
    );
    let made = myvault(&["init", "--repo", old, "--hash", "sha256", "--json"]);
    made.expect_code(0);
    assert_eq!(made.json()["config"]["hash"], "sha256");
    let made = myvault(&["init", "--repo", new, "--json"]);
    made.expect_code(0);
    assert_eq!(made.json()["config"]["hash"], "blake3");
    let bad = myvault(&[
        "init",
        "--repo",
        &dir.join("x").to_string_lossy(),
        "--hash",
        "md5",
    ]);
    bad.expect_code(2);
    assert!(bad.stderr.contains("md5"), "{}", bad.stderr);

    let mixed = myvault(&["backup", "--path", data, "--repo", old, "--repo", new]);
    mixed.expect_code(2);
    assert!(
        mixed.stderr.contains("sha256") && mixed.stderr.contains("init --hash"),
        "{}",
        mixed.stderr
    );
    for repo in [old, new] {
        let list = myvault(&["list", "--repo", repo, "--json"]);
        assert_eq!(list.json()["snapshots"].as_array().unwrap().len(), 0);
        myvault(&["backup", "--path", data, "--repo", repo]).expect_code(0);
        myvault(&["verify", "--repo", repo]).expect_code(0);
    }
    let copy = myvault(&["copy", "--from", old, "--to", new]);
    copy.expect_code(2);
    assert!(copy.stderr.contains("same hash"), "{}", copy.stderr);
}
