//! The staging database of a single-table restore: the tables are built (loaded or copied,
//! then replayed) in a database of the restore's own, `_myvault_restore_<id>`, and moved to
//! their destinations at the end by one `RENAME TABLE` statement, which is atomic. A restore
//! killed at any point and run again (the same command) finds its own staging database by
//! its name and its marker table and finishes the work without `--replace-existing`:
//!
//! - the marker is `_myvault_building` while the tables are built: the rerun drops the
//!   database and builds again (the replay cannot be continued halfway through a table);
//! - the same `RENAME TABLE` that moves the tables renames the marker to `_myvault_done`,
//!   so a run killed after the move and before dropping the staging database leaves a
//!   `_myvault_done` marker: the rerun only drops the database.
//!
//! `<id>` is a digest of the request (snapshot, boundary, tables and destinations), which the
//! marker holds whole; a database of that name that is neither empty nor marked with that
//! request was not made by this restore and is refused, never dropped. While it works, the
//! restore holds the target's named lock `_myvault_restore_<id>`, so two runs of one
//! restore cannot build in the same database at once; the lock goes with the session, kill
//! or not.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::mysql::session::{Session, quote_ident, quote_str};
use crate::restore::pitr::table_ddl::{Name, qualified};

pub const PREFIX: &str = "_myvault_restore_";
const BUILDING: &str = "_myvault_building";
const DONE: &str = "_myvault_done";
/// How long a run waits for the lock another single-table restore holds.
const LOCK_WAIT_SECONDS: u32 = 15;
/// One lock for every single-table restore on a target.
const TABLES_LOCK: &str = "myvault_restore_tables";

/// What an earlier run of the same restore left on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Nothing,
    /// Killed while building; whether its staging database went to the binary log.
    Building {
        binlog: bool,
    },
    /// Killed after moving the tables into place, before dropping its staging database.
    Done {
        binlog: bool,
    },
}

#[derive(Debug, Clone)]
pub struct Staging {
    pub db: String,
    /// The request, as the marker records it.
    request: String,
    /// Destination -> its name in the staging database.
    tables: BTreeMap<Name, Name>,
}

