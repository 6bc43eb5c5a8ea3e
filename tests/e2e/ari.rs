//! ACME profiles and ACME Renewal Information (RFC 9773) end to end: the real `certd` against Pebble
//! behind [`AcmeProxy`], which adds what Pebble 2.4 lacks (`meta.profiles`, `renewalInfo`), serves the
//! renewal windows each test chooses, and records every new-order payload.
//!
//! Covered: the configured profile (global, or a site's own) is sent with each order, a profile the
//! CA does not offer stops `certd issue` (and a SIGHUP reload) before any order, a CA without
//! profiles is sent none; the daemon asks for the window, picks and stores a time inside it, honours
//! the CA's `Retry-After` (clamped to a minute) across restarts, renews when the window arrives with
//! `replaces` naming the old certificate, orders again without `replaces` when the CA refuses it;
//! without ARI the lifetime rule decides and no `replaces` is sent.

use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::harness::{
    assert_offset, cert_id, normalize_serial, parse_issue_stdout, parse_time, record_time,
    status_site, toml_str, AcmeProxy, Certd, Daemon, HttpsClient, IssueOutcome, Pebble,
    ProxyOptions, RunConfig, SeenOrder, Site, Upstream, Window, ALREADY_REPLACED, INVALID_PROFILE,
};

/// How long a test waits for the daemon to act (an order against Pebble takes a second or two; CI
/// machines are slow and run tests in parallel).
const WAIT: Duration = Duration::from_secs(30);

/// The shortest poll interval certd accepts from a CA's `Retry-After` (`ARI_SHORTEST_POLL`).
const SHORTEST_POLL: time::Duration = time::Duration::seconds(60);

/// `toml` with `profile = <profile>` added to its `[acme]` table.
fn with_acme_profile(toml: &str, profile: &str) -> String {
    let anchor = "agree_tos = true\n";
    assert!(toml.contains(anchor), "no [acme] agree_tos in:\n{toml}");
    toml.replacen(
        anchor,
        &format!("{anchor}profile = {}\n", toml_str(profile)),
        1,
    )
}

/// `toml` with `profile = <profile>` added to the `[[site]]` whose first name is `site`.
fn with_site_profile(toml: &str, site: &str, profile: &str) -> String {
    let anchor = format!("names = [{}", toml_str(site));
    let mut out = String::new();
    let mut found = false;
    for line in toml.lines() {
        out += line;
        out += "\n";
        if line.starts_with(&anchor) {
            out += &format!("profile = {}\n", toml_str(profile));
            found = true;
        }
    }
    assert!(found, "no [[site]] {site} in:\n{toml}");
    out
}

/// The order the proxy saw for `site` (the only one naming it).
#[track_caller]
fn order_for<'a>(orders: &'a [SeenOrder], site: &str) -> &'a SeenOrder {
    let matching: Vec<&SeenOrder> = orders
        .iter()
        .filter(|order| order.identifiers.iter().any(|name| name == site))
        .collect();
    assert_eq!(matching.len(), 1, "orders for {site}: {orders:#?}");
    matching[0]
}

/// The serial `certd issue` reported for `site`.
#[track_caller]
fn issued_serial(stdout: &str, site: &str) -> String {
    match parse_issue_stdout(stdout).get(site) {
        Some(IssueOutcome::Issued { serial, .. }) => serial.clone(),
        other => panic!("{site} was not issued: {other:?}\n{stdout}"),
    }
}

/// `state/certs/<site>/record.json`, parsed.
fn record(certd: &Certd, site: &str) -> serde_json::Value {
    let text = certd.read_site_file(site, "record.json");
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("record.json: {err}\n{text}"))
}

/// Polls `record.json` until it holds an ARI choice for the certificate with `serial`.
async fn wait_for_ari_record(
    certd: &Certd,
    daemon: &Daemon,
    site: &str,
    serial: &str,
) -> serde_json::Value {
    let what = format!("ARI choice for serial {serial}");
    daemon
        .wait_for_record(certd, site, WAIT, &what, |record| {
            let for_serial = record["ari_serial"].as_str().map(normalize_serial);
            for_serial.as_deref() == Some(serial) && record["ari_poll_at"].is_string()
        })
        .await
}

/// When the proxy last answered a renewal-information request for `cert_id`.
#[track_caller]
fn last_asked(proxy: &AcmeProxy, cert_id: &str) -> OffsetDateTime {
    let requests = proxy.renewal_info_requests();
    requests
        .iter()
        .rev()
        .find(|request| request.cert_id == cert_id)
        .unwrap_or_else(|| panic!("no renewal-info request for {cert_id}: {requests:#?}"))
        .at
}

