//! `myvault binlog stream`: a long-running archiver of a source's binary log.
//!
//! Events go to the local spool first (durable within a second of their commit), and from
//! there to every repository as segments: sealed files when the server rotates, and the open
//! file every `--upload-interval`, at once when the connection to the source breaks, and when
//! the streamer starts or stops (whatever the spool holds that a repository lacks). The
//! process resumes where it stopped after any crash or reconnect, and after a failover
//! continues from whichever `--source` is the primary.
//!
//! What it reports (`status.json`, the status line, `/metrics`) is in [`status`] and
//! [`metrics`].

pub mod metrics;
pub mod status;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;

use super::repos::{self, WriteSet};
use crate::binlog::archive::UploadJob;
use crate::binlog::coverage;
use crate::binlog::dump::{DumpRequest, DumpStream, Incoming};
use crate::binlog::event::{self, Header, types};
use crate::binlog::file_sequence;
use crate::binlog::index::FileSummary;
use crate::binlog::source::{self, SourceFacts};
use crate::binlog::spool::{self, Spool, SpooledFile, Written};
use crate::binlog::upload_ledger::Receiving;
use crate::binlog::uploader::{UploadObserver, Uploader};
use crate::error::{Error, Result};
use crate::mysql::gtid::GtidSet;
use crate::mysql::privileges;
use crate::mysql::session::Session;
use crate::mysql::wire::ConnectOptions;
use crate::private_fs;
use crate::repo::Repo;
use crate::repo::manifest::BinlogSegment;
use crate::storage::OpenOptions;
use status::Published;
pub use status::StreamStatus;

#[derive(Debug, Clone)]
pub struct StreamOptions {
    pub sources: Vec<ConnectOptions>,
    pub repos: Vec<String>,
    pub store: OpenOptions,
    pub server_id: Option<u32>,
    pub spool_dir: PathBuf,
    pub heartbeat: Duration,
    pub upload_interval: Duration,
    pub max_spool_bytes: u64,
    /// Where to begin when the archive is empty (default: the newest snapshot's binlog
    /// file from this server, else the oldest file the server has).
    pub start_file: Option<String>,
    /// Stop once everything the server had when streaming started is archived.
    pub until_caught_up: bool,
    /// Serve Prometheus metrics on this `host:port` (`/metrics`).
    pub metrics_listen: Option<String>,
}

/// How often the stream's state is published for `/metrics` (and the spool measured).
const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// How often the status line and `status.json` are written.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Where the streaming thread reports to: the published state (read by `/metrics`), the
/// upload state it is completed with, and the caller's `report` (status line, status.json).
struct Reporter<'a> {
    published: Published,
    uploads: UploadObserver,
    report: &'a dyn Fn(&StreamStatus),
}

impl Reporter<'_> {
    fn publish(&self, status: &StreamStatus) {
        self.published.publish(status);
    }

    fn report(&self, status: &mut StreamStatus) {
        status.complete(&self.uploads, Utc::now());
        self.published.publish(status);
        (self.report)(status);
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGTERM and SIGINT finish the current transaction, flush and upload, then exit.
fn install_signal_handlers() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
}

fn stopping() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Holds an exclusive lock on the spool directory: one streamer per spool.
struct SpoolLock(#[allow(dead_code)] File);

fn lock_spool(dir: &Path) -> Result<SpoolLock> {
    private_fs::own_dir(dir)
        .map_err(|e| Error::io(format!("cannot create spool {}", dir.display()), e))?;
    let path = dir.join(".lock");
    // Not truncated before the lock is ours: it holds the holder's pid.
    let mut f = private_fs::file_options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(format!("cannot create {}", path.display()), e))?;
    use std::io::{Read, Seek, Write};
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let mut holder = String::new();
        let _ = f.read_to_string(&mut holder);
        return Err(crate::binlog::spool::SpoolError::InUse {
            spool: dir.display().to_string(),
            pid: holder.trim().parse().ok(),
        }
        .into());
    }
    // The flock is the lock; the pid only tells a second streamer whom to stop.
    let pid = format!("{}\n", std::process::id());
    f.set_len(0)
        .and_then(|()| f.rewind())
        .and_then(|()| f.write_all(pid.as_bytes()))
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    Ok(SpoolLock(f))
}

