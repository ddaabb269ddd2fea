//! Text given by operators: `mysql://` URLs (and the redaction that hides their passwords),
//! repository locations, MySQL option files, the configuration file and TIME arguments.

use std::path::Path;

use super::{MIB, Target};
use crate::mysql::option_file;
use crate::mysql::url::{self, MysqlUrl};
use crate::storage::location::Location;

pub const URL: Target = Target {
    name: "mysql_url",
    run: run_url,
    generated_seeds: url_seeds,
    seed_dirs: &[],
    dictionary: &[
        b"mysql://",
        b"s3://",
        b"@",
        b":",
        b"%40",
        b"%zz",
        b"%C3%A9",
        b"?socket=",
        b"&",
        b"[::1]",
        b"65535",
        b"65536",
        b"/",
    ],
    max_alloc: MIB,
    ci_inputs: 100_000,
    max_len: 1024,
};

pub const OPTION_FILE: Target = Target {
    name: "option_file",
    run: run_option_file,
    generated_seeds: option_seeds,
    seed_dirs: &[],
    dictionary: &[
        b"[client]\n",
        b"[mysqld]\n",
        b"password",
        b" = ",
        b"\"",
        b"'",
        b" #",
        b"\n",
        b"_",
    ],
    max_alloc: MIB,
    ci_inputs: 50_000,
    max_len: 4096,
};

pub const CONFIG: Target = Target {
    name: "config_file",
    run: run_config,
    generated_seeds: config_seeds,
    seed_dirs: &[("examples", &["myvault.toml"])],
    dictionary: &[
        b"[source]\n",
        b"[[repo]]\n",
        b"url = \"mysql://backup:hunter2@db1\"\n",
        b"failover = [\"mysql://u:hunter2@db2\"]\n",
        b"jobs = ",
        b"location = ",
        b"\"\"\"",
        b"'",
        b"[backup]\n",
    ],
    max_alloc: MIB,
    ci_inputs: 30_000,
    max_len: 4096,
};

pub const TIME: Target = Target {
    name: "time_spec",
    run: run_time,
    generated_seeds: time_seeds,
    seed_dirs: &[],
    dictionary: &[
        b"T",
        b"Z",
        b"+14:00",
        b"-00:00",
        b".999999999",
        b":60",
        b"2026-11-20",
        b" ",
    ],
    max_alloc: MIB,
    ci_inputs: 50_000,
    max_len: 256,
};

