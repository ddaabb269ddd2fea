//! The client side of the MySQL protocol against a server that says anything: the input is
//! everything the "server" sends (greeting, authentication exchange, results), served over
//! loopback TCP to a real [`Conn`], which connects and runs a fixed session of queries.
//!
//! Seeds are real servers' answers to that session (MySQL 9.7 with caching_sha2 and its RSA
//! key exchange, MariaDB 10.11 with mysql_native_password), recorded by `capture`.
//!
//! The other side too: [`REPLICA`] is what a replica (the target of a replay) sends to
//! myvault's own replication source, [`ServerConn`].

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use super::{MIB, Target};
use crate::mysql::decode::put_lenenc_bytes;
use crate::mysql::wire::server::ServerConn;
use crate::mysql::wire::{Conn, ConnectOptions, SslMode, SslOptions};
use crate::secret::Secret;

pub const CLIENT: Target = Target {
    name: "mysql_client",
    run: run_client,
    generated_seeds: client_seeds,
    seed_dirs: &[],
    dictionary: &[
        b"\x0a9.7.0\x00",
        b"caching_sha2_password\x00",
        b"mysql_native_password\x00",
        b"mysql_clear_password\x00",
        b"-----BEGIN PUBLIC KEY-----\n",
        b"\x01\x03",
        b"\x01\x04",
        b"\x00\x00\x00\x02\x00\x00\x00",
        b"\xfe\x00\x00\x02\x00",
        b"\xff\x15\x04#28000",
        b"\x03def",
        b"\xfb",
    ],
    // The client reads payloads of up to 16 MiB - 1 into one buffer, and grows it to join
    // longer ones: 32 MiB covers two of them.
    max_alloc: 40 * MIB,
    ci_inputs: 4_000,
    max_len: 64 * 1024,
};

/// Appends one packet: 3-byte length, sequence id, payload.
fn packet(out: &mut Vec<u8>, seq: u8, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes()[..3]);
    out.push(seq);
    out.extend_from_slice(payload);
}

/// A server's side of the session, made up: greeting, fast authentication, two result sets,
/// an OK, an ERR and the ping's OK (with and without EOF packets). Real servers' answers are
/// in `fixtures/fuzz/mysql_client/seeds`.
fn client_seeds() -> Vec<Vec<u8>> {
    fn result_set(out: &mut Vec<u8>, eof: bool, columns: &[&str], rows: &[&[Option<&str>]]) {
        let mut seq = 1;
        let mut next = |out: &mut Vec<u8>, p: &[u8]| {
            packet(out, seq, p);
            seq += 1;
        };
        next(out, &[columns.len() as u8]);
        for c in columns {
            let mut def = Vec::new();
            for part in ["def", "", "", "", c, ""] {
                put_lenenc_bytes(&mut def, part.as_bytes());
            }
            def.extend_from_slice(&[0x0c, 33, 0, 0, 4, 0, 0, 0xfd, 0, 0, 0, 0, 0]);
            next(out, &def);
        }
        if eof {
            next(out, &[0xfe, 0, 0, 2, 0]);
        }
        for row in rows {
            let mut p = Vec::new();
            for v in *row {
                match v {
                    Some(s) => put_lenenc_bytes(&mut p, s.as_bytes()),
                    None => p.push(0xfb),
                }
            }
            next(out, &p);
        }
        if eof {
            next(out, &[0xfe, 0, 0, 2, 0]);
        } else {
            next(out, &[0xfe, 0, 0, 2, 0, 0, 0]);
        }
    }
    let mut out = Vec::new();
    for eof in [false, true] {
        let mut s = Vec::new();
        let caps: u32 = 0x0008_a205 | (1 << 19) | (1 << 21) | if eof { 0 } else { 1 << 24 };
        let mut g = vec![10];
        g.extend_from_slice(b"9.7.0-fuzz\0");
        g.extend_from_slice(&7u32.to_le_bytes());
        g.extend_from_slice(b"abcdefgh\0");
        g.extend_from_slice(&(caps as u16).to_le_bytes());
        g.extend_from_slice(&[255, 2, 0]);
        g.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
        g.push(21);
        g.extend_from_slice(&[0; 10]);
        g.extend_from_slice(b"ijklmnopqrst\0caching_sha2_password\0");
        packet(&mut s, 0, &g);
        packet(&mut s, 2, &[0x01, 0x03]);
        packet(&mut s, 3, &[0, 0, 0, 2, 0, 0, 0]);
        let version = Some("9.7.0");
        result_set(
            &mut s,
            eof,
            &["@@version", "n", "d", "e", "s"],
            &[&[version, None, Some("1.5"), Some(""), Some("x")]],
        );
        packet(&mut s, 1, &[0, 0, 0, 2, 0, 0, 0]);
        packet(
            &mut s,
            1,
            b"\xff\x19\x04#42000Unknown database 'no_such_db'",
        );
        let long = "y".repeat(300);
        result_set(
            &mut s,
            eof,
            &["1"],
            &[&[Some("1")], &[None], &[Some(&long)]],
        );
        packet(&mut s, 1, &[0, 0, 0, 2, 0, 0, 0]);
        out.push(s);
    }
    out
}

