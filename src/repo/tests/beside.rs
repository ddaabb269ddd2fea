//! Readers beside writers: another process changes the repository between a reader's listing
//! and its reads (a backup merges index files, the streamer replaces a binlog segment by a
//! longer one, a prune deletes a snapshot). What vanished is gone or replaced, never an error
//! or damage, and what replaced it is read.

use std::sync::{Arc, Mutex};

use super::super::manifest::SnapshotManifest;
use super::super::{Id, Repo, copy, index, index_key, snapshot_key, verify};
use super::verify_all::archive;
use super::*;
use crate::storage::{ObjectInfo, Storage};

type Act = Box<dyn FnOnce(&MemoryStorage) + Send>;

/// A store where another process acts once, right after the first listing of a prefix was
/// taken and before the caller reads anything it listed.
struct Beside {
    store: Arc<MemoryStorage>,
    acts: Mutex<Vec<(String, Act)>>,
}

impl std::fmt::Debug for Beside {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Beside").finish_non_exhaustive()
    }
}

impl Beside {
    fn new(store: Arc<MemoryStorage>) -> Arc<Beside> {
        Arc::new(Beside {
            store,
            acts: Mutex::new(Vec::new()),
        })
    }

    /// `act` runs on the store right after the next listing of `prefix`.
    fn after_listing(&self, prefix: &str, act: impl FnOnce(&MemoryStorage) + Send + 'static) {
        let mut acts = self.acts.lock().unwrap();
        acts.push((prefix.to_string(), Box::new(act)));
    }
}

impl Storage for Beside {
    fn name(&self) -> &str {
        self.store.name()
    }
    fn put(&self, key: &str, data: &[u8]) -> crate::storage::Result<()> {
        self.store.put(key, data)
    }
    fn create(&self, key: &str, data: &[u8]) -> crate::storage::Result<bool> {
        self.store.create(key, data)
    }
    fn get(&self, key: &str) -> crate::storage::Result<Vec<u8>> {
        self.store.get(key)
    }
    fn get_range(&self, key: &str, offset: u64, len: u64) -> crate::storage::Result<Vec<u8>> {
        self.store.get_range(key, offset, len)
    }
    fn stat(&self, key: &str) -> crate::storage::Result<Option<u64>> {
        self.store.stat(key)
    }
    fn list(&self, prefix: &str) -> crate::storage::Result<Vec<ObjectInfo>> {
        let listing = self.store.list(prefix)?;
        let act = {
            let mut acts = self.acts.lock().unwrap();
            let due = acts.iter().position(|(p, _)| p == prefix);
            due.map(|i| acts.remove(i).1)
        };
        if let Some(act) = act {
            act(&self.store);
        }
        Ok(listing)
    }
    fn delete(&self, key: &str) -> crate::storage::Result<()> {
        self.store.delete(key)
    }
}

/// A copy of every object of `store`.
fn copy_of(store: &MemoryStorage) -> MemoryStorage {
    let copy = MemoryStorage::new();
    for o in store.list("").unwrap() {
        copy.put(&o.key, &store.get(&o.key).unwrap()).unwrap();
    }
    copy
}

/// Brings `store` to what `later` holds as a writer does: packs, index files and manifests
/// are written first, then the objects they replace (merged index files, shorter segments) go.
fn catch_up(store: &MemoryStorage, later: &MemoryStorage) {
    for prefix in ["packs/", "index/", "snapshots/", "binlog/"] {
        for o in later.list(prefix).unwrap() {
            store.put(&o.key, &later.get(&o.key).unwrap()).unwrap();
        }
    }
    for o in store.list("").unwrap() {
        if later.stat(&o.key).unwrap().is_none() {
            store.delete(&o.key).unwrap();
        }
    }
}

/// Merges the index files into one, as a writer does once they are many: the merged file is
/// written, then the others are deleted.
fn merge_index(store: &MemoryStorage) {
    let files = store.list("index/").unwrap();
    let mut packs = Vec::new();
    for o in &files {
        packs.extend(index::decode_file(&store.get(&o.key).unwrap()).unwrap());
    }
    let merged = index::encode_file(&packs);
    store
        .put(&index_key(&Id::sha256(&merged)), &merged)
        .unwrap();
    for o in files {
        store.delete(&o.key).unwrap();
    }
}

/// A repository with one snapshot (the store as it is now, `first`'s id), and the store as
/// it is after a second backup (which merged the index into one new file).
fn one_backup_and_the_next() -> (Arc<MemoryStorage>, String, MemoryStorage) {
    let (mem, repo) = new_repo();
    let (first, _) = backup(vec![repo.clone()], &[("f", &data(300_000, 1))]).unwrap();
    let now = Arc::new(copy_of(&mem));
    backup(vec![repo.clone()], &[("f", &data(300_000, 2))]).unwrap();
    merge_index(&mem);
    let merged = mem.list("index/").unwrap();
    assert!(
        (now.list("index/").unwrap().iter()).all(|o| !merged.contains(o)),
        "the second backup merged the index file away: {merged:?}"
    );
    (now, first, copy_of(&mem))
}

fn open(store: &Arc<Beside>) -> Repo {
    Repo::open(store.clone()).unwrap()
}

fn no_problems(repo: &Repo) -> verify::VerifyReport {
    let report = verify::verify(repo, true, |_, _| {}).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    report
}

