//! Running the real `certd` binary: a working folder with a `certd.toml`, bounded runs that capture the
//! exit code and output, and readers for what it printed and stored.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::pebble::Pebble;

/// A certd run that takes longer than this fails the test instead of hanging CI.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// What goes into a generated `certd.toml`.
#[derive(Debug, Clone)]
pub struct CertdConfig {
    /// `[acme] directory`.
    pub directory_url: String,
    /// `[acme] ca_roots`.
    pub ca_roots: Option<PathBuf>,
    /// `[acme] email`.
    pub email: Option<String>,
    /// `[http] listen`.
    pub listen: Vec<SocketAddr>,
    /// One `[[site]]` per entry, each with its names.
    pub sites: Vec<Vec<String>>,
    /// `[preflight] resolver`: challtestsrv, which answers 127.0.0.1 for every name as it does for
    /// Pebble, so certd's preflight sees what the CA sees.
    pub preflight_resolver: Option<SocketAddr>,
}

impl CertdConfig {
    /// A configuration that orders from `pebble` and answers HTTP-01 where Pebble looks.
    pub fn for_pebble(pebble: &Pebble, sites: &[&[&str]]) -> Self {
        Self {
            directory_url: pebble.directory_url(),
            ca_roots: Some(pebble.ca_roots_path().to_path_buf()),
            email: Some("ops@certd-e2e.example.com".to_owned()),
            listen: vec![SocketAddr::from(([127, 0, 0, 1], pebble.http_port))],
            sites: sites
                .iter()
                .map(|names| names.iter().map(|name| (*name).to_owned()).collect())
                .collect(),
            preflight_resolver: Some(pebble.dns_addr()),
        }
    }

    /// The TOML text.
    pub fn to_toml(&self) -> String {
        let mut toml = String::from("state_dir = \"state\"\n\n[acme]\n");
        toml += &format!("directory = {}\n", toml_str(&self.directory_url));
        if let Some(email) = &self.email {
            toml += &format!("email = {}\n", toml_str(email));
        }
        toml += "agree_tos = true\n";
        if let Some(ca_roots) = &self.ca_roots {
            toml += &format!("ca_roots = {}\n", toml_str(&ca_roots.display().to_string()));
        }
        toml += "key_type = \"ecdsa-p256\"\n\n[http]\n";
        let listen: Vec<String> = self
            .listen
            .iter()
            .map(|addr| toml_str(&addr.to_string()))
            .collect();
        toml += &format!("listen = [{}]\n", listen.join(", "));
        if let Some(resolver) = self.preflight_resolver {
            toml += &format!(
                "\n[preflight]\nresolver = {}\n",
                toml_str(&resolver.to_string())
            );
        }
        for names in &self.sites {
            let names: Vec<String> = names.iter().map(|name| toml_str(name)).collect();
            toml += &format!("\n[[site]]\nnames = [{}]\n", names.join(", "));
        }
        toml
    }
}

/// `s` as a TOML basic string.
pub fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// One finished certd run.
#[derive(Debug)]
pub struct Run {
    /// The arguments it was given.
    pub args: Vec<String>,
    /// The exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error (including the tracing log).
    pub stderr: String,
    /// How long it took.
    pub elapsed: Duration,
}

impl Run {
    /// Panics, showing the whole run, unless it exited with `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "unexpected exit code\n{self}");
        self
    }

    /// The stderr lines that are not tracing log lines (what certd tells the operator).
    pub fn stderr_messages(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|line| !is_log_line(line))
            .collect()
    }
}

/// Whether `line` looks like a tracing-subscriber fmt line (`<timestamp>  LEVEL target: ...`).
fn is_log_line(line: &str) -> bool {
    let stripped = strip_ansi(line);
    let mut words = stripped.split_whitespace();
    let first = words.next().unwrap_or_default();
    let second = words.next().unwrap_or_default();
    let level = |w: &str| matches!(w, "TRACE" | "DEBUG" | "INFO" | "WARN" | "ERROR");
    level(first) || (OffsetDateTime::parse(first, &Rfc3339).is_ok() && level(second))
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "certd {} -> {:?} after {:?}",
            self.args.join(" "),
            self.code,
            self.elapsed
        )?;
        writeln!(f, "----- stdout -----\n{}", self.stdout)?;
        write!(f, "----- stderr -----\n{}", self.stderr)
    }
}

