//! `[[upstream]]` groups through the real daemon over TLS: round robin over two servers, a killed
//! server's GETs retried on the other, a POST to a failing server answered 502 without a retry,
//! servers left out after failing (passive health), backup servers taking over only when the
//! primaries are down, a unix-socket server, a route's `read_timeout`, and a group route's
//! request headers and body limit.
//!
//! The backends here name themselves in each answer (`<name> <method> <path>`) and, unlike the
//! harness's echo upstream, drop their open keep-alive connections too when killed, so a killed
//! backend is really gone for the proxy's connection pool.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HOST;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::task::{JoinHandle, JoinSet};

use super::{World, CERT_WAIT};
use crate::harness::{Alpn, Certd, Pebble, RunConfig, Site, Upstream};

/// A backend that answers `<name> <method> <path>` after reading the request body, or (`broken`)
/// accepts connections and closes them at once. Killed with everything it has open on drop.
struct Backend {
    hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Backend {
    async fn tcp(name: &'static str) -> (Self, SocketAddr) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("local_addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let task = tokio::spawn(async move {
            // Owned by the accept task: aborting it drops the set, which aborts every connection.
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                connections.spawn(serve(stream, name, counted.clone()));
            }
        });
        (Self { hits, task }, addr)
    }

    async fn unix(name: &'static str, path: &Path) -> Self {
        let listener = UnixListener::bind(path).expect("bind unix backend");
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                connections.spawn(serve(stream, name, counted.clone()));
            }
        });
        Self { hits, task }
    }

    /// Counts connections and closes each at once: every request to it fails before an answer.
    async fn broken() -> (Self, SocketAddr) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind broken backend");
        let addr = listener.local_addr().expect("local_addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        (Self { hits, task }, addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve<S>(stream: S, name: &'static str, hits: Arc<AtomicUsize>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let hits = hits.clone();
        async move {
            hits.fetch_add(1, Ordering::SeqCst);
            let line = format!(
                "{name} {} {}",
                request.method(),
                request.uri().path_and_query().map_or("/", |pq| pq.as_str())
            );
            let _ = request.into_body().collect().await;
            Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(line))))
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// `GET path` on an HTTP/1.1 connection of the harness: the status and the body. (A macro: the
/// harness does not export the connection's type.)
macro_rules! get {
    ($h1:expr, $host:expr, $path:expr) => {{
        let reply = $h1.get($host, $path).await;
        (reply.status, reply.text())
    }};
}

/// `POST path` with a small form body.
macro_rules! post {
    ($h1:expr, $host:expr, $path:expr) => {{
        let request = Request::post($path)
            .header(HOST, $host)
            .body(Full::new(Bytes::from_static(b"form=1")))
            .expect("request");
        let reply = $h1.send(request).await;
        (reply.status, reply.text())
    }};
}

