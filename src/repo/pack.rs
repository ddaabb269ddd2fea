//! Pack files: many blobs in one object, so object stores see tens-of-MiB writes instead of
//! millions of small ones.
//!
//! Layout: `MVPACK01`, the blobs back to back, then a header describing them, the header's
//! entry count, the SHA-256 of the header, and `MVPACK01` again. A pack is named by the
//! repository's hash of all its bytes. The header sits at the end so
//! a pack can be written in one pass; the index repeats it, so reads never need it, but a
//! damaged or lost index can be rebuilt from the packs alone.

use super::codec::Codec;
use super::id::Id;

pub const MAGIC: &[u8; 8] = b"MVPACK01";
/// id, codec, raw length, stored length.
pub const ENTRY_LEN: usize = 32 + 1 + 4 + 4;
/// entry count, header hash, magic.
pub const TRAILER_LEN: usize = 4 + 32 + 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    pub id: Id,
    pub codec: Codec,
    pub offset: u32,
    pub raw_len: u32,
    pub stored_len: u32,
}

/// Packs of at least this capacity start on a page boundary of their buffer, so that storage
/// can write them around the page cache without first copying them to an aligned buffer.
const ALIGN_FROM: usize = 1 << 20;
const PAGE: usize = 4096;

/// A pack being filled: its bytes are the parts taken so far, then `buf[start..]`.
#[derive(Debug)]
pub struct PackBuilder {
    buf: Vec<u8>,
    start: usize,
    /// Bytes handed out by [`PackBuilder::take_part`].
    taken: usize,
    entries: Vec<PackEntry>,
}

/// A finished pack's bytes, inside the buffer that held them.
#[derive(Debug)]
pub struct PackBytes {
    buf: Vec<u8>,
    start: usize,
}

impl PackBytes {
    /// The buffer, to fill the next pack.
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }
}

impl std::ops::Deref for PackBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

impl PackBuilder {
    /// A builder that will not reallocate before `capacity` bytes: a pack grown by doubling
    /// would hold up to twice its size in memory.
    pub fn new(capacity: usize) -> PackBuilder {
        Self::reusing(buffer(capacity))
    }

