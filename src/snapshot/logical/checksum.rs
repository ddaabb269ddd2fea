//! Checksums of a table's rows as the dump reads them (see [`ContentSum`]), computed the same
//! way by the dump and by the check after a restore.
//!
//! A table with a primary key is dumped in key order, cut into row files along key ranges.
//! Every row file already gets a CRC-64/NVME in the manifest, and CRCs combine: the CRC of the
//! whole table as one stream is folded from its files' CRCs and lengths, so the dump pays
//! nothing per byte for it. A restore reads the table back in key order, in as many parts as
//! it likes, and folds the same way.
//!
//! A table without a primary key has no order that both sides can reproduce (a scan returns
//! rows in whatever order the storage holds them), so each row line is hashed and the hashes
//! are added up: any order gives the same sum, and a changed, lost or extra row changes it.
//! That costs a hash per row on the dump, which only such tables pay.

use std::io::{self, Read};

use crc_fast::CrcAlgorithm;

use super::format::{ContentSum, Hex64, Hex128};

/// The CRC-64/NVME of `a` followed by `b`, from the CRCs of each and the length of `b`.
pub fn crc64_combine(crc_a: u64, crc_b: u64, len_b: u64) -> u64 {
    crc_fast::checksum_combine(CrcAlgorithm::Crc64Nvme, crc_a, crc_b, len_b)
}

/// The order-independent sum of row hashes: each line (without its `\n`) hashed with BLAKE3,
/// the first 16 bytes read as a little-endian number, all of them added with wrap-around. A
/// sum and not an exclusive or, so that two equal rows do not cancel out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowHashSum(pub u128);

impl RowHashSum {
    fn add_hash(&mut self, hash: blake3::Hash) {
        let mut first = [0u8; 16];
        first.copy_from_slice(&hash.as_bytes()[..16]);
        self.0 = self.0.wrapping_add(u128::from_le_bytes(first));
    }

    pub fn add_line(&mut self, line: &[u8]) {
        self.add_hash(blake3::hash(line));
    }

    pub fn merge(&mut self, other: RowHashSum) {
        self.0 = self.0.wrapping_add(other.0);
    }
}

/// Passes a row file through, adding up the hashes of its lines (see [`RowHashSum`]). A line
/// split across two reads is hashed incrementally, so memory stays bounded whatever the row
/// size.
pub struct RowSumReader<R> {
    inner: R,
    sum: RowHashSum,
    /// The hasher of a line whose start has been read and whose end has not.
    partial: Option<blake3::Hasher>,
}

impl<R: Read> RowSumReader<R> {
    pub fn new(inner: R) -> Self {
        RowSumReader {
            inner,
            sum: RowHashSum::default(),
            partial: None,
        }
    }

    /// The sum of the lines read so far. A last line without its `\n` is not counted: the
    /// dump ends every line with one.
    pub fn sum(&self) -> RowHashSum {
        self.sum
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    fn feed(&mut self, mut data: &[u8]) {
        while let Some(end) = memchr::memchr(b'\n', data) {
            let line = &data[..end];
            match self.partial.take() {
                Some(mut h) => {
                    h.update(line);
                    self.sum.add_hash(h.finalize());
                }
                None => self.sum.add_line(line),
            }
            data = &data[end + 1..];
        }
        if !data.is_empty() {
            self.partial
                .get_or_insert_with(blake3::Hasher::new)
                .update(data);
        }
    }
}

impl<R: Read> Read for RowSumReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.feed(&buf[..n]);
        Ok(n)
    }
}

/// One part of a table as read: a row file on the dump, a key range on the restore.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartSum {
    pub bytes: u64,
    pub crc64: u64,
    pub rows: u64,
    /// Only for tables read in no defined order.
    pub row_hashes: Option<RowHashSum>,
}

/// Folds a table's parts, in key order, into its [`ContentSum`]; `None` when a part lacks
/// what the table's kind needs.
pub fn fold(parts: impl IntoIterator<Item = PartSum>, ordered: bool) -> Option<ContentSum> {
    let (mut bytes, mut crc, mut hashes) = (0u64, 0u64, RowHashSum::default());
    for p in parts {
        bytes += p.bytes;
        if ordered {
            crc = crc64_combine(crc, p.crc64, p.bytes);
        } else {
            hashes.merge(p.row_hashes?);
        }
    }
    Some(if ordered {
        ContentSum::PrimaryKey {
            bytes,
            crc64: Hex64(crc),
        }
    } else {
        ContentSum::Unordered {
            bytes,
            row_hash_sum: Hex128(hashes.0),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crc(data: &[u8]) -> u64 {
        crc_fast::checksum(CrcAlgorithm::Crc64Nvme, data)
    }

    #[test]
    fn crcs_of_parts_fold_into_the_crc_of_the_whole() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for cuts in [vec![], vec![0], vec![1, 99_999], vec![10, 500, 500, 77_777]] {
            let mut parts = Vec::new();
            let mut start = 0;
            for &c in cuts.iter().chain([data.len()].iter()) {
                let piece = &data[start..c];
                parts.push(PartSum {
                    bytes: piece.len() as u64,
                    crc64: crc(piece),
                    ..PartSum::default()
                });
                start = c;
            }
            assert_eq!(
                fold(parts, true),
                Some(ContentSum::PrimaryKey {
                    bytes: data.len() as u64,
                    crc64: Hex64(crc(&data))
                }),
                "cuts {cuts:?}"
            );
        }
        // An empty table: no parts, or one empty file.
        let empty = Some(ContentSum::PrimaryKey {
            bytes: 0,
            crc64: Hex64(crc(b"")),
        });
        assert_eq!(fold([], true), empty);
        assert_eq!(fold([PartSum::default()], true), empty);
    }

    fn summed(data: &[u8], read_size: usize) -> RowHashSum {
        let mut r = RowSumReader::new(data);
        let mut buf = vec![0; read_size];
        while r.read(&mut buf).unwrap() > 0 {}
        assert!(r.partial.is_none(), "every line ends with a newline");
        r.sum()
    }

    #[test]
    fn row_hash_sums_ignore_order_and_read_sizes_but_see_every_row() {
        let rows = [
            "1\ta\n",
            "2\tb\n",
            "2\tb\n",
            "\\N\t\n",
            "3\tlong line of text\n",
        ];
        let forward: String = rows.concat();
        let backward: String = rows.iter().rev().copied().collect();
        let expected = summed(forward.as_bytes(), 1 << 16);
        for size in [1, 2, 3, 7, 64] {
            assert_eq!(
                summed(forward.as_bytes(), size),
                expected,
                "reads of {size}"
            );
            assert_eq!(
                summed(backward.as_bytes(), size),
                expected,
                "reads of {size}"
            );
        }
        // A duplicate row counts twice: dropping one of the two equal rows shows.
        let one_dup_less: String = rows.iter().skip(2).copied().collect::<String>() + rows[0];
        assert_ne!(summed(one_dup_less.as_bytes(), 5), expected);
        // Two rows exchanging a value are two different rows.
        let swapped = forward.replace("1\ta", "1\tb").replacen("2\tb", "2\ta", 1);
        assert_ne!(summed(swapped.as_bytes(), 5), expected);
        // Parts add up to the whole.
        let (a, b) = forward.split_at(8);
        let mut parts = summed(a.as_bytes(), 3);
        parts.merge(summed(b.as_bytes(), 3));
        assert_eq!(parts, expected);
    }
}
