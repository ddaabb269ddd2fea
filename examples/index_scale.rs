//! How the repository index grows: writes a local repository whose index names N blobs
//! (synthetic ids, 32 per pack as 1 MiB chunks in 32 MiB packs, 1,000 packs per index file,
//! as writers leave them), then, in a fresh process, opens it and loads the index the way
//! every restore, backup and verify does. `scripts/bench --scale` runs it under
//! `/usr/bin/time` for the peak RSS; it prints its own figures as one JSON line.
//!
//!   index_scale write DIR ENTRIES
//!   index_scale open DIR

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use myvault::repo::codec::Codec;
use myvault::repo::config::RepoConfig;
use myvault::repo::id::Id;
use myvault::repo::pack::PackEntry;
use myvault::repo::{Repo, index, index_key};
use myvault::storage::Storage;
use myvault::storage::local::LocalStorage;

const ENTRIES_PER_PACK: u64 = 32;
const PACKS_PER_FILE: u64 = 1000;
const CHUNK: u32 = 1 << 20;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("write") if args.len() == 4 => match args[3].parse::<u64>() {
            Ok(n) => write(&args[2], n),
            Err(e) => Err(format!("ENTRIES {:?}: {e}", args[3])),
        },
        Some("open") if args.len() == 3 => open(&args[2]),
        _ => Err("usage: index_scale write DIR ENTRIES | index_scale open DIR".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("index_scale: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write(dir: &str, entries: u64) -> Result<(), String> {
    let store: Arc<dyn Storage> =
        Arc::new(LocalStorage::create(dir).map_err(|e| format!("{dir}: {e}"))?);
    Repo::init(store.clone(), RepoConfig::new()).map_err(|e| format!("init {dir}: {e}"))?;
    let started = Instant::now();
    let (mut next, mut files, mut bytes) = (0u64, 0u64, 0u64);
    while next < entries {
        let mut packs = Vec::new();
        while next < entries && (packs.len() as u64) < PACKS_PER_FILE {
            let pack = Id::sha256(format!("pack {next}").as_bytes());
            let n = ENTRIES_PER_PACK.min(entries - next);
            let blobs = (0..n)
                .map(|i| PackEntry {
                    id: Id::sha256(&(next + i).to_le_bytes()),
                    codec: Codec::Zstd,
                    offset: i as u32 * CHUNK / 3,
                    raw_len: CHUNK,
                    stored_len: CHUNK / 3,
                })
                .collect();
            packs.push((pack, blobs));
            next += n;
        }
        let data = index::encode_file(&packs);
        bytes += data.len() as u64;
        store
            .put(&index_key(&Id::sha256(&data)), &data)
            .map_err(|e| format!("index file {files}: {e}"))?;
        files += 1;
    }
    println!(
        "{{\"entries\": {entries}, \"index_files\": {files}, \"index_bytes\": {bytes}, \"write_seconds\": {:.3}}}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn open(dir: &str) -> Result<(), String> {
    let before = peak_rss_kib()?;
    let started = Instant::now();
    let store: Arc<dyn Storage> =
        Arc::new(LocalStorage::open(dir).map_err(|e| format!("{dir}: {e}"))?);
    let repo = Repo::open(store).map_err(|e| format!("open {dir}: {e}"))?;
    let entries = repo
        .with_index(|idx| idx.len())
        .map_err(|e| format!("load the index of {dir}: {e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    let after = peak_rss_kib()?;
    let grew = (after.saturating_sub(before)) * 1024;
    println!(
        "{{\"entries\": {entries}, \"open_seconds\": {seconds:.3}, \"peak_rss_bytes\": {}, \"index_peak_bytes\": {grew}, \"bytes_per_entry\": {:.1}}}",
        after * 1024,
        grew as f64 / entries.max(1) as f64
    );
    Ok(())
}

/// The process's peak resident set (VmHWM), in KiB.
fn peak_rss_kib() -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("/proc/self/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmHWM in /proc/self/status".into())
}
