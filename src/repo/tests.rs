//! Repository behaviour over the in-memory store: round trips, dedup, failures, damage.

use std::sync::Arc;

use chrono::Utc;

use super::chunker::ChunkerConfig;
use super::config::RepoConfig;
use super::manifest::SnapshotManifest;
use super::repack::MaxUnused;
use super::writer::{MultiWriter, new_snapshot_id};
use super::{Repo, RepoError, copy, verify};
use crate::storage::Storage;
use crate::storage::memory::MemoryStorage;

mod beside;
mod delta_bases;
mod orphan_deltas;
mod read_ahead;
mod repack;
mod torture;
mod verify_all;
mod year_of_dailies;

fn small_config() -> RepoConfig {
    RepoConfig {
        chunker: ChunkerConfig::cdc(16 * 1024),
        pack_size: 1 << 20,
        ..RepoConfig::new()
    }
}

fn new_repo() -> (Arc<MemoryStorage>, Arc<Repo>) {
    let mem = Arc::new(MemoryStorage::new());
    let repo = Repo::init(mem.clone(), small_config()).unwrap();
    (mem, Arc::new(repo))
}

fn data(n: usize, seed: u32) -> Vec<u8> {
    let mut rng = crate::test_rng::XorShift32::new(seed.max(1));
    (0..n)
        .map(|i| {
            let x = rng.next_u32();
            // Half text-like, half noise: compresses a little, like real dumps.
            if i % 2 == 0 {
                b'a' + (x % 26) as u8
            } else {
                (x >> 24) as u8
            }
        })
        .collect()
}

fn template() -> SnapshotManifest {
    template_at(Utc::now())
}

/// A snapshot manifest of plain files taken at `time`, without files yet.
fn template_at(time: chrono::DateTime<Utc>) -> SnapshotManifest {
    SnapshotManifest {
        id: new_snapshot_id(time),
        method: "files".into(),
        host: "test".into(),
        source: None,
        ..SnapshotManifest::sample("", time, "")
    }
}

fn backup(
    repos: Vec<Arc<Repo>>,
    files: &[(&str, &[u8])],
) -> Result<(String, Vec<super::writer::TargetOutcome>), RepoError> {
    let w = MultiWriter::new(repos)?;
    for (name, bytes) in files {
        w.add_file(name, 0o644, *bytes, w.stream_chunker())?;
    }
    let t = template();
    let id = t.id.clone();
    Ok((id, w.commit_snapshot(t)?.outcomes))
}

fn restore(repo: &Repo, id: &str, path: &str) -> Result<Vec<u8>, RepoError> {
    let snap = repo.snapshot(id)?;
    let entry = snap
        .files
        .iter()
        .find(|f| f.path == path)
        .expect("file in manifest");
    let mut out = Vec::new();
    repo.copy_file(entry, &mut out)?;
    Ok(out)
}

#[test]
fn round_trip_into_two_repos_and_dedup_on_second_backup() {
    let (_, a) = new_repo();
    let (_, b) = new_repo();
    let big = data(3 << 20, 1);
    let (id, outcomes) = backup(
        vec![a.clone(), b.clone()],
        &[("big", &big), ("small", b"tiny")],
    )
    .unwrap();
    assert!(outcomes.iter().all(|o| o.error.is_none()), "{outcomes:?}");
    for repo in [&a, &b] {
        assert_eq!(restore(repo, &id, "big").unwrap(), big);
        assert_eq!(restore(repo, &id, "small").unwrap(), b"tiny");
    }
    let first_new = outcomes[0].new_bytes;

    let (_, again) = backup(
        vec![a.clone(), b.clone()],
        &[("big", &big), ("small", b"tiny")],
    )
    .unwrap();
    for o in &again {
        assert!(
            o.new_bytes * 100 < first_new,
            "second backup wrote {} of {first_new}",
            o.new_bytes
        );
    }
    // A 1% change in the middle costs a few chunks, not the file.
    let mut changed = big.clone();
    for b in &mut changed[1_500_000..1_530_000] {
        *b = b.wrapping_add(1);
    }
    let (id3, third) = backup(vec![a.clone()], &[("big", &changed)]).unwrap();
    assert!(
        third[0].new_bytes * 10 < first_new,
        "1% change wrote {} of {first_new}",
        third[0].new_bytes
    );
    assert_eq!(restore(&a, &id3, "big").unwrap(), changed);
    assert_eq!(a.snapshots().unwrap().len(), 3);
    assert_eq!(b.snapshots().unwrap().len(), 2);
}

