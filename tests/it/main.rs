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
mod status;
mod storage_s3;
mod stream;
mod verify;
