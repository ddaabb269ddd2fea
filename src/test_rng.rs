//! Deterministic pseudo-random numbers for unit tests and the fuzz mutator (Marsaglia's
//! xorshift): the same sequence on every run and every machine, so a test's data never changes
//! under it.

/// 64-bit xorshift (13, 7, 17). The seed must not be 0.
pub struct XorShift64(u64);

impl XorShift64 {
    pub fn new(seed: u64) -> XorShift64 {
        XorShift64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// 32-bit xorshift (13, 17, 5). The seed must not be 0.
pub struct XorShift32(u32);

impl XorShift32 {
    pub fn new(seed: u32) -> XorShift32 {
        XorShift32(seed)
    }

    pub fn next_u32(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
}
