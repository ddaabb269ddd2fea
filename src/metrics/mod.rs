//! Prometheus metrics: the text exposition format (version 0.0.4), written to a file for
//! node_exporter's textfile collector ([`textfile`]) or served on `/metrics` ([`http`]).
//!
//! Knows nothing of MySQL or repositories: commands turn their reports into [`Family`]s.
//! Names follow Prometheus conventions: the `myvault_` prefix, base units as suffixes
//! (`_seconds`, `_bytes`, `_timestamp_seconds`), `_total` for counters.

pub mod http;
#[cfg(test)]
mod tests;
pub mod textfile;

use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        }
    }

    fn parse(text: &str) -> Option<Kind> {
        match text {
            "gauge" => Some(Kind::Gauge),
            "counter" => Some(Kind::Counter),
            _ => None,
        }
    }
}

/// One sample: label pairs (in the order given) and a value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// A metric family: every sample of one name, with its help text and type.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub help: String,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

impl Family {
    pub fn gauge(name: &str, help: &str) -> Family {
        Family::new(name, help, Kind::Gauge)
    }

    pub fn counter(name: &str, help: &str) -> Family {
        debug_assert!(name.ends_with("_total"), "{name}: counters end in _total");
        Family::new(name, help, Kind::Counter)
    }

    fn new(name: &str, help: &str, kind: Kind) -> Family {
        debug_assert!(valid_name(name), "{name} is not a metric name");
        Family {
            name: name.to_string(),
            help: help.to_string(),
            kind,
            samples: Vec::new(),
        }
    }

    /// Adds a sample with `labels` (names must be valid label names).
    pub fn with(mut self, labels: &[(&str, &str)], value: f64) -> Family {
        self.push(labels, value);
        self
    }

    pub fn push(&mut self, labels: &[(&str, &str)], value: f64) {
        debug_assert!(labels.iter().all(|(n, _)| valid_label(n)));
        self.samples.push(Sample {
            labels: labels
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            value,
        });
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label(name: &str) -> bool {
    !name.starts_with("__") && !name.contains(':') && valid_name(name)
}

/// A Unix time as a metric value.
pub fn timestamp(t: chrono::DateTime<chrono::Utc>) -> f64 {
    t.timestamp_micros() as f64 / 1e6
}

/// `1`/`0` for a yes-or-no metric.
pub fn flag(yes: bool) -> f64 {
    if yes { 1.0 } else { 0.0 }
}

/// The exposition text of `families`, in the order given; families without samples are left
/// out (an absent series is how Prometheus says "unknown").
pub fn render(families: &[Family]) -> String {
    let mut out = String::new();
    for f in families.iter().filter(|f| !f.samples.is_empty()) {
        let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(&f.help));
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.as_str());
        for s in &f.samples {
            out.push_str(&f.name);
            if !s.labels.is_empty() {
                out.push('{');
                for (i, (n, v)) in s.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{n}=\"{}\"", escape_label(v));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", format_value(s.value));
        }
    }
    out
}

fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Why a text is not exposition format myvault could have written.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {what}")]
pub struct ParseError {
    pub line: usize,
    pub what: String,
}

/// Reads exposition text back into families (what [`render`] writes: `# HELP`, `# TYPE`,
/// then samples; no timestamps). Samples before their `# TYPE` line are refused: the file
/// is then not one myvault wrote, and replacing it blindly could lose someone's metrics.
pub fn parse(text: &str) -> Result<Vec<Family>, ParseError> {
    let mut families: Vec<Family> = Vec::new();
    let mut help: Option<(String, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let err = |what: &str| ParseError {
            line: i + 1,
            what: what.to_string(),
        };
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name.to_string(), unescape(text)));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| err("TYPE without a type"))?;
            let kind =
                Kind::parse(kind).ok_or_else(|| err("a type other than gauge or counter"))?;
            let help = match help.take() {
                Some((n, h)) if n == name => h,
                _ => String::new(),
            };
            families.push(Family {
                name: name.to_string(),
                help,
                kind,
                samples: Vec::new(),
            });
        } else if line.starts_with('#') {
            continue;
        } else {
            let (name, labels, value) = parse_sample(line).ok_or_else(|| err("not a sample"))?;
            let family = families
                .last_mut()
                .filter(|f| f.name == name)
                .ok_or_else(|| err("a sample outside its family"))?;
            family.samples.push(Sample { labels, value });
        }
    }
    Ok(families)
}

type ParsedSample = (String, Vec<(String, String)>, f64);

/// `name{label="value",...} value`
fn parse_sample(line: &str) -> Option<ParsedSample> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    if !valid_name(name) {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(mut body) = rest.strip_prefix('{') {
        loop {
            body = body.strip_prefix(',').unwrap_or(body);
            if let Some(after) = body.strip_prefix('}') {
                rest = after;
                break;
            }
            let (label, after) = body.split_once("=\"")?;
            if !valid_label(label) {
                return None;
            }
            let (value, after) = quoted(after)?;
            labels.push((label.to_string(), value));
            body = after;
        }
    }
    let value = match rest.trim().split(' ').next()? {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some((name.to_string(), labels, value))
}

/// The label value up to its closing quote (unescaped), and the text after the quote.
fn quoted(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &text[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some('n')) => {
                out.push('\n');
                chars.next();
            }
            ('\\', Some('\\')) => {
                out.push('\\');
                chars.next();
            }
            (c, _) => out.push(c),
        }
    }
    out
}