/// The index was loaded from a listing taken before a backup merged the index files: the file
/// listed was deleted before it was read and its entries (in the merged file, not listed) were
/// lost, so a restore beside a backup could not find its chunks, and verify reported damage.
#[test]
fn an_index_file_merged_away_by_a_backup_during_loading_is_read_from_the_merged_file() {
    let (now, first, later) = one_backup_and_the_next();
    let store = Beside::new(now.clone());
    store.after_listing("index/", move |s| catch_up(s, &later));
    assert_eq!(
        restore(&open(&store), &first, "f").unwrap(),
        data(300_000, 1)
    );

    let (now, _, later) = one_backup_and_the_next();
    let store = Beside::new(now);
    store.after_listing("index/", move |s| catch_up(s, &later));
    // Verify checks the snapshots listed before the index was read: the new one is the next
    // run's to check.
    assert_eq!(no_problems(&open(&store)).snapshots, 1);
}

/// A prune deleted a snapshot between a reader's listing and its read: `list` and `status`
/// failed with "snapshot ... not found", and verify reported the snapshot unreadable.
#[test]
fn a_snapshot_pruned_between_listing_and_read_is_gone_not_an_error() {
    let (now, first, later) = one_backup_and_the_next();
    catch_up(&now, &later);
    let prune_first = move |s: &MemoryStorage| s.delete(&snapshot_key(&first)).unwrap();
    let store = Beside::new(now.clone());
    store.after_listing("snapshots/", prune_first);
    let ids: Vec<String> = (open(&store).snapshots().unwrap().into_iter())
        .map(|m: SnapshotManifest| m.id)
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");

    let (now, _, later) = one_backup_and_the_next();
    catch_up(&now, &later);
    let listed = now.list("snapshots/").unwrap();
    let (gone, survivor) = (listed[0].key.clone(), listed[1].key.clone());
    let store = Beside::new(now);
    store.after_listing("snapshots/", move |s| s.delete(&gone).unwrap());
    let report = no_problems(&open(&store));
    assert_eq!(report.snapshots, 1);
    assert_eq!(snapshot_key(&report.readable_snapshots[0].id), survivor);
}

const FILE: &str = "binlog.000001";

/// A store holding binlog file `FILE` archived up to `short` bytes, and the store after the
/// streamer archived it up to `long` bytes (and removed the shorter segment).
fn a_segment_and_its_longer_replacement() -> (Arc<MemoryStorage>, MemoryStorage) {
    let (mem, repo) = new_repo();
    let long = data(200_000, 3);
    archive(&mem, &repo, FILE, &long[..100_000]);
    let now = Arc::new(copy_of(&mem));
    archive(&mem, &repo, FILE, &long);
    let shorter = mem.list("binlog/").unwrap()[0].key.clone();
    mem.delete(&shorter).unwrap();
    (now, copy_of(&mem))
}

/// The streamer replaced a segment by a longer one between a reader's listing and its read:
/// the file went missing from the reader's view (a gap in `list`, `status` and a PITR plan),
/// and verify reported the segment unreadable.
#[test]
fn a_binlog_segment_replaced_between_listing_and_read_is_read_as_its_replacement() {
    let (now, later) = a_segment_and_its_longer_replacement();
    let store = Beside::new(now);
    store.after_listing("binlog/", move |s| catch_up(s, &later));
    let segments = open(&store).binlog_segments().unwrap();
    let sizes: Vec<(String, u64)> = segments.into_iter().map(|s| (s.file, s.size)).collect();
    assert_eq!(sizes, vec![(FILE.to_string(), 200_000)]);

    let (now, later) = a_segment_and_its_longer_replacement();
    let store = Beside::new(now);
    store.after_listing("index/", move |s| catch_up(s, &later));
    // Verify's view is the segments listed before the index was read: the replaced one is
    // gone from it, the longer one is the next run's to check.
    assert_eq!(no_problems(&open(&store)).binlog_segments, 0);
}

/// `copy` beside a streamer: a segment it listed was replaced before it read it ("not found",
/// the copy failed), and a manifest written after the packs were copied was listed and then
/// refused as unreadable in the destination (the copy reported damage that was not there).
#[test]
fn copy_beside_a_streamer_copies_what_it_listed_and_reports_no_damage() {
    let (now, later) = a_segment_and_its_longer_replacement();
    let source = Beside::new(now);
    source.after_listing("binlog/", move |s| catch_up(s, &later));
    let (_, dest) = new_repo();
    let report = copy::copy(&open(&source), &dest, |_| {}).unwrap();
    assert!(report.manifests_skipped.is_empty(), "{report:?}");
    let next = copy::copy(&open(&source), &dest, |_| {}).unwrap();
    assert!(next.manifests_skipped.is_empty(), "{next:?}");
    let sizes: Vec<u64> = (dest.binlog_segments().unwrap().iter())
        .map(|s| s.size)
        .collect();
    assert!(
        sizes.contains(&200_000),
        "the next copy brings it: {sizes:?}"
    );

    let (now, first, later) = one_backup_and_the_next();
    let source = Beside::new(now);
    source.after_listing("packs/", move |s| catch_up(s, &later));
    let (_, dest) = new_repo();
    let report = copy::copy(&open(&source), &dest, |_| {}).unwrap();
    assert!(report.manifests_skipped.is_empty(), "{report:?}");
    assert_eq!(restore(&dest, &first, "f").unwrap(), data(300_000, 1));
    let next = copy::copy(&open(&source), &dest, |_| {}).unwrap();
    assert_eq!(next.snapshots_copied, 1, "the next copy brings the new one");
    no_problems(&dest);
}
