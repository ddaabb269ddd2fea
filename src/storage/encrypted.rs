//! Client-side encryption of every object a store holds, below the repository: what reaches
//! the disk or the bucket is ciphertext, and the layers above see the same plaintext objects,
//! ranges and sizes as without it.
//!
//! An encrypted object is `MVENC001`, a random 16-byte salt, then the plaintext in 64 KiB
//! segments, each sealed with AES-256-GCM and its 16-byte tag. The object's key is derived
//! from the repository key and the salt (so nonces can simply count segments, and no two
//! objects ever share a key and nonce); a segment's nonce is its number and a flag marking the
//! last one, and the object's name is authenticated with every segment. Reading a range
//! decrypts only the segments it covers, so a restore still fetches single chunks out of
//! packs. Moving, truncating, or swapping objects or segments is caught, like any damage, as
//! a `Damaged` error.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

use super::{ObjectInfo, Result, Storage, StorageError};

const MAGIC: &[u8; 8] = b"MVENC001";
const SALT_LEN: usize = 16;
const HEADER_LEN: usize = MAGIC.len() + SALT_LEN;
const TAG_LEN: usize = 16;
/// Plaintext bytes per segment.
const SEGMENT: usize = 64 * 1024;
const SEALED_SEGMENT: usize = SEGMENT + TAG_LEN;
/// Salts remembered for range reads (one extra small read per object otherwise).
const SALT_CACHE: usize = 8192;

/// The 32-byte key objects are encrypted under. Never printed.
#[derive(Clone)]
pub struct EncryptionKey([u8; 32]);

impl EncryptionKey {
    pub fn from_bytes(bytes: [u8; 32]) -> EncryptionKey {
        EncryptionKey(bytes)
    }

    fn for_object(&self, salt: &[u8]) -> LessSafeKey {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(b"myvault object key v1");
        h.update(salt);
        let key = UnboundKey::new(&AES_256_GCM, h.finalize().as_bytes())
            // A 32-byte key is what AES-256 takes: this cannot fail.
            .unwrap_or_else(|_| unreachable!("AES-256 key length"));
        LessSafeKey::new(key)
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptionKey(..)")
    }
}

