//! `backup --max-rate` (issue 20, item 5): the bytes read from the source, paced by one token
//! bucket across every reader, so a backup of N bytes at rate R takes at least N / R seconds
//! less the bucket's quarter second; bad rates are usage errors (exit 2).

use std::time::Instant;

use crate::support::{Scratch, load, myvault};

const RATE: u64 = 2 << 20;

/// Runs `args` with `--max-rate 2M --json`; returns the bytes the snapshot read and the
/// seconds it took.
fn limited(args: &[&str]) -> (u64, f64) {
    let mut args = args.to_vec();
    args.extend(["--max-rate", "2M", "--json"]);
    let started = Instant::now();
    let run = myvault(&args);
    let took = started.elapsed().as_secs_f64();
    run.expect_code(0);
    (run.json()["size"].as_u64().unwrap(), took)
}

fn assert_paced(what: &str, bytes: u64, took: f64) {
    let least = bytes as f64 / RATE as f64 - 0.25;
    assert!(
        least > 2.0,
        "{what}: too little data to see the rate ({bytes} bytes)"
    );
    assert!(
        took >= least,
        "{what}: {bytes} bytes at 2 MiB/s in {took:.2} s, under the {least:.2} s the rate allows"
    );
    eprintln!("{what}: {bytes} bytes in {took:.2} s at --max-rate 2M (at least {least:.2} s)");
}

#[test]
fn max_rate_paces_a_logical_and_a_file_backup_and_bad_rates_are_usage_errors() {
    let dir = Scratch::new("max-rate");
    let repo = dir.join("repo");
    let repo = repo.to_str().unwrap();
    myvault(&["init", "--repo", repo]).expect_code(0);
    for bad in ["0", "fast", "-5M", "10X", "1.5M"] {
        // `=`: a value that starts with `-` is not taken for a flag.
        let flag = format!("--max-rate={bad}");
        let run = myvault(&["backup", "--repo", repo, "--path", "/dev/null", &flag]);
        assert_eq!(run.code, 2, "--max-rate {bad}: {}", run.stderr);
        assert!(run.stderr.contains("rate"), "{}", run.stderr);
    }

    // Files (the reader clone and cold backups pack their data directories with).
    let files = dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    let data: Vec<u8> = (0..(6u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(files.join("a"), &data[..3 << 20]).unwrap();
    std::fs::write(files.join("b"), &data[3 << 20..]).unwrap();
    let (bytes, took) = limited(&["backup", "--repo", repo, "--path", files.to_str().unwrap()]);
    assert_eq!(bytes, 6 << 20);
    assert_paced("backup --path", bytes, took);

    // A logical dump over two connections: the limit is on their sum.
    let src = crate::restore_resume::fast_server();
    load::prepare(&src, "sb", 2, 15_000);
    let url = src.url();
    let (bytes, took) = limited(&["backup", "--repo", repo, "--source", &url, "--jobs", "2"]);
    assert_paced("logical backup --jobs 2", bytes, took);
    myvault(&["verify", "--repo", repo]).expect_code(0);
}
