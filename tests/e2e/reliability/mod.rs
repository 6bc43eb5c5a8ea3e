//! Reliability: will certd stay up, and lose nothing? Each file attacks one way it could fail, with the
//! real binary, a real Pebble (HTTP-01 validated for real) and real sockets on loopback:
//!
//! - `crash`: `kill -9` at random moments of forced renewals never leaves a key beside the wrong
//!   certificate, and the daemon starts and serves afterwards.
//! - `outage`: the CA goes away during a renewal; the old certificate keeps serving, the failure is
//!   logged and recorded, and the scheduled retry succeeds on its own once the CA is back.
//! - `slowloris`: 500 slow sockets on :443 and :80 are cut off by their deadlines while normal
//!   clients are served.
//! - `hostile`: oversized headers, too many connections, missing or unknown SNI, garbage bytes and
//!   path traversal hurt only the connection that sends them.
//! - `upstream`: upstreams that close, reset or hang give 502/504, and leak no file descriptors.
//! - `disk`: a read-only or full state directory fails the renewal with the path named, and the old
//!   pair keeps serving, intact.
//! - `stalls`: a kept-alive metrics scraper does not hold SIGTERM; a stderr nobody reads drops (and
//!   counts, and reports) log lines instead of stalling requests.
//! - `tls_grade`: `testssl.sh` finds no old protocol, weak cipher or broken chain.
//!
//! The tools some tests drive (`testssl.sh`, `mount` for the disk faults, `systemd-analyze`) are
//! installed by scripts/test.sh; a test whose tool is missing fails and says what to install.
//!
//! Every test has its own Pebble, folders and ports, and every wait is bounded.

mod crash;
mod disk;
mod hostile;
mod outage;
mod slowloris;
mod stalls;
mod tls_grade;
mod upstream;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::harness::{
    key_matches, serial_hex, verify_chain, Certd, Daemon, HttpsClient, Pebble, RunConfig, Site,
};

/// How long a test waits for the daemon to obtain a certificate at start (one order against Pebble
/// takes a second or two; CI runs many tests at once on two cores).
pub const CERT_WAIT: Duration = Duration::from_secs(45);

/// One test's daemon: Pebble, a certd folder with a `certd run` configuration, the daemon, and a client
/// trusting Pebble's root. Fields drop in order, the daemon first.
pub struct Served {
    /// `certd run`.
    pub daemon: Daemon,
    /// A verifying TLS client for the HTTPS listener.
    pub client: HttpsClient,
    /// The configuration the daemon runs with.
    pub config: RunConfig,
    /// The certd working folder.
    pub certd: Certd,
    /// The CA.
    pub pebble: Pebble,
}

impl Served {
    /// Writes `config` (with `[renewal]` keys `renewal` added, e.g. `("first_retry", "\"2s\"")`) into
    /// `certd`'s folder, starts the daemon, and waits until every site serves a certificate.
    pub async fn start(
        pebble: Pebble,
        certd: Certd,
        config: RunConfig,
        renewal: &[(&str, &str)],
    ) -> Self {
        certd.write_config_text(&with_renewal_keys(&config.to_toml(), renewal));
        let daemon = Daemon::start(&certd, config.https_addr()).await;
        let client = HttpsClient::new(config.https_addr(), &pebble.root_pem().await);
        for site in &config.sites {
            client.wait_for_certificate(&site.names[0], CERT_WAIT).await;
        }
        Self {
            daemon,
            client,
            config,
            certd,
            pebble,
        }
    }

    /// `<name>:<https port>`, the Host a browser sends.
    pub fn authority(&self, name: &str) -> String {
        format!("{name}:{}", self.config.https_port)
    }
}

/// A site named `name` whose whole space is served from `root` (relative to the config folder).
pub fn static_site(name: &str, root: &str) -> Site {
    Site::new(&[name]).root("/", root)
}

/// `toml` with `keys` added to its `[renewal]` table (created when missing), so tests can set
/// `first_retry` and `longest_retry`, which the harness's [`RunConfig`] does not know.
pub fn with_renewal_keys(toml: &str, keys: &[(&str, &str)]) -> String {
    if keys.is_empty() {
        return toml.to_owned();
    }
    let lines: String = keys
        .iter()
        .map(|(key, value)| format!("{key} = {value}\n"))
        .collect();
    match toml.find("\n[renewal]\n") {
        Some(at) => {
            let split = at + "\n[renewal]\n".len();
            format!("{}{lines}{}", &toml[..split], &toml[split..])
        }
        // Top-level `[[site]]` tables come last in the harness's TOML; a table added before them
        // keeps them where they are.
        None => match toml.find("\n[[site]]\n") {
            Some(at) => format!("{}\n[renewal]\n{lines}{}", &toml[..at], &toml[at..]),
            None => format!("{toml}\n[renewal]\n{lines}"),
        },
    }
}

