//! Running `certd run` for a test: a configuration with HTTPS, routes, limits and renewal settings
//! ([`RunConfig`]), and the daemon process itself ([`Daemon`]), started from a [`Certd`] working folder,
//! signalled by pid, and killed (by its own pid) when the guard is dropped.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::certd::{toml_str, Certd, CertdConfig};
use super::pebble::{free_port, Pebble};

/// How long the daemon gets to open its HTTPS port.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a route sends its requests.
#[derive(Debug, Clone)]
pub enum Target {
    /// `proxy = "<url>"`.
    Proxy(String),
    /// `root = "<dir>"` (relative to the config folder).
    Root(String),
}

/// One `[[site]]` of a [`RunConfig`].
#[derive(Debug, Clone)]
pub struct Site {
    /// `names`.
    pub names: Vec<String>,
    /// `[[site.route]]`s: path prefix and target.
    pub routes: Vec<(String, Target)>,
    /// `[site.error_pages]`: status and file (relative to the config folder).
    pub error_pages: Vec<(u16, String)>,
    /// More keys of a `[[site.route]]`: its path, the key, and the value as TOML.
    pub route_options: Vec<(String, String, String)>,
    /// More keys of the `[[site]]` itself: the key, and the value as TOML.
    pub site_options: Vec<(String, String)>,
}

impl Site {
    /// A site with `names` and no routes yet.
    pub fn new(names: &[&str]) -> Self {
        Self {
            names: names.iter().map(|name| (*name).to_owned()).collect(),
            routes: Vec::new(),
            error_pages: Vec::new(),
            route_options: Vec::new(),
            site_options: Vec::new(),
        }
    }

    /// Sets `key = value` (`value` as TOML) on the `[[site]]` itself.
    pub fn site_option(mut self, key: &str, value: &str) -> Self {
        self.site_options.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Sets `key = value` (`value` as TOML) on the route for `path`, added before or after.
    pub fn route_option(mut self, path: &str, key: &str, value: &str) -> Self {
        self.route_options
            .push((path.to_owned(), key.to_owned(), value.to_owned()));
        self
    }

    /// Adds a route proxying `path` to `url`.
    pub fn proxy(mut self, path: &str, url: &str) -> Self {
        self.routes
            .push((path.to_owned(), Target::Proxy(url.to_owned())));
        self
    }

    /// Adds a route serving `path` from files under `root`.
    pub fn root(mut self, path: &str, root: &str) -> Self {
        self.routes
            .push((path.to_owned(), Target::Root(root.to_owned())));
        self
    }

    /// Adds an error page for `status`.
    pub fn error_page(mut self, status: u16, file: &str) -> Self {
        self.error_pages.push((status, file.to_owned()));
        self
    }
}

/// A `certd.toml` for `certd run`: the `[acme]` and `[http]` of [`CertdConfig::for_pebble`], plus an
/// `[https]` listener on a free port, `[limits]`, `[renewal]` and sites with routes.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// `[acme]` and `[http]` (its `sites` are ignored; see [`RunConfig::sites`]).
    pub base: CertdConfig,
    /// `[https] listen = ["127.0.0.1:<https_port>"]`.
    pub https_port: u16,
    /// `[limits]` entries as written, e.g. `("grace_period", "\"10s\"")`.
    pub limits: Vec<(String, String)>,
    /// `[renewal] remaining_fraction`.
    pub remaining_fraction: Option<f64>,
    /// The sites.
    pub sites: Vec<Site>,
    /// More `[https]` entries as written, e.g. `("trusted_proxies", "[\"127.0.0.1\"]")`.
    pub https: Vec<(String, String)>,
    /// More top-level tables as written (e.g. `[[upstream]]`), appended after the sites.
    pub tables: Vec<String>,
}

impl RunConfig {
    /// A configuration ordering from `pebble`, answering HTTP-01 where Pebble looks, serving HTTPS on
    /// a free port, with `sites`.
    pub fn for_pebble(pebble: &Pebble, sites: Vec<Site>) -> Self {
        let mut base = CertdConfig::for_pebble(pebble, &[]);
        base.sites.clear();
        Self {
            base,
            https_port: free_port(),
            limits: Vec::new(),
            remaining_fraction: None,
            sites,
            https: Vec::new(),
            tables: Vec::new(),
        }
    }

    /// Appends `toml` (whole top-level tables, e.g. an `[[upstream]]`) to the file.
    pub fn table(mut self, toml: &str) -> Self {
        self.tables.push(toml.to_owned());
        self
    }