fn url_seeds() -> Vec<Vec<u8>> {
    [
        "mysql://backup:p%40ss@db1:3306",
        "mysql://root@127.0.0.1",
        "mysql://u:pw@[::1]:3307/",
        "mysql://u@localhost?socket=/run/mysqld/mysqld.sock",
        "mysql://u:a@b:c@host:1",
        "--source=mysql://u:secret@h",
        "s3://backups/db1/",
        "/var/backups/myvault",
        "./backup:2026",
        "S3://bucket/x",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

/// Whether the error for the same URL with a password of the same shape (letters and
/// digits replaced) says `raw` too: then it is the message's own words ("spaces"), not the
/// password.
fn from_template(text: &str, span: &std::ops::Range<usize>, raw: &str) -> bool {
    let shape: String = raw
        .chars()
        .map(|c| if c.is_alphanumeric() { 'Q' } else { c })
        .collect();
    let other = format!("{}{shape}{}", &text[..span.start], &text[span.end..]);
    MysqlUrl::parse(&other).is_err_and(|e| e.to_string().contains(raw))
}

/// What the text says outside `span`.
fn outside(text: &str, span: &std::ops::Range<usize>) -> String {
    format!("{}{}", &text[..span.start], &text[span.end..])
}

fn run_url(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();
    let span = url::password_span(text);
    let parsed = MysqlUrl::parse(text);
    match (&parsed, &span) {
        (Ok(u), Some(span)) => {
            // Parsing and the process-title redaction agree on where the password is.
            let password = u.password.as_ref().map(|p| p.expose().to_string());
            assert!(
                password.is_some_and(|p| !p.is_empty()),
                "a span but no password"
            );
            let hidden = format!("{}xxx{}", &text[..span.start], &text[span.end..]);
            let again = MysqlUrl::parse(&hidden).expect("the same URL with the password hidden");
            assert_eq!(again.password.as_ref().map(|p| p.expose()), Some("xxx"));
            assert_eq!(
                (&again.user, &again.host, again.port),
                (&u.user, &u.host, u.port)
            );
            assert_eq!(again.socket, u.socket);
        }
        (Ok(u), None) => {
            assert!(
                u.password.as_ref().is_none_or(|p| p.expose().is_empty()),
                "a password the redaction cannot find"
            );
        }
        (Err(_), _) => {}
    }
    // The password is never repeated: not by an error, not by the redacted forms. (Where
    // the same text is also somewhere else in the URL, there is no telling; skipped.)
    if let Some(span) = &span {
        let raw = &text[span.clone()];
        if raw.len() >= 3 && !outside(text, span).contains(raw) && raw != "xxx" {
            match &parsed {
                Err(e) => {
                    let message = e.to_string();
                    assert!(
                        !message.contains(raw) || from_template(text, span, raw),
                        "the password is in: {message}"
                    );
                }
                Ok(u) => {
                    // The address has the default port, which the text may not.
                    assert!(
                        !u.redacted().contains(raw) || u.address().contains(raw),
                        "the password is in {}",
                        u.redacted()
                    );
                    let redacted = url::redact_passwords(text);
                    assert!(!redacted.contains(raw), "not redacted: {redacted}");
                }
            }
        }
    }
    let redacted = url::redact_passwords(text);
    assert_eq!(
        url::redact_passwords(&redacted),
        redacted,
        "redaction is idempotent"
    );
    // Repository locations: what is accepted prints as text that reads back the same.
    if let Ok(loc) = Location::parse(text) {
        let printed = loc.to_string();
        assert_eq!(Location::parse(&printed).as_ref(), Ok(&loc), "{printed:?}");
    }
}

fn option_seeds() -> Vec<Vec<u8>> {
    vec![
        b"[mysqld]\npassword=server\n\n[client]\nuser = backup\npassword = \"p#ss word\"\nssl_mode=REQUIRED # comment\n[mysql]\npassword=other\n".to_vec(),
        b"# comment\n[client]\r\nssl-ca='/etc/ca.pem'\r\n!include /etc/other.cnf\nhost\n".to_vec(),
    ]
}

fn run_option_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let map = option_file::parse_section(&text, "client");
    for key in map.keys() {
        assert!(!key.contains('_'), "{key:?} is not normalised");
        assert_eq!(*key, key.to_ascii_lowercase());
    }
    // Written back as quoted values, the section reads the same.
    let mut written = String::from("[client]\n");
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    for k in keys {
        written.push_str(&format!("{k} = \"{}\"\n", map[k]));
    }
    assert_eq!(
        option_file::parse_section(&written, "client"),
        map,
        "{written:?}"
    );
}

fn config_seeds() -> Vec<Vec<u8>> {
    vec![
        b"[source]\nurl = \"mysql://backup:hunter2@db1:3306\"\nfailover = [\"mysql://u:pw2@db2\"]\n[[repo]]\nlocation = \"/var/backups\"\n[backup]\njobs = 4\n".to_vec(),
    ]
}

fn run_config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Err(e) = crate::cli::config::parse(&text, Path::new("/etc/myvault.toml")) else {
        return;
    };
    let message = e.to_string();
    assert!(
        !message.contains('\n'),
        "a configuration error is one line: {message:?}"
    );
    // No password of a URL in the file is repeated in the error.
    let mut rest = text.as_ref();
    while let Some(at) = rest.find("mysql://") {
        // A URL in the file ends at a quote or a space, as for the redaction.
        let url = &rest[at..];
        let end = url
            .find(|c: char| c.is_whitespace() || c == '\'' || c == '"')
            .unwrap_or(url.len());
        let url = &url[..end];
        if let Some(span) = url::password_span(url) {
            let raw = &url[span];
            let once = text.matches(raw).count() == 1 && !"/etc/myvault.toml".contains(raw);
            assert!(
                raw.len() < 4 || !once || !message.contains(raw),
                "the password {raw:?} is in the error: {message}"
            );
        }
        rest = &rest[at + "mysql://".len()..];
    }
}

fn time_seeds() -> Vec<Vec<u8>> {
    [
        "2026-11-20T14:03:00Z",
        "2026-11-20T15:03:00+01:00",
        "2026-11-20T14:03:00.123456Z",
        "2026-11-20 14:03:00.5",
        "2026-11-20 14:03:00",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn run_time(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(t) = crate::timespec::parse(&text) {
        let printed = t.to_rfc3339();
        assert_eq!(crate::timespec::parse(&printed), Ok(t), "{printed}");
        let _ = crate::timespec::micros(&t);
    }
}
