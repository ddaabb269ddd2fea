use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, TimeZone, Utc};

use super::*;
use crate::test_rng::XorShift64;

/// Thursday 2026-01-01 00:00:00 UTC plus `s` seconds.
fn at(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_767_225_600 + s, 0).single().unwrap()
}

fn snap(id: &str, time: DateTime<Utc>, server: &str) -> SnapshotManifest {
    SnapshotManifest::sample(id, time, server)
}

fn ids(kept: &BTreeMap<String, BTreeSet<KeepReason>>) -> Vec<&str> {
    kept.keys().map(String::as_str).collect()
}

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

#[test]
fn keep_daily_keeps_the_newest_snapshot_of_each_of_the_last_n_days_that_have_one() {
    // Three snapshots a day (02:00, 10:00, 18:00) for ten days, and day 6 missed entirely.
    let mut all = Vec::new();
    for day in 0..10 {
        if day == 6 {
            continue;
        }
        for h in [2, 10, 18] {
            all.push(snap(
                &format!("d{day}h{h:02}"),
                at(day * DAY + h * HOUR),
                "a",
            ));
        }
    }
    let now = at(10 * DAY);
    let policy = RetentionPolicy {
        keep_daily: Some(4),
        ..Default::default()
    };
    let kept = keep(&all, &policy, now);
    // Days 9, 8, 7 and (6 has none) 5: the 18:00 snapshot of each.
    assert_eq!(ids(&kept), ["d5h18", "d7h18", "d8h18", "d9h18"]);
    assert_eq!(
        kept["d9h18"],
        [KeepReason::Newest, KeepReason::Daily].into()
    );
    assert_eq!(kept["d5h18"], [KeepReason::Daily].into());
}

#[test]
fn weekly_buckets_are_iso_weeks_in_utc_and_reasons_accumulate() {
    // 2026-01-01 is a Thursday: days 0-3 are ISO week 1, day 4 (Monday 5 Jan) starts week 2.
    let all = vec![
        snap("thu", at(HOUR), "a"),
        snap("sun", at(3 * DAY + 23 * HOUR), "a"),
        snap("mon", at(4 * DAY + HOUR), "a"),
        snap("tue", at(5 * DAY + HOUR), "a"),
    ];
    let policy = RetentionPolicy {
        keep_weekly: Some(2),
        keep_monthly: Some(1),
        keep_last: Some(1),
        ..Default::default()
    };
    let kept = keep(&all, &policy, at(6 * DAY));
    assert_eq!(ids(&kept), ["sun", "tue"]);
    assert_eq!(
        kept["tue"],
        [
            KeepReason::Newest,
            KeepReason::Last,
            KeepReason::Weekly,
            KeepReason::Monthly
        ]
        .into()
    );
    assert_eq!(kept["sun"], [KeepReason::Weekly].into());
}

#[test]
fn the_pitr_window_keeps_the_snapshot_its_start_restores_from_and_every_later_one() {
    let now = at(30 * DAY);
    let all = vec![
        snap("old", now - Duration::days(10), "a"),
        snap("anchor", now - Duration::days(5), "a"),
        snap("in1", now - Duration::days(3), "a"),
        snap("in2", now - Duration::hours(1), "a"),
    ];
    let window = |d| RetentionPolicy {
        keep_pitr_window: Some(Duration::days(d)),
        ..Default::default()
    };
    let kept = keep(&all, &window(4), now);
    assert_eq!(ids(&kept), ["anchor", "in1", "in2"]);
    assert!(kept.values().all(|r| r.contains(&KeepReason::PitrWindow)));
    // A snapshot exactly at the window's start is the one a restore to that instant uses.
    assert_eq!(ids(&keep(&all, &window(5), now)), ["anchor", "in1", "in2"]);
    // A window longer than the history keeps all of it.
    assert_eq!(keep(&all, &window(60), now).len(), 4);
}

#[test]
fn each_origin_is_retained_on_its_own() {
    let all = vec![
        snap("a1", at(0), "a"),
        snap("a2", at(DAY), "a"),
        snap("b1", at(2 * DAY), "b"),
    ];
    let policy = RetentionPolicy {
        keep_daily: Some(1),
        ..Default::default()
    };
    assert_eq!(ids(&keep(&all, &policy, at(3 * DAY))), ["a2", "b1"]);
}

