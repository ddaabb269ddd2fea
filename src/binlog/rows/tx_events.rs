//! The archive walk seen as transactions: each one's GTID and commit time, then its events
//! (queries, table maps, rows), compressed payloads unpacked, then its end. `binlog search`
//! and `flashback` are handlers of this.

use std::io::Read;

use super::payload;
use crate::binlog::event::{self, Checksum, GtidInfo, HEADER_LEN, Header, RawEvent, types};
use crate::binlog::walk::Sink;

/// What a transaction is made of, as a handler sees it.
pub trait TxHandler {
    /// A transaction starts: its GTID event, in `file` at `pos`.
    fn begin(&mut self, info: &GtidInfo, file: &str, pos: u64) -> std::io::Result<()>;
    /// A statement that is the whole transaction (DDL), or one inside it (statement-based
    /// DML): the default schema and the text.
    fn statement(&mut self, db: &str, sql: &str) -> std::io::Result<()>;
    /// A TABLE_MAP or rows event's type and body (without checksum).
    fn row_event(&mut self, type_code: u8, body: &[u8]) -> std::io::Result<()>;
    /// The transaction ended (committed, or rolled back: `committed` false).
    fn end(&mut self, committed: bool) -> std::io::Result<()>;
}

fn invalid(what: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.into())
}

/// A walk sink that hands transactions to a [`TxHandler`].
pub struct TxSink<'h> {
    handler: &'h mut dyn TxHandler,
    file: String,
    in_tx: bool,
    explicit_begin: bool,
}

impl<'h> TxSink<'h> {
    pub fn new(handler: &'h mut dyn TxHandler) -> Self {
        TxSink {
            handler,
            file: String::new(),
            in_tx: false,
            explicit_begin: false,
        }
    }

    fn end(&mut self, committed: bool) -> std::io::Result<()> {
        if self.in_tx {
            self.in_tx = false;
            self.explicit_begin = false;
            self.handler.end(committed)?;
        }
        Ok(())
    }

    /// One event, with or without checksum (events inside a payload have none).
    fn handle(&mut self, bytes: &[u8], checksum: Checksum) -> std::io::Result<()> {
        let ev = RawEvent::frame(bytes, 0).map_err(|e| invalid(e.to_string()))?;
        let header = *ev.header();
        let body = ev.body(checksum);
        match header.type_code {
            types::ROTATE if !header.is_artificial() => {
                let (_, name) =
                    event::parse_rotate(&ev, checksum, 0).map_err(|e| invalid(e.to_string()))?;
                self.file = name;
            }
            types::GTID | types::GTID_TAGGED | types::ANONYMOUS_GTID => {
                // A GTID without the end of the one before: that one was cut off.
                self.end(false)?;
                let info = if header.type_code == types::GTID_TAGGED {
                    GtidInfo::parse_tagged(body, 0)
                } else {
                    GtidInfo::parse_untagged(body, header.type_code == types::ANONYMOUS_GTID, 0)
                }
                .map_err(|e| invalid(e.to_string()))?;
                let pos = u64::from(header.log_pos).saturating_sub(u64::from(header.event_size));
                self.in_tx = true;
                self.handler.begin(&info, &self.file, pos)?;
            }
            types::QUERY => {
                let (db, sql) =
                    event::parse_query(&ev, checksum, 0).map_err(|e| invalid(e.to_string()))?;
                let head = sql.trim_start().get(..8).unwrap_or(sql.trim_start());
                let word = head
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_ascii_uppercase();
                match word.as_str() {
                    "BEGIN" => self.explicit_begin = true,
                    "COMMIT" => self.end(true)?,
                    "ROLLBACK" => self.end(false)?,
                    _ if self.in_tx => {
                        self.handler.statement(&db, &sql)?;
                        if !self.explicit_begin {
                            self.end(true)?;
                        }
                    }
                    _ => {}
                }
            }
            types::TABLE_MAP
            | types::WRITE_ROWS
            | types::UPDATE_ROWS
            | types::DELETE_ROWS
            | types::PARTIAL_UPDATE_ROWS
            | 23..=25
                if self.in_tx =>
            {
                self.handler.row_event(header.type_code, body)?
            }
            types::XID => self.end(true)?,
            types::XA_PREPARE => self.end(true)?,
            types::TRANSACTION_PAYLOAD => {
                payload::for_each_event(&mut &body[..], &mut |inner| {
                    self.handle(inner, Checksum::None)
                })?;
            }
            _ => {}
        }
        Ok(())
    }
}

impl Sink for TxSink<'_> {
    fn rotate(&mut self, file: &str) -> std::io::Result<()> {
        self.file = file.to_string();
        Ok(())
    }

    fn event(&mut self, ev: &RawEvent<'_>, checksum: Checksum) -> std::io::Result<()> {
        self.handle(ev.bytes(), checksum)
    }

    fn large_event(
        &mut self,
        head: &[u8; HEADER_LEN],
        body: &mut dyn Read,
        body_len: usize,
        checksum: Checksum,
    ) -> std::io::Result<()> {
        let header = Header::parse(head).map_err(|_| invalid("bad event header"))?;
        if header.type_code == types::TRANSACTION_PAYLOAD {
            // Streamed: a compressed transaction can be larger than memory. Its checksum
            // trails the body and is not part of the payload.
            let len = match checksum {
                Checksum::Crc32 => body_len.saturating_sub(event::CHECKSUM_LEN),
                Checksum::None => body_len,
            };
            let mut limited = body.take(len as u64);
            payload::for_each_event(&mut limited, &mut |inner| {
                self.handle(inner, Checksum::None)
            })?;
            std::io::copy(&mut limited, &mut std::io::sink())?;
            std::io::copy(body, &mut std::io::sink())?;
            return Ok(());
        }
        // Any other event this large is one huge row: held while it is decoded.
        let bytes = crate::binlog::walk::read_whole(head, body, body_len)?;
        self.handle(&bytes, checksum)
    }
}
