//! `myvault prune`: retention, with `--plan` to see what would go.

use clap::Args;

use super::output;
use crate::error::Result;
use crate::ops;

#[derive(Args, Debug)]
pub struct PruneArgs {
    #[arg(long, value_name = "REPO")]
    pub repo: Option<String>,
    /// Keep the N newest snapshots of each source (or backed-up path).
    #[arg(long, value_name = "N")]
    pub keep_last: Option<usize>,
    /// Keep every snapshot younger than this: 90m, 36h, 14d, 8w.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub keep_within: Option<chrono::Duration>,
    /// Print what would be removed; remove nothing.
    #[arg(long)]
    pub plan: bool,
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

pub fn run(a: &PruneArgs, ctx: &super::Ctx) -> Result<()> {
    let (store, out) = (&ctx.store, ctx.out);
    let repo = ops::repos::open(
        &super::config::one_repo(a.repo.as_ref(), ctx.cfg())?,
        &store.options(),
    )?;
    let policy = ops::prune::Policy {
        keep_last: a.keep_last,
        keep_within: a.keep_within,
    };
    let report = ops::prune::run(&repo, policy, a.plan, chrono::Utc::now())?;
    ctx.metrics
        .record(super::metrics::prune(&report, chrono::Utc::now()));
    out.report(&report, |r| {
        let verb = if r.planned_only {
            "would remove"
        } else {
            "removed"
        };
        outln!(
            "{}: keeping {} snapshot(s); {verb} {} snapshot(s) and {} binlog file(s)",
            r.repo,
            r.snapshots_kept.len(),
            r.snapshots_removed.len(),
            r.binlog_files_removed.len()
        );
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
        if r.gc.partly_used_packs > 0 {
            outln!(
                "  kept {} partly used pack(s) holding {} nothing needs (not repacked)",
                r.gc.partly_used_packs,
                output::bytes(r.gc.unused_bytes_kept)
            );
        }
    });
    Ok(())
}
