//! `myvault check` against real MySQL 9.7 and MariaDB 10.11, and its answers to bad input.

use std::io::Write;
use std::net::TcpListener;

use crate::support::{Flavor, Scratch, TestServer, myvault, myvault_env};

fn item<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .expect("checks array")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check named {name} in {report:#}"))
}

#[test]
fn mysql97_ready_server_passes_over_tls_and_over_rsa() {
    let srv = TestServer::mysql97();
    srv.sql(
        "CREATE USER 'bk'@'%' IDENTIFIED WITH caching_sha2_password BY 'Bk-pass-1';\n\
         GRANT SELECT, RELOAD, LOCK TABLES, SHOW VIEW, TRIGGER, EVENT, REPLICATION CLIENT, REPLICATION SLAVE, BACKUP_ADMIN ON *.* TO 'bk'@'%'",
    );
    // First login without TLS: the password cache is empty, so this is the full
    // caching_sha2 exchange with the server's RSA key.
    let plain = myvault(&[
        "check",
        "--source",
        &srv.url_as("bk", "Bk-pass-1"),
        "--ssl-mode",
        "DISABLED",
        "--json",
    ]);
    plain.expect_code(0);
    let r = plain.json();
    assert_eq!(r["flavor"], "MySQL");
    assert!(r["version"].as_str().unwrap().starts_with("9.7."), "{r:#}");
    assert_eq!(r["tls"], false);
    assert_eq!(r["ok"], true);
    assert_eq!(r["account"], "bk@%");
    for name in [
        "log_bin",
        "binlog_format",
        "gtid_mode",
        "enforce_gtid_consistency",
        "server_id",
        "privileges",
    ] {
        assert_eq!(item(&r, name)["status"], "ok", "{name}: {r:#}");
    }
    assert_eq!(
        item(&r, "server_id")["value"],
        srv.value("SELECT @@server_id").unwrap()
    );

    let tls = myvault(&[
        "check",
        "--source",
        &srv.url_as("bk", "Bk-pass-1"),
        "--ssl-mode",
        "REQUIRED",
        "--json",
    ]);
    tls.expect_code(0);
    assert_eq!(tls.json()["tls"], true);

    // Human output names every item.
    let human = myvault(&["check", "--source", &srv.url_as("bk", "Bk-pass-1")]);
    human.expect_code(0);
    assert!(
        human.stdout.contains("ready for backup and PITR"),
        "{}",
        human.stdout
    );
    assert!(!human.stdout.contains("Bk-pass-1") && !human.stderr.contains("Bk-pass-1"));

    // PARTIAL_JSON makes updates partial diffs that flashback cannot undo: a warning, with
    // the fix, and nothing about it while it is off.
    let checks = r["checks"].as_array().unwrap();
    assert!(
        !checks
            .iter()
            .any(|c| c["name"] == "binlog_row_value_options")
    );
    srv.sql("SET GLOBAL binlog_row_value_options = 'PARTIAL_JSON'");
    let partial = myvault(&[
        "check",
        "--source",
        &srv.url_as("bk", "Bk-pass-1"),
        "--json",
    ]);
    let r = partial.json();
    let item = item(&r, "binlog_row_value_options");
    assert_eq!(item["status"], "warn", "{r:#}");
    assert!(
        item["fix"]
            .as_str()
            .unwrap()
            .contains("binlog_row_value_options")
    );
}

