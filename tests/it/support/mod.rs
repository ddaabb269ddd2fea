//! Real servers for integration tests: MySQL 9.7 and MariaDB 10.11 instances and an S3 server,
//! each fresh per test and removed afterwards, also when the test panics.
//!
//! The testbed (`scripts/testbed`) provides the binaries and initialised template datadirs.
//! When it is missing, tests fail with the command to run: they never skip.

#![allow(dead_code)]

pub mod load;
pub mod s3;
pub mod streamer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use myvault::mysql::session::Session;
use myvault::server::{Mysqld, RunningServer, ServerConfig};

pub struct Testbed {
    env: HashMap<String, String>,
}

impl Testbed {
    pub fn get(&self, key: &str) -> &str {
        self.env.get(key).unwrap_or_else(|| {
            panic!("{key} missing from the testbed env file: run scripts/testbed")
        })
    }

    pub fn path(&self, key: &str) -> PathBuf {
        PathBuf::from(self.get(key))
    }
}

/// The provisioned testbed. Panics (so the test fails) when it is not there.
pub fn testbed() -> &'static Testbed {
    static TB: OnceLock<Testbed> = OnceLock::new();
    TB.get_or_init(|| {
        let dir = std::env::var("MYVAULT_TESTBED").unwrap_or_else(|_| "/opt/myvault-testbed".into());
        let file = Path::new(&dir).join("testbed.env");
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
            panic!(
                "the test bed is not provisioned ({}: {e}); run `scripts/testbed` as root (scripts/test does it)",
                file.display()
            )
        });
        let env = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        Testbed { env }
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Mysql97,
    Mariadb1011,
}

impl Flavor {
    fn binary_and_template(self) -> (PathBuf, PathBuf) {
        let tb = testbed();
        match self {
            Flavor::Mysql97 => (tb.path("MYVAULT_MYSQLD_97"), tb.path("MYVAULT_TEMPLATE_97")),
            Flavor::Mariadb1011 => (
                tb.path("MYVAULT_MARIADBD_1011"),
                tb.path("MYVAULT_TEMPLATE_1011"),
            ),
        }
    }
}

/// A unique server_id per instance in this test process.
pub fn next_server_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = (std::process::id() % 1000) * 1000 + 100;
    base + NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A scratch directory removed on drop.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let path = tempfile::Builder::new()
            .prefix(&format!("mv-{tag}-"))
            .tempdir_in(std::env::var("MYVAULT_TEST_TMP").unwrap_or_else(|_| "/tmp".into()))
            .expect("create scratch dir")
            .keep();
        Scratch { path }
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

pub struct TestServer {
    pub server: RunningServer,
    pub flavor: Flavor,
    pub dir: Scratch,
}

type FillDatadir = Box<dyn FnOnce(&Path)>;

pub struct ServerBuilder {
    flavor: Flavor,
    binlog: bool,
    gtid: bool,
    extra: Vec<String>,
    empty_datadir: bool,
    /// Fills the data directory instead of copying the template (a restored snapshot).
    fill_datadir: Option<FillDatadir>,
    port: Option<u16>,
}

impl ServerBuilder {
    pub fn option(mut self, opt: &str) -> Self {
        self.extra.push(opt.to_string());
        self
    }

    pub fn no_binlog(mut self) -> Self {
        self.binlog = false;
        self
    }

    pub fn no_gtid(mut self) -> Self {
        self.gtid = false;
        self
    }

