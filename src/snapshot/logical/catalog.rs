//! What a logical dump contains: databases, tables with their loadable columns and keys,
//! views, routines, triggers, events and accounts, read from the server's catalog.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::format::{Account, ColumnEncoding, StoredObject, TableName, View};
use crate::error::{Error, Result};
use crate::mysql::session::{Rows, Session, quote_ident, quote_list, quote_str};
use crate::mysql::wire::Conn;

/// Schemas that belong to the server, never dumped.
pub const SYSTEM_SCHEMAS: &[&str] = &["mysql", "sys", "information_schema", "performance_schema"];

/// Accounts the server creates itself.
const SYSTEM_ACCOUNTS: &[&str] = &[
    "mysql.sys",
    "mysql.session",
    "mysql.infoschema",
    "mariadb.sys",
];

/// Which tables to dump.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only these databases (all user databases when empty).
    pub databases: Vec<String>,
    /// `db.table` names to leave out.
    pub exclude_tables: Vec<String>,
}

impl Filter {
    fn wants_db(&self, db: &str) -> bool {
        !SYSTEM_SCHEMAS.contains(&db)
            && !crate::restore::OWN_SCHEMAS.contains(&db)
            && (self.databases.is_empty() || self.databases.iter().any(|d| d == db))
    }

    fn wants_table(&self, db: &str, table: &str) -> bool {
        let full = format!("{db}.{table}");
        !self.exclude_tables.contains(&full)
    }
}

#[derive(Debug, Clone)]
pub struct ColumnInfo {
    pub name: String,
    pub data_type: String,
    pub generated: bool,
    pub auto_increment: bool,
}

impl ColumnInfo {
    pub fn encoding(&self) -> ColumnEncoding {
        match self.data_type.as_str() {
            "bit" | "geometry" | "point" | "linestring" | "polygon" | "multipoint"
            | "multilinestring" | "multipolygon" | "geometrycollection" | "geomcollection"
            | "vector" => ColumnEncoding::Hex,
            "json" => ColumnEncoding::Json,
            // By position: an invalid ENUM value ('' with index 0) prints like the member ''.
            "enum" | "set" => ColumnEncoding::Index,
            _ => ColumnEncoding::Raw,
        }
    }

    /// What the dump selects for this column.
    pub fn select_expr(&self) -> String {
        let q = quote_ident(&self.name);
        match (self.encoding(), self.data_type.as_str()) {
            (ColumnEncoding::Hex, _) => format!("HEX({q})"),
            (ColumnEncoding::Index, _) => format!("{q} + 0"),
            // The text protocol prints FLOAT with six digits; as a DOUBLE it prints the
            // float's exact value, which loads back into the same float.
            (_, "float") => format!("CAST({q} AS DOUBLE)"),
            _ => q,
        }
    }

    pub fn is_integer(&self) -> bool {
        matches!(
            self.data_type.as_str(),
            "tinyint" | "smallint" | "mediumint" | "int" | "bigint"
        )
    }
}

#[derive(Debug, Clone)]
pub struct TableInfo {
    pub db: String,
    pub name: String,
    pub engine: String,
    pub columns: Vec<ColumnInfo>,
    /// Primary key columns, in key order.
    pub primary_key: Vec<String>,
    pub rows_estimate: u64,
    pub avg_row_length: u64,
    /// True when a foreign key points from or to this table: its indexes are left in place.
    pub in_foreign_key: bool,
}

impl TableInfo {
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.db), quote_ident(&self.name))
    }

    /// Columns that are written to the dump (generated columns are computed on load).
    pub fn dumped_columns(&self) -> impl Iterator<Item = &ColumnInfo> {
        self.columns.iter().filter(|c| !c.generated)
    }
}

fn text(row: &crate::mysql::session::Row<'_>, i: usize) -> String {
    row.text_at(i).unwrap_or_default()
}

/// The names of the databases to dump.
pub fn databases(s: &mut Session, filter: &Filter) -> Result<Vec<String>> {
    let rows =
        s.query("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA ORDER BY SCHEMA_NAME")?;
    let out: Vec<String> = rows
        .iter()
        .map(|r| text(&r, 0))
        .filter(|name| filter.wants_db(name))
        .collect();
    for wanted in &filter.databases {
        if !out.iter().any(|n| n == wanted) {
            return Err(Error::Usage(format!(
                "database {wanted} does not exist on the source"
            )));
        }
    }
    Ok(out)
}

