//! Integration tests against real servers started by the tests themselves.

mod support;

mod binlog_trust;
mod check;
mod config;
mod corpus;
mod encryption;
mod logical;
mod mariadb;
mod physical;
mod pitr;
mod pitr_trust;
mod prune;
mod restore_resume;
mod seed;
mod status;
mod storage_s3;
mod stream;