#[test]
fn a_failing_repo_is_reported_and_the_other_completes() {
    let (_, good) = new_repo();
    let (bad_mem, bad) = new_repo();
    bad_mem.fail_writes_after(1);
    let big = data(4 << 20, 2);
    let (id, outcomes) = backup(vec![good.clone(), bad.clone()], &[("big", &big)]).unwrap();
    assert!(outcomes[0].error.is_none());
    assert!(
        outcomes[1]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("injected"),
        "{outcomes:?}"
    );
    assert_eq!(restore(&good, &id, "big").unwrap(), big);
    // No snapshot becomes visible where its data is not complete.
    assert!(bad_mem.list("snapshots/").unwrap().is_empty());
}

#[test]
fn all_repos_failing_is_an_error() {
    let (mem, repo) = new_repo();
    mem.fail_writes_after(0);
    let err = backup(vec![repo], &[("f", &data(3 << 20, 3))]).unwrap_err();
    assert!(matches!(err, RepoError::WriteFailed(_)), "{err}");
}

#[test]
fn large_files_use_a_chunk_list_blob() {
    let (_, repo) = new_repo();
    let big = data(2 << 20, 4);
    let (id, _) = backup(vec![repo.clone()], &[("big", &big)]).unwrap();
    let snap = repo.snapshot(&id).unwrap();
    let f = &snap.files[0];
    assert!(
        f.refs.chunk_list.is_some() && f.refs.chunks.is_empty(),
        "{f:?}"
    );
    assert!(f.refs.chunk_count > 64);
    assert_eq!(restore(&repo, &id, "big").unwrap(), big);
}

#[test]
fn damage_is_detected_on_read_and_named_by_verify() {
    let (mem, repo) = new_repo();
    let big = data(3 << 20, 5);
    let (id, _) = backup(
        vec![repo.clone()],
        &[("big", &big), ("other", b"unaffected")],
    )
    .unwrap();
    let clean = verify::verify(&repo, true, |_, _| {}).unwrap();
    assert!(clean.problems.is_empty(), "{:?}", clean.problems);
    assert!(clean.blobs > 10);

    let pack_key = mem.list("packs/").unwrap()[0].key.clone();
    mem.tamper(&pack_key, |b| b[100] ^= 0x40);
    let fresh = Arc::new(Repo::open(mem.clone()).unwrap());
    let err = restore(&fresh, &id, "big").unwrap_err();
    assert!(matches!(err, RepoError::Integrity { .. }), "{err}");

    let report = verify::verify(&fresh, true, |_, _| {}).unwrap();
    assert!(
        report.problems.iter().any(|p| p.object == pack_key),
        "{:?}",
        report.problems
    );
    let affected: Vec<&String> = report.problems.iter().flat_map(|p| &p.affects).collect();
    assert!(
        affected
            .iter()
            .any(|a| a.contains(&id) && a.contains("file big")),
        "{affected:?}"
    );
    assert!(
        !affected.iter().any(|a| a.contains("file other")),
        "{affected:?}"
    );
}

#[test]
fn truncated_manifest_is_an_integrity_error() {
    let (mem, repo) = new_repo();
    let (id, _) = backup(vec![repo.clone()], &[("f", b"data")]).unwrap();
    mem.tamper(&format!("snapshots/{id}"), |b| b.truncate(b.len() / 2));
    let err = repo.snapshots().unwrap_err();
    assert!(
        matches!(err, RepoError::Integrity { .. }) && err.to_string().contains(&id),
        "{err}"
    );
    let report = verify::verify(&repo, false, |_, _| {}).unwrap();
    assert!(report.problems.iter().any(|p| p.object.contains(&id)));
}

