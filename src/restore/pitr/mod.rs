//! Point-in-time restore: a snapshot, then the archived binlogs up to an exact boundary.

pub mod plan;
pub mod replay;
pub mod sql_replay;
