//! Command-line parsing. Raw arguments are parsed once into option structs here; the work is
//! done in `ops`, and `main` turns the result into an exit code.

/// `println!` for command output that ends the process quietly when the reader goes away
/// (`myvault list | head`); see `output::write_line`.
macro_rules! outln {
    () => {
        $crate::cli::output::write_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::write_line(format_args!($($arg)*))
    };
}

pub mod backup;
pub mod binlog;
pub mod check;
pub mod config;
pub mod connection;
pub mod docs;
pub mod each_repo;
pub mod flashback;
pub mod logging;
pub mod metrics;
pub mod output;
pub mod prune;
pub mod repo_cmds;
pub mod restore;
pub mod seed;
pub(crate) mod sizes;
pub mod status;
pub mod store;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The most connections `--jobs` may open: more would only queue on the server's cores and
/// risk `max_connections`.
pub const MAX_JOBS: usize = 64;

/// `--jobs N` (and `jobs =` in the config file): 1 to [`MAX_JOBS`]. Zero would do nothing at
/// all, which is never what was meant.
pub fn check_jobs(n: usize) -> std::result::Result<usize, String> {
    if (1..=MAX_JOBS).contains(&n) {
        Ok(n)
    } else {
        Err(format!("jobs must be between 1 and {MAX_JOBS}, not {n}"))
    }
}

fn parse_jobs(text: &str) -> std::result::Result<usize, String> {
    let n = text
        .parse::<usize>()
        .map_err(|_| format!("'{text}' is not a number of jobs"))?;
    check_jobs(n)
}

use crate::error::Result;
use output::Output;

#[derive(Parser, Debug)]
#[command(
    name = "myvault",
    version,
    about = "Backup, clone and point-in-time recovery for MySQL",
    long_about = None,
    after_help = "Exit codes: 0 ok, 1 internal error, 2 usage, 3 source unreachable, 4 access denied, \
5 not MySQL / TLS failure, 6 source not ready, 7 repository locked, 8 integrity failure, \
9 partial success, 10 storage error, 11 binlog gap, 12 target refused, 13 not found, 14 unhealthy (status), 130 interrupted"
)]
pub struct Cli {
    /// Print one JSON object instead of text.
    #[arg(long, global = true, help_heading = "Output")]
    pub json: bool,

    /// Print nothing but errors.
    #[arg(long, short, global = true, help_heading = "Output")]
    pub quiet: bool,

    /// Configuration file with defaults for sources and repositories (default:
    /// /etc/myvault/myvault.toml when it exists).
    #[arg(
        long,
        value_name = "FILE",
        global = true,
        env = "MYVAULT_CONFIG",
        help_heading = "Output"
    )]
    pub config: Option<PathBuf>,

    /// Write this run's Prometheus metrics to FILE (node_exporter textfile format; replaced
    /// atomically, earlier runs' series kept).
    #[arg(long, value_name = "FILE", global = true)]
    pub metrics_file: Option<PathBuf>,

    #[command(flatten)]
    pub conn: connection::ConnArgs,

    #[command(flatten)]
    pub store: store::StoreArgs,

    #[command(flatten)]
    pub log: logging::LogArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Take a snapshot into one or more repositories.
    Backup(backup::BackupArgs),
    /// Restore a snapshot.
    Restore(restore::RestoreArgs),
    /// Undo chosen transactions on a live server by applying their inverse from the archive.
    Flashback(flashback::FlashbackArgs),
    /// List snapshots and the binlog archive.
    List(repo_cmds::ListArgs),
    /// Check a repository's integrity: every pack, blob and reference.
    Verify(repo_cmds::VerifyArgs),
    /// Stream, list and fetch archived binary logs.
    #[command(subcommand)]
    Binlog(binlog::BinlogCommand),
    /// Check that a server is ready for backups and point-in-time recovery.
    Check(check::CheckArgs),
    /// Create a repository.
    Init(repo_cmds::InitArgs),
    /// Bring one repository up to date with another.
    Copy(repo_cmds::CopyArgs),
    /// Remove stale repository locks.
    Unlock(repo_cmds::UnlockArgs),
    /// Retention: forget old snapshots and the binlogs no kept snapshot needs, free their space.
    Prune(prune::PruneArgs),
    /// Make a server a new replica of a running source: from a snapshot or a direct clone,
    /// attached by GTID, optionally waited for and verified.
    SeedReplica(seed::SeedArgs),
    /// Every source in every repository, a timeline, and a verdict: exit 0 healthy, 14 not.
    Status(status::StatusArgs),
    /// Check the configuration file.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Print a shell completion script: bash, zsh, fish, elvish or powershell.
    Completions(docs::CompletionsArgs),
    /// Write the manual pages (myvault.1 and one per command) into a directory.
    Man(docs::ManArgs),
}

/// What every command gets: output settings, connection and store flags merged with the
/// configuration file, and the configuration itself.
pub struct Ctx {
    pub out: Output,
    pub conn: connection::ConnArgs,
    pub store: store::StoreArgs,
    pub cfg: Option<config::Config>,
    /// Series for `--metrics-file`, added by the command as it runs.
    pub metrics: metrics::Recorder,
}