/// What `certd issue` said about one site on stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssueOutcome {
    /// `<site>: issued serial <hex> (expires <rfc3339>)`.
    Issued {
        /// The serial, normalized (see [`super::normalize_serial`]).
        serial: String,
        /// When the new certificate expires.
        expires: OffsetDateTime,
    },
    /// `<site>: skipped, not due until <rfc3339>`.
    Skipped {
        /// When renewal becomes due.
        until: OffsetDateTime,
    },
}

/// Parses `certd issue`'s stdout into one outcome per site; panics on a line it does not recognise.
pub fn parse_issue_stdout(stdout: &str) -> BTreeMap<String, IssueOutcome> {
    let mut outcomes = BTreeMap::new();
    for line in stdout.lines().filter(|line| !line.trim().is_empty()) {
        let (site, rest) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("unexpected stdout line: {line:?}"));
        let outcome = if let Some(rest) = rest.strip_prefix("issued serial ") {
            let (serial, expires) = rest
                .split_once(" (expires ")
                .and_then(|(serial, rest)| Some((serial, rest.strip_suffix(')')?)))
                .unwrap_or_else(|| panic!("unexpected issued line: {line:?}"));
            IssueOutcome::Issued {
                serial: super::normalize_serial(serial),
                expires: parse_time(expires),
            }
        } else if let Some(until) = rest.strip_prefix("skipped, not due until ") {
            IssueOutcome::Skipped {
                until: parse_time(until),
            }
        } else {
            panic!("unexpected stdout line: {line:?}");
        };
        assert!(
            outcomes.insert(site.to_owned(), outcome).is_none(),
            "site {site} reported twice:\n{stdout}"
        );
    }
    outcomes
}

/// Parses an RFC 3339 timestamp, panicking with the text if it is not one.
pub fn parse_time(text: &str) -> OffsetDateTime {
    OffsetDateTime::parse(text.trim(), &Rfc3339)
        .unwrap_or_else(|err| panic!("not RFC 3339: {text:?}: {err}"))
}

/// The RFC 3339 field `field` of `record` (a site's `record.json`), panicking with the record if it
/// has none.
#[track_caller]
pub fn record_time(record: &serde_json::Value, field: &str) -> OffsetDateTime {
    parse_time(
        record[field]
            .as_str()
            .unwrap_or_else(|| panic!("record.json has no {field}: {record:#}")),
    )
}

/// Asserts `at` is `offset` after some instant in `[from, to]`, give or take two seconds (RFC 3339
/// in whole seconds truncates, and the daemon acts between the two instants).
#[track_caller]
pub fn assert_offset(
    what: &str,
    at: OffsetDateTime,
    from: OffsetDateTime,
    to: OffsetDateTime,
    offset: time::Duration,
) {
    let slack = time::Duration::seconds(2);
    assert!(
        at >= from + offset - slack && at <= to + offset + slack,
        "{what} is {at}, expected between {} and {}",
        from + offset,
        to + offset
    );
}

/// A certd working folder: `certd.toml` and (relative to it) `state/`.
pub struct Certd {
    dir: TempDir,
}

impl Default for Certd {
    fn default() -> Self {
        Self::new()
    }
}

