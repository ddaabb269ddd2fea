//! `verify`: reads every pack, checks every blob against its id and every manifest against
//! the index, and names the snapshots, files and binlog segments that damage affects.
//!
//! It never stops at the first bad object: an object that cannot be read (a storage error, a
//! segment that does not decrypt, a manifest that does not decode) is that object's problem,
//! and the check goes on with the next. Only a listing that fails ends it, as then there is
//! nothing to go through. It reads with an index of its own, built file by file, so a damaged
//! index file is one problem rather than the reason every other read fails.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;

use super::codec::Codec;
use super::error::{RepoError, Result};
use super::id::Id;
use super::index::{BlobLocation, Index};
use super::listing::{read_each, read_listed};
use super::manifest::{self, BinlogSegment, ChunkRefs, SnapshotManifest};
use super::reader::decode_blob;
use super::{Repo, delta, index, pack, pack_key};

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// The damaged, missing or unreadable object (`packs/..`, `index/..`, `snapshots/..`,
    /// `binlog/..`, or `chunk <id>` for a blob named by a manifest or an index entry).
    pub object: String,
    pub detail: String,
    /// Snapshots and files (or binlog segments) that cannot be restored because of it.
    pub affects: Vec<String>,
}

/// A binlog segment that cannot be read back: point-in-time recovery cannot pass through it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct DamagedSegment {
    pub source_uuid: String,
    pub file: String,
    /// Bytes of the file the segment holds.
    pub size: u64,
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
    /// Ids of the snapshots that cannot be restored (whole or in part).
    pub damaged_snapshots: Vec<String>,
    /// Binlog segments that cannot be read back.
    pub damaged_segments: Vec<DamagedSegment>,
    /// The manifests that read and decode, without their chunk lists (which grow with the
    /// data): what callers judge the binlog archive's coverage on, without reading them again.
    #[serde(skip)]
    pub readable_snapshots: Vec<SnapshotManifest>,
    #[serde(skip)]
    pub readable_segments: Vec<BinlogSegment>,
}

/// An object to blame, and what is wrong with it.
type Blame = (String, String);

/// What the check has found so far.
#[derive(Default)]
struct Findings {
    /// Per object: what is wrong (the first reason found) and what it affects.
    problems: BTreeMap<String, (String, BTreeSet<String>)>,
    /// Blobs that cannot be read, and the object to blame.
    bad_blobs: HashMap<Id, String>,
}

impl Findings {
    fn problem(&mut self, (object, detail): Blame) {
        self.problems
            .entry(object)
            .or_insert_with(|| (detail, BTreeSet::new()));
    }

    /// Blob `id` cannot be read because of `blame`.
    fn bad_blob(&mut self, id: Id, blame: Blame) {
        self.bad_blobs.entry(id).or_insert_with(|| blame.0.clone());
        self.problem(blame);
    }

    fn affects(&mut self, object: &str, owner: &str) {
        if let Some((_, owners)) = self.problems.get_mut(object) {
            owners.insert(owner.to_string());
        }
    }
}

/// Reads blobs through verify's own index, saying whom to blame when one cannot be read.
struct Blobs<'a> {
    repo: &'a Repo,
    idx: &'a Index,
}

