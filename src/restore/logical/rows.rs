//! Rows: every chunk of every table loaded with `LOAD DATA LOCAL INFILE` streamed from the
//! repository, on several connections, each chunk in one transaction with the record that it
//! is loaded; each table's secondary indexes built right after its last chunk.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::indexes::{self, IndexJob};
use super::{
    LoadOptions, LoadProgress, connect_loader_logged, find_file, on_connections, progress,
};
use crate::error::{Error, Result};
use crate::mysql::session::{Session, quote_ident};
use crate::mysql::wire::ConnectOptions;
use crate::repo::manifest::SnapshotManifest;
use crate::repo::{Repo, RepoError};
use crate::snapshot::logical::format::{ColumnEncoding, DumpMeta, Table};

/// The `LOAD DATA` statement for a table's row files.
pub fn load_sql(db: &str, t: &Table) -> String {
    let mut cols = Vec::with_capacity(t.columns.len());
    let mut sets = Vec::new();
    for (i, c) in t.columns.iter().enumerate() {
        let name = quote_ident(&c.name);
        match c.encoding {
            ColumnEncoding::Raw => cols.push(name),
            ColumnEncoding::Hex => {
                cols.push(format!("@v{i}"));
                sets.push(format!("{name} = UNHEX(@v{i})"));
            }
            ColumnEncoding::Json => {
                cols.push(format!("@v{i}"));
                sets.push(format!("{name} = CONVERT(@v{i} USING utf8mb4)"));
            }
            ColumnEncoding::Index => {
                cols.push(format!("@v{i}"));
                sets.push(format!("{name} = CAST(@v{i} AS UNSIGNED)"));
            }
        }
    }
    let mut sql = format!(
        "LOAD DATA LOCAL INFILE 'myvault-chunk' INTO TABLE {}.{} CHARACTER SET binary \
         FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' ({})",
        quote_ident(db),
        quote_ident(&t.name),
        cols.join(", ")
    );
    if !sets.is_empty() {
        sql.push_str(" SET ");
        sql.push_str(&sets.join(", "));
    }
    sql
}

struct LoadJob<'m> {
    db: &'m str,
    table: &'m Table,
    file: &'m str,
    rows: u64,
    sql: Arc<String>,
}

/// A table's index build, waiting for its last chunks.
struct AfterRows<'m> {
    chunks_left: AtomicU64,
    index: Mutex<Option<IndexJob<'m>>>,
}

/// What a loader connection does next.
enum Work<'m> {
    Rows(LoadJob<'m>),
    Indexes(IndexJob<'m>),
}

/// Loads the rows, and builds each table's secondary indexes on the connection that loaded
/// its last chunk, right after it: index builds fill the time in which the other connections
/// finish their last chunks (the load's tail ran on one of two cores for up to 0.4 s per table
/// pair; 10-25% of a restore's CPU time was idle).
pub fn load_rows_and_indexes(
    repo: &Repo,
    snap: &SnapshotManifest,
    meta: &DumpMeta,
    target: &ConnectOptions,
    opts: &LoadOptions,
    done: &HashSet<String>,
    progress: &LoadProgress,
) -> Result<()> {
    let mut indexes = indexes::index_jobs(meta, done)?;
    let mut jobs: Vec<LoadJob<'_>> = Vec::new();
    let mut truncate = Vec::new();
    for db in &meta.databases {
        for t in &db.tables {
            let sql = Arc::new(load_sql(&db.name, t));
            let pending: Vec<_> = t
                .chunks
                .iter()
                .filter(|c| !done.contains(&format!("chunk:{}", c.file)))
                .collect();
            // A table without transactions that an earlier run created may hold part of an
            // interrupted chunk (its rows are in before the record that they are): load it
            // again whole.
            let reload_all = !t.engine.eq_ignore_ascii_case("InnoDB")
                && !pending.is_empty()
                && done.contains(&format!("table:{}.{}", db.name, t.name));
            if reload_all {
                truncate.push((db.name.as_str(), t));
            }
            for c in &t.chunks {
                if reload_all || !done.contains(&format!("chunk:{}", c.file)) {
                    jobs.push(LoadJob {
                        db: &db.name,
                        table: t,
                        file: &c.file,
                        rows: c.rows,
                        sql: sql.clone(),
                    });
                }
            }
        }
    }
    progress
        .chunks_total
        .store(jobs.len() as u64, Ordering::Relaxed);
    if !truncate.is_empty() {
        let mut s = connect_loader_logged(target, "binary", opts.binlog)?;
        for (db, t) in truncate {
            let qualified = format!("{}.{}", quote_ident(db), quote_ident(&t.name));
            s.exec(&format!("TRUNCATE TABLE {qualified}"))
                .map_err(|e| {
                    Error::from(e).during(format!("emptying {qualified} to load it again"))
                })?;
        }
    }
    // Big chunks first, so the tail is made of small ones.
    jobs.sort_by_key(|j| std::cmp::Reverse(j.rows));
    // Per table with indexes to build: its chunks still to load, and the build.
    let mut after_rows: HashMap<(&str, &str), AfterRows<'_>> = HashMap::new();
    for job in &jobs {
        let key = (job.db, job.table.name.as_str());
        if let Some(index) = indexes.remove(&key) {
            let index = Mutex::new(Some(index));
            after_rows.insert(
                key,
                AfterRows {
                    chunks_left: AtomicU64::new(0),
                    index,
                },
            );
        }
        if let Some(after) = after_rows.get(&key) {
            after.chunks_left.fetch_add(1, Ordering::Relaxed);
        }
    }
    // Tables whose rows are all in already (an earlier run loaded them) start with their
    // indexes.
    let mut work: Vec<Work<'_>> = indexes.into_values().map(Work::Indexes).collect();
    work.extend(jobs.into_iter().map(Work::Rows));
    on_connections(
        target,
        ("binary", opts.binlog),
        opts.jobs,
        work,
        |s, work| match work {
            Work::Indexes(index) => indexes::build(s, &index),
            Work::Rows(job) => {
                load_chunk(repo, snap, s, &job)?;
                progress.rows.fetch_add(job.rows, Ordering::Relaxed);
                progress.chunks_done.fetch_add(1, Ordering::Relaxed);
                let Some(after) = after_rows.get(&(job.db, job.table.name.as_str())) else {
                    return Ok(());
                };
                if after.chunks_left.fetch_sub(1, Ordering::AcqRel) != 1 {
                    return Ok(());
                }
                let index = after.index.lock().unwrap_or_else(|e| e.into_inner()).take();
                index.map_or(Ok(()), |index| indexes::build(s, &index))
            }
        },
    )
}

/// Keeps the repository error of a failing chunk read, which the protocol layer only sees as
/// an I/O failure.
struct TrackedReader<'r> {
    inner: crate::repo::reader::FileReader<'r>,
    error: Option<RepoError>,
}