/// `CREATE DATABASE` of `db`.
pub fn show_create_database(s: &mut Session, db: &str) -> Result<String> {
    let sql = format!("SHOW CREATE DATABASE {}", quote_ident(db));
    s.query(&sql)?
        .first()
        .and_then(|r| r.text_at(1))
        .ok_or_else(|| s.unexpected(&sql, "no row").into())
}

/// Base tables of `dbs`, with columns, primary keys and size estimates (not yet whether they
/// take part in a foreign key: see [`foreign_keys`]).
///
/// The three catalog queries run at once when `helpers` (idle worker connections) are given:
/// they stand between the snapshot and the first row, and each takes milliseconds. A worker
/// inside its snapshot transaction reads the same catalog, which the backup lock or the DDL
/// check keeps from changing. `s` must have `information_schema_stats_expiry = 0` on MySQL:
/// the row estimates decide how tables are cut into chunks, and MySQL caches them for a day.
pub fn tables(
    s: &mut Session,
    helpers: &mut [Conn],
    dbs: &[String],
    filter: &Filter,
) -> Result<Vec<TableInfo>> {
    if dbs.is_empty() {
        return Ok(Vec::new());
    }
    let list = quote_list(dbs);
    let tables_sql = format!(
        "SELECT TABLE_SCHEMA, TABLE_NAME, IFNULL(ENGINE, ''), IFNULL(TABLE_ROWS, 0), IFNULL(AVG_ROW_LENGTH, 0) \
         FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA IN ({list})"
    );
    let columns_sql = format!(
        "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, DATA_TYPE, EXTRA, IFNULL(GENERATION_EXPRESSION, '') \
         FROM information_schema.COLUMNS WHERE TABLE_SCHEMA IN ({list}) ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION"
    );
    let keys_sql = format!(
        "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
         WHERE CONSTRAINT_NAME = 'PRIMARY' AND TABLE_SCHEMA IN ({list}) ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION"
    );
    let (table_rows, column_rows, key_rows) = match helpers {
        [] => (
            s.query(&tables_sql)?,
            s.query(&columns_sql)?,
            s.query(&keys_sql)?,
        ),
        [one] => std::thread::scope(|scope| {
            let others = scope.spawn(|| -> Result<(Rows, Rows)> {
                Ok((
                    one.query(&columns_sql)?.into(),
                    one.query(&keys_sql)?.into(),
                ))
            });
            let tables = s.query(&tables_sql);
            let (columns, keys) = crate::error::joined(others.join(), "reading the catalog")?;
            Ok::<_, Error>((tables?, columns, keys))
        })?,
        [first, second, ..] => std::thread::scope(|scope| {
            let columns = scope.spawn(|| -> Result<Rows> { Ok(first.query(&columns_sql)?.into()) });
            let keys = scope.spawn(|| -> Result<Rows> { Ok(second.query(&keys_sql)?.into()) });
            let tables = s.query(&tables_sql);
            let columns = crate::error::joined(columns.join(), "reading the catalog")?;
            let keys = crate::error::joined(keys.join(), "reading the catalog")?;
            Ok::<_, Error>((tables?, columns, keys))
        })?,
    };
    let mut tables: BTreeMap<(String, String), TableInfo> = BTreeMap::new();
    for r in table_rows.iter() {
        let (db, name) = (text(&r, 0), text(&r, 1));
        if !filter.wants_table(&db, &name) {
            continue;
        }
        tables.insert(
            (db.clone(), name.clone()),
            TableInfo {
                db,
                name,
                engine: text(&r, 2),
                columns: Vec::new(),
                primary_key: Vec::new(),
                rows_estimate: r.u64_at(3).unwrap_or(0),
                avg_row_length: r.u64_at(4).unwrap_or(0),
                in_foreign_key: false,
            },
        );
    }
    for r in column_rows.iter() {
        if let Some(t) = tables.get_mut(&(text(&r, 0), text(&r, 1))) {
            let extra = text(&r, 4).to_ascii_lowercase();
            t.columns.push(ColumnInfo {
                name: text(&r, 2),
                data_type: text(&r, 3).to_ascii_lowercase(),
                // DEFAULT_GENERATED (an expression default) is an ordinary column that is dumped.
                generated: !text(&r, 5).is_empty()
                    || extra.contains("virtual generated")
                    || extra.contains("stored generated"),
                auto_increment: extra.contains("auto_increment"),
            });
        }
    }
    for r in key_rows.iter() {
        if let Some(t) = tables.get_mut(&(text(&r, 0), text(&r, 1))) {
            t.primary_key.push(text(&r, 2));
        }
    }
    Ok(tables.into_values().collect())
}

