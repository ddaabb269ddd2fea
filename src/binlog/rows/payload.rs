//! TRANSACTION_PAYLOAD (`binlog_transaction_compression=ON`): a few header fields, then one
//! zstd frame holding the transaction's events without checksums. Read as a stream, one
//! event at a time, so a transaction larger than memory passes through in bounded memory.

use std::io::Read;

use crate::binlog::event::{HEADER_LEN, Header};

fn invalid(what: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.into())
}

/// The largest event inside a payload this reader holds: the server's own limit on a
/// packet (1 GiB). A damaged size past it is refused, not allocated.
const MAX_INNER_EVENT: usize = 1 << 30;

fn lenenc(r: &mut dyn Read) -> std::io::Result<u64> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    let n = match b[0] {
        0..=0xfa => return Ok(u64::from(b[0])),
        0xfc => 2,
        0xfd => 3,
        0xfe => 8,
        _ => return Err(invalid("bad length in a transaction payload header")),
    };
    let mut buf = [0u8; 8];
    r.read_exact(&mut buf[..n])?;
    Ok(u64::from_le_bytes(buf))
}

/// Calls `each` with every event (header and body, no checksum) of the payload whose body
/// `body` reads.
pub fn for_each_event(
    body: &mut dyn Read,
    each: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut compression = 0u64;
    loop {
        let field = lenenc(body)?;
        if field == 0 {
            break;
        }
        let len = lenenc(body)?;
        if len > 16 {
            return Err(invalid("oversized transaction payload header field"));
        }
        let mut value = vec![0u8; len as usize];
        body.read_exact(&mut value)?;
        if field == 2 {
            compression = lenenc(&mut value.as_slice())?;
        }
    }
    let mut inner: Box<dyn Read + '_> = match compression {
        0 => Box::new(zstd::stream::read::Decoder::new(body)?),
        255 => Box::new(body),
        other => return Err(invalid(format!("unknown payload compression {other}"))),
    };
    let mut ev = Vec::new();
    loop {
        let mut head = [0u8; HEADER_LEN];
        match inner.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let h = Header::parse(&head).map_err(|_| invalid("bad event inside a payload"))?;
        let size = h.event_size as usize;
        if !(HEADER_LEN..=MAX_INNER_EVENT).contains(&size) {
            return Err(invalid("bad event size inside a payload"));
        }
        ev.clear();
        ev.extend_from_slice(&head);
        // Grown as the bytes arrive: a damaged size costs no more than the bytes present.
        (&mut inner)
            .take((size - HEADER_LEN) as u64)
            .read_to_end(&mut ev)?;
        if ev.len() != size {
            return Err(invalid("truncated event inside a payload"));
        }
        each(&ev)?;
    }
}