#[test]
fn interrupted_write_leaves_indexed_packs_that_a_rerun_reuses() {
    let (mem, repo) = new_repo();
    let big = data(6 << 20, 6);
    {
        let w = MultiWriter::new(vec![repo.clone()]).unwrap();
        // Only the first half arrives before the "crash" (the writer is dropped uncommitted).
        w.add_file("big", 0o644, &big[..3 << 20], w.stream_chunker())
            .unwrap();
    }
    assert!(mem.list("snapshots/").unwrap().is_empty());
    assert!(
        !mem.list("index/").unwrap().is_empty(),
        "per-pack index files survive the crash"
    );
    let fresh = Arc::new(Repo::open(mem.clone()).unwrap());
    let (id, outcomes) = backup(vec![fresh.clone()], &[("big", &big)]).unwrap();
    let total_stored = mem.bytes();
    assert!(
        outcomes[0].new_bytes < total_stored * 3 / 4,
        "rerun wrote {} of {total_stored}",
        outcomes[0].new_bytes
    );
    assert_eq!(restore(&fresh, &id, "big").unwrap(), big);
}

/// Opened afresh (its index read from storage), the repository gives `content` back for
/// `path` of snapshot `id`, and its check finds nothing wrong.
fn assert_reads_back(store: Arc<dyn Storage>, id: &str, path: &str, content: &[u8]) {
    let fresh = Repo::open(store).unwrap();
    assert_eq!(restore(&fresh, id, path).unwrap(), content);
    let report = verify::verify(&fresh, true, |_, _| {}).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[test]
fn a_commit_leaves_one_index_file_that_covers_every_pack() {
    // One pack (the last, written without an index of its own until the merge), then several.
    for (size, min_packs) in [(100 << 10, 1), (5 << 20, 3)] {
        let (mem, repo) = new_repo();
        let content = data(size, 9);
        let (id, _) = backup(vec![repo], &[("f", &content)]).unwrap();
        assert_eq!(mem.list("index/").unwrap().len(), 1, "{size} bytes");
        assert!(
            mem.list("packs/").unwrap().len() >= min_packs,
            "{size} bytes"
        );
        assert_reads_back(mem.clone(), &id, "f", &content);
    }
}

#[test]
fn packs_stored_in_parts_read_back_and_an_abandoned_write_leaves_no_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(crate::storage::local::LocalStorage::create(dir.path()).unwrap());
    assert!(store.can_stage(), "local storage stores packs in parts");
    let config = RepoConfig {
        pack_size: 4 << 20,
        ..small_config()
    };
    let repo = Arc::new(Repo::init(store.clone(), config).unwrap());
    let content = data(14 << 20, 3);
    let (id, outcomes) = backup(vec![repo.clone()], &[("f", &content)]).unwrap();
    assert!(outcomes[0].error.is_none(), "{:?}", outcomes[0].error);
    let packs = store.list("packs/").unwrap();
    assert!(packs.len() >= 2, "{} packs", packs.len());
    assert!(
        packs.iter().any(|p| p.size > 3 << 20),
        "no pack large enough to have been stored in parts"
    );
    assert_eq!(store.list("index/").unwrap().len(), 1);
    {
        // Interrupted: dropped uncommitted while a pack is being stored in parts.
        let w = MultiWriter::new(vec![repo.clone()]).unwrap();
        w.add_file("g", 0o644, &data(6 << 20, 4)[..], w.stream_chunker())
            .unwrap();
    }
    let mut dirs = vec![dir.path().to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(
                !name.starts_with(".tmp-"),
                "left behind: {}",
                entry.path().display()
            );
            if entry.file_type().unwrap().is_dir() {
                dirs.push(entry.path());
            }
        }
    }
    assert_reads_back(store, &id, "f", &content);
}

