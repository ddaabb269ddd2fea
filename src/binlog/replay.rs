//! myvault as a replication source: the target's own (multi-threaded) applier connects with
//! GTID auto-positioning and receives the archived binlog files, skipping what it already
//! has and ending exactly at the requested boundary. Nothing after the boundary is ever
//! sent, so the target cannot apply it.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::event::{
    self, Checksum, FormatDescription, GtidInfo, HEADER_LEN, Header, RawEvent, types,
};
use super::transaction::{Step, Tracker, TxId};
use crate::mysql::decode::Reader;
use crate::mysql::gtid::{Gtid, GtidSet};
use crate::mysql::wire::server::ServerConn;
use crate::repo::Repo;
use crate::repo::manifest::{BinlogSegment, FileEntry, FileKind};

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

/// What the source sent: the GTIDs the target must end up with, and why it stopped.
#[derive(Debug, Clone, Default)]
pub struct Served {
    pub gtids: GtidSet,
    pub boundary_reached: bool,
    pub error: Option<String>,
}

pub struct ReplaySource {
    port: u16,
    password: String,
    stop: Arc<AtomicBool>,
    progress: Arc<ReplayProgress>,
    served: Arc<Mutex<Served>>,
    handle: Option<JoinHandle<()>>,
}

pub const USER: &str = "myvault_replay";

#[derive(Clone)]
struct Identity {
    server_id: u32,
    server_uuid: String,
    version: String,
    checksum: Checksum,
}

