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

/// Every lock in the store, with the keys of unreadable lock objects.
pub fn list(storage: &dyn Storage) -> Result<Vec<LockInfo>> {
    let mut out = Vec::new();
    for obj in storage.list("locks/")? {
        match storage.get(&obj.key) {
            Ok(data) => {
                if let Ok(info) = manifest::decode::<LockInfo>("lock", &data) {
                    out.push(info);
                }
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
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
        let conflicting = |l: &LockInfo, me: Option<&str>| {
            Some(l.id.as_str()) != me
                && !l.is_stale()
                && (kind == LockKind::Exclusive || l.kind == LockKind::Exclusive)
        };
        let locked = |l: &LockInfo| RepoError::Locked {
            store: storage.name().to_string(),
            holder: l.describe(),
        };
        if let Some(l) = list(storage.as_ref())?
            .iter()
            .find(|l| conflicting(l, None))
        {
            return Err(locked(l));
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
        if let Some(l) = list(storage.as_ref())?
            .iter()
            .find(|l| conflicting(l, Some(&guard.info.id)))
        {
            return Err(locked(l));
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

/// Removes stale locks (or all locks with `all`), returning what was removed.
pub fn break_locks(storage: &dyn Storage, all: bool) -> Result<Vec<LockInfo>> {
    let mut removed = Vec::new();
    for l in list(storage)? {
        if all || l.is_stale() {
            storage.delete(&key(&l.id))?;
            removed.push(l);
        }
    }
    Ok(removed)
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
        let first = list(s.as_ref()).unwrap()[0].refreshed;
        guard.refresher = spawn_refresher(s.clone(), guard.info.clone(), Duration::from_millis(10));
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            list(s.as_ref()).unwrap()[0].refreshed > first,
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
        assert_eq!(break_locks(s.as_ref(), false).unwrap().len(), 1);
        assert!(list(s.as_ref()).unwrap().is_empty());
    }
}
