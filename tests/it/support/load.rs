//! Real load on test servers: sysbench, and SQL fixture files.

use std::process::{Child, Command, Stdio};

use super::TestServer;

fn sysbench(srv: &TestServer, db: &str, workload: &str, args: &[&str]) -> Command {
    let mut c = Command::new("sysbench");
    c.arg(workload)
        .arg("--db-driver=mysql")
        .arg("--mysql-host=127.0.0.1")
        .arg(format!("--mysql-port={}", srv.port()))
        .arg("--mysql-user=root")
        .arg(format!("--mysql-db={db}"))
        .args(args)
        .stdin(Stdio::null());
    c
}

/// `sysbench oltp_read_write prepare` into `db` (created if missing).
pub fn prepare(srv: &TestServer, db: &str, tables: u32, rows: u32) {
    srv.sql(&format!("CREATE DATABASE IF NOT EXISTS `{db}`"));
    let out = sysbench(
        srv,
        db,
        "oltp_read_write",
        &[
            &format!("--tables={tables}"),
            &format!("--table-size={rows}"),
            "--threads=2",
            "prepare",
        ],
    )
    .output()
    .expect("run sysbench (scripts/testbed installs it)");
    assert!(
        out.status.success(),
        "sysbench prepare failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running write load; stopped when dropped.
pub struct Load {
    child: Child,
}

impl Load {
    /// `oltp_write_only` with `threads` threads for at most `seconds`.
    pub fn start(
        srv: &TestServer,
        db: &str,
        tables: u32,
        rows: u32,
        threads: u32,
        seconds: u32,
    ) -> Load {
        let child = sysbench(
            srv,
            db,
            "oltp_write_only",
            &[
                &format!("--tables={tables}"),
                &format!("--table-size={rows}"),
                &format!("--threads={threads}"),
                &format!("--time={seconds}"),
                "--report-interval=0",
                // Keep going through errors a restart or kill of the server causes.
                "--mysql-ignore-errors=all",
                "run",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sysbench");
        Load { child }
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until every session of a stopped load has ended on `srv`: the server still runs
/// what a killed client had sent (a COMMIT among it) before it notices the client is gone,
/// so a checksum taken right after [`Load::stop`] can miss a transaction that commits a
/// moment later.
pub fn wait_for_idle(srv: &TestServer, db: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let busy = format!(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
         WHERE DB = '{db}' AND ID <> CONNECTION_ID()"
    );
    while srv.value(&busy).as_deref() != Some("0") {
        assert!(
            std::time::Instant::now() < deadline,
            "the stopped load's sessions are still open after 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Runs a fixture of statements separated by lines holding only `;;`.
pub fn run_fixture(srv: &TestServer, path: &str) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut s = srv.session();
    for stmt in text.split("\n;;\n") {
        let body: String = stmt
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        if body.trim().is_empty() {
            continue;
        }
        s.exec(body.trim())
            .unwrap_or_else(|e| panic!("fixture statement failed: {e}\n{body}"));
    }
}

/// Checksums of every table of `db`, by table name.
pub fn checksums(srv: &TestServer, db: &str) -> std::collections::BTreeMap<String, String> {
    let mut s = srv.session();
    let tables = s
        .query(&format!("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{db}' AND TABLE_TYPE = 'BASE TABLE' ORDER BY 1"))
        .expect("list tables");
    let names: Vec<String> = tables.iter().filter_map(|r| r.text_at(0)).collect();
    names
        .into_iter()
        .map(|t| {
            let v = s
                .query(&format!("CHECKSUM TABLE `{db}`.`{t}`"))
                .expect("checksum")
                .first()
                .and_then(|r| r.text_at(1))
                .unwrap_or_default();
            (t, v)
        })
        .collect()
}
