//! mysqld processes that myvault starts itself: temporary servers for datadir PITR and restore
//! tests, clone recipients, and the instances of the test suite.
//!
//! A server here is started with `--no-defaults` and every setting on the command line, so
//! nothing from the host's my.cnf leaks in.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::mysql::server_info::Flavor;
use crate::mysql::wire::{ConnectOptions, SslOptions};
use crate::mysql::{self, session::Session};
use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot run {binary}: {source}")]
    Spawn {
        binary: String,
        source: std::io::Error,
    },
    #[error("{what} failed{status}; last lines of {log}:\n{tail}")]
    Failed {
        what: String,
        status: String,
        log: String,
        tail: String,
    },
    #[error(
        "the server on {datadir} was not ready after {seconds} s; last lines of {log}:\n{tail}"
    )]
    NotReady {
        datadir: String,
        seconds: u64,
        log: String,
        tail: String,
    },
    #[error("{0}")]
    Io(String),
}

/// A mysqld or mariadbd binary and the flavor it belongs to.
#[derive(Debug, Clone)]
pub struct Mysqld {
    pub binary: PathBuf,
    pub flavor: Flavor,
}

impl Mysqld {
    /// Identifies the binary by its `--version` output.
    pub fn detect(binary: &Path) -> Result<Mysqld, ServerError> {
        let out = Command::new(binary)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map_err(|source| ServerError::Spawn {
                binary: binary.display().to_string(),
                source,
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let flavor = if text.contains("MariaDB") {
            Flavor::Mariadb
        } else {
            Flavor::Mysql
        };
        Ok(Mysqld {
            binary: binary.to_path_buf(),
            flavor,
        })
    }

    pub fn version(&self) -> Result<String, ServerError> {
        let out = Command::new(&self.binary)
            .arg("--version")
            .output()
            .map_err(|source| ServerError::Spawn {
                binary: self.binary.display().to_string(),
                source,
            })?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Creates a fresh datadir with a root account without password, reachable only through
    /// the local socket and 127.0.0.1 of the server we start ourselves.
    pub fn initialize(&self, datadir: &Path, log: &Path) -> Result<(), ServerError> {
        let mut cmd = match self.flavor {
            Flavor::Mysql => {
                let mut c = Command::new(&self.binary);
                c.arg("--no-defaults")
                    .arg(format!("--datadir={}", datadir.display()))
                    .arg("--initialize-insecure")
                    .arg(format!("--log-error={}", log.display()));
                c
            }
            Flavor::Mariadb => {
                // mariadb-install-db sits next to the server's bin directory.
                let install = self
                    .binary
                    .parent()
                    .and_then(Path::parent)
                    .map(|p| p.join("bin/mariadb-install-db"))
                    .filter(|p| p.exists())
                    .unwrap_or_else(|| PathBuf::from("mariadb-install-db"));
                let mut c = Command::new(install);
                c.arg("--no-defaults")
                    .arg(format!("--datadir={}", datadir.display()))
                    .arg("--auth-root-authentication-method=normal")
                    .arg("--skip-test-db");
                c
            }
        };
        if is_root() {
            cmd.arg("--user=root");
        }
        let log_file = std::fs::File::create(log)
            .map_err(|e| ServerError::Io(format!("{}: {e}", log.display())))?;
        let log_err = log_file
            .try_clone()
            .map_err(|e| ServerError::Io(e.to_string()))?;
        let status = cmd
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .status()
            .map_err(|source| ServerError::Spawn {
                binary: self.binary.display().to_string(),
                source,
            })?;
        if !status.success() {
            return Err(ServerError::Failed {
                what: format!("initialising {}", datadir.display()),
                status: describe_status(status),
                log: log.display().to_string(),
                tail: tail(log, 20),
            });
        }
        Ok(())
    }
}

/// How to run one server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub datadir: PathBuf,
    /// Directory for the socket, pid file and error log.
    pub rundir: PathBuf,
    pub port: u16,
    pub bind_address: String,
    pub server_id: u32,
    pub binlog: bool,
    pub gtid: bool,
    /// More `--option=value` arguments, appended last so they win.
    pub extra: Vec<String>,
    /// Kill the server when the thread that started it dies (temporary servers).
    pub die_with_parent: bool,
    /// Listen on TCP; without it, only the socket (temporary servers on restored data).
    pub network: bool,
    /// Start without privilege checks: the server on a restored datadir has the source's
    /// accounts, whose passwords myvault does not know. Implies no networking.
    pub skip_grants: bool,
}

impl ServerConfig {
    pub fn new(datadir: PathBuf, rundir: PathBuf, port: u16, server_id: u32) -> ServerConfig {
        ServerConfig {
            datadir,
            rundir,
            port,
            bind_address: "127.0.0.1".into(),
            server_id,
            binlog: true,
            gtid: true,
            extra: Vec::new(),
            die_with_parent: false,
            network: true,
            skip_grants: false,
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.rundir.join("mysqld.sock")
    }

    pub fn error_log(&self) -> PathBuf {
        self.rundir.join("error.log")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.rundir.join("mysqld.pid")
    }

    fn args(&self, flavor: Flavor) -> Vec<String> {
        let mut a = vec![
            "--no-defaults".to_string(),
            format!("--datadir={}", self.datadir.display()),
            format!("--port={}", self.port),
            format!("--bind-address={}", self.bind_address),
            format!("--socket={}", self.socket().display()),
            format!("--pid-file={}", self.pid_file().display()),
            format!("--log-error={}", self.error_log().display()),
            format!("--server-id={}", self.server_id),
            "--secure-file-priv=".to_string(),
            "--local-infile=1".to_string(),
        ];
        if is_root() {
            a.push("--user=root".into());
        }
        if self.skip_grants {
            a.push("--skip-grant-tables".into());
        }
        if !self.network || self.skip_grants {
            a.push("--skip-networking".into());
        }
        match flavor {
            Flavor::Mysql => {
                a.push("--mysqlx=OFF".into());
                if self.binlog {
                    a.push("--log-bin=binlog".into());
                    a.push("--log-replica-updates=ON".into());
                } else {
                    a.push("--skip-log-bin".into());
                }
                // Explicit either way: the default changed to ON in MySQL 9.x.
                let gtid = if self.gtid { "ON" } else { "OFF" };
                a.push(format!("--gtid-mode={gtid}"));
                a.push(format!("--enforce-gtid-consistency={gtid}"));
            }
            Flavor::Mariadb => {
                if self.binlog {
                    a.push("--log-bin=mysql-bin".into());
                    a.push("--binlog-format=ROW".into());
                    a.push("--log-slave-updates=ON".into());
                }
                if self.gtid {
                    a.push("--gtid-strict-mode=ON".into());
                }
            }
        }
        a.extend(self.extra.iter().cloned());
        a
    }
}

/// A server we started. Dropping it kills the process; call [`RunningServer::shutdown`] for a
/// clean stop.
pub struct RunningServer {
    child: Option<Child>,
    mysqld: Mysqld,
    config: ServerConfig,
}

impl RunningServer {
    pub fn start(
        mysqld: &Mysqld,
        config: ServerConfig,
        ready_timeout: Duration,
    ) -> Result<RunningServer, ServerError> {
        std::fs::create_dir_all(&config.rundir).map_err(|e| {
            ServerError::Io(format!("cannot create {}: {e}", config.rundir.display()))
        })?;
        let mut server = RunningServer {
            child: None,
            mysqld: mysqld.clone(),
            config,
        };
        server.spawn()?;
        server.wait_ready(ready_timeout)?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<(), ServerError> {
        let mut cmd = Command::new(&self.mysqld.binary);
        cmd.args(self.config.args(self.mysqld.flavor))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.config.die_with_parent {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().map_err(|source| ServerError::Spawn {
            binary: self.mysqld.binary.display().to_string(),
            source,
        })?;
        self.child = Some(child);
        Ok(())
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    pub fn flavor(&self) -> Flavor {
        self.mysqld.flavor
    }

    pub fn port(&self) -> u16 {
        self.config.port
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Root without password (as initialised, or with grants skipped): over TCP on
    /// 127.0.0.1, or over the socket when the server does not listen on TCP.
    pub fn root_options(&self) -> ConnectOptions {
        let tcp = self.config.network && !self.config.skip_grants;
        ConnectOptions {
            host: "127.0.0.1".into(),
            port: self.config.port,
            socket: (!tcp).then(|| self.config.socket().display().to_string()),
            user: "root".into(),
            password: Secret::default(),
            password_origin: None,
            ssl: SslOptions::default(),
            connect_timeout: Duration::from_secs(5),
            read_timeout: None,
        }
    }

    pub fn session(&self) -> Result<Session, mysql::Error> {
        Session::connect(&self.root_options())
    }

    /// Waits until the server accepts a root login, the process dies, or time runs out.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), ServerError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status()? {
                return Err(self.failed("starting the server", Some(status)));
            }
            if self.session().is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ServerError::NotReady {
                    datadir: self.config.datadir.display().to_string(),
                    seconds: timeout.as_secs(),
                    log: self.config.error_log().display().to_string(),
                    tail: tail(&self.config.error_log(), 20),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn try_exit_status(&mut self) -> Result<Option<ExitStatus>, ServerError> {
        match &mut self.child {
            Some(child) => child.try_wait().map_err(|e| ServerError::Io(e.to_string())),
            None => Ok(None),
        }
    }

    fn failed(&self, what: &str, status: Option<ExitStatus>) -> ServerError {
        ServerError::Failed {
            what: what.to_string(),
            status: status.map(describe_status).unwrap_or_default(),
            log: self.config.error_log().display().to_string(),
            tail: tail(&self.config.error_log(), 20),
        }
    }

    /// Waits for the process to exit by itself (after `SHUTDOWN`, or the restart a clone
    /// recipient performs), returning its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<i32>, ServerError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status()? {
                self.child = None;
                return Ok(status.code());
            }
            if Instant::now() >= deadline {
                return Err(self.failed("waiting for the server to exit", None));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts the process again with the same settings (after it exited).
    pub fn restart(&mut self, ready_timeout: Duration) -> Result<(), ServerError> {
        if self.child.is_some() {
            self.stop(Duration::from_secs(120))?;
        }
        self.spawn()?;
        self.wait_ready(ready_timeout)
    }

    /// A clean stop: SIGTERM (mysqld shuts down as for SHUTDOWN), then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) -> Result<(), ServerError> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
        self.child = None;
        Ok(())
    }

    /// Stops the process at once (kill -9), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn shutdown(mut self) -> Result<(), ServerError> {
        self.stop(Duration::from_secs(120))
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!(" (exit code {code})"),
        (None, Some(sig)) => format!(" (killed by signal {sig})"),
        _ => String::new(),
    }
}

/// The last `n` lines of a log file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