#[test]
fn counts_of_zero_are_refused_and_an_empty_policy_is_empty() {
    assert!(RetentionPolicy::default().is_empty());
    let zero = RetentionPolicy {
        keep_weekly: Some(0),
        ..Default::default()
    };
    assert!(zero.check().unwrap_err().contains("--keep-weekly"));
    let p = RetentionPolicy {
        keep_daily: Some(7),
        keep_pitr_window: Some(Duration::hours(36)),
        ..Default::default()
    };
    assert_eq!(p.check(), Ok(()));
    assert_eq!(p.describe(), "keep-daily 7, keep-pitr-window 36h");
}

/// The bucket rule restated without the running "last bucket" of `keep_group`: group by
/// bucket, take each bucket's newest, keep the `n` newest buckets.
fn reference_calendar(
    snapshots: &[SnapshotManifest],
    bucket: fn(DateTime<Utc>) -> i64,
    n: u32,
) -> BTreeSet<String> {
    let mut newest: BTreeMap<i64, &SnapshotManifest> = BTreeMap::new();
    for s in snapshots {
        let e = newest.entry(bucket(s.time)).or_insert(s);
        if (s.time, &s.id) > (e.time, &e.id) {
            *e = s;
        }
    }
    newest
        .values()
        .rev()
        .take(n as usize)
        .map(|s| s.id.clone())
        .collect()
}

#[test]
fn property_calendar_buckets_and_the_pitr_window_hold_for_random_histories() {
    let mut rng = XorShift64::new(0x5eed_2026);
    for round in 0..300 {
        let count = 1 + (rng.next_u64() % 60) as usize;
        // Up to two years, clustered so that buckets hold several snapshots.
        let spread = [HOUR * 6, DAY * 3, DAY * 40, DAY * 730][round % 4];
        let mut all: Vec<SnapshotManifest> = (0..count)
            .map(|i| {
                snap(
                    &format!("s{i:03}"),
                    at((rng.next_u64() as i64).rem_euclid(spread)),
                    "a",
                )
            })
            .collect();
        if round % 5 == 0 {
            // Equal times happen (a clock's resolution): the rules must still agree.
            let t = all[0].time;
            all.iter_mut().take(3).for_each(|s| s.time = t);
        }
        let now = at(spread + HOUR);
        let newest = all
            .iter()
            .max_by(|a, b| a.time.cmp(&b.time).then(a.id.cmp(&b.id)))
            .unwrap()
            .id
            .clone();
        for (reason, bucket) in CALENDAR {
            let n = 1 + (rng.next_u64() % 8) as u32;
            let mut policy = RetentionPolicy::default();
            match reason {
                KeepReason::Hourly => policy.keep_hourly = Some(n),
                KeepReason::Daily => policy.keep_daily = Some(n),
                KeepReason::Weekly => policy.keep_weekly = Some(n),
                KeepReason::Monthly => policy.keep_monthly = Some(n),
                _ => policy.keep_yearly = Some(n),
            }
            let kept = keep(&all, &policy, now);
            let by_reason: BTreeSet<String> = kept
                .iter()
                .filter(|(_, r)| r.contains(&reason))
                .map(|(id, _)| id.clone())
                .collect();
            assert_eq!(
                by_reason,
                reference_calendar(&all, bucket, n),
                "round {round}, {reason:?} {n}"
            );
            assert!(kept.contains_key(&newest), "round {round}: newest kept");
        }
        // Every instant of the window restores from the same snapshot as with nothing pruned.
        let window = Duration::seconds(1 + (rng.next_u64() as i64).rem_euclid(spread));
        let policy = RetentionPolicy {
            keep_pitr_window: Some(window),
            ..Default::default()
        };
        let kept = keep(&all, &policy, now);
        let restores_from = |t: DateTime<Utc>, only_kept: bool| {
            all.iter()
                .filter(|s| s.time <= t && (!only_kept || kept.contains_key(&s.id)))
                .map(|s| s.time)
                .max()
        };
        for k in 0..=20 {
            let t = now - window + window * k / 20;
            assert_eq!(
                restores_from(t, true),
                restores_from(t, false),
                "round {round}: instant {t} of a {window} window"
            );
        }
    }
}
