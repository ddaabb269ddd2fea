//! The command line described for shells and `man`: generated from the same definitions that
//! parse it, so they cannot drift apart.

use std::path::PathBuf;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::error::{Error, Result};

use super::Cli;
use super::output::Output;

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_name = "SHELL")]
    pub shell: Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Directory to write the pages into (created if missing), e.g. /usr/share/man/man1.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
}

pub fn completions(a: &CompletionsArgs) -> Result<()> {
    let mut cmd = Cli::command();
    // Rendered aside: clap_complete panics when stdout closes early (`| head`).
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "myvault", &mut script);
    outln!("{}", String::from_utf8_lossy(&script).trim_end());
    Ok(())
}

pub fn man_pages(a: &ManArgs, out: Output) -> Result<()> {
    std::fs::create_dir_all(&a.dir)
        .map_err(|e| Error::io(format!("cannot create {}", a.dir.display()), e))?;
    let root = Cli::command();
    let mut written = Vec::new();
    write_page(&root, "myvault", &a.dir, &mut written)?;
    for sub in root.get_subcommands() {
        let name = format!("myvault-{}", sub.get_name());
        write_page(sub, &name, &a.dir, &mut written)?;
        for nested in sub.get_subcommands() {
            let name = format!("myvault-{}-{}", sub.get_name(), nested.get_name());
            write_page(nested, &name, &a.dir, &mut written)?;
        }
    }
    out.report(&written, |w| {
        outln!("wrote {} manual pages into {}", w.len(), a.dir.display())
    });
    Ok(())
}

fn write_page(
    cmd: &clap::Command,
    name: &str,
    dir: &std::path::Path,
    written: &mut Vec<String>,
) -> Result<()> {
    let cmd = cmd.clone().name(name.to_string());
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut page)
        .map_err(|e| Error::io(format!("cannot render the page {name}"), e))?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, page)
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    written.push(path.display().to_string());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn undescribed(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id != "help" && id != "version" && arg.get_help().is_none() {
                out.push(format!("{path} --{}", arg.get_long().unwrap_or(id)));
            }
        }
        for sub in cmd.get_subcommands() {
            undescribed(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_option_of_every_command_is_described() {
        let mut missing = Vec::new();
        undescribed(&Cli::command(), "myvault", &mut missing);
        assert!(
            missing.is_empty(),
            "options without help text: {missing:#?}"
        );
    }
}