#[tokio::test]
async fn upstream_groups_alternate_retry_and_fall_back_to_backups() {
    let pebble = Pebble::start().await;
    let (a, a_addr) = Backend::tcp("a").await;
    let (b, b_addr) = Backend::tcp("b").await;
    let (c, c_addr) = Backend::tcp("c").await;
    let (broken, broken_addr) = Backend::broken().await;
    let (failing, failing_addr) = Backend::broken().await;
    let (primary, primary_addr) = Backend::tcp("primary").await;
    let (standby, standby_addr) = Backend::tcp("standby").await;
    let config = RunConfig::for_pebble(
        &pebble,
        vec![Site::new(&["a.test"])
            .proxy("/pair", "http://pair")
            .proxy("/flaky", "http://flaky")
            .proxy("/standby", "http://standby/base")
            .proxy("/healthy", "http://healthy")],
    )
    .table(&format!(
        "[[upstream]]\nname = \"pair\"\nservers = [\"{a_addr}\", \"{b_addr}\"]\n\n\
         [[upstream]]\nname = \"flaky\"\n\
         servers = [\"{c_addr}\", {{ address = \"{broken_addr}\", max_fails = 0 }}]\n\n\
         [[upstream]]\nname = \"standby\"\n\
         servers = [\"{primary_addr}\", {{ address = \"{standby_addr}\", backup = true }}]\n\n\
         [[upstream]]\nname = \"healthy\"\n\
         servers = [\"{c_addr}\", {{ address = \"{failing_addr}\", fail_timeout = \"60s\" }}]\n"
    ));
    let world = World::serve(pebble, Certd::new(), config).await;
    world.client.wait_for_certificate("a.test", CERT_WAIT).await;
    let host = world.authority("a.test");
    let mut h1 = world.client.http1("a.test").await;

    // Round robin: the two servers take turns.
    let mut answered = Vec::new();
    for i in 0..6 {
        let (status, body) = get!(h1, &host, &format!("/pair/{i}"));
        assert_eq!(status, StatusCode::OK, "{body}");
        let (server, rest) = body.split_once(' ').expect("a backend's answer");
        assert_eq!(rest, format!("GET /pair/{i}"));
        answered.push(server.to_owned());
    }
    for pair in answered.windows(2) {
        assert_ne!(pair[0], pair[1], "servers alternate: {answered:?}");
    }
    assert_eq!((a.hits(), b.hits()), (3, 3));

    // b is killed, keep-alive connections and all: every GET still gets an answer, from a (the one
    // that went to b is sent on to a), and b, now down, is left out.
    drop(b);
    for i in 0..4 {
        let (status, body) = get!(h1, &host, &format!("/pair/after/{i}"));
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, format!("a GET /pair/after/{i}"));
    }
    assert_eq!(a.hits(), 7);

    // flaky: c works, the other server fails every request and never counts as down
    // (max_fails = 0), so round robin keeps sending it requests. GETs are retried on c ...
    for i in 0..4 {
        let (status, body) = get!(h1, &host, &format!("/flaky/{i}"));
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, format!("c GET /flaky/{i}"));
    }
    assert_eq!(c.hits(), 4);
    assert_eq!(
        broken.hits(),
        2,
        "half of the GETs went to the broken server first"
    );
    // ... a POST is not: the one that goes to the broken server gets 502, and c never sees it.
    let first = post!(h1, &host, "/flaky/form");
    let second = post!(h1, &host, "/flaky/form");
    let mut statuses = [first.0, second.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::BAD_GATEWAY],
        "{first:?} {second:?}"
    );
    assert_eq!(broken.hits(), 3, "the POST went to the broken server once");
    assert_eq!(c.hits(), 5, "and was not sent again to c");

    // standby: the backup gets nothing while the primary is up ...
    for i in 0..3 {
        let (status, body) = get!(h1, &host, &format!("/standby/{i}"));
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, format!("primary GET /base/standby/{i}"));
    }
    assert_eq!(standby.hits(), 0);
    // ... and everything once it is down.
    drop(primary);
    for i in 0..3 {
        let (status, body) = get!(h1, &host, &format!("/standby/{i}"));
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, format!("standby GET /base/standby/{i}"));
    }
    assert_eq!(standby.hits(), 3);

    // Passive health: a server that fails (max_fails = 1 by default) is left out for its
    // fail_timeout, so of six GETs at most the first reaches it, and all are answered by c.
    for i in 0..6 {
        let (status, body) = get!(h1, &host, &format!("/healthy/{i}"));
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, format!("c GET /healthy/{i}"));
    }
    assert_eq!(failing.hits(), 1, "tried once, then left out");
}

