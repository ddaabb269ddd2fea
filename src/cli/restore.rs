//! `myvault restore`

use std::path::PathBuf;

use clap::Args;

use std::sync::atomic::Ordering;

use super::output;
use crate::error::{Error, Result};
use crate::mysql::gtid::GtidSet;
use crate::ops;
use crate::restore::logical::{LoadOptions, LoadProgress};
use crate::restore::pitr::plan::{Kind, PitrPlan, Target};
use crate::restore::pitr::replay::Engine;
use crate::restore::pitr::table_ddl::{Name, qualified};
use std::collections::BTreeMap;

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Repository to restore from (default: the config's first [[repo]]).
    #[arg(long, value_name = "REPO")]
    pub repo: Option<String>,

    /// Snapshot id (or a unique prefix, or `latest`).
    #[arg(long, value_name = "ID", default_value = "latest")]
    pub snapshot: String,

    /// Load a logical snapshot into this (empty) server: mysql://user[:password]@host[:port]
    /// (password also from --target-password-file, MYVAULT_TARGET_PASSWORD or [target] in the
    /// config; never the source's).
    #[arg(long, value_name = "URL", conflicts_with = "dest")]
    pub target: Option<String>,

    #[command(flatten)]
    pub target_login: super::connection::TargetConnArgs,

    /// Write a snapshot's files into this new or empty directory.
    #[arg(long, value_name = "DIR", conflicts_with = "datadir")]
    pub dest: Option<PathBuf>,

    /// Restore a clone or cold snapshot as a data directory (new or empty), ready to start
    /// as a new server.
    #[arg(long, value_name = "DIR", conflicts_with = "target")]
    pub datadir: Option<PathBuf>,

    /// Owner of the restored data directory, user[:group] (e.g. mysql:mysql).
    #[arg(long, value_name = "USER[:GROUP]")]
    pub owner: Option<String>,

    /// Keep the source's auto.cnf (its server_uuid): only for replacing the very server the
    /// snapshot came from.
    #[arg(long)]
    pub keep_server_uuid: bool,

    /// A mysqld of the snapshot's version, to replay binlogs into --datadir.
    #[arg(long, value_name = "PATH")]
    pub mysqld: Option<PathBuf>,

    /// Parallel load connections (default: the number of CPUs, 2 to 8).
    #[arg(long, short = 'j', value_name = "N", value_parser = super::parse_jobs)]
    pub jobs: Option<usize>,

    /// Switch InnoDB's redo log off during the load (MySQL 8.0.21+); it is switched back on
    /// at the end. A crash of the target meanwhile loses the target.
    #[arg(long)]
    pub disable_redo_log: bool,

    /// During the load, raise the target's InnoDB redo log to at least this many MiB
    /// (innodb_redo_log_capacity on MySQL 8.0.30+, innodb_log_file_size on MariaDB 10.9+), and
    /// put it back at the end: a small redo log makes a bulk load wait for checkpoints. The
    /// target needs that much free disk. 0 leaves it as it is.
    #[arg(long, value_name = "MiB", default_value_t = 1024)]
    pub redo_log_capacity: u64,

    /// Load into a target that already has databases or GTIDs (not with a point in time).
    #[arg(long)]
    pub force: bool,

    /// Do not create the snapshot's accounts.
    #[arg(long)]
    pub no_users: bool,

    /// Skip the content check: reading every restored table back and comparing it with the
    /// checksums the backup recorded (logical: each table's rows as dumped; clone: CHECK
    /// TABLE, and CHECKSUM TABLE when recorded, when a server is started on --datadir to
    /// replay).
    #[arg(long)]
    pub no_content_check: bool,

    /// Restore to this instant: every transaction committed at or before it, none after.
    /// RFC 3339, or YYYY-MM-DD HH:MM:SS[.ffffff] in the local time zone.
    #[arg(long, value_name = "TIME", conflicts_with_all = ["to_gtid", "before_gtid"])]
    pub to_time: Option<String>,

    /// Restore up to and including these GTIDs.
    #[arg(long, value_name = "GTID_SET", conflicts_with = "before_gtid")]
    pub to_gtid: Option<String>,

    /// Restore everything before the first of these GTIDs (to undo a bad transaction).
    #[arg(long, value_name = "GTID_SET")]
    pub before_gtid: Option<String>,

    /// Print what would be done (snapshot, binlog files, boundary, end state) and change nothing.
    #[arg(long)]
    pub plan: bool,

    /// How binlogs are replayed: `applier` (the target's own replication applier, fed by
    /// myvault acting as its source; fastest) or `sql` (statements in one session, as
    /// mysqlbinlog | mysql; for targets that cannot connect back to this host).
    /// Default: applier; with --tables, sql for a logical snapshot (the applier would record
    /// the source's GTIDs on the target) and applier on a clone's temporary server.
    #[arg(long, value_name = "ENGINE")]
    pub engine: Option<String>,

    /// Address the replay source listens on, reachable from the target
    /// (default: this host's address towards the target, free port).
    #[arg(long, value_name = "HOST:PORT")]
    pub replay_listen: Option<String>,

    /// Do not read back the archived binlogs the replay needs before touching the target
    /// (a damaged one is then found during the replay, after the snapshot is loaded).
    #[arg(long)]
    pub skip_archive_check: bool,

    /// Restore only these tables (DB.T, comma-separated, named as they were when the snapshot
    /// was taken) to the point in time, into a running --target beside its other data:
    /// nothing else on it changes. Written to its binary log under its own GTIDs, so its
    /// replicas get the tables (see --no-binlog).
    #[arg(long, value_name = "DB.T[,DB.T...]", value_delimiter = ',')]
    pub tables: Vec<String>,

    /// With --tables: restore them into this database (created if missing), under their names.
    #[arg(long, value_name = "DB")]
    pub into_database: Option<String>,

    /// With --tables: restore DB.T as DB2.T2 (repeatable; selects DB.T too).
    #[arg(long, value_name = "DB.T=DB2.T2")]
    pub rename: Vec<String>,

    /// With --tables: drop a destination table that exists and restore it (without this, an
    /// existing destination is refused with exit code 16).
    #[arg(long)]
    pub replace_existing: bool,

    /// With --tables: keep the restore out of the target's binary log (sql_log_bin = 0, which
    /// needs SESSION_VARIABLES_ADMIN or SYSTEM_VARIABLES_ADMIN): the tables then exist on the
    /// target only, not on its replicas, and a failover loses them.
    #[arg(long)]
    pub no_binlog: bool,

    /// With --tables from a clone or cold snapshot: how the tables go from the temporary
    /// server to the target: `transport` (InnoDB tablespace files, FLUSH TABLES ... FOR
    /// EXPORT / IMPORT TABLESPACE: the target's data directory on this host, same version and
    /// page size, and --no-binlog or a target without binary log), `logical` (rows through
    /// LOAD DATA), or `auto` (transport where allowed).
    #[arg(long, value_name = "METHOD", default_value = "auto")]
    pub copy_method: String,

    /// With --tables from a clone or cold snapshot: where the temporary server's data
    /// directory goes (default: the system's temporary directory; it needs room for the whole
    /// snapshot).
    #[arg(long, value_name = "DIR")]
    pub scratch_dir: Option<PathBuf>,
}

