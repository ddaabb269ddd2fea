//! The only place that decides the process exit code.

use std::process::ExitCode;

use clap::Parser;
use myvault::cli::{self, Cli};
use myvault::error::ErrorKind;

/// Exit codes are part of the public interface (see `docs/operator-guide.md`); never renumber.
fn exit_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Internal => 1,
        ErrorKind::Usage => 2,
        ErrorKind::SourceUnreachable => 3,
        ErrorKind::AccessDenied => 4,
        ErrorKind::Protocol => 5,
        ErrorKind::SourceNotReady => 6,
        ErrorKind::RepoLocked => 7,
        ErrorKind::Integrity => 8,
        ErrorKind::PartialSuccess => 9,
        ErrorKind::Storage => 10,
        ErrorKind::BinlogGap => 11,
        ErrorKind::TargetRefused => 12,
        ErrorKind::NotFound => 13,
        ErrorKind::Interrupted => 130,
    }
}

/// Keeps resident memory near what is in use. By default glibc raises its mmap threshold
/// after each large free and gives every thread its own arena, so the multi-MiB chunk and
/// pack buffers that pass through stay resident as heap fragments; myvault promises memory
/// that does not grow with the data.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1024 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help and version to stdout with success, usage errors to stderr.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("myvault: {e}");
            ExitCode::from(exit_code(e.kind()))
        }
    }
}
