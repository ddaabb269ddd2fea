//! Archiving spooled binlog files into repositories as segments.
//!
//! A file still being written is archived again and again as it grows. Content-defined
//! chunk boundaries depend only on the bytes since the previous boundary, so each upload
//! chunks only what came after the last boundary of the previous one: the work per upload is
//! proportional to the new bytes, not to the file. A newer segment of a file supersedes the
//! older ones, which are deleted once it is stored.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};

use super::index::FileSummary;
use crate::repo::id::{HashAlg, Hasher, Id};
use crate::repo::lock::{LockGuard, LockKind};
use crate::repo::manifest::{self, BinlogSegment, ContentDigest};
use crate::repo::writer::{MultiWriter, TargetOutcome};
use crate::repo::{Repo, RepoError, binlog_key};

/// One upload: archive `len` bytes (a transaction boundary) of a spooled file.
#[derive(Debug, Clone)]
pub struct UploadJob {
    pub server_uuid: String,
    pub server_id: u64,
    pub file: String,
    pub path: PathBuf,
    pub len: u64,
    pub sealed: bool,
    pub summary: FileSummary,
    /// When the streamer last knew it had everything the server had written (its clock):
    /// the archive covers up to then, even when the last commit is older.
    pub complete_at: Option<DateTime<Utc>>,
    /// The oldest commit this job is the first to carry (the stream's clock for what it
    /// received, the file's first event for what an earlier run left); `None` when it
    /// carries no commit a previous job did not. Measures upload lag (`upload_ledger`).
    pub oldest_new_commit: Option<DateTime<Utc>>,
}

/// Chunks already cut from the front of a file, reused by the next upload of it.
struct Progress {
    chunks: Vec<Id>,
    chunked: u64,
    hasher: Hasher,
}

impl Progress {
    fn new(hash: HashAlg) -> Progress {
        Progress {
            chunks: Vec::new(),
            chunked: 0,
            hasher: hash.hasher(),
        }
    }

    fn commit(&mut self, id: Id, bytes: &[u8]) {
        self.chunks.push(id);
        self.chunked += bytes.len() as u64;
        self.hasher.update(bytes);
    }
}

pub struct Archiver {
    repos: Vec<Arc<Repo>>,
    host: String,
    files: HashMap<(String, String), Progress>,
    /// Per repository, the prune mark its loaded index was read under.
    pruned_marks: HashMap<String, Option<String>>,
}

#[derive(Debug, Clone)]
pub struct Uploaded {
    pub outcomes: Vec<TargetOutcome>,
    /// True when every repository holds the segment.
    pub everywhere: bool,
    /// Per repository (by name), the length of the file it held before this upload.
    pub held_before: HashMap<String, u64>,
}

fn time(secs: Option<u32>) -> Option<DateTime<Utc>> {
    secs.and_then(|s| Utc.timestamp_opt(i64::from(s), 0).single())
}

impl Archiver {
    pub fn new(repos: Vec<Arc<Repo>>) -> Archiver {
        Archiver {
            repos,
            host: crate::repo::lock::this_host(),
            files: HashMap::new(),
            pruned_marks: HashMap::new(),
        }
    }

    /// Share-locks each repository for one upload. Between uploads the streamer holds no lock,
    /// so a prune can run; a repository it holds (or that fails) misses this upload and is
    /// reported. After a prune the index is loaded again: a stale one could name a deleted blob.
    fn lock_repos(&mut self) -> (Vec<Arc<Repo>>, Vec<LockGuard>, Vec<TargetOutcome>) {
        let (mut open, mut guards, mut missed) = (Vec::new(), Vec::new(), Vec::new());
        for repo in &self.repos {
            let locked =
                LockGuard::acquire(repo.storage().clone(), LockKind::Shared, "binlog stream")
                    .and_then(|guard| Ok((guard, repo.pruned_mark()?)));
            match locked {
                Ok((guard, mark)) => {
                    if self.pruned_marks.get(repo.name()) != Some(&mark) {
                        repo.reload_index();
                        self.pruned_marks.insert(repo.name().to_string(), mark);
                    }
                    open.push(repo.clone());
                    guards.push(guard);
                }
                Err(e) => missed.push(TargetOutcome {
                    repo: repo.name().to_string(),
                    error: Some(e.to_string()),
                    new_bytes: 0,
                    new_chunks: 0,
                }),
            }
        }
        (open, guards, missed)
    }

