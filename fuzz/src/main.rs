//! The AFL++ harness: `myvault-fuzz TARGET` under afl-fuzz runs one target of
//! `myvault::fuzz` per input. Helpers for scripts/fuzz:
//!
//! ```text
//! myvault-fuzz list                       the targets
//! myvault-fuzz seeds TARGET DIR           writes its seeds and regression inputs into DIR
//! myvault-fuzz dict TARGET FILE           writes its tokens as an AFL++ dictionary
//! myvault-fuzz replay TARGET FILE...      runs inputs once each (a crash aborts)
//! myvault-fuzz capture HOST PORT FILE     records a real server's answers to the client
//!                                         session (a seed for mysql_client)
//! ```

use std::path::Path;
use std::process::ExitCode;

use myvault::fuzz::{self, Target, alloc_limit::LimitedAlloc};

#[global_allocator]
static ALLOC: LimitedAlloc = LimitedAlloc;

fn target(name: &str) -> Result<&'static Target, String> {
    fuzz::target(name).ok_or_else(|| format!("no target {name} (myvault-fuzz list)"))
}

fn write_seeds(t: &Target, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let mut inputs = fuzz::seeds(t);
    inputs.extend(fuzz::regressions(t).into_iter().map(|(_, d)| d));
    for (i, data) in inputs.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:04}")), data).map_err(|e| e.to_string())?;
    }
    eprintln!("{}: {} inputs in {}", t.name, inputs.len(), dir.display());
    Ok(())
}

fn run(args: &[&str]) -> Result<(), String> {
    match args {
        ["list"] => {
            for t in fuzz::TARGETS {
                println!("{}", t.name);
            }
        }
        ["seeds", name, dir] => write_seeds(target(name)?, Path::new(dir))?,
        ["dict", name, file] => {
            std::fs::write(file, fuzz::afl_dictionary(target(name)?)).map_err(|e| e.to_string())?
        }
        ["replay", name, files @ ..] => {
            let t = target(name)?;
            for f in files {
                let data = std::fs::read(f).map_err(|e| format!("{f}: {e}"))?;
                fuzz::run_one(t, &data);
                println!("{f}: ok");
            }
        }
        ["capture", host, port, file] => {
            let port: u16 = port.parse().map_err(|_| format!("bad port {port}"))?;
            let bytes = fuzz::wire::capture(host, port).map_err(|e| e.to_string())?;
            std::fs::write(file, &bytes).map_err(|e| e.to_string())?;
            eprintln!("{file}: {} bytes from {host}:{port}", bytes.len());
        }
        [name] => {
            let t = target(name)?;
            afl::fuzz!(|data: &[u8]| {
                fuzz::run_one(t, data);
            });
        }
        _ => return Err("usage: myvault-fuzz list | seeds T DIR | dict T FILE | replay T FILE... | capture HOST PORT FILE | TARGET".into()),
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("myvault-fuzz: {e}");
            ExitCode::from(2)
        }
    }
}