impl Staging {
    /// The staging database of the restore `request` describes, for the destinations `dests`.
    pub fn new<'a>(request: &str, dests: impl IntoIterator<Item = &'a Name>) -> Staging {
        let digest = Sha256::digest(request.as_bytes());
        let id: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        let db = format!("{PREFIX}{id}");
        let dests: Vec<&Name> = dests.into_iter().collect();
        let tables = dests
            .iter()
            .enumerate()
            .map(|(i, d)| {
                // Under the destination's name (its generated constraint names then fit it),
                // unless two destinations share a name or one is a marker's.
                let clash = d.1 == BUILDING
                    || d.1 == DONE
                    || dests.iter().filter(|o| o.1 == d.1).count() > 1;
                let name = if clash {
                    format!("{i}_{}", d.1).chars().take(64).collect()
                } else {
                    d.1.clone()
                };
                ((*d).clone(), (db.clone(), name))
            })
            .collect();
        Staging {
            db,
            request: request.to_string(),
            tables,
        }
    }

    /// Where `dest` is built.
    pub fn table(&self, dest: &Name) -> Result<Name> {
        self.tables
            .get(dest)
            .cloned()
            .ok_or_else(|| Error::Internal(format!("no staging table for {}", qualified(dest))))
    }

    /// Takes the named lock of single-table restores on `s` (held as long as the session):
    /// a second one on the same target while one works is refused, whether it is a rerun of
    /// the same restore or another (they share the load's progress schema, which each run
    /// clears of what a killed run left). It waits a little: the session of a run killed a
    /// moment ago can take that long to end on the server.
    pub fn lock(&self, s: &mut Session) -> Result<()> {
        let name = quote_str(TABLES_LOCK);
        let got = s.query_value(&format!("SELECT GET_LOCK({name}, {LOCK_WAIT_SECONDS})"))?;
        if got.as_deref() == Some("1") {
            return Ok(());
        }
        let holder = s
            .query_value(&format!("SELECT IS_USED_LOCK({name})"))?
            .unwrap_or_else(|| "?".into());
        Err(Error::TargetRefused(format!(
            "another single-table restore holds the lock {TABLES_LOCK} on the target \
             (connection {holder}); wait for it to end, or if that run is gone (its host down), \
             KILL {holder} on the target and run again"
        )))
    }

    /// What an earlier run left. Refuses a database of the staging name that this restore
    /// did not make.
    pub fn find(&self, s: &mut Session) -> Result<Found> {
        let exists = s.query_value(&format!(
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {}",
            quote_str(&self.db)
        ))?;
        if exists.as_deref() == Some("0") {
            return Ok(Found::Nothing);
        }
        let names: Vec<String> = s
            .query(&format!(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = {}",
                quote_str(&self.db)
            ))?
            .iter()
            .filter_map(|r| r.text_at(0))
            .collect();
        let marker = [BUILDING, DONE]
            .into_iter()
            .find(|m| names.iter().any(|n| n == m));
        let Some(marker) = marker else {
            // Killed between creating the database and its marker: nothing in it to lose.
            if names.is_empty() {
                return Ok(Found::Building { binlog: true });
            }
            return Err(self.not_ours("it has no marker table"));
        };
        let row = s.query(&format!(
            "SELECT request, `binlog` FROM {}.{}",
            quote_ident(&self.db),
            quote_ident(marker)
        ))?;
        let row = row.first();
        let request = row.as_ref().and_then(|r| r.text_at(0));
        // Killed between creating the marker and filling it: nothing else to lose.
        if request.is_none() && names.len() == 1 {
            return Ok(Found::Building { binlog: true });
        }
        if request.as_deref() != Some(self.request.as_str()) {
            return Err(self.not_ours("its marker names another restore"));
        }
        let binlog = row.as_ref().and_then(|r| r.text_at(1)).as_deref() != Some("0");
        Ok(if marker == DONE {
            Found::Done { binlog }
        } else {
            Found::Building { binlog }
        })
    }

    fn not_ours(&self, why: &str) -> Error {
        Error::TargetRefused(format!(
            "the target has a database {} that this restore did not make ({why}); it is left \
             as it is: look at it, and drop it if nothing in it is needed",
            self.db
        ))
    }

    /// Creates the staging database with its marker; `binlog` is whether `s` writes to the
    /// binary log (recorded, so a rerun drops the database the way it was made).
    pub fn create(&self, s: &mut Session, binlog: bool) -> Result<()> {
        let db = quote_ident(&self.db);
        let marker = format!("{db}.{}", quote_ident(BUILDING));
        for sql in [
            format!("CREATE DATABASE {db}"),
            format!(
                "CREATE TABLE {marker} (request TEXT NOT NULL, `binlog` BOOL NOT NULL) \
                 ENGINE=InnoDB COMMENT 'myvault restore --tables: staging, dropped at the end'"
            ),
            format!(
                "INSERT INTO {marker} VALUES ({}, {})",
                quote_str(&self.request),
                u8::from(binlog)
            ),
        ] {
            s.exec(&sql).map_err(|e| {
                Error::from(e).during(format!("creating the staging database {}", self.db))
            })?;
        }
        Ok(())
    }

    /// Moves the built tables to their destinations in one `RENAME TABLE`, with the marker
    /// to `_myvault_done`. `creates` makes the destinations' databases; with
    /// `replace_existing`, destinations that exist are dropped first.
    pub fn move_into_place(
        &self,
        s: &mut Session,
        creates: &[String],
        replace_existing: bool,
    ) -> Result<()> {
        crate::failpoint::hit("tables-before-rename");
        let during = |e: crate::mysql::Error, what: &str| {
            Error::from(e).during(format!("{what} ({} -> destinations)", self.db))
        };
        for create in creates {
            s.exec(create)
                .map_err(|e| during(e, "creating a destination database"))?;
        }
        if replace_existing {
            let dests: Vec<String> = self.tables.keys().map(qualified).collect();
            // Tables with foreign keys to a destination keep them: they point at the name.
            s.exec("SET SESSION foreign_key_checks = 0")
                .and_then(|_| s.exec(&format!("DROP TABLE IF EXISTS {}", dests.join(", "))))
                .map_err(|e| during(e, "dropping the tables replaced"))?;
        }
        let mut moves: Vec<String> = self
            .tables
            .iter()
            .map(|(dest, staged)| format!("{} TO {}", qualified(staged), qualified(dest)))
            .collect();
        let db = quote_ident(&self.db);
        moves.push(format!(
            "{db}.{} TO {db}.{}",
            quote_ident(BUILDING),
            quote_ident(DONE)
        ));
        s.exec(&format!("RENAME TABLE {}", moves.join(", ")))
            .map_err(|e| during(e, "moving the tables into place"))?;
        Ok(())
    }

    /// Drops the staging database. `binlog`: whether the drop goes to the binary log (as
    /// the database did when it was made, or as this run writes; `IF EXISTS` makes it
    /// harmless on a replica that never had it).
    pub fn drop(&self, s: &mut Session, binlog: bool) -> Result<()> {
        let set = |s: &mut Session, on: bool| {
            s.exec(&format!("SET SESSION sql_log_bin = {}", u8::from(on)))
        };
        let sql = format!("DROP DATABASE IF EXISTS {}", quote_ident(&self.db));
        let logged = s.query_value("SELECT @@SESSION.sql_log_bin")?.as_deref() != Some("0");
        let result = if logged == binlog {
            s.exec(&sql)
        } else {
            set(s, binlog).and_then(|_| s.exec(&sql)).and_then(|r| {
                set(s, logged)?;
                Ok(r)
            })
        };
        result.map_err(|e| {
            Error::from(e).during(format!("dropping the staging database {}", self.db))
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(db: &str, t: &str) -> Name {
        (db.to_string(), t.to_string())
    }

    #[test]
    fn staging_names_follow_the_request_and_keep_destination_names_apart() {
        let dests = [n("a", "t"), n("b", "t"), n("b", "u")];
        let one = Staging::new("request 1", &dests);
        assert_eq!(one.db, Staging::new("request 1", &dests).db);
        assert_ne!(one.db, Staging::new("request 2", &dests).db);
        assert!(one.db.starts_with(PREFIX) && one.db.len() == PREFIX.len() + 12);
        assert_eq!(
            one.table(&n("b", "u")).unwrap(),
            (one.db.clone(), "u".into())
        );
        let (t0, t1) = (one.table(&dests[0]).unwrap(), one.table(&dests[1]).unwrap());
        assert_ne!(t0, t1);
        assert!(one.table(&n("c", "t")).is_err());
        let marker = Staging::new("r", &[n("a", DONE)]);
        assert_ne!(marker.table(&n("a", DONE)).unwrap().1, DONE);
    }
}
