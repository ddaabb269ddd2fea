//! The server side of the protocol, as far as a replica's IO thread needs it: handshake with
//! caching_sha2_password fast authentication against a password we chose, text result sets
//! for its setup queries, and binlog events streamed in packets.

use std::io::{self, Read};
use std::net::TcpStream;

use rand::Rng;

use super::auth;
use super::handshake::caps;
use super::packet::{MAX_PACKET_CHUNK, PacketIo, Transport};
use crate::mysql::decode::{Reader, put_lenenc_bytes, put_lenenc_int};

const SERVER_CAPS: u32 = caps::LONG_PASSWORD
    | caps::LONG_FLAG
    | (1 << 3) // CONNECT_WITH_DB
    | caps::PROTOCOL_41
    | caps::TRANSACTIONS
    | caps::SECURE_CONNECTION
    | caps::PLUGIN_AUTH
    | caps::CONNECT_ATTRS
    | caps::PLUGIN_AUTH_LENENC_DATA;

pub struct ServerConn {
    io: PacketIo,
    client_caps: u32,
    pub user: String,
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

impl ServerConn {
    /// Greets a client and authenticates it as `user` with `password`; anyone else gets
    /// "access denied" and an error.
    pub fn accept(
        stream: TcpStream,
        version: &str,
        connection_id: u32,
        user: &str,
        password: &[u8],
    ) -> io::Result<ServerConn> {
        let _ = stream.set_nodelay(true);
        let mut io = PacketIo::new(Transport::Tcp(stream));
        let mut rng = rand::rng();
        // Printable, non-zero bytes, as MySQL's own nonces are.
        let nonce: Vec<u8> = (0..20).map(|_| rng.random_range(0x21u8..0x7f)).collect();
        let mut g = vec![10u8];
        g.extend_from_slice(version.as_bytes());
        g.push(0);
        g.extend_from_slice(&connection_id.to_le_bytes());
        g.extend_from_slice(&nonce[..8]);
        g.push(0);
        g.extend_from_slice(&(SERVER_CAPS as u16).to_le_bytes());
        g.push(255); // utf8mb4_0900_ai_ci
        g.extend_from_slice(&2u16.to_le_bytes()); // autocommit
        g.extend_from_slice(&((SERVER_CAPS >> 16) as u16).to_le_bytes());
        g.push(21);
        g.extend_from_slice(&[0u8; 10]);
        g.extend_from_slice(&nonce[8..]);
        g.push(0);
        g.extend_from_slice(auth::CACHING_SHA2.as_bytes());
        g.push(0);
        io.set_seq(0);
        io.write_payload(&g)?;

        let mut p = Vec::new();
        io.read_payload(&mut p)?;
        let mut r = Reader::new(&p);
        let client_caps = r.u32().map_err(|_| invalid("short handshake response"))?;
        r.skip(4 + 1 + 23)
            .map_err(|_| invalid("short handshake response"))?;
        let name =
            String::from_utf8_lossy(r.nul_terminated().map_err(|_| invalid("no user name"))?)
                .into_owned();
        let mut answer = if client_caps & caps::PLUGIN_AUTH_LENENC_DATA != 0 {
            r.lenenc_bytes()
                .map_err(|_| invalid("bad auth data"))?
                .to_vec()
        } else {
            let n = r.u8().map_err(|_| invalid("bad auth data"))? as usize;
            r.take(n).map_err(|_| invalid("bad auth data"))?.to_vec()
        };
        if client_caps & (1 << 3) != 0 {
            let _ = r.nul_terminated();
        }
        let plugin = if client_caps & caps::PLUGIN_AUTH != 0 {
            String::from_utf8_lossy(r.nul_terminated().unwrap_or_default()).into_owned()
        } else {
            String::new()
        };
        // What both sides support: the client may ask for more than we offered.
        let mut conn = ServerConn {
            io,
            client_caps: client_caps & SERVER_CAPS,
            user: name,
        };
        if plugin != auth::CACHING_SHA2 {
            // Ask the client to answer with caching_sha2_password for the same nonce.
            let mut sw = vec![0xFE];
            sw.extend_from_slice(auth::CACHING_SHA2.as_bytes());
            sw.push(0);
            sw.extend_from_slice(&nonce);
            sw.push(0);
            conn.io.write_payload(&sw)?;
            conn.io.read_payload(&mut answer)?;
        }
        if conn.user != user || !auth::sha2_scramble_matches(password, &nonce, &answer) {
            conn.send_err(
                1045,
                "28000",
                &format!("Access denied for user '{}'", conn.user),
            )?;
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "access denied",
            ));
        }
        conn.io.write_payload(&[0x01, auth::SHA2_FAST_AUTH_OK])?;
        conn.send_ok()?;
        Ok(conn)
    }

    /// The next command from the client (sequence restarts at 0).
    pub fn read_command(&mut self) -> io::Result<Vec<u8>> {
        self.io.reset_seq();
        let mut p = Vec::new();
        self.io.read_payload(&mut p)?;
        Ok(p)
    }

    pub fn send_ok(&mut self) -> io::Result<()> {
        self.io
            .write_payload(&[0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00])
    }

    pub fn send_err(&mut self, code: u16, state: &str, message: &str) -> io::Result<()> {
        let mut p = vec![0xFF];
        p.extend_from_slice(&code.to_le_bytes());
        p.push(b'#');
        p.extend_from_slice(&state.as_bytes()[..5.min(state.len())]);
        p.extend_from_slice(message.as_bytes());
        self.io.write_payload(&p)
    }

    fn send_eof(&mut self) -> io::Result<()> {
        self.io.write_payload(&[0xFE, 0x00, 0x00, 0x02, 0x00])
    }

    /// A text result set of string columns.
    pub fn send_rows(&mut self, columns: &[&str], rows: &[Vec<Option<String>>]) -> io::Result<()> {
        let mut count = Vec::new();
        put_lenenc_int(&mut count, columns.len() as u64);
        self.io.write_payload(&count)?;
        for c in columns {
            let mut def = Vec::new();
            for part in ["def", "", "", "", c, ""] {
                put_lenenc_bytes(&mut def, part.as_bytes());
            }
            put_lenenc_int(&mut def, 0x0c);
            def.extend_from_slice(&33u16.to_le_bytes()); // utf8
            def.extend_from_slice(&1024u32.to_le_bytes());
            def.push(0xFD); // VAR_STRING
            def.extend_from_slice(&0u16.to_le_bytes());
            def.push(0);
            def.extend_from_slice(&[0, 0]);
            self.io.write_payload(&def)?;
        }
        if self.client_caps & caps::DEPRECATE_EOF == 0 {
            self.send_eof()?;
        }
        for row in rows {
            let mut p = Vec::new();
            for v in row {
                match v {
                    Some(s) => put_lenenc_bytes(&mut p, s.as_bytes()),
                    None => p.push(0xFB),
                }
            }
            self.io.write_payload(&p)?;
        }
        self.send_eof()
    }

    /// Queues one binlog event (status byte 0x00 first); [`ServerConn::flush`] sends it.
    pub fn send_event(&mut self, event: &[u8]) -> io::Result<()> {
        if event.len() + 1 >= MAX_PACKET_CHUNK {
            return self.send_event_streaming(&event[..0], &mut &event[..], event.len());
        }
        self.io.write_raw_header(event.len() + 1)?;
        self.io.write_raw(&[0x00])?;
        self.io.write_raw(event)
    }

    /// Sends an event whose body is read from `body` as it goes, so an event of any size
    /// passes through a small buffer.
    pub fn send_event_streaming(
        &mut self,
        header: &[u8],
        body: &mut dyn Read,
        body_len: usize,
    ) -> io::Result<()> {
        let total = 1 + header.len() + body_len;
        let mut buf = Vec::with_capacity(1 << 20);
        buf.push(0x00);
        buf.extend_from_slice(header);
        let mut sent = 0usize;
        let mut left_in_body = body_len;
        // Packets of 16 MiB - 1, the last shorter (or empty when the payload fills them).
        loop {
            let packet_len = (total - sent).min(MAX_PACKET_CHUNK);
            self.io.write_raw_header(packet_len)?;
            let mut left_in_packet = packet_len;
            while left_in_packet > 0 {
                if buf.is_empty() {
                    let n = left_in_body.min(1 << 20);
                    buf.resize(n, 0);
                    body.read_exact(&mut buf)?;
                    left_in_body -= n;
                }
                let n = buf.len().min(left_in_packet);
                self.io.write_raw(&buf[..n])?;
                buf.drain(..n);
                left_in_packet -= n;
                sent += n;
            }
            if packet_len < MAX_PACKET_CHUNK {
                break;
            }
        }
        self.io.flush()
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.io.flush()
    }
}
