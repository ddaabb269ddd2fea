//! Encrypted repositories: a logical backup of MySQL 9.7 into an encrypted and a plain
//! repository at once, then streamed binlogs; nothing readable in the encrypted one's files,
//! a point-in-time restore with the key, and clear refusals without it, with a wrong one, and
//! on damage.

use std::path::Path;

use crate::support::load;
use crate::support::streamer::Streamer;
use crate::support::{Scratch, TestServer, myvault, myvault_env};

/// Whether any file under `dir` contains `needle`.
fn found_in(dir: &Path, needle: &str) -> bool {
    std::process::Command::new("grep")
        .args(["-rqa", needle])
        .arg(dir)
        .status()
        .expect("run grep")
        .success()
}

#[test]
fn an_encrypted_repository_holds_nothing_readable_and_restores_with_its_key() {
    let src = TestServer::mysql97();
    src.sql(
        "CREATE DATABASE secret_shop;\n\
         CREATE TABLE secret_shop.customer_cards (id INT PRIMARY KEY, holder VARCHAR(100), note TEXT);\n\
         INSERT INTO secret_shop.customer_cards VALUES (1, 'Plaintext-Holder-Name', REPEAT('Visible-Row-Text ', 2000)), (2, 'Second-Holder', 'x')",
    );
    let dir = Scratch::new("encrypted");
    let key = dir.join("repo.key");
    std::fs::write(&key, b"0123456789abcdef0123456789abcdef-test-key\n").unwrap();
    let key = key.to_str().unwrap().to_string();
    let enc = dir.join("enc");
    let plain = dir.join("plain");
    let (enc_s, plain_s) = (enc.to_str().unwrap(), plain.to_str().unwrap());
    let with_key: &[(&str, &str)] = &[("MYVAULT_ENCRYPTION_KEY_FILE", &key)];

    let init = myvault(&[
        "init",
        "--repo",
        enc_s,
        "--encryption-key-file",
        &key,
        "--json",
    ]);
    init.expect_code(0);
    assert_eq!(init.json()["config"]["format"], 3, "{}", init.stdout);
    myvault(&["init", "--repo", plain_s]).expect_code(0);

    // One backup into both: the plain one shows the data, the encrypted one nothing of it.
    myvault_env(
        &[
            "backup",
            "--source",
            &src.url(),
            "--repo",
            enc_s,
            "--repo",
            plain_s,
        ],
        with_key,
    )
    .expect_code(0);
    // Row text is stored where zstd leaves it readable (a control that the search works);
    // names sit in compressed schema chunks either way.
    for needle in ["Plaintext-Holder-Name", "Visible-Row-Text"] {
        assert!(
            found_in(&plain, needle),
            "{needle} should be in the plain repository"
        );
    }
    for needle in [
        "Plaintext-Holder-Name",
        "Visible-Row-Text",
        "customer_cards",
        "secret_shop",
    ] {
        assert!(
            !found_in(&enc, needle),
            "{needle} is readable in the encrypted repository"
        );
    }

    // Without the key, or with another one: refused before anything is read.
    let run = myvault(&["list", "--repo", enc_s]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("--encryption-key-file"),
        "{}",
        run.stderr
    );
    let list_with = |key_file: &Path| {
        let key_arg = key_file.to_str().unwrap();
        myvault(&["list", "--repo", enc_s, "--encryption-key-file", key_arg])
    };
    let other = dir.join("other.key");
    std::fs::write(&other, [9u8; 32]).unwrap();
    let run = list_with(&other);
    run.expect_code(4);
    assert!(run.stderr.contains("another key"), "{}", run.stderr);
    let short = dir.join("short.key");
    std::fs::write(&short, "too short\n").unwrap();
    let run = list_with(&short);
    run.expect_code(2);
    assert!(
        !run.stderr.contains("too short"),
        "the key leaked: {}",
        run.stderr
    );

    // With the key: verified, listed, and restored identically.
    myvault_env(&["verify", "--repo", enc_s], with_key).expect_code(0);
    let list = myvault_env(&["list", "--repo", enc_s, "--json"], with_key);
    list.expect_code(0);
    assert_eq!(list.json()["snapshots"].as_array().unwrap().len(), 1);
    assert_eq!(list.json()["encrypted"], true);

    // Binlogs streamed into it are sealed too, and a point-in-time restore reads them back.
    src.sql("INSERT INTO secret_shop.customer_cards VALUES (3, 'Streamed-Holder-Name', 'y')");
    let goal = src.gtid_executed();
    src.sql("FLUSH BINARY LOGS");
    let spool = dir.join("spool");
    let mut stream =
        Streamer::start_env(&src.url(), enc_s, &spool, &["--until-caught-up"], with_key);
    assert_eq!(stream.wait(), 0, "{}", stream.log_text());
    assert!(
        !found_in(&enc, "Streamed-Holder-Name"),
        "a streamed row is readable"
    );
    let target = TestServer::mysql97();
    let goal_text = goal.to_string();
    myvault_env(
        &[
            "restore",
            "--repo",
            enc_s,
            "--to-gtid",
            &goal_text,
            "--target",
            &target.url(),
        ],
        with_key,
    )
    .expect_code(0);
    assert_eq!(target.gtid_executed(), goal);
    assert_eq!(
        load::checksums(&src, "secret_shop"),
        load::checksums(&target, "secret_shop")
    );

    // copy: a plain repository into an encrypted one is sealed on the way; the other way
    // round would undo the encryption and is refused.
    let sealed = dir.join("sealed");
    let sealed_s = sealed.to_str().unwrap();
    myvault_env(&["init", "--repo", sealed_s], with_key).expect_code(0);
    myvault_env(&["copy", "--from", plain_s, "--to", sealed_s], with_key).expect_code(0);
    assert!(
        !found_in(&sealed, "Visible-Row-Text"),
        "copy wrote plaintext"
    );
    let list = myvault_env(&["list", "--repo", sealed_s, "--json"], with_key);
    assert_eq!(list.json()["snapshots"].as_array().unwrap().len(), 1);
    let run = myvault_env(&["copy", "--from", enc_s, "--to", plain_s], with_key);
    run.expect_code(2);
    assert!(run.stderr.contains("in clear"), "{}", run.stderr);

    // A flipped byte in a pack is an integrity failure, not garbage restored.
    let pack = walk(&enc.join("packs"))
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a pack");
    let mut bytes = std::fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&pack, &bytes).unwrap();
    let run = myvault_env(&["verify", "--repo", enc_s], with_key);
    run.expect_code(8);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
