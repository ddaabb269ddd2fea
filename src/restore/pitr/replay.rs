//! Replaying archived binlogs into a running target through its own replication applier:
//! myvault serves the files, the target replicates from it on a channel of its own until it
//! holds exactly the planned GTID set, and the channel is removed again.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::archive_check::{segment_error, segment_name};
use crate::binlog::event::Checksum;
use crate::binlog::replay::{self, ReplayFile, ReplaySource, StopAt};
use crate::binlog::walk::WalkError;
use crate::error::{Error, Result};
use crate::mysql::gtid::GtidSet;
use crate::mysql::session::{Session, quote_str};
use crate::mysql::wire::ConnectOptions;
use crate::repo::RepoError;

pub const CHANNEL: &str = "myvault_replay";

#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    pub transactions: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub final_gtids: String,
    /// The target's server_id was changed for the replay (it equalled a source's) and put back.
    pub server_id_swapped: bool,
}

/// Progress as the target applies: (applied transactions, bytes served, done serving).
pub type Progress<'a> = &'a dyn Fn(u64, u64, u64);

/// How archived transactions reach the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine<'a> {
    /// The target's own (multi-threaded) replication applier, fed by myvault acting as a
    /// source that listens on `listen` (default: our address towards the target).
    Applier { listen: Option<&'a str> },
    /// SQL in one session, as mysqlbinlog's output would be applied.
    Sql,
}

