//! `copy`: brings one repository up to date with another. Only missing objects move; packs
//! are checked against their names on the way, so damage is not copied.
//! Order as for any write: packs, then index files, then manifests.

use std::collections::HashSet;

use serde::Serialize;

use super::error::{RepoError, Result};
use super::id::Id;
use super::{Repo, index};

#[derive(Debug, Clone, Default, Serialize)]
pub struct CopyReport {
    pub from: String,
    pub to: String,
    pub packs_copied: usize,
    pub bytes_copied: u64,
    /// Index files written in the destination (one per run that has packs to index).
    pub index_files_copied: usize,
    pub snapshots_copied: usize,
    pub binlog_segments_copied: usize,
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
    let (src, dst) = (from.storage(), to.storage());
    let mut report = CopyReport {
        from: from.name().into(),
        to: to.name().into(),
        ..Default::default()
    };

    let have = keys(to, "packs/")?;
    let mut wanted: Vec<String> = keys(from, "packs/")?.difference(&have).cloned().collect();
    wanted.sort();
    for key in &wanted {
        let data = src.get(key)?;
        let name = key.rsplit('/').next().and_then(Id::parse);
        if name != Some(from.hash().id(&data)) {
            return Err(RepoError::integrity(
                from.name(),
                key,
                "content does not match its name; run verify",
            ));
        }
        dst.put(key, &data)?;
        report.packs_copied += 1;
        report.bytes_copied += data.len() as u64;
        progress(key);
    }

    // One index file for the packs the destination has and does not index yet, written at
    // once: a copy killed meanwhile leaves all of their entries or none, never a delta blob
    // indexed without the base it needs (a source's index files split them any way).
    // Index files are named by their content, so one the destination has is indexed there.
    to.reload_index();
    let have = keys(to, "index/")?;
    let packs_there: HashSet<String> = keys(to, "packs/")?;
    let mut missing: Vec<String> = keys(from, "index/")?.difference(&have).cloned().collect();
    missing.sort();
    let mut entries = Vec::new();
    let mut added = HashSet::new();
    for key in &missing {
        let data = src.get(key)?;
        let packs =
            index::decode_file(&data).map_err(|d| RepoError::integrity(from.name(), key, d))?;
        for (pack, blobs) in packs {
            // Never index a pack the destination does not have.
            let wanted = packs_there.contains(&super::pack_key(&pack))
                && !to.with_index(|idx| idx.has_pack(&pack))?
                && added.insert(pack);
            if wanted {
                entries.push((pack, blobs));
            }
        }
    }
    if !entries.is_empty() {
        let file = index::encode_file(&entries);
        dst.put(&super::index_key(&Id::sha256(&file)), &file)?;
        report.index_files_copied += 1;
    }
    to.reload_index();

    for (prefix, count) in [
        ("snapshots/", &mut report.snapshots_copied),
        ("binlog/", &mut report.binlog_segments_copied),
    ] {
        let have = keys(to, prefix)?;
        let mut missing: Vec<String> = keys(from, prefix)?.difference(&have).cloned().collect();
        missing.sort();
        for key in missing {
            let data = src.get(&key)?;
            if dst.create(&key, &data)? {
                *count += 1;
                progress(&key);
            }
        }
    }
    Ok(report)
}
