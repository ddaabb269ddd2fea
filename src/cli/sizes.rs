//! Byte sizes and rates as operators write them: `512`, `64K`, `10M`, `2G`, `1T` (powers of
//! 1024; a trailing `B` or `iB` is allowed), rates the same with an optional `/s`.

use crate::repo::repack::MaxUnused;

/// A size in bytes.
pub(crate) fn parse_bytes(s: &str) -> Result<u64, String> {
    let bad = || format!("'{s}' is not a size like 512, 64K, 10M or 2G");
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(bad()),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    n.checked_mul(1u64 << shift).ok_or_else(bad)
}

/// A rate in bytes per second, more than zero.
pub(crate) fn parse_rate(s: &str) -> Result<u64, String> {
    let size = s.trim().strip_suffix("/s").unwrap_or(s);
    match parse_bytes(size) {
        Ok(0) => Err(format!("'{s}': a rate must be more than 0 bytes/s")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!(
            "'{s}' is not a rate like 500K, 20M or 1G (bytes/s)"
        )),
    }
}

/// `--max-unused`: a percentage below 100 (`5%`), a size (`500M`), or `unlimited`.
pub(crate) fn parse_max_unused(s: &str) -> Result<MaxUnused, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("unlimited") {
        return Ok(MaxUnused::Unlimited);
    }
    if let Some(p) = t.strip_suffix('%') {
        return match p.trim().parse::<f64>() {
            Ok(p) if (0.0..100.0).contains(&p) => Ok(MaxUnused::Percent(p)),
            _ => Err(format!(
                "'{s}': a percentage from 0% to below 100% (or `unlimited`)"
            )),
        };
    }
    parse_bytes(t)
        .map(MaxUnused::Bytes)
        .map_err(|_| format!("'{s}' is not a percentage (5%), a size (500M) or `unlimited`"))
}

/// `max_rate` in the configuration file, written as `--max-rate` takes it (`"20M"`), checked
/// when the file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Rate(pub u64);

impl<'de> serde::Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Rate, D::Error> {
        let text = String::deserialize(d)?;
        parse_rate(&text)
            .map(Rate)
            .map_err(|e| serde::de::Error::custom(format!("max_rate: {e}")))
    }
}

/// `max_unused` in the configuration file, written as `--max-unused` takes it (`"5%"`,
/// `"500M"`, `"unlimited"`), checked when the file is read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Unused(pub MaxUnused);

impl<'de> serde::Deserialize<'de> for Unused {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Unused, D::Error> {
        let text = String::deserialize(d)?;
        parse_max_unused(&text)
            .map(Unused)
            .map_err(|e| serde::de::Error::custom(format!("max_unused: {e}")))
    }
}

impl serde::Serialize for Unused {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // As the file takes it: a size is a plain number of bytes there.
        match self.0 {
            MaxUnused::Bytes(b) => s.serialize_str(&b.to_string()),
            other => s.serialize_str(&other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_rates_and_limits_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_bytes("512"), Ok(512));
        assert_eq!(parse_bytes("64K"), Ok(64 << 10));
        assert_eq!(parse_bytes("10MiB"), Ok(10 << 20));
        assert_eq!(parse_bytes("2g"), Ok(2 << 30));
        assert_eq!(parse_bytes("1TB"), Ok(1 << 40));
        for bad in ["", "K", "1.5M", "-1", "10X", "99999999999999T", "1 M"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_rate("20M/s"), Ok(20 << 20));
        assert_eq!(parse_rate("500K"), Ok(500 << 10));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
        assert_eq!(parse_max_unused("5%"), Ok(MaxUnused::Percent(5.0)));
        assert_eq!(parse_max_unused("0%"), Ok(MaxUnused::Percent(0.0)));
        assert_eq!(parse_max_unused("unlimited"), Ok(MaxUnused::Unlimited));
        assert_eq!(parse_max_unused("1G"), Ok(MaxUnused::Bytes(1 << 30)));
        for bad in ["100%", "-1%", "x%", "lots"] {
            assert!(parse_max_unused(bad).is_err(), "{bad}");
        }
    }
}
