//! A fleet's nodes serve each other's certificates within seconds (issue #12, scenario 2): three
//! `certd run` nodes on 127.0.0.1, .2 and .3 share one real PostgreSQL (harness::Postgres); Pebble
//! validates for real. `certd issue --force` on node B installs a new certificate; the install's
//! NOTIFY reaches every node's LISTEN connection and each swaps the new pair into its SNI
//! resolver, checked with real TLS handshakes. With `[storage] notify = false` the poll alone
//! carries the change, within its interval.
//!
//! The nodes are harness/fleet.rs's [`Node`]s, started one by one (not as a relayed [`Fleet`]):
//! here the CA reaches one chosen node directly.

use std::time::{Duration, Instant};

use crate::harness::{
    free_port, http_get, HttpsClient, Node, Pebble, PebbleOptions, Postgres, RunConfig, Site,
};

const SITE: &str = "fleet-sync.test";
/// What issue #12 promises for a pushed change.
const PUSHED_WITHIN: Duration = Duration::from_secs(5);

/// Node `name` on `ip` (not started): HTTP-01 on Pebble's port and HTTPS on a free port, serving
/// the site from its own `www` folder (whose page says the node's name), on the shared database
/// with `storage_extra` appended to `[storage]` (it may go on with further tables).
fn node(pebble: &Pebble, pg: &Postgres, ip: &str, name: &str, storage_extra: &str) -> Node {
    node_with_fraction(pebble, pg, ip, name, storage_extra, None)
}

/// [`node`] with `[renewal] remaining_fraction`.
fn node_with_fraction(
    pebble: &Pebble,
    pg: &Postgres,
    ip: &str,
    name: &str,
    storage_extra: &str,
    remaining_fraction: Option<f64>,
) -> Node {
    let mut run = RunConfig::for_pebble(pebble, vec![Site::new(&[SITE]).root("/", "www")]);
    run.remaining_fraction = remaining_fraction;
    let node = Node::new(pg, run, name, ip.parse().expect("address"), storage_extra);
    std::fs::create_dir_all(node.certd.dir().join("www")).expect("mkdir");
    std::fs::write(node.certd.dir().join("www/index.html"), format!("{name}\n")).expect("write");
    node
}

