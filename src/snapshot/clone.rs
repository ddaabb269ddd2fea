//! Physical snapshots with the clone plugin: `CLONE LOCAL DATA DIRECTORY` into a staging
//! directory on the server's host, packed into the repository, then removed.
//!
//! A local clone reports no binlog coordinates (`performance_schema.clone_status` leaves
//! them empty). They are derived instead: a temporary server started on the clone says which
//! GTIDs the clone holds (`gtid_executed`), and the source's binlog says where that point is
//! (the first transaction the clone lacks).
//!
//! That temporary server also reads `CHECKSUM TABLE` of every table (unless turned off), so a
//! restore can prove it holds exactly what was cloned (see `snapshot::checksums`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::checksums::{self, TableChecksums};
use super::files;
use crate::error::{Error, Result};
use crate::mysql::gtid::GtidSet;
use crate::mysql::privileges;
use crate::mysql::session::{Session, quote_str};
use crate::repo::chunker::ChunkerConfig;
use crate::repo::manifest::SourceInfo;
use crate::repo::writer::MultiWriter;
use crate::server::{Mysqld, RunningServer, ServerConfig};

pub const NEEDS: &[privileges::Need] = &[
    ("BACKUP_ADMIN", "run CLONE LOCAL"),
    ("REPLICATION CLIENT", "read the binlog position"),
    (
        "REPLICATION SLAVE",
        "read binlog events to place the clone in the binlog",
    ),
];

#[derive(Debug, Clone)]
pub struct PhysicalSnapshot {
    pub source: SourceInfo,
    pub binlog_file: String,
    pub binlog_position: u64,
    pub gtid_executed: String,
    /// When the clone finished, on the server's clock.
    pub time: DateTime<Utc>,
    pub files: usize,
    /// `CHECKSUM TABLE` of every table at the snapshot's point, when read.
    pub table_checksums: Option<TableChecksums>,
}

/// InnoDB files change in place, page by page: fixed chunks keep unchanged pages' chunks
/// identical. Everything else is cut by content.
pub fn chunker_for(name: &str, page: ChunkerConfig, stream: ChunkerConfig) -> ChunkerConfig {
    let base = name.rsplit('/').next().unwrap_or(name);
    let innodb = base.ends_with(".ibd")
        || base.ends_with(".ibu")
        || base.starts_with("ibdata")
        || base.starts_with("undo_")
        || base.starts_with("ibtmp")
        || base.ends_with(".dblwr");
    if innodb { page } else { stream }
}

impl PhysicalSnapshot {
    /// Packs data directory `dir` into `writer` as the snapshot of `source` holding exactly
    /// `gtids`, at binlog coordinates `binlog` and server time `time`.
    pub fn pack(
        writer: &MultiWriter,
        dir: &Path,
        source: SourceInfo,
        binlog: (String, u64),
        gtids: &GtidSet,
        time: DateTime<Utc>,
    ) -> Result<PhysicalSnapshot> {
        let files = pack_datadir(writer, dir)?;
        Ok(PhysicalSnapshot {
            source,
            binlog_file: binlog.0,
            binlog_position: binlog.1,
            gtid_executed: gtids.to_string(),
            time,
            files,
            table_checksums: None,
        })
    }
}

/// Runs `work` on a staging directory, which is removed afterwards whatever happened: it is
/// the size of the database.
pub fn in_staging<T>(staging: &Path, work: impl FnOnce() -> Result<T>) -> Result<T> {
    let result = work();
    let _ = std::fs::remove_dir_all(staging);
    result
}

/// Reserves a staging directory (see [`crate::staging`]): one a killed backup left there is
/// removed; anything else there is refused.
pub fn reserve(staging: &Path) -> Result<crate::staging::Staging> {
    crate::staging::Staging::reserve(staging).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => Error::Usage(format!(
            "the clone directory {} already exists",
            staging.display()
        )),
        _ => Error::io(format!("cannot reserve {}", staging.display()), e),
    })
}

/// Packs a data directory into `writer`, InnoDB files by page and the rest by content.
fn pack_datadir(writer: &MultiWriter, dir: &Path) -> Result<usize> {
    let (page, stream) = (writer.page_chunker(), writer.stream_chunker());
    Ok(files::add_tree(writer, dir, &|name| {
        chunker_for(name, page, stream)
    })?)
}

/// The server's data directory, checked to be this host's: a local clone writes there.
fn local_datadir(s: &mut Session) -> Result<PathBuf> {
    let datadir = PathBuf::from(s.global_var("datadir")?.unwrap_or_default());
    let uuid = s.global_var("server_uuid")?.unwrap_or_default();
    let auto = std::fs::read_to_string(datadir.join("auto.cnf")).unwrap_or_default();
    if !auto.contains(&uuid) || uuid.is_empty() {
        return Err(Error::Usage(format!(
            "{} is not on this host (its datadir {} is not here): run the clone backup on the database host, \
             or give --mysqld PATH (a server of the same series) to clone it into a temporary server here",
            s.address(),
            datadir.display()
        )));
    }
    Ok(datadir)
}

