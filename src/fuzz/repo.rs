//! Repository targets: manifests, index files, pack files and blob codecs as raw bytes, and
//! whole repositories (plain and encrypted) and encrypted objects with damage applied. The
//! promise checked: a damaged object is an integrity error, never wrong data.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use chrono::{TimeZone, Utc};

use super::{MIB, Target};
use crate::error::{Error, ErrorKind};
use crate::repo::chunker::ChunkerConfig;
use crate::repo::codec::{self, Codec, MAX_BLOB};
use crate::repo::config::RepoConfig;
use crate::repo::id::{HashAlg, Id};
use crate::repo::key::RepoKey;
use crate::repo::manifest::{self, BinlogSegment, GapRecord, SnapshotManifest};
use crate::repo::pack::{self, PackBuilder, PackEntry};
use crate::repo::writer::MultiWriter;
use crate::repo::{Repo, delta, index, verify};
use crate::storage::Storage;
use crate::storage::encrypted::{EncryptedStorage, EncryptionKey};
use crate::storage::memory::MemoryStorage;

/// A manifest: byte 0 picks the kind, byte 1 whether the rest is a whole document or a JSON
/// body that gets a correct envelope (so mutations reach the JSON decoder).
pub const MANIFEST: Target = Target {
    name: "manifest",
    run: run_manifest,
    generated_seeds: manifest_seeds,
    seed_dirs: &[],
    dictionary: &[
        b"MYVAULT snapshot 1 sha256=",
        b"\"files\": [",
        b"\"chunks\": [",
        b"\"chunk_list\": ",
        b"\"crc64\": \"",
        b"\"blake3\": \"",
        b"1e308",
        b"-0.0",
        b"\"2026-02-29T23:59:60.999999999+14:00\"",
        b"\\ud800",
        b"18446744073709551616",
    ],
    max_alloc: 4 * MIB,
    ci_inputs: 40_000,
    max_len: 64 * 1024,
};

/// An index file; byte 0 odd: the target appends the right trailing hash.
pub const INDEX: Target = Target {
    name: "index_file",
    run: run_index,
    generated_seeds: index_seeds,
    seed_dirs: &[],
    dictionary: &[b"MVINDX01"],
    max_alloc: 4 * MIB,
    ci_inputs: 40_000,
    max_len: 64 * 1024,
};

/// A pack file; byte 0 odd: the target writes the right header hash into the trailer.
pub const PACK: Target = Target {
    name: "pack_file",
    run: run_pack,
    generated_seeds: pack_seeds,
    seed_dirs: &[],
    dictionary: &[b"MVPACK01"],
    max_alloc: 4 * MIB,
    ci_inputs: 40_000,
    max_len: 64 * 1024,
};

/// A stored blob: byte 0 picks the codec, bytes 1..5 the plaintext length it claims.
pub const CODEC: Target = Target {
    name: "blob_codec",
    run: run_codec,
    generated_seeds: codec_seeds,
    seed_dirs: &[],
    dictionary: &[b"\x28\xb5\x2f\xfd"],
    // zstd decodes into a buffer of the length the index gives, up to the blob limit.
    max_alloc: MAX_BLOB + MIB,
    ci_inputs: 20_000,
    max_len: 64 * 1024,
};

/// A list of damage operations (6 bytes each) applied to a small repository's objects;
/// byte 0 odd: the repository is encrypted. Every snapshot is then listed and restored.
pub const DAMAGE: Target = Target {
    name: "repo_damage",
    run: run_damage,
    generated_seeds: damage_seeds,
    seed_dirs: &[],
    dictionary: &[],
    max_alloc: MAX_BLOB + MIB,
    ci_inputs: 800,
    max_len: 256,
};

/// Damage operations applied to one encrypted object, then whole and ranged reads.
pub const ENCRYPTED: Target = Target {
    name: "encrypted_object",
    run: run_encrypted,
    generated_seeds: encrypted_seeds,
    seed_dirs: &[],
    dictionary: &[],
    max_alloc: 4 * MIB,
    ci_inputs: 8_000,
    max_len: 256,
};

