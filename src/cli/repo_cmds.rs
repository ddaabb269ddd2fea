//! Repository commands: init, list, verify, copy, unlock.

use clap::Args;

use super::each_repo;
use super::output;
use crate::error::{Error, Result};
use crate::ops;
use crate::repo::{HashAlg, RepoError};

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Where to create the repository: a directory or s3://bucket/prefix.
    #[arg(long, value_name = "REPO")]
    pub repo: Option<String>,
    /// Average chunk size for dumps and binlogs, e.g. 1048576.
    #[arg(long, value_name = "BYTES")]
    pub chunk_size: Option<u32>,
    /// zstd level, 1 (fast, the default) to 19.
    #[arg(long, value_name = "N")]
    pub compression_level: Option<i32>,
    /// Target size of pack files in bytes, 1 MiB to 512 MiB (default 16 MiB).
    #[arg(long, value_name = "BYTES")]
    pub pack_size: Option<u32>,
    /// How content is named: blake3 (the default, fastest) or sha256 (to write beside a
    /// repository created before myvault offered blake3).
    #[arg(long, value_name = "HASH", value_parser = parse_hash)]
    pub hash: Option<HashAlg>,
}

fn parse_hash(name: &str) -> std::result::Result<HashAlg, String> {
    HashAlg::parse(name).ok_or_else(|| format!("unknown hash '{name}' (blake3 or sha256)"))
}

pub fn init(a: &InitArgs, ctx: &super::Ctx) -> Result<()> {
    let opts = ops::init::InitOptions {
        chunk_size: a.chunk_size,
        compression_level: a.compression_level,
        pack_size: a.pack_size,
        hash: a.hash,
    };
    let targets = each_repo::targets(a.repo.as_ref(), ctx.cfg())?;
    let store_opts = ctx.store.options();
    each_repo::run(
        ctx.out,
        &targets,
        |t| ops::init::run(&t.location, &store_opts, &opts).into(),
        |r| outln!("created repository {} (id {})", r.repo, r.id),
    )
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Repository to list (default: every [[repo]] of the config).
    #[arg(long, value_name = "REPO")]
    pub repo: Option<String>,
}

pub fn list(a: &ListArgs, ctx: &super::Ctx) -> Result<()> {
    let targets = each_repo::targets(a.repo.as_ref(), ctx.cfg())?;
    let store_opts = ctx.store.options();
    each_repo::run(
        ctx.out,
        &targets,
        |t| {
            ops::repos::open(&t.location, &store_opts)
                .and_then(|repo| ops::list::run(&repo))
                .into()
        },
        print_list,
    )
}

fn print_list(r: &ops::list::ListReport) {
    if r.snapshots.is_empty() {
        outln!("no snapshots in {}", r.repo);
    } else {
        outln!(
            "{:<26} {:<20} {:<8} {:>10} {:>10} {:>7}  gtid_executed",
            "snapshot",
            "time (UTC)",
            "method",
            "size",
            "new",
            "lock ms"
        );
    }
    for s in &r.snapshots {
        outln!(
            "{:<26} {:<20} {:<8} {:>10} {:>10} {:>7}  {}",
            s.id,
            s.time.format("%Y-%m-%d %H:%M:%S"),
            s.method,
            output::bytes(s.size),
            output::bytes(s.new_bytes),
            s.lock_seconds
                .map(|l| format!("{:.2}", l * 1000.0))
                .unwrap_or_else(|| "-".into()),
            s.gtid_executed.as_deref().unwrap_or("-").replace('\n', "")
        );
    }
    for g in &r.gaps {
        outln!(
            "GAP in the binlog archive of {} (found {}): {}",
            g.server_uuid,
            g.detected_at.format("%Y-%m-%d %H:%M:%S"),
            g.detail
        );
    }
    for b in &r.binlog {
        outln!(
            "binlog of {}: {} files, {}",
            b.server_uuid,
            b.files,
            output::bytes(b.bytes)
        );
        let t = |t: Option<chrono::DateTime<chrono::Utc>>| {
            t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_else(|| "?".into())
        };
        for range in &b.ranges {
            outln!(
                "  {} .. {}   {} .. {}",
                range.first_file,
                range.last_file,
                t(range.start),
                t(range.end)
            );
        }
        for w in &b.windows {
            outln!(
                "  restorable {} .. {}   (from snapshot {}, {} .. {})",
                t(Some(w.start)),
                t(w.end),
                w.first_snapshot,
                w.first_file,
                w.last_file
            );
        }
        for g in &b.gaps {
            outln!("  HOLE: {}", g.detail);
        }
    }
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Repository to verify (default: every [[repo]] of the config).
    #[arg(long, value_name = "REPO")]
    pub repo: Option<String>,
    /// Check structure and references only, without reading the packs.
    #[arg(long)]
    pub no_read_data: bool,
    /// Also restore a snapshot on a temporary server and read every table back.
    #[arg(long)]
    pub restore_test: bool,
    /// The snapshot the restore test uses (default: the latest).
    #[arg(long, value_name = "ID", requires = "restore_test")]
    pub snapshot: Option<String>,
    /// The mysqld binary for the restore test (default: `[restore] mysqld` of the config).
    #[arg(long, value_name = "PATH", requires = "restore_test")]
    pub mysqld: Option<std::path::PathBuf>,
    /// Directory for the restore test's data (default: the system's temporary directory).
    #[arg(long, value_name = "DIR", requires = "restore_test")]
    pub scratch_dir: Option<std::path::PathBuf>,
    /// Skip comparing every restored table with the checksums the backup recorded (the
    /// rows as dumped; CHECK TABLE and CHECKSUM TABLE for clone snapshots).
    #[arg(long, requires = "restore_test")]
    pub no_content_check: bool,
}

