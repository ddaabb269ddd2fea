//! Snapshot engines: what reads a source and feeds the repository writer.

pub mod clone;
pub mod cold;
pub mod files;
pub mod logical;
