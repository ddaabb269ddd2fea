//! The timeline as text: one row per repository and source, a column per stretch of time.
//! With colour (a terminal, or `--color always`) it uses Unicode marks and ANSI colours;
//! otherwise plain ASCII that survives mail, logs and `less`.

use super::picture::{Cell, Picture};

/// Narrowest bar worth drawing.
const MIN_BAR: usize = 20;

pub fn timeline(p: &Picture, width: usize, color: bool) -> Vec<String> {
    let repo_width = p
        .lanes
        .iter()
        .map(|l| l.repo.chars().count())
        .max()
        .unwrap_or(0);
    let labels: Vec<String> = p
        .lanes
        .iter()
        .map(|l| format!("{:<repo_width$}  {}", l.repo, l.source))
        .collect();
    let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let label_width = longest.min(width * 2 / 5).max(8);
    let bar = width.saturating_sub(label_width + 3).max(MIN_BAR);
    let mut out = vec![format!(
        "timeline (UTC) {} .. {} (now), one column = {}",
        p.from.format("%Y-%m-%d %H:%M"),
        p.to.format("%Y-%m-%d %H:%M"),
        p.per_column(bar)
    )];
    out.extend(axis(p, label_width, bar));
    let step = (p.to - p.from) / bar as i32;
    for (lane, label) in p.lanes.iter().zip(&labels) {
        let mut row = String::new();
        for i in 0..bar {
            let a = p.from + step * i as i32;
            // The last column also holds now.
            let b = if i + 1 == bar {
                p.to + chrono::Duration::seconds(1)
            } else {
                a + step
            };
            row.push_str(&glyph(Picture::cell(lane, a, b), color));
        }
        out.push(format!("{} |{row}|", fit(label, label_width, color)));
    }
    out.push(legend(color));
    out
}

/// The tick labels, then the tick marks.
fn axis(p: &Picture, label_width: usize, bar: usize) -> [String; 2] {
    let (ticks, format) = p.ticks(bar / 14);
    let mut labels = vec![' '; bar + 16];
    let mut marks = vec![' '; bar];
    for t in ticks {
        let x = p.x(t, bar as f64) as usize;
        if x >= bar {
            continue;
        }
        marks[x] = '|';
        for (i, c) in t.format(format).to_string().chars().enumerate() {
            labels[x + i] = c;
        }
    }
    let pad = " ".repeat(label_width + 2);
    [
        format!("{pad}{}", labels.iter().collect::<String>().trim_end()),
        format!("{pad}{}", marks.iter().collect::<String>().trim_end()),
    ]
}

fn glyph(cell: Cell, color: bool) -> String {
    match (cell, color) {
        (Cell::Empty, _) => " ".into(),
        (Cell::Archived, false) => "-".into(),
        (Cell::Restorable, false) => "=".into(),
        (Cell::Snapshot, false) => "S".into(),
        (Cell::Hole, false) => "X".into(),
        (Cell::Archived, true) => "\x1b[33m─\x1b[0m".into(),
        (Cell::Restorable, true) => "\x1b[32m━\x1b[0m".into(),
        (Cell::Snapshot, true) => "\x1b[1;36m●\x1b[0m".into(),
        (Cell::Hole, true) => "\x1b[1;31m✖\x1b[0m".into(),
    }
}

fn legend(color: bool) -> String {
    let item = |cell, what| format!("{} {what}", glyph(cell, color));
    format!(
        "{}   {}   {}   {}",
        item(Cell::Snapshot, "snapshot"),
        item(Cell::Restorable, "restorable (point-in-time)"),
        item(Cell::Archived, "binlog archived, no snapshot before it"),
        item(Cell::Hole, "hole in the archive")
    )
}

/// `label` cut or padded to `width` characters; a cut keeps the end, where the names of
/// repositories and sources differ.
fn fit(label: &str, width: usize, color: bool) -> String {
    let chars: Vec<char> = label.chars().collect();
    if chars.len() <= width {
        return format!("{label:<width$}");
    }
    let ellipsis = if color { "…" } else { ".." };
    let keep = width.saturating_sub(ellipsis.chars().count());
    let tail: String = chars[chars.len() - keep..].iter().collect();
    format!("{ellipsis}{tail}")
}

/// Columns of the terminal on stdout, else `$COLUMNS`, else 80.
pub fn width() -> usize {
    // SAFETY: TIOCGWINSZ fills a winsize we own; a failure leaves it zeroed.
    let cols = unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) == 0 {
            usize::from(ws.ws_col)
        } else {
            0
        }
    };
    if cols > 0 {
        return cols;
    }
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|c| *c > 0)
        .unwrap_or(80)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::status::picture::{Lane, Mark, Span};
    use chrono::{DateTime, TimeZone, Utc};

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).single().unwrap()
    }

    fn span(a: i64, b: i64) -> Span {
        Span {
            from: t(a),
            to: t(b),
            label: String::new(),
        }
    }

    /// 0..1000 s: archived 100..900, restorable 300..600, a hole at 600..650, snapshot at 300.
    fn picture() -> Picture {
        Picture {
            from: t(0),
            to: t(1000),
            lanes: vec![Lane {
                repo: "/var/backups/myvault".into(),
                source: "db1:3306".into(),
                source_id: "3e11".into(),
                snapshots: vec![Mark {
                    at: t(300),
                    label: "s".into(),
                }],
                archived: vec![span(100, 900)],
                windows: vec![span(300, 600)],
                holes: vec![span(600, 650)],
            }],
        }
    }

    #[test]
    fn plain_rows_are_ascii_and_show_each_state_where_it_is() {
        let lines = timeline(&picture(), 80, false);
        assert!(lines.iter().all(|l| l.is_ascii()), "{lines:#?}");
        let row = lines
            .iter()
            .find(|l| l.starts_with("/var/backups/myvault"))
            .expect("a lane row");
        let bar: String = row.split('|').nth(1).expect("framed").to_string();
        let at = |c: char| bar.find(c).map(|i| i * 1000 / bar.len());
        assert_eq!(at('S').map(|x| x / 10), Some(29), "{bar}");
        assert!(at('X').is_some_and(|x| (575..=650).contains(&x)), "{bar}");
        assert!(at('-').is_some_and(|x| (75..=110).contains(&x)), "{bar}");
        assert!(bar.contains("="), "{bar}");
        assert_eq!(bar.chars().filter(|c| *c == 'S').count(), 1);
        assert_eq!(row.chars().count(), 80, "{row}");
    }

    #[test]
    fn colour_uses_escapes_and_a_long_label_keeps_its_end() {
        let mut p = picture();
        p.lanes[0].repo = format!("s3://{}/db1", "x".repeat(60));
        let lines = timeline(&p, 100, true);
        assert!(lines.iter().any(|l| l.contains("\x1b[1;31m")), "{lines:#?}");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with('…') && l.contains("/db1  db1:3306"))
        );
    }
}