/// `verify`'s output: the integrity report, plus the restore test when one ran.
#[derive(serde::Serialize)]
struct VerifyOutput {
    #[serde(flatten)]
    integrity: ops::verify::VerifyReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    restore_test: Option<ops::restore_test::RestoreTestReport>,
}

pub fn verify(a: &VerifyArgs, ctx: &super::Ctx) -> Result<()> {
    let targets = each_repo::targets(a.repo.as_ref(), ctx.cfg())?;
    // Checked before reading anything: a missing binary is a usage error, not an hour later.
    let mysqld = match a.restore_test {
        false => None,
        true => Some(
            a.mysqld
                .clone()
                .or_else(|| {
                    ctx.cfg()
                        .and_then(|c| c.restore.as_ref())
                        .and_then(|r| r.mysqld.clone())
                })
                .ok_or_else(|| {
                    crate::error::Error::Usage(
                        "--restore-test needs --mysqld PATH (a server of the snapshot's version)"
                            .into(),
                    )
                })?,
        ),
    };
    each_repo::run(
        ctx.out,
        &targets,
        |t| {
            let clock = std::time::Instant::now();
            let done = match ops::repos::open(&t.location, &ctx.store.options()) {
                Ok(repo) => {
                    if let Ok(n) = ops::stream::unresolved_gaps(&repo) {
                        ctx.metrics.record(super::metrics::gaps(&t.location, n));
                    }
                    verify_one(a, ctx, &t.location, &repo, mysqld.as_deref())
                }
                Err(e) => Err(e).into(),
            };
            ctx.metrics.record(super::metrics::verify(
                &t.location,
                done.error.is_none(),
                clock.elapsed().as_secs_f64(),
                chrono::Utc::now(),
            ));
            done
        },
        print_verify,
    )
}

