//! Diagnostic logging: one `tracing` subscriber on stderr, set up once from the command line.
//!
//! Command output (reports, `--json`) goes to stdout and is not logging. What goes here is
//! what an operator reads afterwards in journald or a cron mail: a line when a command starts
//! and stops, warnings, periodic progress of long work, and at debug level the S3 client's
//! own diagnostics. One-shot commands log warnings only unless asked (`-v`), so that a quiet
//! cron job stays quiet; the streamer, a daemon, logs at info.

use std::fmt;
use std::time::Instant;

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Logging")]
pub struct LogArgs {
    /// More log lines on stderr: -v info (start and stop lines, progress records), -vv debug
    /// (and the S3 client's diagnostics), -vvv trace.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Log level: error, warn, info, debug or trace (default: warn; info for `binlog stream`).
    /// Overrides -v.
    #[arg(long, value_name = "LEVEL", global = true, env = "MYVAULT_LOG_LEVEL")]
    pub log_level: Option<Level>,

    /// Log line format on stderr: `text` (timestamped lines) or `json` (one object per line).
    #[arg(long, value_name = "FORMAT", global = true, default_value = "text")]
    pub log_format: LogFormat,

    /// Seconds between progress records when stderr is not a terminal (at info level).
    #[arg(long, value_name = "SECONDS", global = true, default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub progress_interval: u64,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        })
    }
}

impl LogArgs {
    /// The level in force: `--log-level`, else the command's default raised by each `-v`.
    pub fn level(&self, default: Level) -> Level {
        const ORDER: [Level; 5] = [
            Level::Error,
            Level::Warn,
            Level::Info,
            Level::Debug,
            Level::Trace,
        ];
        self.log_level.unwrap_or_else(|| {
            let at = ORDER.iter().position(|l| *l == default).unwrap_or(1);
            ORDER[(at + usize::from(self.verbose)).min(ORDER.len() - 1)]
        })
    }
}

/// Which targets log at `level`: myvault's own at that level; other crates (the S3 client,
/// rustls) only their errors until debug, so that their chatter ("failed to load region
/// from IMDS" on every host that is not EC2) is there when asked for and never else: what
/// they report that matters reaches the operator as myvault's own error.
fn directives(level: Level) -> String {
    let others = if level >= Level::Debug {
        level
    } else {
        Level::Error
    };
    format!("{others},myvault={level}")
}

/// Installs the subscriber. Called once, before any work.
pub fn init(args: &LogArgs, level: Level) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(directives(level)))
        .with_writer(std::io::stderr)
        .with_timer(tracing_subscriber::fmt::time::ChronoUtc::rfc_3339())
        .with_ansi(false);
    // A second init (tests that run commands in-process) keeps the first subscriber.
    let _ = match args.log_format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The start and stop lines of one command run.
pub struct RunLog {
    command: &'static str,
    started: Instant,
}

impl RunLog {
    pub fn start(command: &'static str) -> RunLog {
        // argv with passwords in `mysql://` URLs masked: the sources and repositories as given.
        let args: Vec<String> = std::env::args().skip(1).collect();
        let args = crate::mysql::url::redact_passwords(&args.join(" "));
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            pid = std::process::id(),
            command,
            args = %args,
            "myvault {command} starting"
        );
        RunLog {
            command,
            started: Instant::now(),
        }
    }

    pub fn stop(self, result: &crate::error::Result<()>) {
        let seconds = self.started.elapsed().as_secs_f64();
        let command = self.command;
        match result {
            Ok(()) => tracing::info!(command, seconds, outcome = "ok", "myvault {command} done"),
            Err(e) => tracing::info!(
                command,
                seconds,
                outcome = "failed",
                kind = ?e.kind(),
                error = %e,
                "myvault {command} failed"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(verbose: u8, log_level: Option<Level>) -> LogArgs {
        LogArgs {
            verbose,
            log_level,
            ..LogArgs::default()
        }
    }

    #[test]
    fn each_v_raises_the_level_one_step_from_the_commands_default() {
        assert_eq!(args(0, None).level(Level::Warn), Level::Warn);
        assert_eq!(args(1, None).level(Level::Warn), Level::Info);
        assert_eq!(args(2, None).level(Level::Warn), Level::Debug);
        assert_eq!(args(3, None).level(Level::Warn), Level::Trace);
        assert_eq!(args(9, None).level(Level::Warn), Level::Trace);
        assert_eq!(args(0, None).level(Level::Info), Level::Info);
        assert_eq!(args(1, None).level(Level::Info), Level::Debug);
        assert_eq!(args(2, None).level(Level::Info), Level::Trace);
    }

    #[test]
    fn log_level_wins_over_v() {
        assert_eq!(args(3, Some(Level::Error)).level(Level::Info), Level::Error);
    }

    #[test]
    fn other_crates_speak_from_debug_on_only() {
        assert_eq!(directives(Level::Info), "error,myvault=info");
        assert_eq!(directives(Level::Warn), "error,myvault=warn");
        assert_eq!(directives(Level::Error), "error,myvault=error");
        assert_eq!(directives(Level::Debug), "debug,myvault=debug");
    }
}
