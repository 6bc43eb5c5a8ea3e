//! certd across a fleet (issue #12): three `certd run` nodes on 127.0.0.1-3 sharing one PostgreSQL
//! database and one Pebble ([`Fleet`]). Every site name resolves to the harness's relay, which hands
//! each challenge request to a node that does **not** hold the site's lease, so every validation here
//! passes only because any node answers any node's challenge.

use std::time::Duration;

use crate::harness::{normalize_serial, serial_hex, Fleet, HttpsClient, Layout, TLS_ALPN_PATH};

/// Long enough for three nodes starting at once on a busy machine to order, validate and install.
const INSTALL_WAIT: Duration = Duration::from_secs(150);

/// What the node that installed `site`'s certificate serves for it (within 30 s), as a serial.
async fn served_by(fleet: &Fleet, node: &str, site: &str) -> String {
    let root = fleet.pebble.root_pem().await;
    let client = HttpsClient::new(fleet.https_addr(node), &root);
    normalize_serial(
        &client
            .wait_for_certificate(site, Duration::from_secs(30))
            .await,
    )
}

/// A node waits `first_retry` after another's attempt started before it tries (an attempt that
/// died counts as a failed one), and for the lease to expire: both short here.
const TAKE_OVER: &str = "[renewal]\nfirst_retry = \"5s\"\n";

fn live_serial(fleet: &Fleet, site: &str) -> String {
    normalize_serial(&serial_hex(&fleet.live_cert(site)))
}