/// A stable id for this streamer towards the source, so its reconnects replace its own
/// stale session instead of looking like another replica.
fn replica_uuid(spool: &Path, server_id: u32) -> String {
    let id =
        crate::repo::Id::sha256(format!("{}:{server_id}", spool.display()).as_bytes()).to_hex();
    format!(
        "{}-{}-{}-{}-{}",
        &id[0..8],
        &id[8..12],
        &id[12..16],
        &id[16..20],
        &id[20..32]
    )
}

fn default_server_id() -> u32 {
    let host = crate::repo::lock::this_host();
    // High range, rarely used by hand-configured servers.
    (crc32fast::hash(host.as_bytes()) % 1_000_000) + 2_000_000_000
}

pub fn run(opts: &StreamOptions, report: &dyn Fn(&StreamStatus)) -> Result<StreamStatus> {
    install_signal_handlers();
    let _spool_lock = lock_spool(&opts.spool_dir)?;
    let WriteSet {
        repos,
        locks,
        unavailable,
    } = repos::open_for_write(&opts.repos, &opts.store, "binlog stream")?;
    // Each upload takes the locks again for as long as it writes (binlog::archive), so that a
    // prune can run while the streamer does; taking them here only checks that none is held.
    drop(locks);
    for u in &unavailable {
        tracing::warn!(
            repo = %u.repo,
            "{} is unavailable ({}); its archive will lag",
            u.repo,
            u.error.clone().unwrap_or_default()
        );
    }
    let server_id = opts.server_id.unwrap_or_else(default_server_id);
    let names: Vec<String> = repos.iter().map(|r| r.name().to_string()).collect();
    let sources: Vec<String> = opts.sources.iter().map(|s| s.address()).collect();
    tracing::info!(
        sources = %sources.join(","),
        repositories = %names.join(","),
        spool = %opts.spool_dir.display(),
        server_id,
        "streaming the binlog of {} into {}",
        sources.join(", "),
        names.join(", ")
    );
    let uploader = Uploader::start(repos.clone());
    let reporter = Reporter {
        published: Published::default(),
        uploads: uploader.observer(),
        report,
    };
    let mut status = StreamStatus::default();
    for repo in &repos {
        // Best effort: a repository whose gap records cannot be read now shows none.
        if let Ok(n) = unresolved_gaps(repo) {
            status.gaps.insert(repo.name().to_string(), n);
        }
    }
    reporter.publish(&status);
    if let Some(addr) = &opts.metrics_listen {
        let bound = metrics::serve(addr, reporter.published.clone(), uploader.observer())?;
        tracing::info!("serving metrics on http://{bound}/metrics");
    }
    // What a previous run received and could not upload (it was killed, or its source died)
    // goes out now, before any source answers: the source may be gone for good.
    upload_spool(&opts.spool_dir, &repos, &uploader);
    let mut backoff = Duration::from_secs(1);
    let mut checked_ids = false;
    let mut source_index = 0;
    let result = loop {
        if stopping() {
            break Ok(());
        }
        let source = &opts.sources[source_index % opts.sources.len()];
        status.source = source.address();
        match stream_from(
            opts,
            source,
            server_id,
            &repos,
            &uploader,
            &mut status,
            &mut checked_ids,
            &reporter,
        ) {
            Ok(()) => break Ok(()),
            Err(e) if matches!(e, Error::BinlogGap(_)) => {
                status.connected = false;
                status.set_stream_error(e.to_string());
                for r in record_gap(&repos, &status.server_uuid, &e.to_string()) {
                    *status.gaps.entry(r).or_insert(0) += 1;
                }
                break Err(e);
            }
            Err(e) if is_fatal(&e) => {
                status.connected = false;
                status.set_stream_error(e.to_string());
                break Err(e);
            }
            Err(e) => {
                status.connected = false;
                status.set_stream_error(e.to_string());
                status.reconnects += 1;
                tracing::warn!(
                    source = %status.source,
                    "{}: {e}; reconnecting in {} s",
                    status.source,
                    backoff.as_secs()
                );
                reporter.report(&mut status);
                source_index += 1;
                let until = Instant::now() + backoff;
                let mut reported = Instant::now();
                while Instant::now() < until && !stopping() {
                    std::thread::sleep(Duration::from_millis(100));
                    // status.json stays fresh while the source is away: it says the
                    // streamer is alive, and how far behind the archive falls.
                    if reported.elapsed() >= REPORT_EVERY {
                        reporter.report(&mut status);
                        reported = Instant::now();
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    };
    // Whatever state the stream ended in (a signal while connected, reconnecting or waiting to
    // reconnect; a fatal error), nothing received stays on this host only.
    upload_spool(&opts.spool_dir, &repos, &uploader);
    let stats = uploader.finish(Duration::from_secs(300));
    status.receiving = None;
    reporter.report(&mut status);
    result?;
    if stats.pending > 0 {
        return Err(Error::PartialSuccess(format!(
            "stopped with {} upload(s) pending ({}); the spool keeps them for the next run",
            stats.pending,
            stats.failing().unwrap_or_default()
        )));
    }
    Ok(status)
}

/// Gap records of `repo` that no later snapshot of their server has made harmless: a
/// restore across them is impossible, and nothing restorable begins after them yet.
pub fn unresolved_gaps(repo: &Repo) -> Result<u64> {
    let gaps = repo.gaps()?;
    if gaps.is_empty() {
        return Ok(0);
    }
    let snapshots = repo.snapshots()?;
    Ok(gaps
        .iter()
        .filter(|g| {
            !snapshots.iter().any(|s| {
                s.time > g.detected_at
                    && s.source
                        .as_ref()
                        .is_some_and(|src| src.server_uuid == g.server_uuid)
            })
        })
        .count() as u64)
}

/// Errors that reconnecting cannot cure.
fn is_fatal(e: &Error) -> bool {
    use crate::error::ErrorKind as K;
    matches!(
        e.kind(),
        K::Usage | K::AccessDenied | K::SourceNotReady | K::RepoLocked | K::Integrity
    )
}

/// Queues every spooled file, of every server, that some repository lacks up to its last
/// complete transaction (and that is not queued already). Best effort: a spool that cannot
/// be read is reported and left for the stream itself, which stops on a damaged spool.
fn upload_spool(spool_root: &Path, repos: &[std::sync::Arc<Repo>], uploader: &Uploader) {
    let Ok(entries) = std::fs::read_dir(spool_root) else {
        return;
    };
    for entry in entries.flatten() {
        let server_uuid = entry.file_name().to_string_lossy().into_owned();
        if server_uuid.starts_with('.') || !entry.path().is_dir() {
            continue;
        }
        if let Err(e) = upload_server_spool(&entry.path(), &server_uuid, repos, uploader) {
            tracing::warn!("the spool of {server_uuid} was not uploaded: {e}");
        }
    }
}

fn upload_server_spool(
    dir: &Path,
    server_uuid: &str,
    repos: &[std::sync::Arc<Repo>],
    uploader: &Uploader,
) -> Result<()> {
    let spooled = Spool::open(dir)?.recover()?;
    if spooled.is_empty() {
        return Ok(());
    }
    // Per repository, how much of each file it holds (and whether sealed).
    let mut held: Vec<BTreeMap<u64, BinlogSegment>> = Vec::new();
    for repo in repos {
        let files = archived_files(std::slice::from_ref(repo), server_uuid).unwrap_or_default();
        for seg in files.values() {
            uploader.held(repo.name(), server_uuid, &seg.file, seg.size);
        }
        held.push(files);
    }
    for f in spooled {
        let (len, sealed) = (f.summary.complete_end, f.summary.sealed);
        let seq = file_sequence(&f.name).unwrap_or(0);
        let everywhere = held.iter().all(|files| {
            files
                .get(&seq)
                .is_some_and(|s| s.file == f.name && s.size >= len && (s.sealed || !sealed))
        });
        if len <= 4 || everywhere || uploader.has_queued(server_uuid, &f.name, len, sealed) {
            continue;
        }
        uploader.submit(UploadJob {
            server_uuid: server_uuid.to_string(),
            server_id: f.summary.writer_server_id.map_or(0, u64::from),
            file: f.name,
            path: f.path,
            len,
            sealed,
            oldest_new_commit: f
                .summary
                .first_event_time
                .and_then(|t| chrono::DateTime::from_timestamp(i64::from(t), 0)),
            summary: f.summary,
            complete_at: None,
        });
    }
    Ok(())
}

/// Writes a gap marker that `list` shows; returns the repositories that hold it.
fn record_gap(repos: &[std::sync::Arc<Repo>], server_uuid: &str, detail: &str) -> Vec<String> {
    #[derive(Serialize, serde::Deserialize)]
    struct Gap<'a> {
        server_uuid: &'a str,
        detail: &'a str,
        detected_at: chrono::DateTime<Utc>,
    }
    let body = crate::repo::manifest::encode(
        "gap",
        &Gap {
            server_uuid,
            detail,
            detected_at: Utc::now(),
        },
    );
    let key = format!(
        "gaps/{}-{}",
        Utc::now().format("%Y%m%dT%H%M%SZ"),
        crate::repo::config::random_hex(2)
    );
    repos
        .iter()
        .filter(|r| r.storage().create(&key, &body).is_ok())
        .map(|r| r.name().to_string())
        .collect()
}

/// The newest segment of each archived file of `uuid`, in file order.
fn archived_files(
    repos: &[std::sync::Arc<Repo>],
    uuid: &str,
) -> Result<BTreeMap<u64, BinlogSegment>> {
    let mut segments = Vec::new();
    for repo in repos {
        segments.extend(
            repo.binlog_segments()?
                .into_iter()
                .filter(|s| s.source_uuid == uuid),
        );
    }
    Ok(coverage::newest_segments(segments)?
        .remove(uuid)
        .unwrap_or_default())
}

/// Every GTID the archive accounts for: archived ones and those before the archive began.
fn covered_gtids(repos: &[std::sync::Arc<Repo>]) -> Result<GtidSet> {
    let mut covered = GtidSet::new();
    for repo in repos {
        for seg in repo.binlog_segments()? {
            for text in [&seg.gtids, &seg.previous_gtids] {
                if let Ok(set) = GtidSet::parse(text) {
                    covered = covered.union(&set);
                }
            }
        }
    }
    Ok(covered)
}

fn next_file_on_server(facts: &SourceFacts, after: &str) -> Option<String> {
    let seq = file_sequence(after)?;
    facts
        .logs
        .iter()
        .map(|(n, _)| n)
        .find(|n| file_sequence(n).is_some_and(|s| s > seq))
        .cloned()
}

/// Where to start: the file and position, and the summary of what the spool already holds
/// of that file.
fn resume_point(
    opts: &StreamOptions,
    s: &mut Session,
    facts: &SourceFacts,
    spool: &mut Spool,
    spooled: &[SpooledFile],
    repos: &[std::sync::Arc<Repo>],
) -> Result<(String, u64, Option<FileSummary>)> {
    let archived = archived_files(repos, &facts.server_uuid)?;
    let newest_spooled = spooled.last();
    let newest_archived = archived.values().next_back();
    let spool_ahead = match (newest_spooled, newest_archived) {
        (Some(sp), Some(ar)) => file_sequence(&sp.name) >= file_sequence(&ar.file),
        (Some(_), None) => true,
        _ => false,
    };
    if spool_ahead && let Some(last) = newest_spooled {
        if last.summary.sealed {
            let next = last
                .summary
                .next_file
                .clone()
                .or_else(|| next_file_on_server(facts, &last.name));
            return match next {
                Some(n) => Ok((n, 4, None)),
                None => Ok((
                    last.name.clone(),
                    last.summary.complete_end,
                    Some(last.summary.clone()),
                )),
            };
        }
        return Ok((
            last.name.clone(),
            last.summary.complete_end,
            Some(last.summary.clone()),
        ));
    }
    if let Some(seg) = newest_archived {
        if seg.sealed {
            let next = next_file_on_server(facts, &seg.file).unwrap_or_else(|| seg.file.clone());
            return Ok((next, 4, None));
        }
        // The spool lost the open file (a new host, a wiped disk): bring the archived part
        // back, so the file goes on growing byte-identical.
        let repo = repos
            .iter()
            .find(|r| {
                r.binlog_segments()
                    .map(|v| v.contains(seg))
                    .unwrap_or(false)
            })
            .unwrap_or(&repos[0]);
        let path = spool.dir().join(&seg.file);
        let mut out = private_fs::create_file(&path)
            .map_err(|e| Error::io(format!("cannot create {}", path.display()), e))?;
        let entry = seg.file_entry();
        repo.copy_file(&entry, &mut out)?;
        out.sync_all()
            .map_err(|e| Error::io(format!("cannot sync {}", path.display()), e))?;
        let recovered = spool.recover()?;
        let summary = recovered
            .into_iter()
            .find(|f| f.name == seg.file)
            .map(|f| f.summary);
        return Ok((seg.file.clone(), seg.size, summary));
    }
    // Nothing of this server yet.
    if let Some(f) = &opts.start_file {
        return Ok((f.clone(), 4, None));
    }
    let covered = if facts.gtid_mode && !facts.mariadb {
        covered_gtids(repos)?
    } else {
        GtidSet::new()
    };
    if !covered.is_empty() {
        // A new primary after a failover: continue where the archive's coverage ends.
        return Ok((source::first_needed_file(s, facts, &covered)?, 4, None));
    }
    let from_snapshot = repos
        .iter()
        .filter_map(|r| r.snapshots().ok())
        .flatten()
        .filter(|snap| {
            snap.source
                .as_ref()
                .is_some_and(|src| src.server_uuid == facts.server_uuid)
        })
        .max_by_key(|snap| snap.time)
        .and_then(|snap| snap.binlog_file);
    let first = from_snapshot
        .filter(|f| facts.logs.iter().any(|(n, _)| n == f))
        .or_else(|| facts.logs.first().map(|(n, _)| n.clone()))
        .ok_or_else(|| Error::SourceNotReady(format!("{} lists no binary logs", s.address())))?;
    Ok((first, 4, None))
}

#[allow(clippy::too_many_arguments)]
fn stream_from(
    opts: &StreamOptions,
    source: &ConnectOptions,
    server_id: u32,
    repos: &[std::sync::Arc<Repo>],
    uploader: &Uploader,
    status: &mut StreamStatus,
    checked_ids: &mut bool,
    reporter: &Reporter,
) -> Result<()> {
    let mut s = Session::connect(source)?;
    privileges::require(&mut s, privileges::BINLOG_STREAM, "stream the binlog")?;
    let facts = source::facts(&mut s)?;
    status.server_uuid = facts.server_uuid.clone();
    let uuid = replica_uuid(&opts.spool_dir, server_id);
    if !*checked_ids {
        check_server_id(&mut s, &facts, server_id, &uuid)?;
        *checked_ids = true;
    }
    let mut spool = Spool::open(&opts.spool_dir.join(&facts.server_uuid))?;
    let spooled = spool.recover()?;
    // Files recovered from a previous run that are complete but not yet archived.
    for f in spooled.iter().filter(|f| {
        f.summary.sealed
            && !uploader.has_queued(&facts.server_uuid, &f.name, f.summary.complete_end, true)
    }) {
        let mut j = job(
            &facts,
            f.name.clone(),
            f.path.clone(),
            f.summary.complete_end,
            true,
            f.summary.clone(),
        );
        j.oldest_new_commit = f
            .summary
            .first_event_time
            .and_then(|t| chrono::DateTime::from_timestamp(i64::from(t), 0));
        uploader.submit(j);
    }
    let (file, position, summary) =
        resume_point(opts, &mut s, &facts, &mut spool, &spooled, repos)?;
    if !facts.logs.iter().any(|(n, _)| *n == file) {
        let covered = covered_gtids(repos)?;
        return Err(if facts.gtid_mode && !facts.mariadb {
            match source::first_needed_file(&mut s, &facts, &covered) {
                Err(gap) => gap,
                Ok(_) => Error::BinlogGap(format!(
                    "{} no longer has {file}, where the archive continues",
                    s.address()
                )),
            }
        } else {
            Error::BinlogGap(format!(
                "{} no longer has {file} (purged); the archive has a gap after it",
                s.address()
            ))
        });
    }
    let caught_up_at = if opts.until_caught_up {
        facts.logs.last().cloned()
    } else {
        None
    };
    drop(s);

    spool.start_file(&file, summary)?;
    let req = DumpRequest {
        server_id,
        file: file.clone(),
        position,
        heartbeat: opts.heartbeat,
        replica_uuid: uuid,
        mariadb: facts.mariadb,
    };
    let mut dump = DumpStream::open(source, &req)?;
    status.file = file;
    status.position = position;
    status.connected = true;
    status.stream_error = None;
    reporter.publish(status);
    let received = receive(
        opts,
        &facts,
        &mut dump,
        &mut spool,
        uploader,
        status,
        caught_up_at,
        reporter,
    );
    if received.is_err() {
        // The stream broke, most often because the source went away: what it delivered is
        // the newest part of the archive and exists on this host only. Upload it now, not
        // at the next interval, which a dead source may never let come. (The stream's error
        // is the one to report.)
        let _ = upload_open_file(&facts, &mut spool, uploader, status, None);
        let _ = spool.close_current();
    }
    received
}

fn check_server_id(
    s: &mut Session,
    facts: &SourceFacts,
    server_id: u32,
    own_uuid: &str,
) -> Result<()> {
    let mut taken = source::taken_server_ids(s, facts.server_id)?;
    // Our own session from before a crash may still be registered under our id.
    if let Ok(rows) = s.query(s.info().replicas_sql()) {
        let ours: Vec<u64> = rows
            .iter()
            .filter(|r| {
                r.text("Replica_UUID")
                    .or_else(|| r.text("Slave_UUID"))
                    .as_deref()
                    == Some(own_uuid)
            })
            .filter_map(|r| r.u64("Server_Id"))
            .collect();
        taken.retain(|id| *id == facts.server_id || !ours.contains(id));
    }
    if taken.contains(&u64::from(server_id)) {
        return Err(Error::Usage(format!(
            "server id {server_id} is already used by the source or one of its replicas (in use: {}); choose another with --server-id",
            taken
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(())
}

fn job(
    facts: &SourceFacts,
    file: String,
    path: PathBuf,
    len: u64,
    sealed: bool,
    summary: FileSummary,
) -> UploadJob {
    UploadJob {
        server_uuid: facts.server_uuid.clone(),
        server_id: facts.server_id,
        file,
        path,
        len,
        sealed,
        summary,
        complete_at: None,
        oldest_new_commit: None,
    }
}

/// A job for what the stream received, carrying the oldest commit not handed over before.
fn submit_received(uploader: &Uploader, status: &mut StreamStatus, mut j: UploadJob) {
    j.oldest_new_commit = status
        .receiving
        .as_mut()
        .and_then(|r| r.unsubmitted_since.take());
    uploader.submit(j);
}

/// A file the write just sealed (the server rotated) goes to the uploader whole.
fn submit_if_sealed(
    facts: &SourceFacts,
    uploader: &Uploader,
    status: &mut StreamStatus,
    written: Written,
) {
    if let Written::Sealed {
        name,
        path,
        len,
        summary,
    } = written
    {
        let j = job(facts, name, path, len, true, *summary);
        submit_received(uploader, status, j);
    }
}

/// Uploads what the open file holds now (after making it durable). `complete_at`: the
/// moment the server last said, by a heartbeat, that nothing more was written.
fn upload_open_file(
    facts: &SourceFacts,
    spool: &mut Spool,
    uploader: &Uploader,
    status: &mut StreamStatus,
    complete_at: Option<chrono::DateTime<Utc>>,
) -> Result<()> {
    spool.sync()?;
    if let Some((name, path, len, summary)) = spool.snapshot()
        && len > 4
    {
        let mut j = job(facts, name, path, len, false, summary);
        j.complete_at = complete_at.filter(|_| !spool.in_transaction());
        submit_received(uploader, status, j);
    }
    Ok(())
}

/// Notes that the spool holds a new transaction (or event outside one) whole, written at
/// `event_time`: the stream has received something no repository holds yet.
fn note_received(status: &mut StreamStatus, spool: &Spool, event_time: u32) {
    if spool.in_transaction() {
        return;
    }
    let r = status.receiving.get_or_insert_with(Receiving::default);
    if r.unsubmitted_since.is_none() {
        // The source's clock; a commit "in the future" (clock skew) counts as now.
        let now = Utc::now();
        let t = chrono::DateTime::from_timestamp(i64::from(event_time), 0).unwrap_or(now);
        r.unsubmitted_since = Some(t.min(now));
    }
}

/// The open file as the stream holds it, for the pending bytes no job carries yet.
fn refresh_receiving(status: &mut StreamStatus, facts: &SourceFacts, spool: &Spool) {
    let r = status.receiving.get_or_insert_with(Receiving::default);
    if let (Some(file), Some(len)) = (spool.current_name(), spool.current_len()) {
        if r.file != file || r.server_uuid != facts.server_uuid {
            r.server_uuid = facts.server_uuid.clone();
            r.file = file.to_string();
        }
        r.len = len;
    }
}

#[allow(clippy::too_many_arguments)]
fn receive(
    opts: &StreamOptions,
    facts: &SourceFacts,
    dump: &mut DumpStream,
    spool: &mut Spool,
    uploader: &Uploader,
    status: &mut StreamStatus,
    caught_up_at: Option<(String, u64)>,
    reporter: &Reporter,
) -> Result<()> {
    let mut last_data = Instant::now();
    let mut last_upload = Instant::now();
    let mut stop_requested: Option<Instant> = None;
    let mut caught_up = false;
    // When an event (not a heartbeat) first showed the spool past the point to catch up to.
    let mut reached_at: Option<Instant> = None;
    // A heartbeat means the server has sent everything it wrote.
    let mut complete_at: Option<chrono::DateTime<Utc>> = None;
    // Measuring the spool lists its directory: a few times a second, not once per event.
    let mut spool_checked: Option<Instant> = None;
    let mut spool_full = false;
    let mut ticks = Ticks::new();
    loop {
        // Caught up: a heartbeat came once the spool held the point (the server had sent
        // everything, so the archive is complete up to that moment, not only to its last
        // commit), or the point was passed two heartbeat periods ago without one coming: a
        // server that never stops writing never sends a heartbeat.
        let done_waiting = reached_at.is_some_and(|t| t.elapsed() > opts.heartbeat * 2);
        if stopping() || ((caught_up || done_waiting) && !spool.in_transaction()) {
            let since = *stop_requested.get_or_insert_with(Instant::now);
            // Finish the transaction in flight, but not forever.
            if !spool.in_transaction() || since.elapsed() > Duration::from_secs(30) {
                upload_open_file(facts, spool, uploader, status, complete_at)?;
                spool.close_current()?;
                dump.abort();
                return Ok(());
            }
        }
        if spool_checked.is_none_or(|t| spool_full || t.elapsed() >= Duration::from_millis(250)) {
            status.spool_bytes = spool.bytes();
            let was_full = spool_full;
            spool_full = status.spool_bytes > opts.max_spool_bytes;
            spool_checked = Some(Instant::now());
            if spool_full && !was_full {
                status.set_stream_error(format!(
                    "spool over {} MiB; waiting for uploads",
                    opts.max_spool_bytes >> 20
                ));
            } else if was_full && !spool_full {
                status.stream_error = None;
            }
        }
        if spool_full {
            // The repositories cannot keep up: stop reading (the server keeps the binlog) and
            // let the uploads catch up.
            spool.sync()?;
            std::thread::sleep(Duration::from_millis(500));
            if last_data.elapsed() > opts.heartbeat * 20 {
                return Err(Error::Internal(
                    "uploads are stalled and the spool is full; reconnecting".into(),
                ));
            }
            ticks.tick(facts, spool, uploader, status, reporter);
            continue;
        }
        let incoming = dump.next_packet()?;
        let now = Instant::now();
        match incoming {
            Incoming::Idle => {
                spool.sync()?;
                if last_data.elapsed() > opts.heartbeat * 3 {
                    return Err(Error::Mysql(crate::mysql::Error::ConnectionLost {
                        addr: dump.address().to_string(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "no event or heartbeat for 3 heartbeat periods",
                        ),
                    }));
                }
            }
            Incoming::Event(bytes) => {
                last_data = now;
                let header = Header::parse(bytes)
                    .map_err(|_| Error::Internal("short event header".into()))?;
                status.received_bytes += bytes.len() as u64;
                match header.type_code {
                    types::HEARTBEAT | types::HEARTBEAT_V2 => {
                        status.receive_lag_seconds = 0.0;
                        complete_at = Some(Utc::now());
                        caught_up |= reached(caught_up_at.as_ref(), spool);
                    }
                    types::ROTATE if header.is_artificial() || header.log_pos == 0 => {
                        let checksum = if bytes.len() >= 27
                            && facts.binlog_checksum.eq_ignore_ascii_case("CRC32")
                        {
                            event::Checksum::Crc32
                        } else {
                            event::Checksum::None
                        };
                        let raw = event::RawEvent::frame(bytes, 0)
                            .map_err(|e| Error::Internal(e.to_string()))?;
                        let (pos, name) = event::parse_rotate(&raw, checksum, 0)
                            .map_err(|e| Error::Internal(e.to_string()))?;
                        let name = name.trim_end_matches('\0').to_string();
                        if spool.current_name() != Some(name.as_str()) {
                            // The server moved on from a file it did not close with a ROTATE
                            // (a crash): what we have of it is all there is.
                            if let Some((old, path, _, mut summary)) = spool.snapshot() {
                                spool.close_current()?;
                                summary.sealed = true;
                                let len = summary.complete_end;
                                let j = job(facts, old, path, len, true, summary);
                                submit_received(uploader, status, j);
                            }
                            if pos <= 4 {
                                spool.start_file(&name, None)?;
                            } else {
                                return Err(Error::Internal(format!(
                                    "the server resumed {name} at {pos}, a file the spool lacks"
                                )));
                            }
                        }
                        status.file = name;
                    }
                    _ => {
                        status.last_event_time =
                            chrono::DateTime::from_timestamp(i64::from(header.timestamp), 0);
                        status.receive_lag_seconds =
                            (Utc::now().timestamp() - i64::from(header.timestamp)).max(0) as f64;
                        let written = spool.write_event(bytes)?;
                        if spool::belongs_in_file(&header) {
                            note_received(status, spool, header.timestamp);
                        }
                        submit_if_sealed(facts, uploader, status, written);
                        status.position = u64::from(header.log_pos);
                        if reached_at.is_none() && reached(caught_up_at.as_ref(), spool) {
                            reached_at = Some(now);
                        }
                    }
                }
            }
            Incoming::LargeStart(first, total) => {
                last_data = now;
                status.received_bytes += first.len() as u64;
                spool.begin_large_event(first, total)?;
            }
            Incoming::LargeMore(piece) => {
                last_data = now;
                status.received_bytes += piece.len() as u64;
                let written = spool.continue_large_event(piece)?;
                // The large event's own time is not at hand here: it was received now.
                note_received(status, spool, Utc::now().timestamp() as u32);
                submit_if_sealed(facts, uploader, status, written);
            }
        }
        if last_upload.elapsed() >= opts.upload_interval {
            upload_open_file(facts, spool, uploader, status, complete_at)?;
            last_upload = Instant::now();
        }
        ticks.tick(facts, spool, uploader, status, reporter);
    }
}

/// Whether the spool holds the source's binlog up to `target` (its last file and size when
/// the stream began): that file is received up to that size, or a later file has begun.
fn reached(target: Option<&(String, u64)>, spool: &Spool) -> bool {
    let (Some((file, size)), Some(current)) = (target, spool.current_name()) else {
        return false;
    };
    if current == file {
        return spool.current_len().unwrap_or(0) >= *size;
    }
    matches!(
        (crate::binlog::file_sequence(current), crate::binlog::file_sequence(file)),
        (Some(now), Some(then)) if now > then
    )
}

/// The streaming thread's periodic duties besides receiving: publishing its state for
/// `/metrics` every second, reporting (status line, `status.json`) every 10 s, and at once
/// when a repository starts failing.
struct Ticks {
    published: Instant,
    reported: Instant,
    failing_shown: Option<String>,
}

impl Ticks {
    fn new() -> Ticks {
        Ticks {
            published: Instant::now(),
            reported: Instant::now(),
            failing_shown: None,
        }
    }

    fn tick(
        &mut self,
        facts: &SourceFacts,
        spool: &Spool,
        uploader: &Uploader,
        status: &mut StreamStatus,
        reporter: &Reporter,
    ) {
        if self.published.elapsed() < PUBLISH_EVERY {
            return;
        }
        self.published = Instant::now();
        refresh_receiving(status, facts, spool);
        let failing = uploader.stats().failing();
        let newly_failing = failing.is_some() && failing != self.failing_shown;
        self.failing_shown = failing;
        if newly_failing || self.reported.elapsed() >= REPORT_EVERY {
            reporter.report(status);
            self.reported = Instant::now();
        } else {
            reporter.publish(status);
        }
    }
}
