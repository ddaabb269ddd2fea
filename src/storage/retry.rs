//! Retries with exponential backoff and jitter for failures that may pass (network errors,
//! timeouts, 5xx), so one dropped connection does not fail a backup of hours.

use std::time::Duration;

use super::{ObjectInfo, Result, Storage};

#[derive(Debug)]
pub struct Retry<S> {
    inner: S,
    attempts: u32,
    base: Duration,
}

impl<S: Storage> Retry<S> {
    pub fn new(inner: S) -> Retry<S> {
        Retry {
            inner,
            attempts: 5,
            base: Duration::from_millis(500),
        }
    }

    pub fn with_policy(inner: S, attempts: u32, base: Duration) -> Retry<S> {
        Retry {
            inner,
            attempts: attempts.max(1),
            base,
        }
    }

    fn run<T>(&self, mut op: impl FnMut(&S) -> Result<T>) -> Result<T> {
        let mut delay = self.base;
        let mut attempt = 1;
        loop {
            match op(&self.inner) {
                Err(e) if e.is_transient() && attempt < self.attempts => {
                    let jitter = Duration::from_millis(
                        u64::from(rand::random::<u16>()) % (delay.as_millis() as u64 / 2 + 1),
                    );
                    std::thread::sleep(delay + jitter);
                    delay = (delay * 2).min(Duration::from_secs(30));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

impl<S: Storage> Storage for Retry<S> {
    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        self.run(|s| s.put(key, data))
    }

    /// A create whose response was lost may have succeeded: a retry then finds the object.
    /// When it holds exactly our bytes, that is our own create, and it counts as done.
    fn create(&self, key: &str, data: &[u8]) -> Result<bool> {
        let mut retried = false;
        self.run(|s| {
            let r = s.create(key, data);
            let first = !retried;
            retried = true;
            match r {
                Ok(false) if !first => match s.get(key) {
                    Ok(existing) if existing == data => Ok(true),
                    Ok(_) => Ok(false),
                    Err(e) => Err(e),
                },
                other => other,
            }
        })
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.run(|s| s.get(key))
    }

    /// A transfer that breaks after some bytes continues from the byte reached: the retry asks
    /// for the rest of the range only.
    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.get_range_into(key, offset, len, &mut buf)?;
        Ok(buf)
    }

    fn get_range_into(&self, key: &str, offset: u64, len: u64, buf: &mut Vec<u8>) -> Result<()> {
        let had = buf.len() as u64;
        self.run(|s| {
            let got = (buf.len() as u64 - had).min(len);
            s.get_range_into(key, offset + got, len - got, buf)
        })
    }

    fn stat(&self, key: &str) -> Result<Option<u64>> {
        self.run(|s| s.stat(key))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.run(|s| s.list(prefix))
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.run(|s| s.delete(key))
    }

    fn delete_many(&self, keys: &[String]) -> Result<()> {
        self.run(|s| s.delete_many(keys))
    }

    fn leftovers(&self, age: Duration) -> Result<Vec<ObjectInfo>> {
        self.run(|s| s.leftovers(age))
    }

    fn remove_leftovers(&self, keys: &[String]) -> Result<()> {
        self.run(|s| s.remove_leftovers(keys))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStorage;

    #[test]
    fn transient_failures_are_retried_and_permanent_ones_are_not() {
        let m = MemoryStorage::new();
        m.fail_writes_after(0);
        let r = Retry::with_policy(m, 3, Duration::from_millis(1));
        // Every write fails: after the attempts, the error comes through.
        assert!(r.put("a", b"1").unwrap_err().is_transient());
        let r = Retry::with_policy(MemoryStorage::new(), 3, Duration::from_millis(1));
        assert!(r.get("missing").unwrap_err().is_not_found());
        r.put("a", b"1").unwrap();
        assert!(r.create("b", b"2").unwrap());
        assert!(!r.create("b", b"3").unwrap());
    }

    #[test]
    fn passes_the_shared_backend_suite() {
        crate::storage::conformance::run_all(&Retry::new(MemoryStorage::new()));
    }
}
