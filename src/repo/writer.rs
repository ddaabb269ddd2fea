//! Writing into one or more repositories in one pass.
//!
//! The source is read once: every chunk is cut, hashed and compressed once, then offered to
//! each repository, which stores it only if it does not have it yet. A repository whose
//! storage fails is dropped from the write and reported; the others carry on, so a failing
//! off-site store never costs the local copy.
//!
//! Write order per repository: packs, then an index file for them, then the manifest. A
//! manifest is therefore never visible before every blob it names is stored and indexed.

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex, OnceLock};

use super::adaptive::StreamCodec;
use super::chunker::ChunkerConfig;
use super::codec::{self, Codec};
use super::delta;
use super::error::{RepoError, Result};
use super::id::{HashAlg, Id};
use super::manifest::{
    self, ChunkRefs, ContentCheck, ContentDigest, FileEntry, FileKind, INLINE_CHUNKS,
    SnapshotManifest,
};
use super::throttle::{Throttle, Throttled};
use super::upload::{Claim, Target};
use super::{Repo, snapshot_key};
use crate::first_error::FirstError;

/// What happened in one repository.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TargetOutcome {
    pub repo: String,
    /// `None` when everything was written; otherwise why this repository was given up.
    pub error: Option<String>,
    /// Compressed bytes newly stored (packs).
    pub new_bytes: u64,
    pub new_chunks: u64,
}

/// Writes files and streams into several repositories at once.
pub struct MultiWriter {
    hash: HashAlg,
    chunker: ChunkerConfig,
    level: i32,
    pack_size: usize,
    targets: Vec<Target>,
    files: Mutex<Vec<FileEntry>>,
    /// The snapshot this one follows: changed chunks of a file are stored as deltas against
    /// the same region of the file's previous version.
    parent: Option<Parent>,
    stream_threads: usize,
    /// `--max-rate`: paces every file read (see [`super::throttle`]).
    throttle: Option<Arc<Throttle>>,
}

struct Parent {
    /// The repository the parent snapshot was read from (the first one written to).
    repo: Arc<Repo>,
    files: HashMap<String, ChunkRefs>,
}

impl MultiWriter {
    /// The first repository's settings decide chunking and compression for all of them:
    /// the data is cut and compressed once. They must name content with the same hash, as
    /// one manifest describes the files in all of them.
    pub fn new(repos: Vec<Arc<Repo>>) -> Result<MultiWriter> {
        MultiWriter::build(repos, None)
    }

    /// [`MultiWriter::new`], closing packs at `pack_size` bytes rather than at the configured
    /// size (at least 1 MiB): tests make many packs out of little data.
    #[cfg(test)]
    pub(crate) fn with_pack_size(repos: Vec<Arc<Repo>>, pack_size: usize) -> Result<MultiWriter> {
        MultiWriter::build(repos, Some(pack_size))
    }

    fn build(repos: Vec<Arc<Repo>>, pack_size: Option<usize>) -> Result<MultiWriter> {
        let first = repos
            .first()
            .ok_or_else(|| RepoError::Invalid("no repository to write to".into()))?;
        let cfg = first.config().clone();
        super::check_same_hash(&repos).map_err(RepoError::Invalid)?;
        for repo in &repos {
            // Load each index up front: a missing or damaged one fails the start, not the middle.
            repo.with_index(|_| ())?;
        }
        let mut writer = MultiWriter {
            hash: cfg.hash,
            chunker: cfg.chunker,
            level: cfg.compression_level,
            pack_size: pack_size.unwrap_or(cfg.pack_size as usize),
            targets: Vec::new(),
            files: Mutex::new(Vec::new()),
            parent: None,
            stream_threads: 1,
            throttle: None,
        };
        let (pack_size, room) = (writer.pack_size, writer.pack_room());
        writer.targets = repos
            .into_iter()
            .map(|r| Target::new(r, pack_size, room))
            .collect();
        Ok(writer)
    }

    /// Makes `parent` (a snapshot of `repo`, from which its chunks are read) the base for
    /// delta blobs: a file written under a path the parent also has is compared chunk by
    /// chunk with it. A target without a delta's base gets the whole chunk.
    pub fn set_parent(&mut self, repo: Arc<Repo>, parent: &SnapshotManifest) {
        let files = parent
            .files
            .iter()
            .filter(|f| f.kind == FileKind::File && f.refs.chunk_count > 0)
            .map(|f| (f.path.clone(), f.refs.clone()))
            .collect();
        self.parent = Some(Parent { repo, files });
    }

