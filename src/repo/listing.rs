//! Reading every object under a prefix while other processes change it.
//!
//! A listing and the reads after it are not one atomic view: between them another process may
//! remove an object the listing named. Writers never remove an object that something still
//! needs without first writing what replaces it (a merged index file before the files it
//! merges are deleted, a longer binlog segment before the shorter one, a new verification
//! record before the oldest; prune deletes under its exclusive lock), so an object that vanished
//! is gone, not an error, and a listing taken after the removal shows what replaced it.

use std::collections::HashSet;

use super::error::Result;
use crate::storage::{ObjectInfo, Storage, StorageError};

/// Listings taken before giving up on a prefix whose objects keep vanishing.
const MAX_LISTINGS: usize = 10;

/// Calls `each` with the key and the read of every object under `prefix`, each key once, in
/// key order within a listing. When an object vanished between the listing and its read
/// (not found), the prefix is listed again and the objects not yet read are read: so the
/// object that replaced it is read too. Any other failure to read is given to `each`, which
/// decides (an error stops the walk): it is never taken for "no object".
pub(crate) fn read_listed(
    storage: &dyn Storage,
    prefix: &str,
    each: impl FnMut(&str, crate::storage::Result<Vec<u8>>) -> Result<()>,
) -> Result<()> {
    read_listing(storage, prefix, storage.list(prefix)?, each)
}

/// [`read_listed`], starting from `listing`, a listing of `prefix` the caller already took.
pub(crate) fn read_listing(
    storage: &dyn Storage,
    prefix: &str,
    mut listing: Vec<ObjectInfo>,
    mut each: impl FnMut(&str, crate::storage::Result<Vec<u8>>) -> Result<()>,
) -> Result<()> {
    let mut seen: HashSet<String> = HashSet::new();
    for _ in 0..MAX_LISTINGS {
        let mut vanished = false;
        for obj in listing {
            if seen.contains(&obj.key) {
                continue;
            }
            match storage.get(&obj.key) {
                Err(e) if e.is_not_found() => vanished = true,
                read => {
                    each(&obj.key, read)?;
                    seen.insert(obj.key);
                }
            }
        }
        if !vanished {
            return Ok(());
        }
        listing = storage.list(prefix)?;
    }
    Err(StorageError::Unavailable {
        store: storage.name().to_string(),
        detail: format!(
            "objects under {prefix} kept vanishing while they were read ({MAX_LISTINGS} \
             listings): another process is rewriting them; try again"
        ),
    }
    .into())
}

/// Calls `each` with the key and the read of every object of `listing`, taken earlier, leaving
/// out those removed since: for a reader whose view is pinned to the moment of the listing
/// (what replaced them is newer than that view). Other failures to read go to `each`.
pub(crate) fn read_each(
    storage: &dyn Storage,
    listing: Vec<ObjectInfo>,
    mut each: impl FnMut(&str, crate::storage::Result<Vec<u8>>) -> Result<()>,
) -> Result<()> {
    for obj in listing {
        match storage.get(&obj.key) {
            Err(e) if e.is_not_found() => {}
            read => each(&obj.key, read)?,
        }
    }
    Ok(())
}