#[tokio::test]
async fn unix_socket_upstreams_and_route_read_timeouts() {
    let pebble = Pebble::start().await;
    let sockets = tempfile::tempdir().expect("tempdir");
    let socket = sockets.path().join("app.sock");
    let app = Backend::unix("sock", &socket).await;
    let slow = Upstream::slow(Duration::from_secs(5)).await;
    let config = RunConfig::for_pebble(
        &pebble,
        vec![Site::new(&["a.test"])
            .proxy("/app", "http://app")
            .proxy("/slow", &slow.url())
            .route_option("/slow", "read_timeout", "\"500ms\"")],
    )
    .table(&format!(
        "[[upstream]]\nname = \"app\"\nservers = [\"unix:{}\"]\n",
        socket.display()
    ));
    let world = World::serve(pebble, Certd::new(), config).await;
    world.client.wait_for_certificate("a.test", CERT_WAIT).await;
    let host = world.authority("a.test");
    let mut h1 = world.client.http1("a.test").await;

    for i in 0..3 {
        let (status, body) = get!(h1, &host, &format!("/app/{i}?q=1"));
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, format!("sock GET /app/{i}?q=1"));
    }
    assert_eq!(app.hits(), 3);

    // [limits] upstream_response_timeout is 60 s; the route's read_timeout answers 504 first.
    let started = Instant::now();
    let (status, body) = get!(h1, &host, "/slow/x");
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_reload_keeps_the_passive_health_of_an_unchanged_group() {
    let pebble = Pebble::start().await;
    let (c, c_addr) = Backend::tcp("c").await;
    let (failing, failing_addr) = Backend::broken().await;
    let (probe, probe_addr) = Backend::tcp("probe").await;
    let group = format!(
        "[[upstream]]\nname = \"healthy\"\n\
         servers = [\"{c_addr}\", {{ address = \"{failing_addr}\", fail_timeout = \"60s\" }}]\n"
    );
    let config = RunConfig::for_pebble(
        &pebble,
        vec![Site::new(&["a.test"]).proxy("/healthy", "http://healthy")],
    )
    .table(&group);
    let mut world = World::serve(pebble, Certd::new(), config).await;
    world.client.wait_for_certificate("a.test", CERT_WAIT).await;
    let host = world.authority("a.test");
    let mut h1 = world.client.http1("a.test").await;
    for i in 0..4 {
        let (status, body) = get!(h1, &host, &format!("/healthy/{i}"));
        assert_eq!(
            (status, body),
            (StatusCode::OK, format!("c GET /healthy/{i}"))
        );
    }
    assert_eq!(failing.hits(), 1, "tried once, then left out for 60s");

    // Reload with a new route beside the same group: the group, and its down server, stay.
    world.config.sites[0] = Site::new(&["a.test"])
        .proxy("/healthy", "http://healthy")
        .proxy("/probe", &format!("http://{probe_addr}"));
    world.config.write(&world.certd);
    world.daemon.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while get!(h1, &host, "/probe").0 != StatusCode::OK {
        assert!(Instant::now() < deadline, "the reload never took effect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(probe.hits(), 1);
    for i in 0..6 {
        let (status, body) = get!(h1, &host, &format!("/healthy/again/{i}"));
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, format!("c GET /healthy/again/{i}"));
    }
    assert_eq!(failing.hits(), 1, "still left out after the reload");
    assert_eq!(c.hits(), 10);
}

/// A route whose upstream is a group gets the same `headers.request` rules and `max_body_size`
/// as one with a single server (nginx: `proxy_set_header` and `client_max_body_size` do not care
/// how `proxy_pass` picks the server), `$proxy_host` being the group's name.
#[tokio::test]
async fn a_group_route_sends_its_request_headers_and_keeps_its_body_limit() {
    let pebble = Pebble::start().await;
    let one = Upstream::echo().await;
    let two = Upstream::echo().await;
    let config = RunConfig::for_pebble(
        &pebble,
        vec![Site::new(&["a.test"])
            .proxy("/", "http://app")
            .route_option(
                "/",
                "headers",
                r#"{ request = { set = { "X-Accel-Mapping" = "/srv/public/=/downloads/", "X-Proxy-Host" = "$proxy_host" }, remove = ["X-Debug"] } }"#,
            )
            .route_option("/", "max_body_size", "\"1k\"")],
    )
    .table(&format!(
        "[[upstream]]\nname = \"app\"\nservers = [\"{}\", \"{}\"]\n",
        one.addr, two.addr
    ));
    let world = World::serve(pebble, Certd::new(), config).await;
    world.client.wait_for_certificate("a.test", CERT_WAIT).await;
    let host = world.authority("a.test");
    let mut h1 = world.client.http1("a.test").await;

    // Both servers of the group are asked (round robin), and each sees the rules.
    for i in 0..2 {
        let request = Request::get(format!("/x/{i}"))
            .header(HOST, &host)
            .header("x-debug", "1")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let echoed = h1.send(request).await.echoed();
        assert_eq!(echoed.path, format!("/x/{i}"), "{echoed:#?}");
        assert_eq!(echoed.header("x-accel-mapping"), "/srv/public/=/downloads/");
        assert_eq!(echoed.header("x-proxy-host"), "app");
        assert!(!echoed.headers.contains_key("x-debug"), "{echoed:#?}");
    }
    assert_eq!((one.received(), two.received()), (1, 1));

    // A chunked body growing past max_body_size is cut off with 413, as for a single server.
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let mut body = Vec::new();
    for _ in 0..4 {
        body.extend_from_slice(b"200\r\n");
        body.extend_from_slice(&[b'y'; 0x200]);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let mut tls = world.client.handshake("a.test", Alpn::Http1).await.stream;
    tls.write_all(head.as_bytes()).await.expect("send the head");
    let _ = tls.write_all(&body).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut response)).await;
    let answer = String::from_utf8_lossy(&response).into_owned();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}
