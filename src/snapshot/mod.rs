//! Snapshot engines: what reads a source and feeds the repository writer.

pub mod checksums;
pub mod clone;
pub mod clone_remote;
pub mod cold;
pub mod files;
pub mod logical;
