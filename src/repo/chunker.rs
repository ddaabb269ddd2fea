//! Cutting a byte stream into chunks.
//!
//! Logical dumps and binlogs are streams where an insert shifts everything after it:
//! content-defined chunking (FastCDC) keeps the unchanged parts' chunks identical. Files
//! whose changes never shift data (InnoDB pages are rewritten in place) can use fixed-size
//! chunks aligned to their page size instead.

use std::io::{self, Read};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ChunkerConfig {
    /// FastCDC (2020) with these minimum, average and maximum sizes.
    Cdc { min: u32, avg: u32, max: u32 },
    /// Fixed-size chunks.
    Fixed { size: u32 },
}

impl Default for ChunkerConfig {
    fn default() -> Self {
        ChunkerConfig::Cdc {
            min: 256 * 1024,
            avg: 1024 * 1024,
            max: 4 * 1024 * 1024,
        }
    }
}

impl ChunkerConfig {
    /// FastCDC with `avg` as the average and the usual 1/4 and 4x bounds.
    pub fn cdc(avg: u32) -> ChunkerConfig {
        ChunkerConfig::Cdc {
            min: avg / 4,
            avg,
            max: avg.saturating_mul(4),
        }
    }

    /// Checks the sizes against what the chunkers accept, so a bad config is an error and
    /// never a panic deep inside a backup.
    pub fn validate(&self) -> Result<(), String> {
        use fastcdc::v2020 as f;
        match *self {
            ChunkerConfig::Cdc { min, avg, max } => {
                let ok = (f::MINIMUM_MIN..=f::MINIMUM_MAX).contains(&min)
                    && (f::AVERAGE_MIN..=f::AVERAGE_MAX).contains(&avg)
                    && (f::MAXIMUM_MIN..=f::MAXIMUM_MAX).contains(&max)
                    && min <= avg
                    && avg <= max;
                if ok {
                    Ok(())
                } else {
                    Err(format!(
                        "chunk sizes min {min}, avg {avg}, max {max} are out of range \
                         (min {}..{}, avg {}..{}, max {}..{}, min <= avg <= max)",
                        f::MINIMUM_MIN,
                        f::MINIMUM_MAX,
                        f::AVERAGE_MIN,
                        f::AVERAGE_MAX,
                        f::MAXIMUM_MIN,
                        f::MAXIMUM_MAX
                    ))
                }
            }
            ChunkerConfig::Fixed { size } if (4096..=16 * 1024 * 1024).contains(&size) => Ok(()),
            ChunkerConfig::Fixed { size } => Err(format!(
                "fixed chunk size {size} is not within 4 KiB..16 MiB"
            )),
        }
    }

    /// The largest chunk this configuration produces.
    pub fn max_chunk(&self) -> usize {
        match *self {
            ChunkerConfig::Cdc { max, .. } => max as usize,
            ChunkerConfig::Fixed { size } => size as usize,
        }
    }

    /// Chunks of `reader`, in order. The config must have been validated.
    pub fn chunks<R: Read>(&self, reader: R) -> Chunks<R> {
        // Room for two maximal chunks: the unread tail moves to the front only when less than
        // one maximal chunk is left, so each byte moves at most once more (memory over copies:
        // streamers and dump workers each hold one of these).
        let capacity = 2 * self.max_chunk();
        let mut buf = SPARE_BUFFER.take();
        if buf.len() != capacity {
            buf = vec![0; capacity];
        }
        Chunks {
            config: *self,
            reader,
            buf,
            start: 0,
            end: 0,
            eof: false,
        }
    }
}

