//! Renewal inside `certd run`: `certd issue --force` handed to the daemon (open connections keep
//! working, new handshakes get the new certificate at once), renewal on the daemon's own schedule, and
//! a CA that is down (through the daemon and at a scheduled renewal): the old certificate keeps
//! serving, the failure is recorded with a backoff.

use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::{World, CERT_WAIT};
use crate::harness::{
    normalize_serial, parse_issue_stdout, parse_time, status_site, Certd, HttpsClient,
    IssueOutcome, Pebble, PebbleOptions, RunConfig, Site, Upstream,
};

#[tokio::test]
async fn forced_renewal_through_the_daemon_keeps_open_connections() {
    let pebble = Pebble::start().await;
    let upstream = Upstream::echo().await;
    let config = RunConfig::for_pebble(
        &pebble,
        vec![Site::new(&["a.test"]).proxy("/", &upstream.url())],
    );
    let world = World::serve(pebble, Certd::new(), config).await;
    let old = world.client.wait_for_certificate("a.test", CERT_WAIT).await;
    let host = world.authority("a.test");

    let mut kept = world.client.http1("a.test").await;
    assert_eq!(kept.get(&host, "/before").await.echoed().path, "/before");

    // Not due: handed to the daemon, skipped, nothing ordered.
    let run = world.certd.issue(&[]).await;
    run.expect_code(0);
    assert!(
        matches!(
            parse_issue_stdout(&run.stdout).get("a.test"),
            Some(IssueOutcome::Skipped { .. })
        ),
        "{run}"
    );
    assert_eq!(world.pebble.issued_count(), 1);

    // `certd issue` finds the daemon holding the state and hands the request to it.
    let run = world.certd.issue(&["--force"]).await;
    run.expect_code(0);
    assert!(run.stdout.starts_with("a.test: issued serial "), "{run}");
    let new = match parse_issue_stdout(&run.stdout).get("a.test") {
        Some(IssueOutcome::Issued { serial, .. }) => serial.clone(),
        other => panic!("expected issued, got {other:?}\n{run}"),
    };
    assert_ne!(new, old, "--force must produce a new certificate");

    // The connection opened before the renewal still works, on the old certificate...
    assert_eq!(kept.get(&host, "/after").await.echoed().path, "/after");
    assert_eq!(kept.serial, old);
    // ...and a new handshake gets the new certificate at once.
    assert_eq!(
        world.client.serial("a.test").await.expect("handshake"),
        new,
        "the renewed certificate must be served as soon as certd issue returns"
    );
    assert_eq!(world.status_serial("a.test").await, new);
    assert_eq!(world.pebble.issued_count(), 2);
}

#[tokio::test]
async fn renews_on_schedule_without_any_command() {
    // 30 s certificates renewed when half their lifetime remains: due 15 s after issuance.
    let pebble = Pebble::start_with(PebbleOptions {
        cert_validity_secs: Some(30),
        ..PebbleOptions::default()
    })
    .await;
    let upstream = Upstream::echo().await;
    let mut config = RunConfig::for_pebble(
        &pebble,
        vec![Site::new(&["a.test"]).proxy("/", &upstream.url())],
    );
    config.remaining_fraction = Some(0.5);
    let world = World::serve(pebble, Certd::new(), config).await;
    let old = world.client.wait_for_certificate("a.test", CERT_WAIT).await;
    let status = world.certd.status().await;
    let entry = status_site(&status, "a.test").clone();
    let renew_at = parse_time(entry["renew_at"].as_str().expect("renew_at"));
    let old_not_after = parse_time(entry["not_after"].as_str().expect("not_after"));
    let lifetime = old_not_after - parse_time(entry["not_before"].as_str().expect("not_before"));
    assert!(
        lifetime <= time::Duration::seconds(31),
        "Pebble ignored certificateValidityPeriod: {entry:#}"
    );

    let new = world
        .client
        .wait_for_new_serial("a.test", &old, Duration::from_secs(45))
        .await;
    let seen_at = OffsetDateTime::now_utc();
    assert!(
        seen_at < old_not_after,
        "the new certificate must be served before the old one expires ({old_not_after})"
    );
    let status = world.certd.status().await;
    let entry = status_site(&status, "a.test");
    assert_eq!(
        entry["serial"].as_str().map(normalize_serial).as_deref(),
        Some(new.as_str()),
        "{entry:#}"
    );
    // Not renewed early: the new certificate was issued no sooner than the old one fell due
    // (Pebble's notBefore has whole seconds).
    let new_not_before = parse_time(entry["not_before"].as_str().expect("not_before"));
    assert!(
        new_not_before >= renew_at - time::Duration::seconds(1),
        "renewed at {new_not_before}, before it was due at {renew_at}"
    );
    assert!(entry["last_error"].is_null(), "{entry:#}");

    let mut h1 = world.client.http1("a.test").await;
    assert_eq!(h1.serial, new);
    let echoed = h1.get(&world.authority("a.test"), "/").await.echoed();
    assert_eq!(echoed.path, "/");
}

