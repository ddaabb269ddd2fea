//! Everything of a logical snapshot that is not rows: databases and tables first, then
//! routines, views, triggers and events (after the data, so triggers do not fire during the
//! load), then accounts. Each step can be run again after a kill: what it creates it drops
//! first, and what an earlier run recorded as done is skipped.

use std::collections::HashSet;

use super::progress;
use crate::error::{Error, Result};
use crate::mysql::error::codes;
use crate::mysql::session::{Session, quote_ident, quote_str};
use crate::snapshot::logical::format::{DumpMeta, StoredObject, Table};

/// Attempts at a statement the server failed with a deadlock or a lock wait timeout.
const ATTEMPTS: u32 = 5;

/// Runs `work` again when the server reports a deadlock (1213) or a lock wait timeout (1205):
/// DDL takes data-dictionary locks that concurrent DDL on related tables can deadlock on, and
/// the server rolls the statement back whole. `work` must be safe to repeat from its start.
pub fn retrying_deadlocks<T>(
    mut work: impl FnMut() -> Result<T, crate::mysql::Error>,
) -> Result<T, crate::mysql::Error> {
    let mut attempt = 1;
    loop {
        match work() {
            Err(e)
                if attempt < ATTEMPTS
                    && matches!(e.server_code(), Some(DEADLOCK | codes::LOCK_WAIT_TIMEOUT)) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50 * u64::from(attempt)));
                attempt += 1;
            }
            other => return other,
        }
    }
}

const DEADLOCK: u16 = 1213;

/// Runs `sqls` (each repeatable: `DROP ... IF EXISTS` before `CREATE`) and records `item` as
/// done; skips both when an earlier run did. DDL commits on its own, so a run killed between
/// the statements and the record does them again. A failure names `what`.
fn step(
    s: &mut Session,
    done: &HashSet<String>,
    item: &str,
    what: &str,
    sqls: &[String],
) -> Result<()> {
    if done.contains(item) {
        return Ok(());
    }
    let kind = item.split(':').next().unwrap_or(item);
    retrying_deadlocks(|| {
        for sql in sqls {
            s.exec(sql)?;
        }
        crate::failpoint::hit(&format!("restore-{kind}-created"));
        s.exec(&progress::mark_sql(item))
    })
    .map_err(|e| Error::from(e).during(what))?;
    Ok(())
}

pub fn create_databases(s: &mut Session, meta: &DumpMeta, done: &HashSet<String>) -> Result<()> {
    for db in &meta.databases {
        let create = db
            .create
            .replacen("CREATE DATABASE ", "CREATE DATABASE IF NOT EXISTS ", 1);
        let what = format!("creating database {}", quote_ident(&db.name));
        step(s, done, &format!("db:{}", db.name), &what, &[create])?;
    }
    Ok(())
}

/// Creates one table (its database exists). A table an earlier run created without
/// recording it is dropped and made again.
pub fn create_table(s: &mut Session, db: &str, t: &Table, done: &HashSet<String>) -> Result<()> {
    let qualified = format!("{}.{}", quote_ident(db), quote_ident(&t.name));
    step(
        s,
        done,
        &format!("table:{db}.{}", t.name),
        &format!("creating table {qualified}"),
        &[
            format!("USE {}", quote_ident(db)),
            format!("DROP TABLE IF EXISTS {qualified}"),
            t.create.clone(),
        ],
    )
}

