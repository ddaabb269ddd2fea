//! How a blob is stored: compressed or not. The codec byte is recorded per blob in the pack
//! header and the index, which leaves room for encryption as a later codec.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};

/// Largest plaintext a blob may have; guards allocations against a damaged index.
pub const MAX_BLOB: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum Codec {
    Raw = 0,
    Zstd = 1,
    /// zstd against an older blob's plaintext; see [`super::delta`].
    Delta = 2,
}

impl Codec {
    pub fn from_byte(b: u8) -> Option<Codec> {
        match b {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Zstd),
            2 => Some(Codec::Delta),
            _ => None,
        }
    }
}

/// How zstd compresses: its level, and whether match finding is cut to almost nothing (a
/// 64-entry hash table). Cheap matching keeps the entropy coding, which is nearly all of the gain
/// on data such as random digits, and costs a quarter less; on text it loses a third of the
/// ratio, so [`super::adaptive`] uses it only where it measured no loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effort {
    pub level: i32,
    pub cheap_matching: bool,
}

impl Effort {
    pub fn level(level: i32) -> Effort {
        Effort {
            level,
            cheap_matching: false,
        }
    }
}

/// zstd's smallest hash table.
const CHEAP_HASH_LOG: u32 = 6;

thread_local! {
    /// Compression contexts of this thread, one per effort in use: a new context per chunk would
    /// allocate and clear its tables (megabytes) every time.
    static COMPRESSORS: RefCell<Vec<(Effort, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(Vec::new()) };
}

fn compressor(effort: Effort) -> std::io::Result<zstd::bulk::Compressor<'static>> {
    let mut c = zstd::bulk::Compressor::new(effort.level)?;
    if effort.cheap_matching {
        c.set_parameter(zstd::zstd_safe::CParameter::HashLog(CHEAP_HASH_LOG))?;
    }
    Ok(c)
}

/// Output buffers kept per thread: one for the chunk being stored, one for a second encoding
/// of it when the adaptive codec compares two.
const SPARE_OUTPUTS: usize = 2;

thread_local! {
    /// Output buffers given back with [`recycle`]: a fresh one per chunk was a fresh megabyte
    /// of memory to page in each time (most of a dump's page faults).
    static SPARES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Hands the buffer of an encoding that is no longer needed back for the next one; the
/// largest ones are kept, so they soon fit every chunk.
pub fn recycle(buf: Vec<u8>) {
    SPARES.with_borrow_mut(|spares| {
        spares.push(buf);
        spares.sort_by_key(|b| std::cmp::Reverse(b.capacity()));
        spares.truncate(SPARE_OUTPUTS);
    });
}

fn compress(data: &[u8], effort: Effort) -> std::io::Result<Vec<u8>> {
    let bound = zstd::zstd_safe::compress_bound(data.len());
    let mut out = SPARES
        .with_borrow_mut(|spares| (!spares.is_empty()).then(|| spares.remove(0)))
        .unwrap_or_default();
    out.clear();
    if out.capacity() < bound {
        // Not `reserve`: growing would copy the old buffer's bytes into fresh pages for
        // nothing.
        out = Vec::with_capacity(bound.max(2 * out.capacity()));
    }
    COMPRESSORS.with_borrow_mut(|contexts| {
        let i = match contexts.iter().position(|(e, _)| *e == effort) {
            Some(i) => i,
            None => {
                contexts.push((effort, compressor(effort)?));
                contexts.len() - 1
            }
        };
        contexts[i].1.compress_to_buffer(data, &mut out)
    })?;
    Ok(out)
}

/// Compresses `data` at `level`; keeps it raw when compression does not pay.
pub fn encode(data: &[u8], level: i32) -> (Codec, Vec<u8>) {
    encode_with(data, Effort::level(level))
}

/// [`encode`] with a given effort.
pub fn encode_with(data: &[u8], effort: Effort) -> (Codec, Vec<u8>) {
    match compress(data, effort) {
        Ok(z) if z.len() < data.len() => (Codec::Zstd, z),
        Ok(z) => {
            recycle(z);
            (Codec::Raw, data.to_vec())
        }
        Err(_) => (Codec::Raw, data.to_vec()),
    }
}

/// Restores the plaintext of a blob of `raw_len` bytes. Delta blobs need their base as well:
/// they go through the repository (`Repo::read_blob`), not through here.
pub fn decode(codec: Codec, stored: &[u8], raw_len: usize) -> Result<Vec<u8>, String> {
    if raw_len > MAX_BLOB {
        return Err(format!(
            "blob length {raw_len} exceeds the {MAX_BLOB}-byte limit"
        ));
    }
    match codec {
        Codec::Raw => Ok(stored.to_vec()),
        Codec::Zstd => {
            let out = zstd::bulk::decompress(stored, raw_len).map_err(|e| format!("zstd: {e}"))?;
            if out.len() != raw_len {
                return Err(format!(
                    "decompressed to {} bytes, expected {raw_len}",
                    out.len()
                ));
            }
            Ok(out)
        }
        Codec::Delta => Err("a delta blob cannot be decoded without its base".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_incompressible_stays_raw() {
        let text = b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".repeat(100);
        let (c, z) = encode(&text, 1);
        assert_eq!(c, Codec::Zstd);
        assert_eq!(decode(c, &z, text.len()).unwrap(), text);
        let mut rng = crate::test_rng::XorShift64::new(88172645463325252);
        let noise: Vec<u8> = (0..4096).map(|_| (rng.next_u64() >> 32) as u8).collect();
        let (c, z) = encode(&noise, 1);
        assert_eq!(c, Codec::Raw);
        assert_eq!(decode(c, &z, noise.len()).unwrap(), noise);
    }

    #[test]
    fn recycled_output_buffers_are_reused_and_never_leak_old_bytes() {
        let mut rng = crate::test_rng::XorShift64::new(7);
        let big: Vec<u8> = (0..1 << 20)
            .map(|_| b'0' + (rng.next_u64() % 10) as u8)
            .collect();
        let small = b"a short chunk, a short chunk, a short chunk".repeat(20);
        let (c, z) = encode(&big, 1);
        assert_eq!(decode(c, &z, big.len()).unwrap(), big);
        let capacity = z.capacity();
        recycle(z);
        let (c, z) = encode(&small, 1);
        assert!(z.capacity() >= capacity, "the big buffer is used again");
        assert_eq!(decode(c, &z, small.len()).unwrap(), small);
        assert!(z.len() < small.len());
        recycle(z);
        let (c, z) = encode(&big, 1);
        assert_eq!(decode(c, &z, big.len()).unwrap(), big);
    }

    #[test]
    fn damaged_blob_is_an_error() {
        let text = b"hello hello hello hello hello hello".repeat(50);
        let (c, mut z) = encode(&text, 3);
        let n = z.len();
        z[n / 2] ^= 0xFF;
        // zstd either fails or produces different bytes; the caller's hash check catches the latter.
        if let Ok(out) = decode(c, &z, text.len()) {
            assert_ne!(out, text);
        }
        assert!(decode(c, &z[..n / 2], text.len()).is_err());
    }
}
