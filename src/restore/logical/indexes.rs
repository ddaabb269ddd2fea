//! A table's secondary indexes, built after its rows (a sorted build is faster than keeping
//! the index up to date row by row).
//!
//! `ALTER TABLE ... ADD KEY` commits on its own, apart from the record that it is done, and
//! the server finishes an ALTER whose client was killed. So before building, the target is
//! asked what it has: an ALTER of the table still running (from a killed run) is waited for,
//! and an index that exists with the dump's definition counts as built. A restore killed at
//! any point of this phase runs again to the end.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::objects::retrying_deadlocks;
use super::progress;
use crate::error::{Error, Result};
use crate::mysql::session::{Session, quote_ident};
use crate::snapshot::logical::format::DumpMeta;

/// A table's secondary indexes, to build once its rows are in.
pub struct IndexJob<'m> {
    /// `db`.`table`, quoted.
    qualified: String,
    /// Its progress marker.
    item: String,
    indexes: Vec<Deferred<'m>>,
}

/// One index as the dump defines it.
struct Deferred<'m> {
    name: String,
    /// The definition as `SHOW CREATE TABLE` prints it: ``KEY `k` (`a`)``.
    definition: &'m str,
}

/// The index builds still to do, by database and table.
pub fn index_jobs<'m>(
    meta: &'m DumpMeta,
    done: &HashSet<String>,
) -> Result<HashMap<(&'m str, &'m str), IndexJob<'m>>> {
    let mut jobs = HashMap::new();
    for db in &meta.databases {
        for t in db.tables.iter().filter(|t| !t.deferred_indexes.is_empty()) {
            let item = format!("index:{}.{}", db.name, t.name);
            if done.contains(&item) {
                continue;
            }
            let qualified = format!("{}.{}", quote_ident(&db.name), quote_ident(&t.name));
            let indexes = t
                .deferred_indexes
                .iter()
                .map(|clause| {
                    let definition = clause.strip_prefix("ADD ").unwrap_or(clause);
                    let name = index_name(definition).ok_or_else(|| {
                        Error::Internal(format!(
                            "the dump's index definition `{clause}` of {qualified} names no index"
                        ))
                    })?;
                    Ok(Deferred { name, definition })
                })
                .collect::<Result<_>>()?;
            jobs.insert(
                (db.name.as_str(), t.name.as_str()),
                IndexJob {
                    qualified,
                    item,
                    indexes,
                },
            );
        }
    }
    Ok(jobs)
}

/// Builds a table's missing indexes on a loader connection: its statements are text, so the
/// connection speaks utf8mb4 for them and binary again after.
pub fn build(s: &mut Session, job: &IndexJob<'_>) -> Result<()> {
    let run = |s: &mut Session| -> Result<(), crate::mysql::Error> {
        s.exec("SET NAMES utf8mb4")?;
        wait_for_running_alters(s, &job.qualified)?;
        for alter in missing(s, job)? {
            crate::failpoint::hit("restore-before-index");
            retrying_deadlocks(|| s.exec(&alter))?;
            crate::failpoint::hit("restore-after-index");
        }
        s.exec(&progress::mark_sql(&job.item))?;
        s.exec("SET NAMES binary")?;
        Ok(())
    };
    run(s).map_err(|e| Error::from(e).during(format!("building indexes of {}", job.qualified)))
}

/// The ALTER statements that give the table the indexes it lacks: those it has with another
/// definition are dropped and added again. InnoDB adds one FULLTEXT index per statement.
fn missing(s: &mut Session, job: &IndexJob<'_>) -> Result<Vec<String>, crate::mysql::Error> {
    let existing = existing_indexes(s, &job.qualified)?;
    let mut clauses = Vec::new();
    let mut fulltext = Vec::new();
    for ix in &job.indexes {
        let clause = match existing.get(&ix.name) {
            Some(definition) if definition == ix.definition.trim_end() => continue,
            Some(_) => format!("DROP KEY {}, ADD {}", quote_ident(&ix.name), ix.definition),
            None => format!("ADD {}", ix.definition),
        };
        if ix.definition.starts_with("FULLTEXT ") {
            fulltext.push(clause);
        } else {
            clauses.push(clause);
        }
    }
    let mut fulltext = fulltext.into_iter();
    clauses.extend(fulltext.next());
    let alter =
        |clauses: &[String]| format!("ALTER TABLE {} {}", job.qualified, clauses.join(", "));
    let mut alters: Vec<String> = Vec::new();
    if !clauses.is_empty() {
        alters.push(alter(&clauses));
    }
    alters.extend(fulltext.map(|c| alter(&[c])));
    Ok(alters)
}

/// Waits while another session runs an ALTER of the table: one a killed run left behind goes
/// on until it is done, and an ALTER sent now would queue behind it and then fail on the
/// index it adds.
fn wait_for_running_alters(s: &mut Session, qualified: &str) -> Result<(), crate::mysql::Error> {
    let prefix = format!("ALTER TABLE {qualified} ");
    loop {
        let rows = s.query(
            "SELECT INFO FROM information_schema.PROCESSLIST \
             WHERE ID <> CONNECTION_ID() AND INFO LIKE 'ALTER TABLE %'",
        )?;
        let running = rows
            .iter()
            .filter_map(|r| r.text_at(0))
            .any(|info| info.starts_with(&prefix));
        if !running {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The table's secondary indexes on the target, by name, with their definitions as
/// `SHOW CREATE TABLE` prints them.
fn existing_indexes(
    s: &mut Session,
    qualified: &str,
) -> Result<HashMap<String, String>, crate::mysql::Error> {
    let sql = format!("SHOW CREATE TABLE {qualified}");
    let create = s
        .query(&sql)?
        .first()
        .and_then(|r| r.text_at(1))
        .ok_or_else(|| s.unexpected(&sql, "no row"))?;
    Ok(create
        .lines()
        .map(|l| l.trim_start().trim_end_matches(',').trim_end())
        .filter_map(|l| Some((index_name(l)?, l.to_string())))
        .collect())
}

/// The name of the index a definition such as ``UNIQUE KEY `u` (`c`(10),`k`)`` makes.
fn index_name(definition: &str) -> Option<String> {
    let rest = ["KEY ", "UNIQUE KEY ", "FULLTEXT KEY ", "SPATIAL KEY "]
        .iter()
        .find_map(|k| definition.strip_prefix(k))?
        .strip_prefix('`')?;
    let mut name = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '`' {
            name.push(c);
        } else if chars.peek() == Some(&'`') {
            // A doubled backquote is one backquote of the name.
            chars.next();
            name.push('`');
        } else {
            return Some(name);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names_are_read_from_definitions() {
        assert_eq!(index_name("KEY `k_1` (`k`)").as_deref(), Some("k_1"));
        assert_eq!(
            index_name("UNIQUE KEY `u` (`c`(10),`k`)").as_deref(),
            Some("u")
        );
        assert_eq!(
            index_name("FULLTEXT KEY `we``ird` (`b`) /*!50100 WITH PARSER `ngram` */ ").as_deref(),
            Some("we`ird")
        );
        assert_eq!(
            index_name("SPATIAL KEY `loc` (`location`)").as_deref(),
            Some("loc")
        );
        assert_eq!(index_name("PRIMARY KEY (`id`)"), None);
        assert_eq!(index_name("`k` int NOT NULL"), None);
        assert_eq!(index_name("KEY `unterminated"), None);
    }
}
