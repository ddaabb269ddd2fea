//! `myvault prune`: retention, with `--plan` to see what would go. Acts on the repository
//! `--repo` names or on each one of the configuration (see `each_repo`); the policy is the
//! flags when any is given, else the repository's `keep_*` settings in the config.

use clap::Args;

use super::each_repo::{self, Target};
use super::output;
use crate::error::{Error, Result};
use crate::ops;
use crate::ops::prune::PruneReport;
use crate::repo::repack::MaxUnused;
use crate::repo::retention::{self, RetentionPolicy};

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// The repository to prune (default: every repository of the config).
    #[arg(long, value_name = "REPO")]
    pub repo: Option<String>,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Print what would be removed; remove nothing.
    #[arg(long)]
    pub plan: bool,
    /// Repack partly used packs until the bytes nothing needs are at most this much of the
    /// repository: a percentage (5%), a size (500M) or `unlimited` (never repack). Default:
    /// the repository's `max_unused` in the config file, else 5%.
    #[arg(long, value_name = "LIMIT", value_parser = super::sizes::parse_max_unused)]
    pub max_unused: Option<MaxUnused>,
}

/// The retention flags. Any one given replaces the config's whole policy for the run.
#[derive(Args, Debug, Default)]
pub struct PolicyArgs {
    /// Keep the N newest snapshots of each source (or backed-up path).
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep every snapshot younger than this: 90m, 36h, 14d, 8w.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub keep_within: Option<chrono::Duration>,
    /// Keep the newest snapshot of each of the last N hours that have one (UTC).
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N days that have one (UTC).
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N ISO weeks that have one (UTC).
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months that have one (UTC).
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last N years that have one (UTC).
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Keep every instant of this last stretch restorable: the newest snapshot before its
    /// start, every later one, and all the binlog they need.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub keep_pitr_window: Option<chrono::Duration>,
}

impl PolicyArgs {
    fn policy(&self) -> RetentionPolicy {
        RetentionPolicy {
            keep_last: self.keep_last,
            keep_within: self.keep_within,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
            keep_pitr_window: self.keep_pitr_window,
        }
    }
}

pub(crate) fn parse_duration(s: &str) -> std::result::Result<chrono::Duration, String> {
    let bad = || format!("'{s}' is not a duration like 90m, 36h, 14d or 8w");
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let d = match unit {
        "s" => chrono::Duration::try_seconds(n),
        "m" => chrono::Duration::try_minutes(n),
        "h" => chrono::Duration::try_hours(n),
        "d" => chrono::Duration::try_days(n),
        "w" => chrono::Duration::try_weeks(n),
        _ => None,
    };
    d.filter(|d| *d > chrono::Duration::zero()).ok_or_else(bad)
}

/// A duration in the configuration file, written as the flags take it (`"14d"`), checked
/// when the file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub chrono::Duration);

impl<'de> serde::Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Span, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text)
            .map(Span)
            .map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&retention::span(self.0))
    }
}

/// The `keep_*` settings of a `[[repo]]` section.
pub fn configured_policy(section: &super::config::RepoSection) -> RetentionPolicy {
    RetentionPolicy {
        keep_last: section.keep_last,
        keep_within: section.keep_within.map(|s| s.0),
        keep_hourly: section.keep_hourly,
        keep_daily: section.keep_daily,
        keep_weekly: section.keep_weekly,
        keep_monthly: section.keep_monthly,
        keep_yearly: section.keep_yearly,
        keep_pitr_window: section.keep_pitr_window.map(|s| s.0),
    }
}

/// The policy for `target`: the flags when any is given, else its config section's.
fn policy_for(flags: &RetentionPolicy, target: &Target<'_>) -> Result<RetentionPolicy> {
    let policy = match (flags.is_empty(), target.section) {
        (false, _) | (true, None) => *flags,
        (true, Some(section)) => configured_policy(section),
    };
    ops::prune::check_policy(&policy)
        .map_err(|e| Error::Usage(format!("{}: {e}", target.location)))?;
    Ok(policy)
}

pub fn run(a: &PruneArgs, ctx: &super::Ctx) -> Result<()> {
    let targets = each_repo::targets(a.repo.as_ref(), ctx.cfg())?;
    let flags = a.policy.policy();
    // Every policy is checked before any repository is touched.
    let policies = targets
        .iter()
        .map(|t| policy_for(&flags, t))
        .collect::<Result<Vec<_>>>()?;
    let now = chrono::Utc::now();
    let mut next = policies.iter();
    let opts = ctx.store.options();
    each_repo::run(
        ctx.out,
        &targets,
        |t| {
            let policy = next.next().copied().unwrap_or_default();
            let max_unused = a
                .max_unused
                .or(t.section.and_then(|s| s.max_unused).map(|u| u.0))
                .unwrap_or_default();
            let pruned = ops::repos::open(&t.location, &opts)
                .and_then(|repo| ops::prune::run(&repo, &policy, max_unused, a.plan, now));
            if let Ok(report) = &pruned {
                ctx.metrics
                    .record(super::metrics::prune(report, chrono::Utc::now()));
            }
            pruned.into()
        },
        print,
    )
}

fn print(r: &PruneReport) {
    let verb = if r.planned_only {
        "would remove"
    } else {
        "removed"
    };
    outln!(
        "{}: {}; keeping {} snapshot(s); {verb} {} snapshot(s) and {} binlog file(s)",
        r.repo,
        r.policy.describe(),
        r.snapshots_kept.len(),
        r.snapshots_removed.len(),
        r.binlog_files_removed.len()
    );
    for (s, reasons) in &r.keep_reasons {
        let why: Vec<&str> = reasons.iter().map(|r| r.as_str()).collect();
        outln!("  keep snapshot {s} ({})", why.join(", "));
    }
    for s in &r.snapshots_removed {
        outln!("  {verb} snapshot {s}");
    }
    for f in &r.binlog_files_removed {
        outln!("  {verb} binlog {f}");
    }
    outln!(
        "  {verb} {} unused pack(s), {}; {} orphaned pack(s), {}",
        r.gc.packs.len(),
        output::bytes(r.gc.pack_bytes),
        r.gc.orphan_packs.len(),
        output::bytes(r.gc.orphan_bytes)
    );
    if !r.gc.leftovers.is_empty() {
        outln!(
            "  {verb} {} temporary file(s) left by interrupted writes, {}",
            r.gc.leftovers.len(),
            output::bytes(r.gc.leftover_bytes)
        );
    }
    let repack = &r.gc.repack;
    if !repack.packs.is_empty() {
        let verb = if r.planned_only {
            "would repack"
        } else {
            "repacked"
        };
        outln!(
            "  {verb} {} partly used pack(s) of {}: {} blob(s), {} rewritten into {} pack(s), {} freed",
            repack.packs.len(),
            output::bytes(repack.bytes),
            repack.blobs,
            output::bytes(repack.written_bytes),
            repack.new_packs,
            output::bytes(repack.freed_bytes)
        );
    }
    if r.gc.partly_used_packs > 0 {
        outln!(
            "  kept {} partly used pack(s) holding {} nothing needs (--max-unused {})",
            r.gc.partly_used_packs,
            output::bytes(r.gc.unused_bytes_kept),
            repack.max_unused.unwrap_or_default()
        );
    }
}