impl Read for TrackedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => Ok(n),
            Err(e) => {
                let err = crate::repo::reader::unwrap_io(e, self.inner.path());
                let msg = err.to_string();
                self.error = Some(err);
                Err(std::io::Error::other(msg))
            }
        }
    }
}

/// Loads one chunk in a transaction with its record; a failure names the table and file.
fn load_chunk(
    repo: &Repo,
    snap: &SnapshotManifest,
    s: &mut Session,
    job: &LoadJob<'_>,
) -> Result<()> {
    load_chunk_inner(repo, snap, s, job).map_err(|e| {
        e.during(format!(
            "loading rows into {}.{} ({})",
            quote_ident(job.db),
            quote_ident(&job.table.name),
            job.file
        ))
    })
}

fn load_chunk_inner(
    repo: &Repo,
    snap: &SnapshotManifest,
    s: &mut Session,
    job: &LoadJob<'_>,
) -> Result<()> {
    let entry = find_file(snap, job.file)?;
    let mut reader = TrackedReader {
        inner: repo.open_file(entry)?,
        error: None,
    };
    s.exec("START TRANSACTION")?;
    let result = s.conn().exec_with_infile(&job.sql, Some(&mut reader));
    let ok = match result {
        Ok(ok) => ok,
        Err(e) => {
            // The statement was abandoned mid-file: the transaction dies with the connection.
            return Err(match reader.error.take() {
                Some(repo_err) => repo_err.into(),
                None => e.into(),
            });
        }
    };
    if ok.affected_rows != job.rows {
        s.exec("ROLLBACK")?;
        return Err(Error::Internal(format!(
            "loaded {} rows, the dump has {}",
            ok.affected_rows, job.rows
        )));
    }
    if ok.warnings > 0 {
        let warnings = s.query("SHOW WARNINGS")?;
        let unexpected = warnings
            .iter()
            .find(|w| !is_invalid_enum_warning(w, job.table))
            .and_then(|w| w.text("Message"));
        if unexpected.is_some() || warnings.len() as u64 != u64::from(ok.warnings) {
            s.exec("ROLLBACK")?;
            return Err(Error::Internal(format!(
                "the server changed data while loading it: {}",
                unexpected.unwrap_or_else(|| format!("{} warnings", ok.warnings))
            )));
        }
    }
    crate::failpoint::hit("restore-chunk-loaded");
    s.exec(&progress::mark_sql(&format!("chunk:{}", job.file)))?;
    s.exec("COMMIT")?;
    crate::failpoint::hit("restore-after-chunk");
    Ok(())
}

/// Storing an ENUM's invalid value (index 0), which the source holds, always warns: that
/// warning is the one expected.
fn is_invalid_enum_warning(w: &crate::mysql::session::Row<'_>, t: &Table) -> bool {
    let message = w.text("Message").unwrap_or_default();
    w.u64("Code") == Some(1265)
        && t.columns
            .iter()
            .filter(|c| c.encoding == ColumnEncoding::Index)
            .any(|c| {
                message
                    == format!(
                        "Data truncated for column '{}' at row {}",
                        c.name,
                        message.rsplit(' ').next().unwrap_or("")
                    )
            })
}
