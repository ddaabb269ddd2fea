//! One repository's side of a write: blobs into packs, packs into storage.
//!
//! The threads that compress chunks add blobs to the pack being filled; this target's upload
//! thread stores packs while the next one fills. Where the storage takes an object in parts
//! (a local directory), every MiB of a pack goes to the upload thread as soon as it is
//! filled, so the end of a write waits for its last MiB rather than for up to two whole
//! packs: a 16 MiB pack took ~15 ms to reach this machine's disk, at the end of every
//! backup. Elsewhere (object stores, encryption) packs are stored whole.
//!
//! Locks: a producer may send a part to the upload thread while it holds `filling` (parts of
//! one pack must arrive in order), so the upload thread never takes `filling`; what it
//! reports goes to `done`. Where both are held, `filling` is taken first.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::codec::Codec;
use super::id::{Hasher, Id};
use super::index::Indexed;
use super::pack::{self, PackBuilder, PackBytes, PackEntry};
use super::writer::TargetOutcome;
use super::{Repo, index, index_key, pack_key};
use crate::storage::StagedObject;

/// Where storage takes packs in parts: the least a part holds.
const PART: usize = 1 << 20;
/// Where storage takes packs in parts: parts that may wait for the upload thread.
const PARTS_QUEUED: usize = 4;

enum Upload {
    /// The next bytes of pack `pack`.
    Part { pack: u64, bytes: PackBytes },
    /// The last bytes of pack `pack` (all of them when no part came before) and its blobs.
    /// `own_index`: store an index file for this pack alone, so an interrupted write leaves
    /// it indexed and a rerun reuses it.
    End {
        pack: u64,
        bytes: PackBytes,
        entries: Vec<PackEntry>,
        own_index: bool,
    },
}

struct Filling {
    pack: PackBuilder,
    /// Numbers packs, so the upload thread tells their parts apart.
    pack_no: u64,
    /// Blobs claimed by this writer, with their codec once added (in packs stored, on their
    /// way, or being filled).
    added: HashMap<Id, Option<Codec>>,
    new_chunks: u64,
}

#[derive(Default)]
struct Done {
    uploaded: Vec<(Id, Vec<PackEntry>)>,
    /// The index files of single packs; merged into one file when the writer finishes.
    pack_index_keys: Vec<String>,
    /// Some stored pack has no index file of its own (the last one never has).
    unindexed: bool,
    failed: Option<String>,
    new_bytes: u64,
}

/// What a writer must do about a blob in one repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Claim {
    /// Stored already (readably), or on its way.
    Held,
    /// Not there: store it.
    New,
    /// Indexed as a delta that cannot be read (its base is gone): store it again, whole, which
    /// the index then prefers.
    Replace,
}

pub(super) struct Target {
    pub(super) repo: Arc<Repo>,
    filling: Mutex<Filling>,
    done: Arc<Mutex<Done>>,
    /// Emptied buffers, filled again by the next pack or part: allocating and freeing MiBs
    /// per pack cost page faults (and, in VMs, host faults) on every byte.
    spare: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Capacity of each buffer: a whole pack, or a part (plus one blob either way).
    capacity: usize,
    in_parts: bool,
    pack_size: usize,
    sender: Mutex<Option<SyncSender<Upload>>>,
    uploader: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update is complete before a lock is released, so a poisoned lock still guards
    // consistent data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Target {
    /// `room`: what one blob and a pack header may add beyond `pack_size`.
    pub(super) fn new(repo: Arc<Repo>, pack_size: usize, room: usize) -> Target {
        let in_parts = repo.storage().can_stage();
        let (capacity, queued, kept) = if in_parts {
            (PART + room, PARTS_QUEUED, PARTS_QUEUED + 2)
        } else {
            // The next pack fills while one is stored, and that one's buffer is kept for
            // reuse: at most three whole packs in memory.
            (pack_size + room, 0, 1)
        };
        let done = Arc::new(Mutex::new(Done::default()));
        let spare = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = sync_channel::<Upload>(queued);
        let uploader = {
            let (repo, done, spare) = (repo.clone(), done.clone(), spare.clone());
            std::thread::spawn(move || upload(&repo, rx, &done, &spare, kept))
        };
        Target {
            filling: Mutex::new(Filling {
                pack: PackBuilder::new(capacity),
                pack_no: 0,
                added: HashMap::new(),
                new_chunks: 0,
            }),
            repo,
            done,
            spare,
            capacity,
            in_parts,
            pack_size,
            sender: Mutex::new(Some(tx)),
            uploader: Mutex::new(Some(uploader)),
        }
    }

    pub(super) fn failed(&self) -> bool {
        lock(&self.done).failed.is_some()
    }

