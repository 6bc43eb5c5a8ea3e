//! Challenges beyond HTTP-01, and names beyond DNS names, against a real Pebble with real validation:
//! TLS-ALPN-01 answered by `certd issue`'s short-lived listener with nothing on port 80 and by the
//! daemon's own HTTPS port, the automatic choice moving to TLS-ALPN-01 when port 80 is unreachable,
//! and IP-address certificates (RFC 8738) issued and served to a client connecting by address.
//!
//! Pebble validates TLS-ALPN-01 on its `tlsPort` ([`Pebble::tls_port`]), which the tests make
//! certd's `[https] listen`; its `httpPort` is left with nothing listening unless a test wants HTTP-01.

use std::net::SocketAddr;
use std::time::Duration;

use crate::harness::{
    free_port, parse_issue_stdout, toml_str, verify_chain, Certd, CertdConfig, Daemon, HttpsClient,
    IssueOutcome, Pebble, RunConfig, Site, Upstream,
};

/// How long a daemon test waits for its certificate.
const CERT_WAIT: Duration = Duration::from_secs(45);

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A `certd issue` configuration for `pebble` with `[http] listen = http`, `[https] listen =
/// https`, and one site per `(names, challenge)`.
fn issue_config(
    pebble: &Pebble,
    http: &[SocketAddr],
    https: SocketAddr,
    sites: &[(&[&str], Option<&str>)],
) -> String {
    let mut base = CertdConfig::for_pebble(pebble, &[]);
    base.listen = http.to_vec();
    let mut toml = base.to_toml();
    toml += &format!("\n[https]\nlisten = [{}]\n", toml_str(&https.to_string()));
    for (names, challenge) in sites {
        let names: Vec<String> = names.iter().map(|name| toml_str(name)).collect();
        toml += &format!("\n[[site]]\nnames = [{}]\n", names.join(", "));
        if let Some(challenge) = challenge {
            toml += &format!("challenge = {}\n", toml_str(challenge));
        }
    }
    toml
}

/// The `challenge` a site's record.json says validated its certificate.
fn recorded_challenge(certd: &Certd, site: &str) -> String {
    let text = certd.read_site_file(site, "record.json");
    let record: serde_json::Value = serde_json::from_str(&text).expect("record.json is JSON");
    record["challenge"].as_str().unwrap_or_default().to_owned()
}

/// Asserts that `run` issued every site in `sites`, and returns nothing else.
#[track_caller]
fn assert_issued(run: &crate::harness::Run, sites: &[&str]) {
    run.expect_code(0);
    let outcomes = parse_issue_stdout(&run.stdout);
    for site in sites {
        assert!(
            matches!(outcomes.get(*site), Some(IssueOutcome::Issued { .. })),
            "{site} was not issued\n{run}"
        );
    }
}

#[tokio::test]
async fn tls_alpn01_issues_with_nothing_listening_on_port_80() {
    let pebble = Pebble::start().await;
    let certd = Certd::new();
    // `[http] listen` is not where Pebble looks, and certd does not even bind it: no site needs it.
    let http = loopback(free_port());
    certd.write_config_text(&issue_config(
        &pebble,
        &[http],
        loopback(pebble.tls_port),
        &[
            (&["a.test", "www.a.test"], Some("tls-alpn-01")),
            (&["127.0.0.1"], Some("tls-alpn-01")),
        ],
    ));

    let run = certd.issue(&[]).await;
    assert_issued(&run, &["a.test", "127.0.0.1"]);
    assert!(
        std::net::TcpStream::connect(loopback(pebble.http_port)).is_err(),
        "nothing may answer on Pebble's HTTP-01 port"
    );
    assert!(
        std::net::TcpStream::connect(http).is_err(),
        "[http] listen was bound"
    );

    let root = pebble.root_pem().await;
    for (site, names) in [
        ("a.test", &["a.test", "www.a.test"][..]),
        ("127.0.0.1", &["127.0.0.1"]),
    ] {
        let fullchain = certd.read_site_file(site, "fullchain.pem");
        for name in names {
            verify_chain(&fullchain, &root, name).unwrap_or_else(|err| panic!("{site}: {err}"));
        }
        assert_eq!(recorded_challenge(&certd, site), "tls-alpn-01");
    }
    // With its HTTP-01 port closed, Pebble can only have validated on its TLS port.
}

