//! Which statements of the archive a single-table restore replays, and under which names.
//!
//! Row changes are selected by table (see `binlog::table_filter`). Statements (DDL) are
//! text, and a statement applied to the wrong table on a live server would be a disaster, so
//! this is deliberately conservative:
//! - `ALTER TABLE t ...`, `TRUNCATE [TABLE] t`, `DROP TABLE [IF EXISTS] ... t ...`,
//!   `CREATE/DROP INDEX ... ON t` and `CREATE TABLE t ...` (of a name whose followed table was
//!   dropped) on a followed table run against its destination, fully qualified;
//! - `RENAME TABLE t TO t2` (and `ALTER TABLE t RENAME TO t2` alone) moves the following to
//!   the new name; the destination keeps its name; `DROP DATABASE` drops the followed tables
//!   in it;
//! - triggers, views, routines and table maintenance (ANALYZE, OPTIMIZE, CHECK, REPAIR)
//!   naming a followed table are left out (a single-table restore restores the table only);
//! - any other statement that names a followed table stops the restore with an error naming
//!   the transaction, so the operator restores to before it (`--before-gtid`);
//! - statements naming no followed table are left out.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::binlog::table_filter::TableFilter;
use crate::mysql::session::quote_ident;

/// `(database, table)`.
pub type Name = (String, String);

/// A token of a statement: a word or identifier (unquoted), a quoted identifier, a string,
/// or a punctuation character; with where it ends in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Quoted(String),
    Str,
    Punct(char),
}

fn tokens(sql: &str) -> Vec<(Tok, usize)> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            _ if c.is_ascii_whitespace() => i += 1,
            b'#' => i = sql[i..].find('\n').map_or(b.len(), |n| i + n),
            b'-' if sql[i..].starts_with("-- ") => {
                i = sql[i..].find('\n').map_or(b.len(), |n| i + n)
            }
            b'/' if sql[i..].starts_with("/*") => {
                i = sql[i + 2..].find("*/").map_or(b.len(), |n| i + 2 + n + 2)
            }
            b'`' => {
                let mut name = String::new();
                i += 1;
                while i < b.len() {
                    if b[i] == b'`' {
                        if b.get(i + 1) == Some(&b'`') {
                            name.push('`');
                            i += 2;
                            continue;
                        }
                        i += 1;
                        break;
                    }
                    let ch = sql[i..].chars().next().unwrap_or(' ');
                    name.push(ch);
                    i += ch.len_utf8();
                }
                out.push((Tok::Quoted(name), i));
            }
            b'\'' | b'"' => {
                i += 1;
                while i < b.len() && b[i] != c {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push((Tok::Str, i.min(b.len())));
            }
            _ if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80 => {
                let start = i;
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric()
                        || b[i] == b'_'
                        || b[i] == b'$'
                        || b[i] >= 0x80)
                {
                    i += 1;
                }
                out.push((Tok::Word(sql[start..i].to_string()), i));
            }
            _ => {
                let ch = sql[i..].chars().next().unwrap_or(' ');
                i += ch.len_utf8();
                out.push((Tok::Punct(ch), i));
            }
        }
    }
    out
}

/// A statement's tokens with a cursor.
struct Cursor<'t> {
    toks: &'t [(Tok, usize)],
    at: usize,
}

impl<'t> Cursor<'t> {
    fn keyword(&mut self, kw: &str) -> bool {
        match self.toks.get(self.at) {
            Some((Tok::Word(w), _)) if w.eq_ignore_ascii_case(kw) => {
                self.at += 1;
                true
            }
            _ => false,
        }
    }

    fn keywords(&mut self, kws: &[&str]) -> bool {
        let start = self.at;
        if kws.iter().all(|k| self.keyword(k)) {
            return true;
        }
        self.at = start;
        false
    }

    fn punct(&mut self, p: char) -> bool {
        if matches!(self.toks.get(self.at), Some((Tok::Punct(c), _)) if *c == p) {
            self.at += 1;
            return true;
        }
        false
    }

    fn ident(&mut self) -> Option<String> {
        let t = match self.toks.get(self.at)? {
            (Tok::Word(w), _) | (Tok::Quoted(w), _) => w.clone(),
            _ => return None,
        };
        self.at += 1;
        Some(t)
    }

