//! Who the client is, as the upstream hears it: forged forwarding headers from an ordinary client
//! never reach it, a trusted proxy's chain does, and with `proxy_protocol = true` the PROXY header's
//! source (v1 and v2, written by hand here) is the client, while connections without a header, or
//! from an address outside `trusted_proxies`, are closed before TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{World, CERT_WAIT};
use crate::harness::{dns, Certd, Daemon, Pebble, RunConfig, Site, Upstream};

/// Headers with which a client claims to be 6.6.6.6.
const FORGED: [(&str, &str); 5] = [
    ("x-real-ip", "6.6.6.6"),
    ("forwarded", "for=6.6.6.6;proto=http"),
    ("x-forwarded-for", "6.6.6.6"),
    ("x-forwarded-proto", "http"),
    ("x-forwarded-host", "evil.test"),
];

/// A `GET /who` for `host` carrying [`FORGED`].
fn forged_request(uri: &str, host: Option<&str>) -> Request<Full<Bytes>> {
    let mut request = Request::get(uri);
    if let Some(host) = host {
        request = request.header(hyper::header::HOST, host);
    }
    for (name, value) in FORGED {
        request = request.header(name, value);
    }
    request.body(Full::new(Bytes::new())).expect("request")
}

/// The only value of `name` among the headers the echo upstream reports.
#[track_caller]
fn only(echoed: &serde_json::Value, name: &str) -> String {
    match echoed["headers"][name].as_array().map(Vec::as_slice) {
        Some([value]) => value.as_str().unwrap_or_default().to_owned(),
        other => panic!("{name}: expected one value, got {other:?} in {echoed:#}"),
    }
}

/// Asserts that nothing of [`FORGED`] reached the upstream.
#[track_caller]
fn assert_nothing_forged(echoed: &serde_json::Value) {
    for (name, values) in echoed["headers"].as_object().expect("headers") {
        let text = values.to_string();
        assert!(
            !text.contains("6.6.6.6") && !text.contains("evil.test"),
            "{name}: {text} reached the upstream: {echoed:#}"
        );
    }
}

#[tokio::test]
async fn forged_client_identity_never_reaches_the_upstream_unless_from_a_trusted_proxy() {
    let pebble = Pebble::start().await;
    let upstream = Upstream::echo().await;
    let config = RunConfig::for_pebble(
        &pebble,
        vec![Site::new(&["a.test"]).proxy("/", &upstream.url())],
    );
    let world = World::serve(pebble, Certd::new(), config).await;
    world.client.wait_for_certificate("a.test", CERT_WAIT).await;
    let host = world.authority("a.test");

    // An ordinary client (no trusted_proxies): every forwarding header says what certd saw.
    let mut h1 = world.client.http1("a.test").await;
    let reply = h1.send(forged_request("/who", Some(&host))).await;
    let echoed: serde_json::Value = serde_json::from_slice(&reply.body).expect("echo JSON");
    assert_nothing_forged(&echoed);
    assert_eq!(only(&echoed, "x-real-ip"), "127.0.0.1");
    assert_eq!(only(&echoed, "x-forwarded-for"), "127.0.0.1");
    assert_eq!(only(&echoed, "x-forwarded-proto"), "https");
    assert_eq!(only(&echoed, "x-forwarded-host"), host);
    assert_eq!(
        only(&echoed, "forwarded"),
        format!("for=127.0.0.1;host=\"{host}\";proto=https")
    );

    // The same over HTTP/2.
    let mut h2 = world.client.http2("a.test").await;
    let reply = h2
        .send(forged_request(&format!("https://{host}/who"), None))
        .await;
    let echoed: serde_json::Value = serde_json::from_slice(&reply.body).expect("echo JSON");
    assert_nothing_forged(&echoed);
    assert_eq!(only(&echoed, "x-real-ip"), "127.0.0.1");
    assert_eq!(only(&echoed, "x-forwarded-for"), "127.0.0.1");

    // With 127.0.0.1 a trusted proxy, its chain is kept and the real client is the address it
    // reports, in the upstream's X-Real-IP and in the access log.
    let World {
        daemon,
        client,
        mut config,
        certd,
        pebble,
    } = world;
    drop(daemon);
    config = config.https("trusted_proxies", "[\"127.0.0.1\"]");
    config.write(&certd);
    let daemon = Daemon::start(&certd, config.https_addr()).await;
    client.wait_for_certificate("a.test", CERT_WAIT).await;
    let mut h1 = client.http1("a.test").await;
    let request = Request::get("/trusted")
        .header(hyper::header::HOST, &host)
        .header("x-forwarded-for", "6.6.6.6, 203.0.113.7")
        .header("x-forwarded-proto", "http")
        .header("x-real-ip", "6.6.6.6")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let reply = h1.send(request).await;
    let echoed: serde_json::Value = serde_json::from_slice(&reply.body).expect("echo JSON");
    assert_eq!(
        only(&echoed, "x-forwarded-for"),
        "6.6.6.6, 203.0.113.7, 127.0.0.1"
    );
    assert_eq!(only(&echoed, "x-real-ip"), "203.0.113.7");
    assert_eq!(only(&echoed, "x-forwarded-proto"), "http");
    daemon
        .wait_for_log("client=203.0.113.7", Duration::from_secs(5))
        .await;
    drop(pebble);
}

/// A PROXY v2 header: `command` 0 (LOCAL) or 1 (PROXY), TCP over IPv4 from `source`.
fn v2_header(command: u8, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.push(0x20 | command);
    header.push(0x11);
    header.extend_from_slice(&12u16.to_be_bytes());
    for address in [source, destination] {
        let SocketAddr::V4(v4) = address else {
            panic!("{address} is not IPv4");
        };
        header.extend_from_slice(&v4.ip().octets());
    }
    header.extend_from_slice(&source.port().to_be_bytes());
    header.extend_from_slice(&destination.port().to_be_bytes());
    header
}

