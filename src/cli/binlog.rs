//! `myvault binlog stream | list | fetch`

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::output;
use super::{Ctx, config};
use crate::error::{Error, Result};
use crate::ops;
use crate::ops::binlog_files::Bound;
use crate::ops::stream::{StreamOptions, StreamStatus};

#[derive(Subcommand, Debug)]
pub enum BinlogCommand {
    /// Stream a source's binary log into repositories, continuously.
    Stream(StreamArgs),
    /// List archived binlog files with their time and GTID ranges.
    List(ListArgs),
    /// Write archived binlog files back out, byte-identical.
    Fetch(FetchArgs),
    /// List the archived transactions that touched a table: GTID, commit time, kind, rows.
    Search(SearchArgs),
}

#[derive(Args, Debug)]
pub struct SearchArgs {
    /// Repository whose archive to search (default: the config's first [[repo]]).
    #[arg(long, value_name = "REPO")]
    pub repo: Option<String>,
    /// The table, as DB.TABLE.
    #[arg(long, value_name = "DB.TABLE")]
    pub table: String,
    /// Only transactions committed at or after this TIME.
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// Only transactions committed at or before this TIME.
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    /// Only these transactions.
    #[arg(long, value_name = "GTID_SET")]
    pub gtid: Option<String>,
}

#[derive(Args, Debug)]
pub struct StreamArgs {
    /// Source server; repeat to name the other members of a failover group.
    #[arg(long = "source", value_name = "URL")]
    pub sources: Vec<String>,

    /// Repository to archive into; repeat for several (default: every [[repo]] of the config).
    #[arg(long = "repo", value_name = "REPO")]
    pub repos: Vec<String>,

    /// Server id to register with (must differ from the source's and its replicas').
    #[arg(long, value_name = "N")]
    pub server_id: Option<u32>,

    /// Local spool directory (default /var/lib/myvault/spool/NAME as root).
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,

    /// Name of this stream, for the default spool directory (default: the first source's host_port).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Seconds between heartbeats the source sends when idle; three missed ones mean a
    /// dead connection. Default 2.
    #[arg(long, value_name = "SECONDS")]
    pub heartbeat: Option<u64>,

    /// Seconds between uploads of the file being written. Default 60.
    #[arg(long, value_name = "SECONDS")]
    pub upload_interval: Option<u64>,

    /// Largest spool (MiB) before reading pauses while uploads catch up. Default 16384.
    #[arg(long, value_name = "MIB")]
    pub max_spool_size: Option<u64>,

    /// Binlog file to start from when the archive has nothing of this server.
    #[arg(long, value_name = "FILE")]
    pub start_file: Option<String>,

    /// Exit once everything the source had at start is archived (for cron and tests).
    #[arg(long)]
    pub until_caught_up: bool,

    /// Serve Prometheus metrics on HOST:PORT at /metrics (e.g. 127.0.0.1:9577).
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_listen: Option<String>,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Repository whose archive to list (default: the config's first [[repo]]).
    #[arg(long, value_name = "REPO")]
    pub repo: Option<String>,
}

#[derive(Args, Debug)]
pub struct FetchArgs {
    /// Repository to fetch from (default: the config's first [[repo]]).
    #[arg(long, value_name = "REPO")]
    pub repo: Option<String>,
    /// Directory to write the binlog files into (created if missing; files are 0600).
    #[arg(long, value_name = "DIR")]
    pub dest: PathBuf,
    /// Only files holding something at or after this TIME, or a transaction outside this
    /// GTID set (e.g. a snapshot's gtid_executed).
    #[arg(long, value_name = "TIME|GTID")]
    pub from: Option<String>,
    /// Only files holding something at or before this TIME or GTID set.
    #[arg(long, value_name = "TIME|GTID")]
    pub to: Option<String>,
    /// Only files of this server (its server_uuid).
    #[arg(long, value_name = "UUID")]
    pub server: Option<String>,
}

fn default_spool(name: &str) -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let base = if root {
        PathBuf::from("/var/lib/myvault/spool")
    } else {
        std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .unwrap_or_else(|| PathBuf::from("."))
            .join("myvault/spool")
    };
    base.join(name)
}

