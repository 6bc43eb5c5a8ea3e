//! A fleet's nodes serve each other's certificates within seconds (issue #12, scenario 2): three
//! `certd run` nodes on 127.0.0.1, .2 and .3 share one real PostgreSQL (harness::Postgres); Pebble
//! validates for real. `certd issue --force` on node B installs a new certificate; the install's
//! NOTIFY reaches every node's LISTEN connection and each swaps the new pair into its SNI
//! resolver, checked with real TLS handshakes. With `[storage] notify = false` the poll alone
//! carries the change, within its interval.
//!
//! The nodes are started by a small helper of this file ([`Node`]); the multi-node harness of
//! harness/fleet.rs (another branch) will replace it.

use std::time::{Duration, Instant};

use crate::harness::{Certd, Daemon, HttpsClient, Pebble, Postgres, RunConfig, Site};

const SITE: &str = "fleet-sync.test";
const FLEET_KEY: [u8; 32] = [0x3c; 32];
/// What issue #12 promises for a pushed change.
const PUSHED_WITHIN: Duration = Duration::from_secs(5);

/// One node: its own folder (state_dir, control socket), listening on `ip` for HTTP-01 (Pebble's
/// port) and HTTPS (a free port), on the shared database.
struct Node {
    certd: Certd,
    https: std::net::SocketAddr,
    daemon: Option<Daemon>,
}

impl Node {
    fn new(pebble: &Pebble, pg: &Postgres, ip: &str, name: &str, storage_extra: &str) -> Self {
        let certd = Certd::new();
        let key = certd.dir().join("fleet.key");
        std::fs::write(&key, FLEET_KEY).expect("write key");
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod key");
        std::fs::write(
            certd.dir().join("db-password"),
            format!("{}\n", pg.password()),
        )
        .expect("write password");
        std::fs::create_dir_all(certd.dir().join("www")).expect("mkdir");
        std::fs::write(certd.dir().join("www/index.html"), format!("{name}\n")).expect("write");
        let run = RunConfig::for_pebble(pebble, vec![Site::new(&[SITE]).root("/", "www")]).table(
            &format!(
                "[storage]\nbackend = \"postgres\"\nurl = \"{}\"\npassword_file = \"db-password\"\n\
                 sslmode = \"disable\"\nnode_name = \"{name}\"\nkey_file = \"fleet.key\"\n{storage_extra}",
                pg.url()
            ),
        );
        // The same configuration on this node's own loopback address.
        let config = run
            .to_toml()
            .replace(
                &format!("\"127.0.0.1:{}\"", run.https_port),
                &format!("\"{ip}:{}\"", run.https_port),
            )
            .replace(
                &format!("\"127.0.0.1:{}\"", pebble.http_port),
                &format!("\"{ip}:{}\"", pebble.http_port),
            );
        certd.write_config_text(&config);
        let https = format!("{ip}:{}", run.https_port).parse().expect("address");
        Self {
            certd,
            https,
            daemon: None,
        }
    }

    async fn start(&mut self) {
        self.daemon = Some(Daemon::start(&self.certd, self.https).await);
    }

    fn log(&self) -> String {
        self.daemon.as_ref().map(Daemon::log).unwrap_or_default()
    }

    async fn client(&self, pebble: &Pebble) -> HttpsClient {
        HttpsClient::new(self.https, &pebble.root_pem().await)
    }
}

