//! The logical snapshot engine: a consistent, parallel dump of a running server straight into
//! the repository writer, with no local copy.

pub mod catalog;
pub mod checksum;
pub mod chunks;
pub mod consistency;
pub mod format;
pub mod tsv;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use catalog::{Filter, TableInfo};
use checksum::{PartSum, RowSumReader};
use chunks::ChunkJob;
use consistency::ConsistentPoint;
use format::{Account, Chunk, Column, Database, DumpMeta, FORMAT, META_FILE, Table, TableName};

use crate::error::{Error, Result};
use crate::first_error::FirstError;
use crate::mysql::session::{Session, quote_ident};
use crate::mysql::wire::{Conn, ConnectOptions};
use crate::repo::manifest::SourceInfo;
use crate::repo::writer::MultiWriter;

#[derive(Debug, Clone)]
pub struct LogicalOptions {
    pub jobs: usize,
    pub filter: Filter,
    pub lock_wait_timeout: u64,
    pub long_query_guard: Duration,
    /// Target size of one chunk of rows, bytes (estimated from table statistics).
    pub chunk_bytes: u64,
}

impl Default for LogicalOptions {
    fn default() -> Self {
        LogicalOptions {
            jobs: 2,
            filter: Filter::default(),
            lock_wait_timeout: 30,
            long_query_guard: Duration::from_secs(120),
            chunk_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Counters a caller can show while the dump runs.
#[derive(Debug, Default)]
pub struct Progress {
    pub rows: AtomicU64,
    pub chunks_done: AtomicU64,
    pub chunks_total: AtomicU64,
}

#[derive(Debug, Clone)]
pub struct LogicalSnapshot {
    pub point: ConsistentPoint,
    pub source: SourceInfo,
    pub tables: usize,
    pub rows: u64,
}

/// Session settings for reading definitions: stable quoting and UTC for TIMESTAMP defaults.
/// One statement: one round trip.
const COORDINATOR_SETUP: &str = "SET NAMES utf8mb4, SESSION sql_quote_show_create = 1, \
     SESSION time_zone = '+00:00', SESSION sql_mode = '', SESSION wait_timeout = 86400";

/// Added where the server would otherwise serve row estimates (they decide how tables are cut
/// into chunks) from a cache up to a day old.
const FRESH_ROW_ESTIMATES: &str = ", SESSION information_schema_stats_expiry = 0";

pub fn source_info(s: &mut Session) -> Result<SourceInfo> {
    let rows = s.query(if s.info().is_mysql() {
        "SELECT @@server_uuid, @@server_id"
    } else {
        "SELECT CONCAT('mariadb-', @@server_id), @@server_id"
    })?;
    let r = rows
        .first()
        .ok_or_else(|| s.unexpected("SELECT @@server_uuid", "no row"))?;
    Ok(SourceInfo {
        address: s.address().to_string(),
        server_uuid: r.text_at(0).unwrap_or_default(),
        server_id: r.u64_at(1).unwrap_or(0),
        flavor: s.info().flavor.to_string(),
        version: s.info().version_string.clone(),
    })
}

/// A session set up to read the catalog as the dump's coordinator does (the check after a
/// restore reads the restored tables' catalog with it).
pub fn catalog_session(connect: &ConnectOptions) -> Result<Session> {
    let mut s = Session::connect(connect)?;
    if s.info().caches_table_stats() {
        s.exec(&format!("{COORDINATOR_SETUP}{FRESH_ROW_ESTIMATES}"))?;
    } else {
        s.exec(COORDINATOR_SETUP)?;
    }
    Ok(s)
}

pub fn dump(
    connect: &ConnectOptions,
    writer: &MultiWriter,
    opts: &LogicalOptions,
    progress: &Progress,
) -> Result<LogicalSnapshot> {
    // The workers connect while the coordinator checks the source. Should a check fail, they
    // are dropped when they are done connecting.
    let jobs = opts.jobs.max(1);
    let workers = {
        let connect = connect.clone();
        std::thread::spawn(move || consistency::connect_workers(&connect, jobs))
    };
    let mut coord = catalog_session(connect)?;
    crate::mysql::privileges::require(
        &mut coord,
        crate::mysql::privileges::LOGICAL_BACKUP,
        "take a logical backup",
    )?;
    let source = source_info(&mut coord)?;
    let mut workers = crate::error::joined(workers.join(), "connecting")?;
    let point = consistency::take(
        &mut coord,
        &mut workers,
        opts.lock_wait_timeout,
        opts.long_query_guard,
    )?;
    crate::failpoint::hit("dump-after-snapshot");

    let dbs = catalog::databases(&mut coord, &opts.filter)?;
    let mut tables = catalog::tables(&mut coord, &mut workers, &dbs, &opts.filter)?;

    let mut plan: Vec<ChunkJob> = Vec::new();
    if let Some(first) = workers.first_mut() {
        for (i, t) in tables.iter().enumerate() {
            plan.extend(chunks::plan(first, t, i, opts.chunk_bytes)?);
        }
    }
    // Workers pop from the end: the biggest chunks start first, the small ones fill the tail.
    plan.sort_by_key(|j| j.estimated_bytes);
    progress
        .chunks_total
        .store(plan.len() as u64, Ordering::Relaxed);

    // Definitions are read on the coordinator. While the backup lock blocks DDL they cannot
    // change, so they are read as the rows stream (for thousands of tables that is seconds);
    // otherwise table definitions are read before the rows and again after them, to catch
    // DDL in between.
    let (done, creates, mut objects) = if point.ddl_blocked {
        let (done, defs) = std::thread::scope(|s| {
            let rows = s.spawn(|| dump_chunks(&mut workers, &tables, plan, writer, progress));
            let defs = read_creates(&mut coord, &tables)
                .and_then(|creates| Ok((creates, read_objects(&mut coord, &dbs)?)));
            let done = crate::error::joined(rows.join(), "dump");
            (done, defs)
        });
        // The rows' error first: when the source goes away, that is where it shows.
        let done = done?;
        let (creates, objects) = defs?;
        (done, creates, objects)
    } else {
        let creates = read_creates(&mut coord, &tables)?;
        let done = dump_chunks(&mut workers, &tables, plan, writer, progress)?;
        let objects = read_objects(&mut coord, &dbs)?;
        detect_ddl(&mut coord, &tables, &creates)?;
        (done, creates, objects)
    };
    for w in &mut workers {
        w.exec("COMMIT")?;
    }
    if point.ddl_blocked {
        coord.exec("UNLOCK INSTANCE")?;
    }

    let name_of = |t: &TableInfo| TableName {
        database: t.db.clone(),
        table: t.name.clone(),
    };
    for t in &mut tables {
        let name = name_of(t);
        t.in_foreign_key = objects
            .foreign_keys
            .iter()
            .any(|(from, to)| *from == name || *to == name);
    }

    let mut total_rows = 0;
    for (i, (t, create)) in tables.iter().zip(&creates).enumerate() {
        let (create, deferred) = catalog::defer_indexes(create, t);
        let dumped: Vec<&(Chunk, Option<PartSum>)> = done
            .get(&i)
            .map(|c| c.values().collect())
            .unwrap_or_default();
        let chunks: Vec<Chunk> = dumped.iter().map(|(c, _)| c.clone()).collect();
        let rows = chunks.iter().map(|c| c.rows).sum();
        // In chunk order, which is key order: see `checksum`.
        let content = dumped
            .iter()
            .map(|(_, sum)| *sum)
            .collect::<Option<Vec<PartSum>>>()
            .and_then(|parts| checksum::fold(parts, !t.primary_key.is_empty()));
        total_rows += rows;
        let table = Table {
            name: t.name.clone(),
            engine: t.engine.clone(),
            create,
            deferred_indexes: deferred,
            columns: t
                .dumped_columns()
                .map(|c| Column {
                    name: c.name.clone(),
                    encoding: c.encoding(),
                })
                .collect(),
            chunks,
            rows,
            references: Some(references_of(&objects.foreign_keys, &name_of(t))),
            content,
        };
        if let Some(db) = objects.databases.iter_mut().find(|d| d.name == t.db) {
            db.tables.push(table);
        }
    }
    let meta = DumpMeta {
        format: FORMAT.into(),
        flavor: source.flavor.clone(),
        version: source.version.clone(),
        databases: objects.databases,
        users: objects.users,
        rows: total_rows,
    };
    let json = serde_json::to_vec_pretty(&meta).map_err(|e| Error::Internal(e.to_string()))?;
    writer.add_file(META_FILE, 0o600, &json[..], writer.stream_chunker())?;
    Ok(LogicalSnapshot {
        point,
        source,
        tables: tables.len(),
        rows: total_rows,
    })
}

fn read_creates(coord: &mut Session, tables: &[TableInfo]) -> Result<Vec<String>> {
    tables
        .iter()
        .map(|t| catalog::show_create_table(coord, t))
        .collect()
}

/// What the coordinator reads beside the rows.
struct Objects {
    /// Each database's definition, views, routines, triggers and events (its tables are added
    /// later).
    databases: Vec<Database>,
    users: Vec<Account>,
    /// (declared on, references) of every foreign key (see [`catalog::foreign_keys`]).
    foreign_keys: BTreeSet<(TableName, TableName)>,
}

/// The tables `table`'s foreign keys reference.
fn references_of(keys: &BTreeSet<(TableName, TableName)>, table: &TableName) -> Vec<TableName> {
    keys.iter()
        .filter(|(from, _)| from == table)
        .map(|(_, to)| to.clone())
        .collect()
}

fn read_objects(coord: &mut Session, dbs: &[String]) -> Result<Objects> {
    let mut databases = Vec::with_capacity(dbs.len());
    for name in dbs {
        databases.push(Database {
            name: name.clone(),
            create: catalog::show_create_database(coord, name)?,
            tables: Vec::new(),
            views: catalog::views(coord, name)?,
            routines: catalog::routines(coord, name)?,
            triggers: catalog::triggers(coord, name)?,
            events: catalog::events(coord, name)?,
        });
    }
    Ok(Objects {
        databases,
        users: catalog::accounts(coord)?,
        foreign_keys: catalog::foreign_keys(coord, dbs)?,
    })
}

/// The row file of a chunk, named by database and table: a table's files keep their paths
/// when other tables come or go, so the next snapshot finds each changed file's previous
/// version and can store its edits as deltas. (Snapshots before this numbered tables by
/// position; their catalog names every file, so they restore the same.)
fn chunk_path(t: &TableInfo, job: &ChunkJob) -> String {
    format!(
        "data/{}/{}/{:06}.tsv",
        path_safe(&t.db),
        path_safe(&t.name),
        job.chunk
    )
}

/// A name as one path segment: letters, digits, `_`, `-` and `$` as they are, every other
/// byte as `%XX`, so any identifier is safe and two names never share a segment.
fn path_safe(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'$') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Each dumped chunk by table and chunk number, with its part of the table's checksum (`None`
/// when the repository gave its file no CRC).
type Dumped = BTreeMap<usize, BTreeMap<usize, (Chunk, Option<PartSum>)>>;

/// Dumps every chunk with one thread per worker connection. The first error stops all.
fn dump_chunks(
    workers: &mut [Conn],
    tables: &[TableInfo],
    plan: Vec<ChunkJob>,
    writer: &MultiWriter,
    progress: &Progress,
) -> Result<Dumped> {
    let queue = Mutex::new(plan);
    let done: Mutex<Dumped> = Mutex::new(BTreeMap::new());
    let first_error: FirstError<Error> = FirstError::new();
    std::thread::scope(|s| {
        for conn in workers.iter_mut() {
            let (queue, done, first_error) = (&queue, &done, &first_error);
            s.spawn(move || {
                while !first_error.failed() {
                    let Some(job) = queue.lock().unwrap_or_else(|e| e.into_inner()).pop() else {
                        break;
                    };
                    match dump_one(conn, &tables[job.table], &job, writer, progress) {
                        Ok(chunk) => {
                            done.lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .entry(job.table)
                                .or_default()
                                .insert(job.chunk, chunk);
                            progress.chunks_done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => first_error.set(e),
                    }
                }
            });
        }
    });
    first_error.into_result()?;
    Ok(done.into_inner().unwrap_or_else(|e| e.into_inner()))
}

fn dump_one(
    conn: &mut Conn,
    t: &TableInfo,
    job: &ChunkJob,
    writer: &MultiWriter,
    progress: &Progress,
) -> Result<(Chunk, Option<PartSum>)> {
    let sql = chunks::select_sql(t, job);
    let stream = conn.query_stream(&sql).map_err(|e| table_error(e, t))?;
    let mut reader = tsv::TsvReader::new(stream);
    let path = chunk_path(t, job);
    let chunker = writer.stream_chunker().line_aligned();
    // Rows in key order are checked by the file's own CRC; only tables without a key pay a
    // hash per row (see `checksum`).
    let (result, row_hashes) = if t.primary_key.is_empty() {
        let mut summing = RowSumReader::new(&mut reader);
        let result = writer.add_file(&path, 0o600, &mut summing, chunker);
        (result, Some(summing.sum()))
    } else {
        (writer.add_file(&path, 0o600, &mut reader, chunker), None)
    };
    let rows = reader.rows();
    progress.rows.fetch_add(rows, Ordering::Relaxed);
    match result {
        Ok(entry) => {
            let sum = entry.digest.crc64().map(|crc64| PartSum {
                bytes: entry.size,
                crc64,
                rows,
                row_hashes,
            });
            Ok((Chunk { file: path, rows }, sum))
        }
        // A server error surfaces through the reader as an io::Error: recover it.
        Err(crate::repo::RepoError::Io { source, .. }) => match tsv::server_error(source) {
            Ok(e) => Err(table_error(e, t)),
            Err(other) => Err(Error::Internal(format!(
                "reading {}: {other}",
                t.qualified()
            ))),
        },
        Err(e) => Err(e.into()),
    }
}

/// `ER_TABLE_DEF_CHANGED`: the table was altered after the snapshot began.
const TABLE_DEF_CHANGED: u16 = 1412;

fn table_error(e: crate::mysql::Error, t: &TableInfo) -> Error {
    if e.server_code() == Some(TABLE_DEF_CHANGED) {
        return Error::SourceNotReady(format!(
            "table {} was altered during the dump, so its rows and definition would not match; \
             run the backup again (grant BACKUP_ADMIN so that DDL waits for the dump)",
            t.qualified()
        ));
    }
    e.into()
}

/// Fails the dump if any table's definition changed since it was read. AUTO_INCREMENT
/// counters move with every insert and are not a change of definition.
fn detect_ddl(coord: &mut Session, tables: &[TableInfo], creates: &[String]) -> Result<()> {
    let normalise = |s: &str| {
        s.split(' ')
            .filter(|w| !w.starts_with("AUTO_INCREMENT="))
            .collect::<Vec<_>>()
            .join(" ")
    };
    for (t, before) in tables.iter().zip(creates) {
        let now = match catalog::show_create_table(coord, t) {
            Ok(now) => now,
            Err(Error::Mysql(e))
                if e.server_code() == Some(crate::mysql::error::codes::NO_SUCH_TABLE) =>
            {
                String::new()
            }
            Err(e) => return Err(e),
        };
        if normalise(&now) != normalise(before) {
            return Err(Error::SourceNotReady(format!(
                "table {} was {} during the dump; run the backup again (grant BACKUP_ADMIN so that DDL waits for the dump)",
                t.qualified(),
                if now.is_empty() { "dropped" } else { "altered" }
            )));
        }
    }
    Ok(())
}

/// Quoted `db`.`table` for messages.
pub fn qualified(db: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(db), quote_ident(table))
}

#[cfg(test)]
mod tests {
    use super::path_safe;

    #[test]
    fn any_name_is_one_safe_path_segment_and_names_stay_apart() {
        assert_eq!(path_safe("sbtest1"), "sbtest1");
        assert_eq!(path_safe("a b/c.d`ü"), "a%20b%2Fc%2Ed%60%C3%BC");
        assert_eq!(path_safe(".."), "%2E%2E");
        // '%' itself is escaped, so an escaped-looking name cannot meet a real one.
        assert_ne!(path_safe("%20"), path_safe(" "));
    }
}
