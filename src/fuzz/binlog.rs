//! Binlog targets: whole files (reader, scanner, transaction tracker, and the SQL the
//! fallback replay makes of each event, compressed payloads included) and single events.

use std::io::Read;
use std::sync::OnceLock;

use super::{MIB, Target};
use crate::binlog::event::{self, Checksum, HEADER_LEN, RawEvent, types};
use crate::binlog::index::{FileSummary, SummaryBuilder, scan};
use crate::binlog::reader::EventReader;
use crate::binlog::statements::SqlSink;
use crate::binlog::transaction::{Step, Tracker, TxId};
use crate::binlog::walk::Sink;
use crate::mysql::gtid::{Gtid, GtidSet};

const DICTIONARY: &[&[u8]] = &[
    b"\xfebin",
    b"BEGIN",
    b"COMMIT",
    b"ROLLBACK",
    b"XA START",
    b"XA END",
    b"CREATE TABLE t (a INT)",
    b"\x28\xb5\x2f\xfd",
    &[types::GTID],
    &[types::GTID_TAGGED],
    &[types::QUERY],
    &[types::XID],
    &[types::TRANSACTION_PAYLOAD],
    &[types::MARIA_GTID],
    &[types::FORMAT_DESCRIPTION],
];

/// A binlog file. The first byte chooses how the rest is read: bit 0 re-seals every
/// event's CRC32 and bit 1 its end position before reading, so mutations reach the parsers
/// behind the checks; the low bits of byte 1 set the read size of a second, dribbling pass.
pub const FILE: Target = Target {
    name: "binlog_file",
    run: run_file,
    generated_seeds: file_seeds,
    seed_dirs: &[],
    dictionary: DICTIONARY,
    max_alloc: 16 * MIB,
    ci_inputs: 20_000,
    max_len: 256 * 1024,
};

/// One event: byte 0 picks its type, byte 1 says whether it carries a CRC32, the rest is its
/// body. It is parsed by every parser of its type, fed to the transaction tracker in and out
/// of a transaction, and turned into SQL after a real format description event.
pub const EVENT: Target = Target {
    name: "binlog_event",
    run: run_event,
    generated_seeds: event_seeds,
    seed_dirs: &[],
    dictionary: DICTIONARY,
    max_alloc: 16 * MIB,
    ci_inputs: 50_000,
    max_len: 64 * 1024,
};

/// The binlog fixtures (files written by MySQL 9.7 and MariaDB 10.11), behind the two mode
/// bytes.
fn file_seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for file in fixture_binlogs() {
        for mode in [0u8, 3] {
            let mut v = vec![mode, 1];
            v.extend_from_slice(&file);
            out.push(v);
        }
    }
    out
}

fn fixture_binlogs() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let root = super::crate_dir().join("fixtures/binlog");
    let Ok(dirs) = std::fs::read_dir(root) else {
        return out;
    };
    let mut dirs: Vec<_> = dirs.filter_map(|e| e.ok().map(|e| e.path())).collect();
    dirs.sort();
    for dir in dirs.iter().filter(|d| d.is_dir()) {
        for (path, data) in super::files_in(dir) {
            if data.starts_with(event::MAGIC) && path.extension().is_some() {
                out.push(data);
            }
        }
    }
    out
}

/// Every event of the fixture files as an [`EVENT`] input.
fn event_seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for file in fixture_binlogs() {
        let Ok(mut reader) = EventReader::new(&file[..]) else {
            continue;
        };
        let mut checksum = Checksum::None;
        while let Ok(Some(item)) = reader.next_event() {
            let Some(raw) = item.raw else { continue };
            checksum = checksum_after(&raw, checksum);
            let mut v = vec![item.header.type_code, u8::from(checksum == Checksum::Crc32)];
            v.extend_from_slice(raw.body(checksum));
            out.push(v);
        }
    }
    out
}

fn run_file(data: &[u8]) {
    let [mode, step, rest @ ..] = data else {
        return;
    };
    let mut file = rest.to_vec();
    reseal(&mut file, mode & 1 != 0, mode & 2 != 0);
    let whole = scan(&file[..], |_| {});
    let dribbled = scan(
        Dribble {
            data: &file,
            step: usize::from(step & 7) + 1,
        },
        |_| {},
    );
    assert_eq!(
        format!("{whole:?}"),
        format!("{dribbled:?}"),
        "reading in small pieces changed the result"
    );
    if let Ok(summary) = &whole {
        check_summary(summary, file.len());
        // A file cut where the scan says its last complete transaction ends reads as
        // complete, with the same transactions: what the spool does after a crash.
        let cut = usize::try_from(summary.complete_end).unwrap_or(usize::MAX);
        let again = scan(&file[..cut.min(file.len())], |_| {})
            .expect("the prefix up to complete_end must read");
        assert_eq!(again.transactions, summary.transactions);
        assert_eq!(again.gtids, summary.gtids);
        assert_eq!(again.complete_end, summary.complete_end);
        assert!(
            !again.partial_tail,
            "cut at complete_end, yet a partial tail"
        );
    }
    replay_as_sql(&file);
}

