//! `myvault restore --dest DIR` for snapshots of files.

use std::path::Path;

use crate::error::{Error, Result};
use crate::repo::Repo;
use crate::repo::lock::{LockGuard, LockKind};
pub use crate::restore::files::FilesRestored;
use crate::restore::files::{is_empty_destination, restore_files};

pub fn run(
    repo: &Repo,
    snapshot: &str,
    dest: &Path,
    progress: impl FnMut(&str, u64),
) -> Result<FilesRestored> {
    match is_empty_destination(dest) {
        Ok(true) => {}
        Ok(false) => {
            return Err(Error::TargetRefused(format!(
                "{} is not empty; restore into a new or empty directory",
                dest.display()
            )));
        }
        Err(e) => return Err(Error::io(format!("cannot read {}", dest.display()), e)),
    }
    let _lock = LockGuard::acquire(repo.storage().clone(), LockKind::Shared, "restore")?;
    let snap = repo.find_snapshot(snapshot)?;
    Ok(restore_files(repo, &snap, dest, progress)?)
}
