//! `myvault check`: is this server ready for backups and point-in-time recovery?
//!
//! Every item names what was found and, when it is not right, the exact statement or my.cnf
//! line that fixes it. Failures are what make a backup or PITR impossible; warnings are what
//! limits them.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::error::Result;
use crate::mysql::privileges::{self, Privileges};
use crate::mysql::server_info::ServerInfo;
use crate::mysql::session::Session;
use crate::mysql::wire::ConnectOptions;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Info,
    Warn,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckItem {
    pub name: String,
    pub status: Status,
    pub value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub source: String,
    pub flavor: String,
    pub version: String,
    pub tls: bool,
    pub server_uuid: Option<String>,
    pub server_id: Option<u64>,
    pub account: Option<String>,
    pub checks: Vec<CheckItem>,
    /// False when at least one item failed: a backup or PITR cannot work.
    pub ok: bool,
}

impl CheckReport {
    pub fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }
}

struct Items(Vec<CheckItem>);

impl Items {
    fn push(
        &mut self,
        name: &str,
        status: Status,
        value: impl Into<String>,
        detail: Option<String>,
        fix: Option<String>,
    ) {
        self.0.push(CheckItem {
            name: name.to_string(),
            status,
            value: value.into(),
            detail,
            fix,
        });
    }

    fn ok(&mut self, name: &str, value: impl Into<String>) {
        self.push(name, Status::Ok, value, None, None);
    }

    fn info(&mut self, name: &str, value: impl Into<String>, detail: impl Into<String>) {
        self.push(name, Status::Info, value, Some(detail.into()), None);
    }

    fn problem(
        &mut self,
        status: Status,
        name: &str,
        value: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.push(name, status, value, Some(detail.into()), Some(fix.into()));
    }
}

const VARIABLES: &[&str] = &[
    "log_bin",
    "log_bin_basename",
    "binlog_format",
    "binlog_row_image",
    "binlog_row_value_options",
    "gtid_mode",
    "enforce_gtid_consistency",
    "gtid_strict_mode",
    "gtid_domain_id",
    "server_id",
    "server_uuid",
    "binlog_expire_logs_seconds",
    "binlog_expire_logs_auto_purge",
    "expire_logs_days",
    "binlog_transaction_compression",
    "binlog_checksum",
    "log_replica_updates",
    "log_slave_updates",
    "auto_increment_increment",
    "auto_increment_offset",
    "sync_binlog",
    "innodb_flush_log_at_trx_commit",
];

pub fn run(connect: &ConnectOptions) -> Result<CheckReport> {
    let mut s = Session::connect(connect)?;
    let info = s.info().clone();
    let vars = Vars(s.global_vars(VARIABLES)?);
    let var = |name: &str| vars.get(name);
    let mut items = Items(Vec::new());

    check_version(&mut items, &info);
    check_binlog(&mut items, &info, &vars);
    check_gtid(&mut items, &info, &vars);
    let server_id = var("server_id").and_then(|v| v.parse::<u64>().ok());
    match server_id {
        Some(0) | None => items.problem(
            Status::Fail,
            "server_id",
            var("server_id").unwrap_or("unknown"),
            "a server with server_id 0 refuses replicas, so binlogs cannot be streamed",
            persist(&info, "server_id", "1"),
        ),
        Some(id) => items.ok("server_id", id.to_string()),
    }
    check_retention(&mut items, &info, &vars);
    let compression = var("binlog_transaction_compression").unwrap_or("OFF");
    items.info(
        "binlog_transaction_compression",
        compression,
        "compressed transaction payloads are archived as-is and replayed by the target",
    );
    check_durability(&mut items, &vars);
    let account = check_privileges(&mut items, &mut s, &info)?;
    check_clone(&mut items, &mut s, &info)?;
    check_replica_role(&mut items, &mut s, &info, &vars);
    let inc = var("auto_increment_increment").unwrap_or("1");
    let off = var("auto_increment_offset").unwrap_or("1");
    if inc == "1" {
        items.ok("auto_increment_increment/offset", format!("{inc}/{off}"));
    } else {
        items.info(
            "auto_increment_increment/offset",
            format!("{inc}/{off}"),
            "set for a dual-primary or chained setup: give restored servers and seeded replicas the same values in my.cnf",
        );
    }
    check_clock(&mut items, &mut s)?;

    let checks = items.0;
    let ok = !checks.iter().any(|c| c.status == Status::Fail);
    Ok(CheckReport {
        source: s.address().to_string(),
        flavor: info.flavor.to_string(),
        version: info.version_string.clone(),
        tls: s.is_tls(),
        server_uuid: var("server_uuid").map(str::to_string),
        server_id,
        account,
        checks,
        ok,
    })
}