#[test]
fn prune_removes_the_temporary_files_of_dead_writers_once_they_are_old() {
    // A process killed while it wrote a pack (SIGKILL, power loss) leaves its temporary file.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(crate::storage::local::LocalStorage::create(dir.path()).unwrap());
    let repo = Arc::new(Repo::init(store.clone(), small_config()).unwrap());
    let content = data(3 << 20, 5);
    let (id, _) = backup(vec![repo.clone()], &[("f", &content)]).unwrap();
    let stored = store.list("").unwrap();
    let packs = dir.path().join("packs");
    let old = packs.join(".tmp-killed");
    let recent = packs.join(".tmp-running");
    std::fs::write(&old, vec![7u8; 5000]).unwrap();
    std::fs::write(&recent, b"still being written").unwrap();
    let long_ago = std::time::SystemTime::now() - super::prune::LEFTOVER_AGE * 2;
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(long_ago)
        .unwrap();

    let plan = super::prune::plan(
        &repo,
        &super::prune::Forget::default(),
        MaxUnused::Unlimited,
    )
    .unwrap();
    assert_eq!(plan.leftovers, ["packs/.tmp-killed"]);
    assert_eq!(plan.leftover_bytes, 5000);
    assert!(plan.packs.is_empty() && plan.orphan_packs.is_empty());
    assert!(old.exists(), "planning removes nothing");
    super::prune::execute(&repo, &plan).unwrap();
    assert!(!old.exists());
    assert!(
        recent.exists(),
        "a recent temporary file may belong to a live writer"
    );
    assert_eq!(store.list("").unwrap(), stored, "every object stays");
    // Only temporary files can be removed this way.
    assert!(store.remove_leftovers(&["config".to_string()]).is_err());
    assert!(
        store
            .remove_leftovers(&["packs/../config".to_string()])
            .is_err()
    );
    assert_reads_back(store, &id, "f", &content);
}

#[test]
fn copy_moves_only_missing_objects() {
    let (_, a) = new_repo();
    let (bmem, b) = new_repo();
    let (id1, _) = backup(vec![a.clone()], &[("f", &data(2 << 20, 7))]).unwrap();
    let r1 = copy::copy(&a, &b, |_| {}).unwrap();
    assert!(r1.packs_copied > 0 && r1.snapshots_copied == 1);
    assert_eq!(restore(&b, &id1, "f").unwrap(), data(2 << 20, 7));
    let r2 = copy::copy(&a, &b, |_| {}).unwrap();
    assert_eq!(
        (r2.packs_copied, r2.snapshots_copied, r2.index_files_copied),
        (0, 0, 0)
    );
    let (id2, _) = backup(vec![a.clone()], &[("f", &data(2 << 20, 7)), ("g", b"new")]).unwrap();
    let before = bmem.bytes();
    let r3 = copy::copy(&a, &b, |_| {}).unwrap();
    assert_eq!(r3.snapshots_copied, 1);
    assert!(
        bmem.bytes() - before < 4096,
        "only the new small file moved"
    );
    assert_eq!(restore(&b, &id2, "g").unwrap(), b"new");
    assert!(
        verify::verify(&b, true, |_, _| {})
            .unwrap()
            .problems
            .is_empty()
    );
}

#[test]
fn open_rejects_non_repositories_and_double_init() {
    let mem = Arc::new(MemoryStorage::new());
    assert!(matches!(
        Repo::open(mem.clone()).unwrap_err(),
        RepoError::NotARepository { .. }
    ));
    Repo::init(mem.clone(), small_config()).unwrap();
    assert!(matches!(
        Repo::init(mem.clone(), small_config()).unwrap_err(),
        RepoError::AlreadyInitialized { .. }
    ));
    mem.tamper("config", |b| b.truncate(10));
    assert!(matches!(
        Repo::open(mem).unwrap_err(),
        RepoError::Integrity { .. }
    ));
}

#[test]
fn another_tools_repository_is_named_as_such_not_as_damage_or_as_ours() {
    // restic and kopia keep their settings in an object named `config` too.
    let mem = Arc::new(MemoryStorage::new());
    mem.put("config", b"\x00\x17restic encrypted config")
        .unwrap();
    assert!(matches!(
        Repo::open(mem.clone()).unwrap_err(),
        RepoError::Foreign { .. }
    ));
    assert!(matches!(
        Repo::init(mem, small_config()).unwrap_err(),
        RepoError::Foreign { .. }
    ));
}

