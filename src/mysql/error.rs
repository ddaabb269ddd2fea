//! Errors from talking to a MySQL or MariaDB server.
//!
//! The variants follow what an operator has to do about them, not where they happened:
//! a host that cannot be reached, credentials that are refused, a peer that is not MySQL,
//! and a statement the server rejected. Messages name the server by address, never by URL,
//! so a password can not leak through them.

use std::io;

use super::decode::Truncated;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// TCP or socket connect failed, or timed out.
    #[error("cannot reach {addr}: {source}")]
    Unreachable { addr: String, source: io::Error },

    /// The server refused the credentials (or the user has no access from this host).
    #[error("{addr} refused the login: {message}")]
    AccessDenied { addr: String, message: String },

    /// The peer does not speak the MySQL protocol, or broke it.
    #[error("{addr} is not a MySQL server or broke the protocol: {detail}")]
    NotMysql { addr: String, detail: String },

    /// The connection could not be secured as the ssl-mode demands.
    #[error("TLS with {addr} failed: {detail}")]
    Tls { addr: String, detail: String },

    /// An established connection failed (server went away, network error, read timeout).
    #[error("connection to {addr} lost: {source}")]
    ConnectionLost { addr: String, source: io::Error },

    /// The server answered a command with an error packet.
    #[error("{addr}: ERROR {code} ({state}): {message}")]
    Server {
        addr: String,
        code: u16,
        state: String,
        message: String,
    },

    /// The server answered with something that is valid protocol but not what the caller needs
    /// (a missing column, an unparsable value).
    #[error("{addr}: unexpected answer to `{query}`: {detail}")]
    Unexpected {
        addr: String,
        query: String,
        detail: String,
    },
}

impl Error {
    /// The MySQL error code of a server error.
    pub fn server_code(&self) -> Option<u16> {
        match self {
            Error::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// True when the connection is unusable afterwards and a reconnect is the remedy.
    pub fn is_connection_loss(&self) -> bool {
        matches!(
            self,
            Error::Unreachable { .. } | Error::ConnectionLost { .. }
        ) || matches!(self.server_code(), Some(codes::SERVER_SHUTDOWN))
    }

    pub(crate) fn truncated(addr: &str, what: &str, _: Truncated) -> Error {
        Error::NotMysql {
            addr: addr.to_string(),
            detail: format!("truncated {what} packet"),
        }
    }
}

/// Server error codes myvault reacts to.
pub mod codes {
    pub const ACCESS_DENIED: u16 = 1045;
    pub const DB_ACCESS_DENIED: u16 = 1044;
    pub const SPECIFIC_ACCESS_DENIED: u16 = 1227;
    pub const TABLE_ACCESS_DENIED: u16 = 1142;
    /// Also what `lock_wait_timeout` raises on metadata locks such as FLUSH TABLES WITH READ LOCK.
    pub const LOCK_WAIT_TIMEOUT: u16 = 1205;
    pub const SERVER_SHUTDOWN: u16 = 1053;
    pub const UNKNOWN_SYSTEM_VARIABLE: u16 = 1193;
    pub const NO_SUCH_TABLE: u16 = 1146;
    /// `ER_SOURCE_FATAL_ERROR_READING_BINLOG`: the binlog the replica asks for is gone.
    pub const SOURCE_FATAL_READING_BINLOG: u16 = 1236;
    pub const PARSE_ERROR: u16 = 1064;
    pub const QUERY_INTERRUPTED: u16 = 1317;
}
