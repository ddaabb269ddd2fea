//! Packet framing: 3-byte length, 1-byte sequence id, payloads of 16 MiB - 1 split across
//! several packets.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

pub const MAX_PACKET_CHUNK: usize = 0xFF_FFFF;

pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The byte stream under the packets: plain TCP, a Unix socket, or TLS over TCP.
pub enum Transport {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Transport {
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.set_read_timeout(timeout),
            Transport::Unix(s) => s.set_read_timeout(timeout),
            Transport::Tls(s) => s.sock.set_read_timeout(timeout),
        }
    }

    /// This end's address of a TCP connection: an address the peer can reach us at.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Transport::Tcp(s) => s.local_addr().ok(),
            Transport::Tls(s) => s.sock.local_addr().ok(),
            Transport::Unix(_) => None,
        }
    }

    /// Closes both directions; a blocked reader on another clone of the socket wakes up.
    pub fn shutdown(&self) {
        let _ = match self {
            Transport::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Transport::Unix(s) => s.shutdown(std::net::Shutdown::Both),
            Transport::Tls(s) => s.sock.shutdown(std::net::Shutdown::Both),
        };
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.read(buf),
            Transport::Unix(s) => s.read(buf),
            Transport::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.write(buf),
            Transport::Unix(s) => s.write(buf),
            Transport::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.flush(),
            Transport::Unix(s) => s.flush(),
            Transport::Tls(s) => s.flush(),
        }
    }
}

/// Reads and writes whole payloads, keeping the sequence id.
pub struct PacketIo {
    stream: BufReader<Transport>,
    /// Bytes of the payload last lent by [`PacketIo::lend_payload`] (with its header), still at
    /// the front of the read buffer: consumed when the next read begins.
    lent: usize,
    seq: u8,
    piece: PieceState,
    /// Queued output (server side), written by [`PacketIo::flush`] or when it grows large.
    out: Vec<u8>,
}

/// Where [`PacketIo::read_piece`] stands inside a payload.
#[derive(Debug, Default)]
struct PieceState {
    /// Bytes of the current packet not read yet.
    left: usize,
    /// The current packet is full size: the payload continues in another packet.
    full: bool,
    /// The next packet continues the same payload.
    continues: bool,
}

/// One piece of a payload read by [`PacketIo::read_piece`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// The piece starts a payload.
    pub first: bool,
    /// The piece ends it.
    pub last: bool,
}

impl PacketIo {
    pub fn new(transport: Transport) -> Self {
        PacketIo {
            stream: BufReader::with_capacity(256 * 1024, transport),
            lent: 0,
            seq: 0,
            piece: PieceState::default(),
            out: Vec::new(),
        }
    }

    pub fn transport(&self) -> &Transport {
        self.stream.get_ref()
    }

