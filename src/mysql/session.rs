//! A SQL session: a connection plus the server's flavor and version, with small typed helpers
//! for the metadata queries myvault runs. Bulk data goes through [`Conn::query_stream`].

use std::collections::HashMap;

use super::error::{Error, codes};
use super::server_info::ServerInfo;
use super::wire::{Conn, ConnectOptions, OkPacket, ResultSet};

pub struct Session {
    conn: Conn,
    info: ServerInfo,
}

/// Rows of a small result, addressed by column name.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    names: Vec<String>,
    rows: Vec<Vec<Option<Vec<u8>>>>,
}

#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    names: &'a [String],
    values: &'a [Option<Vec<u8>>],
}

impl From<ResultSet> for Rows {
    fn from(rs: ResultSet) -> Rows {
        Rows {
            names: rs.columns.into_iter().map(|c| c.name).collect(),
            rows: rs.rows,
        }
    }
}

impl Rows {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn columns(&self) -> &[String] {
        &self.names
    }

    pub fn iter(&self) -> impl Iterator<Item = Row<'_>> {
        self.rows.iter().map(|values| Row {
            names: &self.names,
            values,
        })
    }

    pub fn first(&self) -> Option<Row<'_>> {
        self.iter().next()
    }
}

impl<'a> Row<'a> {
    fn index(&self, column: &str) -> Option<usize> {
        self.names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(column))
    }

    /// The raw value of `column`; `None` when the column is missing or NULL.
    pub fn bytes(&self, column: &str) -> Option<&'a [u8]> {
        self.index(column)
            .and_then(|i| self.values.get(i))
            .and_then(|v| v.as_deref())
    }

    pub fn bytes_at(&self, i: usize) -> Option<&'a [u8]> {
        self.values.get(i).and_then(|v| v.as_deref())
    }

    /// The value as text (lossy for non-UTF-8 bytes); `None` when missing or NULL.
    pub fn text(&self, column: &str) -> Option<String> {
        self.bytes(column)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    pub fn text_at(&self, i: usize) -> Option<String> {
        self.bytes_at(i)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    pub fn u64(&self, column: &str) -> Option<u64> {
        self.text(column).and_then(|s| s.trim().parse().ok())
    }

    pub fn u64_at(&self, i: usize) -> Option<u64> {
        self.text_at(i).and_then(|s| s.trim().parse().ok())
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

impl Session {
    pub fn connect(opts: &ConnectOptions) -> Result<Session, Error> {
        let conn = Conn::connect(opts)?;
        let info = ServerInfo::from_version_string(conn.server_version());
        let mut session = Session { conn, info };
        // The greeting's version string can be rewritten by proxies; the server's own
        // VERSION() is the one to trust.
        if let Some(v) = session.query_value("SELECT VERSION()")? {
            session.info = ServerInfo::from_version_string(&v);
        }
        Ok(session)
    }

    pub fn info(&self) -> &ServerInfo {
        &self.info
    }

    pub fn address(&self) -> &str {
        self.conn.address()
    }

    pub fn connection_id(&self) -> u32 {
        self.conn.connection_id()
    }

    pub fn is_tls(&self) -> bool {
        self.conn.is_tls()
    }

    /// The underlying connection, for streamed results and raw commands.
    pub fn conn(&mut self) -> &mut Conn {
        &mut self.conn
    }

    pub fn exec(&mut self, sql: &str) -> Result<OkPacket, Error> {
        self.conn.exec(sql)
    }

    pub fn query(&mut self, sql: &str) -> Result<Rows, Error> {
        self.conn.query(sql).map(Rows::from)
    }

    /// The first column of the first row, as text.
    pub fn query_value(&mut self, sql: &str) -> Result<Option<String>, Error> {
        let rows = self.query(sql)?;
        Ok(rows.first().and_then(|r| r.text_at(0)))
    }

    /// A global system variable; `None` when the server does not know it.
    pub fn global_var(&mut self, name: &str) -> Result<Option<String>, Error> {
        match self.query_value(&format!("SELECT @@GLOBAL.{name}")) {
            Ok(v) => Ok(v),
            Err(e) if e.server_code() == Some(codes::UNKNOWN_SYSTEM_VARIABLE) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Several global variables in one round trip; unknown ones are absent from the map.
    pub fn global_vars(&mut self, names: &[&str]) -> Result<HashMap<String, String>, Error> {
        let list = names
            .iter()
            .map(|n| format!("'{}'", n.replace('\'', "")))
            .collect::<Vec<_>>()
            .join(",");
        let rows = self.query(&format!(
            "SELECT VARIABLE_NAME, VARIABLE_VALUE FROM performance_schema.global_variables \
             WHERE VARIABLE_NAME IN ({list})"
        ));
        let rows = match rows {
            Ok(rows) => rows,
            // MariaDB without performance_schema, or no SELECT on it: ask one by one.
            Err(e)
                if e.server_code() == Some(codes::NO_SUCH_TABLE)
                    || e.server_code() == Some(codes::TABLE_ACCESS_DENIED) =>
            {
                let mut out = HashMap::new();
                for name in names {
                    if let Some(v) = self.global_var(name)? {
                        out.insert(name.to_ascii_lowercase(), v);
                    }
                }
                return Ok(out);
            }
            Err(e) => return Err(e),
        };
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some((
                    r.text_at(0)?.to_ascii_lowercase(),
                    r.text_at(1).unwrap_or_default(),
                ))
            })
            .collect())
    }

    pub fn unexpected(&self, query: &str, detail: impl Into<String>) -> Error {
        Error::Unexpected {
            addr: self.address().to_string(),
            query: query.to_string(),
            detail: detail.into(),
        }
    }
}

/// Quotes an identifier with backticks, doubling any backtick inside.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// String literals for an SQL `IN (...)` list: quoted, comma-separated.
pub fn quote_list<S: AsRef<str>>(values: impl IntoIterator<Item = S>) -> String {
    values
        .into_iter()
        .map(|v| quote_str(v.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Quotes a string literal for SQL, escaping what the server's default SQL mode needs.
pub fn quote_str(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("we`ird name"), "`we``ird name`");
        assert_eq!(quote_str("it's a \\ test"), "'it''s a \\\\ test'");
    }
}
