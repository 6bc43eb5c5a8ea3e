//! Pebble (the ACME test CA) and pebble-challtestsrv (its DNS), started on free loopback ports for one
//! test and killed when it ends.
//!
//! challtestsrv answers every A query with 127.0.0.1 (and no AAAA), so when Pebble validates an HTTP-01
//! challenge for any name it connects to `127.0.0.1:<http_port>`, where the test puts certd's own
//! `[http].listen`. Validation is real: `PEBBLE_VA_ALWAYS_VALID` is never set.

use std::collections::HashSet;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tempfile::TempDir;

use super::pki::TestPki;

/// The problem type Pebble reports when it cannot connect to the HTTP-01 responder.
pub const CONNECTION_PROBLEM: &str = "urn:ietf:params:acme:error:connection";
/// What that problem's detail says when nothing listens on the validation port.
pub const REFUSED_DETAIL: &str = "connection refused";

/// How long Pebble and challtestsrv get to open their ports.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Ports already handed out in this process, so two parallel tests never get the same one.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A loopback port that is free for both TCP and UDP right now and was not handed out before in this
/// process. (Another process may still take it before the caller binds it; that race is accepted.)
pub fn free_port() -> u16 {
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    for _ in 0..1000 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        if handed_out.contains(&port) || UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_err() {
            continue;
        }
        handed_out.insert(port);
        return port;
    }
    panic!("no free loopback port found");
}

/// A child process that is killed (by its own pid) and reaped when dropped.
pub struct ChildGuard {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl ChildGuard {
    /// Spawns `command` with stdout and stderr appended to `log` (so a restarted process adds to the
    /// log of the one before).
    pub fn spawn(name: &'static str, mut command: Command, log: PathBuf) -> Self {
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|err| panic!("open {}: {err}", log.display()));
        let err = out.try_clone().expect("clone log handle");
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|err| {
                panic!("start {name} (is it installed? see scripts/test.sh): {err}")
            });
        Self { name, child, log }
    }

    /// Everything the process printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the log if the process has exited.
    pub(super) fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited early ({status}):\n{}", self.name, self.log());
        }
    }

    /// Kills the process (by its own pid) and reaps it.
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // `Child::kill` signals this child's own pid only; then reap it so no zombie is left.
        self.stop();
    }
}

/// How to start Pebble, beyond the defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct PebbleOptions {
    /// `certificateValidityPeriod`: the lifetime of the certificates Pebble issues, in seconds (Pebble's
    /// default is five years). A short one lets a test watch a scheduled renewal happen.
    pub cert_validity_secs: Option<u64>,
    /// `externalAccountBindingRequired` with this one `externalAccountMACKeys` entry: (key id,
    /// base64url MAC key).
    pub eab: Option<(&'static str, &'static str)>,
    /// `-dnsserver`: the DNS server Pebble resolves and validates DNS-01 with (e.g. a test BIND)
    /// instead of challtestsrv.
    pub dns_server: Option<SocketAddr>,
}

/// A running Pebble with its challtestsrv, on ports of their own.
pub struct Pebble {
    /// The port Pebble connects to for HTTP-01 validation: certd must listen on `127.0.0.1:<http_port>`.
    pub http_port: u16,
    /// Pebble's ACME port.
    pub acme_port: u16,
    /// Pebble's management API port (HTTPS, same certificate).
    pub management_port: u16,
    pki: TestPki,
    dns_port: u16,
    challtestsrv_port: u16,
    config_path: PathBuf,
    log_path: PathBuf,
    // Drop order: the processes first, then the folder holding their config, PKI and logs.
    pebble: ChildGuard,
    challtestsrv: ChildGuard,
    _dir: TempDir,
    /// The port Pebble connects to for TLS-ALPN-01 validation: certd's `[https] listen` must be
    /// `127.0.0.1:<tls_port>`.
    pub tls_port: u16,
    /// Where Pebble resolves names: challtestsrv, or [`PebbleOptions::dns_server`].
    pebble_dns: SocketAddr,
}

