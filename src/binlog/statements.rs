//! Binlog events as SQL for one session, the way mysqlbinlog writes them: row events (and
//! the table maps before them) as `BINLOG '<base64>'` statements, transactions framed by
//! `SET GTID_NEXT`, and statements (DDL) as their text after the session settings the
//! original session had (SQL mode, character sets, time zone, timestamp...).
//!
//! This is the fallback replay engine's half that knows events; it is slower than the
//! target's own applier but needs nothing from the target but a session.
//!
//! Not handled (the applier engine is): statement-based DML with its INTVAR/RAND/USER_VAR
//! context, XA transactions, MariaDB binlogs. Large events are held whole, since a BINLOG
//! statement carries its events whole.

use std::io::Read;

use base64::Engine as _;

use std::collections::HashMap;

use super::event::{self, Checksum, GtidInfo, HEADER_LEN, Header, RawEvent, types};
use super::table_filter::{self, STMT_END_F, TableFilter};
use super::walk::Sink;
use crate::mysql::decode::Reader;
use crate::mysql::session::quote_ident;

/// Runs one statement on the target.
pub type Exec<'a> = dyn FnMut(&[u8]) -> std::io::Result<()> + 'a;

/// Query event status variables (`Query_event::Query_event_status_vars` in MySQL).
mod status {
    pub const FLAGS2: u8 = 0;
    pub const SQL_MODE: u8 = 1;
    pub const CATALOG: u8 = 2;
    pub const AUTO_INCREMENT: u8 = 3;
    pub const CHARSET: u8 = 4;
    pub const TIME_ZONE: u8 = 5;
    pub const CATALOG_NZ: u8 = 6;
    pub const LC_TIME_NAMES: u8 = 7;
    pub const CHARSET_DATABASE: u8 = 8;
    pub const TABLE_MAP_FOR_UPDATE: u8 = 9;
    pub const MASTER_DATA_WRITTEN: u8 = 10;
    pub const INVOKER: u8 = 11;
    pub const UPDATED_DB_NAMES: u8 = 12;
    pub const MICROSECONDS: u8 = 13;
    pub const COMMIT_TS: u8 = 14;
    pub const COMMIT_TS2: u8 = 15;
    pub const EXPLICIT_DEFAULTS_FOR_TIMESTAMP: u8 = 16;
    pub const DDL_LOGGED_WITH_XID: u8 = 17;
    pub const DEFAULT_COLLATION_FOR_UTF8MB4: u8 = 18;
    pub const SQL_REQUIRE_PRIMARY_KEY: u8 = 19;
    pub const DEFAULT_TABLE_ENCRYPTION: u8 = 20;
}

const OPTION_AUTO_IS_NULL: u32 = 1 << 14;
const OPTION_NOT_AUTOCOMMIT: u32 = 1 << 19;
const OPTION_NO_FOREIGN_KEY_CHECKS: u32 = 1 << 26;
const OPTION_RELAXED_UNIQUE_CHECKS: u32 = 1 << 27;

fn io_err(what: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.into())
}