    pub(super) fn failure(&self) -> Option<String> {
        lock(&self.done).failed.clone()
    }

    pub(super) fn fail(&self, why: String) {
        fail(&self.done, why);
    }

    /// Whether blob `id` is in this repository or on its way there, stored whole: only such a
    /// blob may be a delta's base here (a base is never a delta, and the same chunk may be a
    /// delta in one repository and whole in another).
    pub(super) fn holds_whole(&self, id: &Id) -> bool {
        if let Some(codec) = lock(&self.filling).added.get(id) {
            // Claimed but not added yet: its codec is not known.
            return codec.is_some_and(|c| c != Codec::Delta);
        }
        self.repo
            .blob(id)
            .is_ok_and(|l| l.is_some_and(|l| l.codec != Codec::Delta))
    }

    /// Whether this repository still needs blob `id`; if so, marks it as on its way.
    pub(super) fn claim(&self, id: &Id) -> Claim {
        if self.failed() || lock(&self.filling).added.contains_key(id) {
            return Claim::Held;
        }
        // Outside the lock: checking a delta may read its base's id from storage.
        let indexed = self.repo.indexed(id);
        let mut f = lock(&self.filling);
        if f.added.contains_key(id) {
            return Claim::Held;
        }
        let claim = match indexed {
            Ok(Indexed::Readable) => return Claim::Held,
            Ok(Indexed::Absent) => Claim::New,
            Ok(Indexed::Unreadable) => Claim::Replace,
            Err(e) => {
                self.fail(e.to_string());
                return Claim::Held;
            }
        };
        f.added.insert(*id, None);
        claim
    }

    /// Adds a blob to the pack being filled; sends what is ready to the upload thread.
    pub(super) fn add(&self, id: Id, codec: Codec, raw_len: u32, stored: &[u8]) {
        let full = {
            let mut f = lock(&self.filling);
            if self.failed() {
                return;
            }
            f.pack.add(id, codec, raw_len, stored);
            f.added.insert(id, Some(codec));
            f.new_chunks += 1;
            if f.pack.len() >= self.pack_size {
                let no = f.pack_no;
                f.pack_no += 1;
                Some((no, std::mem::replace(&mut f.pack, self.empty_pack())))
            } else {
                if self.in_parts
                    && let Some(bytes) = f.pack.take_part(PART, || self.buffer())
                {
                    // Under the lock: the parts of a pack must reach the thread in order.
                    self.send(Upload::Part {
                        pack: f.pack_no,
                        bytes,
                    });
                }
                None
            }
        };
        // A finished pack's parts were all sent under the lock, before it was replaced.
        if let Some((pack, full)) = full {
            self.send_end(pack, full, true);
        }
    }

    /// Finishes pack `pack` and sends the rest of it to the upload thread.
    fn send_end(&self, pack: u64, builder: PackBuilder, own_index: bool) {
        let (bytes, entries) = builder.finish();
        self.send(Upload::End {
            pack,
            bytes,
            entries,
            own_index,
        });
    }

    fn buffer(&self) -> Vec<u8> {
        lock(&self.spare)
            .pop()
            .unwrap_or_else(|| pack::buffer(self.capacity))
    }

    fn empty_pack(&self) -> PackBuilder {
        PackBuilder::reusing(self.buffer())
    }

    fn send(&self, upload: Upload) {
        let sender = lock(&self.sender).clone();
        match sender {
            Some(tx) => {
                if tx.send(upload).is_err() {
                    self.fail("the upload thread stopped".into());
                }
            }
            None => self.fail("pack sent after the writer was closed".into()),
        }
    }

    /// Sends the last partial pack, without an index file of its own ([`Target::merge_index`]
    /// writes the one that covers it), and waits for every upload to end.
    pub(super) fn drain(&self) {
        let last = {
            let mut f = lock(&self.filling);
            (!f.pack.is_empty() && !self.failed()).then(|| {
                (
                    f.pack_no,
                    std::mem::replace(&mut f.pack, PackBuilder::new(0)),
                )
            })
        };
        if let Some((pack, last)) = last {
            self.send_end(pack, last, false);
        }
        self.close();
    }

    /// Stops the upload thread once it has done what was sent.
    pub(super) fn close(&self) {
        drop(lock(&self.sender).take());
        if let Some(handle) = lock(&self.uploader).take()
            && handle.join().is_err()
        {
            self.fail("the upload thread panicked".into());
        }
    }

