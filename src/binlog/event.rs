//! Binlog events: the raw bytes are kept as they came, and parsed on demand.
//!
//! Layout (v4): a 19-byte header (timestamp u32, type u8, server_id u32, event_size u32,
//! log_pos u32 = end offset in its file, flags u16), the body, and a CRC32 of header and body
//! when the server writes checksums. Which events carry checksums is set by the format
//! description event; the format description itself always carries its algorithm byte.

use std::fmt;

use crate::mysql::decode::{Reader, Truncated};
use crate::mysql::gtid::{self, Gtid, GtidSet, MariaGtid, Tsid, Uuid};

pub const HEADER_LEN: usize = 19;
pub const CHECKSUM_LEN: usize = 4;
pub const MAGIC: &[u8; 4] = b"\xfebin";

/// Set on events the server makes up for the stream (the first ROTATE), which are not in
/// any file.
pub const LOG_EVENT_ARTIFICIAL_F: u16 = 0x20;

/// Set in a file's FORMAT_DESCRIPTION while the server has the file open, and left set by a
/// crash. The server clears it in place when it closes the file, without rewriting the CRC:
/// that event's CRC32 is always computed as if the flag were clear.
pub const LOG_EVENT_BINLOG_IN_USE_F: u16 = 0x1;

/// Offset of the flags in the event header.
const FLAGS_OFFSET: usize = 17;

pub mod types {
    pub const QUERY: u8 = 2;
    pub const STOP: u8 = 3;
    pub const ROTATE: u8 = 4;
    pub const INTVAR: u8 = 5;
    pub const RAND: u8 = 13;
    pub const USER_VAR: u8 = 14;
    pub const FORMAT_DESCRIPTION: u8 = 15;
    pub const XID: u8 = 16;
    pub const TABLE_MAP: u8 = 19;
    pub const INCIDENT: u8 = 26;
    pub const HEARTBEAT: u8 = 27;
    pub const ROWS_QUERY: u8 = 29;
    pub const WRITE_ROWS: u8 = 30;
    pub const UPDATE_ROWS: u8 = 31;
    pub const DELETE_ROWS: u8 = 32;
    pub const GTID: u8 = 33;
    pub const ANONYMOUS_GTID: u8 = 34;
    pub const PREVIOUS_GTIDS: u8 = 35;
    pub const XA_PREPARE: u8 = 38;
    pub const PARTIAL_UPDATE_ROWS: u8 = 39;
    pub const TRANSACTION_PAYLOAD: u8 = 40;
    pub const HEARTBEAT_V2: u8 = 41;
    pub const GTID_TAGGED: u8 = 42;
    pub const MARIA_ANNOTATE_ROWS: u8 = 160;
    pub const MARIA_BINLOG_CHECKPOINT: u8 = 161;
    pub const MARIA_GTID: u8 = 162;
    pub const MARIA_GTID_LIST: u8 = 163;
    pub const MARIA_START_ENCRYPTION: u8 = 164;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("truncated event at offset {offset}")]
    Truncated { offset: u64 },
    #[error("event at offset {offset} has impossible size {size}")]
    BadSize { offset: u64, size: u32 },
    #[error(
        "CRC32 mismatch in event at offset {offset} (stored {stored:08x}, computed {computed:08x})"
    )]
    Checksum {
        offset: u64,
        stored: u32,
        computed: u32,
    },
    #[error("malformed {what} event at offset {offset}")]
    Malformed { what: &'static str, offset: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub timestamp: u32,
    pub type_code: u8,
    pub server_id: u32,
    pub event_size: u32,
    /// Offset of the end of this event in its file (0 for artificial events).
    pub log_pos: u32,
    pub flags: u16,
}

impl Header {
    pub fn parse(bytes: &[u8]) -> Result<Header, Truncated> {
        let mut r = Reader::new(bytes);
        Ok(Header {
            timestamp: r.u32()?,
            type_code: r.u8()?,
            server_id: r.u32()?,
            event_size: r.u32()?,
            log_pos: r.u32()?,
            flags: r.u16()?,
        })
    }

    pub fn is_artificial(&self) -> bool {
        self.flags & LOG_EVENT_ARTIFICIAL_F != 0
    }

    /// A format description that marks its file as open (being written, or left by a crash).
    pub fn marks_file_in_use(&self) -> bool {
        self.type_code == types::FORMAT_DESCRIPTION && self.flags & LOG_EVENT_BINLOG_IN_USE_F != 0
    }
}

