//! Garbage collection: after some manifests are forgotten, the packs no remaining manifest
//! needs are deleted. Planned first (nothing written), then executed in the reverse of the
//! write order: manifests, then index entries, then packs. Runs under the exclusive lock, so
//! no writer can be relying on a blob it deletes.
//!
//! A pack is deleted when none of its blobs is needed. Partly used packs are repacked (their
//! needed blobs copied into new packs, see [`super::repack`]) while their unused bytes
//! exceed `--max-unused`; the others stay whole, their unused bytes reported. Their unneeded
//! delta blobs leave the index, though: a delta's base may be in a pack that goes, and the
//! index must never name a blob it cannot give back (a writer would reuse it). That also
//! heals an index an older myvault's prune left naming deltas whose bases it had deleted.
//!
//! The temporary files of writers that died (a backup killed while it wrote a pack) are
//! removed too, once untouched for [`LEFTOVER_AGE`]: under the exclusive lock no writer is
//! alive, and the age spares a writer whose lock was broken while it was merely stalled.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::codec::Codec;
use super::error::{RepoError, Result};
use super::id::Id;
use super::manifest::ChunkRefs;
use super::pack::PackEntry;
use super::repack::{self, Candidate, MaxUnused, RepackPlan};
use super::{Repo, index, index_key, pack_key};

/// How long a temporary file must have been untouched before prune removes it: twice the time
/// after which a lock whose holder stopped refreshing it is broken.
pub const LEFTOVER_AGE: std::time::Duration =
    std::time::Duration::from_secs(2 * super::lock::STALE_AFTER.as_secs());

/// What to forget: manifest keys (`snapshots/..`, `binlog/..`).
#[derive(Debug, Clone, Default)]
pub struct Forget {
    pub manifests: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct GcPlan {
    pub manifests: Vec<String>,
    /// Packs none of whose blobs is needed.
    pub packs: Vec<String>,
    pub pack_bytes: u64,
    /// Packs no index names (left by interrupted writes).
    pub orphan_packs: Vec<String>,
    pub orphan_bytes: u64,
    /// Packs that stay as they are although they also hold bytes nothing needs (blobs, or
    /// copies of blobs indexed in another pack), and those bytes.
    pub partly_used_packs: usize,
    pub unused_bytes_kept: u64,
    /// Partly used packs rewritten: their needed blobs go to new packs, the old ones go.
    pub repack: RepackPlan,
    /// Delta blobs nothing needs, left out of the new index (their bytes stay in kept packs):
    /// their bases may be going, and an index entry that cannot be read must never be reused.
    pub dropped_deltas: usize,
    /// Temporary files left by writers that died (see [`LEFTOVER_AGE`]).
    pub leftovers: Vec<String>,
    pub leftover_bytes: u64,
    #[serde(skip)]
    kept_index: Vec<(Id, Vec<PackEntry>)>,
    /// Whether the `pruned` mark already says the index is sound.
    #[serde(skip)]
    sound_mark: bool,
}

impl GcPlan {
    pub fn is_empty(&self) -> bool {
        self.manifests.is_empty()
            && self.packs.is_empty()
            && self.orphan_packs.is_empty()
            && self.leftovers.is_empty()
            && self.dropped_deltas == 0
            && self.repack.is_empty()
    }

    /// Pack bytes the prune gives back: the packs it deletes, less what its repack writes.
    pub fn freed_bytes(&self) -> u64 {
        self.pack_bytes + self.orphan_bytes + self.repack.freed_bytes
    }