/// The contract files of `site` as another program (nginx) would read them right now, checked: all four
/// readable, the key belongs to the certificate, `fullchain.pem` is `cert.pem` followed by `chain.pem`,
/// and (when `root_pem` is given) the chain verifies for the site's name. Returns the serial.
pub fn assert_contract_intact(certd: &Certd, site: &str, root_pem: Option<&str>) -> String {
    let dir = certd.site_dir(site);
    let read = |file: &str| {
        let path = dir.join(file);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("{site}: cannot read {}: {err}", path.display()))
    };
    let (cert, chain, fullchain, key) = (
        read("cert.pem"),
        read("chain.pem"),
        read("fullchain.pem"),
        read("privkey.pem"),
    );
    assert!(
        key_matches(&cert, &key),
        "{site}: privkey.pem does not belong to cert.pem (live -> {:?})",
        std::fs::read_link(dir.join("live"))
    );
    assert!(
        fullchain.starts_with(cert.trim_end()),
        "{site}: fullchain.pem does not start with cert.pem"
    );
    assert!(
        fullchain.trim_end().ends_with(chain.trim_end()) && !chain.trim().is_empty(),
        "{site}: fullchain.pem does not end with chain.pem"
    );
    if let Some(root) = root_pem {
        verify_chain(&fullchain, root, site)
            .unwrap_or_else(|err| panic!("{site}: the stored chain does not verify: {err}"));
    }
    serial_hex(&cert)
}

/// How many file descriptors process `pid` has open.
pub fn fd_count(pid: u32) -> usize {
    let dir = format!("/proc/{pid}/fd");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("list {dir}: {err}"))
        .count()
}

/// What `/proc/<pid>/fd` holds, as "fd -> target" lines (for a failure message).
pub fn fd_listing(pid: u32) -> String {
    let dir = format!("/proc/{pid}/fd");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return String::new();
    };
    let mut lines: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|entry| {
            let target = std::fs::read_link(entry.path())
                .map(|target| target.display().to_string())
                .unwrap_or_default();
            format!("{} -> {target}", entry.file_name().to_string_lossy())
        })
        .collect();
    lines.sort();
    lines.join("\n")
}

/// The soft limit on open files of this process (from `/proc/self/limits`).
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Writes `request` on `stream` and reads until the peer closes, errs, or `timeout` passes. Returns
/// what was read (lossy UTF-8) and whether the peer closed within the time.
pub async fn exchange<S>(stream: &mut S, request: &[u8], timeout: Duration) -> (String, bool)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(timeout, async {
        stream.write_all(request).await?;
        stream.flush().await
    })
    .await;
    let (bytes, closed) = read_until_closed(stream, timeout).await;
    (String::from_utf8_lossy(&bytes).into_owned(), closed)
}

/// Reads until the peer closes (EOF or an error) or `timeout` passes; returns the bytes and whether it
/// closed.
pub async fn read_until_closed<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + timeout;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (bytes, true),
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
            Err(_) => return (bytes, false),
        }
    }
}

/// The status code of a raw HTTP/1.x response (`HTTP/1.1 404 Not Found` → 404).
pub fn status_of(response: &str) -> Option<u16> {
    let line = response.lines().next()?;
    let mut words = line.split_whitespace();
    if !words.next()?.starts_with("HTTP/1.") {
        return None;
    }
    words.next()?.parse().ok()
}

/// `GET path` over plain HTTP/1.1 on a fresh TCP connection to `addr`, raw (the target is sent exactly
/// as given), `Connection: close`; returns the whole response text.
pub async fn raw_http(addr: SocketAddr, host: &str, target: &str) -> String {
    let mut tcp = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .expect("connect in time")
    .unwrap_or_else(|err| panic!("connect to {addr}: {err}"));
    let request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    exchange(&mut tcp, request.as_bytes(), Duration::from_secs(10))
        .await
        .0
}

/// Creates `path`'s parent folders and writes `contents`.
pub fn write_file(path: &Path, contents: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|err| panic!("create {}: {err}", parent.display()));
    }
    std::fs::write(path, contents).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
}

#[test]
fn renewal_keys_land_in_one_renewal_table() {
    let with_table = "a = 1\n\n[renewal]\nremaining_fraction = 0.5\n\n[[site]]\nnames = [\"a\"]\n";
    assert_eq!(
        with_renewal_keys(with_table, &[("first_retry", "\"2s\"")]),
        "a = 1\n\n[renewal]\nfirst_retry = \"2s\"\nremaining_fraction = 0.5\n\n[[site]]\nnames = [\"a\"]\n"
    );
    let without = "a = 1\n\n[[site]]\nnames = [\"a\"]\n";
    assert_eq!(
        with_renewal_keys(without, &[("first_retry", "\"2s\"")]),
        "a = 1\n\n[renewal]\nfirst_retry = \"2s\"\n\n[[site]]\nnames = [\"a\"]\n"
    );
    assert_eq!(
        status_of("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        Some(431)
    );
    assert_eq!(status_of("garbage"), None);
}