/// The CRC32 of an event's bytes before its checksum, as the server computes it: for a
/// format description marked in use, with that flag clear (the bytes themselves stay as
/// they are, so archives remain byte-identical to the server's files).
pub fn event_crc(header: &Header, before_checksum: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    match before_checksum.split_at_checked(FLAGS_OFFSET + 1) {
        Some((head, rest)) if header.marks_file_in_use() => {
            let (head, flags_low) = head.split_at(FLAGS_OFFSET);
            crc.update(head);
            crc.update(&[flags_low[0] & !(LOG_EVENT_BINLOG_IN_USE_F as u8)]);
            crc.update(rest);
        }
        _ => crc.update(before_checksum),
    }
    crc.finalize()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Checksum {
    #[default]
    None,
    Crc32,
}

/// One event's bytes (header, body and checksum, exactly as written).
#[derive(Clone, Copy)]
pub struct RawEvent<'a> {
    bytes: &'a [u8],
    header: Header,
}

impl fmt::Debug for RawEvent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawEvent({:?}, {} bytes)", self.header, self.bytes.len())
    }
}

impl<'a> RawEvent<'a> {
    /// Frames one event from the start of `bytes` (which may hold more after it).
    pub fn frame(bytes: &'a [u8], offset: u64) -> Result<RawEvent<'a>, EventError> {
        let header = Header::parse(bytes).map_err(|_| EventError::Truncated { offset })?;
        let size = header.event_size as usize;
        if size < HEADER_LEN {
            return Err(EventError::BadSize {
                offset,
                size: header.event_size,
            });
        }
        let bytes = bytes.get(..size).ok_or(EventError::Truncated { offset })?;
        Ok(RawEvent { bytes, header })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn type_code(&self) -> u8 {
        self.header.type_code
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The body without the trailing checksum.
    pub fn body(&self, checksum: Checksum) -> &'a [u8] {
        let end = match checksum {
            Checksum::Crc32 => self
                .bytes
                .len()
                .saturating_sub(CHECKSUM_LEN)
                .max(HEADER_LEN),
            Checksum::None => self.bytes.len(),
        };
        &self.bytes[HEADER_LEN..end]
    }

    /// Verifies the CRC32 when the stream has checksums.
    pub fn verify(&self, checksum: Checksum, offset: u64) -> Result<(), EventError> {
        if checksum == Checksum::None {
            return Ok(());
        }
        let n = self.bytes.len();
        if n < HEADER_LEN + CHECKSUM_LEN {
            return Err(EventError::Truncated { offset });
        }
        let stored = u32::from_le_bytes([
            self.bytes[n - 4],
            self.bytes[n - 3],
            self.bytes[n - 2],
            self.bytes[n - 1],
        ]);
        let computed = event_crc(&self.header, &self.bytes[..n - 4]);
        if stored != computed {
            return Err(EventError::Checksum {
                offset,
                stored,
                computed,
            });
        }
        Ok(())
    }
}

/// What the format description event says about the events after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatDescription {
    pub binlog_version: u16,
    pub server_version: String,
    pub header_len: u8,
    pub checksum: Checksum,
}

impl FormatDescription {
    /// Parses a FORMAT_DESCRIPTION event. Its checksum algorithm byte sits just before the
    /// CRC (when the server writes one) at the very end of the event.
    pub fn parse(ev: &RawEvent<'_>, offset: u64) -> Result<FormatDescription, EventError> {
        let bad = || EventError::Malformed {
            what: "format description",
            offset,
        };
        let body = &ev.bytes()[HEADER_LEN..];
        let mut r = Reader::new(body);
        let binlog_version = r.u16().map_err(|_| bad())?;
        let version_raw = r.take(50).map_err(|_| bad())?;
        let _created = r.u32().map_err(|_| bad())?;
        let header_len = r.u8().map_err(|_| bad())?;
        let server_version =
            String::from_utf8_lossy(version_raw.split(|&b| b == 0).next().unwrap_or_default())
                .into_owned();
        // Servers older than 5.6.1 have no algorithm byte; everything myvault supports has one.
        let n = body.len();
        let alg_with_crc = body.get(n.wrapping_sub(5)).copied();
        let checksum = match alg_with_crc {
            Some(1) => Checksum::Crc32,
            Some(0) => Checksum::None,
            _ => match body.last() {
                Some(0) => Checksum::None,
                _ => return Err(bad()),
            },
        };
        Ok(FormatDescription {
            binlog_version,
            server_version,
            header_len,
            checksum,
        })
    }
}

/// The start of a transaction, with its identity and commit timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GtidInfo {
    /// `None` for anonymous transactions (gtid_mode OFF).
    pub gtid: Option<Gtid>,
    pub last_committed: i64,
    pub sequence_number: i64,
    /// Microseconds since the epoch; 0 when the server did not record it.
    pub immediate_commit_us: u64,
    pub original_commit_us: u64,
    pub transaction_length: u64,
}

