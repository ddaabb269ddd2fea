//! Opening the repositories a command names, with the rules every command shares: a write
//! to several repositories goes on when some of them cannot be opened, and says so.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::repo::key::RepoKey;
use crate::repo::lock::{LockGuard, LockKind};
use crate::repo::writer::TargetOutcome;
use crate::repo::{Repo, RepoError};
use crate::storage::{self, Location, OpenOptions};

pub fn open(location: &str, opts: &OpenOptions) -> Result<Arc<Repo>> {
    open_with(location, opts, read_key(opts)?.as_ref())
}

fn open_with(location: &str, opts: &OpenOptions, key: Option<&RepoKey>) -> Result<Arc<Repo>> {
    let store = storage::open(&Location::parse(location)?, opts)?;
    Ok(Arc::new(Repo::open_with_key(store, key)?))
}

/// The key of `--encryption-key-file`, when one is given.
pub fn read_key(opts: &OpenOptions) -> Result<Option<RepoKey>> {
    opts.encryption_key_file
        .as_deref()
        .map(RepoKey::read_file)
        .transpose()
        .map_err(Error::Usage)
}

/// Repositories opened and locked for writing, and those that could not be.
pub struct WriteSet {
    pub repos: Vec<Arc<Repo>>,
    pub locks: Vec<LockGuard>,
    pub unavailable: Vec<TargetOutcome>,
}

/// Opens and share-locks every repository. A repository that cannot be opened is reported
/// and left out, unless none can be; a lock conflict stops the command, since it means
/// another process is pruning.
pub fn open_for_write(locations: &[String], opts: &OpenOptions, command: &str) -> Result<WriteSet> {
    let mut set = WriteSet {
        repos: Vec::new(),
        locks: Vec::new(),
        unavailable: Vec::new(),
    };
    let mut first_error = None;
    // A bad key file or a mistyped location is the command's error, not one repository's:
    // going on without it would write fewer copies than the operator asked for.
    let key = read_key(opts)?;
    for loc in locations {
        Location::parse(loc)?;
    }
    for loc in locations {
        match open_with(loc, opts, key.as_ref()) {
            Ok(repo) => {
                let guard = LockGuard::acquire(repo.storage().clone(), LockKind::Shared, command)?;
                set.locks.push(guard);
                set.repos.push(repo);
            }
            Err(e) => {
                set.unavailable.push(TargetOutcome {
                    repo: loc.clone(),
                    error: Some(e.to_string()),
                    new_bytes: 0,
                    new_chunks: 0,
                });
                first_error.get_or_insert(e);
            }
        }
    }
    if set.repos.is_empty() {
        return Err(first_error.unwrap_or_else(|| Error::Usage("no --repo given".into())));
    }
    crate::repo::check_same_hash(&set.repos).map_err(Error::Usage)?;
    Ok(set)
}

/// Turns per-repository outcomes into the command's result: all good, partial, or failed.
pub fn conclude(outcomes: &[TargetOutcome]) -> Result<()> {
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.error.as_ref().map(|e| format!("{} ({e})", o.repo)))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else if failed.len() == outcomes.len() {
        Err(RepoError::WriteFailed(failed.join("; ")).into())
    } else {
        Err(Error::PartialSuccess(format!(
            "written to {} of {} repositories; failed: {}",
            outcomes.len() - failed.len(),
            outcomes.len(),
            failed.join("; ")
        )))
    }
}
