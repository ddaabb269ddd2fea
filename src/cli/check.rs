//! `myvault check --source URL`

use clap::Args;

use crate::error::{Error, Result};
use crate::ops::check::{self, CheckReport, Status};

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The server to check: mysql://user[:password]@host[:port]
    #[arg(long, value_name = "URL")]
    pub source: Option<String>,
}

pub fn run(args: &CheckArgs, ctx: &super::Ctx) -> Result<()> {
    let out = ctx.out;
    let url = super::config::source_or(args.source.as_ref(), ctx.cfg())?;
    let opts = ctx.conn.resolve(&url, "MYVAULT_PASSWORD")?;
    let report = check::run(&opts)?;
    out.report(&report, print_human);
    if report.ok {
        Ok(())
    } else {
        let failed: Vec<&str> = report
            .checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| c.name.as_str())
            .collect();
        Err(Error::SourceNotReady(format!(
            "{} is not ready for backup and PITR: {} failed",
            report.source,
            failed.join(", ")
        )))
    }
}

fn print_human(r: &CheckReport) {
    outln!(
        "{} {} at {} ({}, server_uuid {}, account {})",
        r.flavor,
        r.version,
        r.source,
        if r.tls { "TLS" } else { "no TLS" },
        r.server_uuid.as_deref().unwrap_or("?"),
        r.account.as_deref().unwrap_or("?"),
    );
    for c in &r.checks {
        let tag = match c.status {
            Status::Ok => "ok  ",
            Status::Info => "info",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        outln!("  {tag}  {:<32} {}", c.name, c.value);
        if c.status != Status::Ok {
            if let Some(d) = &c.detail {
                outln!("        {d}");
            }
            if let Some(f) = &c.fix {
                outln!("        fix: {f}");
            }
        }
    }
    let (fails, warns) = (r.count(Status::Fail), r.count(Status::Warn));
    if fails == 0 {
        outln!("ready for backup and PITR ({warns} warning(s))");
    } else {
        outln!("NOT ready: {fails} failure(s), {warns} warning(s)");
    }
}
