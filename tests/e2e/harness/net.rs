//! The network side of the daemon tests: a TLS client that trusts only Pebble's root and records which
//! certificate the server presented, HTTP/1.1 and HTTP/2 client connections over it (and plain HTTP for
//! port 80), and test upstreams on free loopback ports — an echo server that answers with what it
//! received, optionally after a delay, and a WebSocket echo server.
//!
//! Verification is real: rustls's webpki verifier with Pebble's root as the only trust anchor, so a
//! handshake succeeds only when certd serves a chain (leaf and intermediate) valid for the name asked.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use certd::tls_verifier::{ChainPolicy, Presented, Verifier};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::ServerCertVerified;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

use super::pki::{cert_serial, init_crypto};

/// How long one connection attempt, handshake or request may take before the test fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Which application protocol the client offers in ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// `http/1.1` only.
    Http1,
    /// `h2` only.
    H2,
}

/// Which TLS versions the client offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersions {
    /// TLS 1.2 and 1.3 (rustls's default).
    Any,
    /// TLS 1.2 only.
    Tls12,
}

/// A TLS client for certd's HTTPS listener that trusts only Pebble's root.
#[derive(Clone)]
pub struct HttpsClient {
    addr: SocketAddr,
    roots: Arc<RootCertStore>,
}

/// An established TLS connection and what the handshake showed.
pub struct Handshake {
    /// The stream, ready for HTTP.
    pub stream: TlsStream<TcpStream>,
    /// The served leaf's serial (normalized hex, see [`super::normalize_serial`]).
    pub serial: String,
    /// The negotiated application protocol.
    pub alpn: Option<Vec<u8>>,
    /// The negotiated TLS version.
    pub version: rustls::ProtocolVersion,
}

/// A handshake that did not complete.
#[derive(Debug)]
pub struct Refused {
    /// The error the client saw.
    pub error: std::io::Error,
    /// The end-entity certificate the server presented before failing, if it got that far (our
    /// verifier records it before judging it).
    pub presented: Option<CertificateDer<'static>>,
}

