//! The package's units under a live systemd (issue 19, "Done when"): the .deb installed into a
//! Debian bookworm root with systemd (`scripts/testbed`: MYVAULT_SYSTEMD_ROOT), booted with
//! `systemd-nspawn -b`, configured as the operator guide says (one source, a local and an S3
//! repository, secrets in files the units read), run by the timer's service and the streamer's
//! service with their shipped sandboxes, watched through `status` and `/metrics` across an S3
//! outage, pruned by the config's calendar policy, and restored to a point in time into a
//! target with its own login; journald holds the runs' start and stop lines.
//!
//! The container shares the host's network (the MySQL and S3 servers the test starts on
//! 127.0.0.1 are reachable from inside, and the streamer's /metrics from outside). It is
//! entered with `nsenter` on its init (machinectl needs a host D-Bus, which a test host need
//! not have). The shipped units run unmodified: nspawn needed no drop-in to relax them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use crate::support::{Scratch, TestServer, deb, testbed, within};

const UNHEALTHY: i32 = 14;
/// Where the shipped stream unit serves /metrics (its ExecStart= says so).
const METRICS: &str = "127.0.0.1:9577";

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

#[track_caller]
fn ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A copy-on-write copy of the testbed's systemd root (an overlay, so every run starts from
/// a machine that never saw myvault, without copying 250 MB), booted by systemd-nspawn.
struct Container {
    nspawn: Child,
    init: u32,
    root: PathBuf,
    dir: Scratch,
}