fn time(secs: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_opt(secs, 0).single().unwrap_or_default()
}

/// Kinds of documents, in the order byte 0 picks them.
const KINDS: &[&str] = &["snapshot", "binlog", "config", "gap"];

fn sample_snapshot() -> SnapshotManifest {
    let (mem, _) = pristine(false);
    let snaps = Repo::open(mem)
        .and_then(|r| r.snapshots())
        .unwrap_or_default();
    snaps
        .into_iter()
        .next_back()
        .unwrap_or_else(|| SnapshotManifest {
            lock_seconds: Some(0.25),
            ..sample_snapshot_template(0)
        })
}

fn sample_segment() -> BinlogSegment {
    let mut seg = BinlogSegment {
        source_uuid: "3e11fa47-71ca-11e1-9e33-c80aa9429562".into(),
        server_id: 7,
        file: "binlog.000042".into(),
        size: 5402,
        sealed: true,
        first_event_time: Some(time(1_800_000_000)),
        last_event_time: Some(time(1_800_000_100)),
        first_commit_us: Some(1_800_000_000_123_456),
        last_commit_us: Some(1_800_000_100_000_001),
        transactions: 9,
        gtids: "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-9".into(),
        previous_gtids: String::new(),
        digest: manifest::ContentDigest::new(HashAlg::Blake3, HashAlg::Blake3.id(b"file")),
        archived_at: time(1_800_000_200),
        host: "h".into(),
        refs: Default::default(),
        extra: BTreeMap::new(),
    };
    seg.extra
        .insert("note".into(), serde_json::json!({"a": [1, 2.5, null]}));
    seg
}

fn documents() -> Vec<(usize, Vec<u8>)> {
    let mut config = RepoConfig::new();
    config.id = "0123456789abcdef0123456789abcdef".into();
    config.created = time(1_800_000_000);
    vec![
        (0, manifest::encode("snapshot", &sample_snapshot())),
        (1, manifest::encode("binlog", &sample_segment())),
        (2, manifest::encode("config", &config)),
        (
            3,
            manifest::encode(
                "gap",
                &GapRecord {
                    server_uuid: "u".into(),
                    detail: "purged".into(),
                    detected_at: time(1_800_000_000),
                },
            ),
        ),
    ]
}

fn manifest_seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (kind, doc) in documents() {
        let mut whole = vec![kind as u8, 0];
        whole.extend_from_slice(&doc);
        out.push(whole);
        // The JSON body alone, for the enveloping mode.
        let nl = doc.iter().position(|&b| b == b'\n').unwrap_or(0);
        let mut body = vec![kind as u8, 1];
        body.extend_from_slice(doc[nl + 1..].strip_suffix(b"\n").unwrap_or_default());
        out.push(body);
    }
    out
}

fn run_manifest(data: &[u8]) {
    let [kind, mode, rest @ ..] = data else {
        return;
    };
    let kind = KINDS[usize::from(*kind) % KINDS.len()];
    let doc = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let mut doc = format!("MYVAULT {kind} 1 sha256={}\n", Id::sha256(rest)).into_bytes();
        doc.extend_from_slice(rest);
        doc.push(b'\n');
        doc
    };
    match kind {
        "snapshot" => round_trip::<SnapshotManifest>(kind, &doc),
        "binlog" => round_trip::<BinlogSegment>(kind, &doc),
        "config" => {
            if let Ok(c) = round_trip_value::<RepoConfig>(kind, &doc) {
                let _ = c.validate();
            }
        }
        _ => round_trip::<GapRecord>(kind, &doc),
    }
}

fn round_trip<T>(kind: &str, doc: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let _ = round_trip_value::<T>(kind, doc);
}

