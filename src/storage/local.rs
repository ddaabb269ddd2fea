//! A directory on a local (or mounted) filesystem.
//!
//! Writes go to a temporary file in the target's directory, are fsynced, and are renamed
//! into place (then the directory is fsynced), so an object is either absent or complete.
//! `create` links the temporary file to its name, which fails if the name is taken: exactly
//! one of several concurrent creators wins. Files are private (0600, directories 0700).
//! Large objects (packs) are written around the page cache: see `direct_write`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::direct_write::{self, DirectFile};
use super::{ObjectInfo, Result, StagedObject, Storage, StorageError, validate_key};

/// Prefix of in-progress files; never listed as objects.
const TEMP_PREFIX: &str = ".tmp-";

#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
    name: String,
}

impl LocalStorage {
    /// Opens an existing directory.
    pub fn open(root: impl Into<PathBuf>) -> Result<LocalStorage> {
        let root = root.into();
        let name = root.display().to_string();
        match fs::metadata(&root) {
            Ok(m) if m.is_dir() => Ok(LocalStorage { root, name }),
            Ok(_) => Err(StorageError::Failed {
                store: name,
                detail: "not a directory".into(),
            }),
            Err(e) => Err(map_io(&name, "", e)),
        }
    }

    /// Opens the directory, creating it (and its parents) if needed.
    pub fn create(root: impl Into<PathBuf>) -> Result<LocalStorage> {
        let root = root.into();
        let name = root.display().to_string();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .map_err(|e| map_io(&name, "", e))?;
        LocalStorage::open(root)
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        validate_key(&self.name, key)?;
        if key.split('/').any(|p| p.starts_with(TEMP_PREFIX)) {
            return Err(StorageError::Failed {
                store: self.name.clone(),
                detail: format!("invalid object key {key:?}"),
            });
        }
        Ok(self.root.join(key))
    }

    /// The path of a temporary file named by [`Storage::leftovers`]: nothing else.
    fn leftover_path(&self, key: &str) -> Result<PathBuf> {
        validate_key(&self.name, key)?;
        let (dirs, name) = key.rsplit_once('/').unwrap_or(("", key));
        if !name.starts_with(TEMP_PREFIX) || dirs.split('/').any(|p| p.starts_with(TEMP_PREFIX)) {
            return Err(StorageError::Failed {
                store: self.name.clone(),
                detail: format!("{key:?} is not a temporary file"),
            });
        }
        Ok(self.root.join(key))
    }

