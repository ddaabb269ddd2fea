//! A TCP delay line: forwards every connection to an upstream address, delivering each byte a
//! fixed one-way delay after it arrived, in both directions, and the first request one extra
//! round trip late (for the TCP handshake a real distance costs). `scripts/bench --s3-latency`
//! puts it in front of the S3 server, because the test machine's kernel has no `netem` qdisc.
//! Bytes in flight per direction are bounded (`--window`), as a TCP window bounds them on a
//! real path, so throughput per connection is at most window / delay, as it would be there.
//!
//!   delay_proxy LISTEN UPSTREAM ONE_WAY_MS [--window BYTES] [--cut-after BYTES] [--stats FILE]
//!
//! `--cut-after N` drops the first connection that has carried N bytes (either direction), once:
//! the bench checks what a client sends again after a dropped connection. `--stats FILE` is
//! rewritten every second with the bytes carried each way and the connections cut, as JSON.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::thread;
use std::time::{Duration, Instant};

const CHUNK: usize = 64 * 1024;

#[derive(Default)]
struct Stats {
    up: AtomicU64,
    down: AtomicU64,
    connections: AtomicU64,
    cut: AtomicU64,
}

struct Config {
    upstream: String,
    delay: Duration,
    window: usize,
    cut_after: Option<u64>,
    cut_done: AtomicBool,
    stats: Stats,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("delay_proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        return Err("usage: delay_proxy LISTEN UPSTREAM ONE_WAY_MS [--window BYTES] [--cut-after BYTES] [--stats FILE]".into());
    }
    let number = |s: &str, what: &str| s.parse::<u64>().map_err(|e| format!("{what} {s:?}: {e}"));
    let mut window = 4 << 20;
    let mut cut_after = None;
    let mut stats_file = None;
    let mut rest = args[3..].iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--window" => window = number(value, "--window")? as usize,
            "--cut-after" => cut_after = Some(number(value, "--cut-after")?),
            "--stats" => stats_file = Some(value.clone()),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    let listener =
        TcpListener::bind(&args[0]).map_err(|e| format!("listen on {}: {e}", args[0]))?;
    let config = Arc::new(Config {
        upstream: args[1].clone(),
        delay: Duration::from_millis(number(&args[2], "ONE_WAY_MS")?),
        window: window.max(CHUNK),
        cut_after,
        cut_done: AtomicBool::new(false),
        stats: Stats::default(),
    });
    if let Some(path) = stats_file {
        let config = config.clone();
        thread::spawn(move || {
            loop {
                let s = &config.stats;
                let json = format!(
                    "{{\"up_bytes\": {}, \"down_bytes\": {}, \"connections\": {}, \"cut\": {}}}\n",
                    s.up.load(Ordering::Relaxed),
                    s.down.load(Ordering::Relaxed),
                    s.connections.load(Ordering::Relaxed),
                    s.cut.load(Ordering::Relaxed)
                );
                let tmp = format!("{path}.tmp");
                if std::fs::write(&tmp, json).is_ok() {
                    let _ = std::fs::rename(&tmp, &path);
                }
                thread::sleep(Duration::from_secs(1));
            }
        });
    }
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let config = config.clone();
        thread::spawn(move || connection(client, &config));
    }
    Ok(())
}

fn connection(client: TcpStream, config: &Arc<Config>) {
    config.stats.connections.fetch_add(1, Ordering::Relaxed);
    let Ok(upstream) = TcpStream::connect(&config.upstream) else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let carried = Arc::new(AtomicU64::new(0));
    let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    // The client's first bytes wait one round trip more: its handshake.
    let handshake = config.delay * 2;
    let up = {
        let (config, carried) = (config.clone(), carried.clone());
        thread::spawn(move || pump(client, upstream, &config, &carried, handshake, true))
    };
    pump(u2, c2, config, &carried, Duration::ZERO, false);
    let _ = up.join();
}

/// Copies `from` to `to`, each chunk delivered `delay` after it was read.
fn pump(
    mut from: TcpStream,
    to: TcpStream,
    config: &Config,
    carried: &AtomicU64,
    first_extra: Duration,
    upward: bool,
) {
    let (tx, rx) = sync_channel::<(Instant, Vec<u8>)>(config.window / CHUNK);
    let delay = config.delay;
    let writer = {
        let mut to = to.try_clone();
        thread::spawn(move || {
            let Ok(to) = to.as_mut() else { return };
            for (due, data) in rx {
                let now = Instant::now();
                if due > now {
                    thread::sleep(due - now);
                }
                if to.write_all(&data).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        })
    };
    let mut extra = first_extra;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let total = carried.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        let counter = if upward {
            &config.stats.up
        } else {
            &config.stats.down
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(limit) = config.cut_after
            && total >= limit
            && !config.cut_done.swap(true, Ordering::Relaxed)
        {
            config.stats.cut.fetch_add(1, Ordering::Relaxed);
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
            break;
        }
        if tx
            .send((Instant::now() + delay + extra, buf[..n].to_vec()))
            .is_err()
        {
            break;
        }
        extra = Duration::ZERO;
    }
    drop(tx);
    let _ = writer.join();
    let _ = to.shutdown(Shutdown::Write);
}