#[tokio::test]
async fn the_automatic_choice_uses_tls_alpn01_when_port_80_is_unreachable() {
    let pebble = Pebble::start().await;
    let certd = Certd::new();
    // certd listens for HTTP-01 on 127.0.0.2, but the name resolves to 127.0.0.1: preflight (like
    // the CA) finds port 80 closed, as behind an ISP that blocks it.
    let http = SocketAddr::from(([127, 0, 0, 2], pebble.http_port));
    certd.write_config_text(&issue_config(
        &pebble,
        &[http],
        loopback(pebble.tls_port),
        &[(&["a.test"], None)],
    ));

    let run = certd.issue(&[]).await;
    assert_issued(&run, &["a.test"]);
    assert_eq!(recorded_challenge(&certd, "a.test"), "tls-alpn-01");
    let fullchain = certd.read_site_file("a.test", "fullchain.pem");
    verify_chain(&fullchain, &pebble.root_pem().await, "a.test").expect("verified chain");
}

#[tokio::test]
async fn the_daemon_answers_tls_alpn01_on_its_https_port_and_serves_normal_clients() {
    let pebble = Pebble::start().await;
    let upstream = Upstream::echo().await;
    let certd = Certd::new();
    let mut config = RunConfig::for_pebble(
        &pebble,
        vec![Site::new(&["a.test"])
            .site_option("challenge", "\"tls-alpn-01\"")
            .proxy("/", &upstream.url())],
    );
    config.https_port = pebble.tls_port;
    config.base.listen = vec![loopback(free_port())];
    config.write(&certd);
    let daemon = Daemon::start(&certd, config.https_addr()).await;
    let client = HttpsClient::new(config.https_addr(), &pebble.root_pem().await);

    // Verified against Pebble's root: the issued certificate, never a self-signed challenge one.
    let serial = client.wait_for_certificate("a.test", CERT_WAIT).await;
    let mut http1 = client.http1("a.test").await;
    assert_eq!(http1.serial, serial);
    assert_eq!(http1.get("a.test", "/").await.status, 200);
    let mut http2 = client.http2("a.test").await;
    assert_eq!(http2.serial, serial);
    let request = hyper::Request::get(format!("https://a.test:{}/", config.https_port))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let reply = http2.send(request).await;
    assert_eq!(reply.status, 200);
    assert_eq!(recorded_challenge(&certd, "a.test"), "tls-alpn-01");
    assert!(
        daemon.log().contains("answered a TLS-ALPN-01 challenge"),
        "{}",
        daemon.log()
    );
}

#[tokio::test]
async fn an_ip_address_certificate_is_issued_and_served_to_a_client_connecting_by_address() {
    let pebble = Pebble::start().await;
    let upstream = Upstream::echo().await;
    let certd = Certd::new();
    // HTTP-01 (the automatic choice, port 80 reachable): Pebble connects to the address itself.
    let config = RunConfig::for_pebble(
        &pebble,
        vec![
            Site::new(&["127.0.0.1"]).proxy("/", &upstream.url()),
            Site::new(&["a.test"]).proxy("/", &upstream.url()),
        ],
    );
    config.write(&certd);
    let _daemon = Daemon::start(&certd, config.https_addr()).await;
    let client = HttpsClient::new(config.https_addr(), &pebble.root_pem().await);

    // An IP server name sends no SNI: the daemon picks the certificate by the local address, and
    // the client's verifier checks the iPAddress SAN.
    client.wait_for_certificate("127.0.0.1", CERT_WAIT).await;
    client.wait_for_certificate("a.test", CERT_WAIT).await;
    let mut by_address = client.http1("127.0.0.1").await;
    let reply = by_address.get("127.0.0.1", "/").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // The address's connection belongs to its site only.
    assert_eq!(by_address.get("a.test", "/").await.status, 421);
    assert_eq!(recorded_challenge(&certd, "127.0.0.1"), "http-01");
}

#[tokio::test]
async fn ipv6_and_ipv4_addresses_are_issued_over_http01() {
    // Where the host has no IPv6 loopback, the IPv4 half is the test (and still has to pass).
    let ipv6 = std::net::TcpListener::bind("[::1]:0").is_ok();
    let pebble = Pebble::start().await;
    let certd = Certd::new();
    let mut http = vec![loopback(pebble.http_port)];
    let mut names = vec!["127.0.0.1"];
    if ipv6 {
        http.push(SocketAddr::from((
            std::net::Ipv6Addr::LOCALHOST,
            pebble.http_port,
        )));
        names.push("::1");
    }
    certd.write_config_text(&issue_config(
        &pebble,
        &http,
        loopback(free_port()),
        &[(&names, Some("http-01"))],
    ));
    let run = certd.issue(&[]).await;
    assert_issued(&run, &["127.0.0.1"]);
    let fullchain = certd.read_site_file("127.0.0.1", "fullchain.pem");
    let root = pebble.root_pem().await;
    for name in &names {
        verify_chain(&fullchain, &root, name).unwrap_or_else(|err| panic!("{name}: {err}"));
    }
    assert!(verify_chain(&fullchain, &root, "127.0.0.2").is_err());
}