/// A client for certd's HTTPS port that first sends a PROXY header, as a load balancer does.
struct ProxiedClient {
    addr: SocketAddr,
    connector: TlsConnector,
}

impl ProxiedClient {
    async fn new(addr: SocketAddr, pebble: &Pebble) -> Self {
        let pem = pebble.root_pem().await;
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(pem.as_bytes()).expect("Pebble's root"))
            .expect("add Pebble's root");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self {
            addr,
            connector: TlsConnector::from(Arc::new(config)),
        }
    }

    /// Sends `header` (nothing when empty), then TLS for a.test and `GET /who` with [`FORGED`];
    /// returns what the echo upstream received, or why that failed.
    async fn get(&self, header: &[u8], host: &str) -> Result<serde_json::Value, String> {
        let exchange = async {
            let mut tcp = TcpStream::connect(self.addr)
                .await
                .map_err(|err| format!("connect: {err}"))?;
            tcp.write_all(header)
                .await
                .map_err(|err| format!("PROXY header: {err}"))?;
            let tls = self
                .connector
                .connect(dns("a.test"), tcp)
                .await
                .map_err(|err| format!("TLS: {err}"))?;
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|err| format!("HTTP: {err}"))?;
            tokio::spawn(connection);
            let response = sender
                .send_request(forged_request("/who", Some(host)))
                .await
                .map_err(|err| format!("request: {err}"))?;
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|err| format!("body: {err}"))?
                .to_bytes();
            serde_json::from_slice(&body).map_err(|err| format!("echo JSON: {err}"))
        };
        tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .unwrap_or_else(|_| Err("timed out".into()))
    }
}

#[tokio::test]
async fn proxy_protocol_headers_name_the_client_and_nothing_else_gets_in() {
    let pebble = Pebble::start().await;
    let upstream = Upstream::echo().await;
    let config = RunConfig::for_pebble(
        &pebble,
        vec![Site::new(&["a.test"]).proxy("/", &upstream.url())],
    )
    .https("trusted_proxies", "[\"127.0.0.1\"]")
    .https("proxy_protocol", "true");
    let https = config.https_addr();
    let host = format!("a.test:{}", config.https_port);
    let certd = Certd::new();
    config.write(&certd);
    let daemon = Daemon::start(&certd, https).await;
    let client = ProxiedClient::new(https, &pebble).await;
    let v1 = format!(
        "PROXY TCP4 198.51.100.7 127.0.0.1 40000 {}\r\n",
        https.port()
    );

    // Pebble validates on :80 (no PROXY protocol there); :443 needs a header on every connection.
    let deadline = Instant::now() + CERT_WAIT;
    let echoed = loop {
        match client.get(v1.as_bytes(), &host).await {
            Ok(echoed) => break echoed,
            Err(err) => assert!(
                Instant::now() < deadline,
                "no answer through a PROXY v1 header within {CERT_WAIT:?}: {err}\n{}",
                daemon.log()
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // v1: the header's source is the client; what the client itself claims is replaced.
    assert_nothing_forged(&echoed);
    assert_eq!(only(&echoed, "x-real-ip"), "198.51.100.7");
    assert_eq!(only(&echoed, "x-forwarded-for"), "198.51.100.7");
    daemon
        .wait_for_log("client=198.51.100.7", Duration::from_secs(5))
        .await;

    // v2 PROXY, and v2 LOCAL (a balancer's own health check: the peer itself is the client).
    let source: SocketAddr = "203.0.113.9:5555".parse().expect("address");
    let echoed = client
        .get(&v2_header(1, source, https), &host)
        .await
        .expect("through a PROXY v2 header");
    assert_nothing_forged(&echoed);
    assert_eq!(only(&echoed, "x-real-ip"), "203.0.113.9");
    assert_eq!(only(&echoed, "x-forwarded-for"), "203.0.113.9");
    let echoed = client
        .get(&v2_header(0, source, https), &host)
        .await
        .expect("through a PROXY v2 LOCAL header");
    // LOCAL leaves the balancer (127.0.0.1, trusted) as the peer, so its chain is believed.
    assert_eq!(only(&echoed, "x-forwarded-for"), "6.6.6.6, 127.0.0.1");

    // No header, or a malformed one: closed before TLS.
    let err = client.get(b"", &host).await.expect_err("no PROXY header");
    assert!(err.starts_with("TLS"), "{err}");
    let err = client
        .get(b"PROXY TCP4 not an address\r\n", &host)
        .await
        .expect_err("a malformed PROXY header");
    assert!(err.starts_with("TLS"), "{err}");
    assert_eq!(upstream.received(), 3, "only the proxied requests arrived");

    // A balancer outside trusted_proxies: its PROXY header is not believed, the connection closed.
    drop(daemon);
    let config = config.https("trusted_proxies", "[\"10.0.0.0/8\"]");
    let config = RunConfig {
        https: config
            .https
            .into_iter()
            .filter(|(key, value)| key != "trusted_proxies" || value.contains("10.0.0.0"))
            .collect(),
        ..config
    };
    config.write(&certd);
    let daemon = Daemon::start(&certd, https).await;
    let err = client
        .get(v1.as_bytes(), &host)
        .await
        .expect_err("a PROXY header from an untrusted address");
    assert!(err.starts_with("TLS"), "{err}");
    daemon
        .wait_for_log("not in [https] trusted_proxies", Duration::from_secs(5))
        .await;
    assert_eq!(upstream.received(), 3);
}
