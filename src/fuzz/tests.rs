//! The bounded fuzz run of `cargo test`: every target over its kept regression inputs, its
//! seeds, and a fixed number of mutants of them (the same ones every run). A failing input is
//! saved under `target/fuzz-failures/<target>/` and named in the failure; keep it as a
//! regression input in `fixtures/fuzz/<target>/regressions/`.
//!
//! `MYVAULT_FUZZ_INPUTS=N` changes the number of mutants (more for a longer local run),
//! `MYVAULT_FUZZ_SEED=N` the mutator's seed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::mutate::{Rng, mutate};
use super::{Target, regressions, run_one, seeds, target};

/// Longer than any target takes on a loaded 2-core machine; an input that runs this long
/// loops.
const HANG: Duration = Duration::from_secs(240);

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Saves a failing input where the developer finds it.
fn save_failure(t: &Target, data: &[u8]) -> PathBuf {
    let dir = PathBuf::from(
        std::env::var("CARGO_TARGET_DIR")
            .unwrap_or_else(|_| super::crate_dir().join("target").display().to_string()),
    )
    .join("fuzz-failures")
    .join(t.name);
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!(
        "crash-{}",
        &crate::repo::Id::sha256(data).to_hex()[..16]
    ));
    let _ = std::fs::write(&path, data);
    path
}

fn run_checked(t: &'static Target, data: &[u8], what: &str) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| run_one(t, data))) {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        let path = save_failure(t, data);
        panic!(
            "fuzz target {} failed on {what} ({} bytes, saved as {}): {msg}\n\
             keep it: cp {} fixtures/fuzz/{}/regressions/",
            t.name,
            data.len(),
            path.display(),
            path.display(),
            t.name
        );
    }
}

/// Runs the bounded loop of one target on a thread of its own, so an input that hangs
/// fails the test (with the input) instead of stalling CI.
fn bounded_run(name: &str) {
    let t = target(name).unwrap_or_else(|| panic!("no fuzz target {name}"));
    let current: Arc<Mutex<Vec<u8>>> = Arc::default();
    let (done_tx, done) = channel();
    let shared = current.clone();
    let worker = std::thread::spawn(move || {
        let started = Instant::now();
        for (path, data) in regressions(t) {
            *shared.lock().unwrap_or_else(|e| e.into_inner()) = data.clone();
            run_checked(t, &data, &format!("regression input {}", path.display()));
        }
        let pool = seeds(t);
        assert!(!pool.is_empty(), "fuzz target {} has no seeds", t.name);
        for (i, data) in pool.iter().enumerate() {
            *shared.lock().unwrap_or_else(|e| e.into_inner()) = data.clone();
            run_checked(t, data, &format!("seed {i}"));
        }
        let inputs = env_number("MYVAULT_FUZZ_INPUTS").unwrap_or(u64::from(t.ci_inputs));
        let seed = env_number("MYVAULT_FUZZ_SEED").unwrap_or(0x006d_7976_6175_6c74) // "myvault"
            ^ crate::repo::Id::sha256(t.name.as_bytes()).as_bytes()[0] as u64;
        let mut rng = Rng::new(seed);
        for i in 0..inputs {
            let data = mutate(&mut rng, &pool, t.dictionary, t.max_len);
            *shared.lock().unwrap_or_else(|e| e.into_inner()) = data.clone();
            run_checked(t, &data, &format!("mutant {i} of seed {seed}"));
        }
        eprintln!(
            "fuzz target {}: {} seeds and {inputs} mutants in {:.1} s",
            t.name,
            pool.len(),
            started.elapsed().as_secs_f64()
        );
        let _ = done_tx.send(());
    });
    match done.recv_timeout(HANG) {
        Ok(()) => {}
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            // The worker panicked: its message says which input.
            if let Err(p) = worker.join() {
                std::panic::resume_unwind(p);
            }
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            let data = current.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let path = save_failure(t, &data);
            panic!(
                "fuzz target {} ran over {} s on one input (saved as {}): a loop",
                t.name,
                HANG.as_secs(),
                path.display()
            );
        }
    }
}

#[test]
fn every_target_is_run_by_a_test_here() {
    let source = include_str!("tests.rs");
    for t in super::TARGETS {
        assert!(
            source.contains(&format!("fn fuzz_{}()", t.name)),
            "no bounded run for {}",
            t.name
        );
    }
}

#[test]
fn fuzz_binlog_file() {
    bounded_run("binlog_file");
}

#[test]
fn fuzz_binlog_event() {
    bounded_run("binlog_event");
}

#[test]
fn fuzz_binlog_rows() {
    bounded_run("binlog_rows");
}

#[test]
fn fuzz_mysql_client() {
    bounded_run("mysql_client");
}

#[test]
fn fuzz_replica_session() {
    bounded_run("replica_session");
}

#[test]
fn fuzz_gtid_text() {
    bounded_run("gtid_text");
}

#[test]
fn fuzz_gtid_binary() {
    bounded_run("gtid_binary");
}

#[test]
fn fuzz_manifest() {
    bounded_run("manifest");
}

#[test]
fn fuzz_index_file() {
    bounded_run("index_file");
}

#[test]
fn fuzz_pack_file() {
    bounded_run("pack_file");
}

#[test]
fn fuzz_blob_codec() {
    bounded_run("blob_codec");
}

#[test]
fn fuzz_repo_damage() {
    bounded_run("repo_damage");
}

#[test]
fn fuzz_encrypted_object() {
    bounded_run("encrypted_object");
}

#[test]
fn fuzz_mysql_url() {
    bounded_run("mysql_url");
}

#[test]
fn fuzz_option_file() {
    bounded_run("option_file");
}

#[test]
fn fuzz_config_file() {
    bounded_run("config_file");
}

#[test]
fn fuzz_time_spec() {
    bounded_run("time_spec");
}