#[tokio::test]
async fn a_ca_outage_during_renewal_keeps_the_old_certificate() {
    let pebble = Pebble::start().await;
    let upstream = Upstream::echo().await;
    let config = RunConfig::for_pebble(
        &pebble,
        vec![Site::new(&["a.test"]).proxy("/", &upstream.url())],
    );
    let mut world = World::serve(pebble, Certd::new(), config).await;
    let old = world.client.wait_for_certificate("a.test", CERT_WAIT).await;

    world.pebble.stop();
    let run = world.certd.issue(&["--force"]).await;
    run.expect_code(1);
    assert!(!run.stdout.contains("issued"), "{run}");
    assert!(
        run.stderr_messages()
            .iter()
            .any(|line| line.starts_with("a.test: failed: ")),
        "no `a.test: failed: ...` line\n{run}"
    );

    // The old certificate stays in service.
    assert_eq!(world.client.serial("a.test").await.expect("a.test"), old);
    let mut h1 = world.client.http1("a.test").await;
    assert_eq!(
        h1.get(&world.authority("a.test"), "/").await.echoed().path,
        "/"
    );

    // The failure is recorded, with a retry after the first backoff (5 minutes).
    let now = OffsetDateTime::now_utc();
    let status = world.certd.status().await;
    let entry = status_site(&status, "a.test");
    assert_eq!(
        entry["serial"].as_str().map(normalize_serial).as_deref(),
        Some(old.as_str()),
        "{entry:#}"
    );
    assert!(
        entry["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{entry:#}"
    );
    let next_attempt = parse_time(
        entry["next_attempt"]
            .as_str()
            .unwrap_or_else(|| panic!("no next_attempt: {entry:#}")),
    );
    assert!(
        next_attempt > now + time::Duration::minutes(4)
            && next_attempt < now + time::Duration::minutes(6),
        "next_attempt {next_attempt} is not about 5 minutes after {now}"
    );
    let record: serde_json::Value =
        serde_json::from_str(&world.certd.read_site_file("a.test", "record.json"))
            .expect("record.json is JSON");
    assert!(record["last_error"].is_string(), "{record:#}");
    assert_eq!(record["consecutive_failures"], 1, "{record:#}");

    // A second failure doubles the wait.
    let run = world.certd.issue(&["--force"]).await;
    run.expect_code(1);
    let now = OffsetDateTime::now_utc();
    let record: serde_json::Value =
        serde_json::from_str(&world.certd.read_site_file("a.test", "record.json"))
            .expect("record.json is JSON");
    assert_eq!(record["consecutive_failures"], 2, "{record:#}");
    let next_attempt = parse_time(record["next_attempt"].as_str().expect("next_attempt"));
    assert!(
        next_attempt > now + time::Duration::minutes(9)
            && next_attempt < now + time::Duration::minutes(11),
        "next_attempt {next_attempt} is not about 10 minutes after {now}"
    );
    assert_eq!(world.client.serial("a.test").await.expect("a.test"), old);

    // The CA comes back (with a new root and no memory of the account): a forced renewal works again
    // and is served at once.
    world.pebble.restart().await;
    let run = world.certd.issue(&["--force"]).await;
    run.expect_code(0);
    let new = match parse_issue_stdout(&run.stdout).get("a.test") {
        Some(IssueOutcome::Issued { serial, .. }) => serial.clone(),
        other => panic!("expected issued, got {other:?}\n{run}"),
    };
    let client = HttpsClient::new(world.config.https_addr(), &world.pebble.root_pem().await);
    assert_eq!(
        client.serial("a.test").await.expect("renewed certificate"),
        new
    );
    let status = world.certd.status().await;
    assert!(
        status_site(&status, "a.test")["last_error"].is_null(),
        "{status:#}"
    );
}

#[tokio::test]
async fn a_failed_scheduled_renewal_keeps_the_old_certificate_and_backs_off() {
    // 30 s certificates due when half their lifetime remains; the CA is gone by then.
    let pebble = Pebble::start_with(PebbleOptions {
        cert_validity_secs: Some(30),
        ..PebbleOptions::default()
    })
    .await;
    let upstream = Upstream::echo().await;
    let mut config = RunConfig::for_pebble(
        &pebble,
        vec![Site::new(&["a.test"]).proxy("/", &upstream.url())],
    );
    config.remaining_fraction = Some(0.5);
    let mut world = World::serve(pebble, Certd::new(), config).await;
    let old = world.client.wait_for_certificate("a.test", CERT_WAIT).await;
    world.pebble.stop();

    // Wait for the scheduler's attempt to be recorded.
    let deadline = Instant::now() + Duration::from_secs(40);
    let record = loop {
        let text = std::fs::read_to_string(world.certd.site_dir("a.test").join("record.json"))
            .unwrap_or_default();
        let record: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if record["last_error"].is_string() {
            break record;
        }
        assert!(
            Instant::now() < deadline,
            "no failure recorded within 40 s: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let failed_at = OffsetDateTime::now_utc();
    assert_eq!(record["consecutive_failures"], 1, "{record:#}");
    let next_attempt = parse_time(record["next_attempt"].as_str().expect("next_attempt"));
    assert!(
        next_attempt > failed_at + time::Duration::minutes(4)
            && next_attempt < failed_at + time::Duration::minutes(6),
        "next_attempt {next_attempt} is not about 5 minutes after {failed_at}"
    );

    // The old certificate is still served (it is valid for 30 s), and requests still work.
    assert_eq!(world.client.serial("a.test").await.expect("a.test"), old);
    let mut h1 = world.client.http1("a.test").await;
    assert_eq!(
        h1.get(&world.authority("a.test"), "/").await.echoed().path,
        "/"
    );
    let status = world.certd.status().await;
    let entry = status_site(&status, "a.test");
    assert!(entry["last_error"].is_string(), "{entry:#}");
    let shown = parse_time(entry["next_attempt"].as_str().expect("next_attempt"));
    assert!(
        (shown - next_attempt).abs() < time::Duration::seconds(1),
        "status shows next_attempt {shown}, record.json {next_attempt}"
    );

    // No retry before the backoff is over.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again: serde_json::Value =
        serde_json::from_str(&world.certd.read_site_file("a.test", "record.json"))
            .expect("record.json");
    assert_eq!(
        again["consecutive_failures"], 1,
        "retried at once: {again:#}"
    );
    assert_eq!(again["last_attempt"], record["last_attempt"], "{again:#}");
}