/// The foreign keys declared on tables of `dbs` or referencing them, each as (declared on,
/// references), one per pair of tables. Read while the rows stream: [`defer_indexes`] needs
/// them, and the dump records them for the restore's table creation.
pub fn foreign_keys(s: &mut Session, dbs: &[String]) -> Result<BTreeSet<(TableName, TableName)>> {
    if dbs.is_empty() {
        return Ok(BTreeSet::new());
    }
    let list = quote_list(dbs);
    let rows = s.query(&format!(
        "SELECT TABLE_SCHEMA, TABLE_NAME, REFERENCED_TABLE_SCHEMA, REFERENCED_TABLE_NAME \
         FROM information_schema.KEY_COLUMN_USAGE WHERE REFERENCED_TABLE_NAME IS NOT NULL \
         AND (TABLE_SCHEMA IN ({list}) OR REFERENCED_TABLE_SCHEMA IN ({list}))"
    ))?;
    let name = |r: &crate::mysql::session::Row<'_>, i: usize| TableName {
        database: text(r, i),
        table: text(r, i + 1),
    };
    Ok(rows.iter().map(|r| (name(&r, 0), name(&r, 2))).collect())
}

pub fn show_create_table(s: &mut Session, t: &TableInfo) -> Result<String> {
    let sql = format!("SHOW CREATE TABLE {}", t.qualified());
    s.query(&sql)?
        .first()
        .and_then(|r| r.text_at(1))
        .ok_or_else(|| s.unexpected(&sql, "no row").into())
}

/// Splits secondary indexes out of a `CREATE TABLE`, so they can be built after the data:
/// a sorted index build is faster than maintaining the index row by row. Indexes stay when
/// the table takes part in a foreign key, when they serve the AUTO_INCREMENT column, or when
/// the statement has a shape this parser does not know.
pub fn defer_indexes(create: &str, table: &TableInfo) -> (String, Vec<String>) {
    let keep_all = (create.to_string(), Vec::new());
    if table.in_foreign_key {
        return keep_all;
    }
    let lines: Vec<&str> = create.lines().collect();
    let Some(close) = lines.iter().rposition(|l| l.starts_with(')')) else {
        return keep_all;
    };
    if close < 2 {
        return keep_all;
    }
    let body = &lines[1..close];
    let known = [
        "`",
        "PRIMARY KEY",
        "KEY ",
        "UNIQUE KEY ",
        "FULLTEXT KEY ",
        "SPATIAL KEY ",
        "CONSTRAINT ",
        "INDEX ",
    ];
    if !body.iter().all(|l| {
        l.strip_prefix("  ")
            .is_some_and(|l| known.iter().any(|k| l.starts_with(k)))
    }) {
        return keep_all;
    }
    let auto_inc: Option<&str> = table
        .columns
        .iter()
        .find(|c| c.auto_increment)
        .map(|c| c.name.as_str());
    let mut kept = Vec::new();
    let mut deferred = Vec::new();
    for line in body {
        let entry = line.trim_start().trim_end_matches(',');
        let secondary = ["KEY ", "UNIQUE KEY ", "FULLTEXT KEY ", "SPATIAL KEY "]
            .iter()
            .any(|k| entry.starts_with(k));
        let serves_auto_inc = auto_inc.is_some_and(|c| first_key_column(entry) == Some(c));
        if secondary && !serves_auto_inc {
            deferred.push(format!("ADD {entry}"));
        } else {
            kept.push(format!("  {entry}"));
        }
    }
    if deferred.is_empty() {
        return keep_all;
    }
    let mut out = String::with_capacity(create.len());
    out.push_str(lines[0]);
    out.push('\n');
    out.push_str(&kept.join(",\n"));
    out.push('\n');
    out.push_str(&lines[close..].join("\n"));
    (out, deferred)
}

