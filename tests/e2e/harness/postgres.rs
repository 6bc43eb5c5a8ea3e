//! A real PostgreSQL (Debian's `postgresql` package, `/usr/lib/postgresql/<major>/bin`) for the fleet
//! storage tests: `initdb` into a temp folder, the server in the foreground on a free 127.0.0.1 port
//! (its unix socket in the same folder, so no system directory is touched), password (SCRAM) login
//! for TCP, stopped by its pid on drop.
//!
//! PostgreSQL refuses to run as root; as root (CI), the server and its tools run as the package's
//! `postgres` user through `setpriv`, which execs in place, so the child's pid is the server's.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::free_port;

/// How long the server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The superuser the tests (and certd) log in as.
pub const PG_USER: &str = "certd";
/// Its password (a test cluster on loopback only).
pub const PG_PASSWORD: &str = "certd-test-password";
/// The database created for certd.
pub const PG_DATABASE: &str = "certd";

/// A running PostgreSQL server with one database, [`PG_DATABASE`].
pub struct Postgres {
    child: Option<Child>,
    dir: TempDir,
    port: u16,
    bin: PathBuf,
}

impl Postgres {
    /// Creates a cluster in a new temp folder, starts it on a free loopback port, waits until it
    /// accepts connections and creates [`PG_DATABASE`].
    pub async fn start() -> Self {
        Self::start_with(false).await
    }

    /// Like [`Self::start`], with TLS on (`ssl = on`): the server's certificate for
    /// `127.0.0.1`/`localhost` is signed by a throwaway CA whose PEM is [`Self::tls_ca_path`].
    pub async fn start_tls() -> Self {
        Self::start_with(true).await
    }

    /// The CA of the server's certificate (a server started by [`Self::start_tls`]).
    pub fn tls_ca_path(&self) -> PathBuf {
        self.dir.path().join("tls/ca.pem")
    }

    async fn start_with(tls: bool) -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("certd-postgres-")
            .tempdir()
            .expect("tempdir");
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, format!("{PG_PASSWORD}\n")).expect("write pwfile");
        if is_root() {
            chown_to_postgres(dir.path());
            chown_to_postgres(&pwfile);
        }
        let init = as_server_user(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                PG_USER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["-E", "UTF8", "--no-sync"])
            .output()
            .expect("run initdb");
        assert!(init.status.success(), "initdb failed:\n{}", text(&init));

        let port = free_port();
        let log = std::fs::File::create(dir.path().join("postgres.log")).expect("create log");
        if is_root() {
            chown_to_postgres(&dir.path().join("postgres.log"));
        }
        let child = as_server_user(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.path().display()))
            // A throwaway cluster: durability costs time and buys nothing here.
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(tls_args(dir.path(), tls))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        let mut postgres = Self {
            child: Some(child),
            dir,
            port,
            bin,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = postgres.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("postgres exited at start ({status}):\n{}", postgres.log());
                }
            }
            let ready = Command::new(postgres.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
                .status()
                .is_ok_and(|status| status.success());
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not accept connections within {START_TIMEOUT:?}:\n{}",
                postgres.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        postgres.psql_in("postgres", &format!("CREATE DATABASE {PG_DATABASE}"));
        postgres
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://certd@127.0.0.1:<port>/certd`, without the password (certd reads it from a file).
    pub fn url(&self) -> String {
        format!("postgres://{PG_USER}@127.0.0.1:{}/{PG_DATABASE}", self.port)
    }

    /// Like [`Self::url`], for `database`.
    pub fn url_of(&self, database: &str) -> String {
        format!("postgres://{PG_USER}@127.0.0.1:{}/{database}", self.port)
    }

    /// The password of [`PG_USER`].
    pub fn password(&self) -> &'static str {
        PG_PASSWORD
    }

    /// Runs `sql` in [`PG_DATABASE`] over TCP with the password (as a client would) and returns
    /// psql's unaligned, tuples-only output; panics when psql fails.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in(PG_DATABASE, sql)
    }

    /// Like [`Postgres::psql`], but a failing statement is `Err` with psql's message, which names
    /// the SQLSTATE (`ERROR:  CDF01: ...`).
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        let output = self
            .client(&self.bin.join("psql"), PG_DATABASE)
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-v",
                "VERBOSITY=verbose",
            ])
            .args(["-c", sql])
            .output()
            .expect("run psql");
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(text(&output))
        }
    }

    /// Like [`Self::psql`], in `database`.
    pub fn psql_in(&self, database: &str, sql: &str) -> String {
        let output = self
            .client(&self.bin.join("psql"), database)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            output.status.success(),
            "psql {sql:?} failed:\n{}",
            text(&output)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// A plain-text `pg_dump` of [`PG_DATABASE`] (schema and every row).
    pub fn dump(&self) -> String {
        let output = self
            .client(&self.bin.join("pg_dump"), PG_DATABASE)
            .output()
            .expect("run pg_dump");
        assert!(
            output.status.success(),
            "pg_dump failed:\n{}",
            text(&output)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// A client tool logging in over TCP with the password.
    fn client(&self, tool: &Path, database: &str) -> Command {
        let mut command = Command::new(tool);
        command
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", PG_USER, "-d", database])
            .env("PGPASSWORD", PG_PASSWORD)
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null());
        command
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// Stops the server (SIGINT to its pid: PostgreSQL's fast shutdown; SIGKILL if it is still
    /// there after 10 s) and waits for it.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            super::process::stop_gracefully(child, "-INT", Duration::from_secs(10));
        }
    }

    /// Starts a server stopped by [`Self::stop`] again, on the same data and port (an outage that
    /// ends), and waits until it accepts connections. (A TLS server gets a new certificate.)
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "postgres is still running");
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("postgres.log"))
            .expect("open log");
        let tls = self.dir.path().join("tls/ca.pem").exists();
        let child = as_server_user(&self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(tls_args(self.dir.path(), tls))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres again");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .is_ok_and(|status| status.success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not accept connections again within {START_TIMEOUT:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- postgres log -----\n{}", self.log());
        }
        self.stop();
    }
}

