//! `copy`: brings one repository up to date with another. Only missing objects move; packs
//! are checked against their names on the way, so damage is not copied.
//! Order as for any write: packs, then an index file for them, then manifests.
//!
//! The destination's index is written by copy itself, not copied file by file: it names the
//! blobs of the packs the destination has that its index lacks, except a delta whose base the
//! destination would not hold whole (a source damaged by an older prune can name one), so
//! the destination's index only ever names blobs it can give back. A manifest is copied only
//! when every blob it needs is then indexed there; one that is not is reported, not copied.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use super::codec::Codec;
use super::error::{RepoError, Result};
use super::id::Id;
use super::index::Indexed;
use super::manifest::{self, BinlogSegment, ChunkRefs, SnapshotManifest};
use super::pack::{self, PackEntry};
use super::{Repo, delta, index, index_key};

#[derive(Debug, Clone, Default, Serialize)]
pub struct CopyReport {
    pub from: String,
    pub to: String,
    pub packs_copied: usize,
    pub bytes_copied: u64,
    /// Index files written in the destination (one per run that adds entries).
    pub index_files_copied: usize,
    pub index_entries_copied: usize,
    /// Delta blobs left out of the destination's index: their base is not there.
    pub deltas_without_base: usize,
    pub snapshots_copied: usize,
    pub binlog_segments_copied: usize,
    /// Manifests not copied, and why: a blob they need cannot be read in the destination
    /// (the source is damaged: run `verify` on it), or they do not decode.
    pub manifests_skipped: Vec<String>,
}

fn keys(repo: &Repo, prefix: &str) -> Result<HashSet<String>> {
    Ok(repo
        .storage()
        .list(prefix)?
        .into_iter()
        .map(|o| o.key)
        .collect())
}

