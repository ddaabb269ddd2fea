//! Repacking: the blobs still needed in packs that are mostly garbage are copied into new
//! packs, so that prune can delete the old ones and give their unused bytes back. Without it
//! a pack stays whole while any one of its blobs is needed, and a year of daily snapshots that
//! each change 1% of a database keeps nearly every pack it ever wrote.
//!
//! Which packs, as restic's `prune --max-unused` decides: the unused bytes of the packs that
//! stay may be at most a limit, `--max-unused` (a percentage of the repository's pack bytes
//! after the prune, an absolute size, or `unlimited` for no repacking; default 5%). A
//! percentage p allows p / (100 - p) of the needed blobs' stored bytes. Packs are taken in
//! order of their unused fraction, most garbage first (the most bytes freed per byte
//! rewritten), until the rest is within the limit. A pack's unused bytes are its size less
//! its needed blobs and their header entries, so blobs indexed in another pack count too.
//!
//! Blobs move byte for byte (a delta stays a delta on the same base, which prune keeps whole),
//! read from a pack checked against its name. The new packs are written before anything is
//! deleted; see `prune::execute` for the order.

use std::fmt;

use serde::Serialize;

use super::error::{RepoError, Result};
use super::id::Id;
use super::pack::{self, PackBuilder, PackEntry};
use super::{Repo, pack_key};

/// How many bytes nothing needs may stay in packs after a prune.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxUnused {
    /// A percentage of the repository's pack bytes after the prune (0 up to, not including,
    /// 100).
    Percent(f64),
    Bytes(u64),
    /// Never repack.
    Unlimited,
}

impl Default for MaxUnused {
    /// restic's default.
    fn default() -> Self {
        MaxUnused::Percent(5.0)
    }
}

impl fmt::Display for MaxUnused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxUnused::Percent(p) => write!(f, "{p}%"),
            MaxUnused::Bytes(b) => write!(f, "{b} bytes"),
            MaxUnused::Unlimited => f.write_str("unlimited"),
        }
    }
}

impl Serialize for MaxUnused {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl MaxUnused {
    /// The unused bytes allowed beside `live` bytes of needed blobs: a percentage p of the
    /// whole is p / (100 - p) of the needed part.
    pub fn allowed(&self, live: u64) -> u64 {
        match *self {
            MaxUnused::Percent(p) => (live as f64 * p / (100.0 - p)) as u64,
            MaxUnused::Bytes(b) => b,
            MaxUnused::Unlimited => u64::MAX,
        }
    }
}

/// Header bytes a pack of `blobs` blobs carries beyond their stored bytes: the magic at each
/// end, an entry per blob, the count and the header's hash.
pub fn overhead(blobs: usize) -> u64 {
    (pack::MAGIC.len() + pack::TRAILER_LEN + blobs * pack::ENTRY_LEN) as u64
}

/// A pack some blob of which is needed: what it holds that is needed, and what it wastes.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub pack: Id,
    /// Its size in the store.
    pub size: u64,
    /// The stored bytes and the number of its needed blobs (those whose index entry names
    /// this pack: each needed blob counts in one pack only, so the sum over all packs is the
    /// same before and after a repack, and a prune run again right after one finds nothing
    /// more to repack).
    pub live: u64,
    pub blobs: usize,
    /// The needed blobs, by offset; left empty for a pack without unused bytes (it is never
    /// rewritten), so a plan holds a second copy only of the entries it may move.
    pub needed: Vec<PackEntry>,
}

impl Candidate {
    /// A candidate of `pack` (`size` bytes) whose needed blobs are `needed`.
    pub fn new(pack: Id, size: u64, needed: impl Iterator<Item = PackEntry> + Clone) -> Self {
        let live = needed.clone().map(|e| u64::from(e.stored_len)).sum();
        let blobs = needed.clone().count();
        let mut c = Candidate {
            pack,
            size,
            live,
            blobs,
            needed: Vec::new(),
        };
        if c.unused() > 0 {
            c.needed = needed.collect();
        }
        c
    }

    /// Its size less what its needed blobs would take in a pack of their own.
    pub fn unused(&self) -> u64 {
        self.size.saturating_sub(self.live + overhead(self.blobs))
    }
}