pub fn run(cmd: &BinlogCommand, ctx: &Ctx) -> Result<()> {
    let (store, out) = (&ctx.store, ctx.out);
    match cmd {
        BinlogCommand::Stream(a) => stream(a, ctx),
        BinlogCommand::List(a) => {
            let repo = ops::repos::open(
                &config::one_repo(a.repo.as_ref(), ctx.cfg())?,
                &store.options(),
            )?;
            let files = ops::binlog_files::list(&repo)?;
            #[derive(serde::Serialize)]
            struct Report {
                repo: String,
                files: Vec<ops::binlog_files::ArchivedFile>,
            }
            out.report(
                &Report {
                    repo: repo.name().to_string(),
                    files,
                },
                |r| {
                    if r.files.is_empty() {
                        outln!("no archived binlog files in {}", r.repo);
                    }
                    let mut server = "";
                    for f in &r.files {
                        if f.server_uuid != server {
                            server = &f.server_uuid;
                            outln!("server {server}");
                        }
                        let t = |t: Option<chrono::DateTime<chrono::Utc>>| {
                            t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                                .unwrap_or_else(|| "-".into())
                        };
                        outln!(
                            "  {:<16} {:>10} {:<7} {} .. {}  {} tx  {}",
                            f.file,
                            output::bytes(f.size),
                            if f.sealed { "sealed" } else { "open" },
                            t(f.first_event_time),
                            t(f.last_event_time),
                            f.transactions,
                            if f.gtids.is_empty() { "-" } else { &f.gtids }
                        );
                    }
                },
            );
            Ok(())
        }
        BinlogCommand::Search(a) => super::flashback::search(a, ctx),
        BinlogCommand::Fetch(a) => {
            let repo = ops::repos::open(
                &config::one_repo(a.repo.as_ref(), ctx.cfg())?,
                &store.options(),
            )?;
            let from = a.from.as_deref().map(Bound::parse).transpose()?;
            let to = a.to.as_deref().map(Bound::parse).transpose()?;
            let fetched = ops::binlog_files::fetch(
                &repo,
                &a.dest,
                a.server.as_deref(),
                from.as_ref(),
                to.as_ref(),
            )?;
            out.report(&fetched, |f| {
                for p in &f.files {
                    outln!("{p}");
                }
                outln!("{} files, {}", f.files.len(), output::bytes(f.bytes));
            });
            Ok(())
        }
    }
}

fn stream(a: &StreamArgs, ctx: &Ctx) -> Result<()> {
    let (conn, store, out) = (&ctx.conn, &ctx.store, ctx.out);
    let cfg = ctx.cfg().and_then(|c| c.stream.clone()).unwrap_or_default();
    let urls = if a.sources.is_empty() {
        let mut v = vec![config::source_or(None, ctx.cfg())?];
        v.extend(
            ctx.cfg()
                .and_then(|c| c.source.as_ref())
                .map(|s| s.failover.clone())
                .unwrap_or_default(),
        );
        v
    } else {
        a.sources.clone()
    };
    let repos = config::repos_or(&a.repos, ctx.cfg(), "--repo")?;
    let sources = urls
        .iter()
        .map(|u| conn.resolve(u, "MYVAULT_PASSWORD"))
        .collect::<Result<Vec<_>>>()?;
    let first = sources
        .first()
        .ok_or_else(|| Error::Usage("give --source".into()))?;
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| format!("{}_{}", first.host, first.port).replace(['/', ':'], "_"));
    let opts = StreamOptions {
        sources,
        repos,
        store: store.options(),
        server_id: a.server_id.or(cfg.server_id),
        spool_dir: a
            .spool
            .clone()
            .or(cfg.spool)
            .unwrap_or_else(|| default_spool(&name)),
        heartbeat: Duration::from_secs(a.heartbeat.or(cfg.heartbeat).unwrap_or(2).max(1)),
        upload_interval: Duration::from_secs(
            a.upload_interval
                .or(cfg.upload_interval)
                .unwrap_or(60)
                .max(1),
        ),
        max_spool_bytes: a
            .max_spool_size
            .or(cfg.max_spool_size)
            .unwrap_or(16384)
            .max(64)
            << 20,
        start_file: a.start_file.clone(),
        until_caught_up: a.until_caught_up,
        metrics_listen: a.metrics_listen.clone().or(cfg.metrics_listen),
    };
    let report = |s: &StreamStatus| {
        if !out.quiet && !out.json {
            tracing::info!(
                lag_seconds = s.lag_seconds,
                "{}: {} at {}:{}  lag {:.1} s  received {}  archived {}  spool {}  pending {}{}",
                s.source,
                s.server_uuid,
                s.file,
                s.position,
                s.lag_seconds,
                output::bytes(s.received_bytes),
                output::bytes(s.archived_bytes),
                output::bytes(s.spool_bytes),
                output::bytes(s.pending_bytes),
                s.last_error
                    .as_deref()
                    .map(|e| format!("  last error: {e}"))
                    .unwrap_or_default()
            );
        }
        // Replaced whole (written aside, then renamed), so a reader never sees half of it.
        let path = opts.spool_dir.join("status.json");
        let tmp = opts.spool_dir.join(".status.json.tmp");
        if let Ok(json) = output::to_json(s) {
            let _ = crate::private_fs::write_file(&tmp, json.as_bytes())
                .and_then(|()| std::fs::rename(&tmp, &path));
        }
    };
    let status = ops::stream::run(&opts, &report)?;
    out.report(&status, |_| {});
    Ok(())
}
