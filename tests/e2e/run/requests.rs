//! What a request may ask for, sent raw over real TLS (curl and hyper would tidy it up first): a host
//! of another site on this connection is 421, malformed heads and every request-smuggling framing
//! (CL.TE, TE.CL, TE.TE obfuscations after smuggler.py's list) are 400 with the connection closed,
//! dot segments cannot lead out of a route, and a handshake without SNI gets `[https] default_site`.
//!
//! Each upstream here records every request it parses, so a test can show that what certd refused,
//! or what it normalised, never reached it in another form.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::{World, CERT_WAIT};
use crate::harness::{der_serial, dns, Alpn, Certd, Pebble, RunConfig, Site};
use crate::reliability::{exchange, status_of};

/// How long a raw exchange waits for certd to answer and close.
const RAW_WAIT: Duration = Duration::from_secs(5);

/// An HTTP/1.1 upstream that records `METHOD target` of every request it parses and answers
/// `200 <name> <target>`.
struct Recorder {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Recorder {
    async fn start(name: &'static str) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind a recorder");
        let addr = listener.local_addr().expect("recorder address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let log = log.clone();
                    async move {
                        let target = request.uri().to_string();
                        let line = format!("{} {target}", request.method());
                        let body = request.into_body().collect().await.map(|b| b.to_bytes());
                        let body = body.unwrap_or_default();
                        log.lock()
                            .expect("lock")
                            .push(format!("{line} body={}", String::from_utf8_lossy(&body)));
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            format!("{name} {target}"),
                        ))))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Self { addr, seen, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request parsed so far, `METHOD target body=...`.
    fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("lock").clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends `request` as written on a fresh TLS connection with SNI `sni` (ALPN http/1.1); returns
/// the response text and whether certd closed the connection within [`RAW_WAIT`].
async fn raw(world: &World, sni: &str, request: &str) -> (String, bool) {
    let mut tls = world.client.handshake(sni, Alpn::Http1).await.stream;
    exchange(&mut tls, request.as_bytes(), RAW_WAIT).await
}

/// How many HTTP/1 responses `text` holds.
fn responses(text: &str) -> usize {
    text.matches("HTTP/1.1 ").count()
}

#[tokio::test]
async fn a_host_of_another_site_is_misdirected_and_malformed_hosts_are_refused() {
    let pebble = Pebble::start().await;
    let (a, b) = (Recorder::start("a").await, Recorder::start("b").await);
    let config = RunConfig::for_pebble(
        &pebble,
        vec![
            Site::new(&["a.test", "www.a.test"]).proxy("/", &a.url()),
            Site::new(&["b.test"]).proxy("/", &b.url()),
        ],
    );
    let world = World::serve(pebble, Certd::new(), config).await;
    world.client.wait_for_certificate("a.test", CERT_WAIT).await;
    world.client.wait_for_certificate("b.test", CERT_WAIT).await;
    let port = world.config.https_port;

    // The control: b.test is served, on its own connection.
    let (text, _) = raw(
        &world,
        "b.test",
        "GET /own HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&text), Some(200), "{text}");
    assert_eq!(b.seen().len(), 1, "{:?}", b.seen());

    // Fronting: a connection for a.test asking for b.test, in Host or in the absolute form.
    for request in [
        "GET /fronted HTTP/1.1\r\nHost: b.test\r\n\r\n".to_owned(),
        format!("GET /fronted HTTP/1.1\r\nHost: B.TEST.:{port}\r\n\r\n"),
        format!("GET https://b.test:{port}/fronted HTTP/1.1\r\nHost: a.test\r\n\r\n"),
    ] {
        let (text, closed) = raw(&world, "a.test", &request).await;
        assert_eq!(status_of(&text), Some(421), "{request:?}:\n{text}");
        assert!(closed, "{request:?}: the connection stays open");
    }
    assert_eq!(
        b.seen().len(),
        1,
        "b's upstream saw a fronted request: {:?}",
        b.seen()
    );

    // Names of one site share a connection.
    let (text, _) = raw(
        &world,
        "a.test",
        &format!("GET /www HTTP/1.1\r\nHost: www.a.test:{port}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status_of(&text), Some(200), "{text}");
    assert!(text.ends_with("a /www"), "{text}");

    // RFC 9112 §3.2: one valid Host, and HTTP/1.1 must have one.
    for request in [
        "GET /two HTTP/1.1\r\nHost: a.test\r\nHost: a.test\r\n\r\n",
        "GET /two HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
        "GET /none HTTP/1.1\r\n\r\n",
        "GET /bad HTTP/1.1\r\nHost: a.test/x\r\n\r\n",
        "GET /bad HTTP/1.1\r\nHost: user@a.test\r\n\r\n",
    ] {
        let (text, closed) = raw(&world, "a.test", request).await;
        assert_eq!(status_of(&text), Some(400), "{request:?}:\n{text}");
        assert!(closed, "{request:?}: the connection stays open");
    }
    // HTTP/1.0 may leave Host out: the connection's site answers.
    let (text, _) = raw(&world, "a.test", "GET /old HTTP/1.0\r\n\r\n").await;
    assert_eq!(status_of(&text), Some(200), "{text}");

    // HTTP/2: :authority of another site is 421, of the same site (coalescing) 200, and a Host
    // that disagrees with :authority is 400.
    let mut h2 = world.client.http2("a.test").await;
    let request = |authority: &str, host: Option<&str>| {
        let mut builder = Request::get(format!("https://{authority}:{port}/h2"));
        if let Some(host) = host {
            builder = builder.header(hyper::header::HOST, host);
        }
        builder.body(Full::new(Bytes::new())).expect("request")
    };
    assert_eq!(
        h2.send(request("b.test", None)).await.status,
        StatusCode::MISDIRECTED_REQUEST
    );
    let coalesced = h2.send(request("www.a.test", None)).await;
    assert_eq!(coalesced.status, StatusCode::OK);
    assert_eq!(coalesced.text(), "a /h2");
    assert_eq!(
        h2.send(request("a.test", Some("b.test"))).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        h2.send(request("a.test", Some(&format!("a.test:{port}"))))
            .await
            .status,
        StatusCode::OK
    );

    assert_eq!(b.seen().len(), 1, "b's upstream saw: {:?}", b.seen());
    for seen in a.seen() {
        assert!(
            !seen.contains("/two") && !seen.contains("/none") && !seen.contains("/bad"),
            "a refused request reached a's upstream: {seen}"
        );
    }
}

/// What certd must do with a [`Probe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// 400, and the connection closed: nothing after the head is read as another request.
    BadRequest,
    /// A valid `Transfer-Encoding: chunked` beside a `Content-Length`: hyper drops the length while
    /// parsing (certd never sees it, so cannot answer 400), reads the body as chunked and closes the
    /// connection after answering, as RFC 9112 §6.3 allows; the upstream gets the decoded body with
    /// neither header.
    ChunkedThenClosed,
    /// Framing with one reading: served as one request.
    Served,
}

/// One request-smuggling probe: a request whose framing a front end and a back end could read
/// differently, with `GET /smuggled` hidden where the other reading would find a second request.
struct Probe {
    name: &'static str,
    request: String,
    expect: Expect,
}

/// The hidden second request.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n";

/// CL.TE: `Content-Length` covers everything, `gadget` (some spelling of `Transfer-Encoding`) ends the
/// body at the `0` chunk, before `GET /smuggled`.
fn cl_te(name: &'static str, gadget: &str, expect: Expect) -> Probe {
    let body = format!("0\r\n\r\n{SMUGGLED}");
    Probe {
        name,
        request: format!(
            "POST /probe HTTP/1.1\r\nHost: a.test\r\nContent-Length: {}\r\n{gadget}\r\n\r\n{body}",
            body.len()
        ),
        expect,
    }
}

/// TE.CL: `gadget` frames a chunk that holds `GET /smuggled`, `Content-Length: 4` ends the body
/// after the chunk size line.
fn te_cl(name: &'static str, gadget: &str, expect: Expect) -> Probe {
    let chunk = format!("{SMUGGLED}x=1");
    Probe {
        name,
        request: format!(
            "POST /probe HTTP/1.1\r\nHost: a.test\r\nContent-Length: 4\r\n{gadget}\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
            chunk.len()
        ),
        expect,
    }
}

fn probes() -> Vec<Probe> {
    use Expect::{BadRequest, ChunkedThenClosed, Served};
    // TE.TE obfuscations (after smuggler.py's mutation list), each sent as CL.TE and as TE.CL:
    // either not a valid header line (hyper refuses it), or not `chunked` alone (certd refuses
    // it), or a valid `chunked` (hyper drops the Content-Length and closes after answering).
    let gadgets = [
        ("plain", "Transfer-Encoding: chunked", ChunkedThenClosed),
        ("xchunked", "Transfer-Encoding: xchunked", BadRequest),
        (
            "space before colon",
            "Transfer-Encoding : chunked",
            BadRequest,
        ),
        (
            "chunked, identity",
            "Transfer-Encoding: chunked, identity",
            BadRequest,
        ),
        (
            "identity, chunked",
            "Transfer-Encoding: identity, chunked",
            BadRequest,
        ),
        (
            "cow, chunked",
            "Transfer-Encoding: cow, chunked",
            BadRequest,
        ),
        (
            "chunked then cow",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: cow",
            BadRequest,
        ),
        (
            "cow then chunked",
            "Transfer-Encoding: cow\r\nTransfer-Encoding: chunked",
            BadRequest,
        ),
        (
            "chunked twice",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
            BadRequest,
        ),
        ("name prefix", " Transfer-Encoding: chunked", BadRequest),
        (
            "tab prefix",
            "Transfer-Encoding:\tchunked",
            ChunkedThenClosed,
        ),
        (
            "tab around colon",
            "Transfer-Encoding\t:\tchunked",
            BadRequest,
        ),
        ("space in name", "Transfer Encoding: chunked", BadRequest),
        ("underscore", "Transfer_Encoding: chunked", BadRequest),
        ("vertical tab", "Transfer-Encoding:\x0bchunked", BadRequest),
        ("line wrapped", "Transfer-Encoding:\r\n chunked", BadRequest),
        ("quoted", "Transfer-Encoding: \"chunked\"", BadRequest),
        ("lazy", "Transfer-Encoding: chunk", BadRequest),
        ("sarcasm", "TrAnSFer-EnCODinG: cHuNkeD", ChunkedThenClosed),
        (
            "bare CR inside",
            "X: X\rTransfer-Encoding: chunked",
            BadRequest,
        ),
        (
            "bare LF inside",
            "X: X\nTransfer-Encoding: chunked",
            ChunkedThenClosed,
        ),
        (
            "tab suffix",
            "Transfer-Encoding: chunked\t",
            ChunkedThenClosed,
        ),
    ];
    let mut probes = Vec::new();
    for (name, gadget, expect) in gadgets {
        probes.push(cl_te(name, gadget, expect));
        probes.push(te_cl(name, gadget, expect));
    }
    // Content-Length disagreements: `whole` is the length that covers the smuggled request too.
    let whole = "0\r\n\r\n".len() + SMUGGLED.len();
    let lengths = |name, lengths: String, expect| {
        Probe {
        name,
        request: format!(
            "POST /probe HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n{lengths}\r\n\r\n0\r\n\r\n{SMUGGLED}"
        ),
        expect,
    }
    };
    probes.push(lengths(
        "two Content-Length",
        format!("Content-Length: 5\r\nContent-Length: {whole}"),
        BadRequest,
    ));
    probes.push(lengths(
        "Content-Length list",
        format!("Content-Length: {whole}, {whole}"),
        BadRequest,
    ));
    probes.push(lengths(
        "signed Content-Length",
        format!("Content-Length: +{whole}"),
        BadRequest,
    ));
    // Equal lengths have one reading; hyper keeps one of them, and so does what is forwarded.
    probes.push(lengths(
        "same Content-Length twice",
        format!("Content-Length: {whole}\r\nContent-Length: {whole}"),
        Served,
    ));
    // Not framing at all: certd reads the body by Content-Length, and so does the upstream.
    probes.push(cl_te(
        "Content-Encoding",
        "Content-Encoding: chunked\r\nConnection: close",
        Served,
    ));
    probes
}

#[tokio::test]
async fn request_smuggling_probes_are_refused_and_never_reach_the_upstream() {
    let pebble = Pebble::start().await;
    let app = Recorder::start("app").await;
    let config =
        RunConfig::for_pebble(&pebble, vec![Site::new(&["a.test"]).proxy("/", &app.url())]);
    let world = World::serve(pebble, Certd::new(), config).await;
    world.client.wait_for_certificate("a.test", CERT_WAIT).await;

    // Controls: a chunked body alone and a Content-Length body alone are served and forwarded.
    let (text, _) = raw(
        &world,
        "a.test",
        "POST /chunked HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&text), Some(200), "{text}");
    let (text, _) = raw(
        &world,
        "a.test",
        "POST /length HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    )
    .await;
    assert_eq!(status_of(&text), Some(200), "{text}");
    assert_eq!(
        app.seen(),
        ["POST /chunked body=abc", "POST /length body=abc"],
        "the controls reach the upstream with their bodies"
    );

    let mut outcomes = Vec::new();
    for probe in probes() {
        let (text, closed) = raw(&world, "a.test", &probe.request).await;
        let status = status_of(&text);
        outcomes.push(format!(
            "{:<28} -> {status:?}, closed: {closed}",
            probe.name
        ));
        assert!(
            responses(&text) <= 1,
            "{}: more than one response, so a second request was read:\n{text}",
            probe.name
        );
        let expected = match probe.expect {
            Expect::BadRequest => status == Some(400) && closed,
            Expect::ChunkedThenClosed => status == Some(200) && closed,
            Expect::Served => status == Some(200),
        };
        assert!(
            expected,
            "{}: expected {:?}, got {status:?} (closed: {closed}):\n{text}",
            probe.name, probe.expect
        );
    }
    println!("smuggling probes:\n  {}", outcomes.join("\n  "));
    let seen = app.seen();
    assert!(
        seen.iter().all(|line| !line.starts_with("GET /smuggled")),
        "a smuggled request reached the upstream: {seen:#?}"
    );
    // Only the controls and the probes certd answered were forwarded, each as one request.
    let answered = probes()
        .iter()
        .filter(|probe| probe.expect != Expect::BadRequest)
        .count();
    assert_eq!(seen.len(), 2 + answered, "{seen:#?}");
    // A Content-Length that hyper dropped is not forwarded: the upstream reads the decoded chunks.
    for line in &seen[2..] {
        assert!(
            line == "POST /probe body="
                || line == "POST /probe body=GET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\nx=1"
                || line
                    == "POST /probe body=0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n",
            "{line:?}"
        );
    }
}

#[tokio::test]
async fn dot_segments_cannot_lead_out_of_a_route() {
    let pebble = Pebble::start().await;
    let (root, api) = (Recorder::start("root").await, Recorder::start("api").await);
    let config = RunConfig::for_pebble(
        &pebble,
        vec![Site::new(&["a.test"])
            .proxy("/", &root.url())
            .proxy("/api/", &api.url())],
    );
    let world = World::serve(pebble, Certd::new(), config).await;
    world.client.wait_for_certificate("a.test", CERT_WAIT).await;

    let cases = [
        ("/api/../admin", "root /admin"),
        ("/api/%2e%2e/admin", "root /admin"),
        (
            "/api/%2E%2E/admin?next=/api/../x",
            "root /admin?next=/api/../x",
        ),
        ("/api/./.%2e/admin", "root /admin"),
        ("//api//..//admin", "root /admin"),
        ("/x/../api/secret", "api /api/secret"),
        ("/%61pi/v1//users/.", "api /api/v1/users/"),
    ];
    for (target, expected) in cases {
        let (text, _) = raw(
            &world,
            "a.test",
            &format!("GET {target} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status_of(&text), Some(200), "{target}:\n{text}");
        assert!(
            text.ends_with(expected),
            "{target}: expected `{expected}`:\n{text}"
        );
    }
    for target in [
        "/api/..%2fadmin",
        "/api/%2e%2e%2fadmin",
        "/..",
        "/api/../..",
        "/a%00b",
    ] {
        let (text, _) = raw(
            &world,
            "a.test",
            &format!("GET {target} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status_of(&text), Some(400), "{target}:\n{text}");
    }
    let api_seen = api.seen();
    assert_eq!(
        api_seen,
        ["GET /api/secret body=", "GET /api/v1/users/ body="],
        "the upstream behind /api/ gets only paths under it, normalised"
    );
    assert!(
        root.seen()
            .iter()
            .all(|line| !line.contains("..") || line.contains("next=")),
        "a raw path reached the upstream: {:?}",
        root.seen()
    );
    assert_eq!(root.seen().len(), 5, "{:?}", root.seen());
}

#[tokio::test]
async fn a_handshake_without_sni_gets_the_default_site() {
    let pebble = Pebble::start().await;
    let (a, b) = (Recorder::start("a").await, Recorder::start("b").await);
    let config = RunConfig::for_pebble(
        &pebble,
        vec![
            Site::new(&["a.test", "www.a.test"]).proxy("/", &a.url()),
            Site::new(&["b.test"]).proxy("/", &b.url()),
        ],
    );
    let certd = Certd::new();
    let toml =
        config
            .to_toml()
            .replacen("\n[https]\n", "\n[https]\ndefault_site = \"a.test\"\n", 1);
    assert!(toml.contains("default_site"), "{toml}");
    certd.write_config_text(&toml);
    let daemon = crate::harness::Daemon::start(&certd, config.https_addr()).await;
    let root_pem = pebble.root_pem().await;
    let client = crate::harness::HttpsClient::new(config.https_addr(), &root_pem);
    let a_serial = client.wait_for_certificate("a.test", CERT_WAIT).await;
    client.wait_for_certificate("b.test", CERT_WAIT).await;

    // A client that sends no SNI, verifying what it gets against Pebble's root for `a.test`.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(root_pem.as_bytes()).expect("parse the root"))
        .expect("add the root");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.enable_sni = false;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let connect = || async {
        let tcp = tokio::net::TcpStream::connect(config.https_addr())
            .await
            .expect("connect");
        tokio::time::timeout(
            Duration::from_secs(10),
            connector.connect(dns("a.test"), tcp),
        )
        .await
        .expect("handshake in time")
        .expect("the default site's certificate verifies for a.test")
    };

    let mut stream = connect().await;
    let leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(der_serial)
        .expect("a leaf");
    assert_eq!(leaf, a_serial, "the default site's certificate");
    let (text, _) = exchange(
        &mut stream,
        b"GET /nosni HTTP/1.1\r\nHost: www.a.test\r\nConnection: close\r\n\r\n",
        RAW_WAIT,
    )
    .await;
    assert_eq!(status_of(&text), Some(200), "{text}");
    assert!(text.ends_with("a /nosni"), "{text}");

    // Without SNI, only the default site's names: no fronting through it.
    let mut stream = connect().await;
    let (text, _) = exchange(
        &mut stream,
        b"GET /nosni HTTP/1.1\r\nHost: b.test\r\n\r\n",
        RAW_WAIT,
    )
    .await;
    assert_eq!(status_of(&text), Some(421), "{text}");
    assert!(b.seen().is_empty(), "{:?}", b.seen());

    // A reload without `default_site`: handshakes without SNI are refused again.
    certd.write_config_text(&config.to_toml());
    daemon.signal("HUP");
    daemon
        .wait_for_log("configuration reloaded", Duration::from_secs(10))
        .await;
    let tcp = tokio::net::TcpStream::connect(config.https_addr())
        .await
        .expect("connect");
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        connector.connect(dns("a.test"), tcp),
    )
    .await
    .expect("handshake in time");
    assert!(
        refused.is_err(),
        "a handshake without SNI succeeded after default_site was removed"
    );
    drop(daemon);
}
