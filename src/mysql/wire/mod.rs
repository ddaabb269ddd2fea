//! The MySQL client/server protocol, as far as myvault needs it.

pub mod auth;
pub mod conn;
pub mod handshake;
pub mod packet;
pub mod server;
pub mod tls;

pub use conn::{Column, Conn, ConnectOptions, OkPacket, RawRow, ResultSet, RowStream};
pub use tls::{SslMode, SslOptions};
