//! Transfers to and from S3 that lose their connection in the middle (issue 20 item 3): a
//! download continues from the byte it reached, an upload sends again only the part whose
//! connection dropped, an upload that fails for good leaves no parts, and a process killed in
//! the middle of an upload leaves no visible object. A TCP forwarder in front of s3s-fs counts
//! the bytes each way, notes the ranges asked for, and cuts connections.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use myvault::storage::retry::Retry;
use myvault::storage::s3::S3Storage;
use myvault::storage::{OpenOptions, Storage};

use crate::faults::env_with;
use crate::storage_s3::aws_env;
use crate::support::s3::S3Server;
use crate::support::{Background, Scratch, failpoints, myvault_env};

/// Which connections the forwarder cuts.
#[derive(Clone, Copy)]
enum Cut {
    /// The first connection to carry this many bytes from the server, once.
    DownOnce(u64),
    /// Whichever connection carries the byte to the server that brings the total of all
    /// connections to this many, once.
    UpTotalOnce(u64),
    /// Every connection that carries more than this many bytes to the server.
    UpEvery(u64),
}

struct Counters {
    cut: Cut,
    cut_done: AtomicBool,
    cuts: AtomicU64,
    up: AtomicU64,
    down: AtomicU64,
    /// The `Range` header of every request, in the order they came.
    ranges: Mutex<Vec<String>>,
}

struct CutProxy {
    port: u16,
    counters: Arc<Counters>,
}

impl CutProxy {
    fn start(upstream_port: u16, cut: Cut) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let counters = Arc::new(Counters {
            cut,
            cut_done: AtomicBool::new(false),
            cuts: AtomicU64::new(0),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            ranges: Mutex::new(Vec::new()),
        });
        let c = counters.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
                    continue;
                };
                let pair = [client, server];
                let (Ok(a), Ok(b)) = (pair[0].try_clone(), pair[1].try_clone()) else {
                    continue;
                };
                let (c1, c2) = (c.clone(), c.clone());
                let both: Arc<[TcpStream; 2]> = Arc::new(pair);
                let both2 = both.clone();
                std::thread::spawn(move || pump(a, &both, true, &c1));
                std::thread::spawn(move || pump(b, &both2, false, &c2));
            }
        });
        CutProxy { port, counters }
    }

    fn options(&self) -> OpenOptions {
        OpenOptions {
            s3_endpoint: Some(format!("http://127.0.0.1:{}", self.port)),
            ..OpenOptions::default()
        }
    }

    fn up(&self) -> u64 {
        self.counters.up.load(Ordering::SeqCst)
    }

    fn down(&self) -> u64 {
        self.counters.down.load(Ordering::SeqCst)
    }

    fn cuts(&self) -> u64 {
        self.counters.cuts.load(Ordering::SeqCst)
    }

    fn ranges(&self) -> Vec<String> {
        self.counters.ranges.lock().unwrap().clone()
    }
}