/// The repack a prune will do.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepackPlan {
    /// `--max-unused` as given.
    pub max_unused: Option<MaxUnused>,
    /// The packs to rewrite, and their bytes.
    pub packs: Vec<String>,
    pub bytes: u64,
    /// Blobs copied into new packs, and the new packs' bytes.
    pub blobs: usize,
    pub written_bytes: u64,
    pub new_packs: usize,
    /// `bytes - written_bytes`: what the repack gives back.
    pub freed_bytes: u64,
    /// Unused bytes left in the packs that stay, and the limit they are within.
    pub unused_bytes_after: u64,
    pub unused_limit: u64,
    #[serde(skip)]
    pub(super) rewrite: Vec<Candidate>,
    #[serde(skip)]
    pub(super) pack_size: usize,
}

impl RepackPlan {
    pub fn is_empty(&self) -> bool {
        self.rewrite.is_empty()
    }
}

/// Chooses which of `candidates` (every pack that stays) to rewrite so that their unused bytes
/// fall within `max_unused`; returns the plan and the packs that stay as they are.
pub fn choose(
    candidates: Vec<Candidate>,
    max_unused: MaxUnused,
    pack_size: usize,
) -> (RepackPlan, Vec<Candidate>) {
    let live: u64 = candidates.iter().map(|c| c.live).sum();
    let limit = max_unused.allowed(live);
    let mut unused: u64 = candidates.iter().map(Candidate::unused).sum();
    let mut order: Vec<Candidate> = candidates;
    // Most garbage first: unused/size descending (cross-multiplied, no floats); ties by id
    // so that a plan and the run that follows it choose alike.
    order.sort_by(|a, b| {
        let lhs = u128::from(b.unused()) * u128::from(a.size.max(1));
        let rhs = u128::from(a.unused()) * u128::from(b.size.max(1));
        lhs.cmp(&rhs).then(a.pack.cmp(&b.pack))
    });
    let mut plan = RepackPlan {
        max_unused: Some(max_unused),
        unused_limit: limit,
        pack_size,
        ..Default::default()
    };
    let mut stay = Vec::new();
    for c in order {
        if unused > limit && c.unused() > 0 {
            unused -= c.unused();
            plan.rewrite.push(c);
        } else {
            stay.push(c);
        }
    }
    plan.unused_bytes_after = unused;
    plan.packs = plan.rewrite.iter().map(|c| pack_key(&c.pack)).collect();
    plan.bytes = plan.rewrite.iter().map(|c| c.size).sum();
    plan.blobs = plan.rewrite.iter().map(|c| c.needed.len()).sum();
    for group in groups(&plan.rewrite, pack_size) {
        plan.new_packs += 1;
        plan.written_bytes +=
            group.iter().map(|e| u64::from(e.stored_len)).sum::<u64>() + overhead(group.len());
    }
    plan.freed_bytes = plan.bytes.saturating_sub(plan.written_bytes);
    (plan, stay)
}

