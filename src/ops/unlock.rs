//! `myvault unlock`: removes stale locks (or all, when told).

use crate::error::Result;
use crate::repo::Repo;
use crate::repo::lock::{self, Locks};

pub fn run(repo: &Repo, all: bool) -> Result<Locks> {
    Ok(lock::break_locks(repo.storage().as_ref(), all)?)
}

pub fn held(repo: &Repo) -> Result<Locks> {
    Ok(lock::list(repo.storage().as_ref())?)
}
