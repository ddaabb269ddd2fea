//! Repository locks. Backup, streaming and restore take a shared lock; prune takes an
//! exclusive one. A lock is an object under `locks/`, created with create-if-absent, and
//! refreshed by long-running holders so that a lock whose holder died goes stale.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::error::{RepoError, Result};
use super::manifest;
use crate::storage::Storage;

/// A lock not refreshed for this long belongs to a dead process.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// How often a holder refreshes its lock.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    Shared,
    Exclusive,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockInfo {
    pub id: String,
    pub kind: LockKind,
    pub host: String,
    pub pid: u32,
    pub command: String,
    pub created: DateTime<Utc>,
    pub refreshed: DateTime<Utc>,
}

impl LockInfo {
    /// Stale when not refreshed in time, or when it belongs to a process of this host that
    /// no longer runs.
    pub fn is_stale(&self) -> bool {
        let age = Utc::now().signed_duration_since(self.refreshed);
        if age.to_std().map(|a| a > STALE_AFTER).unwrap_or(false) {
            return true;
        }
        self.host == this_host() && !process_alive(self.pid)
    }

    pub fn describe(&self) -> String {
        format!(
            "{} lock of `{}` (pid {} on {}, since {})",
            match self.kind {
                LockKind::Shared => "a shared",
                LockKind::Exclusive => "an exclusive",
            },
            self.command,
            self.pid,
            self.host,
            self.created.format("%Y-%m-%d %H:%M:%S UTC")
        )
    }
}

pub fn this_host() -> String {
    hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

fn process_alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence.
    let rc = unsafe { libc::kill(pid as i32, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn key(id: &str) -> String {
    format!("locks/{id}")
}

/// A lock object that cannot be read: damaged, or written by a newer myvault in a format this
/// one does not know. Whose it is and whether it is stale cannot be told, so it blocks every
/// other lock (it may be a prune's, or a writer's that a prune must not pass) until
/// `myvault unlock --all` removes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnreadableLock {
    pub key: String,
    pub problem: String,
}

impl UnreadableLock {
    pub fn describe(&self) -> String {
        format!(
            "an unreadable lock object {} ({}; only `myvault unlock --all` removes it)",
            self.key, self.problem
        )
    }
}

/// The lock objects of a store: those that read back, and those that do not.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Locks {
    pub held: Vec<LockInfo>,
    pub unreadable: Vec<UnreadableLock>,
}

impl Locks {
    pub fn is_empty(&self) -> bool {
        self.held.is_empty() && self.unreadable.is_empty()
    }

    /// What stands in the way of a lock of `kind` (`me`: the caller's own lock, which does
    /// not): an unreadable lock, or a live holder that excludes it.
    fn blocker(&self, kind: LockKind, me: Option<&str>) -> Option<String> {
        let excludes = |l: &&LockInfo| {
            Some(l.id.as_str()) != me
                && !l.is_stale()
                && (kind == LockKind::Exclusive || l.kind == LockKind::Exclusive)
        };
        self.unreadable
            .first()
            .map(UnreadableLock::describe)
            .or_else(|| self.held.iter().find(excludes).map(LockInfo::describe))
    }
}

/// Every lock object in the store. A lock released (deleted) between the listing and its read
/// is gone and left out; one that is there but does not decode is listed as unreadable, never
/// dropped; any other failure to read one is an error.
pub fn list(storage: &dyn Storage) -> Result<Locks> {
    let mut locks = Locks::default();
    super::listing::read_listed(storage, "locks/", |key, read| {
        match manifest::decode::<LockInfo>("lock", &read?) {
            Ok(info) => locks.held.push(info),
            Err(problem) => locks.unreadable.push(UnreadableLock {
                key: key.to_string(),
                problem,
            }),
        }
        Ok(())
    })?;
    Ok(locks)
}

/// A held lock; dropping it releases it. While held, a thread refreshes it every
/// [`REFRESH_EVERY`], so a backup or streamer running for days never looks stale.
#[derive(Debug)]
pub struct LockGuard {
    storage: Arc<dyn Storage>,
    info: LockInfo,
    released: bool,
    refresher: Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
}

/// Rewrites the lock with a new `refreshed` time until told to stop (or the sender is gone).
fn spawn_refresher(
    storage: Arc<dyn Storage>,
    mut info: LockInfo,
    every: Duration,
) -> Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("lock-refresh".into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                info.refreshed = Utc::now();
                // A failed refresh is retried at the next tick; the lock only goes stale
                // after STALE_AFTER without one.
                let _ = storage.put(&key(&info.id), &manifest::encode("lock", &info));
            }
        })
        .ok()?;
    Some((tx, handle))
}

