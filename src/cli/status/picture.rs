//! The timeline both pictures draw (the terminal's and the HTML page's): one lane per
//! repository and source, on a time axis that ends now, with the snapshots as marks, the
//! archived binlog and the restorable windows as bars, and the holes.

use chrono::{DateTime, Duration, DurationRound, Utc};

use crate::ops::status::{SourceInRepo, SourceStatus, StatusReport};

/// The longest span the axis shows unless `--days` asks for more.
const DEFAULT_MAX_DAYS: i64 = 14;

#[derive(Debug, Clone)]
pub struct Picture {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub lanes: Vec<Lane>,
}

#[derive(Debug, Clone)]
pub struct Lane {
    pub repo: String,
    /// The source's address, or its uuid.
    pub source: String,
    /// The whole source id (uuid or `path:...`), for machines and tooltips.
    pub source_id: String,
    pub snapshots: Vec<Mark>,
    pub archived: Vec<Span>,
    pub windows: Vec<Span>,
    /// Holes in the archive and purges the streamer found.
    pub holes: Vec<Span>,
}

#[derive(Debug, Clone)]
pub struct Mark {
    pub at: DateTime<Utc>,
    pub label: String,
}

#[derive(Debug, Clone)]
pub struct Span {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub label: String,
}

/// What a stretch of a lane shows, in the order one hides another: a hole is never hidden.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cell {
    Empty,
    Archived,
    Restorable,
    Snapshot,
    Hole,
}

impl Picture {
    /// The picture of `report`: the last `days` days, or (without) from the oldest thing any
    /// lane holds, at most two weeks back.
    pub fn of(report: &StatusReport, days: Option<f64>) -> Picture {
        let to = report.checked_at;
        let lanes: Vec<Lane> = report
            .sources
            .iter()
            .flat_map(|s| s.repos.iter().map(move |r| lane(s, r)))
            .collect();
        let from = match days {
            Some(d) => to - Duration::seconds((d * 86_400.0) as i64),
            None => {
                let oldest = lanes
                    .iter()
                    .flat_map(|l| {
                        l.snapshots
                            .iter()
                            .map(|m| m.at)
                            .chain(l.archived.iter().map(|s| s.from))
                    })
                    .min()
                    .unwrap_or(to);
                let span =
                    (to - oldest).clamp(Duration::minutes(10), Duration::days(DEFAULT_MAX_DAYS));
                // A margin, so that the oldest mark is not on the edge.
                to - span - span / 20
            }
        };
        Picture { from, to, lanes }
    }

    /// Where `t` falls on an axis `width` long (may lie outside 0..width).
    pub fn x(&self, t: DateTime<Utc>, width: f64) -> f64 {
        let total = (self.to - self.from).num_milliseconds().max(1) as f64;
        (t - self.from).num_milliseconds() as f64 / total * width
    }

    /// What the lane shows between `a` and `b`.
    pub fn cell(lane: &Lane, a: DateTime<Utc>, b: DateTime<Utc>) -> Cell {
        let overlaps = |s: &Span| s.from < b && s.to >= a;
        if lane.holes.iter().any(overlaps) {
            Cell::Hole
        } else if lane.snapshots.iter().any(|m| m.at >= a && m.at < b) {
            Cell::Snapshot
        } else if lane.windows.iter().any(overlaps) {
            Cell::Restorable
        } else if lane.archived.iter().any(overlaps) {
            Cell::Archived
        } else {
            Cell::Empty
        }
    }

    /// Tick marks at round times, at most `max` of them, and how to label them.
    pub fn ticks(&self, max: usize) -> (Vec<DateTime<Utc>>, &'static str) {
        const STEPS: [i64; 16] = [
            60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400, 172_800,
            604_800, 1_209_600, 2_592_000,
        ];
        let span = (self.to - self.from).num_seconds().max(1);
        let step = STEPS
            .iter()
            .copied()
            .find(|s| span / s < max.max(1) as i64)
            .unwrap_or(STEPS[STEPS.len() - 1]);
        let step = Duration::seconds(step);
        let format = if step >= Duration::days(1) {
            "%m-%d"
        } else if span > 86_400 {
            "%m-%d %H:%M"
        } else {
            "%H:%M"
        };
        let mut t = self.from.duration_trunc(step).unwrap_or(self.from);
        let mut out = Vec::new();
        while t <= self.to {
            if t >= self.from {
                out.push(t);
            }
            t += step;
        }
        (out, format)
    }

    /// One column's time span, as a human would say it.
    pub fn per_column(&self, columns: usize) -> String {
        let seconds = (self.to - self.from).num_seconds() / columns.max(1) as i64;
        crate::ops::status::human_age(seconds.max(1))
    }
}

fn lane(s: &SourceStatus, r: &SourceInRepo) -> Lane {
    let mut archived: Vec<Span> = Vec::new();
    if let Some(a) = &r.archive {
        for range in &a.ranges {
            if let (Some(from), Some(to)) = (range.start, range.end) {
                archived.push(Span {
                    from,
                    to,
                    label: format!("{} .. {}", range.first_file, range.last_file),
                });
            }
        }
        // The newest run reaches as far as the archive is known complete.
        if let (Some(last), Some(until)) = (archived.last_mut(), a.complete_until) {
            last.to = last.to.max(until);
        }
    }
    let windows = r
        .windows
        .iter()
        .map(|w| Span {
            from: w.start,
            to: w.end.unwrap_or(w.start),
            label: format!("restorable from snapshot {}", w.first_snapshot),
        })
        .collect();
    let mut holes: Vec<Span> = r
        .holes
        .iter()
        .filter_map(|h| {
            let from = h.lost_after.or(h.lost_before)?;
            Some(Span {
                from,
                to: h.lost_before.unwrap_or(from),
                label: h.detail.clone(),
            })
        })
        .collect();
    holes.extend(r.gaps.iter().map(|g| Span {
        from: g.detected_at,
        to: g.detected_at,
        label: g.detail.clone(),
    }));
    Lane {
        repo: r.repo.clone(),
        source: s.address.clone().unwrap_or_else(|| s.source.clone()),
        source_id: s.source.clone(),
        snapshots: r
            .snapshots
            .iter()
            .map(|m| Mark {
                at: m.time,
                label: format!("{} ({})", m.id, m.method),
            })
            .collect(),
        archived,
        windows,
        holes,
    }
}
