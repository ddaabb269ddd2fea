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

#[test]
fn repository_url_typos_are_usage_errors_and_create_nothing() {
    let dir = Scratch::new("typo");
    for typo in ["s3:/bucket/x", "S3://bucket/x", "ftp://host/x", "s3:bucket"] {
        let run = std::process::Command::new(env!("CARGO_BIN_EXE_myvault"))
            .args(["init", "--repo", typo])
            .current_dir(&dir.path)
            .output()
            .expect("run myvault");
        assert_eq!(run.status.code(), Some(2), "init --repo {typo}: {run:?}");
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(typo), "{stderr}");
        let made: Vec<_> = std::fs::read_dir(&dir.path).unwrap().collect();
        assert!(made.is_empty(), "init --repo {typo} created {made:?}");
        // A backup naming it with a good repository beside it is refused too, not partial.
        let good = dir.join("good");
        myvault(&[
            "backup",
            "--path",
            "/etc/hostname",
            "--repo",
            good.to_str().unwrap(),
            "--repo",
            typo,
        ])
        .expect_code(2);
    }

    // Another tool's repository (restic keeps its settings in `config` too).
    let restic = dir.join("restic");
    std::fs::create_dir(&restic).unwrap();
    std::fs::write(restic.join("config"), b"\x00\x17encrypted restic config").unwrap();
    let restic = restic.to_str().unwrap();
    for args in [
        vec!["init", "--repo", restic],
        vec!["list", "--repo", restic],
        vec!["verify", "--repo", restic],
    ] {
        let run = myvault(&args);
        run.expect_code(10);
        assert!(
            run.stderr.contains("not myvault's") && !run.stderr.contains("already holds"),
            "{args:?}: {}",
            run.stderr
        );
    }
}

#[test]
fn jobs_zero_or_absurd_is_a_usage_error_on_the_command_line_and_in_the_config() {
    let dir = Scratch::new("jobs");
    let repo = dir.join("repo");
    let repo = repo.to_str().unwrap();
    for n in ["0", "65", "many"] {
        for cmd in [
            vec![
                "backup",
                "--source",
                "mysql://root@127.0.0.1:1",
                "--repo",
                repo,
            ],
            vec![
                "restore",
                "--repo",
                repo,
                "--target",
                "mysql://root@127.0.0.1:1",
            ],
        ] {
            let mut args = cmd.clone();
            args.extend(["--jobs", n]);
            let run = myvault(&args);
            run.expect_code(2);
            assert!(run.stderr.contains("jobs"), "{args:?}: {}", run.stderr);
        }
    }
    let cfg = dir.join("myvault.toml");
    std::fs::write(&cfg, "[backup]\njobs = 0\n").unwrap();
    let run = myvault(&["--config", cfg.to_str().unwrap(), "config", "check"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("jobs must be between 1 and 64"),
        "{}",
        run.stderr
    );
}

/// Issue 20's `--max-rate` and `--max-unused` can be set in the file (`[backup] max_rate`, a
/// `[[repo]]`'s `max_unused`), checked when it is read; the flags win.
#[test]
fn max_rate_and_max_unused_come_from_the_config_file_and_bad_values_are_usage_errors() {
    let dir = Scratch::new("cfg-rates");
    let repo = dir.join("repo");
    let repo = repo.to_str().unwrap();
    let cfg = dir.join("myvault.toml");
    let cfg_arg = cfg.to_str().unwrap();
    for (text, key) in [
        ("[backup]\nmax_rate = \"fast\"\n".to_string(), "max_rate"),
        (
            format!("[[repo]]\nlocation = \"{repo}\"\nmax_unused = \"150%\"\n"),
            "max_unused",
        ),
    ] {
        std::fs::write(&cfg, &text).unwrap();
        let run = myvault(&["--config", cfg_arg, "config", "check"]);
        run.expect_code(2);
        assert!(run.stderr.contains(key), "{text}: {}", run.stderr);
    }

    std::fs::write(
        &cfg,
        format!("[backup]\nmax_rate = \"2M\"\n\n[[repo]]\nlocation = \"{repo}\"\nmax_unused = \"unlimited\"\n"),
    )
    .unwrap();
    myvault(&["--config", cfg_arg, "init"]).expect_code(0);
    let file = dir.join("data");
    let data: Vec<u8> = (0..(6u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&file, &data).unwrap();
    let started = std::time::Instant::now();
    myvault(&[
        "--config",
        cfg_arg,
        "backup",
        "--path",
        file.to_str().unwrap(),
    ])
    .expect_code(0);
    let took = started.elapsed().as_secs_f64();
    // 6 MiB at 2 MiB/s, less the bucket's quarter second.
    assert!(
        took >= 2.75,
        "the config's max_rate was not applied: {took:.2} s"
    );

    let max_unused = |extra: &[&str]| {
        let mut args = vec![
            "--config",
            cfg_arg,
            "prune",
            "--keep-last",
            "1",
            "--plan",
            "--json",
        ];
        args.extend(extra);
        let run = myvault(&args);
        run.expect_code(0);
        run.json()["repack"]["max_unused"].clone()
    };
    assert_eq!(max_unused(&[]), "unlimited");
    assert_eq!(max_unused(&["--max-unused", "10%"]), "10%");
}
