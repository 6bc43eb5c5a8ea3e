//! deploy/monitoring: the Prometheus alert rules load in `promtool check rules` (Debian's `prometheus`
//! package; scripts/test.sh installs it), and every certd metric the rules and the Grafana dashboard
//! use is one a running `certd run` exports on its metrics listener.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use crate::harness::{free_port, Certd, Pebble, RunConfig, Site};
use crate::run::World;

const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/monitoring/certd-rules.yml"
);
const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/monitoring/certd-dashboard.json"
);

/// The `certd_*` metric names in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let name = regex::Regex::new(r"\bcertd_[a-z0-9_]+").expect("regex");
    name.find_iter(expr)
        .map(|found| found.as_str().to_owned())
        .collect()
}

/// Every `expr` in the rules file (one per rule, on its `expr:` line).
fn rule_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(RULES).expect("read the rules");
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("expr:"))
        .map(|expr| expr.trim().to_owned())
        .collect()
}

/// Every target `expr` of the dashboard's panels, and its template queries.
fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(DASHBOARD).expect("read the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let targets = panel["targets"].as_array().expect("each panel has targets");
        assert!(!targets.is_empty(), "panel without targets: {panel}");
        for target in targets {
            let expr = target["expr"].as_str().expect("each target has an expr");
            exprs.push(expr.to_owned());
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        if let Some(query) = variable["query"]["query"].as_str() {
            exprs.push(query.to_owned());
        }
    }
    exprs
}

