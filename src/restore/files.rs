//! Writing a snapshot's files back out: names, modes and bytes as they were.
//!
//! The tree is written into a temporary sibling of the destination and renamed into place at
//! the end, so an interrupted restore never leaves a half-written destination behind.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use crate::repo::manifest::{FileKind, SnapshotManifest};
use crate::repo::{Repo, RepoError, Result};

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
        let mut bytes = 0;
        let mut files = 0;
        let mut dirs = Vec::new();
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
                FileKind::File => {
                    ensure_parent(&path)?;
                    let mut out = fs::File::create(&path).map_err(io("cannot create", &path))?;
                    bytes += repo.copy_file(entry, &mut out)?;
                    out.sync_all().map_err(io("cannot sync", &path))?;
                    fs::set_permissions(&path, fs::Permissions::from_mode(entry.mode))
                        .map_err(io("cannot chmod", &path))?;
                    files += 1;
                    progress(&entry.path, bytes);
                }
            }
        }
        // Directory modes last, deepest first: a read-only directory must not stop its own
        // contents from being written.
        for (path, mode) in dirs.iter().rev() {
            fs::set_permissions(path, fs::Permissions::from_mode(*mode))
                .map_err(io("cannot chmod", path))?;
        }
        Ok((files, bytes))
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
