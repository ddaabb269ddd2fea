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

#[test]
fn events_reassemble_to_the_file_byte_for_byte() {
    for name in MYSQL.iter().chain(["mariadb1011"].iter()) {
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
