//! The fault matrix's storage rows (see `faults.rs`): the S3 server killed and restarted while
//! a backup's pack is halfway through a multipart upload, and a full disk under a local
//! repository and under the streamer's spool.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::faults::{Dice, Sums, assert_restores, assert_verified, env_with, snapshot_ids, sums};
use crate::restore_resume::fast_server;
use crate::stream::assert_archive_matches;
use crate::support::load::{self, Load};
use crate::support::s3::S3Server;
use crate::support::streamer::{Streamer, drain};
use crate::support::{Background, Scratch, failpoints, myvault, myvault_env};

/// A tmpfs of `size` mounted on `path` (created), unmounted when dropped: a disk that fills.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    fn mount(path: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test mounts a tmpfs and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk {
            path: path.to_path_buf(),
        }
    }

    /// More room, as an operator who frees or adds space.
    fn grow(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount {}", self.path.display());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// `n` bytes that do not compress (and differ for each `seed`), in `dir/name`.
fn random_file(dir: &Path, name: &str, n: usize, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ seed;
    let bytes: Vec<u8> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// Free bytes on the filesystem of `path`.
fn free_bytes(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: statvfs fills the struct we pass; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_bavail as u64 * st.f_frsize as u64
}

/// Whether any multipart upload has stored a part on the S3 server (s3s-fs keeps each as
/// `.upload_id-<id>.part-<n>` in its root until the upload completes or is aborted).
fn part_in_flight(root: &Path) -> bool {
    walk(root).iter().any(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".upload_id-"))
    })
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The S3 server dies while a backup's pack (above the multipart threshold) is halfway
/// uploaded: restarted at once, the backup retries and completes; restarted after the
/// backup gave up, the backup fails with exit 10 and the rerun completes. Each time the
/// repository verifies clean and the snapshot restores byte for byte.
#[test]
fn fault_matrix_s3_killed_inside_a_multipart_upload() {
    let mut dice = Dice::new("S3 multipart");
    let mut s3 = S3Server::start();
    let env = s3.env();
    let dir = Scratch::new("fm-s3");
    let repo = s3.repo("fm");
    // 33 MiB packs: uploaded in six parts of 5.5 MiB, four at a time.
    myvault_env(
        &["init", "--repo", &repo, "--pack-size", "34603008"],
        &env_with(&env, &[]),
    )
    .expect_code(0);
    for (case, outage) in [
        ("S3 restarted during the retries", Duration::ZERO),
        (
            "S3 restarted after the backup gave up",
            Duration::from_secs(60),
        ),
    ] {
        let data = dir.join(&format!("data-{}", outage.as_secs()));
        random_file(&data, "big", 48 << 20, dice.upto(u64::MAX));
        let path = data.to_str().unwrap();
        let args = ["backup", "--path", path, "--repo", &repo, "--json"];
        // Each part is followed by a pause, so the kill lands between two parts.
        let slow = [failpoints("store-s3-after-part=sleep(700)")];
        let mut backup = Background::start(&args, &env_with(&env, &slow));
        let deadline = Instant::now() + Duration::from_secs(120);
        while !part_in_flight(&s3.dir.path) {
            assert!(backup.running(), "{case}: {:?}", backup.finish());
            assert!(
                Instant::now() < deadline,
                "{case}: no multipart upload began"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        s3.kill();
        let pause = dice.part_of(Duration::from_millis(1500), 0.2, 1.0);
        eprintln!("{case}: S3 killed inside a multipart upload, down {pause:?} + {outage:?}");
        std::thread::sleep(pause);
        if outage.is_zero() {
            s3.restart();
        } else {
            let deadline = Instant::now() + outage;
            while backup.running() {
                assert!(
                    Instant::now() < deadline,
                    "{case}: the backup never gave up"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let run = backup.finish();
        let id = if outage.is_zero() {
            assert_eq!(
                run.code, 0,
                "{case}: the backup did not retry:\n{}",
                run.stderr
            );
            run.json()["snapshot"].as_str().unwrap().to_string()
        } else {
            assert_eq!(run.code, 10, "{case}:\n{}", run.stderr);
            eprintln!("{case}: {}", run.stderr.trim());
            assert_eq!(
                run.stderr.trim().lines().count(),
                1,
                "{case}: {}",
                run.stderr
            );
            s3.restart();
            assert_verified(&repo, &env, case);
            let rerun = myvault_env(&args, &env_with(&env, &[]));
            assert_eq!(rerun.code, 0, "{case}: the rerun failed:\n{}", rerun.stderr);
            rerun.json()["snapshot"].as_str().unwrap().to_string()
        };
        assert_verified(&repo, &env, case);
        assert!(snapshot_ids(&repo, &env).contains(&id), "{case}");
        let back = dir.join(&format!("back-{}", outage.as_secs()));
        let restored = myvault_env(
            &[
                "restore",
                "--repo",
                &repo,
                "--snapshot",
                &id,
                "--dest",
                back.to_str().unwrap(),
            ],
            &env_with(&env, &[]),
        );
        assert_eq!(restored.code, 0, "{case}: {}", restored.stderr);
        let same =
            std::fs::read(data.join("big")).unwrap() == std::fs::read(back.join("big")).unwrap();
        assert!(same, "{case}: the restored file differs");
    }
}

/// The repository's disk fills during a backup: the backup fails with one line naming the
/// full disk (exit 10), the repository verifies clean and its earlier snapshot restores;
/// with room again, the rerun completes and restores equal to the source.
#[test]
fn fault_matrix_full_disk_under_the_repository() {
    let no_env: Vec<(String, String)> = Vec::new();
    let src = fast_server();
    src.sql(
        "SET SESSION cte_max_recursion_depth = 20000;\n\
         CREATE DATABASE fd;\n\
         CREATE TABLE fd.small (id INT PRIMARY KEY, v VARCHAR(40));\n\
         INSERT INTO fd.small VALUES (1, 'one'), (2, 'two')",
    );
    let dir = Scratch::new("fm-disk");
    let disk = SmallDisk::mount(&dir.join("disk"), "8m");
    let repo = disk.path.join("repo");
    let repo = repo.to_str().unwrap();
    myvault(&["init", "--repo", repo]).expect_code(0);
    let first = crate::logical::backup(repo, &src.url(), &["--json"]);
    first.expect_code(0);
    let first_id = first.json()["snapshot"].as_str().unwrap().to_string();
    let first_sums: Sums = sums(&src, &["fd"]);
    // 12 MiB that do not compress: more than the disk holds.
    src.sql(
        "SET SESSION cte_max_recursion_depth = 20000;\n\
         CREATE TABLE fd.big (id INT PRIMARY KEY, b VARBINARY(1024));\n\
         INSERT INTO fd.big WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 12000) SELECT i, RANDOM_BYTES(1024) FROM n",
    );
    let full = crate::logical::backup(repo, &src.url(), &[]);
    assert_eq!(full.code, 10, "{}", full.stderr);
    let line = full.stderr.trim();
    eprintln!("the repository's disk full: {line}");
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        line.contains("disk is full") && line.matches(repo).count() == 1,
        "the line names the full disk and the repository, once: {line}"
    );
    let case = "the repository's disk full";
    assert_verified(repo, &no_env, case);
    assert_eq!(
        snapshot_ids(repo, &no_env),
        std::slice::from_ref(&first_id),
        "{case}"
    );
    let target = fast_server();
    assert_restores(repo, &no_env, &first_id, &target, &first_sums, case);

    disk.grow("64m");
    let rerun = crate::logical::backup(repo, &src.url(), &["--json"]);
    assert_eq!(rerun.code, 0, "{case}: the rerun failed:\n{}", rerun.stderr);
    let id = rerun.json()["snapshot"].as_str().unwrap().to_string();
    assert_verified(repo, &no_env, case);
    assert_restores(repo, &no_env, &id, &target, &sums(&src, &["fd"]), case);
}

/// The spool's disk fills while the streamer receives: it neither corrupts the spool nor the
/// archive, and says so; once there is room again, the archive is completed without a hole,
/// byte-identical to the server's binary logs.
#[test]
fn fault_matrix_full_disk_under_the_spool() {
    let no_env: Vec<(String, String)> = Vec::new();
    let src = crate::support::TestServer::builder(crate::support::Flavor::Mysql97)
        .option("--max-binlog-size=1048576")
        .option("--sync-binlog=0")
        .option("--innodb-flush-log-at-trx-commit=0")
        .start();
    load::prepare(&src, "sb", 2, 1_000);
    let dir = Scratch::new("fm-spool");
    let repo = dir.join("repo").to_str().unwrap().to_string();
    myvault(&["init", "--repo", &repo]).expect_code(0);
    // The spool is the mount point itself: the streamer's log (beside it) is not on it.
    let disk = SmallDisk::mount(&dir.join("spool"), "4m");
    let spool = disk.path.clone();
    let mut streamer = Streamer::start(&src.url(), &repo, &spool, &[]);
    std::thread::sleep(Duration::from_secs(2));
    // Something else takes nearly all the room.
    let filler = disk.path.join("filler");
    let room = free_bytes(&disk.path).saturating_sub(128 << 10);
    std::fs::write(&filler, vec![0u8; room as usize]).unwrap();
    let load = Load::start(&src, "sb", 2, 1_000, 2, 600);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !streamer.log_text().contains("No space left on device") {
        assert!(
            Instant::now() < deadline,
            "the full spool was never reported:\n{}",
            streamer.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    eprintln!("streamer with a full spool:\n{}", streamer.log_text());
    assert_verified(&repo, &no_env, "the spool's disk full");
    load.stop();
    load::wait_for_idle(&src, "sb");
    std::fs::remove_file(&filler).unwrap();
    if !streamer.running() {
        streamer = Streamer::start(&src.url(), &repo, &spool, &[]);
    }
    src.sql("FLUSH BINARY LOGS");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(streamer.terminate(), 0, "{}", streamer.log_text());
    drain(&src, &repo, &spool);
    assert_archive_matches(&src, &repo, &Scratch::new("fm-fetch"));
    assert_verified(&repo, &no_env, "the spool's disk full");
}