/// A dump-like table file: one text row per id, like sysbench's in TSV.
fn rows(n: u32, bump: impl Fn(u32) -> bool) -> Vec<u8> {
    let mut out = Vec::new();
    for id in 1..=n {
        let k = id.wrapping_mul(2_654_435_761) % 1_000_000 + u32::from(bump(id));
        let c: String = (0..11u64)
            .map(|j| {
                let x = u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (j << 40);
                format!("{:011}", x % 99_999_999_999)
            })
            .collect::<Vec<_>>()
            .join("-");
        out.extend_from_slice(format!("{id}\t{k}\t{c}\t{:060}\n", id ^ 0x5a5a).as_bytes());
    }
    out
}

fn backup_after(
    repos: Vec<Arc<Repo>>,
    parent: &str,
    files: &[(&str, &[u8])],
) -> (String, Vec<super::writer::TargetOutcome>) {
    let mut w = MultiWriter::new(repos.clone()).unwrap();
    w.set_parent(repos[0].clone(), &repos[0].snapshot(parent).unwrap());
    for (name, bytes) in files {
        w.add_file(name, 0o644, *bytes, w.stream_chunker()).unwrap();
    }
    let t = template();
    let id = t.id.clone();
    (id, w.commit_snapshot(t).unwrap().outcomes)
}

fn delta_repo() -> (Arc<MemoryStorage>, Arc<Repo>) {
    delta_repo_with(None)
}

fn test_key() -> super::key::RepoKey {
    super::key::RepoKey::from_material(b"a test key of thirty-two bytes or more").unwrap()
}

fn delta_repo_with(key: Option<&super::key::RepoKey>) -> (Arc<MemoryStorage>, Arc<Repo>) {
    let mem = Arc::new(MemoryStorage::new());
    let config = RepoConfig {
        chunker: ChunkerConfig::cdc(256 * 1024),
        pack_size: 1 << 20,
        ..RepoConfig::new()
    };
    let repo = Arc::new(Repo::init_with_key(mem.clone(), config, key).unwrap());
    (mem, repo)
}

fn count_codec(repo: &Repo, codec: super::codec::Codec) -> usize {
    repo.with_index(|idx| {
        idx.entries_by_pack()
            .iter()
            .flat_map(|(_, e)| e)
            .filter(|e| e.codec == codec)
            .count()
    })
    .unwrap()
}

#[test]
fn spread_edits_are_stored_as_small_deltas_with_whole_bases() {
    spread_edits_case(None);
}

#[test]
fn an_encrypted_repository_stores_deltas_and_reads_them_back() {
    spread_edits_case(Some(&test_key()));
}

fn spread_edits_case(key: Option<&super::key::RepoKey>) {
    let (_, repo) = delta_repo_with(key);
    let v1 = rows(40_000, |_| false);
    let v2 = rows(40_000, |id| id % 100 == 0);
    let v3 = rows(40_000, |id| id % 100 == 0 || id % 77 == 0);
    assert!(v1.len() > 6 << 20, "{}", v1.len());
    let (s1, o1) = backup(vec![repo.clone()], &[("t", &v1)]).unwrap();
    let (s2, o2) = backup_after(vec![repo.clone()], &s1, &[("t", &v2)]);
    assert!(
        o2[0].new_bytes * 10 < o1[0].new_bytes,
        "every 100th row changed: {} new bytes of {}",
        o2[0].new_bytes,
        o1[0].new_bytes
    );
    assert!(count_codec(&repo, super::codec::Codec::Delta) > 10);
    // The third version's chunks are deltas too, against the first version's whole chunks.
    let (s3, o3) = backup_after(vec![repo.clone()], &s2, &[("t", &v3)]);
    assert!(o3[0].new_bytes * 5 < o1[0].new_bytes, "{}", o3[0].new_bytes);
    for (id, want) in [(&s1, &v1), (&s2, &v2), (&s3, &v3)] {
        assert!(restore(&repo, id, "t").unwrap() == *want, "snapshot {id}");
    }
    let report = verify::verify(&repo, true, |_, _| {}).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    repo.with_index(|idx| {
        for (_, entries) in idx.entries_by_pack() {
            for e in entries
                .iter()
                .filter(|e| e.codec == super::codec::Codec::Delta)
            {
                let base = repo.delta_base(&e.id).unwrap().unwrap();
                assert_eq!(repo.delta_base(&base).unwrap(), None, "a base is a delta");
            }
        }
    })
    .unwrap();
}

