//! The content-addressed repository: chunks named by their hash (BLAKE3, or SHA-256 in format
//! 1 repositories), compressed, grouped into
//! packs, found through index files, and tied together by snapshot and binlog manifests.
//! See `docs/repository-format.md` for the format and its invariants.
//!
//! Knows nothing of MySQL: it stores streams and files and the strings that describe them.
//!
//! Object layout in a store:
//!
//! ```text
//! config                          format version, id, hash, chunker and pack settings
//! packs/<2 hex>/<pack id>         pack files
//! index/<index id>                index files (which blob is in which pack)
//! snapshots/<snapshot id>         snapshot manifests
//! binlog/<server uuid>/<file>/<archived size, 20 digits>   binlog segment manifests
//! gaps/<time>-<random>            holes in a binlog archive the streamer found
//! locks/<lock id>                 locks
//! pruned                          a random mark, rewritten by every prune
//! ```

pub mod adaptive;
pub mod bytes;
pub mod chunker;
pub mod codec;
pub mod config;
pub mod copy;
pub mod delta;
pub mod error;
pub mod id;
pub mod index;
pub mod key;
mod listing;
pub mod lock;
pub mod manifest;
pub mod pack;
pub mod prune;
pub(crate) mod read_ahead;
pub mod reader;
pub mod repack;
pub mod retention;
pub mod throttle;
mod upload;
pub mod verify;
pub mod writer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

pub use error::{RepoError, Result};
pub use id::{HashAlg, Id};

use crate::storage::Storage;
use crate::storage::encrypted::EncryptedStorage;
use config::RepoConfig;
use index::{BlobLocation, Index};
use key::RepoKey;
use manifest::{BinlogSegment, GapRecord, SnapshotManifest};
use pack::PackEntry;

pub const CONFIG_KEY: &str = "config";
/// Rewritten by every prune before it deletes anything: a writer that loaded the index
/// before a prune must load it again, or it could deduplicate against a deleted blob.
pub const PRUNED_KEY: &str = "pruned";
/// How a `pruned` mark starts when the index names no blob it cannot give back: written by
/// `init` and at the end of every prune of this myvault. Prunes of older versions (which left
/// deltas indexed after deleting their bases) and a prune still under way write marks
/// without it; while there is such a mark, writers check each delta they would reuse.
const SOUND_MARK: &str = "sound-";

/// A new `pruned` mark: `sound` when the index is known to name only readable blobs.
pub(crate) fn pruned_mark(sound: bool) -> String {
    let random = config::random_hex(16);
    if sound {
        format!("{SOUND_MARK}{random}")
    } else {
        random
    }
}

/// Repositories written in one pass share one manifest, so they must name content with the
/// same hash; the message says how to make them agree.
pub fn check_same_hash(repos: &[Arc<Repo>]) -> std::result::Result<(), String> {
    let Some(first) = repos.first() else {
        return Ok(());
    };
    match repos.iter().find(|r| r.hash() != first.hash()) {
        None => Ok(()),
        Some(other) => Err(format!(
            "{} names content with {} and {} with {}; write to them in separate runs \
             (or create the second one with `myvault init --hash {}`)",
            first.name(),
            first.hash(),
            other.name(),
            other.hash(),
            first.hash()
        )),
    }
}

pub fn pack_key(id: &Id) -> String {
    let hex = id.to_hex();
    format!("packs/{}/{}", &hex[..2], hex)
}

pub fn index_key(id: &Id) -> String {
    format!("index/{id}")
}

pub fn snapshot_key(id: &str) -> String {
    format!("snapshots/{id}")
}

pub fn binlog_key(server_uuid: &str, file: &str, size: u64) -> String {
    format!("binlog/{server_uuid}/{file}/{size:020}")
}

/// An opened repository: its store, its config, and (loaded on first use) its index.
#[derive(Debug)]
pub struct Repo {
    storage: Arc<dyn Storage>,
    config: RepoConfig,
    /// `None` until first needed; writers add the packs they upload, so a long-running
    /// writer keeps deduplicating against its own earlier uploads.
    index: RwLock<Option<Index>>,
    /// The base of each delta blob read so far (its first 32 stored bytes), so a writer that
    /// checks a delta before reusing it reads them once. Forgotten with the index.
    delta_bases: Mutex<HashMap<Id, Id>>,
    /// Whether the `pruned` mark says the index is sound (`None`: not read yet). Read with
    /// the index, forgotten with it.
    sound_index: Mutex<Option<bool>>,
}

/// The store as the repository sees it: encrypted below when there is a key. The config
/// stays plain (it says whether there is a key, and which), and so do the locks (a host
/// name, a pid and a command, refreshed while held; nothing of the data).
fn encrypted_view(storage: Arc<dyn Storage>, key: Option<&RepoKey>) -> Arc<dyn Storage> {
    match key {
        None => storage,
        Some(key) => Arc::new(EncryptedStorage::new(storage, key.cipher(), |k| {
            k == CONFIG_KEY || k.starts_with("locks/")
        })),
    }
}

