//! The upload thread: archives spooled files without ever holding up the receiving of
//! events. Jobs for the same file coalesce (the newest length wins); a file that is sealed
//! and stored in every repository is removed from the spool. Failed uploads are retried
//! with backoff while the spool keeps the data. What each repository holds, and since when
//! it lacks something, is kept in an [`UploadLedger`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::archive::{Archiver, UploadJob};
use super::upload_ledger::{Receiving, RepoOutcome, RepoUploadStatus, UploadLedger};
use crate::repo::Repo;

#[derive(Debug, Default, Clone)]
pub struct UploadStats {
    /// Binlog bytes archived in every repository by this process, each byte once.
    pub archived_bytes: u64,
    pub segments: u64,
    /// Upload jobs queued or running (jobs for one file coalesce: see `pending_bytes`).
    pub pending: usize,
    /// Each repository's state.
    pub repos: Vec<RepoUploadStatus>,
}

impl UploadStats {
    /// The repositories that fail now, with their errors, for one message.
    pub fn failing(&self) -> Option<String> {
        let why: Vec<String> = self
            .repos
            .iter()
            .filter_map(|r| r.last_error.as_deref())
            .map(String::from)
            .collect();
        (!why.is_empty()).then(|| why.join("; "))
    }
}

struct State {
    jobs: BTreeMap<(String, u64, String), UploadJob>,
    /// Per file, the most that was ever queued: its length, and whether sealed.
    queued: HashMap<(String, String), (u64, bool)>,
    retry_at: Option<Instant>,
    stopping: bool,
    /// `finish` gave up waiting: the thread ends after the upload in hand, keeping nothing
    /// queued (the spool holds what was not archived, for the next run).
    abandoned: bool,
    busy: bool,
    segments: u64,
    ledger: UploadLedger,
}

/// Reads the upload state; the lock it takes is never held across an upload.
#[derive(Clone)]
pub struct UploadObserver(Arc<(Mutex<State>, Condvar)>);

impl UploadObserver {
    /// The state at `now`; `receiving` is what the stream holds beyond the jobs it gave.
    pub fn stats_at(&self, now: DateTime<Utc>, receiving: Option<&Receiving>) -> UploadStats {
        let st = lock(&self.0.0);
        UploadStats {
            archived_bytes: st.ledger.archived_everywhere(),
            segments: st.segments,
            pending: st.jobs.len() + usize::from(st.busy),
            repos: st.ledger.view(now, receiving),
        }
    }
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
        let state = State {
            jobs: BTreeMap::new(),
            queued: HashMap::new(),
            retry_at: None,
            stopping: false,
            abandoned: false,
            busy: false,
            segments: 0,
            ledger: UploadLedger::new(repos.iter().map(|r| r.name())),
        };
        let shared = Arc::new((Mutex::new(state), Condvar::new()));
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
        st.ledger.submitted(&job);
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

    /// `repo` holds `len` bytes of the file already (an earlier run archived them).
    pub fn held(&self, repo: &str, server_uuid: &str, file: &str, len: u64) {
        lock(&self.shared.0)
            .ledger
            .held(repo, server_uuid, file, len);
    }

    /// A handle that reads the upload state from other threads.
    pub fn observer(&self) -> UploadObserver {
        UploadObserver(self.shared.clone())
    }

    pub fn stats(&self) -> UploadStats {
        self.observer().stats_at(Utc::now(), None)
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
            let mut st = lock(m);
            st.jobs.clear();
            st.abandoned = true;
            drop(st);
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
                if st.stopping && (st.jobs.is_empty() || st.abandoned) {
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
        let now = Utc::now();
        if let Err(e) = &result
            && st.stopping
        {
            // At the end nobody reads status.json any more: the log says why the spool keeps it.
            tracing::warn!("stopping: upload of {} failed: {e}", job.file);
        }
        match result {
            Ok(done) => {
                st.segments += 1;
                let outcomes: Vec<RepoOutcome> = done
                    .outcomes
                    .iter()
                    .map(|o| RepoOutcome {
                        repo: &o.repo,
                        error: o.error.as_deref(),
                        held_before: done.held_before.get(&o.repo).copied().unwrap_or(0),
                    })
                    .collect();
                st.ledger.uploaded(&job, &outcomes, now);
                if done.everywhere {
                    backoff = Duration::from_secs(1);
                    if job.sealed {
                        // Archived everywhere: the spool no longer needs it, nor this
                        // process a memory of it (which would grow with every file).
                        let _ = std::fs::remove_file(&job.path);
                        st.queued
                            .remove(&(job.server_uuid.clone(), job.file.clone()));
                        st.ledger.forget(&job.server_uuid, &job.file);
                    }
                } else {
                    requeue(&mut st, job, &mut backoff);
                }
            }
            Err(e) => {
                st.ledger.failed(&e.to_string(), now);
                requeue(&mut st, job, &mut backoff);
            }
        }
        cv.notify_all();
    }
}

fn requeue(st: &mut State, job: UploadJob, backoff: &mut Duration) {
    // Once `finish` has given up, a job put back would be taken again forever (a repository
    // that keeps failing), and `finish` would never return: the streamer hung after SIGTERM.
    if st.abandoned {
        return;
    }
    let key = job_key(&job);
    // A newer job for the file may have arrived meanwhile; it covers this one.
    st.jobs.entry(key).or_insert(job);
    st.retry_at = Some(Instant::now() + *backoff);
    *backoff = (*backoff * 2).min(Duration::from_secs(60));
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::binlog::index::FileSummary;
    use crate::repo::config::RepoConfig;
    use crate::storage::crashing::{Clock, CrashingStorage};
    use crate::storage::memory::MemoryStorage;

    /// The streamer did not exit after SIGTERM: `finish` gave up waiting and cleared the
    /// queue, but the upload in hand failed and was put back, so the thread took it again and
    /// again and `finish` waited on it forever. Seen in the bench (`--scale`, 10,000 files).
    #[test]
    fn finish_returns_when_the_upload_in_hand_fails_after_it_gave_up() {
        let dir = tempfile::tempdir().unwrap();
        // A FIFO holds the upload at its open() until the test has let `finish` give up.
        let fifo = dir.path().join("binlog.000001");
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let clock = Clock::new(7);
        let store: Arc<dyn crate::storage::Storage> = Arc::new(CrashingStorage::new(
            Arc::new(MemoryStorage::new()),
            clock.clone(),
        ));
        let repo = Arc::new(Repo::init(store, RepoConfig::new()).unwrap());
        let uploader = Uploader::start(vec![repo]);
        uploader.submit(UploadJob {
            server_uuid: "3e11fa47-71ca-11e1-9e33-c80aa9429562".into(),
            server_id: 1,
            file: "binlog.000001".into(),
            path: fifo.clone(),
            len: 4096,
            sealed: true,
            summary: FileSummary::default(),
            complete_at: None,
            oldest_new_commit: None,
        });
        std::thread::sleep(Duration::from_millis(300));
        let (done, finished) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(uploader.finish(Duration::from_millis(200)));
        });
        // `finish` has given up and cleared the queue; now the upload in hand fails.
        std::thread::sleep(Duration::from_millis(600));
        clock.arm(0);
        std::fs::write(&fifo, vec![7u8; 4096]).unwrap();
        let stats = finished
            .recv_timeout(Duration::from_secs(10))
            .expect("finish did not return: the failed upload was queued again");
        assert_eq!(stats.archived_bytes, 0);
    }
}
