//! The crate's error type.
//!
//! Rules:
//! - Library code returns these; it never exits or panics on bad input. `main` alone turns an
//!   error into an exit code, through [`Error::kind`].
//! - Every message is one line that says what failed and, where there is one, what to do.
//! - No message contains a password or key: URLs appear redacted, secrets as `***`.

use crate::mysql;
use crate::repo::RepoError;
use crate::storage::StorageError;

/// What kind of failure it was, as far as the operator (and the exit code) is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad flags, a malformed URL, an invalid config file.
    Usage,
    /// The source server could not be reached, or the connection was lost.
    SourceUnreachable,
    /// The server refused the login, or the user lacks a privilege.
    AccessDenied,
    /// The peer is not a MySQL server, or TLS could not be set up.
    Protocol,
    /// The server is reachable but not set up for what was asked (see `myvault check`).
    SourceNotReady,
    /// Another process holds a conflicting repository lock.
    RepoLocked,
    /// Stored data does not match its checksum, or a manifest is damaged.
    Integrity,
    /// Some repositories were written and others failed.
    PartialSuccess,
    /// The repository's storage failed: missing, not writable, unreachable.
    Storage,
    /// The binlog archive misses transactions the source has already purged.
    BinlogGap,
    /// The restore target was refused (not empty, in use, conflicting GTIDs).
    TargetRefused,
    /// Nothing in the repository satisfies the request (no snapshot before TIME, ...).
    NotFound,
    /// A single-table restore's destination exists and was not to be replaced.
    TableExists,
    /// `status` found a critical problem.
    Unhealthy,
    /// `flashback` found rows changed since the transactions to undo, and changed nothing.
    Conflict,
    /// Stopped by a signal.
    Interrupted,
    /// A bug, or a failure nothing above describes.
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),

    #[error(transparent)]
    Url(#[from] mysql::url::UrlError),

    #[error(transparent)]
    Mysql(#[from] mysql::Error),

    #[error(transparent)]
    Repo(#[from] RepoError),

    #[error(transparent)]
    Storage(#[from] StorageError),

    #[error(transparent)]
    Location(#[from] crate::storage::BadLocation),

    #[error(transparent)]
    UnnumberedBinlog(#[from] crate::binlog::coverage::UnnumberedFile),

    #[error(transparent)]
    Spool(#[from] crate::binlog::spool::SpoolError),

    /// Some repositories were written, others failed; the message names them.
    #[error("{0}")]
    PartialSuccess(String),

    #[error("{0}")]
    SourceNotReady(String),

    /// The account lacks privileges; the message holds the GRANT that fixes it.
    #[error("{0}")]
    MissingPrivileges(String),

    #[error("{0}")]
    TargetRefused(String),

    /// The source purged binlogs the archive needs; the message names the lost GTIDs.
    #[error("{0}")]
    BinlogGap(String),

    #[error("{0}")]
    NotFound(String),

    /// A single-table restore would overwrite this table; the message names it.
    #[error("{0}")]
    TableExists(String),

    /// A restored table differs from what the backup read; the message names the tables.
    #[error("{0}")]
    ContentMismatch(String),
    /// A file myvault reads outside a repository (a binlog in a data directory) is damaged;
    /// the message names the file and where.
    #[error("{0}")]
    DamagedFile(String),
    /// `status` found critical problems; the message counts them and names the first.
    #[error("{0}")]
    Unhealthy(String),
    /// Rows changed since the transactions `flashback` was asked to undo; the message names
    /// them.
    #[error("{0}")]
    Conflict(String),

    #[error("interrupted")]
    Interrupted,

    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },

    #[error("{0}")]
    Internal(String),

    /// One step of a longer operation failed: the step and the object it was about, then the
    /// cause ("creating table `shop`.`orders`: ..."). The exit code is the cause's.
    #[error("{step}: {source}")]
    Step { step: String, source: Box<Error> },
}

impl Error {
    /// Appends a hint to errors that carry their own message; others stay as they are.
    pub fn with_note(self, note: &str) -> Error {
        match self {
            Error::Usage(m) => Error::Usage(format!("{m} ({note})")),
            Error::SourceNotReady(m) => Error::SourceNotReady(format!("{m} ({note})")),
            Error::TargetRefused(m) => Error::TargetRefused(format!("{m} ({note})")),
            Error::Internal(m) => Error::Internal(format!("{m} ({note})")),
            other => other,
        }
    }

    /// This error as the failure of `step` ("loading rows into `db`.`t`").
    pub fn during(self, step: impl Into<String>) -> Error {
        Error::Step {
            step: step.into(),
            source: Box::new(self),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Step { source, .. } => source.kind(),
            Error::Usage(_) | Error::Url(_) | Error::Location(_) => ErrorKind::Usage,
            Error::Mysql(e) => mysql_kind(e),
            Error::Repo(e) => repo_kind(e),
            Error::Storage(StorageError::Damaged { .. }) => ErrorKind::Integrity,
            Error::Storage(_) => ErrorKind::Storage,
            Error::Spool(crate::binlog::spool::SpoolError::Damaged { .. }) => ErrorKind::Integrity,
            Error::Spool(crate::binlog::spool::SpoolError::InUse { .. }) => ErrorKind::RepoLocked,
            Error::Spool(_) => ErrorKind::Internal,
            Error::UnnumberedBinlog(_) => ErrorKind::Integrity,
            Error::PartialSuccess(_) => ErrorKind::PartialSuccess,
            Error::SourceNotReady(_) => ErrorKind::SourceNotReady,
            Error::MissingPrivileges(_) => ErrorKind::AccessDenied,
            Error::TargetRefused(_) => ErrorKind::TargetRefused,
            Error::BinlogGap(_) => ErrorKind::BinlogGap,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::TableExists(_) => ErrorKind::TableExists,
            Error::ContentMismatch(_) | Error::DamagedFile(_) => ErrorKind::Integrity,
            Error::Unhealthy(_) => ErrorKind::Unhealthy,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::Interrupted => ErrorKind::Interrupted,
            Error::Io { .. } | Error::Internal(_) => ErrorKind::Internal,
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

fn repo_kind(e: &RepoError) -> ErrorKind {
    match e {
        RepoError::Storage(StorageError::Damaged { .. }) => ErrorKind::Integrity,
        RepoError::Storage(_)
        | RepoError::WriteFailed(_)
        | RepoError::NotARepository { .. }
        | RepoError::Foreign { .. } => ErrorKind::Storage,
        RepoError::AlreadyInitialized { .. } | RepoError::Invalid(_) => ErrorKind::Usage,
        RepoError::Integrity { .. } => ErrorKind::Integrity,
        RepoError::Locked { .. } => ErrorKind::RepoLocked,
        RepoError::KeyRequired { .. } => ErrorKind::Usage,
        RepoError::WrongKey { .. } => ErrorKind::AccessDenied,
        RepoError::NotFound { .. } => ErrorKind::NotFound,
        RepoError::Io { .. } => ErrorKind::Internal,
    }
}

fn mysql_kind(e: &mysql::Error) -> ErrorKind {
    use mysql::Error as M;
    use mysql::error::codes;
    match e {
        M::Unreachable { .. } | M::ConnectionLost { .. } => ErrorKind::SourceUnreachable,
        M::AccessDenied { .. } => ErrorKind::AccessDenied,
        M::NotMysql { .. } | M::Tls { .. } => ErrorKind::Protocol,
        M::Server { code, .. }
            if [
                codes::SPECIFIC_ACCESS_DENIED,
                codes::TABLE_ACCESS_DENIED,
                codes::DB_ACCESS_DENIED,
                codes::ACCESS_DENIED,
            ]
            .contains(code) =>
        {
            ErrorKind::AccessDenied
        }
        M::Server { code, .. } if *code == codes::SERVER_SHUTDOWN => ErrorKind::SourceUnreachable,
        M::Server { .. } | M::Unexpected { .. } => ErrorKind::Internal,
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The result of a joined thread: a panic becomes an internal error naming the thread.
pub fn joined<T>(outcome: std::thread::Result<Result<T>>, thread: &str) -> Result<T> {
    outcome.unwrap_or_else(|_| Err(Error::Internal(format!("the {thread} thread panicked"))))
}
