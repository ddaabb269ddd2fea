//! Loading some tables of a logical snapshot, under names of the operator's choosing, into a
//! server that holds other data: only those tables' definitions and chunks are read, only
//! their destinations are created, nothing else on the server is touched (no server settings
//! but `local_infile` for the load, no GTID state, nothing to the binary log).
//!
//! A destination table's definition is the snapshot's, renamed: foreign keys to tables that
//! are restored too point at their destinations; foreign keys to tables that are not are left
//! out (and reported), since they would tie the copy to the live tables (an `ON DELETE
//! CASCADE` there would reach into the copy). Restored beside the original in the same
//! database, its constraints get names of the server's choosing (constraint names are unique
//! per database).

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use serde::Serialize;

use super::{LoadOptions, LoadProgress, connect_loader_logged, objects, progress, rows, settings};
use crate::error::{Error, Result};
use crate::mysql::session::{Session, quote_ident};
use crate::mysql::wire::ConnectOptions;
use crate::repo::Repo;
use crate::repo::manifest::SnapshotManifest;
use crate::restore::content_check::{self, ContentCheckReport};
use crate::restore::pitr::table_ddl::{Name, qualified};
use crate::snapshot::logical::format::{Database, DumpMeta, Table};

/// The part of a snapshot's catalog a single-table restore loads, under its destinations'
/// names, and what had to change in the definitions.
#[derive(Debug, Clone)]
pub struct Selected {
    pub meta: DumpMeta,
    /// Foreign keys left out (to tables not restored), one line each.
    pub warnings: Vec<String>,
}

/// `CREATE TABLE `t` (` with the table's name replaced by `dest`'s, qualified.
fn rename_create(create: &str, dest: &str) -> Option<String> {
    let start = create.find('`')?;
    let mut end = start + 1;
    let b = create.as_bytes();
    while end < b.len() {
        if b[end] == b'`' {
            if b.get(end + 1) == Some(&b'`') {
                end += 2;
                continue;
            }
            break;
        }
        end += 1;
    }
    Some(format!(
        "{}{}{}",
        &create[..start],
        dest,
        create.get(end + 1..)?
    ))
}

/// The name after `REFERENCES` in a foreign key line, resolved in `db`.
fn referenced(line: &str, db: &str) -> Option<Name> {
    let after = &line[line.find("REFERENCES ")? + "REFERENCES ".len()..];
    let mut parts = Vec::new();
    let mut rest = after;
    while let Some(r) = rest.strip_prefix('`') {
        let end = r.find('`')?;
        parts.push(r[..end].replace("``", "`"));
        rest = &r[end + 1..];
        match rest.strip_prefix('.') {
            Some(r) => rest = r,
            None => break,
        }
    }
    match parts.as_slice() {
        [t] => Some((db.to_string(), t.clone())),
        [d, t] => Some((d.clone(), t.clone())),
        _ => None,
    }
}

