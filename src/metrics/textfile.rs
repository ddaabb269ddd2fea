//! The node_exporter textfile format: commands that run and exit (backup, verify, ...) leave
//! their metrics in a `.prom` file that node_exporter's textfile collector serves.
//!
//! The file is replaced atomically (written to `PATH.tmp-<random>`, fsynced, renamed over
//! `PATH`), so a scrape never sees half a file. It keeps what earlier runs wrote: a new run
//! replaces the samples it writes (same name and labels) and leaves the others, so a failed
//! backup does not erase the time of the last successful one, and two repositories verified
//! by two cron lines both stay in one file. Writers of one file take turns on `PATH.lock`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::{Family, Sample};

/// node_exporter usually runs as another user: the file is readable by all (it holds no
/// secrets: names, sizes and times).
const MODE: u32 = 0o644;

#[derive(Debug, thiserror::Error)]
pub enum TextfileError {
    #[error("--metrics-file {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error(
        "--metrics-file {path} is not a metrics file myvault wrote ({source}); give a path of its own"
    )]
    Foreign {
        path: String,
        source: super::ParseError,
    },
}

/// A metrics file. Opening checks the path before the command's work, so a wrong
/// `--metrics-file` is found in a second, not after an hour's backup.
pub struct Textfile {
    path: PathBuf,
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> TextfileError + '_ {
    move |source| TextfileError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

impl Textfile {
    pub fn open(path: &Path) -> Result<Textfile, TextfileError> {
        if path.file_name().is_none() || path.is_dir() {
            return Err(io_err(path)(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a file name",
            )));
        }
        let me = Textfile {
            path: path.to_path_buf(),
        };
        // The directory is there and writable, and a file that is not ours is refused.
        drop(me.lock()?);
        me.read()?;
        Ok(me)
    }

    /// Writers of one file take turns: each holds the lock for the milliseconds of its
    /// read, merge and rename, never for the command's run.
    fn lock(&self) -> Result<File, TextfileError> {
        let lock_path = sibling(&self.path, ".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(MODE)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        // SAFETY: flock on a descriptor we own; released when it is closed.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io_err(&lock_path)(io::Error::last_os_error()));
        }
        Ok(lock)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<Vec<Family>, TextfileError> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => super::parse(&text).map_err(|source| TextfileError::Foreign {
                path: self.path.display().to_string(),
                source,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io_err(&self.path)(e)),
        }
    }

    /// Replaces the samples `families` name (and adds new ones), keeping the rest.
    pub fn write(&self, families: &[Family]) -> Result<(), TextfileError> {
        let _lock = self.lock()?;
        let merged = merge(self.read()?, families);
        let text = super::render(&merged);
        let tmp = sibling(&self.path, &format!(".tmp-{:016x}", rand::random::<u64>()));
        let written =
            write_synced(&tmp, text.as_bytes()).and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err(&self.path)(e));
        }
        // The rename itself survives a crash once the directory is synced.
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }
}

fn write_synced(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(MODE)
        .open(path)?;
    // The process umask masks the mode given to open (a systemd unit's UMask=0077 made the
    // file 0600, which node_exporter, another user, cannot read); a chmod is not masked.
    f.set_permissions(std::fs::Permissions::from_mode(MODE))?;
    f.write_all(data)?;
    f.sync_all()
}

fn same_labels(a: &Sample, b: &Sample) -> bool {
    let sorted = |s: &Sample| {
        let mut l = s.labels.clone();
        l.sort();
        l
    };
    sorted(a) == sorted(b)
}

/// `old` with every sample of `new` put in (replacing one with the same name and labels).
pub fn merge(old: Vec<Family>, new: &[Family]) -> Vec<Family> {
    let mut out = old;
    for f in new {
        match out.iter_mut().find(|o| o.name == f.name) {
            Some(o) => {
                o.samples
                    .retain(|s| !f.samples.iter().any(|n| same_labels(s, n)));
                o.samples.extend(f.samples.iter().cloned());
                o.help = f.help.clone();
                o.kind = f.kind;
            }
            None => out.push(f.clone()),
        }
    }
    out
}