/// Global variables by lower-case name.
struct Vars(HashMap<String, String>);

impl Vars {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

fn is_on(v: Option<&str>) -> bool {
    matches!(v.map(str::to_ascii_uppercase).as_deref(), Some("ON" | "1"))
}

/// How to change a dynamic variable so that it survives a restart.
fn persist(info: &ServerInfo, name: &str, value: &str) -> String {
    if info.is_mysql() && info.version >= crate::mysql::server_info::Version(8, 0, 0) {
        format!("SET PERSIST {name} = {value};")
    } else {
        format!("SET GLOBAL {name} = {value}; and in my.cnf [mysqld]: {name} = {value}")
    }
}

fn check_version(items: &mut Items, info: &ServerInfo) {
    use crate::mysql::server_info::Version;
    let supported = match info.flavor {
        crate::mysql::server_info::Flavor::Mysql => info.version >= Version(8, 0, 17),
        crate::mysql::server_info::Flavor::Mariadb => info.version >= Version(10, 6, 0),
    };
    if supported {
        items.ok("version", format!("{} {}", info.flavor, info.version));
    } else {
        items.problem(
            Status::Warn,
            "version",
            format!("{} {}", info.flavor, info.version),
            "older than what myvault is tested with (MySQL 8.0.17+, MariaDB 10.6+)",
            "upgrade the server",
        );
    }
}

fn check_binlog(items: &mut Items, info: &ServerInfo, vars: &Vars) {
    if is_on(vars.get("log_bin")) {
        items.ok("log_bin", "ON");
    } else {
        items.problem(
            Status::Fail,
            "log_bin",
            "OFF",
            "without a binary log a snapshot has no coordinates and nothing can be replayed",
            "in my.cnf [mysqld]: log_bin = binlog (then restart the server)",
        );
    }
    let format = vars
        .get("binlog_format")
        .unwrap_or("unknown")
        .to_ascii_uppercase();
    if format == "ROW" {
        items.ok("binlog_format", format);
    } else {
        items.problem(
            Status::Fail,
            "binlog_format",
            format,
            "statement-based events replay differently from how they ran; PITR needs ROW",
            persist(info, "binlog_format", "ROW"),
        );
    }
    let image = vars
        .get("binlog_row_image")
        .unwrap_or("unknown")
        .to_ascii_uppercase();
    if image == "FULL" {
        items.ok("binlog_row_image", image);
    } else {
        items.problem(
            Status::Warn,
            "binlog_row_image",
            image,
            "replay needs the target to match the source exactly; FULL images tolerate drift",
            persist(info, "binlog_row_image", "FULL"),
        );
    }
    // PARTIAL_JSON makes every update a partial-update event (MySQL writes them for all
    // updates once it is on), which flashback cannot invert: it needs the whole after image.
    if let Some(options) = vars.get("binlog_row_value_options")
        && options.to_ascii_uppercase().contains("PARTIAL_JSON")
    {
        items.problem(
            Status::Warn,
            "binlog_row_value_options",
            options.to_string(),
            "updates are logged as partial JSON diffs, which `myvault flashback` cannot undo",
            persist(info, "binlog_row_value_options", "''"),
        );
    }
    items.info(
        "binlog_checksum",
        vars.get("binlog_checksum").unwrap_or("unknown"),
        "every archived event is verified (CRC32) when the server writes checksums",
    );
}

fn check_gtid(items: &mut Items, info: &ServerInfo, vars: &Vars) {
    if info.is_mariadb() {
        let domain = vars.get("gtid_domain_id").unwrap_or("0");
        if is_on(vars.get("gtid_strict_mode")) {
            items.ok("gtid_strict_mode", format!("ON (domain {domain})"));
        } else {
            items.problem(
                Status::Warn,
                "gtid_strict_mode",
                "OFF",
                "without strict mode a GTID can repeat and PITR by GTID becomes ambiguous",
                persist(info, "gtid_strict_mode", "ON"),
            );
        }
        return;
    }
    let mode = vars.get("gtid_mode").unwrap_or("OFF").to_ascii_uppercase();
    let enforce = vars
        .get("enforce_gtid_consistency")
        .unwrap_or("OFF")
        .to_ascii_uppercase();
    if mode == "ON" {
        items.ok("gtid_mode", mode);
    } else {
        items.problem(
            Status::Warn,
            "gtid_mode",
            mode,
            "without GTIDs, streaming resumes by file and position only and cannot follow a failover; --to-gtid is unavailable",
            "SET PERSIST enforce_gtid_consistency = ON; then step gtid_mode through OFF_PERMISSIVE, ON_PERMISSIVE to ON",
        );
    }
    if enforce == "ON" {
        items.ok("enforce_gtid_consistency", enforce);
    } else {
        items.problem(
            Status::Warn,
            "enforce_gtid_consistency",
            enforce,
            "needed before gtid_mode can be ON",
            persist(info, "enforce_gtid_consistency", "ON"),
        );
    }
}

fn check_retention(items: &mut Items, info: &ServerInfo, vars: &Vars) {
    let seconds = vars
        .get("binlog_expire_logs_seconds")
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    let days = vars
        .get("expire_logs_days")
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    let auto_purge = vars
        .get("binlog_expire_logs_auto_purge")
        .map(|v| is_on(Some(v)))
        .unwrap_or(true);
    let retention = if seconds > 0.0 {
        seconds
    } else {
        days * 86400.0
    };
    if retention == 0.0 || !auto_purge {
        items.ok("binlog retention", "binlogs are never purged automatically");
    } else if retention < 86400.0 {
        items.problem(
            Status::Warn,
            "binlog retention",
            format!("{:.1} hours", retention / 3600.0),
            "if the streamer is down longer than this, transactions are lost to PITR",
            persist(info, "binlog_expire_logs_seconds", "604800"),
        );
    } else {
        items.ok(
            "binlog retention",
            format!("{:.1} days", retention / 86400.0),
        );
    }
}

fn check_durability(items: &mut Items, vars: &Vars) {
    let sync = vars.get("sync_binlog").unwrap_or("1");
    let flush = vars.get("innodb_flush_log_at_trx_commit").unwrap_or("1");
    if sync == "1" && flush == "1" {
        items.ok(
            "durability",
            "sync_binlog=1, innodb_flush_log_at_trx_commit=1",
        );
    } else {
        items.push(
            "durability",
            Status::Warn,
            format!("sync_binlog={sync}, innodb_flush_log_at_trx_commit={flush}"),
            Some("a crash of the source can lose committed transactions from its binlog, and so from the archive".into()),
            Some("in my.cnf [mysqld]: sync_binlog = 1 and innodb_flush_log_at_trx_commit = 1".into()),
        );
    }
}

fn check_privileges(
    items: &mut Items,
    s: &mut Session,
    info: &ServerInfo,
) -> Result<Option<String>> {
    let privs = Privileges::read(s)?;
    let mut needed = privileges::LOGICAL_BACKUP.to_vec();
    needed.extend_from_slice(privileges::BINLOG_STREAM);
    let missing = privs.missing(&needed);
    let has = |p: &str| privs.has(p);
    let grantee = privs.grantee();
    if missing.is_empty() {
        items.ok(
            "privileges",
            "all needed for logical backup and binlog streaming",
        );
    } else {
        let names: Vec<&str> = missing.iter().map(|(p, _)| *p).collect();
        let whys: Vec<String> = missing
            .iter()
            .map(|(p, why)| format!("{p} to {why}"))
            .collect();
        items.problem(
            Status::Fail,
            "privileges",
            format!("missing {}", names.join(", ")),
            format!("needed: {}", whys.join("; ")),
            privs.grant_statement(&missing),
        );
    }
    if info.has_backup_lock() && !has("BACKUP_ADMIN") {
        items.problem(
            Status::Warn,
            "BACKUP_ADMIN",
            "missing",
            "without it DDL is not blocked during a logical dump (it is detected and fails the backup), and --method clone is unavailable",
            format!("GRANT BACKUP_ADMIN ON *.* TO {grantee};"),
        );
    }
    Ok(privs.account)
}

fn check_clone(items: &mut Items, s: &mut Session, info: &ServerInfo) -> Result<()> {
    if !info.has_clone() {
        items.info(
            "clone plugin",
            "not available",
            format!(
                "{} {} has no clone plugin: use --method logical or cold",
                info.flavor, info.version
            ),
        );
        return Ok(());
    }
    let status = s.query_value(
        "SELECT PLUGIN_STATUS FROM information_schema.PLUGINS WHERE PLUGIN_NAME = 'clone'",
    )?;
    match status.as_deref() {
        Some("ACTIVE") => items.ok("clone plugin", "ACTIVE"),
        other => items.problem(
            Status::Warn,
            "clone plugin",
            other.unwrap_or("not installed").to_string(),
            "needed by --method clone and seed-replica --clone (myvault installs it when allowed)",
            "INSTALL PLUGIN clone SONAME 'mysql_clone.so';",
        ),
    }
    Ok(())
}

fn check_replica_role(items: &mut Items, s: &mut Session, info: &ServerInfo, vars: &Vars) {
    let name = info.log_replica_updates_var();
    let value = vars.get(name).or_else(|| vars.get("log_slave_updates"));
    // A failure here (no REPLICATION CLIENT) is already reported under privileges.
    let is_replica = s
        .query(info.replica_status_sql())
        .map(|rows| !rows.is_empty())
        .unwrap_or(false);
    match (is_replica, is_on(value)) {
        (_, true) => items.ok(name, "ON"),
        (false, false) => items.info(
            name,
            "OFF",
            "fine for a primary; a replica in a chain needs it ON to be a backup source",
        ),
        (true, false) => items.problem(
            Status::Warn,
            name,
            "OFF",
            "this server is a replica: what it applies does not reach its binlog, so PITR from it would miss transactions",
            format!("in my.cnf [mysqld]: {name} = ON (then restart)"),
        ),
    }
}

fn check_clock(items: &mut Items, s: &mut Session) -> Result<()> {
    let now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    };
    let before = now();
    let server = s.query_value("SELECT UNIX_TIMESTAMP(NOW(6))")?;
    let after = now();
    let Some(server) = server.and_then(|v| v.parse::<f64>().ok()) else {
        items.info(
            "clock skew",
            "unknown",
            "the server did not report its time",
        );
        return Ok(());
    };
    let skew = server - (before + after) / 2.0;
    let value = format!("{:+.3} s (server minus this host)", skew);
    if skew.abs() <= 1.0 {
        items.ok("clock skew", value);
    } else {
        items.problem(
            Status::Warn,
            "clock skew",
            value,
            "restore --to-time reads TIME on the server's clock, which differs from this host's",
            "synchronise both clocks with NTP (chrony or systemd-timesyncd)",
        );
    }
    Ok(())
}

/// Variables by name, for tests.
pub fn as_map(report: &CheckReport) -> HashMap<&str, &CheckItem> {
    report.checks.iter().map(|c| (c.name.as_str(), c)).collect()
}
