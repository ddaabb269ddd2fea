//! A blocking client connection: handshake, authentication, text-protocol queries with
//! streamed raw rows, `LOAD DATA LOCAL INFILE`, and raw commands for the binlog dump.
//!
//! myvault owns this instead of using a general driver because the hot paths need raw bytes:
//! a dump turns row packets straight into load files, and the binlog streamer must keep every
//! event byte-for-byte.

use std::io::{self, Read};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::handshake::{self, caps};
use super::packet::{PacketIo, Piece, Transport};
use super::tls::SslOptions;
use crate::mysql::decode::Reader;
use crate::mysql::error::Error;
use crate::secret::Secret;

const SERVER_MORE_RESULTS_EXISTS: u16 = 0x0008;
const COM_QUIT: u8 = 0x01;
const COM_QUERY: u8 = 0x03;
const COM_PING: u8 = 0x0e;
const LOCAL_INFILE_CHUNK: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub host: String,
    pub port: u16,
    pub socket: Option<String>,
    pub user: String,
    pub password: Secret,
    /// Where the password came from ("MYVAULT_TARGET_PASSWORD", "--password-file F"), named
    /// when the server refuses the login; never the password itself.
    pub password_origin: Option<String>,
    pub ssl: SslOptions,
    pub connect_timeout: Duration,
    /// None waits forever; the binlog streamer sets it from the heartbeat period.
    pub read_timeout: Option<Duration>,
}

