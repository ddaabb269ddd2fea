//! GTID sets: text (what servers print, what manifests store, what `--to-gtid` takes) and the
//! binary form of PREVIOUS_GTIDS events and COM_BINLOG_DUMP_GTID.

use super::{MIB, Target};
use crate::mysql::decode::Reader;
use crate::mysql::gtid::{self, GtidSet, MariaGtidList, Uuid};

/// Text; a first line and the rest are parsed as two sets, and their algebra checked.
pub const TEXT: Target = Target {
    name: "gtid_text",
    run: run_text,
    generated_seeds: text_seeds,
    seed_dirs: &[],
    dictionary: &[
        b"3e11fa47-71ca-11e1-9e33-c80aa9429562",
        b"aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa",
        b":",
        b",",
        b"-",
        b"\n",
        b":mytag:",
        b"9223372036854775807",
        b"18446744073709551615",
        b"0-1-100",
    ],
    max_alloc: MIB,
    ci_inputs: 100_000,
    max_len: 4096,
};

/// The binary form.
pub const BINARY: Target = Target {
    name: "gtid_binary",
    run: run_binary,
    generated_seeds: binary_seeds,
    seed_dirs: &[],
    dictionary: &[],
    max_alloc: MIB,
    ci_inputs: 100_000,
    max_len: 4096,
};

fn expected_sets() -> Vec<String> {
    // The gtid_executed values the fixture servers reported.
    let mut out = Vec::new();
    for dir in std::fs::read_dir(super::crate_dir().join("fixtures/binlog"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(text) = std::fs::read_to_string(dir.path().join("expected.json"))
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            && let Some(s) = v["gtid_executed"].as_str()
        {
            out.push(s.to_string());
        }
    }
    out.sort();
    out
}

fn text_seeds() -> Vec<Vec<u8>> {
    let a = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    let mut out: Vec<Vec<u8>> = expected_sets()
        .into_iter()
        .map(String::into_bytes)
        .collect();
    for s in [
        format!("{a}:1-10:20-30,{a}:t:1-5\n{a}:5-25,{a}:t:3"),
        format!("{a}:1-5:tag_x:3:7-9,\naaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa:1"),
        "0-1-100,1-2-5".to_string(),
        String::new(),
    ] {
        out.push(s.into_bytes());
    }
    out
}

fn binary_seeds() -> Vec<Vec<u8>> {
    text_seeds()
        .iter()
        .filter_map(|t| GtidSet::parse(&String::from_utf8_lossy(t)).ok())
        .map(|s| s.encode())
        .collect()
}

fn run_text(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = Uuid::parse(&text);
    let (first, second) = text.split_once('\n').unwrap_or((&text, ""));
    let whole = GtidSet::parse(&text);
    if let Ok(set) = &whole {
        check_set(set);
    }
    if let (Ok(a), Ok(b)) = (GtidSet::parse(first), GtidSet::parse(second)) {
        check_set(&a);
        check_set(&b);
        check_algebra(&a, &b);
    }
    if let Ok(list) = MariaGtidList::parse(&text) {
        let printed = list.to_string();
        assert_eq!(
            MariaGtidList::parse(&printed).as_ref(),
            Ok(&list),
            "{printed}"
        );
    }
}

/// Printing and encoding give back the same set, and its size is computable.
fn check_set(set: &GtidSet) {
    let text = set.to_string();
    let back = GtidSet::parse(&text).unwrap_or_else(|e| panic!("{text:?} does not parse: {e}"));
    assert_eq!(&back, set, "{text}");
    assert_eq!(back.to_string(), text, "printing is canonical");
    assert_eq!(GtidSet::decode(&set.encode()).as_ref(), Ok(set), "{text}");
    let _ = set.count();
    assert!(set.subtract(set).is_empty());
    assert_eq!(&set.union(set), set);
    assert_eq!(&set.intersect(set), set);
}

fn check_algebra(a: &GtidSet, b: &GtidSet) {
    let union = a.union(b);
    let inter = a.intersect(b);
    let diff = a.subtract(b);
    assert!(a.is_subset(&union) && b.is_subset(&union));
    assert!(inter.is_subset(a) && inter.is_subset(b));
    assert_eq!(diff.union(&inter), *a, "a = (a - b) + (a & b)");
    assert!(diff.intersect(b).is_empty());
    assert_eq!(union, b.union(a));
    for (tsid, s, e) in a.intervals() {
        for gno in [s, e] {
            let g = gtid::Gtid {
                tsid: tsid.clone(),
                gno,
            };
            assert!(a.contains(&g) && union.contains(&g));
            assert_eq!(diff.contains(&g), !b.contains(&g));
        }
    }
}

fn run_binary(data: &[u8]) {
    let mut r = Reader::new(data);
    while gtid::read_varlen(&mut r).is_ok() {}
    if let Ok(set) = GtidSet::decode(data) {
        check_set(&set);
    }
}
