//! Everything of a logical snapshot that is not rows: databases and tables first, then views,
//! routines, triggers and events (after the data, so triggers do not fire during the load),
//! then accounts.

use std::collections::HashSet;

use super::progress;
use crate::error::{Error, Result};
use crate::mysql::session::{Session, quote_ident, quote_str};
use crate::snapshot::logical::format::{DumpMeta, StoredObject, Table};

/// Runs `sql` and records `item` as done; skips both when it is done already.
fn step(s: &mut Session, done: &HashSet<String>, item: &str, sqls: &[String]) -> Result<()> {
    if done.contains(item) {
        return Ok(());
    }
    for sql in sqls {
        s.exec(sql)?;
    }
    s.exec(&progress::mark_sql(item))?;
    Ok(())
}

pub fn create_databases(s: &mut Session, meta: &DumpMeta, done: &HashSet<String>) -> Result<()> {
    for db in &meta.databases {
        let create = db
            .create
            .replacen("CREATE DATABASE ", "CREATE DATABASE IF NOT EXISTS ", 1);
        step(s, done, &format!("db:{}", db.name), &[create])?;
    }
    Ok(())
}

/// Creates one table (its database exists).
pub fn create_table(s: &mut Session, db: &str, t: &Table, done: &HashSet<String>) -> Result<()> {
    let qualified = format!("{}.{}", quote_ident(db), quote_ident(&t.name));
    // DDL commits on its own: a table created by a run that died before marking it is
    // dropped and made again.
    step(
        s,
        done,
        &format!("table:{db}.{}", t.name),
        &[
            format!("USE {}", quote_ident(db)),
            format!("DROP TABLE IF EXISTS {qualified}"),
            t.create.clone(),
        ],
    )
}

fn with_settings(obj: &StoredObject, db: &str, drop: String) -> Vec<String> {
    let mut v = vec![
        format!("USE {}", quote_ident(db)),
        format!("SET SESSION sql_mode = {}", quote_str(&obj.sql_mode)),
        format!(
            "SET SESSION character_set_client = {}",
            quote_str(&obj.character_set_client)
        ),
        format!(
            "SET SESSION collation_connection = {}",
            quote_str(&obj.collation_connection)
        ),
    ];
    if let Some(tz) = &obj.time_zone {
        v.push(format!("SET SESSION time_zone = {}", quote_str(tz)));
    }
    v.push(drop);
    v.push(obj.create.clone());
    v
}

pub fn create_programs(s: &mut Session, meta: &DumpMeta, done: &HashSet<String>) -> Result<()> {
    for db in &meta.databases {
        // Views may use other views: create what can be created, and repeat while that helps.
        let mut pending: Vec<_> = db
            .views
            .iter()
            .filter(|v| !done.contains(&format!("view:{}.{}", db.name, v.name)))
            .collect();
        while !pending.is_empty() {
            let mut last_error = None;
            let before = pending.len();
            let mut still = Vec::new();
            for v in pending {
                let sqls = [
                    format!("USE {}", quote_ident(&db.name)),
                    format!(
                        "SET SESSION character_set_client = {}",
                        quote_str(&v.character_set_client)
                    ),
                    format!(
                        "SET SESSION collation_connection = {}",
                        quote_str(&v.collation_connection)
                    ),
                    format!("DROP VIEW IF EXISTS {}", quote_ident(&v.name)),
                    v.create.clone(),
                ];
                match step(s, done, &format!("view:{}.{}", db.name, v.name), &sqls) {
                    Ok(()) => {}
                    Err(e) => {
                        last_error = Some(e);
                        still.push(v);
                    }
                }
            }
            if still.len() == before {
                return Err(last_error
                    .unwrap_or_else(|| Error::Internal("views could not be created".into())));
            }
            pending = still;
        }
        for r in &db.routines {
            let drop = format!("DROP {} IF EXISTS {}", r.kind, quote_ident(&r.name));
            step(
                s,
                done,
                &format!("routine:{}.{}.{}", db.name, r.kind, r.name),
                &with_settings(r, &db.name, drop),
            )?;
        }
        for t in &db.triggers {
            let drop = format!("DROP TRIGGER IF EXISTS {}", quote_ident(&t.name));
            step(
                s,
                done,
                &format!("trigger:{}.{}", db.name, t.name),
                &with_settings(t, &db.name, drop),
            )?;
        }
        for e in &db.events {
            let drop = format!("DROP EVENT IF EXISTS {}", quote_ident(&e.name));
            step(
                s,
                done,
                &format!("event:{}.{}", db.name, e.name),
                &with_settings(e, &db.name, drop),
            )?;
        }
    }
    // Back to the loader's own settings.
    s.exec("SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO'")?;
    s.exec("SET SESSION time_zone = '+00:00'")?;
    s.exec("SET NAMES utf8mb4")?;
    Ok(())
}

/// Creates the snapshot's accounts that the target does not have; returns those it skipped.
/// All accounts exist before any grant runs, since grants name roles and other accounts.
pub fn create_accounts(
    s: &mut Session,
    meta: &DumpMeta,
    warnings: &mut Vec<String>,
) -> Result<Vec<String>> {
    let mut skipped = Vec::new();
    let mut created = Vec::new();
    for a in &meta.users {
        let exists = s
            .query_value(&format!(
                "SELECT COUNT(*) FROM mysql.user WHERE User = {} AND Host = {}",
                quote_str(&a.user),
                quote_str(&a.host)
            ))?
            .is_some_and(|n| n != "0");
        let name = format!("'{}'@'{}'", a.user, a.host);
        if exists {
            skipped.push(name);
        } else {
            s.exec(&a.create)?;
            created.push((name, a));
        }
    }
    for (name, a) in created {
        for g in &a.grants {
            // A grant of something the target does not have (a plugin's privilege) must not
            // stop the restore; it is reported.
            if let Err(e) = s.exec(g) {
                warnings.push(format!("{name}: `{g}` failed: {e}"));
            }
        }
    }
    Ok(skipped)
}
