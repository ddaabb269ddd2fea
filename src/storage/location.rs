//! Where a repository lives, parsed once: a local directory or an S3 bucket and prefix.
//!
//! Anything that looks like a URL but is not a supported one (`s3:/bucket`, `S3://...`,
//! `ftp://...`) is refused: taken as a directory name, a typo would put an "off-site" backup
//! on local disk and report success.

use std::fmt;
use std::path::PathBuf;

use super::s3::{self, S3Location};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    S3(S3Location),
}

/// A repository location that cannot be used; a usage error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("repository location {location:?}: {detail}")]
pub struct BadLocation {
    pub location: String,
    pub detail: String,
}

impl Location {
    pub fn parse(text: &str) -> Result<Location, BadLocation> {
        let bad = |detail: String| BadLocation {
            location: text.to_string(),
            detail,
        };
        if text.trim().is_empty() {
            return Err(bad("empty".into()));
        }
        if text.starts_with("s3://") {
            return s3::parse_url(text).map(Location::S3).map_err(bad);
        }
        if let Some(scheme) = url_scheme(text) {
            let hint = if scheme.eq_ignore_ascii_case("s3") {
                "; an S3 repository is written s3://bucket/prefix (lower-case s3, two slashes)"
                    .to_string()
            } else {
                format!(
                    "; `{scheme}:` is not a supported scheme (a directory or s3://bucket/prefix; \
                     a local directory whose name has a colon can be written ./{text})"
                )
            };
            return Err(bad(format!(
                "looks like a URL but is not one myvault can use{hint}"
            )));
        }
        Ok(Location::Local(PathBuf::from(text)))
    }

    pub fn is_remote(&self) -> bool {
        matches!(self, Location::S3(_))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3(l) if l.prefix.is_empty() => write!(f, "s3://{}", l.bucket),
            Location::S3(l) => write!(f, "s3://{}/{}", l.bucket, l.prefix),
        }
    }
}

/// The scheme of text that starts like a URL (`name:` with a letter first, then letters,
/// digits, `+`, `-`, `.`), which a path given on a command line almost never does.
fn url_scheme(text: &str) -> Option<&str> {
    let (scheme, _) = text.split_once(':')?;
    let mut bytes = scheme.bytes();
    let first = bytes.next()?;
    let plausible = first.is_ascii_alphabetic()
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    plausible.then_some(scheme)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_url_typos_are_usage_errors_not_local_directories() {
        for typo in [
            "s3:/bucket/x",
            "S3://bucket/x",
            "s3:bucket",
            "ftp://host/x",
            "file:///var/backups",
            "gs://bucket",
            "https://s3.example.com/bucket",
        ] {
            let err = Location::parse(typo).expect_err(typo);
            assert!(err.to_string().contains(typo), "{err}");
        }
        let err = Location::parse("S3://bucket/x").expect_err("upper case");
        assert!(err.detail.contains("s3://bucket/prefix"), "{err}");
    }

    #[test]
    fn directories_and_s3_urls_parse() {
        assert_eq!(
            Location::parse("/var/backups/db1").expect("absolute"),
            Location::Local(PathBuf::from("/var/backups/db1"))
        );
        assert_eq!(
            Location::parse("./backup:2026").expect("colon after ./"),
            Location::Local(PathBuf::from("./backup:2026"))
        );
        assert_eq!(
            Location::parse("relative/dir").expect("relative"),
            Location::Local(PathBuf::from("relative/dir"))
        );
        let s3 = Location::parse("s3://backups/db1/").expect("s3");
        assert!(s3.is_remote());
        assert_eq!(s3.to_string(), "s3://backups/db1");
        assert!(Location::parse("s3://B/x").is_err(), "upper-case bucket");
        assert!(Location::parse("").is_err());
    }
}