    /// Whether the index must be rewritten: a pack goes, or an entry does.
    fn rewrites_index(&self) -> bool {
        !self.packs.is_empty()
            || !self.orphan_packs.is_empty()
            || self.dropped_deltas > 0
            || !self.repack.is_empty()
    }
}

/// What deleting `forget` would free, repacking partly used packs while their unused bytes
/// exceed `max_unused`. Refuses when a remaining manifest needs a blob the index does not
/// have: collecting garbage in a damaged repository could make it worse.
pub fn plan(repo: &Repo, forget: &Forget, max_unused: MaxUnused) -> Result<GcPlan> {
    let storage = repo.storage();
    let forgotten: HashSet<&str> = forget.manifests.iter().map(String::as_str).collect();
    let mut needed: HashSet<Id> = HashSet::new();
    let mut need_refs = |refs: &ChunkRefs| -> Result<()> {
        needed.extend(refs.chunk_list);
        needed.extend(repo.chunk_ids(refs)?);
        Ok(())
    };
    for m in repo.snapshots()? {
        if !forgotten.contains(super::snapshot_key(&m.id).as_str()) {
            for f in &m.files {
                need_refs(&f.refs)?;
            }
        }
    }
    for s in repo.binlog_segments()? {
        if !forgotten.contains(super::binlog_key(&s.source_uuid, &s.file, s.size).as_str()) {
            need_refs(&s.refs)?;
        }
    }
    // A delta blob needs its base.
    let mut bases = Vec::new();
    for id in &needed {
        let loc = repo.blob(id)?.ok_or_else(|| {
            RepoError::integrity(
                repo.name(),
                format!("chunk {}", id.short()),
                "needed by a manifest but in no index; run `myvault verify` before pruning",
            )
        })?;
        if loc.codec == Codec::Delta
            && let Some(base) = repo.delta_base(id)?
        {
            bases.push(base);
        }
    }
    for base in bases {
        let whole = repo.blob(&base)?.is_some_and(|l| l.codec != Codec::Delta);
        if !whole {
            return Err(RepoError::integrity(
                repo.name(),
                format!("chunk {}", base.short()),
                "a delta base missing from every index; run `myvault verify` before pruning",
            ));
        }
        needed.insert(base);
    }

    let mut plan = GcPlan {
        manifests: forget.manifests.clone(),
        sound_mark: repo.index_is_sound()?,
        ..Default::default()
    };
    let by_pack = repo.with_index(|idx| idx.entries_by_pack())?;
    let indexed: HashSet<String> = by_pack.iter().map(|(p, _)| pack_key(p)).collect();
    // One listing gives every pack's size: no request per pack.
    let stored: HashMap<String, u64> = storage
        .list("packs/")?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    let mut candidates = Vec::new();
    let mut entries_kept: HashMap<Id, Vec<PackEntry>> = HashMap::new();
    for (pack, entries) in by_pack {
        if entries.iter().any(|e| needed.contains(&e.id)) {
            // Every delta kept in the index is needed, so its base is needed and kept too:
            // the new index names no blob it cannot give back.
            let (kept, dropped): (Vec<PackEntry>, Vec<PackEntry>) = entries
                .into_iter()
                .partition(|e| e.codec != Codec::Delta || needed.contains(&e.id));
            plan.dropped_deltas += dropped.len();
            // A pack the index names but the store lacks is never repacked (it cannot be
            // read): its size counts as 0, so it has no unused bytes.
            let size = stored.get(&pack_key(&pack)).copied().unwrap_or(0);
            let live = kept.iter().filter(|e| needed.contains(&e.id)).copied();
            candidates.push(Candidate::new(pack, size, live));
            entries_kept.insert(pack, kept);
        } else {
            let key = pack_key(&pack);
            plan.pack_bytes += stored.get(&key).copied().unwrap_or(0);
            plan.packs.push(key);
        }
    }
    let (repack, stay) = repack::choose(candidates, max_unused, repo.config().pack_size as usize);
    for c in stay {
        if c.unused() > 0 {
            plan.partly_used_packs += 1;
            plan.unused_bytes_kept += c.unused();
        }
        // The pack stays with all its whole blobs indexed, needed or not (a later backup may
        // deduplicate against them).
        let entries = entries_kept.remove(&c.pack).unwrap_or_default();
        plan.kept_index.push((c.pack, entries));
    }
    plan.repack = repack;
    for (key, size) in stored {
        if !indexed.contains(&key) {
            plan.orphan_bytes += size;
            plan.orphan_packs.push(key);
        }
    }
    plan.orphan_packs.sort();
    for leftover in storage.leftovers(LEFTOVER_AGE)? {
        plan.leftover_bytes += leftover.size;
        plan.leftovers.push(leftover.key);
    }
    Ok(plan)
}

/// Carries out a plan made under the same exclusive lock.
pub fn execute(repo: &Repo, plan: &GcPlan) -> Result<()> {
    let storage = repo.storage();
    // Only temporary files: nothing a writer relies on changes.
    storage.remove_leftovers(&plan.leftovers)?;
    // New packs first, nothing deleted yet: a run that dies here leaves packs no index names.
    let new_packs = repack::write(repo, &plan.repack)?;
    let deletes = !plan.manifests.is_empty() || plan.rewrites_index();
    if !deletes && plan.sound_mark {
        return Ok(());
    }
    if deletes {
        // First of all, so that even a prune that dies halfway makes writers reload the index.
        // Not yet "sound": a prune that dies before its index is rewritten may leave entries
        // (of an older myvault's prune) that it was to drop.
        storage.put(super::PRUNED_KEY, super::pruned_mark(false).as_bytes())?;
    }
    for key in &plan.manifests {
        storage.delete(key)?;
    }
    if plan.rewrites_index() {
        // One index file for what stays (and the new packs), written before the old ones go:
        // at every moment each kept or new pack is indexed, and every old pack is until the
        // old index files are gone.
        let file = index::encode_parts(&[&plan.kept_index, &new_packs]);
        let merged = index_key(&Id::sha256(&file));
        storage.put(&merged, &file)?;
        for obj in storage.list("index/")? {
            if obj.key != merged {
                storage.delete(&obj.key)?;
            }
        }
        // No index names these packs any more, unless the repack just wrote one of them
        // again: packs are named by their content, and the new pack of a prune killed before
        // its index was written is an orphan that the next prune's repack writes byte for
        // byte again (so do a killed prune's duplicates, which the next one finds unused).
        let written: HashSet<String> = new_packs.iter().map(|(id, _)| pack_key(id)).collect();
        for key in plan
            .packs
            .iter()
            .chain(&plan.orphan_packs)
            .chain(&plan.repack.packs)
            .filter(|k| !written.contains(*k))
        {
            storage.delete(key)?;
        }
    }
    // Every index entry is now readable: the plan kept no delta without its base.
    storage.put(super::PRUNED_KEY, super::pruned_mark(true).as_bytes())?;
    repo.reload_index();
    Ok(())
}