#[test]
fn mysql97_without_binlog_or_gtid_fails_with_fixes() {
    let srv = TestServer::builder(Flavor::Mysql97)
        .no_binlog()
        .no_gtid()
        .start();
    srv.sql("CREATE USER 'weak'@'%' IDENTIFIED BY 'Weak-1';\nGRANT SELECT ON *.* TO 'weak'@'%'");
    let run = myvault(&["check", "--source", &srv.url_as("weak", "Weak-1"), "--json"]);
    run.expect_code(6);
    let r = run.json();
    assert_eq!(r["ok"], false);
    assert_eq!(item(&r, "log_bin")["status"], "fail");
    assert!(
        item(&r, "log_bin")["fix"]
            .as_str()
            .unwrap()
            .contains("log_bin")
    );
    assert_eq!(item(&r, "gtid_mode")["status"], "warn");
    let privs = item(&r, "privileges");
    assert_eq!(privs["status"], "fail");
    let fix = privs["fix"].as_str().unwrap();
    assert!(
        fix.starts_with("GRANT ") && fix.contains("REPLICATION SLAVE") && fix.contains("RELOAD"),
        "{fix}"
    );
    assert!(fix.ends_with("TO 'weak'@'%';"), "{fix}");
    assert!(
        run.stderr.contains("log_bin") && run.stderr.contains("privileges"),
        "{}",
        run.stderr
    );
}

#[test]
fn mariadb1011_is_detected_and_checked() {
    let srv = TestServer::mariadb1011();
    srv.sql(
        "CREATE USER 'bk'@'%' IDENTIFIED BY 'Bk-pass-2';\n\
         GRANT SELECT, RELOAD, LOCK TABLES, SHOW VIEW, TRIGGER, EVENT, BINLOG MONITOR, REPLICATION SLAVE ON *.* TO 'bk'@'%'",
    );
    let run = myvault(&[
        "check",
        "--source",
        &srv.url_as("bk", "Bk-pass-2"),
        "--json",
    ]);
    run.expect_code(0);
    let r = run.json();
    assert_eq!(r["flavor"], "MariaDB");
    assert!(
        r["version"].as_str().unwrap().starts_with("10.11."),
        "{r:#}"
    );
    assert_eq!(item(&r, "log_bin")["status"], "ok");
    assert_eq!(item(&r, "gtid_strict_mode")["status"], "ok");
    assert_eq!(item(&r, "privileges")["status"], "ok", "{r:#}");
    assert_eq!(item(&r, "clone plugin")["status"], "info");
}

#[test]
fn password_sources_url_file_env_and_option_file() {
    let srv = TestServer::mysql97();
    srv.sql("CREATE USER 'pw'@'%' IDENTIFIED BY 'From-Somewhere-9';\nGRANT ALL ON *.* TO 'pw'@'%'");
    let url = format!("mysql://pw@127.0.0.1:{}", srv.port());
    let dir = Scratch::new("pw");

    let file = dir.join("password");
    std::fs::write(&file, "From-Somewhere-9\n").unwrap();
    myvault(&[
        "check",
        "--source",
        &url,
        "--password-file",
        file.to_str().unwrap(),
        "-q",
    ])
    .expect_code(0);

    myvault_env(
        &["check", "--source", &url, "-q"],
        &[("MYVAULT_PASSWORD", "From-Somewhere-9")],
    )
    .expect_code(0);

    let cnf = dir.join("my.cnf");
    let mut f = std::fs::File::create(&cnf).unwrap();
    writeln!(
        f,
        "[mysqld]\npassword=wrong\n[client]\npassword = \"From-Somewhere-9\"\nssl-mode=REQUIRED"
    )
    .unwrap();
    let run = myvault(&[
        "check",
        "--source",
        &url,
        "--defaults-file",
        cnf.to_str().unwrap(),
        "--json",
    ]);
    run.expect_code(0);
    assert_eq!(run.json()["tls"], true, "ssl-mode from the option file");

    // No password anywhere: refused, exit 4.
    myvault(&["check", "--source", &url]).expect_code(4);
}

