//! Moving tables from the temporary server to the target as InnoDB tablespace files
//! (transportable tablespaces): `FLUSH TABLES ... FOR EXPORT` on the temporary server, its
//! `.ibd` and `.cfg` files copied into the target's data directory while the lock is held,
//! `DISCARD` / `IMPORT TABLESPACE` on the target (a partitioned table's partitions too). Much faster than a logical copy for big
//! tables, but only where both sides allow it (see [`refusal`]): the target's data directory
//! on this machine and writable, the same server version and page size, file-per-table, plain
//! InnoDB tables with simple names, and no binary log on the target side, since `DISCARD` and
//! `IMPORT` are logged but a replica has no file to import.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::mysql::session::{Session, quote_str};
use crate::mysql::wire::ConnectOptions;
use crate::restore::logical::tables::rewrite_definition;
use crate::restore::pitr::table_ddl::{Name, qualified};
use crate::restore::table_copy::CopyReport;

/// A name that is its own file name in the data directory (others are encoded by the server).
fn plain(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn var(s: &mut Session, name: &str) -> Result<String> {
    Ok(s.query_value(&format!("SELECT @@{name}"))?
        .unwrap_or_default())
}

/// The target's data directory, when the target allows transport (`binlog`: the restore
/// writes to its binary log); otherwise why not.
pub fn target_refusal(
    target: &mut Session,
    binlog: bool,
) -> Result<std::result::Result<PathBuf, String>> {
    if binlog && var(target, "log_bin")? != "0" {
        return Ok(Err(
            "the restore is written to the target's binary log, where DISCARD and \
             IMPORT TABLESPACE would break its replicas (they have no file to import); use \
             --no-binlog"
                .into(),
        ));
    }
    if var(target, "innodb_file_per_table")? != "1" {
        return Ok(Err("the target has innodb_file_per_table off".into()));
    }
    let datadir = PathBuf::from(var(target, "datadir")?);
    let uuid = var(target, "server_uuid")?;
    let auto_cnf = std::fs::read_to_string(datadir.join("auto.cnf")).unwrap_or_default();
    if uuid.is_empty() || !auto_cnf.contains(&uuid) {
        return Ok(Err(format!(
            "the target's data directory {} is not on this machine (or not readable here)",
            datadir.display()
        )));
    }
    Ok(Ok(datadir))
}

/// Why the tables of `map` (source on `temp` -> destination) cannot be transported from
/// `temp` to `target`, if they cannot.
pub fn tables_refusal(
    temp: &mut Session,
    target: &mut Session,
    map: &BTreeMap<Name, Name>,
) -> Result<Option<String>> {
    for v in ["version", "innodb_page_size"] {
        let (a, b) = (var(temp, v)?, var(target, v)?);
        if a != b {
            return Ok(Some(format!(
                "the target's {v} is {b}, the snapshot's server's {a}"
            )));
        }
    }
    for (src, dest) in map {
        if ![&src.0, &src.1, &dest.1].iter().all(|n| plain(n)) {
            return Ok(Some(format!(
                "{} has a name the server encodes in file names",
                qualified(src)
            )));
        }
        let row = temp.query(&format!(
            "SELECT ENGINE, CREATE_OPTIONS FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {}",
            quote_str(&src.0),
            quote_str(&src.1)
        ))?;
        let row = row.first();
        let engine = row.as_ref().and_then(|r| r.text_at(0)).unwrap_or_default();
        let options = row.as_ref().and_then(|r| r.text_at(1)).unwrap_or_default();
        if !engine.eq_ignore_ascii_case("InnoDB") {
            return Ok(Some(format!(
                "{} is not an InnoDB table ({engine} {options})",
                qualified(src)
            )));
        }
    }
    Ok(None)
}

/// A table's tablespace files in its database directory `dir` (after `FOR EXPORT`): `t.ibd`
/// and `t.cfg`, or a partitioned table's `t#p#p0.ibd`, `t#p#p0.cfg`, ... (subpartitions
/// `#sp#`); each with what follows the table's name.
fn table_files(dir: &Path, table: &str) -> Result<Vec<(PathBuf, String)>> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(suffix) = name.strip_prefix(table) else {
            continue;
        };
        let ours = matches!(suffix, ".ibd" | ".cfg")
            || (suffix.starts_with('#') && (suffix.ends_with(".ibd") || suffix.ends_with(".cfg")));
        if ours {
            out.push((entry.path(), suffix.to_string()));
        }
    }
    if !out.iter().any(|(_, s)| s.ends_with(".cfg")) {
        return Err(Error::Internal(format!(
            "no tablespace of {table} to copy in {} after FLUSH TABLES ... FOR EXPORT",
            dir.display()
        )));
    }
    Ok(out)
}

