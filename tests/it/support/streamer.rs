//! A `myvault binlog stream` process under test: started, killed with -9, or stopped with
//! SIGTERM like systemd does.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct Streamer {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Streamer {
    pub fn start(source_url: &str, repo: &str, spool: &Path, extra: &[&str]) -> Streamer {
        Self::start_env(source_url, repo, spool, extra, &[])
    }

    pub fn start_env(
        source_url: &str,
        repo: &str,
        spool: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Streamer {
        let log = spool.with_extension(format!(
            "log{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let out = std::fs::File::create(&log).expect("streamer log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_myvault"));
        cmd.args(["binlog", "stream", "--source", source_url, "--repo", repo])
            .arg("--spool")
            .arg(spool)
            .args(["--heartbeat", "1"])
            .args(extra)
            .env("HOME", "/nonexistent")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        // Frequent uploads unless the test sets its own interval.
        if !extra.contains(&"--upload-interval") {
            cmd.args(["--upload-interval", "2"]);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start myvault binlog stream");
        Streamer {
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// kill -9: no chance to flush or upload anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then the exit code.
    pub fn terminate(&mut self) -> i32 {
        let Some(mut c) = self.child.take() else {
            return -1;
        };
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        c.wait().map(|s| s.code().unwrap_or(-1)).unwrap_or(-1)
    }

    /// Waits for the process to end by itself, returning its exit code.
    pub fn wait(&mut self) -> i32 {
        let Some(mut c) = self.child.take() else {
            return -1;
        };
        c.wait().map(|s| s.code().unwrap_or(-1)).unwrap_or(-1)
    }

    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Peak resident memory of the running process, KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Streamer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs a streamer with `--until-caught-up`: it stops once it has everything the source
/// has now.
pub fn drain(src: &super::TestServer, repo: &str, spool: &Path) {
    let mut s = Streamer::start(&src.url(), repo, spool, &["--until-caught-up"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    while s.running() {
        assert!(
            std::time::Instant::now() < deadline,
            "the streamer did not catch up:\n{}",
            s.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(s.wait(), 0, "the catch-up run failed:\n{}", s.log_text());
}

/// `myvault binlog fetch --repo REPO --dest DEST` with `env` (for an S3 repository).
pub fn fetch(repo: &str, dest: &Path, env: &[(&str, &str)]) -> super::Run {
    let dest = dest.to_str().expect("test paths are UTF-8");
    super::myvault_env(&["binlog", "fetch", "--repo", repo, "--dest", dest], env)
}