impl Container {
    fn boot() -> Container {
        let dir = Scratch::new("systemd");
        let root = dir.join("root");
        for d in ["root", "upper", "work"] {
            std::fs::create_dir(dir.join(d)).unwrap();
        }
        let lower = testbed().path("MYVAULT_SYSTEMD_ROOT");
        ok(Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.display(),
                dir.join("upper").display(),
                dir.join("work").display()
            ))
            .arg(&root));
        let log = std::fs::File::create(dir.join("boot.log")).unwrap();
        let mut nspawn = Command::new("systemd-nspawn");
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl only, between fork and exec. Should this test process die, nspawn
            // gets SIGTERM and powers the container off (SIGKILL would leave it running).
            unsafe {
                nspawn.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
        }
        let nspawn = nspawn
            .args([
                "--register=no",
                "--keep-unit",
                "--console=read-only",
                "-q",
                "-b",
                "-D",
            ])
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("systemd-nspawn (Debian's systemd-container; scripts/testbed installs it)");
        let mut c = Container {
            init: 0,
            nspawn,
            root,
            dir,
        };
        // The container's init is nspawn's child once that has become systemd (before, it
        // is nspawn's own helper).
        let children = format!("/proc/{0}/task/{0}/children", c.nspawn.id());
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut state = String::new();
        while state != "running" {
            let exited = c.nspawn.try_wait().ok().flatten();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "the container did not boot cleanly (systemd-nspawn {exited:?}, system {state:?}):\n{}\n{}",
                c.failed_units(),
                c.boot_log()
            );
            sleep_ms(100);
            c.init = std::fs::read_to_string(&children)
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok())
                .filter(|pid| {
                    std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .is_ok_and(|comm| comm.trim() == "systemd")
                })
                .unwrap_or(0);
            if c.init != 0 {
                // running, or starting while it boots, degraded when a unit failed.
                let out = c.run(&["systemctl", "is-system-running"]);
                state = String::from_utf8_lossy(&out.stdout).trim().to_string();
                assert_ne!(state, "degraded", "{}", c.failed_units());
            }
        }
        c
    }

    fn failed_units(&self) -> String {
        if self.init == 0 {
            return String::new();
        }
        let out = self.run(&[
            "sh",
            "-c",
            "systemctl --failed --no-pager; journalctl -b --no-pager | tail -40",
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn boot_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("boot.log")).unwrap_or_default()
    }

    fn run(&self, args: &[&str]) -> Output {
        output(
            Command::new("nsenter")
                .args(["-t", &self.init.to_string(), "-a"])
                .args(args),
        )
    }

    /// `sh -c SCRIPT` inside; its stdout. Fails the test when the script fails.
    #[track_caller]
    fn sh(&self, script: &str) -> String {
        ok(Command::new("nsenter")
            .args(["-t", &self.init.to_string(), "-a", "sh", "-c"])
            .arg(script))
    }

    /// `myvault ARGS` inside, as the units run it: the service user, the config at its default
    /// path, the S3 keys of the units' EnvironmentFile= (the operator guide's way by hand).
    fn myvault(&self, args: &str) -> (i32, String, String) {
        let out = output(
            Command::new("nsenter")
                .args(["-t", &self.init.to_string(), "-a", "sh", "-c"])
                .arg(format!(
                    "set -a; [ ! -e /etc/myvault/aws.env ] || . /etc/myvault/aws.env; set +a; \
                     exec runuser -u myvault -- myvault {args}"
                )),
        );
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    #[track_caller]
    fn myvault_ok(&self, args: &str) -> String {
        let (code, out, err) = self.myvault(args);
        assert_eq!(code, 0, "myvault {args}: exit {code}\n{out}\n{err}");
        out
    }

    /// Writes `text` at `path` inside, then `chown OWNER` and `chmod MODE` it there.
    fn write(&self, path: &str, text: &str, owner: &str, mode: &str) {
        let host = self.root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(host.parent().unwrap()).unwrap();
        std::fs::write(&host, text).unwrap();
        self.sh(&format!("chown {owner} {path} && chmod {mode} {path}"));
    }

    /// `dpkg -i` of the package, as an operator installs (or upgrades) it.
    fn install(&self, deb: &Path) {
        std::fs::copy(deb, self.root.join("root/myvault.deb")).unwrap();
        self.sh("dpkg -i /root/myvault.deb >/dev/null");
    }

    fn show(&self, unit: &str, property: &str) -> String {
        self.sh(&format!("systemctl show -P {property} {unit}"))
            .trim()
            .to_string()
    }

    fn journal(&self, unit: &str) -> String {
        self.sh(&format!("journalctl -u {unit} --no-pager -o cat"))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // Killing the init ends every process of the container's PID namespace.
        if self.init != 0 {
            // SAFETY: a signal to the pid of the container init this value started.
            unsafe { libc::kill(self.init as i32, libc::SIGKILL) };
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
        let _ = Command::new("umount").arg(&self.root).status();
    }
}

fn scrape() -> Option<String> {
    let mut c = TcpStream::connect(METRICS).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    c.read_to_string(&mut out).ok()?;
    Some(out.split_once("\r\n\r\n")?.1.to_string())
}

/// The sample of `name` whose labels include `labels`.
fn value(text: &str, name: &str, labels: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| l.contains(labels))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// `myvault status --json` inside: its exit code and what it says.
fn status(c: &Container) -> (i32, Value) {
    let (code, out, err) = c.myvault("status --json");
    let js = serde_json::from_str(&out).unwrap_or_else(|e| panic!("status: {e}\n{out}\n{err}"));
    (code, js)
}

fn critical_about(st: &Value, repo: &str) -> bool {
    st["problems"].as_array().is_some_and(|ps| {
        ps.iter()
            .any(|p| p["severity"] == "critical" && p["repo"] == repo)
    })
}

/// The containers share the host's network, and the stream unit's /metrics port with it.
fn one_container_at_a_time() -> MutexGuard<'static, ()> {
    static ONE: Mutex<()> = Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn the_packaged_units_back_up_stream_report_prune_and_restore_under_systemd() {
    let _one = one_container_at_a_time();
    let started = Instant::now();
    let deb = deb();
    eprintln!("package built in {:?}", started.elapsed());
    assert!(
        TcpStream::connect(METRICS).is_err(),
        "{METRICS}, where the stream unit serves /metrics, is taken on this host"
    );
    let c = Container::boot();
    eprintln!("container up at {:?}", started.elapsed());
    let src = TestServer::mysql97();
    let target = TestServer::mysql97();
    let mut s3 = S3Server::start();
    let remote = s3.repo("db1");
    let local = "/var/backups/myvault";
    src.sql(
        "CREATE USER 'myvault'@'%' IDENTIFIED BY 'Source-pw-1';\n\
         GRANT ALL ON *.* TO 'myvault'@'%';\n\
         CREATE DATABASE shop;\n\
         CREATE TABLE shop.orders (id INT PRIMARY KEY, what VARCHAR(20));\n\
         INSERT INTO shop.orders VALUES (1, 'before the backup')",
    );
    target.sql(
        "CREATE USER 'restorer'@'%' IDENTIFIED BY 'Target-pw-2';\n\
         GRANT ALL ON *.* TO 'restorer'@'%' WITH GRANT OPTION;\n\
         RESET BINARY LOGS AND GTIDS",
    );

    // The operator's steps (README, operator guide §1, §4, §8): install, configure, init.
    c.install(deb);
    c.write(
        "/etc/myvault/myvault.toml",
        &format!(
            r#"[source]
url = "mysql://myvault@127.0.0.1:{src}"
password_file = "/etc/myvault/password"

[target]
password_file = "/etc/myvault/target-password"

[[repo]]
location = "{local}"
keep_daily = 7

[[repo]]
location = "{remote}"
keep_daily = 14
keep_weekly = 8
keep_monthly = 12
keep_pitr_window = "7d"

[s3]
endpoint = "{endpoint}"
region = "us-east-1"
path_style = true

[stream]
server_id = 2000000101
spool = "/var/lib/myvault/spool/db1"
upload_interval = 2
heartbeat = 1
metrics_listen = "127.0.0.1:9577"

[status]
max_snapshot_age = "26h"
max_archive_lag = "5m"
"#,
            src = src.port(),
            endpoint = s3.endpoint(),
        ),
        "root:myvault",
        "0640",
    );
    c.write(
        "/etc/myvault/password",
        "Source-pw-1\n",
        "root:myvault",
        "0640",
    );
    c.write(
        "/etc/myvault/target-password",
        "Target-pw-2\n",
        "root:myvault",
        "0640",
    );
    c.write(
        "/etc/myvault/aws.env",
        &format!("AWS_ACCESS_KEY_ID={ACCESS_KEY}\nAWS_SECRET_ACCESS_KEY={SECRET_KEY}\n"),
        "root:root",
        "0600",
    );
    let init = c.myvault_ok("init");
    assert!(
        init.contains(local) && init.contains(&remote),
        "init acts on both repositories:\n{init}"
    );
    // The units: the streamer as a service, the backup from its timer's service.
    c.sh("systemctl enable --now myvault-backup.timer myvault-binlog-stream.service");
    let timers = c.sh("systemctl list-timers --all --no-pager myvault-backup.timer");
    assert!(
        timers.contains("myvault-backup.timer") && timers.contains("myvault-backup.service"),
        "the timer is not scheduled:\n{timers}"
    );
    let next = c.show("myvault-backup.timer", "NextElapseUSecRealtime");
    assert!(!next.is_empty(), "the timer has no next run:\n{timers}");
    assert_eq!(
        c.show("myvault-backup.timer", "Unit"),
        "myvault-backup.service"
    );
    c.sh("systemctl start myvault-backup.service");
    let result = c.show("myvault-backup.service", "Result");
    assert_eq!(result, "success", "{}", c.journal("myvault-backup"));
    eprintln!("units running at {:?}", started.elapsed());

    // Writes on the source; the instant to restore to lies between two of them.
    let stamp = || {
        src.value("SELECT DATE_FORMAT(UTC_TIMESTAMP(), '%Y-%m-%dT%H:%i:%SZ')")
            .unwrap()
    };
    src.sql("INSERT INTO shop.orders VALUES (2, 'kept'), (3, 'kept')");
    sleep_ms(1200);
    let point = stamp();
    sleep_ms(1200);
    src.sql("INSERT INTO shop.orders VALUES (4, 'after the point')");
    let s3_label = format!("repo=\"{remote}\"");
    let (_, took) = within(
        Duration::from_secs(60),
        "status and /metrics healthy with both repositories up to date",
        || {
            let page = scrape()?;
            let fresh = value(&page, "myvault_archive_upload_healthy", &s3_label)? == 1.0
                && value(
                    &page,
                    "myvault_archive_upload_healthy",
                    "repo=\"/var/backups/myvault\"",
                )? == 1.0
                && value(&page, "myvault_archive_upload_lag_seconds", &s3_label)? == 0.0
                && value(&page, "myvault_stream_connected", "")? == 1.0;
            (fresh && status(&c).0 == 0).then_some(())
        },
    );
    eprintln!("healthy {took:?} after the writes");

    // S3 goes away: both turn unhealthy within a minute, naming it; and recover.
    let outage = Instant::now();
    s3.kill();
    let mut n = 100;
    let (st, took) = within(
        Duration::from_secs(60),
        "/metrics and status unhealthy, naming the S3 repository",
        || {
            n += 1;
            src.sql(&format!(
                "INSERT INTO shop.orders VALUES ({n}, 'during the outage')"
            ));
            let page = scrape()?;
            if value(&page, "myvault_archive_upload_healthy", &s3_label)? != 0.0 {
                return None;
            }
            let (code, st) = status(&c);
            (code == UNHEALTHY && critical_about(&st, &remote)).then_some(st)
        },
    );
    eprintln!("unhealthy {took:?} after S3 went down");
    assert!(
        !critical_about(&st, local),
        "the local repository is fine: {:#}",
        st["problems"]
    );
    assert!(outage.elapsed() < Duration::from_secs(60));
    s3.restart();
    let (_, took) = within(
        Duration::from_secs(60),
        "healthy again after S3 returns",
        || {
            let page = scrape()?;
            (value(&page, "myvault_archive_upload_healthy", &s3_label)? == 1.0
                && value(&page, "myvault_archive_upload_lag_seconds", &s3_label)? < 15.0
                && status(&c).0 == 0)
                .then_some(())
        },
    );
    eprintln!("healthy {took:?} after S3 returned");

    // The next night's backup, now with its metrics for node_exporter as the guide says (§8):
    // the textfile directory (prometheus-node-exporter's, root 0755) made writable to the
    // service user, and a drop-in.
    c.sh("mkdir -p /var/lib/prometheus/node-exporter \
          && dpkg-statoverride --update --add root myvault 0775 /var/lib/prometheus/node-exporter \
          && mkdir -p /etc/systemd/system/myvault-backup.service.d");
    c.write(
        "/etc/systemd/system/myvault-backup.service.d/metrics.conf",
        "[Service]\nExecStart=\nExecStart=/usr/bin/myvault backup --quiet --log-level info \
         --metrics-file /var/lib/prometheus/node-exporter/myvault.prom\n\
         ReadWritePaths=/var/lib/prometheus/node-exporter\n",
        "root:root",
        "0644",
    );

    c.sh("systemctl daemon-reload && systemctl start myvault-backup.service");
    // node_exporter runs as another user: the file is readable by all, whatever UMask= says.
    let prom = c.root.join("var/lib/prometheus/node-exporter/myvault.prom");
    let mode = std::fs::metadata(&prom).unwrap().permissions().mode() & 0o777;
    assert_eq!(format!("{mode:o}"), "644", "{}", prom.display());
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(
        value(
            &text,
            "myvault_backup_last_attempt_success",
            &format!("repo=\"{remote}\"")
        ) == Some(1.0),
        "{text}"
    );

    // Prune both repositories by the config's calendar policy: one snapshot a day where that
    // is all (local), both where the 7-day PITR window needs them (S3).
    let pruned: Value = serde_json::from_str(&c.myvault_ok("prune --json")).unwrap();
    let removed = |repo: &str| {
        let entry = pruned["repositories"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["repo"] == repo))
            .unwrap_or_else(|| panic!("prune did not act on {repo}: {pruned:#}"));
        entry["snapshots_removed"].as_array().map_or(0, Vec::len)
    };
    assert_eq!(removed(local), 1, "{pruned:#}");
    assert_eq!(removed(&remote), 0, "{pruned:#}");

    // Restore the off-site copy to the point into the target, with the target's own login.
    let restored = c.myvault_ok(&format!(
        "restore --repo {remote} --to-time {point} --target mysql://restorer@127.0.0.1:{} --json",
        target.port()
    ));
    let rows = target
        .value("SELECT GROUP_CONCAT(id ORDER BY id) FROM shop.orders")
        .unwrap_or_default();
    assert_eq!(rows, "1,2,3", "restored to {point}: {restored}");

    // journald holds each run's start and stop lines; a stop is clean.
    c.sh("systemctl stop myvault-binlog-stream.service");
    let stream = c.journal("myvault-binlog-stream");
    let backup = c.journal("myvault-backup");
    for (unit, log) in [
        ("myvault-binlog-stream", &stream),
        ("myvault-backup", &backup),
    ] {
        let command = unit.trim_start_matches("myvault-").replace('-', " ");
        assert!(
            log.contains(&format!("myvault {command} starting")),
            "no start line in the journal of {unit}:\n{log}"
        );
        assert!(
            log.contains(&format!("myvault {command} done")),
            "no stop line in the journal of {unit}:\n{log}"
        );
    }
    let stopped = c.show("myvault-binlog-stream.service", "Result");
    assert_eq!(stopped, "success", "{stream}");
    eprintln!("done in {:?}", started.elapsed());
}

/// Regression: under the units' `UMask=0077` the `--metrics-file` was 0600, owned by the
/// service user, so node_exporter (another user) could not read it.
#[test]
fn the_metrics_file_stays_world_readable_under_the_units_umask_0077() {
    let dir = Scratch::new("textfile-umask");
    let repo = dir.join("repo");
    let prom = dir.join("myvault.prom");
    let out = ok(Command::new("sh")
        .arg("-c")
        .arg("umask 0077 && exec \"$0\" init --repo \"$1\" --metrics-file \"$2\"")
        .arg(env!("CARGO_BIN_EXE_myvault"))
        .arg(&repo)
        .arg(&prom)
        .env("HOME", "/nonexistent"));
    let mode = std::fs::metadata(&prom).unwrap().permissions().mode() & 0o777;
    assert_eq!(format!("{mode:o}"), "644", "{} ({out})", prom.display());
}

/// Regression: `dpkg -r myvault` left the streamer running on the deleted binary and the timer
/// armed, and `dpkg -i` of a new version left systemd on the old unit files and the streamer
/// on the old binary (the package had no maintainer scripts for its units).
#[test]
fn removing_the_package_stops_its_units_and_upgrading_it_reloads_and_restarts_them() {
    let _one = one_container_at_a_time();
    let deb = deb();
    let c = Container::boot();
    let src = TestServer::mysql97();
    install_with_one_local_repo(&c, &src);
    c.sh("systemctl enable --now myvault-backup.timer myvault-binlog-stream.service");
    let stream = "myvault-binlog-stream.service";
    let running = || {
        let pid = c.show(stream, "MainPID");
        let exe = c.sh(&format!("readlink /proc/{pid}/exe || true"));
        (c.show(stream, "ActiveState"), pid, exe.trim().to_string())
    };
    let (state, before, _) = running();
    assert_eq!(state, "active", "{}", c.journal(stream));

    // A new version's unit files are newer than the loaded ones (dpkg gives each file the
    // package's time: reinstalling the same .deb alone would not show it).
    c.sh("touch -d 2000-01-01 /lib/systemd/system/myvault-* && systemctl daemon-reload");
    c.install(deb);
    for unit in [stream, "myvault-backup.service", "myvault-backup.timer"] {
        assert_eq!(
            c.show(unit, "NeedDaemonReload"),
            "no",
            "{unit} after an upgrade"
        );
    }
    let (state, after, exe) = running();
    assert_eq!(state, "active", "{}", c.journal(stream));
    assert_ne!(
        before, after,
        "the streamer was not restarted by the upgrade"
    );
    assert!(!exe.ends_with("(deleted)"), "the streamer runs {exe}");

    c.sh("dpkg -r myvault >/dev/null");
    assert_eq!(
        c.show(stream, "ActiveState"),
        "inactive",
        "{}",
        c.journal(stream)
    );
    assert_eq!(c.show("myvault-backup.timer", "ActiveState"), "inactive");
}

/// The package installed, with a config naming `src` (as root, no password) and one local
/// repository, initialised.
fn install_with_one_local_repo(c: &Container, src: &TestServer) {
    c.install(deb());
    c.write(
        "/etc/myvault/myvault.toml",
        &format!(
            "[source]\nurl = \"{}\"\n\n[[repo]]\nlocation = \"/var/backups/myvault\"\n\n\
             [stream]\nserver_id = 2000000102\nspool = \"/var/lib/myvault/spool/db1\"\n",
            src.url()
        ),
        "root:myvault",
        "0640",
    );
    c.myvault_ok("init");
}

/// Regression: the shipped backup unit wrote `--metrics-file` into
/// /var/lib/prometheus/node-exporter and named it in `ReadWritePaths=`, so on a host without
/// prometheus-node-exporter it failed before it started (226/NAMESPACE), and on one with it the
/// service user could not write there (root's 0755 directory: exit 2).
#[test]
fn the_backup_unit_runs_on_a_host_without_prometheus_node_exporter() {
    let _one = one_container_at_a_time();
    let c = Container::boot();
    let src = TestServer::mysql97();
    install_with_one_local_repo(&c, &src);
    let run = c.run(&["systemctl", "start", "myvault-backup.service"]);
    assert!(
        run.status.success(),
        "the backup unit failed:\n{}",
        c.journal("myvault-backup")
    );
    let listed: Value = serde_json::from_str(&c.myvault_ok("list --json")).unwrap();
    assert_eq!(
        listed["snapshots"].as_array().map(Vec::len),
        Some(1),
        "{listed:#}"
    );
}
