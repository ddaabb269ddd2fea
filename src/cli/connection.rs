//! Flags shared by every command that connects to a server, and how they become
//! [`ConnectOptions`]: the URL, where the password comes from, and TLS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::error::{Error, Result};
use crate::mysql::option_file;
use crate::mysql::url::MysqlUrl;
use crate::mysql::wire::{ConnectOptions, SslMode, SslOptions};
use crate::secret::Secret;

#[derive(Args, Debug, Clone, Default)]
pub struct ConnArgs {
    /// Read the password from this file (first line). Also: MYVAULT_PASSWORD, or the
    /// [client] section of --defaults-file / ~/.my.cnf.
    #[arg(long, value_name = "FILE", global = true)]
    pub password_file: Option<PathBuf>,

    /// MySQL option file whose [client] section supplies password and TLS settings
    /// (instead of ~/.my.cnf).
    #[arg(long, value_name = "FILE", global = true)]
    pub defaults_file: Option<PathBuf>,

    /// DISABLED, PREFERRED (default), REQUIRED, VERIFY_CA or VERIFY_IDENTITY, as for mysql.
    #[arg(long, value_name = "MODE", global = true)]
    pub ssl_mode: Option<String>,

    /// CA certificate (PEM) for VERIFY_CA / VERIFY_IDENTITY.
    #[arg(long, value_name = "FILE", global = true)]
    pub ssl_ca: Option<String>,

    /// Client certificate (PEM).
    #[arg(long, value_name = "FILE", global = true)]
    pub ssl_cert: Option<String>,

    /// Client private key (PEM).
    #[arg(long, value_name = "FILE", global = true)]
    pub ssl_key: Option<String>,

    /// Seconds to wait for a connection and the server's greeting.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, global = true)]
    pub connect_timeout: u64,
}

impl ConnArgs {
    /// Fills what the command line left open from the configuration's [source] section.
    pub fn merge(&mut self, cfg: Option<&super::config::SourceSection>) {
        let Some(c) = cfg else { return };
        self.password_file = self
            .password_file
            .take()
            .or_else(|| c.password_file.clone());
        self.defaults_file = self
            .defaults_file
            .take()
            .or_else(|| c.defaults_file.clone());
        self.ssl_mode = self.ssl_mode.take().or_else(|| c.ssl_mode.clone());
        self.ssl_ca = self.ssl_ca.take().or_else(|| c.ssl_ca.clone());
        self.ssl_cert = self.ssl_cert.take().or_else(|| c.ssl_cert.clone());
        self.ssl_key = self.ssl_key.take().or_else(|| c.ssl_key.clone());
    }

    /// Resolves a `mysql://` URL plus these flags into connection options. `env_password` is
    /// the environment variable consulted when the URL has no password.
    pub fn resolve(&self, url: &str, env_password: &str) -> Result<ConnectOptions> {
        let url = MysqlUrl::parse(url)?;
        let client = self.client_section()?;
        let password = self.password(&url, env_password, &client)?;
        let pick =
            |flag: &Option<String>, key: &str| flag.clone().or_else(|| client.get(key).cloned());
        let mode = match pick(&self.ssl_mode, "ssl-mode") {
            None => SslMode::Preferred,
            Some(m) => SslMode::parse(&m).ok_or_else(|| {
                Error::Usage(format!(
                    "--ssl-mode '{m}' is not one of DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY"
                ))
            })?,
        };
        Ok(ConnectOptions {
            host: url.host,
            port: url.port,
            socket: url.socket,
            user: url.user,
            password,
            ssl: SslOptions {
                mode,
                ca: pick(&self.ssl_ca, "ssl-ca"),
                cert: pick(&self.ssl_cert, "ssl-cert"),
                key: pick(&self.ssl_key, "ssl-key"),
            },
            connect_timeout: Duration::from_secs(self.connect_timeout.max(1)),
            read_timeout: None,
        })
    }

    fn client_section(&self) -> Result<std::collections::HashMap<String, String>> {
        match &self.defaults_file {
            Some(path) => option_file::read_section(path, "client").map_err(|e| {
                Error::Usage(format!(
                    "cannot read --defaults-file {}: {e}",
                    path.display()
                ))
            }),
            None => {
                let home = std::env::var_os("HOME").map(PathBuf::from);
                let my_cnf = home.map(|h| h.join(".my.cnf"));
                Ok(my_cnf
                    .filter(|p| p.is_file())
                    .and_then(|p| option_file::read_section(&p, "client").ok())
                    .unwrap_or_default())
            }
        }
    }

    /// URL, then --password-file, then the environment, then the option file.
    fn password(
        &self,
        url: &MysqlUrl,
        env_password: &str,
        client: &std::collections::HashMap<String, String>,
    ) -> Result<Secret> {
        if let Some(p) = &url.password {
            return Ok(p.clone());
        }
        if let Some(path) = &self.password_file {
            return read_password_file(path);
        }
        if let Ok(p) = std::env::var(env_password) {
            return Ok(Secret::new(p));
        }
        Ok(client
            .get("password")
            .cloned()
            .map(Secret::new)
            .unwrap_or_default())
    }
}

pub fn read_password_file(path: &Path) -> Result<Secret> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Usage(format!(
            "cannot read --password-file {}: {e}",
            path.display()
        ))
    })?;
    Ok(Secret::new(text.lines().next().unwrap_or("")))
}
