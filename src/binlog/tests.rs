//! Binlog reading against real files written by MySQL 9.7 and MariaDB 10.11
//! (`fixtures/binlog`, see its generate.sh).

use std::path::{Path, PathBuf};

use super::index::{FileSummary, scan};
use super::reader::{EventReader, ReadError};
use crate::mysql::gtid::{GtidSet, MariaGtidList};

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/binlog")
        .join(name)
}

fn files(name: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixture_dir(name))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e.to_string_lossy().chars().all(|c| c.is_ascii_digit()))
        })
        .collect();
    v.sort();
    v
}

fn expected(name: &str, key: &str) -> String {
    let text = std::fs::read_to_string(fixture_dir(name).join("expected.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v[key].as_str().unwrap().to_string()
}

fn expected_number(name: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(fixture_dir(name).join("expected.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v[key].as_u64().unwrap()
}

fn summaries(name: &str) -> Vec<FileSummary> {
    files(name)
        .iter()
        .map(|f| scan(std::fs::File::open(f).unwrap(), |_| {}).unwrap())
        .collect()
}

const MYSQL: [&str; 4] = [
    "mysql97-crc32",
    "mysql97-tagged",
    "mysql97-compressed",
    "mysql97-nochecksum",
];

#[test]
fn gtids_of_the_files_add_up_to_the_servers_gtid_executed() {
    for name in MYSQL {
        let s = summaries(name);
        assert_eq!(s.len(), 2, "{name}");
        let all = s.iter().fold(GtidSet::new(), |acc, f| acc.union(&f.gtids));
        assert_eq!(all.to_string(), expected(name, "gtid_executed"), "{name}");
        // The second file's header says what came before it.
        assert_eq!(
            s[1].previous_gtids.as_ref().unwrap(),
            &s[0].gtids.union(s[0].previous_gtids.as_ref().unwrap()),
            "{name}"
        );
        assert!(
            s[0].sealed && s[0].next_file.as_deref() == Some("binlog.000002"),
            "{name}"
        );
        assert!(!s[0].partial_tail && !s[1].partial_tail, "{name}");
        assert_eq!(
            s[0].complete_end,
            std::fs::metadata(&files(name)[0]).unwrap().len(),
            "{name}"
        );
        assert!(
            s[0].first_commit_us.unwrap() > 1_600_000_000_000_000,
            "{name}: microsecond commit timestamps"
        );
    }
}

#[test]
fn tagged_gtids_come_out_as_uuid_tag_number() {
    let s = summaries("mysql97-tagged");
    let text = s[0].gtids.to_string();
    assert!(text.contains(":mytag:1-2:othertag:7"), "{text}");
}

#[test]
fn compression_does_not_change_what_is_seen() {
    let plain: u64 = summaries("mysql97-crc32")
        .iter()
        .map(|s| s.transactions)
        .sum();
    let compressed: u64 = summaries("mysql97-compressed")
        .iter()
        .map(|s| s.transactions)
        .sum();
    assert_eq!(plain, 10);
    assert_eq!(compressed, plain);
}

#[test]
fn mariadb_gtid_positions() {
    let s = summaries("mariadb1011");
    let mut pos = MariaGtidList::default();
    for f in &s {
        for g in f.maria_gtids.last.values() {
            pos.update(*g);
        }
    }
    assert_eq!(pos.to_string(), expected("mariadb1011", "gtid_binlog_pos"));
    assert!(
        s[1].maria_gtid_list.is_some(),
        "the second file has a GTID list"
    );
    assert!(s[0].transactions >= 5);
}

/// Files a server had open: copied while it wrote them, or left by a SIGKILL in the middle of
/// a write (see generate.sh and crash.py).
const IN_USE: [&str; 4] = [
    "mysql97-inuse",
    "mysql97-crashed",
    "mariadb1011-inuse",
    "mariadb1011-crashed",
];

/// The GTID state after a file: MySQL's previous GTIDs and the file's own, or MariaDB's GTID
/// list moved on by the file's GTIDs.
fn state_after(s: &FileSummary) -> String {
    match &s.maria_gtid_list {
        Some(list) => {
            let mut pos = list.clone();
            for g in s.maria_gtids.last.values() {
                pos.update(*g);
            }
            pos.to_string()
        }
        None => s
            .previous_gtids
            .clone()
            .unwrap_or_default()
            .union(&s.gtids)
            .to_string(),
    }
}

/// Issue 18, item 4: the server marks a file it writes (or left open in a crash) in use in
/// its format description and computes that event's CRC32 as if the flag were clear; such
/// files were refused with "CRC32 mismatch in event at offset 4".
#[test]
fn binlog_files_marked_in_use_are_not_rejected_as_corrupt() {
    for name in IN_USE {
        let flavor_key = if name.starts_with("mariadb") {
            "gtid_binlog_pos"
        } else {
            "gtid_executed"
        };
        for f in files(name) {
            let bytes = std::fs::read(&f).unwrap();
            assert_eq!(bytes[4 + 17] & 1, 1, "{}: marked in use", f.display());
            let s = scan(&bytes[..], |_| {})
                .unwrap_or_else(|e| panic!("{} is refused: {e}", f.display()));
            assert!(!s.sealed, "{}", f.display());
            assert!(s.transactions > 0, "{}", f.display());
            // What the server itself had (in use) or recovered (crashed) from this file.
            assert_eq!(
                state_after(&s),
                expected(name, flavor_key),
                "{}",
                f.display()
            );
        }
    }
}

/// A file cut by a crash ends inside an event: that is an incomplete last event, reported
/// with its offset, never a checksum error; the file reads up to its last complete
/// transaction, where MySQL's own crash recovery trims it.
#[test]
fn crash_cut_binlog_reads_as_incomplete_last_event_not_a_checksum_error() {
    for name in ["mysql97-crashed", "mariadb1011-crashed"] {
        let f = &files(name)[0];
        let bytes = std::fs::read(f).unwrap();
        let incomplete_at = expected_number(name, "incomplete_event_at");
        let mut r = EventReader::new(&bytes[..]).unwrap();
        let mut last_end = 4;
        let err = loop {
            match r.next_event() {
                Ok(Some(item)) => last_end = item.offset + u64::from(item.header.event_size),
                Ok(None) => panic!("{name}: read to the end without noticing the cut"),
                Err(e) => break e,
            }
        };
        assert!(
            matches!(err, ReadError::TruncatedTail { offset } if offset == incomplete_at),
            "{name}: {err}"
        );
        assert_eq!(last_end, incomplete_at, "{name}");
        assert!(
            err.to_string()
                .contains(&format!("incomplete last event at offset {incomplete_at}")),
            "{name}: {err}"
        );
        let s = scan(&bytes[..], |_| {}).unwrap();
        assert!(s.partial_tail, "{name}");
        assert!(s.complete_end <= incomplete_at, "{name}");
        if name.starts_with("mysql") {
            assert_eq!(
                s.complete_end,
                expected_number(name, "recovered_size"),
                "{name}: the server's recovery trimmed the file elsewhere"
            );
        }
        // Damage before the cut is still damage, and says so.
        let mut bad = bytes.clone();
        bad[(s.complete_end / 2) as usize] ^= 0x04;
        assert!(
            matches!(
                scan(&bad[..], |_| {}),
                Err(ReadError::Event(super::event::EventError::Checksum { .. }))
                    | Err(ReadError::Event(super::event::EventError::BadSize { .. }))
                    | Err(ReadError::Position { .. })
            ),
            "{name}: a flipped byte before the cut was not reported as damage"
        );
    }
}

#[test]
fn events_reassemble_to_the_file_byte_for_byte() {
    for name in MYSQL
        .iter()
        .chain(["mariadb1011", "mysql97-inuse", "mariadb1011-inuse"].iter())
    {
        for f in files(name) {
            let bytes = std::fs::read(&f).unwrap();
            let mut out = b"\xfebin".to_vec();
            let mut r = EventReader::new(&bytes[..]).unwrap();
            while let Some(item) = r.next_event().unwrap() {
                out.extend_from_slice(item.raw.expect("fixture events are small").bytes());
            }
            assert!(out == bytes, "{}", f.display());
        }
    }
}

#[test]
fn every_flipped_byte_is_detected_where_there_are_checksums() {
    for name in [
        "mysql97-crc32",
        "mysql97-tagged",
        "mysql97-compressed",
        "mariadb1011",
        "mysql97-inuse",
        "mariadb1011-inuse",
    ] {
        for f in files(name) {
            let bytes = std::fs::read(&f).unwrap();
            for i in 4..bytes.len() {
                let mut bad = bytes.clone();
                bad[i] ^= 0x04;
                let res = scan(&bad[..], |_| {});
                let detected = match res {
                    Err(_) => true,
                    // A flipped size can make the file look cut short: also caught.
                    Ok(s) => s.partial_tail,
                };
                assert!(detected, "{} byte {i}", f.display());
            }
        }
    }
}

#[test]
fn truncation_anywhere_gives_a_clean_partial_tail() {
    for name in MYSQL.iter().chain(["mariadb1011"].iter()) {
        let f = &files(name)[0];
        let bytes = std::fs::read(f).unwrap();
        let full = scan(&bytes[..], |_| {}).unwrap();
        let mut tx_ends = vec![4u64];
        scan(&bytes[..], |t| tx_ends.push(t.end)).unwrap();
        for cut in 0..bytes.len() {
            let s = match scan(&bytes[..cut], |_| {}) {
                Ok(s) => s,
                Err(ReadError::TruncatedTail { .. }) => continue, // inside the magic number
                Err(e) => panic!("{name} cut at {cut}: {e}"),
            };
            assert!(s.complete_end <= cut as u64, "{name} cut {cut}");
            // The safe cut point is the end of a transaction or an event outside one.
            let expected_tx = tx_ends.iter().filter(|&&e| e <= s.complete_end).count() as u64 - 1;
            assert_eq!(s.transactions, expected_tx, "{name} cut {cut}");
            if (cut as u64) < full.complete_end {
                assert!(
                    s.partial_tail
                        || tx_ends.contains(&(cut as u64))
                        || s.complete_end == cut as u64,
                    "{name} cut {cut}"
                );
            }
        }
    }
}
