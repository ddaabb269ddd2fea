//! myvault as a replication source: the target's own (multi-threaded) applier connects with
//! GTID auto-positioning and receives the archived binlog files, skipping what it already
//! has and ending exactly at the requested boundary. Nothing after the boundary is ever
//! sent, so the target cannot apply it.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::event::{self, Checksum, HEADER_LEN, RawEvent, types};
use super::walk::{Sink, Walk, WalkError};
use crate::mysql::decode::Reader;
use crate::mysql::gtid::GtidSet;
use crate::mysql::wire::server::ServerConn;

pub use super::walk::{ReplayFile, ReplayProgress, StopAt};

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
    /// Why serving the archive stopped, when it was the archive's fault (kept typed).
    archive_failure: Arc<Mutex<Option<WalkError>>>,
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
        let archive_failure = Arc::new(Mutex::new(None));
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
        let (t_stop, t_progress, t_served, t_password, t_failure) = (
            stop.clone(),
            progress.clone(),
            served.clone(),
            password.clone(),
            archive_failure.clone(),
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
                            archive_failure: &t_failure,
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
            archive_failure,
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

    /// The archive failure that stopped serving, if that is what happened: a damaged or
    /// missing part of a segment, named.
    pub fn take_archive_failure(&self) -> Option<WalkError> {
        self.archive_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
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
    archive_failure: &'a Mutex<Option<WalkError>>,
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
                    // Streaming from an empty set instead would send the replica transactions
                    // it already has: refuse what cannot be read.
                    let Some(have) = parse_dump_gtid(&cmd[1..]) else {
                        let why = "malformed COM_BINLOG_DUMP_GTID (its GTID set cannot be read)";
                        let _ = conn.send_err(1236, "HY000", why);
                        return Err(why.to_string());
                    };
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

    fn stream(&mut self, conn: &mut ServerConn, have: &GtidSet) -> Result<(), String> {
        let walk = Walk {
            files: self.files,
            stop_at: self.stop_at,
            cancel: self.stop,
            progress: self.progress,
        };
        let mut sink = ReplicationSink {
            conn,
            identity: &self.identity,
        };
        let served = self.served;
        let walked = walk.run(have, &mut sink, &mut |g| {
            served
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .gtids
                .add(g)
        });
        let walked = match walked {
            Ok(w) => w,
            Err(e) => {
                let msg = e.to_string();
                if matches!(e, WalkError::Archive { .. }) {
                    *self
                        .archive_failure
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(e);
                }
                self.record(|s| s.error = Some(msg.clone()));
                return Err(msg);
            }
        };
        if walked.cancelled {
            return Ok(());
        }
        conn.flush().map_err(|e| e.to_string())?;
        self.record(|s| s.boundary_reached = walked.boundary_reached);
        self.progress.done.store(true, Ordering::SeqCst);
        // Keep the connection alive until the orchestrator has seen everything applied.
        let mut last = Instant::now();
        while !self.stop.load(Ordering::SeqCst) {
            if last.elapsed() >= self.heartbeat {
                if heartbeat(conn, &self.identity, &walked.last_file, walked.last_pos).is_err() {
                    return Ok(());
                }
                last = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

/// Serves walked events to a replica over the replication protocol.
struct ReplicationSink<'a, 'c> {
    conn: &'c mut ServerConn,
    identity: &'a Identity,
}

impl Sink for ReplicationSink<'_, '_> {
    fn rotate(&mut self, file: &str) -> std::io::Result<()> {
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
        self.conn.send_event(&ev)
    }

    fn event(&mut self, ev: &RawEvent<'_>, _checksum: Checksum) -> std::io::Result<()> {
        self.conn.send_event(ev.bytes())
    }

    fn large_event(
        &mut self,
        head: &[u8; HEADER_LEN],
        body: &mut dyn Read,
        body_len: usize,
        _checksum: Checksum,
    ) -> std::io::Result<()> {
        self.conn.send_event_streaming(head, body, body_len)
    }
}

fn heartbeat(
    conn: &mut ServerConn,
    identity: &Identity,
    file: &str,
    pos: u32,
) -> std::io::Result<()> {
    let ev = event::build(
        types::HEARTBEAT,
        identity.server_id,
        0,
        pos,
        0,
        file.as_bytes(),
        identity.checksum,
    );
    conn.send_event(&ev)?;
    conn.flush()
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