/// Verifies one repository (and restore-tests it when asked) and records the result in it.
fn verify_one(
    a: &VerifyArgs,
    ctx: &super::Ctx,
    location: &str,
    repo: &std::sync::Arc<crate::repo::Repo>,
    mysqld: Option<&std::path::Path>,
) -> each_repo::Done<VerifyOutput> {
    let out = ctx.out;
    let started = chrono::Utc::now();
    let pace = output::Pace::start();
    let checked = ops::verify::run(repo, !a.no_read_data, |done, total| {
        if total > 0 && (done % 16 == 0 || done == total) {
            out.progress(&format!(
                "verifying packs {done}/{total} ({}) {}",
                pace.rate(done as u64, " packs"),
                pace.left(done as u64, total as u64)
            ));
        }
    });
    out.progress_done();
    let integrity = match checked {
        Ok(r) => r,
        Err(e) => {
            record_verify(repo, started, !a.no_read_data, Err(e.to_string()), None);
            return Err(e).into();
        }
    };
    ctx.metrics.record(super::metrics::verify_problems(
        location,
        integrity.problems.len(),
    ));
    let damaged = !integrity.problems.is_empty();
    let mut output = VerifyOutput {
        integrity,
        restore_test: None,
    };
    let mut test_error = None;
    if let (Some(mysqld), false) = (mysqld, damaged) {
        let request = ops::restore_test::RestoreTestRequest {
            snapshot: a.snapshot.as_deref().unwrap_or("latest"),
            mysqld,
            scratch: a.scratch_dir.as_deref(),
            content_check: !a.no_content_check,
        };
        let tested = ops::restore_test::run(repo, &request, &|s| out.progress(s));
        out.progress_done();
        ctx.metrics
            .record(super::metrics::restore_test(location, tested.as_ref().ok()));
        match tested {
            Ok(t) => output.restore_test = Some(t),
            Err(e) => test_error = Some(e),
        }
    }
    let tested = match (&output.restore_test, &test_error) {
        (Some(t), _) => Some(Ok(t)),
        (None, Some(e)) => Some(Err(e.to_string())),
        (None, None) => None,
    };
    record_verify(
        repo,
        started,
        !a.no_read_data,
        Ok(&output.integrity),
        tested,
    );
    let error = test_error.or_else(|| {
        damaged.then(|| {
            RepoError::integrity(
                &output.integrity.repo,
                "the repository",
                format!("{} problem(s) found", output.integrity.problems.len()),
            )
            .into()
        })
    });
    each_repo::Done {
        report: Some(output),
        error,
    }
}

/// Leaves the result in the repository for `status`; a repository that takes no record
/// (read-only, or gone meanwhile) does not change the verify's own outcome.
fn record_verify(
    repo: &crate::repo::Repo,
    started: chrono::DateTime<chrono::Utc>,
    read_data: bool,
    integrity: std::result::Result<&ops::verify::VerifyReport, String>,
    restore_test: Option<std::result::Result<&ops::restore_test::RestoreTestReport, String>>,
) {
    let outcome = ops::verify::Outcome {
        started,
        read_data,
        integrity,
        restore_test,
    };
    if let Err(e) = ops::verify::record(repo, &outcome) {
        tracing::warn!(
            repo = repo.name(),
            "the result was not recorded in {} (status will not see it): {e}",
            repo.name()
        );
    }
}

fn print_verify(v: &VerifyOutput) {
    {
        let r = &v.integrity;
        outln!(
            "{}: {} packs, {} blobs, {} read, {} snapshots, {} binlog segments",
            r.repo,
            r.packs,
            r.blobs,
            output::bytes(r.bytes_read),
            r.snapshots,
            r.binlog_segments
        );
        if r.unindexed_packs > 0 {
            outln!(
                "  {} pack(s) from interrupted writes are not indexed (prune removes them)",
                r.unindexed_packs
            );
        }
        for p in &r.problems {
            outln!("  DAMAGED {}: {}", p.object, p.detail);
            for a in &p.affects {
                outln!("    affects {a}");
            }
        }
        if !r.damaged_snapshots.is_empty() {
            outln!(
                "  snapshots that cannot be restored: {}",
                r.damaged_snapshots.join(", ")
            );
        }
        for s in &r.damaged_segments {
            outln!(
                "  binlog {} of {} cannot be read: point-in-time recovery cannot pass it",
                s.file,
                s.source_uuid
            );
        }
        if r.problems.is_empty() {
            outln!("no problems found");
        }
        if let Some(t) = &v.restore_test {
            outln!(
                "restore test of snapshot {} ({}): {} tables, {} rows read back; gtid_executed {}; restore {:.1} s, check {:.1} s",
                t.snapshot,
                t.method,
                t.tables,
                t.rows,
                if t.gtid_executed.is_empty() {
                    "empty"
                } else {
                    &t.gtid_executed
                },
                t.restore_seconds,
                t.check_seconds
            );
            match &t.content_check {
                Some(c) => outln!("  {}", c.summary()),
                None => outln!("  content check skipped (--no-content-check)"),
            }
        }
    }
}

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// Repository to copy from; it is only read.
    #[arg(long, value_name = "REPO")]
    pub from: String,
    /// Repository to bring up to date with --from (created beforehand with `init`).
    #[arg(long, value_name = "REPO")]
    pub to: String,
}

