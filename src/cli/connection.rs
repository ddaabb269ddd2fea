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
#[command(next_help_heading = "Source connection and TLS")]
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

    #[arg(skip)]
    pub role: Role,

    #[arg(skip)]
    pub from_config: FromConfig,
}

/// Whose login a [`ConnArgs`] describes: each role has its own flags, environment variable
/// and config section, and one never falls back on the other's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Role {
    #[default]
    Source,
    Target,
}

impl Role {
    /// The option that gives this role's URL.
    fn url_flag(self) -> &'static str {
        match self {
            Role::Source => "--source",
            Role::Target => "--target",
        }
    }

    /// Prefix of this role's login options (`--password-file`, `--target-password-file`).
    fn flag_prefix(self) -> &'static str {
        match self {
            Role::Source => "--",
            Role::Target => "--target-",
        }
    }

    fn section(self) -> &'static str {
        match self {
            Role::Source => "[source]",
            Role::Target => "[target]",
        }
    }
}

/// Which login settings came from the configuration file rather than the command line:
/// the command line and the environment win over the file, and errors say which was used.
#[derive(Debug, Clone, Copy, Default)]
pub struct FromConfig {
    password_file: bool,
    defaults_file: bool,
}

/// A password and where it came from, for access-denied errors.
struct Password {
    secret: Secret,
    origin: String,
}

impl ConnArgs {
    /// Fills what the command line left open from the configuration's section for this role.
    pub fn merge(&mut self, cfg: Option<&super::config::SourceSection>) {
        let Some(c) = cfg else { return };
        self.from_config.password_file = self.password_file.is_none() && c.password_file.is_some();
        self.from_config.defaults_file = self.defaults_file.is_none() && c.defaults_file.is_some();
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
                    "{}ssl-mode '{m}' is not one of DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY",
                    self.role.flag_prefix()
                ))
            })?,
        };
        Ok(ConnectOptions {
            host: url.host,
            port: url.port,
            socket: url.socket,
            user: url.user,
            password: password.secret,
            password_origin: Some(password.origin),
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

    /// The option file named for this role, in words for messages.
    fn defaults_file_name(&self, path: &Path) -> String {
        if self.from_config.defaults_file {
            format!(
                "{} defaults_file {} in the config",
                self.role.section(),
                path.display()
            )
        } else {
            format!(
                "{}defaults-file {}",
                self.role.flag_prefix(),
                path.display()
            )
        }
    }

    fn client_section(&self) -> Result<std::collections::HashMap<String, String>> {
        match &self.defaults_file {
            Some(path) => option_file::read_section(path, "client").map_err(|e| {
                Error::Usage(format!(
                    "cannot read {}: {e}",
                    self.defaults_file_name(path)
                ))
            }),
            None => Ok(home_my_cnf()
                .and_then(|p| option_file::read_section(&p, "client").ok())
                .unwrap_or_default()),
        }
    }

    /// The URL, then the password file given on the command line, then the environment, then
    /// the config's password file, then the option file. Each role reads only its own.
    fn password(
        &self,
        url: &MysqlUrl,
        env_password: &str,
        client: &std::collections::HashMap<String, String>,
    ) -> Result<Password> {
        let found = |secret: Secret, origin: String| Ok(Password { secret, origin });
        if let Some(p) = &url.password {
            return found(p.clone(), format!("the {} URL", self.role.url_flag()));
        }
        let file = self.password_file.as_ref();
        if let Some(path) = file.filter(|_| !self.from_config.password_file) {
            let flag = format!(
                "{}password-file {}",
                self.role.flag_prefix(),
                path.display()
            );
            return found(read_password_file(path, &flag)?, flag);
        }
        if let Ok(p) = std::env::var(env_password) {
            return found(Secret::new(p), env_password.to_string());
        }
        if let Some(path) = file {
            let key = format!(
                "{} password_file {} in the config",
                self.role.section(),
                path.display()
            );
            return found(read_password_file(path, &key)?, key);
        }
        let option_file = match &self.defaults_file {
            Some(path) => self.defaults_file_name(path),
            None => "~/.my.cnf".to_string(),
        };
        match client.get("password") {
            Some(p) => found(Secret::new(p.clone()), format!("[client] of {option_file}")),
            None => found(
                Secret::default(),
                format!(
                    "no password given (none in the {} URL, {}password-file, {env_password}, {} in the config or an option file)",
                    self.role.url_flag(),
                    self.role.flag_prefix(),
                    self.role.section()
                ),
            ),
        }
    }
}

fn home_my_cnf() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from)?;
    Some(home.join(".my.cnf")).filter(|p| p.is_file())
}

/// The login options of `restore --target` and `seed-replica --target`: the target's own
/// password and TLS files, never the source's.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Target login")]
pub struct TargetConnArgs {
    /// Read the target's password from this file (first line). Also: MYVAULT_TARGET_PASSWORD,
    /// [target] password_file in the config, or the [client] section of --target-defaults-file.
    #[arg(long, value_name = "FILE")]
    pub target_password_file: Option<PathBuf>,

    /// MySQL option file whose [client] section supplies the target's password and TLS
    /// settings (instead of ~/.my.cnf).
    #[arg(long, value_name = "FILE")]
    pub target_defaults_file: Option<PathBuf>,

    /// --ssl-mode for the target.
    #[arg(long, value_name = "MODE")]
    pub target_ssl_mode: Option<String>,

    /// --ssl-ca for the target.
    #[arg(long, value_name = "FILE")]
    pub target_ssl_ca: Option<String>,

    /// --ssl-cert for the target.
    #[arg(long, value_name = "FILE")]
    pub target_ssl_cert: Option<String>,

    /// --ssl-key for the target.
    #[arg(long, value_name = "FILE")]
    pub target_ssl_key: Option<String>,
}

impl TargetConnArgs {
    /// The target's connection options: these flags, MYVAULT_TARGET_PASSWORD and the
    /// config's [target] section; only the connect timeout is shared with the source.
    pub fn resolve(&self, url: &str, ctx: &super::Ctx) -> Result<ConnectOptions> {
        let mut login = ConnArgs {
            password_file: self.target_password_file.clone(),
            defaults_file: self.target_defaults_file.clone(),
            ssl_mode: self.target_ssl_mode.clone(),
            ssl_ca: self.target_ssl_ca.clone(),
            ssl_cert: self.target_ssl_cert.clone(),
            ssl_key: self.target_ssl_key.clone(),
            connect_timeout: ctx.conn.connect_timeout,
            role: Role::Target,
            from_config: FromConfig::default(),
        };
        login.merge(ctx.cfg().and_then(|c| c.target.as_ref()));
        login.resolve(url, "MYVAULT_TARGET_PASSWORD")
    }
}

/// The first line of a password file; `what` names it in the error ("--password-file F").
pub fn read_password_file(path: &Path, what: &str) -> Result<Secret> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Usage(format!("cannot read {what}: {e}")))?;
    Ok(Secret::new(text.lines().next().unwrap_or("")))
}