/// The first column of an index definition such as ``KEY `k` (`a`(10),`b`)``.
fn first_key_column(entry: &str) -> Option<&str> {
    let after_paren = &entry[entry.find('(')? + 1..];
    let rest = after_paren.strip_prefix('`')?;
    Some(&rest[..rest.find('`')?])
}

fn stored_object(
    kind: &str,
    name: String,
    row: &crate::mysql::session::Row<'_>,
    create_col: &str,
    tz: bool,
) -> Option<StoredObject> {
    Some(StoredObject {
        name,
        kind: kind.to_string(),
        create: row.text(create_col)?,
        sql_mode: row.text("sql_mode").unwrap_or_default(),
        character_set_client: row
            .text("character_set_client")
            .unwrap_or_else(|| "utf8mb4".into()),
        collation_connection: row
            .text("collation_connection")
            .unwrap_or_else(|| "utf8mb4_general_ci".into()),
        time_zone: if tz { row.text("time_zone") } else { None },
    })
}

fn privilege_error(what: &str, db: &str, name: &str) -> Error {
    Error::SourceNotReady(format!(
        "cannot read the definition of {what} {db}.{name}: the backup account needs SHOW_ROUTINE (or global SELECT), TRIGGER and EVENT"
    ))
}

pub fn views(s: &mut Session, db: &str) -> Result<Vec<View>> {
    let names = s.query(&format!(
        "SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = {} ORDER BY TABLE_NAME",
        quote_str(db)
    ))?;
    let mut out = Vec::new();
    for name in names.iter().map(|r| text(&r, 0)) {
        let rows = s.query(&format!(
            "SHOW CREATE VIEW {}.{}",
            quote_ident(db),
            quote_ident(&name)
        ))?;
        let r = rows
            .first()
            .ok_or_else(|| privilege_error("view", db, &name))?;
        out.push(View {
            create: r
                .text("Create View")
                .ok_or_else(|| privilege_error("view", db, &name))?,
            character_set_client: r
                .text("character_set_client")
                .unwrap_or_else(|| "utf8mb4".into()),
            collation_connection: r
                .text("collation_connection")
                .unwrap_or_else(|| "utf8mb4_general_ci".into()),
            name,
        });
    }
    Ok(out)
}

pub fn routines(s: &mut Session, db: &str) -> Result<Vec<StoredObject>> {
    let names = s.query(&format!(
        "SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {} ORDER BY ROUTINE_TYPE, ROUTINE_NAME",
        quote_str(db)
    ))?;
    let mut out = Vec::new();
    for r in names.iter() {
        let (name, kind) = (text(&r, 0), text(&r, 1));
        let rows = s.query(&format!(
            "SHOW CREATE {kind} {}.{}",
            quote_ident(db),
            quote_ident(&name)
        ))?;
        let col = if kind == "FUNCTION" {
            "Create Function"
        } else {
            "Create Procedure"
        };
        let obj = rows
            .first()
            .and_then(|row| stored_object(&kind, name.clone(), &row, col, false))
            .ok_or_else(|| privilege_error(&kind.to_lowercase(), db, &name))?;
        out.push(obj);
    }
    Ok(out)
}

pub fn triggers(s: &mut Session, db: &str) -> Result<Vec<StoredObject>> {
    let names = s.query(&format!(
        "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = {} \
         ORDER BY EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, ACTION_ORDER",
        quote_str(db)
    ))?;
    let mut out = Vec::new();
    for name in names.iter().map(|r| text(&r, 0)) {
        let rows = s.query(&format!(
            "SHOW CREATE TRIGGER {}.{}",
            quote_ident(db),
            quote_ident(&name)
        ))?;
        let obj = rows
            .first()
            .and_then(|row| {
                stored_object(
                    "TRIGGER",
                    name.clone(),
                    &row,
                    "SQL Original Statement",
                    false,
                )
            })
            .ok_or_else(|| privilege_error("trigger", db, &name))?;
        out.push(obj);
    }
    Ok(out)
}

pub fn events(s: &mut Session, db: &str) -> Result<Vec<StoredObject>> {
    let names = s.query(&format!(
        "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {} ORDER BY EVENT_NAME",
        quote_str(db)
    ))?;
    let mut out = Vec::new();
    for name in names.iter().map(|r| text(&r, 0)) {
        let rows = s.query(&format!(
            "SHOW CREATE EVENT {}.{}",
            quote_ident(db),
            quote_ident(&name)
        ))?;
        let obj = rows
            .first()
            .and_then(|row| stored_object("EVENT", name.clone(), &row, "Create Event", true))
            .ok_or_else(|| privilege_error("event", db, &name))?;
        out.push(obj);
    }
    Ok(out)
}

