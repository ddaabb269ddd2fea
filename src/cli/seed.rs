//! `myvault seed-replica`

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::error::{Error, Result};
use crate::ops;
use crate::ops::seed::{Fill, SeedPlan, SeedRequest};
use crate::restore::logical::LoadOptions;
use crate::secret::Secret;

#[derive(Args, Debug)]
pub struct SeedArgs {
    /// The server to replicate from: mysql://user[:password]@host[:port]
    #[arg(long, value_name = "URL")]
    pub source: Option<String>,

    /// The new replica: mysql://user[:password]@host[:port] (password also from
    /// --target-password-file, MYVAULT_TARGET_PASSWORD or [target] in the config; never the
    /// source's). With --datadir, where the server started on it answers.
    #[arg(long, value_name = "URL")]
    pub target: String,

    #[command(flatten)]
    pub target_login: super::connection::TargetConnArgs,

    /// Seed from this repository's newest snapshot (logical, or clone/cold with --datadir).
    #[arg(long, value_name = "REPO")]
    pub repo: Option<String>,

    /// Snapshot id (or a unique prefix) instead of the newest of the right kind.
    #[arg(long, value_name = "ID", default_value = "latest")]
    pub snapshot: String,

    /// Clone the source directly (CLONE INSTANCE FROM, run on the target); no repository.
    #[arg(long, conflicts_with_all = ["repo", "datadir"])]
    pub clone: bool,

    /// Restore a clone or cold snapshot into this new or empty data directory; a server is
    /// then started on it (--start-command, or by you) and reached at --target.
    #[arg(long, value_name = "DIR")]
    pub datadir: Option<PathBuf>,

    /// Owner of the restored data directory, user[:group] (e.g. mysql:mysql).
    #[arg(long, value_name = "USER[:GROUP]", requires = "datadir")]
    pub owner: Option<String>,

    /// Shell command that starts the target server (e.g. `systemctl start mysql`): run after
    /// --datadir is restored, or when the target stops after --clone instead of restarting.
    #[arg(long, value_name = "CMD")]
    pub start_command: Option<String>,

    /// Seconds to wait for the target to come up (after --datadir or --clone).
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub start_timeout: u64,

    /// Account the replica logs in to the source with (default: the --source account).
    /// Its password: --replication-password-file or MYVAULT_REPLICATION_PASSWORD.
    #[arg(long, value_name = "USER")]
    pub replication_user: Option<String>,

    /// File holding the replication user's password (first line); also
    /// MYVAULT_REPLICATION_PASSWORD.
    #[arg(long, value_name = "FILE")]
    pub replication_password_file: Option<PathBuf>,

    /// The source's address as the replica reaches it (default: the --source URL's).
    #[arg(long, value_name = "HOST:PORT")]
    pub source_address: Option<String>,

    /// Leave the replica writable (super_read_only is switched on by default).
    #[arg(long)]
    pub no_super_read_only: bool,

    /// Wait until the replica has caught up (at most SECONDS, default 3600), then verify it.
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "3600")]
    pub wait: Option<u64>,

    /// With --wait: skip comparing every table with the source.
    #[arg(long)]
    pub no_verify: bool,

    /// Seed a target that has data, GTIDs or replication already.
    #[arg(long)]
    pub force: bool,

    /// Parallel load connections for a logical snapshot.
    #[arg(long, short = 'j', value_name = "N", value_parser = super::parse_jobs)]
    pub jobs: Option<usize>,

    /// Seconds the verification's brief global read lock on the source may wait.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub lock_wait_timeout: u64,

    /// Print the checks' outcome and the steps, and change nothing.
    #[arg(long)]
    pub plan: bool,
}

fn print_plan(p: &SeedPlan) {
    outln!(
        "seed {} as a replica of {} (server_id {}), method {}",
        p.target,
        p.source,
        p.source_server_id,
        p.method
    );
    if let (Some(id), Some(g)) = (&p.snapshot, &p.snapshot_gtids) {
        outln!("  snapshot {id}, gtid_executed {g}");
    }
    outln!(
        "  the replica connects to {} as {}",
        p.replication_source,
        p.replication_user
    );
    for (i, s) in p.steps.iter().enumerate() {
        outln!("  {}. {s}", i + 1);
    }
}

