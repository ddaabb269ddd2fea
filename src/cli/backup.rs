//! `myvault backup`

use std::path::PathBuf;

use clap::Args;

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::output;
use super::{Ctx, config};
use crate::error::{Error, Result};
use crate::ops;
use crate::ops::backup::BackupReport;
use crate::snapshot::logical::catalog::Filter;
use crate::snapshot::logical::{LogicalOptions, Progress};

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Repository to write to; repeat to write several in one pass (e.g. local and S3).
    #[arg(long = "repo", value_name = "REPO")]
    pub repos: Vec<String>,

    /// The server to back up: mysql://user[:password]@host[:port]
    #[arg(long, value_name = "URL", conflicts_with = "path")]
    pub source: Option<String>,

    /// Back up plain files or a directory tree instead of a server.
    #[arg(long, value_name = "PATH")]
    pub path: Option<PathBuf>,

    /// logical (a consistent parallel dump; the default), clone or cold.
    #[arg(long, value_name = "METHOD", default_value = "logical")]
    pub method: String,

    /// Parallel dump connections (default: the number of CPUs, 2 to 8).
    #[arg(long, short = 'j', value_name = "N", value_parser = super::parse_jobs)]
    pub jobs: Option<usize>,

    /// Only these databases (comma-separated or repeated).
    #[arg(long, value_name = "DB", value_delimiter = ',')]
    pub databases: Vec<String>,

    /// Leave out these tables, as db.table (comma-separated or repeated).
    #[arg(long, value_name = "DB.TABLE", value_delimiter = ',')]
    pub exclude_tables: Vec<String>,

    /// Seconds to wait for the global read lock before giving up (so the server is not
    /// stalled behind a long query). Default 30.
    #[arg(long, value_name = "SECONDS")]
    pub lock_wait_timeout: Option<u64>,

    /// Refuse to lock while a query has run longer than this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub long_query_guard: u64,

    /// Target size of a chunk of rows, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    pub chunk_size: u64,

    /// --method clone: where the server writes the clone before it is packed (on its host;
    /// must not exist). Default: next to its data directory.
    #[arg(long, value_name = "DIR")]
    pub clone_dir: Option<PathBuf>,

    /// A mysqld of the source's series: for the temporary server that reads a local
    /// clone's GTID state (default: the source's own binary, from @@basedir), and the one
    /// that receives a remote clone.
    #[arg(long, value_name = "PATH")]
    pub mysqld: Option<PathBuf>,

    /// --method clone of a server on another host: a temporary server here (--mysqld)
    /// runs CLONE INSTANCE FROM it and is packed. Chosen by itself when the source's data
    /// directory is not on this host.
    #[arg(long)]
    pub remote: bool,

    /// --method clone: also record CHECKSUM TABLE of every table, read on a temporary server
    /// on the clone, for restores to compare with (costs a server start and a read of all
    /// the data: a clone backup took 2.5-3 times as long on the benchmark data).
    #[arg(long)]
    pub table_checksums: bool,

    /// Read the source at no more than this many bytes per second in all (512K, 20M, 1G; K,
    /// M, G are powers of 1024): the rows of a logical dump, the files of a clone or a cold
    /// data directory as they are packed. A remote clone's copy is limited too (in whole
    /// MiB/s); a local clone's own copy is not (MySQL has no limit for it).
    #[arg(long, value_name = "BYTES/S", value_parser = super::sizes::parse_rate)]
    pub max_rate: Option<u64>,

    /// --method cold: the data directory of a stopped server.
    #[arg(long, value_name = "DIR")]
    pub datadir: Option<PathBuf>,
}

pub fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get().clamp(2, 8))
        .unwrap_or(2)
}

pub fn run(a: &BackupArgs, ctx: &Ctx) -> Result<()> {
    let repos = config::repos_or(&a.repos, ctx.cfg(), "--repo")?;
    // What `--metrics-file` calls the source: `host:port`, or the backed-up path.
    let mut origin = String::new();
    let taken = take(a, ctx, &repos, &mut origin);
    let method = if a.path.is_some() { "files" } else { &a.method };
    ctx.metrics.record(super::metrics::backup(
        &origin,
        method,
        &repos,
        taken.as_ref().ok(),
        chrono::Utc::now(),
    ));
    let report = taken?;
    ctx.out.report(&report, print);
    ops::repos::conclude(&report.repos)
}

