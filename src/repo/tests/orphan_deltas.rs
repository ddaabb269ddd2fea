//! Issue 18, item 1: prune deleted the base of a delta blob that no kept snapshot needed but
//! that shared a kept pack, left the delta in the index, and a later backup of the same
//! content deduplicated against it: "ok, 0 B new", and a snapshot that does not restore.

use std::sync::Arc;

use super::super::codec::Codec;
use super::super::prune::{self, Forget};
use super::super::{Repo, index, index_key, snapshot_key, verify};
use super::*;
use crate::storage::Storage;

/// The table of the issue: 1,500 rows.
fn table(bump: impl Fn(u32) -> bool) -> Vec<u8> {
    rows(1_500, bump)
}

/// v1, then v2 (one row changed: a delta against v1) beside a file v3 keeps, then v3 (every
/// row new) with that file: v2's pack stays (it holds the shared file) while v1's goes.
/// Returns the store, the repository, and the ids of v1, v2, v3.
fn v1_v2_v3() -> (Arc<MemoryStorage>, Arc<Repo>, [String; 3]) {
    let (mem, repo) = new_repo();
    let v1 = table(|_| false);
    let v2 = table(|id| id == 700);
    let v3 = rows_from(50_000, 1_500);
    let shared = data(40_000, 77);
    let (s1, _) = backup(vec![repo.clone()], &[("t", &v1)]).unwrap();
    let (s2, _) = backup_after(vec![repo.clone()], &s1, &[("t", &v2), ("shared", &shared)]);
    let (s3, _) = backup_after(vec![repo.clone()], &s2, &[("t", &v3), ("shared", &shared)]);
    assert!(
        count_codec(&repo, Codec::Delta) > 0,
        "v2's changed chunk is a delta against v1"
    );
    (mem, repo, [s1, s2, s3])
}

/// Rows with ids `first..first + n`: none shares a line with [`table`]'s.
fn rows_from(first: u32, n: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for id in first..first + n {
        out.extend_from_slice(format!("{id}\t{}\tnew row {id:08}\n", id * 7).as_bytes());
    }
    out
}

fn keep_last_one(repo: &Repo, forgotten: &[&String]) {
    let forget = Forget {
        manifests: forgotten.iter().map(|s| snapshot_key(s)).collect(),
    };
    let plan = prune::plan(repo, &forget, MaxUnused::Unlimited).unwrap();
    prune::execute(repo, &plan).unwrap();
}

/// Every delta the index names has its base indexed, stored whole.
fn assert_every_indexed_delta_has_its_base(repo: &Repo) {
    let by_pack = repo.with_index(|idx| idx.entries_by_pack()).unwrap();
    for e in by_pack.iter().flat_map(|(_, e)| e) {
        if e.codec == Codec::Delta {
            let base = repo.delta_base(&e.id).unwrap().unwrap();
            let loc = repo.blob(&base).unwrap();
            assert!(
                loc.is_some_and(|l| l.codec != Codec::Delta),
                "delta {} names base {}, which is not indexed whole",
                e.id.short(),
                base.short()
            );
        }
    }
}

#[test]
fn prune_leaves_no_delta_without_its_base_and_a_later_backup_of_its_content_restores() {
    let (mem, repo, [s1, s2, _]) = v1_v2_v3();
    keep_last_one(&repo, &[&s1, &s2]);
    let fresh = Arc::new(Repo::open(mem.clone()).unwrap());
    assert_every_indexed_delta_has_its_base(&fresh);
    let report = verify::verify(&fresh, true, |_, _| {}).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);

    // The table put back to exactly v2 and backed up again.
    let v2 = table(|id| id == 700);
    let (again, outcomes) = backup(vec![fresh.clone()], &[("t", &v2)]).unwrap();
    assert!(outcomes[0].error.is_none(), "{outcomes:?}");
    let reopened = Repo::open(mem.clone()).unwrap();
    assert!(restore(&reopened, &again, "t").unwrap() == v2);
}

/// The repository as the old prune left it: v1's pack deleted, v2's delta still indexed.
fn damaged_as_the_old_prune_left_it() -> (Arc<MemoryStorage>, [String; 3]) {
    let (mem, ids, _) = damaged_with_v2_manifest();
    (mem, ids)
}

