//! DECIMAL's binary format (`decimal2bin` in `strings/decimal.cc`): the integer and the
//! fraction digits in groups of nine per four bytes, big-endian, a partial group for the
//! digits left over; the sign bit flipped, and every byte inverted for a negative number.

use super::RowsError;

/// Bytes for 0..=9 leftover digits.
const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];

/// How many bytes a DECIMAL(precision, scale) takes.
pub fn size(precision: u8, scale: u8) -> Result<usize, RowsError> {
    if scale > precision || precision > 65 || scale > 30 {
        return Err(RowsError::malformed(format!(
            "DECIMAL({precision},{scale}) metadata"
        )));
    }
    let intg = usize::from(precision - scale);
    let frac = usize::from(scale);
    Ok(intg / 9 * 4 + DIG2BYTES[intg % 9] + frac / 9 * 4 + DIG2BYTES[frac % 9])
}

fn be(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b))
}

/// The number as exact decimal text (`-12345678.91`).
pub fn decode(bytes: &[u8], precision: u8, scale: u8) -> Result<String, RowsError> {
    let n = size(precision, scale)?;
    if bytes.len() != n || n == 0 {
        return Err(RowsError::malformed("DECIMAL value"));
    }
    let mut buf = bytes.to_vec();
    let negative = buf[0] & 0x80 == 0;
    buf[0] ^= 0x80;
    if negative {
        for b in buf.iter_mut() {
            *b = !*b;
        }
    }
    let intg = usize::from(precision - scale);
    let frac = usize::from(scale);
    let mut at = 0;
    let mut take = |len: usize| {
        let v = be(&buf[at..at + len]);
        at += len;
        v
    };
    let mut int_part = String::new();
    let lead = DIG2BYTES[intg % 9];
    if lead > 0 {
        int_part.push_str(&take(lead).to_string());
    }
    for _ in 0..intg / 9 {
        let v = take(4);
        if int_part.is_empty() {
            int_part.push_str(&v.to_string());
        } else {
            int_part.push_str(&format!("{v:09}"));
        }
    }
    let int_part = int_part.trim_start_matches('0');
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    out.push_str(if int_part.is_empty() { "0" } else { int_part });
    if frac > 0 {
        out.push('.');
        for _ in 0..frac / 9 {
            out.push_str(&format!("{:09}", take(4)));
        }
        let rest = frac % 9;
        if rest > 0 {
            let v = take(DIG2BYTES[rest]);
            out.push_str(&format!("{v:0rest$}"));
        }
    }
    // A digit group larger than its digits allow is damage, not a number.
    if out.trim_start_matches('-').replace('.', "").len() > usize::from(precision) + 1 {
        return Err(RowsError::malformed(
            "DECIMAL value (digit group out of range)",
        ));
    }
    Ok(out)
}
