//! Reading files back out of a repository, verifying every chunk against its id and every
//! file against its digest.
//!
//! Consecutive chunks stored next to each other in a pack are fetched with one ranged read,
//! so a restore reads packs mostly sequentially; its chunks are decoded one at a time as they
//! are read, so memory stays at the ranges being read plus one chunk, and the first bytes of a
//! range go out without waiting for the rest of it to be decoded. From a remote store the
//! next few ranges are fetched while one is consumed (see [`super::read_ahead`]).

use std::collections::VecDeque;
use std::io::{self, Read, Write};

use super::codec::{self, Codec};
use super::delta;
use super::error::{RepoError, Result};
use super::id::{HashAlg, Id};

use super::index::{BlobLocation, Indexed};
use super::manifest::{ChunkRefs, ContentCheck, ContentDigest, FileEntry};
use super::read_ahead::{PlannedRange, ReadAhead};
use super::{Repo, pack_key};
use crate::storage::StorageError;

/// Unneeded bytes between two wanted chunks that are still worth reading through.
const MAX_GAP: u64 = 256 * 1024;

impl Repo {
    fn locate(&self, id: &Id) -> Result<BlobLocation> {
        self.blob(id)?.ok_or_else(|| {
            RepoError::integrity(
                self.name(),
                format!("chunk {id}"),
                "not in any index (missing)",
            )
        })
    }

    pub(crate) fn decode_blob(
        &self,
        id: &Id,
        loc: &BlobLocation,
        stored: &[u8],
    ) -> Result<Vec<u8>> {
        decode_blob(self.name(), self.hash(), id, loc, stored, |base| {
            self.read_delta_base(base)
        })
    }

    /// One blob's plaintext, verified.
    pub fn read_blob(&self, id: &Id) -> Result<Vec<u8>> {
        let loc = self.locate(id)?;
        self.read_located(id, &loc)
    }

    /// The base of a delta blob. Bases are never deltas themselves: any chunk then needs at
    /// most one other blob, and no chain of bases can loop.
    fn read_delta_base(&self, id: &Id) -> Result<Vec<u8>> {
        let loc = self.locate(id)?;
        if loc.codec == Codec::Delta {
            return Err(RepoError::integrity(
                self.name(),
                format!("chunk {}", id.short()),
                "named as a delta base but is a delta itself",
            ));
        }
        self.read_located(id, &loc)
    }

    /// The blob a delta blob was stored against, or `None` when `id` is stored whole.
    pub fn delta_base(&self, id: &Id) -> Result<Option<Id>> {
        let loc = self.locate(id)?;
        if loc.codec != Codec::Delta {
            return Ok(None);
        }
        let cached = self
            .delta_bases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .copied();
        if let Some(base) = cached {
            return Ok(Some(base));
        }
        let head = self
            .storage()
            .get_range(&pack_key(&loc.pack), u64::from(loc.offset), Id::LEN as u64)
            .map_err(|e| self.pack_error(&loc.pack, e))?;
        let base = delta::base_of(&head).ok_or_else(|| {
            RepoError::integrity(
                self.name(),
                format!("chunk {}", id.short()),
                "delta blob shorter than its base id",
            )
        })?;
        self.delta_bases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(*id, base);
        Ok(Some(base))
    }

    /// Whether the index can give blob `id` back: a delta only when its base is indexed whole.
    /// Writers reuse a blob only when it is [`Indexed::Readable`]; one left unreadable (by a
    /// prune of an older myvault that deleted a delta's base) is stored again. Checking a
    /// delta reads its first bytes, so it is done only while the `pruned` mark does not say
    /// the index is sound (see `Repo::index_is_sound`).
    pub fn indexed(&self, id: &Id) -> Result<Indexed> {
        let Some(loc) = self.blob(id)? else {
            return Ok(Indexed::Absent);
        };
        if loc.codec != Codec::Delta || self.index_is_sound()? {
            return Ok(Indexed::Readable);
        }
        let base = match self.delta_base(id) {
            Ok(base) => base,
            // The delta's own pack is gone: as unreadable as a missing base.
            Err(RepoError::Integrity { .. }) => return Ok(Indexed::Unreadable),
            Err(e) => return Err(e),
        };
        let whole = |b: &Id| {
            self.blob(b)
                .map(|l| l.is_some_and(|l| l.codec != Codec::Delta))
        };
        Ok(match base {
            Some(b) if !whole(&b)? => Indexed::Unreadable,
            _ => Indexed::Readable,
        })
    }

