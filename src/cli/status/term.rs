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
    let label_width = longest.min(width / 3).max(8);
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