#[test]
fn the_alert_rules_pass_promtool() {
    let output = Command::new("promtool")
        .args(["check", "rules", RULES])
        .output()
        .unwrap_or_else(|err| {
            panic!(
                "cannot run promtool ({err}): install the Debian package `prometheus` \
                 (scripts/test.sh does)"
            )
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "promtool check rules failed:\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("SUCCESS: 10 rules found"), "{stdout}");
    // The alerts the issue asks for are all there.
    let text = std::fs::read_to_string(RULES).expect("read the rules");
    for alert in [
        "CertdCertificateExpiresSoon",
        "CertdRenewalFailing",
        "CertdSchedulerStale",
        "CertdStateUnreadable",
        "CertdStorageUnreachable",
    ] {
        assert!(text.contains(&format!("alert: {alert}")), "no {alert}");
    }
}

#[tokio::test]
async fn the_rules_and_the_dashboard_use_only_metrics_certd_exports() {
    let (world, metrics_port) = serve_with_metrics("mon.test").await;
    // One request, so the per-site request counter has a sample.
    let reply = world
        .client
        .http1("mon.test")
        .await
        .get("mon.test", "/nothing")
        .await;
    assert_eq!(reply.status, hyper::StatusCode::NOT_FOUND);
    let scraped = crate::harness::http_get(metrics_port, "127.0.0.1", "/metrics").await;
    assert_eq!(scraped.status, hyper::StatusCode::OK);
    let text = scraped.text();
    // A name is exported when the scrape has a sample of it (not only its HELP line).
    let exported: BTreeSet<String> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();

    let rules: BTreeSet<String> = rule_exprs().iter().flat_map(|e| metric_names(e)).collect();
    let dashboard: BTreeSet<String> = dashboard_exprs()
        .iter()
        .flat_map(|e| metric_names(e))
        .collect();
    assert!(rules.len() >= 6, "{rules:?}");
    assert!(dashboard.len() >= 8, "{dashboard:?}");
    for (what, used) in [("rules", &rules), ("dashboard", &dashboard)] {
        let unknown: Vec<&String> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "the {what} use metrics certd does not export: {unknown:?}\nscraped:\n{text}\n{}",
            world.daemon.log()
        );
    }
}

/// The Accept header Prometheus 2.x sends with a scrape (OpenMetrics first, plain text as fallback).
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,\
    application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// A GET of `/metrics` on `port` with `accept` (none when empty): the Content-Type and the page.
async fn scrape_as(port: u16, accept: &str) -> (String, String) {
    use http_body_util::BodyExt as _;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the metrics port");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("HTTP/1.1 handshake");
    let task = tokio::spawn(connection);
    let mut request = hyper::Request::get("/metrics").header("host", "127.0.0.1");
    if !accept.is_empty() {
        request = request.header("accept", accept);
    }
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        sender.send_request(request.body(String::new()).expect("request")),
    )
    .await
    .expect("scrape answered in time")
    .expect("scrape answered");
    assert_eq!(response.status(), hyper::StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("content type")
        .to_owned();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    task.abort();
    (content_type, String::from_utf8_lossy(&body).into_owned())
}

/// The sample names of a page, with their values (`name{labels}` → value).
fn samples(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A Prometheus server (Debian's `prometheus`) in a temp dir on loopback, scraping one target every
/// second; killed by its pid on drop.
struct Prometheus {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn scraping(target_port: u16) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  \
                 - job_name: certd\n    static_configs:\n      \
                 - targets: ['127.0.0.1:{target_port}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot run prometheus ({err}): install the Debian package `prometheus` \
                     (scripts/test.sh does)"
                )
            });
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    /// The JSON answer of API `path` (with its query), once Prometheus answers.
    async fn api(&self, path: &str) -> serde_json::Value {
        let reply = crate::harness::http_get(self.port, "127.0.0.1", path).await;
        assert_eq!(
            reply.status,
            hyper::StatusCode::OK,
            "{path}: {}",
            reply.text()
        );
        serde_json::from_slice(&reply.body).expect("Prometheus answers JSON")
    }

    /// Whether Prometheus has finished starting: it listens before its storage is open, and
    /// answers the query API 503 until then.
    async fn ready(&self) -> bool {
        crate::harness::http_get(self.port, "127.0.0.1", "/-/ready")
            .await
            .status
            == hyper::StatusCode::OK
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `certd run` for the one site `name` with `[metrics]` on a free port, once the site's certificate
/// is served: the daemon and its client, and the metrics port.
async fn serve_with_metrics(name: &str) -> (World, u16) {
    let pebble = Pebble::start().await;
    let config = RunConfig::for_pebble(&pebble, vec![Site::new(&[name])]);
    let metrics_port = free_port();
    let text = format!(
        "{}\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
        config.to_toml()
    );
    let world = World::serve_text(pebble, Certd::new(), config, &text).await;
    world
        .client
        .wait_for_certificate(name, Duration::from_secs(30))
        .await;
    (world, metrics_port)
}

/// Whether something listens on loopback `port`.
async fn listening(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

#[tokio::test]
async fn prometheus_scrapes_openmetrics_and_the_plain_text_passes_promtool() {
    let (world, metrics_port) = serve_with_metrics("om.test").await;

    // Negotiation: the plain text format without Accept, OpenMetrics for Prometheus's Accept; the
    // same samples in both.
    let (plain_type, plain) = scrape_as(metrics_port, "").await;
    assert_eq!(plain_type, "text/plain; version=0.0.4; charset=utf-8");
    let (open_type, open) = scrape_as(metrics_port, PROMETHEUS_ACCEPT).await;
    assert_eq!(
        open_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(open.ends_with("# EOF\n"), "{open}");
    assert!(
        open.contains("# TYPE certd_tls_handshakes counter\n"),
        "{open}"
    );
    let differ = |page: &str| -> BTreeSet<String> {
        // The scheduler may complete a pass between the two scrapes; compare names, not values.
        samples(page)
            .iter()
            .filter_map(|line| line.rsplit_once(' ').map(|(name, _)| name.to_owned()))
            .collect()
    };
    assert_eq!(differ(&plain), differ(&open), "{plain}\n{open}");

    // The plain text page is what Prometheus's own parser and linter accept.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool (Debian package `prometheus`)");
    {
        use std::io::Write as _;
        let mut stdin = promtool.stdin.take().expect("promtool stdin");
        stdin.write_all(plain.as_bytes()).expect("write the page");
    }
    let checked = promtool.wait_with_output().expect("promtool ends");
    assert!(
        checked.status.success(),
        "promtool check metrics:\n{}{}\n{plain}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // A real Prometheus scrapes certd (asking for OpenMetrics first) and keeps every family typed.
    let prometheus = Prometheus::scraping(metrics_port);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "Prometheus did not scrape certd in time:\n{}\n{}",
            prometheus.log(),
            world.daemon.log()
        );
        if listening(prometheus.port).await && prometheus.ready().await {
            let up = prometheus.api("/api/v1/query?query=up").await;
            let value = &up["data"]["result"][0]["value"][1];
            if value == "1" {
                break;
            }
            let targets = prometheus.api("/api/v1/targets").await;
            let error = &targets["data"]["activeTargets"][0]["lastError"];
            assert!(
                error.as_str().is_none_or(str::is_empty),
                "the scrape failed: {error}"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let handshakes = prometheus
        .api("/api/v1/query?query=certd_tls_handshakes_total")
        .await;
    assert_eq!(
        handshakes["data"]["result"].as_array().map(Vec::len),
        Some(1),
        "{handshakes}"
    );
    let metadata = prometheus
        .api("/api/v1/metadata?metric=certd_tls_handshakes")
        .await;
    assert_eq!(
        metadata["data"]["certd_tls_handshakes"][0]["type"], "counter",
        "OpenMetrics names the family without _total: {metadata}"
    );
    let metadata = prometheus
        .api("/api/v1/metadata?metric=certd_certificate_not_after_seconds")
        .await;
    assert_eq!(
        metadata["data"]["certd_certificate_not_after_seconds"][0]["unit"], "seconds",
        "{metadata}"
    );
    let expiry = prometheus
        .api("/api/v1/query?query=certd_certificate_not_after_seconds%7Bsite%3D%22om.test%22%7D")
        .await;
    assert_eq!(
        expiry["data"]["result"].as_array().map(Vec::len),
        Some(1),
        "{expiry}"
    );
}
