//! Reading the archive for a replay: the planned files in order, each event once, with the
//! decisions both replay engines share. Transactions the target already has are skipped;
//! the walk ends exactly at the boundary (a time, a GTID set, or the archive's end), so
//! nothing after it ever reaches a target. What to do with each event is the sink's job:
//! serve it over the replication protocol, or turn it into SQL.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::event::{Checksum, FormatDescription, GtidInfo, HEADER_LEN, Header, RawEvent, types};
use super::transaction::{Step, Tracker, TxId};
use crate::mysql::gtid::{Gtid, GtidSet};
use crate::repo::manifest::BinlogSegment;
use crate::repo::{Repo, RepoError};

/// Where replay ends.
#[derive(Debug, Clone)]
pub enum StopAt {
    /// Every transaction committed at or before this instant (microseconds), none after.
    Time(u64),
    /// Up to and including these transactions (and everything before them).
    AfterGtids(GtidSet),
    /// Everything before the first of these transactions.
    BeforeGtids(GtidSet),
    /// The end of the archive.
    End,
}

#[derive(Debug, Clone)]
pub struct ReplayFile {
    pub repo: Arc<Repo>,
    pub segment: BinlogSegment,
}

#[derive(Debug, Default)]
pub struct ReplayProgress {
    pub transactions: AtomicU64,
    pub skipped: AtomicU64,
    pub bytes: AtomicU64,
    pub last_commit_us: AtomicU64,
    /// All of the plan has been sent (or the boundary reached).
    pub done: AtomicBool,
}

/// Events up to this size are read whole; larger ones are handed over as a stream, so a
/// transaction larger than memory passes through in bounded memory.
pub const WHOLE_EVENT_MAX: usize = 4 << 20;

/// Where the walked events go.
pub trait Sink {
    /// A file begins that no real ROTATE event led to.
    fn rotate(&mut self, file: &str) -> std::io::Result<()>;
    /// An event read whole, with the file's checksum algorithm.
    fn event(&mut self, ev: &RawEvent<'_>, checksum: Checksum) -> std::io::Result<()>;
    /// An event larger than [`WHOLE_EVENT_MAX`]: its header, then exactly `body_len` bytes.
    fn large_event(
        &mut self,
        head: &[u8; HEADER_LEN],
        body: &mut dyn Read,
        body_len: usize,
        checksum: Checksum,
    ) -> std::io::Result<()>;
}

/// A large event's header and body read into one buffer, for sinks that need it whole.
pub fn read_whole(
    head: &[u8; HEADER_LEN],
    body: &mut dyn Read,
    body_len: usize,
) -> std::io::Result<Vec<u8>> {
    let mut bytes = head.to_vec();
    bytes.resize(HEADER_LEN + body_len, 0);
    body.read_exact(&mut bytes[HEADER_LEN..])?;
    Ok(bytes)
}

pub struct Walk<'a> {
    pub files: &'a [ReplayFile],
    pub stop_at: &'a StopAt,
    /// Set by another thread to end the walk early.
    pub cancel: &'a AtomicBool,
    pub progress: &'a ReplayProgress,
}

#[derive(Debug, Clone, Default)]
pub struct Walked {
    /// The transactions handed to the sink.
    pub sent: GtidSet,
    pub boundary_reached: bool,
    /// The file and the end of the last event walked (heartbeats carry them).
    pub last_file: String,
    pub last_pos: u32,
    pub cancelled: bool,
}

/// Why a walk stopped short.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    /// An archived file could not be read back intact (a damaged or missing chunk, a broken
    /// event): `segment` names it (`binlog.000012 of <server_uuid>`).
    #[error("{segment}: {error}")]
    Archive { segment: String, error: RepoError },
    /// The sink failed, or the archive ends before the boundary.
    #[error("{0}")]
    Other(String),
}

impl WalkError {
    fn archive(rf: &ReplayFile, error: RepoError) -> WalkError {
        WalkError::Archive {
            segment: format!("{} of {}", rf.segment.file, rf.segment.source_uuid),
            error,
        }
    }

    /// An event of the file that is not what the binlog format says it must be.
    fn damaged(rf: &ReplayFile, offset: u64, detail: impl ToString) -> WalkError {
        let what = format!("the event at offset {offset}");
        WalkError::archive(
            rf,
            RepoError::integrity(rf.repo.name(), what, detail.to_string()),
        )
    }

    /// Reading the file failed: the repository's error, or a file that ends inside an event.
    fn read(rf: &ReplayFile, offset: u64, e: std::io::Error) -> WalkError {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            return WalkError::damaged(rf, offset, "the file ends inside it");
        }
        let context = format!("reading at offset {offset}");
        WalkError::archive(rf, crate::repo::reader::unwrap_io(e, &context))
    }

    /// The sink failed; when it was reading a large event's body from the archive, the
    /// archive did.
    fn sink(rf: &ReplayFile, offset: u64, e: std::io::Error) -> WalkError {
        if e.get_ref().is_some_and(|inner| inner.is::<RepoError>()) {
            return WalkError::read(rf, offset, e);
        }
        WalkError::Other(e.to_string())
    }
}