/// Segment `index`'s nonce: its number, and whether it ends the object.
fn nonce(index: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[3] = u8::from(last);
    n[4..].copy_from_slice(&index.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// Segments an object of `plain` bytes is sealed in (an empty object has one, empty).
fn segments(plain: u64) -> u64 {
    plain.div_ceil(SEGMENT as u64).max(1)
}

fn sealed_len(plain: u64) -> u64 {
    HEADER_LEN as u64 + plain + segments(plain) * TAG_LEN as u64
}

/// The plaintext size of a sealed object of `sealed` bytes; `None` if no plaintext has it.
fn plain_len(sealed: u64) -> Option<u64> {
    let body = sealed.checked_sub(HEADER_LEN as u64)?;
    let segs = body.div_ceil(SEALED_SEGMENT as u64).max(1);
    let plain = body.checked_sub(segs * TAG_LEN as u64)?;
    (sealed_len(plain) == sealed).then_some(plain)
}

/// Encrypts the objects of `inner`, except those `is_plain` names (what must be readable
/// before the key is known, such as a repository's config and its locks).
pub struct EncryptedStorage {
    inner: Arc<dyn Storage>,
    key: EncryptionKey,
    is_plain: fn(&str) -> bool,
    salts: Mutex<HashMap<String, [u8; SALT_LEN]>>,
}

impl EncryptedStorage {
    pub fn new(inner: Arc<dyn Storage>, key: EncryptionKey, is_plain: fn(&str) -> bool) -> Self {
        EncryptedStorage {
            inner,
            key,
            is_plain,
            salts: Mutex::new(HashMap::new()),
        }
    }

    fn damaged(&self, key: &str, detail: &str) -> StorageError {
        StorageError::Damaged {
            store: self.inner.name().to_string(),
            key: key.to_string(),
            detail: detail.to_string(),
        }
    }

    fn seal(&self, key: &str, plain: &[u8]) -> Vec<u8> {
        let mut salt = [0u8; SALT_LEN];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut salt);
        let object_key = self.key.for_object(&salt);
        let mut out = Vec::with_capacity(sealed_len(plain.len() as u64) as usize);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&salt);
        let count = segments(plain.len() as u64);
        let mut pieces = plain.chunks(SEGMENT);
        for i in 0..count {
            let piece = pieces.next().unwrap_or_default();
            let start = out.len();
            out.extend_from_slice(piece);
            let tag = object_key
                .seal_in_place_separate_tag(
                    nonce(i, i + 1 == count),
                    Aad::from(key.as_bytes()),
                    &mut out[start..],
                )
                // Only inputs over 2^36 bytes per segment fail: ours are 64 KiB.
                .unwrap_or_else(|_| unreachable!("AES-GCM segment too long"));
            out.extend_from_slice(tag.as_ref());
        }
        out
    }

    fn salt_of(&self, key: &str, header: &[u8]) -> Result<[u8; SALT_LEN]> {
        if header.len() < HEADER_LEN || &header[..MAGIC.len()] != MAGIC {
            return Err(self.damaged(key, "not an encrypted object (bad header)"));
        }
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&header[MAGIC.len()..HEADER_LEN]);
        Ok(salt)
    }

    /// Opens the sealed segments in `sealed[skip..]`, the first of them segment `first`, and
    /// returns their plaintext in the same buffer (moved to its start). `ends` says whether
    /// the last of them ends the object; `None` when the caller cannot tell (a range read
    /// that stopped at a full segment), and both are tried.
    fn open_segments(
        &self,
        key: &str,
        salt: &[u8],
        first: u64,
        mut sealed: Vec<u8>,
        skip: usize,
        ends: Option<bool>,
    ) -> Result<Vec<u8>> {
        let object_key = self.key.for_object(salt);
        let count = (sealed.len() - skip).div_ceil(SEALED_SEGMENT);
        let damaged = || {
            self.damaged(
                key,
                "does not decrypt: damaged, truncated, moved, or not written with this key",
            )
        };
        let mut plain_end = 0;
        for i in 0..count {
            let from = skip + i * SEALED_SEGMENT;
            let to = (from + SEALED_SEGMENT).min(sealed.len());
            let piece = &mut sealed[from..to];
            let index = first + i as u64;
            let aad = || Aad::from(key.as_bytes());
            let n = if i + 1 < count {
                object_key.open_in_place(nonce(index, false), aad(), piece)
            } else {
                match ends {
                    Some(last) => object_key.open_in_place(nonce(index, last), aad(), piece),
                    None => {
                        let kept = piece.to_vec();
                        match object_key.open_in_place(nonce(index, false), aad(), piece) {
                            Ok(p) => Ok(p),
                            Err(_) => {
                                piece.copy_from_slice(&kept);
                                object_key.open_in_place(nonce(index, true), aad(), piece)
                            }
                        }
                    }
                }
            }
            .map_err(|_| damaged())?
            .len();
            // Plaintext moves left over the header and the tags already passed.
            sealed.copy_within(from..from + n, plain_end);
            plain_end += n;
        }
        sealed.truncate(plain_end);
        Ok(sealed)
    }

    /// Plaintext bytes `offset..offset + len` of an object whose salt is known: only the
    /// segments they lie in are fetched.
    fn read_range(&self, key: &str, salt: &[u8], offset: u64, len: u64) -> Result<Vec<u8>> {
        let seg = SEGMENT as u64;
        let first = offset / seg;
        let last = (offset + len - 1) / seg;
        let start = HEADER_LEN as u64 + first * SEALED_SEGMENT as u64;
        let want = (last - first + 1) * SEALED_SEGMENT as u64;
        let sealed = self.inner.get_range(key, start, want)?;
        if sealed.is_empty() {
            // The object ends before the range.
            return Ok(Vec::new());
        }
        // Fewer bytes than asked: the object's last segment is among them. All of them: it
        // may or may not be (a last segment can be exactly full).
        let ends = ((sealed.len() as u64) < want).then_some(true);
        let plain = self.open_segments(key, salt, first, sealed, 0, ends)?;
        let skip = (offset - first * seg) as usize;
        let end = (skip + len as usize).min(plain.len());
        Ok(plain.get(skip..end).map(<[u8]>::to_vec).unwrap_or_default())
    }

    fn forget(&self, key: &str) {
        self.salts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    fn remember(&self, key: &str, salt: [u8; SALT_LEN]) {
        let mut salts = self.salts.lock().unwrap_or_else(|e| e.into_inner());
        if salts.len() >= SALT_CACHE {
            salts.clear();
        }
        salts.insert(key.to_string(), salt);
    }

    fn cached_salt(&self, key: &str) -> Option<[u8; SALT_LEN]> {
        let salts = self.salts.lock().unwrap_or_else(|e| e.into_inner());
        salts.get(key).copied()
    }
}

