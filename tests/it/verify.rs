//! `verify` and restore on damaged repositories (issue 18, item 11): verify goes past every
//! bad object (one that does not decrypt, one the S3 server will not serve, a manifest that
//! does not decode), lists them all with the snapshots they affect, and a pack the index
//! names but the store lacks is an integrity failure (exit 8) for restore as for verify.

use myvault::storage::Storage;
use myvault::storage::s3::S3Storage;

use crate::support::s3::S3Server;
use crate::support::{Run, Scratch, TestServer, load, myvault, myvault_env};

fn pack_keys(store: &dyn Storage) -> Vec<String> {
    store
        .list("packs/")
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect()
}

/// One byte of an object's stored (encrypted) bytes changed, written back through S3: the
/// server serves it, and it does not decrypt.
fn flip_a_byte(store: &dyn Storage, key: &str) {
    let mut bytes = store.get(key).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    store.put(key, &bytes).unwrap();
}

#[test]
fn verify_lists_every_bad_object_of_an_encrypted_s3_repository_and_what_each_affects() {
    let s3 = S3Server::start();
    let raw = S3Storage::open(&s3.repo("enc"), &crate::storage_s3::aws_env(&s3)).unwrap();
    let dir = Scratch::new("verify-all");
    let key = dir.join("repo.key");
    std::fs::write(
        &key,
        b"a test key of thirty-two bytes or more, for verify\n",
    )
    .unwrap();
    let env: Vec<(String, String)> = s3
        .env()
        .into_iter()
        .chain([(
            "MYVAULT_ENCRYPTION_KEY_FILE".to_string(),
            key.to_str().unwrap().to_string(),
        )])
        .collect();
    let run = |args: &[&str]| -> Run {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        myvault_env(args, &env)
    };
    let remote = s3.repo("enc");
    run(&["init", "--repo", &remote]).expect_code(0);
    // Three snapshots of three directories, each with a pack of its own.
    let mut snapshots = Vec::new();
    let mut packs = Vec::new();
    for (n, name) in ["a", "b", "c"].iter().enumerate() {
        let path = dir.join(name);
        std::fs::create_dir_all(&path).unwrap();
        let text: String = (0..6000u64)
            .map(|i| {
                format!(
                    "{name} row {i} {}\n",
                    i.wrapping_mul(0x9E37_79B9) ^ n as u64
                )
            })
            .collect();
        std::fs::write(path.join("rows.txt"), text).unwrap();
        let before = pack_keys(&raw);
        let backup = run(&[
            "backup",
            "--path",
            path.to_str().unwrap(),
            "--repo",
            &remote,
            "--json",
        ]);
        backup.expect_code(0);
        snapshots.push(backup.json()["snapshot"].as_str().unwrap().to_string());
        let new: Vec<String> = pack_keys(&raw)
            .into_iter()
            .filter(|k| !before.contains(k))
            .collect();
        assert_eq!(new.len(), 1, "{new:?}");
        packs.push(new[0].clone());
    }
    run(&["verify", "--repo", &remote]).expect_code(0);

    // a: its pack does not decrypt.
    flip_a_byte(&raw, &packs[0]);
    // b: its pack damaged behind the server's back: s3s-fs checks its stored checksum and
    // stops serving it mid-stream (after myvault's retries).
    let backing = s3.dir.join(&s3.bucket).join("enc").join(&packs[1]);
    let mut bytes = std::fs::read(&backing).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(&backing, bytes).unwrap();
    // c: its manifest does not decrypt.
    flip_a_byte(&raw, &format!("snapshots/{}", snapshots[2]));

    let verify = run(&["verify", "--repo", &remote, "--json"]);
    verify.expect_code(8);
    let report = verify.json();
    let problems = report["problems"].as_array().unwrap();
    let objects: Vec<&str> = problems
        .iter()
        .map(|p| p["object"].as_str().unwrap())
        .collect();
    let manifest_c = format!("snapshots/{}", snapshots[2]);
    for object in [packs[0].as_str(), packs[1].as_str(), manifest_c.as_str()] {
        assert!(objects.contains(&object), "{object} not named: {report:#}");
    }
    for (pack, snapshot) in packs.iter().zip(&snapshots).take(2) {
        let named = problems
            .iter()
            .find(|p| p["object"] == pack.as_str())
            .unwrap();
        assert!(
            named["affects"].to_string().contains(snapshot.as_str()),
            "{named}"
        );
    }
    let damaged: std::collections::BTreeSet<&str> = report["damaged_snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(damaged, snapshots.iter().map(String::as_str).collect());

    // a's pack gone altogether: restore says integrity failure, as verify does.
    raw.delete(&packs[0]).unwrap();
    let out = dir.join("out");
    let restore = run(&[
        "restore",
        "--repo",
        &remote,
        "--snapshot",
        &snapshots[0],
        "--dest",
        out.to_str().unwrap(),
    ]);
    restore.expect_code(8);
    assert!(restore.stderr.contains(&packs[0]), "{}", restore.stderr);
    let verify = run(&["verify", "--repo", &remote, "--json"]);
    verify.expect_code(8);
    assert!(
        verify.stdout.contains("missing (named by the index)"),
        "{}",
        verify.stdout
    );
}

/// A logical restore into MySQL 9.7 of a snapshot whose pack is gone: exit 8, not the storage
/// failure (10) it was, and the same code as `verify`.
#[test]
fn a_missing_pack_fails_a_logical_restore_with_exit_8_as_verify_does() {
    let src = TestServer::mysql97();
    load::prepare(&src, "sb", 1, 500);
    let dir = Scratch::new("missing-pack");
    let repo = dir.join("repo");
    let repo = repo.to_str().unwrap();
    myvault(&["init", "--repo", repo]).expect_code(0);
    myvault(&["backup", "--repo", repo, "--source", &src.url()]).expect_code(0);
    let packs = dir.join("repo").join("packs");
    let pack = std::fs::read_dir(&packs)
        .unwrap()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
        .map(|f| f.path())
        .find(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .unwrap();
    std::fs::remove_file(&pack).unwrap();
    let name = pack.file_name().unwrap().to_string_lossy().into_owned();
    let verify = myvault(&["verify", "--repo", repo]);
    verify.expect_code(8);
    assert!(verify.stdout.contains(&name), "{}", verify.stdout);
    let dst = TestServer::mysql97();
    let restore = myvault(&["restore", "--repo", repo, "--target", &dst.url()]);
    restore.expect_code(8);
    assert!(restore.stderr.contains(&name), "{}", restore.stderr);
}
