//! The streamer's spool, read from outside while the streamer runs: what it says in
//! `status.json`, and which of its bytes each repository still lacks.
//!
//! Of `status.json` only these are relied on: that the streamer rewrites it at least every
//! 10 seconds while it runs (so its modification time says whether one runs), and its
//! `source`, `server_uuid`, `lag_seconds`, `last_error` and `repos` (each repository's upload
//! state) fields, each optional. The bytes
//! waiting for a repository are measured from the spool's files and the repository's
//! segments, not taken from the file.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::binlog::file_sequence;
use crate::error::{Error, Result};
use crate::repo::manifest::BinlogSegment;

/// A streamer that has not rewritten `status.json` for this long is not running.
pub const ALIVE_WITHIN_SECONDS: i64 = 60;

#[derive(Debug, Clone, Serialize)]
pub struct StreamerStatus {
    pub spool: String,
    /// `status.json` was rewritten within the last minute.
    pub running: bool,
    /// When `status.json` was last written (its modification time).
    pub status_written_at: Option<DateTime<Utc>>,
    /// From `status.json`.
    pub source: Option<String>,
    pub server_uuid: Option<String>,
    pub lag_seconds: Option<f64>,
    pub last_error: Option<String>,
    /// From `status.json`: the streamer's upload state of each repository it writes.
    pub repos: Vec<StreamerRepo>,
    /// Bytes of binlog files in the spool.
    pub spool_bytes: u64,
    /// Why the spool's files could not be listed (permissions, say).
    pub error: Option<String>,
    /// Spooled files by source, then name: their length.
    #[serde(skip)]
    files: BTreeMap<String, BTreeMap<String, u64>>,
}

/// One repository's entry in `status.json`'s `repos`: the fields `status` judges by.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StreamerRepo {
    pub repo: String,
    /// Seconds since the oldest commit the streamer received that this repository lacks.
    #[serde(default)]
    pub upload_lag_seconds: f64,
    #[serde(default)]
    pub pending_bytes: u64,
    /// Why uploads to it fail now (null once one succeeds), and since when.
    pub last_error: Option<String>,
    pub last_error_time: Option<DateTime<Utc>>,
    pub failing_since: Option<DateTime<Utc>>,
}

/// The fields of `status.json` used here; the file has more, and may gain others.
#[derive(Debug, Default, Deserialize)]
struct StatusFile {
    source: Option<String>,
    server_uuid: Option<String>,
    lag_seconds: Option<f64>,
    last_error: Option<String>,
    #[serde(default)]
    repos: Vec<StreamerRepo>,
}

/// Reads the spool at `dir`. A directory that does not exist is a usage error: the operator
/// named it, and reporting "no streamer" for a typo would hide a real one.
pub fn read(dir: &Path, now: DateTime<Utc>) -> Result<StreamerStatus> {
    if !dir.is_dir() {
        return Err(Error::Usage(format!(
            "--spool {}: no such directory (give the streamer's spool, or leave --spool out on hosts without one)",
            dir.display()
        )));
    }
    let status_path = dir.join("status.json");
    let written_at = std::fs::metadata(&status_path)
        .and_then(|m| m.modified())
        .ok()
        .map(DateTime::<Utc>::from);
    let file: StatusFile = std::fs::read(&status_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let (files, error) = match spooled_files(dir) {
        Ok(f) => (f, None),
        Err(e) => (BTreeMap::new(), Some(e.to_string())),
    };
    Ok(StreamerStatus {
        spool: dir.display().to_string(),
        running: written_at.is_some_and(|t| (now - t).num_seconds() <= ALIVE_WITHIN_SECONDS),
        status_written_at: written_at,
        source: file.source,
        server_uuid: file.server_uuid.filter(|u| !u.is_empty()),
        lag_seconds: file.lag_seconds,
        last_error: file.last_error,
        repos: file.repos,
        spool_bytes: files.values().flat_map(|f| f.values()).sum(),
        error,
        files,
    })
}

/// `<spool>/<server uuid>/<binlog file>`: the streamer's layout (`binlog::spool`).
fn spooled_files(dir: &Path) -> std::io::Result<BTreeMap<String, BTreeMap<String, u64>>> {
    let mut out = BTreeMap::new();
    for server in std::fs::read_dir(dir)? {
        let server = server?;
        let uuid = server.file_name().to_string_lossy().into_owned();
        if uuid.starts_with('.') || !server.file_type()?.is_dir() {
            continue;
        }
        let mut files = BTreeMap::new();
        for f in std::fs::read_dir(server.path())? {
            let f = f?;
            let name = f.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || file_sequence(&name).is_none() {
                continue;
            }
            // Removed by the uploader between the listing and now: archived everywhere.
            if let Ok(meta) = f.metadata() {
                files.insert(name, meta.len());
            }
        }
        out.insert(uuid, files);
    }
    Ok(out)
}

impl StreamerStatus {
    /// Bytes of `source`'s spooled files that a repository holding `archived` lacks;
    /// `None` when the spool has nothing of that source.
    pub fn pending_bytes(
        &self,
        source: &str,
        archived: &BTreeMap<u64, BinlogSegment>,
    ) -> Option<u64> {
        let files = self.files.get(source)?;
        Some(
            files
                .iter()
                // A file holding only its 4-byte magic is not uploaded yet by design.
                .filter(|(_, len)| **len > 4)
                .map(|(name, len)| {
                    let held = file_sequence(name)
                        .and_then(|seq| archived.get(&seq))
                        .filter(|seg| seg.file == *name)
                        .map_or(0, |seg| seg.size);
                    len.saturating_sub(held)
                })
                .sum(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_bytes_are_what_the_spool_has_beyond_the_repository() {
        let dir = tempfile::tempdir().expect("tempdir");
        let uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let server = dir.path().join(uuid);
        std::fs::create_dir_all(&server).unwrap();
        std::fs::write(server.join("binlog.000001"), vec![0u8; 100]).unwrap();
        std::fs::write(server.join("binlog.000002"), vec![0u8; 50]).unwrap();
        std::fs::write(server.join(".tmp-x"), vec![0u8; 999]).unwrap();
        std::fs::write(
            dir.path().join("status.json"),
            format!(
                r#"{{"server_uuid": "{uuid}", "lag_seconds": 1.5, "last_error": null, "more": 1}}"#
            ),
        )
        .unwrap();
        let st = read(dir.path(), Utc::now()).expect("read");
        assert!(st.running);
        assert_eq!(st.server_uuid.as_deref(), Some(uuid));
        assert_eq!(st.lag_seconds, Some(1.5));
        assert_eq!(st.spool_bytes, 150);
        let mut archived = BTreeMap::new();
        let mut seg = BinlogSegment::sample(uuid, "binlog.000002", "", "");
        seg.size = 20;
        archived.insert(2, seg);
        assert_eq!(st.pending_bytes(uuid, &archived), Some(100 + 30));
        assert_eq!(st.pending_bytes("other", &archived), None);

        let later = Utc::now() + chrono::Duration::seconds(ALIVE_WITHIN_SECONDS + 5);
        assert!(!read(dir.path(), later).expect("read").running);
        let missing = read(&dir.path().join("nope"), Utc::now()).expect_err("no such spool");
        assert!(missing.to_string().contains("--spool"), "{missing}");
    }
}