/// Polls `node` until it serves a serial other than `old`; the time it took, or `None` after
/// `within`.
async fn new_serial_within(
    client: &HttpsClient,
    old: &str,
    within: Duration,
) -> Option<(String, Duration)> {
    let started = Instant::now();
    while started.elapsed() < within {
        if let Ok(serial) = client.serial(SITE).await {
            if serial != old {
                return Some((serial, started.elapsed()));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Issues the first certificate from node B (before any daemon runs), starts every node, checks
/// they all serve it, then `certd issue --force` on B's running daemon; returns the nodes, the old
/// serial and the new one B serves.
async fn fleet_with_a_forced_renewal(
    pebble: &Pebble,
    pg: &Postgres,
    storage_extra: &str,
) -> (Vec<Node>, String, String) {
    let mut nodes = vec![
        Node::new(pebble, pg, "127.0.0.1", "node-a", storage_extra),
        Node::new(pebble, pg, "127.0.0.2", "node-b", storage_extra),
        Node::new(pebble, pg, "127.0.0.3", "node-c", storage_extra),
    ];
    // The CA (and preflight) reach node B for the site: it answers its own orders' challenges.
    pebble
        .challtestsrv(
            "/add-a",
            serde_json::json!({"host": SITE, "addresses": ["127.0.0.2"]}),
        )
        .await;
    nodes[1].certd.issue(&[]).await.expect_code(0);
    for node in &mut nodes {
        node.start().await;
    }
    let mut first = None;
    for node in &nodes {
        let serial = node
            .client(pebble)
            .await
            .wait_for_certificate(SITE, crate::run::CERT_WAIT)
            .await;
        assert_eq!(
            first.get_or_insert_with(|| serial.clone()),
            &serial,
            "the nodes serve different certificates:\n{}",
            node.log()
        );
    }
    let old = first.expect("three nodes");

    let forced = nodes[1].certd.issue(&["--force"]).await;
    forced.expect_code(0);
    assert_eq!(
        pg.psql(&format!(
            "SELECT count(*) FROM cert_versions WHERE site = '{SITE}'"
        ))
        .trim(),
        "2",
        "{forced}"
    );
    let b_serial = nodes[1]
        .client(pebble)
        .await
        .wait_for_new_serial(SITE, &old, PUSHED_WITHIN)
        .await;
    (nodes, old, b_serial)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_installed_on_one_node_is_served_by_every_node_within_seconds() {
    let pg = Postgres::start().await;
    let pebble = Pebble::start().await;
    // A poll far longer than the promise: only the notification can be this fast.
    let (nodes, old, new) = fleet_with_a_forced_renewal(&pebble, &pg, "poll = \"1h\"\n").await;
    for node in [&nodes[0], &nodes[2]] {
        let client = node.client(&pebble).await;
        let (serial, took) = new_serial_within(&client, &old, PUSHED_WITHIN)
            .await
            .unwrap_or_else(|| {
                panic!(
                    "{} still serves {old} {PUSHED_WITHIN:?} after node B installed {new}:\n{}",
                    node.https,
                    node.log()
                )
            });
        assert_eq!(serial, new, "{}", node.log());
        eprintln!("{} serves the new serial after {took:?}", node.https);
        // Served through the same site table: the node's own content, under the new certificate.
        let mut h1 = client.http1(SITE).await;
        let reply = h1.get(&format!("{SITE}:{}", node.https.port()), "/").await;
        assert!(reply.text().starts_with("node-"), "{reply:?}");
    }
    assert!(
        nodes[0]
            .log()
            .contains("certificate from the store in service"),
        "{}",
        nodes[0].log()
    );
    drop(nodes);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_notifications_the_poll_brings_the_change_within_its_interval() {
    let pg = Postgres::start().await;
    let pebble = Pebble::start().await;
    let poll = Duration::from_secs(3);
    let (nodes, old, new) =
        fleet_with_a_forced_renewal(&pebble, &pg, "poll = \"3s\"\nnotify = false\n").await;
    // Nothing LISTENs: the change can only come from the poll.
    let listening = pg.psql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'");
    assert_eq!(listening.trim(), "0", "a node listens with notify = false");
    for node in [&nodes[0], &nodes[2]] {
        let client = node.client(&pebble).await;
        // One interval, plus the time to read and check the pair.
        let (serial, took) = new_serial_within(&client, &old, poll + Duration::from_secs(2))
            .await
            .unwrap_or_else(|| {
                panic!(
                    "{} still serves {old} a poll interval after node B installed {new}:\n{}",
                    node.https,
                    node.log()
                )
            });
        assert_eq!(serial, new, "{}", node.log());
        eprintln!(
            "{} serves the new serial after {took:?} (poll only)",
            node.https
        );
    }
}
