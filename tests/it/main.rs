//! Integration tests against real servers started by the tests themselves.

mod support;

mod check;
mod config;
mod encryption;
mod logical;
mod mariadb;
mod multi_repo;
mod physical;
mod pitr;
mod prune;
mod seed;
mod storage_s3;
mod stream;
mod verify;
