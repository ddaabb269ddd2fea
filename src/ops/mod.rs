//! One use case per file. Each takes resolved options and returns a report; printing and exit
//! codes are the caller's business.

pub mod backup;
pub mod binlog_files;
pub mod binlog_search;
pub mod check;
pub mod copy;
pub mod flashback;
pub mod init;
pub mod list;
pub mod pitr;
pub mod prune;
pub mod repos;
pub mod restore_datadir;
pub mod restore_files;
pub mod restore_logical;
pub mod restore_tables;
pub mod restore_test;
pub mod seed;
pub mod status;
pub mod stream;
pub mod unlock;
pub mod verify;
