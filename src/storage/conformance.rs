//! The behaviour every storage backend must show, as one suite all backends run: memory and
//! local in unit tests, S3 against a real S3-protocol server in the integration tests.
//!
//! Each check panics with a message naming the broken promise. The suite writes under a
//! unique prefix so it can share a store with other tests.

use super::Storage;

/// Runs every check against `store`.
pub fn run_all(store: &dyn Storage) {
    run(store, true);
}

/// Every check but the race of concurrent creators, for test servers that check
/// `If-None-Match` without making it atomic (s3s-fs). myvault never has two writers create
/// the same key (locks, snapshots and segments have unique ids), so the sequential promise,
/// which every backend keeps, is the one it relies on.
pub fn run_all_but_create_race(store: &dyn Storage) {
    run(store, false);
}

fn run(store: &dyn Storage, create_race: bool) {
    let prefix = format!("conformance-{}", std::process::id());
    put_get_round_trip(store, &prefix);
    put_replaces(store, &prefix);
    create_only_once(store, &prefix);
    ranges(store, &prefix);
    large_objects(store, &prefix);
    missing_objects(store, &prefix);
    listing(store, &prefix);
    binary_and_empty_objects(store, &prefix);
    staged_objects(store, &prefix);
    invalid_keys(store);
    if create_race {
        concurrent_create_has_one_winner(store, &prefix);
    }
    for obj in store.list(&format!("{prefix}/")).expect("list for cleanup") {
        store.delete(&obj.key).expect("cleanup delete");
    }
}

fn put_get_round_trip(s: &dyn Storage, p: &str) {
    let key = format!("{p}/a/b/object");
    s.put(&key, b"hello").expect("put");
    assert_eq!(
        s.get(&key).expect("get"),
        b"hello",
        "get returns what put stored"
    );
    assert_eq!(s.stat(&key).expect("stat"), Some(5), "stat gives the size");
}

fn put_replaces(s: &dyn Storage, p: &str) {
    let key = format!("{p}/replace");
    s.put(&key, b"first version").expect("put");
    s.put(&key, b"second").expect("put again");
    assert_eq!(
        s.get(&key).expect("get"),
        b"second",
        "put replaces the whole object"
    );
}

fn create_only_once(s: &dyn Storage, p: &str) {
    let key = format!("{p}/locks/one");
    assert!(
        s.create(&key, b"mine").expect("create"),
        "create on a free key succeeds"
    );
    assert!(
        !s.create(&key, b"theirs").expect("second create"),
        "create on a taken key reports false"
    );
    assert_eq!(
        s.get(&key).expect("get"),
        b"mine",
        "a failed create leaves the object alone"
    );
}

fn ranges(s: &dyn Storage, p: &str) {
    let key = format!("{p}/range");
    let data: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    s.put(&key, &data).expect("put");
    assert_eq!(s.get_range(&key, 0, 10).expect("range"), &data[..10]);
    assert_eq!(
        s.get_range(&key, 65_536, 1000).expect("range"),
        &data[65_536..66_536]
    );
    assert_eq!(
        s.get_range(&key, 99_990, 100).expect("range past end"),
        &data[99_990..],
        "a range past the end is cut at the end"
    );
    let mut buf = b"kept".to_vec();
    s.get_range_into(&key, 1000, 500, &mut buf)
        .expect("range into");
    assert_eq!(
        &buf[..4],
        b"kept",
        "get_range_into keeps what the buffer held"
    );
    assert_eq!(&buf[4..], &data[1000..1500], "and appends the range");
}