impl LockGuard {
    pub fn acquire(storage: Arc<dyn Storage>, kind: LockKind, command: &str) -> Result<LockGuard> {
        let locked = |holder: String| RepoError::Locked {
            store: storage.name().to_string(),
            holder,
        };
        if let Some(holder) = list(storage.as_ref())?.blocker(kind, None) {
            return Err(locked(holder));
        }
        let now = Utc::now();
        let info = LockInfo {
            id: super::config::random_hex(8),
            kind,
            host: this_host(),
            pid: std::process::id(),
            command: command.to_string(),
            created: now,
            refreshed: now,
        };
        if !storage.create(&key(&info.id), &manifest::encode("lock", &info))? {
            return Err(RepoError::Invalid("lock id collision; try again".into()));
        }
        let mut guard = LockGuard {
            storage: storage.clone(),
            info,
            released: false,
            refresher: None,
        };
        // Someone may have locked between our check and our create: check again, now that
        // our own lock is visible to them too.
        if let Some(holder) = list(storage.as_ref())?.blocker(kind, Some(&guard.info.id)) {
            return Err(locked(holder));
        }
        guard.refresher = spawn_refresher(storage.clone(), guard.info.clone(), REFRESH_EVERY);
        Ok(guard)
    }

    /// Stops refreshing before the lock is deleted, so no refresh can recreate it.
    fn stop_refresher(&mut self) {
        if let Some((tx, handle)) = self.refresher.take() {
            drop(tx);
            let _ = handle.join();
        }
    }

    pub fn info(&self) -> &LockInfo {
        &self.info
    }

    pub fn release(mut self) -> Result<()> {
        self.stop_refresher();
        self.released = true;
        self.storage.delete(&key(&self.info.id))?;
        Ok(())
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.stop_refresher();
        if !self.released {
            let _ = self.storage.delete(&key(&self.info.id));
        }
    }
}

/// Removes stale locks (or all locks with `all`, unreadable ones too), returning what was
/// removed.
pub fn break_locks(storage: &dyn Storage, all: bool) -> Result<Locks> {
    let found = list(storage)?;
    let removed = Locks {
        held: found
            .held
            .into_iter()
            .filter(|l| all || l.is_stale())
            .collect(),
        unreadable: if all { found.unreadable } else { Vec::new() },
    };
    let keys: Vec<String> = (removed.held.iter().map(|l| key(&l.id)))
        .chain(removed.unreadable.iter().map(|u| u.key.clone()))
        .collect();
    storage.delete_many(&keys)?;
    Ok(removed)
}

#[cfg(any(test, feature = "failpoints"))]
const LISTINGS_PER_ROUND: usize = 10;
/// Live shared locks of other hosts that stay through the test: a listing then takes long
/// enough (one read per lock) that the streamer's lock often goes while it runs.
#[cfg(any(test, feature = "failpoints"))]
const OTHER_HOLDERS: usize = 32;

