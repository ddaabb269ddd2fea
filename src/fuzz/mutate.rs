//! A small deterministic mutator for the bounded CI run: the same inputs on every run and
//! every machine (xorshift from a fixed seed), drawn from the seed corpus by the mutations
//! that find decoder bugs: bit flips, boundary values written over length fields, cuts,
//! insertions, repeats, splices of two seeds, and the target's own tokens.

use crate::test_rng::XorShift64;

/// The mutator's random numbers.
pub struct Rng(XorShift64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(XorShift64::new(seed | 1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// Values that sit on the edges decoders get wrong, as little-endian integers of each width.
const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    0x7F,
    0x80,
    0xFB,
    0xFC,
    0xFD,
    0xFE,
    0xFF,
    0x100,
    0x7FFF,
    0x8000,
    0xFFFF,
    0xFF_FFFF,
    0x100_0000,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFFF,
    0x7FFF_FFFF_FFFF_FFFF,
    0x8000_0000_0000_0000,
    u64::MAX,
];

/// A mutant of one seed (`pool` holds all of them, for splicing), at most `max_len` bytes.
pub fn mutate(rng: &mut Rng, pool: &[Vec<u8>], dictionary: &[&[u8]], max_len: usize) -> Vec<u8> {
    let mut data = pool.get(rng.below(pool.len())).cloned().unwrap_or_default();
    let rounds = 1 + rng.below(8);
    for _ in 0..rounds {
        mutate_once(rng, &mut data, pool, dictionary);
    }
    data.truncate(max_len);
    data
}

fn mutate_once(rng: &mut Rng, data: &mut Vec<u8>, pool: &[Vec<u8>], dictionary: &[&[u8]]) {
    let len = data.len();
    match rng.below(11) {
        0 if len > 0 => {
            let at = rng.below(len);
            data[at] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let at = rng.below(len);
            data[at] = rng.next_u64() as u8;
        }
        2 if len > 0 => {
            let width = [1usize, 2, 3, 4, 8][rng.below(5)];
            let at = rng.below(len);
            let value = match rng.below(3) {
                0 => INTERESTING[rng.below(INTERESTING.len())],
                1 => (len as u64)
                    .wrapping_add(rng.below(64) as u64)
                    .wrapping_sub(32),
                _ => rng.next_u64() % 1024,
            };
            let bytes = value.to_le_bytes();
            for (i, b) in bytes.iter().take(width).enumerate() {
                if let Some(slot) = data.get_mut(at + i) {
                    *slot = *b;
                }
            }
        }
        3 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(64));
            data.drain(at..at + n);
        }
        4 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            data.splice(at..at, bytes);
        }
        5 if len > 0 => {
            let at = rng.below(len);
            data.truncate(at);
        }
        6 if len > 0 => {
            let from = rng.below(len);
            let n = 1 + rng.below((len - from).min(256));
            let piece = data[from..from + n].to_vec();
            let at = rng.below(len + 1);
            data.splice(at..at, piece);
        }
        7 if !pool.is_empty() => {
            let other = &pool[rng.below(pool.len())];
            if !other.is_empty() {
                let from = rng.below(other.len());
                let n = 1 + rng.below((other.len() - from).min(512));
                let at = rng.below(len + 1);
                let end = (at + rng.below(n + 1)).min(len);
                data.splice(at..end, other[from..from + n].iter().copied());
            }
        }
        8 | 9 if !dictionary.is_empty() => {
            let token = dictionary[rng.below(dictionary.len())];
            let at = rng.below(len + 1);
            if rng.below(2) == 0 {
                data.splice(at..at, token.iter().copied());
            } else {
                let end = (at + token.len()).min(len);
                data.splice(at..end, token.iter().copied());
            }
        }
        _ if len > 1 => {
            // Swap two bytes: reorders fields and digits.
            let (a, b) = (rng.below(len), rng.below(len));
            data.swap(a, b);
        }
        _ => data.push(rng.next_u64() as u8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_inputs() {
        let pool = vec![b"hello world".to_vec(), vec![0u8; 40]];
        let run = |seed| {
            let mut rng = Rng::new(seed);
            (0..50)
                .map(|_| mutate(&mut rng, &pool, &[b":"], 100))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        assert!(run(9).iter().all(|m| m.len() <= 100));
    }
}
