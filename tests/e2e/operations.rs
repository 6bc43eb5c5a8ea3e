//! What operators watch: `certd status` exit codes (the monitoring-plugin convention), the Prometheus
//! metrics of `certd run` scraped over HTTP after an issuance and after a failed renewal, and the hook
//! run after each renewal and each failed attempt.

use std::time::Duration;

use crate::harness::{
    free_port, normalize_serial, status_site, Certd, CertdConfig, Daemon, HttpsClient, Pebble,
    RunConfig, Site,
};

/// `certd status` with the harness's folder, returning its exit code and stdout.
async fn status_code(certd: &Certd) -> (Option<i32>, String) {
    let run = certd.run("status", &[]).await;
    (run.code, run.stdout.clone())
}

#[tokio::test]
async fn status_exit_codes_follow_the_monitoring_plugin_convention() {
    let mut pebble = Pebble::start().await;
    let config = CertdConfig::for_pebble(&pebble, &[&["a.test"]]);
    let certd = Certd::with_config(&config);
    let base = config.to_toml();

    // No certificate yet: critical.
    let (code, stdout) = status_code(&certd).await;
    assert_eq!(code, Some(2), "{stdout}");
    assert!(
        stdout.contains("CRITICAL: a.test has no certificate"),
        "{stdout}"
    );

    // A fresh five-year certificate: OK.
    certd.issue(&[]).await.expect_code(0);
    let (code, stdout) = status_code(&certd).await;
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout
            .lines()
            .last()
            .unwrap_or_default()
            .starts_with("OK: 1 site"),
        "{stdout}"
    );

    // Thresholds beyond its lifetime: warning, then critical.
    certd.write_config_text(&format!(
        "{base}\n[status]\nwarn_days = 3000\ncritical_days = 7\n"
    ));
    let (code, stdout) = status_code(&certd).await;
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("WARNING: a.test expires in"), "{stdout}");
    certd.write_config_text(&format!(
        "{base}\n[status]\nwarn_days = 3000\ncritical_days = 3000\n"
    ));
    assert_eq!(status_code(&certd).await.0, Some(2));

    // A failed renewal (the CA is gone): warning, with the error.
    certd.write_config_text(&base);
    pebble.stop();
    certd.issue(&["--force"]).await.expect_code(2);
    let (code, stdout) = status_code(&certd).await;
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("renewal failing"), "{stdout}");
    assert!(stdout.contains("last error"), "{stdout}");

    // A configuration that cannot be read: unknown.
    certd.write_config_text("this is not toml");
    assert_eq!(status_code(&certd).await.0, Some(3));
}

/// Scrapes `/metrics` on `port`.
async fn scrape(port: u16) -> String {
    let reply = crate::harness::http_get(port, "127.0.0.1", "/metrics").await;
    assert_eq!(reply.status, hyper::StatusCode::OK);
    reply.text()
}

/// The value of the metric line that starts with `prefix`.
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no metric {prefix} in:\n{text}"))
}

#[tokio::test]
async fn metrics_are_scraped_after_an_issuance_and_after_a_failed_renewal() {
    let mut pebble = Pebble::start().await;
    let certd = Certd::new();
    let config = RunConfig::for_pebble(&pebble, vec![Site::new(&["m.test"])]);
    let metrics_port = free_port();
    let hook_log = certd.dir().join("hook.log");
    let hook = format!(
        "\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\n[hook]\ncommand = [\"/bin/sh\", \"-c\", \
         \"echo \\\"$CERTD_EVENT $CERTD_SITE $CERTD_SERIAL\\\" >> {}\"]\n",
        hook_log.display()
    );
    certd.write_config_text(&format!("{}{hook}", config.to_toml()));
    let daemon = Daemon::start(&certd, config.https_addr()).await;
    let client = HttpsClient::new(config.https_addr(), &pebble.root_pem().await);
    let serial = client
        .wait_for_certificate("m.test", Duration::from_secs(30))
        .await;

    let text = scrape(metrics_port).await;
    let status = certd.status().await;
    let not_after = crate::harness::parse_time(
        status_site(&status, "m.test")["not_after"]
            .as_str()
            .unwrap_or_default(),
    );
    assert_eq!(
        metric(
            &text,
            "certd_certificate_not_after_seconds{site=\"m.test\"}"
        ) as i64,
        not_after.unix_timestamp()
    );
    assert_eq!(
        metric(&text, "certd_renewal_consecutive_failures{site=\"m.test\"}"),
        0.0
    );
    assert!(metric(&text, "certd_renewal_last_success_seconds{site=\"m.test\"}") > 0.0);
    assert!(
        metric(
            &text,
            "certd_certificate_next_renewal_seconds{site=\"m.test\"}"
        ) > 0.0
    );

    // A request is counted for its site.
    let mut connection = client.http1("m.test").await;
    let reply = connection.get("m.test", "/nothing-routed").await;
    assert_eq!(reply.status, hyper::StatusCode::NOT_FOUND);
    let text = scrape(metrics_port).await;
    assert_eq!(
        metric(
            &text,
            "certd_http_requests_total{site=\"m.test\",code=\"4xx\"}"
        ),
        1.0
    );
    // Counted once the server side has finished it, which a request on the connection proves.
    assert!(metric(&text, "certd_tls_handshakes_total") >= 1.0);

    // The hook saw the issuance.
    let hook_seen = std::fs::read_to_string(&hook_log).unwrap_or_default();
    assert!(
        hook_seen.contains(&format!("renewed m.test {}", serial.to_lowercase()))
            || hook_seen
                .to_lowercase()
                .contains(&format!("renewed m.test {}", normalize_serial(&serial))),
        "hook log: {hook_seen:?}, serial {serial}"
    );

    // A forced renewal with the CA gone fails; the gauge and the hook say so.
    pebble.stop();
    let run = certd.issue(&["--force"]).await;
    assert_ne!(run.code, Some(0), "{run}");
    let text = scrape(metrics_port).await;
    assert_eq!(
        metric(&text, "certd_renewal_consecutive_failures{site=\"m.test\"}"),
        1.0
    );
    // The daemon's account was already connected, so the order itself was attempted and failed.
    let hook_seen = std::fs::read_to_string(&hook_log).unwrap_or_default();
    assert!(
        hook_seen.contains("failed m.test"),
        "hook log: {hook_seen:?}"
    );
    // The old certificate stays in service.
    assert_eq!(client.serial("m.test").await.ok(), Some(serial));
    drop(daemon);
}