/// What decodes encodes again, and the encoding decodes to the same value.
fn round_trip_value<T>(kind: &str, doc: &[u8]) -> Result<T, String>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let value: T = manifest::decode(kind, doc)?;
    let again = manifest::encode(kind, &value);
    let back: T = manifest::decode(kind, &again)
        .unwrap_or_else(|e| panic!("a decoded {kind} does not decode once encoded again: {e}"));
    assert_eq!(back, value, "{kind} changed by encoding it again");
    assert_eq!(manifest::encode(kind, &back), again, "encoding is stable");
    Ok(value)
}

fn entry(name: &[u8], codec: Codec, offset: u32, raw_len: u32, stored_len: u32) -> PackEntry {
    PackEntry {
        id: Id::sha256(name),
        codec,
        offset,
        raw_len,
        stored_len,
    }
}

fn index_seeds() -> Vec<Vec<u8>> {
    let packs = vec![
        (
            Id::sha256(b"p1"),
            vec![
                entry(b"a", Codec::Zstd, 8, 100, 40),
                entry(b"b", Codec::Raw, 48, 7, 7),
            ],
        ),
        (
            Id::sha256(b"p2"),
            vec![entry(b"c", Codec::Delta, 8, 5000, 90)],
        ),
        (Id::sha256(b"p3"), vec![]),
    ];
    let mut out = Vec::new();
    for file in [index::encode_file(&packs), index::encode_file(&[])] {
        let mut whole = vec![0];
        whole.extend_from_slice(&file);
        out.push(whole);
        let mut body = vec![1];
        body.extend_from_slice(&file[..file.len() - 32]);
        out.push(body);
    }
    // The index files of the sample repository.
    let (mem, _) = pristine(false);
    for obj in mem.list("index/").unwrap_or_default() {
        if let Ok(d) = mem.get(&obj.key) {
            let mut whole = vec![0];
            whole.extend_from_slice(&d);
            out.push(whole);
        }
    }
    out
}

fn run_index(data: &[u8]) {
    let [mode, rest @ ..] = data else { return };
    let mut file = rest.to_vec();
    if mode & 1 != 0 {
        let hash = Id::sha256(&file);
        file.extend_from_slice(hash.as_bytes());
    }
    let Ok(packs) = index::decode_file(&file) else {
        return;
    };
    assert_eq!(
        index::encode_file(&packs),
        file,
        "decode then encode changed the file"
    );
    let mut idx = index::Index::new();
    for (pack, entries) in &packs {
        idx.add_pack(*pack, entries);
    }
    // The first location of each blob wins.
    let mut first: BTreeMap<Id, (Id, PackEntry)> = BTreeMap::new();
    for (pack, entries) in &packs {
        for e in entries {
            first.entry(e.id).or_insert((*pack, *e));
        }
    }
    assert_eq!(idx.len(), first.len());
    for (id, (pack, e)) in &first {
        let loc = idx.get(id).expect("an indexed blob is found");
        assert_eq!(
            (loc.pack, loc.codec, loc.offset, loc.raw_len, loc.stored_len),
            (*pack, e.codec, e.offset, e.raw_len, e.stored_len)
        );
    }
    let listed: usize = idx.entries_by_pack().iter().map(|(_, e)| e.len()).sum();
    assert_eq!(listed, first.len());
}

fn pack_seeds() -> Vec<Vec<u8>> {
    let mut b = PackBuilder::new(0);
    b.add(Id::sha256(b"one"), Codec::Raw, 3, b"one");
    b.add(Id::sha256(b"two"), Codec::Zstd, 99, b"zz");
    let (bytes, _) = b.finish();
    let mut out = vec![[&[0u8][..], &bytes].concat()];
    let (mem, _) = pristine(false);
    for obj in mem.list("packs/").unwrap_or_default() {
        if let Ok(d) = mem.get(&obj.key)
            && d.len() < 64 * 1024
        {
            out.push([&[1u8][..], &d].concat());
        }
    }
    out
}

