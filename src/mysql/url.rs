//! `mysql://user[:password]@host[:port][?socket=PATH]` URLs.
//!
//! Parse errors describe the problem without repeating the URL, because the URL may hold a
//! password.

use crate::secret::Secret;

pub const DEFAULT_PORT: u16 = 3306;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlUrl {
    pub user: String,
    pub password: Option<Secret>,
    pub host: String,
    pub port: u16,
    /// A Unix socket path; when set, host and port are only used for display.
    pub socket: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed MySQL URL: {0} (expected mysql://user[:password]@host[:port])")]
pub struct UrlError(String);

impl MysqlUrl {
    pub fn parse(url: &str) -> Result<MysqlUrl, UrlError> {
        let rest = url
            .strip_prefix("mysql://")
            .ok_or_else(|| UrlError("it must start with mysql://".into()))?;
        let parts = UrlParts::split(rest);
        let hostport = parts.hostport.strip_suffix('/').unwrap_or(parts.hostport);
        if hostport.contains('/') {
            return Err(UrlError("a database path is not supported".into()));
        }
        let (user, password) = parts
            .userinfo
            .ok_or_else(|| UrlError("the user name is missing (user@host)".into()))?;
        // Messages that quote a URL (clap's) are redacted up to a space or a quote, so a
        // password holding one could show: those characters must come percent-encoded.
        let unquotable = |c: char| c.is_whitespace() || c == '"' || c == '\'';
        if user.contains(unquotable) || password.is_some_and(|p| p.contains(unquotable)) {
            return Err(UrlError(
                "spaces and quotes in the user name or password must be percent-encoded \
                 (%20, %22, %27)"
                    .into(),
            ));
        }
        let password = password
            .map(|p| percent_decode(p, "password").map(Secret::new))
            .transpose()?;
        let user = percent_decode(user, "user name")?;
        if user.is_empty() {
            return Err(UrlError("the user name is empty".into()));
        }
        let (host, port) = split_host_port(hostport)?;

        let mut socket = None;
        for pair in parts
            .query
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "socket" => socket = Some(percent_decode(value, "socket path")?),
                other => {
                    return Err(UrlError(format!(
                        "unknown URL option '{}' (only socket= is understood; TLS has --ssl-mode)",
                        other
                    )));
                }
            }
        }
        Ok(MysqlUrl {
            user,
            password,
            host,
            port,
            socket,
        })
    }

    /// `host:port` (or the socket path): how the server is named in messages.
    pub fn address(&self) -> String {
        match &self.socket {
            Some(path) => path.clone(),
            None if self.host.contains(':') => format!("[{}]:{}", self.host, self.port),
            None => format!("{}:{}", self.host, self.port),
        }
    }

    /// The URL with the password left out, safe for logs and manifests.
    pub fn redacted(&self) -> String {
        format!("mysql://{}@{}", self.user, self.address())
    }
}

/// The pieces of a URL after `mysql://`, still percent-encoded. Parsing and hiding the
/// password from the process title both cut URLs here, so they always agree on where the
/// password is.
struct UrlParts<'a> {
    /// User name and password; `None` without an `@`.
    userinfo: Option<(&'a str, Option<&'a str>)>,
    hostport: &'a str,
    query: Option<&'a str>,
}

impl<'a> UrlParts<'a> {
    fn split(rest: &'a str) -> UrlParts<'a> {
        let (authority, query) = match rest.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (rest, None),
        };
        // The last '@' separates credentials from the host: passwords may contain '@'.
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        UrlParts {
            userinfo: userinfo.map(|u| match u.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (u, None),
            }),
            hostport,
            query,
        }
    }
}

/// Where the password of a `mysql://` URL sits in a command-line argument (`--source=URL` or
/// the URL alone), as a byte range of `arg`; `None` when there is none.
pub fn password_span(arg: &str) -> Option<std::ops::Range<usize>> {
    let start = arg.find("mysql://")? + "mysql://".len();
    let (_, password) = UrlParts::split(&arg[start..]).userinfo?;
    let password = password.filter(|p| !p.is_empty())?;
    // `password` is a slice of `arg`: its offset is where it starts in memory.
    let from = password.as_ptr() as usize - arg.as_ptr() as usize;
    Some(from..from + password.len())
}

/// `text` with the password of every `mysql://` URL in it replaced by `xxx`: for messages
/// that quote the command line (clap's usage errors). A URL ends at whitespace or a quote.
pub fn redact_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("mysql://") {
        let end = rest[at..]
            .find(|c: char| c.is_whitespace() || c == '\'' || c == '"')
            .map_or(rest.len(), |e| at + e);
        let url = &rest[at..end];
        out.push_str(&rest[..at]);
        match password_span(url) {
            Some(span) => {
                out.push_str(&url[..span.start]);
                out.push_str("xxx");
                out.push_str(&url[span.end..]);
            }
            None => out.push_str(url),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn split_host_port(hostport: &str) -> Result<(String, u16), UrlError> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| UrlError("unclosed '[' in IPv6 host".into()))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| UrlError("expected ':' after IPv6 host".into()))?,
            ),
        };
        (host, port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(UrlError("the host is empty".into()));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| UrlError(format!("port '{p}' is not a number from 1 to 65535")))?,
    };
    Ok((host.to_string(), port))
}