    /// A builder filling `buf` (emptied first), e.g. the buffer of a pack already uploaded.
    pub fn reusing(mut buf: Vec<u8>) -> PackBuilder {
        let start = empty_from_page(&mut buf);
        buf.extend_from_slice(MAGIC);
        PackBuilder {
            buf,
            start,
            taken: 0,
            entries: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes so far (blobs plus magic), parts taken included.
    pub fn len(&self) -> usize {
        self.taken + self.buf.len() - self.start
    }

    /// Takes the bytes since the last part (or the start) up to the last whole page, if there
    /// are at least `min` of them: a part of the pack that can be stored before the pack is
    /// finished, at a page-aligned offset. The builder goes on in `next()` (emptied first),
    /// to which the few bytes past the cut move.
    pub fn take_part(&mut self, min: usize, next: impl FnOnce() -> Vec<u8>) -> Option<PackBytes> {
        let pending = self.buf.len() - self.start;
        if pending < min.max(PAGE) {
            return None;
        }
        let cut = self.start + pending / PAGE * PAGE;
        let mut next = next();
        let start = empty_from_page(&mut next);
        next.extend_from_slice(&self.buf[cut..]);
        self.buf.truncate(cut);
        let part = PackBytes {
            buf: std::mem::replace(&mut self.buf, next),
            start: self.start,
        };
        self.taken += cut - self.start;
        self.start = start;
        Some(part)
    }

    pub fn add(&mut self, id: Id, codec: Codec, raw_len: u32, stored: &[u8]) {
        let offset = self.len() as u32;
        self.buf.extend_from_slice(stored);
        self.entries.push(PackEntry {
            id,
            codec,
            offset,
            raw_len,
            stored_len: stored.len() as u32,
        });
    }

    /// The rest of the pack (its bytes since the last part taken, then the header) and what
    /// it holds. When no part was taken, the bytes are the whole pack, named by their hash.
    pub fn finish(mut self) -> (PackBytes, Vec<PackEntry>) {
        let header_start = self.buf.len();
        for e in &self.entries {
            self.buf.extend_from_slice(e.id.as_bytes());
            self.buf.push(e.codec as u8);
            self.buf.extend_from_slice(&e.raw_len.to_le_bytes());
            self.buf.extend_from_slice(&e.stored_len.to_le_bytes());
        }
        let header_hash = Id::sha256(&self.buf[header_start..]);
        self.buf
            .extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(header_hash.as_bytes());
        self.buf.extend_from_slice(MAGIC);
        let bytes = PackBytes {
            buf: self.buf,
            start: self.start,
        };
        (bytes, self.entries)
    }
}

/// An empty buffer for a pack or a part of one, of at least `capacity` bytes.
pub fn buffer(capacity: usize) -> Vec<u8> {
    let room = if capacity >= ALIGN_FROM { PAGE } else { 0 };
    Vec::with_capacity(capacity + room)
}

/// Empties `buf` and fills it up to its first page boundary (large buffers only), so that
/// what follows can be written around the page cache; returns where the content starts.
fn empty_from_page(buf: &mut Vec<u8>) -> usize {
    buf.clear();
    let start = if buf.capacity() >= ALIGN_FROM {
        buf.as_ptr().align_offset(PAGE).min(PAGE)
    } else {
        0
    };
    buf.resize(start, 0);
    start
}

/// Reads the header at the end of a whole pack file, checking its hash and that the blobs
/// it describes fill the pack exactly.
pub fn parse_header(pack: &[u8]) -> Result<Vec<PackEntry>, String> {
    if pack.len() < MAGIC.len() + TRAILER_LEN || !pack.starts_with(MAGIC) || !pack.ends_with(MAGIC)
    {
        return Err("not a pack file (magic missing or file too short)".into());
    }
    let trailer = &pack[pack.len() - TRAILER_LEN..];
    let count = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]) as usize;
    let header_len = count
        .checked_mul(ENTRY_LEN)
        .filter(|&l| l <= pack.len() - MAGIC.len() - TRAILER_LEN)
        .ok_or("pack header length exceeds the file")?;
    let header_end = pack.len() - TRAILER_LEN;
    let header = &pack[header_end - header_len..header_end];
    if Id::sha256(header).as_bytes()[..] != trailer[4..36] {
        return Err("pack header checksum mismatch".into());
    }
    let mut entries = Vec::with_capacity(count);
    let mut offset = MAGIC.len() as u64;
    for raw in header.chunks_exact(ENTRY_LEN) {
        let id = Id::from_slice(raw).ok_or("short entry")?;
        let codec = Codec::from_byte(raw[32])
            .ok_or_else(|| format!("unknown codec {} for blob {}", raw[32], id.short()))?;
        let raw_len = u32::from_le_bytes([raw[33], raw[34], raw[35], raw[36]]);
        let stored_len = u32::from_le_bytes([raw[37], raw[38], raw[39], raw[40]]);
        entries.push(PackEntry {
            id,
            codec,
            offset: offset as u32,
            raw_len,
            stored_len,
        });
        offset += u64::from(stored_len);
    }
    if offset != (header_end - header_len) as u64 {
        return Err("pack header does not match the blobs in the file".into());
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::id::HashAlg;

    #[test]
    fn build_and_parse() {
        let mut b = PackBuilder::new(0);
        b.add(Id::sha256(b"one"), Codec::Raw, 3, b"one");
        b.add(Id::sha256(b"two"), Codec::Zstd, 99, b"zz");
        let (bytes, entries) = b.finish();
        let parsed = parse_header(&bytes).unwrap();
        assert_eq!(parsed, entries);
        assert_eq!(&bytes[parsed[0].offset as usize..][..3], b"one");
        assert_eq!(parsed[1].offset, 11);
    }

    #[test]
    fn large_packs_start_on_a_page_and_their_buffer_is_reused() {
        let mut b = PackBuilder::new(2 << 20);
        b.add(Id::sha256(b"one"), Codec::Raw, 3, b"one");
        let (bytes, entries) = b.finish();
        assert_eq!(bytes.as_ptr() as usize % PAGE, 0);
        assert_eq!(parse_header(&bytes).unwrap(), entries);
        assert_eq!(entries[0].offset, 8);

        let buf = bytes.into_buffer();
        let capacity = buf.capacity();
        let mut b = PackBuilder::reusing(buf);
        b.add(Id::sha256(b"two"), Codec::Raw, 3, b"two");
        let (bytes, entries) = b.finish();
        assert_eq!(bytes.as_ptr() as usize % PAGE, 0);
        assert_eq!(&bytes[..8], MAGIC);
        assert_eq!(&bytes[entries[0].offset as usize..][..3], b"two");
        assert_eq!(bytes.into_buffer().capacity(), capacity);
    }

    #[test]
    fn parts_taken_while_filling_make_up_the_same_pack() {
        let blobs: Vec<Vec<u8>> = (0..40u32)
            .map(|i| {
                (0..(i as usize * 997 % 70_000 + 1))
                    .map(|j| (j as u32 * 31 + i) as u8)
                    .collect()
            })
            .collect();
        let build = |parts: bool| {
            let mut b = PackBuilder::new(2 << 20);
            let mut out: Vec<PackBytes> = Vec::new();
            for (i, blob) in blobs.iter().enumerate() {
                b.add(
                    HashAlg::Blake3.id(blob),
                    Codec::Raw,
                    blob.len() as u32,
                    blob,
                );
                if parts && let Some(part) = b.take_part(100_000, || buffer(2 << 20)) {
                    assert_eq!(part.as_ptr() as usize % PAGE, 0, "part after blob {i}");
                    assert_eq!(part.len() % PAGE, 0, "part after blob {i}");
                    out.push(part);
                }
            }
            assert_eq!(
                b.len(),
                blobs.iter().map(Vec::len).sum::<usize>() + MAGIC.len()
            );
            let (last, entries) = b.finish();
            out.push(last);
            (out, entries)
        };
        let (whole, entries) = build(false);
        let (parts, part_entries) = build(true);
        assert!(parts.len() > 3, "only {} parts", parts.len());
        let joined: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        assert_eq!(joined, whole[0][..]);
        assert_eq!(part_entries, entries);
        assert_eq!(parse_header(&joined).unwrap(), entries);
        for (e, blob) in entries.iter().zip(&blobs) {
            assert_eq!(&joined[e.offset as usize..][..blob.len()], &blob[..]);
        }
    }

    #[test]
    fn damage_is_detected() {
        let mut b = PackBuilder::new(0);
        b.add(Id::sha256(b"one"), Codec::Raw, 3, b"one");
        let (bytes, _) = b.finish();
        for i in 8..bytes.len() - 8 {
            let mut bad = bytes.to_vec();
            bad[i] ^= 1;
            // Blob bytes are covered by the chunk hash, not the header; everything else here.
            if i >= 11 {
                assert!(parse_header(&bad).is_err(), "flip at {i} not detected");
            }
        }
        assert!(parse_header(&bytes[..bytes.len() - 1]).is_err());
        assert!(parse_header(b"MVPACK01").is_err());
    }
}