fn check_summary(s: &FileSummary, len: usize) {
    assert!(s.complete_end >= 4 && s.complete_end <= s.end, "{s:?}");
    assert!(s.end <= len as u64, "end {} past the file ({len})", s.end);
    assert!(s.gtids.count() <= s.transactions, "{s:?}");
    // The archive stores these sets as text; they must read back as the same sets.
    round_trip_text(&s.gtids);
    if let Some(prev) = &s.previous_gtids {
        round_trip_text(prev);
    }
}

fn round_trip_text(set: &GtidSet) {
    let text = set.to_string();
    let back = GtidSet::parse(&text)
        .unwrap_or_else(|e| panic!("a GTID set read from a binlog prints as {text:?}: {e}"));
    assert_eq!(&back, set, "{text}");
}

/// A GTID read from an event must be one a server (and myvault) accepts back as text.
fn check_gtid(g: &Gtid) {
    let text = g.to_string();
    let set = GtidSet::parse(&text)
        .unwrap_or_else(|e| panic!("GTID read from an event prints as {text:?}: {e}"));
    assert!(set.contains(g) && set.count() == 1, "{text}");
}

/// Sets every event's end position and CRC32 to what its bytes say, as far as events frame.
fn reseal(file: &mut [u8], crc: bool, positions: bool) {
    if file.len() < 4 {
        return;
    }
    let mut offset = 4usize;
    let mut checksum = false;
    while offset + HEADER_LEN <= file.len() {
        let size = u32::from_le_bytes([
            file[offset + 9],
            file[offset + 10],
            file[offset + 11],
            file[offset + 12],
        ]) as usize;
        if size < HEADER_LEN || size > file.len() - offset {
            return;
        }
        let ev = &mut file[offset..offset + size];
        if ev[4] == types::FORMAT_DESCRIPTION {
            checksum = size >= HEADER_LEN + 5 && ev[size - 5] == 1;
        }
        if positions {
            ev[13..17].copy_from_slice(&((offset + size) as u32).to_le_bytes());
        }
        if crc && checksum && size >= HEADER_LEN + 4 {
            let sum = crc32fast::hash(&ev[..size - 4]);
            ev[size - 4..].copy_from_slice(&sum.to_le_bytes());
        }
        offset += size;
    }
}

/// The checksum setting from this event on: a format description sets it.
fn checksum_after(raw: &RawEvent<'_>, before: Checksum) -> Checksum {
    if raw.type_code() != types::FORMAT_DESCRIPTION {
        return before;
    }
    event::FormatDescription::parse(raw, 4).map_or(before, |f| f.checksum)
}

/// Hands out at most `step` bytes a read: decoders must not depend on whole reads.
struct Dribble<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Dribble<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.step).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Feeds every whole event to the SQL sink, as the fallback replay engine does.
fn replay_as_sql(file: &[u8]) {
    let mut statements: Vec<Vec<u8>> = Vec::new();
    {
        let mut exec = |sql: &[u8]| {
            statements.push(sql.to_vec());
            Ok(())
        };
        let mut sink = SqlSink::new(&mut exec);
        let Ok(mut reader) = EventReader::new(file) else {
            return;
        };
        let mut checksum = Checksum::None;
        while let Ok(Some(item)) = reader.next_event() {
            if let Some(raw) = &item.raw {
                checksum = checksum_after(raw, checksum);
                if sink.event(raw, checksum).is_err() {
                    break;
                }
            }
        }
    }
    check_statements(&statements);
}

fn check_statements(statements: &[Vec<u8>]) {
    for sql in statements {
        if let Some(rest) = sql.strip_prefix(b"SET @@SESSION.GTID_NEXT = '") {
            let text = std::str::from_utf8(rest).expect("GTID_NEXT is text");
            let gtid = text.strip_suffix('\'').expect("quoted");
            if gtid != "AUTOMATIC" {
                let set = GtidSet::parse(gtid)
                    .unwrap_or_else(|e| panic!("replay would SET GTID_NEXT = {gtid:?}: {e}"));
                assert_eq!(set.count(), 1, "{gtid}");
            }
        }
    }
}

/// The types [`EVENT`] inputs pick from (byte 0, modulo the list's length).
const EVENT_TYPES: &[u8] = &[
    types::QUERY,
    types::ROTATE,
    types::FORMAT_DESCRIPTION,
    types::XID,
    types::TABLE_MAP,
    types::WRITE_ROWS,
    types::UPDATE_ROWS,
    types::DELETE_ROWS,
    types::GTID,
    types::ANONYMOUS_GTID,
    types::PREVIOUS_GTIDS,
    types::XA_PREPARE,
    types::TRANSACTION_PAYLOAD,
    types::GTID_TAGGED,
    types::MARIA_GTID,
    types::MARIA_GTID_LIST,
    types::MARIA_ANNOTATE_ROWS,
    types::STOP,
    types::HEARTBEAT,
];