pub fn copy(from: &Repo, to: &Repo, mut progress: impl FnMut(&str)) -> Result<CopyReport> {
    if from.hash() != to.hash() {
        // Packs keep their names and manifests their chunk ids: both must mean the same.
        return Err(RepoError::Invalid(format!(
            "{} names content with {} and {} with {}; copy needs repositories of the same hash",
            from.name(),
            from.hash(),
            to.name(),
            to.hash()
        )));
    }
    let mut report = CopyReport {
        from: from.name().into(),
        to: to.name().into(),
        ..Default::default()
    };
    // The source's manifests as they are before any pack is copied: their packs and index
    // entries were written before them, so the packs copied next hold every chunk they need.
    // Manifests written beside this copy (by a streamer or a backup) go with the next copy.
    let mut listed = Vec::new();
    for (prefix, kind) in [("snapshots/", "snapshot"), ("binlog/", "binlog")] {
        listed.push((prefix, kind, keys(from, prefix)?));
    }
    let bases = copy_packs(from, to, &mut report, &mut progress)?;
    index_copied_packs(from, to, &bases, &mut report)?;

    for (prefix, kind, in_source) in listed {
        let have = keys(to, prefix)?;
        let mut missing: Vec<String> = in_source.difference(&have).cloned().collect();
        missing.sort();
        for key in missing {
            let data = match from.storage().get(&key) {
                Ok(data) => data,
                // Replaced since the listing (a binlog segment by a longer one) or pruned: what
                // replaced it is newer than this copy and goes with the next one.
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            if let Err(why) = readable_in(to, from, kind, &data) {
                report.manifests_skipped.push(format!("{key}: {why}"));
                continue;
            }
            if to.storage().create(&key, &data)? {
                match kind {
                    "snapshot" => report.snapshots_copied += 1,
                    _ => report.binlog_segments_copied += 1,
                }
                progress(&key);
            }
        }
    }
    Ok(report)
}

/// Copies the packs the destination lacks, each checked against its name. Returns the base of
/// every delta blob in them, read from the bytes that passed.
fn copy_packs(
    from: &Repo,
    to: &Repo,
    report: &mut CopyReport,
    progress: &mut impl FnMut(&str),
) -> Result<HashMap<Id, Id>> {
    let have = keys(to, "packs/")?;
    let mut wanted: Vec<String> = keys(from, "packs/")?.difference(&have).cloned().collect();
    wanted.sort();
    let mut bases = HashMap::new();
    for key in &wanted {
        let data = from.storage().get(key)?;
        let name = key.rsplit('/').next().and_then(Id::parse);
        if name != Some(from.hash().id(&data)) {
            return Err(RepoError::integrity(
                from.name(),
                key,
                "content does not match its name; run verify",
            ));
        }
        // A pack that matches its name has the header its writer gave it.
        for e in pack::parse_header(&data).unwrap_or_default() {
            let start = e.offset as usize;
            if let (Codec::Delta, Some(base)) =
                (e.codec, data.get(start..).and_then(delta::base_of))
            {
                bases.insert(e.id, base);
            }
        }
        to.storage().put(key, &data)?;
        report.packs_copied += 1;
        report.bytes_copied += data.len() as u64;
        progress(key);
    }
    Ok(bases)
}

/// Writes one index file naming the source's entries for packs the destination has and
/// indexes not: whole blobs, and deltas whose base the destination then holds whole.
fn index_copied_packs(
    from: &Repo,
    to: &Repo,
    bases: &HashMap<Id, Id>,
    report: &mut CopyReport,
) -> Result<()> {
    to.reload_index();
    let packs_there: HashSet<Id> = keys(to, "packs/")?
        .iter()
        .filter_map(|k| k.rsplit('/').next().and_then(Id::parse))
        .collect();
    let source = from.with_index(|idx| idx.entries_by_pack())?;
    let mut wanted: BTreeMap<Id, Vec<PackEntry>> = BTreeMap::new();
    let mut deltas = Vec::new();
    for (pack, entries) in source {
        if !packs_there.contains(&pack) {
            continue;
        }
        for e in entries {
            // Wanted where the destination lacks the blob, and where it holds it only as a
            // delta and this copy is whole: the same chunk can be whole in one repository
            // and a delta in another, and a delta copied here may need it whole as its base.
            let wanted_here = match to.blob(&e.id)? {
                None => true,
                Some(there) => there.codec == Codec::Delta && e.codec != Codec::Delta,
            };
            if !wanted_here {
                continue;
            }
            if e.codec == Codec::Delta {
                deltas.push((pack, e));
            } else {
                wanted.entry(pack).or_default().push(e);
            }
        }
    }
    let whole_added: HashSet<Id> = wanted.values().flatten().map(|e| e.id).collect();
    for (pack, e) in deltas {
        let base = match bases.get(&e.id) {
            Some(b) => Some(*b),
            None => from.delta_base(&e.id)?,
        };
        let held_whole = |b: &Id| -> Result<bool> {
            Ok(whole_added.contains(b) || to.blob(b)?.is_some_and(|l| l.codec != Codec::Delta))
        };
        match base {
            Some(b) if held_whole(&b)? => wanted.entry(pack).or_default().push(e),
            _ => report.deltas_without_base += 1,
        }
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let packs: Vec<(Id, Vec<PackEntry>)> = wanted
        .into_iter()
        .map(|(p, mut e)| {
            e.sort_by_key(|e| e.offset);
            (p, e)
        })
        .collect();
    let file = index::encode_file(&packs);
    to.storage().put(&index_key(&Id::sha256(&file)), &file)?;
    report.index_files_copied += 1;
    report.index_entries_copied += packs.iter().map(|(_, e)| e.len()).sum::<usize>();
    to.reload_index();
    Ok(())
}

/// Whether every blob a manifest (`kind`: snapshot or binlog) needs can be read in `to`;
/// chunk lists are read from `from`, where they came from.
fn readable_in(to: &Repo, from: &Repo, kind: &str, data: &[u8]) -> Result<(), String> {
    let refs: Vec<ChunkRefs> = match kind {
        "snapshot" => manifest::decode::<SnapshotManifest>(kind, data)?
            .files
            .into_iter()
            .map(|f| f.refs)
            .collect(),
        _ => vec![manifest::decode::<BinlogSegment>(kind, data)?.refs],
    };
    for r in &refs {
        let mut ids = from.chunk_ids(r).map_err(|e| e.to_string())?;
        ids.extend(r.chunk_list);
        for id in ids {
            match to.indexed(&id).map_err(|e| e.to_string())? {
                Indexed::Readable => {}
                _ => return Err(format!("chunk {id} cannot be read in {}", to.name())),
            }
        }
    }
    Ok(())
}
