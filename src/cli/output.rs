//! How results reach the user: human text on stdout, or one JSON object with `--json`.

use std::io::Write;

use serde::Serialize;

/// Writes one line to stdout. SIGPIPE stays ignored in myvault, because TLS sockets write with
/// `writev`, where a peer that went away would otherwise kill the process silently; a closed
/// stdout is handled here instead, by ending quietly like other Unix tools.
/// Whether this process has written command output to stdout (so that an error under
/// `--json` is reported as an object only when no report was printed: one JSON document).
static WROTE_STDOUT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn wrote_stdout() -> bool {
    WROTE_STDOUT.load(std::sync::atomic::Ordering::Relaxed)
}

pub fn write_line(args: std::fmt::Arguments) {
    WROTE_STDOUT.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => tracing::error!("cannot write to stdout: {e}"),
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Output {
    pub json: bool,
    pub quiet: bool,
    /// Time between progress records when stderr is not a terminal.
    pub progress_interval: std::time::Duration,
}

/// When the last progress record was logged (one command per process, so one clock).
static LAST_PROGRESS_RECORD: std::sync::Mutex<Option<std::time::Instant>> =
    std::sync::Mutex::new(None);

impl Output {
    /// Prints `value` as one JSON object (with `--json`) or calls `human` to print text.
    pub fn report<T: Serialize>(&self, value: &T, human: impl FnOnce(&T)) {
        if self.json {
            match to_json(value) {
                Ok(s) => outln!("{s}"),
                Err(e) => tracing::error!("cannot encode JSON output: {e}"),
            }
        } else if !self.quiet {
            human(value);
        }
    }

    /// A progress or status line on stderr, unless `--quiet` or `--json`.
    pub fn status(&self, line: impl AsRef<str>) {
        if !self.quiet && !self.json {
            eprintln!("{}", line.as_ref());
        }
    }
}

/// Field names that predate the naming scheme (operator guide, "JSON output"): instants are
/// `time` or end in `_time`. Each older name stays, for scripts written against it, and its
/// canonical twin is written beside it with the same value.
const INSTANT_ALIASES: [(&str, &str); 11] = [
    ("created", "created_time"),
    ("started", "started_time"),
    ("latest_restorable", "latest_restorable_time"),
    ("checked_at", "checked_time"),
    ("evaluated_at", "evaluated_time"),
    ("updated_at", "updated_time"),
    ("status_written_at", "status_written_time"),
    ("last_commit", "last_commit_time"),
    ("complete_until", "complete_until_time"),
    ("last_upload", "last_upload_time"),
    ("failing_since", "failing_since_time"),
];

/// `value` as pretty JSON in the documented naming scheme: every command's `--json` and the
/// streamer's `status.json` go through here, so the scheme is applied in one place.
pub fn to_json<T: Serialize>(value: &T) -> serde_json::Result<String> {
    let mut doc = serde_json::to_value(value)?;
    add_canonical_names(&mut doc);
    serde_json::to_string_pretty(&doc)
}

fn add_canonical_names(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for (old, new) in INSTANT_ALIASES {
                if let Some(value) = map.get(old).cloned() {
                    map.entry(new).or_insert(value);
                }
            }
            map.values_mut().for_each(add_canonical_names);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(add_canonical_names),
        _ => {}
    }
}

/// How fast long work goes and when it will end, for progress lines (on a terminal and in
/// the periodic log records alike): `45.1k rows/s`, `3m 10s left`.
pub struct Pace {
    started: std::time::Instant,
}

impl Pace {
    pub fn start() -> Pace {
        Pace {
            started: std::time::Instant::now(),
        }
    }

    /// `count` units since the start, per second.
    pub fn rate(&self, count: u64, unit: &str) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        format!("{}{unit}/s", si(count as f64 / secs))
    }

    /// The time left if the rest of `total` goes as fast as the `done` part did; empty until
    /// some of it is done (nothing to judge by), and when all is.
    pub fn left(&self, done: u64, total: u64) -> String {
        if done == 0 || done >= total {
            return String::new();
        }
        let spent = self.started.elapsed().as_secs_f64();
        let rest = (spent * (total - done) as f64 / done as f64).round() as u64;
        match (rest / 3600, rest / 60 % 60, rest % 60) {
            (0, 0, s) => format!("{s}s left"),
            (0, m, s) => format!("{m}m {s:02}s left"),
            (h, m, _) => format!("{h}h {m:02}m left"),
        }
    }
}

/// `950`, `45.1k`, `1.2M`: a rate at a glance.
fn si(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{:.1}M", v / 1e6),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

/// `1.5 GiB`, `312.0 MiB`, `17 B`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

impl Output {
    /// A progress line that rewrites itself on a terminal; elsewhere (journald, a cron mail)
    /// a `progress` log record at info level every `progress_interval`, so that the log of a
    /// two-hour restore shows how far it got.
    pub fn progress(&self, line: &str) {
        use std::io::{IsTerminal, Write};
        if !std::io::stderr().is_terminal() {
            self.progress_record(line);
            return;
        }
        if self.quiet || self.json {
            return;
        }
        let mut err = std::io::stderr();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
    }

    fn progress_record(&self, line: &str) {
        let now = std::time::Instant::now();
        let mut last = LAST_PROGRESS_RECORD
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // The first call only starts the clock: work shorter than the interval logs nothing.
        let due = last.get_or_insert(now);
        if now.duration_since(*due) >= self.progress_interval {
            *due = now;
            tracing::info!(progress = line, "{line}");
        }
    }

    /// Clears the progress line.
    pub fn progress_done(&self) {
        use std::io::{IsTerminal, Write};
        if self.quiet || self.json || !std::io::stderr().is_terminal() {
            return;
        }
        let _ = write!(std::io::stderr(), "\r\x1b[2K");
    }
}

impl Output {
    /// Runs `work` while a terminal shows `status()` every half second.
    pub fn with_ticker<R>(
        &self,
        status: impl Fn() -> String + Sync,
        work: impl FnOnce() -> R,
    ) -> R {
        // The ticker wakes as soon as the work ends (the sender is dropped), so it never
        // adds its interval to the command's run time.
        let (stop, ticks) = std::sync::mpsc::channel::<()>();
        let status = &status;
        let result = std::thread::scope(|s| {
            s.spawn(move || {
                self.progress(&status());
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    ticks.recv_timeout(std::time::Duration::from_millis(500))
                {
                    self.progress(&status());
                }
            });
            let r = work();
            drop(stop);
            r
        });
        self.progress_done();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_says_nothing_of_time_left_until_it_has_something_to_judge_by() {
        let pace = Pace::start();
        assert_eq!(pace.left(0, 10), "");
        assert_eq!(pace.left(10, 10), "");
        std::thread::sleep(std::time::Duration::from_millis(20));
        // A tenth done in ~20 ms: nine tenths are left, well under a minute.
        let left = pace.left(1, 10);
        assert!(left.ends_with("s left") && !left.contains('m'), "{left}");
        assert!(pace.rate(5_000_000, " rows").ends_with("M rows/s"));
    }

    #[test]
    fn canonical_twins_are_added_beside_older_names_at_every_depth() {
        let mut doc = serde_json::json!({
            "checked_at": "t1",
            "repos": [{"last_commit": "t2", "last_commit_time": "kept"}],
        });
        add_canonical_names(&mut doc);
        assert_eq!(doc["checked_time"], "t1");
        assert_eq!(doc["checked_at"], "t1");
        // A field already carrying the canonical name is never overwritten.
        assert_eq!(doc["repos"][0]["last_commit_time"], "kept");
    }
}