impl ConnectOptions {
    pub fn address(&self) -> String {
        match &self.socket {
            Some(path) => path.clone(),
            None if self.host.contains(':') => format!("[{}]:{}", self.host, self.port),
            None => format!("{}:{}", self.host, self.port),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct OkPacket {
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
    pub info: String,
}

#[derive(Debug, Clone)]
pub struct Column {
    pub schema: String,
    pub table: String,
    pub name: String,
    pub charset: u16,
    pub length: u32,
    pub column_type: u8,
    pub flags: u16,
    pub decimals: u8,
}

/// A whole (small) result: column names and rows of nullable byte strings.
#[derive(Debug, Clone, Default)]
pub struct ResultSet {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Option<Vec<u8>>>>,
}

pub struct Conn {
    io: PacketIo,
    addr: String,
    server_version: String,
    connection_id: u32,
    capabilities: u32,
    mariadb: bool,
    tls: bool,
    buf: Vec<u8>,
    /// A row stream was dropped before its end: its remaining packets are drained before the
    /// next command.
    unread_rows: bool,
}

impl Conn {
    pub fn connect(opts: &ConnectOptions) -> Result<Conn, Error> {
        let addr = opts.address();
        let transport = open_transport(opts, &addr)?;
        // The greeting must come within the connect timeout: a port that is not MySQL
        // (HTTP, for one) waits for us to speak first and would hang forever.
        transport
            .set_read_timeout(Some(opts.connect_timeout))
            .map_err(|source| Error::Unreachable {
                addr: addr.clone(),
                source,
            })?;
        let login = handshake::login(PacketIo::new(transport), opts, &addr)?;
        login
            .io
            .transport()
            .set_read_timeout(opts.read_timeout)
            .map_err(|source| Error::ConnectionLost {
                addr: addr.clone(),
                source,
            })?;
        Ok(Conn {
            io: login.io,
            addr,
            server_version: login.server_version,
            connection_id: login.connection_id,
            capabilities: login.capabilities,
            mariadb: login.mariadb,
            tls: login.tls,
            buf: Vec::with_capacity(64 * 1024),
            unread_rows: false,
        })
    }

    pub fn address(&self) -> &str {
        &self.addr
    }

    /// The version string from the greeting, e.g. `9.7.4-2` or `5.5.5-10.11.19-MariaDB-...`.
    pub fn server_version(&self) -> &str {
        &self.server_version
    }

    pub fn connection_id(&self) -> u32 {
        self.connection_id
    }

    pub fn is_mariadb(&self) -> bool {
        self.mariadb
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Our end of the connection: an address the server can reach us at.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.io.transport().local_addr()
    }

    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> Result<(), Error> {
        self.io
            .transport()
            .set_read_timeout(timeout)
            .map_err(|source| self.lost(source))
    }

    fn lost(&self, source: io::Error) -> Error {
        Error::ConnectionLost {
            addr: self.addr.clone(),
            source,
        }
    }

    fn not_mysql(&self, detail: impl Into<String>) -> Error {
        Error::NotMysql {
            addr: self.addr.clone(),
            detail: detail.into(),
        }
    }

    fn server_error(&self, packet: &[u8]) -> Error {
        server_error(&self.addr, packet)
    }

    fn parse_ok(&self, packet: &[u8]) -> Result<OkPacket, Error> {
        let mut r = Reader::new(packet.get(1..).unwrap_or_default());
        let parse = |r: &mut Reader| -> Result<OkPacket, crate::mysql::decode::Truncated> {
            let affected_rows = r.lenenc_int()?;
            let last_insert_id = r.lenenc_int()?;
            let status = r.u16()?;
            let warnings = r.u16()?;
            Ok(OkPacket {
                affected_rows,
                last_insert_id,
                status,
                warnings,
                info: String::from_utf8_lossy(r.rest()).into_owned(),
            })
        };
        parse(&mut r).map_err(|t| Error::truncated(&self.addr, "OK", t))
    }

    /// Sends a command packet (sequence id 0), first draining an abandoned row stream.
    pub fn write_command(&mut self, payload: &[u8]) -> Result<(), Error> {
        if self.unread_rows {
            self.drain_rows()?;
        }
        self.io.reset_seq();
        self.io.write_payload(payload).map_err(|e| self.lost(e))
    }

    /// Reads the next packet of a command's answer.
    pub fn read_packet(&mut self) -> Result<&[u8], Error> {
        let mut buf = std::mem::take(&mut self.buf);
        let res = self.io.read_payload(&mut buf);
        self.buf = buf;
        res.map_err(|e| self.lost(e))?;
        Ok(&self.buf)
    }

    /// Reads the next piece (at most `max` bytes) of a streamed answer (the binlog dump):
    /// `None` when nothing arrived within the read timeout. The bytes are in
    /// [`Conn::last_packet`].
    pub fn read_piece(&mut self, stall: Duration, max: usize) -> Result<Option<Piece>, Error> {
        let mut buf = std::mem::take(&mut self.buf);
        let res = self.io.read_piece(&mut buf, stall, max);
        self.buf = buf;
        res.map_err(|e| self.lost(e))
    }

    pub fn last_packet(&self) -> &[u8] {
        &self.buf
    }

    /// The ERR packet in the last read, as an error.
    pub fn last_packet_error(&self) -> Error {
        self.server_error(&self.buf)
    }

    /// Like [`Conn::read_packet`] but an ERR packet becomes an error.
    pub fn read_packet_checked(&mut self) -> Result<&[u8], Error> {
        self.read_packet()?;
        if self.buf.first() == Some(&0xFF) {
            return Err(self.server_error(&self.buf));
        }
        Ok(&self.buf)
    }

    fn send_query(&mut self, sql: &[u8]) -> Result<(), Error> {
        let mut payload = Vec::with_capacity(sql.len() + 1);
        payload.push(COM_QUERY);
        payload.extend_from_slice(sql);
        self.write_command(&payload)
    }

    /// Runs a statement given as bytes: SQL text from a binlog is in the character set its
    /// session had, not necessarily UTF-8.
    pub fn exec_bytes(&mut self, sql: &[u8]) -> Result<OkPacket, Error> {
        self.exec_inner(sql, None)
    }

    /// Runs a statement; any rows are read and discarded.
    pub fn exec(&mut self, sql: &str) -> Result<OkPacket, Error> {
        self.exec_with_infile(sql, None)
    }

    /// Runs a statement that may ask for a local file (`LOAD DATA LOCAL INFILE`); `data` is
    /// streamed as that file.
    pub fn exec_with_infile(
        &mut self,
        sql: &str,
        data: Option<&mut dyn Read>,
    ) -> Result<OkPacket, Error> {
        self.exec_inner(sql.as_bytes(), data)
    }

    fn exec_inner(
        &mut self,
        sql: &[u8],
        mut data: Option<&mut dyn Read>,
    ) -> Result<OkPacket, Error> {
        self.send_query(sql)?;
        loop {
            let first = self.read_packet()?.first().copied();
            let last_ok = match first {
                Some(0x00) => self.parse_ok(&self.buf)?,
                Some(0xFF) => return Err(self.server_error(&self.buf)),
                Some(0xFB) => {
                    match data.take() {
                        Some(reader) => self.send_local_file(reader)?,
                        None => {
                            // Never hand out a file the statement did not come with.
                            self.io.write_payload(&[]).map_err(|e| self.lost(e))?;
                        }
                    }
                    continue;
                }
                _ => {
                    self.read_column_count_and_defs()?;
                    self.read_rows_until_end(|_| Ok(()))?
                }
            };
            if last_ok.status & SERVER_MORE_RESULTS_EXISTS == 0 {
                return Ok(last_ok);
            }
        }
    }

    fn send_local_file(&mut self, reader: &mut dyn Read) -> Result<(), Error> {
        let mut chunk = vec![0u8; LOCAL_INFILE_CHUNK];
        loop {
            let n = read_full(reader, &mut chunk).map_err(|e| self.lost(e))?;
            if n == 0 {
                break;
            }
            self.io
                .write_payload(&chunk[..n])
                .map_err(|e| self.lost(e))?;
        }
        self.io.write_payload(&[]).map_err(|e| self.lost(e))
    }

    /// Runs a query and collects its whole result. For small results only.
    pub fn query(&mut self, sql: &str) -> Result<ResultSet, Error> {
        let mut stream = self.query_stream(sql)?;
        let columns = stream.columns().to_vec();
        let mut rows = Vec::new();
        while let Some(row) = stream.next_row()? {
            rows.push(row.to_owned_values()?);
        }
        Ok(ResultSet { columns, rows })
    }

    /// Runs a query and streams its rows without copying them.
    pub fn query_stream(&mut self, sql: &str) -> Result<RowStream<'_>, Error> {
        self.send_query(sql.as_bytes())?;
        let first = self.read_packet()?.first().copied();
        match first {
            Some(0xFF) => Err(self.server_error(&self.buf)),
            Some(0x00) => {
                let ok = self.parse_ok(&self.buf)?;
                if ok.status & SERVER_MORE_RESULTS_EXISTS != 0 {
                    self.unread_rows = true;
                }
                Ok(RowStream {
                    conn: self,
                    columns: Vec::new(),
                    done: true,
                })
            }
            Some(0xFB) => {
                self.io.write_payload(&[]).map_err(|e| self.lost(e))?;
                Err(self.not_mysql("unexpected LOCAL INFILE request"))
            }
            _ => {
                let columns = self.read_column_count_and_defs()?;
                self.unread_rows = true;
                Ok(RowStream {
                    conn: self,
                    columns,
                    done: false,
                })
            }
        }
    }

    /// Parses the column count in `self.buf`, then reads the column definitions.
    fn read_column_count_and_defs(&mut self) -> Result<Vec<Column>, Error> {
        let count = Reader::new(&self.buf)
            .lenenc_int()
            .map_err(|t| Error::truncated(&self.addr, "column count", t))?;
        let mut columns = Vec::with_capacity(count.min(4096) as usize);
        for _ in 0..count {
            self.read_packet()?;
            columns.push(
                parse_column(&self.buf)
                    .map_err(|t| Error::truncated(&self.addr, "column definition", t))?,
            );
        }
        if self.capabilities & caps::DEPRECATE_EOF == 0 {
            self.read_packet()?; // EOF after the definitions
        }
        Ok(columns)
    }

    fn is_end_of_rows(&self) -> bool {
        self.buf.first() == Some(&0xFE)
            && if self.capabilities & caps::DEPRECATE_EOF != 0 {
                self.buf.len() < super::packet::MAX_PACKET_CHUNK
            } else {
                self.buf.len() < 9
            }
    }

    /// Reads row packets, handing each to `f`, up to the terminating OK/EOF.
    fn read_rows_until_end(
        &mut self,
        mut f: impl FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<OkPacket, Error> {
        loop {
            self.read_packet()?;
            if self.buf.first() == Some(&0xFF) {
                return Err(self.server_error(&self.buf));
            }
            if self.is_end_of_rows() {
                return self.end_of_rows();
            }
            f(&self.buf)?;
        }
    }

    fn end_of_rows(&self) -> Result<OkPacket, Error> {
        if self.capabilities & caps::DEPRECATE_EOF != 0 {
            self.parse_ok(&self.buf)
        } else {
            let mut r = Reader::new(&self.buf[1..]);
            let warnings = r.u16().unwrap_or(0);
            let status = r.u16().unwrap_or(0);
            Ok(OkPacket {
                status,
                warnings,
                ..OkPacket::default()
            })
        }
    }

    fn drain_rows(&mut self) -> Result<(), Error> {
        self.unread_rows = false;
        loop {
            let ok = self.read_rows_until_end(|_| Ok(()))?;
            if ok.status & SERVER_MORE_RESULTS_EXISTS == 0 {
                return Ok(());
            }
            // Another result follows: its header, then rows.
            let first = self.read_packet()?.first().copied();
            match first {
                Some(0x00) => {
                    let ok = self.parse_ok(&self.buf)?;
                    if ok.status & SERVER_MORE_RESULTS_EXISTS == 0 {
                        return Ok(());
                    }
                }
                Some(0xFF) => return Err(self.server_error(&self.buf)),
                _ => {
                    self.read_column_count_and_defs()?;
                }
            }
        }
    }

    pub fn ping(&mut self) -> Result<(), Error> {
        self.write_command(&[COM_PING])?;
        self.read_packet_checked().map(|_| ())
    }

    /// Closes the socket at once, without COM_QUIT; used to abandon a connection that is
    /// blocked in a long query.
    pub fn abort(&self) {
        self.io.transport().shutdown();
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if !self.unread_rows {
            self.io.reset_seq();
            let _ = self.io.write_payload(&[COM_QUIT]);
        }
    }
}

/// Rows of a running query, read one at a time into the connection's buffer.
pub struct RowStream<'c> {
    conn: &'c mut Conn,
    columns: Vec<Column>,
    done: bool,
}

impl RowStream<'_> {
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    pub fn next_row(&mut self) -> Result<Option<RawRow<'_>>, Error> {
        if self.done {
            return Ok(None);
        }
        // A row whole in the read buffer is parsed where it lies; ERR, EOF and OK packets
        // (0xFF, 0xFE) and rows split across reads take the copying path below.
        let is_row = |p: &[u8]| matches!(p.first(), Some(b) if *b != 0xFF && *b != 0xFE);
        if self.conn.io.lend_payload(is_row) {
            return Ok(Some(RawRow::new(
                self.conn.io.lent(),
                self.columns.len(),
                &self.conn.addr,
            )));
        }
        self.conn.read_packet()?;
        if self.conn.buf.first() == Some(&0xFF) {
            self.done = true;
            self.conn.unread_rows = false;
            return Err(self.conn.server_error(&self.conn.buf));
        }
        if self.conn.is_end_of_rows() {
            self.done = true;
            let ok = self.conn.end_of_rows()?;
            self.conn.unread_rows = ok.status & SERVER_MORE_RESULTS_EXISTS != 0;
            return Ok(None);
        }
        Ok(Some(RawRow::new(
            &self.conn.buf,
            self.columns.len(),
            &self.conn.addr,
        )))
    }
}

