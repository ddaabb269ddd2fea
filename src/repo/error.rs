//! Repository errors. They name the store (path or `s3://...`) and the object concerned.

use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(transparent)]
    Storage(#[from] StorageError),

    #[error(
        "{store} is not a myvault repository (no config); create one with `myvault init --repo {store}`"
    )]
    NotARepository { store: String },

    #[error("{store} already holds a myvault repository")]
    AlreadyInitialized { store: String },

    /// The store holds a `config` object that is not myvault's: another tool's repository.
    #[error(
        "{store} is not a myvault repository: it holds a `config` that is not myvault's (another tool's repository?); give myvault a directory or prefix of its own"
    )]
    Foreign { store: String },

    /// Stored data does not match its checksum, or a structure is damaged.
    #[error("{store}: integrity failure in {what}: {detail}")]
    Integrity {
        store: String,
        what: String,
        detail: String,
    },

    #[error(
        "{store} is locked by {holder}; if that process is gone, run `myvault unlock --repo {store}`"
    )]
    Locked { store: String, holder: String },

    #[error(
        "{store} is encrypted; give its key with --encryption-key-file FILE (or MYVAULT_ENCRYPTION_KEY_FILE)"
    )]
    KeyRequired { store: String },

    #[error("the encryption key given does not open {store} (it was created with another key)")]
    WrongKey { store: String },

    #[error("{store}: {what} not found")]
    NotFound { store: String, what: String },

    #[error("{0}")]
    Invalid(String),

    /// Every repository of a write failed.
    #[error("writing failed in every repository: {0}")]
    WriteFailed(String),

    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl RepoError {
    pub fn integrity(store: &str, what: impl Into<String>, detail: impl Into<String>) -> RepoError {
        RepoError::Integrity {
            store: store.to_string(),
            what: what.into(),
            detail: detail.into(),
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> RepoError {
        RepoError::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = RepoError> = std::result::Result<T, E>;