#[test]
fn a_repo_without_the_base_gets_whole_chunks_and_a_damaged_base_is_named() {
    let (mem, a) = delta_repo();
    let (_, b) = delta_repo();
    let v1 = rows(20_000, |_| false);
    let v2 = rows(20_000, |id| id % 100 == 0);
    let (s1, _) = backup(vec![a.clone()], &[("t", &v1)]).unwrap();
    let (s2, outcomes) = backup_after(vec![a.clone(), b.clone()], &s1, &[("t", &v2)]);
    assert!(outcomes.iter().all(|o| o.error.is_none()), "{outcomes:?}");
    assert!(
        outcomes[0].new_bytes * 5 < outcomes[1].new_bytes,
        "{outcomes:?}"
    );
    assert_eq!(count_codec(&b, super::codec::Codec::Delta), 0);
    assert!(restore(&b, &s2, "t").unwrap() == v2);

    // Damage the packs of the first snapshot: the second, made of deltas on them, is named.
    let first_packs: Vec<String> = a
        .with_index(|idx| idx.packs().iter().map(super::pack_key).collect())
        .unwrap();
    let delta_packs: Vec<String> = a
        .with_index(|idx| {
            idx.entries_by_pack()
                .into_iter()
                .filter(|(_, e)| e.iter().any(|e| e.codec == super::codec::Codec::Delta))
                .map(|(p, _)| super::pack_key(&p))
                .collect()
        })
        .unwrap();
    let base_pack = first_packs
        .iter()
        .find(|k| !delta_packs.contains(k))
        .unwrap();
    mem.tamper(base_pack, |b| b[100] ^= 0x40);
    let fresh = Arc::new(Repo::open(mem.clone()).unwrap());
    assert!(matches!(
        restore(&fresh, &s2, "t").unwrap_err(),
        RepoError::Integrity { .. }
    ));
    let report = verify::verify(&fresh, true, |_, _| {}).unwrap();
    let affected: Vec<&String> = report.problems.iter().flat_map(|p| &p.affects).collect();
    assert!(
        affected.iter().any(|a| a.contains(&s2)),
        "{:?}",
        report.problems
    );
}

#[test]
fn prune_keeps_every_blob_a_remaining_snapshot_needs_including_delta_bases() {
    prune_case(None);
}

#[test]
fn an_encrypted_repository_is_pruned_and_reopened_only_with_its_key() {
    let key = test_key();
    let mem = prune_case(Some(&key));
    assert!(matches!(
        Repo::open(mem.clone()),
        Err(RepoError::KeyRequired { .. })
    ));
    let other =
        super::key::RepoKey::from_material(b"another key of thirty-two bytes or more").unwrap();
    assert!(matches!(
        Repo::open_with_key(mem, Some(&other)),
        Err(RepoError::WrongKey { .. })
    ));
}

/// Returns the store, pruned.
fn prune_case(key: Option<&super::key::RepoKey>) -> Arc<MemoryStorage> {
    let (mem, repo) = delta_repo_with(key);
    let v1 = rows(20_000, |_| false);
    let v2 = rows(20_000, |id| id % 100 == 0);
    let only_in_v1 = data(3 << 20, 42);
    let (s1, _) = backup(vec![repo.clone()], &[("t", &v1), ("gone", &only_in_v1)]).unwrap();
    let (s2, _) = backup_after(vec![repo.clone()], &s1, &[("t", &v2)]);
    assert!(count_codec(&repo, super::codec::Codec::Delta) > 0);
    // A pack left by an interrupted write, named by no index.
    mem.put("packs/ab/ab00", b"orphan").unwrap();
    let before = mem.bytes();

    let forget = super::prune::Forget {
        manifests: vec![super::snapshot_key(&s1)],
    };
    let plan = super::prune::plan(&repo, &forget, MaxUnused::Unlimited).unwrap();
    assert!(!plan.packs.is_empty(), "the packs of `gone` are unused");
    assert_eq!(plan.orphan_packs, ["packs/ab/ab00"]);
    assert_eq!(mem.bytes(), before, "planning deletes nothing");
    super::prune::execute(&repo, &plan).unwrap();
    assert!(
        mem.bytes() + (1 << 20) < before,
        "{} of {before}",
        mem.bytes()
    );

    // The second snapshot's deltas still find their bases, stored with the first one.
    let fresh = Arc::new(Repo::open_with_key(mem.clone(), key).unwrap());
    assert!(restore(&fresh, &s2, "t").unwrap() == v2);
    assert!(fresh.snapshot(&s1).is_err());
    let report = verify::verify(&fresh, true, |_, _| {}).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.unindexed_packs, 0);
    // Nothing more to collect.
    let again = super::prune::plan(
        &fresh,
        &super::prune::Forget::default(),
        MaxUnused::Unlimited,
    )
    .unwrap();
    assert!(again.is_empty(), "{again:?}");
    mem
}