/// The password the client logs in with; it must never show in an error.
pub const PASSWORD: &str = "fuzz-Secret-7f3a";
pub const USER: &str = "fuzz";

/// The session run against the server: each step whatever the one before it did.
pub fn session(opts: &ConnectOptions) -> Vec<String> {
    let mut errors = Vec::new();
    let mut conn = match Conn::connect(opts) {
        Ok(c) => c,
        Err(e) => {
            errors.push(e.to_string());
            return errors;
        }
    };
    let _ = (
        conn.server_version(),
        conn.connection_id(),
        conn.is_mariadb(),
    );
    match conn.query("SELECT @@version, NULL AS n, 1.5 AS d, '' AS e, 'x' AS s") {
        Ok(rs) => {
            for row in &rs.rows {
                assert_eq!(
                    row.len(),
                    rs.columns.len(),
                    "a row has one field per column"
                );
            }
        }
        Err(e) => errors.push(e.to_string()),
    }
    if let Err(e) = conn.exec("DO 1") {
        errors.push(e.to_string());
    }
    if let Err(e) = conn.exec("SELECT * FROM no_such_db.no_such_table") {
        errors.push(e.to_string());
    }
    match conn.query_stream("SELECT 1 UNION ALL SELECT NULL UNION ALL SELECT REPEAT('y', 300)") {
        Ok(mut stream) => {
            let columns = stream.columns().len();
            loop {
                match stream.next_row() {
                    Ok(Some(row)) => {
                        assert_eq!(row.columns(), columns);
                        let mut n = 0;
                        for field in row.fields() {
                            n += 1;
                            if let Err(e) = field {
                                errors.push(e.to_string());
                                break;
                            }
                        }
                        assert!(n <= columns);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        errors.push(e.to_string());
                        break;
                    }
                }
            }
        }
        Err(e) => errors.push(e.to_string()),
    }
    if let Err(e) = conn.ping() {
        errors.push(e.to_string());
    }
    errors
}

/// Options for a connection to `port` on loopback, without TLS (so the RSA key exchange
/// of caching_sha2_password is reachable).
pub fn options(host: &str, port: u16) -> ConnectOptions {
    ConnectOptions {
        host: host.into(),
        port,
        socket: None,
        user: USER.into(),
        password: Secret::new(PASSWORD),
        password_origin: None,
        ssl: SslOptions {
            mode: SslMode::Disabled,
            ..SslOptions::default()
        },
        connect_timeout: Duration::from_secs(10),
        read_timeout: Some(Duration::from_secs(10)),
    }
}

/// A loopback "server" that answers each connection with one input, on its own thread.
struct FakeServer {
    port: u16,
    inputs: Sender<Vec<u8>>,
    done: Receiver<()>,
}

impl FakeServer {
    fn start() -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().expect("local address").port();
        let (inputs, inputs_rx) = channel::<Vec<u8>>();
        let (done_tx, done) = channel();
        std::thread::spawn(move || {
            while let Ok(input) = inputs_rx.recv() {
                if let Ok((mut stream, _)) = listener.accept() {
                    serve(&mut stream, &input);
                }
                if done_tx.send(()).is_err() {
                    return;
                }
            }
        });
        FakeServer { port, inputs, done }
    }
}

fn serve(stream: &mut TcpStream, input: &[u8]) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.write_all(input);
    let _ = stream.shutdown(Shutdown::Write);
    // Whatever the client says, until it hangs up.
    let mut sink = [0u8; 4096];
    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
}

thread_local! {
    static SERVER: FakeServer = FakeServer::start();
}

fn run_client(data: &[u8]) {
    let errors = SERVER.with(|server| {
        server
            .inputs
            .send(data.to_vec())
            .expect("fake server running");
        let errors = session(&options("127.0.0.1", server.port));
        server.done.recv().expect("fake server done");
        errors
    });
    for e in errors {
        assert!(!e.contains(PASSWORD), "the password is in an error: {e}");
        assert!(
            !e.contains('\n') || e.len() < 2000,
            "runaway error text: {e}"
        );
    }
}