fn u56(r: &mut Reader<'_>) -> Result<u64, Truncated> {
    r.u56()
}

impl GtidInfo {
    /// GTID (33) and ANONYMOUS_GTID (34) events: fixed layout (`control_events.cpp`).
    pub fn parse_untagged(
        body: &[u8],
        anonymous: bool,
        offset: u64,
    ) -> Result<GtidInfo, EventError> {
        let bad = |_| EventError::Malformed {
            what: "GTID",
            offset,
        };
        let mut r = Reader::new(body);
        let _flags = r.u8().map_err(bad)?;
        let uuid = Uuid(r.array().map_err(bad)?);
        let gno = r.u64().map_err(bad)?;
        // A number no GTID set can hold (0, or past 2^63 - 1) is damage, not a transaction.
        if !anonymous && !gtid::is_valid_gno(gno) {
            return Err(bad(Truncated));
        }
        let mut info = GtidInfo {
            gtid: (!anonymous).then(|| Gtid {
                tsid: Tsid {
                    uuid,
                    tag: String::new(),
                },
                gno,
            }),
            last_committed: 0,
            sequence_number: 0,
            immediate_commit_us: 0,
            original_commit_us: 0,
            transaction_length: 0,
        };
        // Logical clock (typecode 2), then timestamps, length and versions, each optional
        // for older servers.
        if r.peek() != Some(2) {
            return Ok(info);
        }
        r.u8().map_err(bad)?;
        info.last_committed = r.u64().map_err(bad)? as i64;
        info.sequence_number = r.u64().map_err(bad)? as i64;
        if r.remaining() >= 7 {
            let immediate = u56(&mut r).map_err(bad)?;
            info.immediate_commit_us = immediate & !(1 << 55);
            info.original_commit_us = if immediate & (1 << 55) != 0 {
                u56(&mut r).map_err(bad)?
            } else {
                info.immediate_commit_us
            };
        }
        if !r.is_empty() {
            info.transaction_length = r.lenenc_int().map_err(bad)?;
        }
        Ok(info)
    }

    /// GTID_TAGGED (42): MySQL's serialization library (`libs/mysql/serialization`): a
    /// version byte, the message size, the last non-ignorable field id, then (field id,
    /// value) pairs in varint encoding.
    pub fn parse_tagged(body: &[u8], offset: u64) -> Result<GtidInfo, EventError> {
        let bad = || EventError::Malformed {
            what: "tagged GTID",
            offset,
        };
        let mut r = Reader::new(body);
        let version = r.u8().map_err(|_| bad())?;
        if version != 2 {
            return Err(bad());
        }
        // The size counts the whole message: version byte, size and field-id varints, fields.
        let size = gtid::read_varlen(&mut r).map_err(|_| bad())? as usize;
        let _last_non_ignorable = gtid::read_varlen(&mut r).map_err(|_| bad())?;
        let consumed = body.len() - r.remaining();
        let fields_len = size.checked_sub(consumed).ok_or_else(bad)?;
        let mut f = Reader::new(r.take(fields_len).map_err(|_| bad())?);
        let unsigned = |f: &mut Reader<'_>| gtid::read_varlen(f).map_err(|_| bad());
        let signed = |f: &mut Reader<'_>| {
            let u = gtid::read_varlen(f).map_err(|_| bad())?;
            Ok::<i64, EventError>(if u & 1 == 0 {
                (u >> 1) as i64
            } else {
                -((u >> 1) as i64) - 1
            })
        };
        let (mut uuid, mut gno, mut tag) = (Uuid::default(), 0u64, String::new());
        let mut info = GtidInfo {
            gtid: None,
            last_committed: 0,
            sequence_number: 0,
            immediate_commit_us: 0,
            original_commit_us: 0,
            transaction_length: 0,
        };
        let mut original_seen = false;
        while !f.is_empty() {
            match unsigned(&mut f)? {
                0 => {
                    unsigned(&mut f)?;
                }
                1 => {
                    for b in uuid.0.iter_mut() {
                        *b = u8::try_from(unsigned(&mut f)?).map_err(|_| bad())?;
                    }
                }
                2 => gno = u64::try_from(signed(&mut f)?).map_err(|_| bad())?,
                3 => {
                    let len = unsigned(&mut f)? as usize;
                    let t = f.take(len).map_err(|_| bad())?;
                    tag = gtid::normalise_tag(std::str::from_utf8(t).map_err(|_| bad())?)
                        .map_err(|_| bad())?;
                }
                4 => info.last_committed = signed(&mut f)?,
                5 => info.sequence_number = signed(&mut f)?,
                6 => info.immediate_commit_us = unsigned(&mut f)?,
                7 => {
                    info.original_commit_us = unsigned(&mut f)?;
                    original_seen = true;
                }
                8 => info.transaction_length = unsigned(&mut f)?,
                9..=11 => {
                    unsigned(&mut f)?;
                }
                // A field this reader does not know; its size is unknown, so stop here.
                _ => break,
            }
        }
        if !original_seen {
            info.original_commit_us = info.immediate_commit_us;
        }
        if !gtid::is_valid_gno(gno) {
            return Err(bad());
        }
        info.gtid = Some(Gtid {
            tsid: Tsid { uuid, tag },
            gno,
        });
        Ok(info)
    }
}

