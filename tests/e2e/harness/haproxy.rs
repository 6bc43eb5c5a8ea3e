//! A real HAProxy (Debian's `haproxy` package) for the fleet's balancer tests: the given config in a
//! temp folder, run in the foreground (`-db`, its log on stdout into a file), checked with `-c`
//! first, and stopped by its pid on drop.

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long HAProxy may take to open its frontend.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running HAProxy.
pub struct Haproxy {
    child: Option<Child>,
    dir: TempDir,
}

impl Haproxy {
    /// Writes `config` as haproxy.cfg, checks it (`haproxy -c`), starts HAProxy on it and waits
    /// until `frontend` accepts TCP connections.
    pub async fn start(config: &str, frontend: SocketAddr) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("certd-haproxy-")
            .tempdir()
            .expect("tempdir");
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).expect("write haproxy.cfg");
        let checked = Command::new("haproxy")
            .arg("-c")
            .arg("-f")
            .arg(&path)
            .output()
            .expect("run haproxy -c (Debian's haproxy package, see scripts/test.sh)");
        assert!(
            checked.status.success(),
            "haproxy -c refused the config:\n{}{}\n{config}",
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        );
        let log = File::create(dir.path().join("haproxy.log")).expect("create log");
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("start haproxy");
        let mut haproxy = Self {
            child: Some(child),
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while tokio::net::TcpStream::connect(frontend).await.is_err() {
            if let Some(child) = haproxy.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("haproxy exited at start ({status}):\n{}", haproxy.log());
                }
            }
            assert!(
                Instant::now() < deadline,
                "haproxy did not open {frontend} within {START_TIMEOUT:?}:\n{}",
                haproxy.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        haproxy
    }

    /// HAProxy's log (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("haproxy.log")
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- haproxy log -----\n{}", self.log());
        }
        if let Some(child) = self.child.take() {
            super::process::stop_gracefully(child, "-TERM", Duration::from_secs(5));
        }
    }
}