impl<'a> Engine<'a> {
    pub fn parse(name: &str, listen: Option<&'a str>) -> Result<Engine<'a>> {
        match name {
            "applier" => Ok(Engine::Applier { listen }),
            "sql" if listen.is_none() => Ok(Engine::Sql),
            "sql" => Err(Error::Usage(
                "--replay-listen goes with --engine applier".into(),
            )),
            other => Err(Error::Usage(format!(
                "--engine {other} is not one of applier, sql"
            ))),
        }
    }
}

/// Replays `files` into `target` up to `stop` with the chosen engine; the target must end
/// with exactly `expected`.
pub fn run(
    engine: Engine<'_>,
    target: &ConnectOptions,
    files: Vec<ReplayFile>,
    stop: StopAt,
    expected: &GtidSet,
    progress: Progress<'_>,
) -> Result<ReplayReport> {
    run_filtered(engine, target, files, stop, expected, None, progress)
}

/// [`run`], with the applier's channel given these replication filters
/// (`REPLICATE_DO_TABLE = (...)`, ...): they apply to myvault's channel only, never to the
/// server's other channels. The SQL engine takes no filters.
pub fn run_filtered(
    engine: Engine<'_>,
    target: &ConnectOptions,
    files: Vec<ReplayFile>,
    stop: StopAt,
    expected: &GtidSet,
    channel_filter: Option<&str>,
    progress: Progress<'_>,
) -> Result<ReplayReport> {
    match engine {
        Engine::Applier { listen } => replay(
            target,
            files,
            stop,
            expected,
            listen,
            channel_filter,
            progress,
        ),
        Engine::Sql if channel_filter.is_some() => Err(Error::Internal(
            "replication filters go with the applier engine".into(),
        )),
        Engine::Sql => super::sql_replay::replay(target, files, stop, expected, progress),
    }
}

/// A walk of the archive that stopped short: a damaged or missing part of a segment is an
/// integrity failure naming the segment (as the archive check would have said), whichever
/// engine was reading it.
pub fn walk_error(e: WalkError) -> Error {
    match e {
        WalkError::Archive { segment, error } => segment_error(&segment, error),
        WalkError::Other(msg) => Error::Internal(msg),
    }
}

/// A replay needs a MySQL target with GTIDs on.
pub fn check_target(s: &mut Session) -> Result<()> {
    if !s.info().is_mysql() {
        return Err(Error::Usage("replay needs a MySQL target".into()));
    }
    let mode = s.global_var("gtid_mode")?.unwrap_or_default();
    if !mode.eq_ignore_ascii_case("ON") {
        return Err(Error::TargetRefused(format!(
            "the target has gtid_mode={mode}; replay needs gtid_mode=ON"
        )));
    }
    Ok(())
}

pub fn gtid_executed(s: &mut Session) -> Result<GtidSet> {
    let text = s.global_var("gtid_executed")?.unwrap_or_default();
    GtidSet::parse(&text).map_err(|e| s.unexpected("@@gtid_executed", e.to_string()).into())
}

/// Whether an archived file's events carry CRC32 checksums: its format description says.
fn file_checksum(f: &ReplayFile) -> Result<Checksum> {
    use std::io::Read;
    let seg = &f.segment;
    let segment = segment_name(seg);
    // Only the head is read: the whole-file hash is never reached, so none is asked for.
    let entry = crate::repo::manifest::FileEntry {
        digest: crate::repo::manifest::ContentDigest::NONE,
        ..seg.file_entry()
    };
    let mut reader = f
        .repo
        .open_file(&entry)
        .map_err(|e| segment_error(&segment, e))?;
    let read_failed = |e: std::io::Error| {
        let context = format!("reading the head of {segment}");
        segment_error(&segment, crate::repo::reader::unwrap_io(e, &context))
    };
    let damaged = |detail: String| {
        let what = "its format description".to_string();
        segment_error(&segment, RepoError::integrity(f.repo.name(), what, detail))
    };
    let mut head = vec![0u8; 4 + 19];
    reader.read_exact(&mut head).map_err(read_failed)?;
    let size = u32::from_le_bytes([head[13], head[14], head[15], head[16]]) as usize;
    head.resize(4 + size.max(19), 0);
    reader.read_exact(&mut head[23..]).map_err(read_failed)?;
    let ev =
        crate::binlog::event::RawEvent::frame(&head[4..], 4).map_err(|e| damaged(e.to_string()))?;
    Ok(crate::binlog::event::FormatDescription::parse(&ev, 4)
        .map_err(|e| damaged(e.to_string()))?
        .checksum)
}

fn replay(
    target: &ConnectOptions,
    files: Vec<ReplayFile>,
    stop: StopAt,
    expected: &GtidSet,
    listen: Option<&str>,
    channel_filter: Option<&str>,
    progress: Progress<'_>,
) -> Result<ReplayReport> {
    let started = Instant::now();
    let mut s = Session::connect(target)?;
    check_target(&mut s)?;
    let version = s.info().version_string.clone();
    let checksum = match files.first() {
        Some(f) => file_checksum(f)?,
        None => Checksum::None,
    };
    // Events carry the source's server_id; a replica ignores events with its own id, so a
    // target that shares it would silently skip transactions.
    let own_id: u64 = s
        .global_var("server_id")?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let event_ids: Vec<u64> = files.iter().map(|f| f.segment.server_id).collect();
    let swapped = event_ids.contains(&own_id);
    if swapped {
        s.exec(&format!(
            "SET GLOBAL server_id = {}",
            3_000_000_000u64 + u64::from(rand::random::<u32>() % 100_000_000)
        ))?;
    }
    let result = (|| -> Result<ReplayReport> {
        let bind = match listen {
            Some(l) => l.to_string(),
            None => {
                let ip = s
                    .conn()
                    .local_addr()
                    .map(|a| a.ip().to_string())
                    .unwrap_or_else(|| "127.0.0.1".into());
                format!("{ip}:0")
            }
        };
        let host = bind
            .rsplit_once(':')
            .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']').to_string())
            .unwrap_or_default();
        let source = ReplaySource::start(&bind, files, stop, &version, checksum)
            .map_err(|e| Error::io(format!("cannot listen on {bind} for the replay"), e))?;
        let start_set = gtid_executed(&mut s)?;
        let ch = quote_str(CHANNEL);
        let _ = s.exec(&format!("STOP REPLICA FOR CHANNEL {ch}"));
        let _ = s.exec(&format!("RESET REPLICA ALL FOR CHANNEL {ch}"));
        s.exec(&format!(
            "CHANGE REPLICATION SOURCE TO SOURCE_HOST = {}, SOURCE_PORT = {}, SOURCE_USER = {}, SOURCE_PASSWORD = {}, \
             SOURCE_AUTO_POSITION = 1, SOURCE_CONNECT_RETRY = 1, SOURCE_RETRY_COUNT = 30, SOURCE_HEARTBEAT_PERIOD = 1, \
             GET_SOURCE_PUBLIC_KEY = 0, SOURCE_SSL = 0 FOR CHANNEL {ch}",
            quote_str(&host),
            source.port(),
            quote_str(replay::USER),
            quote_str(source.password())
        ))?;
        if let Some(f) = channel_filter {
            s.exec(&format!("CHANGE REPLICATION FILTER {f} FOR CHANNEL {ch}"))?;
        }
        s.exec(&format!("START REPLICA FOR CHANNEL {ch}"))?;
        let outcome = (|| -> Result<GtidSet> {
            loop {
                std::thread::sleep(Duration::from_millis(200));
                crate::failpoint::hit("pitr-replay-waiting");
                // The channel first: a source that failed (a damaged archive) has said why
                // before it dropped the connection the channel then complains about.
                let channel = crate::mysql::replication::channel_error(&mut s, CHANNEL)?;
                let served = source.served();
                if let Some(e) = served.error {
                    return Err(match source.take_archive_failure() {
                        Some(failure) => walk_error(failure),
                        None => Error::Internal(format!("replay source: {e}")),
                    });
                }
                if let Some(e) = channel {
                    return Err(Error::Internal(format!(
                        "the target's applier stopped: {e}"
                    )));
                }
                let now = gtid_executed(&mut s)?;
                let p = source.progress();
                progress(
                    now.subtract(&start_set).count(),
                    p.bytes.load(Ordering::Relaxed),
                    p.transactions.load(Ordering::Relaxed),
                );
                if p.done.load(Ordering::SeqCst) && served.gtids.union(expected).is_subset(&now) {
                    return Ok(now);
                }
            }
        })();
        let bytes = source.progress().bytes.load(Ordering::Relaxed);
        let _ = s.exec(&format!("STOP REPLICA FOR CHANNEL {ch}"));
        let _ = s.exec(&format!("RESET REPLICA ALL FOR CHANNEL {ch}"));
        drop(source.stop());
        let final_set = outcome?;
        if &final_set != expected {
            return Err(Error::Internal(format!(
                "the target ended with {final_set}, not the planned {expected}"
            )));
        }
        Ok(ReplayReport {
            transactions: final_set.subtract(&start_set).count(),
            bytes,
            seconds: started.elapsed().as_secs_f64(),
            final_gtids: final_set.to_string(),
            server_id_swapped: swapped,
        })
    })();
    if swapped {
        s.exec(&format!("SET GLOBAL server_id = {own_id}"))?;
    }
    result
}
