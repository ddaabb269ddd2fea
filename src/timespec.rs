//! TIME arguments: RFC 3339 (`2026-11-20T14:03:00Z`, or with an offset), or
//! `YYYY-MM-DD HH:MM:SS[.ffffff]` in the local time zone.

use chrono::{DateTime, Datelike, Local, NaiveDateTime, TimeZone, Utc};

pub fn parse(s: &str) -> Result<DateTime<Utc>, String> {
    let t = s.trim();
    let time = parse_any(t)?;
    // chrono's `%Y` takes any number of digits and a sign; a year RFC 3339 cannot write
    // (the plan prints the instant back) is a typo.
    if !(0..=9999).contains(&time.year()) {
        return Err(format!(
            "'{t}' is not a time: the year must have four digits (0000 to 9999)"
        ));
    }
    Ok(time)
}

fn parse_any(t: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(t, fmt) {
            return match Local.from_local_datetime(&naive) {
                chrono::LocalResult::Single(d) => Ok(d.with_timezone(&Utc)),
                chrono::LocalResult::Ambiguous(a, b) => Err(format!(
                    "{t} is ambiguous in the local time zone (a DST change): give an offset, e.g. {} or {}",
                    a.to_rfc3339(),
                    b.to_rfc3339()
                )),
                chrono::LocalResult::None => Err(format!(
                    "{t} does not exist in the local time zone (a DST change)"
                )),
            };
        }
    }
    Err(format!(
        "'{t}' is not a time: use RFC 3339 (2026-11-20T14:03:00Z) or YYYY-MM-DD HH:MM:SS[.ffffff]"
    ))
}

/// Microseconds since the epoch.
pub fn micros(t: &DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(
            parse("2026-11-20T14:03:00Z").unwrap().timestamp(),
            1795183380
        );
        assert_eq!(
            parse("2026-11-20T15:03:00+01:00").unwrap().timestamp(),
            1795183380
        );
        assert_eq!(
            parse("2026-11-20T14:03:00.123456Z")
                .unwrap()
                .timestamp_subsec_micros(),
            123456
        );
        assert!(parse("2026-11-20 14:03:00.5").is_ok());
        assert!(parse("yesterday").is_err());
        for far in [
            "-2026-11-20 14:03:00",
            "+12026-11-20T14:03:00",
            "20261-11-20 14:03:00",
        ] {
            assert!(parse(far).is_err(), "{far}");
        }
        assert!(parse("2026-13-01 00:00:00").is_err());
    }
}
