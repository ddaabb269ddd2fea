//! Repacking in prune (issue 20 item 4): the needed blobs of partly used packs move to new
//! packs and the old ones go, the plan says exactly what the run frees, and a prune killed at
//! any storage operation leaves a repository that verifies and restores, which the next prune
//! finishes.

use std::sync::Arc;

use super::super::codec::Codec;
use super::super::prune::{self, Forget, GcPlan};
use super::super::{Repo, snapshot_key, verify};
use super::*;
use crate::storage::Storage;
use crate::storage::crashing::{Clock, CrashingStorage};

/// Pack bytes in the store.
fn pack_bytes(store: &dyn Storage) -> u64 {
    store.list("packs/").unwrap().iter().map(|o| o.size).sum()
}

/// A file of `n` 1 KiB lines (random, so incompressible enough that chunks stay distinct),
/// with the lines `changed` picks rewritten.
fn lines(n: usize, changed: impl Fn(usize) -> bool, version: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let seed = if changed(i) {
            i as u32 * 7 + version
        } else {
            i as u32
        };
        out.extend(data(1023, seed + 1));
        out.push(b'\n');
    }
    out
}

/// Four snapshots, each after ~3% of the lines changed, in small packs (64 KiB, 16 KiB
/// chunks). Returns the ids and contents.
fn history(repo: &Arc<Repo>) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for version in 0..4u32 {
        let content = lines(600, |i| version > 0 && i % 37 == version as usize, version);
        // No parent: changed chunks are stored whole, and their older versions become
        // garbage inside packs that stay (with a parent they would be delta bases).
        let w = MultiWriter::with_pack_size(vec![repo.clone()], 64 << 10).unwrap();
        w.add_file("t", 0o644, &content[..], w.stream_chunker())
            .unwrap();
        let t = template();
        let id = t.id.clone();
        w.commit_snapshot(t).unwrap();
        out.push((id, content));
    }
    out
}

fn forget_all_but_last(snaps: &[(String, Vec<u8>)]) -> Forget {
    Forget {
        manifests: snaps[..snaps.len() - 1]
            .iter()
            .map(|(id, _)| snapshot_key(id))
            .collect(),
    }
}

fn assert_sound(store: Arc<dyn Storage>, snaps: &[(String, Vec<u8>)], what: &str) -> Repo {
    let repo = Repo::open(store).unwrap();
    let report = verify::verify(&repo, true, |_, _| {}).unwrap();
    assert!(report.problems.is_empty(), "{what}: {:?}", report.problems);
    let (last, content) = snaps.last().unwrap();
    assert!(
        restore(&repo, last, "t").unwrap() == *content,
        "{what}: the kept snapshot restores to other bytes"
    );
    repo
}

#[test]
fn prune_repacks_partly_used_packs_and_frees_exactly_what_it_planned() {
    let (mem, repo) = new_repo();
    let snaps = history(&repo);
    let forget = forget_all_but_last(&snaps);

    let unlimited = prune::plan(&repo, &forget, MaxUnused::Unlimited).unwrap();
    assert!(unlimited.repack.is_empty());
    assert!(
        unlimited.partly_used_packs > 0,
        "a history that changes a few lines leaves partly used packs"
    );
    let plan = prune::plan(&repo, &forget, MaxUnused::Percent(0.0)).unwrap();
    assert!(!plan.repack.packs.is_empty(), "{plan:?}");
    assert_eq!(plan.repack.unused_bytes_after, 0);
    assert_eq!(plan.partly_used_packs, 0);
    assert!(plan.repack.freed_bytes > 0);
    // 5% repacks some of what 0% does, never more.
    let five = prune::plan(&repo, &forget, MaxUnused::Percent(5.0)).unwrap();
    assert!(five.repack.packs.len() <= plan.repack.packs.len());
    assert!(five.repack.unused_bytes_after <= five.repack.unused_limit);

    let before = pack_bytes(mem.as_ref());
    prune::execute(&repo, &plan).unwrap();
    let after = pack_bytes(mem.as_ref());
    // The run frees what the plan said: the unused packs, orphans, and the repack's gain.
    assert_eq!(before - after, plan.freed_bytes());
    assert_eq!(
        plan.freed_bytes(),
        plan.pack_bytes + plan.orphan_bytes + plan.repack.freed_bytes
    );
    // And beats a prune without repacking by at least the unused bytes that one kept (and
    // the headers of the packs merged).
    assert!(
        after + unlimited.unused_bytes_kept
            <= before - unlimited.pack_bytes - unlimited.orphan_bytes,
        "repacking reclaimed every unused byte"
    );
    let fresh = assert_sound(mem.clone(), &snaps, "after the repack");
    let again = prune::plan(&fresh, &Forget::default(), MaxUnused::Percent(0.0)).unwrap();
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(
        mem.list("index/").unwrap().len(),
        1,
        "one index file names what stays"
    );
}

