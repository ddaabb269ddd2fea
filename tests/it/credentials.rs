//! Credentials that match what they are for: a restore or seeding target logs in with its own
//! password and TLS settings, never the source's; an access-denied error says where the
//! password came from and never what it is; S3 credentials come from the file and profile
//! the config names, and their absence is said in those words; the spool lock's error names
//! a command that works.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use crate::support::streamer::{Streamer, drain};
use crate::support::{Run, Scratch, TestServer, myvault, myvault_env};

const SOURCE_PASSWORD: &str = "Src-pass-1";
const TARGET_PASSWORD: &str = "Tgt-pass-2";

/// `bk` / [`SOURCE_PASSWORD`] on `src`, with a small table to back up.
fn source_account(src: &TestServer) {
    src.sql(&format!(
        "CREATE USER 'bk'@'%' IDENTIFIED BY '{SOURCE_PASSWORD}';\n\
         GRANT ALL ON *.* TO 'bk'@'%' WITH GRANT OPTION;\n\
         CREATE DATABASE shop;\n\
         CREATE TABLE shop.t (id INT PRIMARY KEY, v VARCHAR(20));\n\
         INSERT INTO shop.t VALUES (1, 'a'), (2, 'b')"
    ));
}

/// `tg` / [`TARGET_PASSWORD`] on `server`.
fn target_account(server: &TestServer) {
    server.sql(&format!(
        "CREATE USER 'tg'@'%' IDENTIFIED BY '{TARGET_PASSWORD}';\n\
         GRANT ALL ON *.* TO 'tg'@'%' WITH GRANT OPTION"
    ));
}

/// A config whose [source] logs in as `bk` with its password file, one local repository,
/// and `extra` appended.
fn write_config(dir: &Scratch, src: &TestServer, repo: &Path, extra: &str) -> String {
    let pw = dir.join("source-password");
    std::fs::write(&pw, format!("{SOURCE_PASSWORD}\n")).unwrap();
    let cfg = dir.join(&format!("myvault-{}.toml", extra.len()));
    std::fs::write(
        &cfg,
        format!(
            "[source]\nurl = \"mysql://bk@127.0.0.1:{}\"\npassword_file = \"{}\"\n\n[[repo]]\nlocation = \"{}\"\n\n[backup]\njobs = 1\n\n{extra}",
            src.port(),
            pw.display(),
            repo.display()
        ),
    )
    .unwrap();
    cfg.to_string_lossy().into_owned()
}

/// Empties the target for the next restore: no database, no GTIDs (not even those of
/// creating its account).
fn reset_target(tgt: &TestServer) {
    tgt.sql("DROP DATABASE IF EXISTS shop;\nRESET BINARY LOGS AND GTIDS");
}

#[track_caller]
fn assert_no_secret(run: &Run, secrets: &[&str]) {
    for s in secrets {
        assert!(
            !run.stdout.contains(s) && !run.stderr.contains(s),
            "the password {s} was printed:\nstdout:\n{}\nstderr:\n{}",
            run.stdout,
            run.stderr
        );
    }
}