/// The lines of a `SHOW CREATE TABLE` text between its first line and its closing `)`.
pub fn rewrite_definition(
    src: &Name,
    dest: &Name,
    create: &str,
    restored: &BTreeMap<Name, Name>,
    warnings: &mut Vec<String>,
) -> Result<String> {
    let renamed = rename_create(create, &qualified(dest)).ok_or_else(|| {
        Error::Internal(format!(
            "the snapshot's definition of {} does not start with its name",
            qualified(src)
        ))
    })?;
    let lines: Vec<&str> = renamed.lines().collect();
    // The columns and keys end at the line that closes them (`) ENGINE=...`); a partitioned
    // table's partitioning follows it on lines of its own.
    let close = lines.iter().skip(1).position(|l| l.starts_with(')'));
    let (Some(first), Some(close)) = (lines.first(), close.map(|c| c + 1)) else {
        return Ok(renamed);
    };
    let last = lines[close..].join("\n");
    if close < 2 {
        return Ok(renamed);
    }
    let same_db = src.0 == dest.0;
    let mut body = Vec::new();
    for line in &lines[1..close] {
        let mut line = line.trim_end().trim_end_matches(',').to_string();
        let trimmed = line.trim_start();
        if trimmed.starts_with("CONSTRAINT ") && trimmed.contains(" FOREIGN KEY ") {
            let to = referenced(trimmed, &src.0).ok_or_else(|| {
                Error::Internal(format!(
                    "cannot read the foreign key `{trimmed}` of {}",
                    qualified(src)
                ))
            })?;
            match restored.get(&to) {
                Some(to_dest) => {
                    let at = line.find("REFERENCES ").unwrap_or(0) + "REFERENCES ".len();
                    let after = &line[at..];
                    // Skip the old name: one or two quoted parts.
                    let skip = referenced_len(after);
                    line = format!("{}{}{}", &line[..at], qualified(to_dest), &after[skip..]);
                }
                None => {
                    warnings.push(format!(
                        "{} has a foreign key to {}, which is not restored: {} is created \
                         without it ({})",
                        qualified(src),
                        qualified(&to),
                        qualified(dest),
                        trimmed
                    ));
                    continue;
                }
            }
        }
        if same_db && line.trim_start().starts_with("CONSTRAINT `") {
            // `CONSTRAINT `name` FOREIGN KEY ...` -> `FOREIGN KEY ...`: names are unique per
            // database, and the original keeps its own.
            let t = line.trim_start();
            if let Some(end) = t[12..].find("` ") {
                let indent = &line[..line.len() - t.len()];
                line = format!("{indent}{}", &t[12 + end + 2..]);
            }
        }
        body.push(line);
    }
    Ok(format!("{first}\n{}\n{last}", body.join(",\n")))
}

/// How many bytes of `s` the quoted name (`` `a` `` or `` `a`.`b` ``) at its start takes.
fn referenced_len(s: &str) -> usize {
    let mut at = 0;
    loop {
        let Some(r) = s[at..].strip_prefix('`') else {
            return at;
        };
        let Some(end) = r.find('`') else {
            return at;
        };
        at += end + 2;
        if s[at..].starts_with(".`") {
            at += 1;
        } else {
            return at;
        }
    }
}

/// The tables `map` (source -> destination) names, out of `meta`, renamed.
pub fn select(meta: &DumpMeta, snapshot: &str, map: &BTreeMap<Name, Name>) -> Result<Selected> {
    let mut dbs: BTreeMap<String, Database> = BTreeMap::new();
    let mut warnings = Vec::new();
    let mut rows = 0;
    for (src, dest) in map {
        let db = meta.databases.iter().find(|d| d.name == src.0);
        let table = db.and_then(|d| d.tables.iter().find(|t| t.name == src.1));
        let (Some(db), Some(table)) = (db, table) else {
            return Err(Error::NotFound(format!(
                "snapshot {snapshot} has no table {} (name tables as they were when the \
                 snapshot was taken)",
                qualified(src)
            )));
        };
        let create = rewrite_definition(src, dest, &table.create, map, &mut warnings)?;
        let entry = dbs.entry(dest.0.clone()).or_insert_with(|| Database {
            name: dest.0.clone(),
            create: rename_create(&db.create, &quote_ident(&dest.0))
                .unwrap_or_else(|| format!("CREATE DATABASE {}", quote_ident(&dest.0))),
            tables: Vec::new(),
            views: Vec::new(),
            routines: Vec::new(),
            triggers: Vec::new(),
            events: Vec::new(),
        });
        rows += table.rows;
        entry.tables.push(Table {
            name: dest.1.clone(),
            create,
            references: None,
            ..table.clone()
        });
    }
    Ok(Selected {
        meta: DumpMeta {
            databases: dbs.into_values().collect(),
            users: Vec::new(),
            rows,
            ..meta.clone()
        },
        warnings,
    })
}

