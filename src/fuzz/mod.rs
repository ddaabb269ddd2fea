//! Fuzz targets for every parser of bytes myvault does not control (issue 18, item 15):
//! binlog files and events (with compressed transaction payloads and the SQL the fallback
//! replay makes of them), row events decoded into values and rendered as SQL, the client protocol (handshake, authentication, result rows) and the
//! replication source's side of it,
//! GTID sets in text and binary form, repository manifests, index and pack files, blob
//! codecs, damaged repositories (plain and encrypted), encrypted objects, `mysql://` URLs and
//! repository locations, MySQL option files, the configuration file and TIME arguments.
//!
//! Each target asserts properties, not only "does not panic": round trips where there is an
//! encoder, a typed error and bounded allocation (see [`alloc_limit`]) for decoders of raw
//! bytes, and "damage is an integrity error, never wrong data" for the repository readers.
//!
//! Two engines run the same targets:
//! - `cargo test` runs each one over its seeds, its kept regression inputs
//!   (`fixtures/fuzz/<target>/regressions/`) and a fixed number of inputs from a deterministic
//!   mutator ([`mutate`]): a few seconds per target, the same inputs every run.
//! - `scripts/fuzz <target> [seconds]` runs one coverage-guided with AFL++ (the `fuzz/` crate,
//!   stable toolchain) and copies every crash it finds into the regression directory.

pub mod alloc_limit;
mod binlog;
mod gtid;
pub mod mutate;
mod repo;
mod rows;
mod text;
pub mod wire;

#[cfg(test)]
mod regressions;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

/// One fuzz target.
pub struct Target {
    pub name: &'static str,
    /// Runs one input; panics when a property does not hold.
    pub run: fn(&[u8]),
    /// Seeds the code makes itself (encoded manifests, packs, handshakes...), beside the files
    /// in `fixtures/fuzz/<name>/seeds/` and [`Target::seed_dirs`].
    pub generated_seeds: fn() -> Vec<Vec<u8>>,
    /// Other fixture directories (relative to the crate) whose files are seeds, with the file
    /// name prefixes to take from them.
    pub seed_dirs: &'static [(&'static str, &'static [&'static str])],
    /// Tokens the mutator inserts (and AFL++'s dictionary).
    pub dictionary: &'static [&'static [u8]],
    /// The largest single allocation one input may cause.
    pub max_alloc: usize,
    /// Mutated inputs the bounded CI run tries.
    pub ci_inputs: u32,
    /// Mutants are cut to this length.
    pub max_len: usize,
}

const MIB: usize = 1 << 20;

pub static TARGETS: &[Target] = &[
    binlog::FILE,
    binlog::EVENT,
    rows::ROWS,
    wire::CLIENT,
    wire::REPLICA,
    gtid::TEXT,
    gtid::BINARY,
    repo::MANIFEST,
    repo::INDEX,
    repo::PACK,
    repo::CODEC,
    repo::DAMAGE,
    repo::ENCRYPTED,
    text::URL,
    text::OPTION_FILE,
    text::CONFIG,
    text::TIME,
];

pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// The crate's root, where `fixtures/` is.
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where a target's kept inputs live.
pub fn fixture_dir(target: &Target, kind: &str) -> PathBuf {
    crate_dir()
        .join("fixtures/fuzz")
        .join(target.name)
        .join(kind)
}

/// The files of a directory (not recursive), sorted by name, with their bytes.
pub fn files_in(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|p| std::fs::read(&p).ok().map(|d| (p, d)))
        .collect()
}

/// Every seed of a target: its seed files, the fixture files it names, and what it makes.
pub fn seeds(target: &Target) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = files_in(&fixture_dir(target, "seeds"))
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    for (dir, prefixes) in target.seed_dirs {
        let mut stack = vec![crate_dir().join(dir)];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut paths: Vec<PathBuf> =
                entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            for p in paths {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                if p.is_dir() {
                    stack.push(p);
                } else if prefixes.iter().any(|pre| name.starts_with(pre))
                    && let Ok(d) = std::fs::read(&p)
                {
                    out.push(d);
                }
            }
        }
    }
    out.extend((target.generated_seeds)());
    out
}

/// The inputs that once broke a target, kept so they never break it again.
pub fn regressions(target: &Target) -> Vec<(PathBuf, Vec<u8>)> {
    files_in(&fixture_dir(target, "regressions"))
}

/// Runs one input with the target's allocation limit armed.
pub fn run_one(target: &'static Target, data: &[u8]) {
    alloc_limit::with_limit(target.name, target.max_alloc, data, || (target.run)(data));
}

/// AFL++'s dictionary format: one quoted token a line, bytes outside printable ASCII as `\xNN`.
pub fn afl_dictionary(target: &Target) -> String {
    let mut out = String::new();
    for (i, token) in target.dictionary.iter().enumerate() {
        out.push_str(&format!("t{i}=\""));
        for &b in *token {
            if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("\\x{b:02x}"));
            }
        }
        out.push_str("\"\n");
    }
    out
}