/// Whether a `config` object was written by myvault (damaged or not), as opposed to another
/// tool that also names its settings `config` (restic, kopia): damage in ours is an integrity
/// failure, theirs is the wrong place.
fn is_myvault_config(data: &[u8]) -> bool {
    data.starts_with(b"MYVAULT ")
}

impl Repo {
    fn with_store(storage: Arc<dyn Storage>, config: RepoConfig) -> Repo {
        Repo {
            storage,
            config,
            index: RwLock::new(None),
            delta_bases: Mutex::new(HashMap::new()),
            sound_index: Mutex::new(None),
        }
    }

    /// Creates a repository in an empty store.
    pub fn init(storage: Arc<dyn Storage>, config: RepoConfig) -> Result<Repo> {
        Repo::init_with_key(storage, config, None)
    }

    /// Creates a repository, encrypted when `key` is given (the config then says so).
    pub fn init_with_key(
        storage: Arc<dyn Storage>,
        mut config: RepoConfig,
        key: Option<&RepoKey>,
    ) -> Result<Repo> {
        if let Some(key) = key {
            config.format = config::ENCRYPTED_FORMAT_VERSION;
            config.encryption = Some(key.info());
        }
        config.validate().map_err(RepoError::Invalid)?;
        if !storage.create(CONFIG_KEY, &manifest::encode("config", &config))? {
            let store = storage.name().to_string();
            return Err(match storage.get(CONFIG_KEY) {
                Ok(data) if !is_myvault_config(&data) => RepoError::Foreign { store },
                _ => RepoError::AlreadyInitialized { store },
            });
        }
        let repo = Repo::with_store(encrypted_view(storage, key), config);
        // An empty index is sound.
        repo.storage.put(PRUNED_KEY, pruned_mark(true).as_bytes())?;
        Ok(repo)
    }

    pub fn open(storage: Arc<dyn Storage>) -> Result<Repo> {
        Repo::open_with_key(storage, None)
    }