    /// Sets `[https] key = value` (`value` as TOML, e.g. `"true"`).
    pub fn https(mut self, key: &str, value: &str) -> Self {
        self.https.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Sets `[limits] key = value` (`value` as TOML, e.g. `"\"2s\""`).
    pub fn limit(mut self, key: &str, value: &str) -> Self {
        self.limits.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The HTTPS listener's address.
    pub fn https_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.https_port))
    }

    /// The TOML text.
    pub fn to_toml(&self) -> String {
        let mut toml = self.base.to_toml();
        toml += &format!(
            "\n[https]\nlisten = [{}]\n",
            toml_str(&self.https_addr().to_string())
        );
        for (key, value) in &self.https {
            toml += &format!("{key} = {value}\n");
        }
        if !self.limits.is_empty() {
            toml += "\n[limits]\n";
            for (key, value) in &self.limits {
                toml += &format!("{key} = {value}\n");
            }
        }
        if let Some(fraction) = self.remaining_fraction {
            toml += &format!("\n[renewal]\nremaining_fraction = {fraction}\n");
        }
        for site in &self.sites {
            let names: Vec<String> = site.names.iter().map(|name| toml_str(name)).collect();
            toml += &format!("\n[[site]]\nnames = [{}]\n", names.join(", "));
            for (key, value) in &site.site_options {
                toml += &format!("{key} = {value}\n");
            }
            for (path, target) in &site.routes {
                toml += &format!("\n  [[site.route]]\n  path = {}\n", toml_str(path));
                match target {
                    Target::Proxy(url) => toml += &format!("  proxy = {}\n", toml_str(url)),
                    Target::Root(root) => toml += &format!("  root = {}\n", toml_str(root)),
                }
                for (_, key, value) in site.route_options.iter().filter(|(at, ..)| at == path) {
                    toml += &format!("  {key} = {value}\n");
                }
            }
            if !site.error_pages.is_empty() {
                toml += "\n  [site.error_pages]\n";
                for (status, file) in &site.error_pages {
                    toml += &format!("  {status} = {}\n", toml_str(file));
                }
            }
        }
        for table in &self.tables {
            toml += "\n";
            toml += table;
            toml += "\n";
        }
        toml
    }

    /// Writes this configuration as `certd`'s `certd.toml`.
    pub fn write(&self, certd: &Certd) {
        certd.write_config_text(&self.to_toml());
    }
}

/// A running `certd run`. Killed by its own pid on drop; its log is printed when a test panics.
pub struct Daemon {
    child: Child,
    log: PathBuf,
    exited: Option<ExitStatus>,
    _log_dir: TempDir,
}

impl Daemon {
    /// Polls `state/certs/<site>/record.json` every 100 ms until `accept` takes it (the daemon
    /// writes it as it decides), failing after `wait` with `what` was awaited and the daemon's log.
    pub async fn wait_for_record(
        &self,
        certd: &Certd,
        site: &str,
        wait: Duration,
        what: &str,
        accept: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + wait;
        let path = certd.site_dir(site).join("record.json");
        loop {
            let record = std::fs::read_to_string(&path)
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
            if let Some(record) = record.filter(|record| accept(record)) {
                return record;
            }
            assert!(
                Instant::now() < deadline,
                "{site}'s record.json: no {what} within {wait:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts `certd run --config <certd.toml>` in `certd`'s folder and waits (bounded by
    /// [`START_TIMEOUT`]) until `https` accepts TCP connections.
    pub async fn start(certd: &Certd, https: SocketAddr) -> Self {
        let log_dir = tempfile::Builder::new()
            .prefix("certd-daemon-")
            .tempdir()
            .expect("tempdir");
        let log = log_dir.path().join("daemon.log");
        let out = File::create(&log).expect("create daemon log");
        let err = out.try_clone().expect("clone log handle");
        let child = Command::new(env!("CARGO_BIN_EXE_certd"))
            .arg("run")
            .arg("--config")
            .arg(certd.config_path())
            .current_dir(certd.dir())
            .env("CERTD_LOG", "info,certd=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start certd run");
        let mut daemon = Self {
            child,
            log,
            exited: None,
            _log_dir: log_dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while tokio::net::TcpStream::connect(https).await.is_err() {
            if let Some(status) = daemon.try_wait() {
                panic!(
                    "certd run exited before serving HTTPS ({status}):\n{}",
                    daemon.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "certd run did not open {https} within {START_TIMEOUT:?}:\n{}",
                daemon.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        daemon
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `SIG<name>` (`"HUP"`, `"TERM"`, …) to the daemon's pid.
    pub fn signal(&self, name: &str) {
        assert!(self.exited.is_none(), "certd run already exited");
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// The exit status if the daemon has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("try_wait");
        }
        self.exited
    }

    /// Polls until the daemon exits; `None` if it is still running after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Everything the daemon printed so far (stdout and stderr, including the tracing log).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls the log until it contains `needle`; panics after `timeout`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "certd run did not log {needle:?} within {timeout:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- certd run (pid {}) log -----\n{}",
                self.pid(),
                self.log()
            );
        }
        // `Child::kill` signals this child's own pid only (and nothing once it has been reaped).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
