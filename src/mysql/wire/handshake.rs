//! Connection phase: greeting, optional TLS upgrade, handshake response and the
//! authentication exchange (plugin switch, caching_sha2 fast and full auth).

use std::io;

use super::auth;
use super::conn::{ConnectOptions, server_error};
use super::packet::{PacketIo, Transport};
use super::tls::{self, SslMode};
use crate::mysql::decode::{Reader, put_lenenc_bytes};
use crate::mysql::error::{Error, codes};

pub mod caps {
    pub const LONG_PASSWORD: u32 = 1;
    /// Set by MySQL servers; MariaDB clears it and uses the bits for its own flags.
    pub const CLIENT_MYSQL: u32 = 1;
    pub const LONG_FLAG: u32 = 1 << 2;
    pub const LOCAL_FILES: u32 = 1 << 7;
    pub const PROTOCOL_41: u32 = 1 << 9;
    pub const SSL: u32 = 1 << 11;
    pub const TRANSACTIONS: u32 = 1 << 13;
    pub const SECURE_CONNECTION: u32 = 1 << 15;
    pub const MULTI_RESULTS: u32 = 1 << 17;
    pub const PLUGIN_AUTH: u32 = 1 << 19;
    pub const CONNECT_ATTRS: u32 = 1 << 20;
    pub const PLUGIN_AUTH_LENENC_DATA: u32 = 1 << 21;
    pub const DEPRECATE_EOF: u32 = 1 << 24;
}

/// utf8mb4_general_ci: exists on every MySQL and MariaDB version myvault supports.
const UTF8MB4_GENERAL_CI: u8 = 45;
const MAX_PACKET: u32 = 1 << 30;

/// What the connection phase leaves behind for the command phase.
pub struct Login {
    pub io: PacketIo,
    pub server_version: String,
    pub connection_id: u32,
    pub capabilities: u32,
    pub mariadb: bool,
    pub tls: bool,
}

