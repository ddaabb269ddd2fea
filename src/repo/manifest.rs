//! Snapshot manifests, binlog segment manifests and the repository config: JSON documents
//! behind a one-line envelope that carries their SHA-256, so a truncated or damaged manifest
//! is detected before anything trusts it.
//!
//! The fields that describe a database server (GTID sets, binlog coordinates) are plain
//! strings here: the repository stores them, it does not interpret them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::id::{HashAlg, Hasher, Id};

/// Refs inline up to this many chunks; beyond, the list is stored as a blob of its own.
pub const INLINE_CHUNKS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
}

/// The chunks of one file, in order: listed inline, or in a chunk-list blob (the 32-byte ids
/// back to back) for large files, so manifests stay small whatever the data size.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRefs {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_list: Option<Id>,
    /// Number of chunks (whichever way they are listed).
    #[serde(default)]
    pub chunk_count: u64,
}

/// The check of a whole file's content, made while writing it and again on restore. It is
/// stored under the name of what made it, so each manifest says how to check it:
/// - `"crc64"`: CRC-64/NVME as 16 hex digits, what snapshots' files get. Every chunk is already
///   named by a cryptographic hash and checked against it on every read, so this only has to
///   catch chunks put back together wrongly (order, omission, length), and a CRC does that at a
///   fifth of a hash's cost, on backup and on restore.
/// - `"blake3"` or `"sha256"`: a hash of the whole content, what binlog segments get (their
///   digest also names the server's file) and what older snapshots' files have.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentDigest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    blake3: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    crc64: Option<Crc64>,
}

impl ContentDigest {
    /// No digest: entries without content, and content checked some other way.
    pub const NONE: ContentDigest = ContentDigest {
        sha256: None,
        blake3: None,
        crc64: None,
    };

    pub fn new(alg: HashAlg, id: Id) -> ContentDigest {
        match alg {
            HashAlg::Sha256 => ContentDigest {
                sha256: Some(id),
                ..ContentDigest::NONE
            },
            HashAlg::Blake3 => ContentDigest {
                blake3: Some(id),
                ..ContentDigest::NONE
            },
        }
    }

    pub fn of(hasher: Hasher) -> ContentDigest {
        let alg = hasher.alg();
        ContentDigest::new(alg, hasher.finish())
    }

    /// The whole-content hash, when this digest is one.
    pub fn get(&self) -> Option<(HashAlg, Id)> {
        match (self.sha256, self.blake3) {
            (_, Some(id)) => Some((HashAlg::Blake3, id)),
            (Some(id), None) => Some((HashAlg::Sha256, id)),
            (None, None) => None,
        }
    }

    /// The CRC-64/NVME, when this digest is one (logical dumps fold their files' CRCs into
    /// per-table checksums).
    pub fn crc64(&self) -> Option<u64> {
        self.crc64.map(|c| c.0)
    }

    /// A new check of the same kind, to run over content that should match this digest;
    /// `None` when there is nothing to check.
    pub fn checker(&self) -> Option<ContentCheck> {
        if self.crc64.is_some() {
            return Some(ContentCheck::crc64());
        }
        self.get().map(|(alg, _)| ContentCheck::Hash(alg.hasher()))
    }
}

/// A CRC-64/NVME value, written as 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crc64(u64);

impl Serialize for Crc64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:016x}", self.0))
    }
}

impl<'de> Deserialize<'de> for Crc64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text.len() != 16 {
            return Err(serde::de::Error::custom("a crc64 has 16 hex digits"));
        }
        u64::from_str_radix(&text, 16)
            .map(Crc64)
            .map_err(serde::de::Error::custom)
    }
}

/// A [`ContentDigest`] being computed.
pub enum ContentCheck {
    Hash(Hasher),
    Crc64(crc_fast::Digest),
}

