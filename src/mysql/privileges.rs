//! An account's global privileges, and what each myvault job needs from them.

use std::collections::BTreeSet;

use super::error::Error;
use super::session::{Session, quote_str};

/// (privilege, what it is needed for)
pub type Need = (&'static str, &'static str);

pub const LOGICAL_BACKUP: &[Need] = &[
    ("SELECT", "read table data"),
    (
        "RELOAD",
        "take the global read lock for the consistent point",
    ),
    ("LOCK TABLES", "lock tables for a consistent dump"),
    ("SHOW VIEW", "read view definitions"),
    ("TRIGGER", "read trigger definitions"),
    ("EVENT", "read event definitions"),
    ("REPLICATION CLIENT", "read the binlog position"),
];

pub const BINLOG_STREAM: &[Need] = &[
    ("REPLICATION SLAVE", "stream the binlog"),
    ("REPLICATION CLIENT", "read the binlog position"),
];

pub struct Privileges {
    /// `user@host` as CURRENT_USER() names it.
    pub account: Option<String>,
    global: BTreeSet<String>,
}

impl Privileges {
    /// Reads them from `SHOW GRANTS` (grants `ON *.*`).
    pub fn read(s: &mut Session) -> Result<Privileges, Error> {
        let account = s.query_value("SELECT CURRENT_USER()")?;
        let rows = s.query("SHOW GRANTS")?;
        let mut global = BTreeSet::new();
        for row in rows.iter() {
            let Some(line) = row.text_at(0) else { continue };
            let Some(rest) = line.strip_prefix("GRANT ") else {
                continue;
            };
            let Some((list, target)) = rest.split_once(" ON ") else {
                continue;
            };
            if !target.trim_start().starts_with("*.*") {
                continue;
            }
            for p in list.split(',') {
                let p = p.trim().to_ascii_uppercase();
                global.insert(if p == "ALL PRIVILEGES" {
                    "ALL".to_string()
                } else {
                    p
                });
            }
        }
        Ok(Privileges { account, global })
    }

    pub fn has(&self, p: &str) -> bool {
        self.global.contains("ALL")
            || self.global.contains(p)
            // MariaDB 10.5 renamed REPLICATION CLIENT to BINLOG MONITOR.
            || (p == "REPLICATION CLIENT" && self.global.contains("BINLOG MONITOR"))
    }

    pub fn missing(&self, needed: &[Need]) -> Vec<Need> {
        let mut seen = BTreeSet::new();
        needed
            .iter()
            .copied()
            .filter(|(p, _)| !self.has(p) && seen.insert(*p))
            .collect()
    }

    /// The account quoted for a GRANT statement.
    pub fn grantee(&self) -> String {
        self.account
            .as_deref()
            .and_then(|a| a.rsplit_once('@'))
            .map(|(u, h)| format!("{}@{}", quote_str(u), quote_str(h)))
            .unwrap_or_else(|| "CURRENT_USER()".into())
    }

    pub fn grant_statement(&self, missing: &[Need]) -> String {
        let names: Vec<&str> = missing.iter().map(|(p, _)| *p).collect();
        format!("GRANT {} ON *.* TO {};", names.join(", "), self.grantee())
    }
}

/// Fails with the GRANT that fixes it when the account lacks something `needed`.
pub fn require(s: &mut Session, needed: &[Need], job: &str) -> Result<(), crate::error::Error> {
    let privs = Privileges::read(s)?;
    let missing = privs.missing(needed);
    if missing.is_empty() {
        return Ok(());
    }
    let why: Vec<String> = missing
        .iter()
        .map(|(p, why)| format!("{p} (to {why})"))
        .collect();
    Err(crate::error::Error::MissingPrivileges(format!(
        "the account {} cannot {job}: it lacks {}. Fix: {}",
        privs.account.as_deref().unwrap_or("?"),
        why.join(", "),
        privs.grant_statement(&missing)
    )))
}
