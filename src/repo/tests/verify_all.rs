//! Issue 18, item 11: verify goes on past every bad object and names every snapshot and
//! binlog segment (the point-in-time ranges) it affects.

use std::sync::Arc;

use super::super::manifest::{self, BinlogSegment};
use super::super::writer::MultiWriter;
use super::super::{Repo, binlog_key, verify};
use super::*;
use crate::storage::Storage;

const UUID: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";

/// Archives `content` as binlog file `file` in a pack of its own; returns the pack's key.
pub(super) fn archive(mem: &MemoryStorage, repo: &Arc<Repo>, file: &str, content: &[u8]) -> String {
    let before: Vec<String> = mem
        .list("packs/")
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    let w = MultiWriter::new(vec![repo.clone()]).unwrap();
    let (size, digest, refs) = w.write_stream(content, w.stream_chunker()).unwrap();
    let segment = BinlogSegment {
        size,
        digest,
        refs,
        ..BinlogSegment::sample(UUID, file, "", "")
    };
    w.commit_with(|r| {
        let key = binlog_key(UUID, file, size);
        r.storage()
            .create(&key, &manifest::encode("binlog", &segment))
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .unwrap();
    let mut after: Vec<String> = mem
        .list("packs/")
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    after.retain(|k| !before.contains(k));
    assert_eq!(after.len(), 1, "{after:?}");
    after.remove(0)
}

#[test]
fn verify_names_every_damaged_snapshot_and_binlog_segment_and_goes_on() {
    let (mem, repo) = new_repo();
    let packs_of = |mem: &MemoryStorage| -> Vec<String> {
        mem.list("packs/")
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect()
    };
    let (s1, _) = backup(vec![repo.clone()], &[("one", &data(50_000, 1))]).unwrap();
    let s1_pack = packs_of(&mem)[0].clone();
    let (s2, _) = backup(vec![repo.clone()], &[("two", &data(50_000, 2))]).unwrap();
    let first = archive(&mem, &repo, "binlog.000001", &data(60_000, 3));
    archive(&mem, &repo, "binlog.000002", &data(60_000, 4));
    let third = archive(&mem, &repo, "binlog.000003", &data(60_000, 5));
    let clean = verify::verify(&repo, true, |_, _| {}).unwrap();
    assert!(clean.problems.is_empty(), "{:?}", clean.problems);

    // Damage of every kind at once: a pack that does not match its name, a missing pack, a
    // manifest that does not decode, an index file that does not decode.
    mem.tamper(&s1_pack, |b| b[20] ^= 1);
    mem.delete(&first).unwrap();
    let second_key = binlog_key(UUID, "binlog.000002", 60_000);
    mem.tamper(&second_key, |b| b.truncate(b.len() - 5));
    let s2_key = super::super::snapshot_key(&s2);
    mem.tamper(&s2_key, |b| b[12] ^= 1);
    let third_id = third
        .rsplit('/')
        .next()
        .and_then(super::super::Id::parse)
        .unwrap();
    let index_of_third = mem
        .list("index/")
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .find(|k| {
            let packs = super::super::index::decode_file(&mem.get(k).unwrap()).unwrap();
            packs.iter().any(|(p, _)| *p == third_id)
        })
        .unwrap();
    let report = verify::verify(&Repo::open(mem.clone()).unwrap(), true, |_, _| {}).unwrap();
    let objects: Vec<&str> = report.problems.iter().map(|p| p.object.as_str()).collect();
    for object in [&s1_pack, &first, &second_key, &s2_key] {
        assert!(objects.contains(&object.as_str()), "{object}: {objects:?}");
    }
    let mut both = [s1.clone(), s2.clone()];
    both.sort();
    assert_eq!(report.damaged_snapshots, both);
    let segments: Vec<&str> = report
        .damaged_segments
        .iter()
        .map(|s| s.file.as_str())
        .collect();
    assert_eq!(segments, ["binlog.000001", "binlog.000002"]);
    assert!(
        report
            .damaged_segments
            .iter()
            .all(|s| s.source_uuid == UUID)
    );
    let named = report.problems.iter().find(|p| p.object == first).unwrap();
    assert!(
        named.affects.iter().any(|a| a.contains("binlog.000001")),
        "{named:?}"
    );

    // An index file that does not decode is one problem; what it alone indexed is missing.
    mem.tamper(&index_of_third, |b| b[10] ^= 1);
    let report = verify::verify(&Repo::open(mem.clone()).unwrap(), false, |_, _| {}).unwrap();
    let objects: Vec<&str> = report.problems.iter().map(|p| p.object.as_str()).collect();
    assert!(objects.contains(&index_of_third.as_str()), "{objects:?}");
    assert!(
        report
            .damaged_segments
            .iter()
            .any(|s| s.file == "binlog.000003"),
        "{:?}",
        report.damaged_segments
    );
}