/// The blobs of `rewrite` as the new packs will hold them: in order, a pack closed once it
/// reaches `pack_size` bytes (as writers close theirs).
fn groups(rewrite: &[Candidate], pack_size: usize) -> Vec<Vec<PackEntry>> {
    let mut out = Vec::new();
    let mut current: Vec<PackEntry> = Vec::new();
    let mut len = pack::MAGIC.len();
    for e in rewrite.iter().flat_map(|c| &c.needed) {
        current.push(*e);
        len += e.stored_len as usize;
        if len >= pack_size {
            out.push(std::mem::take(&mut current));
            len = pack::MAGIC.len();
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Writes the new packs of `plan`: every old pack is read whole, checked against its name and
/// its header, and its needed blobs are copied as they are stored. Returns the new packs and
/// their entries, for the index that replaces the old packs'. Deletes nothing: a run that dies
/// here leaves new packs no index names, which the next prune removes.
pub fn write(repo: &Repo, plan: &RepackPlan) -> Result<Vec<(Id, Vec<PackEntry>)>> {
    let mut written = Vec::new();
    let mut builder = PackBuilder::new(plan.pack_size);
    for c in &plan.rewrite {
        let key = pack_key(&c.pack);
        let data = repo.storage().get(&key)?;
        crate::failpoint::hit("prune-repack-after-read");
        if repo.hash().id(&data) != c.pack {
            return Err(RepoError::integrity(
                repo.name(),
                &key,
                "content does not match its name; run `myvault verify` before pruning",
            ));
        }
        let header =
            pack::parse_header(&data).map_err(|d| RepoError::integrity(repo.name(), &key, d))?;
        for e in &c.needed {
            if !header.contains(e) {
                return Err(RepoError::integrity(
                    repo.name(),
                    &key,
                    format!(
                        "its header lacks chunk {} that the index names",
                        e.id.short()
                    ),
                ));
            }
            let start = e.offset as usize;
            let stored = &data[start..start + e.stored_len as usize];
            builder.add(e.id, e.codec, e.raw_len, stored);
            if builder.len() >= plan.pack_size {
                let full = std::mem::replace(&mut builder, PackBuilder::new(plan.pack_size));
                written.push(store(repo, full)?);
            }
        }
    }
    if !builder.is_empty() {
        written.push(store(repo, builder)?);
    }
    Ok(written)
}

fn store(repo: &Repo, builder: PackBuilder) -> Result<(Id, Vec<PackEntry>)> {
    let (bytes, entries) = builder.finish();
    let id = repo.hash().id(&bytes);
    repo.storage().put(&pack_key(&id), &bytes)?;
    Ok((id, entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::codec::Codec;

    fn candidate(name: &str, size: u64, needed: &[u32]) -> Candidate {
        let mut offset = 8;
        let needed: Vec<PackEntry> = needed
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                let e = PackEntry {
                    id: Id::sha256(format!("{name}{i}").as_bytes()),
                    codec: Codec::Zstd,
                    offset,
                    raw_len: len * 2,
                    stored_len: len,
                };
                offset += len;
                e
            })
            .collect();
        Candidate::new(Id::sha256(name.as_bytes()), size, needed.into_iter())
    }

    #[test]
    fn percent_limits_unused_to_a_share_of_the_repository_after_the_prune() {
        assert_eq!(MaxUnused::Percent(5.0).allowed(950), 50);
        assert_eq!(MaxUnused::Percent(0.0).allowed(950), 0);
        assert_eq!(MaxUnused::Bytes(7).allowed(950), 7);
        assert_eq!(MaxUnused::Unlimited.allowed(950), u64::MAX);
    }

    #[test]
    fn the_packs_with_most_garbage_go_first_until_the_rest_is_within_the_limit() {
        let full = candidate("full", 1000 + overhead(1), &[1000]);
        let half = candidate("half", 2000 + overhead(1), &[1000]);
        let tenth = candidate("tenth", 10_000 + overhead(1), &[1000]);
        let all = vec![full.clone(), half.clone(), tenth.clone()];
        // Unlimited: nothing moves.
        let (plan, stay) = choose(all.clone(), MaxUnused::Unlimited, 1 << 20);
        assert!(plan.is_empty() && stay.len() == 3);
        assert_eq!(plan.unused_bytes_after, 10_000);
        // 20% of 3000 used allows 750: the tenth-used pack goes, then the half-used one.
        let (plan, stay) = choose(all.clone(), MaxUnused::Percent(20.0), 1 << 20);
        assert_eq!(plan.packs, [pack_key(&tenth.pack), pack_key(&half.pack)]);
        assert_eq!(stay.len(), 1);
        assert_eq!(plan.unused_bytes_after, 0);
        assert_eq!(plan.blobs, 2);
        assert_eq!(plan.new_packs, 1);
        assert_eq!(plan.written_bytes, 2000 + overhead(2));
        assert_eq!(plan.bytes, 12_000 + 2 * overhead(1));
        assert_eq!(plan.freed_bytes, plan.bytes - plan.written_bytes);
        // 9000 unused allowed: the tenth-used pack alone is enough.
        let (plan, _) = choose(all, MaxUnused::Bytes(9000), 1 << 20);
        assert_eq!(plan.packs, [pack_key(&tenth.pack)]);
        assert_eq!(plan.unused_bytes_after, 1000);
    }

    #[test]
    fn new_packs_close_at_the_pack_size() {
        let a = candidate("a", 100_000, &[400, 400, 400]);
        let b = candidate("b", 100_000, &[400, 400]);
        let (plan, _) = choose(vec![a, b], MaxUnused::Percent(0.0), 1000);
        // 8 + 400 + 400 reaches 1000 only with the third blob: packs of 3 and 2 blobs.
        assert_eq!(plan.new_packs, 2);
        assert_eq!(plan.written_bytes, 2000 + overhead(3) + overhead(2));
    }
}