#[test]
fn repack_moves_delta_blobs_with_their_bases_in_an_encrypted_repository() {
    let key = test_key();
    let (mem, repo) = delta_repo_with(Some(&key));
    let v1 = rows(20_000, |_| false);
    let v2 = rows(20_000, |id| id % 100 == 0);
    let v3 = rows(20_000, |id| id % 100 == 1);
    let (s1, _) = backup(vec![repo.clone()], &[("t", &v1), ("u", &data(1 << 20, 9))]).unwrap();
    let (s2, _) = backup_after(vec![repo.clone()], &s1, &[("t", &v2)]);
    let (s3, _) = backup_after(vec![repo.clone()], &s2, &[("t", &v3)]);
    assert!(count_codec(&repo, Codec::Delta) > 0);
    // The first snapshot's bases stay (both later ones have deltas on them); its other
    // file goes, leaving the pack where the two met partly used.
    let forget = Forget {
        manifests: vec![snapshot_key(&s1)],
    };
    let plan = prune::plan(&repo, &forget, MaxUnused::Percent(0.0)).unwrap();
    assert!(!plan.repack.packs.is_empty(), "{plan:?}");
    prune::execute(&repo, &plan).unwrap();
    let fresh = Repo::open_with_key(mem.clone(), Some(&key)).unwrap();
    let report = verify::verify(&fresh, true, |_, _| {}).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(restore(&fresh, &s2, "t").unwrap() == v2);
    assert!(restore(&fresh, &s3, "t").unwrap() == v3);
    assert!(count_codec(&fresh, Codec::Delta) > 0, "deltas stay deltas");
}

/// Found by the next test: a prune killed after its repack wrote a new pack, before its index
/// was written, leaves the pack an orphan; the next prune's repack writes the same bytes
/// under the same name, and deleted it with the orphans, leaving the new index naming a
/// missing pack (exit 8, the kept snapshot lost). A pack the repack writes is never deleted.
#[test]
fn a_repack_that_writes_a_pack_again_under_an_orphans_name_keeps_it() {
    let (mem, repo) = new_repo();
    let snaps = history(&repo);
    let forget = forget_all_but_last(&snaps);
    let plan = prune::plan(&repo, &forget, MaxUnused::Percent(0.0)).unwrap();
    // The killed run: its new packs written, nothing else.
    let written = super::super::repack::write(&repo, &plan.repack).unwrap();
    let fresh = Arc::new(Repo::open(mem.clone()).unwrap());
    let plan = prune::plan(&fresh, &forget, MaxUnused::Percent(0.0)).unwrap();
    for (id, _) in &written {
        assert!(plan.orphan_packs.contains(&super::super::pack_key(id)));
    }
    prune::execute(&fresh, &plan).unwrap();
    assert_sound(mem.clone(), &snaps, "after the second prune");
}

/// Every storage operation of a repacking prune, killed (the interrupted write applied or
/// not): the repository verifies and restores the kept snapshot, and the forgotten ones that
/// are still listed, and a prune run again leaves nothing more to do.
#[test]
fn a_repacking_prune_killed_at_any_operation_is_finished_by_the_next() {
    let mut op = 0;
    loop {
        let mem = Arc::new(MemoryStorage::new());
        let repo = Arc::new(Repo::init(mem.clone(), small_config()).unwrap());
        let snaps = history(&repo);
        let forget = forget_all_but_last(&snaps);
        let clock = Clock::new(op + 1);
        let view: Arc<dyn Storage> = Arc::new(CrashingStorage::new(mem.clone(), clock.clone()));
        let killed = Repo::open(view).unwrap();
        clock.arm(op);
        let result = prune::plan(&killed, &forget, MaxUnused::Percent(0.0))
            .and_then(|plan| prune::execute(&killed, &plan).map(|()| plan));
        if !clock.killed() {
            let plan: GcPlan = result.unwrap();
            assert!(!plan.repack.packs.is_empty());
            break;
        }
        assert!(result.is_err(), "killed at operation {op} but it succeeded");
        let what = format!("killed at operation {op}");
        let fresh = assert_sound(mem.clone(), &snaps, &what);
        for (id, content) in &snaps {
            if fresh.snapshot(id).is_ok() {
                assert!(restore(&fresh, id, "t").unwrap() == *content, "{what}");
            }
        }
        let plan = prune::plan(&fresh, &forget, MaxUnused::Percent(0.0)).unwrap();
        prune::execute(&fresh, &plan).unwrap();
        let done = assert_sound(mem.clone(), &snaps, &what);
        let again = prune::plan(&done, &Forget::default(), MaxUnused::Percent(0.0)).unwrap();
        assert!(again.is_empty(), "{what}: {again:?}");
        op += 1;
    }
    assert!(op > 20, "only {op} operations");
}