/// Destinations of `names` that exist on the server.
pub fn existing(s: &mut Session, names: &[Name]) -> Result<Vec<Name>> {
    let mut out = Vec::new();
    for n in names {
        let found = s.query_value(&format!(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {}",
            crate::mysql::session::quote_str(&n.0),
            crate::mysql::session::quote_str(&n.1)
        ))?;
        if found.as_deref() != Some("0") {
            out.push(n.clone());
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Serialize)]
pub struct TablesLoadReport {
    pub tables: usize,
    pub rows: u64,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_check: Option<ContentCheckReport>,
    pub warnings: Vec<String>,
}

/// Loads `selected` (from [`select`]) into `target`. Destinations that exist are dropped
/// first: the caller refuses them unless told to replace them.
pub fn load(
    repo: &Repo,
    snap: &SnapshotManifest,
    selected: &DumpMeta,
    target: &ConnectOptions,
    opts: &LoadOptions,
    load_progress: &LoadProgress,
) -> Result<TablesLoadReport> {
    let started = Instant::now();
    let mut warnings = Vec::new();
    let marker = format!("{TABLES_MARKER}{}", snap.id);
    let session = (target, opts.binlog);
    let content_check = with_load_session(session, &marker, &mut warnings, |coord, done| {
        objects::create_databases(coord, selected, done)?;
        for db in &selected.databases {
            for t in &db.tables {
                objects::create_table(coord, &db.name, t, done)?;
            }
        }
        rows::load_rows_and_indexes(repo, snap, selected, target, opts, done, load_progress)?;
        opts.content_check
            .then(|| content_check::logical(target, selected, opts.jobs))
            .transpose()
    })?;
    Ok(TablesLoadReport {
        tables: selected.databases.iter().map(|d| d.tables.len()).sum(),
        rows: selected.rows,
        seconds: started.elapsed().as_secs_f64(),
        content_check,
        warnings,
    })
}

/// The original settings recorded in the progress schema a single-table restore left, if it
/// holds one.
fn leftover_settings(s: &mut Session) -> Result<Option<HashSet<String>>> {
    let schema = crate::restore::PROGRESS_SCHEMA;
    let owner = match s.query_value(&format!("SELECT snapshot FROM {schema}.state")) {
        Ok(Some(owner)) => owner,
        _ => return Ok(None),
    };
    if !owner.starts_with(TABLES_MARKER) {
        return Ok(None);
    }
    let rows = s.query(&format!(
        "SELECT item FROM {schema}.done WHERE item LIKE '{}%'",
        settings::RECORD
    ))?;
    Ok(Some(rows.iter().filter_map(|r| r.text_at(0)).collect()))
}

/// How the progress records of a single-table restore's load begin (see [`with_load_session`]).
pub const TABLES_MARKER: &str = "tables:";

/// Runs `work` on a loader session of `target` set up for loading some tables and nothing
/// more: the progress schema its steps record themselves in (`marker` names the run; a
/// single-table restore is not resumed, its replay would have to be too, so the remains of a
/// killed one are dropped), and `local_infile` on. Both are put back afterwards, whatever
/// `work` returned; what could not be put back is a warning. With `binlog`, the session and
/// the progress schema are written to the binary log (a replica must have the schema the
/// load's transactions record themselves in).
pub fn with_load_session<T>(
    (target, binlog): (&ConnectOptions, bool),
    marker: &str,
    warnings: &mut Vec<String>,
    work: impl FnOnce(&mut Session, &HashSet<String>) -> Result<T>,
) -> Result<T> {
    let mut coord = connect_loader_logged(target, "utf8mb4", binlog)?;
    // Any single-table restore's remains (`tables:...`), not only this one's: none is
    // resumed, but the original settings a killed one recorded are what to put back.
    let settings_found = leftover_settings(&mut coord)?;
    if settings_found.is_some() {
        progress::drop(&mut coord)?;
    }
    // Refuses the remains of a whole restore.
    progress::read(&mut coord, marker)?;
    progress::create(&mut coord, marker)
        .map_err(|e| e.during("recording the restore's progress on the target"))?;
    let done = settings_found.unwrap_or_default();
    for item in &done {
        coord.exec(&progress::mark_sql(item))?;
    }
    let wanted = settings::Wanted {
        redo_log_capacity: 0,
        disable_redo_log: false,
    };
    let changed = settings::apply(&mut coord, &done, wanted, warnings)
        .map_err(|e| e.during("enabling local_infile on the target for the load"))?;
    let result = work(&mut coord, &done);
    settings::put_back_variables(&mut coord, changed.variables(), warnings);
    progress::drop(&mut coord).map_err(|e| e.during("removing the restore's progress schema"))?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(db: &str, t: &str) -> Name {
        (db.to_string(), t.to_string())
    }

    /// `create` of `src` rewritten for `dest`, the only table restored; and the warnings.
    fn alone(create: &str, src: Name, dest: Name) -> (String, Vec<String>) {
        let map = BTreeMap::from([(src.clone(), dest.clone())]);
        let mut warnings = Vec::new();
        let out = rewrite_definition(&src, &dest, create, &map, &mut warnings).unwrap();
        (out, warnings)
    }

    const CHILD: &str = "CREATE TABLE `child` (\n  `id` int NOT NULL,\n  `p` int DEFAULT NULL,\n  `q` int DEFAULT NULL,\n  PRIMARY KEY (`id`),\n  CONSTRAINT `fk_p` FOREIGN KEY (`p`) REFERENCES `parent` (`id`) ON DELETE CASCADE,\n  CONSTRAINT `fk_q` FOREIGN KEY (`q`) REFERENCES `other`.`q` (`id`),\n  CONSTRAINT `child_chk_1` CHECK ((`id` > 0))\n) ENGINE=InnoDB";

    #[test]
    fn foreign_keys_to_tables_not_restored_are_left_out_and_reported() {
        let (out, w) = alone(CHILD, n("shop", "child"), n("shop_r", "child"));
        assert!(
            out.starts_with("CREATE TABLE `shop_r`.`child` (\n"),
            "{out}"
        );
        assert!(!out.contains("FOREIGN KEY"), "{out}");
        assert!(out.contains("  PRIMARY KEY (`id`),\n  CONSTRAINT `child_chk_1` CHECK ((`id` > 0))\n) ENGINE=InnoDB"), "{out}");
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].contains("`shop`.`parent`") && w[1].contains("`other`.`q`"),
            "{w:?}"
        );
    }

    #[test]
    fn a_partitioned_tables_definition_keeps_its_partitioning_intact() {
        let create = "CREATE TABLE `events` (\n  `id` int NOT NULL,\n  `at` date NOT NULL,\n  \
                      PRIMARY KEY (`id`,`at`)\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4\n\
                      /*!50100 PARTITION BY RANGE (year(`at`))\n\
                      (PARTITION p2024 VALUES LESS THAN (2025) ENGINE = InnoDB,\n \
                      PARTITION pmax VALUES LESS THAN MAXVALUE ENGINE = InnoDB) */";
        let (out, _) = alone(create, n("shop", "events"), n("r", "events"));
        assert_eq!(
            out,
            create.replacen("`events`", "`r`.`events`", 1),
            "the partitioning is not part of the column list"
        );
    }

    #[test]
    fn foreign_keys_between_restored_tables_point_at_the_destinations() {
        let map = BTreeMap::from([
            (n("shop", "child"), n("shop", "child_r")),
            (n("shop", "parent"), n("shop", "parent_r")),
        ]);
        let mut w = Vec::new();
        let out = rewrite_definition(
            &n("shop", "child"),
            &n("shop", "child_r"),
            CHILD,
            &map,
            &mut w,
        )
        .unwrap();
        assert!(
            out.contains(
                "  FOREIGN KEY (`p`) REFERENCES `shop`.`parent_r` (`id`) ON DELETE CASCADE,"
            ),
            "{out}"
        );
        // Beside the original: constraint names are the server's to choose.
        assert!(out.contains("  CHECK ((`id` > 0))"), "{out}");
        assert_eq!(w.len(), 1, "{w:?}");
    }
}
