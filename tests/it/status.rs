//! `myvault status` over two repositories (a local directory and s3s-fs) written by a real
//! backup and a real streamer: healthy, then each rule that makes it unhealthy on its own
//! (an old snapshot, a hole that is also a divergence, a failed verify, an unreadable
//! repository, a failed restore test), the JSON shape field by field, and the HTML page as headless Chromium
//! renders it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::s3::S3Server;
use crate::support::streamer::Streamer;
use crate::support::{Run, Scratch, TestServer, myvault_env};

/// The exit code of an unhealthy status.
const UNHEALTHY: i32 = 14;

struct Bed {
    src: TestServer,
    s3: S3Server,
    dir: Scratch,
    /// A local repository whose path holds characters HTML must escape.
    local: String,
    remote: String,
    spool: PathBuf,
}

impl Bed {
    fn run(&self, args: &[&str]) -> Run {
        let env = self.s3.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        myvault_env(args, &env)
    }

    /// `status --repo LOCAL --repo REMOTE --spool SPOOL --json EXTRA..`
    fn status(&self, extra: &[&str]) -> Run {
        let spool = self.spool.to_str().unwrap();
        let mut args = vec![
            "status",
            "--repo",
            &self.local,
            "--repo",
            &self.remote,
            "--spool",
            spool,
            "--json",
        ];
        args.extend_from_slice(extra);
        self.run(&args)
    }
}

fn time(v: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap()
}

