//! What operators watch: `certd status` exit codes (the monitoring-plugin convention), the Prometheus
//! metrics of `certd run` scraped over HTTP after an issuance and after a failed renewal, and the hook
//! run after each renewal and each failed attempt.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::harness::{
    free_port, key_matches, normalize_serial, serial_hex, status_site, Certd, CertdConfig, Daemon,
    HttpsClient, Pebble, RunConfig, Site,
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

/// The environments the hook saved for `event` (files `<event>.<pid>.env`, NUL-separated `KEY=value`),
/// each as a map of its `CERTD_*` variables.
fn hook_runs(dir: &Path, event: &str) -> Vec<BTreeMap<String, String>> {
    let mut runs = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read the hook folder") {
        let path = entry.expect("hook folder entry").path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if !name.starts_with(&format!("{event}.")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read a hook environment");
        runs.push(
            text.split('\0')
                .filter_map(|pair| pair.split_once('='))
                .filter(|(key, _)| key.starts_with("CERTD_"))
                .map(|(key, value)| (key.to_owned(), value.to_owned()))
                .collect(),
        );
    }
    runs
}

/// `variable` of a hook environment; panics, showing the environment, when it is missing.
fn var<'a>(env: &'a BTreeMap<String, String>, variable: &str) -> &'a str {
    env.get(variable)
        .unwrap_or_else(|| panic!("the hook got no {variable}: {env:#?}"))
}

#[tokio::test]
async fn metrics_are_scraped_after_an_issuance_and_after_a_failed_renewal() {
    let mut pebble = Pebble::start().await;
    let certd = Certd::new();
    let config = RunConfig::for_pebble(&pebble, vec![Site::new(&["m.test", "www.m.test"])]);
    let metrics_port = free_port();
    // The hook saves its whole environment (NUL-separated, so an error text with newlines survives) to
    // one file per run, named after its event.
    let hook_dir = certd.dir().join("hook");
    std::fs::create_dir_all(&hook_dir).expect("create the hook folder");
    let hook = format!(
        "\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\n[hook]\ncommand = [\"/bin/sh\", \"-c\", \
         {}, \"hook\", {}]\n",
        crate::harness::toml_str("env -0 > \"$1/$CERTD_EVENT.$$.env\""),
        crate::harness::toml_str(&hook_dir.display().to_string()),
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

    // The hook saw the issuance: the event, the site and its names, the serial being served, and the
    // contract paths, which hold that very certificate and its key.
    let renewed = hook_runs(&hook_dir, "renewed");
    assert_eq!(renewed.len(), 1, "one hook run per issuance: {renewed:#?}");
    let env = &renewed[0];
    assert_eq!(var(env, "CERTD_EVENT"), "renewed", "{env:#?}");
    assert_eq!(var(env, "CERTD_SITE"), "m.test", "{env:#?}");
    assert_eq!(var(env, "CERTD_NAMES"), "m.test www.m.test", "{env:#?}");
    assert_eq!(
        normalize_serial(var(env, "CERTD_SERIAL")),
        serial,
        "{env:#?}"
    );
    assert!(!env.contains_key("CERTD_ERROR"), "{env:#?}");
    let read = |variable: &str| {
        let path = var(env, variable);
        assert!(
            path.starts_with(&certd.state_dir().display().to_string()),
            "{variable}={path} is not under the state directory"
        );
        std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{variable}={path}: {err}"))
    };
    let (fullchain, cert, chain, key) = (
        read("CERTD_FULLCHAIN"),
        read("CERTD_CERT"),
        read("CERTD_CHAIN"),
        read("CERTD_PRIVKEY"),
    );
    assert_eq!(
        serial_hex(&fullchain),
        serial,
        "CERTD_FULLCHAIN holds another certificate"
    );
    assert_eq!(
        serial_hex(&cert),
        serial,
        "CERTD_CERT holds another certificate"
    );
    assert!(
        fullchain.starts_with(cert.trim_end()) && fullchain.trim_end().ends_with(chain.trim_end()),
        "CERTD_FULLCHAIN is not CERTD_CERT followed by CERTD_CHAIN"
    );
    assert!(
        key_matches(&cert, &key),
        "CERTD_PRIVKEY does not belong to CERTD_CERT"
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
    // The hook ran once more, for the failure, with the error and no serial.
    let failed = hook_runs(&hook_dir, "failed");
    assert_eq!(
        failed.len(),
        1,
        "one hook run per failed attempt: {failed:#?}"
    );
    let env = &failed[0];
    assert_eq!(var(env, "CERTD_EVENT"), "failed", "{env:#?}");
    assert_eq!(var(env, "CERTD_SITE"), "m.test", "{env:#?}");
    assert_eq!(var(env, "CERTD_NAMES"), "m.test www.m.test", "{env:#?}");
    assert!(!env.contains_key("CERTD_SERIAL"), "{env:#?}");
    // The error as the operator sees it: the same text `certd issue` printed for the site.
    let error = var(env, "CERTD_ERROR");
    assert!(!error.trim().is_empty(), "{env:#?}");
    assert!(
        run.stderr.contains(error.trim()),
        "CERTD_ERROR={error:?} is not what certd issue reported:\n{run}"
    );
    assert_eq!(
        hook_runs(&hook_dir, "renewed").len(),
        1,
        "no renewed hook for the failure"
    );
    // The old certificate stays in service.
    assert_eq!(client.serial("m.test").await.ok(), Some(serial));
    drop(daemon);
}