#[test]
fn target_logins_never_inherit_the_source_password_from_the_config() {
    let src = TestServer::mysql97();
    let tgt = TestServer::mysql97();
    source_account(&src);
    target_account(&tgt);
    reset_target(&tgt);
    let dir = Scratch::new("tgt-login");
    let repo = dir.join("repo");
    let cfg = write_config(&dir, &src, &repo, "");
    myvault(&["--config", &cfg, "init"]).expect_code(0);
    myvault(&["--config", &cfg, "backup"]).expect_code(0);
    let target = format!("mysql://tg@127.0.0.1:{}", tgt.port());
    let tgt_pw = dir.join("target-password");
    std::fs::write(&tgt_pw, format!("{TARGET_PASSWORD}\n")).unwrap();
    let with_section = write_config(
        &dir,
        &src,
        &repo,
        &format!("[target]\npassword_file = \"{}\"\n", tgt_pw.display()),
    );
    let env: &[(&str, &str)] = &[("MYVAULT_TARGET_PASSWORD", TARGET_PASSWORD)];
    let flag = tgt_pw.to_str().unwrap();
    let restored = |how: &str, run: Run| {
        run.expect_code(0);
        assert_eq!(
            tgt.value("SELECT COUNT(*) FROM shop.t").as_deref(),
            Some("2"),
            "{how}"
        );
        assert_no_secret(&run, &[SOURCE_PASSWORD, TARGET_PASSWORD]);
        reset_target(&tgt);
    };
    let target_arg = target.as_str();
    let logical = |cfg: &'static str| {
        vec![
            "--config",
            cfg,
            "restore",
            "--target",
            target_arg,
            "--no-users",
        ]
    };
    let (cfg, with_section): (&'static str, &'static str) = (cfg.leak(), with_section.leak());
    restored("MYVAULT_TARGET_PASSWORD", myvault_env(&logical(cfg), env));
    let mut args = logical(cfg);
    args.extend(["--target-password-file", flag]);
    restored("--target-password-file", myvault(&args));
    restored("[target] password_file", myvault(&logical(with_section)));

    // Point in time: the snapshot and one more transaction from the archive.
    src.sql("INSERT INTO shop.t VALUES (3, 'c')");
    drain(&src, repo.to_str().unwrap(), &dir.join("spool"));
    let gtids = src.gtid_executed().to_string();
    let pitr = myvault_env(
        &[
            "--config",
            cfg,
            "restore",
            "--target",
            &target,
            "--no-users",
            "--to-gtid",
            &gtids,
        ],
        env,
    );
    pitr.expect_code(0);
    assert_eq!(
        tgt.value("SELECT COUNT(*) FROM shop.t").as_deref(),
        Some("3")
    );
    reset_target(&tgt);

    // seed-replica checks the target with its own login (and the source with the config's).
    let seed = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec![
            "--config",
            &cfg,
            "seed-replica",
            "--target",
            &target,
            "--plan",
        ];
        args.extend_from_slice(extra);
        myvault_env(&args, env)
    };
    seed(&[], env).expect_code(0);
    seed(&["--target-password-file", flag], &[]).expect_code(0);
    let wrong = seed(&[], &[("MYVAULT_TARGET_PASSWORD", "Wrong-env-9")]);
    wrong.expect_code(4);
    assert!(
        wrong.stderr.contains(&tgt.port().to_string()),
        "{}",
        wrong.stderr
    );
}

#[test]
fn access_denied_names_where_the_password_came_from_and_never_the_password() {
    let server = TestServer::mysql97();
    source_account(&server);
    target_account(&server);
    let dir = Scratch::new("denied");
    let repo = dir.join("repo");
    let cfg = write_config(&dir, &server, &repo, "");
    myvault(&["--config", &cfg, "init"]).expect_code(0);
    myvault(&["--config", &cfg, "backup"]).expect_code(0);
    let port = server.port();
    let target = format!("mysql://tg@127.0.0.1:{port}");
    let wrong_file = dir.join("wrong-password");
    std::fs::write(&wrong_file, "Wrong-file-9\n").unwrap();
    let wrong_cnf = dir.join("wrong.cnf");
    std::fs::write(&wrong_cnf, "[client]\npassword = Wrong-cnf-9\n").unwrap();
    let section = write_config(
        &dir,
        &server,
        &repo,
        &format!("[target]\npassword_file = \"{}\"\n", wrong_file.display()),
    );
    let url_with_password = format!("mysql://tg:Wrong-url-9@127.0.0.1:{port}");
    let (file, cnf) = (wrong_file.to_str().unwrap(), wrong_cnf.to_str().unwrap());
    let (bk, tg) = (
        format!("mysql://bk@127.0.0.1:{port}"),
        format!("mysql://tg@127.0.0.1:{port}"),
    );
    // (the origin the message names, the command, its environment, the wrong password)
    type Case<'a> = (&'a str, Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "the --target URL",
            vec!["--config", &cfg, "restore", "--target", &url_with_password],
            vec![],
            "Wrong-url-9",
        ),
        (
            "--target-password-file",
            vec![
                "--config",
                &cfg,
                "restore",
                "--target",
                &target,
                "--target-password-file",
                file,
            ],
            vec![],
            "Wrong-file-9",
        ),
        (
            "MYVAULT_TARGET_PASSWORD",
            vec!["--config", &cfg, "restore", "--target", &target],
            vec![("MYVAULT_TARGET_PASSWORD", "Wrong-env-9")],
            "Wrong-env-9",
        ),
        (
            "--target-defaults-file",
            vec![
                "--config",
                &cfg,
                "restore",
                "--target",
                &target,
                "--target-defaults-file",
                cnf,
            ],
            vec![],
            "Wrong-cnf-9",
        ),
        (
            "[target] password_file",
            vec!["--config", &section, "restore", "--target", &target],
            vec![],
            "Wrong-file-9",
        ),
        (
            "no password",
            vec!["--config", &cfg, "restore", "--target", &target],
            vec![],
            "Wrong",
        ),
        (
            "MYVAULT_PASSWORD",
            vec!["check", "--source", &bk],
            vec![("MYVAULT_PASSWORD", "Wrong-env-8")],
            "Wrong-env-8",
        ),
        (
            "[source] password_file",
            vec!["--config", &section, "check", "--source", &tg],
            vec![],
            SOURCE_PASSWORD,
        ),
    ];
    for (origin, args, env, password) in cases {
        let run = myvault_env(&args, &env);
        run.expect_code(4);
        let line = run.stderr.trim();
        assert!(
            line.contains("refused the login") && line.contains(origin),
            "{origin}: {line}"
        );
        assert_eq!(line.lines().count(), 1, "{origin}: {line}");
        assert_no_secret(&run, &[password, TARGET_PASSWORD]);
    }
}

