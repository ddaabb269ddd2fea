//! `--max-rate`: a token bucket that limits how fast a backup reads its source, shared by
//! every stream the writer reads (all dump connections, all files of a clone), so the limit
//! is on the sum, whatever the parallelism.
//!
//! The bucket holds at most a quarter of a second of tokens: after an idle moment a reader
//! may go that much ahead, never more. A read first takes its bytes, going into debt, then
//! sleeps (outside the lock) until the debt would be paid: so a backup of N bytes at rate R
//! takes at least N / R seconds less that quarter second.

use std::io::{self, Read};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A shared limit of `rate` bytes per second.
#[derive(Debug)]
pub struct Throttle {
    rate: f64,
    burst: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Negative: bytes taken ahead of the rate, which someone sleeps off.
    tokens: f64,
    refilled: Instant,
}

/// The share of a second the bucket may hold.
const BURST: f64 = 0.25;

impl Throttle {
    /// A limit of `bytes_per_second` (at least 1).
    pub fn new(bytes_per_second: u64) -> Arc<Throttle> {
        let rate = bytes_per_second.max(1) as f64;
        Arc::new(Throttle {
            rate,
            burst: rate * BURST,
            state: Mutex::new(Bucket {
                tokens: rate * BURST,
                refilled: Instant::now(),
            }),
        })
    }

    /// Bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate as u64
    }

    /// Accounts for `bytes` read, sleeping as long as the rate needs.
    pub fn take(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let wait = {
            let mut b = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let refill = now.duration_since(b.refilled).as_secs_f64() * self.rate;
            b.tokens = (b.tokens + refill).min(self.burst) - bytes as f64;
            b.refilled = now;
            (b.tokens < 0.0).then(|| Duration::from_secs_f64(-b.tokens / self.rate))
        };
        if let Some(wait) = wait {
            std::thread::sleep(wait);
        }
    }
}

/// A reader whose reads are paced by a [`Throttle`].
pub struct Throttled<R> {
    inner: R,
    throttle: Arc<Throttle>,
}

impl<R> Throttled<R> {
    pub fn new(inner: R, throttle: Arc<Throttle>) -> Self {
        Throttled { inner, throttle }
    }
}

impl<R: Read> Read for Throttled<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.throttle.take(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_sharing_a_throttle_read_at_its_rate_together() {
        let throttle = Throttle::new(4 << 20);
        let started = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..3 {
                let t = throttle.clone();
                s.spawn(move || {
                    let mut r = Throttled::new(io::repeat(7).take(1 << 20), t);
                    io::copy(&mut r, &mut io::sink()).unwrap();
                });
            }
        });
        // 3 MiB at 4 MiB/s: at least 0.75 s less the quarter second of burst.
        let took = started.elapsed().as_secs_f64();
        assert!(took >= 0.5, "{took} s");
        assert!(took < 5.0, "{took} s");
    }
}