pub fn login(mut io: PacketIo, opts: &ConnectOptions, addr: &str) -> Result<Login, Error> {
    let not_mysql = |detail: String| Error::NotMysql {
        addr: addr.to_string(),
        detail,
    };
    let lost = |source: io::Error| Error::ConnectionLost {
        addr: addr.to_string(),
        source,
    };

    let mut greeting = Vec::new();
    io.read_payload(&mut greeting).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => not_mysql(format!(
            "no MySQL greeting within {} s",
            opts.connect_timeout.as_secs()
        )),
        io::ErrorKind::InvalidData => not_mysql(e.to_string()),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => {
            not_mysql("the connection was closed before any greeting".into())
        }
        _ => lost(e),
    })?;
    if greeting.first() == Some(&0xFF) {
        // Refused before authentication: too many connections, host blocked.
        return Err(server_error(addr, &greeting));
    }
    let hello = Greeting::parse(&greeting).map_err(not_mysql)?;
    if hello.capabilities & caps::PROTOCOL_41 == 0 {
        return Err(not_mysql("the server is older than MySQL 4.1".into()));
    }
    let mariadb =
        hello.capabilities & caps::CLIENT_MYSQL == 0 || hello.server_version.contains("MariaDB");

    let use_tls = opts.socket.is_none()
        && opts.ssl.mode != SslMode::Disabled
        && hello.capabilities & caps::SSL != 0;
    if opts.ssl.mode.requires_tls() && !use_tls {
        return Err(Error::Tls {
            addr: addr.to_string(),
            detail: "the server does not offer TLS, and --ssl-mode requires it".into(),
        });
    }
    let mut client_caps = (caps::LONG_PASSWORD
        | caps::LONG_FLAG
        | caps::LOCAL_FILES
        | caps::PROTOCOL_41
        | caps::TRANSACTIONS
        | caps::SECURE_CONNECTION
        | caps::MULTI_RESULTS
        | caps::PLUGIN_AUTH
        | caps::CONNECT_ATTRS
        | caps::PLUGIN_AUTH_LENENC_DATA
        | caps::DEPRECATE_EOF)
        & hello.capabilities;
    if use_tls {
        client_caps |= caps::SSL;
    }

    io.set_seq(1);
    if use_tls {
        io = start_tls(io, opts, addr, client_caps)?;
    }

    let plugin = match hello.auth_plugin.as_str() {
        auth::NATIVE | auth::CACHING_SHA2 => hello.auth_plugin.clone(),
        // An unknown default plugin: answer with the MySQL 8+ default and let the server
        // switch us to what the account needs.
        _ => auth::CACHING_SHA2.to_string(),
    };
    let password = opts.password.expose().as_bytes();
    let mut response = login_prefix(client_caps);
    response.extend_from_slice(opts.user.as_bytes());
    response.push(0);
    let scramble = scramble_for(&plugin, password, &hello.nonce);
    if client_caps & caps::PLUGIN_AUTH_LENENC_DATA != 0 {
        put_lenenc_bytes(&mut response, &scramble);
    } else {
        response.push(scramble.len() as u8);
        response.extend_from_slice(&scramble);
    }
    response.extend_from_slice(plugin.as_bytes());
    response.push(0);
    if client_caps & caps::CONNECT_ATTRS != 0 {
        let mut attrs = Vec::new();
        for (k, v) in [("_client_name", "myvault"), ("program_name", "myvault")] {
            put_lenenc_bytes(&mut attrs, k.as_bytes());
            put_lenenc_bytes(&mut attrs, v.as_bytes());
        }
        put_lenenc_bytes(&mut response, &attrs);
    }
    io.write_payload(&response).map_err(lost)?;

    // caching_sha2 may send the password in clear only over TLS or a Unix socket.
    let secure = use_tls || opts.socket.is_some();
    authenticate(&mut io, addr, password, plugin, hello.nonce, secure).map_err(|e| match e {
        // Which password was refused is the first thing to know: say where it came from.
        Error::AccessDenied { addr, message } => Error::AccessDenied {
            addr,
            message: match &opts.password_origin {
                Some(origin) if origin.starts_with("no password") => format!("{message}; {origin}"),
                Some(origin) => format!("{message}; the password came from {origin}"),
                None => message,
            },
        },
        other => other,
    })?;
    Ok(Login {
        io,
        server_version: hello.server_version,
        connection_id: hello.connection_id,
        capabilities: client_caps,
        mariadb,
        tls: use_tls,
    })
}

/// Capability flags, max packet size, character set and filler: the start of both the
/// SSL request and the handshake response.
fn login_prefix(client_caps: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&client_caps.to_le_bytes());
    out.extend_from_slice(&MAX_PACKET.to_le_bytes());
    out.push(UTF8MB4_GENERAL_CI);
    out.extend_from_slice(&[0u8; 23]);
    out
}

fn start_tls(
    mut io: PacketIo,
    opts: &ConnectOptions,
    addr: &str,
    client_caps: u32,
) -> Result<PacketIo, Error> {
    let lost = |source: io::Error| Error::ConnectionLost {
        addr: addr.to_string(),
        source,
    };
    let tls_err = |detail: String| Error::Tls {
        addr: addr.to_string(),
        detail,
    };
    io.write_payload(&login_prefix(client_caps)).map_err(lost)?;
    let config = tls::client_config(&opts.ssl).map_err(tls_err)?;
    let name = tls::server_name(&opts.host).map_err(tls_err)?;
    let seq = io.seq();
    let tcp = match io.into_transport().map_err(lost)? {
        Transport::Tcp(tcp) => tcp,
        _ => return Err(tls_err("TLS is only used over TCP".into())),
    };
    let client = rustls::ClientConnection::new(config, name).map_err(|e| tls_err(e.to_string()))?;
    let mut stream = rustls::StreamOwned::new(client, tcp);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .map_err(|e| tls_err(e.to_string()))?;
    }
    let mut io = PacketIo::new(Transport::Tls(Box::new(stream)));
    io.set_seq(seq);
    Ok(io)
}