/// Takes and drops a shared lock `rounds` times (as each backup does) while another thread
/// takes and drops one as fast as it can (as the streamer does for each upload), then lists
/// and breaks stale locks. The first error of either side is returned. Used by the unit tests
/// here and by the S3 test in tests/it: every backend must let locks come and go this way.
#[cfg(any(test, feature = "failpoints"))]
pub fn contend_beside_a_streamer(storage: Arc<dyn Storage>, rounds: usize) -> Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let others: Vec<LockInfo> = (0..OTHER_HOLDERS)
        .map(|n| LockInfo {
            id: format!("other-{n}"),
            kind: LockKind::Shared,
            host: format!("elsewhere-{n}"),
            pid: 1,
            command: "backup".into(),
            created: Utc::now(),
            refreshed: Utc::now(),
        })
        .collect();
    for l in &others {
        storage.put(&key(&l.id), &manifest::encode("lock", l))?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let streamer = {
        let (storage, stop) = (storage.clone(), stop.clone());
        std::thread::spawn(move || -> Result<usize> {
            let mut uploads = 0;
            while !stop.load(Ordering::Relaxed) {
                LockGuard::acquire(storage.clone(), LockKind::Shared, "binlog stream")?
                    .release()?;
                uploads += 1;
            }
            Ok(uploads)
        })
    };
    let backups = (0..rounds).try_for_each(|_| {
        LockGuard::acquire(storage.clone(), LockKind::Shared, "backup")?.release()?;
        // Listings are cheap next to taking a lock (no fsync): many of them meet a release.
        for _ in 0..LISTINGS_PER_ROUND {
            list(storage.as_ref())?;
        }
        break_locks(storage.as_ref(), false).map(drop)
    });
    stop.store(true, Ordering::Relaxed);
    let uploads = streamer
        .join()
        .map_err(|_| RepoError::Invalid("the streamer thread panicked".into()))??;
    backups?;
    let mut kept = list(storage.as_ref())?;
    kept.held
        .sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
    if kept.held != others || !kept.unreadable.is_empty() {
        return Err(RepoError::Invalid(format!(
            "the other holders' locks did not stay as they were: {kept:?}"
        )));
    }
    break_locks(storage.as_ref(), true)?;
    if uploads == 0 {
        return Err(RepoError::Invalid(
            "the streamer thread never took its lock: nothing contended".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStorage;

    #[test]
    fn shared_locks_coexist_and_exclusive_excludes() {
        let s: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let a = LockGuard::acquire(s.clone(), LockKind::Shared, "backup").unwrap();
        let b = LockGuard::acquire(s.clone(), LockKind::Shared, "stream").unwrap();
        let err = LockGuard::acquire(s.clone(), LockKind::Exclusive, "prune").unwrap_err();
        assert!(matches!(err, RepoError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("pid"), "{err}");
        drop(a);
        b.release().unwrap();
        let x = LockGuard::acquire(s.clone(), LockKind::Exclusive, "prune").unwrap();
        assert!(LockGuard::acquire(s.clone(), LockKind::Shared, "backup").is_err());
        drop(x);
        assert!(
            list(s.as_ref()).unwrap().is_empty(),
            "dropped guards remove their locks"
        );
    }

    #[test]
    fn a_held_lock_is_refreshed_and_never_recreated_after_release() {
        let s: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let mut guard = LockGuard::acquire(s.clone(), LockKind::Shared, "stream").unwrap();
        guard.stop_refresher();
        let first = list(s.as_ref()).unwrap().held[0].refreshed;
        guard.refresher = spawn_refresher(s.clone(), guard.info.clone(), Duration::from_millis(10));
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            list(s.as_ref()).unwrap().held[0].refreshed > first,
            "not refreshed"
        );
        guard.release().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            list(s.as_ref()).unwrap().is_empty(),
            "a refresh recreated the lock"
        );
    }

    #[test]
    fn dead_holder_is_stale_and_can_be_broken() {
        let s: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let mut info = LockInfo {
            id: "dead".into(),
            kind: LockKind::Exclusive,
            host: this_host(),
            pid: u32::MAX - 1,
            command: "prune".into(),
            created: Utc::now(),
            refreshed: Utc::now(),
        };
        s.put("locks/dead", &manifest::encode("lock", &info))
            .unwrap();
        // A dead pid on this host does not block.
        LockGuard::acquire(s.clone(), LockKind::Shared, "backup").unwrap();
        // A live holder elsewhere does, until its lock is old.
        info.host = "elsewhere".into();
        s.put("locks/dead", &manifest::encode("lock", &info))
            .unwrap();
        assert!(LockGuard::acquire(s.clone(), LockKind::Shared, "backup").is_err());
        assert!(break_locks(s.as_ref(), false).unwrap().is_empty());
        info.refreshed = Utc::now() - chrono::Duration::hours(1);
        s.put("locks/dead", &manifest::encode("lock", &info))
            .unwrap();
        assert_eq!(break_locks(s.as_ref(), false).unwrap().held.len(), 1);
        assert!(list(s.as_ref()).unwrap().is_empty());
    }

    /// A backup beside `binlog stream` failed with `locks/<id> not found` (exit 10): the local
    /// store listed `locks/`, the streamer released its per-upload lock, and the listing's
    /// stat of that file failed.
    #[test]
    fn a_lock_released_while_another_process_lists_locks_is_gone_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let local = crate::storage::local::LocalStorage::create(dir.path().join("r")).unwrap();
        contend_beside_a_streamer(Arc::new(local), 150).unwrap();
        contend_beside_a_streamer(Arc::new(MemoryStorage::new()), 150).unwrap();
    }

    /// A lock object that did not decode was silently left out of the listing, so it blocked
    /// nothing: a damaged (or newer-format) exclusive lock would have let a backup run beside
    /// the prune that holds it, and a damaged shared lock a prune beside its writer.
    #[test]
    fn an_unreadable_lock_blocks_every_lock_until_unlock_all_removes_it() {
        let s: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        s.put("locks/0badc0de", b"MYVAULT lock 2 sha256=00\n{}\n")
            .unwrap();
        for kind in [LockKind::Shared, LockKind::Exclusive] {
            let err = LockGuard::acquire(s.clone(), kind, "backup").unwrap_err();
            assert!(matches!(err, RepoError::Locked { .. }), "{err}");
            let msg = err.to_string();
            assert!(msg.contains("locks/0badc0de"), "{msg}");
            assert!(msg.contains("unsupported lock format version 2"), "{msg}");
            assert!(msg.contains("unlock --all"), "{msg}");
        }
        assert!(
            break_locks(s.as_ref(), false).unwrap().is_empty(),
            "not known to be stale: kept"
        );
        assert_eq!(list(s.as_ref()).unwrap().unreadable.len(), 1);
        let removed = break_locks(s.as_ref(), true).unwrap();
        assert_eq!(removed.unreadable[0].key, "locks/0badc0de");
        assert!(list(s.as_ref()).unwrap().is_empty());
        LockGuard::acquire(s.clone(), LockKind::Exclusive, "prune").unwrap();
    }
}
