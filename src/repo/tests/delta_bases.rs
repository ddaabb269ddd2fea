//! A delta's base is a whole blob in the repository that stores the delta (invariant 6). The
//! same chunk can be whole in one repository and a delta in another (a repository that missed
//! a backup gets later chunks as deltas against what it has), so "holds the base" must mean
//! "holds it whole" in the repository written to, not in the one the parent was read from.

use std::sync::Arc;

use super::super::codec::Codec;
use super::super::verify;
use super::*;

#[test]
fn a_delta_is_written_only_against_a_base_its_repository_holds_whole() {
    let (_, a) = new_repo();
    let (b_mem, b) = new_repo();
    let x = rows(1_500, |_| false);
    let z = rows(1_500, |id| id % 50 == 0);
    let w = rows(1_500, |id| id % 60 == 0);
    // X reaches only A (B was down), whole.
    backup(vec![a.clone()], &[("f", &x)]).unwrap();
    // Z reaches both, whole: no parent.
    let (s2, _) = backup(vec![a.clone(), b.clone()], &[("f", &z)]).unwrap();
    // X again: A has it whole; B gets it as deltas against Z.
    let (s3, _) = backup_after(vec![a.clone(), b.clone()], &s2, &[("f", &x)]);
    assert!(
        count_codec(&b, Codec::Delta) > 0,
        "X is stored as deltas in B"
    );
    // W, an edit of X: deltas against X's whole chunks in A; in B, X's chunks are deltas.
    let (s4, outcomes) = backup_after(vec![a.clone(), b.clone()], &s3, &[("f", &w)]);
    assert!(outcomes.iter().all(|o| o.error.is_none()), "{outcomes:?}");
    let fresh = Arc::new(Repo::open(b_mem.clone()).unwrap());
    assert!(restore(&fresh, &s4, "f").unwrap() == w);
    let report = verify::verify(&fresh, true, |_, _| {}).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}
