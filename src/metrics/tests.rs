//! Metrics tests: counting, both exposition formats, label escaping, Accept negotiation, and the
//! gauges read from the state directory at scrape time.
#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn requests_are_counted_by_site_and_class() {
    let metrics = Metrics::default();
    metrics.site("a.test").count(StatusCode::OK);
    metrics.site("a.test").count(StatusCode::NOT_FOUND);
    metrics.site("a.test").count(StatusCode::OK);
    metrics.handshake_ok();
    metrics.handshake_failed();
    let config = crate::config::from_toml(
        "[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n[[site]]\nnames = [\"a.test\"]\n",
        std::path::Path::new("/tmp/certd.toml"),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(dir.path()).unwrap();
    let text = metrics.render(&config, &store, OffsetDateTime::now_utc());
    assert!(
        text.contains("certd_http_requests_total{site=\"a.test\",code=\"2xx\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("certd_http_requests_total{site=\"a.test\",code=\"4xx\"} 1"),
        "{text}"
    );
    assert!(text.contains("certd_tls_handshakes_total 1"), "{text}");
    assert!(
        text.contains("certd_tls_handshake_errors_total 1"),
        "{text}"
    );
    assert!(
        text.contains("certd_renewal_consecutive_failures{site=\"a.test\"} 0"),
        "{text}"
    );
    // No certificate yet: the next renewal is now.
    assert!(
        text.contains("certd_certificate_next_renewal_seconds{site=\"a.test\"}"),
        "{text}"
    );
    assert!(
        !text.contains("certd_certificate_not_after_seconds{"),
        "{text}"
    );
}

#[test]
fn an_unreadable_state_directory_is_reported() {
    let metrics = Metrics::default();
    let config = crate::config::from_toml(
        "[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n[[site]]\nnames = [\"a.test\"]\n",
        std::path::Path::new("/tmp/certd.toml"),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(dir.path()).unwrap();
    let now = OffsetDateTime::now_utc();
    let text = metrics.render(&config, &store, now);
    assert!(text.contains("\ncertd_state_readable 1\n"), "{text}");
    assert!(text.contains("\ncertd_storage_up 1\n"), "{text}");
    assert!(
        text.contains("\ncertd_storage_unreachable_seconds 0\n"),
        "{text}"
    );
    // A live link that points nowhere sensible: the site's certificate cannot be read.
    let live = store.layout().live_link("a.test").unwrap();
    std::fs::create_dir_all(live.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink("elsewhere", &live).unwrap();
    let text = metrics.render(&config, &store, now);
    assert!(text.contains("\ncertd_state_readable 0\n"), "{text}");
    std::fs::remove_file(&live).unwrap();
    // The whole state directory gone (an unmounted disk).
    let gone = crate::store::Store::open(dir.path()).unwrap();
    drop(dir);
    let text = metrics.render(&config, &gone, now);
    assert!(text.contains("\ncertd_state_readable 0\n"), "{text}");
    assert!(text.contains("\ncertd_storage_up 0\n"), "{text}");
}

#[test]
fn the_scheduler_is_reported_and_far_record_dates_do_not_panic() {
    let metrics = Metrics::default();
    let config = crate::config::from_toml(
        "[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n[[site]]\nnames = [\"a.test\"]\n",
        std::path::Path::new("/tmp/certd.toml"),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(dir.path()).unwrap();
    // A crash mid-order recorded at the last second of year 9999 (a broken clock, an edited
    // file): the first retry after it is beyond what a date can hold.
    let last_second = OffsetDateTime::from_unix_timestamp(253_402_300_799).unwrap();
    let record = crate::store::SiteRecord {
        attempt_started: Some(last_second),
        ..Default::default()
    };
    store.save_record("a.test", &record).unwrap();
    let now = OffsetDateTime::from_unix_timestamp(1_780_000_000).unwrap();
    let text = metrics.render(&config, &store, now);
    assert!(
        text.contains("certd_scheduler_last_run_seconds 0\n"),
        "{text}"
    );
    assert!(
        text.contains("certd_scheduler_restarts_total 0\n"),
        "{text}"
    );
    assert!(
        text.contains("certd_certificate_next_renewal_seconds{site=\"a.test\"} 253402214400\n"),
        "held at 9999-12-31: {text}"
    );
    metrics.scheduler().restarted();
    metrics.scheduler().ran(now);
    let text = metrics.render(&config, &store, now);
    assert!(
        text.contains(
            "# TYPE certd_scheduler_restarts_total counter\ncertd_scheduler_restarts_total 1\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("# TYPE certd_scheduler_last_run_seconds gauge\ncertd_scheduler_last_run_seconds 1780000000"),
        "{text}"
    );
    assert_eq!(metrics.scheduler().last_run(), Some(now));
}

#[test]
fn dropped_log_lines_are_a_counter() {
    let gauges = ScrapeGauges {
        log_lines_dropped: 42,
        ..ScrapeGauges::default()
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(gauges));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).unwrap();
    assert!(
        out.contains("# TYPE certd_log_lines_dropped_total counter\n"),
        "{out}"
    );
    assert!(
        out.ends_with("\ncertd_log_lines_dropped_total 42\n"),
        "{out}"
    );
}

fn one_site_config() -> Config {
    crate::config::from_toml(
        "[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n[[site]]\nnames = [\"a.test\"]\n",
        std::path::Path::new("/tmp/certd.toml"),
    )
    .unwrap()
}

/// Every name deploy/monitoring and the e2e tests rely on, with its TYPE, in both formats.
#[test]
fn both_formats_keep_every_name_and_type() {
    let metrics = Metrics::default();
    metrics.site("a.test").count(StatusCode::OK);
    let config = one_site_config();
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(dir.path()).unwrap();
    let now = OffsetDateTime::now_utc();
    let text = metrics.render_as(Format::Text, &config, &store, now);
    let open = metrics.render_as(Format::OpenMetrics, &config, &store, now);
    let gauges = [
        "certd_certificate_not_after_seconds",
        "certd_certificate_next_renewal_seconds",
        "certd_renewal_consecutive_failures",
        "certd_renewal_slowed",
        "certd_renewal_last_success_seconds",
        "certd_state_readable",
        "certd_scheduler_last_run_seconds",
    ];
    let counters = [
        "certd_http_requests",
        "certd_tls_handshakes",
        "certd_tls_handshake_errors",
        "certd_scheduler_restarts",
        "certd_log_lines_dropped",
    ];
    for name in gauges {
        assert!(
            text.contains(&format!("\n# TYPE {name} gauge\n")),
            "{name}: {text}"
        );
        assert!(
            text.contains(&format!("\n# HELP {name} ")),
            "{name}: {text}"
        );
        assert!(
            open.contains(&format!("# TYPE {name} gauge\n")),
            "{name}: {open}"
        );
    }
    for name in counters {
        // Plain text: the family is named like its samples; OpenMetrics: without `_total`.
        assert!(
            text.contains(&format!("# TYPE {name}_total counter\n")),
            "{name}: {text}"
        );
        assert!(
            open.contains(&format!("# TYPE {name} counter\n")),
            "{name}: {open}"
        );
        assert!(open.contains(&format!("\n{name}_total")), "{name}: {open}");
    }
    // Units are OpenMetrics metadata; the plain text format has none.
    assert!(
        open.contains("# UNIT certd_certificate_not_after_seconds seconds\n"),
        "{open}"
    );
    assert!(!text.contains("# UNIT"), "{text}");
    // HELP ends in one period, however the help was registered.
    assert!(!text.contains(".."), "{text}");
    assert!(open.ends_with("# EOF\n"), "{open}");
    assert!(!text.contains("# EOF"), "{text}");
    assert!(
        open.contains("certd_http_requests_total{site=\"a.test\",code=\"2xx\"} 1\n"),
        "{open}"
    );
}

#[test]
fn label_values_are_escaped() {
    let metrics = Metrics::default();
    metrics
        .site("we\"ird\\site\nname")
        .count(StatusCode::BAD_GATEWAY);
    let config = one_site_config();
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(dir.path()).unwrap();
    let now = OffsetDateTime::now_utc();
    for format in [Format::Text, Format::OpenMetrics] {
        let page = metrics.render_as(format, &config, &store, now);
        assert!(
            page.contains(
                "certd_http_requests_total{site=\"we\\\"ird\\\\site\\nname\",code=\"5xx\"} 1\n"
            ),
            "{format:?}: {page}"
        );
    }
}

#[test]
fn the_format_follows_the_scrapers_accept_header() {
    use Format::{OpenMetrics, Text};
    let cases: &[(&[&str], Format)] = &[
        (&[], Text),
        (&["*/*"], Text),
        (&["text/plain"], Text),
        (&["text/plain;version=0.0.4"], Text),
        (&["application/json"], Text),
        (&["application/openmetrics-text"], OpenMetrics),
        // What Prometheus 2.x sends.
        (
            &["application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"],
            OpenMetrics,
        ),
        // What Prometheus 3 sends by default.
        (
            &["application/openmetrics-text;version=1.0.0;escaping=allow-utf-8,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1"],
            OpenMetrics,
        ),
        // A scraper configured for the classic format first.
        (
            &["text/plain;version=0.0.4;q=1,application/openmetrics-text;q=0.5"],
            Text,
        ),
        // A tie is plain text; q=0 refuses; a broken q is ignored.
        (&["application/openmetrics-text, text/plain"], Text),
        (&["application/openmetrics-text;q=0, */*;q=0.1"], Text),
        (&["application/openmetrics-text;q=high"], Text),
        (&["text/plain;q=0.2", "application/openmetrics-text;q=0.3"], OpenMetrics),
        (&["garbage;;;, ,"], Text),
    ];
    for (accept, expected) in cases {
        let mut headers = HeaderMap::new();
        for value in *accept {
            headers.append(ACCEPT, value.parse().unwrap());
        }
        assert_eq!(Format::negotiate(&headers), *expected, "{accept:?}");
    }
    assert_eq!(
        Text.content_type(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(
        OpenMetrics.content_type(),
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
}
