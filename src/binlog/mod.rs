//! Binary logs: event framing and checks, file scanning, the replication client that streams
//! them, the local spool, and the archive in the repository.

pub mod archive;
pub mod coverage;
pub mod dump;
pub mod event;
pub mod index;
pub mod reader;
pub mod replay;
pub mod rows;
pub mod source;
pub mod spool;
pub mod statements;
pub mod table_filter;
pub mod transaction;
pub mod upload_ledger;
pub mod uploader;
pub mod walk;

#[cfg(test)]
mod tests;

/// The numeric suffix of a binlog file name (`binlog.000042` -> 42): the order of files.
pub fn file_sequence(name: &str) -> Option<u64> {
    name.rsplit('.').next()?.parse().ok()
}