/// Copies `from` to `to`, owned as `dir` (the target's database directory) and readable by
/// that owner and group only, as the server makes its files.
fn place(from: &Path, to: &Path, dir: &std::fs::Metadata) -> Result<()> {
    let io = |e| Error::io(format!("copying {} to {}", from.display(), to.display()), e);
    std::fs::copy(from, to).map_err(io)?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o640)).map_err(io)?;
    let like = dir;
    std::os::unix::fs::chown(to, Some(like.uid()), Some(like.gid())).map_err(io)?;
    Ok(())
}

/// Transports the tables of `map` (source on `temp`, whose data directory is `temp_datadir`
/// -> destination on `target`, in its data directory `datadir`), after creating each
/// destination from the source's definition. The target session must not write to the
/// binary log (see [`target_refusal`]).
pub fn transport(
    (temp, temp_datadir): (&ConnectOptions, &Path),
    (target, datadir): (&mut Session, &Path),
    map: &BTreeMap<Name, Name>,
) -> Result<CopyReport> {
    let started = Instant::now();
    let mut source = Session::connect(temp)?;
    let mut warnings = Vec::new();
    target.exec("SET SESSION foreign_key_checks = 0")?;
    for (src, dest) in map {
        let sql = format!("SHOW CREATE TABLE {}", qualified(src));
        let create = source
            .query(&sql)?
            .first()
            .and_then(|r| r.text_at(1))
            .ok_or_else(|| Error::NotFound(format!("no table {} to transport", qualified(src))))?;
        let create = rewrite_definition(src, dest, &create, map, &mut warnings)?;
        for stmt in [
            format!("DROP TABLE IF EXISTS {}", qualified(dest)),
            create,
            format!("ALTER TABLE {} DISCARD TABLESPACE", qualified(dest)),
        ] {
            target.exec(&stmt).map_err(|e| {
                Error::from(e).during(format!("preparing {} for its tablespace", qualified(dest)))
            })?;
        }
    }
    let list: Vec<String> = map.keys().map(qualified).collect();
    source.exec(&format!("FLUSH TABLES {} FOR EXPORT", list.join(", ")))?;
    let copied = (|| -> Result<()> {
        for (src, dest) in map {
            let dir = datadir.join(&dest.0);
            let like = std::fs::metadata(&dir)
                .map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
            for (from, suffix) in table_files(&temp_datadir.join(&src.0), &src.1)? {
                place(&from, &dir.join(format!("{}{suffix}", dest.1)), &like)?;
            }
        }
        Ok(())
    })();
    source.exec("UNLOCK TABLES")?;
    copied.map_err(|e| e.during("copying the tablespaces"))?;
    for dest in map.values() {
        target
            .exec(&format!(
                "ALTER TABLE {} IMPORT TABLESPACE",
                qualified(dest)
            ))
            .map_err(|e| Error::from(e).during(format!("importing {}", qualified(dest))))?;
        // The server has read it; it is not part of the table.
        if let Ok(files) = table_files(&datadir.join(&dest.0), &dest.1) {
            for (cfg, _) in files.iter().filter(|(_, s)| s.ends_with(".cfg")) {
                let _ = std::fs::remove_file(cfg);
            }
        }
    }
    Ok(CopyReport {
        tables: map.len(),
        rows: 0,
        seconds: started.elapsed().as_secs_f64(),
        warnings,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_names_that_are_their_own_file_names_are_plain() {
        assert!(super::plain("orders_2"));
        assert!(!super::plain("order-s"));
        assert!(!super::plain("ünï"));
        assert!(!super::plain(""));
    }
}
