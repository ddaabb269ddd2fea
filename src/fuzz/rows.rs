//! Row events: a table map and a rows event decoded into values, each rendered as SQL, and
//! compressed transaction payloads unpacked event by event.

use super::{MIB, Target};
use crate::binlog::event::{Checksum, FormatDescription, RawEvent, types};
use crate::binlog::rows::literal::{SqlColumn, literal, matches};
use crate::binlog::rows::{RowsEvent, RowsKind, TableMap, Value, payload};

const DICTIONARY: &[&[u8]] = &[
    &[types::WRITE_ROWS],
    &[types::UPDATE_ROWS],
    &[types::DELETE_ROWS],
    &[types::PARTIAL_UPDATE_ROWS],
    b"\xff\xff\xff\xff",
    b"\x28\xb5\x2f\xfd",
];

/// Byte 0: the rows event's type (or TRANSACTION_PAYLOAD: the rest is a payload body).
/// Bytes 1-2: the table map body's length (little-endian); the table map body, then the
/// rows event body.
pub const ROWS: Target = Target {
    name: "binlog_rows",
    run: run_rows,
    generated_seeds: seeds,
    seed_dirs: &[],
    dictionary: DICTIONARY,
    max_alloc: 16 * MIB,
    ci_inputs: 30_000,
    max_len: 64 * 1024,
};

fn run_rows(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    if kind == types::TRANSACTION_PAYLOAD {
        let mut seen = 0usize;
        let _ = payload::for_each_event(&mut &rest[..], &mut |ev| {
            assert!(ev.len() >= crate::binlog::event::HEADER_LEN);
            seen += ev.len();
            Ok(())
        });
        return;
    }
    let Some((len, rest)) = rest.split_first_chunk::<2>() else {
        return;
    };
    let Some((map, rows)) = rest.split_at_checked(usize::from(u16::from_le_bytes(*len))) else {
        return;
    };
    let Ok(map) = TableMap::parse(map) else {
        return;
    };
    let Some(k) = RowsKind::of(kind) else { return };
    let Ok(ev) = RowsEvent::parse(kind, rows) else {
        return;
    };
    assert_eq!(ev.kind, k);
    let Ok(iter) = ev.rows(&map) else { return };
    let col = SqlColumn {
        quoted: "`c`".into(),
        charset: Some("utf8mb4".into()),
        binary_len: None,
    };
    for row in iter {
        let Ok(row) = row else { break };
        for image in [&row.before, &row.after].into_iter().flatten() {
            assert_eq!(image.len(), map.columns.len());
            for v in image.iter().flatten() {
                let lit = literal(v, &col);
                assert!(!lit.is_empty());
                let _ = matches(v, &col);
                match v {
                    // What the server gets back must be JSON it can parse.
                    Value::Json(j) => {
                        let text = &j.text;
                        serde_json::from_str::<serde_json::Value>(text).unwrap_or_else(|e| {
                            panic!("decoded JSON `{text}` does not parse: {e}")
                        });
                    }
                    Value::Decimal(d) => assert!(
                        d.trim_start_matches('-').parse::<f64>().is_ok(),
                        "decimal text {d}"
                    ),
                    _ => {}
                }
            }
        }
    }
}

/// Every (table map, rows event) pair, and every payload, of the row fixtures.
fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for name in ["full", "minimal-compressed"] {
        let path = super::crate_dir().join(format!("fixtures/binlog/rows/{name}/binlog.000001"));
        let Ok(bytes) = std::fs::read(path) else {
            continue;
        };
        let mut checksum = Checksum::None;
        let mut map: Option<Vec<u8>> = None;
        let mut at = 4usize;
        while let Some(ev) = bytes.get(at..).and_then(|b| RawEvent::frame(b, 0).ok()) {
            at += ev.len();
            if ev.type_code() == types::FORMAT_DESCRIPTION {
                checksum = FormatDescription::parse(&ev, 0)
                    .map(|f| f.checksum)
                    .unwrap_or(checksum);
            }
            let body = ev.body(checksum);
            match ev.type_code() {
                types::TABLE_MAP => map = Some(body.to_vec()),
                types::TRANSACTION_PAYLOAD => {
                    let mut v = vec![types::TRANSACTION_PAYLOAD];
                    v.extend_from_slice(body);
                    out.push(v);
                }
                t if RowsKind::of(t).is_some() => {
                    if let Some(m) = &map {
                        let mut v = vec![t];
                        v.extend_from_slice(&(m.len() as u16).to_le_bytes());
                        v.extend_from_slice(m);
                        v.extend_from_slice(body);
                        out.push(v);
                    }
                }
                _ => {}
            }
        }
    }
    out
}