impl Blobs<'_> {
    fn stored(&self, loc: &BlobLocation) -> Result<Vec<u8>, Blame> {
        let key = pack_key(&loc.pack);
        let read =
            self.repo
                .storage()
                .get_range(&key, u64::from(loc.offset), u64::from(loc.stored_len));
        match read {
            Ok(b) if b.len() == loc.stored_len as usize => Ok(b),
            Ok(_) => Err((key, "shorter than its index says".into())),
            Err(e) => Err((key, format!("cannot be read: {e}"))),
        }
    }

    /// The plaintext of a blob that serves as a delta's base: it must be indexed whole.
    fn base(&self, of: &Id, base: &Id, of_pack: &Id) -> Result<Vec<u8>, Blame> {
        let entry = || format!("chunk {of} in {}", pack_key(of_pack));
        let loc = match self.idx.get(base) {
            None => {
                return Err((
                    entry(),
                    format!(
                        "a delta whose base {base} is in no index (deleted by the prune of an \
                         older myvault; `myvault prune` drops the entry)"
                    ),
                ));
            }
            Some(l) if l.codec == Codec::Delta => {
                return Err((
                    entry(),
                    format!("a delta whose base {base} is a delta itself"),
                ));
            }
            Some(l) => l,
        };
        let stored = self.stored(&loc)?;
        let no_base = |_: &Id| Err(RepoError::Invalid("a whole blob has no base".into()));
        decode_blob(
            self.repo.name(),
            self.repo.hash(),
            base,
            &loc,
            &stored,
            no_base,
        )
        .map_err(|_| (pack_key(&loc.pack), "a blob does not match its id".into()))
    }

    /// Decodes a blob from its stored bytes (reading its base if it is a delta).
    fn decode(&self, id: &Id, loc: &BlobLocation, stored: &[u8]) -> Result<Vec<u8>, Blame> {
        let base = match loc.codec {
            Codec::Delta => match delta::base_of(stored) {
                Some(b) => Some(self.base(id, &b, &loc.pack)?),
                None => {
                    let detail = "a delta blob is shorter than its base id";
                    return Err((pack_key(&loc.pack), detail.into()));
                }
            },
            _ => None,
        };
        let with_base = |_: &Id| base.ok_or_else(|| RepoError::Invalid("no base".into()));
        decode_blob(
            self.repo.name(),
            self.repo.hash(),
            id,
            loc,
            stored,
            with_base,
        )
        .map_err(|_| {
            let what = match loc.codec {
                Codec::Delta => "a delta blob does not decode to its id",
                _ => "a blob does not match its id",
            };
            (pack_key(&loc.pack), what.into())
        })
    }

    fn read(&self, id: &Id) -> Result<Vec<u8>, Blame> {
        let loc = self
            .idx
            .get(id)
            .ok_or_else(|| (format!("chunk {id}"), "not in any index".to_string()))?;
        let stored = self.stored(&loc)?;
        self.decode(id, &loc, &stored)
    }
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
    let mut found = Findings::default();
    // Manifests are listed before the index is read: each one's chunks were indexed before it
    // was written, so the index names them all. What writers beside this run add or replace
    // (a manifest removed since the listing) is newer than this view: the next run checks it.
    let snapshot_listing = storage.list("snapshots/")?;
    let segment_listing = storage.list("binlog/")?;
    let idx = load_index(repo, &mut found)?;
    let stored: HashSet<Id> = storage
        .list("packs/")?
        .iter()
        .filter_map(|o| o.key.rsplit('/').next().and_then(Id::parse))
        .collect();
    let by_pack = idx.entries_by_pack();
    report.blobs = idx.len();
    report.packs = stored.len();
    report.unindexed_packs = stored.iter().filter(|p| !idx.has_pack(p)).count();

    let blobs = Blobs { repo, idx: &idx };
    // Deltas that read back, with their bases: damage found later in a base is theirs too.
    let mut delta_bases: Vec<(Id, Id)> = Vec::new();
    let total = by_pack.len();
    for (n, (pack_id, entries)) in by_pack.iter().enumerate() {
        progress(n, total);
        let key = pack_key(pack_id);
        if !stored.contains(pack_id) {
            for e in entries {
                found.bad_blob(e.id, (key.clone(), "missing (named by the index)".into()));
            }
            continue;
        }
        if read_data {
            report.bytes_read += check_pack(&blobs, pack_id, entries, &mut found, &mut delta_bases);
        } else {
            check_delta_bases(&blobs, pack_id, entries, &mut found, &mut delta_bases);
        }
    }
    progress(total, total);
    for (delta, base) in delta_bases {
        if let Some(blame) = found.bad_blobs.get(&base).cloned() {
            found.bad_blobs.entry(delta).or_insert(blame);
        }
    }

    let mut damaged_snapshots = BTreeSet::new();
    read_each(storage.as_ref(), snapshot_listing, |key, read| {
        let id = key.trim_start_matches("snapshots/").to_string();
        let owner = format!("snapshot {id}");
        let Some(m) = read_manifest::<SnapshotManifest>(key, read, "snapshot", &owner, &mut found)
        else {
            damaged_snapshots.insert(id);
            return Ok(());
        };
        report.snapshots += 1;
        for f in &m.files {
            let owner = format!("snapshot {} file {}", m.id, f.path);
            if !check_refs(&blobs, &owner, &f.refs, &mut found) {
                damaged_snapshots.insert(m.id.clone());
            }
        }
        report.readable_snapshots.push(SnapshotManifest {
            files: Vec::new(),
            ..m
        });
        Ok(())
    })?;
    let mut damaged_segments = BTreeSet::new();
    read_each(storage.as_ref(), segment_listing, |key, read| {
        let named = segment_of_key(key);
        let owner = match &named {
            Some(s) => format!("binlog {} of {} ({} bytes)", s.file, s.source_uuid, s.size),
            None => key.to_string(),
        };
        let Some(s) = read_manifest::<BinlogSegment>(key, read, "binlog", &owner, &mut found)
        else {
            damaged_segments.extend(named);
            return Ok(());
        };
        report.binlog_segments += 1;
        let owner = format!("binlog {} of {} ({} bytes)", s.file, s.source_uuid, s.size);
        if !check_refs(&blobs, &owner, &s.refs, &mut found) {
            damaged_segments.insert(DamagedSegment {
                source_uuid: s.source_uuid.clone(),
                file: s.file.clone(),
                size: s.size,
            });
        }
        report.readable_segments.push(BinlogSegment {
            refs: ChunkRefs::default(),
            ..s
        });
        Ok(())
    })?;

    report.problems = found
        .problems
        .into_iter()
        .map(|(object, (detail, affects))| Problem {
            object,
            detail,
            affects: affects.into_iter().collect(),
        })
        .collect();
    report.damaged_snapshots = damaged_snapshots.into_iter().collect();
    report.damaged_segments = damaged_segments.into_iter().collect();
    Ok(report)
}

