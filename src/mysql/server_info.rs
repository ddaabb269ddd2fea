//! Flavor and version of a server, and the statements that differ between them.
//!
//! MySQL 8.4 removed the MASTER/SLAVE statements; MariaDB kept them. Every statement that
//! differs is chosen here, from the detected version, so no caller hard-codes one.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    Mysql,
    Mariadb,
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Flavor::Mysql => "MySQL",
            Flavor::Mariadb => "MariaDB",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    pub flavor: Flavor,
    pub version: Version,
    /// The full version string, e.g. `9.7.4-2` or `10.11.19-MariaDB-0+deb12u1`.
    pub version_string: String,
}

impl ServerInfo {
    /// Reads flavor and version from the handshake's version string. MariaDB prefixes
    /// `5.5.5-` for old clients; that prefix is skipped.
    pub fn from_version_string(s: &str) -> ServerInfo {
        let flavor = if s.contains("MariaDB") {
            Flavor::Mariadb
        } else {
            Flavor::Mysql
        };
        let core = s.strip_prefix("5.5.5-").unwrap_or(s);
        let mut parts = core
            .split(|c: char| !c.is_ascii_digit())
            .take(3)
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let version = Version(
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
        );
        ServerInfo {
            flavor,
            version,
            version_string: core.to_string(),
        }
    }

    pub fn is_mysql(&self) -> bool {
        self.flavor == Flavor::Mysql
    }

    pub fn is_mariadb(&self) -> bool {
        self.flavor == Flavor::Mariadb
    }

    fn mysql_at_least(&self, major: u32, minor: u32, patch: u32) -> bool {
        self.is_mysql() && self.version >= Version(major, minor, patch)
    }

    fn mariadb_at_least(&self, major: u32, minor: u32, patch: u32) -> bool {
        self.is_mariadb() && self.version >= Version(major, minor, patch)
    }

    /// Whether `information_schema` serves table statistics (row estimates) from a cache,
    /// which `information_schema_stats_expiry` controls (MySQL 8.0.3+).
    pub fn caches_table_stats(&self) -> bool {
        self.mysql_at_least(8, 0, 3)
    }

    /// Current binlog file, position and (MySQL) executed GTID set.
    pub fn binlog_status_sql(&self) -> &'static str {
        if self.mysql_at_least(8, 2, 0) {
            "SHOW BINARY LOG STATUS"
        } else {
            "SHOW MASTER STATUS"
        }
    }

    pub fn binary_logs_sql(&self) -> &'static str {
        "SHOW BINARY LOGS"
    }

    /// Replicas registered with this server (MariaDB never had `SHOW REPLICAS`; its newer
    /// spelling is `SHOW REPLICA HOSTS`). The server-id column is `Server_id` or `Server_Id`.
    pub fn replicas_sql(&self) -> &'static str {
        if self.mysql_at_least(8, 0, 22) {
            "SHOW REPLICAS"
        } else if self.mariadb_at_least(10, 5, 1) {
            "SHOW REPLICA HOSTS"
        } else {
            "SHOW SLAVE HOSTS"
        }
    }

    pub fn replica_status_sql(&self) -> &'static str {
        if self.mysql_at_least(8, 0, 22) || self.mariadb_at_least(10, 5, 1) {
            "SHOW REPLICA STATUS"
        } else {
            "SHOW SLAVE STATUS"
        }
    }

    pub fn change_source_sql(&self) -> &'static str {
        if self.mysql_at_least(8, 0, 23) {
            "CHANGE REPLICATION SOURCE TO"
        } else {
            "CHANGE MASTER TO"
        }
    }

    pub fn start_replica_sql(&self) -> &'static str {
        if self.mysql_at_least(8, 0, 22) || self.mariadb_at_least(10, 5, 1) {
            "START REPLICA"
        } else {
            "START SLAVE"
        }
    }

    pub fn stop_replica_sql(&self) -> &'static str {
        if self.mysql_at_least(8, 0, 22) || self.mariadb_at_least(10, 5, 1) {
            "STOP REPLICA"
        } else {
            "STOP SLAVE"
        }
    }

    pub fn reset_replica_all_sql(&self) -> &'static str {
        if self.mysql_at_least(8, 0, 22) || self.mariadb_at_least(10, 5, 1) {
            "RESET REPLICA ALL"
        } else {
            "RESET SLAVE ALL"
        }
    }

    /// Empties the binlog and the GTID state, as needed before setting GTID_PURGED.
    pub fn reset_binlogs_sql(&self) -> &'static str {
        if self.mysql_at_least(8, 4, 0) {
            "RESET BINARY LOGS AND GTIDS"
        } else {
            "RESET MASTER"
        }
    }

    /// The variable that says whether a replica writes what it applies to its own binlog.
    pub fn log_replica_updates_var(&self) -> &'static str {
        if self.mysql_at_least(8, 0, 26) {
            "log_replica_updates"
        } else {
            "log_slave_updates"
        }
    }

    /// True when `LOCK INSTANCE FOR BACKUP` exists (MySQL 8.0+).
    pub fn has_backup_lock(&self) -> bool {
        self.mysql_at_least(8, 0, 0)
    }

    /// True when `BACKUP STAGE` exists (MariaDB 10.4.1+).
    pub fn has_backup_stages(&self) -> bool {
        self.mariadb_at_least(10, 4, 1)
    }

    /// True when the clone plugin exists (MySQL 8.0.17+).
    pub fn has_clone(&self) -> bool {
        self.mysql_at_least(8, 0, 17)
    }

    /// True when the server has no `mysql_native_password` (MySQL 9.0+).
    pub fn lacks_native_password(&self) -> bool {
        self.mysql_at_least(9, 0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mysql_and_mariadb_versions() {
        let m = ServerInfo::from_version_string("9.7.4-2");
        assert_eq!(m.flavor, Flavor::Mysql);
        assert_eq!(m.version, Version(9, 7, 4));
        assert_eq!(m.binlog_status_sql(), "SHOW BINARY LOG STATUS");
        assert_eq!(m.reset_binlogs_sql(), "RESET BINARY LOGS AND GTIDS");

        let m = ServerInfo::from_version_string("5.5.5-10.11.19-MariaDB-0+deb12u1");
        assert_eq!(m.flavor, Flavor::Mariadb);
        assert_eq!(m.version, Version(10, 11, 19));
        assert_eq!(m.binlog_status_sql(), "SHOW MASTER STATUS");
        assert_eq!(m.change_source_sql(), "CHANGE MASTER TO");
        assert_eq!(m.reset_binlogs_sql(), "RESET MASTER");
        assert_eq!(m.replicas_sql(), "SHOW REPLICA HOSTS");
        assert!(!m.has_clone());
    }

    #[test]
    fn old_mysql_gets_old_statements() {
        let m = ServerInfo::from_version_string("8.0.21-log");
        assert_eq!(m.binlog_status_sql(), "SHOW MASTER STATUS");
        assert_eq!(m.replicas_sql(), "SHOW SLAVE HOSTS");
        assert_eq!(m.change_source_sql(), "CHANGE MASTER TO");
        assert!(m.has_clone());
    }

    #[test]
    fn garbage_version_does_not_panic() {
        let m = ServerInfo::from_version_string("");
        assert_eq!(m.version, Version(0, 0, 0));
    }
}
