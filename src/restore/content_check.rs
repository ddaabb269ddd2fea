//! The check that a restored server holds what the backup read from its source, not only
//! what the repository stored: a repository's checks prove its bytes are intact, this proves
//! the load put them into the server faithfully (no truncation, conversion, lost or doubled
//! row, wrong character set or time zone).
//!
//! - Logical snapshots record a checksum of each table's rows as the dump read them
//!   (`snapshot::logical::checksum`). After the load, each table is read back through the
//!   same row encoder with the dump's session settings, in key order, split into key ranges
//!   over the restore's connections, and its checksum is compared.
//! - Physical snapshots (clone) record `CHECKSUM TABLE` of every table, read on the backup's
//!   temporary server (`snapshot::checksums`). A restore that starts a server on the restored
//!   directory runs `CHECK TABLE` and `CHECKSUM TABLE` on every table and compares.
//!
//! A difference is an integrity failure (exit 8) naming the tables. Snapshots written before
//! checksums were recorded restore as before; the report says "no checksums recorded".

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::first_error::on_each;
use crate::mysql::session::Session;
use crate::mysql::wire::{Conn, ConnectOptions};
use crate::repo::manifest::SnapshotManifest;
use crate::snapshot::checksums::{self, TableChecksums};
use crate::snapshot::logical::catalog::{self, Filter, TableInfo};
use crate::snapshot::logical::checksum::{self as sums, PartSum, RowSumReader};
use crate::snapshot::logical::chunks::{self, ChunkJob};
use crate::snapshot::logical::format::{ContentSum, DumpMeta, Table};
use crate::snapshot::logical::{consistency, qualified, tsv};

/// Key ranges of about this many bytes are read on separate connections, so that one large
/// table does not leave the others idle.
const PART_BYTES: u64 = 64 << 20;

/// What a logical and a physical check compare.
const LOGICAL: &str = "rows";
const PHYSICAL: &str = "checksum table";

/// The most table names an error message lists.
const NAMED_IN_ERROR: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every table with a recorded checksum matched it.
    Match,
    /// The snapshot records none (it was taken before they were recorded, or with them off).
    NoChecksumsRecorded,
}

#[derive(Debug, Clone, Serialize)]
pub struct ContentCheckReport {
    pub outcome: Outcome,
    /// What was compared: `rows` (a logical snapshot's rows as dumped) or `checksum table`
    /// (a data directory's tables, each also checked with `CHECK TABLE`).
    pub compared: &'static str,
    /// The tables whose content was compared, as `db`.`table`.
    pub tables: Vec<String>,
    /// Tables the snapshot has no checksum for, so only read (physical) or not compared.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_recorded: Vec<String>,
    /// Rows and bytes read back (logical snapshots).
    pub rows: u64,
    pub bytes: u64,
    pub seconds: f64,
}

impl ContentCheckReport {
    /// One line for people.
    pub fn summary(&self) -> String {
        match self.outcome {
            Outcome::NoChecksumsRecorded if self.compared == PHYSICAL => format!(
                "content check: no checksums recorded in this snapshot; CHECK TABLE found its {} tables sound, {:.1} s",
                self.not_recorded.len(),
                self.seconds
            ),
            Outcome::NoChecksumsRecorded => format!(
                "content check: no checksums recorded in this snapshot ({} tables not compared)",
                self.not_recorded.len()
            ),
            Outcome::Match => format!(
                "content check: {} tables equal what the backup read ({} compared{}), {:.1} s",
                self.tables.len(),
                self.compared,
                if self.not_recorded.is_empty() {
                    String::new()
                } else {
                    format!("; {} without a checksum", self.not_recorded.len())
                },
                self.seconds
            ),
        }
    }
}

/// A table that did not compare equal, and how.
struct Difference {
    table: String,
    detail: String,
}

fn mismatch(what: &str, differences: &[Difference]) -> Error {
    let mut named: Vec<String> = differences
        .iter()
        .take(NAMED_IN_ERROR)
        .map(|d| format!("{} ({})", d.table, d.detail))
        .collect();
    if differences.len() > NAMED_IN_ERROR {
        named.push(format!("and {} more", differences.len() - NAMED_IN_ERROR));
    }
    Error::ContentMismatch(format!(
        "content check failed: {} table(s) of the restored server differ from {what}: {}",
        differences.len(),
        named.join("; ")
    ))
}

