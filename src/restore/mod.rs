//! Restore engines: from the repository to a target (a directory, a server).

pub mod content_check;
pub mod datadir;
pub mod files;
pub mod logical;
pub mod pitr;

/// The schema a logical restore keeps its resume state in, on the target; dropped at the end.
pub const PROGRESS_SCHEMA: &str = "myvault_restore";