    pub fn hash(&self) -> HashAlg {
        self.hash
    }

    /// The chunker used for streams; callers pick the repository's page chunker for files
    /// that change in place.
    pub fn stream_chunker(&self) -> ChunkerConfig {
        self.chunker
    }

    pub fn page_chunker(&self) -> ChunkerConfig {
        self.targets
            .first()
            .map(|t| t.repo.config().page_chunker)
            .unwrap_or(self.chunker)
    }

    /// What a pack may hold beyond its size: one more blob, and the header.
    fn pack_room(&self) -> usize {
        codec::MAX_BLOB.min(self.chunker.max_chunk() + 1024) + 64 * 1024
    }

    /// Fails when every repository has failed: there is no point in reading on.
    fn check_alive(&self) -> Result<()> {
        if self.targets.iter().all(Target::failed) {
            let why: Vec<String> = self
                .targets
                .iter()
                .map(|t| named(t.repo.name(), &t.failure().unwrap_or_default()))
                .collect();
            return Err(RepoError::WriteFailed(why.join("; ")));
        }
        Ok(())
    }

    /// Stores one blob where it is missing; returns its id.
    pub fn store_blob(&self, data: &[u8]) -> Result<Id> {
        self.store_chunk(data, None, &mut StreamCodec::new(self.level))
    }

    /// Stores one chunk where it is missing, as a delta against `older` where that pays.
    fn store_chunk(
        &self,
        data: &[u8],
        older: Option<(&OlderVersion, u64)>,
        codec: &mut StreamCodec,
    ) -> Result<Id> {
        self.check_alive()?;
        let id = self.hash.id(data);
        let needed = self.missing_in(&id);
        if needed.is_empty() {
            return Ok(id);
        }
        let mut whole = Whole::new(data, codec);
        let delta = older.and_then(|(older, offset)| older.delta(data, offset, &mut whole));
        let raw_len = data.len() as u32;
        for (i, claim) in needed {
            let t = &self.targets[i];
            match &delta {
                Some((base, stored)) if claim == Claim::New && t.holds_whole(base) => {
                    t.add(id, Codec::Delta, raw_len, stored)
                }
                _ => {
                    let (codec, stored) = whole.get();
                    t.add(id, *codec, raw_len, stored)
                }
            }
        }
        Ok(id)
    }

    /// The targets that still need blob `id`, and how; marks it as on its way in each.
    fn missing_in(&self, id: &Id) -> Vec<(usize, Claim)> {
        (0..self.targets.len())
            .map(|i| (i, self.targets[i].claim(id)))
            .filter(|(_, c)| *c != Claim::Held)
            .collect()
    }

    /// Chunks, stores and describes one stream.
    pub fn write_stream(
        &self,
        reader: impl Read,
        chunker: ChunkerConfig,
    ) -> Result<(u64, ContentDigest, ChunkRefs)> {
        self.write_version(reader, chunker, None)
    }

    /// [`MultiWriter::write_stream`] for a new version of `older`, when there is one.
    fn write_version(
        &self,
        reader: impl Read,
        chunker: ChunkerConfig,
        older: Option<OlderVersion>,
    ) -> Result<(u64, ContentDigest, ChunkRefs)> {
        if self.stream_threads > 1 {
            return self.write_version_in_parallel(reader, chunker, older);
        }
        let mut ids = Vec::new();
        let mut check = ContentCheck::crc64();
        let mut size = 0u64;
        let mut codec = StreamCodec::new(self.level);
        let mut chunks = chunker.chunks(reader);
        while let Some(chunk) = chunks.next_chunk() {
            let chunk = chunk.map_err(|e| RepoError::io("reading the data to back up", e))?;
            check.update(chunk);
            let older = older.as_ref().map(|o| (o, size));
            ids.push(self.store_chunk(chunk, older, &mut codec)?);
            size += chunk.len() as u64;
        }
        Ok((size, check.finish(), self.chunk_refs(ids)?))
    }

