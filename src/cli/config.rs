//! The configuration file (`--config FILE`, or `MYVAULT_CONFIG`): defaults for the flags
//! commands share, so cron lines and systemd units stay short. Flags on the command line win.
//!
//! ```toml
//! [source]
//! url = "mysql://backup@db1:3306"
//! password_file = "/etc/myvault/password"
//!
//! [target]                      # restore --target / seed-replica --target: its own login
//! password_file = "/etc/myvault/target-password"
//!
//! [[repo]]
//! location = "/var/backups/myvault"
//! [[repo]]
//! location = "s3://backups/db1"
//!
//! [s3]
//! endpoint = "https://s3.example.net"
//! credentials_file = "/etc/myvault/aws-credentials"
//!
//! [backup]
//! jobs = 4
//!
//! [stream]
//! spool = "/var/lib/myvault/spool/db1"
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub source: Option<SourceSection>,
    /// The login of `restore --target` and `seed-replica --target` (password and TLS files;
    /// the URL comes from the command line); nothing of [source]'s carries over to it.
    pub target: Option<SourceSection>,
    #[serde(default, alias = "repository")]
    pub repo: Vec<RepoSection>,
    pub s3: Option<S3Section>,
    pub encryption: Option<EncryptionSection>,
    pub backup: Option<BackupSection>,
    pub stream: Option<StreamSection>,
    pub restore: Option<RestoreSection>,
    pub status: Option<super::status::StatusSection>,
}