fn run_pack(data: &[u8]) {
    let [mode, rest @ ..] = data else { return };
    let mut file = rest.to_vec();
    if mode & 1 != 0 {
        reseal_pack_header(&mut file);
    }
    let Ok(entries) = pack::parse_header(&file) else {
        return;
    };
    // The blobs tile the pack between the magic and the header, and building a pack of the
    // same blobs gives the same bytes.
    let mut b = PackBuilder::new(0);
    let mut at = pack::MAGIC.len();
    for e in &entries {
        assert_eq!(e.offset as usize, at, "blobs tile the pack");
        let stored = &file[at..at + e.stored_len as usize];
        b.add(e.id, e.codec, e.raw_len, stored);
        at += e.stored_len as usize;
    }
    let (rebuilt, rebuilt_entries) = b.finish();
    assert_eq!(rebuilt_entries, entries);
    assert_eq!(
        &rebuilt[..],
        &file[..],
        "a parsed pack builds back to the same bytes"
    );
}

/// Writes the hash of the header the trailer's count describes, where it fits.
fn reseal_pack_header(file: &mut [u8]) {
    let n = file.len();
    if n < pack::MAGIC.len() + pack::TRAILER_LEN {
        return;
    }
    let t = n - pack::TRAILER_LEN;
    let count = u32::from_le_bytes([file[t], file[t + 1], file[t + 2], file[t + 3]]) as usize;
    let Some(len) = count.checked_mul(pack::ENTRY_LEN).filter(|&l| l <= t) else {
        return;
    };
    let hash = Id::sha256(&file[t - len..t]);
    file[t + 4..t + 36].copy_from_slice(hash.as_bytes());
}

/// A base for delta blobs: text-like, so deltas against it are small.
fn delta_base() -> &'static [u8] {
    static BASE: OnceLock<Vec<u8>> = OnceLock::new();
    BASE.get_or_init(|| sample_data(8 * 1024, 3))
}

fn sample_data(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = super::mutate::Rng::new(seed);
    (0..n)
        .map(|i| {
            if i % 3 == 0 {
                rng.next_u64() as u8
            } else {
                b'a' + (rng.next_u64() % 26) as u8
            }
        })
        .collect()
}

fn codec_seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let data = sample_data(3000, 5);
    let (c, z) = codec::encode(&data, 3);
    let head = |codec: u8, len: usize| {
        let mut v = vec![codec];
        v.extend_from_slice(&(len as u32).to_le_bytes());
        v
    };
    out.push([head(c as u8, data.len()), z].concat());
    let mut edited = delta_base().to_vec();
    edited[100] = b'#';
    edited.extend_from_slice(b"appended");
    if let Some(d) = delta::encode(&Id::sha256(delta_base()), delta_base(), &edited, 1) {
        out.push([head(Codec::Delta as u8, edited.len()), d].concat());
    }
    out.push([head(Codec::Raw as u8, 5), b"plain".to_vec()].concat());
    out
}

fn run_codec(data: &[u8]) {
    let [selector, a, b, c, d, stored @ ..] = data else {
        return;
    };
    let raw_len = u32::from_le_bytes([*a, *b, *c, *d]) as usize;
    let Some(codec) = Codec::from_byte(selector % 3) else {
        return;
    };
    let out = match codec {
        Codec::Delta => delta::decode(stored, delta_base(), raw_len),
        plain => codec::decode(plain, stored, raw_len),
    };
    let Ok(out) = out else { return };
    if codec != Codec::Raw {
        assert_eq!(out.len(), raw_len, "decoded to another length than asked");
    }
    let (c, z) = codec::encode(&out, 1);
    assert_eq!(codec::decode(c, &z, out.len()).as_ref(), Ok(&out));
}

/// The sample repository: two snapshots of a few files (one with a chunk list, one changed
/// in the second so it is stored as deltas), and what each file holds.
struct Sample {
    mem: Arc<MemoryStorage>,
    files: Contents,
}

fn key() -> RepoKey {
    RepoKey::from_material(b"the fuzz targets' repository key, 32+ bytes")
        .unwrap_or_else(|e| panic!("{e}"))
}