    /// Opens a repository; an encrypted one needs its key.
    pub fn open_with_key(storage: Arc<dyn Storage>, key: Option<&RepoKey>) -> Result<Repo> {
        let data = match storage.get(CONFIG_KEY) {
            Ok(d) => d,
            Err(e) if e.is_not_found() => {
                return Err(RepoError::NotARepository {
                    store: storage.name().to_string(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        if !is_myvault_config(&data) {
            return Err(RepoError::Foreign {
                store: storage.name().to_string(),
            });
        }
        let config: RepoConfig = manifest::decode("config", &data)
            .map_err(|d| RepoError::integrity(storage.name(), "config", d))?;
        config.validate().map_err(RepoError::Invalid)?;
        let key = match (&config.encryption, key) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(RepoError::KeyRequired {
                    store: storage.name().to_string(),
                });
            }
            (Some(info), Some(key)) if !key.opens(info) => {
                return Err(RepoError::WrongKey {
                    store: storage.name().to_string(),
                });
            }
            (Some(_), key) => key,
        };
        Ok(Repo::with_store(encrypted_view(storage, key), config))
    }

    /// Whether objects are encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.config.encryption.is_some()
    }

    /// Opens the repository, creating it first if the store holds none.
    pub fn open_or_init(storage: Arc<dyn Storage>, config: RepoConfig) -> Result<Repo> {
        match Repo::open(storage.clone()) {
            Err(RepoError::NotARepository { .. }) => match Repo::init(storage.clone(), config) {
                Err(RepoError::AlreadyInitialized { .. }) => Repo::open(storage),
                other => other,
            },
            other => other,
        }
    }

    pub fn name(&self) -> &str {
        self.storage.name()
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// The hash naming this repository's blobs, packs and file contents.
    pub fn hash(&self) -> HashAlg {
        self.config.hash
    }

    /// Runs `f` on the index, loading it from the index files first if needed.
    pub fn with_index<R>(&self, f: impl FnOnce(&Index) -> R) -> Result<R> {
        {
            let guard = self.read_index();
            if let Some(idx) = guard.as_ref() {
                return Ok(f(idx));
            }
        }
        let loaded = self.load_index()?;
        let mut slot = self.index.write().unwrap_or_else(|e| e.into_inner());
        let idx = slot.get_or_insert(loaded);
        Ok(f(idx))
    }

    fn read_index(&self) -> RwLockReadGuard<'_, Option<Index>> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn has_blob(&self, id: &Id) -> Result<bool> {
        self.with_index(|idx| idx.contains(id))
    }

    pub fn blob(&self, id: &Id) -> Result<Option<BlobLocation>> {
        self.with_index(|idx| idx.get(id))
    }

    /// Makes packs this process has uploaded (and indexed) known without a reload.
    pub fn record_packs(&self, packs: &[(Id, Vec<PackEntry>)]) {
        let mut slot = self.index.write().unwrap_or_else(|e| e.into_inner());
        if let Some(idx) = slot.as_mut() {
            for (pack, entries) in packs {
                idx.add_pack(*pack, entries);
            }
        }
    }

    /// The mark the last prune left (`None`: never pruned).
    pub fn pruned_mark(&self) -> Result<Option<String>> {
        match self.storage.get(PRUNED_KEY) {
            Ok(d) => Ok(Some(String::from_utf8_lossy(&d).into_owned())),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Forgets the loaded index, so the next use reads the index files again.
    pub fn reload_index(&self) {
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = None;
        self.delta_bases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        *self.sound_index.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Whether the last prune (or `init`) left an index that names only readable blobs.
    pub(crate) fn index_is_sound(&self) -> Result<bool> {
        let mut known = self.sound_index.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sound) = *known {
            return Ok(sound);
        }
        let sound = self
            .pruned_mark()?
            .is_some_and(|m| m.starts_with(SOUND_MARK));
        *known = Some(sound);
        Ok(sound)
    }

    fn load_index(&self) -> Result<Index> {
        let files = self.storage.list("index/")?;
        // Sized once, for as many entries as the files' bytes can hold (a few percent more
        // than they do): see `Index::with_capacity`.
        let mut idx =
            Index::with_capacity(index::entries_at_most(files.iter().map(|o| o.size).sum()));
        // A file merged away by a concurrent writer is read again from the merged file, which
        // was written before it went (see `listing`).
        listing::read_listing(self.storage.as_ref(), "index/", files, |key, read| {
            let packs = index::decode_file(&read?)
                .map_err(|d| RepoError::integrity(self.name(), key, d))?;
            for (pack, entries) in &packs {
                idx.add_pack(*pack, entries);
            }
            Ok(())
        })?;
        Ok(idx)
    }

    /// All snapshot manifests, oldest first. A damaged manifest is an error naming it.
    pub fn snapshots(&self) -> Result<Vec<SnapshotManifest>> {
        let mut out = Vec::new();
        // A snapshot pruned since the listing is gone, not an error.
        listing::read_listed(self.storage.as_ref(), "snapshots/", |key, read| {
            let id = key.trim_start_matches("snapshots/");
            out.push(self.decode_snapshot(id, &read?)?);
            Ok(())
        })?;
        out.sort_by(|a, b| a.time.cmp(&b.time).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    pub fn snapshot(&self, id: &str) -> Result<SnapshotManifest> {
        let key = snapshot_key(id);
        let data = self.storage.get(&key).map_err(|e| {
            if e.is_not_found() {
                RepoError::NotFound {
                    store: self.name().to_string(),
                    what: format!("snapshot {id}"),
                }
            } else {
                e.into()
            }
        })?;
        self.decode_snapshot(id, &data)
    }

    fn decode_snapshot(&self, id: &str, data: &[u8]) -> Result<SnapshotManifest> {
        manifest::decode("snapshot", data)
            .map_err(|d| RepoError::integrity(self.name(), format!("snapshot {id}"), d))
    }

    /// Resolves `latest`, a full id or a unique prefix of one. An id is matched against the
    /// manifests' names, so a damaged manifest of another snapshot does not stand in the way.
    pub fn find_snapshot(&self, wanted: &str) -> Result<SnapshotManifest> {
        let not_found = || RepoError::NotFound {
            store: self.name().to_string(),
            what: format!("snapshot {wanted}"),
        };
        if wanted == "latest" {
            return self
                .snapshots()?
                .into_iter()
                .next_back()
                .ok_or_else(not_found);
        }
        let matches: Vec<String> = self
            .storage
            .list("snapshots/")?
            .into_iter()
            .filter_map(|o| o.key.strip_prefix("snapshots/").map(str::to_string))
            .filter(|id| id.starts_with(wanted))
            .collect();
        match matches.len() {
            0 => Err(not_found()),
            1 => self.snapshot(&matches[0]),
            n => Err(RepoError::Invalid(format!(
                "snapshot id prefix {wanted} matches {n} snapshots; give more of it"
            ))),
        }
    }

    /// Gaps the streamer recorded (`gaps/`), oldest first.
    pub fn gaps(&self) -> Result<Vec<GapRecord>> {
        self.read_manifests("gaps/", "gap")
    }

    /// All binlog segment manifests, by server and file.
    pub fn binlog_segments(&self) -> Result<Vec<BinlogSegment>> {
        // A segment the streamer replaced by a longer one of the same file since the listing
        // is read again as the longer one.
        self.read_manifests("binlog/", "binlog")
    }

    /// Every `kind` manifest under `prefix`; a damaged one is an error naming it.
    fn read_manifests<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &str,
        kind: &str,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        listing::read_listed(self.storage.as_ref(), prefix, |key, read| {
            let m = manifest::decode::<T>(kind, &read?)
                .map_err(|d| RepoError::integrity(self.name(), key, d))?;
            out.push(m);
            Ok(())
        })?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