#[test]
fn parallel_stream_threads_store_the_same_chunks_in_order() {
    let (_, one) = delta_repo();
    let (_, three) = delta_repo();
    let v1 = rows(30_000, |_| false);
    let v2 = rows(30_000, |id| id % 100 == 0);
    let write = |repo: &Arc<Repo>, threads: usize, parent: Option<&str>, bytes: &[u8]| {
        let mut w = MultiWriter::new(vec![repo.clone()]).unwrap();
        w.set_stream_threads(threads);
        if let Some(p) = parent {
            w.set_parent(repo.clone(), &repo.snapshot(p).unwrap());
        }
        let entry = w.add_file("t", 0o644, bytes, w.stream_chunker()).unwrap();
        let t = template();
        let id = t.id.clone();
        let outcomes = w.commit_snapshot(t).unwrap().outcomes;
        (id, entry, outcomes[0].new_bytes)
    };
    let (_, seq, _) = write(&one, 1, None, &v1);
    let (s1, par, n1) = write(&three, 3, None, &v1);
    assert_eq!(seq, par, "same chunks, same order, same file hash");
    let (s2, _, n2) = write(&three, 3, Some(&s1), &v2);
    assert!(n2 * 10 < n1, "{n2} of {n1}");
    assert!(restore(&three, &s2, "t").unwrap() == v2);
    assert!(
        verify::verify(&three, true, |_, _| {})
            .unwrap()
            .problems
            .is_empty()
    );
}

/// A repository as myvault created them before the hash was a setting: format 1, SHA-256.
fn sha256_repo() -> (Arc<MemoryStorage>, Arc<Repo>) {
    let mem = Arc::new(MemoryStorage::new());
    let config = RepoConfig {
        format: 1,
        hash: super::HashAlg::Sha256,
        ..small_config()
    };
    let repo = Repo::init(mem.clone(), config).unwrap();
    (mem, Arc::new(repo))
}

#[test]
fn each_repository_names_content_with_its_own_hash() {
    let big = data(2 << 20, 11);
    for (hash, (mem, repo)) in [
        (super::HashAlg::Sha256, sha256_repo()),
        (super::HashAlg::Blake3, new_repo()),
    ] {
        // Opened afresh, as a later run would: the hash comes from the stored config.
        let (id, _) = backup(vec![repo.clone()], &[("big", &big)]).unwrap();
        let repo = Arc::new(Repo::open(mem.clone()).unwrap());
        assert_eq!(repo.hash(), hash);
        assert_eq!(restore(&repo, &id, "big").unwrap(), big);
        let report = verify::verify(&repo, true, |_, _| {}).unwrap();
        assert!(report.problems.is_empty(), "{hash}: {:?}", report.problems);

        let snap = repo.snapshot(&id).unwrap();
        let file = &snap.files[0];
        // The file's own check is a CRC of its content whatever the repository's hash.
        let mut check = super::manifest::ContentCheck::crc64();
        check.update(&big);
        assert_eq!(file.digest, check.finish());
        let ids = repo.chunk_ids(&file.refs).unwrap();
        let first = repo.read_blob(&ids[0]).unwrap();
        assert_eq!(
            hash.id(&first),
            ids[0],
            "{hash}: a chunk is named by its hash"
        );
        for pack in mem.list("packs/").unwrap() {
            let name = pack.key.rsplit('/').next().and_then(super::Id::parse);
            assert_eq!(name, Some(hash.id(&mem.get(&pack.key).unwrap())));
        }
        // The manifest says what its file checks are.
        let text = String::from_utf8(mem.get(&super::snapshot_key(&id)).unwrap()).unwrap();
        assert!(text.contains("\"crc64\": \""), "{text}");
    }
}

