//! What `verify` found, kept in the repository it checked (`verifications/<time>-<random>`), so
//! that `status` on any host can say when each repository was last verified and restore-tested,
//! and with what result.
//!
//! A record is bookkeeping, not data: nothing restores from it, prune may leave it, and only
//! the newest [`KEEP`] are kept (each verify removes older ones).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::repo::manifest;
use crate::repo::{Repo, RepoError};

/// Where the records live in a repository.
pub const PREFIX: &str = "verifications/";

/// How many records a repository keeps: enough to see a failure that was fixed since.
pub const KEEP: usize = 16;

/// One `verify` run on one repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerificationRecord {
    /// When the run ended.
    pub time: DateTime<Utc>,
    pub started: DateTime<Utc>,
    /// The host that ran it.
    pub host: String,
    /// Whether every pack was read and every blob checked (not `--no-read-data`).
    pub read_data: bool,
    /// Whether a restore test ran (`--restore-test`; it is skipped when the integrity check
    /// already failed).
    pub restore_test: bool,
    /// The snapshot the restore test restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// No problem found, and the restore test (if any) passed.
    pub ok: bool,
    /// Problems the integrity check found.
    pub problems: usize,
    /// The first problem, or the error that stopped the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The myvault version that ran it.
    pub version: String,
}

/// Stores `record` and removes all but the newest [`KEEP`] records.
pub fn write(repo: &Repo, record: &VerificationRecord) -> Result<(), RepoError> {
    let key = format!(
        "{PREFIX}{}-{}",
        record.time.format("%Y%m%dT%H%M%SZ"),
        crate::repo::config::random_hex(2)
    );
    let storage = repo.storage();
    storage.create(&key, &manifest::encode("verification", record))?;
    let mut keys: Vec<String> = storage.list(PREFIX)?.into_iter().map(|o| o.key).collect();
    keys.sort();
    let old = keys.len().saturating_sub(KEEP);
    storage.delete_many(&keys[..old])?;
    Ok(())
}

/// Every record in the repository, oldest first. A damaged record is an integrity error
/// naming it: a verdict must not rest on a record that cannot be read.
pub fn read(repo: &Repo) -> Result<Vec<VerificationRecord>, RepoError> {
    let storage = repo.storage();
    let mut out = Vec::new();
    for obj in storage.list(PREFIX)? {
        let data = match storage.get(&obj.key) {
            Ok(d) => d,
            // Removed by a newer verify between the listing and now.
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        out.push(
            manifest::decode::<VerificationRecord>("verification", &data)
                .map_err(|d| RepoError::integrity(repo.name(), &obj.key, d))?,
        );
    }
    out.sort_by_key(|r| r.time);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::config::RepoConfig;
    use crate::storage::memory::MemoryStorage;
    use std::sync::Arc;

    fn record(n: i64, ok: bool) -> VerificationRecord {
        let time = DateTime::from_timestamp(1_800_000_000 + n * 60, 0).expect("valid time");
        VerificationRecord {
            time,
            started: time,
            host: "h".into(),
            read_data: true,
            restore_test: false,
            snapshot: None,
            ok,
            problems: usize::from(!ok),
            detail: None,
            version: "test".into(),
        }
    }

    #[test]
    fn records_come_back_oldest_first_and_only_the_newest_are_kept() {
        let repo = Repo::init(Arc::new(MemoryStorage::new()), RepoConfig::default()).expect("init");
        for n in 0..(KEEP as i64 + 3) {
            write(&repo, &record(n, n % 2 == 0)).expect("write");
        }
        let all = read(&repo).expect("read");
        assert_eq!(all.len(), KEEP);
        assert_eq!(all[0], record(3, false), "the three oldest were removed");
        assert_eq!(all[KEEP - 1], record(KEEP as i64 + 2, true));
    }

    #[test]
    fn a_damaged_record_is_an_integrity_error_naming_it() {
        let repo = Repo::init(Arc::new(MemoryStorage::new()), RepoConfig::default()).expect("init");
        repo.storage()
            .put(
                "verifications/20270101T000000Z-abcd",
                b"MYVAULT verification 1 sha256=00\n{}\n",
            )
            .expect("put");
        let err = read(&repo).expect_err("damaged");
        assert!(
            err.to_string()
                .contains("verifications/20270101T000000Z-abcd"),
            "{err}"
        );
    }
}