impl Certd {
    /// An empty working folder with no config yet.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("certd-e2e-")
            .tempdir()
            .expect("tempdir");
        Self { dir }
    }

    /// A working folder whose `certd.toml` is `config`.
    pub fn with_config(config: &CertdConfig) -> Self {
        let certd = Self::new();
        certd.write_config(config);
        certd
    }

    /// (Re)writes `certd.toml` from `config`.
    pub fn write_config(&self, config: &CertdConfig) {
        self.write_config_text(&config.to_toml());
    }

    /// (Re)writes `certd.toml` with `text` as is.
    pub fn write_config_text(&self, text: &str) {
        std::fs::write(self.config_path(), text).expect("write certd.toml");
    }

    /// The working folder.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `certd.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("certd.toml")
    }

    /// `state/`.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `state/certs/<site>/`.
    pub fn site_dir(&self, site: &str) -> PathBuf {
        self.state_dir().join("certs").join(site)
    }

    /// Reads `state/certs/<site>/<file>` (following the `live` links).
    pub fn read_site_file(&self, site: &str, file: &str) -> String {
        let path = self.site_dir(site).join(file);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
    }

    /// The folders under `state/certs/<site>/versions/`, sorted by name.
    pub fn versions(&self, site: &str) -> Vec<PathBuf> {
        let dir = self.site_dir(site).join("versions");
        let mut versions: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|err| panic!("read {}: {err}", dir.display()))
            .map(|entry| entry.expect("dir entry").path())
            .collect();
        versions.sort();
        versions
    }

    /// Every `state/accounts/*/account.json`.
    pub fn account_files(&self) -> Vec<PathBuf> {
        let dir = self.state_dir().join("accounts");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .map(|entry| entry.expect("dir entry").path().join("account.json"))
            .filter(|path| path.is_file())
            .collect();
        files.sort();
        files
    }

    /// Runs `certd <subcommand> --config <certd.toml> <args...>`.
    pub async fn run(&self, subcommand: &str, args: &[&str]) -> Run {
        let mut all = vec![subcommand.to_owned(), "--config".to_owned()];
        all.push(self.config_path().display().to_string());
        all.extend(args.iter().map(|arg| (*arg).to_owned()));
        self.run_raw(all).await
    }

    /// Runs the certd binary with exactly `args`, from the working folder, bounded by [`RUN_TIMEOUT`].
    pub async fn run_raw(&self, args: Vec<String>) -> Run {
        let started = Instant::now();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_certd"))
            .args(&args)
            .current_dir(self.dir())
            .env("CERTD_LOG", "info,certd=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start certd");
        let output = tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "certd {} did not finish within {RUN_TIMEOUT:?}",
                    args.join(" ")
                )
            })
            .expect("wait for certd");
        Run {
            args,
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            elapsed: started.elapsed(),
        }
    }

    /// `certd issue [args...]`.
    pub async fn issue(&self, args: &[&str]) -> Run {
        self.run("issue", args).await
    }

    /// `certd check`.
    pub async fn check(&self) -> Run {
        self.run("check", &[]).await
    }

    /// `certd status --json`, which must succeed, parsed.
    pub async fn status(&self) -> serde_json::Value {
        let run = self.run("status", &["--json"]).await;
        // Monitoring-plugin exit codes: 0 ok, 1 warning (e.g. after a failed renewal), 2 critical
        // (e.g. a site without a certificate yet); 3 would mean status itself could not run.
        assert!(
            matches!(run.code, Some(0..=2)),
            "certd status failed:\n{run}"
        );
        serde_json::from_str(&run.stdout)
            .unwrap_or_else(|err| panic!("status --json is not JSON: {err}\n{run}"))
    }
}

/// The entry for `site` in `certd status --json` output.
#[track_caller]
pub fn status_site<'a>(status: &'a serde_json::Value, site: &str) -> &'a serde_json::Value {
    status["sites"]
        .as_array()
        .unwrap_or_else(|| panic!("status has no sites array: {status:#}"))
        .iter()
        .find(|entry| entry["site"] == site)
        .unwrap_or_else(|| panic!("status has no entry for {site}: {status:#}"))
}

/// The permission bits (`0o777` part) of `path`, following symlinks.
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|err| panic!("stat {}: {err}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Every path under `root` (not following symlinks), sorted, `root` itself first.
pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut paths = vec![root.to_path_buf()];
    let mut i = 0;
    while i < paths.len() {
        let path = paths[i].clone();
        i += 1;
        let is_dir = std::fs::symlink_metadata(&path).is_ok_and(|meta| meta.is_dir());
        if is_dir {
            let mut children: Vec<PathBuf> = std::fs::read_dir(&path)
                .unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
                .map(|entry| entry.expect("dir entry").path())
                .collect();
            children.sort();
            paths.extend(children);
        }
    }
    paths
}