    fn err(&self, key: &str) -> impl Fn(io::Error) -> StorageError + '_ {
        let key = key.to_string();
        move |e| map_io(&self.name, &key, e)
    }

    /// A fresh temporary file name in `dir`, which is created if needed.
    fn temp_in(&self, key: &str, dir: &Path) -> Result<PathBuf> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(self.err(key))?;
        Ok(dir.join(format!(
            "{TEMP_PREFIX}{}",
            crate::repo::config::random_hex(8)
        )))
    }

    /// Writes `data` to a fresh temporary file next to `path`, fsynced.
    fn write_temp(&self, key: &str, path: &Path, data: &[u8]) -> Result<PathBuf> {
        let tmp = self.temp_in(key, path.parent().unwrap_or(&self.root))?;
        let write = || -> io::Result<()> {
            if data.len() >= direct_write::MIN_SIZE {
                let mut f = DirectFile::create(&tmp)?;
                f.append(data)?;
                return f.sync();
            }
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(map_io(&self.name, key, e));
        }
        Ok(tmp)
    }

    /// The files whose keys start with `prefix`, with their metadata, sorted by key: the
    /// temporary files when `temporaries`, the objects otherwise.
    fn walk(&self, prefix: &str, temporaries: bool) -> Result<Vec<(String, fs::Metadata)>> {
        // Walk only the directory the prefix points into.
        let (dir_part, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let start = if dir_part.is_empty() {
            self.root.clone()
        } else {
            self.root.join(dir_part)
        };
        let mut out = Vec::new();
        let mut stack = vec![(start, dir_part.to_string())];
        while let Some((dir, rel)) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        || e.kind() == io::ErrorKind::NotADirectory =>
                {
                    continue;
                }
                Err(e) => return Err(map_io(&self.name, prefix, e)),
            };
            for entry in entries {
                let entry = entry.map_err(self.err(prefix))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let temporary = name.starts_with(TEMP_PREFIX);
                let key = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                let Some(ft) = unless_gone(entry.file_type()).map_err(self.err(&key))? else {
                    continue;
                };
                if ft.is_dir() && !temporary {
                    if prefix.starts_with(&format!("{key}/")) || key.starts_with(prefix) {
                        stack.push((entry.path(), key));
                    }
                } else if ft.is_file()
                    && temporary == temporaries
                    && key.starts_with(prefix)
                    && let Some(meta) = unless_gone(entry.metadata()).map_err(self.err(&key))?
                {
                    out.push((key, meta));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Removes the files `path_of` finds for `keys`, then syncs each directory once (also
    /// when a later removal failed); stops at the first error.
    fn remove_files(
        &self,
        keys: &[String],
        path_of: impl Fn(&str) -> Result<PathBuf>,
    ) -> Result<()> {
        let mut synced: Vec<PathBuf> = Vec::new();
        let mut removed: Vec<PathBuf> = Vec::new();
        let mut result = Ok(());
        for key in keys {
            let path = match path_of(key) {
                Ok(p) => p,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            match fs::remove_file(&path) {
                Ok(()) => removed.push(path),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    result = Err(map_io(&self.name, key, e));
                    break;
                }
            }
        }
        for path in removed {
            if path
                .parent()
                .is_some_and(|d| !synced.iter().any(|s| s == d))
            {
                self.sync_dir(&path);
                synced.extend(path.parent().map(Path::to_path_buf));
            }
        }
        result
    }

    fn sync_dir(&self, path: &Path) {
        if let Some(dir) = path.parent()
            && let Ok(d) = File::open(dir)
        {
            // Best effort: some filesystems refuse fsync on directories.
            let _ = d.sync_all();
        }
    }
}

impl Storage for LocalStorage {
    fn name(&self) -> &str {
        &self.name
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        let path = self.path(key)?;
        let tmp = self.write_temp(key, &path, data)?;
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(map_io(&self.name, key, e));
        }
        self.sync_dir(&path);
        Ok(())
    }

    fn create(&self, key: &str, data: &[u8]) -> Result<bool> {
        let path = self.path(key)?;
        let tmp = self.write_temp(key, &path, data)?;
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                self.sync_dir(&path);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(map_io(&self.name, key, e)),
        }
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        fs::read(self.path(key)?).map_err(self.err(key))
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut f = File::open(self.path(key)?).map_err(self.err(key))?;
        f.seek(SeekFrom::Start(offset)).map_err(self.err(key))?;
        let mut out = Vec::with_capacity(len.min(64 << 20) as usize);
        f.take(len).read_to_end(&mut out).map_err(self.err(key))?;
        Ok(out)
    }

    fn stat(&self, key: &str) -> Result<Option<u64>> {
        match fs::metadata(self.path(key)?) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(map_io(&self.name, key, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        Ok(self
            .walk(prefix, false)?
            .into_iter()
            .map(|(key, meta)| ObjectInfo {
                key,
                size: meta.len(),
            })
            .collect())
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.delete_many(&[key.to_string()])
    }

    fn leftovers(&self, age: Duration) -> Result<Vec<ObjectInfo>> {
        let now = SystemTime::now();
        Ok(self
            .walk("", true)?
            .into_iter()
            .filter(|(_, meta)| {
                // A file modified "in the future" (clock changes) is not old.
                meta.modified()
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .is_some_and(|idle| idle >= age)
            })
            .map(|(key, meta)| ObjectInfo {
                key,
                size: meta.len(),
            })
            .collect())
    }

    fn remove_leftovers(&self, keys: &[String]) -> Result<()> {
        self.remove_files(keys, |k| self.leftover_path(k))
    }

    fn can_stage(&self) -> bool {
        true
    }

    fn stage(&self, dir: &str) -> Result<Option<Box<dyn StagedObject>>> {
        let tmp = self.temp_in(dir, &self.path(dir)?)?;
        let file = DirectFile::create(&tmp).map_err(self.err(dir))?;
        Ok(Some(Box::new(StagedFile {
            store: self.clone(),
            dir: format!("{dir}/"),
            tmp,
            file,
            committed: false,
        })))
    }

    fn delete_many(&self, keys: &[String]) -> Result<()> {
        self.remove_files(keys, |k| self.path(k))
    }
}

/// An object being written in parts (see [`Storage::stage`]): a temporary file, renamed into
/// place by `commit`.
struct StagedFile {
    store: LocalStorage,
    /// The directory given to `stage`, with a trailing `/`.
    dir: String,
    tmp: PathBuf,
    file: DirectFile,
    committed: bool,
}

impl StagedFile {
    fn finish(&mut self, path: &Path) -> io::Result<()> {
        self.file.sync()?;
        if let Some(parent) = path.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)?;
        }
        fs::rename(&self.tmp, path)
    }
}

impl StagedObject for StagedFile {
    fn append(&mut self, part: &[u8]) -> Result<()> {
        let appended = self.file.append(part);
        appended.map_err(|e| map_io(&self.store.name, &self.dir, e))
    }

    fn commit(mut self: Box<Self>, key: &str) -> Result<()> {
        if !key.starts_with(&self.dir) {
            return Err(StorageError::Failed {
                store: self.store.name.clone(),
                detail: format!("{key} is not in {}, where it was staged", self.dir),
            });
        }
        let path = self.store.path(key)?;
        self.finish(&path)
            .map_err(|e| map_io(&self.store.name, key, e))?;
        self.committed = true;
        self.store.sync_dir(&path);
        Ok(())
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// `None` for a directory entry removed since the directory was read (another process
/// deleted or renamed it): a listing shows what is there, and that is gone, not an error.
fn unless_gone<T>(looked_up: io::Result<T>) -> io::Result<Option<T>> {
    match looked_up {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn map_io(store: &str, key: &str, e: io::Error) -> StorageError {
    let store = store.to_string();
    let what = if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    };
    match e.kind() {
        io::ErrorKind::NotFound => StorageError::NotFound {
            store,
            key: if key.is_empty() {
                "directory".into()
            } else {
                key.into()
            },
        },
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => StorageError::Failed {
            store,
            detail: format!("its disk is full: {what}{e}"),
        },
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
            StorageError::Denied {
                store,
                detail: format!("{what}{e}"),
            }
        }
        io::ErrorKind::Interrupted | io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            StorageError::Unavailable {
                store,
                detail: format!("{what}{e}"),
            }
        }
        _ => StorageError::Failed {
            store,
            detail: format!("{what}{e}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn passes_the_shared_backend_suite() {
        let dir = tempfile::tempdir().unwrap();
        crate::storage::conformance::run_all(
            &LocalStorage::create(dir.path().join("repo")).unwrap(),
        );
    }

    #[test]
    fn temp_files_are_invisible_and_files_private() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::create(dir.path().join("r")).unwrap();
        s.put("a/b", b"x").unwrap();
        fs::write(dir.path().join("r/a/.tmp-crashed"), b"partial").unwrap();
        let keys: Vec<String> = s.list("").unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(keys, vec!["a/b"]);
        let mode = fs::metadata(dir.path().join("r/a/b"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = fs::metadata(dir.path().join("r/a"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        assert!(s.put(".tmp-x", b"y").is_err());
    }

    #[test]
    fn unusable_roots_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        fs::write(&file, b"not a dir").unwrap();
        assert!(matches!(
            LocalStorage::open(&file),
            Err(StorageError::Failed { .. })
        ));
        assert!(
            LocalStorage::create(file.join("below")).is_err(),
            "a path under a file cannot be created"
        );
        assert!(matches!(
            LocalStorage::open(dir.path().join("missing")),
            Err(StorageError::NotFound { .. })
        ));
    }
}
