//! How hard one stream's chunks are compressed. Table rows of random-looking values (digits,
//! hashes, UUIDs) give zstd almost no matches: what it saves comes from entropy-coding the
//! literals, and its match finder is a quarter of its time for nothing. Text, code and most
//! columns with repeated values are the opposite. So a stream is measured as it goes: now and
//! then a chunk is compressed both ways, the smaller result is kept, and the next chunks use
//! cheap matching only if it came within half a percent of the full effort.
//!
//! The stored frames are ordinary zstd frames either way: readers cannot tell the difference.

use super::codec::{self, Codec, Effort};

/// The first chunk of a stream is never measured, so single-chunk files cost no extra
/// compression; the second one is.
const FIRST_PROBE: u64 = 1;
/// Chunks between measurements while cheap matching is in use.
const PROBE_INTERVAL: u64 = 16;
/// While full effort keeps winning, measurements become rarer, down to one in this many.
const MAX_PROBE_INTERVAL: u64 = 256;
/// Cheap matching is kept while its output is at most 1/TOLERANCE larger (0.5%).
const TOLERANCE: usize = 200;
/// A cheaply compressed chunk that compresses this much better or worse than the measured
/// one suggests the data changed: the next chunk is measured.
const DRIFT: f64 = 1.1;

/// The compression state of one stream; owned by the thread storing its chunks.
#[derive(Debug)]
pub struct StreamCodec {
    level: i32,
    cheap: bool,
    /// Whole encodings so far.
    chunks: u64,
    next_probe: u64,
    interval: u64,
    /// Compressed size per input byte of cheap matching at the last measurement.
    cheap_ratio: f64,
    /// Chunks compressed both ways, and those that kept cheap matching.
    pub probes: u64,
    pub cheap_chunks: u64,
}

impl StreamCodec {
    pub fn new(level: i32) -> StreamCodec {
        StreamCodec {
            level,
            cheap: false,
            chunks: 0,
            next_probe: FIRST_PROBE,
            interval: PROBE_INTERVAL,
            cheap_ratio: 1.0,
            probes: 0,
            cheap_chunks: 0,
        }
    }

    pub fn level(&self) -> i32 {
        self.level
    }

    fn effort(&self, cheap_matching: bool) -> Effort {
        Effort {
            level: self.level,
            cheap_matching,
        }
    }

