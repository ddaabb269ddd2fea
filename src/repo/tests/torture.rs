//! A randomized, model-based test of the repository (issue 18, item 13), in the spirit of the
//! stress tests of restic, kopia and rustic.
//!
//! Each sequence, drawn from a seed, drives two repositories (memory or a local directory;
//! plain or encrypted; packs of a few KiB to 1 MiB) through backups of two changing
//! directories (edits that make deltas, files that come back to older contents, files shared
//! across directories, files large enough for a chunk list), into one repository or both at
//! once, with and without a long-running writer that keeps its index across steps; prunes that
//! forget random snapshots; copies either way; and a kill (every store stops at once, the last
//! write applied or not) at a random operation of any of them. A model holds what every
//! snapshot must contain. After every step, each repository, opened afresh:
//!
//! - `verify` (reading data, or not) finds no problem: every pack matches its name and header,
//!   every blob its id, every manifest's chunks are indexed and readable, every index entry
//!   is readable (a delta's base is indexed whole);
//! - holds every snapshot the model knows was committed, and none it does not know of (a
//!   snapshot whose commit a kill interrupted may be there or not), and every snapshot restores
//!   byte for byte to what was backed up;
//! - a backup that reported success for a repository is there and restores.
//!
//! `MYVAULT_TORTURE_SEQUENCES` (default [`CI_SEQUENCES`]) or `MYVAULT_TORTURE_SECONDS` (run
//! until then), and `MYVAULT_TORTURE_SEED` (the first seed; default 1) set the run;
//! `scripts/torture` runs it long. Every seed that ever failed is in [`REGRESSION_SEEDS`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::super::chunker::ChunkerConfig;
use super::super::codec::Codec;
use super::super::config::RepoConfig;
use super::super::key::RepoKey;
use super::super::manifest::SnapshotManifest;
use super::super::prune::{self, Forget};
use super::super::repack::MaxUnused;
use super::super::retention::{self, RetentionPolicy};
use super::super::writer::MultiWriter;
use super::super::{PRUNED_KEY, Repo, copy, pruned_mark, snapshot_key, verify};
use crate::storage::Storage;
use crate::storage::crashing::{Clock, CrashingStorage};
use crate::storage::local::LocalStorage;
use crate::storage::memory::MemoryStorage;
use crate::test_rng::XorShift64;

/// Sequences of the CI run: about a minute on the 2-core test machine.
const CI_SEQUENCES: u64 = 400;
/// Steps in one sequence.
const STEPS: usize = 14;
/// Seeds that found a defect, run every time whatever the run's own seeds: (seed, defect).
/// A seed names a sequence of this generator: when the generator changes, find the seeds
/// again by running with each fix reverted (the named unit tests stay as they are).
const REGRESSION_SEEDS: &[(u64, &str)] = &[
    (
        2,
        "a chunk a repository lacks stored there as a delta against itself",
    ),
    (
        51,
        "copy left out a delta whose base the destination held only as a delta",
    ),
    (
        118,
        "a delta written against a base its repository held only as a delta",
    ),
    (
        157,
        "prune kept a delta indexed whose base's pack it deleted",
    ),
];