    /// `[db.]table`, with `default_db` where no database is given.
    fn name(&mut self, default_db: &str) -> Option<Name> {
        let first = self.ident()?;
        if self.punct('.') {
            let table = self.ident()?;
            return Some((first, table));
        }
        Some((default_db.to_string(), first))
    }

    /// Where the text after the last token read starts.
    fn offset(&self) -> usize {
        self.at
            .checked_sub(1)
            .and_then(|i| self.toks.get(i))
            .map_or(0, |(_, end)| *end)
    }

    fn rest_has_word(&self, kw: &str) -> bool {
        self.toks[self.at..]
            .iter()
            .any(|(t, _)| matches!(t, Tok::Word(w) if w.eq_ignore_ascii_case(kw)))
    }
}

pub fn qualified(n: &Name) -> String {
    format!("{}.{}", quote_ident(&n.0), quote_ident(&n.1))
}

/// What happened to the restored tables inside the window, for the plan and the report.
#[derive(Debug, Clone, Serialize)]
pub struct DdlNote {
    pub gtid: Option<String>,
    pub note: String,
}

/// The tables a single-table restore follows through the archive, where each goes, and
/// what it met on the way. Also counts the transactions that touched them and those left
/// out, which is what a plan reports.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Followed tables by their current name in the archive, to their destination.
    followed: BTreeMap<Name, Name>,
    /// Followed tables dropped inside the window (by name): a `CREATE TABLE` of the name is
    /// followed again, to the same destination.
    dropped: BTreeMap<Name, Name>,
    gtid: Option<String>,
    touched_now: bool,
    pub touched: u64,
    pub left_out: u64,
    pub notes: Vec<DdlNote>,
    /// A rename inside the window moved a followed table (the applier's filters cannot follow).
    pub renamed: bool,
}

impl Selection {
    /// `tables`: source name to destination name.
    pub fn new(tables: impl IntoIterator<Item = (Name, Name)>) -> Selection {
        Selection {
            followed: tables.into_iter().collect(),
            ..Selection::default()
        }
    }

    /// Destinations of tables dropped inside the window and not created again.
    pub fn dropped_destinations(&self) -> Vec<Name> {
        self.dropped.values().cloned().collect()
    }

    fn note(&mut self, note: String) {
        self.notes.push(DdlNote {
            gtid: self.gtid.clone(),
            note,
        });
    }

    fn refuse(&self, sql: &str, why: &str) -> String {
        let head: String = sql.chars().take(80).collect();
        match &self.gtid {
            Some(g) => format!(
                "transaction {g} ({head}) {why}; restore to before it with --before-gtid {g}"
            ),
            None => format!("the statement `{head}` {why}"),
        }
    }

    fn drop_followed(&mut self, name: &Name) -> Option<Name> {
        let dest = self.followed.remove(name)?;
        self.dropped.insert(name.clone(), dest.clone());
        Some(dest)
    }

    fn mentions_followed(&self, toks: &[(Tok, usize)]) -> bool {
        toks.iter().any(|(t, _)| match t {
            Tok::Word(w) | Tok::Quoted(w) => self.followed.keys().any(|(_, table)| table == w),
            _ => false,
        })
    }

