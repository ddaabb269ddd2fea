//! A physical snapshot (clone or cold) back into a data directory, ready to start as a new
//! server: `auto.cnf` removed so it gets its own `server_uuid`, files owned as told.

use std::path::Path;

use crate::error::{Error, Result};
use crate::repo::Repo;
use crate::repo::manifest::SnapshotManifest;
use crate::restore::files::{FilesRestored, is_empty_destination, restore_files};

#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// Parses `user[:group]` (names or numbers).
pub fn parse_owner(spec: &str) -> Result<Owner> {
    let (user, group) = spec.split_once(':').unwrap_or((spec, ""));
    let bad = || Error::Usage(format!("--owner {spec}: no such user or group"));
    let (uid, user_gid) = match user.parse::<u32>() {
        Ok(n) => (n, None),
        Err(_) => {
            let c = std::ffi::CString::new(user).map_err(|_| bad())?;
            // SAFETY: getpwnam with a valid C string; the result is read at once.
            let pw = unsafe { libc::getpwnam(c.as_ptr()) };
            if pw.is_null() {
                return Err(bad());
            }
            // SAFETY: non-null passwd entry from getpwnam.
            unsafe { ((*pw).pw_uid, Some((*pw).pw_gid)) }
        }
    };
    let gid = if group.is_empty() {
        user_gid.unwrap_or(uid)
    } else {
        match group.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let c = std::ffi::CString::new(group).map_err(|_| bad())?;
                // SAFETY: getgrnam with a valid C string; the result is read at once.
                let gr = unsafe { libc::getgrnam(c.as_ptr()) };
                if gr.is_null() {
                    return Err(bad());
                }
                // SAFETY: non-null group entry from getgrnam.
                unsafe { (*gr).gr_gid }
            }
        }
    };
    Ok(Owner { uid, gid })
}

pub fn chown_tree(dir: &Path, owner: Owner) -> Result<()> {
    let chown = |p: &Path| {
        std::os::unix::fs::lchown(p, Some(owner.uid), Some(owner.gid))
            .map_err(|e| Error::io(format!("cannot chown {}", p.display()), e))
    };
    chown(dir)?;
    for entry in std::fs::read_dir(dir)
        .map_err(|e| Error::io(format!("cannot read {}", dir.display()), e))?
        .flatten()
    {
        let p = entry.path();
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            chown_tree(&p, owner)?;
        } else {
            chown(&p)?;
        }
    }
    Ok(())
}

/// Writes the snapshot's files into `dir`, which must be new or empty.
pub fn restore(
    repo: &Repo,
    snap: &SnapshotManifest,
    dir: &Path,
    owner: Option<Owner>,
    keep_uuid: bool,
) -> Result<FilesRestored> {
    if snap.method != "clone" && snap.method != "cold" {
        return Err(Error::Usage(format!(
            "snapshot {} is a {} snapshot; --datadir takes clone and cold snapshots (load logical ones with --target)",
            snap.id, snap.method
        )));
    }
    match is_empty_destination(dir) {
        Ok(true) => {}
        Ok(false) => {
            let in_use = if crate::snapshot::cold::in_use(dir) {
                " and a running server uses it"
            } else {
                ""
            };
            return Err(Error::TargetRefused(format!(
                "{} is not empty{in_use}; restore into a new or empty directory",
                dir.display()
            )));
        }
        Err(e) => return Err(Error::io(format!("cannot read {}", dir.display()), e)),
    }
    let report = restore_files(repo, snap, dir, |_, _| {})?;
    if !keep_uuid {
        let _ = std::fs::remove_file(dir.join("auto.cnf"));
    }
    if let Some(o) = owner {
        chown_tree(dir, o)?;
    }
    Ok(report)
}
