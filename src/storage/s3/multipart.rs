//! Uploading an object in parts, several at once, each retried alone.
//!
//! A pack sent as one PUT is sent again whole when its connection drops; sent in parts, only
//! the part whose connection dropped is. Parts go up [`PARTS_AT_ONCE`] at a time, over as many
//! connections, which also hides the round trips of a distant store. The object appears only
//! when the upload is completed, whole (the repository relies on objects being all or
//! nothing); an upload that fails is aborted, so no parts are left to be paid for. One left by
//! a killed process is invisible, and its parts are the bucket's lifecycle rule to expire
//! (`AbortIncompleteMultipartUpload`, see the operator guide).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

use super::S3Storage;
use crate::storage::Result;

/// The smallest part S3 takes (all but the last part).
pub(super) const MIN_PART: usize = 5 * 1024 * 1024;
/// The most parts one upload may have.
const MAX_PARTS: usize = 10_000;
/// Parts in flight at once.
const PARTS_AT_ONCE: usize = 4;
/// Tries of one part on failures that may pass, beyond the client's own quick retries.
const PART_ATTEMPTS: u32 = 3;
const PART_BACKOFF: Duration = Duration::from_millis(500);

/// The parts `len` bytes are cut into: as many as parts of at least [`MIN_PART`] allow (and at
/// most [`MAX_PARTS`]), of even sizes; as `(offset, len)`.
pub(super) fn parts(len: usize) -> Vec<(usize, usize)> {
    let count = (len / MIN_PART).clamp(1, MAX_PARTS);
    let size = len.div_ceil(count).max(1);
    (0..len)
        .step_by(size)
        .map(|at| (at, size.min(len - at)))
        .collect()
}

impl S3Storage {
    pub(super) fn put_multipart(&self, key: &str, data: &[u8]) -> Result<()> {
        let k = self.key(key);
        let created = self
            .rt
            .block_on(
                self.client
                    .create_multipart_upload()
                    .bucket(&self.loc.bucket)
                    .key(&k)
                    .send(),
            )
            .map_err(|e| self.error(e, key))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let finish = self
            .upload_parts(key, &k, &upload_id, data)
            .and_then(|parts| self.complete(key, &k, &upload_id, parts));
        if finish.is_err() {
            // Parts of an abandoned upload cost money until aborted.
            let _ = self.rt.block_on(
                self.client
                    .abort_multipart_upload()
                    .bucket(&self.loc.bucket)
                    .key(&k)
                    .upload_id(&upload_id)
                    .send(),
            );
        }
        finish
    }

    /// Sends every part, [`PARTS_AT_ONCE`] at a time; the parts in order, or the first error.
    fn upload_parts(
        &self,
        key: &str,
        k: &str,
        upload_id: &str,
        data: &[u8],
    ) -> Result<Vec<CompletedPart>> {
        let parts = parts(data.len());
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let done = Mutex::new(Vec::with_capacity(parts.len()));
        let first_error = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..PARTS_AT_ONCE.min(parts.len()) {
                s.spawn(|| {
                    while !failed.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&(at, len)) = parts.get(i) else {
                            break;
                        };
                        let number = i as i32 + 1;
                        match self.upload_part(key, k, upload_id, number, &data[at..at + len]) {
                            Ok(part) => lock(&done).push(part),
                            Err(e) => {
                                failed.store(true, Ordering::Relaxed);
                                lock(&first_error).get_or_insert(e);
                            }
                        }
                    }
                });
            }
        });
        if let Some(e) = lock(&first_error).take() {
            return Err(e);
        }
        let mut done = std::mem::take(&mut *lock(&done));
        done.sort_by_key(|p| p.part_number());
        Ok(done)
    }

    /// Sends one part, again on failures that may pass: a dropped connection costs this
    /// part's bytes, not the object's.
    fn upload_part(
        &self,
        key: &str,
        k: &str,
        upload_id: &str,
        number: i32,
        bytes: &[u8],
    ) -> Result<CompletedPart> {
        let mut delay = PART_BACKOFF;
        let mut attempt = 1;
        loop {
            let sent = self.rt.block_on(
                self.client
                    .upload_part()
                    .bucket(&self.loc.bucket)
                    .key(k)
                    .upload_id(upload_id)
                    .part_number(number)
                    .body(ByteStream::from(bytes.to_vec()))
                    .send(),
            );
            match sent.map_err(|e| self.error(e, key)) {
                Ok(out) => {
                    crate::failpoint::hit("store-s3-after-part");
                    return Ok(CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(out.e_tag().map(str::to_string))
                        .build());
                }
                Err(e) if e.is_transient() && attempt < PART_ATTEMPTS => {
                    std::thread::sleep(delay);
                    delay *= 2;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn complete(
        &self,
        key: &str,
        k: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
    ) -> Result<()> {
        self.rt
            .block_on(
                self.client
                    .complete_multipart_upload()
                    .bucket(&self.loc.bucket)
                    .key(k)
                    .upload_id(upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send(),
            )
            .map(|_| ())
            .map_err(|e| self.error(e, key))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_object_in_order_and_only_the_last_is_below_the_minimum() {
        for len in [
            1,
            MIN_PART - 1,
            MIN_PART,
            2 * MIN_PART + 7,
            16 << 20,
            33 << 20,
            MIN_PART * MAX_PARTS + 12345,
        ] {
            let p = parts(len);
            assert!(p.len() <= MAX_PARTS, "{len}: {} parts", p.len());
            let mut at = 0;
            for (i, &(o, l)) in p.iter().enumerate() {
                assert_eq!(o, at, "{len}: part {i} starts where the last ended");
                assert!(
                    l >= MIN_PART || i + 1 == p.len(),
                    "{len}: part {i} of {l} bytes"
                );
                at += l;
            }
            assert_eq!(at, len, "{len}: the parts cover the object");
        }
        assert_eq!(parts(16 << 20).len(), 3, "a 16 MiB pack goes in 3 parts");
    }
}