/// Runs the session against a real server at `addr` through a recording proxy, and returns
/// what the server sent: a seed for [`CLIENT`].
pub fn capture(host: &str, port: u16) -> std::io::Result<Vec<u8>> {
    let proxy = TcpListener::bind("127.0.0.1:0")?;
    let proxy_port = proxy.local_addr()?.port();
    let server_addr = format!("{host}:{port}");
    let recorder = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
        let (mut client, _) = proxy.accept()?;
        let mut server = TcpStream::connect(server_addr)?;
        let mut to_server = server.try_clone()?;
        let mut from_client = client.try_clone()?;
        let upstream = std::thread::spawn(move || {
            let _ = std::io::copy(&mut from_client, &mut to_server);
            let _ = to_server.shutdown(Shutdown::Write);
        });
        let mut recorded = Vec::new();
        let mut buf = [0u8; 16384];
        loop {
            let n = server.read(&mut buf)?;
            if n == 0 {
                break;
            }
            recorded.extend_from_slice(&buf[..n]);
            client.write_all(&buf[..n])?;
        }
        let _ = client.shutdown(Shutdown::Write);
        let _ = upstream.join();
        Ok(recorded)
    });
    let errors = session(&options("127.0.0.1", proxy_port));
    if errors.len() > 1 {
        // One error is expected: the query of a table that does not exist.
        eprintln!("capture: the session had errors: {errors:?}");
    }
    recorder
        .join()
        .map_err(|_| std::io::Error::other("recorder panicked"))?
}

/// What a replica sends to myvault's replication source: handshake response, then commands.
pub const REPLICA: Target = Target {
    name: "replica_session",
    run: run_replica,
    generated_seeds: replica_seeds,
    seed_dirs: &[],
    dictionary: &[
        b"caching_sha2_password\x00",
        b"fuzz\x00",
        b"\x03SELECT ",
        b"\x14",
        b"\x1e",
    ],
    max_alloc: 40 * MIB,
    ci_inputs: 3000,
    max_len: 16 * 1024,
};

/// A replica logging in as [`USER`] without a password (an empty scramble, which myvault's
/// source accepts for an empty password), then a query, COM_REGISTER_SLAVE and a
/// COM_BINLOG_DUMP_GTID.
fn replica_seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for caps in [0x00ba_a285u32, 0x0008_a285] {
        let mut s = Vec::new();
        let mut login = caps.to_le_bytes().to_vec();
        login.extend_from_slice(&(1u32 << 30).to_le_bytes());
        login.push(45);
        login.extend_from_slice(&[0; 23]);
        login.extend_from_slice(USER.as_bytes());
        login.push(0);
        login.push(0); // empty auth data
        login.extend_from_slice(b"caching_sha2_password\0");
        packet(&mut s, 1, &login);
        packet(&mut s, 0, b"\x03SELECT UNIX_TIMESTAMP()");
        let mut register = vec![0x15];
        register.extend_from_slice(&77u32.to_le_bytes());
        register.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        packet(&mut s, 0, &register);
        let mut dump = vec![0x1e, 0, 0];
        dump.extend_from_slice(&77u32.to_le_bytes());
        dump.extend_from_slice(&0u32.to_le_bytes());
        dump.extend_from_slice(&4u64.to_le_bytes());
        dump.extend_from_slice(&8u32.to_le_bytes());
        dump.extend_from_slice(&0u64.to_le_bytes());
        packet(&mut s, 0, &dump);
        out.push(s);
    }
    out
}

/// A loopback "replica" that connects and sends one input, on its own thread.
struct FakeReplica {
    listener: TcpListener,
    inputs: Sender<(u16, Vec<u8>)>,
    done: Receiver<()>,
}

impl FakeReplica {
    fn start() -> FakeReplica {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let (inputs, inputs_rx) = channel::<(u16, Vec<u8>)>();
        let (done_tx, done) = channel();
        std::thread::spawn(move || {
            while let Ok((port, input)) = inputs_rx.recv() {
                if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
                    serve(&mut stream, &input);
                }
                if done_tx.send(()).is_err() {
                    return;
                }
            }
        });
        FakeReplica {
            listener,
            inputs,
            done,
        }
    }
}

thread_local! {
    static REPLICA_PEER: FakeReplica = FakeReplica::start();
}

fn run_replica(data: &[u8]) {
    REPLICA_PEER.with(|peer| {
        let port = peer.listener.local_addr().expect("local address").port();
        peer.inputs
            .send((port, data.to_vec()))
            .expect("fake replica running");
        if let Ok((stream, _)) = peer.listener.accept() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            if let Ok(mut conn) = ServerConn::accept(stream, "9.7.0-myvault", 1, USER, b"") {
                assert_eq!(conn.user, USER, "logged in as someone else");
                while let Ok(command) = conn.read_command() {
                    if command.first() == Some(&0x03) {
                        let _ = conn.send_rows(&["x"], &[vec![Some("1".into()), None]]);
                    } else {
                        let _ = conn.send_ok();
                    }
                }
            }
        }
        peer.done.recv().expect("fake replica done");
    });
}