pub fn copy(a: &CopyArgs, ctx: &super::Ctx) -> Result<()> {
    let (store, out) = (&ctx.store, ctx.out);
    let from = ops::repos::open(&a.from, &store.options())?;
    let to = ops::repos::open(&a.to, &store.options())?;
    let report = ops::copy::run(&from, &to, |key| out.progress(&format!("copied {key}")))?;
    out.progress_done();
    ctx.metrics
        .record(super::metrics::copy(&report, chrono::Utc::now()));
    out.report(&report, |r| {
        outln!(
            "{} -> {}: {} packs ({}), {} index files, {} snapshots, {} binlog segments copied",
            r.from,
            r.to,
            r.packs_copied,
            output::bytes(r.bytes_copied),
            r.index_files_copied,
            r.snapshots_copied,
            r.binlog_segments_copied
        );
        if r.deltas_without_base > 0 {
            outln!(
                "  {} delta chunk(s) left out of the index: their base is not in {} (run `myvault verify --repo {}`)",
                r.deltas_without_base,
                r.to,
                r.from
            );
        }
        for m in &r.manifests_skipped {
            outln!("  NOT COPIED {m}");
        }
    });
    if !report.manifests_skipped.is_empty() {
        // The source cannot give back what these need: as for verify, an integrity failure.
        return Err(RepoError::integrity(
            &report.from,
            "the repository",
            format!(
                "{} manifest(s) not copied: they need chunks that cannot be read; run `myvault verify --repo {}`",
                report.manifests_skipped.len(),
                report.from
            ),
        )
        .into());
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct UnlockArgs {
    /// Repository whose stale locks to remove (default: every [[repo]] of the config).
    #[arg(long, value_name = "REPO")]
    pub repo: Option<String>,
    /// Remove every lock, also those of running processes and those that cannot be read.
    #[arg(long)]
    pub all: bool,
}

#[derive(serde::Serialize)]
struct UnlockReport {
    repo: String,
    removed: Vec<crate::repo::lock::LockInfo>,
    remaining: Vec<crate::repo::lock::LockInfo>,
    /// Lock objects that do not decode: they block every command until `--all` removes them.
    removed_unreadable: Vec<crate::repo::lock::UnreadableLock>,
    remaining_unreadable: Vec<crate::repo::lock::UnreadableLock>,
}

/// Removes stale locks from each repository; a lock still held (by a live process, without
/// `--all`) is the repository's failure, exit 7, so that a script sees it is not free.
pub fn unlock(a: &UnlockArgs, ctx: &super::Ctx) -> Result<()> {
    let targets = each_repo::targets(a.repo.as_ref(), ctx.cfg())?;
    let store_opts = ctx.store.options();
    each_repo::run(
        ctx.out,
        &targets,
        |t| {
            let unlocked = ops::repos::open(&t.location, &store_opts).and_then(|repo| {
                let removed = ops::unlock::run(&repo, a.all)?;
                let remaining = ops::unlock::held(&repo)?;
                Ok((repo.name().to_string(), removed, remaining))
            });
            let (name, removed, remaining) = match unlocked {
                Ok(u) => u,
                Err(e) => return Err(e).into(),
            };
            let holder = (remaining.unreadable.first().map(|u| u.describe()))
                .or_else(|| remaining.held.first().map(|l| l.describe()));
            let error = holder.map(|holder| {
                Error::Repo(RepoError::Locked {
                    store: name,
                    holder,
                })
            });
            each_repo::Done {
                report: Some(UnlockReport {
                    repo: t.location.clone(),
                    removed: removed.held,
                    remaining: remaining.held,
                    removed_unreadable: removed.unreadable,
                    remaining_unreadable: remaining.unreadable,
                }),
                error,
            }
        },
        |r| {
            for l in &r.removed {
                outln!("removed {}", l.describe());
            }
            for u in &r.removed_unreadable {
                outln!("removed {}", u.describe());
            }
            for l in &r.remaining {
                outln!("still held: {} (not stale; --all removes it)", l.describe());
            }
            for u in &r.remaining_unreadable {
                outln!("still there: {}", u.describe());
            }
            let none = r.removed.is_empty() && r.removed_unreadable.is_empty();
            if none && r.remaining.is_empty() && r.remaining_unreadable.is_empty() {
                outln!("no locks");
            }
        },
    )
}
