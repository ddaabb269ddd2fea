//! Which snapshots a retention policy keeps, and why: restic's `forget` semantics, per origin.
//! Pure: it reads manifests and the clock it is given; prune (in `ops`) decides what goes.
//!
//! Snapshots are grouped by origin (the source server, or the backed-up path); the policy
//! applies to each group on its own, and each group's newest snapshot always stays.
//!
//! - `keep_last N`: the N newest.
//! - `keep_within D`: every snapshot taken at or after `now - D`.
//! - `keep_hourly/daily/weekly/monthly/yearly N`: going from the newest to the oldest, the
//!   first snapshot of each new hour (day, ISO week, month, year) in UTC, until N such buckets
//!   have one. A bucket with no snapshot does not count, so `keep_daily 7` keeps the last seven
//!   days that *have* a snapshot, like restic.
//! - `keep_pitr_window D`: every instant from `now - D` to now stays restorable, so the newest
//!   snapshot taken at or before `now - D` stays, and every later one. (The binlog those need
//!   is kept by prune: see `ops::prune`.)
//!
//! A snapshot kept by several rules lists every reason.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serialize;

use super::manifest::SnapshotManifest;

/// A retention policy. Counts are at least 1 (see [`RetentionPolicy::check`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RetentionPolicy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_seconds")]
    pub keep_within: Option<chrono::Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_seconds")]
    pub keep_pitr_window: Option<chrono::Duration>,
}

/// Durations in reports: whole seconds.
mod opt_seconds {
    pub fn serialize<S: serde::Serializer>(
        d: &Option<chrono::Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_i64(d.num_seconds()),
            None => s.serialize_none(),
        }
    }
}

/// Why a snapshot stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeepReason {
    /// The newest of its origin: always kept.
    Newest,
    Last,
    Within,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
    /// Needed to restore an instant in the point-in-time window.
    PitrWindow,
}

impl KeepReason {
    pub fn as_str(self) -> &'static str {
        match self {
            KeepReason::Newest => "newest",
            KeepReason::Last => "last",
            KeepReason::Within => "within",
            KeepReason::Hourly => "hourly",
            KeepReason::Daily => "daily",
            KeepReason::Weekly => "weekly",
            KeepReason::Monthly => "monthly",
            KeepReason::Yearly => "yearly",
            KeepReason::PitrWindow => "pitr-window",
        }
    }
}

/// Names the calendar bucket (hour, day, ...) a snapshot time falls in, in UTC.
type BucketKey = fn(DateTime<Utc>) -> i64;

/// The calendar rules, each with its bucket key.
const CALENDAR: [(KeepReason, BucketKey); 5] = [
    (KeepReason::Hourly, |t| {
        i64::from(t.year()) * 1_000_000 + i64::from(t.ordinal()) * 100 + i64::from(t.hour())
    }),
    (KeepReason::Daily, |t| {
        i64::from(t.year()) * 1000 + i64::from(t.ordinal())
    }),
    (KeepReason::Weekly, |t| {
        let w = t.iso_week();
        i64::from(w.year()) * 100 + i64::from(w.week())
    }),
    (KeepReason::Monthly, |t| {
        i64::from(t.year()) * 100 + i64::from(t.month())
    }),
    (KeepReason::Yearly, |t| i64::from(t.year())),
];

impl RetentionPolicy {
    /// Whether no rule is given (prune then refuses: it would keep only the newest).
    pub fn is_empty(&self) -> bool {
        *self == RetentionPolicy::default()
    }

    /// Rejects counts of zero: `--keep-daily 0` reads as "keep no daily", which is what
    /// leaving it out means; accepting it would hide a typo for a number.
    pub fn check(&self) -> Result<(), String> {
        let counts = [
            ("keep-last", self.keep_last),
            ("keep-hourly", self.keep_hourly),
            ("keep-daily", self.keep_daily),
            ("keep-weekly", self.keep_weekly),
            ("keep-monthly", self.keep_monthly),
            ("keep-yearly", self.keep_yearly),
        ];
        match counts.iter().find(|(_, n)| *n == Some(0)) {
            Some((name, _)) => Err(format!(
                "--{name} must be at least 1 (leave it out to keep none by that rule)"
            )),
            None => Ok(()),
        }
    }

