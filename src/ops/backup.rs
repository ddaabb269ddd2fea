//! `myvault backup`: a snapshot into one or more repositories, in one pass over the source.
//! Every method (logical, clone, cold, files) ends the same way: one manifest per
//! repository that holds all the data, and a report naming the ones that failed.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::repos::{self, WriteSet};
use crate::error::Result;
use crate::mysql::session::Session;
use crate::mysql::wire::ConnectOptions;
use crate::repo::Repo;
use crate::repo::lock::this_host;
use crate::repo::manifest::{SnapshotManifest, SourceInfo};
use crate::repo::writer::{MultiWriter, TargetOutcome, new_snapshot_id};
use crate::snapshot::clone::{self, CloneOptions};
use crate::snapshot::logical::{self, LogicalOptions, Progress};
use crate::snapshot::{cold, files};
use crate::storage::OpenOptions;

#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    /// The new snapshot's id, as `list` names it (`id`).
    pub snapshot: String,
    /// The same as `snapshot`: the fields `list` shows of a snapshot have the same names here.
    pub id: String,
    pub method: String,
    pub time: DateTime<Utc>,
    pub size: u64,
    pub files: usize,
    pub seconds: f64,
    /// The same as `seconds`, under `list`'s name.
    pub duration_seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gtid_executed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binlog_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binlog_position: Option<u64>,
    pub repos: Vec<TargetOutcome>,
}

/// What an engine found out about the snapshot it wrote.
struct Taken {
    method: &'static str,
    time: DateTime<Utc>,
    source: Option<SourceInfo>,
    binlog: Option<(String, u64)>,
    gtid_executed: Option<String>,
    lock_seconds: Option<f64>,
    extra: BTreeMap<String, serde_json::Value>,
}

/// Which earlier snapshot a new one most likely resembles: the latest of the same method
/// from the same source. Its files are the bases of delta blobs (see `repo::delta`).
struct Lineage<'a> {
    method: &'static str,
    /// The source's address, or the backed-up path for `files`.
    origin: &'a str,
}

impl Lineage<'_> {
    fn parent(&self, repo: &Repo) -> Option<SnapshotManifest> {
        let origin = |m: &SnapshotManifest| match &m.source {
            Some(s) => s.address.clone(),
            None => m.backed_up_path().unwrap_or_default().to_string(),
        };
        // Unreadable manifests only cost the deltas, never the backup.
        repo.snapshots()
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m.method == self.method && origin(m) == self.origin)
            .max_by_key(|m| m.time)
    }
}

/// Opens and locks the repositories, runs `engine` into a writer for them, and commits.
/// How many threads compress one file: the logical dump already writes one file per worker
/// connection; the file methods often have one large file at a time, which alone would
/// keep one core busy.
fn stream_threads(method: &str) -> usize {
    match method {
        "logical" => 1,
        _ => std::thread::available_parallelism().map_or(2, |n| n.get()),
    }
}

fn run(
    repo_locations: &[String],
    store_opts: &OpenOptions,
    max_rate: Option<u64>,
    lineage: Lineage<'_>,
    engine: impl FnOnce(&MultiWriter) -> Result<Taken>,
) -> Result<BackupReport> {
    let started = Utc::now();
    let clock = Instant::now();
    let WriteSet {
        repos,
        locks,
        unavailable,
    } = repos::open_for_write(repo_locations, store_opts, "backup")?;
    // Delta bases are read back while writing: from local disk rather than over the network
    // when a local repository has a parent snapshot.
    let parent = repos
        .iter()
        .filter(|r| !r.storage().is_remote())
        .chain(repos.iter().filter(|r| r.storage().is_remote()))
        .find_map(|r| lineage.parent(r).map(|p| (r.clone(), p)));
    let mut writer = MultiWriter::new(repos)?;
    writer.set_stream_threads(stream_threads(lineage.method));
    if let Some(rate) = max_rate {
        writer.set_max_rate(rate);
    }
    if let Some((repo, parent)) = &parent {
        writer.set_parent(repo.clone(), parent);
    }
    let t = engine(&writer)?;
    let template = SnapshotManifest {
        id: new_snapshot_id(t.time),
        method: t.method.into(),
        time: t.time,
        started,
        finished: Utc::now(),
        host: this_host(),
        source: t.source,
        binlog_file: t.binlog.as_ref().map(|(f, _)| f.clone()),
        binlog_position: t.binlog.as_ref().map(|(_, p)| *p),
        gtid_executed: t.gtid_executed.clone(),
        lock_seconds: t.lock_seconds,
        size: 0,
        new_bytes: 0,
        files: Vec::new(),
        extra: t.extra,
    };
    let id = template.id.clone();
    let (binlog_file, binlog_position) = (template.binlog_file.clone(), template.binlog_position);
    let committed = writer.commit_snapshot(template)?;
    drop(locks);
    let mut outcomes = committed.outcomes;
    outcomes.extend(unavailable);
    let seconds = clock.elapsed().as_secs_f64();
    Ok(BackupReport {
        snapshot: id.clone(),
        id,
        method: t.method.into(),
        time: t.time,
        size: committed.size,
        files: committed.files,
        seconds,
        duration_seconds: seconds,
        lock_seconds: t.lock_seconds,
        gtid_executed: t.gtid_executed,
        binlog_file,
        binlog_position,
        repos: outcomes,
    })
}