    /// Compresses one chunk (or keeps it raw when that does not pay).
    pub fn encode(&mut self, data: &[u8]) -> (Codec, Vec<u8>) {
        let n = self.chunks;
        self.chunks += 1;
        // Levels below 1 have no entropy coding of literals to keep: nothing to choose.
        if self.level < 1 || data.is_empty() {
            return codec::encode_with(data, self.effort(false));
        }
        if n < self.next_probe {
            let out = codec::encode_with(data, self.effort(self.cheap));
            if self.cheap {
                self.cheap_chunks += 1;
                let ratio = out.1.len() as f64 / data.len() as f64;
                if ratio > self.cheap_ratio * DRIFT || ratio * DRIFT < self.cheap_ratio {
                    self.next_probe = self.chunks;
                }
            }
            return out;
        }
        self.probes += 1;
        let full = codec::encode_with(data, self.effort(false));
        let cheap = codec::encode_with(data, self.effort(true));
        let keep_cheap = cheap.1.len() <= full.1.len() + full.1.len() / TOLERANCE;
        self.interval = if keep_cheap || self.cheap {
            PROBE_INTERVAL
        } else {
            (self.interval * 2).min(MAX_PROBE_INTERVAL)
        };
        self.cheap = keep_cheap;
        self.cheap_ratio = cheap.1.len() as f64 / data.len() as f64;
        self.next_probe = self.chunks + self.interval - 1;
        let (kept, dropped) = if cheap.1.len() < full.1.len() {
            (cheap, full)
        } else {
            (full, cheap)
        };
        codec::recycle(dropped.1);
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of random digits, like sysbench's `c` and `pad` columns.
    fn digits(rows: usize, seed: u64) -> Vec<u8> {
        let mut rng = crate::test_rng::XorShift64::new(seed | 1);
        let mut out = Vec::new();
        for i in 0..rows {
            out.extend_from_slice(format!("{i}\t").as_bytes());
            for j in 0..120 {
                let x = rng.next_u64();
                out.push(if j % 12 == 11 {
                    b'-'
                } else {
                    b'0' + (x % 10) as u8
                });
            }
            out.push(b'\n');
        }
        out
    }

    /// Lines of log-like text: few distinct words, many matches.
    fn text(lines: usize) -> Vec<u8> {
        let words = [
            "connect", "query", "select", "user", "from", "where", "ok", "error",
        ];
        let mut out = Vec::new();
        for i in 0..lines {
            let line = format!(
                "2026-12-06 00:{:02}:{:02} [{}] {} {} {} id={}\n",
                i / 60 % 60,
                i % 60,
                words[i % 3],
                words[(i * 7) % 8],
                words[(i * 5) % 8],
                words[(i / 3) % 8],
                i % 1000
            );
            out.extend_from_slice(line.as_bytes());
        }
        out
    }

    /// What the same chunks take at full effort.
    fn full_effort(data: &[u8], chunk: usize) -> usize {
        data.chunks(chunk)
            .map(|c| codec::encode(c, 1).1.len())
            .sum()
    }

    fn run(codec: &mut StreamCodec, data: &[u8], chunk: usize) -> usize {
        let mut stored = 0;
        for c in data.chunks(chunk) {
            let (kind, bytes) = codec.encode(c);
            let back = codec::decode(kind, &bytes, c.len()).unwrap();
            assert_eq!(back, c);
            stored += bytes.len();
        }
        stored
    }

    #[test]
    fn random_digits_switch_to_cheap_matching_without_losing_ratio() {
        let data = digits(40_000, 7);
        let mut adaptive = StreamCodec::new(1);
        let stored = run(&mut adaptive, &data, 256 * 1024);
        let full = full_effort(&data, 256 * 1024);
        let chunks = data.len().div_ceil(256 * 1024) as u64;
        assert!(adaptive.cheap_chunks > chunks / 2, "{adaptive:?}");
        assert!(adaptive.probes < chunks / 4, "{adaptive:?}");
        assert!(stored <= full + full / 200, "{stored} against {full}");
    }

    #[test]
    fn text_keeps_full_effort_and_measures_less_and_less_often() {
        let data = text(200_000);
        let mut adaptive = StreamCodec::new(1);
        let stored = run(&mut adaptive, &data, 64 * 1024);
        let full = full_effort(&data, 64 * 1024);
        assert_eq!(adaptive.cheap_chunks, 0, "{adaptive:?}");
        let chunks = data.len().div_ceil(64 * 1024) as u64;
        // Chunks 1, 33, 97, 225, ...: one in 32, 64, 128, then 256.
        assert!(adaptive.probes <= 2 + chunks / 32, "{adaptive:?}");
        assert!(stored <= full, "{stored} against {full}");
    }

    #[test]
    fn a_change_of_data_is_noticed_before_the_next_measurement() {
        let mut data = digits(20_000, 3);
        data.extend_from_slice(&text(100_000));
        let mut adaptive = StreamCodec::new(1);
        let stored = run(&mut adaptive, &data, 128 * 1024);
        let full = full_effort(&data, 128 * 1024);
        // Without the drift check, up to 15 text chunks would go cheaply (half larger each).
        assert!(stored <= full + full / 50, "{stored} against {full}");
    }

    #[test]
    fn single_chunks_and_negative_levels_are_compressed_once() {
        let mut one = StreamCodec::new(1);
        one.encode(&digits(100, 1));
        assert_eq!(one.probes, 0);
        let mut fast = StreamCodec::new(-3);
        run(&mut fast, &digits(10_000, 1), 64 * 1024);
        assert_eq!((fast.probes, fast.cheap_chunks), (0, 0));
    }
}
