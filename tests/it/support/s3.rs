//! A real S3-protocol server (s3s-fs) on a fresh directory, with one fresh bucket.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Scratch, testbed};

pub const ACCESS_KEY: &str = "myvault-test";
pub const SECRET_KEY: &str = "myvault-test-secret-key";

pub struct S3Server {
    child: Child,
    pub dir: Scratch,
    pub port: u16,
    pub bucket: String,
}

fn spawn(binary: &std::path::Path, port: u16, root: &std::path::Path) -> Child {
    let mut cmd = Command::new(binary);
    cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
        .arg(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl only, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()))
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "s3s-fs did not listen on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl S3Server {
    pub fn start() -> S3Server {
        let binary = testbed().path("MYVAULT_S3S_FS");
        let dir = Scratch::new("s3");
        let bucket = "myvault-test".to_string();
        // s3s-fs keeps one directory per bucket.
        std::fs::create_dir_all(dir.join(&bucket)).expect("create bucket dir");
        let port = myvault::server::free_port().expect("free port");
        let child = spawn(&binary, port, &dir.path);
        wait_listening(port);
        S3Server {
            child,
            dir,
            port,
            bucket,
        }
    }

    /// Starts the server again on the same port and data, after [`S3Server::kill`].
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn(&testbed().path("MYVAULT_S3S_FS"), self.port, &self.dir.path);
        wait_listening(self.port);
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `s3://bucket/prefix`
    pub fn repo(&self, prefix: &str) -> String {
        format!("s3://{}/{}", self.bucket, prefix)
    }

    /// The environment myvault needs to reach this server.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_ENDPOINT_URL".into(), self.endpoint()),
        ]
    }

    /// Stops the server at once, as a crash or network loss would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}