pub fn ensure_plugin(s: &mut Session) -> Result<()> {
    let status = s.query_value(
        "SELECT PLUGIN_STATUS FROM information_schema.PLUGINS WHERE PLUGIN_NAME = 'clone'",
    )?;
    match status.as_deref() {
        Some("ACTIVE") => Ok(()),
        Some(other) => Err(Error::SourceNotReady(format!("the clone plugin is {other} on {}", s.address()))),
        None => s.exec("INSTALL PLUGIN clone SONAME 'mysql_clone.so'").map(|_| ()).map_err(|e| {
            Error::SourceNotReady(format!(
                "the clone plugin is not installed on {} and could not be ({e}); run: INSTALL PLUGIN clone SONAME 'mysql_clone.so'",
                s.address()
            ))
        }),
    }
}

/// A mysqld to start temporary servers with: the one given, or the source's own binary.
pub fn find_mysqld(given: Option<&Path>, s: &mut Session) -> Result<Mysqld> {
    let candidates: Vec<PathBuf> = match given {
        Some(p) => vec![p.to_path_buf()],
        None => {
            let base = PathBuf::from(s.global_var("basedir")?.unwrap_or_default());
            vec![
                base.join("sbin/mysqld"),
                base.join("bin/mysqld"),
                PathBuf::from("/usr/sbin/mysqld"),
            ]
        }
    };
    for c in &candidates {
        if c.exists()
            && let Ok(m) = Mysqld::detect(c)
            && m.version().map(|v| !v.is_empty()).unwrap_or(false)
        {
            return Ok(m);
        }
    }
    Err(Error::Usage(format!(
        "no usable mysqld found (tried {}); give --mysqld PATH, a server binary of the same version as the source",
        candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// A short private directory for a temporary server's socket and logs (socket paths are
/// limited to about a hundred bytes). Private (0700): the server behind that socket may skip
/// grant checks.
pub fn run_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("myvault-{}", crate::repo::config::random_hex(4)));
    crate::private_fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    Ok(dir)
}

/// Starts a server on `datadir` without networking or privilege checks, for myvault alone.
pub fn temporary_server(
    mysqld: &Mysqld,
    datadir: &Path,
    extra: &[String],
) -> Result<RunningServer> {
    let run = run_dir()?;
    let mut cfg = ServerConfig::new(
        datadir.to_path_buf(),
        run,
        0,
        1_000_000 + rand::random::<u32>() % 1_000_000,
    );
    cfg.binlog = false;
    cfg.gtid = true;
    cfg.skip_grants = true;
    cfg.network = false;
    cfg.die_with_parent = true;
    cfg.extra = extra.to_vec();
    RunningServer::start(mysqld, cfg, Duration::from_secs(600))
        .map_err(|e| Error::Internal(format!("temporary server on {}: {e}", datadir.display())))
}

/// Settings for a temporary server that only reads a clone: nothing it does not need, so it
/// starts and stops sooner (10-20% of its 9-12 s on the loaded test machine); the packing
/// waits for it.
const QUICK_START: &[&str] = &[
    "--performance-schema=OFF",
    "--innodb-buffer-pool-load-at-startup=OFF",
    "--innodb-buffer-pool-dump-at-shutdown=OFF",
];

/// What a temporary server on a cloned data directory reads: the GTID set it holds and, when
/// asked for, every table's `CHECKSUM TABLE`.
pub fn inspect_clone(
    mysqld: &Mysqld,
    datadir: &Path,
    table_checksums: bool,
) -> Result<(GtidSet, Option<TableChecksums>)> {
    let quick: Vec<String> = QUICK_START.iter().map(|o| o.to_string()).collect();
    let server = temporary_server(mysqld, datadir, &quick)?;
    let read = (|| -> Result<(String, Option<TableChecksums>)> {
        let gtids = server
            .session()?
            .global_var("gtid_executed")?
            .unwrap_or_default();
        let sums = match table_checksums {
            true => Some(checksums::read_all(
                &server.root_options(),
                checksums::local_jobs(),
            )?),
            false => None,
        };
        Ok((gtids, sums))
    })();
    let run = server.config().rundir.clone();
    server
        .shutdown()
        .map_err(|e| Error::Internal(e.to_string()))?;
    let _ = std::fs::remove_dir_all(run);
    // The temporary server gave itself an identity; the snapshot must not carry it.
    let _ = std::fs::remove_file(datadir.join("auto.cnf"));
    let (text, sums) = read?;
    let gtids = GtidSet::parse(&text)
        .map_err(|e| Error::Internal(format!("gtid_executed of the clone: {e}")))?;
    Ok((gtids, sums))
}

/// Where in the source's binlog the point holding exactly `gtids` is: the first transaction
/// not in the set, or the end of the file.
pub fn locate(s: &mut Session, gtids: &GtidSet) -> Result<(String, u64)> {
    let logs: Vec<(String, u64)> = s
        .query(s.info().binary_logs_sql())?
        .iter()
        .filter_map(|r| Some((r.text("Log_name")?, r.u64("File_size").unwrap_or(0))))
        .collect();
    let (file, size) = {
        let mut found = None;
        for (name, size) in logs.iter().rev() {
            if crate::binlog::source::previous_gtids(s, name)?.is_subset(gtids) {
                found = Some((name.clone(), *size));
                break;
            }
        }
        found.ok_or_else(|| {
            Error::BinlogGap("the source no longer has the binlog where the clone was taken".into())
        })?
    };
    let mut pos = 4u64;
    loop {
        let rows = s.query(&format!(
            "SHOW BINLOG EVENTS IN {} FROM {pos} LIMIT 2000",
            quote_str(&file)
        ))?;
        if rows.is_empty() {
            return Ok((file, pos.max(size.min(pos))));
        }
        for r in rows.iter() {
            let event_pos = r.u64("Pos").unwrap_or(pos);
            if r.text("Event_type")
                .as_deref()
                .is_some_and(|t| t.starts_with("Gtid"))
                && let Some(g) = r
                    .text("Info")
                    .and_then(|i| i.split('\'').nth(1).map(str::to_string))
                && let Ok(set) = GtidSet::parse(&g)
                && !set.is_subset(gtids)
            {
                return Ok((file, event_pos));
            }
            pos = r.u64("End_log_pos").unwrap_or(pos).max(pos);
        }
    }
}

/// The source as a clone recipient reaches it.
pub struct Donor<'a> {
    pub host: &'a str,
    pub port: u16,
    pub user: &'a str,
    pub password: &'a crate::secret::Secret,
}

/// Error 3707: the clone finished but the recipient cannot restart itself.
const RESTART_NOT_SUPERVISED: u16 = 3707;

/// Runs `CLONE INSTANCE FROM` on `recipient`. Success means the data is copied and the
/// recipient is restarting (by itself under a supervisor, or it has stopped and must be
/// started again).
pub fn clone_instance_from(recipient: &mut Session, donor: &Donor<'_>) -> Result<()> {
    recipient.exec(&format!(
        "SET GLOBAL clone_valid_donor_list = {}",
        quote_str(&format!("{}:{}", donor.host, donor.port))
    ))?;
    let statement = format!(
        "CLONE INSTANCE FROM {}@{}:{} IDENTIFIED BY {}",
        quote_str(donor.user),
        quote_str(donor.host),
        donor.port,
        quote_str(donor.password.expose())
    );
    match recipient.exec(&statement) {
        Ok(_) => Ok(()),
        Err(e) if e.server_code() == Some(RESTART_NOT_SUPERVISED) || e.is_connection_loss() => {
            Ok(())
        }
        // The server's message never contains the statement, so the password stays out.
        Err(e) => Err(Error::TargetRefused(format!(
            "CLONE INSTANCE FROM {}:{} failed on {}: {e}",
            donor.host,
            donor.port,
            recipient.address()
        ))),
    }
}

pub struct CloneOptions<'a> {
    /// Where the clone is written (on the server's host, or here for a remote clone); must
    /// not exist yet.
    pub clone_dir: Option<&'a Path>,
    pub mysqld: Option<&'a Path>,
    /// Clone over the network into a temporary server here, even if the source is local.
    pub remote: bool,
    /// Record `CHECKSUM TABLE` of every table, read on a temporary server on the clone.
    pub table_checksums: bool,
    /// `--max-rate`, bytes per second: a remote clone's copy runs at most at this rate
    /// (rounded down to whole MiB/s, at least 1). Packing is paced by the writer.
    pub max_rate: Option<u64>,
}