/// One text-protocol row: a length-encoded string (or the NULL marker) per column.
pub struct RawRow<'a> {
    payload: &'a [u8],
    columns: usize,
    addr: &'a str,
}

impl<'a> RawRow<'a> {
    /// A row packet's payload with `columns` fields; `addr` names the server in errors.
    pub fn new(payload: &'a [u8], columns: usize, addr: &'a str) -> Self {
        RawRow {
            payload,
            columns,
            addr,
        }
    }

    /// The packet as the server sent it, for callers that can take it whole.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// The row's fields, each `None` for SQL NULL.
    pub fn fields(&self) -> RowFields<'a> {
        RowFields {
            reader: Reader::new(self.payload),
            left: self.columns,
            addr: self.addr,
        }
    }

    /// Bytes of the row packet: every field's value and length prefix (or NULL marker).
    pub fn payload_len(&self) -> usize {
        self.payload.len()
    }

    pub fn columns(&self) -> usize {
        self.columns
    }

    pub fn to_owned_values(&self) -> Result<Vec<Option<Vec<u8>>>, Error> {
        self.fields()
            .map(|f| f.map(|v| v.map(<[u8]>::to_vec)))
            .collect()
    }
}

pub struct RowFields<'a> {
    reader: Reader<'a>,
    left: usize,
    addr: &'a str,
}