impl Walk<'_> {
    /// Hands every event the target needs to `sink`. `have` is what the target already
    /// executed; `on_gtid` sees each transaction as it is handed over.
    pub fn run(
        &self,
        have: &GtidSet,
        sink: &mut dyn Sink,
        on_gtid: &mut dyn FnMut(&Gtid),
    ) -> Result<Walked, WalkError> {
        let mut w = Walked {
            last_pos: 4,
            ..Walked::default()
        };
        let mut remaining = match self.stop_at {
            StopAt::AfterGtids(set) => Some(set.subtract(have)),
            _ => None,
        };
        w.boundary_reached = matches!(remaining, Some(ref r) if r.is_empty());
        let mut prev_ended_with_rotate = false;
        'files: for rf in self.files {
            if w.boundary_reached {
                break;
            }
            let seg = &rf.segment;
            if !prev_ended_with_rotate {
                sink.rotate(&seg.file)
                    .map_err(|e| WalkError::Other(e.to_string()))?;
            }
            w.last_file = seg.file.clone();
            let entry = seg.file_entry();
            let mut reader = rf
                .repo
                .open_file(&entry)
                .map_err(|e| WalkError::archive(rf, e))?;
            let mut magic = [0u8; 4];
            reader
                .read_exact(&mut magic)
                .map_err(|e| WalkError::read(rf, 0, e))?;
            let mut offset = 4u64;
            let mut checksum = Checksum::None;
            let mut tracker = Tracker::new();
            let mut skipping = false;
            let mut small = Vec::new();
            prev_ended_with_rotate = false;
            while offset < seg.size {
                if self.cancel.load(Ordering::SeqCst) {
                    w.cancelled = true;
                    return Ok(w);
                }
                let mut head = [0u8; HEADER_LEN];
                reader
                    .read_exact(&mut head)
                    .map_err(|e| WalkError::read(rf, offset, e))?;
                let header = Header::parse(&head)
                    .map_err(|_| WalkError::damaged(rf, offset, "bad event header"))?;
                let size = header.event_size as usize;
                let body_len = size
                    .checked_sub(HEADER_LEN)
                    .ok_or_else(|| WalkError::damaged(rf, offset, "bad event size"))?;
                let raw = if body_len <= WHOLE_EVENT_MAX {
                    small.clear();
                    small.extend_from_slice(&head);
                    small.resize(size, 0);
                    reader
                        .read_exact(&mut small[HEADER_LEN..])
                        .map_err(|e| WalkError::read(rf, offset, e))?;
                    Some(
                        RawEvent::frame(&small, offset)
                            .map_err(|e| WalkError::damaged(rf, offset, e))?,
                    )
                } else {
                    None
                };
                if header.type_code == types::FORMAT_DESCRIPTION
                    && let Some(r) = &raw
                {
                    checksum = FormatDescription::parse(r, offset)
                        .map_err(|e| WalkError::damaged(rf, offset, e))?
                        .checksum;
                }
                let step = tracker
                    .feed(header.type_code, raw.as_ref(), checksum, offset)
                    .map_err(|e| WalkError::damaged(rf, offset, e))?;
                let mut this_gtid: Option<Gtid> = None;
                if let Step::Begin(id) = &step {
                    let (gtid, commit_us) = match id {
                        TxId::Mysql(GtidInfo {
                            gtid,
                            immediate_commit_us,
                            ..
                        }) => (gtid.clone(), *immediate_commit_us),
                        TxId::Mariadb(_) => (None, u64::from(header.timestamp) * 1_000_000),
                    };
                    let stop_here = match (self.stop_at, &gtid) {
                        (StopAt::Time(t), _) => commit_us > *t,
                        (StopAt::BeforeGtids(set), Some(g)) => set.contains(g),
                        _ => false,
                    };
                    if stop_here {
                        w.boundary_reached = true;
                        break 'files;
                    }
                    skipping = gtid
                        .as_ref()
                        .is_some_and(|g| have.contains(g) || w.sent.contains(g));
                    this_gtid = gtid;
                    if skipping {
                        self.progress.skipped.fetch_add(1, Ordering::Relaxed);
                    } else {
                        self.progress
                            .last_commit_us
                            .store(commit_us, Ordering::Relaxed);
                    }
                }
                let in_tx = tracker.in_transaction()
                    || matches!(step, Step::Commit)
                    || matches!(step, Step::Begin(_));
                let send = !(in_tx && skipping) && header.type_code != types::STOP;
                if send {
                    match &raw {
                        Some(r) => sink
                            .event(r, checksum)
                            .map_err(|e| WalkError::Other(e.to_string()))?,
                        None => sink
                            .large_event(
                                &head,
                                &mut (&mut reader).take(body_len as u64),
                                body_len,
                                checksum,
                            )
                            .map_err(|e| WalkError::sink(rf, offset, e))?,
                    }
                    self.progress
                        .bytes
                        .fetch_add(size as u64, Ordering::Relaxed);
                } else if raw.is_none() {
                    std::io::copy(
                        &mut (&mut reader).take(body_len as u64),
                        &mut std::io::sink(),
                    )
                    .map_err(|e| WalkError::read(rf, offset, e))?;
                }
                if let Some(g) = this_gtid.filter(|_| !skipping) {
                    w.sent.add(&g);
                    on_gtid(&g);
                }
                if header.type_code == types::ROTATE && !header.is_artificial() {
                    prev_ended_with_rotate = true;
                }
                // Before any stop below: heartbeats carry this position, and a replica
                // refuses one behind the end of the last event it received.
                offset += size as u64;
                w.last_pos = u32::try_from(offset).unwrap_or(u32::MAX);
                if matches!(step, Step::Commit) {
                    if !skipping {
                        self.progress.transactions.fetch_add(1, Ordering::Relaxed);
                    }
                    skipping = false;
                    if let Some(r) = remaining.as_mut() {
                        *r = r.subtract(&w.sent);
                        if r.is_empty() {
                            w.boundary_reached = true;
                            break 'files;
                        }
                    }
                }
            }
        }
        if let Some(r) = remaining.filter(|r| !r.is_empty()) {
            return Err(WalkError::Other(format!(
                "the archive ends before these transactions: {r}"
            )));
        }
        Ok(w)
    }
}