/// A server's login: [source], and [target] (which takes no `url` or `failover`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    pub url: Option<String>,
    /// Other members of a failover group, for `binlog stream`.
    #[serde(default)]
    pub failover: Vec<String>,
    pub password_file: Option<PathBuf>,
    pub defaults_file: Option<PathBuf>,
    pub ssl_mode: Option<String>,
    pub ssl_ca: Option<String>,
    pub ssl_cert: Option<String>,
    pub ssl_key: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RepoSection {
    pub location: String,
    /// Retention for `prune` (see `cli::prune`; its flags replace all of these).
    pub keep_last: Option<u32>,
    pub keep_within: Option<super::prune::Span>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    pub keep_pitr_window: Option<super::prune::Span>,
    /// `prune --max-unused` for this repository (the flag wins).
    pub max_unused: Option<super::sizes::Unused>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3Section {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: Option<bool>,
    /// An AWS shared credentials file (`[profile]` sections with `aws_access_key_id` and
    /// `aws_secret_access_key`), instead of the AWS environment.
    pub credentials_file: Option<PathBuf>,
    /// The profile to use, in `credentials_file` or the AWS files (default `default`).
    pub profile: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionSection {
    /// The repository encryption key's file (`--encryption-key-file`).
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackupSection {
    pub jobs: Option<usize>,
    pub lock_wait_timeout: Option<u64>,
    /// `--max-rate`: bytes per second read from the source (the flag wins).
    pub max_rate: Option<super::sizes::Rate>,
    #[serde(default)]
    pub databases: Vec<String>,
    #[serde(default)]
    pub exclude_tables: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSection {
    pub server_id: Option<u32>,
    pub spool: Option<PathBuf>,
    pub upload_interval: Option<u64>,
    pub heartbeat: Option<u64>,
    pub max_spool_size: Option<u64>,
    /// `--metrics-listen`: serve Prometheus metrics on HOST:PORT.
    pub metrics_listen: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreSection {
    pub jobs: Option<usize>,
    pub mysqld: Option<PathBuf>,
}

pub fn load(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        // The default file is read without being asked for: say why it was, and the ways out.
        // Refusing beats ignoring it, since the command would then run with other repositories
        // and credentials than the host's configuration names.
        if path == Path::new(super::DEFAULT_CONFIG) {
            Error::Usage(format!(
                "cannot read the default configuration {}: {e}; run as root or a member of the \
                 myvault group (the package installs it 0640 root:myvault), or give --config FILE",
                path.display()
            ))
        } else {
            Error::Usage(format!("cannot read --config {}: {e}", path.display()))
        }
    })?;
    parse(&text, path)
}

/// The configuration in `text`, read from `path` (which errors name).
pub fn parse(text: &str, path: &Path) -> Result<Config> {
    let cfg: Config = toml::from_str(text).map_err(|e| {
        // The error's first line says where, its last line what.
        let msg = e.to_string();
        let lines: Vec<&str> = msg
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && *l != "|")
            .collect();
        let what = match (lines.first(), lines.last()) {
            (Some(a), Some(b)) if a != b => format!("{a}: {b}"),
            (Some(a), _) => a.to_string(),
            _ => "invalid configuration".into(),
        };
        Error::Usage(format!("{}: {what}", path.display()))
    })?;
    let jobs = [
        cfg.backup.as_ref().and_then(|b| b.jobs),
        cfg.restore.as_ref().and_then(|r| r.jobs),
    ];
    for n in jobs.into_iter().flatten() {
        super::check_jobs(n).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?;
    }
    if let Some(st) = &cfg.status {
        st.limits()
            .map_err(|e| Error::Usage(format!("{}: [status] {e}", path.display())))?;
    }
    if let Some(t) = &cfg.target
        && (t.url.is_some() || !t.failover.is_empty())
    {
        return Err(Error::Usage(format!(
            "{}: [target] takes only the login (password_file, defaults_file, ssl_*); its URL is --target",
            path.display()
        )));
    }
    for r in &cfg.repo {
        super::prune::configured_policy(r).check().map_err(|e| {
            Error::Usage(format!("{}: [[repo]] {}: {e}", path.display(), r.location))
        })?;
    }
    if let Some(url) = cfg.source.as_ref().and_then(|s| s.url.as_deref()) {
        crate::mysql::url::MysqlUrl::parse(url)?;
    }
    Ok(cfg)
}

impl Config {
    pub fn repos(&self) -> Vec<String> {
        self.repo.iter().map(|r| r.location.clone()).collect()
    }

    pub fn source_url(&self) -> Option<String> {
        self.source.as_ref().and_then(|s| s.url.clone())
    }
}

/// Flags given, else the configuration's list, else an error naming the flag.
pub fn repos_or(given: &[String], cfg: Option<&Config>, flag: &str) -> Result<Vec<String>> {
    if !given.is_empty() {
        return Ok(given.to_vec());
    }
    let from_cfg = cfg.map(Config::repos).unwrap_or_default();
    if from_cfg.is_empty() {
        return Err(Error::Usage(format!(
            "give {flag} (or [[repo]] in the --config file)"
        )));
    }
    Ok(from_cfg)
}

pub fn one_repo(given: Option<&String>, cfg: Option<&Config>) -> Result<String> {
    match given {
        Some(r) => Ok(r.clone()),
        None => repos_or(&[], cfg, "--repo").map(|v| v[0].clone()),
    }
}

pub fn source_or(given: Option<&String>, cfg: Option<&Config>) -> Result<String> {
    given
        .cloned()
        .or_else(|| cfg.and_then(Config::source_url))
        .ok_or_else(|| {
            Error::Usage("give --source URL (or [source] url in the --config file)".into())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example_and_rejects_typos() {
        let text = include_str!("../../examples/myvault.toml");
        let cfg: Config = toml::from_str(text).unwrap();
        assert!(!cfg.repos().is_empty());
        assert!(cfg.source_url().is_some());
        assert!(toml::from_str::<Config>("[source]\nurll = \"x\"").is_err());
    }

    #[test]
    fn target_section_takes_a_login_but_no_url() {
        let p = Path::new("t.toml");
        let cfg = parse("[target]\npassword_file = \"/etc/t\"\n", p).unwrap();
        assert!(cfg.target.unwrap().password_file.is_some());
        let err = parse("[target]\nurl = \"mysql://a@b\"\n", p).unwrap_err();
        assert!(err.to_string().contains("--target"), "{err}");
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum ConfigCommand {
    /// Parse the configuration file and open every repository it names.
    Check,
}

#[derive(Debug, Serialize)]
struct CheckReport {
    file: String,
    source: Option<String>,
    repos: Vec<RepoCheck>,
    ok: bool,
}

#[derive(Debug, Serialize)]
struct RepoCheck {
    location: String,
    error: Option<String>,
}

pub fn run(cmd: &ConfigCommand, path: Option<&Path>, ctx: &super::Ctx) -> Result<()> {
    let ConfigCommand::Check = cmd;
    let path =
        path.ok_or_else(|| Error::Usage("give --config FILE (or set MYVAULT_CONFIG)".into()))?;
    let cfg = ctx.cfg().cloned().unwrap_or_default();
    let source = cfg
        .source_url()
        .map(|u| crate::mysql::url::MysqlUrl::parse(&u).map(|p| p.redacted()))
        .transpose()?;
    let repos: Vec<RepoCheck> = cfg
        .repos()
        .into_iter()
        .map(|location| {
            let error = crate::ops::repos::open(&location, &ctx.store.options())
                .err()
                .map(|e| e.to_string());
            RepoCheck { location, error }
        })
        .collect();
    let ok = repos.iter().all(|r| r.error.is_none());
    let report = CheckReport {
        file: path.display().to_string(),
        source,
        repos,
        ok,
    };
    ctx.out.report(&report, |r| {
        outln!("{}: valid", r.file);
        if let Some(s) = &r.source {
            outln!("  source {s}");
        }
        for repo in &r.repos {
            match &repo.error {
                None => outln!("  repository {}: ok", repo.location),
                Some(e) => outln!("  repository {}: {e}", repo.location),
            }
        }
    });
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "{}: a repository cannot be opened",
            path.display()
        )))
    }
}