impl HttpsClient {
    /// A client for `addr` trusting only the PEM root `root_pem`.
    pub fn new(addr: SocketAddr, root_pem: &str) -> Self {
        init_crypto();
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(root_pem.as_bytes()).expect("parse Pebble's root"))
            .expect("add Pebble's root");
        Self {
            addr,
            roots: Arc::new(roots),
        }
    }

    /// Handshakes for `server_name` (a DNS name is sent as SNI; an IP address sends none), offering
    /// `alpn` and `versions`. `Err` tells whether the server presented a certificate before failing.
    pub async fn try_handshake(
        &self,
        server_name: ServerName<'static>,
        alpn: Alpn,
        versions: TlsVersions,
    ) -> Result<Handshake, Refused> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = Arc::new(Verifier::new(
            &provider,
            Recording {
                inner: WebPkiServerVerifier::builder(self.roots.clone())
                    .build()
                    .expect("build verifier"),
                presented: Mutex::new(None),
            },
        ));
        let protocol_versions: &[&rustls::SupportedProtocolVersion] = match versions {
            TlsVersions::Any => rustls::DEFAULT_VERSIONS,
            TlsVersions::Tls12 => &[&rustls::version::TLS12],
        };
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(protocol_versions)
            .expect("protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        config.alpn_protocols = match alpn {
            Alpn::Http1 => vec![b"http/1.1".to_vec()],
            Alpn::H2 => vec![b"h2".to_vec()],
        };
        let refused = |error: std::io::Error| Refused {
            error,
            presented: verifier.policy().presented.lock().expect("lock").clone(),
        };
        let tcp = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(self.addr))
            .await
            .map_err(|_| refused(std::io::ErrorKind::TimedOut.into()))?
            .map_err(refused)?;
        let connector = TlsConnector::from(Arc::new(config));
        let stream = tokio::time::timeout(IO_TIMEOUT, connector.connect(server_name, tcp))
            .await
            .map_err(|_| refused(std::io::ErrorKind::TimedOut.into()))?
            .map_err(refused)?;
        let (_, connection) = stream.get_ref();
        let leaf = connection
            .peer_certificates()
            .and_then(|chain| chain.first())
            .expect("a completed handshake has a peer certificate");
        let serial = der_serial(leaf);
        let alpn = connection.alpn_protocol().map(<[u8]>::to_vec);
        let version = connection
            .protocol_version()
            .expect("a completed handshake has a version");
        Ok(Handshake {
            stream,
            serial,
            alpn,
            version,
        })
    }

    /// Handshakes for the DNS name `name` with TLS 1.2 or 1.3, panicking on failure.
    pub async fn handshake(&self, name: &str, alpn: Alpn) -> Handshake {
        self.try_handshake(dns(name), alpn, TlsVersions::Any)
            .await
            .unwrap_or_else(|refused| panic!("handshake for {name} failed: {refused:?}"))
    }

    /// The serial served for `name` on a fresh handshake, or the error.
    pub async fn serial(&self, name: &str) -> Result<String, Refused> {
        self.try_handshake(dns(name), Alpn::Http1, TlsVersions::Any)
            .await
            .map(|handshake| handshake.serial)
    }

    /// Polls fresh handshakes for `name` until one succeeds (certd refuses names it has no certificate
    /// for) and returns the serial; panics after `timeout`.
    pub async fn wait_for_certificate(&self, name: &str, timeout: Duration) -> String {
        self.wait_for_serial(name, timeout, |_| true).await
    }

    /// Polls fresh handshakes for `name` until one shows a serial other than `old`; panics after
    /// `timeout`.
    pub async fn wait_for_new_serial(&self, name: &str, old: &str, timeout: Duration) -> String {
        self.wait_for_serial(name, timeout, |serial| serial != old)
            .await
    }

    /// Polls until handshakes for `name` are refused; panics after `timeout`.
    pub async fn wait_until_refused(&self, name: &str, timeout: Duration) -> Refused {
        let deadline = Instant::now() + timeout;
        loop {
            match self.serial(name).await {
                Err(refused) => return refused,
                Ok(serial) => assert!(
                    Instant::now() < deadline,
                    "{name} still served (serial {serial}) after {timeout:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_for_serial(
        &self,
        name: &str,
        timeout: Duration,
        wanted: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.serial(name).await {
                Ok(serial) if wanted(&serial) => return serial,
                Ok(serial) => format!("serial {serial}"),
                Err(refused) => format!("{refused:?}"),
            };
            assert!(
                Instant::now() < deadline,
                "no wanted certificate for {name} within {timeout:?}; last: {last}"
            );
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// An HTTP/1.1 connection (ALPN `http/1.1`) to `name`.
    pub async fn http1(&self, name: &str) -> Http1 {
        let handshake = self.handshake(name, Alpn::Http1).await;
        assert_eq!(handshake.alpn.as_deref(), Some(&b"http/1.1"[..]));
        let serial = handshake.serial.clone();
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(handshake.stream))
                .await
                .expect("HTTP/1.1 client handshake");
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        Http1 {
            serial,
            sender,
            task,
        }
    }

    /// An HTTP/2 connection (ALPN `h2`) to `name`.
    pub async fn http2(&self, name: &str) -> Http2 {
        let handshake = self.handshake(name, Alpn::H2).await;
        assert_eq!(
            handshake.alpn.as_deref(),
            Some(&b"h2"[..]),
            "certd must choose h2 when offered"
        );
        let serial = handshake.serial.clone();
        let (sender, connection) = hyper::client::conn::http2::handshake(
            TokioExecutor::new(),
            TokioIo::new(handshake.stream),
        )
        .await
        .expect("HTTP/2 client handshake");
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        Http2 {
            serial,
            sender,
            task,
        }
    }
}

/// `name` as a DNS server name.
pub fn dns(name: &str) -> ServerName<'static> {
    ServerName::try_from(name.to_owned()).expect("a valid DNS name")
}

/// The serial of the DER certificate `der`, normalized like [`super::normalize_serial`].
pub fn der_serial(der: &CertificateDer<'_>) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("parse the served certificate");
    cert_serial(&cert)
}

/// The webpki verifier's chain check, noting the end-entity certificate it was shown before judging
/// it, so a test can tell "the server refused" from "the server presented a certificate we rejected".
#[derive(Debug)]
struct Recording {
    inner: Arc<WebPkiServerVerifier>,
    presented: Mutex<Option<CertificateDer<'static>>>,
}

impl ChainPolicy for Recording {
    fn verify_chain(&self, presented: &Presented<'_>) -> Result<ServerCertVerified, rustls::Error> {
        *self.presented.lock().expect("lock") = Some(presented.end_entity.clone().into_owned());
        presented.verify_with(self.inner.as_ref())
    }
}

/// An HTTP/1.1 client connection; the connection task is aborted on drop.
pub struct Http1 {
    /// The serial of the certificate this connection was established with.
    pub serial: String,
    /// Sends requests on this connection.
    pub sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    task: JoinHandle<()>,
}

impl Http1 {
    /// Sends `request` on this connection and reads the whole response.
    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Reply {
        tokio::time::timeout(IO_TIMEOUT, self.sender.ready())
            .await
            .expect("connection ready in time")
            .expect("connection still usable");
        send(self.sender.send_request(request)).await
    }

    /// `GET path` with `Host: host`.
    pub async fn get(&mut self, host: &str, path: &str) -> Reply {
        self.send(get(host, path)).await
    }
}

impl Drop for Http1 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An HTTP/2 client connection; the connection task is aborted on drop.
pub struct Http2 {
    /// The serial of the certificate this connection was established with.
    pub serial: String,
    /// Sends requests on this connection.
    pub sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    task: JoinHandle<()>,
}

impl Http2 {
    /// Sends `request` (its URI must be absolute, which sets `:authority`) and reads the response.
    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Reply {
        send(self.sender.send_request(request)).await
    }
}

impl Drop for Http2 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A request builder for `GET path` with `Host: host`.
pub fn get(host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header(hyper::header::HOST, host)
        .body(Full::new(Bytes::new()))
        .expect("request")
}

/// A whole response.
#[derive(Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: hyper::HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Reply {
    /// A header's value as text, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// The body as UTF-8 text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as what [`Upstream::echo`] reports.
    #[track_caller]
    pub fn echoed(&self) -> Echoed {
        assert_eq!(self.status, StatusCode::OK, "not an echo: {self:?}");
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|err| panic!("echo body is not JSON ({err}): {}", self.text()))
    }
}

