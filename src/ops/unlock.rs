//! `myvault unlock`: removes stale locks (or all, when told).

use crate::error::Result;
use crate::repo::Repo;
use crate::repo::lock::{self, LockInfo};

pub fn run(repo: &Repo, all: bool) -> Result<Vec<LockInfo>> {
    Ok(lock::break_locks(repo.storage().as_ref(), all)?)
}

pub fn held(repo: &Repo) -> Result<Vec<LockInfo>> {
    Ok(lock::list(repo.storage().as_ref())?)
}
