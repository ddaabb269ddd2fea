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
    pub fn chunks<'r, R: Read + 'r>(
        &self,
        reader: R,
    ) -> Box<dyn Iterator<Item = io::Result<Vec<u8>>> + 'r> {
        match *self {
            ChunkerConfig::Cdc { min, avg, max } => Box::new(
                fastcdc::v2020::StreamCDC::new(reader, min, avg, max).map(|r| {
                    r.map(|c| c.data).map_err(|e| match e {
                        fastcdc::v2020::Error::IoError(e) => e,
                        other => io::Error::other(other.to_string()),
                    })
                }),
            ),
            ChunkerConfig::Fixed { size } => Box::new(FixedChunks {
                reader,
                size: size as usize,
                done: false,
            }),
        }
    }
}

struct FixedChunks<R> {
    reader: R,
    size: usize,
    done: bool,
}

impl<R: Read> Iterator for FixedChunks<R> {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut buf = vec![0u8; self.size];
        let mut filled = 0;
        while filled < self.size {
            match self.reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        if filled < self.size {
            self.done = true;
            if filled == 0 {
                return None;
            }
            buf.truncate(filled);
        }
        Some(Ok(buf))
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
        let chunks: Vec<Vec<u8>> = cfg.chunks(&a[..]).map(Result::unwrap).collect();
        assert_eq!(chunks.concat(), a);
        assert!(chunks.len() > 20);
        // Insert 100 bytes near the start: almost every later chunk is unchanged.
        let mut b = a.clone();
        b.splice(1000..1000, data(100, 9));
        let after: std::collections::HashSet<Vec<u8>> =
            cfg.chunks(&b[..]).map(Result::unwrap).collect();
        let same = chunks.iter().filter(|c| after.contains(*c)).count();
        assert!(
            same + 3 >= chunks.len(),
            "{same} of {} chunks survived",
            chunks.len()
        );
    }

    #[test]
    fn fixed_chunks_are_aligned() {
        let cfg = ChunkerConfig::Fixed { size: 4096 };
        let a = data(10_000, 3);
        let chunks: Vec<Vec<u8>> = cfg.chunks(&a[..]).map(Result::unwrap).collect();
        assert_eq!(
            chunks.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![4096, 4096, 1808]
        );
        assert_eq!(chunks.concat(), a);
        assert_eq!(cfg.chunks(&[][..]).count(), 0);
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