    fn decide(&mut self, default_db: &str, sql: &str) -> Result<Option<String>, String> {
        let toks = tokens(sql);
        let mut c = Cursor { toks: &toks, at: 0 };
        if c.keywords(&["ALTER", "TABLE"]) {
            let Some(name) = c.name(default_db) else {
                return Ok(None);
            };
            let Some(dest) = self.followed.get(&name).cloned() else {
                return Ok(None);
            };
            self.touched_now = true;
            if c.keyword("RENAME") {
                let _ = c.keyword("TO") || c.keyword("AS");
                let new = c.name(&name.0);
                if let Some(new) = new.filter(|_| c.at == toks.len()) {
                    self.followed.remove(&name);
                    self.note(format!(
                        "{} renamed to {}: followed, restored as {}",
                        qualified(&name),
                        qualified(&new),
                        qualified(&dest)
                    ));
                    self.followed.insert(new, dest);
                    self.renamed = true;
                    return Ok(None);
                }
            }
            if c.rest_has_word("RENAME") {
                return Err(self.refuse(sql, "renames a restored table along with other changes"));
            }
            self.note(format!("{} altered", qualified(&name)));
            return Ok(Some(format!(
                "ALTER TABLE {} {}",
                qualified(&dest),
                sql[c.offset()..].trim_start()
            )));
        }
        if c.keyword("TRUNCATE") {
            let _ = c.keyword("TABLE");
            let Some(name) = c.name(default_db) else {
                return Ok(None);
            };
            let Some(dest) = self.followed.get(&name).cloned() else {
                return Ok(None);
            };
            self.touched_now = true;
            self.note(format!("{} truncated", qualified(&name)));
            return Ok(Some(format!("TRUNCATE TABLE {}", qualified(&dest))));
        }
        if c.keywords(&["DROP", "TEMPORARY"]) {
            return Ok(None);
        }
        if c.keywords(&["DROP", "TABLE"]) {
            let _ = c.keywords(&["IF", "EXISTS"]);
            let mut dests = Vec::new();
            while let Some(name) = c.name(default_db) {
                if let Some(dest) = self.drop_followed(&name) {
                    self.note(format!("{} dropped", qualified(&name)));
                    dests.push(qualified(&dest));
                }
                if !c.punct(',') {
                    break;
                }
            }
            if dests.is_empty() {
                return Ok(None);
            }
            self.touched_now = true;
            return Ok(Some(format!("DROP TABLE IF EXISTS {}", dests.join(", "))));
        }
        if c.keywords(&["DROP", "DATABASE"]) || c.keywords(&["DROP", "SCHEMA"]) {
            let _ = c.keywords(&["IF", "EXISTS"]);
            let Some(db) = c.ident() else {
                return Ok(None);
            };
            let names: Vec<Name> = self
                .followed
                .keys()
                .filter(|n| n.0 == db)
                .cloned()
                .collect();
            let dests: Vec<String> = names
                .iter()
                .filter_map(|n| self.drop_followed(n))
                .map(|d| qualified(&d))
                .collect();
            if dests.is_empty() {
                return Ok(None);
            }
            self.touched_now = true;
            self.note(format!("database {} dropped", quote_ident(&db)));
            return Ok(Some(format!("DROP TABLE IF EXISTS {}", dests.join(", "))));
        }
        if c.keywords(&["RENAME", "TABLE"]) {
            // Pairs apply in order, so `t TO t_old, t_new TO t` follows t to t_old.
            loop {
                let (Some(from), true, Some(to)) =
                    (c.name(default_db), c.keyword("TO"), c.name(default_db))
                else {
                    return Err(self.refuse(sql, "is a RENAME TABLE this restore cannot read"));
                };
                if let Some(dest) = self.followed.remove(&from) {
                    self.touched_now = true;
                    self.renamed = true;
                    self.note(format!(
                        "{} renamed to {}: followed, restored as {}",
                        qualified(&from),
                        qualified(&to),
                        qualified(&dest)
                    ));
                    self.followed.insert(to, dest);
                }
                if !c.punct(',') {
                    return Ok(None);
                }
            }
        }
        if let Some(stmt) = self.index_ddl(default_db, sql, &toks)? {
            return Ok(stmt);
        }
        if c.keyword("CREATE") {
            if c.keyword("TEMPORARY") || !c.keyword("TABLE") {
                return self.other(sql, &toks);
            }
            let if_not_exists = c.keywords(&["IF", "NOT", "EXISTS"]);
            let Some(name) = c.name(default_db) else {
                return Ok(None);
            };
            let dest = match (self.dropped.get(&name), self.followed.get(&name)) {
                (Some(d), _) | (None, Some(d)) => d.clone(),
                (None, None) => return Ok(None),
            };
            for word in ["LIKE", "SELECT", "REFERENCES"] {
                if c.rest_has_word(word) {
                    return Err(self.refuse(
                        sql,
                        &format!("creates a restored table with {word}, which this restore does not follow"),
                    ));
                }
            }
            self.touched_now = true;
            self.dropped.remove(&name);
            self.note(format!("{} created again", qualified(&name)));
            self.followed.insert(name, dest.clone());
            return Ok(Some(format!(
                "CREATE TABLE {}{} {}",
                if if_not_exists { "IF NOT EXISTS " } else { "" },
                qualified(&dest),
                sql[c.offset()..].trim_start()
            )));
        }
        self.other(sql, &toks)
    }

