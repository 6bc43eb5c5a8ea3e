//! A real php-fpm (Debian's `php-fpm` package) for FastCGI route tests: its own config, pid file,
//! error log and unix socket in a temp folder, run in the foreground, and stopped by its pid on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long php-fpm may take to open its socket.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running php-fpm master (and its workers) listening on [`PhpFpm::socket`].
pub struct PhpFpm {
    child: Option<Child>,
    dir: TempDir,
}

impl PhpFpm {
    /// Starts php-fpm with one static pool of two workers on a unix socket in a new temp folder,
    /// and waits until the socket accepts connections.
    pub async fn start() -> Self {
        let binary = binary();
        let dir = tempfile::Builder::new()
            .prefix("certd-php-fpm-")
            .tempdir()
            .expect("tempdir");
        let path = dir.path();
        let socket = path.join("php-fpm.sock");
        // As root, php-fpm needs `-R` and a pool user; as anyone else it runs as that user.
        let root = is_root();
        let user = if root {
            "user = root\ngroup = root\n"
        } else {
            ""
        };
        let config = format!(
            "[global]\n\
             pid = {pid}\n\
             error_log = {log}\n\
             daemonize = no\n\
             \n\
             [certd-test]\n\
             {user}\
             listen = {socket}\n\
             listen.mode = 0666\n\
             pm = static\n\
             pm.max_children = 2\n\
             catch_workers_output = yes\n\
             php_admin_flag[log_errors] = on\n\
             php_admin_flag[display_errors] = off\n",
            pid = path.join("php-fpm.pid").display(),
            log = path.join("php-fpm.log").display(),
            socket = socket.display(),
        );
        let config_path = path.join("php-fpm.conf");
        std::fs::write(&config_path, config).expect("write php-fpm.conf");
        let mut command = Command::new(&binary);
        if root {
            command.arg("-R");
        }
        let child = command
            .arg("-F")
            .arg("-y")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("start {}: {err}", binary.display()));
        let mut php = Self {
            child: Some(child),
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while tokio::net::UnixStream::connect(&socket).await.is_err() {
            if let Some(child) = php.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("php-fpm exited at start ({status}):\n{}", php.log());
                }
            }
            assert!(
                Instant::now() < deadline,
                "php-fpm did not open its socket within {START_TIMEOUT:?}:\n{}",
                php.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        php
    }

    /// The pool's unix socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("php-fpm.sock")
    }

    /// `unix:<socket>`, as a route's `fastcgi` value.
    pub fn address(&self) -> String {
        format!("unix:{}", self.socket().display())
    }

    /// php-fpm's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("php-fpm.log")).unwrap_or_default()
    }

    /// Stops php-fpm (SIGTERM to the master's pid, which ends its workers; SIGKILL if it is still
    /// there after 5 s) and waits for it.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            super::process::stop_gracefully(child, "-TERM", Duration::from_secs(5));
        }
    }
}

impl Drop for PhpFpm {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- php-fpm log -----\n{}", self.log());
        }
        self.stop();
    }
}

/// The php-fpm binary: `php-fpm` or Debian's versioned `php-fpm8.2` on PATH or in /usr/sbin.
fn binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.push(PathBuf::from("/usr/sbin"));
    for dir in &dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| is_php_fpm(path))
            .collect();
        found.sort();
        if let Some(binary) = found.pop() {
            return binary;
        }
    }
    panic!("php-fpm is not installed (apt-get install php-fpm; scripts/test.sh installs it)");
}

fn is_php_fpm(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
        return false;
    };
    let version = name.strip_prefix("php-fpm");
    version.is_some_and(|version| version.chars().all(|c| c.is_ascii_digit() || c == '.'))
        && path.is_file()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}