/// Scenario 1: an empty database, two sites, three nodes started together.
#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_on_an_empty_database_order_once_per_site_another_node_answers_and_all_serve_it(
) {
    const SITES: [&str; 2] = ["one.fleet.test", "two.fleet.test"];
    let fleet = Fleet::start(3, &[&[SITES[0]], &[SITES[1]]], "20s", "").await;
    let mut installers = Vec::new();
    for site in SITES {
        installers.push(fleet.wait_for_installs(site, 1, INSTALL_WAIT).await);
    }
    // Every node serves what the holders installed within 5 s (pushed by LISTEN/NOTIFY; the
    // poll is a minute by default, so only the notification can be this fast).
    let installed = tokio::time::Instant::now();
    let root = fleet.pebble.root_pem().await;
    for site in SITES {
        let live = live_serial(&fleet, site);
        for node in &fleet.nodes {
            let client = HttpsClient::new(fleet.https_addr(&node.name), &root);
            loop {
                let served = client.serial(site).await.ok().map(|s| normalize_serial(&s));
                if served.as_deref() == Some(live.as_str()) {
                    break;
                }
                assert!(
                    installed.elapsed() < Duration::from_secs(5),
                    "{} serves {served:?} for {site}, not the live {live}, 5 s after the install\n{}",
                    node.name,
                    fleet.logs()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // Nothing more is ordered once both are in (a node that lost the race must not order too).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let logs = fleet.logs();

    // Exactly one order per site: Pebble and the shared ledger agree.
    assert_eq!(
        fleet.pebble_orders(),
        SITES.len(),
        "{}\n{logs}",
        fleet.pebble.log()
    );
    for (site, installer) in SITES.iter().zip(&installers) {
        assert_eq!(fleet.ledger(site, "ordered"), 1, "{site}\n{logs}");
        assert_eq!(fleet.ledger(site, "issued"), 1, "{site}\n{logs}");
        assert_eq!(
            fleet.sql(&format!(
                "SELECT count(*) FROM cert_versions WHERE site = '{site}'"
            )),
            "1",
            "{site}\n{logs}"
        );

        // The node that held the lease serves what it installed.
        assert_eq!(
            served_by(&fleet, installer, site).await,
            live_serial(&fleet, site),
            "{site} on {installer}"
        );

        // The CA's request was answered by another node, from the database.
        let validations: Vec<_> = fleet
            .relay
            .seen()
            .into_iter()
            .filter(|seen| seen.host == *site && !seen.is_preflight())
            .collect();
        assert!(!validations.is_empty(), "{site}: no validation\n{logs}");
        for seen in &validations {
            assert_eq!(seen.holder.as_deref(), Some(installer.as_str()), "{seen:?}");
            let answerer = seen.to.as_deref().unwrap_or_else(|| panic!("{seen:?}"));
            assert_ne!(answerer, installer, "{seen:?}");
            assert!(seen.status.contains(" 200"), "{seen:?}\n{logs}");
            assert!(
                fleet
                    .node(answerer)
                    .log()
                    .contains("answered an HTTP-01 challenge of another node"),
                "{answerer} did not answer from the store\n{logs}"
            );
        }
        // Preflight's self-test, too, was answered by a node other than the one checking.
        assert!(
            fleet.relay.seen().iter().any(|seen| seen.host == *site
                && seen.is_preflight()
                && seen.status.contains(" 200")),
            "{site}: preflight was not answered by another node\n{logs}"
        );
    }
    // The answers are withdrawn once the orders are done.
    assert_eq!(fleet.sql("SELECT count(*) FROM challenges"), "0", "{logs}");
}

/// Scenario 3: the lease holder is SIGKILLed mid-order; another node completes the renewal after
/// the lease expires, and one certificate is installed, not two.
#[tokio::test(flavor = "multi_thread")]
async fn a_holder_killed_mid_order_is_taken_over_after_its_lease_and_one_certificate_installed() {
    const SITE: &str = "kill.fleet.test";
    let mut fleet = Fleet::start_held(3, &[&[SITE]], "4s", TAKE_OVER).await;
    // The holder has ordered and told the CA to validate; the relay holds the CA's request.
    let victim = fleet.relay.wait_for_held(SITE, INSTALL_WAIT).await;
    assert_eq!(fleet.ledger(SITE, "ordered"), 1, "{}", fleet.logs());
    fleet.relay.avoid(&victim);
    fleet.node(&victim).daemon().signal("KILL");
    let _ = fleet
        .node_mut(&victim)
        .daemon
        .as_mut()
        .expect("daemon")
        .wait_exit(Duration::from_secs(10))
        .await;
    fleet.relay.release();

    let installer = fleet.wait_for_installs(SITE, 1, INSTALL_WAIT).await;
    assert_ne!(installer, victim, "{}", fleet.logs());
    // Nothing else arrives: one certificate installed, one issued.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let logs = fleet.logs();
    assert_eq!(
        fleet.sql(&format!(
            "SELECT count(*) FROM cert_versions WHERE site = '{SITE}'"
        )),
        "1",
        "{logs}"
    );
    assert_eq!(fleet.pebble.issued_count(), 1, "{logs}");
    assert_eq!(fleet.ledger(SITE, "ordered"), 2, "{logs}");
    assert_eq!(fleet.ledger(SITE, "issued"), 1, "{logs}");
    // The take-over waited for the lease: a survivor that tried while the victim held it was
    // turned away. (Which survivor tries first, and whether the installer itself was turned away,
    // depends on when each one's scheduler wakes; at least one of them tried during the order.)
    assert!(
        fleet
            .nodes
            .iter()
            .filter(|node| node.name != victim)
            .any(|node| node.log().contains("another node holds the site's lease")),
        "{logs}"
    );
    assert_eq!(
        served_by(&fleet, &installer, SITE).await,
        live_serial(&fleet, SITE)
    );
}

/// Scenario 4: the lease holder is SIGSTOPped until its lease expired and another node renewed,
/// then SIGCONTed: its install is refused by the fencing token and the newer certificate stays live.
#[tokio::test(flavor = "multi_thread")]
async fn a_paused_holders_late_install_is_refused_by_its_fencing_token() {
    const SITE: &str = "pause.fleet.test";
    let fleet = Fleet::start_held(3, &[&[SITE]], "4s", TAKE_OVER).await;
    let paused = fleet.relay.wait_for_held(SITE, INSTALL_WAIT).await;
    fleet.relay.avoid(&paused);
    fleet.node(&paused).daemon().signal("STOP");
    // The CA validates the paused node's order (another node answers), but it cannot finish.
    fleet.relay.release();

    let installer = fleet.wait_for_installs(SITE, 1, INSTALL_WAIT).await;
    assert_ne!(installer, paused, "{}", fleet.logs());
    let newer = live_serial(&fleet, SITE);

    fleet.node(&paused).daemon().signal("CONT");
    fleet
        .node(&paused)
        .daemon()
        .wait_for_log("fencing token", Duration::from_secs(90))
        .await;
    let logs = fleet.logs();
    let paused_log = fleet.node(&paused).log();
    assert!(
        paused_log.contains(&format!("install of {SITE} refused")),
        "{paused_log}"
    );
    // The paused node did get its certificate from the CA: only the fence kept it out.
    assert_eq!(fleet.pebble.issued_count(), 2, "{logs}");
    assert_eq!(
        fleet.sql(&format!(
            "SELECT count(*) FROM cert_versions WHERE site = '{SITE}'"
        )),
        "1",
        "{logs}"
    );
    assert_eq!(live_serial(&fleet, SITE), newer, "{logs}");
    assert_eq!(served_by(&fleet, &installer, SITE).await, newer);
}

/// The ACME account URL a node's log says it used: the one it created, the one another node
/// created while it waited for the account lease, or the one it found stored.
fn account_used(log: &str) -> Option<String> {
    const USES: [&str; 3] = [
        "created an ACME account",
        "using the ACME account another node created",
        "reusing the stored ACME account",
    ];
    log.lines()
        .find(|line| USES.iter().any(|use_| line.contains(use_)))
        .and_then(|line| line.split("account=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .map(|url| url.trim_matches('"').to_owned())
}

/// Account creation is leased like a renewal: three nodes, each serving its own site, start
/// together on an empty database and each orders at once, against a CA that takes 3 s to create an
/// account (so all three need it while the first is still being created). One account is created
/// at the CA and stored, the others waited for it, and every node's order used it.
#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_starting_together_on_an_empty_database_create_one_account_and_all_order_with_it(
) {
    const SITES: [&str; 3] = ["acct1.fleet.test", "acct2.fleet.test", "acct3.fleet.test"];
    let layout = Layout {
        site_per_node: true,
        new_account_delay: Some(Duration::from_secs(3)),
        ..Layout::default()
    };
    let fleet = Fleet::start_with(
        3,
        &[&[SITES[0]], &[SITES[1]], &[SITES[2]]],
        "20s",
        "",
        layout,
    )
    .await;
    let mut installers = Vec::new();
    for site in SITES {
        installers.push(fleet.wait_for_installs(site, 1, INSTALL_WAIT).await);
    }
    let logs = fleet.logs();
    // Every node ordered (its own site), so every node needed the account at start.
    assert_eq!(installers, ["node-1", "node-2", "node-3"], "{logs}");
    for site in SITES {
        assert_eq!(fleet.ledger(site, "ordered"), 1, "{site}\n{logs}");
    }

    // One account at the CA (Pebble counts the registrations), one in the database.
    assert_eq!(
        fleet.pebble.account_count(),
        1,
        "{}\n{logs}",
        fleet.pebble.log()
    );
    assert_eq!(fleet.sql("SELECT count(*) FROM accounts"), "1", "{logs}");
    let creators: Vec<_> = fleet
        .nodes
        .iter()
        .filter(|node| node.log().contains("created an ACME account"))
        .map(|node| node.name.clone())
        .collect();
    assert_eq!(creators.len(), 1, "{creators:?}\n{logs}");
    // At least one other node wanted it while it was being created, and waited for it.
    assert!(
        fleet.nodes.iter().any(|node| node
            .log()
            .contains("another node is creating the ACME account")),
        "{logs}"
    );

    // Each node's order went through that one account.
    let account = account_used(&fleet.node(&creators[0]).log())
        .unwrap_or_else(|| panic!("no account in {}'s log\n{logs}", creators[0]));
    assert!(account.starts_with("https://"), "{account}");
    for node in &fleet.nodes {
        assert_eq!(
            account_used(&node.log()).as_deref(),
            Some(account.as_str()),
            "{}\n{logs}",
            node.name
        );
    }
    // The account lease was given back once the account was stored.
    assert_eq!(
        fleet.sql("SELECT count(*) FROM leases WHERE site LIKE 'account:%'"),
        "0",
        "{logs}"
    );
}

/// TLS-ALPN-01 in a fleet: the CA's validation connection (relayed by the ClientHello's server
/// name) reaches a node that does not hold the lease, which answers with the challenge
/// certificate the holder published in the database, and the certificate is issued.
#[tokio::test(flavor = "multi_thread")]
async fn tls_alpn01_validation_reaching_a_node_without_the_lease_is_answered_from_the_database() {
    const SITE: &str = "alpn.fleet.test";
    let layout = Layout {
        tls_alpn: true,
        ..Layout::default()
    };
    let fleet = Fleet::start_with(3, &[&[SITE]], "20s", "", layout).await;
    let installer = fleet.wait_for_installs(SITE, 1, INSTALL_WAIT).await;
    let logs = fleet.logs();
    assert_eq!(fleet.ledger(SITE, "ordered"), 1, "{logs}");
    assert_eq!(fleet.ledger(SITE, "issued"), 1, "{logs}");

    let validations: Vec<_> = fleet
        .relay
        .seen()
        .into_iter()
        .filter(|seen| seen.host == SITE && seen.path == TLS_ALPN_PATH)
        .collect();
    assert!(!validations.is_empty(), "no TLS-ALPN-01 validation\n{logs}");
    for seen in &validations {
        assert_eq!(seen.holder.as_deref(), Some(installer.as_str()), "{seen:?}");
        let answerer = seen.to.as_deref().unwrap_or_else(|| panic!("{seen:?}"));
        assert_ne!(answerer, installer, "{seen:?}");
        assert!(seen.status.ends_with(" bytes back"), "{seen:?}\n{logs}");
        // The node it reached built the challenge certificate from the holder's published answer.
        assert!(
            fleet
                .node(answerer)
                .log()
                .contains("answering a TLS-ALPN-01 challenge of another node"),
            "{answerer} did not answer from the store\n{logs}"
        );
    }
    // No HTTP-01 validation took place: TLS-ALPN-01 is what validated the certificate.
    assert!(
        !fleet.relay.seen().iter().any(|seen| seen.host == SITE
            && seen.path.starts_with("/.well-known/acme-challenge/")
            && !seen.is_preflight()),
        "{logs}"
    );
    assert_eq!(
        fleet.sql(&format!(
            "SELECT record->>'challenge' FROM site_records WHERE site = '{SITE}'"
        )),
        "tls-alpn-01",
        "{logs}"
    );
    // The answers are withdrawn, and the holder serves what it installed.
    assert_eq!(fleet.sql("SELECT count(*) FROM challenges"), "0", "{logs}");
    assert_eq!(
        served_by(&fleet, &installer, SITE).await,
        live_serial(&fleet, SITE)
    );
}