    /// Starts on a data directory that `fill` writes (it gets the path, which does not exist yet).
    pub fn datadir_from(mut self, fill: impl FnOnce(&Path) + 'static) -> Self {
        self.fill_datadir = Some(Box::new(fill));
        self
    }

    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    pub fn start(mut self) -> TestServer {
        let (binary, template) = self.flavor.binary_and_template();
        let mysqld = Mysqld::detect(&binary).expect("detect mysqld");
        let dir = Scratch::new("srv");
        let datadir = dir.join("data");
        if let Some(fill) = self.fill_datadir.take() {
            fill(&datadir);
        } else if !self.empty_datadir {
            let status = Command::new("cp")
                .args(["-a", "--reflink=auto"])
                .arg(&template)
                .arg(&datadir)
                .status()
                .expect("cp template datadir");
            assert!(status.success(), "copying {} failed", template.display());
        }
        let mut last_err = None;
        // A free port can be taken between our probe and the server's bind: retry.
        for _ in 0..3 {
            let port = self
                .port
                .unwrap_or_else(|| myvault::server::free_port().expect("free port"));
            let mut cfg =
                ServerConfig::new(datadir.clone(), dir.join("run"), port, next_server_id());
            cfg.binlog = self.binlog;
            cfg.gtid = self.gtid;
            cfg.die_with_parent = true;
            cfg.extra = vec![
                "--innodb-buffer-pool-size=128M".into(),
                "--innodb-redo-log-capacity=64M".into(),
                "--performance-schema-max-table-instances=200".into(),
            ];
            if self.flavor == Flavor::Mariadb1011 {
                cfg.extra.retain(|o| !o.starts_with("--innodb-redo"));
                cfg.extra.push("--innodb-log-file-size=64M".into());
            }
            cfg.extra.extend(self.extra.iter().cloned());
            match RunningServer::start(&mysqld, cfg, Duration::from_secs(90)) {
                Ok(server) => {
                    return TestServer {
                        server,
                        flavor: self.flavor,
                        dir,
                    };
                }
                Err(e) => last_err = Some(e),
            }
        }
        panic!(
            "cannot start {:?}: {}",
            self.flavor,
            last_err.expect("an error")
        );
    }
}

impl TestServer {
    pub fn builder(flavor: Flavor) -> ServerBuilder {
        ServerBuilder {
            flavor,
            binlog: true,
            gtid: true,
            extra: Vec::new(),
            empty_datadir: false,
            fill_datadir: None,
            port: None,
        }
    }

    pub fn mysql97() -> TestServer {
        Self::builder(Flavor::Mysql97).start()
    }

    pub fn mariadb1011() -> TestServer {
        Self::builder(Flavor::Mariadb1011).start()
    }

    /// A MySQL 9.7 started on the data directory `myvault restore --datadir` makes of the
    /// repository's latest snapshot.
    pub fn restored_from(repo: &str) -> TestServer {
        let repo = repo.to_string();
        Self::builder(Flavor::Mysql97)
            .datadir_from(move |d| {
                myvault(&["restore", "--repo", &repo, "--datadir", d.to_str().unwrap()])
                    .expect_code(0);
            })
            .start()
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// `mysql://root@127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port())
    }

    pub fn url_as(&self, user: &str, password: &str) -> String {
        format!("mysql://{user}:{password}@127.0.0.1:{}", self.port())
    }

    pub fn datadir(&self) -> PathBuf {
        self.server.config().datadir.clone()
    }

    pub fn session(&self) -> Session {
        self.server.session().expect("root session")
    }

    /// Runs statements separated by `;\n` as root.
    pub fn sql(&self, statements: &str) {
        let mut s = self.session();
        for stmt in statements
            .split(";\n")
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            s.exec(stmt)
                .unwrap_or_else(|e| panic!("`{stmt}` failed: {e}"));
        }
    }

    /// The account replicas of this server use in the tests: `repl` / `Repl-1`.
    pub fn add_replication_user(&self) {
        self.sql("CREATE USER 'repl'@'%' IDENTIFIED BY 'Repl-1';\nGRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'repl'@'%'");
    }

    /// The binlog file the server writes now.
    pub fn current_binlog(&self) -> String {
        let mut s = self.session();
        let sql = s.info().binlog_status_sql();
        s.query(sql)
            .expect("binlog status")
            .first()
            .and_then(|r| r.text("File"))
            .expect("the binary log is on")
    }

    /// Makes this server a replica of `source` (GTID auto-positioning), not started.
    pub fn replicate_from(&self, source: &TestServer, user: &str, password: &str) {
        self.sql(&format!(
            "CHANGE REPLICATION SOURCE TO SOURCE_HOST='127.0.0.1', SOURCE_PORT={}, SOURCE_USER='{user}', SOURCE_PASSWORD='{password}', SOURCE_AUTO_POSITION=1, GET_SOURCE_PUBLIC_KEY=1",
            source.port()
        ));
    }

    /// Replicates exactly up to `gtids` and stops there: the independent truth of what a
    /// restore to that point must hold.
    pub fn replicate_until(&self, gtids: &str) {
        self.sql(&format!("START REPLICA UNTIL SQL_AFTER_GTIDS = '{gtids}'"));
        let deadline = std::time::Instant::now() + Duration::from_secs(180);
        while self
            .value("SELECT SERVICE_STATE FROM performance_schema.replication_applier_status")
            .as_deref()
            != Some("OFF")
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the replica did not reach {gtids}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.sql("STOP REPLICA");
    }

    pub fn gtid_executed(&self) -> myvault::mysql::gtid::GtidSet {
        myvault::mysql::gtid::GtidSet::parse(
            &self
                .value("SELECT @@GLOBAL.gtid_executed")
                .unwrap_or_default(),
        )
        .expect("gtid_executed parses")
    }

    pub fn value(&self, sql: &str) -> Option<String> {
        self.session()
            .query_value(sql)
            .unwrap_or_else(|e| panic!("`{sql}` failed: {e}"))
    }
}

