//! `myvault restore --target URL`: a logical snapshot into an empty server.

use crate::error::{Error, Result};
use crate::mysql::wire::ConnectOptions;
use crate::repo::Repo;
use crate::repo::lock::{LockGuard, LockKind};
use crate::restore::logical::{self, LoadOptions, LoadProgress, LoadReport};

pub fn run(
    repo: &Repo,
    snapshot: &str,
    target: &ConnectOptions,
    opts: &LoadOptions,
    progress: &LoadProgress,
) -> Result<LoadReport> {
    let _lock = LockGuard::acquire(repo.storage().clone(), LockKind::Shared, "restore")?;
    let snap = repo.find_snapshot(snapshot)?;
    if snap.method != "logical" {
        return Err(Error::Usage(format!(
            "snapshot {} was taken with --method {}; restore it with --datadir",
            snap.id, snap.method
        )));
    }
    logical::load(repo, &snap, target, opts, progress)
}