/// A client of `node`'s HTTPS trusting Pebble's root.
async fn https_client(node: &Node, pebble: &Pebble) -> HttpsClient {
    HttpsClient::new(node.https, &pebble.root_pem().await)
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

/// Points the site at node B (`nodes[1]`), issues its first certificate there before any daemon
/// runs, starts every node and returns the serial they all serve.
async fn first_certificate_from_b(pebble: &Pebble, nodes: &mut [Node]) -> String {
    // The CA (and preflight) reach node B for the site: it answers its own orders' challenges.
    pebble
        .challtestsrv(
            "/add-a",
            serde_json::json!({"host": SITE, "addresses": ["127.0.0.2"]}),
        )
        .await;
    nodes[1].certd.issue(&[]).await.expect_code(0);
    for node in nodes.iter_mut() {
        node.start().await;
    }
    let mut first = None;
    for node in nodes.iter() {
        let serial = https_client(node, pebble)
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
    first.expect("at least one node")
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
        node(pebble, pg, "127.0.0.1", "node-a", storage_extra),
        node(pebble, pg, "127.0.0.2", "node-b", storage_extra),
        node(pebble, pg, "127.0.0.3", "node-c", storage_extra),
    ];
    let old = first_certificate_from_b(pebble, &mut nodes).await;

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
    let b_serial = https_client(&nodes[1], pebble)
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
        let client = https_client(node, &pebble).await;
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

    // The fleet view, from node A: every node's heartbeat, and that node B renewed the site.
    let status = nodes[0].certd.status().await;
    let fleet = &status["fleet"];
    let mut beating: Vec<&str> = fleet["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("no fleet nodes in {status:#}"))
        .iter()
        .filter_map(|node| node["node"].as_str())
        .collect();
    beating.sort_unstable();
    assert_eq!(beating, ["node-a", "node-b", "node-c"], "{status:#}");
    let site = fleet["sites"]
        .as_array()
        .and_then(|sites| sites.iter().find(|site| site["site"] == SITE))
        .unwrap_or_else(|| panic!("{SITE} not in the fleet view: {status:#}"));
    assert_eq!(site["renewed_by"], "node-b", "{status:#}");
    assert!(
        site["lease_holder"].is_null(),
        "a lease left behind: {status:#}"
    );
    // A lease held now is shown with its holder.
    pg.psql(&format!(
        "INSERT INTO leases (site, holder, token, expires_at) \
         VALUES ('{SITE}', 'node-c', nextval('certd_fencing'), now() + interval '1 minute')"
    ));
    let text = nodes[0].certd.run("status", &[]).await;
    assert!(
        text.stdout
            .contains(&format!("{SITE}: renewed by node-b at ")),
        "{text}"
    );
    assert!(text.stdout.contains("lease held by node-c until"), "{text}");
    assert!(
        text.stdout.contains("node node-a: last heartbeat"),
        "{text}"
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
        let client = https_client(node, &pebble).await;
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

/// `name value` of a gauge in a Prometheus text scrape.
fn gauge(scrape: &str, name: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok()).flatten()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn while_the_database_is_down_every_node_serves_and_renewal_waits_until_it_is_back() {
    let mut pg = Postgres::start().await;
    // Certificates of 90 s, renewed with half their life left: due 45 s after issuance.
    let pebble = Pebble::start_with(PebbleOptions {
        cert_validity_secs: Some(90),
        ..PebbleOptions::default()
    })
    .await;
    let metrics = free_port();
    let poll = "poll = \"1s\"\n";
    let mut a = node_with_fraction(
        &pebble,
        &pg,
        "127.0.0.1",
        "node-a",
        &format!("{poll}\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n"),
        Some(0.5),
    );
    let mut b = node_with_fraction(&pebble, &pg, "127.0.0.2", "node-b", poll, Some(0.5));
    pebble
        .challtestsrv(
            "/add-a",
            serde_json::json!({"host": SITE, "addresses": ["127.0.0.2"]}),
        )
        .await;
    b.certd.issue(&[]).await.expect_code(0);
    let issued = Instant::now();
    a.start().await;
    b.start().await;
    let (a_client, b_client) = (
        https_client(&a, &pebble).await,
        https_client(&b, &pebble).await,
    );
    let serial = a_client
        .wait_for_certificate(SITE, crate::run::CERT_WAIT)
        .await;
    assert_eq!(
        b_client
            .wait_for_certificate(SITE, crate::run::CERT_WAIT)
            .await,
        serial
    );
    // Each node keeps what it serves in its own state directory, in the filesystem layout.
    for node in [&a, &b] {
        let live = node.certd.site_dir(SITE).join("live");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !live.exists() {
            assert!(
                Instant::now() < deadline,
                "no local copy at {}:\n{}",
                live.display(),
                node.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pg.stop();
    // Every node keeps completing handshakes, with the certificate it had.
    for _ in 0..5 {
        for client in [&a_client, &b_client] {
            assert_eq!(
                client
                    .serial(SITE)
                    .await
                    .expect("a handshake while the database is down"),
                serial
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The outage shows in the metrics within the poll.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let scrape = http_get(metrics, "127.0.0.1", "/metrics").await.text();
        if gauge(&scrape, "certd_storage_up") == Some(0.0) {
            assert!(
                gauge(&scrape, "certd_storage_unreachable_seconds").is_some(),
                "{scrape}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "certd_storage_up never went to 0:\n{scrape}\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A node restarted while the database is down starts, and serves its local copy.
    a.stop();
    a.start().await;
    assert_eq!(
        a_client
            .wait_for_certificate(SITE, crate::run::CERT_WAIT)
            .await,
        serial,
        "{}",
        a.log()
    );
    assert!(a.log().contains("storage unreachable"), "{}", a.log());
    // `certd status` on that node: the outage, and the certificates of its local copy.
    let status = a.certd.run("status", &[]).await;
    // A 90 s certificate is inside any critical window: CRITICAL, not just the outage's WARNING.
    assert_eq!(status.code, Some(2), "{status}");
    assert!(
        status.stdout.contains("storage unreachable since"),
        "{status}"
    );
    let json = a.certd.status().await;
    assert!(json["storage"]["unreachable_since"].is_string(), "{json:#}");
    assert_eq!(json["storage"]["state"], "critical", "{json:#}");
    assert_eq!(
        crate::harness::normalize_serial(
            crate::harness::status_site(&json, SITE)["serial"]
                .as_str()
                .unwrap_or_default()
        ),
        crate::harness::normalize_serial(&serial),
        "{json:#}"
    );

    // Past the renewal time, renewals wait for the database; the certificate keeps serving.
    let due = Duration::from_secs(47);
    if let Some(wait) = due.checked_sub(issued.elapsed()) {
        tokio::time::sleep(wait).await;
    }
    assert_eq!(
        b_client.serial(SITE).await.expect("handshake"),
        serial,
        "renewed without a database?"
    );
    // Logged once per change of state, not per attempt. (While PostgreSQL shuts down, a pooled
    // connection may still be answered after the listener's was terminated: then the state really
    // changed twice, and each change is logged once.)
    let log = b.log();
    let outages = log.matches("storage unreachable; serving").count();
    let recoveries = log.matches("storage reachable again").count();
    let attempts = log.matches("storage unreachable; renewals wait").count();
    assert!(
        outages >= 1 && outages <= recoveries + 1,
        "{outages} outage lines for {recoveries} recoveries\n{log}"
    );
    assert!(
        attempts > outages,
        "{attempts} waiting attempts, {outages} outage lines: not once per attempt?\n{log}"
    );

    // The database is back: the due renewal happens (on node B, where the CA's requests go).
    a.stop();
    pg.start_again().await;
    let renewed = b_client
        .wait_for_new_serial(SITE, &serial, Duration::from_secs(30))
        .await;
    assert_ne!(renewed, serial);
    assert!(b.log().contains("storage reachable again"), "{}", b.log());
    assert_eq!(
        pg.psql(&format!(
            "SELECT count(*) FROM cert_versions WHERE site = '{SITE}'"
        ))
        .trim(),
        "2"
    );
}

/// The lines the deploy hooks appended to `log` so far.
fn hook_lines(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

// `[hook]` with the postgres backend: a renewal on node B runs the deploy hook on both nodes (B
// for its own install, A for the change it hears of), once each, with the paths of each node's
// own local copy, which already hold the new certificate.
#[tokio::test(flavor = "multi_thread")]
async fn every_node_runs_its_deploy_hook_with_its_local_copy_of_the_new_certificate() {
    let pg = Postgres::start().await;
    let pebble = Pebble::start().await;
    let shared = tempfile::tempdir().expect("tempdir");
    let log = shared.path().join("hooks.log");
    let hook = |name: &str| {
        format!(
            "poll = \"1h\"\n\n[hook]\ncommand = [\"/bin/sh\", \"-c\", \
             'echo \"{name} $CERTD_EVENT $CERTD_CERT\" >> {}']\n",
            log.display()
        )
    };
    let mut nodes = vec![
        node(&pebble, &pg, "127.0.0.1", "node-a", &hook("node-a")),
        node(&pebble, &pg, "127.0.0.2", "node-b", &hook("node-b")),
    ];
    let old = first_certificate_from_b(&pebble, &mut nodes).await;
    assert!(
        hook_lines(&log).is_empty(),
        "a hook ran before any renewal by a daemon: {:?}",
        hook_lines(&log)
    );

    nodes[1].certd.issue(&["--force"]).await.expect_code(0);
    let new = https_client(&nodes[1], &pebble)
        .await
        .wait_for_new_serial(SITE, &old, PUSHED_WITHIN)
        .await;
    let started = Instant::now();
    while hook_lines(&log).len() < 2 && started.elapsed() < PUSHED_WITHIN {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Time for a second run, which must not come.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lines = hook_lines(&log);
    for (node, name) in nodes.iter().zip(["node-a", "node-b"]) {
        let ran: Vec<&String> = lines
            .iter()
            .filter(|line| line.starts_with(&format!("{name} ")))
            .collect();
        assert_eq!(
            ran.len(),
            1,
            "{name}'s hook ran {} times within {:?} of the renewal: {lines:?}\n{}",
            ran.len(),
            PUSHED_WITHIN,
            node.log()
        );
        let path = ran[0]
            .strip_prefix(&format!("{name} renewed "))
            .unwrap_or_else(|| panic!("not a renewal: {lines:?}"));
        assert!(
            std::path::Path::new(path).starts_with(node.certd.state_dir()),
            "{name}'s hook was given {path}, not its own state directory's copy"
        );
        let pem = std::fs::read_to_string(path).expect("read the hook's certificate");
        assert_eq!(
            crate::harness::serial_hex(&pem),
            crate::harness::normalize_serial(&new),
            "{name}'s hook was given a certificate other than the new one"
        );
    }
}

/// A TCP relay to PostgreSQL for one node that can be cut (every connection dropped, new ones
/// closed at once) and restored: that node alone loses the database, the others keep it.
struct Cuttable {
    port: u16,
    cut: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Cuttable {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Cuttable {
    async fn start(to: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the database relay");
        let port = listener.local_addr().expect("relay address").port();
        let (cut, cut_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                if *cut_rx.borrow() {
                    continue; // dropped: closed at once
                }
                let mut cut_rx = cut_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(to).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut_rx.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Self { port, cut, task }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

// After losing the database, a node's full reload runs its deploy hook for a certificate another
// node installed meanwhile, once: node A's connection to PostgreSQL goes through a relay that the
// test cuts while node B renews, so A hears of the renewal only by loading everything again.
#[tokio::test(flavor = "multi_thread")]
async fn a_renewal_missed_while_a_node_lost_the_database_runs_its_hook_once_when_it_reloads() {
    let pg = Postgres::start().await;
    let pebble = Pebble::start().await;
    let shared = tempfile::tempdir().expect("tempdir");
    let log = shared.path().join("hooks.log");
    // A without notifications: its poll, the first to see the database again, loads everything
    // again (with LISTEN, the reconnected listener may get there first and the poll then sees
    // the one changed site by itself).
    let hook = |name: &str, notify: bool| {
        format!(
            "poll = \"1s\"\nnotify = {notify}\n\n[hook]\ncommand = [\"/bin/sh\", \"-c\", \
             'echo \"{name} $CERTD_EVENT $CERTD_CERT\" >> {}']\n",
            log.display()
        )
    };
    let pg_port: u16 = pg
        .url()
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|port| port.parse().ok())
        .expect("the database port in its url");
    let relay = Cuttable::start(std::net::SocketAddr::from(([127, 0, 0, 1], pg_port))).await;
    let mut nodes = vec![
        node(&pebble, &pg, "127.0.0.1", "node-a", &hook("node-a", false)),
        node(&pebble, &pg, "127.0.0.2", "node-b", &hook("node-b", true)),
    ];
    // Node A reaches the database through the relay only.
    let a_config = std::fs::read_to_string(nodes[0].certd.config_path()).expect("read config");
    let through_relay = pg
        .url()
        .replace(&format!(":{pg_port}/"), &format!(":{}/", relay.port));
    assert_ne!(through_relay, pg.url());
    nodes[0]
        .certd
        .write_config_text(&a_config.replace(&pg.url(), &through_relay));
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
    let mut old = String::new();
    for node in &nodes {
        old = https_client(node, &pebble)
            .await
            .wait_for_certificate(SITE, crate::run::CERT_WAIT)
            .await;
    }

    relay.set_cut(true);
    let a_daemon = nodes[0].daemon.as_ref().expect("node A runs");
    a_daemon
        .wait_for_log("storage unreachable", Duration::from_secs(30))
        .await;
    nodes[1].certd.issue(&["--force"]).await.expect_code(0);
    let new = https_client(&nodes[1], &pebble)
        .await
        .wait_for_new_serial(SITE, &old, PUSHED_WITHIN)
        .await;
    // A cannot hear of it: still the old certificate (from its local copy).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        https_client(&nodes[0], &pebble)
            .await
            .serial(SITE)
            .await
            .ok()
            .as_deref(),
        Some(old.as_str()),
        "{}",
        nodes[0].log()
    );
    assert!(
        !hook_lines(&log)
            .iter()
            .any(|line| line.starts_with("node-a ")),
        "{:?}",
        hook_lines(&log)
    );

    relay.set_cut(false);
    https_client(&nodes[0], &pebble)
        .await
        .wait_for_new_serial(SITE, &old, Duration::from_secs(30))
        .await;
    let started = Instant::now();
    while hook_lines(&log).len() < 2 && started.elapsed() < PUSHED_WITHIN {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Time for a second run (a later poll, B's own notification), which must not come.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let lines = hook_lines(&log);
    for (node, name) in nodes.iter().zip(["node-a", "node-b"]) {
        let ran: Vec<&String> = lines
            .iter()
            .filter(|line| line.starts_with(&format!("{name} ")))
            .collect();
        assert_eq!(ran.len(), 1, "{name}: {lines:?}\n{}", node.log());
        let path = ran[0]
            .strip_prefix(&format!("{name} renewed "))
            .unwrap_or_else(|| panic!("not a renewal: {lines:?}"));
        let pem = std::fs::read_to_string(path).expect("read the hook's certificate");
        assert_eq!(
            crate::harness::serial_hex(&pem),
            crate::harness::normalize_serial(&new),
            "{name}'s hook was given a certificate other than the new one"
        );
    }
    assert!(
        nodes[0]
            .log()
            .contains("certificates loaded again from the store"),
        "{}",
        nodes[0].log()
    );
}

// A node started while the database is down runs under its state_dir lock only; once the database
// answers it takes the node lock too (so that no second process under its node name renews beside
// it, and `certd issue` finds it), and holds it.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_started_while_the_database_is_down_takes_its_node_lock_when_it_answers() {
    let mut pg = Postgres::start().await;
    let pebble = Pebble::start().await;
    let mut a = node(&pebble, &pg, "127.0.0.1", "node-a", "poll = \"1s\"\n");
    pebble
        .challtestsrv(
            "/add-a",
            serde_json::json!({"host": SITE, "addresses": ["127.0.0.1"]}),
        )
        .await;
    pg.stop();
    a.start().await;
    pg.start_again().await;
    let pid = a.daemon.as_ref().expect("node A runs").pid().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    // (The schema, node_locks included, is created at the database's first answer.)
    while pg
        .try_psql("SELECT pid FROM node_locks WHERE node = 'node-a'")
        .unwrap_or_default()
        .trim()
        != pid
    {
        assert!(
            Instant::now() < deadline,
            "node A never took its node lock after the database came back:\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(a.log().contains("holds its node lock now"), "{}", a.log());
    // So `certd issue` finds the running daemon, and renews through it.
    a.certd.issue(&[]).await.expect_code(0);
    https_client(&a, &pebble)
        .await
        .wait_for_certificate(SITE, crate::run::CERT_WAIT)
        .await;
}
