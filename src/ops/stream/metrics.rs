//! The streamer's `/metrics` (`--metrics-listen ADDR`): the same state as `status.json`, as
//! Prometheus series. Per repository (`repo` label): upload lag, pending bytes, last success,
//! last archived commit, errors, gaps; for the stream (`source` label): receive lag,
//! connection, bytes, reconnects, spool.

use chrono::{DateTime, Utc};

use super::status::{Published, StreamStatus};
use crate::binlog::uploader::UploadObserver;
use crate::error::{Error, Result};
use crate::metrics::{self, Family, flag, timestamp};

/// Serves `/metrics` on `addr` for the rest of the process; returns the bound address.
pub fn serve(
    addr: &str,
    published: Published,
    uploads: UploadObserver,
) -> Result<std::net::SocketAddr> {
    let started = Utc::now();
    let render: metrics::http::Render =
        std::sync::Arc::new(move || metrics::render(&families(&published.read(&uploads), started)));
    metrics::http::serve(addr, render)
        .map_err(|e| Error::Usage(format!("--metrics-listen {addr}: cannot listen: {e}")))
}

/// Every series of the streamer, from its (completed) status.
pub fn families(s: &StreamStatus, started: DateTime<Utc>) -> Vec<Family> {
    let src: &[(&str, &str)] = &[("source", &s.source)];
    let mut out = vec![
        Family::gauge(
            "myvault_stream_start_timestamp_seconds",
            "When this binlog streamer started.",
        )
        .with(&[], timestamp(started)),
        Family::gauge(
            "myvault_stream_connected",
            "1 while the streamer receives from its source, 0 while it reconnects.",
        )
        .with(src, flag(s.connected)),
        Family::gauge(
            "myvault_stream_receive_lag_seconds",
            "Seconds between the last received event's timestamp and now; 0 when a heartbeat says the stream has everything.",
        )
        .with(src, s.receive_lag_seconds),
        Family::counter(
            "myvault_stream_received_bytes_total",
            "Binlog bytes received from the source by this process.",
        )
        .with(src, s.received_bytes as f64),
        Family::counter(
            "myvault_stream_reconnects_total",
            "Times the stream broke and was reconnected.",
        )
        .with(src, s.reconnects as f64),
        Family::gauge(
            "myvault_spool_bytes",
            "Bytes of binlog files in the local spool (grows while a repository is down).",
        )
        .with(&[], s.spool_bytes as f64),
        Family::gauge(
            "myvault_stream_archived_everywhere_bytes",
            "Binlog bytes this process archived in every repository, each byte once.",
        )
        .with(&[], s.archived_bytes as f64),
    ];
    if let Some(t) = s.last_event_time {
        out.push(
            Family::gauge(
                "myvault_stream_last_event_timestamp_seconds",
                "Timestamp of the last binlog event received.",
            )
            .with(src, timestamp(t)),
        );
    }
    out.extend(repo_families(s));
    out
}

fn repo_families(s: &StreamStatus) -> Vec<Family> {
    let mut lag = Family::gauge(
        "myvault_archive_upload_lag_seconds",
        "Age of the oldest commit received that the repository does not hold yet; 0 when it holds everything.",
    );
    let mut pending = Family::gauge(
        "myvault_archive_pending_bytes",
        "Bytes received that the repository does not hold yet.",
    );
    let mut healthy = Family::gauge(
        "myvault_archive_upload_healthy",
        "1 when the last upload to the repository succeeded, 0 while uploads to it fail.",
    );
    let mut archived = Family::counter(
        "myvault_archive_archived_bytes_total",
        "Binlog bytes archived in the repository by this process, each byte once.",
    );
    let mut uploads = Family::counter(
        "myvault_archive_uploads_total",
        "Uploads that reached the repository.",
    );
    let mut failures = Family::counter(
        "myvault_archive_upload_failures_total",
        "Uploads that failed in the repository (each is retried).",
    );
    let mut last_success = Family::gauge(
        "myvault_archive_last_upload_success_timestamp_seconds",
        "When an upload last reached the repository.",
    );
    let mut last_commit = Family::gauge(
        "myvault_archive_last_commit_timestamp_seconds",
        "Commit time of the newest transaction archived in the repository by this process.",
    );
    let mut last_error = Family::gauge(
        "myvault_archive_last_error_timestamp_seconds",
        "When the last failed upload to the repository ended; absent once an upload succeeds.",
    );
    let mut gaps = gaps_family();
    for r in &s.repos {
        let l: &[(&str, &str)] = &[("repo", &r.repo)];
        lag.push(l, r.upload_lag_seconds);
        pending.push(l, r.pending_bytes as f64);
        healthy.push(l, flag(r.healthy));
        archived.push(l, r.archived_bytes as f64);
        uploads.push(l, r.uploads as f64);
        failures.push(l, r.failed_uploads as f64);
        gaps.push(l, r.gaps as f64);
        if let Some(t) = r.last_success_time {
            last_success.push(l, timestamp(t));
        }
        if let Some(t) = r.last_archived_commit_time {
            last_commit.push(l, timestamp(t));
        }
        if let Some(t) = r.last_error_time {
            last_error.push(l, timestamp(t));
        }
    }
    vec![
        lag,
        pending,
        healthy,
        archived,
        uploads,
        failures,
        last_success,
        last_commit,
        last_error,
        gaps,
    ]
}

/// `myvault_binlog_gaps{repo}`, which the streamer serves and `verify --metrics-file` writes.
pub fn gaps_family() -> Family {
    Family::gauge(
        "myvault_binlog_gaps",
        "Gap records (binlogs purged before they were archived) in the repository that no later snapshot of their server covers.",
    )
}