fn host_port(spec: &str) -> Result<(String, u16)> {
    let bad = || Error::Usage(format!("--source-address {spec}: expected HOST:PORT"));
    let (h, p) = spec.rsplit_once(':').ok_or_else(bad)?;
    Ok((
        h.trim_matches(['[', ']']).to_string(),
        p.parse().map_err(|_| bad())?,
    ))
}

pub fn run(a: &SeedArgs, ctx: &super::Ctx) -> Result<()> {
    let out = ctx.out;
    let source_url = super::config::source_or(a.source.as_ref(), ctx.cfg())?;
    let source = ctx.conn.resolve(&source_url, "MYVAULT_PASSWORD")?;
    let target = a.target_login.resolve(&a.target, ctx)?;
    if source.socket.is_some() && a.source_address.is_none() {
        return Err(Error::Usage(
            "the source is reached over a socket: give --source-address HOST:PORT for the replica"
                .into(),
        ));
    }
    let password = match (
        &a.replication_password_file,
        std::env::var("MYVAULT_REPLICATION_PASSWORD"),
    ) {
        (Some(f), _) => Some(super::connection::read_password_file(
            f,
            &format!("--replication-password-file {}", f.display()),
        )?),
        (None, Ok(p)) => Some(Secret::new(p)),
        (None, Err(_)) => None,
    };
    if a.replication_user.is_none() && password.is_some() {
        return Err(Error::Usage(
            "a replication password was given without --replication-user".into(),
        ));
    }
    let replication =
        ops::seed::replication_account(&source, a.replication_user.as_deref(), password);
    let (host, port) = match &a.source_address {
        Some(s) => host_port(s)?,
        None => (source.host.clone(), source.port),
    };
    let repo = if a.clone {
        None
    } else {
        Some(ops::repos::open(
            &super::config::one_repo(a.repo.as_ref(), ctx.cfg())?,
            &ctx.store.options(),
        )?)
    };
    let fill = match (&a.datadir, a.clone) {
        (Some(dir), _) => Fill::Datadir {
            dir: dir.clone(),
            owner: a
                .owner
                .as_deref()
                .map(crate::restore::datadir::parse_owner)
                .transpose()?,
        },
        (None, true) => Fill::DirectClone,
        (None, false) => Fill::Logical,
    };
    let req = SeedRequest {
        source: &source,
        target: &target,
        repo: repo.as_ref(),
        snapshot: &a.snapshot,
        fill,
        replication: &replication,
        replica_source: (&host, port),
        start_command: a.start_command.as_deref(),
        start_timeout: Duration::from_secs(a.start_timeout),
        super_read_only: !a.no_super_read_only,
        wait: a.wait.map(Duration::from_secs),
        verify: !a.no_verify,
        force: a.force,
        load: LoadOptions {
            jobs: a.jobs.unwrap_or_else(super::backup::default_jobs),
            force: a.force,
            ..LoadOptions::default()
        },
        lock_wait_timeout: a.lock_wait_timeout,
    };
    if a.plan {
        let plan = ops::seed::plan(&req)?;
        out.report(&plan, print_plan);
        return Ok(());
    }
    let report = ops::seed::run(&req, &|line| out.status(line))?;
    out.report(&report, |r| {
        print_plan(&r.plan);
        outln!(
            "done: filled in {:.1} s; replica server_id {}, server_uuid {}",
            r.fill_seconds,
            r.server_id,
            r.server_uuid
        );
        match r.caught_up_seconds {
            Some(s) => outln!("  caught up with the source {s:.1} s after starting replication"),
            None => {
                outln!("  replication started; check it with SHOW REPLICA STATUS (or pass --wait)")
            }
        }
        if let Some(v) = &r.verified {
            outln!(
                "  verified: {} tables, {} rows equal to the source's at {}",
                v.tables,
                v.rows,
                v.gtid_executed
            );
        }
        for w in &r.warnings {
            outln!("  warning: {w}");
        }
    });
    Ok(())
}
