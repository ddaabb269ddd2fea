//! Everything that speaks to a MySQL or MariaDB server.

pub mod decode;
pub mod error;
pub mod gtid;
pub mod option_file;
pub mod privileges;
pub mod replication;
pub mod server_info;
pub mod session;
pub mod url;
pub mod wire;

pub use error::Error;
