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

/// Runs `work` on every item with one thread per worker (a connection, usually), each worker
/// taking the next item when it is done; the results in item order. The first error stops
/// the others from taking more.
pub fn on_each<C: Send, T: Send, R: Send, E: Send>(
    workers: &mut [C],
    items: Vec<T>,
    work: impl Fn(&mut C, T) -> Result<R, E> + Sync,
) -> Result<Vec<R>, E> {
    let count = items.len();
    let queue = Mutex::new(items.into_iter().enumerate());
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..count).map(|_| None).collect());
    let first_error = FirstError::new();
    std::thread::scope(|s| {
        for worker in workers.iter_mut() {
            let (queue, results, first_error, work) = (&queue, &results, &first_error, &work);
            s.spawn(move || {
                while !first_error.failed() {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                    let Some((i, item)) = next else { break };
                    match work(worker, item) {
                        Ok(r) => results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r),
                        Err(e) => first_error.set(e),
                    }
                }
            });
        }
    });
    first_error.into_result()?;
    // Without an error every item ran (the workers stop only when the queue is empty).
    Ok(results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect())
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

    #[test]
    fn each_item_runs_once_and_results_keep_their_order() {
        let mut workers = vec![0u32; 3];
        let items: Vec<u32> = (0..100).collect();
        let out = on_each(&mut workers, items, |n, i| {
            *n += 1;
            Ok::<_, ()>(i * 2)
        });
        assert_eq!(out, Ok((0..100).map(|i| i * 2).collect()));
        assert_eq!(workers.iter().sum::<u32>(), 100);
        let failed = on_each(&mut workers, (0..100).collect(), |_, i: u32| match i {
            7 => Err("seven"),
            _ => Ok(i),
        });
        assert_eq!(failed, Err("seven"));
    }
}