    /// A storage error reading pack `pack`, which the index names: a pack that is not there is
    /// damage (exit 8, as `verify` says), not a storage failure.
    fn pack_error(&self, pack: &Id, e: StorageError) -> RepoError {
        if e.is_not_found() {
            RepoError::integrity(self.name(), pack_key(pack), "missing (named by the index)")
        } else {
            e.into()
        }
    }

    fn read_located(&self, id: &Id, loc: &BlobLocation) -> Result<Vec<u8>> {
        let stored = self
            .storage()
            .get_range(
                &pack_key(&loc.pack),
                u64::from(loc.offset),
                u64::from(loc.stored_len),
            )
            .map_err(|e| self.pack_error(&loc.pack, e))?;
        if stored.len() != loc.stored_len as usize {
            return Err(RepoError::integrity(
                self.name(),
                format!("pack {}", loc.pack.short()),
                "shorter than its index says",
            ));
        }
        self.decode_blob(id, loc, &stored)
    }

    /// The chunk ids of a file or segment, in order.
    pub fn chunk_ids(&self, refs: &ChunkRefs) -> Result<Vec<Id>> {
        let Some(list) = refs.chunk_list else {
            return Ok(refs.chunks.clone());
        };
        let bytes = self.read_blob(&list)?;
        if bytes.len() % Id::LEN != 0 || (bytes.len() / Id::LEN) as u64 != refs.chunk_count {
            return Err(RepoError::integrity(
                self.name(),
                format!("chunk list {}", list.short()),
                "wrong length",
            ));
        }
        Ok(bytes
            .chunks_exact(Id::LEN)
            .filter_map(Id::from_slice)
            .collect())
    }

    /// A verifying reader over a file's content.
    pub fn open_file(&self, entry: &FileEntry) -> Result<FileReader<'_>> {
        let ids = self.chunk_ids(&entry.refs)?;
        Ok(FileReader {
            repo: self,
            path: entry.path.clone(),
            expected_size: entry.size,
            expected: entry.digest,
            ids,
            next: 0,
            ahead: ReadAhead::new(self.storage().clone()),
            plan_error: None,
            range: Vec::new(),
            range_start: 0,
            pending: VecDeque::new(),
            current: Vec::new(),
            pos: 0,
            check: entry.digest.checker(),
            total: 0,
            finished: false,
        })
    }

    /// Writes a file's content to `out`, verified; returns its size.
    pub fn copy_file(&self, entry: &FileEntry, out: &mut dyn Write) -> Result<u64> {
        let mut reader = self.open_file(entry)?;
        let mut total = 0u64;
        while let Some(chunk) = reader.next_chunk()? {
            out.write_all(&chunk)
                .map_err(|e| RepoError::io(format!("writing {}", entry.path), e))?;
            total += chunk.len() as u64;
        }
        Ok(total)
    }
}

/// Decodes blob `id` from its `stored` bytes and checks it against its id; a delta's base
/// comes from `read_base` (whole blobs only: see [`Repo::delta_base`]).
pub(crate) fn decode_blob(
    store: &str,
    hash: HashAlg,
    id: &Id,
    loc: &BlobLocation,
    stored: &[u8],
    read_base: impl FnOnce(&Id) -> Result<Vec<u8>>,
) -> Result<Vec<u8>> {
    let what = || format!("chunk {} in pack {}", id.short(), loc.pack.short());
    let raw_len = loc.raw_len as usize;
    let data = match loc.codec {
        Codec::Delta => {
            let base_id = delta::base_of(stored).ok_or_else(|| {
                RepoError::integrity(store, what(), "delta blob shorter than its base id")
            })?;
            let base = read_base(&base_id)?;
            delta::decode(stored, &base, raw_len)
        }
        plain => codec::decode(plain, stored, raw_len),
    }
    .map_err(|d| RepoError::integrity(store, what(), d))?;
    if hash.id(&data) != *id {
        return Err(RepoError::integrity(
            store,
            what(),
            "content does not match its id",
        ));
    }
    Ok(data)
}

/// Reads a file chunk by chunk. Errors are [`RepoError`]s through [`FileReader::next_chunk`],
/// or `io::Error`s wrapping them through `Read`.
pub struct FileReader<'r> {
    repo: &'r Repo,
    path: String,
    expected_size: u64,
    /// The whole file's digest, and its check computed again.
    expected: ContentDigest,
    ids: Vec<Id>,
    /// The first chunk not yet planned into a range.
    next: usize,
    /// The ranges planned and not yet consumed, being read ahead from remote stores.
    ahead: ReadAhead,
    /// Why planning stopped (a chunk the index does not know), given out when its turn comes.
    plan_error: Option<RepoError>,
    /// The stored bytes of the last ranged read, from pack offset `range_start`.
    range: Vec<u8>,
    range_start: u64,
    /// The chunks in `range` not yet handed out.
    pending: VecDeque<(Id, BlobLocation)>,
    current: Vec<u8>,
    pos: usize,
    check: Option<ContentCheck>,
    total: u64,
    finished: bool,
}

