//! Cutting tables into chunks of rows that workers dump in parallel: ranges of an integer
//! primary key, sized from the table's estimated bytes. Other tables are dumped as one
//! streamed chunk (tables without a primary key have no stable order to cut along).

use super::catalog::TableInfo;
use crate::error::Result;
use crate::mysql::session::quote_ident;
use crate::mysql::wire::Conn;

#[derive(Debug, Clone)]
pub struct ChunkJob {
    pub table: usize,
    pub chunk: usize,
    /// `WHERE` condition without the keyword; `None` for the whole table.
    pub condition: Option<String>,
    pub estimated_bytes: u64,
}

const MAX_CHUNKS_PER_TABLE: u64 = 4096;

/// Plans `t`'s chunks, reading the key range inside the worker's snapshot.
pub fn plan(
    conn: &mut Conn,
    t: &TableInfo,
    table_no: usize,
    chunk_bytes: u64,
) -> Result<Vec<ChunkJob>> {
    let estimated = t.rows_estimate.saturating_mul(t.avg_row_length.max(1));
    let whole = |estimated_bytes| {
        vec![ChunkJob {
            table: table_no,
            chunk: 0,
            condition: None,
            estimated_bytes,
        }]
    };
    let key = match t.primary_key.as_slice() {
        [only] if t.columns.iter().any(|c| &c.name == only && c.is_integer()) => only,
        _ => return Ok(whole(estimated)),
    };
    let wanted = estimated
        .div_ceil(chunk_bytes.max(1))
        .clamp(1, MAX_CHUNKS_PER_TABLE);
    if wanted == 1 {
        return Ok(whole(estimated));
    }
    let k = quote_ident(key);
    let rs = conn.query(&format!("SELECT MIN({k}), MAX({k}) FROM {}", t.qualified()))?;
    let bound = |i: usize| -> Option<i128> {
        let v = rs.rows.first()?.get(i)?.as_ref()?;
        std::str::from_utf8(v).ok()?.parse().ok()
    };
    let (Some(min), Some(max)) = (bound(0), bound(1)) else {
        return Ok(whole(estimated)); // empty table
    };
    let span = max - min + 1;
    let n = (wanted as i128).min(span).max(1);
    let step = span / n;
    let bounds: Vec<i128> = (1..n).map(|i| min + i * step).collect();
    let mut jobs = Vec::with_capacity(bounds.len() + 1);
    for i in 0..=bounds.len() {
        let condition = match (i.checked_sub(1).map(|j| bounds[j]), bounds.get(i)) {
            (None, Some(hi)) => format!("{k} < {hi}"),
            (Some(lo), Some(hi)) => format!("{k} >= {lo} AND {k} < {hi}"),
            (Some(lo), None) => format!("{k} >= {lo}"),
            (None, None) => continue,
        };
        jobs.push(ChunkJob {
            table: table_no,
            chunk: i,
            condition: Some(condition),
            estimated_bytes: estimated / n as u64,
        });
    }
    Ok(jobs)
}

/// The `SELECT` that dumps one chunk, in primary-key order so that unchanged rows produce
/// unchanged bytes (and chunks) from one backup to the next.
pub fn select_sql(t: &TableInfo, job: &ChunkJob) -> String {
    let cols: Vec<String> = t.dumped_columns().map(|c| c.select_expr()).collect();
    let mut sql = format!("SELECT {} FROM {}", cols.join(", "), t.qualified());
    if let Some(cond) = &job.condition {
        sql.push_str(" WHERE ");
        sql.push_str(cond);
    }
    if !t.primary_key.is_empty() {
        let pk: Vec<String> = t.primary_key.iter().map(|c| quote_ident(c)).collect();
        sql.push_str(" ORDER BY ");
        sql.push_str(&pk.join(", "));
    }
    sql
}
