//! Physical snapshots of a server on another host: a temporary recipient started here (from
//! `--mysqld`, a server binary of the source's series) runs `CLONE INSTANCE FROM` the source,
//! restarts once to finish the clone, and its data directory is packed. A remote clone
//! records its binlog coordinates and GTID set in `performance_schema.clone_status`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::checksums::{self, TableChecksums};
use super::clone::{
    Donor, PhysicalSnapshot, clone_instance_from, ensure_plugin, in_staging, run_dir, server_now,
    temporary_server,
};
use crate::error::{Error, Result};
use crate::mysql::gtid::GtidSet;
use crate::mysql::privileges;
use crate::mysql::session::Session;
use crate::mysql::wire::ConnectOptions;
use crate::repo::manifest::SourceInfo;
use crate::repo::writer::MultiWriter;
use crate::server::{Mysqld, RunningServer, ServerConfig};

pub const NEEDS: &[privileges::Need] = &[("BACKUP_ADMIN", "serve a clone (CLONE INSTANCE FROM)")];

/// The recipient: a fresh data directory, reachable over its socket only.
fn start_recipient(mysqld: &Mysqld, datadir: &Path) -> Result<RunningServer> {
    let run = run_dir()?;
    mysqld
        .initialize(datadir, &run.join("initialize.log"))
        .map_err(|e| Error::Internal(format!("initialising the clone recipient: {e}")))?;
    let mut cfg = ServerConfig::new(
        datadir.to_path_buf(),
        run,
        0,
        1_000_000 + rand::random::<u32>() % 1_000_000,
    );
    cfg.binlog = false;
    cfg.gtid = true;
    cfg.network = false;
    cfg.die_with_parent = true;
    RunningServer::start(mysqld, cfg, Duration::from_secs(300))
        .map_err(|e| Error::Internal(format!("starting the clone recipient: {e}")))
}

pub fn backup(
    donor_session: &mut Session,
    donor_opts: &ConnectOptions,
    source: SourceInfo,
    writer: &MultiWriter,
    mysqld: &Path,
    opts: &super::clone::CloneOptions<'_>,
) -> Result<PhysicalSnapshot> {
    let (staging, table_checksums) = (opts.clone_dir, opts.table_checksums);
    privileges::require(donor_session, NEEDS, "be cloned from another host")?;
    let mysqld = Mysqld::detect(mysqld).map_err(|e| Error::Usage(format!("--mysqld: {e}")))?;
    let line = mysqld
        .version()
        .map_err(|e| Error::Usage(format!("--mysqld: {e}")))?;
    // `.../mysqld  Ver 9.7.4-2 for Linux on x86_64 (...)`
    let ours = line
        .split_whitespace()
        .skip_while(|w| *w != "Ver")
        .nth(1)
        .unwrap_or(&line)
        .to_string();
    let theirs = donor_session.info().version;
    let series = format!("{}.{}.", theirs.0, theirs.1);
    if !ours.starts_with(&series) {
        return Err(Error::Usage(format!(
            "--mysqld is version {ours} but the source runs {}: a clone needs the same series",
            donor_session.info().version_string
        )));
    }
    ensure_plugin(donor_session)?;
    let staging: PathBuf = match staging {
        Some(d) => d.to_path_buf(),
        None => {
            let parent = std::env::temp_dir();
            crate::staging::sweep(&parent, "myvault-recipient-");
            parent.join(format!(
                "myvault-recipient-{}",
                crate::repo::config::random_hex(4)
            ))
        }
    };
    let _reserved = super::clone::reserve(&staging)?;
    in_staging(&staging, || {
        crate::private_fs::create_dir_all(&staging)
            .map_err(|e| Error::io(format!("cannot create {}", staging.display()), e))?;
        let datadir = staging.join("data");
        let mut recipient = start_recipient(&mysqld, &datadir)?;
        {
            let mut r = recipient.session()?;
            ensure_plugin(&mut r)?;
            if let Some(rate) = opts.max_rate {
                // The recipient's limit, in MiB/s: what it pulls from the source.
                let mib = (rate >> 20).max(1);
                r.exec(&format!("SET GLOBAL clone_max_data_bandwidth = {mib}"))?;
            }
            clone_instance_from(
                &mut r,
                &Donor {
                    host: &donor_opts.host,
                    port: donor_opts.port,
                    user: &donor_opts.user,
                    password: &donor_opts.password,
                },
            )?;
        }
        let time = server_now(donor_session)?;
        // Unsupervised, the recipient stops after the clone; the start that follows
        // finishes it (recovery), on the donor's accounts, so without grant checks.
        let _ = recipient.wait_exit(Duration::from_secs(600));
        let run = recipient.config().rundir.clone();
        drop(recipient);
        let _ = std::fs::remove_dir_all(&run);
        let finished = temporary_server(
            &mysqld,
            &datadir,
            &["--plugin-load-add=mysql_clone.so".into()],
        )?;
        let status = (|| -> Result<(String, u64, String, Option<TableChecksums>)> {
            let mut s = finished.session()?;
            let rows = s.query(
                "SELECT STATE, ERROR_MESSAGE, BINLOG_FILE, BINLOG_POSITION, GTID_EXECUTED FROM performance_schema.clone_status",
            )?;
            let row = rows
                .first()
                .ok_or_else(|| Error::Internal("the recipient reports no clone".into()))?;
            if row.text("STATE").as_deref() != Some("Completed") {
                return Err(Error::SourceNotReady(format!(
                    "the clone did not complete: {} {}",
                    row.text("STATE").unwrap_or_default(),
                    row.text("ERROR_MESSAGE").unwrap_or_default()
                )));
            }
            let (file, position, gtids) = (
                row.text("BINLOG_FILE").unwrap_or_default(),
                row.u64("BINLOG_POSITION").unwrap_or(0),
                row.text("GTID_EXECUTED")
                    .unwrap_or_default()
                    .replace('\n', ""),
            );
            let sums = match table_checksums {
                true => Some(checksums::read_all(
                    &finished.root_options(),
                    checksums::local_jobs(),
                )?),
                false => None,
            };
            Ok((file, position, gtids, sums))
        })();
        let run = finished.config().rundir.clone();
        finished
            .shutdown()
            .map_err(|e| Error::Internal(e.to_string()))?;
        let _ = std::fs::remove_dir_all(run);
        let (binlog_file, binlog_position, gtids, sums) = status?;
        let gtids =
            GtidSet::parse(&gtids).map_err(|e| Error::Internal(format!("clone GTIDs: {e}")))?;
        // The recipient's identity is not the snapshot's.
        let _ = std::fs::remove_file(datadir.join("auto.cnf"));
        let mut snap = PhysicalSnapshot::pack(
            writer,
            &datadir,
            source,
            (binlog_file, binlog_position),
            &gtids,
            time,
        )?;
        snap.table_checksums = sums;
        Ok(snap)
    })
}
