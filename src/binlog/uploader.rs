//! The upload thread: archives spooled files without ever holding up the receiving of
//! events. Jobs for the same file coalesce (the newest length wins); a file that is sealed
//! and stored in every repository is removed from the spool. Failed uploads are retried
//! with backoff while the spool keeps the data.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::archive::{Archiver, UploadJob};
use crate::repo::Repo;

#[derive(Debug, Default, Clone)]
pub struct UploadStats {
    pub archived_bytes: u64,
    pub segments: u64,
    pub pending: usize,
    pub last_error: Option<String>,
    /// Repositories that missed the last upload.
    pub failing: Vec<String>,
}

#[derive(Default)]
struct State {
    jobs: BTreeMap<(String, u64, String), UploadJob>,
    /// Per file, the most that was ever queued: its length, and whether sealed.
    queued: HashMap<(String, String), (u64, bool)>,
    retry_at: Option<Instant>,
    stopping: bool,
    busy: bool,
    stats: UploadStats,
}

pub struct Uploader {
    shared: Arc<(Mutex<State>, Condvar)>,
    handle: Option<JoinHandle<()>>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn job_key(job: &UploadJob) -> (String, u64, String) {
    (
        job.server_uuid.clone(),
        super::file_sequence(&job.file).unwrap_or(0),
        job.file.clone(),
    )
}

impl Uploader {
    pub fn start(repos: Vec<Arc<Repo>>) -> Uploader {
        let shared = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let thread_shared = shared.clone();
        let handle = std::thread::spawn(move || run(thread_shared, Archiver::new(repos)));
        Uploader {
            shared,
            handle: Some(handle),
        }
    }

    /// Queues `job`, replacing an older job for the same file unless that one was a seal.
    pub fn submit(&self, job: UploadJob) {
        let (m, cv) = &*self.shared;
        let mut st = lock(m);
        let key = job_key(&job);
        let most = st
            .queued
            .entry((job.server_uuid.clone(), job.file.clone()))
            .or_insert((0, false));
        *most = (most.0.max(job.len), most.1 || job.sealed);
        match st.jobs.get(&key) {
            Some(old) if old.sealed && !job.sealed => {}
            Some(old) if old.len > job.len && !job.sealed => {}
            _ => {
                st.jobs.insert(key, job);
            }
        }
        cv.notify_all();
    }

    /// Whether `len` bytes of the file (sealed, if `sealed`) were queued already: uploaded,
    /// being uploaded, or waiting.
    pub fn has_queued(&self, server_uuid: &str, file: &str, len: u64, sealed: bool) -> bool {
        let st = lock(&self.shared.0);
        st.queued
            .get(&(server_uuid.to_string(), file.to_string()))
            .is_some_and(|&(most, most_sealed)| most >= len && (most_sealed || !sealed))
    }

    pub fn stats(&self) -> UploadStats {
        let st = lock(&self.shared.0);
        let mut s = st.stats.clone();
        s.pending = st.jobs.len() + usize::from(st.busy);
        s
    }

    /// Uploads what is queued (waiting at most `deadline`), then stops the thread.
    pub fn finish(mut self, deadline: Duration) -> UploadStats {
        let end = Instant::now() + deadline;
        {
            let (m, cv) = &*self.shared;
            let mut st = lock(m);
            st.stopping = true;
            st.retry_at = None;
            cv.notify_all();
            while (!st.jobs.is_empty() || st.busy) && Instant::now() < end {
                st = cv
                    .wait_timeout(st, Duration::from_millis(200))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
                // Failed uploads would wait for their backoff; at the end, try at once.
                st.retry_at = None;
            }
        }
        let stats = self.stats();
        if let Some(h) = self.handle.take() {
            let (m, cv) = &*self.shared;
            lock(m).jobs.clear();
            cv.notify_all();
            let _ = h.join();
        }
        stats
    }
}

fn run(shared: Arc<(Mutex<State>, Condvar)>, mut archiver: Archiver) {
    let (m, cv) = &*shared;
    let mut backoff = Duration::from_secs(1);
    loop {
        let job = {
            let mut st = lock(m);
            loop {
                let ready = st.retry_at.is_none_or(|t| Instant::now() >= t);
                if ready && let Some(key) = st.jobs.keys().next().cloned() {
                    st.busy = true;
                    break st.jobs.remove(&key);
                }
                if st.stopping && st.jobs.is_empty() {
                    return;
                }
                st = cv
                    .wait_timeout(st, Duration::from_millis(200))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
        };
        let Some(job) = job else { continue };
        let result = archiver.upload(&job);
        let mut st = lock(m);
        st.busy = false;
        match result {
            Ok(done) => {
                st.stats.archived_bytes += done.bytes;
                st.stats.segments += 1;
                st.stats.failing = done
                    .outcomes
                    .iter()
                    .filter(|o| o.error.is_some())
                    .map(|o| o.repo.clone())
                    .collect();
                if done.everywhere {
                    backoff = Duration::from_secs(1);
                    if job.sealed {
                        // Archived everywhere: the spool no longer needs it, nor this
                        // process a memory of it (which would grow with every file).
                        let _ = std::fs::remove_file(&job.path);
                        st.queued
                            .remove(&(job.server_uuid.clone(), job.file.clone()));
                    }
                } else {
                    let why: Vec<String> = done
                        .outcomes
                        .iter()
                        .filter_map(|o| o.error.as_ref().map(|e| format!("{}: {e}", o.repo)))
                        .collect();
                    st.stats.last_error = Some(why.join("; "));
                    requeue(&mut st, job, &mut backoff);
                }
            }
            Err(e) => {
                st.stats.last_error = Some(e.to_string());
                requeue(&mut st, job, &mut backoff);
            }
        }
        cv.notify_all();
    }
}

fn requeue(st: &mut State, job: UploadJob, backoff: &mut Duration) {
    let key = job_key(&job);
    // A newer job for the file may have arrived meanwhile; it covers this one.
    st.jobs.entry(key).or_insert(job);
    st.retry_at = Some(Instant::now() + *backoff);
    *backoff = (*backoff * 2).min(Duration::from_secs(60));
}