thread_local! {
    /// The buffer of the last stream this thread chunked: a dump cuts thousands of files one
    /// after the other, and a fresh 8 MiB buffer each time would be page-faulted in again.
    static SPARE_BUFFER: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// A stream being cut into chunks. Each chunk is lent from one buffer that is reused for the
/// whole stream: no allocation and no copy per chunk.
pub struct Chunks<R> {
    config: ChunkerConfig,
    reader: R,
    buf: Vec<u8>,
    /// The unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    eof: bool,
}

impl<R: Read> Chunks<R> {
    /// The next chunk, or `None` at the end of the stream.
    pub fn next_chunk(&mut self) -> Option<io::Result<&[u8]>> {
        if let Err(e) = self.fill() {
            self.eof = true;
            self.start = self.end;
            return Some(Err(e));
        }
        let pending = &self.buf[self.start..self.end];
        if pending.is_empty() {
            return None;
        }
        let len = match self.config {
            ChunkerConfig::Cdc { min, avg, max } => {
                fastcdc::v2020::FastCDC::new(pending, min, avg, max)
                    .cut(0, pending.len())
                    .1
            }
            ChunkerConfig::Fixed { size } => pending.len().min(size as usize),
        };
        // A cut point is never zero on non-empty input; never loop on it anyway.
        let len = len.clamp(1, pending.len());
        let chunk = self.start..self.start + len;
        self.start += len;
        Some(Ok(&self.buf[chunk]))
    }

    /// Makes at least one maximal chunk available, unless the stream ends first.
    fn fill(&mut self) -> io::Result<()> {
        let max = self.config.max_chunk();
        if self.eof || self.end - self.start >= max {
            return Ok(());
        }
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        while self.end < self.buf.len() {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Every remaining chunk, copied (for tests).
    #[cfg(test)]
    pub fn collect_all(mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(chunk) = self.next_chunk() {
            out.push(chunk.expect("chunking failed").to_vec());
        }
        out
    }
}

impl<R> Drop for Chunks<R> {
    fn drop(&mut self) {
        SPARE_BUFFER.set(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn cdc_chunks_reassemble_and_survive_an_insert() {
        let cfg = ChunkerConfig::cdc(16 * 1024);
        cfg.validate().unwrap();
        let a = data(1 << 20, 7);
        let chunks: Vec<Vec<u8>> = cfg.chunks(&a[..]).collect_all();
        assert_eq!(chunks.concat(), a);
        assert!(chunks.len() > 20);
        // Insert 100 bytes near the start: almost every later chunk is unchanged.
        let mut b = a.clone();
        b.splice(1000..1000, data(100, 9));
        let after: std::collections::HashSet<Vec<u8>> =
            cfg.chunks(&b[..]).collect_all().into_iter().collect();
        let same = chunks.iter().filter(|c| after.contains(*c)).count();
        assert!(
            same + 3 >= chunks.len(),
            "{same} of {} chunks survived",
            chunks.len()
        );
    }

    #[test]
    fn cut_points_are_those_of_fastcdc_stream() {
        // Repositories written before this chunker must keep deduplicating against new data.
        let cfg = ChunkerConfig::cdc(64 * 1024);
        let a = data(5 << 20, 11);
        let ours: Vec<usize> = cfg
            .chunks(&a[..])
            .collect_all()
            .iter()
            .map(Vec::len)
            .collect();
        let theirs: Vec<usize> =
            fastcdc::v2020::StreamCDC::new(&a[..], 16 * 1024, 64 * 1024, 256 * 1024)
                .map(|c| c.unwrap().length)
                .collect();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn fixed_chunks_are_aligned() {
        let cfg = ChunkerConfig::Fixed { size: 4096 };
        let a = data(10_000, 3);
        let chunks: Vec<Vec<u8>> = cfg.chunks(&a[..]).collect_all();
        assert_eq!(
            chunks.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![4096, 4096, 1808]
        );
        assert_eq!(chunks.concat(), a);
        assert!(cfg.chunks(&[][..]).collect_all().is_empty());
    }

    #[test]
    fn invalid_sizes_are_errors() {
        assert!(
            ChunkerConfig::Cdc {
                min: 10,
                avg: 20,
                max: 30
            }
            .validate()
            .is_err()
        );
        assert!(
            ChunkerConfig::Cdc {
                min: 4096,
                avg: 1024,
                max: 65536
            }
            .validate()
            .is_err()
        );
        assert!(ChunkerConfig::Fixed { size: 100 }.validate().is_err());
        assert!(ChunkerConfig::default().validate().is_ok());
    }
}
