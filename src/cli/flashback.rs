//! `myvault flashback` and `myvault binlog search`: finding the transactions that changed a
//! table, and undoing chosen ones from the archive.

use std::path::PathBuf;

use clap::Args;

use super::binlog::SearchArgs;
use super::{Ctx, config};
use crate::error::{Error, Result};
use crate::mysql::gtid::GtidSet;
use crate::ops;
use crate::ops::binlog_search::{FoundTransaction, TableName, Window};
use crate::ops::flashback::TxState;
use crate::ops::flashback::collect::Selection;

#[derive(Args, Debug)]
pub struct FlashbackArgs {
    /// Repository whose binlog archive holds the transactions (default: the config's first
    /// [[repo]]).
    #[arg(long, value_name = "REPO")]
    pub repo: Option<String>,

    /// The live server to change back: mysql://user[:password]@host[:port] (password also
    /// from --target-password-file, MYVAULT_TARGET_PASSWORD or [target] in the config).
    #[arg(long, value_name = "URL")]
    pub target: String,

    #[command(flatten)]
    pub target_login: super::connection::TargetConnArgs,

    /// Undo these transactions (see `myvault binlog search`).
    #[arg(long, value_name = "GTID_SET", conflicts_with_all = ["from_time", "to_time", "tables"])]
    pub gtid: Option<String>,

    /// Undo the changes to --tables by transactions committed at or after this TIME.
    #[arg(long, value_name = "TIME", requires_all = ["to_time", "tables"])]
    pub from_time: Option<String>,

    /// ... and at or before this TIME.
    #[arg(long, value_name = "TIME", requires_all = ["from_time", "tables"])]
    pub to_time: Option<String>,

    /// The tables whose changes to undo, DB.T[,DB.T2...] (with --from-time and --to-time).
    #[arg(long, value_name = "DB.T,...", value_delimiter = ',')]
    pub tables: Vec<String>,

    /// Print the inverse as SQL; change nothing.
    #[arg(long)]
    pub plan: bool,

    /// Skip rows changed since the transactions (and list them) instead of stopping.
    #[arg(long)]
    pub force: bool,

    /// Directory for the spill file that holds the transactions' row events while they are
    /// inverted (default: the system's temporary directory).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
}

fn time(flag: &str, s: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    crate::timespec::parse(s).map_err(|e| Error::Usage(format!("{flag} {s}: {e}")))
}

fn gtid_set(s: &str) -> Result<GtidSet> {
    match GtidSet::parse(s) {
        Ok(g) if !g.is_empty() => Ok(g),
        Ok(_) => Err(Error::Usage("--gtid names no transaction".into())),
        Err(e) => Err(Error::Usage(format!("--gtid {s}: {e}"))),
    }
}

/// A window whose end comes before its start selects nothing: a typo, said as such.
fn ordered(w: Window) -> Result<Window> {
    match (w.from, w.to) {
        (Some(f), Some(t)) if f > t => Err(Error::Usage(format!(
            "the window ends ({}) before it starts ({})",
            t.to_rfc3339(),
            f.to_rfc3339()
        ))),
        _ => Ok(w),
    }
}

impl FlashbackArgs {
    fn selection(&self) -> Result<Selection> {
        if let Some(g) = &self.gtid {
            return Ok(Selection::Gtids(gtid_set(g)?));
        }
        match (&self.from_time, &self.to_time) {
            (Some(f), Some(t)) if !self.tables.is_empty() => Ok(Selection::Window {
                window: ordered(Window {
                    from: Some(time("--from-time", f)?),
                    to: Some(time("--to-time", t)?),
                    gtids: None,
                })?,
                tables: self
                    .tables
                    .iter()
                    .map(|t| TableName::parse(t))
                    .collect::<Result<_>>()?,
            }),
            _ => Err(Error::Usage(
                "say what to undo: --gtid SET, or --from-time T --to-time T --tables DB.T,..."
                    .into(),
            )),
        }
    }
}