/// `DB.T` as (database, table).
fn parse_table(flag: &str, text: &str) -> Result<(String, String)> {
    match text.trim().split_once('.') {
        Some((db, t)) if !db.is_empty() && !t.is_empty() && !t.contains('.') => {
            Ok((db.to_string(), t.to_string()))
        }
        _ => Err(Error::Usage(format!("{flag}: `{text}` is not DB.TABLE"))),
    }
}

impl RestoreArgs {
    fn pitr_target(&self) -> Result<Option<Target>> {
        let gtids = |s: &str| GtidSet::parse(s).map_err(|e| Error::Usage(e.to_string()));
        Ok(match (&self.to_time, &self.to_gtid, &self.before_gtid) {
            (Some(t), _, _) => Some(Target::Time(
                crate::timespec::parse(t).map_err(Error::Usage)?,
            )),
            (_, Some(g), _) => Some(Target::ToGtid(gtids(g)?)),
            (_, _, Some(g)) => Some(Target::BeforeGtid(gtids(g)?)),
            _ => None,
        })
    }

    /// `latest` means "choose for me" in PITR.
    fn load_options(&self, jobs: usize) -> LoadOptions {
        LoadOptions {
            jobs: jobs.max(1),
            disable_redo_log: self.disable_redo_log,
            redo_log_capacity: self.redo_log_capacity.saturating_mul(1024 * 1024),
            keep_load_settings: false,
            force: self.force,
            users: !self.no_users,
            content_check: !self.no_content_check,
            binlog: false,
        }
    }

