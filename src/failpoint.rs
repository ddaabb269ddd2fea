//! Failpoints: named places where a test can make myvault pause or die, to check crash safety
//! deterministically. Compiled in only with the `failpoints` feature (the test command builds
//! with it; release builds do not), and even then inert unless `MYVAULT_FAILPOINTS` names them,
//! e.g. `MYVAULT_FAILPOINTS="dump-after-snapshot=sleep(3000);restore-after-chunk=abort(3)"`.
//!
//! Actions: `sleep(MS)` pauses each time; `abort(N)` kills the process without cleanup on the
//! N-th hit, as `kill -9` would; `trace()` prints a line on each hit, so a test can count the
//! hits of an uninterrupted run and then kill a run at a random one of them.

/// Marks a failpoint; does nothing unless the build has the `failpoints` feature and the
/// environment names it.
#[inline(always)]
pub fn hit(name: &str) {
    #[cfg(feature = "failpoints")]
    active::hit(name);
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// Whether this build honours `MYVAULT_FAILPOINTS` (tests that need failpoints check it, so a
/// build without them fails loudly instead of passing by never killing anything).
pub const ENABLED: bool = cfg!(feature = "failpoints");

#[cfg(feature = "failpoints")]
mod active {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::OnceLock;

    #[derive(Debug, Clone, Copy)]
    enum Action {
        Sleep(u64),
        Abort(u64),
        Trace,
    }

    fn table() -> &'static HashMap<String, Action> {
        static TABLE: OnceLock<HashMap<String, Action>> = OnceLock::new();
        TABLE.get_or_init(|| {
            let spec = std::env::var("MYVAULT_FAILPOINTS").unwrap_or_default();
            spec.split(';')
                .filter_map(|item| {
                    let (name, action) = item.split_once('=')?;
                    let (verb, arg) = action.trim().strip_suffix(')')?.split_once('(')?;
                    let n = || arg.parse::<u64>().ok();
                    let action = match verb {
                        "sleep" => Action::Sleep(n()?),
                        "abort" => Action::Abort(n()?.max(1)),
                        "trace" => Action::Trace,
                        _ => return None,
                    };
                    Some((name.trim().to_string(), action))
                })
                .collect()
        })
    }

    pub(super) fn hit(name: &str) {
        let Some(action) = table().get(name) else {
            return;
        };
        match *action {
            Action::Sleep(ms) => std::thread::sleep(std::time::Duration::from_millis(ms)),
            // Test-only code: the test counts these lines.
            #[allow(clippy::print_stderr)]
            Action::Trace => eprintln!("myvault: failpoint {name}: hit"),
            Action::Abort(n) => {
                static HITS: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);
                let mut hits = HITS.lock().unwrap_or_else(|e| e.into_inner());
                let count = hits
                    .get_or_insert_with(HashMap::new)
                    .entry(name.to_string())
                    .or_insert(0);
                *count += 1;
                if *count >= n {
                    // Test-only code: the test reads this line to know the kill was ours.
                    #[allow(clippy::print_stderr)]
                    {
                        eprintln!("myvault: failpoint {name}: aborting");
                    }
                    std::process::abort();
                }
            }
        }
    }
}
