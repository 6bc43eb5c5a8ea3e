//! The renewal scheduler survives absurd answers from the CA: the real `certd run` against Pebble
//! behind [`AcmeProxy`], which answers one certificate's renewal information (ARI) with an error and
//! `Retry-After: 300000000000` (some 9,500 years), another's with a window already open and that
//! same `Retry-After`, and that site's order with a 429 `rateLimited` carrying it too. The daemon
//! logs each, bounds each (ARI polls at most a day apart, a CA's wait at most a week), keeps its
//! schedule, and renews a third site when that one's window opens; `certd status` shows the
//! scheduler running.

use std::time::Duration;

use hyper::StatusCode;
use time::OffsetDateTime;

use crate::harness::{
    assert_offset, cert_id, normalize_serial, parse_issue_stdout, parse_time, record_time,
    AcmeProxy, Certd, Daemon, HttpsClient, IssueOutcome, Pebble, ProxyOptions, Site, Upstream,
    Window, RATE_LIMITED,
};

/// How long the test waits for the daemon to act.
const WAIT: Duration = Duration::from_secs(60);

/// A `Retry-After` beyond year 9999 (about 9,500 years of seconds).
const ABSURD: &str = "300000000000";

/// `state/certs/<site>/record.json`, once it holds a value for every one of `fields`.
async fn record_with(
    certd: &Certd,
    daemon: &Daemon,
    site: &str,
    fields: &[&str],
) -> serde_json::Value {
    let what = format!("{fields:?}");
    daemon
        .wait_for_record(certd, site, WAIT, &what, |record| {
            fields.iter().all(|field| !record[*field].is_null())
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_retry_after_from_the_ca_is_bounded_and_renewals_go_on() {
    let pebble = Pebble::start().await;
    let upstream = Upstream::echo().await;
    // Pebble's certificates live five years: without ARI nothing would be due.
    let far = Window::from_now(time::Duration::days(20), time::Duration::days(21), 3600);
    let proxy = AcmeProxy::start(
        &pebble,
        ProxyOptions {
            default_window: Some(far),
            ..ProxyOptions::default()
        },
    )
    .await;
    let sites = ["a.test", "b.test", "c.test"];
    let config = proxy.run_config(
        &pebble,
        sites
            .iter()
            .map(|site| Site::new(&[site]).proxy("/", &upstream.url()))
            .collect(),
    );
    let certd = Certd::new();
    config.write(&certd);
    let run = certd.issue(&[]).await;
    run.expect_code(0);
    let issued = parse_issue_stdout(&run.stdout);
    let serial = |site: &str| match issued.get(site) {
        Some(IssueOutcome::Issued { serial, .. }) => serial.clone(),
        other => panic!("{site} was not issued: {other:?}\n{}", run.stdout),
    };
    let id = |site: &str| cert_id(&certd.read_site_file(site, "cert.pem"));

    // a.test: renewal information fails with an absurd Retry-After (today this panics the
    // scheduler: the date is beyond year 9999).
    proxy.fail_renewal_info(&id("a.test"), StatusCode::SERVICE_UNAVAILABLE, ABSURD);
    // b.test: its window is already over, so it renews at once, polled again "in 9,500 years"; its
    // order is rate-limited with the same Retry-After.
    let mut open = Window::from_now(time::Duration::hours(-2), time::Duration::hours(-1), 0);
    open.retry_after_secs = ABSURD.parse().expect("a number");
    proxy.set_window(&id("b.test"), open);
    proxy.rate_limit_next_order(ABSURD);
    // c.test: its window opens shortly, so the scheduler must still be running then to renew it.
    let mut soon = Window::from_now(time::Duration::seconds(20), time::Duration::seconds(21), 0);
    soon.retry_after_secs = ABSURD.parse().expect("a number");
    proxy.set_window(&id("c.test"), soon.clone());

    let before = OffsetDateTime::now_utc();
    let daemon = Daemon::start(&certd, config.https_addr()).await;

    // a.test: logged, and asked again after certd's own five minutes (the lifetime rule meanwhile).
    let a = record_with(&certd, &daemon, "a.test", &["ari_poll_at"]).await;
    daemon
        .wait_for_log("cannot fetch the renewal window (ARI)", WAIT)
        .await;
    let after_a = OffsetDateTime::now_utc();
    assert_offset(
        "a.test ari_poll_at",
        record_time(&a, "ari_poll_at"),
        before,
        after_a,
        time::Duration::minutes(5),
    );
    assert!(a["ari_renew_at"].is_null(), "{a:#}");

    // b.test: the ARI poll is held to a day (RFC 9773 §4.3), the rate limit's wait to a week.
    let b = record_with(&certd, &daemon, "b.test", &["ari_poll_at", "next_attempt"]).await;
    let after_b = OffsetDateTime::now_utc();
    assert_offset(
        "b.test ari_poll_at",
        record_time(&b, "ari_poll_at"),
        before,
        after_b,
        time::Duration::days(1),
    );
    assert_offset(
        "b.test next_attempt",
        record_time(&b, "next_attempt"),
        before,
        after_b,
        time::Duration::days(7),
    );
    assert_eq!(b["consecutive_failures"], 1, "{b:#}");
    let error = b["last_error"].as_str().unwrap_or_default();
    assert!(error.contains(RATE_LIMITED), "{b:#}");
    daemon.wait_for_log("renewal failed", WAIT).await;
    assert!(daemon.log().contains(RATE_LIMITED), "{}", daemon.log());

    // c.test: renewed on schedule, when its window opened.
    let client = HttpsClient::new(config.https_addr(), &pebble.root_pem().await);
    let old_c = serial("c.test");
    let new_c = client.wait_for_new_serial("c.test", &old_c, WAIT).await;
    let renewed = OffsetDateTime::now_utc();
    assert!(
        renewed >= soon.start,
        "c.test renewed at {renewed}, before its window opened at {}",
        soon.start
    );
    let orders = proxy.orders();
    assert_eq!(
        orders.len(),
        5,
        "3 issued, b.test rate-limited, c.test renewed: {orders:#?}"
    );
    assert!(
        orders[3].refused_by_proxy && orders[3].status == 429,
        "{orders:#?}"
    );
    assert_eq!(orders[3].identifiers, vec!["b.test".to_owned()]);
    assert_eq!(orders[4].identifiers, vec!["c.test".to_owned()]);
    assert_eq!(orders[4].status, 201, "{orders:#?}");

    // Nothing panicked or had to be restarted, and the daemon still serves.
    let log = daemon.log();
    assert!(!log.contains("panicked"), "{log}");
    assert!(!log.contains("the renewal scheduler stopped"), "{log}");
    assert_eq!(
        client
            .serial("a.test")
            .await
            .ok()
            .map(|served| normalize_serial(&served)),
        Some(normalize_serial(&serial("a.test"))),
        "a.test keeps its certificate"
    );

    // `certd status` sees the daemon's scheduler, which ran a moment ago.
    let status = certd.status().await;
    let scheduler = &status["scheduler"];
    assert_eq!(scheduler["state"], "ok", "{status:#}");
    assert_eq!(scheduler["daemon_pid"], daemon.pid(), "{status:#}");
    assert_eq!(scheduler["restarts"], 0, "{status:#}");
    let last_run = parse_time(scheduler["last_run"].as_str().expect("last_run"));
    assert!(
        last_run >= before.replace_nanosecond(0).expect("whole seconds"),
        "{status:#}"
    );
    let _ = new_c;
}
