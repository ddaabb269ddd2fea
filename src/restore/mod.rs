//! Restore engines: from the repository to a target (a directory, a server).

pub mod content_check;
pub mod datadir;
pub mod files;
pub mod logical;
pub mod pitr;
pub mod table_copy;
pub mod table_staging;
pub mod table_transport;

/// The schema a logical restore keeps its resume state in, on the target; dropped at the end.
pub const PROGRESS_SCHEMA: &str = "myvault_restore";

/// The schema a point-in-time restore keeps its record in, on the target (see
/// `pitr::resume`); dropped at the end.
pub const PITR_SCHEMA: &str = "myvault_pitr";

/// myvault's own bookkeeping schemas on a target: never user data, so never dumped, compared
/// or counted as making a target "not empty".
pub const OWN_SCHEMAS: [&str; 2] = [PROGRESS_SCHEMA, PITR_SCHEMA];
