//! Operating a fleet (issue #12): a single node's state directory, with certificates Pebble issued
//! for real, moved into a real PostgreSQL by `certd storage migrate`, served by two `certd run` nodes
//! on the database with no new order; exported back into a fresh state directory that a single
//! node serves again; and a `pg_dump` of the database holding no private key in the clear.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine as _;
use certd::storage::StateStore;
use rustls_pki_types::pem::PemObject;

use crate::harness::{
    free_port, normalize_serial, status_site, Certd, Daemon, HttpsClient, Pebble, Postgres,
    RunConfig, Site,
};
use crate::run::CERT_WAIT;

const SITES: [&str; 2] = ["mig-a.test", "mig-b.test"];
const FLEET_KEY: [u8; 32] = [0x3c; 32];

/// The sites, each serving `www/` from its node's folder.
fn sites() -> Vec<Site> {
    SITES
        .iter()
        .map(|name| Site::new(&[name]).root("/", "www"))
        .collect()
}

/// The `[storage]` table of node `node` on `pg`, with its key and password files written into `dir`.
fn storage_table(pg: &Postgres, dir: &Path, node: &str) -> String {
    let key = dir.join("fleet.key");
    std::fs::write(&key, FLEET_KEY).expect("write key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
    std::fs::write(dir.join("db-password"), format!("{}\n", pg.password())).expect("password");
    std::fs::create_dir_all(dir.join("www")).expect("mkdir www");
    std::fs::write(dir.join("www/index.html"), format!("{node}\n")).expect("write index");
    format!(
        "[storage]\nbackend = \"postgres\"\nurl = \"{}\"\npassword_file = \"db-password\"\n\
         sslmode = \"disable\"\nnode_name = \"{node}\"\nkey_file = \"fleet.key\"\n",
        pg.url()
    )
}

/// A single node that issued both sites from Pebble into its state directory, then migrated them
/// into `pg` (twice: the second run changes nothing). Returns the node and each site's serial.
async fn issued_and_migrated(pg: &Postgres, pebble: &Pebble) -> (Certd, Vec<String>) {
    let single = Certd::new();
    std::fs::create_dir_all(single.dir().join("www")).expect("mkdir www");
    let config = RunConfig::for_pebble(pebble, sites());
    config.write(&single);
    single.issue(&[]).await.expect_code(0);
    let status = single.status().await;
    let serials: Vec<String> = SITES
        .iter()
        .map(|site| {
            normalize_serial(
                status_site(&status, site)["serial"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no serial for {site}: {status:#}")),
            )
        })
        .collect();
    assert_eq!(pebble.issued_count(), SITES.len());

    // The operator adds [storage] to the same config (state_dir still names the old state).
    config
        .clone()
        .table(&storage_table(pg, single.dir(), "migrator"))
        .write(&single);
    let migrated = single
        .run(
            "storage",
            &["migrate", "--from", "state", "--to", "postgres"],
        )
        .await;
    migrated.expect_code(0);
    for site in SITES {
        assert!(
            migrated.stdout.contains(&format!("{site}: copied")),
            "{migrated}"
        );
    }
    assert!(migrated.stdout.contains("account "), "{migrated}");
    let again = single
        .run(
            "storage",
            &["migrate", "--from", "state", "--to", "postgres"],
        )
        .await;
    again.expect_code(0);
    for site in SITES {
        assert!(
            again.stdout.contains(&format!("{site}: already there")),
            "{again}"
        );
    }
    assert_eq!(pg.psql("SELECT count(*) FROM cert_versions").trim(), "2");
    assert_eq!(pg.psql("SELECT count(*) FROM accounts").trim(), "1");
    (single, serials)
}

/// The ledger lines the single node's state directory holds for `pebble`.
fn state_ledger_len(state_dir: &Path, pebble: &Pebble) -> usize {
    let store = certd::store::Store::open(state_dir).expect("open the state directory");
    StateStore::ledger_entries(&store, &pebble.directory_url())
        .expect("read the ledger")
        .len()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_migrated_state_is_served_by_two_nodes_and_exported_back_without_a_new_order() {
    let pg = Postgres::start().await;
    let pebble = Pebble::start().await;
    let (single, serials) = issued_and_migrated(&pg, &pebble).await;
    let ledger = state_ledger_len(&single.state_dir(), &pebble);
    assert!(ledger >= SITES.len(), "the single node's ledger is empty");
    assert_eq!(
        pg.psql("SELECT count(*) FROM ledger").trim(),
        ledger.to_string(),
        "the ledger was not carried over"
    );

    // Two nodes on the database, with empty state directories of their own.
    let root = pebble.root_pem().await;
    let mut nodes = Vec::new();
    for (index, node) in ["node-a", "node-b"].into_iter().enumerate() {
        let certd = Certd::new();
        let mut config = RunConfig::for_pebble(&pebble, sites());
        if index > 0 {
            // Only one node can listen where Pebble validates; no order is expected anyway.
            config.base.listen = vec![std::net::SocketAddr::from(([127, 0, 0, 1], free_port()))];
        }
        let config = config.table(&storage_table(&pg, certd.dir(), node));
        config.write(&certd);
        let daemon = Daemon::start(&certd, config.https_addr()).await;
        let client = HttpsClient::new(config.https_addr(), &root);
        nodes.push((certd, config, daemon, client));
    }
    for (certd, config, daemon, client) in &nodes {
        for (site, serial) in SITES.iter().zip(&serials) {
            let served = client.wait_for_certificate(site, CERT_WAIT).await;
            assert_eq!(
                &normalize_serial(&served),
                serial,
                "{site} on {}:\n{}",
                certd.dir().display(),
                daemon.log()
            );
        }
        let mut h1 = client.http1(SITES[0]).await;
        let reply = h1
            .get(&format!("{}:{}", SITES[0], config.https_port), "/")
            .await;
        assert!(reply.text().starts_with("node-"), "{reply:?}");
    }
    assert_eq!(pebble.issued_count(), SITES.len(), "a node ordered again");
    assert_eq!(
        pg.psql("SELECT count(*) FROM ledger").trim(),
        ledger.to_string(),
        "a node placed an order"
    );

    // Back to one node: export into a fresh state directory, which a filesystem config serves.
    let (node_a, ..) = nodes.remove(0);
    drop(nodes);
    let fresh = Certd::new();
    std::fs::create_dir_all(fresh.dir().join("www")).expect("mkdir www");
    std::fs::write(fresh.dir().join("www/index.html"), "single\n").expect("write");
    let exported = node_a
        .run(
            "storage",
            &[
                "export",
                "--to",
                "state",
                "--state-dir",
                &fresh.state_dir().display().to_string(),
            ],
        )
        .await;
    exported.expect_code(0);
    for site in SITES {
        assert!(
            exported.stdout.contains(&format!("{site}: copied")),
            "{exported}"
        );
    }
    assert_eq!(state_ledger_len(&fresh.state_dir(), &pebble), ledger);
    let config = RunConfig::for_pebble(&pebble, sites());
    config.write(&fresh);
    // Not due: `certd issue` on the exported state orders nothing and uses the carried account.
    fresh.issue(&[]).await.expect_code(0);
    let daemon = Daemon::start(&fresh, config.https_addr()).await;
    let client = HttpsClient::new(config.https_addr(), &root);
    for (site, serial) in SITES.iter().zip(&serials) {
        let served = client.wait_for_certificate(site, CERT_WAIT).await;
        assert_eq!(&normalize_serial(&served), serial, "{}", daemon.log());
    }
    assert_eq!(
        pebble.issued_count(),
        SITES.len(),
        "the export ordered again"
    );
    assert_eq!(pebble.account_count(), 1, "a second account was registered");
}

/// `pg_dump` output as text and the bytea columns as their hex.
fn contains_bytes(dump: &str, bytes: &[u8]) -> bool {
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    // A key is at least 32 bytes; any 24-byte window of it in the dump is a leak.
    let window = 48.min(hex.len());
    (0..=hex.len() - window)
        .step_by(2)
        .any(|at| dump.contains(&hex[at..at + window]))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dump_after_issuance_and_migration_holds_no_private_key_in_the_clear() {
    let pg = Postgres::start().await;
    let pebble = Pebble::start().await;
    let (single, _) = issued_and_migrated(&pg, &pebble).await;
    let dump = pg.dump();
    assert!(
        dump.contains("BEGIN CERTIFICATE"),
        "the dump lacks the certificates (is it the right database?)"
    );
    assert!(
        !dump.contains("PRIVATE KEY"),
        "a PEM private key is in the dump"
    );

    let engine = base64::engine::general_purpose::STANDARD;
    for site in SITES {
        let pem = single.read_site_file(site, "privkey.pem");
        let der = rustls_pki_types::PrivateKeyDer::from_pem_slice(pem.as_bytes())
            .expect("certd wrote a PEM key");
        let der = der.secret_der();
        assert!(
            !contains_bytes(&dump, der),
            "{site}'s key DER is in the dump"
        );
        let b64 = engine.encode(der);
        for chunk in b64.as_bytes().chunks(32).filter(|chunk| chunk.len() == 32) {
            let chunk = std::str::from_utf8(chunk).expect("base64 is ASCII");
            assert!(
                !dump.contains(chunk),
                "{site}'s key (base64) is in the dump"
            );
        }
    }
    // Nor the ACME account's key.
    let accounts = single.account_files();
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    let account = std::fs::read_to_string(&accounts[0]).expect("read the account");
    let account: serde_json::Value = serde_json::from_str(&account).expect("account JSON");
    let key = account["key_pkcs8"]
        .as_str()
        .unwrap_or_else(|| panic!("no key_pkcs8 in {account:#}"));
    assert!(key.len() > 40, "{key}");
    assert!(!dump.contains(&key[..40]), "the account key is in the dump");
    let der = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(key.trim_end_matches('='))
        .expect("base64url key");
    assert!(
        !contains_bytes(&dump, &der),
        "the account key DER is in the dump"
    );
}

// ---------------------------------------------------------------------------------------------------
// The README's example: two nodes behind HAProxy (TCP mode, send-proxy-v2), from deploy/fleet/.
// ---------------------------------------------------------------------------------------------------

/// `text` with each `(from, to)` replaced; every `from` must be there, so the example files and this
/// test cannot drift apart silently.
fn templated(file: &str, replacements: &[(&str, String)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/fleet")
        .join(file);
    let mut text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
    for (from, to) in replacements {
        assert!(
            text.contains(from),
            "{} no longer has {from:?}",
            path.display()
        );
        text = text.replace(from, to);
    }
    text
}

/// An HTTPS GET of `/` for `name` through `addr`, from the loopback address `source`: the serial
/// the server presented and the response.
async fn get_from(
    source: std::net::Ipv4Addr,
    addr: std::net::SocketAddr,
    root_pem: &str,
    name: &str,
) -> (String, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_slice(root_pem.as_bytes()).expect("root"))
        .expect("add root");
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::from((source, 0)))
        .expect("bind the client's source address");
    let exchange = async {
        let tcp = socket.connect(addr).await.expect("connect to the balancer");
        let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(crate::harness::dns(name), tcp)
            .await
            .expect("TLS through the balancer, verified against Pebble's root");
        let serial = crate::harness::der_serial(
            tls.get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .expect("a leaf"),
        );
        tls.write_all(
            format!("GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("send");
        let mut reply = Vec::new();
        let _ = tls.read_to_end(&mut reply).await;
        (serial, String::from_utf8_lossy(&reply).into_owned())
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), exchange)
        .await
        .expect("an answer through the balancer within 10 s")
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_behind_haproxy_with_proxy_protocol_both_answer_and_log_the_client() {
    let pg = Postgres::start().await;
    let pebble = Pebble::start().await;
    let root = pebble.root_pem().await;
    let loopback = |port: u16| format!("127.0.0.1:{port}");
    let (front_https, front_http) = (free_port(), free_port());
    // The client, as HAProxy sees it: not the address HAProxy itself connects from.
    let client_ip = std::net::Ipv4Addr::new(127, 0, 0, 66);

    let mut nodes = Vec::new();
    for (index, (node, file)) in [
        ("edge-1", "certd-edge-1.toml"),
        ("edge-2", "certd-edge-2.toml"),
    ]
    .into_iter()
    .enumerate()
    {
        let certd = Certd::new();
        let table = storage_table(&pg, certd.dir(), node);
        let url = table
            .lines()
            .find_map(|line| line.strip_prefix("url = "))
            .expect("url")
            .trim_matches('"')
            .to_owned();
        // Node 1 answers HTTP-01 where Pebble looks (it orders before the balancer starts).
        let http = if index == 0 {
            pebble.http_port
        } else {
            free_port()
        };
        let https = free_port();
        let upstream = crate::harness::Upstream::echo().await;
        let text = templated(
            file,
            &[
                ("\"/var/lib/certd\"", "\"state\"".into()),
                ("postgres://certd@db.internal:5432/certd", url),
                ("/etc/certd/db-password", "db-password".into()),
                ("/etc/certd/fleet.key", "fleet.key".into()),
                (
                    "directory = \"letsencrypt\"",
                    format!(
                        "directory = \"{}\"\nca_roots = \"{}\"",
                        pebble.directory_url(),
                        pebble.ca_roots_path().display()
                    ),
                ),
                ("\"0.0.0.0:80\"", format!("\"{}\"", loopback(http))),
                ("\"0.0.0.0:443\"", format!("\"{}\"", loopback(https))),
                ("\"10.0.0.5/32\"", "\"127.0.0.0/8\"".into()),
                (
                    "\"example.org\", \"www.example.org\"",
                    "\"fleet.test\", \"www.fleet.test\"".into(),
                ),
                ("http://127.0.0.1:8080", upstream.url()),
            ],
        ) + &format!("\n[preflight]\nresolver = \"{}\"\n", pebble.dns_addr());
        certd.write_config_text(&text);
        nodes.push((certd, http, https, upstream));
    }
    nodes[0].0.issue(&[]).await.expect_code(0);
    let status = nodes[0].0.status().await;
    let serial = normalize_serial(
        status_site(&status, "fleet.test")["serial"]
            .as_str()
            .unwrap_or_else(|| panic!("no serial: {status:#}")),
    );
    let daemons: Vec<Daemon> = {
        let mut daemons = Vec::new();
        for (certd, _, https, _) in &nodes {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], *https));
            daemons.push(Daemon::start(certd, addr).await);
        }
        daemons
    };
    let config = templated(
        "haproxy.cfg",
        &[
            ("0.0.0.0:443", loopback(front_https)),
            ("0.0.0.0:80", loopback(front_http)),
            ("10.0.0.11:443", loopback(nodes[0].2)),
            ("10.0.0.12:443", loopback(nodes[1].2)),
            ("10.0.0.11:80", loopback(nodes[0].1)),
            ("10.0.0.12:80", loopback(nodes[1].1)),
        ],
    );
    let front = std::net::SocketAddr::from(([127, 0, 0, 1], front_https));
    let haproxy = crate::harness::Haproxy::start(&config, front).await;

    // Round robin: four connections reach both nodes; each serves the one certificate, verified.
    for _ in 0..4 {
        let (served, reply) = get_from(client_ip, front, &root, "fleet.test").await;
        assert_eq!(normalize_serial(&served), serial);
        assert!(
            reply.starts_with("HTTP/1.1 200"),
            "{reply}\n{}",
            haproxy.log()
        );
        // The application behind each node is told the client, not the balancer.
        assert!(reply.to_ascii_lowercase().contains("127.0.0.66"), "{reply}");
    }
    for ((certd, _, _, upstream), daemon) in nodes.iter().zip(&daemons) {
        assert!(
            upstream.received() >= 1,
            "{} answered nothing through the balancer:\n{}\n{}",
            certd.dir().display(),
            daemon.log(),
            haproxy.log()
        );
        daemon
            .wait_for_log("client=127.0.0.66", std::time::Duration::from_secs(5))
            .await;
    }
    assert_eq!(
        pebble.issued_count(),
        1,
        "more than one order for the fleet"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn certbot_lineages_are_imported_into_the_database_and_served_from_it() {
    use crate::import_certbot::{import, CertbotDir};
    let pg = Postgres::start().await;
    let pebble = Pebble::start().await;
    // certbot's certificate: really issued by Pebble, through certd in a folder of its own.
    let issuer = Certd::new();
    RunConfig::for_pebble(&pebble, vec![Site::new(&[SITES[0]])]).write(&issuer);
    issuer.issue(&[]).await.expect_code(0);
    let read = |file: &str| issuer.read_site_file(SITES[0], file);
    let certbot = CertbotDir::new(&pebble.directory_url());
    certbot.add_lineage(
        SITES[0],
        &read("cert.pem"),
        &read("chain.pem"),
        &read("privkey.pem"),
    );
    let accounts = issuer.account_files();
    certbot.add_account(&std::fs::read_to_string(&accounts[0]).expect("read the account"));
    let serial = crate::harness::serial_hex(&read("cert.pem"));

    // A fleet node's config: the import goes into the database, not its state directory.
    let node = Certd::new();
    let config = RunConfig::for_pebble(&pebble, sites()[..1].to_vec()).table(&storage_table(
        &pg,
        node.dir(),
        "node-a",
    ));
    config.write(&node);
    let run = import(&node, certbot.path()).await;
    run.expect_code(0);
    assert!(
        run.stdout
            .contains(&format!("{}: imported as {}", SITES[0], SITES[0])),
        "{run}"
    );
    assert!(run.stdout.contains("imported as certd's account"), "{run}");
    assert_eq!(pg.psql("SELECT count(*) FROM cert_versions").trim(), "1");
    assert_eq!(pg.psql("SELECT count(*) FROM accounts").trim(), "1");
    assert!(
        !node.site_dir(SITES[0]).exists(),
        "written to the state directory"
    );
    assert!(!pg.dump().contains("PRIVATE KEY"), "a key in the clear");
    let again = import(&node, certbot.path()).await;
    again.expect_code(0);
    assert!(again.stdout.contains("already imported"), "{again}");
    assert_eq!(pg.psql("SELECT count(*) FROM cert_versions").trim(), "1");

    let daemon = Daemon::start(&node, config.https_addr()).await;
    let client = HttpsClient::new(config.https_addr(), &pebble.root_pem().await);
    let served = client.wait_for_certificate(SITES[0], CERT_WAIT).await;
    assert_eq!(normalize_serial(&served), serial, "{}", daemon.log());
    assert_eq!(pebble.issued_count(), 1, "the import ordered");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_site_the_database_serves_otherwise_is_kept_unless_overwrite_is_given() {
    let pg = Postgres::start().await;
    let pebble = Pebble::start().await;
    let (single, serials) = issued_and_migrated(&pg, &pebble).await;
    // Another node installed another certificate for the first site since (here: the second's).
    let config = certd::config::PostgresConfig {
        url: pg.url(),
        password_file: Some(single.dir().join("db-password")),
        sslmode: certd::config::SslMode::Disable,
        ca_roots: None,
        node_name: "node-z".into(),
        key_file: single.dir().join("fleet.key"),
        lease_seconds: certd::storage::LEASE_SECONDS,
        poll: certd::config::DEFAULT_POLL,
        notify: true,
    };
    tokio::task::spawn_blocking(move || {
        let store = certd::storage::postgres::PostgresStore::open(&config).expect("open");
        let other = store.current(SITES[1]).expect("read").expect("migrated");
        store.install(SITES[0], &other.pem).expect("install");
    })
    .await
    .expect("join");
    let live = |pg: &Postgres| {
        pg.psql(&format!(
            "SELECT c.cert_pem FROM live l JOIN cert_versions c USING (site, version) WHERE l.site = '{}'",
            SITES[0]
        ))
    };
    let theirs = live(&pg);

    let migrate = ["migrate", "--from", "state", "--to", "postgres"];
    let refused = single.run("storage", &migrate).await;
    refused.expect_code(1);
    let line = line_of(
        &refused.stdout,
        &format!(
            "{}: not copied: the destination already serves another certificate (serial ",
            SITES[0]
        ),
    );
    assert_eq!(serial_in(line), serials[1], "{refused}");
    assert!(refused.stdout.contains("--overwrite"), "{refused}");
    assert!(
        refused
            .stdout
            .contains(&format!("{}: already there", SITES[1])),
        "{refused}"
    );
    assert_eq!(live(&pg), theirs, "the database's certificate was replaced");

    let forced = single
        .run("storage", &[&migrate[..], &["--overwrite"]].concat())
        .await;
    forced.expect_code(0);
    let line = line_of(&forced.stdout, &format!("{}: copied (serial ", SITES[0]));
    assert_eq!(serial_in(line), serials[0], "{forced}");
    assert_ne!(
        live(&pg),
        theirs,
        "--overwrite left the database's certificate"
    );
    assert_eq!(pebble.issued_count(), SITES.len());
}

/// The line of `text` starting with `prefix`.
fn line_of<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find(|line| line.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{text}"))
}

/// The `(serial <hex>` of `line`, normalised.
fn serial_in(line: &str) -> String {
    let rest = line
        .split("(serial ")
        .nth(1)
        .unwrap_or_else(|| panic!("{line}"));
    normalize_serial(rest.split(')').next().unwrap_or(rest))
}
