//! Copying tables from one running server to another, under new names: how a single-table
//! restore from a clone or cold snapshot moves the tables from the temporary server it
//! replayed on to the live target. Each table streams on a connection pair of its own
//! (tables in parallel), its rows read in primary-key order as a `LOAD DATA` file, written
//! straight into `LOAD DATA LOCAL INFILE` on the target: bounded memory, no local copy, the
//! same text encoding a logical snapshot uses. The target's binary log gets the copy, or with
//! `binlog` off nothing of it.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::mysql::session::{Session, quote_ident};
use crate::mysql::wire::{Conn, ConnectOptions};
use crate::restore::logical::{self, tables::rewrite_definition};
use crate::restore::pitr::table_ddl::{Name, qualified};
use crate::snapshot::logical::catalog::{self, Filter, TableInfo};
use crate::snapshot::logical::chunks::{ChunkJob, select_sql};
use crate::snapshot::logical::format::{Column, Table};
use crate::snapshot::logical::tsv::TsvReader;

#[derive(Debug, Clone, Serialize)]
pub struct CopyReport {
    pub tables: usize,
    pub rows: u64,
    pub seconds: f64,
    pub warnings: Vec<String>,
}

/// The tables of `map` (source name on `from` -> destination on `to`), read on `from`.
fn table_infos(
    from: &ConnectOptions,
    map: &BTreeMap<Name, Name>,
) -> Result<Vec<(TableInfo, Name)>> {
    let mut s = Session::connect(from)?;
    let dbs: Vec<String> = map.keys().map(|n| n.0.clone()).collect();
    let infos = catalog::tables(&mut s, &mut [], &dbs, &Filter::default())?;
    map.iter()
        .map(|(src, dest)| {
            infos
                .iter()
                .find(|t| t.db == src.0 && t.name == src.1)
                .map(|t| (t.clone(), dest.clone()))
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "the snapshot's server has no table {} after the replay",
                        qualified(src)
                    ))
                })
        })
        .collect()
}

/// Creates each destination of `map` on `to` (dropping what is there: the caller refuses
/// existing tables unless told otherwise) and copies its rows from `from`; `binlog` says
/// whether the target's binary log gets the copy.
pub fn copy(
    from: &ConnectOptions,
    (to, binlog): (&ConnectOptions, bool),
    map: &BTreeMap<Name, Name>,
    jobs: usize,
) -> Result<CopyReport> {
    let started = Instant::now();
    let tables = table_infos(from, map)?;
    let mut warnings = Vec::new();
    let mut source = Session::connect(from)?;
    let mut definitions = Vec::new();
    let session = (to, binlog);
    let marker = format!("{}copy", logical::tables::TABLES_MARKER);
    let rows = logical::tables::with_load_session(session, &marker, &mut warnings, |target, _| {
        // Foreign keys among the copied tables point at their destinations: all are created
        // before any rows arrive (the loader sessions have foreign_key_checks = 0).
        for (t, dest) in &tables {
            let create = catalog::show_create_table(&mut source, t)?;
            let src = (t.db.clone(), t.name.clone());
            create_destination(
                target,
                dest,
                &rewrite_definition(&src, dest, &create, map, &mut definitions)?,
            )?;
        }
        let rows = std::sync::atomic::AtomicU64::new(0);
        logical::on_connections(
            to,
            ("binary", binlog),
            jobs,
            tables.iter().collect(),
            |s, (t, dest)| {
                let n = copy_rows(from, s, t, dest).map_err(|e| {
                    e.during(format!(
                        "copying {} into {}",
                        t.qualified(),
                        qualified(dest)
                    ))
                })?;
                rows.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            },
        )?;
        Ok(rows.into_inner())
    });
    warnings.extend(definitions);
    Ok(CopyReport {
        tables: tables.len(),
        rows: rows?,
        seconds: started.elapsed().as_secs_f64(),
        warnings,
    })
}

/// Creates `dest` (its database if missing) from `create`, dropping a table of that name.
fn create_destination(s: &mut Session, dest: &Name, create: &str) -> Result<()> {
    s.exec(&format!(
        "CREATE DATABASE IF NOT EXISTS {}",
        quote_ident(&dest.0)
    ))
    .and_then(|_| s.exec(&format!("DROP TABLE IF EXISTS {}", qualified(dest))))
    .and_then(|_| s.exec(create))
    .map_err(|e| Error::from(e).during(format!("creating table {}", qualified(dest))))?;
    Ok(())
}

/// Streams `t`'s rows from `from` into `dest` on `s`; returns how many.
fn copy_rows(from: &ConnectOptions, s: &mut Session, t: &TableInfo, dest: &Name) -> Result<u64> {
    let mut conn = Conn::connect(from)?;
    let all = ChunkJob {
        table: 0,
        chunk: 0,
        condition: None,
        estimated_bytes: 0,
    };
    let select = select_sql(t, &all);
    let columns = t
        .dumped_columns()
        .map(|c| Column {
            name: c.name.clone(),
            encoding: c.encoding(),
        })
        .collect();
    let shape = Table {
        name: dest.1.clone(),
        engine: t.engine.clone(),
        create: String::new(),
        deferred_indexes: Vec::new(),
        columns,
        chunks: Vec::new(),
        rows: 0,
        references: None,
        content: None,
    };
    let load = logical::load_sql(&dest.0, &shape);
    let stream = conn.query_stream(&select)?;
    let mut reader = TsvReader::new(stream);
    s.exec("START TRANSACTION")?;
    let ok = s.conn().exec_with_infile(&load, Some(&mut reader))?;
    let read = reader.rows();
    if ok.affected_rows != read || ok.warnings > 0 {
        s.exec("ROLLBACK")?;
        return Err(Error::Internal(format!(
            "{read} rows read, {} loaded with {} warnings",
            ok.affected_rows, ok.warnings
        )));
    }
    s.exec("COMMIT")?;
    Ok(read)
}
