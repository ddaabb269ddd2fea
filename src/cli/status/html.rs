//! `status --html FILE`: one self-contained page (inline CSS and SVG; no script, no font, no
//! request to anywhere) with the verdict, the problems, the timeline and the tables. Every
//! string from a repository, a server or the command line is escaped: server uuids, file
//! names, hosts and paths could hold anything.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use super::picture::{Lane, Picture, Span};
use crate::cli::output;
use crate::ops::status::verifications::VerificationRecord;
use crate::ops::status::{ArchiveState, Severity, SourceInRepo, StatusReport, Verdict, human_age};

/// Text as HTML: the five characters that could end a text node or an attribute value.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       margin: 16px 24px; color: #1d2330; background: #fff; }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 20px 0 6px; }
.verdict { display: inline-block; padding: 2px 10px; border-radius: 4px; color: #fff; font-weight: 700; }
.verdict.healthy { background: #1f8a4c; }
.verdict.unhealthy { background: #c62828; }
.muted { color: #667085; }
ul.problems { margin: 4px 0; padding-left: 18px; }
li.problem.critical b { color: #c62828; }
li.problem.warning b { color: #b26a00; }
table { border-collapse: collapse; margin: 4px 0 8px; }
th, td { text-align: left; padding: 3px 10px 3px 0; vertical-align: top; border-bottom: 1px solid #e4e7ec; }
th { font-weight: 600; color: #475467; }
td.bad { color: #c62828; font-weight: 600; }
svg text { font: 12px system-ui, "DejaVu Sans", sans-serif; fill: #1d2330; }
svg .tick { stroke: #e4e7ec; }
svg .tick-label, svg .lane-source { fill: #667085; font-size: 11px; }
svg .now { stroke: #1d2330; stroke-dasharray: 3 3; }
svg .lane-bg { fill: #f7f8fa; }
svg .archived { fill: #f2c14e; }
svg .window { fill: #2e9e5b; }
svg .hole { fill: #c62828; }
svg .snapshot { fill: #1565c0; stroke: #fff; stroke-width: 1.5; }
.legend > span { margin-right: 16px; white-space: nowrap; }
.swatch { display: inline-block; width: 14px; height: 10px; margin-right: 4px; vertical-align: baseline; }
"#;

pub fn page(r: &StatusReport, p: &Picture) -> String {
    let mut h = String::new();
    let verdict = match r.verdict {
        Verdict::Healthy => "healthy",
        Verdict::Unhealthy => "unhealthy",
    };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>myvault status: {verdict}</title><style>{STYLE}</style></head><body>\n\
         <h1>myvault status <span id=\"verdict\" class=\"verdict {verdict}\">{}</span></h1>\n\
         <div class=\"muted\">checked {} &middot; myvault {}</div>\n",
        verdict.to_uppercase(),
        time(r.checked_at),
        env!("CARGO_PKG_VERSION")
    );
    problems(&mut h, r);
    h.push_str("<h2>Timeline</h2>\n");
    timeline(&mut h, p);
    sources(&mut h, r);
    repos(&mut h, r);
    streamer(&mut h, r);
    h.push_str("</body></html>\n");
    h
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn problems(h: &mut String, r: &StatusReport) {
    h.push_str("<h2>Problems</h2>\n");
    if r.problems.is_empty() {
        h.push_str("<p id=\"problems\" class=\"muted\">none</p>\n");
        return;
    }
    h.push_str("<ul id=\"problems\" class=\"problems\">\n");
    for p in &r.problems {
        let severity = match p.severity {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
        };
        let code = serde_json::to_value(p.code)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let _ = writeln!(
            h,
            "<li class=\"problem {severity}\" data-code=\"{}\"><b>{severity}</b> {}</li>",
            escape(&code),
            escape(&p.what)
        );
    }
    h.push_str("</ul>\n");
}

/// Left column for the lane labels, then the time axis.
const LABEL: f64 = 300.0;
const BAR: f64 = 820.0;
const LANE: f64 = 40.0;
const TOP: f64 = 28.0;

fn timeline(h: &mut String, p: &Picture) {
    let height = TOP + LANE * p.lanes.len() as f64 + 8.0;
    let _ = writeln!(
        h,
        "<svg id=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {} {height}\" \
         width=\"{}\" height=\"{height}\" role=\"img\" aria-label=\"timeline of snapshots and binlog archive\">",
        LABEL + BAR + 20.0,
        LABEL + BAR + 20.0
    );
    let (ticks, format) = p.ticks(10);
    // The last tick leaves room for the "now" label.
    for t in ticks.into_iter().filter(|t| p.x(*t, BAR) < BAR - 40.0) {
        let x = LABEL + p.x(t, BAR);
        let _ = writeln!(
            h,
            "<line class=\"tick\" x1=\"{x:.1}\" y1=\"20\" x2=\"{x:.1}\" y2=\"{:.1}\"/>\
             <text class=\"tick-label\" x=\"{x:.1}\" y=\"14\" text-anchor=\"middle\">{}</text>",
            height - 4.0,
            escape(&t.format(format).to_string())
        );
    }
    for (i, lane) in p.lanes.iter().enumerate() {
        draw_lane(h, p, lane, TOP + LANE * i as f64);
    }
    let now = LABEL + BAR;
    let _ = writeln!(
        h,
        "<line class=\"now\" x1=\"{now}\" y1=\"18\" x2=\"{now}\" y2=\"{:.1}\"/>\
         <text class=\"tick-label\" x=\"{now}\" y=\"14\" text-anchor=\"middle\">now</text>\n</svg>",
        height - 4.0
    );
    h.push_str(
        "<div class=\"legend\">\
         <span><svg width=\"12\" height=\"12\"><circle cx=\"6\" cy=\"6\" r=\"5\" fill=\"#1565c0\"/></svg> snapshot</span>\
         <span><span class=\"swatch\" style=\"background:#2e9e5b\"></span>restorable (point in time)</span>\
         <span><span class=\"swatch\" style=\"background:#f2c14e\"></span>binlog archived, no snapshot before it</span>\
         <span><span class=\"swatch\" style=\"background:#c62828\"></span>hole in the archive</span></div>\n",
    );
}

fn draw_lane(h: &mut String, p: &Picture, lane: &Lane, y: f64) {
    let _ = writeln!(
        h,
        "<g class=\"lane\" data-repo=\"{}\" data-source=\"{}\">\
         <text class=\"lane-label\" x=\"4\" y=\"{:.1}\">{}</text>\
         <text class=\"lane-source\" x=\"4\" y=\"{:.1}\">{}</text>\
         <rect class=\"lane-bg\" x=\"{LABEL}\" y=\"{:.1}\" width=\"{BAR}\" height=\"{:.1}\"/>",
        escape(&lane.repo),
        escape(&lane.source_id),
        y + 15.0,
        escape(&clip(&lane.repo, 44)),
        y + 30.0,
        escape(&clip(&lane.source, 48)),
        y + 4.0,
        LANE - 8.0
    );
    let bars = [
        ("archived", &lane.archived, 12.0, 16.0),
        ("window", &lane.windows, 15.0, 10.0),
        ("hole", &lane.holes, 6.0, 28.0),
    ];
    for (class, spans, top, height) in bars {
        for s in spans.iter() {
            if let Some((x, w)) = extent(p, s) {
                let _ = writeln!(
                    h,
                    "<rect class=\"{class}\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{height}\"><title>{}</title></rect>",
                    y + top,
                    escape(&s.label)
                );
            }
        }
    }
    for m in &lane.snapshots {
        let x = p.x(m.at, BAR);
        if (0.0..=BAR).contains(&x) {
            let _ = writeln!(
                h,
                "<circle class=\"snapshot\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"6\"><title>{} {}</title></circle>",
                LABEL + x,
                y + 20.0,
                escape(&m.label),
                escape(&time(m.at))
            );
        }
    }
    h.push_str("</g>\n");
}

/// A span's place on the axis, cut to it; at least 3 units wide so a short one shows.
fn extent(p: &Picture, s: &Span) -> Option<(f64, f64)> {
    let (a, b) = (p.x(s.from, BAR).max(0.0), p.x(s.to, BAR).min(BAR));
    if b < 0.0 || a > BAR {
        return None;
    }
    let w = (b - a).max(3.0);
    Some((LABEL + a.min(BAR - w), w))
}

fn clip(text: &str, max: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= max {
        text.to_string()
    } else {
        let tail: String = chars[chars.len() - (max - 1)..].iter().collect();
        format!("…{tail}")
    }
}

fn sources(h: &mut String, r: &StatusReport) {
    h.push_str("<h2>Sources</h2>\n");
    for s in &r.sources {
        let _ = writeln!(
            h,
            "<h3 class=\"source\">{}{}{}</h3>\n<table class=\"source-repos\"><tr><th>repository</th>\
             <th>newest snapshot</th><th>age</th><th>point-in-time restore</th><th>binlog archive</th>\
             <th>complete until</th><th>last upload</th><th>spool waiting</th><th>holes</th></tr>",
            escape(&s.source),
            s.address
                .as_deref()
                .map(|a| format!(" <span class=\"muted\">{}</span>", escape(a)))
                .unwrap_or_default(),
            if s.ignored {
                " <span class=\"muted\">(ignored)</span>"
            } else {
                ""
            }
        );
        for sr in &s.repos {
            source_row(h, sr);
        }
        h.push_str("</table>\n");
    }
}

fn source_row(h: &mut String, sr: &SourceInRepo) {
    let newest = sr
        .newest_snapshot
        .as_ref()
        .map(|n| {
            format!(
                "{} ({})<br><span class=\"muted\">{}</span>",
                escape(&n.id),
                escape(&n.method),
                time(n.time)
            )
        })
        .unwrap_or_else(|| "none".into());
    let age = sr
        .newest_snapshot_age_seconds
        .map(human_age)
        .unwrap_or_else(|| "-".into());
    let windows: Vec<String> = sr
        .windows
        .iter()
        .map(|w| {
            format!(
                "<span class=\"window-text\">point-in-time restore possible from {} to {}</span>",
                time(w.start),
                w.end.map(time).unwrap_or_else(|| "?".into())
            )
        })
        .collect();
    let (archive, until, upload, waiting) = match &sr.archive {
        Some(a) => archive_cells(a),
        None => ("none".into(), "-".into(), "-".into(), "-".into()),
    };
    let holes = if sr.holes.is_empty() && sr.gaps.is_empty() {
        "<td>none</td>".to_string()
    } else {
        let details: Vec<String> = sr
            .holes
            .iter()
            .map(|h| escape(&h.detail))
            .chain(sr.gaps.iter().map(|g| escape(&g.detail)))
            .collect();
        format!("<td class=\"bad\">{}</td>", details.join("<br>"))
    };
    let _ = writeln!(
        h,
        "<tr><td>{}</td><td>{newest}</td><td>{age}</td><td>{}</td><td>{archive}</td><td>{until}</td>\
         <td>{upload}</td><td>{waiting}</td>{holes}</tr>",
        escape(&sr.repo),
        if windows.is_empty() {
            "none".into()
        } else {
            windows.join("<br>")
        }
    );
}

fn archive_cells(a: &ArchiveState) -> (String, String, String, String) {
    (
        format!(
            "{} .. {}<br><span class=\"muted\">{} files, {}</span>",
            escape(&a.first_file),
            escape(&a.last_file),
            a.files,
            output::bytes(a.bytes)
        ),
        match (a.complete_until, a.lag_seconds) {
            (Some(t), Some(lag)) => format!(
                "{}<br><span class=\"muted\">{} ago</span>",
                time(t),
                human_age(lag)
            ),
            _ => "unknown".into(),
        },
        a.last_upload.map(time).unwrap_or_else(|| "-".into()),
        a.spool_pending_bytes
            .map(output::bytes)
            .unwrap_or_else(|| "-".into()),
    )
}

fn repos(h: &mut String, r: &StatusReport) {
    h.push_str(
        "<h2>Repositories</h2>\n<table id=\"repos\"><tr><th>repository</th><th>state</th>\
         <th>snapshots</th><th>binlog files</th><th>last verify</th><th>last restore test</th></tr>\n",
    );
    for repo in &r.repos {
        let state = match &repo.error {
            None if repo.encrypted == Some(true) => "<td>readable, encrypted</td>".to_string(),
            None => "<td>readable</td>".to_string(),
            Some(e) => format!("<td class=\"bad\">cannot be read: {}</td>", escape(e)),
        };
        let _ = writeln!(
            h,
            "<tr><td>{}</td>{state}<td>{}</td><td>{}</td>{}{}</tr>",
            escape(&repo.repo),
            repo.snapshots,
            repo.binlog_files,
            verification(repo.last_verify.as_ref()),
            verification(repo.last_restore_test.as_ref())
        );
    }
    h.push_str("</table>\n");
    if !r.diverged.is_empty() {
        h.push_str("<h2>Diverged</h2>\n<table id=\"diverged\"><tr><th>source</th><th>object</th><th>held by</th><th>missing from</th></tr>\n");
        for d in &r.diverged {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"bad\">{}</td></tr>",
                escape(&d.source),
                escape(&d.object),
                escape(&d.present_in.join(", ")),
                escape(&d.missing_from.join(", "))
            );
        }
        h.push_str("</table>\n");
    }
}

fn verification(v: Option<&VerificationRecord>) -> String {
    match v {
        None => "<td class=\"muted\">never</td>".into(),
        Some(v) => format!(
            "<td{}>{} &middot; {}<br><span class=\"muted\">on {}{}</span></td>",
            if v.ok { "" } else { " class=\"bad\"" },
            if v.ok { "ok" } else { "FAILED" },
            time(v.time),
            escape(&v.host),
            v.detail
                .as_deref()
                .map(|d| format!(": {}", escape(d)))
                .unwrap_or_default()
        ),
    }
}

fn streamer(h: &mut String, r: &StatusReport) {
    let Some(s) = &r.streamer else { return };
    let _ = writeln!(
        h,
        "<h2>Streamer</h2>\n<p id=\"streamer\">spool {}: {}; {} in the spool{}</p>",
        escape(&s.spool),
        if s.running {
            "running"
        } else {
            "<b>not running</b>"
        },
        output::bytes(s.spool_bytes),
        s.last_error
            .as_deref()
            .map(|e| format!("; last error: {}", escape(e)))
            .unwrap_or_default()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::status::{
        Problem, ProblemCode, RepoStatus, SnapshotMark, SourceStatus, Thresholds,
    };

    const EVIL: &str = "<script>alert(1)</script>&\"'";

    fn report() -> StatusReport {
        let now = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        let mark = SnapshotMark {
            id: format!("20270115T000000Z-{EVIL}"),
            time: now - chrono::Duration::hours(2),
            method: "logical".into(),
        };
        StatusReport {
            verdict: Verdict::Unhealthy,
            checked_at: now,
            thresholds: Thresholds {
                max_snapshot_age_seconds: Some(93_600),
                max_archive_lag_seconds: Some(300),
                max_verify_age_seconds: None,
            },
            problems: vec![Problem {
                severity: Severity::Critical,
                code: ProblemCode::ArchiveHole,
                repo: Some(EVIL.into()),
                source: Some(EVIL.into()),
                what: format!("hole in {EVIL}"),
            }],
            sources: vec![SourceStatus {
                source: format!("uuid-{EVIL}"),
                address: Some(format!("host-{EVIL}:3306")),
                ignored: false,
                repos: vec![SourceInRepo {
                    repo: format!("/repo/{EVIL}"),
                    snapshot_count: 1,
                    newest_snapshot: Some(mark.clone()),
                    newest_snapshot_age_seconds: Some(7200),
                    snapshots: vec![mark],
                    windows: Vec::new(),
                    archive: None,
                    holes: Vec::new(),
                    gaps: vec![crate::repo::manifest::GapRecord {
                        server_uuid: EVIL.into(),
                        detail: format!("purged {EVIL}"),
                        detected_at: now - chrono::Duration::hours(1),
                    }],
                }],
            }],
            repos: vec![RepoStatus {
                repo: format!("/repo/{EVIL}"),
                readable: true,
                error: None,
                encrypted: Some(false),
                snapshots: 1,
                binlog_files: 0,
                last_verify: Some(VerificationRecord {
                    time: now,
                    started: now,
                    host: format!("host-{EVIL}"),
                    read_data: true,
                    restore_test: false,
                    snapshot: None,
                    ok: false,
                    problems: 1,
                    detail: Some(EVIL.into()),
                    version: "t".into(),
                }),
                last_restore_test: None,
            }],
            diverged: Vec::new(),
            streamer: None,
        }
    }

    #[test]
    fn every_string_from_outside_is_escaped() {
        let r = report();
        let page = page(&r, &Picture::of(&r, None));
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains(EVIL));
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;&#39;"));
        assert!(page.contains("class=\"snapshot\""));
        assert!(page.contains("class=\"hole\""), "the purge is drawn");
        // Self-contained: nothing is fetched from anywhere.
        for outside in ["http://", "https://", "src=", "href=", "@import", "url("] {
            assert!(
                !page
                    .replace("http://www.w3.org/2000/svg", "")
                    .contains(outside),
                "{outside}"
            );
        }
    }
}
