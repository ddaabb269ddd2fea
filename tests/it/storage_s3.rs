//! The S3 backend against a real S3-protocol server (s3s-fs): the shared backend suite, and
//! what happens when credentials are wrong, the bucket is missing, or the server dies.

use std::time::{Duration, Instant};

use myvault::storage::s3::S3Storage;
use myvault::storage::{OpenOptions, Storage};

use crate::support::s3::{S3Server, SECRET_KEY};
use crate::support::{Scratch, TestServer, myvault_env};

/// The backend reads credentials from the standard environment; every test server uses the
/// same ones, so setting them once for the process is safe.
pub(crate) fn aws_env(s3: &S3Server) -> OpenOptions {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for (k, v) in s3.env() {
            if k != "AWS_ENDPOINT_URL" {
                // SAFETY: set once, before any S3 client reads it, with values that are the
                // same for every test.
                unsafe { std::env::set_var(k, v) };
            }
        }
    });
    OpenOptions {
        s3_endpoint: Some(s3.endpoint()),
        ..OpenOptions::default()
    }
}

fn env_pairs(s3: &S3Server) -> Vec<(String, String)> {
    s3.env()
}

fn run_with(s3: &S3Server, args: &[&str], extra: &[(&str, &str)]) -> crate::support::Run {
    let owned = env_pairs(s3);
    let mut env: Vec<(&str, &str)> = owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.retain(|(k, _)| !extra.iter().any(|(ek, _)| ek == k));
    env.extend_from_slice(extra);
    myvault_env(args, &env)
}

#[test]
fn s3_backend_passes_the_shared_suite_with_and_without_multipart() {
    let s3 = S3Server::start();
    let opts = aws_env(&s3);
    let store = S3Storage::open(&s3.repo("suite"), &opts).expect("open s3");
    myvault::storage::conformance::run_all_but_create_race(&store);
    let mut small_parts = S3Storage::open(&s3.repo("multipart"), &opts).expect("open s3");
    small_parts.set_multipart_threshold(1024 * 1024);
    myvault::storage::conformance::run_all_but_create_race(&small_parts);
}

#[test]
fn wrong_credentials_and_missing_bucket_are_clear_errors() {
    let s3 = S3Server::start();
    let wrong = "Wr0ng-Secret-Value";
    let run = run_with(
        &s3,
        &["init", "--repo", &s3.repo("x")],
        &[("AWS_SECRET_ACCESS_KEY", wrong)],
    );
    run.expect_code(10);
    assert!(
        run.stderr.contains("credentials were refused"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains(wrong) && !run.stderr.contains(SECRET_KEY),
        "{}",
        run.stderr
    );

    let run = run_with(&s3, &["init", "--repo", "s3://no-such-bucket/x"], &[]);
    run.expect_code(10);
    assert!(
        run.stderr.contains("bucket no-such-bucket does not exist"),
        "{}",
        run.stderr
    );

    let run = run_with(&s3, &["list", "--repo", &s3.repo("empty")], &[]);
    run.expect_code(10);
    assert!(
        run.stderr.contains("not a myvault repository"),
        "{}",
        run.stderr
    );

    // An endpoint that accepts connections and never answers (a hung server, a proxy with a
    // dead upstream) is given up on within seconds, not minutes.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let started = std::time::Instant::now();
    let run = run_with(
        &s3,
        &[
            "list",
            "--repo",
            "s3://bucket/x",
            "--s3-endpoint",
            &endpoint,
        ],
        &[],
    );
    run.expect_code(10);
    assert!(run.stderr.contains("no answer in time"), "{}", run.stderr);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "a dead endpoint took {:?} to give up",
        started.elapsed()
    );
    drop(silent);
}

