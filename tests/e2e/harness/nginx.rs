//! A real nginx (Debian's `nginx` package, `/usr/sbin/nginx`) for the differential tests: run in the
//! foreground with its prefix, pid file, error log and temp folders in a folder of its own, on
//! loopback ports, and stopped by its master's pid on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long nginx may take to open its ports.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The binary the tests run.
pub const NGINX: &str = "/usr/sbin/nginx";

/// A running nginx master (and its worker).
pub struct Nginx {
    child: Option<Child>,
    dir: PathBuf,
}

impl Nginx {
    /// The `http { … }` context every test nginx.conf has around `site` (an included file): nginx's
    /// defaults plus Debian's `mime.types` and `default_type`, temp folders and logs under `dir`.
    /// Nothing else of Debian's nginx.conf (its `gzip on`, TLS protocol list) applies, since what
    /// is compared is the site file alone.
    pub fn main_conf(dir: &Path, site: &Path) -> String {
        let d = dir.display();
        let user = if is_root() { "user root;\n" } else { "" };
        format!(
            "{user}worker_processes 1;\n\
             events {{ worker_connections 512; }}\n\
             http {{\n\
             \x20   include /etc/nginx/mime.types;\n\
             \x20   default_type application/octet-stream;\n\
             \x20   access_log {d}/access.log;\n\
             \x20   client_body_temp_path {d}/tmp/body;\n\
             \x20   proxy_temp_path {d}/tmp/proxy;\n\
             \x20   fastcgi_temp_path {d}/tmp/fastcgi;\n\
             \x20   uwsgi_temp_path {d}/tmp/uwsgi;\n\
             \x20   scgi_temp_path {d}/tmp/scgi;\n\
             \x20   include {site};\n\
             }}\n",
            site = site.display()
        )
    }

    /// `nginx -t` on `conf`: `Err` with nginx's own words when it refuses the file.
    pub fn test_config(dir: &Path, conf: &Path) -> Result<(), String> {
        std::fs::create_dir_all(dir.join("tmp")).map_err(|err| err.to_string())?;
        std::fs::create_dir_all(dir.join("logs")).map_err(|err| err.to_string())?;
        let out = Command::new(NGINX)
            .args(prefix_args(dir, conf))
            .arg("-t")
            .stdin(Stdio::null())
            .output()
            .map_err(|err| format!("run {NGINX} (apt-get install nginx): {err}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Starts nginx on `conf` (written by the caller, e.g. with [`Nginx::main_conf`]) in `dir`, and
    /// waits until every port in `ports` accepts TCP connections on 127.0.0.1.
    pub async fn start(dir: &Path, conf: &Path, ports: &[u16]) -> Self {
        std::fs::create_dir_all(dir.join("tmp")).expect("create nginx tmp");
        std::fs::create_dir_all(dir.join("logs")).expect("create nginx logs");
        let child = Command::new(NGINX)
            .args(prefix_args(dir, conf))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("start {NGINX} (apt-get install nginx): {err}"));
        let mut nginx = Self {
            child: Some(child),
            dir: dir.to_owned(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        for port in ports {
            while tokio::net::TcpStream::connect(("127.0.0.1", *port))
                .await
                .is_err()
            {
                if let Some(child) = nginx.child.as_mut() {
                    if let Ok(Some(status)) = child.try_wait() {
                        panic!("nginx exited at start ({status}):\n{}", nginx.log());
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "nginx did not open port {port} within {START_TIMEOUT:?}:\n{}",
                    nginx.log()
                );
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        nginx
    }

    /// nginx's error log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// Stops nginx: SIGTERM to the master's pid (fast shutdown, which ends its worker), SIGKILL
    /// if it is still there after 5 s.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            super::process::stop_gracefully(child, "-TERM", Duration::from_secs(5));
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- nginx error log -----\n{}", self.log());
        }
        self.stop();
    }
}

/// `-p <dir> -e <dir>/error.log -c <conf> -g 'daemon off; pid …; error_log …;'`: nothing of the
/// system's /var/log, /run or /var/lib/nginx is touched.
fn prefix_args(dir: &Path, conf: &Path) -> Vec<String> {
    let log = dir.join("error.log").display().to_string();
    vec![
        "-p".to_owned(),
        dir.display().to_string(),
        "-e".to_owned(),
        log.clone(),
        "-c".to_owned(),
        conf.display().to_string(),
        "-g".to_owned(),
        format!(
            "daemon off; pid {}; error_log {log} info;",
            dir.join("nginx.pid").display()
        ),
    ]
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}
