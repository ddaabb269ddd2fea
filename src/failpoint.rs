//! Failpoints: named places where a test can make myvault pause or die, to check crash safety
//! deterministically. Inert unless `MYVAULT_FAILPOINTS` names them, e.g.
//! `MYVAULT_FAILPOINTS="dump-after-snapshot=sleep(3000);restore-after-chunk=abort(3)"`.
//!
//! Actions: `sleep(MS)` pauses each time; `abort(N)` kills the process without cleanup on the
//! N-th hit, as `kill -9` would.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy)]
enum Action {
    Sleep(u64),
    Abort(u64),
}

fn table() -> &'static HashMap<String, Action> {
    static TABLE: OnceLock<HashMap<String, Action>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let spec = std::env::var("MYVAULT_FAILPOINTS").unwrap_or_default();
        spec.split(';')
            .filter_map(|item| {
                let (name, action) = item.split_once('=')?;
                let (verb, arg) = action.trim().strip_suffix(')')?.split_once('(')?;
                let n: u64 = arg.parse().ok()?;
                let action = match verb {
                    "sleep" => Action::Sleep(n),
                    "abort" => Action::Abort(n.max(1)),
                    _ => return None,
                };
                Some((name.trim().to_string(), action))
            })
            .collect()
    })
}

/// Marks a failpoint; does nothing unless the environment names it.
pub fn hit(name: &str) {
    let Some(action) = table().get(name) else {
        return;
    };
    match *action {
        Action::Sleep(ms) => std::thread::sleep(std::time::Duration::from_millis(ms)),
        Action::Abort(n) => {
            static HITS: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);
            let mut hits = HITS.lock().unwrap_or_else(|e| e.into_inner());
            let count = hits
                .get_or_insert_with(HashMap::new)
                .entry(name.to_string())
                .or_insert(0);
            *count += 1;
            if *count >= n {
                eprintln!("myvault: failpoint {name}: aborting");
                std::process::abort();
            }
        }
    }
}