    fn engine(&self) -> Result<Engine<'_>> {
        Engine::parse(
            self.engine.as_deref().unwrap_or("applier"),
            self.replay_listen.as_deref(),
        )
    }

    /// Source table -> destination, from --tables, --rename and --into-database.
    fn table_map(&self) -> Result<BTreeMap<Name, Name>> {
        let mut map = BTreeMap::new();
        let mut renamed = BTreeMap::new();
        for r in &self.rename {
            let (from, to) = r
                .split_once('=')
                .ok_or_else(|| Error::Usage(format!("--rename: `{r}` is not DB.T=DB2.T2")))?;
            renamed.insert(parse_table("--rename", from)?, parse_table("--rename", to)?);
        }
        for t in &self.tables {
            let src = parse_table("--tables", t)?;
            let dest = match (&renamed.get(&src), &self.into_database) {
                (Some(d), _) => (*d).clone(),
                (None, Some(db)) => (db.clone(), src.1.clone()),
                (None, None) => src.clone(),
            };
            map.insert(src, dest);
        }
        for (src, dest) in renamed {
            map.insert(src, dest);
        }
        let mut seen = std::collections::BTreeSet::new();
        for dest in map.values() {
            if !seen.insert(dest) {
                return Err(Error::Usage(format!(
                    "two tables would be restored as {}",
                    qualified(dest)
                )));
            }
        }
        Ok(map)
    }

    fn pitr_snapshot(&self) -> Option<&str> {
        (self.snapshot != "latest").then_some(self.snapshot.as_str())
    }
}

fn print_plan(p: &PitrPlan) {
    print_plan_ending(p, "end state: gtid_executed =");
}

/// `ending`: what `expected_gtids` is to the reader (a whole server's end state, or only the
/// source's at the boundary when some tables are restored into a server of its own).
fn print_plan_ending(p: &PitrPlan, ending: &str) {
    outln!(
        "restore snapshot {} (taken {}, binlog {})",
        p.snapshot,
        p.snapshot_time.format("%Y-%m-%d %H:%M:%S%.6f UTC"),
        p.snapshot_binlog
    );
    outln!(
        "  snapshot gtid_executed: {}",
        if p.snapshot_gtids.is_empty() {
            "(empty)"
        } else {
            &p.snapshot_gtids
        }
    );
    if let Some(t) = p.to_time {
        outln!(
            "  up to {} (UTC): every transaction committed at or before it",
            t.format("%Y-%m-%d %H:%M:%S%.6f")
        );
    }
    if let Some(g) = &p.to_gtid {
        outln!("  up to and including {g}");
    }
    if let Some(g) = &p.before_gtid {
        outln!("  up to, not including, {g}");
    }
    outln!(
        "  replay {} transaction(s) from {} binlog file(s):",
        p.transactions,
        p.files.len()
    );
    for f in &p.files {
        outln!(
            "    {} {} ({})",
            f.server_uuid,
            f.file,
            output::bytes(f.size)
        );
    }
    let t = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M:%S%.6f UTC").to_string())
            .unwrap_or_else(|| "-".into())
    };
    outln!(
        "  last transaction applied committed at {}",
        t(p.last_transaction_time)
    );
    if p.first_skipped_time.is_some() {
        outln!(
            "  first transaction left out committed at {}",
            t(p.first_skipped_time)
        );
    }
    outln!("  {ending} {}", p.expected_gtids);
    outln!(
        "  latest restorable instant in the archive: {}",
        t(p.latest_restorable)
    );
    for w in &p.warnings {
        outln!("  note: {w}");
    }
}

fn print_pitr_report(r: &ops::pitr::PitrReport) {
    print_plan(&r.plan);
    if let Some(c) = &r.archive_check {
        outln!(
            "  archive checked: {} binlog file(s), {} ({} read back in {:.1} s, the rest by the plan)",
            c.files,
            output::bytes(c.bytes),
            output::bytes(c.bytes - c.bytes_read_by_plan),
            c.seconds
        );
    }
    if let Some(resumed) = &r.resumed {
        outln!(
            "  continued an interrupted run ({}; gtid_executed was {}{})",
            if resumed.load_done {
                "it had finished the load"
            } else {
                "it was loading the snapshot"
            },
            if resumed.gtid_executed.is_empty() {
                "(empty)"
            } else {
                &resumed.gtid_executed
            },
            if resumed.channel_removed {
                "; its replay channel was stopped and removed"
            } else {
                ""
            }
        );
    }
    for w in &r.warnings {
        outln!("  warning: {w}");
    }
    let load = match &r.load {
        Some(l) => format!("snapshot loaded in {:.1} s", l.seconds),
        None => "snapshot loaded by the interrupted run".to_string(),
    };
    outln!(
        "done: {load}, {} transactions replayed in {:.1} s ({:.0}/s); gtid_executed = {}",
        r.replay.transactions,
        r.replay.seconds,
        r.replay.transactions as f64 / r.replay.seconds.max(0.001),
        r.replay.final_gtids
    );
    // A load the interrupted run finished was checked by that run.
    if let Some(l) = &r.load {
        print_content_check(l.content_check.as_ref());
    }
}