async fn send(
    response: impl std::future::Future<Output = hyper::Result<Response<Incoming>>>,
) -> Reply {
    let response = tokio::time::timeout(IO_TIMEOUT, response)
        .await
        .expect("response in time")
        .expect("response");
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(IO_TIMEOUT, body.collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// `GET path` over plain HTTP/1.1 to `127.0.0.1:<port>` with `Host: host` (certd's port 80).
pub async fn http_get(port: u16, host: &str, path: &str) -> Reply {
    let tcp = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect((Ipv4Addr::LOCALHOST, port)))
        .await
        .expect("connect in time")
        .unwrap_or_else(|err| panic!("connect to port {port}: {err}"));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("HTTP/1.1 handshake");
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    let reply = send(sender.send_request(get(host, path))).await;
    task.abort();
    reply
}

/// What the echo upstream received, as it reports it.
#[derive(Debug, serde::Deserialize)]
pub struct Echoed {
    /// The method.
    pub method: String,
    /// The request target (path and query).
    pub path: String,
    /// The HTTP version, e.g. `HTTP/1.1`.
    pub version: String,
    /// Every header, by lower-case name, with all its values in order.
    pub headers: BTreeMap<String, Vec<String>>,
}

impl Echoed {
    /// The only value of header `name`; panics if it is missing or repeated.
    #[track_caller]
    pub fn header(&self, name: &str) -> &str {
        match self.headers.get(name).map(Vec::as_slice) {
            Some([value]) => value,
            other => panic!("header {name}: expected one value, got {other:?} in {self:#?}"),
        }
    }
}

/// A test upstream on a free loopback port; its server task is aborted on drop.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    received: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Upstream {
    /// An HTTP/1.1 server answering every request with 200 and a JSON [`Echoed`] of it.
    pub async fn echo() -> Self {
        Self::slow(Duration::ZERO).await
    }

    /// [`Upstream::echo`], but each answer comes only after `delay`.
    pub async fn slow(delay: Duration) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("local_addr");
        let received = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let (counted_in, counted_out) = (received.clone(), answered.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (received, answered) = (counted_in.clone(), counted_out.clone());
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let (received, answered) = (received.clone(), answered.clone());
                    async move {
                        received.fetch_add(1, Ordering::SeqCst);
                        let response = echo_response(request, delay).await;
                        answered.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, Infallible>(response)
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            received,
            answered,
            task,
        }
    }

    /// A WebSocket server echoing every text and binary message and answering a close with a close.
    /// Each upgrade request it accepted is reported as an [`Echoed`] text message first.
    pub async fn websocket_echo() -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind websocket upstream");
        let addr = listener.local_addr().expect("local_addr");
        let received = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let counted = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_websocket(stream));
            }
        });
        Self {
            addr,
            received,
            answered,
            task,
        }
    }

    /// `http://127.0.0.1:<port>`, for a route's `proxy`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests (or WebSocket connections) it has received.
    pub fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }

    /// How many requests it has answered.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }

    /// Polls until it has received `count` requests; panics after `timeout`.
    pub async fn wait_received(&self, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.received() < count {
            assert!(
                Instant::now() < deadline,
                "upstream received {} requests, not {count}, within {timeout:?}",
                self.received()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo_response(request: Request<Incoming>, delay: Duration) -> Response<Full<Bytes>> {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in request.headers() {
        headers
            .entry(name.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let body = serde_json::json!({
        "method": request.method().as_str(),
        "path": request.uri().path_and_query().map_or("/", |pq| pq.as_str()),
        "version": format!("{:?}", request.version()),
        "headers": headers,
    });
    // Read the request body to the end before answering, as a real application would.
    let _ = request.into_body().collect().await;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    Response::builder()
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("response")
}

// tungstenite's handshake callback returns its own (large) error response type.
#[allow(clippy::result_large_err)]
async fn serve_websocket(stream: TcpStream) {
    let seen: Arc<Mutex<Option<serde_json::Value>>> = Arc::default();
    let record = seen.clone();
    let callback = move |request: &tokio_tungstenite::tungstenite::handshake::server::Request,
                         response| {
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in request.headers() {
            headers
                .entry(name.as_str().to_owned())
                .or_default()
                .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
        }
        *record.lock().expect("lock") = Some(serde_json::json!({
            "method": request.method().as_str(),
            "path": request.uri().path_and_query().map_or("/", |pq| pq.as_str()),
            "version": format!("{:?}", request.version()),
            "headers": headers,
        }));
        Ok(response)
    };
    let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let hello = seen.lock().expect("lock").take().unwrap_or_default();
    if socket.send(Message::text(hello.to_string())).await.is_err() {
        return;
    }
    while let Some(Ok(message)) = socket.next().await {
        // tungstenite itself answers pings and replies to a close.
        let echo = matches!(message, Message::Text(_) | Message::Binary(_));
        if echo && socket.send(message).await.is_err() {
            return;
        }
    }
}