impl FileReader<'_> {
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The next chunk's plaintext, or `None` at the end, after the whole-file checks.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        let (id, loc) = loop {
            if let Some(next) = self.pending.pop_front() {
                break next;
            }
            if !self.take_range()? {
                self.finish()?;
                return Ok(None);
            }
        };
        // plan_range made every pending chunk lie inside the range; checked all the same,
        // as offsets come from the index files.
        let stored = u64::from(loc.offset)
            .checked_sub(self.range_start)
            .and_then(|from| {
                let from = usize::try_from(from).ok()?;
                self.range
                    .get(from..from.checked_add(loc.stored_len as usize)?)
            })
            .ok_or_else(|| {
                RepoError::integrity(
                    self.repo.name(),
                    format!("pack {}", loc.pack.short()),
                    "a chunk lies outside the range its index entry gave",
                )
            })?;
        let chunk = self.repo.decode_blob(&id, &loc, stored)?;
        if let Some(c) = &mut self.check {
            c.update(&chunk);
        }
        self.total += chunk.len() as u64;
        Ok(Some(chunk))
    }

    fn finish(&mut self) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        let what = || format!("file {}", self.path);
        if self.total != self.expected_size {
            return Err(RepoError::integrity(
                self.repo.name(),
                what(),
                format!(
                    "{} bytes restored, manifest says {}",
                    self.total, self.expected_size
                ),
            ));
        }
        if let Some(check) = self.check.take()
            && check.finish() != self.expected
        {
            return Err(RepoError::integrity(
                self.repo.name(),
                what(),
                "the digest of the restored file does not match the manifest",
            ));
        }
        Ok(())
    }

    /// Makes the next planned range current, planning as many more as the read-ahead wants;
    /// false when the file has no more chunks.
    fn take_range(&mut self) -> Result<bool> {
        while self.plan_error.is_none() && self.next < self.ids.len() && self.ahead.wants_more() {
            match self.plan_range() {
                Ok(range) => self.ahead.push(range),
                Err(e) => self.plan_error = Some(e),
            }
        }
        let Some((range, data)) = self.ahead.pop() else {
            return match self.plan_error.take() {
                Some(e) => Err(e),
                None => Ok(false),
            };
        };
        let data = data.map_err(|e| self.repo.pack_error(&range.pack, e))?;
        if (data.len() as u64) < range.len {
            return Err(RepoError::integrity(
                self.repo.name(),
                format!("pack {}", range.pack.short()),
                "shorter than its index says",
            ));
        }
        self.range = data;
        self.range_start = range.start;
        self.pending = range.chunks.into();
        Ok(true)
    }

    /// The next chunk and as many following ones as lie close behind it in the same pack.
    fn plan_range(&mut self) -> Result<PlannedRange> {
        let max_range = self.ahead.max_range();
        let first = self.repo.locate(&self.ids[self.next])?;
        let start = u64::from(first.offset);
        let mut end = start + u64::from(first.stored_len);
        let mut chunks = vec![(self.ids[self.next], first)];
        let mut i = self.next + 1;
        while i < self.ids.len() {
            let loc = self.repo.locate(&self.ids[i])?;
            let (o, l) = (u64::from(loc.offset), u64::from(loc.stored_len));
            if loc.pack != first.pack || o < end || o - end > MAX_GAP || o + l - start > max_range {
                break;
            }
            end = o + l;
            chunks.push((self.ids[i], loc));
            i += 1;
        }
        self.next = i;
        Ok(PlannedRange {
            pack: first.pack,
            start,
            len: end - start,
            chunks,
        })
    }
}

impl Read for FileReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.current.len() {
            match self.next_chunk().map_err(io::Error::other)? {
                Some(chunk) => {
                    self.current = chunk;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Recovers a repository error carried through `io::Error` by a [`FileReader`].
pub fn unwrap_io(e: io::Error, context: &str) -> RepoError {
    if !e.get_ref().is_some_and(|inner| inner.is::<RepoError>()) {
        return RepoError::io(context, e);
    }
    match e.into_inner().map(|inner| inner.downcast::<RepoError>()) {
        Some(Ok(repo_err)) => *repo_err,
        _ => RepoError::Invalid(format!("{context}: read failed")),
    }
}
