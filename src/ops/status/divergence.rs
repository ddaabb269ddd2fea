//! Repositories that should hold the same (written in one pass by `backup` and the streamer)
//! and do not.
//!
//! Retention may differ between repositories, so what one has pruned is not counted: a
//! snapshot counts as missing from a repository only if it is not older than that
//! repository's oldest snapshot of the same source, and a binlog file only if it lies between
//! that repository's first and last archived file of the source. Files past a repository's
//! last one are lag, judged by the archive's freshness, not here.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::gather::{Readable, source_of};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DivergenceKind {
    Snapshot,
    BinlogFile,
}

#[derive(Debug, Clone, Serialize)]
pub struct Divergence {
    pub source: String,
    pub kind: DivergenceKind,
    /// The snapshot id, or the binlog file's name.
    pub object: String,
    pub present_in: Vec<String>,
    pub missing_from: Vec<String>,
}

pub(super) fn find(repos: &[&Readable]) -> Vec<Divergence> {
    let mut out = snapshots(repos);
    out.extend(binlog_files(repos));
    out
}

fn snapshots(repos: &[&Readable]) -> Vec<Divergence> {
    // Per snapshot id: its source and time, and which repositories hold it.
    let mut seen: BTreeMap<&str, (String, DateTime<Utc>, Vec<usize>)> = BTreeMap::new();
    for (n, r) in repos.iter().enumerate() {
        for s in &r.snapshots {
            seen.entry(&s.id)
                .or_insert_with(|| (source_of(s), s.time, Vec::new()))
                .2
                .push(n);
        }
    }
    let oldest = |r: &Readable, source: &str| {
        r.snapshots
            .iter()
            .filter(|s| source_of(s) == source)
            .map(|s| s.time)
            .min()
    };
    seen.into_iter()
        .filter_map(|(id, (source, time, holders))| {
            let missing: Vec<String> = repos
                .iter()
                .enumerate()
                .filter(|(n, r)| {
                    !holders.contains(n) && oldest(r, &source).is_none_or(|o| time >= o)
                })
                .map(|(_, r)| r.location.clone())
                .collect();
            divergence(
                repos,
                source,
                DivergenceKind::Snapshot,
                id,
                &holders,
                missing,
            )
        })
        .collect()
}

fn binlog_files(repos: &[&Readable]) -> Vec<Divergence> {
    // Per source and file number: its name, and which repositories hold it.
    let mut seen: BTreeMap<(&str, u64), (&str, Vec<usize>)> = BTreeMap::new();
    for (n, r) in repos.iter().enumerate() {
        for (source, files) in &r.archive {
            for (seq, seg) in files {
                seen.entry((source, *seq))
                    .or_insert_with(|| (&seg.file, Vec::new()))
                    .1
                    .push(n);
            }
        }
    }
    seen.into_iter()
        .filter_map(|((source, seq), (file, holders))| {
            let missing: Vec<String> = repos
                .iter()
                .enumerate()
                .filter(|(n, r)| {
                    let span = r
                        .archive
                        .get(source)
                        .and_then(|f| Some((*f.keys().next()?, *f.keys().next_back()?)));
                    !holders.contains(n) && span.is_some_and(|(a, b)| (a..=b).contains(&seq))
                })
                .map(|(_, r)| r.location.clone())
                .collect();
            divergence(
                repos,
                source.to_string(),
                DivergenceKind::BinlogFile,
                file,
                &holders,
                missing,
            )
        })
        .collect()
}

fn divergence(
    repos: &[&Readable],
    source: String,
    kind: DivergenceKind,
    object: &str,
    holders: &[usize],
    missing_from: Vec<String>,
) -> Option<Divergence> {
    (!missing_from.is_empty()).then(|| Divergence {
        source,
        kind,
        object: object.to_string(),
        present_in: holders.iter().map(|&n| repos[n].location.clone()).collect(),
        missing_from,
    })
}