struct Rng(XorShift64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // Spread nearby seeds apart (splitmix64), and never 0.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng(XorShift64::new((z ^ (z >> 31)) | 1))
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0.next_u64() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Text-like content (so deltas and compression both pay): lines of words and numbers.
fn content(rng: &mut Rng, len: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "alpha", "beta", "gamma", "delta", "kilo", "lima", "oscar", "zulu",
    ];
    let mut out = Vec::with_capacity(len + 32);
    while out.len() < len {
        let line = format!(
            "{}\t{}\t{}\n",
            rng.below(1_000_000),
            rng.pick(WORDS),
            rng.0.next_u64()
        );
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(len);
    out
}

fn random_len(rng: &mut Rng) -> usize {
    match rng.below(10) {
        0 => rng.below(64) as usize,
        // Over 64 chunks of ~1 KiB: a chunk-list blob.
        1 => 70_000 + rng.below(40_000) as usize,
        _ => 500 + rng.below(20_000) as usize,
    }
}

/// What a snapshot must hold.
#[derive(Clone, Debug)]
struct Expected {
    origin: usize,
    time: DateTime<Utc>,
    files: BTreeMap<String, Vec<u8>>,
}

/// A directory being backed up, and every content its files ever had (so some come back).
struct Origin {
    files: BTreeMap<String, Vec<u8>>,
    history: Vec<Vec<u8>>,
}

struct Slot {
    name: &'static str,
    /// The store itself, and the view of it that the kill clock stops.
    store: Arc<dyn Storage>,
    view: Arc<CrashingStorage>,
    /// The view's writes when the slot was last checked.
    checked_at: Option<u64>,
    /// Snapshots known to be committed, and those a kill left uncertain.
    committed: BTreeMap<String, Expected>,
    uncertain: BTreeMap<String, Expected>,
    /// A writer that keeps its index across steps, as the binlog streamer does, and the
    /// `pruned` mark it saw when it last loaded it.
    long: Option<(Arc<Repo>, Option<String>)>,
    _dir: Option<tempfile::TempDir>,
}

struct World {
    seed: u64,
    rng: Rng,
    clock: Arc<Clock>,
    key: Option<RepoKey>,
    pack_size: usize,
    origins: Vec<Origin>,
    slots: Vec<Slot>,
    time: DateTime<Utc>,
    /// Backups taken so far: their number sets the time between them.
    backups: u64,
    /// Draws for the retention policies of prunes. A stream of its own, so the sequences of
    /// the regression seeds stay the ones that found their defects; those seeds prune by
    /// keep-last only.
    policy_rng: Rng,
    calendar: bool,
    /// Draws for prunes' `--max-unused`, a stream of its own for the same reason; the
    /// regression seeds never repack.
    repack_rng: Rng,
    /// Whether a kill is armed for this step.
    armed: bool,
    log: Vec<String>,
    kills: u64,
    /// Delta blobs prunes left out of the index: each one a delta the old prune kept.
    dropped_deltas: u64,
    /// Packs prunes repacked.
    repacked: u64,
}

/// What the run covered.
#[derive(Default, Debug)]
struct Totals {
    sequences: u64,
    steps: u64,
    kills: u64,
    storage_ops: u64,
    /// Delta blobs, and all blobs, in the repositories at the ends of the sequences.
    deltas: u64,
    blobs: u64,
    dropped_deltas: u64,
    repacked: u64,
}

impl World {
    fn new(seed: u64) -> World {
        let mut rng = Rng::new(seed);
        let clock = Clock::new(rng.0.next_u64());
        let key = rng.chance(25).then(|| {
            RepoKey::from_material(b"the torture test's key, 32 bytes or more").expect("key")
        });
        let local = rng.chance(15);
        let pack_size = *rng.pick(&[2 << 10, 4 << 10, 8 << 10, 32 << 10, 1 << 20]);
        let config = RepoConfig {
            chunker: ChunkerConfig::cdc(1024),
            pack_size: 1 << 20,
            ..RepoConfig::new()
        };
        let slots = ["A", "B"]
            .into_iter()
            .map(|name| {
                let (store, dir): (Arc<dyn Storage>, _) = if local {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let store = LocalStorage::create(dir.path()).expect("local store");
                    (Arc::new(store), Some(dir))
                } else {
                    (Arc::new(MemoryStorage::new()), None)
                };
                Repo::init_with_key(store.clone(), config.clone(), key.as_ref()).expect("init");
                let view = Arc::new(CrashingStorage::new(store.clone(), clock.clone()));
                Slot {
                    name,
                    store,
                    view,
                    checked_at: None,
                    committed: BTreeMap::new(),
                    uncertain: BTreeMap::new(),
                    long: None,
                    _dir: dir,
                }
            })
            .collect();
        let mut world = World {
            seed,
            rng,
            clock,
            key,
            pack_size,
            origins: Vec::new(),
            slots,
            time: "2026-01-01T00:00:00Z".parse().expect("time"),
            backups: 0,
            policy_rng: Rng::new(seed ^ 0x7e7e_7e7e),
            calendar: !REGRESSION_SEEDS.iter().any(|(s, _)| *s == seed),
            repack_rng: Rng::new(seed ^ 0x5a5a_5a5a),
            armed: false,
            log: Vec::new(),
            kills: 0,
            dropped_deltas: 0,
            repacked: 0,
        };
        for _ in 0..2 {
            let mut files = BTreeMap::new();
            for n in 0..2 + world.rng.below(4) {
                let len = random_len(&mut world.rng);
                files.insert(format!("f{n}"), content(&mut world.rng, len));
            }
            let history = files.values().cloned().collect();
            world.origins.push(Origin { files, history });
        }
        world.note(format!(
            "seed {seed}: {} stores, {}encrypted, packs of {} bytes",
            if local { "local" } else { "memory" },
            if world.key.is_some() { "" } else { "not " },
            pack_size
        ));
        world
    }

    fn note(&mut self, line: String) {
        self.log.push(line);
    }

    #[track_caller]
    fn fail(&self, what: String) -> ! {
        panic!(
            "torture seed {} failed: {what}\nsteps:\n  {}\n(rerun: MYVAULT_TORTURE_SEED={} MYVAULT_TORTURE_SEQUENCES=1)",
            self.seed,
            self.log.join("\n  "),
            self.seed
        )
    }

    /// The repository in slot `i` as this "process" opens it (subject to kills).
    fn open(&self, i: usize) -> Option<Arc<Repo>> {
        let view: Arc<dyn Storage> = self.slots[i].view.clone();
        Repo::open_with_key(view, self.key.as_ref())
            .ok()
            .map(Arc::new)
    }

    /// Arms a kill at a random operation of the next step, or not.
    fn maybe_arm(&mut self) {
        self.armed = self.rng.chance(35);
        if self.armed {
            let at = self.rng.below(40);
            self.clock.arm(at);
            self.note(format!("  kill armed at operation {at}"));
        } else {
            self.clock.disarm();
        }
    }

    fn step(&mut self) {
        self.maybe_arm();
        match self.rng.below(20) {
            0..=8 => self.backup(),
            9..=12 => self.prune(),
            13..=15 => self.copy(),
            16 => self.old_mark(),
            17 => self.drop_long_writers(),
            _ => self.read(),
        }
        if self.clock.killed() {
            // The process died: everything it had open goes; the stores stay.
            self.kills += 1;
            self.note("  killed".into());
            self.clock.revive();
            for s in &mut self.slots {
                s.long = None;
            }
        }
        self.clock.disarm();
        for i in 0..self.slots.len() {
            self.check(i);
        }
    }

    /// Changes some files of origin `o`, each in one of the ways data changes between backups.
    fn mutate(&mut self, o: usize) {
        let rng = &mut self.rng;
        let origin = &mut self.origins[o];
        let names: Vec<String> = origin.files.keys().cloned().collect();
        for name in names {
            match rng.below(20) {
                // A few bytes changed in place: the chunks around them become deltas.
                0..=7 => {
                    let f = origin.files.get_mut(&name).expect("file");
                    for _ in 0..1 + rng.below(3) {
                        if !f.is_empty() {
                            let at = rng.below(f.len() as u64) as usize;
                            f[at] = b'0' + rng.below(10) as u8;
                        }
                    }
                }
                // Bytes inserted: everything after shifts.
                8 => {
                    let f = origin.files.get_mut(&name).expect("file");
                    let at = rng.below(f.len() as u64 + 1) as usize;
                    let len = rng.below(300) as usize;
                    let extra = content(rng, len);
                    f.splice(at..at, extra);
                }
                // Rewritten: every chunk new (its older chunks and their deltas unneeded).
                9 | 10 => {
                    let len = random_len(rng);
                    origin.files.insert(name, content(rng, len));
                }
                // An older content comes back.
                11 | 12 => {
                    let old = rng.pick(&origin.history).clone();
                    origin.files.insert(name, old);
                }
                13 if origin.files.len() > 1 => {
                    origin.files.remove(&name);
                }
                _ => {}
            }
        }
        if rng.chance(20) || origin.files.is_empty() {
            let len = random_len(rng);
            let fresh = content(rng, len);
            origin.files.insert(format!("f{}", rng.below(6)), fresh);
        }
        let current: Vec<Vec<u8>> = origin.files.values().cloned().collect();
        origin.history.extend(current);
        if origin.history.len() > 24 {
            origin.history.drain(..origin.history.len() - 24);
        }
    }

    /// Which slots to write: one or both, in a random order.
    fn targets(&mut self) -> Vec<usize> {
        match self.rng.below(4) {
            0 => vec![0],
            1 => vec![1],
            2 => vec![0, 1],
            _ => vec![1, 0],
        }
    }

    /// The repository instance a backup writes through: the long-running one (whose index
    /// is loaded again when the `pruned` mark changed, as the streamer does) or a fresh one.
    fn writer_repo(&mut self, i: usize) -> Option<Arc<Repo>> {
        if !self.rng.chance(50) {
            return self.open(i);
        }
        if self.slots[i].long.is_none() {
            let repo = self.open(i)?;
            // The mark first, then the index (loaded on first use), as the streamer does.
            let seen = repo.pruned_mark().ok()?;
            self.slots[i].long = Some((repo, seen));
        }
        let (repo, seen) = self.slots[i].long.as_mut()?;
        let mark = repo.pruned_mark().ok()?;
        if mark != *seen {
            repo.reload_index();
            *seen = mark;
        }
        Some(repo.clone())
    }

    fn backup(&mut self) {
        let o = self.rng.below(self.origins.len() as u64) as usize;
        self.mutate(o);
        let targets = self.targets();
        let threads = 1 + self.rng.below(2) as usize;
        self.note(format!(
            "backup of origin {o} into {:?} ({threads} threads)",
            targets
                .iter()
                .map(|&i| self.slots[i].name)
                .collect::<Vec<_>>()
        ));
        let mut repos = Vec::new();
        for &i in &targets {
            match self.writer_repo(i) {
                Some(r) => repos.push(r),
                None => return self.note("  could not open (killed)".into()),
            }
        }
        // Snapshots a second to weeks apart, so that hourly to yearly buckets all matter.
        const GAPS: [i64; 7] = [1, 2_400, 25_200, 86_400, 90_000, 518_400, 2_851_200];
        self.time += chrono::Duration::seconds(GAPS[(self.backups * 5 % 7) as usize]);
        self.backups += 1;
        let expected = Expected {
            origin: o,
            time: self.time,
            files: self.origins[o].files.clone(),
        };
        let parent = self.parent(&targets, o);
        let result = (|| {
            let mut w = MultiWriter::with_pack_size(repos.clone(), self.pack_size)?;
            w.set_stream_threads(threads);
            if let Some((k, id)) = &parent {
                let from = &repos[*k];
                w.set_parent(from.clone(), &from.snapshot(id)?);
            }
            for (path, bytes) in &expected.files {
                w.add_file(path, 0o644, &bytes[..], w.stream_chunker())?;
            }
            w.commit_snapshot(super::template_at(expected.time))
        })();
        match result {
            Ok(committed) => {
                for (&i, outcome) in targets.iter().zip(&committed.outcomes) {
                    let id = committed_id(&self.slots[i], expected.time);
                    self.note(format!("  {}: {:?}", self.slots[i].name, outcome.error));
                    match (outcome.error.is_none(), id) {
                        // Reported written: it must be there.
                        (true, Some(id)) => {
                            self.slots[i].committed.insert(id, expected.clone());
                        }
                        (true, None) => self.fail(format!(
                            "backup reported success in {} but no snapshot is there",
                            self.slots[i].name
                        )),
                        (false, _) => self.expect_maybe(i, &expected),
                    }
                }
            }
            Err(e) => {
                self.note(format!("  failed: {e}"));
                for &i in &targets {
                    self.expect_maybe(i, &expected);
                }
            }
        }
    }

    /// A snapshot that may or may not have been committed in slot `i`; its id is found by
    /// its time when the slot is checked.
    fn expect_maybe(&mut self, i: usize, expected: &Expected) {
        let key = format!("?{}", expected.time.to_rfc3339());
        self.slots[i].uncertain.insert(key, expected.clone());
    }

    /// The latest committed snapshot of origin `o` in one of `targets` (by position in it).
    fn parent(&mut self, targets: &[usize], o: usize) -> Option<(usize, String)> {
        let k = self.rng.below(targets.len() as u64) as usize;
        self.slots[targets[k]]
            .committed
            .iter()
            .filter(|(_, e)| e.origin == o)
            .max_by_key(|(_, e)| e.time)
            .map(|(id, _)| (k, id.clone()))
    }

    /// Keep-last `n`, and for all but the regression seeds some calendar rules and a PITR
    /// window too.
    fn retention_policy(&mut self, n: u32) -> RetentionPolicy {
        let mut policy = RetentionPolicy {
            keep_last: Some(n),
            ..Default::default()
        };
        if !self.calendar {
            return policy;
        }
        let r = &mut self.policy_rng;
        let mut count = || (r.below(3) > 0).then(|| 1 + r.below(3) as u32);
        policy.keep_hourly = count();
        policy.keep_daily = count();
        policy.keep_weekly = count();
        policy.keep_monthly = count();
        policy.keep_yearly = count();
        if self.policy_rng.chance(30) {
            let days = 1 + self.policy_rng.below(20) as i64;
            policy.keep_pitr_window = Some(chrono::Duration::days(days));
        }
        policy
    }

    /// How much garbage a prune leaves: from repacking every partly used pack to none.
    fn max_unused(&mut self) -> MaxUnused {
        if !self.calendar {
            return MaxUnused::Unlimited;
        }
        let r = &mut self.repack_rng;
        match r.below(5) {
            0 => MaxUnused::Unlimited,
            1 => MaxUnused::Percent(0.0),
            2 => MaxUnused::Percent(5.0),
            3 => MaxUnused::Percent(30.0),
            _ => MaxUnused::Bytes(r.below(16 << 10)),
        }
    }

    fn prune(&mut self) {
        let i = self.rng.below(2) as usize;
        let ids: Vec<String> = self.slots[i].committed.keys().cloned().collect();
        let forget: Vec<String> = match self.rng.below(3) {
            // Keep the last N of each origin, and by calendar rules.
            0 => {
                let n = 1 + self.rng.below(2) as u32;
                let policy = self.retention_policy(n);
                self.note(format!("  policy {}", policy.describe()));
                let manifests: Vec<SnapshotManifest> = self.slots[i]
                    .committed
                    .iter()
                    .map(|(id, e)| SnapshotManifest {
                        id: id.clone(),
                        extra: [("path".to_string(), format!("origin {}", e.origin).into())].into(),
                        ..super::template_at(e.time)
                    })
                    .collect();
                let kept = retention::keep(&manifests, &policy, self.time);
                ids.into_iter()
                    .filter(|id| !kept.contains_key(id))
                    .collect()
            }
            // Any of them.
            1 => ids.into_iter().filter(|_| self.rng.chance(50)).collect(),
            // None: collect garbage only.
            _ => Vec::new(),
        };
        let max_unused = self.max_unused();
        if self.armed && self.calendar {
            // A prune that repacks does far more than 40 operations (reading every manifest
            // and index file, then packs): a kill anywhere in it, its repack included.
            let at = self.repack_rng.below(160);
            self.clock.arm(at);
            self.note(format!("  kill armed again, at operation {at}"));
        }
        self.note(format!(
            "prune {} (max unused {max_unused}): forget {forget:?}",
            self.slots[i].name
        ));
        let Some(repo) = self.open(i) else {
            return self.note("  could not open (killed)".into());
        };
        let forget_keys = Forget {
            manifests: forget.iter().map(|id| snapshot_key(id)).collect(),
        };
        let result = prune::plan(&repo, &forget_keys, max_unused).and_then(|plan| {
            prune::execute(&repo, &plan)?;
            Ok(plan)
        });
        match result {
            Ok(plan) => {
                self.note(format!(
                    "  {} packs, {} dropped deltas, {} packs repacked into {}",
                    plan.packs.len(),
                    plan.dropped_deltas,
                    plan.repack.packs.len(),
                    plan.repack.new_packs
                ));
                self.dropped_deltas += plan.dropped_deltas as u64;
                self.repacked += plan.repack.packs.len() as u64;
                self.prune_finished_the_job(i, max_unused);
                for id in &forget {
                    self.slots[i].committed.remove(id);
                }
            }
            Err(e) if self.clock.killed() => {
                self.note(format!("  killed: {e}"));
                for id in &forget {
                    if let Some(e) = self.slots[i].committed.remove(id) {
                        self.slots[i].uncertain.insert(id.clone(), e);
                    }
                }
            }
            Err(e) => self.fail(format!("prune failed without a kill: {e}")),
        }
    }

    /// After a prune that ran to its end, the same prune again finds nothing to do: no
    /// garbage pack, no orphan, and the unused bytes within the limit (nothing to repack).
    fn prune_finished_the_job(&mut self, i: usize, max_unused: MaxUnused) {
        let repo = match Repo::open_with_key(self.slots[i].store.clone(), self.key.as_ref()) {
            Ok(r) => r,
            Err(e) => self.fail(format!("{} does not open: {e}", self.slots[i].name)),
        };
        match prune::plan(&repo, &Forget::default(), max_unused) {
            Ok(again) if again.is_empty() => {}
            Ok(again) => self.fail(format!("a second prune still has work: {again:?}")),
            Err(e) => self.fail(format!("a second prune's plan failed: {e}")),
        }
    }

    fn copy(&mut self) {
        let (from, to) = if self.rng.chance(50) { (0, 1) } else { (1, 0) };
        self.note(format!(
            "copy {} -> {}",
            self.slots[from].name, self.slots[to].name
        ));
        let (Some(a), Some(b)) = (self.open(from), self.open(to)) else {
            return self.note("  could not open (killed)".into());
        };
        let result = copy::copy(&a, &b, |_| {});
        let source: Vec<(String, Expected)> = self.slots[from]
            .committed
            .iter()
            .map(|(id, e)| (id.clone(), e.clone()))
            .collect();
        match result {
            Ok(report) => {
                if !report.manifests_skipped.is_empty() {
                    self.fail(format!("copy skipped {:?}", report.manifests_skipped));
                }
                for (id, e) in source {
                    self.slots[to].committed.insert(id, e);
                }
            }
            Err(e) if self.clock.killed() => {
                self.note(format!("  killed: {e}"));
                for (id, e) in source {
                    if !self.slots[to].committed.contains_key(&id) {
                        self.slots[to].uncertain.insert(id, e);
                    }
                }
            }
            Err(e) => self.fail(format!("copy failed without a kill: {e}")),
        }
    }

    /// The `pruned` mark an older myvault's prune wrote (no damage done): writers must check
    /// every delta they reuse until the next prune.
    fn old_mark(&mut self) {
        let i = self.rng.below(2) as usize;
        self.note(format!("old-style pruned mark in {}", self.slots[i].name));
        if let Some(repo) = self.open(i) {
            let _ = repo
                .storage()
                .put(PRUNED_KEY, pruned_mark(false).as_bytes());
        }
    }

    /// Verify and a restore, perhaps killed: they give the right bytes or an error, and write
    /// nothing.
    fn read(&mut self) {
        let i = self.rng.below(2) as usize;
        let ids: Vec<String> = self.slots[i].committed.keys().cloned().collect();
        let wanted = (!ids.is_empty()).then(|| self.rng.pick(&ids).clone());
        self.note(format!(
            "verify and restore {wanted:?} in {}",
            self.slots[i].name
        ));
        let writes = self.slots[i].view.writes();
        let Some(repo) = self.open(i) else {
            return self.note("  could not open (killed)".into());
        };
        if let Err(e) = verify::verify(&repo, self.rng.chance(50), |_, _| {}) {
            self.note(format!("  verify: {e}"));
        }
        if let Some(id) = wanted {
            let expected = self.slots[i].committed[&id].clone();
            match repo.snapshot(&id) {
                Ok(m) => match restores_to(&repo, &m, &expected) {
                    Ok(()) => {}
                    Err(e) if self.clock.killed() => self.note(format!("  restore: {e}")),
                    Err(e) => self.fail(format!("restore of {id} without a kill: {e}")),
                },
                Err(e) if self.clock.killed() => self.note(format!("  restore: {e}")),
                Err(e) => self.fail(format!("snapshot {id} without a kill: {e}")),
            }
        }
        if self.slots[i].view.writes() != writes {
            self.fail("verify or restore wrote to the repository".into());
        }
    }

    fn drop_long_writers(&mut self) {
        self.note("long-running writers stop".into());
        for s in &mut self.slots {
            s.long = None;
        }
    }

    /// Every invariant, on slot `i` opened afresh (unless nothing wrote to it since the last
    /// check: then it holds the same bytes).
    fn check(&mut self, i: usize) {
        let writes = self.slots[i].view.writes();
        if self.slots[i].checked_at == Some(writes) && self.slots[i].uncertain.is_empty() {
            return;
        }
        self.slots[i].checked_at = Some(writes);
        let name = self.slots[i].name;
        let repo = match Repo::open_with_key(self.slots[i].store.clone(), self.key.as_ref()) {
            Ok(r) => r,
            Err(e) => self.fail(format!("{name} does not open: {e}")),
        };
        let read_data = self.rng.chance(50);
        match verify::verify(&repo, read_data, |_, _| {}) {
            Ok(r) if r.problems.is_empty() => {}
            Ok(r) => self.fail(format!("verify of {name}: {:?}", r.problems)),
            Err(e) => self.fail(format!("verify of {name} failed: {e}")),
        }
        every_delta_has_a_whole_base(&repo).unwrap_or_else(|e| self.fail(format!("{name}: {e}")));
        let stored = match repo.snapshots() {
            Ok(s) => s,
            Err(e) => self.fail(format!("{name}: snapshots: {e}")),
        };
        let ids: BTreeSet<&str> = stored.iter().map(|m| m.id.as_str()).collect();
        for id in self.slots[i].committed.keys() {
            if !ids.contains(id.as_str()) {
                self.fail(format!("{name}: snapshot {id} was committed and is gone"));
            }
        }
        let uncertain = std::mem::take(&mut self.slots[i].uncertain);
        for m in &stored {
            let expected = match self.slots[i].committed.get(&m.id) {
                Some(e) => e.clone(),
                None => match uncertain_match(&uncertain, m) {
                    Some(e) => {
                        self.slots[i].committed.insert(m.id.clone(), e.clone());
                        e
                    }
                    None => self.fail(format!("{name}: snapshot {} nobody wrote", m.id)),
                },
            };
            if let Err(e) = restores_to(&repo, m, &expected) {
                self.fail(format!("{name}: snapshot {}: {e}", m.id));
            }
        }
    }

    fn run(mut self, totals: &mut Totals) {
        for n in 0..STEPS {
            self.note(format!("step {n}:"));
            self.step();
        }
        totals.sequences += 1;
        totals.steps += STEPS as u64;
        totals.kills += self.kills;
        totals.storage_ops += self.clock.ops();
        totals.dropped_deltas += self.dropped_deltas;
        totals.repacked += self.repacked;
        for slot in &self.slots {
            if let Ok(repo) = Repo::open_with_key(slot.store.clone(), self.key.as_ref()) {
                let (d, all) = repo
                    .with_index(|idx| {
                        let e = idx.entries_by_pack();
                        let all: usize = e.iter().map(|(_, e)| e.len()).sum();
                        let d = e
                            .iter()
                            .flat_map(|(_, e)| e)
                            .filter(|e| e.codec == Codec::Delta)
                            .count();
                        (d, all)
                    })
                    .unwrap_or((0, 0));
                totals.deltas += d as u64;
                totals.blobs += all as u64;
            }
        }
    }
}

/// The id of the snapshot of `time` in a slot's store, if one is there.
fn committed_id(slot: &Slot, time: DateTime<Utc>) -> Option<String> {
    let prefix = format!("snapshots/{}", time.format("%Y%m%dT%H%M%SZ"));
    let keys = slot.store.list(&prefix).ok()?;
    keys.first()
        .map(|o| o.key.trim_start_matches("snapshots/").to_string())
}

/// The uncertain snapshot a stored manifest is: by id (prune, copy) or by time (backup).
fn uncertain_match(
    uncertain: &BTreeMap<String, Expected>,
    m: &SnapshotManifest,
) -> Option<Expected> {
    uncertain
        .get(&m.id)
        .or_else(|| uncertain.get(&format!("?{}", m.time.to_rfc3339())))
        .cloned()
}

fn restores_to(repo: &Repo, m: &SnapshotManifest, expected: &Expected) -> Result<(), String> {
    let paths: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
    let want: Vec<&str> = expected.files.keys().map(String::as_str).collect();
    if paths != want {
        return Err(format!("files {paths:?}, expected {want:?}"));
    }
    for f in &m.files {
        let mut out = Vec::new();
        repo.copy_file(f, &mut out)
            .map_err(|e| format!("file {} does not restore: {e}", f.path))?;
        if out != expected.files[&f.path] {
            return Err(format!("file {} restores to other bytes", f.path));
        }
    }
    Ok(())
}

fn every_delta_has_a_whole_base(repo: &Repo) -> Result<(), String> {
    let entries = repo
        .with_index(|idx| idx.entries_by_pack())
        .map_err(|e| e.to_string())?;
    for e in entries.iter().flat_map(|(_, e)| e) {
        if e.codec != Codec::Delta {
            continue;
        }
        let base = repo
            .delta_base(&e.id)
            .map_err(|err| err.to_string())?
            .ok_or("a delta without a base")?;
        let whole = repo
            .blob(&base)
            .map_err(|err| err.to_string())?
            .is_some_and(|l| l.codec != Codec::Delta);
        if !whole {
            return Err(format!(
                "the index names delta {} whose base {} is not indexed whole",
                e.id.short(),
                base.short()
            ));
        }
    }
    Ok(())
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn run_seed(seed: u64, totals: &mut Totals) {
    World::new(seed).run(totals);
}

#[test]
fn regression_seeds_stay_fixed() {
    let mut totals = Totals::default();
    for (seed, _) in REGRESSION_SEEDS {
        run_seed(*seed, &mut totals);
    }
}

#[test]
fn random_sequences_of_backup_prune_copy_and_kills_keep_every_invariant() {
    let first = env_u64("MYVAULT_TORTURE_SEED").unwrap_or(1);
    let deadline =
        env_u64("MYVAULT_TORTURE_SECONDS").map(|s| Instant::now() + Duration::from_secs(s));
    let count = env_u64("MYVAULT_TORTURE_SEQUENCES").unwrap_or(CI_SEQUENCES);
    let started = Instant::now();
    let mut totals = Totals::default();
    let mut seed = first;
    loop {
        let done = match deadline {
            Some(d) => Instant::now() >= d,
            None => totals.sequences >= count,
        };
        if done {
            break;
        }
        run_seed(seed, &mut totals);
        seed += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    // The figures of the run, for the log of CI and of scripts/torture.
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "torture: seeds {first}..{}: {} sequences, {} steps, {} kills, {} storage operations, {} of {} blobs left deltas, {} unneeded deltas dropped by prunes, {} packs repacked, in {secs:.1} s ({:.1} sequences/s, {:.0} steps/s)",
            seed.saturating_sub(1),
            totals.sequences,
            totals.steps,
            totals.kills,
            totals.storage_ops,
            totals.deltas,
            totals.blobs,
            totals.dropped_deltas,
            totals.repacked,
            totals.sequences as f64 / secs,
            totals.steps as f64 / secs
        );
    }
    assert!(totals.sequences > 0);
}