fn print_content_check(c: Option<&crate::restore::content_check::ContentCheckReport>) {
    match c {
        Some(c) => outln!("  {}", c.summary()),
        None => outln!("  content check skipped (--no-content-check)"),
    }
}

pub fn run(a: &RestoreArgs, ctx: &super::Ctx) -> Result<()> {
    let (out, store) = (ctx.out, &ctx.store);
    let jobs = a
        .jobs
        .or_else(|| {
            ctx.cfg()
                .and_then(|c| c.restore.as_ref())
                .and_then(|r| r.jobs)
        })
        .unwrap_or_else(super::backup::default_jobs);
    let repo = ops::repos::open(
        &super::config::one_repo(a.repo.as_ref(), ctx.cfg())?,
        &store.options(),
    )?;
    if !a.tables.is_empty() || !a.rename.is_empty() {
        return run_tables(a, ctx, &repo, jobs);
    }
    if a.into_database.is_some() || a.replace_existing || a.no_binlog {
        return Err(Error::Usage(
            "--into-database, --replace-existing and --no-binlog go with --tables".into(),
        ));
    }
    let owner = a
        .owner
        .as_deref()
        .map(crate::restore::datadir::parse_owner)
        .transpose()?;
    if let Some(dir) = &a.datadir {
        let pitr = a.pitr_target()?;
        if a.plan {
            let target = pitr.ok_or_else(|| {
                Error::Usage("--plan goes with --to-time, --to-gtid or --before-gtid".into())
            })?;
            let plan = ops::pitr::plan(&repo, &target, a.pitr_snapshot(), Kind::Physical)?;
            out.report(&plan, print_plan);
            return Ok(());
        }
        let mysqld = a.mysqld.clone().or_else(|| {
            ctx.cfg()
                .and_then(|c| c.restore.as_ref())
                .and_then(|r| r.mysqld.clone())
        });
        let check_pace = output::Pace::start();
        let check_progress = |done: usize, total: usize, bytes: u64| {
            out.progress(&archive_check_line(&check_pace, done, total, bytes))
        };
        let pitr_with = match (&pitr, &mysqld) {
            (Some(t), Some(m)) => Some(ops::restore_datadir::DatadirPitr {
                target: t,
                mysqld: m.as_path(),
                check_archive: !a.skip_archive_check,
                check_progress: &check_progress,
            }),
            (Some(_), None) => return Err(Error::Usage(
                "replaying into --datadir needs --mysqld PATH (a server of the snapshot's version)"
                    .into(),
            )),
            (None, _) => None,
        };
        let req = ops::restore_datadir::DatadirRequest {
            snapshot: if pitr.is_some() {
                a.pitr_snapshot()
            } else {
                Some(a.snapshot.as_str())
            },
            dir,
            owner,
            keep_uuid: a.keep_server_uuid,
            engine: a.engine()?,
            pitr: pitr_with,
            content_check: !a.no_content_check,
            jobs,
        };
        let report = ops::restore_datadir::run(&repo, &req, &|applied, _, _| {
            out.progress(&format!("replaying: {applied} transactions applied"))
        })?;
        out.progress_done();
        out.report(&report, |r| {
            if let Some(p) = &r.plan {
                print_plan(p);
            }
            outln!("restored snapshot {} into {}: {} files, {}", r.restored.snapshot, r.restored.dest, r.restored.files, output::bytes(r.restored.bytes));
            if let Some(c) = &r.content_check {
                outln!("  {}", c.summary());
            }
            if let Some(rep) = &r.replay {
                outln!("  replayed {} transactions in {:.1} s; gtid_executed = {}", rep.transactions, rep.seconds, rep.final_gtids);
            }
            outln!("  start it with: mysqld --datadir={} (auto.cnf removed: it gets its own server_uuid)", r.restored.dest);
        });
        return Ok(());
    }
    if let Some(target) = a.pitr_target()? {
        if a.plan {
            let plan = ops::pitr::plan(&repo, &target, a.pitr_snapshot(), Kind::Logical)?;
            out.report(&plan, print_plan);
            return Ok(());
        }
        let Some(url) = &a.target else {
            return Err(Error::Usage(
                "point-in-time restore needs --target URL (or --plan)".into(),
            ));
        };
        let server = a.target_login.resolve(url, ctx)?;
        let opts = a.load_options(jobs);
        let load_progress = LoadProgress::default();
        let started = std::time::Instant::now();
        let check_pace = output::Pace::start();
        let req = ops::pitr::PitrRequest {
            target: &target,
            snapshot: a.pitr_snapshot(),
            server: &server,
            load: &opts,
            engine: a.engine()?,
            check_archive: !a.skip_archive_check,
        };
        let progress = ops::pitr::PitrProgress {
            check: &|done, total, bytes| {
                out.progress(&archive_check_line(&check_pace, done, total, bytes))
            },
            load: &load_progress,
            replay: &|applied, bytes, served| {
                let secs = started.elapsed().as_secs_f64().max(0.001);
                out.progress(&format!(
                    "replaying: {applied} transactions applied, {served} sent, {} ({:.0} tx/s)",
                    output::bytes(bytes),
                    applied as f64 / secs
                ))
            },
        };
        let report = ops::pitr::run(&repo, &req, &progress)?;
        out.progress_done();
        out.report(&report, print_pitr_report);
        return Ok(());
    }
    if a.plan {
        return Err(Error::Usage(
            "--plan goes with --to-time, --to-gtid or --before-gtid".into(),
        ));
    }
    if let Some(url) = &a.target {
        let target = a.target_login.resolve(url, ctx)?;
        let opts = a.load_options(jobs);
        let progress = LoadProgress::default();
        let pace = output::Pace::start();
        let report = out.with_ticker(
            || {
                let rows = progress.rows.load(Ordering::Relaxed);
                let done = progress.chunks_done.load(Ordering::Relaxed);
                let total = progress.chunks_total.load(Ordering::Relaxed);
                format!(
                    "loading: {rows} rows ({}), chunk {done}/{total} {}",
                    pace.rate(rows, " rows"),
                    pace.left(done, total)
                )
            },
            || ops::restore_logical::run(&repo, &a.snapshot, &target, &opts, &progress),
        )?;
        out.report(&report, |r| {
            outln!(
                "restored snapshot {} into {}: {} tables, {} rows, {:.1} s{}",
                r.snapshot,
                r.target,
                r.tables,
                r.rows,
                r.seconds,
                if r.resumed_chunks > 0 {
                    format!(" ({} chunks were already loaded)", r.resumed_chunks)
                } else {
                    String::new()
                }
            );
            if let Some(g) = &r.gtid_purged {
                outln!("  gtid_purged set to {g}");
            }
            print_content_check(r.content_check.as_ref());
            for v in &r.server_settings {
                outln!(
                    "  {} was {} on the target, {} during the load, put back",
                    v.name,
                    v.before,
                    v.during
                );
            }
            if !r.accounts_skipped.is_empty() {
                outln!(
                    "  existing accounts left as they were: {}",
                    r.accounts_skipped.join(", ")
                );
            }
            for w in &r.warnings {
                outln!("  warning: {w}");
            }
        });
        return Ok(());
    }
    let Some(dest) = &a.dest else {
        return Err(Error::Usage(
            "give --target URL (a server) or --dest DIR (files)".into(),
        ));
    };
    let report = ops::restore_files::run(&repo, &a.snapshot, dest, |path, bytes| {
        out.progress(&format!("{} restored, {path}", output::bytes(bytes)))
    })?;
    out.progress_done();
    out.report(&report, |r| {
        outln!(
            "restored snapshot {} into {}: {} files, {}",
            r.snapshot,
            r.dest,
            r.files,
            output::bytes(r.bytes)
        )
    });
    Ok(())
}