/// Index files one by one, so a damaged or unreadable one is named and the others still count.
fn load_index(repo: &Repo, found: &mut Findings) -> Result<Index> {
    let storage = repo.storage();
    let mut idx = Index::new();
    // A file merged away by a concurrent backup is read again from the merged file.
    read_listed(storage.as_ref(), "index/", |key, read| {
        match read
            .map_err(|e| format!("cannot be read: {e}"))
            .and_then(|d| index::decode_file(&d))
        {
            Ok(packs) => packs.iter().for_each(|(p, e)| idx.add_pack(*p, e)),
            Err(detail) => found.problem((key.to_string(), detail)),
        }
        Ok(())
    })?;
    Ok(idx)
}

/// Reads pack `pack_id` whole and checks it: its name, its header, and every blob it holds
/// for the index (a delta with its base). Returns the bytes read.
fn check_pack(
    blobs: &Blobs,
    pack_id: &Id,
    entries: &[pack::PackEntry],
    found: &mut Findings,
    delta_bases: &mut Vec<(Id, Id)>,
) -> u64 {
    let key = pack_key(pack_id);
    let bytes = match blobs.repo.storage().get(&key) {
        Ok(b) => b,
        Err(e) => {
            for en in entries {
                found.bad_blob(en.id, (key.clone(), format!("cannot be read: {e}")));
            }
            return 0;
        }
    };
    // Said of the pack before any blob in it is blamed, as the first reason found is kept.
    let mut pack_problem = None;
    if blobs.repo.hash().id(&bytes) != *pack_id {
        pack_problem = Some("content does not match its name (damaged)".to_string());
    }
    match pack::parse_header(&bytes) {
        Err(d) => pack_problem = Some(format!("header: {d}")),
        Ok(header) => {
            let in_header: HashMap<Id, pack::PackEntry> =
                header.iter().map(|e| (e.id, *e)).collect();
            if entries.iter().any(|e| in_header.get(&e.id) != Some(e)) {
                pack_problem.get_or_insert_with(|| "index and pack header disagree".into());
            }
        }
    }
    if let Some(p) = pack_problem {
        found.problem((key.clone(), p));
    }
    for e in entries {
        let loc = BlobLocation {
            pack: *pack_id,
            codec: e.codec,
            offset: e.offset,
            raw_len: e.raw_len,
            stored_len: e.stored_len,
        };
        let start = e.offset as usize;
        let Some(blob) = bytes.get(start..start + e.stored_len as usize) else {
            found.bad_blob(e.id, (key.clone(), "a blob lies outside the pack".into()));
            continue;
        };
        match blobs.decode(&e.id, &loc, blob) {
            Ok(_) => delta_bases.extend(
                delta::base_of(blob)
                    .filter(|_| e.codec == Codec::Delta)
                    .map(|b| (e.id, b)),
            ),
            Err(blame) => found.bad_blob(e.id, blame),
        }
    }
    bytes.len() as u64
}

