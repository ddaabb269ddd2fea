//! `myvault binlog list` and `myvault binlog fetch`: the archived files, and getting them back
//! byte-identical for mysqlbinlog or any other tool.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::binlog::coverage;
use crate::error::{Error, Result};
use crate::mysql::gtid::GtidSet;
use crate::private_fs;
use crate::repo::Repo;
use crate::repo::manifest::BinlogSegment;

#[derive(Debug, Clone, Serialize)]
pub struct ArchivedFile {
    pub server_uuid: String,
    pub file: String,
    pub size: u64,
    pub sealed: bool,
    pub first_event_time: Option<DateTime<Utc>>,
    pub last_event_time: Option<DateTime<Utc>>,
    pub first_commit_us: Option<i64>,
    pub last_commit_us: Option<i64>,
    pub transactions: u64,
    pub gtids: String,
    pub previous_gtids: String,
}

/// The newest segment of every archived file, by server then file order.
pub fn newest_segments(repo: &Repo) -> Result<Vec<BinlogSegment>> {
    Ok(coverage::newest_segments(repo.binlog_segments()?)?
        .into_values()
        .flat_map(BTreeMap::into_values)
        .collect())
}

pub fn list(repo: &Repo) -> Result<Vec<ArchivedFile>> {
    Ok(newest_segments(repo)?
        .into_iter()
        .map(|s| ArchivedFile {
            server_uuid: s.source_uuid,
            file: s.file,
            size: s.size,
            sealed: s.sealed,
            first_event_time: s.first_event_time,
            last_event_time: s.last_event_time,
            first_commit_us: s.first_commit_us,
            last_commit_us: s.last_commit_us,
            transactions: s.transactions,
            gtids: s.gtids,
            previous_gtids: s.previous_gtids,
        })
        .collect())
}

/// A `--from` / `--to` bound: a time, or a GTID set.
#[derive(Debug, Clone)]
pub enum Bound {
    Time(DateTime<Utc>),
    Gtids(GtidSet),
}

impl Bound {
    pub fn parse(s: &str) -> Result<Bound> {
        if let Ok(t) = crate::timespec::parse(s) {
            return Ok(Bound::Time(t));
        }
        match GtidSet::parse(s) {
            Ok(g) if !g.is_empty() => Ok(Bound::Gtids(g)),
            _ => Err(Error::Usage(format!(
                "'{s}' is neither a time (RFC 3339 or YYYY-MM-DD HH:MM:SS) nor a GTID set"
            ))),
        }
    }
}

fn segment_gtids(s: &BinlogSegment) -> GtidSet {
    GtidSet::parse(&s.gtids).unwrap_or_default()
}

/// Does the segment hold anything at or after `from` (and at or before `to`)?
///
/// A GTID set as `from` is the state already applied (typically a snapshot's
/// `gtid_executed`): the files wanted are those holding a transaction outside it.
fn selected(s: &BinlogSegment, from: Option<&Bound>, to: Option<&Bound>) -> bool {
    let after_from = match from {
        None => true,
        Some(Bound::Time(t)) => s
            .last_event_time
            .is_none_or(|l| l >= t.with_timezone(&Utc) - chrono::Duration::seconds(1)),
        Some(Bound::Gtids(applied)) => !segment_gtids(s).subtract(applied).is_empty(),
    };
    let before_to = match to {
        None => true,
        Some(Bound::Time(t)) => s.first_event_time.is_none_or(|f| f <= *t),
        Some(Bound::Gtids(g)) => {
            let prev = GtidSet::parse(&s.previous_gtids).unwrap_or_default();
            !g.is_subset(&prev)
        }
    };
    after_from && before_to
}

#[derive(Debug, Clone, Serialize)]
pub struct Fetched {
    pub dest: String,
    pub files: Vec<String>,
    pub bytes: u64,
}

pub fn fetch(
    repo: &Repo,
    dest: &Path,
    server: Option<&str>,
    from: Option<&Bound>,
    to: Option<&Bound>,
) -> Result<Fetched> {
    let chosen: Vec<BinlogSegment> = newest_segments(repo)?
        .into_iter()
        .filter(|s| server.is_none_or(|u| s.source_uuid == u))
        .filter(|s| selected(s, from, to))
        .collect();
    if chosen.is_empty() {
        return Err(Error::NotFound("no archived binlog file matches".into()));
    }
    let servers: std::collections::BTreeSet<&str> =
        chosen.iter().map(|s| s.source_uuid.as_str()).collect();
    let several = servers.len() > 1;
    // The files hold the database's rows: directories myvault creates are 0700 and the
    // files 0600; an existing directory keeps its mode (it may be a shared one).
    private_fs::create_dir_all(dest)
        .map_err(|e| Error::io(format!("cannot create {}", dest.display()), e))?;
    let mut out = Fetched {
        dest: dest.display().to_string(),
        files: Vec::new(),
        bytes: 0,
    };
    for seg in &chosen {
        let dir = if several {
            dest.join(&seg.source_uuid)
        } else {
            dest.to_path_buf()
        };
        private_fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        let path = dir.join(&seg.file);
        let tmp = dir.join(format!(".{}.partial", seg.file));
        let entry = seg.file_entry();
        let mut f = private_fs::create_file(&tmp)
            .map_err(|e| Error::io(format!("cannot create {}", tmp.display()), e))?;
        out.bytes += repo.copy_file(&entry, &mut f)?;
        f.sync_all()
            .map_err(|e| Error::io(format!("cannot sync {}", tmp.display()), e))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| Error::io(format!("cannot rename {}", tmp.display()), e))?;
        out.files.push(path.display().to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";

    fn segment(gtids: &str, previous: &str) -> BinlogSegment {
        BinlogSegment::sample(U, "binlog.000001", gtids, previous)
    }

    fn gtids(s: &str) -> Bound {
        Bound::Gtids(GtidSet::parse(s).unwrap())
    }

    #[test]
    fn gtid_bounds_select_only_the_files_that_matter() {
        let files = [
            segment(&format!("{U}:1-100"), ""),
            segment(&format!("{U}:101-200"), &format!("{U}:1-100")),
            segment(&format!("{U}:201-300"), &format!("{U}:1-200")),
        ];
        let pick = |from: Option<&Bound>, to: Option<&Bound>| -> Vec<usize> {
            (0..files.len())
                .filter(|&i| selected(&files[i], from, to))
                .collect()
        };
        // What replays after a snapshot at 1-150: the files holding 151 and later.
        assert_eq!(pick(Some(&gtids(&format!("{U}:1-150"))), None), [1, 2]);
        assert_eq!(
            pick(Some(&gtids(&format!("{U}:1-300"))), None),
            [] as [usize; 0]
        );
        assert_eq!(pick(None, Some(&gtids(&format!("{U}:1-150")))), [0, 1]);
        assert_eq!(
            pick(
                Some(&gtids(&format!("{U}:1-120"))),
                Some(&gtids(&format!("{U}:1-180")))
            ),
            [1]
        );
    }
}