#[test]
fn bad_inputs_give_one_line_distinct_codes_and_never_echo_the_password() {
    let srv = TestServer::mysql97();
    let secret = "Sup3r-Secret-Pw";

    // Wrong password.
    let run = myvault(&["check", "--source", &srv.url_as("root", secret)]);
    run.expect_code(4);
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("refused the login"), "{}", run.stderr);

    // An account that does not exist is access denied too (the server answers for it with
    // sha256_password, to hide which accounts exist), over TLS and over RSA alike.
    for ssl in ["PREFERRED", "DISABLED"] {
        let run = myvault(&[
            "check",
            "--source",
            &srv.url_as("no_such_user", secret),
            "--ssl-mode",
            ssl,
        ]);
        run.expect_code(4);
        assert!(run.stderr.contains("refused the login"), "{}", run.stderr);
        assert!(!run.stderr.contains(secret), "{}", run.stderr);
    }
    // And a real sha256_password account logs in.
    srv.sql(
        "CREATE USER 'sha'@'%' IDENTIFIED WITH sha256_password BY 'Sha-pass-1';\n\
         GRANT SELECT, RELOAD, REPLICATION CLIENT, REPLICATION SLAVE ON *.* TO 'sha'@'%'",
    );
    for ssl in ["PREFERRED", "DISABLED"] {
        let run = myvault(&[
            "check",
            "--source",
            &srv.url_as("sha", "Sha-pass-1"),
            "--ssl-mode",
            ssl,
            "--json",
        ]);
        assert!(
            run.code == 0 || run.code == 6,
            "sha256_password login over {ssl}: {}",
            run.stderr
        );
        run.json();
    }

    // Nothing listens on the port.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let run = myvault(&[
        "check",
        "--source",
        &format!("mysql://root:{secret}@127.0.0.1:{port}"),
    ]);
    run.expect_code(3);
    assert!(run.stderr.contains("cannot reach"), "{}", run.stderr);

    // A port that speaks another protocol (an HTTP-like server that sends garbage).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
    });
    let run = myvault(&[
        "check",
        "--source",
        &format!("mysql://root:{secret}@127.0.0.1:{port}"),
    ]);
    run.expect_code(5);
    assert!(run.stderr.contains("not a MySQL server"), "{}", run.stderr);

    // A port that accepts and stays silent.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let run = myvault(&[
        "check",
        "--source",
        &format!("mysql://root:{secret}@127.0.0.1:{port}"),
        "--connect-timeout",
        "1",
    ]);
    run.expect_code(5);
    drop(silent);

    // Malformed URLs.
    for url in [
        format!("mysql://root:{secret}@host:99999"),
        format!("http://root:{secret}@host"),
        format!("mysql://root:{secret}"),
    ] {
        let run = myvault(&["check", "--source", &url]);
        run.expect_code(2);
        assert!(run.stderr.contains("malformed MySQL URL"), "{}", run.stderr);
        assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    }

    // Unknown flag: clap's usage error, also 2.
    myvault(&["check", "--source", &srv.url(), "--no-such-flag"]).expect_code(2);
}

#[test]
fn a_password_in_the_url_is_hidden_from_ps() {
    // A server that accepts and then says nothing keeps myvault waiting for the greeting,
    // long after it parsed its arguments.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let secret = "Hidden-pw-42";
    let url = format!("mysql://root:{secret}@127.0.0.1:{port}");
    let mut run = crate::support::Background::start(
        &["check", "--connect-timeout", "20", "--source", &url],
        &[],
    );
    let (conn, _) = listener.accept().unwrap();
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", run.pid())).unwrap();
    let shown = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(run.running(), "myvault stopped before the check");
    assert!(!shown.contains(secret), "ps shows the password: {shown}");
    assert!(
        shown.contains(&format!("mysql://root:xxxxxxxxxxxx@127.0.0.1:{port}")),
        "the URL is not shown with the password masked: {shown}"
    );
    drop(conn);
    let run = run.finish();
    assert_ne!(
        run.code, 0,
        "a server without a greeting passed: {}",
        run.stderr
    );
    assert!(!run.stderr.contains(secret), "{}", run.stderr);

    // Usage errors quote the argument they refuse: not its password.
    for args in [
        vec!["backup", url.as_str()],
        vec!["backup", "--jobs", url.as_str()],
    ] {
        let run = myvault(&args);
        run.expect_code(2);
        assert!(!run.stderr.contains(secret), "{}", run.stderr);
        assert!(run.stderr.contains("mysql://root:xxx@"), "{}", run.stderr);
    }
}