/// The Debian package of the binary under test (`scripts/package --binary`), built once per
/// test process: the package and systemd tests share it.
pub fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/package"))
            .args(["--binary", env!("CARGO_BIN_EXE_myvault"), "--out"])
            .arg(Path::new(env!("CARGO_TARGET_TMPDIR")).join("deb"))
            .output()
            .expect("run scripts/package");
        assert!(
            out.status.success(),
            "scripts/package failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// Polls `check` every 500 ms until it returns `Some`, for at most `limit`; what it returned
/// and how long that took.
#[track_caller]
pub fn within<T>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> (T, Duration) {
    let start = std::time::Instant::now();
    loop {
        if let Some(t) = check() {
            return (t, start.elapsed());
        }
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The result of running the myvault binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "expected exit code {code}, got {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// The environment entry that arms failpoints (`name=sleep(MS)`, `name=abort(N)`, `;`-separated).
/// Fails the test when the binary was built without them: a fault test that cannot fault
/// would pass without testing anything.
#[track_caller]
pub fn failpoints(spec: &str) -> (&'static str, &str) {
    if !myvault::failpoint::ENABLED {
        panic!(
            "this test needs failpoints: run `cargo test --features failpoints` (scripts/test does)"
        );
    }
    ("MYVAULT_FAILPOINTS", spec)
}

/// Runs `myvault ARGS` with a clean environment (no MYVAULT_* or AWS_* from the caller).
pub fn myvault(args: &[&str]) -> Run {
    myvault_env(args, &[])
}

/// `myvault verify --repo REPO --restore-test --mysqld <the testbed's 9.7> --json EXTRA...`.
pub fn restore_test(repo: &str, extra: &[&str]) -> Run {
    let mysqld = testbed().path("MYVAULT_MYSQLD_97");
    let mut args = vec![
        "verify",
        "--repo",
        repo,
        "--restore-test",
        "--mysqld",
        mysqld.to_str().expect("testbed paths are UTF-8"),
        "--json",
    ];
    args.extend_from_slice(extra);
    myvault(&args)
}

/// `myvault backup --method cold --datadir DATADIR --repo REPO --json`.
pub fn cold_backup(datadir: &Path, repo: &str) -> Run {
    let datadir = datadir.to_str().expect("test paths are UTF-8");
    myvault(&[
        "backup",
        "--method",
        "cold",
        "--datadir",
        datadir,
        "--repo",
        repo,
        "--json",
    ])
}

pub fn myvault_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    Run::from(myvault_command(args, env).output().expect("run myvault"))
}

/// `myvault ARGS` running in the background (for commands the test interacts with while
/// they run); `Background::finish` collects it.
pub struct Background(std::process::Child);

impl Background {
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Background {
        let mut cmd = myvault_command(args, env);
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        Background(cmd.spawn().expect("start myvault"))
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    pub fn running(&mut self) -> bool {
        self.0.try_wait().ok().flatten().is_none()
    }

    pub fn finish(self) -> Run {
        Run::from(self.0.wait_with_output().expect("wait for myvault"))
    }
}

fn myvault_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_myvault"));
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("MYVAULT_") || k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    // Keep ~/.my.cnf of the machine out of the tests.
    cmd.env("HOME", "/nonexistent");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}