impl<'a> Iterator for RowFields<'a> {
    type Item = Result<Option<&'a [u8]>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        Some(
            self.reader
                .lenenc_bytes_or_null()
                .map_err(|t| Error::truncated(self.addr, "row", t)),
        )
    }
}

fn parse_column(packet: &[u8]) -> Result<Column, crate::mysql::decode::Truncated> {
    let mut r = Reader::new(packet);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let _catalog = r.lenenc_bytes()?;
    let schema = text(r.lenenc_bytes()?);
    let table = text(r.lenenc_bytes()?);
    let _org_table = r.lenenc_bytes()?;
    let name = text(r.lenenc_bytes()?);
    let _org_name = r.lenenc_bytes()?;
    let _fixed_len = r.lenenc_int()?;
    Ok(Column {
        schema,
        table,
        name,
        charset: r.u16()?,
        length: r.u32()?,
        column_type: r.u8()?,
        flags: r.u16()?,
        decimals: r.u8()?,
    })
}

fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn open_transport(opts: &ConnectOptions, addr: &str) -> Result<Transport, Error> {
    let unreachable = |source: io::Error| Error::Unreachable {
        addr: addr.to_string(),
        source,
    };
    if let Some(path) = &opts.socket {
        return UnixStream::connect(path)
            .map(Transport::Unix)
            .map_err(unreachable);
    }
    let addrs = (opts.host.as_str(), opts.port)
        .to_socket_addrs()
        .map_err(unreachable)?;
    let mut last = io::Error::new(
        io::ErrorKind::NotFound,
        "the host name resolves to no address",
    );
    for sockaddr in addrs {
        match TcpStream::connect_timeout(&sockaddr, opts.connect_timeout) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(Transport::Tcp(stream));
            }
            Err(e) => last = e,
        }
    }
    Err(unreachable(last))
}

/// Parses an ERR packet (first byte 0xFF) into an error.
pub(super) fn server_error(addr: &str, packet: &[u8]) -> Error {
    let mut r = Reader::new(packet.get(1..).unwrap_or_default());
    let code = r.u16().unwrap_or(0);
    let mut state = String::from("HY000");
    if r.peek() == Some(b'#') {
        let _ = r.u8();
        if let Ok(s) = r.take(5) {
            state = String::from_utf8_lossy(s).into_owned();
        }
    }
    Error::Server {
        addr: addr.to_string(),
        code,
        state,
        message: String::from_utf8_lossy(r.rest()).into_owned(),
    }
}