impl Ctx {
    pub fn cfg(&self) -> Option<&config::Config> {
        self.cfg.as_ref()
    }
}

pub fn run(cli: Cli) -> Result<()> {
    logging::init(&cli.log, cli.log.level(cli.command.default_log_level()));
    let run_log = logging::RunLog::start(cli.command.name());
    let result = dispatch(&cli);
    run_log.stop(&result);
    result
}

fn dispatch(cli: &Cli) -> Result<()> {
    let out = Output {
        json: cli.json,
        quiet: cli.quiet,
        progress_interval: std::time::Duration::from_secs(cli.log.progress_interval),
    };
    let config_path = cli.config_path();
    let cfg = config_path.as_deref().map(config::load).transpose()?;
    let mut conn = cli.conn.clone();
    let mut store = cli.store.clone();
    if let Some(c) = &cfg {
        conn.merge(c.source.as_ref());
        store.merge(c);
    }
    // Checked before the work: a wrong path is a usage error now, not a
    // warning after an hour's backup.
    let textfile = cli
        .metrics_file
        .as_deref()
        .map(crate::metrics::textfile::Textfile::open)
        .transpose()
        .map_err(|e| crate::error::Error::Usage(e.to_string()))?;
    let ctx = Ctx {
        out,
        conn,
        store,
        cfg,
        metrics: metrics::Recorder::default(),
    };
    let clock = std::time::Instant::now();
    let result = run_command(cli, &ctx);
    if let Some(file) = textfile {
        let mut families = ctx.metrics.take();
        families.extend(metrics::run_families(
            cli.command.name(),
            chrono::Utc::now(),
            clock.elapsed().as_secs_f64(),
            result.is_ok(),
        ));
        // The command's own outcome decides the exit; a metrics file that cannot be
        // written is said, and shows as stale to whatever watches it.
        if let Err(e) = file.write(&families) {
            tracing::warn!("{e}");
        }
    }
    result
}

fn run_command(cli: &Cli, ctx: &Ctx) -> Result<()> {
    match &cli.command {
        Command::Check(args) => check::run(args, ctx),
        Command::Binlog(cmd) => binlog::run(cmd, ctx),
        Command::Backup(args) => backup::run(args, ctx),
        Command::Restore(args) => restore::run(args, ctx),
        Command::Flashback(args) => flashback::run(args, ctx),
        Command::List(args) => repo_cmds::list(args, ctx),
        Command::Verify(args) => repo_cmds::verify(args, ctx),
        Command::Init(args) => repo_cmds::init(args, ctx),
        Command::Copy(args) => repo_cmds::copy(args, ctx),
        Command::Unlock(args) => repo_cmds::unlock(args, ctx),
        Command::Prune(args) => prune::run(args, ctx),
        Command::SeedReplica(args) => seed::run(args, ctx),
        Command::Status(args) => status::run(args, ctx),
        Command::Config(cmd) => config::run(cmd, cli.config_path().as_deref(), ctx),
        Command::Completions(args) => docs::completions(args),
        Command::Man(args) => docs::man_pages(args, ctx.out),
    }
}

/// Where packages and the examples put the configuration.
pub const DEFAULT_CONFIG: &str = "/etc/myvault/myvault.toml";

impl Cli {
    /// `--config` (or `MYVAULT_CONFIG`), else [`DEFAULT_CONFIG`] when that file exists: a
    /// named file that is missing is an error, the default one that is missing is no config.
    pub fn config_path(&self) -> Option<PathBuf> {
        self.config.clone().or_else(|| {
            let default = PathBuf::from(DEFAULT_CONFIG);
            default.exists().then_some(default)
        })
    }
}

impl Command {
    /// The command as typed, for log lines and `myvault_last_run_*{command}`.
    fn name(&self) -> &'static str {
        match self {
            Command::Backup(_) => "backup",
            Command::Restore(_) => "restore",
            Command::List(_) => "list",
            Command::Verify(_) => "verify",
            Command::Binlog(binlog::BinlogCommand::Stream(_)) => "binlog stream",
            Command::Binlog(binlog::BinlogCommand::List(_)) => "binlog list",
            Command::Binlog(binlog::BinlogCommand::Fetch(_)) => "binlog fetch",
            Command::Binlog(binlog::BinlogCommand::Search(_)) => "binlog search",
            Command::Flashback(_) => "flashback",
            Command::Check(_) => "check",
            Command::Init(_) => "init",
            Command::Copy(_) => "copy",
            Command::Unlock(_) => "unlock",
            Command::Prune(_) => "prune",
            Command::SeedReplica(_) => "seed-replica",
            Command::Status(_) => "status",
            Command::Config(_) => "config check",
            Command::Completions(_) => "completions",
            Command::Man(_) => "man",
        }
    }

    /// A daemon logs what it does; a one-shot command from cron only what needs a look.
    fn default_log_level(&self) -> logging::Level {
        match self {
            Command::Binlog(binlog::BinlogCommand::Stream(_)) => logging::Level::Info,
            _ => logging::Level::Warn,
        }
    }
}
