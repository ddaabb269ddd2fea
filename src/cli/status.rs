//! `myvault status`: every source in every repository, a timeline, and a verdict in the exit
//! code (0 healthy, 14 unhealthy), for people, cron and monitoring alike.

mod html;
mod picture;
mod term;

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use super::output;
use crate::error::{Error, Result};
use crate::ops::status::{
    self, Limits, Severity, SourceInRepo, StatusOptions, StatusReport, Verdict, human_age,
};
use picture::Picture;

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// A repository to report on; repeat for each copy (default: every [[repo]] of the config).
    /// They are judged as copies of each other, as backup and the streamer write them.
    #[arg(long = "repo", value_name = "REPO")]
    pub repos: Vec<String>,
    /// The streamer's spool directory on this host, for the bytes waiting there (default:
    /// `[stream] spool` of the config, when it exists here).
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,
    /// Unhealthy when a source's newest snapshot in a repository is older than this:
    /// 90m, 36h, 14d, or off (default 26h, or `[status] max_snapshot_age`).
    #[arg(long, value_name = "DURATION", value_parser = parse_limit)]
    pub max_snapshot_age: Option<Limit>,
    /// Unhealthy when a repository's binlog archive is complete only up to longer ago than
    /// this: 30s, 5m, or off (default 5m, or `[status] max_archive_lag`).
    #[arg(long, value_name = "DURATION", value_parser = parse_limit)]
    pub max_archive_lag: Option<Limit>,
    /// Unhealthy when a repository was last verified longer ago than this, e.g. 8d (default:
    /// not judged, or `[status] max_verify_age`).
    #[arg(long, value_name = "DURATION", value_parser = parse_limit)]
    pub max_verify_age: Option<Limit>,
    /// A source (server uuid, or path:DIR) to show but not judge: a retired server, the old
    /// primary after a failover. Repeat for several.
    #[arg(long = "ignore-source", value_name = "SOURCE")]
    pub ignore_sources: Vec<String>,
    /// Also write the status as one self-contained HTML page (timeline and tables).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Days the timeline shows, ending now (default: back to the oldest snapshot or archived
    /// binlog, at most 14).
    #[arg(long, value_name = "N", value_parser = parse_days)]
    pub days: Option<f64>,
    /// Colours and Unicode marks in the timeline: auto (on a terminal), always, never.
    #[arg(long, value_name = "WHEN", default_value = "auto")]
    pub color: ColorChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// A threshold: a duration, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(Option<chrono::Duration>);

fn parse_limit(text: &str) -> std::result::Result<Limit, String> {
    if text == "off" {
        return Ok(Limit(None));
    }
    super::prune::parse_duration(text)
        .map(|d| Limit(Some(d)))
        .map_err(|e| format!("{e}, or off"))
}

fn parse_days(text: &str) -> std::result::Result<f64, String> {
    match text.parse::<f64>() {
        Ok(d) if d > 0.0 && d <= 3650.0 => Ok(d),
        _ => Err(format!("'{text}' is not a number of days (0.1 to 3650)")),
    }
}

/// `[status]` in the configuration file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StatusSection {
    pub max_snapshot_age: Option<String>,
    pub max_archive_lag: Option<String>,
    pub max_verify_age: Option<String>,
    #[serde(default)]
    pub ignore_sources: Vec<String>,
}

impl StatusSection {
    /// The thresholds this section sets (checked when the file is loaded).
    pub fn limits(&self) -> std::result::Result<[Option<Limit>; 3], String> {
        let parse = |key: &str, v: &Option<String>| {
            v.as_deref()
                .map(parse_limit)
                .transpose()
                .map_err(|e| format!("{key}: {e}"))
        };
        Ok([
            parse("max_snapshot_age", &self.max_snapshot_age)?,
            parse("max_archive_lag", &self.max_archive_lag)?,
            parse("max_verify_age", &self.max_verify_age)?,
        ])
    }
}

fn limits(a: &StatusArgs, section: &StatusSection) -> Result<Limits> {
    let [age, lag, verify] = section
        .limits()
        .map_err(|e| Error::Usage(format!("[status] {e}")))?;
    let pick = |flag: Option<Limit>, cfg: Option<Limit>, default| {
        flag.or(cfg).map_or(default, |Limit(d)| d)
    };
    Ok(Limits {
        max_snapshot_age: pick(a.max_snapshot_age, age, Limits::DEFAULT.max_snapshot_age),
        max_archive_lag: pick(a.max_archive_lag, lag, Limits::DEFAULT.max_archive_lag),
        max_verify_age: pick(a.max_verify_age, verify, Limits::DEFAULT.max_verify_age),
    })
}

pub fn run(a: &StatusArgs, ctx: &super::Ctx) -> Result<()> {
    let out = ctx.out;
    let section = ctx.cfg().and_then(|c| c.status.clone()).unwrap_or_default();
    // The config's spool is the streamer's host's: elsewhere it is not there, and that is fine.
    let spool = a.spool.clone().or_else(|| {
        ctx.cfg()
            .and_then(|c| c.stream.as_ref())
            .and_then(|s| s.spool.clone())
            .filter(|d| d.is_dir())
    });
    let mut ignore_sources = a.ignore_sources.clone();
    ignore_sources.extend(section.ignore_sources.iter().cloned());
    let opts = StatusOptions {
        repos: super::config::repos_or(&a.repos, ctx.cfg(), "--repo")?,
        store: ctx.store.options(),
        spool,
        limits: limits(a, &section)?,
        ignore_sources,
        now: chrono::Utc::now(),
    };
    let report = status::run(&opts)?;
    let picture = Picture::of(&report, a.days);
    if let Some(path) = &a.html {
        std::fs::write(path, html::page(&report, &picture))
            .map_err(|e| Error::io(format!("cannot write --html {}", path.display()), e))?;
    }
    let color = match a.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
        }
    };
    out.report(&report, |r| print_text(r, &picture, color));
    match report.verdict {
        Verdict::Healthy => Ok(()),
        Verdict::Unhealthy => Err(Error::Unhealthy(summary(&report))),
    }
}