/// Without reading packs: every delta's base must be indexed whole (its first 32 bytes say
/// which it is).
fn check_delta_bases(
    blobs: &Blobs,
    pack_id: &Id,
    entries: &[pack::PackEntry],
    found: &mut Findings,
    delta_bases: &mut Vec<(Id, Id)>,
) {
    let key = pack_key(pack_id);
    for e in entries.iter().filter(|e| e.codec == Codec::Delta) {
        let head = blobs
            .repo
            .storage()
            .get_range(&key, u64::from(e.offset), Id::LEN as u64);
        let base = match head.as_deref().map(delta::base_of) {
            Ok(Some(b)) => b,
            Ok(None) => {
                let detail = "a delta blob is shorter than its base id";
                found.bad_blob(e.id, (key.clone(), detail.into()));
                continue;
            }
            Err(err) => {
                found.bad_blob(e.id, (key.clone(), format!("cannot be read: {err}")));
                continue;
            }
        };
        let whole = blobs
            .idx
            .get(&base)
            .is_some_and(|l| l.codec != Codec::Delta);
        if whole {
            delta_bases.push((e.id, base));
        } else {
            let blame = (
                format!("chunk {} in {key}", e.id),
                format!("a delta whose base {base} is not indexed whole"),
            );
            found.bad_blob(e.id, blame);
        }
    }
}

/// A manifest, or `None` (and a problem) when it cannot be read or decoded.
fn read_manifest<T: serde::de::DeserializeOwned>(
    key: &str,
    read: crate::storage::Result<Vec<u8>>,
    kind: &str,
    owner: &str,
    found: &mut Findings,
) -> Option<T> {
    let decoded = read
        .map_err(|e| format!("cannot be read: {e}"))
        .and_then(|data| manifest::decode::<T>(kind, &data));
    decoded
        .map_err(|detail| {
            found.problem((key.to_string(), detail));
            found.affects(key, owner);
        })
        .ok()
}

/// The segment a binlog manifest's key names (`binlog/<uuid>/<file>/<size>`).
fn segment_of_key(key: &str) -> Option<DamagedSegment> {
    let mut parts = key.strip_prefix("binlog/")?.split('/');
    let (uuid, file, size) = (parts.next()?, parts.next()?, parts.next()?);
    Some(DamagedSegment {
        source_uuid: uuid.to_string(),
        file: file.to_string(),
        size: size.parse().ok()?,
    })
}

/// Checks that every blob `refs` needs can be read; names `owner` in each problem that stops
/// it. Returns whether everything can be read.
fn check_refs(blobs: &Blobs, owner: &str, refs: &ChunkRefs, found: &mut Findings) -> bool {
    let mut needed: Vec<Id> = refs.chunks.clone();
    let mut whole = true;
    if let Some(list) = refs.chunk_list {
        match chunk_list(blobs, &list, refs.chunk_count, found) {
            Ok(ids) => needed.extend(ids),
            Err(object) => {
                found.affects(&object, owner);
                whole = false;
            }
        }
    }
    for id in needed {
        if let Some(object) = blame_of(blobs, &id, found) {
            found.affects(&object, owner);
            whole = false;
        }
    }
    whole
}

/// The object that keeps blob `id` from being read, if anything does.
fn blame_of(blobs: &Blobs, id: &Id, found: &mut Findings) -> Option<String> {
    if let Some(object) = found.bad_blobs.get(id) {
        return Some(object.clone());
    }
    if blobs.idx.contains(id) {
        return None;
    }
    let object = format!("chunk {id}");
    found.bad_blob(*id, (object.clone(), "not in any index".into()));
    Some(object)
}

/// The chunk ids a chunk-list blob holds, or the object that keeps it from being read.
fn chunk_list(
    blobs: &Blobs,
    list: &Id,
    count: u64,
    found: &mut Findings,
) -> Result<Vec<Id>, String> {
    if let Some(object) = blame_of(blobs, list, found) {
        return Err(object);
    }
    let bytes = blobs.read(list).map_err(|blame| {
        let object = blame.0.clone();
        found.bad_blob(*list, blame);
        object
    })?;
    if bytes.len() % Id::LEN != 0 || (bytes.len() / Id::LEN) as u64 != count {
        let object = format!("chunk list {list}");
        found.problem((object.clone(), "wrong length".into()));
        return Err(object);
    }
    Ok(bytes
        .chunks_exact(Id::LEN)
        .filter_map(Id::from_slice)
        .collect())
}
