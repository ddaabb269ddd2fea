//! Point-in-time restore: a snapshot, then the archived binlogs up to an exact boundary.

pub mod archive_check;
pub mod plan;
pub mod replay;
pub mod resume;
pub mod sql_replay;
pub mod table_ddl;