pub fn run(a: &FlashbackArgs, ctx: &Ctx) -> Result<()> {
    let selection = a.selection()?;
    let server = a.target_login.resolve(&a.target, ctx)?;
    let repo = ops::repos::open(
        &config::one_repo(a.repo.as_ref(), ctx.cfg())?,
        &ctx.store.options(),
    )?;
    let work_dir = a.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let req = ops::flashback::FlashbackRequest {
        selection: &selection,
        server: &server,
        plan_only: a.plan,
        force: a.force,
        work_dir: &work_dir,
    };
    let json = ctx.out.json;
    let report = ops::flashback::run(&repo, &req, &mut |sql| {
        if !json {
            outln!("{sql}");
        }
    })?;
    ctx.out.report(&report, |r| {
        if r.applied {
            for t in &r.transactions {
                let done = match t.state {
                    TxState::ToUndo => "undone",
                    TxState::AlreadyUndone => "already undone, skipped:",
                };
                let left = match t.rows_skipped {
                    0 => String::new(),
                    n => format!("; {n} changed since, left as they are"),
                };
                outln!(
                    "{done} {} ({} rows of {}{left})",
                    t.gtid.as_deref().unwrap_or(&t.position),
                    t.rows - t.rows_skipped,
                    t.tables.join(", ")
                );
            }
            if r.already_undone == r.transactions.len() {
                outln!("nothing to do: every transaction was already undone");
            }
            for c in &r.skipped {
                outln!("skipped {} {}", c.row, c.reason);
            }
            if let Some(g) = &r.new_gtids {
                outln!("new transactions on the target: {g}");
            }
        } else {
            outln!(
                "-- {} transactions ({} already undone), {} rows, {} statements (--plan: \
                 nothing applied)",
                r.transactions.len(),
                r.already_undone,
                r.rows,
                r.statements
            );
        }
    });
    Ok(())
}

fn found_line(t: &FoundTransaction) -> String {
    let tables: Vec<String> = t
        .tables
        .iter()
        .map(|r| {
            let mut parts = Vec::new();
            for (n, what) in [(r.inserted, "ins"), (r.updated, "upd"), (r.deleted, "del")] {
                if n > 0 {
                    parts.push(format!("{n} {what}"));
                }
            }
            let approx = if r.counted { "" } else { " (not all counted)" };
            format!("{} {}{approx}", r.table, parts.join("/"))
        })
        .collect();
    format!(
        "{}  {}  {:<12} {}  {}{}",
        t.commit_time
            .map(|c| c.format("%Y-%m-%d %H:%M:%S%.6f").to_string())
            .unwrap_or_else(|| "-".into()),
        t.gtid.as_deref().unwrap_or("-"),
        t.kinds.join(","),
        t.position,
        tables.join("; "),
        t.statement
            .as_deref()
            .map(|s| format!("  {s}"))
            .unwrap_or_default()
    )
}

pub fn search(a: &SearchArgs, ctx: &Ctx) -> Result<()> {
    let table = TableName::parse(&a.table)?;
    let window = ordered(Window {
        from: a.from.as_deref().map(|s| time("--from", s)).transpose()?,
        to: a.to.as_deref().map(|s| time("--to", s)).transpose()?,
        gtids: a.gtid.as_deref().map(gtid_set).transpose()?,
    })?;
    let repo = ops::repos::open(
        &config::one_repo(a.repo.as_ref(), ctx.cfg())?,
        &ctx.store.options(),
    )?;
    let json = ctx.out.json;
    // Text goes out as each transaction is found; JSON is one object, so it is gathered.
    let mut found = Vec::new();
    let summary = ops::binlog_search::search(&repo, &table, &window, &mut |t| {
        if json {
            found.push(t.clone());
        } else {
            outln!("{}", found_line(t));
        }
        Ok(())
    })?;
    #[derive(serde::Serialize)]
    struct Report {
        #[serde(flatten)]
        summary: ops::binlog_search::SearchSummary,
        transactions: Vec<FoundTransaction>,
    }
    ctx.out.report(
        &Report {
            summary,
            transactions: found,
        },
        |r| {
            outln!(
                "{} transactions touched {} ({} read in {} files)",
                r.summary.transactions_found,
                r.summary.table,
                r.summary.transactions_read,
                r.summary.files
            );
        },
    );
    Ok(())
}