    /// After [`Target::drain`]: replaces the index files of single packs with one that also
    /// covers the packs without. Returns the index files it made redundant, for the caller to
    /// remove once nothing waits on it.
    pub(super) fn merge_index(&self) -> Result<Vec<String>, String> {
        let (uploaded, keys, unindexed) = {
            let mut d = lock(&self.done);
            (
                std::mem::take(&mut d.uploaded),
                std::mem::take(&mut d.pack_index_keys),
                std::mem::take(&mut d.unindexed),
            )
        };
        if uploaded.len() < 2 && !unindexed {
            self.repo.record_packs(&uploaded);
            return Ok(Vec::new());
        }
        let file = index::encode_file(&uploaded);
        let merged = index_key(&Id::sha256(&file));
        self.repo
            .storage()
            .put(&merged, &file)
            .map_err(|e| e.to_string())?;
        self.repo.record_packs(&uploaded);
        Ok(keys.into_iter().filter(|k| *k != merged).collect())
    }

    pub(super) fn outcome(&self) -> TargetOutcome {
        let new_chunks = lock(&self.filling).new_chunks;
        let d = lock(&self.done);
        TargetOutcome {
            repo: self.repo.name().to_string(),
            error: d.failed.clone(),
            new_bytes: d.new_bytes,
            new_chunks,
        }
    }
}

fn fail(done: &Mutex<Done>, why: String) {
    let mut d = lock(done);
    if d.failed.is_none() {
        d.failed = Some(why);
    }
}

/// A pack whose parts are being stored, named by the hash of all its bytes at the end.
struct Staged {
    object: Box<dyn StagedObject>,
    hasher: Hasher,
    len: u64,
}

impl Staged {
    fn append(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        self.object.append(bytes).map_err(|e| e.to_string())
    }
}

/// The upload thread: stores packs (whole or in parts) and their index files, in the order
/// sent, and keeps up to `kept` emptied buffers for reuse.
fn upload(
    repo: &Repo,
    rx: Receiver<Upload>,
    done: &Mutex<Done>,
    spare: &Mutex<Vec<Vec<u8>>>,
    kept: usize,
) {
    let storage = repo.storage();
    let mut open: HashMap<u64, Staged> = HashMap::new();
    for message in rx {
        let failed = lock(done).failed.is_some();
        if failed {
            // Abandoned parts are removed as their objects drop.
            open.clear();
        }
        let bytes = match message {
            Upload::Part { pack, bytes } => {
                if !failed {
                    let staged = match open.remove(&pack) {
                        Some(s) => Ok(s),
                        None => match storage.stage("packs") {
                            Ok(Some(object)) => Ok(Staged {
                                object,
                                hasher: repo.hash().hasher(),
                                len: 0,
                            }),
                            Ok(None) => Err(format!("{} cannot store parts", storage.name())),
                            Err(e) => Err(e.to_string()),
                        },
                    };
                    match staged.and_then(|mut s| s.append(&bytes).map(|()| s)) {
                        Ok(s) => {
                            open.insert(pack, s);
                        }
                        Err(e) => fail(done, e),
                    }
                }
                bytes
            }
            Upload::End {
                pack,
                bytes,
                entries,
                own_index,
            } => {
                if !failed {
                    match store(repo, open.remove(&pack), &bytes, entries, own_index) {
                        Ok((id, entries, len, index_key)) => {
                            let mut d = lock(done);
                            d.new_bytes += len;
                            d.uploaded.push((id, entries));
                            match index_key {
                                Some(key) => d.pack_index_keys.push(key),
                                None => d.unindexed = true,
                            }
                        }
                        Err(e) => fail(done, e),
                    }
                }
                bytes
            }
        };
        let mut spare = lock(spare);
        if spare.len() < kept {
            spare.push(bytes.into_buffer());
        }
    }
}

/// Stores the end of a pack (or all of it) and, if asked, an index file for it alone.
/// Returns the pack's id, blobs, size and index file.
fn store(
    repo: &Repo,
    staged: Option<Staged>,
    last: &[u8],
    entries: Vec<PackEntry>,
    own_index: bool,
) -> Result<(Id, Vec<PackEntry>, u64, Option<String>), String> {
    let storage = repo.storage();
    let (id, len) = match staged {
        Some(mut s) => {
            s.append(last)?;
            let id = s.hasher.finish();
            s.object.commit(&pack_key(&id)).map_err(|e| e.to_string())?;
            (id, s.len)
        }
        None => {
            let id = repo.hash().id(last);
            storage
                .put(&pack_key(&id), last)
                .map_err(|e| e.to_string())?;
            (id, last.len() as u64)
        }
    };
    let indexed = [(id, entries)];
    let index_key = if own_index {
        let file = index::encode_file(&indexed);
        let key = index_key(&Id::sha256(&file));
        storage.put(&key, &file).map_err(|e| e.to_string())?;
        Some(key)
    } else {
        None
    };
    let [(id, entries)] = indexed;
    Ok((id, entries, len, index_key))
}
