//! `myvault copy --from A --to B`.

use crate::error::{Error, Result};
use crate::repo::Repo;
pub use crate::repo::copy::CopyReport;
use crate::repo::lock::{LockGuard, LockKind};

pub fn run(from: &Repo, to: &Repo, progress: impl FnMut(&str)) -> Result<CopyReport> {
    // Copying passes through plaintext: into a plain repository it would undo the encryption.
    if from.is_encrypted() && !to.is_encrypted() {
        return Err(Error::Usage(format!(
            "{} is encrypted and {} is not: copying would store its data in clear; \
             create the destination with `myvault init --encryption-key-file`",
            from.name(),
            to.name()
        )));
    }
    let _a = LockGuard::acquire(from.storage().clone(), LockKind::Shared, "copy (source)")?;
    let _b = LockGuard::acquire(to.storage().clone(), LockKind::Shared, "copy (destination)")?;
    Ok(crate::repo::copy::copy(from, to, progress)?)
}
