//! Integration tests against real servers started by the tests themselves.

mod support;
mod units;

mod binlog_trust;
mod check;
mod cli;
mod config;
mod content;
mod corpus;
mod credentials;
mod encryption;
mod faults;
mod faults_repo;
mod faults_seed;
mod faults_storage;
mod faults_stream;
mod flashback;
// Its contention harness is compiled into the library only for test builds (`failpoints`).
#[cfg(feature = "failpoints")]
mod lock_race;
mod logging;
mod logical;
mod mariadb;
mod max_rate;
mod metrics;
mod multi_repo;
mod package;
mod physical;
mod pitr;
mod pitr_trust;
mod prune;
mod restore_resume;
mod retention;
mod seed;
mod single_table;
mod single_table_faults;
mod status;
mod storage_s3;
mod storage_s3_resume;
mod stream;
mod systemd;
mod verify;