pub fn logical(
    repos: &[String],
    store: &OpenOptions,
    max_rate: Option<u64>,
    source: &ConnectOptions,
    opts: &LogicalOptions,
    progress: &Progress,
) -> Result<BackupReport> {
    let origin = source.address();
    let lineage = Lineage {
        method: "logical",
        origin: &origin,
    };
    run(repos, store, max_rate, lineage, |writer| {
        let snap = logical::dump(source, writer, opts, progress)?;
        let p = snap.point;
        Ok(Taken {
            method: "logical",
            time: p.server_time,
            source: Some(snap.source),
            binlog: Some((p.binlog_file, p.binlog_position)),
            gtid_executed: Some(p.gtid_executed),
            lock_seconds: Some(p.lock_seconds),
            extra: [
                (
                    "format".to_string(),
                    serde_json::json!(logical::format::FORMAT),
                ),
                ("tables".to_string(), serde_json::json!(snap.tables)),
                ("rows".to_string(), serde_json::json!(snap.rows)),
                ("ddl_blocked".to_string(), serde_json::json!(p.ddl_blocked)),
            ]
            .into(),
        })
    })
}

pub fn clone_local(
    repos: &[String],
    store: &OpenOptions,
    max_rate: Option<u64>,
    source: &ConnectOptions,
    opts: &CloneOptions<'_>,
) -> Result<BackupReport> {
    let origin = source.address();
    let lineage = Lineage {
        method: "clone",
        origin: &origin,
    };
    run(repos, store, max_rate, lineage, |writer| {
        let mut s = Session::connect(source)?;
        let info = logical::source_info(&mut s)?;
        let snap = clone::backup(&mut s, source, info, writer, opts)?;
        Ok(physical_taken("clone", snap))
    })
}

pub fn cold(
    repos: &[String],
    store: &OpenOptions,
    max_rate: Option<u64>,
    datadir: &Path,
) -> Result<BackupReport> {
    let origin = datadir.display().to_string();
    let lineage = Lineage {
        method: "cold",
        origin: &origin,
    };
    run(repos, store, max_rate, lineage, |writer| {
        Ok(physical_taken("cold", cold::backup(datadir, writer)?))
    })
}

fn physical_taken(method: &'static str, snap: clone::PhysicalSnapshot) -> Taken {
    let has_binlog = !snap.binlog_file.is_empty();
    let mut extra: BTreeMap<String, serde_json::Value> =
        [("files".to_string(), serde_json::json!(snap.files))].into();
    if let Some(sums) = &snap.table_checksums {
        extra.insert(
            crate::snapshot::checksums::MANIFEST_KEY.to_string(),
            serde_json::json!(sums),
        );
    }
    Taken {
        method,
        time: snap.time,
        source: Some(snap.source),
        binlog: has_binlog.then_some((snap.binlog_file, snap.binlog_position)),
        gtid_executed: Some(snap.gtid_executed),
        lock_seconds: None,
        extra,
    }
}

pub fn files(
    repos: &[String],
    store: &OpenOptions,
    max_rate: Option<u64>,
    path: &Path,
) -> Result<BackupReport> {
    let origin = path.display().to_string();
    let lineage = Lineage {
        method: "files",
        origin: &origin,
    };
    run(repos, store, max_rate, lineage, |writer| {
        let stream = writer.stream_chunker();
        files::add_tree(writer, path, &|_| stream)?;
        Ok(Taken {
            method: "files",
            time: Utc::now(),
            source: None,
            binlog: None,
            gtid_executed: None,
            lock_seconds: None,
            extra: [(
                "path".to_string(),
                serde_json::Value::String(path.display().to_string()),
            )]
            .into(),
        })
    })
}