impl ReplaySource {
    /// Listens on `bind` (port 0 picks a free one) and serves `files` to whoever logs in
    /// with the generated password.
    pub fn start(
        bind: &str,
        files: Vec<ReplayFile>,
        stop_at: StopAt,
        version: &str,
        checksum: Checksum,
    ) -> std::io::Result<ReplaySource> {
        let listener = TcpListener::bind(bind)?;
        let port = listener.local_addr()?.port();
        let password = crate::repo::config::random_hex(16);
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(ReplayProgress::default());
        let served = Arc::new(Mutex::new(Served::default()));
        let uuid_hex = crate::repo::config::random_hex(16);
        let identity = Identity {
            server_id: 4_000_000_000 + (rand::random::<u32>() % 200_000_000),
            server_uuid: format!(
                "{}-{}-{}-{}-{}",
                &uuid_hex[..8],
                &uuid_hex[8..12],
                &uuid_hex[12..16],
                &uuid_hex[16..20],
                &uuid_hex[20..32]
            ),
            version: format!("{version}-myvault-replay"),
            checksum,
        };
        listener.set_nonblocking(true)?;
        let (t_stop, t_progress, t_served, t_password) = (
            stop.clone(),
            progress.clone(),
            served.clone(),
            password.clone(),
        );
        let handle = std::thread::spawn(move || {
            let mut connection_id = 1;
            while !t_stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        connection_id += 1;
                        let session = Session {
                            identity: identity.clone(),
                            files: &files,
                            stop_at: &stop_at,
                            stop: &t_stop,
                            progress: &t_progress,
                            served: &t_served,
                            heartbeat: Duration::from_secs(1),
                        };
                        if let Err(e) = session.run(stream, connection_id, &t_password) {
                            let mut s = t_served.lock().unwrap_or_else(|e| e.into_inner());
                            if s.error.is_none() && !t_stop.load(Ordering::SeqCst) {
                                s.error = Some(e);
                            }
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        });
        Ok(ReplaySource {
            port,
            password,
            stop,
            progress,
            served,
            handle: Some(handle),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    pub fn progress(&self) -> &ReplayProgress {
        &self.progress
    }

    pub fn served(&self) -> Served {
        self.served
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn stop(mut self) -> Served {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.served()
    }
}

impl Drop for ReplaySource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

struct Session<'a> {
    identity: Identity,
    files: &'a [ReplayFile],
    stop_at: &'a StopAt,
    stop: &'a AtomicBool,
    progress: &'a ReplayProgress,
    served: &'a Mutex<Served>,
    heartbeat: Duration,
}

const COM_QUIT: u8 = 0x01;
const COM_QUERY: u8 = 0x03;
const COM_PING: u8 = 0x0e;
const COM_REGISTER_SLAVE: u8 = 0x15;
const COM_BINLOG_DUMP_GTID: u8 = 0x1e;

impl Session<'_> {
    fn run(mut self, stream: TcpStream, connection_id: u32, password: &str) -> Result<(), String> {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
        let write_half = stream.try_clone().map_err(|e| e.to_string())?;
        let mut conn = ServerConn::accept(
            stream,
            &self.identity.version,
            connection_id,
            USER,
            password.as_bytes(),
        )
        .map_err(|e| e.to_string())?;
        loop {
            let cmd = match conn.read_command() {
                Ok(c) => c,
                Err(_) => return Ok(()), // the replica went away; it may come back
            };
            match cmd.first().copied() {
                Some(COM_QUIT) | None => return Ok(()),
                Some(COM_PING) | Some(COM_REGISTER_SLAVE) => {
                    conn.send_ok().map_err(|e| e.to_string())?
                }
                Some(COM_QUERY) => {
                    let sql = String::from_utf8_lossy(&cmd[1..]).into_owned();
                    self.answer(&mut conn, &sql).map_err(|e| e.to_string())?;
                }
                Some(COM_BINLOG_DUMP_GTID) => {
                    let have = parse_dump_gtid(&cmd[1..]).unwrap_or_default();
                    let result = self.stream(&mut conn, &have);
                    let _ = write_half.shutdown(std::net::Shutdown::Both);
                    return result;
                }
                Some(other) => conn
                    .send_err(
                        1047,
                        "08S01",
                        &format!("myvault's replay source does not support command {other}"),
                    )
                    .map_err(|e| e.to_string())?,
            }
        }
    }

    /// The replica's setup queries: variables it asks about, and SETs it makes.
    fn answer(&mut self, conn: &mut ServerConn, sql: &str) -> std::io::Result<()> {
        let q = sql.trim().to_ascii_uppercase();
        if q.starts_with("SET") {
            if let Some(ns) = q
                .contains("HEARTBEAT_PERIOD")
                .then(|| {
                    q.rsplit('=')
                        .next()
                        .and_then(|v| v.trim().parse::<u64>().ok())
                })
                .flatten()
                && ns > 0
            {
                self.heartbeat = Duration::from_nanos(ns).max(Duration::from_millis(100));
            }
            return conn.send_ok();
        }
        if !q.starts_with("SELECT") && !q.starts_with("SHOW") {
            return conn.send_ok();
        }
        let checksum = match self.identity.checksum {
            Checksum::Crc32 => "CRC32",
            Checksum::None => "NONE",
        };
        let value = if q.contains("UNIX_TIMESTAMP") {
            Some(chrono::Utc::now().timestamp().to_string())
        } else if q.contains("SERVER_ID") {
            Some(self.identity.server_id.to_string())
        } else if q.contains("SERVER_UUID") {
            Some(self.identity.server_uuid.clone())
        } else if q.contains("GTID_MODE") {
            Some("ON".into())
        } else if q.contains("BINLOG_CHECKSUM") {
            Some(checksum.into())
        } else if q.contains("VERSION") {
            Some(self.identity.version.clone())
        } else {
            None
        };
        if q.starts_with("SHOW VARIABLES") {
            let name = if q.contains("SERVER_ID") {
                "server_id"
            } else if q.contains("SERVER_UUID") {
                "server_uuid"
            } else {
                ""
            };
            let rows = if name.is_empty() {
                vec![]
            } else {
                vec![vec![Some(name.to_string()), value]]
            };
            return conn.send_rows(&["Variable_name", "Value"], &rows);
        }
        conn.send_rows(&["value"], &[vec![value]])
    }

    fn record(&self, f: impl FnOnce(&mut Served)) {
        f(&mut self.served.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn artificial_rotate(&self, conn: &mut ServerConn, file: &str) -> std::io::Result<()> {
        let mut body = 4u64.to_le_bytes().to_vec();
        body.extend_from_slice(file.as_bytes());
        let ev = event::build(
            types::ROTATE,
            self.identity.server_id,
            0,
            0,
            event::LOG_EVENT_ARTIFICIAL_F,
            &body,
            self.identity.checksum,
        );
        conn.send_event(&ev)
    }

    fn heartbeat(&self, conn: &mut ServerConn, file: &str, pos: u32) -> std::io::Result<()> {
        let ev = event::build(
            types::HEARTBEAT,
            self.identity.server_id,
            0,
            pos,
            0,
            file.as_bytes(),
            self.identity.checksum,
        );
        conn.send_event(&ev)?;
        conn.flush()
    }

    fn stream(&mut self, conn: &mut ServerConn, have: &GtidSet) -> Result<(), String> {
        let mut sent = GtidSet::new();
        let mut remaining = match self.stop_at {
            StopAt::AfterGtids(set) => Some(set.subtract(have)),
            _ => None,
        };
        let mut last_file = String::new();
        let mut last_pos = 4u32;
        let mut boundary = matches!(remaining, Some(ref r) if r.is_empty());
        let mut prev_ended_with_rotate = false;
        'files: for rf in self.files {
            if boundary {
                break;
            }
            let seg = &rf.segment;
            if !prev_ended_with_rotate {
                self.artificial_rotate(conn, &seg.file)
                    .map_err(|e| e.to_string())?;
            }
            last_file = seg.file.clone();
            let entry = FileEntry {
                path: seg.file.clone(),
                kind: FileKind::File,
                mode: 0o640,
                size: seg.size,
                sha256: Some(seg.sha256),
                target: None,
                refs: seg.refs.clone(),
            };
            let mut reader = rf.repo.open_file(&entry).map_err(|e| e.to_string())?;
            let mut magic = [0u8; 4];
            reader
                .read_exact(&mut magic)
                .map_err(|e| format!("{}: {e}", seg.file))?;
            let mut offset = 4u64;
            let mut checksum = Checksum::None;
            let mut tracker = Tracker::new();
            let mut skipping = false;
            let mut small = Vec::new();
            prev_ended_with_rotate = false;
            while offset < seg.size {
                if self.stop.load(Ordering::SeqCst) {
                    return Ok(());
                }
                let mut head = [0u8; HEADER_LEN];
                reader
                    .read_exact(&mut head)
                    .map_err(|e| format!("{} at {offset}: {e}", seg.file))?;
                let header = Header::parse(&head)
                    .map_err(|_| format!("{}: bad event header at {offset}", seg.file))?;
                let size = header.event_size as usize;
                let body_len = size
                    .checked_sub(HEADER_LEN)
                    .ok_or_else(|| format!("{}: bad event size at {offset}", seg.file))?;
                let whole = body_len <= 4 << 20;
                let raw = if whole {
                    small.clear();
                    small.extend_from_slice(&head);
                    small.resize(size, 0);
                    reader
                        .read_exact(&mut small[HEADER_LEN..])
                        .map_err(|e| format!("{} at {offset}: {e}", seg.file))?;
                    Some(RawEvent::frame(&small, offset).map_err(|e| e.to_string())?)
                } else {
                    None
                };
                if header.type_code == types::FORMAT_DESCRIPTION
                    && let Some(r) = &raw
                {
                    checksum = FormatDescription::parse(r, offset)
                        .map_err(|e| e.to_string())?
                        .checksum;
                }
                let step = tracker
                    .feed(header.type_code, raw.as_ref(), checksum, offset)
                    .map_err(|e| e.to_string())?;
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
                        boundary = true;
                        break 'files;
                    }
                    skipping = gtid
                        .as_ref()
                        .is_some_and(|g| have.contains(g) || sent.contains(g));
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
                        Some(r) => conn.send_event(r.bytes()).map_err(|e| e.to_string())?,
                        None => conn
                            .send_event_streaming(
                                &head,
                                &mut (&mut reader).take(body_len as u64),
                                body_len,
                            )
                            .map_err(|e| e.to_string())?,
                    }
                    self.progress
                        .bytes
                        .fetch_add(size as u64, Ordering::Relaxed);
                } else if raw.is_none() {
                    std::io::copy(
                        &mut (&mut reader).take(body_len as u64),
                        &mut std::io::sink(),
                    )
                    .map_err(|e| e.to_string())?;
                }
                if let Some(g) = this_gtid.filter(|_| !skipping) {
                    sent.add(&g);
                    self.record(|s| s.gtids.add(&g));
                }
                if header.type_code == types::ROTATE && !header.is_artificial() {
                    prev_ended_with_rotate = true;
                }
                // Before any stop below: heartbeats carry this position, and the replica
                // refuses one behind the end of the last event it received.
                offset += size as u64;
                last_pos = u32::try_from(offset).unwrap_or(u32::MAX);
                if matches!(step, Step::Commit) {
                    if !skipping {
                        self.progress.transactions.fetch_add(1, Ordering::Relaxed);
                    }
                    skipping = false;
                    if let Some(r) = remaining.as_mut() {
                        *r = r.subtract(&sent);
                        if r.is_empty() {
                            boundary = true;
                            break 'files;
                        }
                    }
                }
            }
        }
        conn.flush().map_err(|e| e.to_string())?;
        if let Some(r) = remaining.filter(|r| !r.is_empty()) {
            let msg = format!("the archive ends before these transactions: {r}");
            self.record(|s| s.error = Some(msg.clone()));
            return Err(msg);
        }
        self.record(|s| s.boundary_reached = boundary);
        self.progress.done.store(true, Ordering::SeqCst);
        // Keep the connection alive until the orchestrator has seen everything applied.
        let mut last = Instant::now();
        while !self.stop.load(Ordering::SeqCst) {
            if last.elapsed() >= self.heartbeat {
                if self.heartbeat(conn, &last_file, last_pos).is_err() {
                    return Ok(());
                }
                last = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

/// The replica's executed GTID set from COM_BINLOG_DUMP_GTID.
fn parse_dump_gtid(body: &[u8]) -> Option<GtidSet> {
    let mut r = Reader::new(body);
    let _flags = r.u16().ok()?;
    let _server_id = r.u32().ok()?;
    let name_len = r.u32().ok()? as usize;
    r.skip(name_len).ok()?;
    let _pos = r.u64().ok()?;
    let data_len = r.u32().ok()? as usize;
    GtidSet::decode(r.take(data_len).ok()?).ok()
}