    /// The same, with the chunks hashed and compressed by `stream_threads` threads while this
    /// one reads, cuts and checksums the whole stream. At most two chunks per thread wait.
    fn write_version_in_parallel(
        &self,
        reader: impl Read,
        chunker: ChunkerConfig,
        older: Option<OlderVersion>,
    ) -> Result<(u64, ContentDigest, ChunkRefs)> {
        let threads = self.stream_threads;
        let (tx, rx) = sync_channel::<(usize, u64, Vec<u8>)>(threads * 2);
        let rx = Mutex::new(rx);
        let ids: Mutex<Vec<Option<Id>>> = Mutex::new(Vec::new());
        let failure: FirstError<RepoError> = FirstError::new();
        let mut check = ContentCheck::crc64();
        let mut size = 0u64;
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    let mut codec = StreamCodec::new(self.level);
                    loop {
                        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok((n, offset, data)) = job else { break };
                        if failure.failed() {
                            continue;
                        }
                        let older = older.as_ref().map(|o| (o, offset));
                        match self.store_chunk(&data, older, &mut codec) {
                            Ok(id) => {
                                let mut ids = ids.lock().unwrap_or_else(|e| e.into_inner());
                                if ids.len() <= n {
                                    ids.resize(n + 1, None);
                                }
                                ids[n] = Some(id);
                            }
                            Err(e) => failure.set(e),
                        }
                    }
                });
            }
            let mut chunks = chunker.chunks(reader);
            let mut n = 0;
            while let Some(chunk) = chunks.next_chunk() {
                if failure.failed() {
                    break;
                }
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(e) => {
                        failure.set(RepoError::io("reading the data to back up", e));
                        break;
                    }
                };
                check.update(chunk);
                if tx.send((n, size, chunk.to_vec())).is_err() {
                    break;
                }
                n += 1;
                size += chunk.len() as u64;
            }
            drop(tx);
        });
        failure.into_result()?;
        let ids: Option<Vec<Id>> = ids
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .into_iter()
            .collect();
        let ids = ids.ok_or_else(|| RepoError::Invalid("a chunk of the stream was lost".into()))?;
        Ok((size, check.finish(), self.chunk_refs(ids)?))
    }

    /// Reads every file added from now on at no more than `bytes_per_second` in all.
    pub fn set_max_rate(&mut self, bytes_per_second: u64) {
        self.throttle = Some(Throttle::new(bytes_per_second));
    }

    /// How many threads store the chunks of one stream (default 1). Worth more than one when
    /// few streams are written at once, as for a single large file.
    pub fn set_stream_threads(&mut self, threads: usize) {
        self.stream_threads = threads.max(1);
    }

    /// Lists chunk ids inline, or stores them as a chunk-list blob when there are many.
    pub fn chunk_refs(&self, ids: Vec<Id>) -> Result<ChunkRefs> {
        let count = ids.len() as u64;
        if ids.len() <= INLINE_CHUNKS {
            return Ok(ChunkRefs {
                chunks: ids,
                chunk_list: None,
                chunk_count: count,
            });
        }
        let mut list = Vec::with_capacity(ids.len() * Id::LEN);
        for id in &ids {
            list.extend_from_slice(id.as_bytes());
        }
        // A list of a very large file can exceed one blob: it is chunked like any stream.
        let (_, _, refs) = self.write_stream(&list[..], ChunkerConfig::Fixed { size: 1 << 20 })?;
        let list_id = if refs.chunk_list.is_none() && refs.chunks.len() == 1 {
            refs.chunks[0]
        } else {
            return Err(RepoError::Invalid(format!(
                "a file of {count} chunks is too large for one chunk list"
            )));
        };
        Ok(ChunkRefs {
            chunks: Vec::new(),
            chunk_list: Some(list_id),
            chunk_count: count,
        })
    }

    /// Adds a regular file's content from `reader` under `path`.
    pub fn add_file(
        &self,
        path: &str,
        mode: u32,
        reader: impl Read,
        chunker: ChunkerConfig,
    ) -> Result<FileEntry> {
        let older = self.parent.as_ref().and_then(|p| {
            p.files
                .get(path)
                .map(|refs| OlderVersion::new(p.repo.clone(), refs.clone()))
        });
        let (size, digest, refs) = match &self.throttle {
            Some(t) => self.write_version(Throttled::new(reader, t.clone()), chunker, older)?,
            None => self.write_version(reader, chunker, older)?,
        };
        let entry = FileEntry {
            path: path.to_string(),
            kind: FileKind::File,
            mode,
            size,
            digest,
            target: None,
            refs,
        };
        self.files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(entry.clone());
        Ok(entry)
    }

    /// Adds a directory or symlink entry (no content).
    pub fn add_entry(&self, entry: FileEntry) {
        self.files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(entry);
    }

    /// Uploads what is pending and writes each repository's index file. Repositories that
    /// failed are reported, not fatal; the result says which ones now hold every blob, and
    /// which index files each made redundant.
    fn flush(&self) -> Vec<(TargetOutcome, Vec<String>)> {
        std::thread::scope(|s| {
            let merges: Vec<_> = self
                .targets
                .iter()
                .map(|t| {
                    s.spawn(|| {
                        t.drain();
                        if t.failed() {
                            return Vec::new();
                        }
                        t.merge_index().unwrap_or_else(|e| {
                            t.fail(e);
                            Vec::new()
                        })
                    })
                })
                .collect();
            self.targets
                .iter()
                .zip(merges)
                .map(|(t, merge)| {
                    let redundant = merge.join().unwrap_or_else(|_| {
                        t.fail("the index merge panicked".into());
                        Vec::new()
                    });
                    (t.outcome(), redundant)
                })
                .collect()
        })
    }

    /// Flushes, then runs `commit` (which writes the manifest) for each repository that holds
    /// every blob, while the index files the flush made redundant are removed (nothing needs
    /// them then; a failure only leaves them behind). Fails only when no repository could be
    /// written.
    fn flush_and_commit(
        &self,
        commit: impl Fn(&Repo, &TargetOutcome) -> Result<(), String>,
    ) -> Result<Vec<TargetOutcome>> {
        let flushed = self.flush();
        let mut outcomes = Vec::with_capacity(flushed.len());
        std::thread::scope(|s| {
            for ((outcome, redundant), t) in flushed.into_iter().zip(&self.targets) {
                if !redundant.is_empty() {
                    let storage = t.repo.storage();
                    s.spawn(move || storage.delete_many(&redundant));
                }
                outcomes.push(outcome);
            }
            for (t, outcome) in self.targets.iter().zip(outcomes.iter_mut()) {
                if outcome.error.is_none()
                    && let Err(e) = commit(&t.repo, outcome)
                {
                    outcome.error = Some(e);
                }
            }
        });
        if outcomes.iter().all(|o| o.error.is_some()) {
            let why: Vec<String> = outcomes
                .iter()
                .map(|o| named(&o.repo, o.error.as_deref().unwrap_or_default()))
                .collect();
            return Err(RepoError::WriteFailed(why.join("; ")));
        }
        Ok(outcomes)
    }

    /// Flushes, then runs `commit` (which writes the manifest) for each repository that holds
    /// every blob. Fails only when no repository could be written.
    pub fn commit_with(
        self,
        commit: impl Fn(&Repo) -> Result<(), String>,
    ) -> Result<Vec<TargetOutcome>> {
        self.flush_and_commit(|repo, _| commit(repo))
    }

    /// Flushes, then writes `template` (with this writer's files, size and new bytes) as a
    /// snapshot manifest in every repository that succeeded.
    pub fn commit_snapshot(self, template: SnapshotManifest) -> Result<Committed> {
        let mut files = std::mem::take(&mut *self.files.lock().unwrap_or_else(|e| e.into_inner()));
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let size = files.iter().map(|f| f.size).sum();
        let count = files.len();
        let mut m = template;
        m.files = files;
        m.size = size;
        let outcomes = self.flush_and_commit(|repo, outcome| {
            let m = SnapshotManifest {
                new_bytes: outcome.new_bytes,
                ..m.clone()
            };
            match repo
                .storage()
                .create(&snapshot_key(&m.id), &manifest::encode("snapshot", &m))
            {
                Ok(true) => Ok(()),
                Ok(false) => Err(format!("snapshot {} already exists", m.id)),
                Err(e) => Err(e.to_string()),
            }
        })?;
        Ok(Committed {
            outcomes,
            size,
            files: count,
        })
    }
}

