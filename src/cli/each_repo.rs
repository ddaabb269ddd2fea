//! Commands that act on every repository: `init`, `list`, `verify` and `prune` work on the one
//! `--repo` names, or else on each repository the configuration names, in its order. Each
//! repository gets its own section (text) or entry (JSON); a failure in one does not stop the
//! others, and the exit code is the worst of them, with every failed repository named.
//!
//! JSON: with one repository, the command's own object, as ever. With several, one object:
//!
//! ```json
//! { "repositories": [ { ...the command's object for the first... },
//!                     { "repo": "s3://b/p", "error": "..." } ],
//!   "failed": ["s3://b/p"] }
//! ```
//!
//! An entry that failed after producing its report (verify finding damage) carries both the
//! report and `error`.

use serde::Serialize;

use super::config::{Config, RepoSection};
use super::output::Output;
use crate::error::{Error, ErrorKind, Result};

/// One repository a command acts on, and its section of the configuration when it has one.
pub struct Target<'a> {
    pub location: String,
    pub section: Option<&'a RepoSection>,
}

/// The repository `--repo` names (with its config section when the config names it too),
/// else every repository of the configuration; an error naming the flag when neither.
pub fn targets<'a>(given: Option<&String>, cfg: Option<&'a Config>) -> Result<Vec<Target<'a>>> {
    let sections = cfg.map(|c| c.repo.as_slice()).unwrap_or_default();
    if let Some(location) = given {
        return Ok(vec![Target {
            location: location.clone(),
            section: sections.iter().find(|s| &s.location == location),
        }]);
    }
    if sections.is_empty() {
        return Err(Error::Usage(
            "give --repo REPO (or [[repo]] in the --config file)".into(),
        ));
    }
    Ok(sections
        .iter()
        .map(|s| Target {
            location: s.location.clone(),
            section: Some(s),
        })
        .collect())
}

/// What the work on one repository gave: its report, an error, or both (a report that says
/// what is wrong, and the error that sets the exit code).
pub struct Done<R> {
    pub report: Option<R>,
    pub error: Option<Error>,
}

impl<R> From<Result<R>> for Done<R> {
    fn from(r: Result<R>) -> Self {
        match r {
            Ok(report) => Done {
                report: Some(report),
                error: None,
            },
            Err(e) => Done {
                report: None,
                error: Some(e),
            },
        }
    }
}

#[derive(Serialize)]
struct Entry<'a, R> {
    /// Only when there is no report (which names its repository itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    repo: Option<&'a str>,
    #[serde(flatten)]
    report: Option<&'a R>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct Several<'a, R> {
    repositories: Vec<Entry<'a, R>>,
    failed: Vec<&'a str>,
}

/// Runs `work` on each target and prints each report with `human`; returns the worst error.
pub fn run<R: Serialize>(
    out: Output,
    targets: &[Target<'_>],
    mut work: impl FnMut(&Target<'_>) -> Done<R>,
    human: impl Fn(&R),
) -> Result<()> {
    if let [one] = targets {
        let done = work(one);
        if let Some(report) = &done.report {
            out.report(report, &human);
        }
        return done.error.map_or(Ok(()), Err);
    }
    let mut results = Vec::new();
    for t in targets {
        if !out.json && !out.quiet {
            outln!("== repository {} ==", t.location);
        }
        let done = work(t);
        if !out.json {
            if let Some(report) = &done.report {
                out.report(report, &human);
            }
            if let Some(e) = &done.error {
                // On stderr too, so that `--quiet` still names the repository that failed.
                eprintln!("myvault: {}: {e}", t.location);
            }
        }
        let interrupted = done
            .error
            .as_ref()
            .is_some_and(|e| e.kind() == ErrorKind::Interrupted);
        results.push((t.location.as_str(), done));
        if interrupted {
            break;
        }
    }
    if out.json {
        let several = Several {
            repositories: results
                .iter()
                .map(|(loc, d)| Entry {
                    repo: d.report.is_none().then_some(*loc),
                    report: d.report.as_ref(),
                    error: d.error.as_ref().map(Error::to_string),
                })
                .collect(),
            failed: results
                .iter()
                .filter(|(_, d)| d.error.is_some())
                .map(|(loc, _)| *loc)
                .collect(),
        };
        out.report(&several, |_| {});
    }
    worst(results, targets.len())
}

/// The most serious failure, as the failure of its repository, naming the others that failed.
fn worst<R>(results: Vec<(&str, Done<R>)>, total: usize) -> Result<()> {
    let mut failed: Vec<(&str, Error)> = results
        .into_iter()
        .filter_map(|(loc, d)| d.error.map(|e| (loc, e)))
        .collect();
    let names: Vec<&str> = failed.iter().map(|(loc, _)| *loc).collect();
    let Some(pos) = (0..failed.len()).min_by_key(|&i| severity(failed[i].1.kind())) else {
        return Ok(());
    };
    let count = failed.len();
    let (loc, error) = failed.swap_remove(pos);
    let others: Vec<&str> = names.into_iter().filter(|n| *n != loc).collect();
    let step = if others.is_empty() {
        format!("repository {loc} ({count} of {total} failed)")
    } else {
        format!(
            "repository {loc} ({count} of {total} failed; also {})",
            others.join(", ")
        )
    };
    Err(error.during(step))
}

/// Lower is worse: what the exit code of several failures reports.
fn severity(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Interrupted => 0,
        ErrorKind::Integrity => 1,
        ErrorKind::Storage => 2,
        ErrorKind::Internal => 3,
        ErrorKind::RepoLocked => 4,
        ErrorKind::NotFound => 5,
        ErrorKind::Usage => 6,
        ErrorKind::PartialSuccess => 8,
        _ => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_failure_sets_the_exit_code_and_every_failed_repository_is_named() {
        let done = |e: Option<Error>| Done::<()> {
            report: Some(()),
            error: e,
        };
        let locked = || crate::repo::RepoError::Locked {
            store: "b".into(),
            holder: "backup".into(),
        };
        let results = vec![
            ("a", done(None)),
            ("b", done(Some(locked().into()))),
            (
                "c",
                done(Some(
                    crate::repo::RepoError::integrity("c", "pack x", "damaged").into(),
                )),
            ),
        ];
        let e = worst(results, 3).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Integrity);
        let msg = e.to_string();
        assert!(
            msg.starts_with("repository c (2 of 3 failed; also b)"),
            "{msg}"
        );
        assert!(worst(vec![("a", done(None))], 1).is_ok());
    }
}
