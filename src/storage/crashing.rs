//! A store that "dies" after a given number of operations, for crash tests in-process: the
//! operation at which the clock runs out fails, every later one fails too, until the test
//! revives the clock (the process "restarts": the test drops what it had open and opens the
//! repository again). A write that dies may or may not have happened, as with a real kill
//! between an object store applying a request and its caller seeing the answer: the clock
//! decides, from its seed.
//!
//! One [`Clock`] is shared by every store of a "process", so a kill stops them all at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{ObjectInfo, Result, StagedObject, Storage, StorageError};
use crate::test_rng::XorShift64;

pub struct Clock {
    state: Mutex<ClockState>,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("Clock")
            .field("left", &s.left)
            .field("dead", &s.dead)
            .finish_non_exhaustive()
    }
}

struct ClockState {
    /// Operations left before the kill; `None`: no kill armed.
    left: Option<u64>,
    dead: bool,
    rng: XorShift64,
    /// Operations done since the clock was made (all stores).
    ops: u64,
}

/// What an operation may do.
enum Tick {
    Live,
    /// This operation is the one the kill interrupts; a write is applied or not, as `apply`.
    Killed {
        apply: bool,
    },
    Dead,
}

impl Clock {
    pub fn new(seed: u64) -> Arc<Clock> {
        Arc::new(Clock {
            state: Mutex::new(ClockState {
                left: None,
                dead: false,
                rng: XorShift64::new(seed | 1),
                ops: 0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ClockState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Kills the process at its `ops`-th operation from now (0: the next one).
    pub fn arm(&self, ops: u64) {
        self.lock().left = Some(ops);
    }

    pub fn disarm(&self) {
        self.lock().left = None;
    }

    /// Whether a kill happened (and the process is still dead).
    pub fn killed(&self) -> bool {
        self.lock().dead
    }

    /// The process starts again: nothing armed, every store works.
    pub fn revive(&self) {
        let mut s = self.lock();
        s.dead = false;
        s.left = None;
    }

    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    fn tick(&self) -> Tick {
        let mut s = self.lock();
        s.ops += 1;
        if s.dead {
            return Tick::Dead;
        }
        match s.left {
            Some(0) => {
                s.dead = true;
                s.left = None;
                let apply = s.rng.next_u64().is_multiple_of(2);
                Tick::Killed { apply }
            }
            Some(n) => {
                s.left = Some(n - 1);
                Tick::Live
            }
            None => Tick::Live,
        }
    }
}

/// `inner`, subject to `clock`.
#[derive(Debug)]
pub struct CrashingStorage {
    inner: Arc<dyn Storage>,
    clock: Arc<Clock>,
    /// Writes tried through this view (done, killed or refused).
    writes: AtomicU64,
}

impl CrashingStorage {
    pub fn new(inner: Arc<dyn Storage>, clock: Arc<Clock>) -> CrashingStorage {
        CrashingStorage {
            inner,
            clock,
            writes: AtomicU64::new(0),
        }
    }

    /// Writes tried so far: unchanged, the store is as it was.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    fn killed(&self) -> StorageError {
        StorageError::Unavailable {
            store: self.inner.name().to_string(),
            detail: "the process was killed (simulated)".into(),
        }
    }

    fn read<T>(&self, op: impl FnOnce(&dyn Storage) -> Result<T>) -> Result<T> {
        match self.clock.tick() {
            Tick::Live => op(&*self.inner),
            _ => Err(self.killed()),
        }
    }

    fn write<T>(&self, op: impl FnOnce(&dyn Storage) -> Result<T>) -> Result<T> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        match self.clock.tick() {
            Tick::Live => op(&*self.inner),
            Tick::Killed { apply } => {
                if apply {
                    let _ = op(&*self.inner);
                }
                Err(self.killed())
            }
            Tick::Dead => Err(self.killed()),
        }
    }
}

impl Storage for CrashingStorage {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        self.write(|s| s.put(key, data))
    }

    fn create(&self, key: &str, data: &[u8]) -> Result<bool> {
        self.write(|s| s.create(key, data))
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.read(|s| s.get(key))
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.read(|s| s.get_range(key, offset, len))
    }

    fn stat(&self, key: &str) -> Result<Option<u64>> {
        self.read(|s| s.stat(key))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.read(|s| s.list(prefix))
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.write(|s| s.delete(key))
    }

    // One operation per key: a kill can stop a batch halfway.
    fn delete_many(&self, keys: &[String]) -> Result<()> {
        keys.iter().try_for_each(|k| self.delete(k))
    }

    fn leftovers(&self, age: Duration) -> Result<Vec<ObjectInfo>> {
        self.read(|s| s.leftovers(age))
    }

    fn remove_leftovers(&self, keys: &[String]) -> Result<()> {
        self.write(|s| s.remove_leftovers(keys))
    }

    fn can_stage(&self) -> bool {
        self.inner.can_stage()
    }

    fn stage(&self, dir: &str) -> Result<Option<Box<dyn StagedObject>>> {
        let staged = self.read(|s| s.stage(dir))?;
        Ok(staged.map(|inner| {
            Box::new(CrashingStaged {
                inner,
                store: CrashingStorage::new(self.inner.clone(), self.clock.clone()),
            }) as Box<dyn StagedObject>
        }))
    }
}

/// A staged object whose parts and commit are operations of the clock.
struct CrashingStaged {
    inner: Box<dyn StagedObject>,
    store: CrashingStorage,
}

impl StagedObject for CrashingStaged {
    fn append(&mut self, part: &[u8]) -> Result<()> {
        let inner = &mut self.inner;
        self.store.write(|_| inner.append(part))
    }

    fn commit(self: Box<Self>, key: &str) -> Result<()> {
        let CrashingStaged { inner, store } = *self;
        store.write(|_| inner.commit(key))
    }
}
