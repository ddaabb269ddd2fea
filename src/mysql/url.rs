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
        let (authority, query) = match rest.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (rest, None),
        };
        let authority = authority.strip_suffix('/').unwrap_or(authority);
        if authority.contains('/') {
            return Err(UrlError("a database path is not supported".into()));
        }
        // The last '@' separates credentials from the host: passwords may contain '@'.
        let (userinfo, hostport) = authority
            .rsplit_once('@')
            .ok_or_else(|| UrlError("the user name is missing (user@host)".into()))?;
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (u, Some(Secret::new(percent_decode(p, "password")?))),
            None => (userinfo, None),
        };
        let user = percent_decode(user, "user name")?;
        if user.is_empty() {
            return Err(UrlError("the user name is empty".into()));
        }
        let (host, port) = split_host_port(hostport)?;

        let mut socket = None;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
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