/// A server on another host (or `remote` asked for) with a `--mysqld` to receive it is
/// cloned over the network; otherwise locally.
pub fn backup(
    s: &mut Session,
    source_opts: &crate::mysql::wire::ConnectOptions,
    source: SourceInfo,
    writer: &MultiWriter,
    opts: &CloneOptions<'_>,
) -> Result<PhysicalSnapshot> {
    if !s.info().has_clone() {
        return Err(Error::Usage(format!(
            "{} {} has no clone plugin (MySQL 8.0.17+): use --method logical",
            s.info().flavor,
            s.info().version
        )));
    }
    let remote = opts.remote || local_datadir(s).is_err();
    match (remote, opts.mysqld) {
        (true, Some(mysqld)) => {
            super::clone_remote::backup(s, source_opts, source, writer, mysqld, opts)
        }
        (true, None) if opts.remote => Err(Error::Usage(
            "--remote needs --mysqld PATH, a server binary of the source's series".into(),
        )),
        _ => backup_local(s, source, writer, opts),
    }
}

/// The server runs one clone at a time (error 3634). The other is most often the clone of a
/// backup killed a moment ago, which the server goes on running until it notices its client
/// is gone: a backup run again at once (by an operator or a retrying timer) waits for it,
/// up to a minute, instead of failing.
fn clone_local_waiting_for_another(s: &mut Session, staging: &Path) -> Result<()> {
    const TOO_MANY_CLONES: u16 = 3634;
    let sql = format!(
        "CLONE LOCAL DATA DIRECTORY = {}",
        quote_str(&staging.display().to_string())
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match s.exec(&sql) {
            Ok(_) => return Ok(()),
            Err(e)
                if e.server_code() == Some(TOO_MANY_CLONES)
                    && std::time::Instant::now() < deadline =>
            {
                tracing::info!("another clone is running on the source; waiting for it to end");
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            Err(e) => {
                return Err(Error::SourceNotReady(format!(
                    "CLONE LOCAL DATA DIRECTORY failed: {e}"
                )));
            }
        }
    }
}

/// Clones the server into a staging directory, packs it into `writer`, removes it.
fn backup_local(
    s: &mut Session,
    source: SourceInfo,
    writer: &MultiWriter,
    opts: &CloneOptions<'_>,
) -> Result<PhysicalSnapshot> {
    privileges::require(s, NEEDS, "take a clone backup")?;
    let datadir = local_datadir(s)?;
    let mysqld = find_mysqld(opts.mysqld, s)?;
    ensure_plugin(s)?;
    let staging = match opts.clone_dir {
        Some(d) => d.to_path_buf(),
        None => {
            let parent = datadir.parent().unwrap_or(Path::new("/var/tmp"));
            crate::staging::sweep(parent, "myvault-clone-");
            parent.join(format!(
                "myvault-clone-{}",
                crate::repo::config::random_hex(4)
            ))
        }
    };
    let _reserved = reserve(&staging)?;
    let before = binlog_point(s)?;
    clone_local_waiting_for_another(s, &staging)?;
    in_staging(&staging, || {
        crate::failpoint::hit("backup-clone-after-staging");
        let time = server_now(s)?;
        let after = binlog_point(s)?;
        // Nothing committed while the clone ran: the clone holds exactly that point.
        // Otherwise the clone itself says which transactions it has. A temporary server on
        // the clone is started for that, or for the table checksums.
        let seen = match before != after || opts.table_checksums {
            true => Some(inspect_clone(&mysqld, &staging, opts.table_checksums)?),
            false => None,
        };
        let (gtids, binlog_file, binlog_position, table_checksums) = match seen {
            Some((gtids, sums)) if before != after => {
                let (file, pos) = locate(s, &gtids)?;
                (gtids, file, pos, sums)
            }
            seen => (after.2, after.0, after.1, seen.and_then(|(_, sums)| sums)),
        };
        let mut snap = PhysicalSnapshot::pack(
            writer,
            &staging,
            source,
            (binlog_file, binlog_position),
            &gtids,
            time,
        )?;
        snap.table_checksums = table_checksums;
        Ok(snap)
    })
}

/// The binlog file, position and executed GTIDs right now.
fn binlog_point(s: &mut Session) -> Result<(String, u64, GtidSet)> {
    let sql = s.info().binlog_status_sql();
    let rows = s.query(sql)?;
    let r = rows.first().ok_or_else(|| {
        Error::SourceNotReady(format!("{sql} returned nothing: the binary log is off"))
    })?;
    let gtids = GtidSet::parse(&r.text("Executed_Gtid_Set").unwrap_or_default())
        .map_err(|e| s.unexpected(sql, e.to_string()))?;
    Ok((
        r.text("File").unwrap_or_default(),
        r.u64("Position").unwrap_or(0),
        gtids,
    ))
}

pub fn server_now(s: &mut Session) -> Result<DateTime<Utc>> {
    let now = s
        .query_value("SELECT UTC_TIMESTAMP(6)")?
        .unwrap_or_default();
    chrono::NaiveDateTime::parse_from_str(&now, "%Y-%m-%d %H:%M:%S%.f")
        .map(|t| t.and_utc())
        .map_err(|e| {
            s.unexpected("SELECT UTC_TIMESTAMP(6)", e.to_string())
                .into()
        })
}