    /// `CREATE [UNIQUE|FULLTEXT|SPATIAL] INDEX i ON t ...` and `DROP INDEX i ON t ...`: run
    /// against the destination when `t` is followed, left out when not; `None` for a statement
    /// of another kind.
    fn index_ddl(
        &mut self,
        default_db: &str,
        sql: &str,
        toks: &[(Tok, usize)],
    ) -> Result<Option<Option<String>>, String> {
        let mut c = Cursor { toks, at: 0 };
        let verb = if c.keyword("CREATE") {
            let _ = c.keyword("UNIQUE") || c.keyword("FULLTEXT") || c.keyword("SPATIAL");
            "CREATE"
        } else if c.keyword("DROP") {
            "DROP"
        } else {
            return Ok(None);
        };
        if !c.keyword("INDEX") {
            return Ok(None);
        }
        let head_end = c.at;
        let (Some(_), true) = (c.ident(), c.keyword("ON")) else {
            return Ok(None);
        };
        let head = &sql[..toks[head_end - 1].1];
        let index = &sql[toks[head_end - 1].1..c.offset()];
        let Some(name) = c.name(default_db) else {
            return Ok(None);
        };
        let Some(dest) = self.followed.get(&name).cloned() else {
            return Ok(Some(None));
        };
        self.touched_now = true;
        self.note(format!(
            "{} {} index",
            qualified(&name),
            verb.to_lowercase()
        ));
        Ok(Some(Some(format!(
            "{head}{index} {} {}",
            qualified(&dest),
            sql[c.offset()..].trim_start()
        ))))
    }

    /// A statement of another kind: left out unless it names a followed table.
    fn other(&mut self, sql: &str, toks: &[(Tok, usize)]) -> Result<Option<String>, String> {
        if !self.mentions_followed(toks) {
            return Ok(None);
        }
        let mut c = Cursor { toks, at: 0 };
        let maintenance = ["ANALYZE", "OPTIMIZE", "CHECK", "REPAIR", "CHECKSUM"]
            .iter()
            .any(|k| c.keyword(k));
        let definition = ["TRIGGER", "VIEW", "PROCEDURE", "FUNCTION", "EVENT"]
            .iter()
            .any(|k| {
                toks.iter()
                    .take(8)
                    .any(|(t, _)| matches!(t, Tok::Word(w) if w.eq_ignore_ascii_case(k)))
            });
        if maintenance || definition {
            let head: String = sql.chars().take(60).collect();
            self.note(format!("left out: {head}"));
            return Ok(None);
        }
        Err(self.refuse(
            sql,
            "names a restored table in a statement this restore does not replay",
        ))
    }
}

impl TableFilter for Selection {
    fn transaction(&mut self, gtid: Option<String>) {
        self.gtid = gtid;
        self.touched_now = false;
    }

    fn rows_target(&mut self, db: &str, table: &str) -> Option<(String, String)> {
        let dest = self
            .followed
            .get(&(db.to_string(), table.to_string()))
            .cloned();
        self.touched_now |= dest.is_some();
        dest
    }

    fn statement(&mut self, default_db: &str, sql: &str) -> Result<Option<String>, String> {
        self.decide(default_db, sql)
    }

