//! Delta blobs: a chunk stored as the difference from an older chunk of the same file.
//!
//! Content-defined chunks of about 1 MiB deduplicate whole chunks only. When 1% of a table's
//! rows change, spread evenly, nearly every chunk of its dump changes a little and plain
//! dedup stores the table again. A delta blob stores such a chunk as a zstd frame compressed
//! with the older chunk's plaintext as a reference prefix, which costs roughly the changed
//! bytes.
//!
//! Stored layout (codec 2): the 32-byte id of the base blob, then the zstd frame.
//! Invariant: a base is never itself a delta blob, so reading any chunk needs at most one
//! other blob, whatever the number of snapshots in between.

use zstd::zstd_safe::{CCtx, CParameter, DCtx};

use super::codec::MAX_BLOB;
use super::id::Id;

/// zstd's default decoder limit: frames within it decode without special settings.
const MAX_WINDOW_LOG: u32 = 27;

/// The base a delta blob names.
pub fn base_of(stored: &[u8]) -> Option<Id> {
    stored.get(..Id::LEN).and_then(Id::from_slice)
}

/// `data` as a delta against `base` (whose id is `base_id`), or `None` when the two are too
/// large to fit in one zstd window.
pub fn encode(base_id: &Id, base: &[u8], data: &[u8], level: i32) -> Option<Vec<u8>> {
    let window_log = window_log(base.len() + data.len())?;
    let mut cctx = CCtx::try_create()?;
    cctx.set_parameter(CParameter::CompressionLevel(level))
        .ok()?;
    // The level's own window may be smaller than base + data; the base must stay reachable.
    cctx.set_parameter(CParameter::WindowLog(window_log)).ok()?;
    // Fast levels keep hash tables far smaller than a whole chunk, so most of the base would
    // be forgotten before the data is compared with it. Long-distance matching indexes the
    // base by 64-byte runs, which is what an edited copy shares with its original.
    cctx.set_parameter(CParameter::EnableLongDistanceMatching(true))
        .ok()?;
    cctx.ref_prefix(base).ok()?;
    let mut out = Vec::with_capacity(Id::LEN + zstd::zstd_safe::compress_bound(data.len()));
    out.extend_from_slice(base_id.as_bytes());
    let mut frame = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
    cctx.compress2(&mut frame, data).ok()?;
    out.extend_from_slice(&frame);
    Some(out)
}

/// The plaintext of a delta blob of `raw_len` bytes, given its base's plaintext.
pub fn decode(stored: &[u8], base: &[u8], raw_len: usize) -> Result<Vec<u8>, String> {
    // The length comes from the index: checked before it sizes the output buffer.
    if raw_len > MAX_BLOB {
        return Err(format!(
            "blob length {raw_len} exceeds the {MAX_BLOB}-byte limit"
        ));
    }
    let frame = stored
        .get(Id::LEN..)
        .ok_or("delta blob shorter than its base id")?;
    let mut dctx = DCtx::try_create().ok_or("zstd: cannot allocate a decoder")?;
    dctx.ref_prefix(base)
        .map_err(|c| format!("zstd: {}", zstd::zstd_safe::get_error_name(c)))?;
    let mut out = Vec::with_capacity(raw_len);
    dctx.decompress(&mut out, frame)
        .map_err(|c| format!("zstd: {}", zstd::zstd_safe::get_error_name(c)))?;
    if out.len() != raw_len {
        return Err(format!(
            "delta decoded to {} bytes, expected {raw_len}",
            out.len()
        ));
    }
    Ok(out)
}

fn window_log(bytes: usize) -> Option<u32> {
    let log = usize::BITS - bytes.max(1 << 10).saturating_sub(1).leading_zeros();
    (log <= MAX_WINDOW_LOG).then_some(log)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut rng = crate::test_rng::XorShift64::new(seed | 1);
        (0..n).map(|_| b'a' + (rng.next_u64() % 26) as u8).collect()
    }

    #[test]
    fn small_change_costs_little_and_round_trips() {
        let base = noise(1 << 20, 7);
        let mut data = base.clone();
        // One changed byte every ~19 KB, like updating every 100th row of a dump.
        for i in (0..data.len()).step_by(19_000) {
            data[i] = b'#';
        }
        let base_id = Id::sha256(&base);
        let stored = encode(&base_id, &base, &data, 1).unwrap();
        assert_eq!(base_of(&stored), Some(base_id));
        assert!(
            stored.len() < 4096,
            "delta of 56 changes took {} bytes",
            stored.len()
        );
        assert_eq!(decode(&stored, &base, data.len()).unwrap(), data);
        // The wrong base gives an error or other bytes, which the id check then rejects.
        let other = noise(1 << 20, 9);
        if let Ok(out) = decode(&stored, &other, data.len()) {
            assert_ne!(out, data);
        }
        assert!(decode(&stored[..20], &base, data.len()).is_err());
    }

    #[test]
    fn delta_blob_claiming_a_length_over_the_limit_is_refused_before_allocating() {
        let base = noise(4096, 3);
        let data = noise(4096, 4);
        let stored = encode(&Id::sha256(&base), &base, &data, 1).unwrap();
        let err = decode(&stored, &base, 3_026_329_608).unwrap_err();
        assert!(err.contains("exceeds"), "{err}");
        assert_eq!(decode(&stored, &base, data.len()).unwrap(), data);
    }

    #[test]
    fn window_covers_base_and_data() {
        assert_eq!(window_log(1), Some(10));
        assert_eq!(window_log(2 << 20), Some(21));
        assert_eq!(window_log((2 << 20) + 1), Some(22));
        assert_eq!(window_log(1 << 28), None);
    }
}