/// The error line of an unhealthy status: how many problems, and the first.
fn summary(r: &StatusReport) -> String {
    let critical: Vec<&str> = r
        .problems
        .iter()
        .filter(|p| p.severity == Severity::Critical)
        .map(|p| p.what.as_str())
        .collect();
    format!(
        "unhealthy: {} critical problem(s); first: {}",
        critical.len(),
        critical.first().copied().unwrap_or("?")
    )
}

fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn print_text(r: &StatusReport, picture: &Picture, color: bool) {
    let critical = r
        .problems
        .iter()
        .filter(|p| p.severity == Severity::Critical)
        .count();
    let verdict = match (r.verdict, color) {
        (Verdict::Healthy, true) => "\x1b[1;32mHEALTHY\x1b[0m",
        (Verdict::Healthy, false) => "HEALTHY",
        (Verdict::Unhealthy, true) => "\x1b[1;31mUNHEALTHY\x1b[0m",
        (Verdict::Unhealthy, false) => "UNHEALTHY",
    };
    outln!(
        "myvault status: {verdict} ({critical} critical, {} warning(s)), checked {}",
        r.problems.len() - critical,
        time(r.checked_at)
    );
    for p in &r.problems {
        let severity = match p.severity {
            Severity::Critical => "CRITICAL",
            Severity::Warning => "warning ",
        };
        outln!("  {severity} {}", p.what);
    }
    for s in &r.sources {
        outln!();
        outln!(
            "source {}{}{}",
            s.source,
            s.address
                .as_deref()
                .map(|a| format!(" ({a})"))
                .unwrap_or_default(),
            if s.ignored { " [ignored]" } else { "" }
        );
        for sr in &s.repos {
            print_source_in_repo(sr);
        }
    }
    outln!();
    outln!("repositories");
    for repo in &r.repos {
        if let Some(e) = &repo.error {
            outln!("  {}: CANNOT BE READ: {e}", repo.repo);
            continue;
        }
        let verified = |v: Option<&status::verifications::VerificationRecord>| match v {
            None => "never".to_string(),
            Some(v) => format!(
                "{} on {} ({})",
                time(v.time),
                v.host,
                if v.ok {
                    "ok".to_string()
                } else {
                    format!("FAILED: {}", v.detail.as_deref().unwrap_or("?"))
                }
            ),
        };
        outln!(
            "  {}: {} snapshot(s), {} binlog file(s){}",
            repo.repo,
            repo.snapshots,
            repo.binlog_files,
            if repo.encrypted == Some(true) {
                ", encrypted"
            } else {
                ""
            }
        );
        outln!(
            "    last verify        {}",
            verified(repo.last_verify.as_ref())
        );
        outln!(
            "    last restore test  {}",
            verified(repo.last_restore_test.as_ref())
        );
    }
    for d in &r.diverged {
        outln!(
            "  DIVERGED {:?} {} of {}: in {}, missing from {}",
            d.kind,
            d.object,
            d.source,
            d.present_in.join(", "),
            d.missing_from.join(", ")
        );
    }
    if let Some(st) = &r.streamer {
        outln!();
        outln!(
            "streamer on {}: {}; {} in the spool{}",
            st.spool,
            if st.running { "running" } else { "NOT RUNNING" },
            output::bytes(st.spool_bytes),
            st.last_error
                .as_deref()
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default()
        );
    }
    if !picture.lanes.is_empty() {
        outln!();
        for line in term::timeline(picture, term::width(), color) {
            outln!("{line}");
        }
    }
}

fn print_source_in_repo(sr: &SourceInRepo) {
    outln!("  {}", sr.repo);
    match (&sr.newest_snapshot, sr.newest_snapshot_age_seconds) {
        (Some(n), Some(age)) => outln!(
            "    newest snapshot    {} ({}), {} ago; {} snapshot(s)",
            n.id,
            n.method,
            human_age(age),
            sr.snapshot_count
        ),
        _ => outln!("    newest snapshot    none"),
    }
    for w in &sr.windows {
        outln!(
            "    restorable         point-in-time restore possible from {} to {}",
            time(w.start),
            w.end.map(time).unwrap_or_else(|| "?".into())
        );
    }
    if let Some(a) = &sr.archive {
        outln!(
            "    binlog archive     {} .. {} ({} files, {})",
            a.first_file,
            a.last_file,
            a.files,
            output::bytes(a.bytes)
        );
        outln!(
            "    complete until     {}{}; last commit {}; last upload {}{}",
            a.complete_until
                .map(time)
                .unwrap_or_else(|| "unknown".into()),
            a.lag_seconds
                .map(|l| format!(" ({} ago)", human_age(l)))
                .unwrap_or_default(),
            a.last_commit.map(time).unwrap_or_else(|| "-".into()),
            a.last_upload.map(time).unwrap_or_else(|| "-".into()),
            a.spool_pending_bytes
                .map(|b| format!("; {} waiting in the spool", output::bytes(b)))
                .unwrap_or_default()
        );
    }
    for h in &sr.holes {
        outln!("    HOLE               {}", h.detail);
    }
    for g in &sr.gaps {
        outln!(
            "    GAP                found {}: {}",
            time(g.detected_at),
            g.detail
        );
    }
}