/// Copies `from` to the other end of `both` (client to server when `up`), cutting both
/// connections where the rule says.
fn pump(mut from: TcpStream, both: &[TcpStream; 2], up: bool, c: &Counters) {
    let mut to = &both[usize::from(up)];
    let mut buf = vec![0u8; 64 * 1024];
    let mut carried = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if up {
            note_ranges(&buf[..n], c);
        }
        let total = if up { &c.up } else { &c.down };
        let before = total.fetch_add(n as u64, Ordering::SeqCst);
        let cut_at = match c.cut {
            Cut::DownOnce(after) if !up && carried + n as u64 >= after => {
                (!c.cut_done.swap(true, Ordering::SeqCst)).then(|| after.saturating_sub(carried))
            }
            Cut::UpTotalOnce(after) if up && before < after && before + n as u64 >= after => {
                (!c.cut_done.swap(true, Ordering::SeqCst)).then(|| after - before)
            }
            Cut::UpEvery(after) if up && carried + n as u64 > after => Some(after - carried),
            _ => None,
        };
        let forward = cut_at.map_or(n, |k| k as usize);
        total.fetch_sub((n - forward) as u64, Ordering::SeqCst);
        carried += forward as u64;
        if to.write_all(&buf[..forward]).is_err() {
            break;
        }
        if cut_at.is_some() {
            c.cuts.fetch_add(1, Ordering::SeqCst);
            for s in both {
                let _ = s.shutdown(Shutdown::Both);
            }
            return;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn note_ranges(bytes: &[u8], c: &Counters) {
    let text = String::from_utf8_lossy(bytes).to_ascii_lowercase();
    for (at, _) in text.match_indices("\r\nrange: ") {
        let rest = &text[at + 9..];
        let value = rest.split("\r\n").next().unwrap_or_default();
        c.ranges.lock().unwrap().push(value.to_string());
    }
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The parts of multipart uploads not completed nor aborted (s3s-fs keeps each as
/// `.upload_id-<id>.part-<n>` in its root).
fn parts_left(root: &Path) -> usize {
    std::fs::read_dir(root)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".upload_id-"))
        .count()
}

const MIB: u64 = 1024 * 1024;

#[test]
fn a_download_cut_in_the_middle_resumes_from_the_byte_reached() {
    let s3 = S3Server::start();
    let direct = S3Storage::open(&s3.repo("resume-down"), &aws_env(&s3)).expect("open s3");
    let data = pseudo_random(8 << 20, 7);
    direct.put("object", &data).unwrap();

    let proxy = CutProxy::start(s3.port, Cut::DownOnce(3 * MIB));
    let far = S3Storage::open(&s3.repo("resume-down"), &proxy.options()).expect("open s3");
    let far = Retry::with_policy(far, 5, Duration::from_millis(10));
    let got = far.get_range("object", 0, data.len() as u64).unwrap();
    assert!(got == data, "the bytes read differ from the object");
    assert_eq!(proxy.cuts(), 1, "the connection was cut once");

    let ranges = proxy.ranges();
    let end = data.len() - 1;
    assert_eq!(ranges.len(), 2, "one request and one retry: {ranges:?}");
    assert_eq!(ranges[0], format!("bytes=0-{end}"));
    let resumed_at: u64 = ranges[1]
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix(&format!("-{end}")))
        .and_then(|from| from.parse().ok())
        .unwrap_or_else(|| panic!("the retry asked for {:?}", ranges[1]));
    assert!(
        (2 * MIB..3 * MIB).contains(&resumed_at),
        "the retry asked from byte {resumed_at}, not from the byte reached"
    );
    // What came down beyond the object: the responses' headers only.
    let resent = proxy.down() - data.len() as u64;
    eprintln!(
        "download cut after 3 MiB: resumed at byte {resumed_at}, {resent} bytes beyond the object"
    );
    assert!(resent < 64 * 1024, "{resent} bytes came down twice");
}

#[test]
fn an_upload_cut_inside_a_part_sends_that_part_again_only() {
    let s3 = S3Server::start();
    let direct = S3Storage::open(&s3.repo("resume-up"), &aws_env(&s3)).expect("open s3");
    // A pack's size: uploaded in three parts of 5.3 MiB.
    let data = pseudo_random(16 << 20, 11);
    let part = data.len().div_ceil(3) as u64;

    let proxy = CutProxy::start(s3.port, Cut::UpTotalOnce(12 * MIB));
    let far = S3Storage::open(&s3.repo("resume-up"), &proxy.options()).expect("open s3");
    far.put("pack", &data).unwrap();
    assert_eq!(proxy.cuts(), 1, "the connection was cut once");
    assert!(
        direct.get("pack").unwrap() == data,
        "the object differs from what was put"
    );
    assert_eq!(parts_left(&s3.dir.path), 0, "parts left behind");
    // Bytes sent beyond the object: the cut part's bytes before the cut, and headers.
    let resent = proxy.up() - data.len() as u64;
    eprintln!(
        "upload cut at 12 MiB of 16 MiB: {resent} bytes sent beyond the object (a part is {part})"
    );
    assert!(
        resent < part + 256 * 1024,
        "{resent} bytes sent again: more than the one part cut"
    );
}

#[test]
fn an_upload_that_fails_for_good_is_aborted_and_leaves_no_parts() {
    let s3 = S3Server::start();
    let direct = S3Storage::open(&s3.repo("abort"), &aws_env(&s3)).expect("open s3");
    let data = pseudo_random(16 << 20, 13);
    // Every connection dies after 1 MiB: no part of 5 MiB ever arrives; the small requests
    // (start, abort) do.
    let proxy = CutProxy::start(s3.port, Cut::UpEvery(MIB));
    let far = S3Storage::open(&s3.repo("abort"), &proxy.options()).expect("open s3");
    let started = Instant::now();
    let err = far.put("pack", &data).expect_err("no part can arrive");
    assert!(err.is_transient(), "{err}");
    assert!(proxy.cuts() >= 3, "{} connections cut", proxy.cuts());
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        parts_left(&s3.dir.path),
        0,
        "the failed upload was not aborted"
    );
    assert_eq!(direct.stat("pack").unwrap(), None);
}

#[test]
fn a_backup_killed_in_the_middle_of_a_multipart_upload_leaves_no_visible_object() {
    let s3 = S3Server::start();
    let env = s3.env();
    let dir = Scratch::new("s3kill");
    let repo = s3.repo("killed");
    myvault_env(&["init", "--repo", &repo], &env_with(&env, &[])).expect_code(0);
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("big"), pseudo_random(20 << 20, 17)).unwrap();
    let path = data.to_str().unwrap();
    let args = ["backup", "--path", path, "--repo", &repo, "--json"];

    // Killed (as by kill -9) when the first pack's second part is stored.
    let kill = [failpoints("store-s3-after-part=abort(2)")];
    let run = Background::start(&args, &env_with(&env, &kill)).finish();
    assert_ne!(run.code, 0, "the backup was not killed: {}", run.stderr);
    assert!(
        parts_left(&s3.dir.path) >= 2,
        "the kill did not land inside a multipart upload"
    );
    let store = S3Storage::open(&repo, &aws_env(&s3)).expect("open s3");
    let big: Vec<_> = store
        .list("")
        .unwrap()
        .into_iter()
        .filter(|o| o.size >= 10 * MIB)
        .collect();
    assert!(big.is_empty(), "a half-uploaded object is visible: {big:?}");

    // The rerun completes, and the repository verifies clean.
    let rerun = myvault_env(&args, &env_with(&env, &[]));
    assert_eq!(rerun.code, 0, "{}", rerun.stderr);
    myvault_env(&["verify", "--repo", &repo], &env_with(&env, &[])).expect_code(0);
}