/// [`damaged_as_the_old_prune_left_it`], and the manifest of v2 it deleted.
fn damaged_with_v2_manifest() -> (Arc<MemoryStorage>, [String; 3], Vec<u8>) {
    let (mem, repo, [s1, s2, s3]) = v1_v2_v3();
    let snap1 = repo.snapshot(&s1).unwrap();
    let v1_ids = repo.chunk_ids(&snap1.files[0].refs).unwrap();
    let by_pack = repo.with_index(|idx| idx.entries_by_pack()).unwrap();
    let (gone, kept): (Vec<_>, Vec<_>) = by_pack
        .into_iter()
        .partition(|(_, e)| e.iter().all(|e| v1_ids.contains(&e.id)));
    assert!(!gone.is_empty());
    let v2_manifest = mem.get(&snapshot_key(&s2)).unwrap();
    for key in [snapshot_key(&s1), snapshot_key(&s2)] {
        mem.delete(&key).unwrap();
    }
    let file = index::encode_file(&kept);
    mem.put(&index_key(&super::super::Id::sha256(&file)), &file)
        .unwrap();
    for obj in mem.list("index/").unwrap() {
        if obj.key != index_key(&super::super::Id::sha256(&file)) {
            mem.delete(&obj.key).unwrap();
        }
    }
    for (pack, _) in &gone {
        mem.delete(&super::super::pack_key(pack)).unwrap();
    }
    // The mark such a prune wrote: 32 hex digits.
    mem.put(
        super::super::PRUNED_KEY,
        b"0123456789abcdef0123456789abcdef",
    )
    .unwrap();
    (mem, [s1, s2, s3], v2_manifest)
}

#[test]
fn an_orphaned_delta_is_named_by_verify_and_never_reused_by_a_backup() {
    let (mem, [_, _, s3]) = damaged_as_the_old_prune_left_it();
    let repo = Arc::new(Repo::open(mem.clone()).unwrap());
    let report = verify::verify(&repo, true, |_, _| {}).unwrap();
    let orphan = report
        .problems
        .iter()
        .find(|p| p.detail.contains("base"))
        .unwrap_or_else(|| panic!("the orphan is not named: {:?}", report.problems));
    assert!(orphan.object.contains("chunk"), "{orphan:?}");
    assert!(
        orphan.affects.is_empty(),
        "no snapshot needs it: {orphan:?}"
    );
    assert!(report.damaged_snapshots.is_empty(), "{report:?}");
    // Found without reading the packs too: from the delta's first bytes.
    let quick = verify::verify(&repo, false, |_, _| {}).unwrap();
    assert!(
        quick.problems.iter().any(|p| p.object == orphan.object),
        "{:?}",
        quick.problems
    );

    // A backup of v2 again must store what the orphan cannot give back.
    let v2 = table(|id| id == 700);
    let (again, outcomes) = backup(vec![repo.clone()], &[("t", &v2)]).unwrap();
    assert!(outcomes[0].new_bytes > 0, "{outcomes:?}");
    let reopened = Arc::new(Repo::open(mem.clone()).unwrap());
    assert!(restore(&reopened, &again, "t").unwrap() == v2);
    assert!(restore(&reopened, &s3, "shared").is_ok());
    let report = verify::verify(&reopened, true, |_, _| {}).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[test]
fn prune_drops_an_orphaned_delta_from_the_index() {
    let (mem, [_, _, s3]) = damaged_as_the_old_prune_left_it();
    let repo = Arc::new(Repo::open(mem.clone()).unwrap());
    let plan = prune::plan(&repo, &Forget::default(), MaxUnused::Unlimited).unwrap();
    assert!(plan.dropped_deltas > 0, "{plan:?}");
    prune::execute(&repo, &plan).unwrap();
    let healed = Arc::new(Repo::open(mem.clone()).unwrap());
    assert_every_indexed_delta_has_its_base(&healed);
    let report = verify::verify(&healed, true, |_, _| {}).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(restore(&healed, &s3, "shared").is_ok());
    // Healed once: the next prune has nothing to do.
    assert!(
        prune::plan(&healed, &Forget::default(), MaxUnused::Unlimited)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn copy_never_indexes_a_delta_whose_base_the_destination_lacks() {
    let (mem, [_, s2, s3], v2_manifest) = damaged_with_v2_manifest();
    // A snapshot that needs the orphan: what a backup deduplicating against it made.
    mem.put(&snapshot_key(&s2), &v2_manifest).unwrap();
    let from = Repo::open(mem.clone()).unwrap();
    let (to_mem, to) = new_repo();
    let report = super::super::copy::copy(&from, &to, |_| {}).unwrap();
    let fresh = Arc::new(Repo::open(to_mem.clone()).unwrap());
    let verified = verify::verify(&fresh, true, |_, _| {}).unwrap();
    assert!(verified.problems.is_empty(), "{:?}", verified.problems);
    assert_every_indexed_delta_has_its_base(&fresh);
    assert!(report.deltas_without_base > 0, "{report:?}");
    assert_eq!(report.snapshots_copied, 1, "{report:?}");
    // v2 needs the orphan (and v1's chunks, gone with their pack): not copied, and said so.
    assert!(
        report.manifests_skipped.len() == 1 && report.manifests_skipped[0].contains(&s2),
        "{report:?}"
    );
    assert!(restore(&fresh, &s3, "t").unwrap() == rows_from(50_000, 1_500));
    // Nothing left to do: a second run copies nothing and skips the same manifest.
    let again = super::super::copy::copy(&from, &fresh, |_| {}).unwrap();
    assert_eq!(
        (
            again.packs_copied,
            again.index_files_copied,
            again.snapshots_copied
        ),
        (0, 0, 0),
        "{again:?}"
    );
}