/// A chunk's whole (non-delta) encoding, made only when some target needs it.
struct Whole<'a> {
    data: &'a [u8],
    codec: &'a mut StreamCodec,
    encoded: Option<(Codec, Vec<u8>)>,
}

impl<'a> Whole<'a> {
    fn new(data: &'a [u8], codec: &'a mut StreamCodec) -> Self {
        Whole {
            data,
            codec,
            encoded: None,
        }
    }

    fn get(&mut self) -> &(Codec, Vec<u8>) {
        self.encoded
            .get_or_insert_with(|| self.codec.encode(self.data))
    }
}

impl Drop for Whole<'_> {
    fn drop(&mut self) {
        if let Some((_, bytes)) = self.encoded.take() {
            super::codec::recycle(bytes);
        }
    }
}

/// A delta this small is kept without comparing it with the whole encoding: compressed
/// table data is rarely below a third of its size.
const SURELY_SMALL: usize = 16;
/// After this many chunks in a row that did not pay as deltas, a file stops trying: it was
/// rewritten, not edited.
const GIVE_UP_AFTER: u32 = 4;

/// The previous version of a file being written, loaded when its first changed chunk needs it.
/// Shared by the threads storing one stream's chunks.
struct OlderVersion {
    repo: Arc<Repo>,
    refs: ChunkRefs,
    /// End offset and id of each chunk; `None` inside when they cannot be read.
    chunks: OnceLock<Option<Vec<(u64, Id)>>>,
    misses: AtomicU32,
}