/// The session assignments a QUERY event's status variables stand for.
fn session_settings(vars: &[u8], timestamp: u32) -> std::io::Result<Vec<String>> {
    let mut r = Reader::new(vars);
    let mut micros = None;
    let mut out = Vec::new();
    let bad = |_| io_err("malformed query event status variables");
    while !r.is_empty() {
        let code = r.u8().map_err(bad)?;
        match code {
            status::FLAGS2 => {
                let f = r.u32().map_err(bad)?;
                let on = |bit: u32| u8::from(f & bit != 0);
                out.push(format!(
                    "@@session.foreign_key_checks={}, @@session.sql_auto_is_null={}, @@session.unique_checks={}, @@session.autocommit={}",
                    1 - on(OPTION_NO_FOREIGN_KEY_CHECKS),
                    on(OPTION_AUTO_IS_NULL),
                    1 - on(OPTION_RELAXED_UNIQUE_CHECKS),
                    1 - on(OPTION_NOT_AUTOCOMMIT)
                ));
            }
            status::SQL_MODE => out.push(format!("@@session.sql_mode={}", r.u64().map_err(bad)?)),
            status::CATALOG => {
                let n = r.u8().map_err(bad)? as usize;
                r.skip(n + 1).map_err(bad)?;
            }
            status::AUTO_INCREMENT => {
                let (inc, off) = (r.u16().map_err(bad)?, r.u16().map_err(bad)?);
                out.push(format!(
                    "@@session.auto_increment_increment={inc}, @@session.auto_increment_offset={off}"
                ));
            }
            status::CHARSET => {
                let (client, conn, server) = (
                    r.u16().map_err(bad)?,
                    r.u16().map_err(bad)?,
                    r.u16().map_err(bad)?,
                );
                out.push(format!(
                    "@@session.character_set_client={client}, @@session.collation_connection={conn}, @@session.collation_server={server}"
                ));
            }
            status::TIME_ZONE => {
                let n = r.u8().map_err(bad)? as usize;
                let tz = String::from_utf8_lossy(r.take(n).map_err(bad)?).replace('\'', "''");
                out.push(format!("@@session.time_zone='{tz}'"));
            }
            status::CATALOG_NZ => {
                let n = r.u8().map_err(bad)? as usize;
                r.skip(n).map_err(bad)?;
            }
            status::LC_TIME_NAMES => {
                out.push(format!("@@session.lc_time_names={}", r.u16().map_err(bad)?))
            }
            status::CHARSET_DATABASE => out.push(format!(
                "@@session.collation_database={}",
                r.u16().map_err(bad)?
            )),
            status::TABLE_MAP_FOR_UPDATE | status::DDL_LOGGED_WITH_XID => r.skip(8).map_err(bad)?,
            status::MASTER_DATA_WRITTEN => r.skip(4).map_err(bad)?,
            status::INVOKER => {
                let n = r.u8().map_err(bad)? as usize;
                r.skip(n).map_err(bad)?;
                let n = r.u8().map_err(bad)? as usize;
                r.skip(n).map_err(bad)?;
            }
            status::UPDATED_DB_NAMES => {
                let count = r.u8().map_err(bad)?;
                // 254 means "more than the maximum": no names follow.
                if count != 254 {
                    for _ in 0..count {
                        while r.u8().map_err(bad)? != 0 {}
                    }
                }
            }
            status::MICROSECONDS => micros = Some(r.u24().map_err(bad)?),
            status::COMMIT_TS | status::COMMIT_TS2 => {
                return Err(io_err(
                    "unsupported query event status variable (commit ts)",
                ));
            }
            status::EXPLICIT_DEFAULTS_FOR_TIMESTAMP => out.push(format!(
                "@@session.explicit_defaults_for_timestamp={}",
                r.u8().map_err(bad)?
            )),
            status::DEFAULT_COLLATION_FOR_UTF8MB4 => out.push(format!(
                "@@session.default_collation_for_utf8mb4={}",
                r.u16().map_err(bad)?
            )),
            status::SQL_REQUIRE_PRIMARY_KEY => out.push(format!(
                "@@session.sql_require_primary_key={}",
                r.u8().map_err(bad)?
            )),
            status::DEFAULT_TABLE_ENCRYPTION => out.push(format!(
                "@@session.default_table_encryption={}",
                r.u8().map_err(bad)?
            )),
            // Codes are written in increasing order and the newer ones matter least; one
            // we do not know has a length we cannot know, so the rest is left out.
            _ => break,
        }
    }
    let ts = match micros {
        Some(us) => format!("TIMESTAMP={timestamp}.{us:06}"),
        None => format!("TIMESTAMP={timestamp}"),
    };
    out.insert(0, ts);
    Ok(out)
}

/// Turns events into statements and runs them.
pub struct SqlSink<'a> {
    exec: &'a mut Exec<'a>,
    /// Base64 lines of table maps and row events waiting for their statement's end.
    rows: String,
    /// The file's format description, as a BINLOG statement (sent before row events).
    fde: Option<String>,
    fde_sent: bool,
    /// The file's events carry CRCs (so the FDE sent says so, and unpacked ones need one).
    file_crc: bool,
    in_gtid_tx: bool,
    /// Replaying some tables only (see [`SqlSink::filtered`]).
    filtered: Option<Filtered<'a>>,
}

/// A filtered replay's state: which table ids of the open statement are kept, the kept
/// events waiting for their statement's end, and the transaction's `BEGIN`, sent only once
/// something of the transaction is kept (a transaction with nothing kept costs no round trip).
struct Filtered<'a> {
    filter: &'a mut dyn TableFilter,
    kept_ids: HashMap<u64, bool>,
    pending: Vec<(Header, Vec<u8>)>,
    begin_pending: bool,
    begun: bool,
}