/// "creating procedure `db`.`name`", for errors.
fn creating(obj: &StoredObject, db: &str) -> String {
    format!(
        "creating {} {}.{}",
        obj.kind.to_lowercase(),
        quote_ident(db),
        quote_ident(&obj.name)
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

/// Routines first (their bodies are not checked when they are created, and views may call
/// them), then views, triggers and events.
pub fn create_programs(s: &mut Session, meta: &DumpMeta, done: &HashSet<String>) -> Result<()> {
    for db in &meta.databases {
        for r in &db.routines {
            let drop = format!("DROP {} IF EXISTS {}", r.kind, quote_ident(&r.name));
            step(
                s,
                done,
                &format!("routine:{}.{}.{}", db.name, r.kind, r.name),
                &creating(r, &db.name),
                &with_settings(r, &db.name, drop),
            )?;
        }
    }
    create_views(s, meta, done)?;
    for db in &meta.databases {
        for t in &db.triggers {
            let drop = format!("DROP TRIGGER IF EXISTS {}", quote_ident(&t.name));
            step(
                s,
                done,
                &format!("trigger:{}.{}", db.name, t.name),
                &creating(t, &db.name),
                &with_settings(t, &db.name, drop),
            )?;
        }
        for e in &db.events {
            let drop = format!("DROP EVENT IF EXISTS {}", quote_ident(&e.name));
            step(
                s,
                done,
                &format!("event:{}.{}", db.name, e.name),
                &creating(e, &db.name),
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

/// Views may use other views, in any database: create what can be created, and repeat while
/// that helps.
fn create_views(s: &mut Session, meta: &DumpMeta, done: &HashSet<String>) -> Result<()> {
    let mut pending: Vec<_> = meta
        .databases
        .iter()
        .flat_map(|db| db.views.iter().map(move |v| (db.name.as_str(), v)))
        .filter(|(db, v)| !done.contains(&format!("view:{db}.{}", v.name)))
        .collect();
    while !pending.is_empty() {
        let mut last_error = None;
        let before = pending.len();
        let mut still = Vec::new();
        for (db, v) in pending {
            let sqls = [
                format!("USE {}", quote_ident(db)),
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
            let item = format!("view:{db}.{}", v.name);
            let what = format!("creating view {}.{}", quote_ident(db), quote_ident(&v.name));
            if let Err(e) = step(s, done, &item, &what, &sqls) {
                last_error = Some(e);
                still.push((db, v));
            }
        }
        if still.len() == before {
            return Err(
                last_error.unwrap_or_else(|| Error::Internal("views could not be created".into()))
            );
        }
        pending = still;
    }
    Ok(())
}

/// Creates the snapshot's accounts that the target does not have; returns those it skipped.
/// All accounts exist before any grant runs, since grants name roles and other accounts.
///
/// An account is recorded as the restore's own before it is created, and as done after its
/// grants: a run killed in between finds its own accounts on the rerun and grants them again
/// (GRANT repeats harmlessly), instead of taking them for the target's and skipping them.
pub fn create_accounts(
    s: &mut Session,
    meta: &DumpMeta,
    done: &HashSet<String>,
    warnings: &mut Vec<String>,
) -> Result<Vec<String>> {
    let mut skipped = Vec::new();
    let mut ours = Vec::new();
    for a in &meta.users {
        let name = format!("'{}'@'{}'", a.user, a.host);
        let item = format!("account:{name}");
        if done.contains(&item) {
            continue;
        }
        let what = format!("creating account {name}");
        let on = |e: crate::mysql::Error| Error::from(e).during(what.as_str());
        let exists = s
            .query_value(&format!(
                "SELECT COUNT(*) FROM mysql.user WHERE User = {} AND Host = {}",
                quote_str(&a.user),
                quote_str(&a.host)
            ))
            .map_err(on)?
            .is_some_and(|n| n != "0");
        let owned = format!("account-created:{name}");
        if exists && !done.contains(&owned) {
            skipped.push(name);
            continue;
        }
        if !exists {
            s.exec(&progress::mark_sql(&owned)).map_err(on)?;
            s.exec(&a.create).map_err(on)?;
            crate::failpoint::hit("restore-after-account");
        }
        ours.push((name, item, a));
    }
    for (name, item, a) in ours {
        for g in &a.grants {
            // A grant of something the target does not have (a plugin's privilege) must not
            // stop the restore; it is reported.
            if let Err(e) = s.exec(g) {
                warnings.push(format!("{name}: `{g}` failed: {e}"));
            }
        }
        s.exec(&progress::mark_sql(&item))
            .map_err(|e| Error::from(e).during(format!("granting to account {name}")))?;
    }
    Ok(skipped)
}
