//! Staging directories: where a clone lands before it is packed, as large as the database.
//! The work that stages removes its directory when it ends, whatever happened; one left by a
//! process that was killed (kill -9, a crash, the OOM killer) is removed by the next run that
//! stages in the same place, so every killed backup does not cost a database's worth of disk.
//!
//! A staging directory `D` has a lock file `D.lock` beside it, which its process holds
//! (`flock`) for as long as it uses `D`; the kernel releases it when the process dies, however
//! it dies. A lock file that no process holds marks `D` as abandoned. The lock file is locked
//! before it gets its name, so no one ever finds it unlocked while its directory is in use.

use std::fs::{self, File};
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// A staging directory reserved by this process; dropped, the directory and its lock go.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    _lock: File,
}

fn lock_path(dir: &Path) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

fn try_lock(f: &File) -> bool {
    // SAFETY: flock on a descriptor we own.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

fn ignore_missing(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

impl Staging {
    /// Reserves `dir`, which must not exist yet (the caller, or the server, creates it). An
    /// abandoned staging directory of that name is removed first; anything else there is
    /// refused with [`io::ErrorKind::AlreadyExists`].
    pub fn reserve(dir: &Path) -> io::Result<Staging> {
        let lock = lock_path(dir);
        if (dir.exists() || lock.exists()) && !remove_if_abandoned(dir)? {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} already exists", dir.display()),
            ));
        }
        let parent = dir.parent().unwrap_or(Path::new("."));
        let hidden = parent.join(format!(
            ".myvault-staging-{}",
            crate::repo::config::random_hex(8)
        ));
        let file = crate::private_fs::create_file(&hidden)?;
        if !try_lock(&file) {
            let _ = fs::remove_file(&hidden);
            return Err(io::Error::other(format!(
                "cannot lock {}",
                hidden.display()
            )));
        }
        let named = fs::rename(&hidden, &lock);
        if named.is_err() {
            let _ = fs::remove_file(&hidden);
        }
        named?;
        Ok(Staging {
            dir: dir.to_path_buf(),
            _lock: file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // The lock file goes last: until then the directory is still known to be ours.
        let _ = fs::remove_dir_all(&self.dir);
        let _ = fs::remove_file(lock_path(&self.dir));
    }
}

/// Removes `dir` and its lock file when no process holds the lock. False when `dir` is not
/// an abandoned staging directory (in use, or without a lock file: not myvault's).
fn remove_if_abandoned(dir: &Path) -> io::Result<bool> {
    let lock = lock_path(dir);
    let file = match File::open(&lock) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if !try_lock(&file) {
        return Ok(false);
    }
    ignore_missing(fs::remove_dir_all(dir))?;
    ignore_missing(fs::remove_file(&lock))?;
    Ok(true)
}

/// Removes the abandoned staging directories in `parent` whose names start with `prefix`,
/// returning them. One that cannot be removed stays for a later run: it costs disk space,
/// not correctness.
pub fn sweep(parent: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(parent) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let dir = name.strip_suffix(".lock")?;
            dir.starts_with(prefix).then(|| parent.join(dir))
        })
        .filter(|dir| remove_if_abandoned(dir).unwrap_or(false))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staging_directory_is_removed_when_dropped_or_abandoned_and_kept_while_in_use() {
        let root = tempfile::tempdir().unwrap();
        let a = root.path().join("myvault-clone-a");
        let staging = Staging::reserve(&a).unwrap();
        fs::create_dir(&a).unwrap();
        fs::write(a.join("ibdata1"), b"pages").unwrap();
        // In use: neither a sweep nor another reservation touches it.
        assert!(sweep(root.path(), "myvault-clone-").is_empty());
        let again = Staging::reserve(&a).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
        assert!(a.join("ibdata1").exists());
        drop(staging);
        assert!(!a.exists() && !lock_path(&a).exists());

        // Abandoned (its lock file is there and nobody holds it, as after a kill -9).
        fs::create_dir(&a).unwrap();
        fs::write(lock_path(&a), b"").unwrap();
        let other = root.path().join("someone-else");
        fs::create_dir(&other).unwrap();
        assert_eq!(sweep(root.path(), "myvault-clone-"), vec![a.clone()]);
        assert!(!a.exists() && !lock_path(&a).exists() && other.exists());

        // Reserving an abandoned name clears it; a directory without a lock is not ours.
        fs::create_dir(&a).unwrap();
        fs::write(lock_path(&a), b"").unwrap();
        let staging = Staging::reserve(&a).unwrap();
        assert!(!a.exists());
        drop(staging);
        let refused = Staging::reserve(&other).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::AlreadyExists);
        assert!(other.exists());
    }
}