impl<'a> SqlSink<'a> {
    pub fn new(exec: &'a mut Exec<'a>) -> Self {
        SqlSink {
            exec,
            rows: String::new(),
            fde: None,
            fde_sent: false,
            file_crc: false,
            in_gtid_tx: false,
            filtered: None,
        }
    }

    /// A sink that replays only what `filter` keeps, under the names it gives, and without
    /// the source's GTIDs: each kept transaction commits as the session's own (`GTID_NEXT`
    /// stays `AUTOMATIC`), so a live target records nothing of the source's history.
    pub fn filtered(exec: &'a mut Exec<'a>, filter: &'a mut dyn TableFilter) -> Self {
        SqlSink {
            filtered: Some(Filtered {
                filter,
                kept_ids: HashMap::new(),
                pending: Vec::new(),
                begin_pending: false,
                begun: false,
            }),
            ..SqlSink::new(exec)
        }
    }

    fn run(&mut self, sql: &[u8]) -> std::io::Result<()> {
        (self.exec)(sql)
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// `bytes` is a whole event; `checksum` says whether its last 4 bytes are a CRC.
    fn handle(&mut self, bytes: &[u8], checksum: Checksum) -> std::io::Result<()> {
        let ev = RawEvent::frame(bytes, 0).map_err(|e| io_err(e.to_string()))?;
        let header = *ev.header();
        let body = ev.body(checksum);
        match header.type_code {
            types::FORMAT_DESCRIPTION => {
                self.fde = Some(format!("BINLOG '\n{}\n'", Self::b64(bytes)));
                self.fde_sent = false;
                self.file_crc = checksum == Checksum::Crc32;
            }
            types::GTID | types::GTID_TAGGED => {
                let info = if header.type_code == types::GTID {
                    GtidInfo::parse_untagged(body, false, 0)
                } else {
                    GtidInfo::parse_tagged(body, 0)
                }
                .map_err(|e| io_err(e.to_string()))?;
                if let Some(f) = &mut self.filtered {
                    f.filter.transaction(info.gtid.map(|g| g.to_string()));
                } else if let Some(g) = info.gtid {
                    self.run(format!("SET @@SESSION.GTID_NEXT = '{g}'").as_bytes())?;
                    self.in_gtid_tx = true;
                }
            }
            types::QUERY => self.query(&header, body)?,
            types::TABLE_MAP
            | types::WRITE_ROWS
            | types::UPDATE_ROWS
            | types::DELETE_ROWS
            | types::PARTIAL_UPDATE_ROWS
            | 23..=25 => {
                if self.filtered.is_some() {
                    return self.filtered_rows(&header, body);
                }
                self.send_fde()?;
                // The format description says whether events carry a CRC; one unpacked
                // from a compressed payload has none, so it gets one.
                let framed = if checksum == Checksum::None && self.file_crc {
                    self.frame(&header, body)
                } else {
                    bytes.to_vec()
                };
                self.rows.push_str(&Self::b64(&framed));
                self.rows.push('\n');
                let stmt_end = header.type_code != types::TABLE_MAP
                    && table_filter::rows_flags(body) & STMT_END_F != 0;
                if stmt_end {
                    let stmt = format!("BINLOG '\n{}'", std::mem::take(&mut self.rows));
                    self.run(stmt.as_bytes())?;
                }
            }
            types::XID => self.commit()?,
            types::TRANSACTION_PAYLOAD => self.payload(body)?,
            types::XA_PREPARE | types::INTVAR | types::RAND | types::USER_VAR => {
                return Err(io_err(format!(
                    "event type {} (XA or statement-based context) needs the applier engine",
                    header.type_code
                )));
            }
            // Rotations, previous GTIDs, heartbeats, row queries, stops: nothing to run.
            _ => {}
        }
        Ok(())
    }

    fn send_fde(&mut self) -> std::io::Result<()> {
        if !self.fde_sent {
            let fde = self
                .fde
                .clone()
                .ok_or_else(|| io_err("a row event before any format description"))?;
            self.run(fde.as_bytes())?;
            self.fde_sent = true;
            // A format description applied leaves GTID_NEXT "not yet determined", as a
            // replica's would be before the next GTID event; a filtered replay sends none, and
            // BEGIN would then take ANONYMOUS, which a gtid_mode=ON server refuses.
            if self.filtered.is_some() {
                self.run(b"SET @@SESSION.GTID_NEXT = 'AUTOMATIC'")?;
            }
        }
        Ok(())
    }

    /// `body` as a whole event, with a CRC when the file's events carry one.
    fn frame(&self, header: &Header, body: &[u8]) -> Vec<u8> {
        event::build(
            header.type_code,
            header.server_id,
            header.timestamp,
            header.log_pos,
            header.flags,
            body,
            if self.file_crc {
                Checksum::Crc32
            } else {
                Checksum::None
            },
        )
    }

    /// The transaction's `BEGIN`, if it is still owed.
    fn begin_if_pending(&mut self) -> std::io::Result<()> {
        let owed = match &mut self.filtered {
            Some(f) if f.begin_pending => {
                f.begin_pending = false;
                f.begun = true;
                true
            }
            _ => false,
        };
        if owed {
            self.run(b"BEGIN")?;
        }
        Ok(())
    }

    /// A table map or rows event of a filtered replay: a table map of a kept table is kept
    /// renamed; a rows event is kept when its table is. At a statement's end the kept events
    /// run as one BINLOG statement, the last of them marked as the statement's end (the
    /// event that ended it may have been dropped).
    fn filtered_rows(&mut self, header: &Header, body: &[u8]) -> std::io::Result<()> {
        let Some(f) = &mut self.filtered else {
            return Ok(());
        };
        if header.type_code == types::TABLE_MAP {
            let map = table_filter::parse_table_map(body)?;
            let target = f.filter.rows_target(&map.db, &map.table);
            f.kept_ids.insert(map.table_id, target.is_some());
            if let Some((db, table)) = target {
                let renamed = table_filter::rename_table_map(body, &map, &db, &table)?;
                f.pending.push((*header, renamed));
            }
            return Ok(());
        }
        let id = table_filter::rows_table_id(body)?;
        let kept = *f.kept_ids.get(&id).ok_or_else(|| {
            io_err(format!(
                "a rows event for table id {id} without its table map"
            ))
        })?;
        if kept {
            f.pending.push((*header, body.to_vec()));
        }
        if table_filter::rows_flags(body) & STMT_END_F == 0 {
            return Ok(());
        }
        let mut events = std::mem::take(&mut f.pending);
        f.kept_ids.clear();
        let Some(last) = events
            .iter_mut()
            .rev()
            .find(|(h, _)| h.type_code != types::TABLE_MAP)
        else {
            // Only table maps (or nothing) of kept tables: no rows of theirs changed.
            return Ok(());
        };
        table_filter::set_stmt_end(&mut last.1);
        let mut stmt = String::from("BINLOG '\n");
        for (h, b) in &events {
            stmt.push_str(&Self::b64(&self.frame(h, b)));
            stmt.push('\n');
        }
        stmt.push('\'');
        self.send_fde()?;
        self.begin_if_pending()?;
        self.run(stmt.as_bytes())
    }

    fn commit(&mut self) -> std::io::Result<()> {
        self.finish_tx(b"COMMIT")
    }

    /// Ends the transaction with `word` (COMMIT or ROLLBACK); a filtered replay sends it only
    /// when it sent the transaction's BEGIN.
    fn finish_tx(&mut self, word: &[u8]) -> std::io::Result<()> {
        let send = match &mut self.filtered {
            Some(f) => std::mem::take(&mut f.begun),
            None => true,
        };
        if send {
            self.run(word)?;
        }
        self.end_tx()
    }

    fn end_tx(&mut self) -> std::io::Result<()> {
        if let Some(f) = &mut self.filtered {
            f.begin_pending = false;
            f.begun = false;
            f.pending.clear();
            f.kept_ids.clear();
            f.filter.transaction_end();
        }
        if self.in_gtid_tx {
            self.run(b"SET @@SESSION.GTID_NEXT = 'AUTOMATIC'")?;
            self.in_gtid_tx = false;
        }
        Ok(())
    }

    fn query(&mut self, header: &Header, body: &[u8]) -> std::io::Result<()> {
        let bad = |_| io_err("malformed query event");
        let mut r = Reader::new(body);
        r.skip(8).map_err(bad)?;
        let db_len = r.u8().map_err(bad)? as usize;
        r.skip(2).map_err(bad)?;
        let vars_len = r.u16().map_err(bad)? as usize;
        let vars = r.take(vars_len).map_err(bad)?;
        let db = r.take(db_len).map_err(bad)?.to_vec();
        r.skip(1).map_err(bad)?;
        let sql = r.rest();
        let upper = String::from_utf8_lossy(&sql[..sql.len().min(16)]).to_ascii_uppercase();
        let word = upper.split_whitespace().next().unwrap_or("");
        match word {
            "BEGIN" => {
                return match &mut self.filtered {
                    Some(f) => {
                        f.begin_pending = true;
                        Ok(())
                    }
                    None => self.run(b"BEGIN"),
                };
            }
            "COMMIT" => return self.commit(),
            "ROLLBACK" => return self.finish_tx(b"ROLLBACK"),
            "XA" => {
                return Err(io_err("XA transactions need the applier engine"));
            }
            _ => {}
        }
        let settings = session_settings(vars, header.timestamp)?;
        let dml = matches!(word, "INSERT" | "UPDATE" | "DELETE" | "REPLACE");
        if let Some(f) = &mut self.filtered {
            let default_db = String::from_utf8_lossy(&db).into_owned();
            let sql = String::from_utf8_lossy(sql).into_owned();
            let replaced = f.filter.statement(&default_db, &sql).map_err(io_err)?;
            if let Some(stmt) = replaced {
                self.begin_if_pending()?;
                self.run(format!("SET {}", settings.join(", ")).as_bytes())?;
                self.run(stmt.as_bytes())?;
            }
            if !dml {
                self.end_tx()?;
            }
            return Ok(());
        }
        self.run(format!("SET {}", settings.join(", ")).as_bytes())?;
        if !db.is_empty() {
            self.run(format!("USE {}", quote_ident(&String::from_utf8_lossy(&db))).as_bytes())?;
        }
        self.run(sql)?;
        // A DDL statement commits itself (consuming the GTID).
        if !dml {
            self.end_tx()?;
        }
        Ok(())
    }

    /// A compressed transaction: its fields, then a zstd frame of whole events without CRCs.
    fn payload(&mut self, body: &[u8]) -> std::io::Result<()> {
        let bad = |_| io_err("malformed transaction payload event");
        let mut r = Reader::new(body);
        let mut compression = 0u64;
        loop {
            let field = r.lenenc_int().map_err(bad)?;
            if field == 0 {
                break;
            }
            let len = r.lenenc_int().map_err(bad)? as usize;
            let value = r.take(len).map_err(bad)?;
            if field == 2 {
                compression = Reader::new(value).lenenc_int().map_err(bad)?;
            }
        }
        let data = r.rest();
        let mut inner: Box<dyn Read + '_> = match compression {
            0 => Box::new(zstd::stream::read::Decoder::new(data)?),
            255 => Box::new(data),
            other => return Err(io_err(format!("unknown payload compression {other}"))),
        };
        let mut head = [0u8; HEADER_LEN];
        loop {
            match inner.read_exact(&mut head) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
            let h = Header::parse(&head).map_err(|_| io_err("bad event inside a payload"))?;
            let size = (h.event_size as usize)
                .checked_sub(HEADER_LEN)
                .ok_or_else(|| io_err("bad event size inside a payload"))?;
            // Read in pieces, not sized up front: the size is whatever the (damaged) payload
            // says, and a buffer grown as the bytes arrive stays near what is really there.
            let mut ev = head.to_vec();
            let mut left = size;
            while left > 0 {
                let n = left.min(64 * 1024);
                let at = ev.len();
                ev.resize(at + n, 0);
                inner.read_exact(&mut ev[at..]).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        io_err("truncated event inside a payload")
                    } else {
                        e
                    }
                })?;
                left -= n;
            }
            self.handle(&ev, Checksum::None)?;
        }
    }
}

impl Sink for SqlSink<'_> {
    fn rotate(&mut self, _file: &str) -> std::io::Result<()> {
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
        let bytes = super::walk::read_whole(head, body, body_len)?;
        self.handle(&bytes, checksum)
    }
}