/// Waits until the daemon's scheduler has planned its first sleep, and returns its length in seconds
/// (from the `next renewal check seconds=N` debug line).
async fn next_sleep(daemon: &Daemon) -> u64 {
    let needle = "next renewal check seconds=";
    daemon.wait_for_log(needle, WAIT).await;
    let log = daemon.log();
    let line = log
        .lines()
        .find(|line| line.contains(needle))
        .expect("the line just waited for");
    let seconds = line.split(needle).nth(1).unwrap_or_default();
    seconds
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no seconds in {line:?}"))
}

/// Stops the daemon with SIGTERM and checks it exits 0.
async fn stop(daemon: &mut Daemon) {
    daemon.signal("TERM");
    let exited = daemon
        .wait_exit(WAIT)
        .await
        .expect("certd run exits on SIGTERM");
    assert!(exited.success(), "certd run exited with {exited}");
}

/// `a.test` (proxying to an echo upstream), issued once by `certd issue` before any daemon runs,
/// through an ACME proxy that offers every certificate the same renewal window.
struct Issued {
    certd: Certd,
    config: RunConfig,
    proxy: AcmeProxy,
    /// Kept for the daemon a test starts on `config`.
    upstream: Upstream,
    pebble: Pebble,
    /// The first certificate's serial, and its ARI certificate id.
    old: String,
    old_id: String,
}

/// [`Issued`] with `window` as the proxy's window for every certificate.
async fn issued_with_window(window: &Window) -> Issued {
    let pebble = Pebble::start().await;
    let upstream = Upstream::echo().await;
    let proxy = AcmeProxy::start(
        &pebble,
        ProxyOptions {
            default_window: Some(window.clone()),
            ..ProxyOptions::default()
        },
    )
    .await;
    let config = proxy.run_config(
        &pebble,
        vec![Site::new(&["a.test"]).proxy("/", &upstream.url())],
    );
    let certd = Certd::new();
    config.write(&certd);
    let run = certd.issue(&[]).await;
    run.expect_code(0);
    let old = issued_serial(&run.stdout, "a.test");
    let old_id = cert_id(&certd.read_site_file("a.test", "cert.pem"));
    Issued {
        certd,
        config,
        proxy,
        upstream,
        pebble,
        old,
        old_id,
    }
}

