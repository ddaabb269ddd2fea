//! Reading a binlog file event by event, in bounded memory.
//!
//! Small events are read whole (they are the ones worth parsing: GTIDs, queries, XIDs,
//! format descriptions). Events larger than [`WHOLE_EVENT_LIMIT`] (row events of huge rows,
//! compressed transaction payloads) are streamed through and only their header is kept, so a
//! 1 GiB transaction never sits in memory. Every event's CRC32 is checked either way, and each
//! event must end where its header says (`log_pos`).

use std::io::{self, Read};

use super::event::{
    Checksum, EventError, FormatDescription, HEADER_LEN, Header, MAGIC, RawEvent, types,
};

pub const WHOLE_EVENT_LIMIT: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("not a binlog file (no magic number)")]
    NotBinlog,
    /// The file ends inside an event: a file still being written, or cut by a crash. Not
    /// damage: everything before `offset` is intact.
    #[error(
        "incomplete last event at offset {offset} (the file is still being written, or was cut by a crash)"
    )]
    TruncatedTail { offset: u64 },
    #[error(transparent)]
    Event(#[from] EventError),
    #[error("event at offset {offset} says it ends at {log_pos}, but it ends at {actual}")]
    Position {
        offset: u64,
        log_pos: u32,
        actual: u64,
    },
    #[error("reading the binlog: {0}")]
    Io(#[from] io::Error),
}

/// One event as read from a file.
#[derive(Debug)]
pub struct Item<'a> {
    pub offset: u64,
    pub header: Header,
    /// The whole event, unless it was too large to hold.
    pub raw: Option<RawEvent<'a>>,
}

pub struct EventReader<R> {
    input: R,
    offset: u64,
    checksum: Checksum,
    buf: Vec<u8>,
    /// Check `log_pos` of each event (off for streams whose positions are not file offsets).
    check_positions: bool,
}

impl<R: Read> EventReader<R> {
    /// Starts at the beginning of a file: checks the magic number.
    pub fn new(mut input: R) -> Result<EventReader<R>, ReadError> {
        let mut magic = [0u8; 4];
        match read_full(&mut input, &mut magic)? {
            4 if &magic == MAGIC => {}
            // A file just created by a streamer that died before writing the magic.
            n if n < 4 && magic[..n] == MAGIC[..n] => {
                return Err(ReadError::TruncatedTail { offset: 0 });
            }
            _ => return Err(ReadError::NotBinlog),
        }
        Ok(EventReader {
            input,
            offset: 4,
            checksum: Checksum::None,
            buf: Vec::new(),
            check_positions: true,
        })
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn checksum(&self) -> Checksum {
        self.checksum
    }

    /// The next event, `None` at a clean end of file.
    pub fn next_event(&mut self) -> Result<Option<Item<'_>>, ReadError> {
        let offset = self.offset;
        let mut header_bytes = [0u8; HEADER_LEN];
        match read_full(&mut self.input, &mut header_bytes)? {
            0 => return Ok(None),
            n if n < HEADER_LEN => return Err(ReadError::TruncatedTail { offset }),
            _ => {}
        }
        let header =
            Header::parse(&header_bytes).map_err(|_| ReadError::TruncatedTail { offset })?;
        let size = header.event_size as usize;
        if size < HEADER_LEN {
            return Err(EventError::BadSize {
                offset,
                size: header.event_size,
            }
            .into());
        }
        let end = offset + size as u64;
        if self.check_positions && header.log_pos != 0 && u64::from(header.log_pos) != end {
            return Err(ReadError::Position {
                offset,
                log_pos: header.log_pos,
                actual: end,
            });
        }
        let is_fde = header.type_code == types::FORMAT_DESCRIPTION;
        // Every v4 file starts with its format description; without it nothing after can be
        // checked, so anything else there is damage.
        if offset == 4 && !is_fde {
            return Err(EventError::Malformed {
                what: "first (format description)",
                offset,
            }
            .into());
        }
        // A format description is about a hundred bytes; one "too large to hold" is damage,
        // and its size must not decide an allocation.
        if is_fde && size > WHOLE_EVENT_LIMIT {
            return Err(EventError::BadSize {
                offset,
                size: header.event_size,
            }
            .into());
        }
        if size <= WHOLE_EVENT_LIMIT {
            self.buf.clear();
            self.buf.extend_from_slice(&header_bytes);
            self.buf.resize(size, 0);
            if read_full(&mut self.input, &mut self.buf[HEADER_LEN..])? < size - HEADER_LEN {
                return Err(ReadError::TruncatedTail { offset });
            }
            self.offset = end;
            let ev = RawEvent::frame(&self.buf, offset)?;
            if is_fde {
                let fde = FormatDescription::parse(&ev, offset)?;
                self.checksum = fde.checksum;
                ev.verify(fde.checksum, offset)?;
            } else {
                ev.verify(self.checksum, offset)?;
            }
            return Ok(Some(Item {
                offset,
                header,
                raw: Some(ev),
            }));
        }
        // Stream a large event through, checking its CRC as it passes.
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header_bytes);
        let body_len = size - HEADER_LEN;
        let crc_len = if self.checksum == Checksum::Crc32 {
            4
        } else {
            0
        };
        let mut left = body_len - crc_len;
        let mut chunk = vec![0u8; 1 << 20];
        while left > 0 {
            let n = left.min(chunk.len());
            if read_full(&mut self.input, &mut chunk[..n])? < n {
                return Err(ReadError::TruncatedTail { offset });
            }
            crc.update(&chunk[..n]);
            left -= n;
        }
        if crc_len == 4 {
            let mut stored = [0u8; 4];
            if read_full(&mut self.input, &mut stored)? < 4 {
                return Err(ReadError::TruncatedTail { offset });
            }
            let (stored, computed) = (u32::from_le_bytes(stored), crc.finalize());
            if stored != computed {
                return Err(EventError::Checksum {
                    offset,
                    stored,
                    computed,
                }
                .into());
            }
        }
        self.offset = end;
        Ok(Some(Item {
            offset,
            header,
            raw: None,
        }))
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
