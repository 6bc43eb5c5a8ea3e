//! deploy/monitoring: the Prometheus alert rules load in `promtool check rules` (Debian's `prometheus`
//! package; scripts/test.sh installs it), and every certd metric the rules and the Grafana dashboard
//! use is one a running `certd run` exports on its metrics listener.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use crate::harness::{free_port, Certd, Daemon, HttpsClient, Pebble, RunConfig, Site};

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
    let pebble = Pebble::start().await;
    let certd = Certd::new();
    let config = RunConfig::for_pebble(&pebble, vec![Site::new(&["mon.test"])]);
    let metrics_port = free_port();
    certd.write_config_text(&format!(
        "{}\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
        config.to_toml()
    ));
    let daemon = Daemon::start(&certd, config.https_addr()).await;
    let client = HttpsClient::new(config.https_addr(), &pebble.root_pem().await);
    client
        .wait_for_certificate("mon.test", Duration::from_secs(30))
        .await;
    // One request, so the per-site request counter has a sample.
    let reply = client
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
            daemon.log()
        );
    }
}
