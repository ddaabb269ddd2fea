//! A global allocator that refuses, per thread, any single allocation over a limit: how the
//! fuzz targets check "never allocates unboundedly on a length field". A decoder that sizes a
//! buffer from a length it read (4 GiB from a u32 of damage) fails here on the first input
//! that says so, instead of on the machine that one day reads such a file.
//!
//! Over the limit, the allocator writes the target's name, the size and the input (in hex) to
//! stderr with plain `write(2)` (nothing may allocate here), then aborts: a crash the
//! coverage-guided engine saves, and that the bounded CI loop reports with its input.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Allocates from [`System`], within the limit armed on the calling thread.
pub struct LimitedAlloc;

thread_local! {
    static LIMIT: Cell<usize> = const { Cell::new(usize::MAX) };
    static TARGET: Cell<&'static str> = const { Cell::new("") };
    static INPUT: Cell<(*const u8, usize)> = const { Cell::new((std::ptr::null(), 0)) };
}

/// Arms the limit on this thread while `f` runs `input` through `target`.
pub fn with_limit<R>(target: &'static str, limit: usize, input: &[u8], f: impl FnOnce() -> R) -> R {
    struct Disarm;
    impl Drop for Disarm {
        fn drop(&mut self) {
            LIMIT.set(usize::MAX);
            INPUT.set((std::ptr::null(), 0));
        }
    }
    TARGET.set(target);
    INPUT.set((input.as_ptr(), input.len()));
    LIMIT.set(limit);
    let _disarm = Disarm;
    f()
}

fn check(size: usize) {
    let limit = LIMIT.try_with(Cell::get).unwrap_or(usize::MAX);
    // A panic's report (its backtrace) allocates what it needs: the panic is the finding.
    if size > limit && !std::thread::panicking() {
        report(size, limit);
        std::process::abort();
    }
}

/// Writes the finding to stderr without allocating.
fn report(size: usize, limit: usize) {
    LIMIT.set(usize::MAX);
    let target = TARGET.try_with(Cell::get).unwrap_or("");
    let (ptr, len) = INPUT.try_with(Cell::get).unwrap_or((std::ptr::null(), 0));
    write_all(b"\nfuzz target ");
    write_all(target.as_bytes());
    write_all(b": one allocation of ");
    write_number(size);
    write_all(b" bytes, over the limit of ");
    write_number(limit);
    write_all(b", for an input of ");
    write_number(len);
    write_all(b" bytes (hex follows)\n");
    if !ptr.is_null() {
        // SAFETY: `with_limit` stored a live slice, borrowed for as long as it is armed.
        let input = unsafe { std::slice::from_raw_parts(ptr, len) };
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for piece in input.chunks(64) {
            let mut line = [0u8; 129];
            for (i, b) in piece.iter().enumerate() {
                line[2 * i] = HEX[usize::from(b >> 4)];
                line[2 * i + 1] = HEX[usize::from(b & 15)];
            }
            line[2 * piece.len()] = b'\n';
            write_all(&line[..2 * piece.len() + 1]);
        }
    }
}

fn write_number(mut n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    write_all(&digits[at..]);
}

fn write_all(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: writes initialised bytes to the process's stderr.
        let n = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
        if n <= 0 {
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

// SAFETY: every call is passed to `System` unchanged; the check only reads a thread-local
// `Cell` of a `Copy` value (no lazy initialisation, no destructor) and never allocates.
unsafe impl GlobalAlloc for LimitedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: forwarded as received.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: forwarded as received.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        // SAFETY: forwarded as received.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// The unit-test binary runs the bounded fuzz loop (`fuzz::tests`), so it allocates through
/// the limit too; unarmed threads (every other test) see no limit.
#[cfg(test)]
#[global_allocator]
static GLOBAL: LimitedAlloc = LimitedAlloc;