impl Pebble {
    /// Starts challtestsrv and Pebble and waits (bounded) until both accept connections.
    pub async fn start() -> Self {
        Self::start_with(PebbleOptions::default()).await
    }

    /// [`Pebble::start`] with `options`.
    pub async fn start_with(options: PebbleOptions) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("certd-pebble-")
            .tempdir()
            .expect("tempdir");
        let pki = TestPki::generate(dir.path());
        let (http_port, acme_port, management_port, dns_port, tls_port, challtestsrv_port) = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        );

        let mut command = Command::new("pebble-challtestsrv");
        command
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{challtestsrv_port}")])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""]);
        let mut challtestsrv = ChildGuard::spawn(
            "pebble-challtestsrv",
            command,
            dir.path().join("challtestsrv.log"),
        );
        wait_for_ports(&mut challtestsrv, &[challtestsrv_port, dns_port]).await;

        let mut config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{acme_port}"),
                "managementListenAddress": format!("127.0.0.1:{management_port}"),
                "certificate": pki.cert_path,
                "privateKey": pki.key_path,
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
            }
        });
        if let Some(secs) = options.cert_validity_secs {
            config["pebble"]["certificateValidityPeriod"] = secs.into();
        }
        if let Some((kid, key)) = options.eab {
            config["pebble"]["externalAccountBindingRequired"] = true.into();
            config["pebble"]["externalAccountMACKeys"] = serde_json::json!({ kid: key });
        }
        let config_path = dir.path().join("pebble.json");
        std::fs::write(
            &config_path,
            serde_json::to_vec_pretty(&config).expect("serialize"),
        )
        .expect("write config");

        let log_path = dir.path().join("pebble.log");
        let pebble_dns = options
            .dns_server
            .unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, dns_port)));
        let mut pebble = spawn_pebble(&config_path, pebble_dns, &log_path);
        wait_for_ports(&mut pebble, &[acme_port, management_port]).await;

        Self {
            http_port,
            acme_port,
            management_port,
            pki,
            dns_port,
            challtestsrv_port,
            config_path,
            log_path,
            pebble,
            challtestsrv,
            _dir: dir,
            tls_port,
            pebble_dns,
        }
    }

    /// Kills Pebble (challtestsrv keeps running): the CA is gone, its ports refuse connections.
    pub fn stop(&mut self) {
        self.pebble.stop();
    }

    /// Starts Pebble again on the same ports with the same configuration (after [`Pebble::stop`]).
    /// Pebble keeps nothing between runs: accounts, orders and its root and intermediate are new.
    pub async fn restart(&mut self) {
        self.pebble.stop();
        self.pebble = spawn_pebble(&self.config_path, self.pebble_dns, &self.log_path);
        wait_for_ports(&mut self.pebble, &[self.acme_port, self.management_port]).await;
    }

    /// The ACME directory URL.
    pub fn directory_url(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.acme_port)
    }

    /// challtestsrv's DNS server (what Pebble resolves names with): for certd's `[preflight] resolver`.
    pub fn dns_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.dns_port))
    }

    /// POSTs `body` to challtestsrv's management `endpoint` (`/add-a`, `/clear-a`, `/add-aaaa`,
    /// `/set-default-ipv4`, `/add-servfail`, …), changing what its DNS answers for Pebble and for
    /// certd alike; panics unless it answers 200.
    pub async fn challtestsrv(&self, endpoint: &str, body: serde_json::Value) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.challtestsrv_port));
        let body = body.to_string();
        let request = format!(
            "POST {endpoint} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            stream.write_all(request.as_bytes()).await?;
            let mut response = String::new();
            stream.read_to_string(&mut response).await?;
            Ok::<_, std::io::Error>(response)
        };
        let response = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .unwrap_or_else(|_| panic!("challtestsrv {endpoint}: timed out"))
            .unwrap_or_else(|err| panic!("challtestsrv {endpoint}: {err}"));
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "challtestsrv {endpoint} {body}: {response}"
        );
    }

    /// The PEM file of the CA that signed Pebble's own HTTPS certificate (certd's `ca_roots`).
    pub fn ca_roots_path(&self) -> &Path {
        &self.pki.ca_path
    }

    /// The test PKI Pebble serves HTTPS with.
    pub fn pki(&self) -> &TestPki {
        &self.pki
    }

    /// The root that signs the certificates Pebble issues (fresh on every start).
    pub async fn root_pem(&self) -> String {
        self.management_get("/roots/0").await
    }

    /// The intermediate that signs the certificates Pebble issues.
    pub async fn intermediate_pem(&self) -> String {
        self.management_get("/intermediates/0").await
    }

    /// GETs `path` over HTTPS from the ACME port (trusting the test CA) and returns the body.
    pub async fn acme_get(&self, path: &str) -> String {
        https_get(
            &self.pki,
            &format!("https://127.0.0.1:{}{path}", self.acme_port),
        )
        .await
    }

    async fn management_get(&self, path: &str) -> String {
        https_get(
            &self.pki,
            &format!("https://127.0.0.1:{}{path}", self.management_port),
        )
        .await
    }

    /// Everything Pebble printed so far.
    pub fn log(&self) -> String {
        self.pebble.log()
    }

    /// How many certificates Pebble has issued so far (counted from its log).
    pub fn issued_count(&self) -> usize {
        self.log().matches("Issued certificate serial").count()
    }

    /// How many ACME accounts Pebble holds (from its last "There are now N accounts" log line).
    pub fn account_count(&self) -> usize {
        self.log()
            .lines()
            .rev()
            .filter_map(|line| line.split("There are now ").nth(1))
            .filter_map(|rest| rest.strip_suffix(" accounts in memory"))
            .find_map(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- pebble log -----\n{}", self.pebble.log());
            eprintln!(
                "----- pebble-challtestsrv log -----\n{}",
                self.challtestsrv.log()
            );
        }
    }
}

