//! MySQL option files (`my.cnf`): the `[client]` section, as the mysql client reads it.

use std::collections::HashMap;
use std::path::Path;

/// The `key = value` pairs of one section. Keys are normalised to use `-` (MySQL accepts
/// `ssl_ca` and `ssl-ca` alike); values lose their quotes.
pub fn read_section(path: &Path, section: &str) -> std::io::Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(path)?;
    Ok(parse_section(&text, section))
}

pub fn parse_section(text: &str, section: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut in_section = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty()
            || line.starts_with('#')
            || line.starts_with(';')
            || line.starts_with('!')
        {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_section = name.trim().eq_ignore_ascii_case(section);
            continue;
        }
        if !in_section {
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), unquote(v.trim())),
            None => (line, String::new()),
        };
        out.insert(key.replace('_', "-").to_ascii_lowercase(), value);
    }
    out
}

fn unquote(v: &str) -> String {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return v[1..v.len() - 1].to_string();
        }
    }
    // An unquoted value ends at an inline comment.
    match v.find(" #") {
        Some(i) => v[..i].trim_end().to_string(),
        None => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_client_section_only() {
        let text = "[mysqld]\npassword=server\n\n[client]\nuser = backup\npassword = \"p#ss word\"\nssl_mode=REQUIRED # comment\n[mysql]\npassword=other\n";
        let m = parse_section(text, "client");
        assert_eq!(m["password"], "p#ss word");
        assert_eq!(m["user"], "backup");
        assert_eq!(m["ssl-mode"], "REQUIRED");
        assert_eq!(m.len(), 3);
    }
}