impl fmt::Debug for EncryptedStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptedStorage")
    }
}

impl Storage for EncryptedStorage {
    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        if (self.is_plain)(key) {
            return self.inner.put(key, data);
        }
        self.forget(key);
        self.inner.put(key, &self.seal(key, data))
    }

    fn create(&self, key: &str, data: &[u8]) -> Result<bool> {
        if (self.is_plain)(key) {
            return self.inner.create(key, data);
        }
        self.inner.create(key, &self.seal(key, data))
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        let sealed = self.inner.get(key)?;
        if (self.is_plain)(key) {
            return Ok(sealed);
        }
        let salt = self.salt_of(key, &sealed)?;
        if plain_len(sealed.len() as u64).is_none() {
            return Err(self.damaged(key, "truncated (its length fits no encrypted object)"));
        }
        self.open_segments(key, &salt, 0, sealed, HEADER_LEN, Some(true))
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        if (self.is_plain)(key) {
            return self.inner.get_range(key, offset, len);
        }
        if len == 0 {
            return Ok(Vec::new());
        }
        if let Some(salt) = self.cached_salt(key) {
            match self.read_range(key, &salt, offset, len) {
                // Another process may have written the object again (same plaintext, new
                // salt): forget the salt and read the header once more.
                Err(StorageError::Damaged { .. }) => self.forget(key),
                other => return other,
            }
        }
        let header = self.inner.get_range(key, 0, HEADER_LEN as u64)?;
        let salt = self.salt_of(key, &header)?;
        self.remember(key, salt);
        self.read_range(key, &salt, offset, len)
    }

    fn stat(&self, key: &str) -> Result<Option<u64>> {
        let size = self.inner.stat(key)?;
        if (self.is_plain)(key) {
            return Ok(size);
        }
        match size {
            None => Ok(None),
            Some(sealed) => plain_len(sealed).map(Some).ok_or_else(|| {
                self.damaged(key, "truncated (its length fits no encrypted object)")
            }),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut objects = self.inner.list(prefix)?;
        for obj in &mut objects {
            if !(self.is_plain)(&obj.key) {
                // A damaged size shows as 0 here; reading the object names the damage.
                obj.size = plain_len(obj.size).unwrap_or(0);
            }
        }
        Ok(objects)
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.forget(key);
        self.inner.delete(key)
    }

    fn delete_many(&self, keys: &[String]) -> Result<()> {
        keys.iter().for_each(|k| self.forget(k));
        self.inner.delete_many(keys)
    }

    fn leftovers(&self, age: std::time::Duration) -> Result<Vec<ObjectInfo>> {
        self.inner.leftovers(age)
    }

    fn remove_leftovers(&self, keys: &[String]) -> Result<()> {
        self.inner.remove_leftovers(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStorage;

    fn store() -> EncryptedStorage {
        EncryptedStorage::new(
            Arc::new(MemoryStorage::new()),
            EncryptionKey::from_bytes([7; 32]),
            |k| k == "config",
        )
    }

    #[test]
    fn keeps_every_storage_promise() {
        crate::storage::conformance::run_all(&store());
    }

    #[test]
    fn sizes_map_both_ways() {
        for plain in [0u64, 1, 100, 65535, 65536, 65537, 3 * 65536, 1 << 24] {
            assert_eq!(plain_len(sealed_len(plain)), Some(plain), "{plain}");
        }
        assert_eq!(plain_len(HEADER_LEN as u64 + 3), None);
    }

    #[test]
    fn ranges_across_segments_read_what_was_written() {
        let s = store();
        for len in [0usize, 1, 65536, 65537, 200_000, 3 * 65536] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            s.put("packs/x", &data).unwrap();
            assert_eq!(s.get("packs/x").unwrap(), data);
            assert_eq!(s.stat("packs/x").unwrap(), Some(len as u64));
            for (off, n) in [
                (0, 10),
                (65530, 20),
                (65536, 65536),
                (1, len),
                (len / 2, len),
            ] {
                let want = data
                    .get(off.min(len)..(off + n).min(len))
                    .unwrap_or_default();
                assert_eq!(
                    s.get_range("packs/x", off as u64, n as u64).unwrap(),
                    want,
                    "len {len} off {off} n {n}"
                );
            }
        }
    }

    #[test]
    fn a_range_read_survives_another_writer_resealing_the_object() {
        let s = store();
        let data = vec![5u8; 200_000];
        s.put("packs/r", &data).unwrap();
        assert_eq!(s.get_range("packs/r", 70_000, 10).unwrap(), vec![5u8; 10]);
        // Another process writes the same plaintext again under a new salt.
        let other =
            EncryptedStorage::new(s.inner.clone(), EncryptionKey::from_bytes([7; 32]), |_| {
                false
            });
        other.put("packs/r", &data).unwrap();
        assert_eq!(s.get_range("packs/r", 70_000, 10).unwrap(), vec![5u8; 10]);
    }

    #[test]
    fn ciphertext_shows_nothing_and_damage_is_caught() {
        let s = store();
        let secret = b"row value 12345 that must not be stored in clear".repeat(3000);
        s.put("packs/p", &secret).unwrap();
        s.put("config", b"plain config").unwrap();
        let raw = s.inner.get("packs/p").unwrap();
        assert!(
            !raw.windows(9).any(|w| w == b"row value"),
            "plaintext stored"
        );
        assert_eq!(s.inner.get("config").unwrap(), b"plain config");

        // One flipped bit anywhere after the header, a truncation, a swapped name: all refused.
        for at in [HEADER_LEN, HEADER_LEN + 70_000, raw.len() - 1] {
            let mut bad = raw.clone();
            bad[at] ^= 1;
            s.inner.put("packs/p", &bad).unwrap();
            assert!(
                matches!(s.get("packs/p"), Err(StorageError::Damaged { .. })),
                "{at}"
            );
        }
        s.inner
            .put("packs/p", &raw[..raw.len() - SEALED_SEGMENT])
            .unwrap();
        assert!(s.get("packs/p").is_err(), "truncation at a segment edge");
        s.inner.put("packs/q", &raw).unwrap();
        assert!(matches!(
            s.get("packs/q"),
            Err(StorageError::Damaged { .. })
        ));

        // Another key cannot read it.
        let other = EncryptedStorage::new(
            Arc::new(MemoryStorage::new()),
            EncryptionKey::from_bytes([8; 32]),
            |_| false,
        );
        other.inner.put("packs/p", &raw).unwrap();
        assert!(matches!(
            other.get("packs/p"),
            Err(StorageError::Damaged { .. })
        ));
    }
}
