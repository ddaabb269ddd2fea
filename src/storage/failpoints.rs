//! Failpoints at every write of a store (test builds only, feature `failpoints`): each
//! successful put, create, delete and staged commit is followed by a failpoint named
//! `store-after-<operation>-<top directory of the key>`, e.g. `store-after-put-packs`,
//! `store-after-create-snapshots`, `store-after-delete-index`, `store-after-put-pruned`.
//!
//! So a test can kill any command that writes a repository (backup, stream, prune, copy) right
//! after its N-th write of one kind, which is where the repository's write order (packs, index,
//! manifests; deleted in reverse) must hold, without a failpoint in every writer.

use std::sync::Arc;
use std::time::Duration;

use super::{ObjectInfo, Result, StagedObject, Storage};

#[derive(Debug)]
pub struct Failpoints(Arc<dyn Storage>);

/// `store` with a failpoint after each of its writes.
pub fn wrap(store: Arc<dyn Storage>) -> Arc<dyn Storage> {
    Arc::new(Failpoints(store))
}

fn after(operation: &str, key: &str) {
    let top = key.split('/').next().unwrap_or(key);
    crate::failpoint::hit(&format!("store-after-{operation}-{top}"));
}

impl Storage for Failpoints {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        self.0.put(key, data)?;
        after("put", key);
        Ok(())
    }

    fn create(&self, key: &str, data: &[u8]) -> Result<bool> {
        let created = self.0.create(key, data)?;
        if created {
            after("create", key);
        }
        Ok(created)
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.0.get(key)
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.0.get_range(key, offset, len)
    }

    fn stat(&self, key: &str) -> Result<Option<u64>> {
        self.0.stat(key)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.0.list(prefix)
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.0.delete(key)?;
        after("delete", key);
        Ok(())
    }

    /// One failpoint per key, after all of them are gone (the store may batch the work).
    fn delete_many(&self, keys: &[String]) -> Result<()> {
        self.0.delete_many(keys)?;
        keys.iter().for_each(|k| after("delete", k));
        Ok(())
    }

    fn leftovers(&self, age: Duration) -> Result<Vec<ObjectInfo>> {
        self.0.leftovers(age)
    }

    fn remove_leftovers(&self, keys: &[String]) -> Result<()> {
        self.0.remove_leftovers(keys)
    }

    fn is_remote(&self) -> bool {
        self.0.is_remote()
    }

    fn can_stage(&self) -> bool {
        self.0.can_stage()
    }

    fn stage(&self, dir: &str) -> Result<Option<Box<dyn StagedObject>>> {
        Ok(self
            .0
            .stage(dir)?
            .map(|s| Box::new(Staged(s)) as Box<dyn StagedObject>))
    }
}

/// A staged object's commit is a put like any other: `store-after-put-<dir>`.
struct Staged(Box<dyn StagedObject>);

impl StagedObject for Staged {
    fn append(&mut self, part: &[u8]) -> Result<()> {
        self.0.append(part)
    }

    fn commit(self: Box<Self>, key: &str) -> Result<()> {
        self.0.commit(key)?;
        after("put", key);
        Ok(())
    }
}
