//! `myvault verify`: repository integrity.

use crate::error::Result;
use crate::repo::Repo;
use crate::repo::lock::{LockGuard, LockKind};
pub use crate::repo::verify::VerifyReport;

pub fn run(
    repo: &Repo,
    read_data: bool,
    progress: impl FnMut(usize, usize),
) -> Result<VerifyReport> {
    let _lock = LockGuard::acquire(repo.storage().clone(), LockKind::Shared, "verify")?;
    Ok(crate::repo::verify::verify(repo, read_data, progress)?)
}