/// Spawns Pebble with its configuration at `config_path`, resolving names through challtestsrv.
fn spawn_pebble(config_path: &Path, dns: SocketAddr, log: &Path) -> ChildGuard {
    let mut command = Command::new("pebble");
    command
        .arg("-config")
        .arg(config_path)
        .args(["-dnsserver", &dns.to_string()])
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .env("PEBBLE_AUTHZREUSE", "0")
        .env_remove("PEBBLE_VA_ALWAYS_VALID");
    ChildGuard::spawn("pebble", command, log.to_path_buf())
}

/// Polls until every port in `ports` accepts a TCP connection on 127.0.0.1, failing after
/// [`START_TIMEOUT`] or as soon as the process exits.
async fn wait_for_ports(child: &mut ChildGuard, ports: &[u16]) {
    let deadline = Instant::now() + START_TIMEOUT;
    for &port in ports {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            child.assert_running();
            assert!(
                Instant::now() < deadline,
                "{} did not open port {port} within {START_TIMEOUT:?}:\n{}",
                child.name,
                child.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// GETs `url`, trusting only the test CA, and returns the body; panics unless the status is 200.
pub async fn https_get(pki: &TestPki, url: &str) -> String {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(pki.client_config())
        .https_only()
        .enable_http1()
        .build();
    let client: Client<_, Empty<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    let uri: hyper::Uri = url.parse().expect("valid URL");
    let response = tokio::time::timeout(Duration::from_secs(10), client.get(uri))
        .await
        .unwrap_or_else(|_| panic!("GET {url}: timed out"))
        .unwrap_or_else(|err| panic!("GET {url}: {err}"));
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("read body")
        .to_bytes();
    let body = String::from_utf8(body.to_vec()).expect("UTF-8 body");
    assert_eq!(status, 200, "GET {url}: {body}");
    body
}