/// A logical snapshot's table with its recorded checksum.
struct Recorded<'m> {
    db: &'m str,
    table: &'m Table,
    sum: ContentSum,
}

impl Recorded<'_> {
    fn name(&self) -> String {
        qualified(self.db, &self.table.name)
    }
}

/// Compares every table of `meta` that has a recorded checksum with the rows now on `target`,
/// reading them on up to `jobs` connections.
pub fn logical(
    target: &ConnectOptions,
    meta: &DumpMeta,
    jobs: usize,
) -> Result<ContentCheckReport> {
    crate::failpoint::hit("restore-before-content-check");
    let started = Instant::now();
    let mut recorded = Vec::new();
    let mut not_recorded = Vec::new();
    for db in &meta.databases {
        for table in &db.tables {
            match table.content {
                Some(sum) => recorded.push(Recorded {
                    db: &db.name,
                    table,
                    sum,
                }),
                None => not_recorded.push(qualified(&db.name, &table.name)),
            }
        }
    }
    let mut report = ContentCheckReport {
        outcome: Outcome::Match,
        compared: LOGICAL,
        tables: recorded.iter().map(Recorded::name).collect(),
        not_recorded,
        rows: 0,
        bytes: 0,
        seconds: 0.0,
    };
    if recorded.is_empty() {
        report.outcome = Outcome::NoChecksumsRecorded;
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }

    // The restored tables as the dump would see them: their columns, keys and sizes.
    let mut dbs: Vec<String> = recorded.iter().map(|r| r.db.to_string()).collect();
    dbs.sort();
    dbs.dedup();
    let mut coord = crate::snapshot::logical::catalog_session(target)?;
    let mut infos: BTreeMap<(String, String), TableInfo> =
        catalog::tables(&mut coord, &mut [], &dbs, &Filter::default())?
            .into_iter()
            .map(|t| ((t.db.clone(), t.name.clone()), t))
            .collect();
    drop(coord);
    let mut differences = Vec::new();
    let mut tables: Vec<(&Recorded<'_>, TableInfo)> = Vec::new();
    for r in &recorded {
        match infos.remove(&(r.db.to_string(), r.table.name.clone())) {
            None => differences.push(Difference {
                table: r.name(),
                detail: "missing on the target".into(),
            }),
            Some(info) => match shape_difference(r, &info) {
                Some(detail) => differences.push(Difference {
                    table: r.name(),
                    detail,
                }),
                None => tables.push((r, info)),
            },
        }
    }

    let mut by_table: Vec<BTreeMap<usize, PartSum>> = vec![BTreeMap::new(); tables.len()];
    for (table, chunk, sum) in read_tables(target, &tables, jobs)? {
        by_table[table].insert(chunk, sum);
    }
    for ((r, _), parts) in tables.iter().zip(by_table) {
        let rows: u64 = parts.values().map(|p| p.rows).sum();
        report.rows += rows;
        let ordered = matches!(r.sum, ContentSum::PrimaryKey { .. });
        let restored = sums::fold(parts.into_values(), ordered);
        if let Some(sum) = restored {
            report.bytes += content_bytes(sum);
        }
        if restored != Some(r.sum) || rows != r.table.rows {
            differences.push(Difference {
                table: r.name(),
                detail: describe_difference(r, rows, restored),
            });
        }
    }
    if !differences.is_empty() {
        return Err(mismatch("what the backup read", &differences));
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Reads `tables` back with the dump's own session settings and encoder, cut into key ranges
/// over up to `jobs` connections: (table number, range number, its sum) of every range.
fn read_tables(
    target: &ConnectOptions,
    tables: &[(&Recorded<'_>, TableInfo)],
    jobs: usize,
) -> Result<Vec<(usize, usize, PartSum)>> {
    if tables.is_empty() {
        return Ok(Vec::new());
    }
    let mut conns = consistency::connect_workers(target, 1)?;
    let mut parts: Vec<ChunkJob> = Vec::new();
    if let Some(first) = conns.first_mut() {
        for (i, (_, info)) in tables.iter().enumerate() {
            parts.extend(chunks::plan(first, info, i, PART_BYTES)?);
        }
    }
    let more = jobs.clamp(1, parts.len().max(1)) - 1;
    if more > 0 {
        conns.extend(consistency::connect_workers(target, more)?);
    }
    // The biggest first, so that the small ones fill the tail.
    parts.sort_by_key(|p| std::cmp::Reverse(p.estimated_bytes));
    on_each(&mut conns, parts, |conn, part| {
        let (r, info) = &tables[part.table];
        let ordered = matches!(r.sum, ContentSum::PrimaryKey { .. });
        let sum = read_part(conn, info, &part, ordered)?;
        Ok((part.table, part.chunk, sum))
    })
}

/// Why the restored table cannot hold the dumped rows: other columns, or no key to read it in
/// the dump's order.
fn shape_difference(r: &Recorded<'_>, info: &TableInfo) -> Option<String> {
    let restored: Vec<&str> = info.dumped_columns().map(|c| c.name.as_str()).collect();
    let dumped: Vec<&str> = r.table.columns.iter().map(|c| c.name.as_str()).collect();
    if restored != dumped {
        return Some(format!(
            "columns ({}) instead of the dumped ({})",
            restored.join(", "),
            dumped.join(", ")
        ));
    }
    if matches!(r.sum, ContentSum::PrimaryKey { .. }) && info.primary_key.is_empty() {
        return Some("no primary key, the dump had one".into());
    }
    None
}

fn content_bytes(sum: ContentSum) -> u64 {
    match sum {
        ContentSum::PrimaryKey { bytes, .. } | ContentSum::Unordered { bytes, .. } => bytes,
    }
}

fn describe_difference(r: &Recorded<'_>, rows: u64, restored: Option<ContentSum>) -> String {
    let dumped = format!(
        "{} rows, {} bytes, checksum {}",
        r.table.rows,
        content_bytes(r.sum),
        checksum_text(r.sum)
    );
    let now = match restored {
        Some(sum) => format!(
            "{rows} rows, {} bytes, checksum {}",
            content_bytes(sum),
            checksum_text(sum)
        ),
        None => format!("{rows} rows"),
    };
    format!("restored {now}; the dump read {dumped}")
}

fn checksum_text(sum: ContentSum) -> String {
    match sum {
        ContentSum::PrimaryKey { crc64, .. } => crc64.to_string(),
        ContentSum::Unordered { row_hash_sum, .. } => row_hash_sum.to_string(),
    }
}

/// Reads one key range (or the whole table) as the dump would write it, and sums it.
fn read_part(conn: &mut Conn, t: &TableInfo, part: &ChunkJob, ordered: bool) -> Result<PartSum> {
    let stream = conn.query_stream(&chunks::select_sql(t, part))?;
    let mut rows = tsv::TsvReader::new(stream);
    let mut crc = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Nvme);
    let mut bytes = 0u64;
    let mut buf = vec![0u8; 256 << 10];
    let failed = |e: std::io::Error| match tsv::server_error(e) {
        Ok(e) => Error::from(e),
        Err(other) => Error::Internal(format!("reading {} back: {other}", t.qualified())),
    };
    let row_hashes = if ordered {
        loop {
            let n = rows.read(&mut buf).map_err(failed)?;
            if n == 0 {
                break None;
            }
            crc.update(&buf[..n]);
            bytes += n as u64;
        }
    } else {
        let mut summing = RowSumReader::new(&mut rows);
        loop {
            let n = summing.read(&mut buf).map_err(failed)?;
            if n == 0 {
                break Some(summing.sum());
            }
            bytes += n as u64;
        }
    };
    Ok(PartSum {
        bytes,
        crc64: crc.finalize(),
        rows: rows.rows(),
        row_hashes,
    })
}

/// The `CHECKSUM TABLE` values a physical snapshot recorded, if it did.
pub fn recorded_checksums(snap: &SnapshotManifest) -> Result<Option<TableChecksums>> {
    let Some(value) = snap.extra.get(checksums::MANIFEST_KEY) else {
        return Ok(None);
    };
    serde_json::from_value(value.clone())
        .map(Some)
        .map_err(|e| {
            crate::repo::RepoError::integrity(
                "snapshot manifest",
                format!("snapshot {} {}", snap.id, checksums::MANIFEST_KEY),
                e.to_string(),
            )
            .into()
        })
}

/// What one table of a physical restore gave.
struct TableResult {
    name: String,
    checked: std::result::Result<(), String>,
    checksum: Option<u64>,
}

/// Runs `CHECK TABLE` on every table of the server at `server` (on up to `jobs` connections),
/// and `CHECKSUM TABLE`, compared with `recorded`; without recorded values only when
/// `read_every_row` asks for a read of every full row all the same.
pub fn physical(
    server: &ConnectOptions,
    recorded: Option<&TableChecksums>,
    jobs: usize,
    read_every_row: bool,
) -> Result<ContentCheckReport> {
    crate::failpoint::hit("restore-before-content-check");
    let started = Instant::now();
    let mut s = Session::connect(server)?;
    let tables = checksums::base_tables(&mut s)?;
    let mut conns = checksums::sessions(s, server, jobs.clamp(1, tables.len().max(1)))?;
    let results = on_each(&mut conns, tables.clone(), |s, (db, table)| -> Result<_> {
        Ok(TableResult {
            name: qualified(&db, &table),
            checked: check_table(s, &db, &table)?,
            checksum: match recorded.is_some() || read_every_row {
                true => checksums::checksum_table(s, &db, &table)?,
                false => None,
            },
        })
    })?;
    let mut differences = Vec::new();
    let mut report = ContentCheckReport {
        outcome: match recorded {
            Some(_) => Outcome::Match,
            None => Outcome::NoChecksumsRecorded,
        },
        compared: PHYSICAL,
        tables: Vec::new(),
        not_recorded: Vec::new(),
        rows: 0,
        bytes: 0,
        seconds: 0.0,
    };
    for ((db, table), result) in tables.iter().zip(results) {
        if let Err(problem) = result.checked {
            differences.push(Difference {
                table: result.name.clone(),
                detail: format!("CHECK TABLE: {problem}"),
            });
        }
        let Some(recorded) = recorded else {
            report.not_recorded.push(result.name);
            continue;
        };
        match recorded.get(db).and_then(|t| t.get(table)) {
            None => differences.push(Difference {
                table: result.name,
                detail: "not in the snapshot's checksums".into(),
            }),
            Some(&expected) if expected != result.checksum => differences.push(Difference {
                table: result.name,
                detail: format!(
                    "CHECKSUM TABLE {}, the backup recorded {}",
                    optional(result.checksum),
                    optional(expected)
                ),
            }),
            Some(_) => report.tables.push(result.name),
        }
    }
    if let Some(recorded) = recorded {
        for (db, names) in recorded {
            for name in names.keys() {
                if !tables.iter().any(|(d, t)| d == db && t == name) {
                    differences.push(Difference {
                        table: qualified(db, name),
                        detail: "missing on the restored server".into(),
                    });
                }
            }
        }
    }
    if !differences.is_empty() {
        return Err(mismatch("the snapshot", &differences));
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn optional(v: Option<u64>) -> String {
    v.map_or_else(|| "NULL".into(), |v| v.to_string())
}

/// `CHECK TABLE`: `Err` with the server's words when it finds the table damaged.
fn check_table(s: &mut Session, db: &str, table: &str) -> Result<std::result::Result<(), String>> {
    let rows = s.query(&format!("CHECK TABLE {}", qualified(db, table)))?;
    let mut problems = Vec::new();
    let mut status_ok = false;
    for r in rows.iter() {
        let kind = r.text("Msg_type").unwrap_or_default().to_ascii_lowercase();
        let text = r.text("Msg_text").unwrap_or_default();
        match kind.as_str() {
            "status" => status_ok = text == "OK" || text == "Table is already up to date",
            "error" => problems.push(text),
            _ => {}
        }
    }
    Ok(match (status_ok, problems.is_empty()) {
        (true, true) => Ok(()),
        (_, false) => Err(problems.join("; ")),
        (false, true) => Err("no OK status".into()),
    })
}