/// An AWS shared credentials file: wrong keys in [default], the server's in [vault].
fn credentials_file(dir: &Scratch) -> String {
    let path = dir.join("aws-credentials");
    std::fs::write(
        &path,
        format!(
            "[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = Wrong-default-secret\n\n\
             [vault]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
        ),
    )
    .unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn s3_credentials_come_from_the_file_and_profile_the_config_names() {
    let s3 = S3Server::start();
    let dir = Scratch::new("s3-creds");
    let file = credentials_file(&dir);
    let config = |s3_extra: &str| {
        let path = dir.join(&format!("s3-{}.toml", s3_extra.len()));
        std::fs::write(
            &path,
            format!(
                "[[repo]]\nlocation = \"{}\"\n\n[s3]\nendpoint = \"{}\"\nregion = \"us-east-1\"\ncredentials_file = \"{file}\"\n{s3_extra}",
                s3.repo("creds"),
                s3.endpoint()
            ),
        )
        .unwrap();
        path.to_string_lossy().into_owned()
    };
    let with_profile = config("profile = \"vault\"\n");
    let default_profile = config("");
    // No AWS_* in the environment (the harness removes them) and no ~/.aws.
    myvault(&["--config", &with_profile, "init"]).expect_code(0);
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f"), b"hello").unwrap();
    myvault(&[
        "--config",
        &with_profile,
        "backup",
        "--path",
        data.to_str().unwrap(),
    ])
    .expect_code(0);
    let list = myvault(&["--config", &with_profile, "list", "--json"]);
    list.expect_code(0);
    assert_eq!(list.json()["snapshots"].as_array().unwrap().len(), 1);
    // The file's [default] profile has the wrong secret: the profile name decided.
    let refused = myvault(&["--config", &default_profile, "list"]);
    refused.expect_code(10);
    assert!(refused.stderr.contains("refused"), "{}", refused.stderr);
    assert_no_secret(&refused, &["Wrong-default-secret", SECRET_KEY]);
}

#[test]
fn missing_s3_credentials_are_said_in_those_words_quickly_with_the_storage_code() {
    let s3 = S3Server::start();
    let started = Instant::now();
    let run = myvault(&[
        "list",
        "--repo",
        &s3.repo("none"),
        "--s3-endpoint",
        &s3.endpoint(),
    ]);
    let took = started.elapsed();
    run.expect_code(10);
    let err = run.stderr.to_lowercase();
    assert!(err.contains("no s3 credentials"), "{}", run.stderr);
    assert!(
        !err.contains("imds") && !err.contains("metadata"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn the_spool_lock_error_names_a_command_that_frees_the_spool() {
    let src = TestServer::mysql97();
    let dir = Scratch::new("spool-lock");
    let repo = dir.join("repo");
    let repo = repo.to_str().unwrap();
    myvault(&["init", "--repo", repo]).expect_code(0);
    let spool = dir.join("spool");
    let mut first = Streamer::start(&src.url(), repo, &spool, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !spool.join(".lock").exists() {
        assert!(Instant::now() < deadline, "{}", first.log_text());
        assert!(first.running(), "{}", first.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let spool_arg = spool.to_str().unwrap();
    let second = myvault(&[
        "binlog",
        "stream",
        "--source",
        &src.url(),
        "--repo",
        repo,
        "--spool",
        spool_arg,
    ]);
    second.expect_code(7);
    let msg = second.stderr.trim();
    assert!(!msg.contains("unlock"), "{msg}");
    assert!(msg.contains(spool_arg), "{msg}");
    // The message's command, run as it is, frees the spool.
    let command = msg
        .split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("no command in: {msg}"));
    assert_eq!(command, format!("kill {}", first.pid()), "{msg}");
    let status = std::process::Command::new("sh")
        .args(["-c", command])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(first.wait(), 0, "{}", first.log_text());
    let mut next = Streamer::start(&src.url(), repo, &spool, &[]);
    std::thread::sleep(Duration::from_secs(3));
    assert!(next.running(), "{}", next.log_text());
    assert_eq!(next.terminate(), 0, "{}", next.log_text());
}
