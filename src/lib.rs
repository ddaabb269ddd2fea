//! myvault: backup, clone and point-in-time recovery for MySQL.
//!
//! Data flows source -> snapshot -> repo -> storage, binlog stream -> archive, and
//! repo -> restore -> target -> replay. `storage` and `repo` know nothing of MySQL; nothing
//! below `ops` imports `ops` or `cli`; only `main` decides the process exit code.

pub mod binlog;
pub mod cli;
pub mod error;
pub mod failpoint;
pub mod first_error;
/// Fuzz targets: compiled for tests and for the coverage-guided harness in `fuzz/`.
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod metrics;
pub mod mysql;
pub mod ops;
pub mod private_fs;
pub mod repo;
pub mod restore;
pub mod secret;
pub mod seed;
pub mod server;
pub mod snapshot;
pub mod staging;
pub mod storage;
#[cfg(any(test, feature = "fuzzing"))]
pub mod test_rng;
pub mod timespec;