fn authenticate(
    io: &mut PacketIo,
    addr: &str,
    password: &[u8],
    mut plugin: String,
    mut nonce: Vec<u8>,
    secure: bool,
) -> Result<(), Error> {
    let not_mysql = |detail: &str| Error::NotMysql {
        addr: addr.to_string(),
        detail: detail.to_string(),
    };
    let lost = |source: io::Error| Error::ConnectionLost {
        addr: addr.to_string(),
        source,
    };
    let with_nul = |p: &[u8]| {
        let mut v = p.to_vec();
        v.push(0);
        v
    };
    let mut asked_for_key = false;
    // A plugin myvault cannot speak, answered with nothing to learn what the server says.
    let mut unsupported: Option<String> = None;
    let mut packet = Vec::new();
    loop {
        io.read_payload(&mut packet).map_err(lost)?;
        match packet.first().copied() {
            Some(0x00) => return Ok(()),
            Some(0xFF) => {
                return Err(match server_error(addr, &packet) {
                    Error::Server { code, message, .. }
                        if code == codes::ACCESS_DENIED || code == codes::DB_ACCESS_DENIED =>
                    {
                        let message = match &unsupported {
                            Some(plugin) => format!(
                                "{message} (the server asked for the authentication plugin '{plugin}', which myvault does not support)"
                            ),
                            None => message,
                        };
                        Error::AccessDenied {
                            addr: addr.to_string(),
                            message,
                        }
                    }
                    other => other,
                });
            }
            Some(0xFE) => {
                // Auth switch: the account uses another plugin, with a fresh nonce.
                let mut r = Reader::new(&packet[1..]);
                plugin =
                    String::from_utf8_lossy(r.nul_terminated().unwrap_or_default()).into_owned();
                let data = r.rest();
                nonce = data.strip_suffix(&[0]).unwrap_or(data).to_vec();
                let reply = match plugin.as_str() {
                    auth::NATIVE | auth::CACHING_SHA2 => scramble_for(&plugin, password, &nonce),
                    auth::SHA256 | "mysql_clear_password" if secure => with_nul(password),
                    auth::SHA256 => {
                        asked_for_key = true;
                        vec![auth::SHA256_REQUEST_PUBLIC_KEY]
                    }
                    other => {
                        // Answer anyway: the server refuses a wrong answer with "access
                        // denied", which is the truth when the account does not exist; only
                        // a server that says something else proves the plugin is the problem.
                        unsupported = Some(other.to_string());
                        Vec::new()
                    }
                };
                io.write_payload(&reply).map_err(lost)?;
            }
            Some(0x01) if plugin == auth::SHA256 && asked_for_key => {
                let encrypted =
                    auth::sha2_rsa_encrypt(password, &nonce, &packet[1..]).map_err(|detail| {
                        Error::Tls {
                            addr: addr.to_string(),
                            detail,
                        }
                    })?;
                io.write_payload(&encrypted).map_err(lost)?;
            }
            _ if unsupported.is_some() => {
                return Err(Error::NotMysql {
                    addr: addr.to_string(),
                    detail: format!(
                        "the account uses the authentication plugin '{}', which myvault does not support",
                        unsupported.unwrap_or_default()
                    ),
                });
            }
            Some(0x01) if plugin == auth::CACHING_SHA2 => {
                let data = &packet[1..];
                match data.first().copied() {
                    Some(auth::SHA2_FAST_AUTH_OK) => {}
                    Some(auth::SHA2_FULL_AUTH_NEEDED) if secure => {
                        io.write_payload(&with_nul(password)).map_err(lost)?;
                    }
                    Some(auth::SHA2_FULL_AUTH_NEEDED) => {
                        asked_for_key = true;
                        io.write_payload(&[auth::SHA2_REQUEST_PUBLIC_KEY])
                            .map_err(lost)?;
                    }
                    _ if asked_for_key => {
                        let encrypted =
                            auth::sha2_rsa_encrypt(password, &nonce, data).map_err(|detail| {
                                Error::Tls {
                                    addr: addr.to_string(),
                                    detail,
                                }
                            })?;
                        io.write_payload(&encrypted).map_err(lost)?;
                    }
                    _ => return Err(not_mysql("unexpected caching_sha2_password exchange")),
                }
            }
            _ => return Err(not_mysql("unexpected packet during authentication")),
        }
    }
}