fn build_sample(encrypted: bool) -> Sample {
    let mem = Arc::new(MemoryStorage::new());
    let config = RepoConfig {
        chunker: ChunkerConfig::cdc(1024),
        pack_size: 1 << 20,
        ..RepoConfig::new()
    };
    let key = encrypted.then(key);
    let repo = Arc::new(Repo::init_with_key(mem.clone(), config, key.as_ref()).expect("init"));
    let big = sample_data(90 * 1024, 11);
    let mut changed = big.clone();
    for i in (0..changed.len()).step_by(9000) {
        changed[i] = b'#';
    }
    let versions: [Vec<(&str, Vec<u8>)>; 2] = [
        vec![
            ("big", big),
            ("small", b"a small file".to_vec()),
            ("empty", Vec::new()),
        ],
        vec![("big", changed), ("small", b"a small file".to_vec())],
    ];
    let mut files = BTreeMap::new();
    let mut parent: Option<SnapshotManifest> = None;
    for (n, version) in versions.iter().enumerate() {
        let mut w = MultiWriter::new(vec![repo.clone()]).expect("writer");
        if let Some(p) = &parent {
            w.set_parent(repo.clone(), p);
        }
        for (name, bytes) in version {
            w.add_file(name, 0o644, &bytes[..], w.stream_chunker())
                .expect("add file");
        }
        let mut t = sample_snapshot_template(n);
        t.files.clear();
        let id = t.id.clone();
        w.commit_snapshot(t).expect("commit");
        for (name, bytes) in version {
            files.insert((id.clone(), name.to_string()), bytes.clone());
        }
        parent = Some(repo.snapshot(&id).expect("snapshot"));
    }
    Sample { mem, files }
}

fn sample_snapshot_template(n: usize) -> SnapshotManifest {
    let t = time(1_800_000_000 + n as i64 * 3600);
    SnapshotManifest {
        id: format!("2027010{n}T000000Z-fuzz"),
        method: "files".into(),
        time: t,
        started: t,
        finished: t,
        host: "fuzz".into(),
        source: None,
        binlog_file: None,
        binlog_position: None,
        gtid_executed: None,
        lock_seconds: None,
        size: 0,
        new_bytes: 0,
        files: Vec::new(),
        extra: BTreeMap::new(),
    }
}

/// What each (snapshot, file) of the sample repository holds.
type Contents = BTreeMap<(String, String), Vec<u8>>;

/// The sample repository, built once per process.
fn pristine(encrypted: bool) -> (Arc<MemoryStorage>, &'static Contents) {
    static PLAIN: OnceLock<Sample> = OnceLock::new();
    static SEALED: OnceLock<Sample> = OnceLock::new();
    let s = if encrypted {
        SEALED.get_or_init(|| build_sample(true))
    } else {
        PLAIN.get_or_init(|| build_sample(false))
    };
    (s.mem.clone(), &s.files)
}

/// A copy of a store's objects.
fn copy_store(from: &MemoryStorage) -> Arc<MemoryStorage> {
    let to = Arc::new(MemoryStorage::new());
    for obj in from.list("").unwrap_or_default() {
        if let Ok(d) = from.get(&obj.key) {
            let _ = to.put(&obj.key, &d);
        }
    }
    to
}

/// One damage operation: which object (of the store's keys, sorted), what to do, where.
struct Op {
    object: usize,
    kind: u8,
    pos: usize,
    value: u8,
    len: usize,
}

fn ops(data: &[u8]) -> Vec<Op> {
    data.chunks_exact(6)
        .map(|c| Op {
            object: usize::from(c[0]),
            kind: c[1],
            pos: usize::from(u16::from_le_bytes([c[2], c[3]])),
            value: c[4],
            len: usize::from(c[5]),
        })
        .collect()
}

