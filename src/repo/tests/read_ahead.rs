//! Reading from a remote store: ranges fetched ahead, a bounded number at once, handed out in
//! order, with the same checks and errors as reading inline.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;
use crate::storage::{ObjectInfo, Result as StorageResult};

/// The in-memory store seen as across a network: each ranged read takes a round trip, and
/// the most reads ever in flight at once is kept.
#[derive(Debug)]
struct Distant {
    inner: Arc<MemoryStorage>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

impl Storage for Distant {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn put(&self, key: &str, data: &[u8]) -> StorageResult<()> {
        self.inner.put(key, data)
    }
    fn create(&self, key: &str, data: &[u8]) -> StorageResult<bool> {
        self.inner.create(key, data)
    }
    fn get(&self, key: &str) -> StorageResult<Vec<u8>> {
        self.inner.get(key)
    }
    fn get_range(&self, key: &str, offset: u64, len: u64) -> StorageResult<Vec<u8>> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(5));
        let r = self.inner.get_range(key, offset, len);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        r
    }
    fn stat(&self, key: &str) -> StorageResult<Option<u64>> {
        self.inner.stat(key)
    }
    fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectInfo>> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> StorageResult<()> {
        self.inner.delete(key)
    }
    fn is_remote(&self) -> bool {
        true
    }
}

#[test]
fn a_remote_store_is_read_ahead_in_order_with_a_bounded_number_of_ranges_in_flight() {
    let (mem, repo) = new_repo();
    let big = data(6 << 20, 21);
    let (id, _) = backup(vec![repo], &[("big", &big), ("small", b"tiny")]).unwrap();
    let distant = Arc::new(Distant {
        inner: mem.clone(),
        in_flight: AtomicUsize::new(0),
        most_in_flight: AtomicUsize::new(0),
    });
    let far = Repo::open(distant.clone()).unwrap();
    assert!(restore(&far, &id, "big").unwrap() == big, "bytes differ");
    assert_eq!(restore(&far, &id, "small").unwrap(), b"tiny");
    let most = distant.most_in_flight.load(Ordering::SeqCst);
    assert!(
        (2..=4).contains(&most),
        "{most} ranges were in flight at once"
    );

    // The packs gone: the same error as reading inline, naming the first pack wanted.
    for pack in mem.list("packs/").unwrap() {
        mem.delete(&pack.key).unwrap();
    }
    let far = Repo::open(distant).unwrap();
    let err = restore(&far, &id, "big").unwrap_err();
    assert!(matches!(err, RepoError::Integrity { .. }), "{err}");
    assert!(
        err.to_string().contains("packs/") && err.to_string().contains("missing"),
        "{err}"
    );
}