/// MariaDB GTID event (162): starts an event group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MariaGtidEvent {
    pub gtid: MariaGtid,
    /// FL_STANDALONE: the group is one event with no COMMIT after it (DDL).
    pub standalone: bool,
}

pub const MARIA_FL_STANDALONE: u8 = 1;

impl MariaGtidEvent {
    pub fn parse(
        ev: &RawEvent<'_>,
        checksum: Checksum,
        offset: u64,
    ) -> Result<MariaGtidEvent, EventError> {
        let bad = |_| EventError::Malformed {
            what: "MariaDB GTID",
            offset,
        };
        let mut r = Reader::new(ev.body(checksum));
        let seq = r.u64().map_err(bad)?;
        let domain = r.u32().map_err(bad)?;
        let flags = r.u8().map_err(bad)?;
        Ok(MariaGtidEvent {
            gtid: MariaGtid {
                domain,
                server_id: ev.header().server_id,
                seq,
            },
            standalone: flags & MARIA_FL_STANDALONE != 0,
        })
    }
}

/// ROTATE: the name of the next file and the position to start at in it.
pub fn parse_rotate(
    ev: &RawEvent<'_>,
    checksum: Checksum,
    offset: u64,
) -> Result<(u64, String), EventError> {
    let body = ev.body(checksum);
    let mut r = Reader::new(body);
    let pos = r.u64().map_err(|_| EventError::Malformed {
        what: "rotate",
        offset,
    })?;
    Ok((pos, String::from_utf8_lossy(r.rest()).into_owned()))
}

/// The SQL text and default schema of a QUERY event.
pub fn parse_query(
    ev: &RawEvent<'_>,
    checksum: Checksum,
    offset: u64,
) -> Result<(String, String), EventError> {
    let bad = |_| EventError::Malformed {
        what: "query",
        offset,
    };
    let mut r = Reader::new(ev.body(checksum));
    let _thread_id = r.u32().map_err(bad)?;
    let _exec_time = r.u32().map_err(bad)?;
    let db_len = r.u8().map_err(bad)? as usize;
    let _error = r.u16().map_err(bad)?;
    let status_len = r.u16().map_err(bad)? as usize;
    r.skip(status_len).map_err(bad)?;
    let db = String::from_utf8_lossy(r.take(db_len).map_err(bad)?).into_owned();
    r.skip(1).map_err(bad)?;
    Ok((db, String::from_utf8_lossy(r.rest()).into_owned()))
}

pub fn parse_previous_gtids(
    ev: &RawEvent<'_>,
    checksum: Checksum,
    offset: u64,
) -> Result<GtidSet, EventError> {
    GtidSet::decode(ev.body(checksum)).map_err(|_| EventError::Malformed {
        what: "previous GTIDs",
        offset,
    })
}