#[test]
fn repositories_of_different_hashes_are_not_mixed() {
    let (_, old) = sha256_repo();
    let (_, new) = new_repo();
    let err = backup(vec![old.clone(), new.clone()], &[("f", b"x")]).unwrap_err();
    assert!(
        err.to_string().contains("sha256") && err.to_string().contains("blake3"),
        "{err}"
    );
    assert!(old.snapshots().unwrap().is_empty() && new.snapshots().unwrap().is_empty());
    backup(vec![old.clone()], &[("f", &data(1 << 20, 3))]).unwrap();
    let err = copy::copy(&old, &new, |_| {}).unwrap_err();
    assert!(err.to_string().contains("same hash"), "{err}");
    assert!(new.snapshots().unwrap().is_empty());
}

#[test]
fn a_damaged_file_digest_is_caught_on_restore() {
    let (mem, repo) = new_repo();
    let content = data(1 << 20, 9);
    let (id, _) = backup(vec![repo.clone()], &[("f", &content)]).unwrap();
    // Rewrite the manifest with other (validly enveloped) digests: the chunks still match
    // their ids, so only the whole-file check can notice.
    let with_digest = |digest| {
        let mut snap = repo.snapshot(&id).unwrap();
        snap.files[0].digest = digest;
        mem.put(
            &super::snapshot_key(&id),
            &super::manifest::encode("snapshot", &snap),
        )
        .unwrap();
    };
    use super::manifest::{ContentCheck, ContentDigest};
    let blake3 = super::HashAlg::Blake3;
    let mut wrong_crc = ContentCheck::crc64();
    wrong_crc.update(b"x");
    for wrong in [
        wrong_crc.finish(),
        ContentDigest::new(blake3, super::Id::sha256(b"x")),
    ] {
        with_digest(wrong);
        let err = restore(&repo, &id, "f").unwrap_err();
        assert!(err.to_string().contains("digest"), "{err}");
    }
    // Files written before the CRC check carry a hash of their content: still checked.
    with_digest(ContentDigest::new(blake3, blake3.id(&content)));
    assert_eq!(restore(&repo, &id, "f").unwrap(), content);
}

/// Loading the index grew its map by doubling, so at its peak the old and the new table were
/// both alive: 175 bytes per entry at 1 M entries instead of about 110 (examples/index_scale).
/// Here one entry per pack makes the files' bytes promise more entries than a doubling map
/// would have room for: the load must have sized the map for them before the first insert.
#[test]
fn loading_the_index_sizes_its_map_once_instead_of_regrowing_it() {
    use super::codec::Codec;
    use super::id::Id;
    use super::index;
    use super::pack::PackEntry;
    let (store, repo) = new_repo();
    let mut file_bytes = 0u64;
    let mut entries = 0usize;
    for file in 0..4u32 {
        let packs: Vec<(Id, Vec<PackEntry>)> = (0..5_000u32)
            .map(|i| {
                let n = file * 5_000 + i;
                let blob = PackEntry {
                    id: Id::sha256(&n.to_le_bytes()),
                    codec: Codec::Zstd,
                    offset: 0,
                    raw_len: 10,
                    stored_len: 10,
                };
                (Id::sha256(format!("pack {n}").as_bytes()), vec![blob])
            })
            .collect();
        entries += packs.len();
        let data = index::encode_file(&packs);
        file_bytes += data.len() as u64;
        store
            .put(&super::index_key(&Id::sha256(&data)), &data)
            .unwrap();
    }
    let (len, capacity) = repo.with_index(|idx| (idx.len(), idx.capacity())).unwrap();
    assert_eq!(len, entries);
    let promised = index::entries_at_most(file_bytes);
    assert!(
        promised > entries * 3 / 2,
        "the test needs files that promise more: {promised}"
    );
    assert!(
        capacity >= promised,
        "the map was grown entry by entry (capacity {capacity}), not sized for the {promised} entries the files can hold"
    );
}
