//! `myvault copy --from A --to B`.

use crate::error::Result;
use crate::repo::Repo;
pub use crate::repo::copy::CopyReport;
use crate::repo::lock::{LockGuard, LockKind};

pub fn run(from: &Repo, to: &Repo, progress: impl FnMut(&str)) -> Result<CopyReport> {
    let _a = LockGuard::acquire(from.storage().clone(), LockKind::Shared, "copy (source)")?;
    let _b = LockGuard::acquire(to.storage().clone(), LockKind::Shared, "copy (destination)")?;
    Ok(crate::repo::copy::copy(from, to, progress)?)
}