#[test]
fn a_server_killed_in_the_middle_of_a_multipart_upload_leaves_nothing_visible() {
    let mut s3 = S3Server::start();
    let opts = aws_env(&s3);
    let mut store = S3Storage::open(&s3.repo("kill"), &opts).expect("open s3");
    store.set_multipart_threshold(1024 * 1024);
    let data: Vec<u8> = (0..96 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let started = Instant::now();
    let result = std::thread::scope(|s| {
        let h = s.spawn(|| store.put("big", &data));
        std::thread::sleep(Duration::from_millis(300));
        s3.kill();
        h.join().unwrap()
    });
    let err = result.expect_err("the upload cannot succeed without a server");
    assert!(err.is_transient(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "took {:?}",
        started.elapsed()
    );
    s3.restart();
    let store = S3Storage::open(&s3.repo("kill"), &opts).expect("open s3");
    assert_eq!(
        store.stat("big").unwrap(),
        None,
        "a half-uploaded object must not appear"
    );
}

#[test]
fn backup_to_local_and_s3_at_once_survives_losing_s3_and_copy_catches_up() {
    let mut s3 = S3Server::start();
    let src = TestServer::mysql97();
    crate::support::load::prepare(&src, "sb", 2, 5000);
    let dir = Scratch::new("multi");
    let local = dir.join("local").to_str().unwrap().to_string();
    let remote = s3.repo("offsite");
    run_with(&s3, &["init", "--repo", &local], &[]).expect_code(0);
    run_with(&s3, &["init", "--repo", &remote], &[]).expect_code(0);

    // Both healthy: one pass, two repositories.
    let both = run_with(
        &s3,
        &[
            "backup",
            "--repo",
            &local,
            "--repo",
            &remote,
            "--source",
            &src.url(),
            "--json",
        ],
        &[],
    );
    both.expect_code(0);
    let repos = both.json()["repos"].as_array().unwrap().clone();
    assert_eq!(repos.len(), 2);
    assert!(repos.iter().all(|r| r["error"].is_null()), "{repos:?}");

    // S3 dies during the next backup: the local copy completes, exit code 9 names S3.
    src.sql("CREATE TABLE sb.more (id INT PRIMARY KEY, v TEXT);\nINSERT INTO sb.more SELECT id, REPEAT(c, 20) FROM sb.sbtest1");
    let env = env_pairs(&s3);
    let run = std::thread::scope(|s| {
        let h = s.spawn(|| {
            let mut e: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            e.push(crate::support::failpoints(
                "dump-after-snapshot=sleep(2000)",
            ));
            myvault_env(
                &[
                    "backup",
                    "--repo",
                    &local,
                    "--repo",
                    &remote,
                    "--source",
                    &src.url(),
                ],
                &e,
            )
        });
        std::thread::sleep(Duration::from_millis(800));
        s3.kill();
        h.join().unwrap()
    });
    run.expect_code(9);
    assert!(run.stderr.contains(&remote), "{}", run.stderr);
    run_with(&s3, &["verify", "--repo", &local], &[]).expect_code(0);
    let listed = run_with(&s3, &["list", "--repo", &local, "--json"], &[]);
    assert_eq!(listed.json()["snapshots"].as_array().unwrap().len(), 2);

    // Back online: copy brings the off-site repository up to date, moving only what it lacks.
    s3.restart();
    let before = run_with(&s3, &["list", "--repo", &remote, "--json"], &[]);
    assert_eq!(
        before.json()["snapshots"].as_array().unwrap().len(),
        1,
        "no half-written snapshot is visible"
    );
    let copy = run_with(
        &s3,
        &["copy", "--from", &local, "--to", &remote, "--json"],
        &[],
    );
    copy.expect_code(0);
    assert_eq!(copy.json()["snapshots_copied"], 1);
    run_with(&s3, &["verify", "--repo", &remote], &[]).expect_code(0);
    let after = run_with(&s3, &["list", "--repo", &remote, "--json"], &[]);
    assert_eq!(after.json()["snapshots"].as_array().unwrap().len(), 2);
}

/// Delta blobs in S3: the second backup of a sparsely edited file reads its bases back from
/// S3 (ranged reads), stores little, and both snapshots restore byte for byte.
#[test]
fn sparse_edits_are_stored_as_deltas_in_s3_and_restore_exactly() {
    let s3 = S3Server::start();
    let dir = Scratch::new("s3delta");
    let remote = s3.repo("deltas");
    run_with(&s3, &["init", "--repo", &remote], &[]).expect_code(0);
    let data_dir = dir.join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let file = data_dir.join("table.tsv");
    let rows = |bump: u32| -> Vec<u8> {
        (1..=60_000u32)
            .flat_map(|id| {
                let k = if bump > 0 && id % 100 == 0 {
                    id + bump
                } else {
                    id
                };
                let pad = u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                format!("{id}\t{k}\t{pad:020}-{:020}-{:020}\n", pad >> 7, pad >> 13).into_bytes()
            })
            .collect()
    };
    let v1 = rows(0);
    std::fs::write(&file, &v1).unwrap();
    let path = data_dir.to_str().unwrap();
    let backup = || {
        let run = run_with(
            &s3,
            &["backup", "--path", path, "--repo", &remote, "--json"],
            &[],
        );
        run.expect_code(0);
        let json = run.json();
        (
            json["snapshot"].as_str().unwrap().to_string(),
            json["repos"][0]["new_bytes"].as_u64().unwrap(),
        )
    };
    let (first, n1) = backup();
    let v2 = rows(7);
    std::fs::write(&file, &v2).unwrap();
    let (second, n2) = backup();
    assert!(n2 * 10 < n1, "sparse edit stored {n2} new bytes of {n1}");
    run_with(&s3, &["verify", "--repo", &remote], &[]).expect_code(0);
    for (snapshot, want) in [(&first, &v1), (&second, &v2)] {
        let out = dir.join(&format!("out-{snapshot}"));
        run_with(
            &s3,
            &[
                "restore",
                "--repo",
                &remote,
                "--snapshot",
                snapshot,
                "--dest",
                out.to_str().unwrap(),
            ],
            &[],
        )
        .expect_code(0);
        let got = std::fs::read(out.join("table.tsv")).unwrap();
        assert!(got == *want, "snapshot {snapshot} restored differently");
    }
}
