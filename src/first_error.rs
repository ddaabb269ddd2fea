//! The first error of a group of worker threads: kept for the caller, and a flag the other
//! workers poll so they stop taking work.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

pub struct FirstError<E> {
    failed: AtomicBool,
    error: Mutex<Option<E>>,
}

impl<E> Default for FirstError<E> {
    fn default() -> Self {
        FirstError {
            failed: AtomicBool::new(false),
            error: Mutex::new(None),
        }
    }
}

impl<E> FirstError<E> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `e` unless an earlier error was recorded.
    pub fn set(&self, e: E) {
        self.failed.store(true, Ordering::Relaxed);
        // A poisoned lock still holds a consistent Option.
        self.error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(e);
    }

    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// `Err` with the first error recorded, if any.
    pub fn into_result(self) -> Result<(), E> {
        match self.error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_of_many_threads() {
        let first = FirstError::new();
        assert!(!first.failed());
        first.set("a");
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| first.set("later"));
            }
        });
        assert!(first.failed());
        assert_eq!(first.into_result(), Err("a"));
        assert_eq!(FirstError::<&str>::new().into_result(), Ok(()));
    }
}