/// Applies `op` to `bytes`; `other` is another object's bytes (for swaps and splices).
fn apply(op: &Op, bytes: &mut Vec<u8>, other: &[u8]) {
    let n = bytes.len();
    // Positions scale to the object, so one input damages small and large objects alike.
    let at = if n == 0 { 0 } else { op.pos * n / 65536 };
    match op.kind % 8 {
        0 if n > 0 => bytes[at] ^= 1 << (op.value % 8),
        1 if n > 0 => bytes[at] = op.value,
        2 => bytes.truncate(at),
        3 => bytes
            .splice(at..at, std::iter::repeat_n(op.value, op.len + 1))
            .for_each(drop),
        4 => {
            let end = (at + op.len + 1).min(n);
            bytes.drain(at..end);
        }
        5 => {
            let end = (at + op.len + 1).min(n);
            let piece = bytes[at..end].to_vec();
            bytes.splice(end..end, piece).for_each(drop);
        }
        6 => *bytes = other.to_vec(),
        _ => {
            let from = if other.is_empty() {
                0
            } else {
                op.pos * other.len() / 65536
            };
            let end = (from + op.len + 1).min(other.len());
            let stop = (at + op.len + 1).min(n);
            bytes
                .splice(at..stop, other[from..end].iter().copied())
                .for_each(drop);
        }
    }
}

/// Makes a damaged index file or pack header consistent again (its hash), as a buggy writer
/// would leave it: the chunk ids must still catch every wrong byte.
fn reseal(key: &str, bytes: &mut [u8]) {
    if key.starts_with("index/") && bytes.len() >= 32 {
        let body = bytes.len() - 32;
        let hash = Id::sha256(&bytes[..body]);
        bytes[body..].copy_from_slice(hash.as_bytes());
    } else if key.starts_with("packs/") {
        reseal_pack_header(bytes);
    }
}

fn damage_seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for enc in [0u8, 1] {
        for object in 0..12u8 {
            out.push(vec![enc, object, object % 8, 0x00, 0x80, 0x55, 3]);
        }
        out.push(vec![enc, 3, 1, 0x10, 0x20, 0x00, 0, 3, 9, 0, 0, 0, 0]);
    }
    out
}

fn is_integrity(e: crate::repo::RepoError) -> Result<(), String> {
    let text = e.to_string();
    match Error::from(e).kind() {
        ErrorKind::Integrity => Ok(()),
        kind => Err(format!("{kind:?}: {text}")),
    }
}

fn run_damage(data: &[u8]) {
    let [flags, rest @ ..] = data else { return };
    let encrypted = flags & 1 != 0;
    let (mem, expected) = pristine(encrypted);
    let store = copy_store(&mem);
    let keys: Vec<String> = store
        .list("")
        .unwrap_or_default()
        .into_iter()
        .map(|o| o.key)
        // The config is the one object read before anything can be checked.
        .filter(|k| k != crate::repo::CONFIG_KEY)
        .collect();
    if keys.is_empty() {
        return;
    }
    for op in ops(rest) {
        let key = &keys[op.object % keys.len()];
        let other_key = &keys[(op.object + 1 + op.len) % keys.len()];
        let other = store.get(other_key).unwrap_or_default();
        store.tamper(key, |bytes| {
            apply(&op, bytes, &other);
            if !encrypted && op.value & 0x80 != 0 {
                reseal(key, bytes);
            }
        });
    }
    let key = encrypted.then(key);
    let repo = Repo::open_with_key(store.clone(), key.as_ref()).expect("the config is intact");
    let mut failures = Vec::new();
    let snapshots = match repo.snapshots() {
        Ok(s) => s,
        Err(e) => {
            is_integrity(e).unwrap_or_else(|e| panic!("listing snapshots: {e}"));
            failures.push("listing".to_string());
            // Each one that still reads is checked below.
            expected
                .keys()
                .map(|(id, _)| id.clone())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .filter_map(|id| repo.snapshot(&id).ok())
                .collect()
        }
    };
    for snap in &snapshots {
        for f in &snap.files {
            let want = expected.get(&(snap.id.clone(), f.path.clone()));
            let mut out = Vec::new();
            match repo.copy_file(f, &mut out) {
                Ok(_) => {
                    let want = want.unwrap_or_else(|| {
                        panic!(
                            "{}: {} restored, but no such file was backed up",
                            snap.id, f.path
                        )
                    });
                    assert!(out == *want, "{} {}: wrong data restored", snap.id, f.path);
                }
                Err(e) => {
                    is_integrity(e)
                        .unwrap_or_else(|e| panic!("restoring {} {}: {e}", snap.id, f.path));
                    failures.push(f.path.clone());
                }
            }
        }
    }
    if !failures.is_empty() {
        let report = verify::verify(&repo, true, |_, _| {});
        if let Ok(r) = report {
            assert!(
                !r.problems.is_empty(),
                "restores failed ({failures:?}), yet verify found nothing"
            );
        }
    }
}