impl ContentCheck {
    /// The check snapshots' files are written with.
    pub fn crc64() -> ContentCheck {
        ContentCheck::Crc64(crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Nvme))
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            ContentCheck::Hash(h) => h.update(data),
            ContentCheck::Crc64(c) => c.update(data),
        }
    }

    pub fn finish(self) -> ContentDigest {
        match self {
            ContentCheck::Hash(h) => ContentDigest::of(h),
            ContentCheck::Crc64(c) => ContentDigest {
                crc64: Some(Crc64(c.finalize())),
                ..ContentDigest::NONE
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative path, `/`-separated.
    pub path: String,
    pub kind: FileKind,
    /// Unix permission bits.
    pub mode: u32,
    pub size: u64,
    #[serde(flatten)]
    pub digest: ContentDigest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(flatten)]
    pub refs: ChunkRefs,
}

/// The server a snapshot or segment came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// host:port, never with credentials.
    pub address: String,
    pub server_uuid: String,
    pub server_id: u64,
    pub flavor: String,
    pub version: String,
}

impl SnapshotManifest {
    /// For a snapshot of plain files (no source server), the path that was backed up.
    pub fn backed_up_path(&self) -> Option<&str> {
        self.extra.get("path").and_then(|p| p.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotManifest {
    pub id: String,
    /// `logical`, `clone`, `cold` or `files`.
    pub method: String,
    /// The consistent point: on the source's clock when there is a source.
    pub time: DateTime<Utc>,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    /// Host that ran the backup.
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binlog_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binlog_position: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid_executed: Option<String>,
    /// Seconds the global lock was held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_seconds: Option<f64>,
    /// Plaintext bytes of all files.
    pub size: u64,
    /// Bytes this snapshot added to this repository (packed, compressed).
    pub new_bytes: u64,
    pub files: Vec<FileEntry>,
    /// Engine-specific facts (table list, options used), kept for the restore engine.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// One archived binlog file, or the archived prefix of one that is still being written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinlogSegment {
    pub source_uuid: String,
    pub server_id: u64,
    /// The server's file name, e.g. `binlog.000042`.
    pub file: String,
    /// Bytes archived, from the start of the file.
    pub size: u64,
    /// True when the file is complete (ends with a rotate or stop event).
    pub sealed: bool,
    pub first_event_time: Option<DateTime<Utc>>,
    pub last_event_time: Option<DateTime<Utc>>,
    /// Microsecond commit timestamps of the first and last transaction, where recorded.
    pub first_commit_us: Option<i64>,
    pub last_commit_us: Option<i64>,
    pub transactions: u64,
    /// GTIDs of the transactions in this segment.
    pub gtids: String,
    /// The file's previous-GTIDs header: everything before it.
    pub previous_gtids: String,
    #[serde(flatten)]
    pub digest: ContentDigest,
    pub archived_at: DateTime<Utc>,
    pub host: String,
    #[serde(flatten)]
    pub refs: ChunkRefs,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl BinlogSegment {
    /// A sealed segment with the given facts and no data, for tests of the logic above it.
    #[cfg(test)]
    pub fn sample(source_uuid: &str, file: &str, gtids: &str, previous_gtids: &str) -> Self {
        BinlogSegment {
            source_uuid: source_uuid.into(),
            server_id: 1,
            file: file.into(),
            size: 10,
            sealed: true,
            first_event_time: None,
            last_event_time: None,
            first_commit_us: None,
            last_commit_us: None,
            transactions: 0,
            gtids: gtids.into(),
            previous_gtids: previous_gtids.into(),
            digest: ContentDigest::new(HashAlg::Blake3, HashAlg::Blake3.id(b"")),
            archived_at: Utc::now(),
            host: "h".into(),
            refs: ChunkRefs::default(),
            extra: BTreeMap::new(),
        }
    }

    /// The archived file as a file entry, to read it back through the repository.
    pub fn file_entry(&self) -> FileEntry {
        FileEntry {
            path: self.file.clone(),
            kind: FileKind::File,
            mode: 0o640,
            size: self.size,
            digest: self.digest,
            target: None,
            refs: self.refs.clone(),
        }
    }
}

/// A hole in a source's archive, recorded by the streamer when the source had purged binlogs
/// the archive needed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GapRecord {
    pub server_uuid: String,
    pub detail: String,
    pub detected_at: DateTime<Utc>,
}

/// Wraps a document: `MYVAULT <kind> 1 sha256=<hex>\n<json>`.
pub fn encode<T: Serialize>(kind: &str, doc: &T) -> Vec<u8> {
    // Serialising our own plain structs cannot fail.
    let body = serde_json::to_vec_pretty(doc).unwrap_or_default();
    let mut out = format!("MYVAULT {kind} 1 sha256={}\n", Id::sha256(&body)).into_bytes();
    out.extend_from_slice(&body);
    out.push(b'\n');
    out
}

/// Unwraps and checks a document written by [`encode`].
pub fn decode<T: DeserializeOwned>(kind: &str, data: &[u8]) -> Result<T, String> {
    let nl = data
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no envelope line")?;
    let head = std::str::from_utf8(&data[..nl]).map_err(|_| "envelope is not text")?;
    let mut parts = head.split(' ');
    let (magic, k, version, hash) = (parts.next(), parts.next(), parts.next(), parts.next());
    if magic != Some("MYVAULT") || k != Some(kind) {
        return Err(format!("not a {kind} document"));
    }
    if version != Some("1") {
        return Err(format!(
            "unsupported {kind} format version {}",
            version.unwrap_or("?")
        ));
    }
    let hash = hash
        .and_then(|h| h.strip_prefix("sha256="))
        .and_then(Id::parse)
        .ok_or("bad checksum field")?;
    let body = data[nl + 1..]
        .strip_suffix(b"\n")
        .ok_or("truncated (no final newline)")?;
    if Id::sha256(body) != hash {
        return Err("checksum mismatch (truncated or damaged)".into());
    }
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_detects_truncation_and_damage() {
        let doc = SourceInfo {
            address: "h:1".into(),
            server_uuid: "u".into(),
            server_id: 1,
            flavor: "MySQL".into(),
            version: "9.7".into(),
        };
        let bytes = encode("test", &doc);
        assert_eq!(decode::<SourceInfo>("test", &bytes).unwrap(), doc);
        assert!(decode::<SourceInfo>("other", &bytes).is_err());
        for cut in [1, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                decode::<SourceInfo>("test", &bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut bad = bytes.clone();
        let n = bad.len();
        bad[n - 5] ^= 1;
        assert!(decode::<SourceInfo>("test", &bad).is_err());
    }

    #[test]
    fn file_checks_are_crc64_nvme_in_hex_and_check_what_they_name() {
        // The standard check value of CRC-64/NVME.
        let mut check = ContentCheck::crc64();
        check.update(b"1234");
        check.update(b"56789");
        let digest = check.finish();
        let text = serde_json::to_string(&digest).unwrap();
        assert_eq!(text, r#"{"crc64":"ae8b14860a799888"}"#);
        assert_eq!(
            serde_json::from_str::<ContentDigest>(&text).unwrap(),
            digest
        );
        assert!(serde_json::from_str::<ContentDigest>(r#"{"crc64":"ae8b"}"#).is_err());
        // A checker made from a digest computes the same kind.
        let mut again = digest.checker().unwrap();
        again.update(b"123456789");
        assert_eq!(again.finish(), digest);
        let mut other = digest.checker().unwrap();
        other.update(b"123456780");
        assert_ne!(other.finish(), digest);
        let hashed = ContentDigest::new(HashAlg::Blake3, HashAlg::Blake3.id(b"x"));
        let mut again = hashed.checker().unwrap();
        again.update(b"x");
        assert_eq!(again.finish(), hashed);
        assert!(ContentDigest::NONE.checker().is_none());
    }

    #[test]
    fn segment_digest_round_trips_under_its_hash_name_and_old_ones_read() {
        let mut seg = BinlogSegment::sample("u", "binlog.000001", "", "");
        for alg in [HashAlg::Sha256, HashAlg::Blake3] {
            seg.digest = ContentDigest::new(alg, alg.id(b"file"));
            let bytes = encode("binlog", &seg);
            let text = String::from_utf8_lossy(&bytes);
            assert!(text.contains(&format!("\"{alg}\": ")), "{text}");
            let back: BinlogSegment = decode("binlog", &bytes).unwrap();
            assert_eq!(back, seg);
            assert!(back.extra.is_empty(), "{:?}", back.extra);
        }
        // Written before digests had a choice of hash: `sha256` is read as one.
        let mut old = serde_json::to_value(&seg).unwrap();
        let fields = old.as_object_mut().unwrap();
        fields.remove("blake3");
        let hex = Id::sha256(b"file").to_hex();
        fields.insert("sha256".into(), hex.into());
        let old: BinlogSegment = serde_json::from_value(old).unwrap();
        assert_eq!(
            old.digest.get(),
            Some((HashAlg::Sha256, Id::sha256(b"file")))
        );
    }
}