/// Format description events of the fixtures, with and without checksums.
fn real_fdes() -> &'static [(Checksum, Vec<u8>)] {
    static FDES: OnceLock<Vec<(Checksum, Vec<u8>)>> = OnceLock::new();
    FDES.get_or_init(|| {
        let mut out: Vec<(Checksum, Vec<u8>)> = Vec::new();
        for file in fixture_binlogs() {
            let Ok(mut reader) = EventReader::new(&file[..]) else {
                continue;
            };
            if let Ok(Some(item)) = reader.next_event()
                && let Some(raw) = item.raw
            {
                let checksum = checksum_after(&raw, Checksum::None);
                if !out.iter().any(|(c, _)| *c == checksum) {
                    out.push((checksum, raw.bytes().to_vec()));
                }
            }
        }
        out
    })
}

fn run_event(data: &[u8]) {
    let [selector, flags, body @ ..] = data else {
        return;
    };
    // The seeds carry the real type code; anything else picks from the list.
    let type_code = if EVENT_TYPES.contains(selector) {
        *selector
    } else {
        EVENT_TYPES[usize::from(*selector) % EVENT_TYPES.len()]
    };
    let checksum = if flags & 1 != 0 {
        Checksum::Crc32
    } else {
        Checksum::None
    };
    let bytes = event::build(type_code, 7, 1_700_000_000, 0, 0, body, checksum);
    let ev = RawEvent::frame(&bytes, 4).expect("a built event frames");
    ev.verify(checksum, 4).expect("a built event verifies");
    assert_eq!(ev.body(checksum), body);

    parse_by_type(&ev, checksum);

    // The tracker, outside and inside a transaction.
    let mut outside = Tracker::new();
    if let Ok(Step::Begin(TxId::Mysql(info))) = outside.feed(type_code, Some(&ev), checksum, 4)
        && let Some(g) = &info.gtid
    {
        check_gtid(g);
    }
    let mut inside = Tracker::new();
    let gtid = event::build(types::ANONYMOUS_GTID, 7, 0, 0, 0, &[0; 25], checksum);
    let gtid = RawEvent::frame(&gtid, 4).expect("frames");
    assert!(matches!(
        inside.feed(types::ANONYMOUS_GTID, Some(&gtid), checksum, 4),
        Ok(Step::Begin(_))
    ));
    let _ = inside.feed(type_code, Some(&ev), checksum, 50);
    // And as a summary would see it.
    let mut summary = SummaryBuilder::new();
    let _ = summary.feed(4, ev.header(), Some(&ev));
    let s = summary.finish();
    round_trip_text(&s.gtids);

    // As SQL, after the format description of a real file with the same checksum setting.
    if let Some((_, fde)) = real_fdes().iter().find(|(c, _)| *c == checksum) {
        let mut statements: Vec<Vec<u8>> = Vec::new();
        {
            let mut exec = |sql: &[u8]| {
                statements.push(sql.to_vec());
                Ok(())
            };
            let mut sink = SqlSink::new(&mut exec);
            let fde = RawEvent::frame(fde, 4).expect("fixture FDE frames");
            if sink.event(&fde, checksum).is_ok() {
                let _ = sink.event(&ev, checksum);
            }
        }
        check_statements(&statements);
    }
}

fn parse_by_type(ev: &RawEvent<'_>, checksum: Checksum) {
    let body = ev.body(checksum);
    match ev.type_code() {
        types::FORMAT_DESCRIPTION => {
            let _ = event::FormatDescription::parse(ev, 4);
        }
        types::GTID | types::ANONYMOUS_GTID => {
            let anonymous = ev.type_code() == types::ANONYMOUS_GTID;
            if let Ok(info) = event::GtidInfo::parse_untagged(body, anonymous, 4) {
                assert_eq!(info.gtid.is_none(), anonymous);
                if let Some(g) = &info.gtid {
                    check_gtid(g);
                }
            }
        }
        types::GTID_TAGGED => {
            if let Ok(info) = event::GtidInfo::parse_tagged(body, 4)
                && let Some(g) = &info.gtid
            {
                check_gtid(g);
            }
        }
        types::MARIA_GTID => {
            if let Ok(g) = event::MariaGtidEvent::parse(ev, checksum, 4) {
                let text = g.gtid.to_string();
                assert_eq!(
                    crate::mysql::gtid::MariaGtid::parse(&text).ok(),
                    Some(g.gtid),
                    "{text}"
                );
            }
        }
        types::ROTATE => {
            let _ = event::parse_rotate(ev, checksum, 4);
        }
        types::QUERY => {
            let _ = event::parse_query(ev, checksum, 4);
        }
        types::PREVIOUS_GTIDS => {
            if let Ok(set) = event::parse_previous_gtids(ev, checksum, 4) {
                round_trip_text(&set);
                assert_eq!(GtidSet::decode(&set.encode()).as_ref(), Ok(&set));
            }
        }
        _ => {}
    }
}