fn archive_check_line(pace: &output::Pace, done: usize, total: usize, bytes: u64) -> String {
    format!(
        "checking the archive: {done}/{total} binlog files, {} read ({}) {}",
        output::bytes(bytes),
        pace.rate(bytes / (1024 * 1024), " MiB"),
        pace.left(done as u64, total as u64)
    )
}

fn print_tables_plan(p: &ops::restore_tables::TablesPlan) {
    print_plan_ending(
        &p.pitr,
        "the source's gtid_executed at the boundary (the target keeps its own):",
    );
    outln!("  tables ({} snapshot, {} engine):", p.method, p.engine);
    if let Some(copy) = &p.copy_method {
        outln!(
            "  copy to the target: {copy}{}",
            if copy == "auto" {
                " (transport where both servers allow it, else logical)"
            } else {
                ""
            }
        );
    }
    for t in &p.tables {
        outln!("    {} -> {}", t.source, t.destination);
    }
    outln!(
        "  {}",
        if p.binlog {
            "written to the target's binary log under its own GTIDs: its replicas get the tables"
        } else {
            "kept out of the target's binary log (--no-binlog): its replicas get nothing"
        }
    );
    outln!(
        "  of the window's transactions, {} touch these tables (only their part is applied), {} are left out",
        p.transactions_touching,
        p.transactions_left_out
    );
    for d in &p.ddl {
        outln!(
            "  inside the window: {}{}",
            d.note,
            d.gtid
                .as_ref()
                .map(|g| format!(" ({g})"))
                .unwrap_or_default()
        );
    }
    for w in &p.warnings {
        outln!("  warning: {w}");
    }
}

