//! Peers and outputs that stall `certd run`: a metrics scraper that keeps its connection open must not
//! hold SIGTERM for the grace period, and a stderr that nobody reads must cost log lines (counted, and
//! reported once stderr moves again), never requests.

use std::io::Read as _;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::BodyExt as _;
use hyper::StatusCode;
use hyper_util::rt::TokioIo;

use super::{static_site, write_file, CERT_WAIT};
use crate::harness::{free_port, Certd, Daemon, HttpsClient, Pebble, RunConfig};

/// `[limits] grace_period` in these tests: long, so that waiting it out cannot pass for a prompt exit.
const GRACE: Duration = Duration::from_secs(20);

/// `config`'s TOML with `[metrics] listen` on `port`.
fn with_metrics(config: &RunConfig, port: u16) -> String {
    format!(
        "{}\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n",
        config.to_toml()
    )
}

/// One scrape of `/metrics` on a kept-alive HTTP/1.1 connection to `port`; returns the connection
/// (still open) and the page.
async fn scrape_keep_alive(
    port: u16,
) -> (
    hyper::client::conn::http1::SendRequest<String>,
    tokio::task::JoinHandle<()>,
    String,
) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the metrics port");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("HTTP/1.1 handshake");
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = hyper::Request::get("/metrics")
        .header("host", format!("127.0.0.1:{port}"))
        .body(String::new())
        .expect("request");
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .expect("scrape answered in time")
        .expect("scrape answered");
    assert_eq!(response.status(), StatusCode::OK);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("metrics body")
        .to_bytes();
    (sender, task, String::from_utf8_lossy(&body).into_owned())
}

/// The value of metric line `name` (no labels) in `page`.
fn counter(page: &str, name: &str) -> u64 {
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{page}"))
}

#[tokio::test]
async fn a_kept_alive_metrics_scraper_does_not_hold_sigterm() {
    let pebble = Pebble::start().await;
    let certd = Certd::new();
    write_file(&certd.dir().join("www/index.html"), b"hello\n");
    let config = RunConfig::for_pebble(&pebble, vec![static_site("m.test", "www")])
        .limit("grace_period", &format!("\"{}s\"", GRACE.as_secs()));
    let metrics_port = free_port();
    certd.write_config_text(&with_metrics(&config, metrics_port));
    let mut daemon = Daemon::start(&certd, config.https_addr()).await;
    let client = HttpsClient::new(config.https_addr(), &pebble.root_pem().await);
    client.wait_for_certificate("m.test", CERT_WAIT).await;

    let (scraper, connection, page) = scrape_keep_alive(metrics_port).await;
    assert_eq!(counter(&page, "certd_log_lines_dropped_total"), 0, "{page}");
    assert!(!scraper.is_closed(), "the scraper keeps its connection");

    let started = Instant::now();
    daemon.signal("TERM");
    let status = daemon
        .wait_exit(Duration::from_secs(5))
        .await
        .unwrap_or_else(|| {
            panic!(
                "certd run still running 5 s after SIGTERM with a {GRACE:?} grace period:\n{}",
                daemon.log()
            )
        });
    assert!(status.success(), "{status}:\n{}", daemon.log());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        !daemon.log().contains("grace period over"),
        "nothing should have been left open:\n{}",
        daemon.log()
    );
    connection.abort();
}

/// `certd run` with its stderr on a pipe the test reads only when it chooses; killed (by its own pid)
/// on drop.
struct StalledDaemon {
    child: Child,
    /// What has been read from stderr since [`StalledDaemon::drain`].
    read: Arc<Mutex<Vec<u8>>>,
}

impl StalledDaemon {
    fn start(certd: &Certd) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_certd"))
            .arg("run")
            .arg("--config")
            .arg(certd.config_path())
            .current_dir(certd.dir())
            // Every library's trace lines: far more than the pipe, the write buffer and the queue hold.
            .env("CERTD_LOG", "trace")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start certd run");
        Self {
            child,
            read: Arc::default(),
        }
    }

    /// Starts reading stderr (on a thread of its own, until the daemon exits).
    fn drain(&mut self) {
        let mut stderr = self.child.stderr.take().expect("stderr is piped");
        let read = self.read.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64 * 1024];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                read.lock()
                    .unwrap_or_else(|poison| poison.into_inner())
                    .extend_from_slice(&buf[..n]);
            }
        });
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(
            &self
                .read
                .lock()
                .unwrap_or_else(|poison| poison.into_inner()),
        )
        .into_owned()
    }
}

impl Drop for StalledDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stderr_drops_log_lines_while_requests_are_served() {
    let pebble = Pebble::start().await;
    let certd = Certd::new();
    write_file(&certd.dir().join("www/index.html"), b"hello\n");
    let config = RunConfig::for_pebble(&pebble, vec![static_site("s.test", "www")]);
    let metrics_port = free_port();
    certd.write_config_text(&with_metrics(&config, metrics_port));
    let mut daemon = StalledDaemon::start(&certd);
    let client = HttpsClient::new(config.https_addr(), &pebble.root_pem().await);
    // Ordering the certificate alone logs more than the pipe holds: with a blocking log, the daemon
    // would already be stuck here.
    client.wait_for_certificate("s.test", CERT_WAIT).await;

    // Requests (each logs its access line and the libraries' trace lines) until the queue has
    // overflowed: every batch is still served promptly.
    let host = format!("s.test:{}", config.https_port);
    let started = Instant::now();
    let mut requests = 0;
    let dropped = loop {
        let batch = Instant::now();
        for _ in 0..10 {
            let mut connection = client.http1("s.test").await;
            for _ in 0..20 {
                let reply = connection.get(&host, "/").await;
                assert_eq!(reply.status, StatusCode::OK);
                requests += 1;
            }
        }
        let took = batch.elapsed();
        assert!(
            took < Duration::from_secs(10),
            "200 requests took {took:?} with stderr stalled"
        );
        let (_scraper, connection, page) = scrape_keep_alive(metrics_port).await;
        connection.abort();
        let dropped = counter(&page, "certd_log_lines_dropped_total");
        if dropped > 0 {
            break dropped;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no log line dropped after {requests} requests"
        );
    };
    eprintln!("{dropped} log lines dropped after {requests} requests");

    // Once stderr moves again, the daemon says what it dropped (within its 10 s report period).
    daemon.drain();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !daemon.text().contains(" log lines: stderr did not keep up") {
        assert!(
            Instant::now() < deadline,
            "no \"dropped N log lines\" report; stderr ends with:\n{}",
            daemon
                .text()
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = daemon.text();
    let report = text
        .lines()
        .find(|line| line.contains(" log lines: stderr did not keep up"))
        .unwrap_or_default();
    assert!(report.contains("WARN"), "{report}");
    assert!(report.contains("dropped "), "{report}");
}
