//! `verify`: reads every pack, checks every blob against its id and every manifest against
//! the index, and names the snapshots and files that damage would affect.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use super::codec::Codec;
use super::error::Result;
use super::id::Id;
use super::index::{BlobLocation, Index};
use super::manifest::{self, BinlogSegment, ChunkRefs, SnapshotManifest};
use super::{Repo, codec, index, pack};

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// The damaged or missing object (`packs/..`, `index/..`, `snapshots/..`).
    pub object: String,
    pub detail: String,
    /// Snapshots and files (or binlog segments) that cannot be restored because of it.
    pub affects: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub repo: String,
    pub packs: usize,
    pub blobs: usize,
    pub bytes_read: u64,
    pub snapshots: usize,
    pub binlog_segments: usize,
    /// Packs no index names: left by an interrupted write; harmless, removed by prune.
    pub unindexed_packs: usize,
    pub problems: Vec<Problem>,
}

pub fn verify(
    repo: &Repo,
    read_data: bool,
    mut progress: impl FnMut(usize, usize),
) -> Result<VerifyReport> {
    let storage = repo.storage();
    let mut report = VerifyReport {
        repo: repo.name().to_string(),
        ..Default::default()
    };
    // Which objects are broken, and why; filled by every step below.
    let mut bad_blobs: HashMap<Id, String> = HashMap::new();
    let mut problems: BTreeMap<String, String> = BTreeMap::new();

    // Index files one by one, so a damaged one is named.
    let mut idx = Index::new();
    for obj in storage.list("index/")? {
        match storage
            .get(&obj.key)
            .map_err(|e| e.to_string())
            .and_then(|d| index::decode_file(&d))
        {
            Ok(packs) => packs.iter().for_each(|(p, e)| idx.add_pack(*p, e)),
            Err(detail) => {
                problems.insert(obj.key.clone(), detail);
            }
        }
    }
    let stored: HashSet<Id> = storage
        .list("packs/")?
        .iter()
        .filter_map(|o| o.key.rsplit('/').next().and_then(Id::parse))
        .collect();
    let by_pack = idx.entries_by_pack();
    report.blobs = idx.len();
    report.packs = stored.len();
    report.unindexed_packs = stored.iter().filter(|p| !idx.has_pack(p)).count();

    let total = by_pack.len();
    for (n, (pack_id, entries)) in by_pack.iter().enumerate() {
        progress(n, total);
        let key = super::pack_key(pack_id);
        if !stored.contains(pack_id) {
            problems.insert(key, "missing (named by the index)".into());
            for e in entries {
                bad_blobs.insert(e.id, format!("pack {} is missing", pack_id.short()));
            }
            continue;
        }
        if !read_data {
            continue;
        }
        let bytes = storage.get(&key)?;
        report.bytes_read += bytes.len() as u64;
        let mut pack_problem = None;
        if repo.hash().id(&bytes) != *pack_id {
            pack_problem = Some("content does not match its name (damaged)".to_string());
        }
        match pack::parse_header(&bytes) {
            Err(d) => pack_problem = Some(format!("header: {d}")),
            Ok(header) => {
                let in_header: HashMap<Id, pack::PackEntry> =
                    header.iter().map(|e| (e.id, *e)).collect();
                for e in entries {
                    if in_header.get(&e.id) != Some(e) {
                        pack_problem.get_or_insert_with(|| "index and pack header disagree".into());
                    }
                }
            }
        }
        for e in entries {
            let start = e.offset as usize;
            let Some(blob) = bytes.get(start..start + e.stored_len as usize) else {
                bad_blobs.insert(e.id, format!("outside pack {}", pack_id.short()));
                pack_problem.get_or_insert_with(|| "a blob lies outside the pack".into());
                continue;
            };
            if e.codec == Codec::Delta {
                // Decoded through the repository, which also reads (and checks) the base.
                let loc = BlobLocation {
                    pack: *pack_id,
                    codec: e.codec,
                    offset: e.offset,
                    raw_len: e.raw_len,
                    stored_len: e.stored_len,
                };
                if let Err(err) = repo.decode_blob(&e.id, &loc, blob) {
                    bad_blobs.insert(e.id, format!("delta blob unreadable: {err}"));
                    pack_problem
                        .get_or_insert_with(|| format!("a delta blob is unreadable: {err}"));
                }
                continue;
            }
            let ok = codec::decode(e.codec, blob, e.raw_len as usize)
                .is_ok_and(|plain| repo.hash().id(&plain) == e.id);
            if !ok {
                bad_blobs.insert(e.id, format!("damaged in pack {}", pack_id.short()));
                pack_problem.get_or_insert_with(|| "a blob does not match its id".into());
            }
        }
        if let Some(p) = pack_problem {
            problems.insert(key, p);
        }
    }
    progress(total, total);

    // Every manifest, and the blobs it needs.
    let mut affects: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let check_refs =
        |owner: String, refs: &ChunkRefs, affects: &mut BTreeMap<String, Vec<String>>| {
            let mut needed: Vec<Id> = refs.chunks.clone();
            needed.extend(refs.chunk_list);
            if let Some(list) = refs.chunk_list
                && !bad_blobs.contains_key(&list)
                && idx.contains(&list)
                && let Ok(ids) = repo.chunk_ids(refs)
            {
                needed.extend(ids);
            }
            for id in needed {
                let why = if let Some(why) = bad_blobs.get(&id) {
                    Some(why.clone())
                } else if !idx.contains(&id) {
                    Some("not in any index".to_string())
                } else {
                    None
                };
                if let Some(why) = why {
                    affects
                        .entry(format!("chunk {} ({why})", id.short()))
                        .or_default()
                        .push(owner.clone());
                }
            }
        };
    for obj in storage.list("snapshots/")? {
        let data = storage.get(&obj.key)?;
        match manifest::decode::<SnapshotManifest>("snapshot", &data) {
            Err(d) => {
                problems.insert(obj.key.clone(), d);
            }
            Ok(m) => {
                report.snapshots += 1;
                for f in &m.files {
                    check_refs(
                        format!("snapshot {} file {}", m.id, f.path),
                        &f.refs,
                        &mut affects,
                    );
                }
            }
        }
    }
    for obj in storage.list("binlog/")? {
        let data = storage.get(&obj.key)?;
        match manifest::decode::<BinlogSegment>("binlog", &data) {
            Err(d) => {
                problems.insert(obj.key.clone(), d);
            }
            Ok(s) => {
                report.binlog_segments += 1;
                check_refs(
                    format!("binlog {} of {} ({} bytes)", s.file, s.source_uuid, s.size),
                    &s.refs,
                    &mut affects,
                );
            }
        }
    }

    for (object, detail) in problems {
        report.problems.push(Problem {
            object,
            detail,
            affects: Vec::new(),
        });
    }
    for (object, mut owners) in affects {
        owners.sort();
        owners.dedup();
        report.problems.push(Problem {
            detail: "needed but unreadable".into(),
            object,
            affects: owners,
        });
    }
    Ok(report)
}
