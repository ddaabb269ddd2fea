//! Writing a snapshot's files back out: names, modes and bytes as they were.
//!
//! The tree is written into a temporary sibling of the destination and renamed into place at
//! the end, so an interrupted restore never leaves a half-written destination behind.
//! Several files are written at once: from a remote store each waits on round trips, and on
//! any store each waits on its own `fsync`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

use crate::repo::manifest::{FileEntry, FileKind, SnapshotManifest};
use crate::repo::{Repo, RepoError, Result};

/// Files written at once from a remote store; each reads a few ranges ahead of itself, so
/// this times the read-ahead depth bounds the bytes in flight.
const REMOTE_FILES_AT_ONCE: usize = 4;
/// Files written at once from a local store: enough to overlap one file's `fsync` with
/// another's reading.
const LOCAL_FILES_AT_ONCE: usize = 2;

#[derive(Debug, Clone, serde::Serialize)]
pub struct FilesRestored {
    pub snapshot: String,
    pub dest: String,
    pub files: usize,
    pub bytes: u64,
}

/// True when `dir` does not exist or is an empty directory.
pub fn is_empty_destination(dir: &Path) -> std::io::Result<bool> {
    match fs::read_dir(dir) {
        Ok(mut it) => Ok(it.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    }
}

/// Snapshots of a dump list files only: their directories are made as needed.
fn ensure_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(dir) if !dir.exists() => fs::create_dir_all(dir)
            .map_err(|e| RepoError::io(format!("cannot create {}", dir.display()), e)),
        _ => Ok(()),
    }
}

/// Refuses manifest paths that would escape the destination.
fn safe_join(root: &Path, rel: &str) -> Result<PathBuf> {
    let p = Path::new(rel);
    if p.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(RepoError::Invalid(format!(
            "refusing unsafe path {rel:?} in the manifest"
        )));
    }
    Ok(root.join(p))
}

pub fn restore_files(
    repo: &Repo,
    snap: &SnapshotManifest,
    dest: &Path,
    mut progress: impl FnMut(&str, u64),
) -> Result<FilesRestored> {
    let io = |what: &str, p: &Path| {
        let ctx = format!("{what} {}", p.display());
        move |e| RepoError::io(ctx, e)
    };
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io("cannot create", parent))?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "restore".into());
    let staging = parent.join(format!(".{name}.myvault-partial-{}", snap.id));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io("cannot clear", &staging))?;
    }
    fs::create_dir(&staging).map_err(io("cannot create", &staging))?;
    fs::set_permissions(&staging, fs::Permissions::from_mode(0o700))
        .map_err(io("cannot chmod", &staging))?;

    let result = (|| {
        let mut dirs = Vec::new();
        let mut regular = Vec::new();
        for entry in &snap.files {
            let path = safe_join(&staging, &entry.path)?;
            match entry.kind {
                FileKind::Dir => {
                    fs::create_dir_all(&path).map_err(io("cannot create", &path))?;
                    dirs.push((path, entry.mode));
                }
                FileKind::Symlink => {
                    ensure_parent(&path)?;
                    let target = entry.target.as_deref().unwrap_or_default();
                    std::os::unix::fs::symlink(target, &path)
                        .map_err(io("cannot create link", &path))?;
                }
                FileKind::File => regular.push((entry, path)),
            }
        }
        let at_once = if repo.storage().is_remote() {
            REMOTE_FILES_AT_ONCE
        } else {
            LOCAL_FILES_AT_ONCE
        };
        let written = write_files(repo, &regular, at_once, &mut progress)?;
        // Directory modes last, deepest first: a read-only directory must not stop its own
        // contents from being written.
        for (path, mode) in dirs.iter().rev() {
            fs::set_permissions(path, fs::Permissions::from_mode(*mode))
                .map_err(io("cannot chmod", path))?;
        }
        Ok(written)
    })();
    let (files, bytes) = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    if dest.exists() {
        fs::remove_dir(dest).map_err(io("cannot replace the empty", dest))?;
    }
    fs::rename(&staging, dest).map_err(io("cannot move the restored tree to", dest))?;
    Ok(FilesRestored {
        snapshot: snap.id.clone(),
        dest: dest.display().to_string(),
        files,
        bytes,
    })
}

/// Writes `files` with up to `at_once` writers, calling `progress` here as each is done
/// (with the bytes written so far); stops at the first error, which it returns.
fn write_files(
    repo: &Repo,
    files: &[(&FileEntry, PathBuf)],
    at_once: usize,
    progress: &mut impl FnMut(&str, u64),
) -> Result<(usize, u64)> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let (done_tx, done_rx) = mpsc::channel::<Result<(&str, u64)>>();
    std::thread::scope(|s| {
        for _ in 0..at_once.clamp(1, files.len().max(1)) {
            let done_tx = done_tx.clone();
            let (next, failed) = (&next, &failed);
            s.spawn(move || {
                while !failed.load(Ordering::Relaxed) {
                    let Some((entry, path)) = files.get(next.fetch_add(1, Ordering::Relaxed))
                    else {
                        break;
                    };
                    let r = write_file(repo, entry, path).map(|n| (entry.path.as_str(), n));
                    failed.fetch_or(r.is_err(), Ordering::Relaxed);
                    if done_tx.send(r).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        let (mut count, mut bytes) = (0, 0);
        let mut first_error = None;
        for r in done_rx {
            match r {
                Ok((path, n)) if first_error.is_none() => {
                    count += 1;
                    bytes += n;
                    progress(path, bytes);
                }
                Ok(_) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok((count, bytes)),
        }
    })
}

fn write_file(repo: &Repo, entry: &FileEntry, path: &Path) -> Result<u64> {
    let io = |what: &str| {
        let ctx = format!("{what} {}", path.display());
        move |e| RepoError::io(ctx, e)
    };
    ensure_parent(path)?;
    let mut out = fs::File::create(path).map_err(io("cannot create"))?;
    let bytes = repo.copy_file(entry, &mut out)?;
    out.sync_all().map_err(io("cannot sync"))?;
    fs::set_permissions(path, fs::Permissions::from_mode(entry.mode))
        .map_err(io("cannot chmod"))?;
    Ok(bytes)
}
