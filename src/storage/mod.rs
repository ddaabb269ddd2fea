//! A dumb keyed blob store, and its backends: local filesystem, S3, memory.
//!
//! Knows nothing of MySQL or of the repository format. Keys are relative, `/`-separated paths
//! such as `packs/3f/3fa9...`; a backend maps them onto directories or object names.
//! Objects are small enough to hold in memory (packs are tens of MiB): large data is always
//! cut into chunks and packs above this layer.

pub mod conformance;
#[cfg(test)]
pub mod crashing;
mod direct_write;
pub mod encrypted;
#[cfg(feature = "failpoints")]
mod failpoints;
pub mod local;
pub mod location;
pub mod memory;
pub mod retry;
pub mod s3;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use location::{BadLocation, Location};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    #[error("{store}: {key} not found")]
    NotFound { store: String, key: String },

    /// Credentials refused, or no permission on the path or bucket.
    #[error("{store}: access denied: {detail}")]
    Denied { store: String, detail: String },

    /// A failure that may pass: network error, timeout, server busy or 5xx. Worth a retry.
    #[error("{store}: unavailable: {detail}")]
    Unavailable { store: String, detail: String },

    /// The object is there but is not what was written: it does not decrypt or authenticate.
    #[error("{store}: {key} {detail}")]
    Damaged {
        store: String,
        key: String,
        detail: String,
    },

    /// A failure that will not pass by retrying: missing bucket, not a directory, bad key.
    #[error("{store}: {detail}")]
    Failed { store: String, detail: String },
}

impl StorageError {
    pub fn is_transient(&self) -> bool {
        matches!(self, StorageError::Unavailable { .. })
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound { .. })
    }
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// An object listed by [`Storage::list`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

pub trait Storage: Send + Sync + fmt::Debug {
    /// How the store is named in messages: a path or `s3://bucket/prefix`. Never holds secrets.
    fn name(&self) -> &str;

    /// Stores `data` under `key`, replacing any object there. Readers see the old object or
    /// the new one, never a part of either; when this returns, the object is durable.
    fn put(&self, key: &str, data: &[u8]) -> Result<()>;

    /// Stores `data` under `key` only if no object is there; `Ok(false)` if one is. Atomic
    /// against concurrent creators (used for manifests and locks).
    fn create(&self, key: &str, data: &[u8]) -> Result<bool>;

    fn get(&self, key: &str) -> Result<Vec<u8>>;

    /// `len` bytes from `offset`; fewer only when the object ends first.
    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>>;

    /// Like [`Storage::get_range`], appending to `buf` as the bytes arrive: when the transfer
    /// breaks, the bytes received so far stay in `buf`, so a retry can ask for the rest only
    /// (see [`retry::Retry`]). Stores that read whole ranges at once append them whole.
    fn get_range_into(&self, key: &str, offset: u64, len: u64, buf: &mut Vec<u8>) -> Result<()> {
        buf.extend_from_slice(&self.get_range(key, offset, len)?);
        Ok(())
    }

    /// The object's size, or `None` when there is no object.
    fn stat(&self, key: &str) -> Result<Option<u64>>;

    /// Every object whose key starts with `prefix`, sorted by key.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;

    /// Removes the object; removing a missing object is not an error.
    fn delete(&self, key: &str) -> Result<()>;

    /// Removes several objects, as durably as `delete` once it returns; stops at the first
    /// error. A store may batch the work (a directory is synced once, not once per file).
    fn delete_many(&self, keys: &[String]) -> Result<()> {
        keys.iter().try_for_each(|k| self.delete(k))
    }

    /// The temporary files of writes that never finished (their writer died), untouched for
    /// at least `age`, keyed as [`Storage::remove_leftovers`] takes them. Only stores that keep
    /// such files have any: an object store's abandoned multipart uploads are its lifecycle
    /// rules' to expire.
    fn leftovers(&self, age: Duration) -> Result<Vec<ObjectInfo>> {
        let _ = age;
        Ok(Vec::new())
    }