fn take(a: &BackupArgs, ctx: &Ctx, repos: &[String], origin: &mut String) -> Result<BackupReport> {
    let (out, conn, store) = (ctx.out, &ctx.conn, &ctx.store);
    let cfg = ctx.cfg().and_then(|c| c.backup.clone()).unwrap_or_default();
    let max_rate = a.max_rate.or(cfg.max_rate.map(|r| r.0));
    let source = match (&a.path, a.method.as_str()) {
        (Some(_), _) | (None, "cold") => None,
        _ => Some(config::source_or(a.source.as_ref(), ctx.cfg())?),
    };
    *origin = match (&a.path, &a.datadir, &source) {
        (Some(p), _, _) | (None, Some(p), None) => p.display().to_string(),
        (None, _, Some(url)) => conn
            .resolve(url, "MYVAULT_PASSWORD")
            .map(|c| c.address())
            .unwrap_or_default(),
        _ => String::new(),
    };
    Ok(match (&a.path, &source) {
        (Some(path), _) => ops::backup::files(repos, &store.options(), max_rate, path)?,
        (None, None) => {
            let datadir = a
                .datadir
                .as_ref()
                .ok_or_else(|| Error::Usage("--method cold needs --datadir DIR".into()))?;
            ops::backup::cold(repos, &store.options(), max_rate, datadir)?
        }
        (None, Some(url)) if a.method == "clone" => {
            let source = conn.resolve(url, "MYVAULT_PASSWORD")?;
            let mysqld = a.mysqld.clone().or_else(|| {
                ctx.cfg()
                    .and_then(|c| c.restore.as_ref())
                    .and_then(|r| r.mysqld.clone())
            });
            let opts = crate::snapshot::clone::CloneOptions {
                clone_dir: a.clone_dir.as_deref(),
                mysqld: mysqld.as_deref(),
                remote: a.remote,
                table_checksums: a.table_checksums,
                max_rate,
            };
            out.with_ticker(
                || "cloning and packing".to_string(),
                || ops::backup::clone_local(repos, &store.options(), max_rate, &source, &opts),
            )?
        }
        (None, Some(url)) => {
            if a.method != "logical" {
                return Err(Error::Usage(format!(
                    "--method {} is not one of logical, clone, cold",
                    a.method
                )));
            }
            let source = conn.resolve(url, "MYVAULT_PASSWORD")?;
            let pick = |flag: &Vec<String>, cfg: &Vec<String>| {
                if flag.is_empty() {
                    cfg.clone()
                } else {
                    flag.clone()
                }
            };
            let opts = LogicalOptions {
                jobs: a.jobs.or(cfg.jobs).unwrap_or_else(default_jobs),
                filter: Filter {
                    databases: pick(&a.databases, &cfg.databases),
                    exclude_tables: pick(&a.exclude_tables, &cfg.exclude_tables),
                },
                lock_wait_timeout: a.lock_wait_timeout.or(cfg.lock_wait_timeout).unwrap_or(30),
                long_query_guard: Duration::from_secs(a.long_query_guard),
                chunk_bytes: a.chunk_size.max(1) * 1024 * 1024,
            };
            let progress = Progress::default();
            let pace = output::Pace::start();
            out.with_ticker(
                || {
                    let rows = progress.rows.load(Ordering::Relaxed);
                    let done = progress.chunks_done.load(Ordering::Relaxed);
                    let total = progress.chunks_total.load(Ordering::Relaxed);
                    format!(
                        "dumping: {rows} rows ({}), chunk {done}/{total} {}",
                        pace.rate(rows, " rows"),
                        pace.left(done, total)
                    )
                },
                || {
                    let store = store.options();
                    ops::backup::logical(repos, &store, max_rate, &source, &opts, &progress)
                },
            )?
        }
    })
}

pub fn print(r: &BackupReport) {
    outln!(
        "snapshot {} ({}) {} in {} files, {:.1} s",
        r.snapshot,
        r.method,
        output::bytes(r.size),
        r.files,
        r.seconds
    );
    if let Some(lock) = r.lock_seconds {
        outln!("  global lock held {:.1} ms", lock * 1000.0);
    }
    if let (Some(f), Some(p)) = (&r.binlog_file, r.binlog_position) {
        outln!("  binlog {f}:{p}");
    }
    if let Some(g) = &r.gtid_executed {
        outln!(
            "  gtid_executed {}",
            if g.is_empty() { "(empty)" } else { g }
        );
    }
    for o in &r.repos {
        match &o.error {
            None => outln!(
                "  {:<40} ok, {} new ({} chunks)",
                o.repo,
                output::bytes(o.new_bytes),
                o.new_chunks
            ),
            Some(e) => outln!("  {:<40} FAILED: {e}", o.repo),
        }
    }
}