/// `restore --tables`: plan, or restore beside the live data of --target.
fn run_tables(
    a: &RestoreArgs,
    ctx: &super::Ctx,
    repo: &std::sync::Arc<crate::repo::Repo>,
    jobs: usize,
) -> Result<()> {
    let out = ctx.out;
    let boundary = a.pitr_target()?.ok_or_else(|| {
        Error::Usage("--tables goes with --to-time, --to-gtid or --before-gtid".into())
    })?;
    if a.datadir.is_some() || a.dest.is_some() {
        return Err(Error::Usage(
            "--tables restores into a running --target, not --datadir/--dest".into(),
        ));
    }
    let map = a.table_map()?;
    let mysqld = a.mysqld.clone().or_else(|| {
        ctx.cfg()
            .and_then(|c| c.restore.as_ref())
            .and_then(|r| r.mysqld.clone())
    });
    let opts = a.load_options(jobs);
    let req = ops::restore_tables::TablesRequest {
        boundary: &boundary,
        snapshot: a.pitr_snapshot(),
        tables: &map,
        replace_existing: a.replace_existing,
        binlog: !a.no_binlog,
        load: &opts,
        engine: a.engine.as_ref().map(|_| a.engine()).transpose()?,
        mysqld: mysqld.as_deref(),
        scratch: a.scratch_dir.as_deref(),
        copy_method: ops::restore_tables::CopyMethod::parse(&a.copy_method)?,
        check_archive: !a.skip_archive_check,
    };
    if a.plan {
        let (plan, _) = ops::restore_tables::plan(repo, &req)?;
        out.report(&plan, print_tables_plan);
        return Ok(());
    }
    let Some(url) = &a.target else {
        return Err(Error::Usage(
            "--tables needs --target URL (the server to restore them into), or --plan".into(),
        ));
    };
    let server = a.target_login.resolve(url, ctx)?;
    let load_progress = LoadProgress::default();
    let report = ops::restore_tables::run(
        repo,
        &req,
        &server,
        &load_progress,
        &|done, total, bytes| {
            out.progress(&format!(
                "checking the archive: {done}/{total} binlog files, {} read",
                output::bytes(bytes)
            ))
        },
        &|applied, bytes, _| {
            out.progress(&format!(
                "replaying: {applied} transactions read, {}",
                output::bytes(bytes)
            ))
        },
    )?;
    out.progress_done();
    out.report(&report, |r| {
        print_tables_plan(&r.plan);
        if let Some(earlier) = &r.earlier_run {
            outln!("  {earlier}");
        }
        if let Some(l) = &r.load {
            outln!(
                "  loaded {} table(s), {} rows from the snapshot in {:.1} s",
                l.tables,
                l.rows,
                l.seconds
            );
            print_content_check(l.content_check.as_ref());
        }
        if let Some(c) = &r.copy {
            outln!(
                "  copied {} table(s) ({}), {} rows from the temporary server in {:.1} s ({})",
                c.tables,
                r.copy_method.as_deref().unwrap_or("logical"),
                c.rows,
                c.seconds,
                r.copy_method_why.as_deref().unwrap_or_default()
            );
        }
        outln!(
            "done: {} table(s) restored to {} in {:.1} s (replay {:.1} s); nothing else on the target changed",
            r.plan.tables.len(),
            r.plan.pitr.boundary(),
            r.seconds,
            r.replay_seconds
        );
        for w in r.warnings.iter().filter(|w| !r.plan.warnings.contains(w)) {
            outln!("  warning: {w}");
        }
    });
    Ok(())
}
