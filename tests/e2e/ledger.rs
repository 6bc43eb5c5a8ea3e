//! Rate limits cannot be burnt: a crash loop with a due-but-failing site orders once, not once per
//! restart; a failed preflight orders nothing; every order and outcome is in the ledger.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::harness::{free_port, status_site, Certd, CertdConfig, Daemon, Pebble, RunConfig, Site};

/// How many new-order requests Pebble received (from its "There are now N orders" log lines).
fn orders(pebble: &Pebble) -> usize {
    pebble.log().matches("orders in the db").count()
}

/// Polls `daemon`'s log (bounded by `timeout`) for the scheduler's decision after a start with nothing
/// due: its `next renewal check seconds=N` line. Returns how long it chose to sleep.
async fn wait_for_decision(daemon: &Daemon, timeout: Duration) -> Duration {
    let deadline = Instant::now() + timeout;
    loop {
        let log = daemon.log();
        let decided = log
            .lines()
            .filter(|line| line.contains("next renewal check"))
            .find_map(|line| {
                let (_, after) = line.split_once("seconds=")?;
                let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
                digits.parse::<u64>().ok()
            });
        if let Some(seconds) = decided {
            return Duration::from_secs(seconds);
        }
        assert!(
            Instant::now() < deadline,
            "the scheduler logged no decision within {timeout:?}:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn a_crash_loop_with_a_failing_site_orders_once() {
    let pebble = Pebble::start().await;
    let certd = Certd::new();
    let mut config = RunConfig::for_pebble(&pebble, vec![Site::new(&["loop.test"])]);
    // certd answers challenges on a port where Pebble does not look: every order fails validation
    // (the preflight self-test still passes, since it asks certd's own port).
    config.base.listen = vec![SocketAddr::from(([127, 0, 0, 1], free_port()))];
    config.write(&certd);

    let mut daemon = Daemon::start(&certd, config.https_addr()).await;
    daemon
        .wait_for_log("renewal failed", Duration::from_secs(60))
        .await;
    assert_eq!(orders(&pebble), 1, "{}", pebble.log());

    // Ten restarts, each killed as soon as its scheduler has decided, as a crash loop would. The
    // decision is the scheduler's first "next renewal check" line (it sleeps until the recorded retry
    // time); a scheduler that chose to renew would have logged "renewing" before it.
    for restart in 1..=10 {
        drop(daemon);
        daemon = Daemon::start(&certd, config.https_addr()).await;
        let wait = wait_for_decision(&daemon, Duration::from_secs(30)).await;
        let log = daemon.log();
        assert!(
            !log.contains("renewing sites="),
            "restart {restart}: the scheduler renewed instead of waiting for the recorded retry \
             time:\n{log}"
        );
        assert!(
            wait > Duration::ZERO,
            "restart {restart}: the scheduler must sleep until the retry time, not wake at once:\n{log}"
        );
    }
    drop(daemon);
    assert_eq!(
        orders(&pebble),
        1,
        "restarts must wait out the recorded retry time"
    );

    let status = certd.status().await;
    let site = status_site(&status, "loop.test");
    assert_eq!(site["consecutive_failures"], 1, "{site:#}");
    assert!(site["next_attempt"].is_string(), "{site:#}");
    assert_eq!(site["orders_last_week"]["failed"], 1, "{site:#}");

    // The ledger holds the order and its outcome, with the CA's problem.
    let ledger_dir = certd.state_dir().join("ledger");
    let ledger: String = std::fs::read_dir(&ledger_dir)
        .expect("ledger folder")
        .map(|entry| std::fs::read_to_string(entry.expect("entry").path()).expect("ledger file"))
        .collect();
    let events: Vec<serde_json::Value> = ledger
        .lines()
        .map(|line| serde_json::from_str(line).expect("ledger line"))
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(kinds, ["ordered", "failed"], "{ledger}");
    assert!(
        events[1]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("urn:ietf:params:acme:error:"),
        "{ledger}"
    );
}

#[tokio::test]
async fn a_failed_preflight_places_no_order() {
    let pebble = Pebble::start().await;
    // other.test resolves to 127.0.0.2, where another server answers on certd's port.
    let config = CertdConfig::for_pebble(&pebble, &[&["ok.test"], &["other.test"]]);
    let port = config.listen[0].port();
    let foreign = tokio::net::TcpListener::bind(("127.0.0.2", port))
        .await
        .expect("bind 127.0.0.2");
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = foreign.accept().await {
            let mut buffer = [0u8; 1024];
            let _ = stream.read(&mut buffer).await;
            let _ = stream
                .write_all(b"HTTP/1.1 404 Not Found\r\nServer: nginx\r\nContent-Length: 9\r\n\r\nnot here\n")
                .await;
        }
    });
    pebble
        .challtestsrv(
            "/add-a",
            serde_json::json!({"host": "other.test", "addresses": ["127.0.0.2"]}),
        )
        .await;
    let certd = Certd::with_config(&config);

    let run = certd.issue(&[]).await;
    run.expect_code(1);
    assert!(run.stdout.contains("ok.test: issued serial"), "{run}");
    assert!(
        run.stderr
            .contains("other.test: failed: preflight failed, so no order was placed"),
        "{run}"
    );
    assert!(run.stderr.contains("127.0.0.2"), "{run}");
    assert_eq!(orders(&pebble), 1, "only ok.test was ordered");
    server.abort();
}