    /// Gives the transport back, for the TLS upgrade. Fails if the server sent bytes we have
    /// buffered but not read: they would be lost in the switch.
    pub fn into_transport(mut self) -> io::Result<Transport> {
        self.release();
        if !self.stream.buffer().is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "unexpected data before the TLS handshake",
            ));
        }
        Ok(self.stream.into_inner())
    }

    pub fn seq(&self) -> u8 {
        self.seq
    }

    pub fn set_seq(&mut self, seq: u8) {
        self.seq = seq;
    }

    /// Starts a new command: the client's first packet has sequence id 0.
    pub fn reset_seq(&mut self) {
        self.seq = 0;
    }

    /// Consumes the payload last lent, if any: every read starts with this.
    fn release(&mut self) {
        self.stream.consume(std::mem::take(&mut self.lent));
    }

    /// Takes the next payload without copying it when it is whole in the read buffer and
    /// `wanted` accepts it: it is then [`PacketIo::lent`] until the next read (a dump's rows:
    /// copying each into a buffer before copying it into its file was 2% of a dump's CPU).
    /// `false` otherwise, with nothing consumed: read it with [`PacketIo::read_payload`].
    /// Never reads from the socket.
    pub fn lend_payload(&mut self, wanted: impl Fn(&[u8]) -> bool) -> bool {
        self.release();
        let Some(&[a, b, c, seq]) = self.stream.buffer().first_chunk::<4>() else {
            return false;
        };
        let len = u32::from_le_bytes([a, b, c, 0]) as usize;
        let whole = seq == self.seq && len < MAX_PACKET_CHUNK;
        if !whole || !self.stream.buffer().get(4..4 + len).is_some_and(wanted) {
            return false;
        }
        self.seq = self.seq.wrapping_add(1);
        self.lent = 4 + len;
        true
    }

    /// The payload [`PacketIo::lend_payload`] took (empty when none is lent).
    pub fn lent(&self) -> &[u8] {
        self.stream.buffer().get(4..self.lent).unwrap_or_default()
    }

    /// Reads one logical payload (joining 16 MiB continuation packets) into `out`.
    pub fn read_payload(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        self.release();
        out.clear();
        // Small packets (a dump's rows) are usually whole in the buffer already: take them
        // from there in one copy, without zero-filling `out` or two buffered reads.
        if let Some(&[a, b, c, seq]) = self.stream.buffer().first_chunk::<4>() {
            let len = u32::from_le_bytes([a, b, c, 0]) as usize;
            if seq == self.seq
                && len < MAX_PACKET_CHUNK
                && let Some(payload) = self.stream.buffer().get(4..4 + len)
            {
                out.extend_from_slice(payload);
                self.stream.consume(4 + len);
                self.seq = self.seq.wrapping_add(1);
                return Ok(());
            }
        }
        loop {
            let mut header = [0u8; 4];
            self.stream.read_exact(&mut header)?;
            let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
            if header[3] != self.seq {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "packet out of order (sequence {} where {} was expected)",
                        header[3], self.seq
                    ),
                ));
            }
            self.seq = self.seq.wrapping_add(1);
            let start = out.len();
            out.resize(start + len, 0);
            self.stream.read_exact(&mut out[start..])?;
            if len < MAX_PACKET_CHUNK {
                return Ok(());
            }
        }
    }

    /// Reads the next piece of a payload, at most `max` bytes, into `out`, for callers that
    /// stream payloads instead of holding them (binlog events can be 1 GiB).
    ///
    /// `Ok(None)` means no payload began within the transport's read timeout, and nothing was
    /// consumed. Once a payload has begun, timeouts are waited through (the rest is on its
    /// way) until nothing arrives for `stall`.
    pub fn read_piece(
        &mut self,
        out: &mut Vec<u8>,
        stall: Duration,
        max: usize,
    ) -> io::Result<Option<Piece>> {
        self.release();
        let mut first = false;
        if self.piece.left == 0 {
            if !self.piece.continues && self.stream.buffer().is_empty() {
                match self.stream.fill_buf() {
                    Ok([]) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(_) => {}
                    Err(e) if is_timeout(&e) => return Ok(None),
                    Err(e) => return Err(e),
                }
            }
            let mut header = [0u8; 4];
            self.read_through_timeouts(&mut header, stall)?;
            let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
            if header[3] != self.seq {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "packet out of order (sequence {} where {} was expected)",
                        header[3], self.seq
                    ),
                ));
            }
            self.seq = self.seq.wrapping_add(1);
            first = !self.piece.continues;
            self.piece.left = len;
            self.piece.full = len == MAX_PACKET_CHUNK;
        }
        let n = self.piece.left.min(max);
        out.clear();
        out.resize(n, 0);
        self.read_through_timeouts(out, stall)?;
        self.piece.left -= n;
        let packet_done = self.piece.left == 0;
        if packet_done {
            // A full packet means the payload goes on in the next one.
            self.piece.continues = self.piece.full;
        }
        Ok(Some(Piece {
            first,
            last: packet_done && !self.piece.full,
        }))
    }

    fn read_through_timeouts(&mut self, buf: &mut [u8], stall: Duration) -> io::Result<()> {
        let mut filled = 0;
        let mut last_progress = std::time::Instant::now();
        while filled < buf.len() {
            match self.stream.read(&mut buf[filled..]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    filled += n;
                    last_progress = std::time::Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) && last_progress.elapsed() < stall => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Queues a packet header for `len` payload bytes that follow with [`PacketIo::write_raw`].
    pub fn write_raw_header(&mut self, len: usize) -> io::Result<()> {
        self.out.extend_from_slice(&(len as u32).to_le_bytes()[..3]);
        self.out.push(self.seq);
        self.seq = self.seq.wrapping_add(1);
        Ok(())
    }

    /// Queues payload bytes; writes the queue out once it is large.
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.extend_from_slice(bytes);
        if self.out.len() >= 256 * 1024 {
            self.flush()?;
        }
        Ok(())
    }

    /// Queues a whole payload, framed, without writing it yet.
    pub fn queue_payload(&mut self, payload: &[u8]) -> io::Result<()> {
        let mut rest = payload;
        loop {
            let n = rest.len().min(MAX_PACKET_CHUNK);
            self.write_raw_header(n)?;
            self.write_raw(&rest[..n])?;
            rest = &rest[n..];
            if n < MAX_PACKET_CHUNK {
                return Ok(());
            }
        }
    }

    /// Writes out everything queued.
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            let transport = self.stream.get_mut();
            transport.write_all(&self.out)?;
            transport.flush()?;
            self.out.clear();
        }
        Ok(())
    }

    /// Writes one logical payload, split into packets as the protocol demands.
    pub fn write_payload(&mut self, payload: &[u8]) -> io::Result<()> {
        let mut framed =
            Vec::with_capacity(payload.len() + 4 * (1 + payload.len() / MAX_PACKET_CHUNK));
        let mut rest = payload;
        loop {
            let n = rest.len().min(MAX_PACKET_CHUNK);
            framed.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
            framed.push(self.seq);
            self.seq = self.seq.wrapping_add(1);
            framed.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            // A payload that fills the last packet exactly is closed by an empty packet.
            if n < MAX_PACKET_CHUNK {
                break;
            }
        }
        self.flush()?;
        let transport = self.stream.get_mut();
        transport.write_all(&framed)?;
        transport.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (PacketIo, PacketIo) {
        let (a, b) = UnixStream::pair().unwrap();
        (
            PacketIo::new(Transport::Unix(a)),
            PacketIo::new(Transport::Unix(b)),
        )
    }

    #[test]
    fn payloads_of_boundary_sizes_round_trip() {
        for size in [
            0,
            1,
            MAX_PACKET_CHUNK - 1,
            MAX_PACKET_CHUNK,
            MAX_PACKET_CHUNK + 5,
        ] {
            let (mut a, mut b) = pair();
            let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let sent = payload.clone();
            let writer = std::thread::spawn(move || a.write_payload(&sent).unwrap());
            let mut got = Vec::new();
            b.read_payload(&mut got).unwrap();
            writer.join().unwrap();
            assert_eq!(got.len(), payload.len(), "size {size}");
            assert!(got == payload, "size {size}");
        }
    }

    #[test]
    fn lent_payloads_are_consumed_by_the_next_read_and_refused_ones_stay() {
        let (mut a, mut b) = pair();
        for p in [&b"first"[..], b"\xFEskip me", b"third", b"fourth"] {
            a.queue_payload(p).unwrap();
        }
        a.flush().unwrap();
        let mut got = Vec::new();
        b.read_payload(&mut got).unwrap();
        assert_eq!(got, b"first");
        // The rest arrived in the same read: lent without a copy until one is refused.
        let not_fe = |p: &[u8]| p.first() != Some(&0xFE);
        assert!(!b.lend_payload(not_fe));
        assert_eq!(b.seq(), 1, "a refused payload is not consumed");
        b.read_payload(&mut got).unwrap();
        assert_eq!(got, b"\xFEskip me");
        assert!(b.lend_payload(not_fe));
        assert_eq!(b.lent(), b"third");
        assert!(b.lend_payload(not_fe));
        assert_eq!(b.lent(), b"fourth");
        // Nothing whole is buffered: nothing is lent, and a read waits for the next payload.
        assert!(!b.lend_payload(not_fe));
        assert_eq!(b.lent(), b"");
        a.write_payload(b"fifth").unwrap();
        b.read_payload(&mut got).unwrap();
        assert_eq!(got, b"fifth");
        assert_eq!(b.seq(), 5);
    }

    #[test]
    fn out_of_order_sequence_is_an_error() {
        let (mut a, mut b) = pair();
        a.set_seq(5);
        a.write_payload(b"x").unwrap();
        let mut got = Vec::new();
        let err = b.read_payload(&mut got).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
