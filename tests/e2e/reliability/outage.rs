//! A CA outage: the CA disappears just before a scheduled renewal. The old certificate keeps serving,
//! the failure is logged with its cause and recorded (`certd status --json`: `last_error`,
//! `next_attempt`), a renewal asked for through the daemon fails cleanly, and once the CA is back on
//! the same ports (a new Pebble: new root, no memory of the account) the scheduled retry succeeds
//! without any command and the served serial changes.

use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::{static_site, write_file, Served};
use crate::harness::{
    normalize_serial, parse_time, status_site, Certd, HttpsClient, Pebble, PebbleOptions, RunConfig,
};

/// Pebble's certificates live 60 s here...
const VALIDITY_SECS: u64 = 60;
/// ...and are due for renewal while 80% of that remains: 12 s after issuance, which leaves 48 s for
/// the outage and the recovery before the old one expires.
const REMAINING_FRACTION: f64 = 0.8;

#[tokio::test]
async fn ca_outage_keeps_the_old_certificate_and_the_scheduled_retry_recovers() {
    let started = Instant::now();
    let pebble = Pebble::start_with(PebbleOptions {
        cert_validity_secs: Some(VALIDITY_SECS),
        ..PebbleOptions::default()
    })
    .await;
    let certd = Certd::new();
    write_file(&certd.dir().join("www/index.html"), b"still here\n");
    let mut config = RunConfig::for_pebble(&pebble, vec![static_site("a.test", "www")]);
    config.remaining_fraction = Some(REMAINING_FRACTION);
    let mut served = Served::start(
        pebble,
        certd,
        config,
        &[("first_retry", "\"2s\""), ("longest_retry", "\"5s\"")],
    )
    .await;

    // The CA goes away. Whatever is served now is the certificate that must stay in service.
    served.pebble.stop();
    let old = served
        .client
        .serial("a.test")
        .await
        .expect("a certificate is served");
    let status = served.certd.status().await;
    let old_not_after = parse_time(
        status_site(&status, "a.test")["not_after"]
            .as_str()
            .expect("not_after"),
    );

    // The scheduled renewal comes due (12 s after issuance) and fails; the cause is logged.
    served
        .daemon
        .wait_for_log("renewal failed", Duration::from_secs(40))
        .await;
    let log = served.daemon.log();
    assert!(
        log.contains("cannot reach the CA"),
        "the log must say why the renewal failed:\n{log}"
    );
    let failed_at = started.elapsed();

    // The old certificate is still the one served, on a fresh handshake, and requests work.
    let mut h1 = served.client.http1("a.test").await;
    assert_eq!(
        h1.serial, old,
        "the old certificate must stay in service during the outage"
    );
    let reply = h1.get(&served.authority("a.test"), "/index.html").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(OffsetDateTime::now_utc() < old_not_after);

    // `certd status --json` tells what went wrong and when the next attempt is.
    let now = OffsetDateTime::now_utc();
    let status = served.certd.status().await;
    let entry = status_site(&status, "a.test");
    assert_eq!(
        entry["serial"].as_str().map(normalize_serial).as_deref(),
        Some(old.as_str()),
        "{entry:#}"
    );
    let last_error = entry["last_error"]
        .as_str()
        .unwrap_or_else(|| panic!("no last_error during the outage: {entry:#}"));
    assert!(
        last_error.contains("cannot reach the CA"),
        "last_error must name the cause: {last_error}"
    );
    let next_attempt = parse_time(
        entry["next_attempt"]
            .as_str()
            .unwrap_or_else(|| panic!("no next_attempt during the outage: {entry:#}")),
    );
    assert!(
        next_attempt <= now + time::Duration::seconds(6),
        "next_attempt {next_attempt} is further than longest_retry (5 s) after {now}"
    );

    // Asked through the daemon while the CA is down: a clean failure naming the cause, exit 1.
    let run = served.certd.issue(&["--force"]).await;
    run.expect_code(1);
    assert!(
        run.stderr_messages().iter().any(
            |line| line.starts_with("a.test: failed: ") && line.contains("cannot reach the CA")
        ),
        "expected `a.test: failed: cannot reach the CA ...`\n{run}"
    );
    assert_eq!(served.client.serial("a.test").await.expect("served"), old);

    // The CA comes back on the same ports, knowing nothing of certd's account and with a new root.
    // No command: the scheduled retry (at most `longest_retry` later) re-registers and renews.
    served.pebble.restart().await;
    let back_at = Instant::now();
    let new_root = served.pebble.root_pem().await;
    let client = HttpsClient::new(served.config.https_addr(), &new_root);
    let new = client
        .wait_for_certificate("a.test", Duration::from_secs(40))
        .await;
    let recovered_in = back_at.elapsed();
    assert_ne!(new, old, "a certificate from the new CA is served");
    assert!(
        OffsetDateTime::now_utc() < old_not_after,
        "the renewal must land before the old certificate expires ({old_not_after})"
    );
    let mut h1 = client.http1("a.test").await;
    let reply = h1.get(&served.authority("a.test"), "/index.html").await;
    assert_eq!(reply.text(), "still here\n");
    let log = served.daemon.log();
    assert!(
        log.contains("does not know the stored account"),
        "certd should say it re-registered with the CA that forgot its account:\n{log}"
    );
    let status = served.certd.status().await;
    let entry = status_site(&status, "a.test");
    assert!(
        entry["last_error"].is_null(),
        "cleared on success: {entry:#}"
    );
    println!(
        "outage: renewal failed (logged, recorded) {failed_at:?} into the test; recovered \
         {recovered_in:?} after the CA came back; whole test {:?}",
        started.elapsed()
    );
}
