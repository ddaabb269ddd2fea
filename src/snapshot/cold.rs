//! The data directory of a stopped server, packed as it is: the copy-the-datadir procedure,
//! with coordinates read from the binlog files in it.

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::clone::PhysicalSnapshot;
use crate::binlog::index;
use crate::binlog::reader::ReadError;
use crate::error::{Error, Result};
use crate::mysql::gtid::GtidSet;
use crate::repo::manifest::SourceInfo;
use crate::repo::writer::MultiWriter;

/// True when a running server holds the data directory: InnoDB keeps a write lock on its
/// system tablespace while it runs.
pub fn in_use(datadir: &Path) -> bool {
    let Ok(f) = File::options()
        .read(true)
        .write(true)
        .open(datadir.join("ibdata1"))
    else {
        return false;
    };
    // SAFETY: F_GETLK on a descriptor we own, with a zeroed flock asking about a write lock.
    unsafe {
        let mut lock: libc::flock = std::mem::zeroed();
        lock.l_type = libc::F_WRLCK as i16;
        lock.l_whence = libc::SEEK_SET as i16;
        libc::fcntl(f.as_raw_fd(), libc::F_GETLK, &mut lock) == 0
            && lock.l_type != libc::F_UNLCK as i16
    }
}

/// The binlog files the directory's index lists, oldest first.
fn binlog_files(datadir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(datadir)
        .map_err(|e| Error::io(format!("cannot read {}", datadir.display()), e))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".index") {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let p = Path::new(line.strip_prefix("./").unwrap_or(line));
                let p = if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    datadir.join(p)
                };
                out.push(p);
            }
        }
    }
    Ok(out)
}

pub fn backup(datadir: &Path, writer: &MultiWriter) -> Result<PhysicalSnapshot> {
    if !datadir.join("ibdata1").exists() && !datadir.join("mysql.ibd").exists() {
        return Err(Error::Usage(format!(
            "{} is not a MySQL data directory",
            datadir.display()
        )));
    }
    if in_use(datadir) {
        return Err(Error::TargetRefused(format!(
            "{} is in use by a running server: stop it first, or use --method logical or clone",
            datadir.display()
        )));
    }
    let uuid = std::fs::read_to_string(datadir.join("auto.cnf"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("server-uuid=").map(|u| u.trim().to_string()))
        })
        .unwrap_or_default();
    let logs = binlog_files(datadir)?;
    let (binlog_file, binlog_position, gtids, time) = match logs.last() {
        Some(last) => {
            let f = File::open(last)
                .map_err(|e| Error::io(format!("cannot open {}", last.display()), e))?;
            // A server that crashed left its last file marked in use and perhaps ending
            // inside an event: the scan reads up to its last complete transaction, which is
            // where the server's own recovery trims the file on its next start.
            let s = index::scan(std::io::BufReader::new(f), |_| {}).map_err(|e| {
                let what = format!(
                    "reading the binlog {} for the snapshot's coordinates: {e}",
                    last.display()
                );
                match e {
                    ReadError::Io(io) => Error::io(what, io),
                    // Damage in the source's own file: not ours to paper over, and not a bug.
                    _ => Error::DamagedFile(what),
                }
            })?;
            let gtids = s.previous_gtids.clone().unwrap_or_default().union(&s.gtids);
            let name = last
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let time = s
                .last_event_time
                .and_then(|t| chrono::DateTime::from_timestamp(i64::from(t), 0));
            (name, s.complete_end, gtids, time)
        }
        None => (String::new(), 0, GtidSet::new(), None),
    };
    let source = SourceInfo {
        address: datadir.display().to_string(),
        server_uuid: uuid,
        server_id: 0,
        flavor: "MySQL".into(),
        version: String::new(),
    };
    let time = time.unwrap_or_else(chrono::Utc::now);
    let snapshot = PhysicalSnapshot::pack(
        writer,
        datadir,
        source,
        (binlog_file, binlog_position),
        &gtids,
        time,
    )?;
    // A file that changed while it was read means the server was started meanwhile.
    if in_use(datadir) {
        return Err(Error::TargetRefused(format!(
            "a server started on {} during the backup",
            datadir.display()
        )));
    }
    Ok(snapshot)
}
