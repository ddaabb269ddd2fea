//! The bench's prune measurement (issue 20, item 4), run by `scripts/bench-prune`: a year of
//! daily snapshots of a table whose rows change 1% a day, then the retention of
//! `prune --keep-daily 7 --keep-monthly 12`, without repacking and with it. Ignored in the
//! ordinary test run (minutes of work).
//!
//! Scaled down, by this method: a repository-level run (the writer, retention and prune that
//! `myvault backup` and `myvault prune` use; no MySQL server), on one table of
//! `MYVAULT_BENCH_ROWS` rows (default 100,000, about 19 MB as a logical dump's row file:
//! sysbench's columns, tab-separated), of which 1% (`MYVAULT_BENCH_CHANGE_PERMILLE`, default
//! 10) chosen at random get a new `c` each day, backed up once a day for `MYVAULT_BENCH_DAYS`
//! days (default 365) with the snapshot's time set to that day, each with the previous one as
//! its parent (deltas), with the default chunker (line-aligned, 1 MiB average) and packs
//! (16 MiB) of `myvault init`.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};

use super::super::prune::{self, Forget};
use super::super::retention::{self, RetentionPolicy};
use super::super::snapshot_key;
use super::*;
use crate::test_rng::XorShift64;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// A sysbench-like row (`id`, `k`, `c`, `pad`) of version `version`.
fn row(out: &mut Vec<u8>, id: u32, version: u32) {
    let mut rng = XorShift64::new(u64::from(id) << 32 | u64::from(version) | 1 << 63);
    let k = rng.next_u64() % 1_000_000;
    out.extend_from_slice(format!("{id}\t{k}\t").as_bytes());
    for j in 0..10 {
        if j > 0 {
            out.push(b'-');
        }
        out.extend_from_slice(format!("{:011}", rng.next_u64() % 100_000_000_000).as_bytes());
    }
    out.push(b'\t');
    for j in 0..5 {
        if j > 0 {
            out.push(b'-');
        }
        out.extend_from_slice(
            format!("{:011}", (u64::from(id) * 7 + j) % 100_000_000_000).as_bytes(),
        );
    }
    out.push(b'\n');
}

fn pack_bytes(store: &dyn Storage) -> (u64, usize) {
    let packs = store.list("packs/").unwrap();
    (packs.iter().map(|o| o.size).sum(), packs.len())
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

#[test]
#[ignore = "the bench's prune measurement: scripts/bench-prune"]
fn year_of_daily_snapshots_changing_one_percent_pruned_with_and_without_repacking() {
    let days = env_or("MYVAULT_BENCH_DAYS", 365);
    let rows = env_or("MYVAULT_BENCH_ROWS", 100_000) as u32;
    let permille = env_or("MYVAULT_BENCH_CHANGE_PERMILLE", 10);
    let mem = Arc::new(MemoryStorage::new());
    let repo = Arc::new(Repo::init(mem.clone(), RepoConfig::new()).unwrap());
    let mut versions = vec![0u32; rows as usize];
    let mut rng = XorShift64::new(20);
    let start: DateTime<Utc> = "2026-01-01T02:00:00Z".parse().unwrap();
    let mut parent: Option<SnapshotManifest> = None;
    let mut dump = Vec::new();
    let mut plain = 0u64;
    let began = Instant::now();
    for day in 0..days {
        if day > 0 {
            for _ in 0..u64::from(rows) * permille / 1000 {
                let id = (rng.next_u64() % u64::from(rows)) as usize;
                versions[id] += 1;
            }
        }
        dump.clear();
        for (id, v) in versions.iter().enumerate() {
            row(&mut dump, id as u32 + 1, *v);
        }
        plain += dump.len() as u64;
        let mut w = MultiWriter::new(vec![repo.clone()]).unwrap();
        if let Some(p) = &parent {
            w.set_parent(repo.clone(), p);
        }
        let chunker = w.stream_chunker().line_aligned();
        w.add_file("data/sb/sbtest1/0.tsv", 0o644, &dump[..], chunker)
            .unwrap();
        let t = template_at(start + Duration::days(day as i64));
        let id = t.id.clone();
        w.commit_snapshot(t).unwrap();
        parent = Some(repo.snapshot(&id).unwrap());
    }
    let backups_took = began.elapsed().as_secs_f64();
    let (before, packs_before) = pack_bytes(mem.as_ref());

    let policy = RetentionPolicy {
        keep_daily: Some(7),
        keep_monthly: Some(12),
        ..Default::default()
    };
    let now = start + Duration::days(days as i64 - 1) + Duration::hours(1);
    let snapshots = repo.snapshots().unwrap();
    let kept = retention::keep(&snapshots, &policy, now);
    let forget = Forget {
        manifests: snapshots
            .iter()
            .filter(|s| !kept.contains_key(&s.id))
            .map(|s| snapshot_key(&s.id))
            .collect(),
    };
    let mut lines = vec![format!(
        "bench-prune: {days} daily snapshots of {rows} rows ({:.1} MiB as a dump), {permille}\u{2030} of rows changed a day; backups took {backups_took:.0} s; {:.1} MiB of dumps stored in {:.1} MiB ({packs_before} packs)",
        mib(dump.len() as u64),
        mib(plain),
        mib(before)
    )];
    lines.push(format!(
        "bench-prune: retention keep-daily 7, keep-monthly 12 keeps {} of {} snapshots",
        kept.len(),
        snapshots.len()
    ));
    // The same prune, then again with ever less garbage allowed: each repacks what the one
    // before left (the first one forgets the snapshots).
    for (n, max_unused) in [
        MaxUnused::Unlimited,
        MaxUnused::Percent(5.0),
        MaxUnused::Percent(0.0),
    ]
    .into_iter()
    .enumerate()
    {
        let repo = Repo::open(mem.clone()).unwrap();
        let forget = if n == 0 {
            forget.clone()
        } else {
            Forget::default()
        };
        let began = Instant::now();
        let plan = prune::plan(&repo, &forget, max_unused).unwrap();
        prune::execute(&repo, &plan).unwrap();
        let took = began.elapsed().as_secs_f64();
        let (after, packs) = pack_bytes(mem.as_ref());
        lines.push(format!(
            "bench-prune: prune --max-unused {max_unused}: {:.1} MiB in {packs} packs ({:.1}% of before); {} packs deleted, {} repacked ({:.1} MiB read, {:.1} MiB written); {:.1} MiB unused left; {took:.1} s",
            mib(after),
            100.0 * after as f64 / before as f64,
            plan.packs.len(),
            plan.repack.packs.len(),
            mib(plan.repack.bytes),
            mib(plan.repack.written_bytes),
            mib(plan.unused_bytes_kept)
        ));
    }
    let repo = Repo::open(mem.clone()).unwrap();
    let report = verify::verify(&repo, true, |_, _| {}).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let newest = repo.snapshots().unwrap().pop().unwrap();
    let mut out = Vec::new();
    repo.copy_file(&newest.files[0], &mut out).unwrap();
    assert!(out == dump, "the newest snapshot restores to the last dump");
    #[allow(clippy::print_stderr)]
    for line in lines {
        eprintln!("{line}");
    }
}