/// Accounts with their CREATE USER and GRANT statements. Password hashes are printed as hex
/// so they survive as text.
pub fn accounts(s: &mut Session) -> Result<Vec<Account>> {
    if s.info().is_mysql() {
        let _ = s.exec("SET SESSION print_identified_with_as_hex = ON");
    }
    let role_col = if s.info().is_mariadb() {
        "is_role"
    } else {
        "'N'"
    };
    let users = s.query(&format!(
        "SELECT User, Host, {role_col} FROM mysql.user ORDER BY User, Host"
    ))?;
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for r in users.iter() {
        let (user, host, is_role) = (text(&r, 0), text(&r, 1), text(&r, 2) == "Y");
        if SYSTEM_ACCOUNTS.contains(&user.as_str()) || !seen.insert((user.clone(), host.clone())) {
            continue;
        }
        let account = if is_role {
            quote_str(&user)
        } else {
            format!("{}@{}", quote_str(&user), quote_str(&host))
        };
        let create = if is_role {
            format!("CREATE ROLE {account}")
        } else {
            s.query_value(&format!("SHOW CREATE USER {account}"))?
                .ok_or_else(|| s.unexpected("SHOW CREATE USER", "no row"))?
        };
        let grants = s
            .query(&format!("SHOW GRANTS FOR {account}"))?
            .iter()
            .filter_map(|g| g.text_at(0))
            .collect();
        out.push(Account {
            user,
            host,
            create,
            grants,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(fk: bool, auto_inc: Option<&str>) -> TableInfo {
        TableInfo {
            db: "d".into(),
            name: "t".into(),
            engine: "InnoDB".into(),
            columns: vec![ColumnInfo {
                name: auto_inc.unwrap_or("x").into(),
                data_type: "int".into(),
                generated: false,
                auto_increment: auto_inc.is_some(),
            }],
            primary_key: vec![],
            rows_estimate: 0,
            avg_row_length: 0,
            in_foreign_key: fk,
        }
    }

    const CREATE: &str = "CREATE TABLE `t` (\n  `id` int NOT NULL AUTO_INCREMENT,\n  `k` int NOT NULL DEFAULT '0',\n  `c` char(120) NOT NULL,\n  PRIMARY KEY (`id`),\n  KEY `k_1` (`k`),\n  UNIQUE KEY `uc` (`c`(10),`k`)\n) ENGINE=InnoDB AUTO_INCREMENT=5 DEFAULT CHARSET=utf8mb4";

    #[test]
    fn secondary_indexes_are_deferred() {
        let (create, deferred) = defer_indexes(CREATE, &table(false, Some("id")));
        assert_eq!(
            deferred,
            vec!["ADD KEY `k_1` (`k`)", "ADD UNIQUE KEY `uc` (`c`(10),`k`)"]
        );
        assert!(
            create.ends_with(
                "  PRIMARY KEY (`id`)\n) ENGINE=InnoDB AUTO_INCREMENT=5 DEFAULT CHARSET=utf8mb4"
            ),
            "{create}"
        );
        assert!(!create.contains("KEY `k_1`"));
    }

    #[test]
    fn indexes_stay_for_foreign_keys_and_auto_increment() {
        assert!(defer_indexes(CREATE, &table(true, None)).1.is_empty());
        let create = "CREATE TABLE `t` (\n  `a` int NOT NULL,\n  `n` int NOT NULL AUTO_INCREMENT,\n  PRIMARY KEY (`a`),\n  KEY `n` (`n`)\n) ENGINE=InnoDB";
        assert!(defer_indexes(create, &table(false, Some("n"))).1.is_empty());
    }

    #[test]
    fn unknown_shapes_are_left_alone() {
        let odd = "CREATE TABLE `t` (\n  `a` int DEFAULT NULL COMMENT 'multi\nline',\n  KEY `a` (`a`)\n) ENGINE=InnoDB";
        assert!(defer_indexes(odd, &table(false, None)).1.is_empty());
    }
}
