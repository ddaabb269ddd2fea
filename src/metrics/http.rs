//! `/metrics` over HTTP/1.1 on a plain `std::net` listener: one thread, one request per
//! connection, for a Prometheus server that scrapes every few seconds. The page is made by a
//! callback that only reads shared state, so a scrape never waits for (or holds up) the work
//! being measured.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A slow or silent client cannot keep the next scrape waiting longer than this.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest request head read: a scraper sends a few hundred bytes.
const MAX_HEAD: usize = 8192;

/// Binds `addr` (`host:port`; port 0 picks a free one) and serves in a background thread
/// for the rest of the process. Returns the bound address.
pub fn serve(addr: &str, render: Render) -> io::Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    let listener = TcpListener::bind(&addrs[..])?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    // A client that misbehaves concerns that client only.
                    Ok(conn) => {
                        let _ = answer(conn, &render);
                    }
                    // A failed accept (descriptors ran out for a moment) is retried after a
                    // pause rather than spun on.
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        })?;
    Ok(bound)
}

fn answer(mut conn: TcpStream, render: &Render) -> io::Result<()> {
    conn.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    conn.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let head = read_head(&mut conn)?;
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => ("200 OK", render()),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "not found; metrics are at /metrics\n".into(),
        ),
        _ => ("405 Method Not Allowed", "only GET\n".into()),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        if status.starts_with("200") {
            CONTENT_TYPE
        } else {
            "text/plain; charset=utf-8"
        },
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        response.extend_from_slice(body.as_bytes());
    }
    conn.write_all(&response)?;
    conn.flush()
}

/// The request up to its blank line (a GET has no body).
fn read_head(conn: &mut TcpStream) -> io::Result<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request too long",
            ));
        }
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}
