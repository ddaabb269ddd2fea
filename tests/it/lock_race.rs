//! A backup's lock beside a streamer that locks for every upload, on S3 (s3s-fs): locks
//! released between a listing of `locks/` and their read are gone, not an error (the local
//! and in-memory stores run the same contention in `repo::lock`'s unit tests).

use std::time::Instant;

use myvault::repo::lock::contend_beside_a_streamer;
use myvault::storage::Location;

use crate::storage_s3::aws_env;
use crate::support::s3::S3Server;

#[test]
fn a_lock_released_while_another_process_lists_locks_on_s3_is_gone_not_an_error() {
    let s3 = S3Server::start();
    let opts = aws_env(&s3);
    let location = Location::parse(&s3.repo("locks")).expect("s3 location");
    let store = myvault::storage::create(&location, &opts).expect("open s3");
    let started = Instant::now();
    // Each round lists `locks/` ten times, one GET per lock (33): two rounds are about 700
    // requests, enough to meet many of the streamer thread's releases in ~15 s.
    contend_beside_a_streamer(store, 2).expect("locks beside a streamer on S3");
    eprintln!("2 rounds on S3 in {:?}", started.elapsed());
}