fn encrypted_seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for size in 0..7u8 {
        out.push(vec![size, 10, 0, 0, 0, 20, 0, 0, 0x40, 0x55, 0x01, 0x10, 0]);
        out.push(vec![size, 200, 0, 0, 0, 255, 0, 2, 0xff, 0xff, 0x00, 0, 0]);
    }
    out
}

/// Plaintext sizes around the 64 KiB segments.
const PLAIN_SIZES: &[usize] = &[0, 1, 100, 65535, 65536, 65537, 140_000];

fn run_encrypted(data: &[u8]) {
    let [size, r1, r2, r3, r4, rest @ ..] = data else {
        return;
    };
    let plain = sample_data(PLAIN_SIZES[usize::from(*size) % PLAIN_SIZES.len()], 21);
    let inner = Arc::new(MemoryStorage::new());
    let cipher = EncryptionKey::from_bytes([9; 32]);
    let store = EncryptedStorage::new(inner.clone(), cipher.clone(), |_| false);
    store.put("packs/p", &plain).expect("memory put");
    // A range read first, so the salt is cached when the damage comes.
    let _ = store.get_range("packs/p", 0, 1);
    let pristine_sealed = inner.get("packs/p").unwrap_or_default();
    for op in ops(rest) {
        inner.tamper("packs/p", |bytes| apply(&op, bytes, &pristine_sealed));
    }
    let fresh = EncryptedStorage::new(inner.clone(), cipher, |_| false);
    let check =
        |what: &str, got: crate::storage::Result<Vec<u8>>, offset: usize, len: usize| match got {
            Ok(bytes) => {
                assert!(
                    bytes.len() <= len,
                    "{what}: {} bytes for a range of {len}",
                    bytes.len()
                );
                let want = plain.get(offset..).unwrap_or_default();
                assert!(
                    want.starts_with(&bytes),
                    "{what}: wrong data at {offset} (+{})",
                    bytes.len()
                );
            }
            Err(crate::storage::StorageError::Damaged { .. }) => {}
            Err(e) => panic!("{what}: {e} is not a damage error"),
        };
    for s in [&store, &fresh] {
        match s.get("packs/p") {
            Ok(bytes) => assert!(bytes == plain, "get: wrong data"),
            Err(crate::storage::StorageError::Damaged { .. }) => {}
            Err(e) => panic!("get: {e} is not a damage error"),
        }
        let n = plain.len().max(1);
        let offset = usize::from(*r1) * n / 256 + usize::from(*r2);
        let len = usize::from(*r3) * n / 128 + usize::from(*r4);
        check(
            "get_range",
            s.get_range("packs/p", offset as u64, len as u64),
            offset,
            len,
        );
        let _ = s.stat("packs/p");
    }
    // Whole reads of an undamaged object give it back exactly.
    if inner.get("packs/p").ok().as_deref() == Some(&pristine_sealed[..]) {
        assert_eq!(fresh.get("packs/p").ok().as_deref(), Some(&plain[..]));
    }
}