impl OlderVersion {
    fn new(repo: Arc<Repo>, refs: ChunkRefs) -> Self {
        OlderVersion {
            repo,
            refs,
            chunks: OnceLock::new(),
            misses: AtomicU32::new(0),
        }
    }

    /// `data` (at `offset` in the new version) as a delta blob against the old chunk at the
    /// same place, with the base's id; `None` when that does not pay or cannot be done. Any
    /// failure here only means the chunk is stored whole.
    fn delta(&self, data: &[u8], offset: u64, whole: &mut Whole) -> Option<(Id, Vec<u8>)> {
        if self.misses.load(Ordering::Relaxed) >= GIVE_UP_AFTER {
            return None;
        }
        let near = self.chunk_at(offset + data.len() as u64 / 2)?;
        // A delta's base is always a whole blob, so restores read at most one extra blob.
        let base_id = match self.repo.delta_base(&near) {
            Ok(base) => base.unwrap_or(near),
            Err(_) => return None,
        };
        let base = self.repo.read_blob(&base_id).ok()?;
        let stored = delta::encode(&base_id, &base, data, whole.codec.level())?;
        let pays =
            stored.len() * SURELY_SMALL <= data.len() || stored.len() * 2 <= whole.get().1.len();
        if pays {
            self.misses.store(0, Ordering::Relaxed);
            Some((base_id, stored))
        } else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    fn chunk_at(&self, offset: u64) -> Option<Id> {
        let Some(chunks) = self.chunks.get_or_init(|| self.load()) else {
            self.misses.store(GIVE_UP_AFTER, Ordering::Relaxed);
            return None;
        };
        let i = chunks.partition_point(|(end, _)| *end <= offset);
        chunks
            .get(i.min(chunks.len().saturating_sub(1)))
            .map(|(_, id)| *id)
    }

    fn load(&self) -> Option<Vec<(u64, Id)>> {
        let ids = self.repo.chunk_ids(&self.refs).ok()?;
        let mut end = 0u64;
        let mut chunks = Vec::with_capacity(ids.len());
        for id in ids {
            end += u64::from(self.repo.blob(&id).ok()??.raw_len);
            chunks.push((end, id));
        }
        Some(chunks)
    }
}

/// What [`MultiWriter::commit_snapshot`] wrote.
#[derive(Debug, Clone)]
pub struct Committed {
    pub outcomes: Vec<TargetOutcome>,
    /// Plaintext bytes of the snapshot's files.
    pub size: u64,
    pub files: usize,
}

impl Drop for MultiWriter {
    fn drop(&mut self) {
        // Stop the upload threads; an abandoned writer leaves packs without index or
        // manifest, which prune removes and a rerun reuses.
        for t in &self.targets {
            t.close();
        }
    }
}

/// `why` a repository failed, naming it once: storage errors start with the store's name.
fn named(repo: &str, why: &str) -> String {
    if why.starts_with(repo) {
        why.to_string()
    } else {
        format!("{repo}: {why}")
    }
}

/// A new snapshot id: the UTC time, sortable, plus a random suffix.
pub fn new_snapshot_id(time: chrono::DateTime<chrono::Utc>) -> String {
    format!(
        "{}-{}",
        time.format("%Y%m%dT%H%M%SZ"),
        &super::config::random_hex(2)
    )
}