/// `/usr/lib/postgresql/<major>/bin` of the newest installed major version.
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "PostgreSQL is not installed (apt-get install postgresql; scripts/test.sh installs it)"
        )
    })
}

/// `tool` run as this user, or as `postgres` when this is root (PostgreSQL refuses root).
fn as_server_user(tool: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("setpriv");
        command
            .args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ])
            .arg(tool);
        command
    } else {
        Command::new(tool)
    }
}

/// The server's TLS settings: none, or a certificate from a new [`super::TestPki`] in `<dir>/tls`
/// (its key private to the server user, as PostgreSQL requires).
fn tls_args(dir: &Path, tls: bool) -> Vec<String> {
    if !tls {
        return Vec::new();
    }
    let folder = dir.join("tls");
    std::fs::create_dir_all(&folder).expect("create tls folder");
    let pki = super::TestPki::generate(&folder);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pki.key_path, std::fs::Permissions::from_mode(0o600))
        .expect("chmod key");
    if is_root() {
        chown_to_postgres(&folder);
        chown_to_postgres(&pki.key_path);
        chown_to_postgres(&pki.cert_path);
    }
    vec![
        "-c".into(),
        "ssl=on".into(),
        "-c".into(),
        format!("ssl_cert_file={}", pki.cert_path.display()),
        "-c".into(),
        format!("ssl_key_file={}", pki.key_path.display()),
    ]
}

fn chown_to_postgres(path: &Path) {
    let status = Command::new("chown")
        .arg("postgres:postgres")
        .arg(path)
        .status()
        .expect("run chown");
    assert!(status.success(), "chown postgres {}", path.display());
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The harness's own check: the server takes password logins on loopback only, stores and dumps
/// rows, refuses a wrong password, and is gone (port closed) once stopped by its pid.
#[tokio::test]
async fn postgres_answers_on_loopback_with_a_password_and_stops_by_pid() {
    let mut postgres = Postgres::start().await;
    postgres.psql("CREATE TABLE probe (note text); INSERT INTO probe VALUES ('visible-row')");
    assert_eq!(
        postgres.psql("SELECT note FROM probe").trim(),
        "visible-row"
    );
    assert!(postgres.dump().contains("visible-row"));
    assert!(postgres.url().starts_with("postgres://certd@127.0.0.1:"));

    let wrong = Command::new(postgres.bin.join("psql"))
        .args(["-h", "127.0.0.1", "-p", &postgres.port().to_string()])
        .args(["-U", PG_USER, "-d", PG_DATABASE, "-c", "SELECT 1"])
        .env("PGPASSWORD", "not-the-password")
        .stdin(Stdio::null())
        .output()
        .expect("run psql");
    assert!(!wrong.status.success(), "a wrong password was accepted");

    let port = postgres.port();
    postgres.stop();
    assert!(!postgres.is_running());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still accepts after stop"
    );
}
