//! The replication client: registers as a replica and receives the binlog with
//! COM_BINLOG_DUMP from a file and position, as raw packets.
//!
//! Streaming by file and position (rather than by GTID set) keeps the archived files
//! byte-identical to the server's: the server sends every event of the file from the
//! requested offset on, never skipping the transactions a GTID set already holds. GTID sets
//! decide where to start on a server the archive has not seen yet (after a failover).

use std::time::Duration;

use crate::mysql::Error;
use crate::mysql::session::quote_str;
use crate::mysql::wire::{Conn, ConnectOptions};

const COM_REGISTER_SLAVE: u8 = 0x15;
const COM_BINLOG_DUMP: u8 = 0x12;
/// MariaDB's COM_BINLOG_DUMP flag for sending ANNOTATE_ROWS events.
const BINLOG_SEND_ANNOTATE_ROWS_EVENT: u16 = 2;

/// How long reads wait before reporting idleness, so the spool can fsync on time.
pub const TICK: Duration = Duration::from_millis(100);

/// Events are handed on in pieces of at most this size, so memory does not grow with them.
const PIECE: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct DumpRequest {
    pub server_id: u32,
    pub file: String,
    pub position: u64,
    pub heartbeat: Duration,
    /// Identifies this replica to the source, so a reconnect replaces its own stale session.
    pub replica_uuid: String,
    pub mariadb: bool,
}

/// One packet of the dump stream.
#[derive(Debug)]
pub enum Incoming<'a> {
    /// Nothing arrived for [`TICK`].
    Idle,
    /// An event, whole.
    Event(&'a [u8]),
    /// The first piece of an event that spans several packets, and the event's total size.
    LargeStart(&'a [u8], usize),
    /// A further piece of it.
    LargeMore(&'a [u8]),
}

pub struct DumpStream {
    conn: Conn,
    stall: Duration,
    in_large: bool,
}

impl DumpStream {
    pub fn open(opts: &ConnectOptions, req: &DumpRequest) -> Result<DumpStream, Error> {
        let mut o = opts.clone();
        o.read_timeout = Some(TICK);
        let mut conn = Conn::connect(&o)?;
        let ns = req.heartbeat.as_nanos().min(u128::from(u64::MAX)) as u64;
        // The old names and the 8.0.26+ names, so every version understands.
        conn.exec("SET @master_binlog_checksum = @@GLOBAL.binlog_checksum, @source_binlog_checksum = @@GLOBAL.binlog_checksum")?;
        conn.exec(&format!(
            "SET @master_heartbeat_period = {ns}, @source_heartbeat_period = {ns}"
        ))?;
        conn.exec(&format!(
            "SET @slave_uuid = {u}, @replica_uuid = {u}",
            u = quote_str(&req.replica_uuid)
        ))?;
        if req.mariadb {
            // GTID-aware (4): the server sends GTID events rather than BEGIN queries.
            conn.exec("SET @mariadb_slave_capability = 4")?;
        }
        let host = hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut reg = vec![COM_REGISTER_SLAVE];
        reg.extend_from_slice(&req.server_id.to_le_bytes());
        for s in [host.as_str(), "", ""] {
            let b = &s.as_bytes()[..s.len().min(255)];
            reg.push(b.len() as u8);
            reg.extend_from_slice(b);
        }
        reg.extend_from_slice(&0u16.to_le_bytes()); // port
        reg.extend_from_slice(&0u32.to_le_bytes()); // rank
        reg.extend_from_slice(&0u32.to_le_bytes()); // source id
        conn.write_command(&reg)?;
        conn.read_packet_checked()?;

        let pos = u32::try_from(req.position).map_err(|_| Error::Unexpected {
            addr: conn.address().to_string(),
            query: "COM_BINLOG_DUMP".into(),
            detail: format!("position {} does not fit the dump protocol", req.position),
        })?;
        let mut dump = vec![COM_BINLOG_DUMP];
        dump.extend_from_slice(&pos.to_le_bytes());
        // Flags: block at the end and wait. MariaDB leaves its ANNOTATE_ROWS events (the
        // statement behind row events) out of the stream unless asked, and the archive must
        // be the server's file byte for byte.
        let flags: u16 = if req.mariadb {
            BINLOG_SEND_ANNOTATE_ROWS_EVENT
        } else {
            0
        };
        dump.extend_from_slice(&flags.to_le_bytes());
        dump.extend_from_slice(&req.server_id.to_le_bytes());
        dump.extend_from_slice(req.file.as_bytes());
        conn.write_command(&dump)?;
        Ok(DumpStream {
            conn,
            stall: req.heartbeat.max(Duration::from_secs(5)) * 3,
            in_large: false,
        })
    }

    pub fn address(&self) -> &str {
        self.conn.address()
    }

    pub fn next_packet(&mut self) -> Result<Incoming<'_>, Error> {
        let Some(piece) = self.conn.read_piece(self.stall, PIECE)? else {
            return Ok(Incoming::Idle);
        };
        if self.in_large {
            self.in_large = !piece.last;
            return Ok(Incoming::LargeMore(self.conn.last_packet()));
        }
        let packet = self.conn.last_packet();
        match packet.first() {
            Some(0x00) => {
                let event = &packet[1..];
                if piece.last {
                    Ok(Incoming::Event(event))
                } else {
                    self.in_large = true;
                    let total = event
                        .get(9..13)
                        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                        .unwrap_or(0);
                    Ok(Incoming::LargeStart(event, total))
                }
            }
            Some(0xFF) => Err(self.conn.last_packet_error()),
            // EOF: the server ended the dump, as it does when it shuts down.
            Some(0xFE) => Err(Error::ConnectionLost {
                addr: self.conn.address().to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "the source ended the binlog stream (it is shutting down)",
                ),
            }),
            _ => Err(Error::NotMysql {
                addr: self.conn.address().to_string(),
                detail: "the binlog stream ended unexpectedly".into(),
            }),
        }
    }

    /// Closes the connection at once.
    pub fn abort(&self) {
        self.conn.abort();
    }
}
