//! Cutting a byte stream into chunks.
//!
//! Logical dumps and binlogs are streams where an insert shifts everything after it:
//! content-defined chunking (FastCDC) keeps the unchanged parts' chunks identical. Files
//! whose changes never shift data (InnoDB pages are rewritten in place) can use fixed-size
//! chunks aligned to their page size instead. Text made of lines (a logical dump's rows) is
//! cut between lines, by a hash of each line rather than a rolling hash of every byte: the same
//! resistance to shifts for a fraction of the work.

use std::io::{self, Read};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ChunkerConfig {
    /// FastCDC (2020) with these minimum, average and maximum sizes.
    Cdc { min: u32, avg: u32, max: u32 },
    /// Fixed-size chunks.
    Fixed { size: u32 },
    /// Content-defined with FastCDC's bounds, but cut only after a `\n` (see [`cut_lines`]).
    /// Writers choose it for line-oriented files; a repository's config names the stream
    /// chunker it derives from, not this.
    Lines { min: u32, avg: u32, max: u32 },
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

    /// The same sizes, cut between lines: for files of lines such as a dump's rows. Fixed
    /// chunks stay fixed.
    pub fn line_aligned(self) -> ChunkerConfig {
        match self {
            ChunkerConfig::Cdc { min, avg, max } | ChunkerConfig::Lines { min, avg, max } => {
                ChunkerConfig::Lines { min, avg, max }
            }
            fixed @ ChunkerConfig::Fixed { .. } => fixed,
        }
    }

    /// Checks the sizes against what the chunkers accept, so a bad config is an error and
    /// never a panic deep inside a backup.
    pub fn validate(&self) -> Result<(), String> {
        use fastcdc::v2020 as f;
        match *self {
            ChunkerConfig::Cdc { min, avg, max } | ChunkerConfig::Lines { min, avg, max } => {
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
            ChunkerConfig::Cdc { max, .. } | ChunkerConfig::Lines { max, .. } => max as usize,
            ChunkerConfig::Fixed { size } => size as usize,
        }
    }

    /// Where the chunk at the front of non-empty `data` ends: within `max_chunk`, or at the
    /// end of `data` when no cut point comes before it. Never zero.
    fn cut(&self, data: &[u8]) -> usize {
        let len = match *self {
            ChunkerConfig::Cdc { min, avg, max } => {
                fastcdc::v2020::FastCDC::new(data, min, avg, max)
                    .cut(0, data.len())
                    .1
            }
            ChunkerConfig::Fixed { size } => data.len().min(size as usize),
            ChunkerConfig::Lines { min, avg, max } => {
                cut_lines(data, min as usize, avg as usize, max as usize)
            }
        };
        len.clamp(1, data.len())
    }

    /// Chunks of `reader`, in order. The config must have been validated.
    pub fn chunks<R: Read>(&self, reader: R) -> Chunks<R> {
        // Room for two maximal chunks, so that a refill (which moves the start of the chunk
        // being cut to the front, see `next_chunk`) reads at least one maximal chunk's worth:
        // most bytes are never moved (memory over copies: streamers and dump workers each
        // hold one of these).
        let capacity = 2 * self.max_chunk();
        let mut buf = SPARE_BUFFER.take();
        if buf.len() != capacity {
            buf = vec![0; capacity];
            advise_huge_pages(&buf);
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

/// Where the chunk at the front of `data` ends when cutting between lines. Every line that
/// ends past `min` is a candidate; it ends the chunk when a hash of its [`cut_key`], drawn
/// uniformly from `0..avg - min`, falls below the line's length. Per byte that is a chance of
/// 1/(avg - min) whatever the lines' lengths, so chunks average `avg` for short and long rows
/// alike, and each decision depends on one line only: an inserted or deleted row moves the
/// cuts next to it and no others. Without a candidate the chunk ends at `max`, or at the end
/// of `data` when less is left (the stream's last chunk).
fn cut_lines(data: &[u8], min: usize, avg: usize, max: usize) -> usize {
    let limit = data.len().min(max);
    if limit <= min {
        return limit;
    }
    let span = avg.saturating_sub(min).max(1) as u128;
    let mut start = memchr::memrchr(b'\n', &data[..min]).map_or(0, |i| i + 1);
    let mut previous = None;
    while let Some(i) = memchr::memchr(b'\n', &data[start.max(min)..limit]) {
        let end = start.max(min) + i + 1;
        let line = &data[start..end];
        let field = first_field(line);
        let key = cut_key(line, field, previous);
        let draw = (u128::from(line_hash(key)) * span) >> 64;
        if draw < line.len() as u128 {
            return end;
        }
        previous = Some(field);
        start = end;
    }
    limit
}

/// A line's first tab-separated field, at most its first 64 bytes.
fn first_field(line: &[u8]) -> &[u8] {
    let head = &line[..line.len().min(64)];
    memchr::memchr2(b'\t', b'\n', head).map_or(head, |i| &head[..i])
}

/// What decides whether a chunk ends after `line`: its first field, which in a dump's rows is
/// usually the primary key. Updating a row's other columns then never moves a cut, so the
/// chunks of an updated table still line up with their older versions (what delta encoding
/// compares them with): every 100th row updated stored 0.69% of the dump again when the whole
/// line decided. A field equal to the previous line's (a leading column that repeats) is no
/// key, and the whole line decides instead, so long runs of one value still get cuts.
fn cut_key<'a>(line: &'a [u8], field: &'a [u8], previous: Option<&[u8]>) -> &'a [u8] {
    if previous == Some(field) { line } else { field }
}

/// A fast 64-bit hash of a line, mixing four 8-byte lanes side by side so that a long line
/// costs about one multiply per word. Only its spread matters (it picks cut points and is
/// never stored), so it need not resist an adversary: one who makes every row cut or none
/// only makes chunks of `min` or `max` bytes.
fn line_hash(line: &[u8]) -> u64 {
    const K: [u64; 4] = [
        0x9E37_79B9_7F4A_7C15,
        0xC2B2_AE3D_27D4_EB4F,
        0x1656_67B1_9E37_79F9,
        0x27D4_EB2F_1656_67C5,
    ];
    let word = |b: &[u8]| {
        let mut w = [0u8; 8];
        w[..b.len()].copy_from_slice(b);
        u64::from_le_bytes(w)
    };
    let mut lanes = K;
    let mut blocks = line.chunks_exact(32);
    for block in &mut blocks {
        for (lane, (k, w)) in lanes.iter_mut().zip(K.iter().zip(block.chunks_exact(8))) {
            *lane = (*lane ^ word(w)).wrapping_mul(*k).rotate_left(31);
        }
    }
    for (lane, (k, w)) in lanes
        .iter_mut()
        .zip(K.iter().zip(blocks.remainder().chunks(8)))
    {
        *lane = (*lane ^ word(w)).wrapping_mul(*k).rotate_left(31);
    }
    let mut h = (line.len() as u64).wrapping_mul(K[0]);
    for lane in lanes {
        h = (h ^ lane).wrapping_mul(K[1]);
        h ^= h >> 29;
    }
    h ^ (h >> 32)
}

/// Asks the kernel to back `buf` with 2 MiB pages where it can (transparent huge pages in
/// `madvise` mode, the usual default). The read-ahead buffer is filled whole and read
/// several times (cut, hashed, compressed): with 4 KiB pages its first fill alone took 2,048
/// page faults per worker, and every pass over it TLB misses. A dump's client CPU fell 4%
/// (0.79 -> 0.76 s). Only a hint: where it is refused nothing changes.
fn advise_huge_pages(buf: &[u8]) {
    const PAGE: usize = 4096;
    let start = (buf.as_ptr() as usize).next_multiple_of(PAGE);
    let end = (buf.as_ptr() as usize + buf.len()) / PAGE * PAGE;
    if end > start {
        // SAFETY: the range lies inside `buf`'s allocation, which stays alive; MADV_HUGEPAGE
        // changes how pages are backed, never their contents.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
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
        let len = loop {
            let pending = &self.buf[self.start..self.end];
            let len = if pending.is_empty() {
                0
            } else {
                self.config.cut(pending)
            };
            // A cut point depends only on the bytes before it, so a cut found before the end
            // of what is buffered is final. Only a chunk that may run on past the buffered
            // bytes needs more of the stream: refilling then moves just that chunk's start to
            // the front (less than one chunk), not a maximal chunk's worth of read-ahead.
            let may_grow = len == pending.len() && pending.len() < self.config.max_chunk();
            if !may_grow || self.eof {
                break len;
            }
            if let Err(e) = self.fill() {
                self.eof = true;
                self.start = self.end;
                return Some(Err(e));
            }
        };
        if len == 0 {
            return None;
        }
        let chunk = self.start..self.start + len;
        self.start += len;
        Some(Ok(&self.buf[chunk]))
    }

    /// Moves the unconsumed bytes to the front and reads until the buffer is full or the
    /// stream ends.
    fn fill(&mut self) -> io::Result<()> {
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
        let mut rng = crate::test_rng::XorShift32::new(seed);
        (0..n).map(|_| (rng.next_u32() >> 24) as u8).collect()
    }

    /// How many of `before`'s chunks are also chunks of `edited`.
    fn surviving(before: &[Vec<u8>], cfg: &ChunkerConfig, edited: &[u8]) -> usize {
        let after: std::collections::HashSet<Vec<u8>> =
            cfg.chunks(edited).collect_all().into_iter().collect();
        before.iter().filter(|c| after.contains(*c)).count()
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
        let same = surviving(&chunks, &cfg, &b);
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

    /// A reader that hands out its bytes in pieces of random sizes, as sockets do.
    struct Trickle<'a> {
        data: &'a [u8],
        rng: crate::test_rng::XorShift32,
        most: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let piece = 1 + self.rng.next_u32() as usize % self.most;
            let n = piece.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn cuts_do_not_depend_on_how_the_stream_is_buffered_or_read() {
        // Each cut, computed on everything that is left of the stream at once, is what the
        // buffered chunker must find whatever its refills and the reader's piece sizes: a
        // cut that moved with them would defeat deduplication from one backup to the next.
        let text = lines(3 << 20, 180, 5);
        let bytes = data(3 << 20, 6);
        let cases = [
            (ChunkerConfig::cdc(64 * 1024), &bytes),
            (ChunkerConfig::cdc(64 * 1024).line_aligned(), &text),
            (ChunkerConfig::Fixed { size: 100_000 }, &bytes),
        ];
        for (cfg, input) in cases {
            let mut expected = Vec::new();
            let mut rest = &input[..];
            while !rest.is_empty() {
                let len = cfg.cut(rest);
                expected.push(len);
                rest = &rest[len..];
            }
            assert!(expected.len() > 10, "{cfg:?}: {} chunks", expected.len());
            for most in [1 << 20, 4096, 7] {
                let reader = Trickle {
                    data: input,
                    rng: crate::test_rng::XorShift32::new(most as u32),
                    most,
                };
                let got: Vec<usize> = cfg
                    .chunks(reader)
                    .collect_all()
                    .iter()
                    .map(Vec::len)
                    .collect();
                assert_eq!(got, expected, "{cfg:?}, reads of at most {most} bytes");
            }
        }
    }

    /// Lines of random digits, `len` bytes on average each (newline included).
    fn lines(n: usize, len: usize, seed: u32) -> Vec<u8> {
        let raw = data(n, seed);
        let mut out = Vec::with_capacity(n);
        let mut left = 0usize;
        for (i, b) in raw.iter().enumerate() {
            if left == 0 {
                left = len / 2 + (raw[(i * 7) % n] as usize * len) / 256;
                out.push(b'\n');
                continue;
            }
            left -= 1;
            out.push(b'0' + b % 10);
        }
        out
    }

    #[test]
    fn line_chunks_end_at_line_ends_and_average_their_target_for_any_row_size() {
        let cfg = ChunkerConfig::cdc(16 * 1024).line_aligned();
        cfg.validate().unwrap();
        for row in [12, 190, 3000] {
            let a = lines(4 << 20, row, 5);
            let chunks = cfg.chunks(&a[..]).collect_all();
            assert_eq!(chunks.concat(), a);
            let (body, last) = chunks.split_at(chunks.len() - 1);
            for c in body {
                assert!(c.len() >= 4096 && c.len() <= 65536, "{} bytes", c.len());
                assert!(c.ends_with(b"\n") || c.len() == 65536, "cut inside a line");
            }
            assert!(!last[0].is_empty());
            let mean = a.len() / chunks.len();
            assert!(
                (13 * 1024..=20 * 1024).contains(&mean),
                "rows of ~{row} bytes: chunks average {mean}"
            );
        }
    }

    #[test]
    fn line_chunks_survive_edited_inserted_and_deleted_rows() {
        let cfg = ChunkerConfig::cdc(16 * 1024).line_aligned();
        let a = lines(2 << 20, 190, 8);
        let before = cfg.chunks(&a[..]).collect_all();
        let rows: Vec<&[u8]> = a.split_inclusive(|&b| b == b'\n').collect();
        let mut b: Vec<Vec<u8>> = rows.iter().map(|r| r.to_vec()).collect();
        b[100] = b"edited\n".to_vec();
        b.insert(5000, b"inserted row\n".to_vec());
        b.remove(9000);
        let b = b.concat();
        let same = surviving(&before, &cfg, &b);
        assert!(
            same + 6 >= before.len(),
            "{same} of {} chunks survived three row changes",
            before.len()
        );
        // A row longer than the largest chunk is cut inside, and put back whole.
        let long = [&a[..1000], &vec![b'7'; 200_000][..], &a[1000..]].concat();
        assert_eq!(cfg.chunks(&long[..]).collect_all().concat(), long);
    }

    #[test]
    fn line_cuts_stay_put_when_rows_change_after_their_first_field() {
        let cfg = ChunkerConfig::cdc(16 * 1024).line_aligned();
        // Rows "<id>\t<digits>\n": unique keys, as a primary key gives.
        let mut rows: Vec<Vec<u8>> = lines(2 << 20, 120, 4)
            .split_inclusive(|&b| b == b'\n')
            .enumerate()
            .map(|(i, r)| [format!("{i}\t").as_bytes(), r].concat())
            .collect();
        let cuts = |rows: &[Vec<u8>]| -> Vec<usize> {
            let all = rows.concat();
            cfg.chunks(&all[..])
                .collect_all()
                .iter()
                .map(Vec::len)
                .collect()
        };
        let before = cuts(&rows);
        assert!(before.len() > 50);
        // Every 20th row's value rewritten (same length): the chunks all change, their
        // boundaries none.
        for row in rows.iter_mut().step_by(20) {
            let tab = row.iter().position(|&b| b == b'\t').expect("a first field");
            for b in row[tab + 1..].iter_mut().filter(|b| b.is_ascii_digit()) {
                *b = b'0' + (*b - b'0' + 3) % 10;
            }
        }
        assert_eq!(cuts(&rows), before);
        // A long run of one leading value is still cut by content, not at the maximum.
        let run: Vec<u8> = lines(2 << 20, 120, 6)
            .split_inclusive(|&b| b == b'\n')
            .flat_map(|r| [b"same\t".as_slice(), r].concat())
            .collect();
        let sizes: Vec<usize> = cfg
            .chunks(&run[..])
            .collect_all()
            .iter()
            .map(Vec::len)
            .collect();
        let at_max = sizes.iter().filter(|&&n| n == 65536).count();
        assert!(
            at_max * 10 < sizes.len(),
            "{at_max} of {} chunks cut at the maximum",
            sizes.len()
        );
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
