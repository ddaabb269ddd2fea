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
        ErrorKind::Unhealthy => 14,
        ErrorKind::Conflict => 15,
        ErrorKind::TableExists => 16,
        ErrorKind::Interrupted => 130,
    }
}

/// Keeps resident memory near what is in use without paying page faults on every chunk.
/// By default glibc raises its mmap threshold after each large free and gives every thread its
/// own arena, so the multi-MiB buffers that pass through could stay resident as heap fragments
/// (myvault promises memory that does not grow with the data): hence two arenas and a fixed
/// threshold. At 256 KiB every chunk-sized buffer (~1 MiB) was mapped, faulted in page by page
/// and unmapped again, a third of a restore's client CPU and half of `backup --path`'s time on
/// incompressible data; at 4 MiB chunks come from the heap and only pack-sized buffers (reused
/// by the writer anyway) are mapped. Peak RSS of `backup --path`: 100, 117 and 127 MiB for
/// 1.5, 4.5 and 9 GB files.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 * 1024 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 16 * 1024 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Hides passwords given in `mysql://` URLs from `ps` and `/proc/PID/cmdline`, as the mysql
/// client does for `-p`: the kernel shows the process's own argv memory, so overwriting it once
/// the arguments are parsed (std copied them) hides them from then on. The URL stays
/// discouraged (shell history; the first milliseconds): see the operator guide.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod process_title {
    use std::ffi::{CStr, c_char, c_int};
    use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

    static ARGC: AtomicUsize = AtomicUsize::new(0);
    static ARGV: AtomicPtr<*mut c_char> = AtomicPtr::new(std::ptr::null_mut());

    /// glibc calls `.init_array` functions with the program's argc and argv; std learns its
    /// arguments the same way.
    #[used]
    #[unsafe(link_section = ".init_array")]
    static CAPTURE: extern "C" fn(c_int, *mut *mut c_char, *mut *mut c_char) = capture;

    extern "C" fn capture(argc: c_int, argv: *mut *mut c_char, _env: *mut *mut c_char) {
        ARGC.store(usize::try_from(argc).unwrap_or(0), Ordering::Relaxed);
        ARGV.store(argv, Ordering::Relaxed);
    }

    pub fn hide_passwords() {
        let argv = ARGV.load(Ordering::Relaxed);
        if argv.is_null() {
            return;
        }
        for i in 0..ARGC.load(Ordering::Relaxed) {
            // SAFETY: glibc passed argc valid NUL-terminated strings that live as long as the
            // process; only bytes before each terminator are overwritten, and nothing else
            // holds a reference into them (std copied the arguments when clap read them).
            unsafe {
                let arg = *argv.add(i);
                if arg.is_null() {
                    continue;
                }
                let len = CStr::from_ptr(arg).to_bytes().len();
                let bytes = std::slice::from_raw_parts_mut(arg.cast::<u8>(), len);
                let span = std::str::from_utf8(bytes)
                    .ok()
                    .and_then(myvault::mysql::url::password_span);
                if let Some(span) = span {
                    bytes[span].fill(b'x');
                }
            }
        }
    }
}

/// Under `--json`, a failure is one JSON object on stdout too (the one-line message stays on
/// stderr), unless the command already printed its report there: stdout holds one document.
fn json_error(code: u8, kind: &str, message: &str) {
    if myvault::cli::output::wrote_stdout() {
        return;
    }
    let doc = serde_json::json!({
        "error": { "exit_code": code, "kind": kind, "message": message }
    });
    println!("{doc}");
}

fn main() -> ExitCode {
    tune_allocator();
    // Known before parsing, so that a usage error under --json is JSON too.
    let json = std::env::args().skip(1).any(|a| a == "--json");
    let parsed = Cli::try_parse();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    process_title::hide_passwords();
    let cli = match parsed {
        Ok(cli) => cli,
        // Usage errors quote the offending argument, which may be a URL with a password.
        Err(e) if e.use_stderr() => {
            let text = myvault::mysql::url::redact_passwords(&e.render().to_string());
            eprint!("{text}");
            if json {
                let first = text.lines().next().unwrap_or_default();
                json_error(2, "Usage", first.trim_start_matches("error: "));
            }
            return ExitCode::from(2);
        }
        // Help and version go to stdout, with success.
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("myvault: {e}");
            let code = exit_code(e.kind());
            if json {
                json_error(code, &format!("{:?}", e.kind()), &e.to_string());
            }
            ExitCode::from(code)
        }
    }
}
