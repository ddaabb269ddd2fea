//! Files and directories only this user may read.
//!
//! What myvault writes outside a repository (the binlog spool, fetched binlogs, the staging
//! directories of remote clones and restore tests, temporary servers' sockets) holds the
//! database's rows, so it gets the modes of a directory repository: directories 0700, files
//! 0600 (a umask can only take bits away from these).

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

pub const DIR_MODE: u32 = 0o700;
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and its missing parents with mode 0700. A directory that exists keeps its
/// mode: it may be a shared one (`/tmp`, a home directory) that is not myvault's to change.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// A directory that is myvault's alone (the spool): created as by [`create_dir_all`], and an
/// existing one that others may read or enter is restricted to its owner (a stricter mode is
/// kept as it is).
pub fn own_dir(dir: &Path) -> io::Result<()> {
    create_dir_all(dir)?;
    restrict(dir, DIR_MODE)
}

/// Removes the group's and others' permissions from an existing file or directory, as one
/// an older version wrote with the umask's modes.
pub fn restrict(path: &Path, mode: u32) -> io::Result<()> {
    let current = fs::metadata(path)?.permissions().mode() & 0o7777;
    if current & !mode & 0o077 == 0 {
        return Ok(());
    }
    fs::set_permissions(path, Permissions::from_mode(current & mode))
}

/// Options that create a file with mode 0600 (an existing file keeps its mode).
pub fn file_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// Creates (or truncates) `path` for writing, mode 0600 when it is new.
pub fn create_file(path: &Path) -> io::Result<File> {
    file_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

/// Writes `data` to `path` (replacing it), mode 0600.
pub fn write_file(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut f = create_file(path)?;
    restrict(path, FILE_MODE)?;
    f.write_all(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn private_modes_for_new_paths_and_owned_directories_only_tighter() {
        let root = tempfile::tempdir().unwrap();
        let nested = root.path().join("a/b/c");
        create_dir_all(&nested).unwrap();
        for d in ["a", "a/b", "a/b/c"] {
            assert_eq!(mode(&root.path().join(d)), 0o700, "{d}");
        }
        let f = nested.join("f");
        write_file(&f, b"rows").unwrap();
        assert_eq!(mode(&f), 0o600);

        // An existing loose directory is left alone by create_dir_all, restricted by own_dir.
        let shared = root.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, Permissions::from_mode(0o755)).unwrap();
        create_dir_all(&shared).unwrap();
        assert_eq!(mode(&shared), 0o755);
        own_dir(&shared).unwrap();
        assert_eq!(mode(&shared), 0o700);
        // A stricter mode stays.
        fs::set_permissions(&shared, Permissions::from_mode(0o500)).unwrap();
        own_dir(&shared).unwrap();
        assert_eq!(mode(&shared), 0o500);
        fs::set_permissions(&shared, Permissions::from_mode(0o700)).unwrap();

        // An older file with the umask's mode is restricted when rewritten.
        let old_file = root.path().join("old");
        fs::write(&old_file, b"x").unwrap();
        fs::set_permissions(&old_file, Permissions::from_mode(0o644)).unwrap();
        write_file(&old_file, b"y").unwrap();
        assert_eq!(mode(&old_file), 0o600);
    }
}