fn scramble_for(plugin: &str, password: &[u8], nonce: &[u8]) -> Vec<u8> {
    if plugin == auth::NATIVE {
        auth::native_scramble(password, nonce)
    } else {
        auth::sha2_scramble(password, nonce)
    }
}

/// The server's initial handshake packet (protocol version 10).
struct Greeting {
    server_version: String,
    connection_id: u32,
    capabilities: u32,
    nonce: Vec<u8>,
    auth_plugin: String,
}

impl Greeting {
    fn parse(payload: &[u8]) -> Result<Greeting, String> {
        let bad = |_| "malformed greeting".to_string();
        let mut r = Reader::new(payload);
        let protocol = r.u8().map_err(bad)?;
        if protocol != 10 {
            return Err(format!("unsupported protocol version {protocol}"));
        }
        let server_version = String::from_utf8_lossy(r.nul_terminated().map_err(bad)?).into_owned();
        let connection_id = r.u32().map_err(bad)?;
        let mut nonce = r.take(8).map_err(bad)?.to_vec();
        r.skip(1).map_err(bad)?;
        let mut capabilities = u32::from(r.u16().map_err(bad)?);
        let mut auth_plugin = String::new();
        if !r.is_empty() {
            let _charset = r.u8().map_err(bad)?;
            let _status = r.u16().map_err(bad)?;
            capabilities |= u32::from(r.u16().map_err(bad)?) << 16;
            let auth_data_len = r.u8().map_err(bad)?;
            r.skip(10).map_err(bad)?;
            if capabilities & caps::SECURE_CONNECTION != 0 {
                let len = (auth_data_len as usize).saturating_sub(8).max(13);
                let part2 = r.take(len.min(r.remaining())).map_err(bad)?;
                nonce.extend_from_slice(part2.strip_suffix(&[0]).unwrap_or(part2));
            }
            if capabilities & caps::PLUGIN_AUTH != 0 {
                let name = match r.nul_terminated() {
                    Ok(name) => name,
                    Err(_) => r.rest(),
                };
                auth_plugin = String::from_utf8_lossy(name).into_owned();
            }
        }
        Ok(Greeting {
            server_version,
            connection_id,
            capabilities,
            nonce,
            auth_plugin,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_rejects_non_mysql_bytes_without_panicking() {
        for junk in [
            &b""[..],
            b"\x0a",
            b"HTTP/1.1 400",
            b"\x0a9.7\0\x01\x02",
            b"\x0a\0\0\0\0\0",
        ] {
            assert!(Greeting::parse(junk).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn greeting_of_mysql_9() {
        let mut p = vec![10];
        p.extend_from_slice(b"9.7.4\0");
        p.extend_from_slice(&42u32.to_le_bytes());
        p.extend_from_slice(b"abcdefgh\0");
        let caps = caps::PROTOCOL_41
            | caps::SECURE_CONNECTION
            | caps::PLUGIN_AUTH
            | caps::SSL
            | caps::CLIENT_MYSQL;
        p.extend_from_slice(&(caps as u16).to_le_bytes());
        p.push(255);
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
        p.push(21);
        p.extend_from_slice(&[0; 10]);
        p.extend_from_slice(b"ijklmnopqrst\0");
        p.extend_from_slice(b"caching_sha2_password\0");
        let g = Greeting::parse(&p).unwrap();
        assert_eq!(g.server_version, "9.7.4");
        assert_eq!(g.connection_id, 42);
        assert_eq!(g.nonce, b"abcdefghijklmnopqrst");
        assert_eq!(g.auth_plugin, "caching_sha2_password");
        assert_eq!(g.capabilities, caps);
    }
}