fn critical(status: &Value) -> Vec<Value> {
    status["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["severity"] == "critical")
        .cloned()
        .collect()
}

fn codes(problems: &[Value]) -> Vec<String> {
    problems
        .iter()
        .map(|p| p["code"].as_str().unwrap().to_string())
        .collect()
}

/// Polls until `status` is healthy with every archive caught up (nothing waiting in the
/// spool), at least `files` files archived in each repository, and the streamer seen running.
fn wait_caught_up(bed: &Bed, files: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let run = bed.status(&[]);
        let json = run.json();
        let caught_up = json["sources"][0]["repos"].as_array().is_some_and(|repos| {
            repos.len() == 2
                && repos.iter().all(|r| {
                    r["archive"]["spool_pending_bytes"] == 0
                        && r["archive"]["files"].as_u64().unwrap_or(0) >= files
                })
        });
        // The streamer writes its status.json every 10 s, the first time 10 s after it starts.
        if run.code == 0 && caught_up && json["streamer"]["running"] == true {
            return json;
        }
        assert!(
            Instant::now() < deadline,
            "status did not become healthy and caught up:\n{}\n{}",
            run.stdout,
            run.stderr
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Debian's chromium, which `scripts/testbed` installs.
fn chromium() -> PathBuf {
    let path = PathBuf::from("/usr/bin/chromium");
    assert!(
        path.exists(),
        "{} is missing: run scripts/testbed (it installs Debian's chromium)",
        path.display()
    );
    path
}

/// Chromium, headless and offline, on `page`: with `--dump-dom` (returned) or `--screenshot`.
fn render(page: &Path, scratch: &Scratch, mode: &str) -> String {
    let out = std::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--window-size=1200,700",
        ])
        .arg(format!(
            "--user-data-dir={}",
            scratch.join("chromium").display()
        ))
        .arg(mode)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn status_judges_two_repositories_written_by_backup_and_the_streamer() {
    let src = TestServer::mysql97();
    let s3 = S3Server::start();
    let dir = Scratch::new("status");
    let local = dir.join("local <i>&'\"").to_str().unwrap().to_string();
    let remote = s3.repo("status");
    let bed = Bed {
        spool: dir.join("spool"),
        src,
        s3,
        dir,
        local,
        remote,
    };
    bed.run(&["init", "--repo", &bed.local]).expect_code(0);
    bed.run(&["init", "--repo", &bed.remote]).expect_code(0);
    bed.src.sql("CREATE DATABASE shop;\nCREATE TABLE shop.t (id INT PRIMARY KEY, v TEXT);\nINSERT INTO shop.t VALUES (1, 'a'), (2, 'b')");
    let url = bed.src.url();
    let backup = bed.run(&[
        "backup",
        "--source",
        &url,
        "--repo",
        &bed.local,
        "--repo",
        &bed.remote,
        "--json",
    ]);
    backup.expect_code(0);
    let snapshot = backup.json()["snapshot"].as_str().unwrap().to_string();
    let uuid = bed.src.value("SELECT @@server_uuid").unwrap();
    let env = bed.s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut streamer =
        Streamer::start_env(&url, &bed.local, &bed.spool, &["--repo", &bed.remote], &env);
    // Four files after the snapshot's, each with transactions.
    for n in 3..7 {
        bed.src.sql(&format!(
            "INSERT INTO shop.t VALUES ({n}, 'x');\nFLUSH BINARY LOGS"
        ));
    }
    bed.src.sql("INSERT INTO shop.t VALUES (100, 'last')");
    wait_caught_up(&bed, 5);
    bed.run(&["verify", "--repo", &bed.local]).expect_code(0);
    bed.run(&["verify", "--repo", &bed.remote]).expect_code(0);

    // Healthy, and the JSON shape field by field.
    let run = bed.status(&[]);
    run.expect_code(0);
    let st = run.json();
    assert_eq!(st["verdict"], "healthy");
    assert!(critical(&st).is_empty(), "{:#}", st["problems"]);
    assert_eq!(st["thresholds"]["max_snapshot_age_seconds"], 26 * 3600);
    assert_eq!(st["thresholds"]["max_archive_lag_seconds"], 300);
    assert!(st["thresholds"]["max_verify_age_seconds"].is_null());
    assert!(st["checked_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(st["sources"].as_array().unwrap().len(), 1);
    let source = &st["sources"][0];
    assert_eq!(source["source"], uuid.as_str());
    assert_eq!(source["address"], format!("127.0.0.1:{}", bed.src.port()));
    assert_eq!(source["ignored"], false);
    let current = bed.src.current_binlog();
    let snap_file = backup.json()["binlog_file"].as_str().unwrap().to_string();
    for (n, repo) in [&bed.local, &bed.remote].into_iter().enumerate() {
        let r = &source["repos"][n];
        assert_eq!(r["repo"], repo.as_str());
        assert_eq!(r["snapshot_count"], 1);
        assert_eq!(r["newest_snapshot"]["id"], snapshot.as_str());
        assert_eq!(r["newest_snapshot"]["method"], "logical");
        assert_eq!(r["snapshots"][0]["id"], snapshot.as_str());
        let age = r["newest_snapshot_age_seconds"].as_i64().unwrap();
        assert!((0..600).contains(&age), "{age}");
        let windows = r["windows"].as_array().unwrap();
        assert_eq!(windows.len(), 1, "{windows:?}");
        assert_eq!(windows[0]["first_snapshot"], snapshot.as_str());
        assert_eq!(windows[0]["start"], r["newest_snapshot"]["time"]);
        assert_eq!(windows[0]["last_file"], current.as_str());
        let a = &r["archive"];
        assert_eq!(a["first_file"], snap_file.as_str());
        assert_eq!(a["last_file"], current.as_str());
        assert!(a["files"].as_u64().unwrap() >= 5, "{a}");
        assert!(a["bytes"].as_u64().unwrap() > 0);
        assert!(a["lag_seconds"].as_i64().unwrap() <= 300, "{a}");
        assert!(a["last_commit"].is_string() && a["last_upload"].is_string());
        assert!(time(&a["complete_until"]) >= time(&a["last_commit"]), "{a}");
        assert_eq!(a["spool_pending_bytes"], 0);
        assert_eq!(a["ranges"].as_array().unwrap().len(), 1);
        assert!(r["holes"].as_array().unwrap().is_empty());
        assert!(r["gaps"].as_array().unwrap().is_empty());
        let repo_st = &st["repos"][n];
        assert_eq!(repo_st["repo"], repo.as_str());
        assert_eq!(repo_st["readable"], true);
        assert!(repo_st["error"].is_null());
        assert_eq!(repo_st["encrypted"], false);
        assert_eq!(repo_st["snapshots"], 1);
        assert_eq!(repo_st["binlog_files"], a["files"]);
        assert_eq!(repo_st["last_verify"]["ok"], true);
        assert_eq!(repo_st["last_verify"]["read_data"], true);
        assert_eq!(repo_st["last_verify"]["restore_test"], false);
        assert_eq!(repo_st["last_verify"]["problems"], 0);
        assert!(!repo_st["last_verify"]["host"].as_str().unwrap().is_empty());
        assert!(repo_st["last_restore_test"].is_null());
    }
    assert_eq!(st["repos"].as_array().unwrap().len(), 2);
    assert!(st["diverged"].as_array().unwrap().is_empty());
    assert_eq!(st["streamer"]["spool"], bed.spool.to_str().unwrap());
    assert_eq!(st["streamer"]["running"], true);
    assert_eq!(st["streamer"]["server_uuid"], uuid.as_str());

    // An old snapshot, by flag and by the config's [status] section; the flag wins.
    std::thread::sleep(Duration::from_secs(2));
    let run = bed.status(&["--max-snapshot-age", "1s"]);
    run.expect_code(UNHEALTHY);
    let problems = critical(&run.json());
    assert_eq!(codes(&problems), ["snapshot_too_old", "snapshot_too_old"]);
    assert_eq!(problems[0]["repo"], bed.local.as_str());
    assert_eq!(problems[1]["repo"], bed.remote.as_str());
    assert_eq!(problems[0]["source"], uuid.as_str());
    assert!(
        run.stderr.contains("unhealthy: 2 critical problem(s)"),
        "{}",
        run.stderr
    );
    let cfg = bed.dir.join("myvault.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[repo]]\nlocation = '''{}'''\n[[repo]]\nlocation = \"{}\"\n[stream]\nspool = \"{}\"\n[status]\nmax_snapshot_age = \"1s\"\n",
            bed.local,
            bed.remote,
            bed.spool.display()
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let run = bed.run(&["--config", c, "status", "--json"]);
    run.expect_code(UNHEALTHY);
    assert_eq!(
        codes(&critical(&run.json())),
        ["snapshot_too_old", "snapshot_too_old"]
    );
    bed.run(&["--config", c, "status", "--max-snapshot-age", "off", "-q"])
        .expect_code(0);

    // A binlog file gone from one repository: a hole there, and the repositories diverged.
    let victim = format!("{}.{:06}", snap_file.rsplit_once('.').unwrap().0, {
        let seq: u64 = snap_file.rsplit_once('.').unwrap().1.parse().unwrap();
        seq + 2
    });
    let segment_dir = Path::new(&bed.local)
        .join("binlog")
        .join(&uuid)
        .join(&victim);
    let aside = bed.dir.join("aside");
    std::fs::rename(&segment_dir, &aside).unwrap();
    let run = bed.status(&[]);
    run.expect_code(UNHEALTHY);
    let st = run.json();
    let problems = critical(&st);
    assert_eq!(
        codes(&problems),
        ["archive_hole", "diverged"],
        "{problems:#?}"
    );
    for p in &problems {
        assert_eq!(p["repo"], bed.local.as_str());
        assert_eq!(p["source"], uuid.as_str());
        assert!(p["what"].as_str().unwrap().contains(&victim), "{p}");
    }
    assert!(problems[1]["what"].as_str().unwrap().contains(&bed.remote));
    let diverged = st["diverged"].as_array().unwrap();
    assert_eq!(diverged.len(), 1);
    assert_eq!(diverged[0]["kind"], "binlog_file");
    assert_eq!(diverged[0]["object"], victim.as_str());
    assert_eq!(diverged[0]["source"], uuid.as_str());
    assert_eq!(diverged[0]["present_in"], serde_json::json!([bed.remote]));
    assert_eq!(diverged[0]["missing_from"], serde_json::json!([bed.local]));
    assert_eq!(
        st["sources"][0]["repos"][0]["holes"][0]["kind"],
        "missing_files"
    );
    assert_eq!(
        st["sources"][0]["repos"][0]["windows"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // The same state as a page, as Chromium renders it.
    let page = bed.dir.join("status.html");
    let spool = bed.spool.to_str().unwrap();
    bed.run(&[
        "status",
        "--repo",
        &bed.local,
        "--repo",
        &bed.remote,
        "--spool",
        spool,
        "--html",
        page.to_str().unwrap(),
        "-q",
    ])
    .expect_code(UNHEALTHY);
    let dom = render(&page, &bed.dir, "--dump-dom");
    assert!(dom.contains("class=\"verdict unhealthy\""), "{dom}");
    assert_eq!(
        dom.matches("<circle class=\"snapshot\"").count(),
        2,
        "one per lane"
    );
    assert_eq!(dom.matches("<g class=\"lane\"").count(), 2);
    assert!(dom.matches("<rect class=\"hole\"").count() >= 1, "{dom}");
    // Locally the hole ends the window, and no snapshot starts another after it.
    assert_eq!(dom.matches("<rect class=\"window\"").count(), 2);
    assert!(dom.contains("point-in-time restore possible from"), "{dom}");
    assert!(dom.contains(&format!("{victim} is missing")), "{dom}");
    assert!(dom.contains("data-code=\"archive_hole\""));
    // The repository's name arrives as text, never as markup.
    assert!(dom.contains("local &lt;i&gt;&amp;'\""), "{dom}");
    assert!(!dom.contains("</i>"), "{dom}");
    let png = bed.dir.join("status.png");
    render(&page, &bed.dir, &format!("--screenshot={}", png.display()));
    let shot = std::fs::read(&png).unwrap();
    assert_eq!(&shot[1..4], b"PNG");
    let (w, h) = (
        u32::from_be_bytes(shot[16..20].try_into().unwrap()),
        u32::from_be_bytes(shot[20..24].try_into().unwrap()),
    );
    assert_eq!((w, h), (1200, 700));
    // `MYVAULT_STATUS_SCREENSHOT=docs/status.png` keeps the picture for the docs.
    if let Some(keep) = std::env::var_os("MYVAULT_STATUS_SCREENSHOT") {
        std::fs::copy(&png, keep).unwrap();
    }

    std::fs::rename(&aside, &segment_dir).unwrap();
    bed.status(&[]).expect_code(0);

    // A verify that failed, recorded in the repository it checked, until one passes again.
    let pack = first_pack(Path::new(&bed.local));
    let original = std::fs::read(&pack).unwrap();
    let mut damaged = original.clone();
    damaged[20] ^= 0xff;
    std::fs::write(&pack, &damaged).unwrap();
    bed.run(&["verify", "--repo", &bed.local]).expect_code(8);
    let run = bed.status(&[]);
    run.expect_code(UNHEALTHY);
    let problems = critical(&run.json());
    assert_eq!(codes(&problems), ["verify_failed"]);
    assert_eq!(problems[0]["repo"], bed.local.as_str());
    assert!(
        problems[0]["what"].as_str().unwrap().contains("packs/"),
        "{}",
        problems[0]
    );
    assert_eq!(run.json()["repos"][0]["last_verify"]["ok"], false);
    std::fs::write(&pack, &original).unwrap();
    bed.run(&["verify", "--repo", &bed.local]).expect_code(0);
    bed.status(&[]).expect_code(0);

    // A repository that cannot be read.
    let missing = bed.dir.join("no-such-repo");
    let run = bed.run(&[
        "status",
        "--repo",
        &bed.local,
        "--repo",
        missing.to_str().unwrap(),
        "--json",
    ]);
    run.expect_code(UNHEALTHY);
    let st = run.json();
    assert_eq!(codes(&critical(&st)), ["repo_unreadable"]);
    assert_eq!(st["repos"][1]["readable"], false);
    assert!(st["repos"][1]["error"].is_string());

    // A restore test is recorded with its snapshot; a failed one stays the verdict until
    // another passes, also after plain verifies that pass.
    let tested = crate::support::restore_test(&bed.local, &[]);
    tested.expect_code(0);
    let run = bed.status(&[]);
    run.expect_code(0);
    let last = &run.json()["repos"][0]["last_restore_test"];
    assert_eq!(last["ok"], true, "{last}");
    assert_eq!(last["restore_test"], true);
    assert_eq!(last["snapshot"], snapshot.as_str());
    bed.run(&[
        "verify",
        "--repo",
        &bed.local,
        "--restore-test",
        "--mysqld",
        "/nonexistent/mysqld",
    ])
    .expect_code(2);
    bed.run(&["verify", "--repo", &bed.local]).expect_code(0);
    let run = bed.status(&[]);
    run.expect_code(UNHEALTHY);
    let problems = critical(&run.json());
    assert_eq!(codes(&problems), ["restore_test_failed"]);
    assert_eq!(problems[0]["repo"], bed.local.as_str());
    assert!(
        problems[0]["what"].as_str().unwrap().contains("--mysqld"),
        "{}",
        problems[0]
    );
    assert_eq!(streamer.terminate(), 0, "{}", streamer.log_text());
}

/// Some pack file of a local repository.
fn first_pack(repo: &Path) -> PathBuf {
    let packs = repo.join("packs");
    for sub in std::fs::read_dir(&packs).unwrap() {
        for f in std::fs::read_dir(sub.unwrap().path()).unwrap() {
            let f = f.unwrap().path();
            if !f.file_name().unwrap().to_string_lossy().starts_with('.') {
                return f;
            }
        }
    }
    panic!("no pack in {}", packs.display());
}