    fn transaction_end(&mut self) {
        if self.touched_now {
            self.touched += 1;
        } else {
            self.left_out += 1;
        }
        self.touched_now = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(db: &str, t: &str) -> Name {
        (db.to_string(), t.to_string())
    }

    fn shop() -> Selection {
        Selection::new([(n("shop", "orders"), n("shop_restored", "orders"))])
    }

    #[test]
    fn ddl_on_the_restored_table_runs_against_its_destination() {
        let mut s = shop();
        assert_eq!(
            s.statement("shop", "ALTER TABLE `orders` ADD COLUMN note TEXT")
                .unwrap()
                .as_deref(),
            Some("ALTER TABLE `shop_restored`.`orders` ADD COLUMN note TEXT")
        );
        assert_eq!(
            s.statement("other", "truncate shop.orders")
                .unwrap()
                .as_deref(),
            Some("TRUNCATE TABLE `shop_restored`.`orders`")
        );
        assert_eq!(
            s.statement("shop", "DROP TABLE `a`,`orders` /* generated by server */")
                .unwrap()
                .as_deref(),
            Some("DROP TABLE IF EXISTS `shop_restored`.`orders`")
        );
        assert_eq!(
            s.statement("shop", "CREATE TABLE orders (id INT PRIMARY KEY)")
                .unwrap()
                .as_deref(),
            Some("CREATE TABLE `shop_restored`.`orders` (id INT PRIMARY KEY)")
        );
        assert_eq!(
            s.rows_target("shop", "orders"),
            Some(n("shop_restored", "orders"))
        );
    }

    #[test]
    fn index_ddl_on_the_restored_table_runs_against_its_destination() {
        let mut s = shop();
        assert_eq!(
            s.statement("shop", "CREATE UNIQUE INDEX by_note ON orders (note(10))")
                .unwrap()
                .as_deref(),
            Some("CREATE UNIQUE INDEX by_note ON `shop_restored`.`orders` (note(10))")
        );
        assert_eq!(
            s.statement(
                "shop",
                "DROP INDEX `by_note` ON `shop`.`orders` ALGORITHM=INPLACE"
            )
            .unwrap()
            .as_deref(),
            Some("DROP INDEX `by_note` ON `shop_restored`.`orders` ALGORITHM=INPLACE")
        );
        assert_eq!(
            s.statement("shop", "CREATE INDEX i ON customers (name)")
                .unwrap(),
            None
        );
    }

    #[test]
    fn ddl_on_other_tables_and_other_databases_is_left_out() {
        let mut s = shop();
        for sql in [
            "ALTER TABLE customers ADD COLUMN x INT",
            "ALTER TABLE other.orders ADD COLUMN x INT",
            "DROP TABLE IF EXISTS `customers`",
            "TRUNCATE TABLE `other`.`orders`",
            "CREATE TABLE orders_copy (id INT)",
            "RENAME TABLE customers TO clients",
        ] {
            assert_eq!(s.statement("shop", sql).unwrap(), None, "{sql}");
        }
        assert_eq!(s.rows_target("shop", "customers"), None);
        assert_eq!(s.rows_target("other", "orders"), None);
    }

    #[test]
    fn a_renamed_table_is_followed_under_its_new_name() {
        let mut s = shop();
        assert_eq!(
            s.statement(
                "shop",
                "RENAME TABLE orders TO orders_old, orders_new TO orders"
            )
            .unwrap(),
            None
        );
        assert_eq!(
            s.rows_target("shop", "orders_old"),
            Some(n("shop_restored", "orders"))
        );
        assert_eq!(s.rows_target("shop", "orders"), None);
        assert!(s.renamed);
        assert_eq!(
            s.statement("shop", "ALTER TABLE orders_old RENAME TO archive.o")
                .unwrap(),
            None
        );
        assert_eq!(
            s.rows_target("archive", "o"),
            Some(n("shop_restored", "orders"))
        );
    }

    #[test]
    fn statements_it_cannot_follow_on_the_restored_table_stop_the_restore_naming_the_transaction() {
        let mut s = shop();
        s.transaction(Some("u:7".into()));
        let e = s
            .statement("shop", "UPDATE orders SET x = 1")
            .expect_err("statement-based DML on the table");
        assert!(e.contains("u:7") && e.contains("--before-gtid u:7"), "{e}");
        assert!(
            s.statement("shop", "ALTER TABLE orders ADD x INT, RENAME TO o2")
                .is_err()
        );
        s.statement("shop", "DROP TABLE orders").unwrap();
        assert_eq!(s.rows_target("shop", "orders"), None, "dropped");
        assert!(s.statement("shop", "CREATE TABLE orders LIKE x").is_err());
        // Triggers and maintenance are left out, not refused.
        let mut s = shop();
        assert_eq!(
            s.statement("shop", "CREATE DEFINER=`root`@`%` TRIGGER tr BEFORE INSERT ON orders FOR EACH ROW SET @a = 1")
                .unwrap(),
            None
        );
        assert_eq!(s.statement("shop", "ANALYZE TABLE orders").unwrap(), None);
    }

    #[test]
    fn transactions_are_counted_as_touching_the_tables_or_left_out() {
        let mut s = shop();
        s.transaction(Some("u:1".into()));
        s.rows_target("shop", "customers");
        s.rows_target("shop", "orders");
        s.transaction_end();
        s.transaction(Some("u:2".into()));
        s.rows_target("shop", "customers");
        s.transaction_end();
        assert_eq!((s.touched, s.left_out), (1, 1));
    }

    #[test]
    fn a_dropped_database_drops_the_tables_followed_in_it() {
        let mut s = shop();
        assert_eq!(
            s.statement("", "DROP DATABASE IF EXISTS `shop`")
                .unwrap()
                .as_deref(),
            Some("DROP TABLE IF EXISTS `shop_restored`.`orders`")
        );
        assert_eq!(s.dropped_destinations(), vec![n("shop_restored", "orders")]);
    }
}