/// An object of a few packs' size: a store that uploads in parts (S3 above 10 MiB) gives back
/// the same bytes, whole and by ranges across its parts.
fn large_objects(s: &dyn Storage, p: &str) {
    let key = format!("{p}/large");
    let data: Vec<u8> = (0..11 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    s.put(&key, &data).expect("put large");
    assert!(
        s.get(&key).expect("get large") == data,
        "a large object round-trips"
    );
    let at = 5 * 1024 * 1024 - 100;
    assert_eq!(
        s.get_range(&key, at as u64, 200)
            .expect("range across parts"),
        &data[at..at + 200],
        "a range across the parts of an upload"
    );
    s.delete(&key).expect("delete large");
}

fn missing_objects(s: &dyn Storage, p: &str) {
    let key = format!("{p}/missing");
    let err = s.get(&key).expect_err("get of a missing object fails");
    assert!(
        err.is_not_found(),
        "missing object gives NotFound, got {err}"
    );
    assert_eq!(
        s.stat(&key).expect("stat"),
        None,
        "stat of a missing object is None"
    );
    s.delete(&key).expect("deleting a missing object is fine");
    assert!(
        s.get_range(&key, 0, 1)
            .expect_err("range of missing")
            .is_not_found()
    );
}

fn listing(s: &dyn Storage, p: &str) {
    let base = format!("{p}/list");
    for k in ["x/2", "x/1", "y/1", "x/sub/3"] {
        s.put(&format!("{base}/{k}"), k.as_bytes()).expect("put");
    }
    s.put(&format!("{base}-sibling"), b"not under base/")
        .expect("put");
    let listed: Vec<String> = s
        .list(&format!("{base}/x/"))
        .expect("list")
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(
        listed,
        vec![
            format!("{base}/x/1"),
            format!("{base}/x/2"),
            format!("{base}/x/sub/3")
        ],
        "list gives every key under the prefix, recursively, sorted"
    );
    let all = s.list(&format!("{base}/")).expect("list");
    assert_eq!(all.len(), 4, "the sibling key is not under the prefix");
    assert!(all.iter().all(|o| o.size > 0), "list reports sizes");
    s.delete(&format!("{base}/x/1")).expect("delete");
    assert_eq!(
        s.list(&format!("{base}/x/")).expect("list").len(),
        2,
        "deleted keys disappear"
    );
    // Several at once, across directories, one of them already gone.
    s.delete_many(&[
        format!("{base}/x/2"),
        format!("{base}/x/1"),
        format!("{base}/x/sub/3"),
    ])
    .expect("delete_many");
    assert!(
        s.list(&format!("{base}/x/")).expect("list").is_empty(),
        "delete_many removes every key it names"
    );
    s.delete(&format!("{base}-sibling")).expect("delete");
}

fn binary_and_empty_objects(s: &dyn Storage, p: &str) {
    let key = format!("{p}/binary");
    let data: Vec<u8> = (0..=255u8).collect();
    s.put(&key, &data).expect("put");
    assert_eq!(s.get(&key).expect("get"), data, "every byte value survives");
    let empty = format!("{p}/empty");
    s.put(&empty, b"").expect("put empty");
    assert_eq!(s.get(&empty).expect("get empty"), b"");
    assert_eq!(s.stat(&empty).expect("stat"), Some(0));
    let big = format!("{p}/big");
    let data: Vec<u8> = (0..20 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    s.put(&big, &data).expect("put 20 MiB");
    assert!(
        s.get(&big).expect("get 20 MiB") == data,
        "a 20 MiB object survives"
    );
}

/// Objects written in parts: whole pages from a page-aligned buffer (written around the page
/// cache where the store can), then an odd tail; nothing is visible before the commit, and
/// an abandoned one leaves nothing behind.
fn staged_objects(s: &dyn Storage, p: &str) {
    let dir = format!("{p}/staged");
    let Some(mut object) = s.stage(&dir).expect("stage") else {
        assert!(!s.can_stage(), "can_stage() but stage() gave nothing");
        return;
    };
    const PAGE: usize = 4096;
    let mut buf = vec![0u8; 3 * PAGE + 100 + PAGE];
    let at = buf.as_ptr().align_offset(PAGE);
    for (i, b) in buf[at..].iter_mut().enumerate() {
        *b = (i * 7 % 253) as u8;
    }
    let data = &buf[at..at + 3 * PAGE + 100];
    object.append(&data[..2 * PAGE]).expect("append aligned");
    object
        .append(&data[2 * PAGE..3 * PAGE])
        .expect("append aligned");
    object.append(&data[3 * PAGE..]).expect("append tail");
    assert!(
        s.list(&dir).unwrap().is_empty(),
        "a staged object is listed before its commit"
    );
    let key = format!("{dir}/ab/object");
    object.commit(&key).expect("commit");
    assert_eq!(
        s.get(&key).unwrap(),
        data,
        "staged object read back differs"
    );
    assert_eq!(s.list(&dir).unwrap().len(), 1);

    let mut abandoned = s.stage(&dir).unwrap().expect("stage again");
    abandoned.append(b"partial").unwrap();
    drop(abandoned);
    assert_eq!(
        s.list(&dir).unwrap().len(),
        1,
        "an abandoned staged object left something"
    );
    let other = s.stage(&dir).unwrap().expect("stage again");
    assert!(
        other.commit("elsewhere/object").is_err(),
        "a staged object was committed outside its directory"
    );
    s.delete(&key).unwrap();
}

fn invalid_keys(s: &dyn Storage) {
    for key in [
        "",
        "/abs",
        "a/../b",
        "a//b",
        "trailing/",
        "./x",
        "back\\slash",
    ] {
        assert!(s.put(key, b"x").is_err(), "key {key:?} must be refused");
    }
}

fn concurrent_create_has_one_winner(s: &dyn Storage, p: &str) {
    let key = format!("{p}/race");
    let winners = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for i in 0..8 {
            let (key, winners) = (&key, &winners);
            scope.spawn(move || {
                if s.create(key, format!("writer {i}").as_bytes())
                    .expect("create")
                {
                    winners.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(
        winners.into_inner(),
        1,
        "exactly one concurrent create wins"
    );
}