    fn calendar_count(&self, reason: KeepReason) -> Option<u32> {
        match reason {
            KeepReason::Hourly => self.keep_hourly,
            KeepReason::Daily => self.keep_daily,
            KeepReason::Weekly => self.keep_weekly,
            KeepReason::Monthly => self.keep_monthly,
            KeepReason::Yearly => self.keep_yearly,
            _ => None,
        }
    }

    /// One line: `keep-daily 7, keep-pitr-window 3d`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(n) = self.keep_last {
            parts.push(format!("keep-last {n}"));
        }
        if let Some(d) = self.keep_within {
            parts.push(format!("keep-within {}", span(d)));
        }
        for (reason, _) in CALENDAR {
            if let Some(n) = self.calendar_count(reason) {
                parts.push(format!("keep-{} {n}", reason.as_str()));
            }
        }
        if let Some(d) = self.keep_pitr_window {
            parts.push(format!("keep-pitr-window {}", span(d)));
        }
        parts.join(", ")
    }
}

/// A duration as the flags take it: `36h`, `14d`, `2w`, in the largest unit that divides it.
pub fn span(d: chrono::Duration) -> String {
    let s = d.num_seconds();
    let units = [(604_800, "w"), (86_400, "d"), (3_600, "h"), (60, "m")];
    match units.iter().find(|(n, _)| s != 0 && s % n == 0) {
        Some((n, unit)) => format!("{}{unit}", s / n),
        None => format!("{s}s"),
    }
}

/// Where a snapshot came from: retention applies per origin.
pub fn origin(m: &SnapshotManifest) -> String {
    match &m.source {
        Some(s) => format!("server {}", s.server_uuid),
        None => format!("path {}", m.backed_up_path().unwrap_or_default()),
    }
}

/// The snapshots the policy keeps, by id, each with its reasons (`snapshots` in any order).
pub fn keep(
    snapshots: &[SnapshotManifest],
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
) -> BTreeMap<String, BTreeSet<KeepReason>> {
    let mut groups: BTreeMap<String, Vec<&SnapshotManifest>> = BTreeMap::new();
    for s in snapshots {
        groups.entry(origin(s)).or_default().push(s);
    }
    let mut kept: BTreeMap<String, BTreeSet<KeepReason>> = BTreeMap::new();
    for group in groups.values_mut() {
        // Newest first; equal times by id, so the outcome never depends on listing order.
        group.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
        for (s, reasons) in group.iter().zip(keep_group(group, policy, now)) {
            if !reasons.is_empty() {
                kept.entry(s.id.clone()).or_default().extend(reasons);
            }
        }
    }
    kept
}

/// The reasons to keep each snapshot of one origin (`newest_first`, same order).
fn keep_group(
    newest_first: &[&SnapshotManifest],
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
) -> Vec<Vec<KeepReason>> {
    let mut out: Vec<Vec<KeepReason>> = vec![Vec::new(); newest_first.len()];
    if let Some(first) = out.first_mut() {
        first.push(KeepReason::Newest);
    }
    for (i, s) in newest_first.iter().enumerate() {
        if policy.keep_last.is_some_and(|n| i < n as usize) {
            out[i].push(KeepReason::Last);
        }
        if policy.keep_within.is_some_and(|d| s.time >= now - d) {
            out[i].push(KeepReason::Within);
        }
    }
    for (reason, bucket) in CALENDAR {
        let Some(mut left) = policy.calendar_count(reason) else {
            continue;
        };
        let mut last = None;
        for (i, s) in newest_first.iter().enumerate() {
            if left == 0 {
                break;
            }
            let key = bucket(s.time);
            if last != Some(key) {
                out[i].push(reason);
                last = Some(key);
                left -= 1;
            }
        }
    }
    if let Some(window) = policy.keep_pitr_window {
        let start = now - window;
        for (i, s) in newest_first.iter().enumerate() {
            out[i].push(KeepReason::PitrWindow);
            // The first one at or before the window's start is where a restore to that
            // instant begins; older ones are not needed.
            if s.time <= start {
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