/// `certd status --json`'s entry for `site`.
async fn status_entry(certd: &Certd, site: &str) -> serde_json::Value {
    let status = certd.status().await;
    status_site(&status, site).clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_are_checked_against_the_directory_and_sent_with_each_order() {
    let pebble = Pebble::start().await;
    let proxy = AcmeProxy::start(&pebble, ProxyOptions::default()).await;
    let two_sites = proxy
        .certd_config(&pebble, &[&["a.test"], &["b.test"]])
        .to_toml();

    // A profile the CA does not offer: a configuration error when certd connects, before any order,
    // whether it is `[acme] profile` or a site's own.
    for (toml, site, profile) in [
        (
            with_acme_profile(&two_sites, "nonexistent"),
            "a.test",
            "nonexistent",
        ),
        (
            with_site_profile(
                &with_acme_profile(&two_sites, "tlsserver"),
                "b.test",
                "longlived",
            ),
            "b.test",
            "longlived",
        ),
    ] {
        let certd = Certd::new();
        certd.write_config_text(&toml);
        let run = certd.issue(&[]).await;
        run.expect_code(2);
        let message = run.stderr_messages().join("\n");
        for needle in [
            format!("site {site} asks for the ACME profile \"{profile}\""),
            "which the CA does not offer".to_owned(),
            "classic".to_owned(),
            "tlsserver".to_owned(),
            "shortlived".to_owned(),
        ] {
            assert!(message.contains(&needle), "no {needle:?} in:\n{run}");
        }
        assert!(run.stdout.trim().is_empty(), "{run}");
        assert_eq!(proxy.orders(), Vec::new(), "no order may be placed\n{run}");
    }

    // `[acme] profile` for every site, a site's own `profile` over it.
    let certd = Certd::new();
    certd.write_config_text(&with_site_profile(
        &with_acme_profile(&two_sites, "tlsserver"),
        "b.test",
        "shortlived",
    ));
    let run = certd.issue(&[]).await;
    run.expect_code(0);
    issued_serial(&run.stdout, "a.test");
    issued_serial(&run.stdout, "b.test");
    let orders = proxy.orders();
    assert_eq!(orders.len(), 2, "{orders:#?}");
    for (site, profile) in [("a.test", "tlsserver"), ("b.test", "shortlived")] {
        let order = order_for(&orders, site);
        assert_eq!(order.profile.as_deref(), Some(profile), "{order:#?}");
        assert_eq!(order.replaces, None, "a first order replaces nothing");
        assert_eq!(order.status, 201, "{order:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ari_window_is_picked_inside_the_range_stored_and_honoured() {
    // Far ahead (Pebble's certificates live five years, so the lifetime rule is years away), and a
    // Retry-After below certd's one-minute floor.
    let far = Window::from_now(time::Duration::days(20), time::Duration::days(21), 5);
    let Issued {
        certd,
        config,
        proxy,
        upstream: _upstream,
        pebble,
        old,
        old_id,
    } = issued_with_window(&far).await;
    assert!(
        proxy.renewal_info_requests().is_empty(),
        "`certd issue` orders; the daemon asks for windows"
    );

    // The daemon asks for the window at start, picks a time inside it and keeps it in record.json.
    let before = OffsetDateTime::now_utc();
    let mut daemon = Daemon::start(&certd, config.https_addr()).await;
    let stored = wait_for_ari_record(&certd, &daemon, "a.test", &old).await;
    let after = OffsetDateTime::now_utc();
    let asked: Vec<String> = proxy
        .renewal_info_requests()
        .into_iter()
        .map(|request| request.cert_id)
        .collect();
    assert_eq!(
        asked,
        vec![old_id.clone()],
        "one request, for the served certificate"
    );
    let renew_at = record_time(&stored, "ari_renew_at");
    assert!(
        far.start <= renew_at && renew_at <= far.end,
        "ari_renew_at {renew_at} is outside the window {} .. {}",
        far.start,
        far.end
    );
    // Retry-After: 5 is clamped to a minute.
    let asked_at = last_asked(&proxy, &old_id);
    assert!(before <= asked_at && asked_at <= after);
    assert_offset(
        "ari_poll_at",
        record_time(&stored, "ari_poll_at"),
        asked_at,
        asked_at,
        SHORTEST_POLL,
    );
    let entry = status_entry(&certd, "a.test").await;
    assert_eq!(entry["renewal_window"], "ari", "{entry:#}");
    assert_eq!(
        parse_time(entry["renew_at"].as_str().expect("renew_at")),
        renew_at.replace_nanosecond(0).expect("whole seconds"),
        "status shows the picked time: {entry:#}"
    );
    assert_eq!(proxy.orders().len(), 1, "not due: no order");
    // It plans to wake for that next poll, not for the renewal days away.
    let sleep = next_sleep(&daemon).await;
    assert!(
        (50..=60).contains(&sleep),
        "the daemon sleeps {sleep} s; the next ARI poll is due in a minute"
    );

    // Stopped and started again before the poll time: the stored pick stands, the CA is not asked.
    // `certd issue` on its own honours the pick too.
    stop(&mut daemon).await;
    drop(daemon);
    let run = certd.issue(&[]).await;
    run.expect_code(0);
    assert_eq!(
        parse_issue_stdout(&run.stdout).get("a.test"),
        Some(&IssueOutcome::Skipped {
            until: renew_at.replace_nanosecond(0).expect("whole seconds")
        }),
        "{run}"
    );
    let mut daemon = Daemon::start(&certd, config.https_addr()).await;
    next_sleep(&daemon).await;
    assert_eq!(
        proxy.renewal_info_requests().len(),
        1,
        "asked again before the poll time"
    );
    assert_eq!(
        record_time(&record(&certd, "a.test"), "ari_renew_at"),
        renew_at,
        "the pick changed"
    );

    // The CA moves this certificate's window to now. A daemon (re)started after the poll time asks
    // again (as this one would a minute from now), drops its pick outside the new window, and renews
    // inside it with `replaces` naming the old certificate.
    proxy.set_window(
        &old_id,
        Window::from_now(time::Duration::hours(-1), time::Duration::seconds(3), 3600),
    );
    stop(&mut daemon).await;
    drop(daemon);
    let mut edited = record(&certd, "a.test");
    edited["ari_poll_at"] = "2000-01-01T00:00:00Z".into();
    std::fs::write(
        certd.site_dir("a.test").join("record.json"),
        serde_json::to_vec_pretty(&edited).expect("serialize record"),
    )
    .expect("write record.json");

    let restarted = OffsetDateTime::now_utc();
    let daemon = Daemon::start(&certd, config.https_addr()).await;
    let client = HttpsClient::new(config.https_addr(), &pebble.root_pem().await);
    let new = client.wait_for_new_serial("a.test", &old, WAIT).await;
    let orders = proxy.orders();
    assert_eq!(
        orders.len(),
        2,
        "one renewal, accepted at once: {orders:#?}"
    );
    assert_eq!(orders[1].replaces.as_deref(), Some(old_id.as_str()));
    assert_eq!(orders[1].status, 201, "{:#?}", orders[1]);
    assert_eq!(orders[1].identifiers, vec!["a.test".to_owned()]);
    let polls_for_old = proxy
        .renewal_info_requests()
        .iter()
        .filter(|request| request.cert_id == old_id && request.at >= restarted)
        .count();
    assert_eq!(polls_for_old, 1, "asked again once after the restart");
    assert!(
        !daemon.log().contains("refused `replaces`"),
        "{}",
        daemon.log()
    );

    // The new certificate gets its own window (the far default), picked and shown by status.
    let stored = wait_for_ari_record(&certd, &daemon, "a.test", &new).await;
    let renew_at = record_time(&stored, "ari_renew_at");
    assert!(far.start <= renew_at && renew_at <= far.end, "{stored:#}");
    let new_pem = certd.read_site_file("a.test", "cert.pem");
    assert_ne!(cert_id(&new_pem), old_id);
    let entry = status_entry(&certd, "a.test").await;
    assert_eq!(
        entry["serial"].as_str().map(normalize_serial).as_deref(),
        Some(new.as_str())
    );
    assert_eq!(entry["renewal_window"], "ari", "{entry:#}");
    assert!(entry["last_error"].is_null(), "{entry:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_replaces_is_ordered_again_without_it() {
    let far = Window::from_now(time::Duration::days(20), time::Duration::days(21), 7200);
    let Issued {
        certd,
        config,
        proxy,
        upstream: _upstream,
        pebble,
        old,
        old_id,
    } = issued_with_window(&far).await;

    // The window is already over: renew at once. The CA answers the `replaces` order with 409
    // alreadyReplaced; certd orders once more without `replaces`.
    proxy.set_window(
        &old_id,
        Window::from_now(time::Duration::hours(-2), time::Duration::hours(-1), 3600),
    );
    proxy.refuse_next_replaces();
    let daemon = Daemon::start(&certd, config.https_addr()).await;
    let client = HttpsClient::new(config.https_addr(), &pebble.root_pem().await);
    let new = client.wait_for_new_serial("a.test", &old, WAIT).await;

    let orders = proxy.orders();
    assert_eq!(
        orders.len(),
        3,
        "issue, refused renewal, retry: {orders:#?}"
    );
    assert_eq!(orders[1].replaces.as_deref(), Some(old_id.as_str()));
    assert!(orders[1].refused_by_proxy, "{orders:#?}");
    assert_eq!(orders[1].status, 409);
    assert_eq!(orders[2].replaces, None, "the retry carries no replaces");
    assert_eq!(orders[2].status, 201, "{orders:#?}");
    assert_eq!(orders[2].identifiers, vec!["a.test".to_owned()]);
    daemon
        .wait_for_log("ordering once more without it", WAIT)
        .await;
    assert!(
        daemon.log().contains(ALREADY_REPLACED),
        "the CA's problem is logged:\n{}",
        daemon.log()
    );

    // A success like any other: no failure recorded, and the new certificate polled at the CA's pace.
    let stored = wait_for_ari_record(&certd, &daemon, "a.test", &new).await;
    let new_id = cert_id(&certd.read_site_file("a.test", "cert.pem"));
    let asked = last_asked(&proxy, &new_id);
    assert_offset(
        "ari_poll_at",
        record_time(&stored, "ari_poll_at"),
        asked,
        asked,
        time::Duration::seconds(7200),
    );
    let entry = status_entry(&certd, "a.test").await;
    assert_eq!(
        entry["serial"].as_str().map(normalize_serial).as_deref(),
        Some(new.as_str())
    );
    assert!(entry["last_error"].is_null(), "{entry:#}");
    assert_eq!(entry["consecutive_failures"], 0, "{entry:#}");
    assert_eq!(
        proxy.orders().len(),
        3,
        "no further order: {:#?}",
        proxy.orders()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ari_or_profiles_the_lifetime_rule_decides_and_none_are_sent() {
    let pebble = Pebble::start().await;
    let upstream = Upstream::echo().await;
    let proxy = AcmeProxy::start(
        &pebble,
        ProxyOptions {
            renewal_info: false,
            profiles: Default::default(),
            default_window: None,
            ..ProxyOptions::default()
        },
    )
    .await;
    let mut config = proxy.run_config(
        &pebble,
        vec![Site::new(&["a.test"]).proxy("/", &upstream.url())],
    );
    config.remaining_fraction = Some(0.5);
    let certd = Certd::new();
    // A profile is configured, but a CA offering none is sent none (and that is no error).
    certd.write_config_text(&with_acme_profile(&config.to_toml(), "tlsserver"));
    let run = certd.issue(&[]).await;
    run.expect_code(0);
    let old = issued_serial(&run.stdout, "a.test");
    assert_eq!(proxy.orders()[0].profile, None, "{:#?}", proxy.orders());

    let before = OffsetDateTime::now_utc();
    let daemon = Daemon::start(&certd, config.https_addr()).await;
    let stored = wait_for_ari_record(&certd, &daemon, "a.test", &old).await;
    let after = OffsetDateTime::now_utc();
    assert!(stored["ari_renew_at"].is_null(), "{stored:#}");
    // Asked again a day later, in case the CA starts offering ARI.
    assert_offset(
        "ari_poll_at",
        record_time(&stored, "ari_poll_at"),
        before,
        after,
        time::Duration::days(1),
    );
    let entry = status_entry(&certd, "a.test").await;
    assert_eq!(entry["renewal_window"], "lifetime", "{entry:#}");
    let not_before = parse_time(entry["not_before"].as_str().expect("not_before"));
    let not_after = parse_time(entry["not_after"].as_str().expect("not_after"));
    let lifetime_rule = not_after - (not_after - not_before) * 0.5;
    let renew_at = parse_time(entry["renew_at"].as_str().expect("renew_at"));
    assert!(
        renew_at >= lifetime_rule - time::Duration::seconds(1)
            && renew_at <= lifetime_rule + time::Duration::hours(1),
        "renew_at {renew_at}: expected the lifetime rule {lifetime_rule} plus at most an hour"
    );

    // A forced renewal (handed to the daemon) sends no `replaces` to a CA without ARI.
    let run = certd.issue(&["--force"]).await;
    run.expect_code(0);
    let new = issued_serial(&run.stdout, "a.test");
    assert_ne!(new, old);
    let orders = proxy.orders();
    assert_eq!(orders.len(), 2, "{orders:#?}");
    assert_eq!(orders[1].replaces, None, "{orders:#?}");
    assert_eq!(orders[1].profile, None, "{orders:#?}");
    assert!(proxy.renewal_info_requests().is_empty());
    assert!(
        !daemon.log().contains("refused `replaces`"),
        "{}",
        daemon.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adding_an_unknown_profile_is_caught_before_ordering() {
    let pebble = Pebble::start().await;
    let upstream = Upstream::echo().await;
    let proxy = AcmeProxy::start(&pebble, ProxyOptions::default()).await;
    let mut config = proxy.run_config(
        &pebble,
        vec![Site::new(&["a.test"]).proxy("/", &upstream.url())],
    );
    let certd = Certd::new();
    config.write(&certd);
    let daemon = Daemon::start(&certd, config.https_addr()).await;
    let client = HttpsClient::new(config.https_addr(), &pebble.root_pem().await);
    client.wait_for_certificate("a.test", WAIT).await;

    // SIGHUP adds a site asking for a profile the CA does not offer. As at start-up, that must be
    // caught against the directory, not sent to the CA as a failing order.
    config
        .sites
        .push(Site::new(&["b.test"]).proxy("/", &upstream.url()));
    certd.write_config_text(&with_site_profile(
        &config.to_toml(),
        "b.test",
        "nonexistent",
    ));
    daemon.signal("HUP");
    daemon.wait_for_log("configuration reloaded", WAIT).await;
    let deadline = Instant::now() + WAIT;
    let noticed = "which the CA does not offer";
    while !daemon.log().contains(noticed)
        && !proxy
            .orders()
            .iter()
            .any(|order| order.identifiers == ["b.test"])
    {
        assert!(Instant::now() < deadline, "{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sent: Vec<SeenOrder> = proxy
        .orders()
        .into_iter()
        .filter(|order| order.identifiers == ["b.test"])
        .collect();
    assert!(
        sent.is_empty(),
        "after the reload, the order for b.test went to the CA with the unknown profile \
         (answered {INVALID_PROFILE}) instead of being stopped against the directory: {sent:#?}"
    );
    assert!(daemon.log().contains(noticed), "{}", daemon.log());
    client
        .serial("a.test")
        .await
        .expect("the other site is still served");
}