/// Builds an event from a body: header fields filled in, CRC appended when asked. Used to
/// write artificial events (heartbeats, rotates) when myvault serves binlogs itself.
pub fn build(
    type_code: u8,
    server_id: u32,
    timestamp: u32,
    log_pos: u32,
    flags: u16,
    body: &[u8],
    checksum: Checksum,
) -> Vec<u8> {
    let size = HEADER_LEN
        + body.len()
        + if checksum == Checksum::Crc32 {
            CHECKSUM_LEN
        } else {
            0
        };
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&timestamp.to_le_bytes());
    out.push(type_code);
    out.extend_from_slice(&server_id.to_le_bytes());
    out.extend_from_slice(&(size as u32).to_le_bytes());
    out.extend_from_slice(&log_pos.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(body);
    if checksum == Checksum::Crc32 {
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_frame_verify() {
        let bytes = build(
            types::XID,
            7,
            1000,
            123,
            0,
            &42u64.to_le_bytes(),
            Checksum::Crc32,
        );
        let ev = RawEvent::frame(&bytes, 0).unwrap();
        assert_eq!(ev.header().server_id, 7);
        assert_eq!(ev.header().event_size as usize, bytes.len());
        ev.verify(Checksum::Crc32, 0).unwrap();
        assert_eq!(ev.body(Checksum::Crc32), &42u64.to_le_bytes());
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            let ok = RawEvent::frame(&bad, 0).and_then(|e| e.verify(Checksum::Crc32, 0));
            assert!(ok.is_err(), "flip at {i} not caught");
        }
        assert!(matches!(
            RawEvent::frame(&bytes[..10], 5),
            Err(EventError::Truncated { offset: 5 })
        ));
        assert!(matches!(
            RawEvent::frame(&bytes[..bytes.len() - 1], 0),
            Err(EventError::Truncated { .. })
        ));
    }

    #[test]
    fn gtid_event_with_a_transaction_number_out_of_range_is_malformed() {
        let body = |gno: u64| {
            let mut b = vec![0u8];
            b.extend_from_slice(&[7; 16]);
            b.extend_from_slice(&gno.to_le_bytes());
            b
        };
        for gno in [0, 1 << 63, u64::MAX] {
            assert!(
                matches!(
                    GtidInfo::parse_untagged(&body(gno), false, 9),
                    Err(EventError::Malformed { offset: 9, .. })
                ),
                "{gno}"
            );
        }
        assert!(
            GtidInfo::parse_untagged(&body(0), true, 9).is_ok(),
            "anonymous"
        );
        let g = GtidInfo::parse_untagged(&body(gtid::MAX_GNO), false, 9).unwrap();
        assert_eq!(g.gtid.unwrap().gno, gtid::MAX_GNO);
        // A tagged event without its transaction number (field 2) has none.
        let mut tagged = vec![2u8];
        gtid::write_varlen(&mut tagged, 3);
        gtid::write_varlen(&mut tagged, 0);
        assert!(GtidInfo::parse_tagged(&tagged, 0).is_err());
    }

    #[test]
    fn tagged_gtid_body_round_trip() {
        // Built by hand in the serialization format: version 2, size, last non-ignorable id,
        // then flags, sid, gno, tag, timestamps.
        let mut fields = Vec::new();
        let put = |f: &mut Vec<u8>, id: u64, v: u64| {
            gtid::write_varlen(f, id);
            gtid::write_varlen(f, v);
        };
        put(&mut fields, 0, 0);
        gtid::write_varlen(&mut fields, 1);
        for b in 1..=16u64 {
            gtid::write_varlen(&mut fields, b);
        }
        put(&mut fields, 2, 42 << 1);
        gtid::write_varlen(&mut fields, 3);
        gtid::write_varlen(&mut fields, 5);
        fields.extend_from_slice(b"mytag");
        put(&mut fields, 4, 10 << 1);
        put(&mut fields, 5, 11 << 1);
        put(&mut fields, 6, 1_700_000_000_123_456);
        put(&mut fields, 8, 999);
        let mut body = vec![2u8];
        let overhead = 1 + 1 + 1; // version, size, lnif (all one byte here)
        gtid::write_varlen(&mut body, (overhead + fields.len()) as u64);
        gtid::write_varlen(&mut body, 3);
        body.extend_from_slice(&fields);
        let info = GtidInfo::parse_tagged(&body, 0).unwrap();
        let g = info.gtid.unwrap();
        assert_eq!(g.gno, 42);
        assert_eq!(g.tsid.tag, "mytag");
        assert_eq!(g.tsid.uuid.0[0], 1);
        assert_eq!((info.last_committed, info.sequence_number), (10, 11));
        assert_eq!(info.immediate_commit_us, 1_700_000_000_123_456);
        assert_eq!(info.original_commit_us, info.immediate_commit_us);
        assert_eq!(info.transaction_length, 999);
        for cut in 0..body.len() {
            let _ = GtidInfo::parse_tagged(&body[..cut], 0); // never panics
        }
    }
}