    /// Archives the job's bytes in every repository.
    pub fn upload(&mut self, job: &UploadJob) -> Result<Uploaded, RepoError> {
        let key = (job.server_uuid.clone(), job.file.clone());
        let progress = self.files.remove(&key);
        let (repos, _locks, missed) = self.lock_repos();
        if repos.is_empty() {
            let why: Vec<String> = missed
                .iter()
                .map(|o| format!("{}: {}", o.repo, o.error.clone().unwrap_or_default()))
                .collect();
            return Err(RepoError::WriteFailed(why.join("; ")));
        }
        let writer = MultiWriter::new(repos)?;
        let mut progress = match progress {
            // A file cut back (crash recovery) starts again from its beginning.
            Some(p) if p.chunked <= job.len => p,
            _ => Progress::new(writer.hash()),
        };
        let chunker = writer.stream_chunker();
        let mut f = File::open(&job.path)
            .map_err(|e| RepoError::io(format!("open {}", job.path.display()), e))?;
        f.seek(SeekFrom::Start(progress.chunked))
            .map_err(|e| RepoError::io(format!("seek {}", job.path.display()), e))?;
        // Every chunk but the last ended at a content-defined boundary and stays valid as
        // the file grows; the last one ended where the data did, unless the file is sealed.
        // So each chunk is committed once the next one exists.
        let mut pending: Option<(Id, Vec<u8>)> = None;
        let mut chunks = chunker.chunks(f.take(job.len - progress.chunked));
        while let Some(chunk) = chunks.next_chunk() {
            let chunk =
                chunk.map_err(|e| RepoError::io(format!("read {}", job.path.display()), e))?;
            let id = writer.store_blob(chunk)?;
            if let Some((id, bytes)) = pending.replace((id, chunk.to_vec())) {
                progress.commit(id, &bytes);
            }
        }
        if job.sealed
            && let Some((id, bytes)) = pending.take()
        {
            progress.commit(id, &bytes);
        }
        let mut ids = progress.chunks.clone();
        let mut hasher = progress.hasher.clone();
        if let Some((id, bytes)) = &pending {
            ids.push(*id);
            hasher.update(bytes);
        }
        let refs = writer.chunk_refs(ids)?;
        let s = &job.summary;
        let segment = BinlogSegment {
            source_uuid: job.server_uuid.clone(),
            server_id: job.server_id,
            file: job.file.clone(),
            size: job.len,
            sealed: job.sealed,
            first_event_time: time(s.first_event_time),
            last_event_time: time(s.last_event_time),
            first_commit_us: s.first_commit_us.map(|v| v as i64),
            last_commit_us: s.last_commit_us.map(|v| v as i64),
            transactions: s.transactions,
            gtids: if s.maria_gtids.last.is_empty() {
                s.gtids.to_string()
            } else {
                s.maria_gtids.to_string()
            },
            previous_gtids: match (&s.previous_gtids, &s.maria_gtid_list) {
                (Some(p), _) => p.to_string(),
                (None, Some(l)) => l.to_string(),
                (None, None) => String::new(),
            },
            digest: ContentDigest::of(hasher),
            archived_at: Utc::now(),
            host: self.host.clone(),
            refs,
            extra: job
                .complete_at
                .map(|t| [("complete_at".to_string(), serde_json::json!(t))].into())
                .unwrap_or_default(),
        };
        let body = manifest::encode("binlog", &segment);
        let segment_key = binlog_key(&job.server_uuid, &job.file, job.len);
        let prefix = format!("binlog/{}/{}/", job.server_uuid, job.file);
        let held_before = std::sync::Mutex::new(HashMap::new());
        let outcomes = writer.commit_with(|repo| {
            let storage = repo.storage();
            // Listed before the new segment is written, so what the repository held of the
            // file is known (each archived byte is counted once) and the older segments go.
            let older = storage.list(&prefix).map_err(|e| e.to_string())?;
            let held = older
                .iter()
                .filter_map(|o| o.key.rsplit('/').next()?.parse::<u64>().ok())
                .max()
                .unwrap_or(0);
            held_before
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(repo.name().to_string(), held);
            // The same bytes may be archived again with a newer `complete_at`: replacing the
            // manifest then changes nothing a restore reads, only the coverage it may claim.
            storage
                .put(&segment_key, &body)
                .map_err(|e| e.to_string())?;
            for old in older {
                if old.key != segment_key {
                    let _ = storage.delete(&old.key);
                }
            }
            Ok(())
        })?;
        let mut outcomes = outcomes;
        outcomes.extend(missed);
        let everywhere = outcomes.iter().all(|o| o.error.is_none());
        // Chunks of earlier uploads are only known to be in every repository when this one
        // reached them all; otherwise the next upload cuts the file again from its start, and
        // the repository that missed out receives what it lacks.
        if !job.sealed && everywhere {
            self.files.insert(key, progress);
        }
        Ok(Uploaded {
            outcomes,
            everywhere,
            held_before: held_before.into_inner().unwrap_or_else(|e| e.into_inner()),
        })
    }
}