    /// Removes temporary files listed by [`Storage::leftovers`]; refuses any other key.
    fn remove_leftovers(&self, keys: &[String]) -> Result<()> {
        let _ = keys;
        Ok(())
    }

    /// Whether reads cross a network (object stores), so a copy elsewhere is cheaper to read.
    fn is_remote(&self) -> bool {
        false
    }

    /// Whether [`Storage::stage`] writes an object's parts as they come. Where it does not,
    /// callers gather the object and [`Storage::put`] it whole.
    fn can_stage(&self) -> bool {
        false
    }

    /// Starts an object that is written in parts and named only once complete (a pack, named
    /// by the hash of all its bytes), in directory `dir` or below it. `None` where
    /// [`Storage::can_stage`] is false.
    fn stage(&self, dir: &str) -> Result<Option<Box<dyn StagedObject>>> {
        let _ = dir;
        Ok(None)
    }
}

/// An object being written in parts: see [`Storage::stage`].
pub trait StagedObject: Send {
    /// Appends `part`. Parts that start on a page boundary and are whole pages long can be
    /// written around the page cache; after any other part, the rest goes through it.
    fn append(&mut self, part: &[u8]) -> Result<()>;

    /// Makes the object durable under `key`, which must lie in the directory given to
    /// [`Storage::stage`] or below it. Dropped without this, the object leaves nothing behind.
    fn commit(self: Box<Self>, key: &str) -> Result<()>;
}

/// Rejects keys that could escape the store's root or confuse object stores.
pub fn validate_key(store: &str, key: &str) -> Result<()> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.ends_with('/')
        || key
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        || key.bytes().any(|b| b < 0x20 || b == b'\\');
    if bad {
        return Err(StorageError::Failed {
            store: store.to_string(),
            detail: format!("invalid object key {key:?}"),
        });
    }
    Ok(())
}

/// How to reach object stores; local paths need nothing.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    /// `None`: path-style when an endpoint is given, virtual-host style otherwise.
    pub s3_path_style: Option<bool>,
    /// An AWS shared credentials file to read instead of the AWS environment's chain.
    pub s3_credentials_file: Option<std::path::PathBuf>,
    /// The profile to read (in `s3_credentials_file`, or the AWS files).
    pub s3_profile: Option<String>,
    /// The file holding the key of encrypted repositories (read when one is opened).
    pub encryption_key_file: Option<std::path::PathBuf>,
}

/// Opens an existing store: a directory, or `s3://bucket/prefix`.
pub fn open(location: &Location, opts: &OpenOptions) -> Result<Arc<dyn Storage>> {
    let store: Arc<dyn Storage> = match location {
        Location::Local(dir) => Arc::new(local::LocalStorage::open(dir)?),
        Location::S3(_) => open_s3(location, opts)?,
    };
    Ok(with_failpoints(store))
}

/// Opens a store for a new repository, creating the directory if needed.
pub fn create(location: &Location, opts: &OpenOptions) -> Result<Arc<dyn Storage>> {
    let store: Arc<dyn Storage> = match location {
        Location::Local(dir) => Arc::new(local::LocalStorage::create(dir)?),
        Location::S3(_) => open_s3(location, opts)?,
    };
    Ok(with_failpoints(store))
}

/// Test builds kill commands after their writes (see `failpoints`); others use the store as is.
fn with_failpoints(store: Arc<dyn Storage>) -> Arc<dyn Storage> {
    #[cfg(feature = "failpoints")]
    let store = failpoints::wrap(store);
    store
}

fn open_s3(location: &Location, opts: &OpenOptions) -> Result<Arc<dyn Storage>> {
    Ok(Arc::new(retry::Retry::new(s3::S3Storage::open(
        &location.to_string(),
        opts,
    )?)))
}