fn percent_decode(s: &str, what: &str) -> Result<String, UrlError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| UrlError(format!("bad percent-escape in the {what}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UrlError(format!("the {what} is not valid UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_url() {
        let u = MysqlUrl::parse("mysql://backup:s%40cret:x@db1.example:3307").unwrap();
        assert_eq!(u.user, "backup");
        assert_eq!(u.password.as_ref().unwrap().expose(), "s@cret:x");
        assert_eq!(u.host, "db1.example");
        assert_eq!(u.port, 3307);
        assert_eq!(u.redacted(), "mysql://backup@db1.example:3307");
    }

    #[test]
    fn password_with_at_sign_and_default_port() {
        let u = MysqlUrl::parse("mysql://root:p@ss@127.0.0.1/").unwrap();
        assert_eq!(u.password.unwrap().expose(), "p@ss");
        assert_eq!(u.port, 3306);
    }

    #[test]
    fn ipv6_and_socket() {
        let u = MysqlUrl::parse("mysql://root@[::1]:3310?socket=/run/mysqld/mysqld.sock").unwrap();
        assert_eq!(u.host, "::1");
        assert_eq!(u.port, 3310);
        assert_eq!(u.socket.as_deref(), Some("/run/mysqld/mysqld.sock"));
    }

    #[test]
    fn password_span_finds_what_parse_decodes() {
        for arg in [
            "mysql://backup:s%40cret:x@db1.example:3307",
            "--source=mysql://root:p@ss@127.0.0.1/",
            "mysql://u:pw@h?socket=/tmp/s",
            "--target=mysql://u:a/b@h",
        ] {
            let span = password_span(arg).unwrap();
            let url = &arg[arg.find("mysql://").unwrap()..];
            let encoded = &arg[span];
            match MysqlUrl::parse(url) {
                Ok(u) => assert_eq!(
                    percent_decode(encoded, "password").unwrap(),
                    u.password.unwrap().expose()
                ),
                // Parse refuses this one: it still must not show the password.
                Err(e) => assert!(!e.to_string().contains(encoded), "{arg}"),
            }
        }
        for arg in [
            "mysql://root@h",
            "mysql://root:@h",
            "--repo=/x",
            "mysql://h",
            "s3://a:b@c",
        ] {
            assert_eq!(password_span(arg), None, "{arg}");
        }
    }

    #[test]
    fn messages_quoting_urls_lose_their_passwords() {
        let msg = "error: unexpected argument 'mysql://root:S3cr@t@db1:3306' found\n\
                   also mysql://u:other@h and mysql://nopass@h, try '--help'";
        let red = redact_passwords(msg);
        assert!(!red.contains("S3cr") && !red.contains("other"), "{red}");
        assert!(red.contains("'mysql://root:xxx@db1:3306' found"), "{red}");
        assert!(
            red.contains("mysql://u:xxx@h and mysql://nopass@h, try '--help'"),
            "{red}"
        );
    }

    #[test]
    fn password_with_a_space_or_quote_must_be_percent_encoded_so_redaction_finds_it() {
        for bad in [
            "mysql://u:top secret@h",
            "mysql://u:top'secret@h",
            "mysql://a b:pw@h",
        ] {
            let err = MysqlUrl::parse(bad).unwrap_err().to_string();
            assert!(err.contains("percent-encoded"), "{bad} -> {err}");
        }
        let u = MysqlUrl::parse("mysql://u:top%20secret%27@h").unwrap();
        assert_eq!(u.password.unwrap().expose(), "top secret'");
        let red = redact_passwords("error: 'mysql://u:top%20secret%27@h' found");
        assert!(!red.contains("secret"), "{red}");
    }

    #[test]
    fn a_slash_in_the_password_is_no_database_path() {
        let u = MysqlUrl::parse("mysql://u:a/b@h/").unwrap();
        assert_eq!(u.password.unwrap().expose(), "a/b");
        assert!(MysqlUrl::parse("mysql://u:p@h/db").is_err());
    }

    #[test]
    fn errors_never_repeat_the_password() {
        for bad in [
            "postgres://u:topsecret@h",
            "mysql://u:topsecret@h:notaport",
            "mysql://u:topsecret@h:0",
            "mysql://u:topsecret@",
            "mysql://:topsecret@h",
            "mysql://u:topsecret@h/db",
            "mysql://u:top%zzsecret@h",
            "mysql://u:topsecret@h?ssl=1",
            "mysql://topsecret",
        ] {
            let err = MysqlUrl::parse(bad).unwrap_err().to_string();
            assert!(!err.contains("topsecret"), "{bad} -> {err}");
        }
    }
}
