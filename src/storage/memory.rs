//! An in-memory store for unit tests, with failure injection.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{ObjectInfo, Result, Storage, StorageError, validate_key};

#[derive(Debug, Default)]
pub struct MemoryStorage {
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
    /// When non-zero, every write after this many more writes fails as `Unavailable`.
    fail_writes_after: AtomicU64,
    writes: AtomicU64,
}

impl MemoryStorage {
    pub fn new() -> MemoryStorage {
        MemoryStorage::default()
    }

    /// Makes writes fail once `n` more have succeeded, as an unreachable store would.
    pub fn fail_writes_after(&self, n: u64) {
        self.fail_writes_after
            .store(self.writes.load(Ordering::SeqCst) + n + 1, Ordering::SeqCst);
    }

    /// Total bytes stored.
    pub fn bytes(&self) -> u64 {
        self.lock().values().map(|v| v.len() as u64).sum()
    }

    /// Replaces an object's bytes behind the store's back, to simulate damage.
    pub fn tamper(&self, key: &str, f: impl FnOnce(&mut Vec<u8>)) {
        if let Some(v) = self.lock().get_mut(key) {
            f(v);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        // A panic while holding the lock leaves the map consistent (every update is one insert).
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count_write(&self) -> Result<()> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        let limit = self.fail_writes_after.load(Ordering::SeqCst);
        if limit != 0 && n >= limit {
            return Err(StorageError::Unavailable {
                store: self.name().to_string(),
                detail: "injected write failure".into(),
            });
        }
        Ok(())
    }

    fn not_found(&self, key: &str) -> StorageError {
        StorageError::NotFound {
            store: self.name().to_string(),
            key: key.to_string(),
        }
    }
}

impl Storage for MemoryStorage {
    fn name(&self) -> &str {
        "memory"
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        validate_key(self.name(), key)?;
        self.count_write()?;
        self.lock().insert(key.to_string(), data.to_vec());
        Ok(())
    }

    fn create(&self, key: &str, data: &[u8]) -> Result<bool> {
        validate_key(self.name(), key)?;
        self.count_write()?;
        let mut map = self.lock();
        if map.contains_key(key) {
            return Ok(false);
        }
        map.insert(key.to_string(), data.to_vec());
        Ok(true)
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        validate_key(self.name(), key)?;
        self.lock()
            .get(key)
            .cloned()
            .ok_or_else(|| self.not_found(key))
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        validate_key(self.name(), key)?;
        let map = self.lock();
        let data = map.get(key).ok_or_else(|| self.not_found(key))?;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let end = start
            .saturating_add(usize::try_from(len).unwrap_or(usize::MAX))
            .min(data.len());
        Ok(data[start..end].to_vec())
    }

    fn stat(&self, key: &str) -> Result<Option<u64>> {
        validate_key(self.name(), key)?;
        Ok(self.lock().get(key).map(|v| v.len() as u64))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        Ok(self
            .lock()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| ObjectInfo {
                key: k.clone(),
                size: v.len() as u64,
            })
            .collect())
    }

    fn delete(&self, key: &str) -> Result<()> {
        validate_key(self.name(), key)?;
        self.count_write()?;
        self.lock().remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_the_shared_backend_suite() {
        crate::storage::conformance::run_all(&MemoryStorage::new());
    }

    #[test]
    fn injected_failures_are_transient() {
        let m = MemoryStorage::new();
        m.fail_writes_after(1);
        m.put("a", b"1").unwrap();
        let err = m.put("b", b"2").unwrap_err();
        assert!(err.is_transient());
    }
}
