//! A delta's base is a whole blob in the repository that stores the delta (invariant 6). The
//! same chunk can be whole in one repository and a delta in another (a repository that missed
//! a backup gets later chunks as deltas against what it has), so "holds the base" must mean
//! "holds it whole" in the repository written to, not in the one the parent was read from.

use std::sync::Arc;

use super::super::codec::Codec;
use super::super::verify;
use super::*;

/// Opened afresh, the store gives snapshot `id`'s file `f` back as `want`, and verifies clean.
fn restores_and_verifies(store: Arc<MemoryStorage>, id: &str, want: &[u8]) {
    let fresh = Arc::new(Repo::open(store).unwrap());
    assert!(restore(&fresh, id, "f").unwrap() == want);
    let report = verify::verify(&fresh, true, |_, _| {}).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// Two repositories where file `f` of the last snapshot (returned, with its id) is X, whole
/// in A and stored as deltas against an older version Z in B, which missed X's first backup.
/// Also returns W, an edit of X.
struct WholeHereDeltaThere {
    a: Arc<Repo>,
    b: Arc<Repo>,
    b_mem: Arc<MemoryStorage>,
    x_snapshot: String,
    w: Vec<u8>,
}

fn whole_here_delta_there() -> WholeHereDeltaThere {
    let (_, a) = new_repo();
    let (b_mem, b) = new_repo();
    let x = rows(1_500, |_| false);
    let z = rows(1_500, |id| id % 50 == 0);
    // X reaches only A (B was down), whole.
    backup(vec![a.clone()], &[("f", &x)]).unwrap();
    // Z reaches both, whole: no parent.
    let (s2, _) = backup(vec![a.clone(), b.clone()], &[("f", &z)]).unwrap();
    // X again: A has it whole; B gets it as deltas against Z.
    let (x_snapshot, _) = backup_after(vec![a.clone(), b.clone()], &s2, &[("f", &x)]);
    assert!(
        count_codec(&b, Codec::Delta) > 0,
        "X is stored as deltas in B"
    );
    WholeHereDeltaThere {
        a,
        b,
        b_mem,
        x_snapshot,
        w: rows(1_500, |id| id % 60 == 0),
    }
}

#[test]
fn a_delta_is_written_only_against_a_base_its_repository_holds_whole() {
    let t = whole_here_delta_there();
    // W: deltas against X's whole chunks in A; in B, X's chunks are deltas.
    let both = vec![t.a.clone(), t.b.clone()];
    let (s4, outcomes) = backup_after(both, &t.x_snapshot, &[("f", &t.w)]);
    assert!(outcomes.iter().all(|o| o.error.is_none()), "{outcomes:?}");
    restores_and_verifies(t.b_mem, &s4, &t.w);
}

/// Copy met the same case: the source holds a chunk whole and a delta on it; the destination
/// holds that chunk only as a delta, so the copied delta had no whole base there and the
/// snapshot needing it was not copied. The whole copy is indexed in the destination too (the
/// index prefers it), and the delta with it. Found by the repository's model test.
#[test]
fn copy_indexes_a_whole_base_the_destination_holds_only_as_a_delta() {
    let t = whole_here_delta_there();
    // W into A only: deltas against X's whole chunks.
    let (s4, _) = backup_after(vec![t.a.clone()], &t.x_snapshot, &[("f", &t.w)]);
    let report = super::super::copy::copy(&t.a, &t.b, |_| {}).unwrap();
    assert!(report.manifests_skipped.is_empty(), "{report:?}");
    assert_eq!(report.deltas_without_base, 0, "{report:?}");
    restores_and_verifies(t.b_mem, &s4, &t.w);
}

/// A chunk the parent snapshot has (read from the first repository) and another repository
/// lacks (it missed the parent's backup) was stored there as a delta against itself, which
/// nothing can read: the claim the writer had just made counted as "holds the base".
/// Found by the repository's model test.
#[test]
fn a_chunk_a_repository_lacks_is_never_stored_as_a_delta_on_itself() {
    let (_, a) = new_repo();
    let (b_mem, b) = new_repo();
    let v1 = rows(1_500, |_| false);
    // B misses the first backup (down, or a partial success).
    let (s1, _) = backup(vec![a.clone()], &[("f", &v1)]).unwrap();
    // One row changed: every other chunk is the parent's, which B does not have.
    let v2 = rows(1_500, |id| id == 3);
    let (s2, outcomes) = backup_after(vec![a.clone(), b.clone()], &s1, &[("f", &v2)]);
    assert!(outcomes.iter().all(|o| o.error.is_none()), "{outcomes:?}");
    restores_and_verifies(b_mem, &s2, &v2);
}
