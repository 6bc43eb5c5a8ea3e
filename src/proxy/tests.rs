//! Tests of [`Proxy::handle`] through real sockets on 127.0.0.1: an echo upstream, a hyper server
//! whose service calls the proxy, and hyper (HTTP/1.1 and HTTP/2) or WebSocket clients against it.
//! Every test is bounded by [`TIMEOUT`].
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame};
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::*;

const TIMEOUT: Duration = Duration::from_secs(20);

async fn bounded<F: Future<Output = ()>>(test: F) {
    tokio::time::timeout(TIMEOUT, test)
        .await
        .expect("test timed out");
}

/// A body fed chunk by chunk from a channel, ending when the sender drops.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|chunk| Ok(Frame::data(chunk))))
    }
}

/// Starts an HTTP/1.1 upstream named `name`. It answers with JSON describing the request (`name`,
/// `method`, `uri`, `version`, `headers`, `body_len`, and `peer`, the proxy's address), except:
/// paths ending in `/hang` never answer, `/hop` adds hop-by-hop response headers, `/stream` sends one
/// chunk and then stalls, `/upstream-404` answers 404 itself.
async fn start_upstream(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            let service = service_fn(move |request| upstream_answer(name, peer, request));
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

async fn upstream_answer(
    name: &'static str,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    match request.uri().path().rsplit('/').next().unwrap_or_default() {
        "hang" => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return Ok(Response::new(empty_body()));
        }
        "stream" => {
            let (sender, receiver) = mpsc::channel(1);
            tokio::spawn(async move {
                sender.send(Bytes::from_static(b"first\n")).await.unwrap();
                tokio::time::sleep(Duration::from_secs(3600)).await;
            });
            return Ok(Response::new(ChannelBody(receiver).boxed()));
        }
        "upstream-404" => {
            let mut response = Response::new(full_body("upstream says no"));
            *response.status_mut() = StatusCode::NOT_FOUND;
            return Ok(response);
        }
        _ => {}
    }
    let mut headers = serde_json::Map::new();
    for (header, value) in request.headers() {
        let values = headers.entry(header.as_str()).or_insert_with(|| json!([]));
        if let Value::Array(values) = values {
            values.push(json!(value.to_str().unwrap()));
        }
    }
    let description = json!({
        "name": name,
        "method": request.method().as_str(),
        "uri": request.uri().to_string(),
        "version": format!("{:?}", request.version()),
        "headers": headers,
        "peer": peer.to_string(),
    });
    let hop = request.uri().path().ends_with("/hop");
    let mut body = request.into_body();
    let mut body_len = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            body_len += data.len();
        }
    }
    let mut description = description;
    description["body_len"] = json!(body_len);
    let mut response = Response::new(full_body(description.to_string()));
    if hop {
        let headers = response.headers_mut();
        headers.insert("connection", HeaderValue::from_static("close, X-Secret"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-public", HeaderValue::from_static("yes"));
    }
    Ok(response)
}

/// A port nothing listens on.
async fn dead_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

fn upstream(addr: SocketAddr) -> RouteTarget {
    RouteTarget::Proxy(format!("http://{addr}").parse().unwrap())
}

fn site(routes: &[(&str, RouteTarget)]) -> SiteRoutes {
    SiteRoutes {
        routes: routes
            .iter()
            .map(|(path, target)| Route::new(*path, target.clone()))
            .collect(),
        error_pages: HashMap::new(),
        http: Default::default(),
        ..SiteRoutes::default()
    }
}

/// A site of `routes` with the site-wide header rules `rules`, and the routes' own rules in force
/// (`SiteHttp` is built from them, as config validation does).
fn site_with_rules(routes: Vec<Route>, rules: http_rules::HttpRules) -> SiteRoutes {
    SiteRoutes {
        http: http_rules::SiteHttp::new("site.example".into(), rules, &routes),
        routes,
        ..SiteRoutes::default()
    }
}

/// A proxy under `limits` whose one route, `/`, goes to an echo upstream named `app`.
async fn proxy_to_app(limits: ProxyLimits) -> (SocketAddr, Arc<Proxy>) {
    let app = start_upstream("app").await;
    start_proxy(site(&[("/", upstream(app))]), limits).await
}

/// Limits with a 300 ms response timeout: the echo upstream's `/hang` outlasts it.
fn short_response_timeout() -> ProxyLimits {
    ProxyLimits {
        response_timeout: Duration::from_millis(300),
        ..ProxyLimits::default()
    }
}

/// Starts a server (HTTP/1.1 or HTTP/2, with upgrades) whose service is `proxy.handle` for `site`.
/// The [`UpstreamUsed`] extension is copied into an `x-upstream-used` response header.
async fn start_proxy(site: SiteRoutes, limits: ProxyLimits) -> (SocketAddr, Arc<Proxy>) {
    let proxy = Arc::new(Proxy::new(limits));
    let site = Arc::new(site);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_proxy = Arc::clone(&proxy);
    tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            let (proxy, site) = (Arc::clone(&server_proxy), Arc::clone(&site));
            let service = service_fn(move |request| {
                let (proxy, site) = (Arc::clone(&proxy), Arc::clone(&site));
                async move {
                    let mut response = proxy.handle(request, &site, peer).await;
                    if let Some(UpstreamUsed(used)) = response.extensions().get().cloned() {
                        let used = HeaderValue::from_str(&used).unwrap();
                        response.headers_mut().insert("x-upstream-used", used);
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, proxy)
}

/// Sends one request over a new HTTP/1.1 connection.
async fn send<B>(addr: SocketAddr, request: Request<B>) -> Response<Incoming>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender.send_request(request).await.unwrap()
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "site.example")
        .body(Full::default())
        .unwrap()
}

async fn read(response: Response<Incoming>) -> (StatusCode, HeaderMap, Bytes) {
    let (parts, body) = response.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

/// Sends `request` and parses the echo upstream's description.
async fn echo<B>(addr: SocketAddr, request: Request<B>) -> Value
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (status, _, body) = read(send(addr, request).await).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

#[test]
fn longest_matching_prefix_wins() {
    let site = site(&[
        ("/", upstream(([127, 0, 0, 1], 1).into())),
        ("/ws", upstream(([127, 0, 0, 1], 2).into())),
        ("/static/", RouteTarget::Static("/srv/www".into())),
        ("/static/img/", RouteTarget::Static("/srv/img".into())),
    ]);
    let cases = [
        ("/", Some("/")),
        ("/index.html", Some("/")),
        ("/ws", Some("/ws")),
        ("/ws/", Some("/ws")),
        ("/ws/chat", Some("/ws")),
        ("/wsx", Some("/")),
        ("/static", Some("/")),
        ("/static/", Some("/static/")),
        ("/static/a.css", Some("/static/")),
        ("/static/img/logo.png", Some("/static/img/")),
        ("/static/img", Some("/static/")),
        ("*", None),
    ];
    for (path, expected) in cases {
        let matched = site.route(path).map(|route| route.path.as_str());
        assert_eq!(matched, expected, "{path}");
    }
    let only_api = self::site(&[("/api", upstream(([127, 0, 0, 1], 1).into()))]);
    assert!(only_api.route("/").is_none());
}

#[tokio::test]
async fn host_and_forwarded_headers_reach_the_upstream() {
    bounded(async {
        let (addr, _proxy) = proxy_to_app(ProxyLimits::default()).await;
        let request = Request::get("/app/x?y=1&z")
            .header("host", "site.example")
            .header("x-forwarded-for", "203.0.113.7")
            .header("x-forwarded-proto", "http")
            .header("connection", "x-hop")
            .header("x-hop", "1")
            .header("proxy-authorization", "Basic c2VjcmV0")
            .header("x-kept", "yes")
            .body(Full::<Bytes>::default())
            .unwrap();
        let seen = echo(addr, request).await;
        let headers = &seen["headers"];
        assert_eq!(seen["uri"], "/app/x?y=1&z");
        assert_eq!(seen["version"], "HTTP/1.1");
        assert_eq!(headers["host"], json!(["site.example"]));
        // The client is not a trusted proxy: its own X-Forwarded-* are replaced, not appended to.
        assert_eq!(headers["x-forwarded-for"], json!(["127.0.0.1"]));
        assert_eq!(headers["x-real-ip"], json!(["127.0.0.1"]));
        assert_eq!(headers["x-forwarded-proto"], json!(["https"]));
        assert_eq!(headers["x-forwarded-host"], json!(["site.example"]));
        assert_eq!(headers["x-kept"], json!(["yes"]));
        for gone in ["x-hop", "proxy-authorization", "upgrade"] {
            assert!(headers.get(gone).is_none(), "{gone} reached the upstream");
        }
    })
    .await;
}

#[tokio::test]
async fn base_path_of_the_upstream_is_prefixed() {
    bounded(async {
        let upstream_addr = start_upstream("app").await;
        let target = RouteTarget::Proxy(format!("http://{upstream_addr}/base/").parse().unwrap());
        let (addr, _proxy) = start_proxy(site(&[("/", target)]), ProxyLimits::default()).await;
        let seen = echo(addr, get("/x?q=1")).await;
        assert_eq!(seen["uri"], "/base/x?q=1");
    })
    .await;
}

#[tokio::test]
async fn hop_by_hop_response_headers_are_removed() {
    bounded(async {
        let (addr, _proxy) = proxy_to_app(ProxyLimits::default()).await;
        let (status, headers, _) = read(send(addr, get("/hop")).await).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-public"], "yes");
        assert!(headers.get("x-secret").is_none());
        assert!(headers.get("keep-alive").is_none());
        assert_ne!(
            headers.get("connection").map(|v| v.to_str().unwrap()),
            Some("close, X-Secret")
        );
    })
    .await;
}

#[tokio::test]
async fn requests_go_to_the_longest_matching_route() {
    bounded(async {
        let (root, api, v2) = (
            start_upstream("root").await,
            start_upstream("api").await,
            start_upstream("v2").await,
        );
        let routes = site(&[
            ("/", upstream(root)),
            ("/api", upstream(api)),
            ("/api/v2/", upstream(v2)),
        ]);
        let (addr, _proxy) = start_proxy(routes, ProxyLimits::default()).await;
        let cases = [
            ("/", "root"),
            ("/apix", "root"),
            ("/api", "api"),
            ("/api/v1/users", "api"),
            ("/api/v2", "api"),
            ("/api/v2/users", "v2"),
        ];
        for (path, expected) in cases {
            let response = send(addr, get(path)).await;
            let used = response.headers()["x-upstream-used"]
                .to_str()
                .unwrap()
                .to_owned();
            let (_, _, body) = read(response).await;
            let seen: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(seen["name"], expected, "{path}");
            assert_eq!(seen["uri"], path);
            let expected_addr = match expected {
                "root" => root,
                "api" => api,
                _ => v2,
            };
            assert_eq!(used, format!("http://{expected_addr}"));
        }
    })
    .await;
}

#[tokio::test]
async fn routes_match_and_upstreams_receive_the_normalised_path() {
    bounded(async {
        let (root, api) = (start_upstream("root").await, start_upstream("api").await);
        let routes = site(&[("/", upstream(root)), ("/api/", upstream(api))]);
        let (addr, _proxy) = start_proxy(routes, ProxyLimits::default()).await;
        let cases = [
            ("/api/../admin", "root", "/admin"),
            ("/api/%2e%2e/admin", "root", "/admin"),
            ("/api/%2E%2E/admin?x=/../y", "root", "/admin?x=/../y"),
            ("/x/../api/secret", "api", "/api/secret"),
            ("//api//users", "api", "/api/users"),
            ("/%61pi/./v1/", "api", "/api/v1/"),
        ];
        for (path, expected, forwarded) in cases {
            let (status, _, body) = read(send(addr, get(path)).await).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            let seen: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(seen["name"], expected, "{path}");
            assert_eq!(seen["uri"], forwarded, "{path}");
        }
        for refused in ["/api/..%2fadmin", "/api/%2e%2e%2fadmin", "/..", "/a%00"] {
            let (status, _, _) = read(send(addr, get(refused)).await).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
        }
    })
    .await;
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    bounded(async {
        let (addr, _proxy) = proxy_to_app(ProxyLimits::default()).await;
        let first = echo(addr, get("/one")).await;
        let second = echo(addr, get("/two")).await;
        assert_eq!(first["peer"], second["peer"]);
    })
    .await;
}

#[tokio::test]
async fn request_bodies_stream_to_the_upstream() {
    bounded(async {
        let (addr, _proxy) = proxy_to_app(ProxyLimits::default()).await;

        let mebibyte = Bytes::from(vec![b'x'; 1 << 20]);
        let request = Request::post("/upload")
            .header("host", "site.example")
            .body(Full::new(mebibyte))
            .unwrap();
        let seen = echo(addr, request).await;
        assert_eq!(seen["method"], "POST");
        assert_eq!(seen["body_len"], 1 << 20);
        assert_eq!(seen["headers"]["content-length"], json!(["1048576"]));

        // Without a length: chunked from the client, streamed chunk by chunk.
        let (sender, receiver) = mpsc::channel(1);
        tokio::spawn(async move {
            for _ in 0..16 {
                sender
                    .send(Bytes::from(vec![b'y'; 64 * 1024]))
                    .await
                    .unwrap();
            }
        });
        let request = Request::post("/upload")
            .header("host", "site.example")
            .body(ChannelBody(receiver))
            .unwrap();
        let seen = echo(addr, request).await;
        assert_eq!(seen["body_len"], 1 << 20);
    })
    .await;
}

#[tokio::test]
async fn response_bodies_stream_to_the_client() {
    bounded(async {
        let (addr, _proxy) = proxy_to_app(ProxyLimits::default()).await;
        let response = send(addr, get("/stream")).await;
        assert_eq!(response.status(), StatusCode::OK);
        // The upstream never finishes its body: the first chunk must arrive on its own.
        let mut body = response.into_body();
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("first chunk was held back")
            .unwrap()
            .unwrap();
        assert_eq!(frame.into_data().unwrap(), "first\n");
    })
    .await;
}

#[tokio::test]
async fn unreachable_upstream_is_bad_gateway() {
    bounded(async {
        let dead = dead_port().await;
        let (addr, _proxy) =
            start_proxy(site(&[("/", upstream(dead))]), ProxyLimits::default()).await;
        let (status, headers, body) = read(send(addr, get("/")).await).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(body, "502 Bad Gateway\n");
        assert_eq!(
            headers["x-upstream-used"],
            format!("http://{dead}").as_str()
        );
    })
    .await;
}

#[tokio::test]
async fn slow_upstream_is_gateway_timeout() {
    bounded(async {
        let (addr, _proxy) = proxy_to_app(short_response_timeout()).await;
        let started = tokio::time::Instant::now();
        let (status, _, body) = read(send(addr, get("/hang")).await).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(body, "504 Gateway Timeout\n");
        assert!(started.elapsed() < Duration::from_secs(5));
    })
    .await;
}

#[tokio::test]
async fn slow_uploads_do_not_count_against_the_response_timeout() {
    bounded(async {
        let (addr, _proxy) = proxy_to_app(short_response_timeout()).await;
        let (sender, receiver) = mpsc::channel(1);
        tokio::spawn(async move {
            for _ in 0..3 {
                sender.send(Bytes::from_static(b"chunk")).await.unwrap();
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
        });
        let request = Request::post("/upload")
            .header("host", "site.example")
            .body(ChannelBody(receiver))
            .unwrap();
        let seen = echo(addr, request).await;
        assert_eq!(seen["body_len"], 15);
    })
    .await;
}

fn write_page(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

#[tokio::test]
async fn error_pages_replace_certds_own_errors_only() {
    bounded(async {
        let pages = tempfile::tempdir().unwrap();
        let bad_gateway = write_page(pages.path(), "50x.html", "<h1>down for maintenance</h1>");
        let not_found = write_page(pages.path(), "404.html", "<h1>nothing here</h1>");
        let (dead, upstream_addr) = (dead_port().await, start_upstream("app").await);
        let mut routes = site(&[("/api", upstream(dead)), ("/app", upstream(upstream_addr))]);
        routes.error_pages.insert(502, bad_gateway);
        routes.error_pages.insert(404, not_found);
        routes
            .error_pages
            .insert(503, pages.path().join("missing.html"));
        let (addr, _proxy) = start_proxy(routes, ProxyLimits::default()).await;

        let (status, headers, body) = read(send(addr, get("/api/users")).await).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(headers["content-type"], "text/html; charset=utf-8");
        assert_eq!(body, "<h1>down for maintenance</h1>");

        let (status, headers, body) = read(send(addr, get("/no-route")).await).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(headers["content-type"], "text/html; charset=utf-8");
        assert_eq!(body, "<h1>nothing here</h1>");

        let head = Request::head("/api")
            .header("host", "site.example")
            .body(Full::<Bytes>::default())
            .unwrap();
        let (status, headers, body) = read(send(addr, head).await).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(headers["content-length"], "29");
        assert!(body.is_empty());

        // An upstream's own 404 passes through untouched.
        let (status, _, body) = read(send(addr, get("/app/upstream-404")).await).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body, "upstream says no");
    })
    .await;
}

#[tokio::test]
async fn static_routes_serve_files_with_nginx_root_semantics() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("www");
        std::fs::create_dir_all(root.join("static")).unwrap();
        std::fs::write(root.join("static/a.css"), "body {}").unwrap();
        let not_found = write_page(dir.path(), "404.html", "<h1>nothing here</h1>");
        let upstream_addr = start_upstream("app").await;
        let mut routes = site(&[
            ("/", upstream(upstream_addr)),
            ("/static/", RouteTarget::Static(root.clone())),
        ]);
        routes.error_pages.insert(404, not_found);
        let (addr, _proxy) = start_proxy(routes, ProxyLimits::default()).await;

        let (status, headers, body) = read(send(addr, get("/static/a.css")).await).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "body {}");
        assert_eq!(headers["content-type"], "text/css; charset=utf-8");
        let used = format!("static:{}", root.display());
        assert_eq!(headers["x-upstream-used"], used.as_str());

        let (status, _, body) = read(send(addr, get("/static/missing.css")).await).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body, "<h1>nothing here</h1>");

        let (status, _, body) =
            read(send(addr, get("/static/%2e%2e/%2e%2e/etc/passwd")).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body, "400 Bad Request\n");
    })
    .await;
}

#[tokio::test]
async fn http2_clients_are_forwarded_over_http1() {
    bounded(async {
        let (addr, _proxy) = proxy_to_app(ProxyLimits::default()).await;
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        let request = Request::get("https://site.example:8443/h2?x=1")
            .header("te", "trailers")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .body(Full::<Bytes>::default())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.version(), Version::HTTP_2);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let seen: Value = serde_json::from_slice(&body).unwrap();
        let headers = &seen["headers"];
        assert_eq!(seen["version"], "HTTP/1.1");
        assert_eq!(seen["uri"], "/h2?x=1");
        assert_eq!(headers["host"], json!(["site.example:8443"]));
        assert_eq!(headers["x-forwarded-host"], json!(["site.example:8443"]));
        assert_eq!(headers["cookie"], json!(["a=1; b=2"]));
        assert!(headers.get("te").is_none());
    })
    .await;
}

/// Starts a WebSocket echo upstream; the handshake headers it saw are sent on the returned channel.
async fn start_websocket_echo() -> (SocketAddr, mpsc::UnboundedReceiver<(String, HeaderMap)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, seen_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let seen_tx = seen_tx.clone();
            tokio::spawn(async move {
                // The signature (and its large error type) is tungstenite's `Callback`.
                #[allow(clippy::result_large_err)]
                let callback =
                    |request: &tokio_tungstenite::tungstenite::handshake::server::Request,
                     response| {
                        let _ =
                            seen_tx.send((request.uri().to_string(), request.headers().clone()));
                        Ok(response)
                    };
                let mut socket = tokio_tungstenite::accept_hdr_async(stream, callback)
                    .await
                    .unwrap();
                while let Some(Ok(message)) = socket.next().await {
                    if (message.is_text() || message.is_binary())
                        && socket.send(message).await.is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    (addr, seen_rx)
}

async fn wait_for_no_tunnels(proxy: &Proxy) {
    while proxy.open_tunnels() > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn websocket_messages_pass_through_the_proxy() {
    bounded(async {
        let (ws_addr, mut seen) = start_websocket_echo().await;
        let app_addr = start_upstream("app").await;
        let routes = site(&[("/", upstream(app_addr)), ("/ws", upstream(ws_addr))]);
        let (addr, proxy) = start_proxy(routes, ProxyLimits::default()).await;

        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut socket, response) =
            tokio_tungstenite::client_async("ws://site.example/ws/chat?room=1", stream)
                .await
                .unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        let (uri, headers) = seen.recv().await.unwrap();
        assert_eq!(uri, "/ws/chat?room=1");
        assert_eq!(headers["host"], "site.example");
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
        assert_eq!(headers["upgrade"], "websocket");
        assert_eq!(proxy.open_tunnels(), 1);

        for i in 0..5 {
            let text = format!("message {i}");
            socket.send(Message::text(text.clone())).await.unwrap();
            let echoed = socket.next().await.unwrap().unwrap();
            assert_eq!(echoed.to_text().unwrap(), text);
        }
        socket
            .send(Message::binary(vec![0u8, 1, 2, 255]))
            .await
            .unwrap();
        let echoed = socket.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_data().as_ref(), [0u8, 1, 2, 255]);

        socket.close(None).await.unwrap();
        let reply = socket.next().await.unwrap().unwrap();
        assert!(reply.is_close());
        assert!(socket.next().await.is_none());
        wait_for_no_tunnels(&proxy).await;
    })
    .await;
}

#[tokio::test]
async fn close_tunnels_ends_open_websockets() {
    bounded(async {
        let (ws_addr, _seen) = start_websocket_echo().await;
        let (addr, proxy) =
            start_proxy(site(&[("/ws", upstream(ws_addr))]), ProxyLimits::default()).await;
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut socket, _) = tokio_tungstenite::client_async("ws://site.example/ws", stream)
            .await
            .unwrap();
        socket.send(Message::text("ping")).await.unwrap();
        assert_eq!(
            socket.next().await.unwrap().unwrap().to_text().unwrap(),
            "ping"
        );

        proxy.close_tunnels().await;
        assert_eq!(proxy.open_tunnels(), 0);
        // The client sees its connection end (no close frame: the tunnel was cut).
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
}

#[tokio::test]
async fn upgrade_refused_by_the_upstream_is_an_ordinary_response() {
    bounded(async {
        let upstream_addr = start_upstream("app").await;
        let (addr, proxy) = start_proxy(
            site(&[("/", upstream(upstream_addr))]),
            ProxyLimits::default(),
        )
        .await;
        let request = Request::get("/not-a-socket")
            .header("host", "site.example")
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(Full::<Bytes>::default())
            .unwrap();
        let seen = echo(addr, request).await;
        assert_eq!(seen["headers"]["upgrade"], json!(["websocket"]));
        assert_eq!(seen["headers"]["connection"], json!(["upgrade"]));
        wait_for_no_tunnels(&proxy).await;
    })
    .await;
}

/// Like [`start_proxy`], but each connection takes a permit from `slots` and puts it in its
/// requests' extensions, as the HTTPS front does.
async fn start_proxy_with_slots(
    site: SiteRoutes,
    slots: Arc<tokio::sync::Semaphore>,
) -> SocketAddr {
    let proxy = Arc::new(Proxy::new(ProxyLimits::default()));
    let site = Arc::new(site);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            let permit = ConnectionPermit::new(slots.clone().try_acquire_owned().unwrap());
            let (proxy, site) = (Arc::clone(&proxy), Arc::clone(&site));
            let service = service_fn(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(permit.clone());
                let (proxy, site) = (Arc::clone(&proxy), Arc::clone(&site));
                async move { Ok::<_, Infallible>(proxy.handle(request, &site, peer).await) }
            });
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_tunnel_keeps_its_connection_slot_until_its_route_idle_timeout_closes_it() {
    bounded(async {
        let (ws_addr, _seen) = start_websocket_echo().await;
        let routes = SiteRoutes {
            routes: vec![Route {
                tunnel_idle_timeout: Some(Duration::from_millis(600)),
                ..Route::new("/ws", upstream(ws_addr))
            }],
            error_pages: HashMap::new(),
            http: Default::default(),
            ..SiteRoutes::default()
        };
        let slots = Arc::new(tokio::sync::Semaphore::new(10));
        let addr = start_proxy_with_slots(routes, slots.clone()).await;
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut socket, _) = tokio_tungstenite::client_async("ws://site.example/ws", stream)
            .await
            .unwrap();
        socket.send(Message::text("ping")).await.unwrap();
        let echoed = socket.next().await.unwrap().unwrap();
        assert_eq!(echoed.to_text().unwrap(), "ping");
        let started = tokio::time::Instant::now();
        // hyper's connection is over (it ended at the upgrade); the tunnel holds the slot.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(slots.available_permits(), 9, "the tunnel holds its slot");

        // Idle past the route's 600 ms (not ProxyLimits' hour): certd cuts the tunnel.
        while let Some(Ok(_)) = socket.next().await {}
        let idle = started.elapsed();
        assert!(
            idle >= Duration::from_millis(500) && idle < Duration::from_secs(5),
            "closed after {idle:?}"
        );
        while slots.available_permits() < 10 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the slot is not given back"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// A route to an `[[upstream]]` group of `servers` (round robin, default retries).
fn group_route(
    path: &str,
    servers: &[SocketAddr],
    timeouts: crate::config::ProxyTimeouts,
) -> Route {
    let config = crate::config::UpstreamConfig {
        name: "app".into(),
        servers: servers
            .iter()
            .map(|addr| crate::config::ServerConfig {
                address: crate::config::ServerAddress::Tcp(addr.to_string()),
                weight: 1,
                max_fails: 1,
                fail_timeout: Duration::from_secs(10),
                backup: false,
            })
            .collect(),
        balance: crate::config::Balance::RoundRobin,
        next_upstream: crate::config::NextUpstream::default(),
        next_upstream_tries: 0,
    };
    Route {
        upstream: Some(Arc::new(UpstreamGroup::new(&config))),
        timeouts,
        ..Route::new(path, RouteTarget::Proxy("http://app".parse().unwrap()))
    }
}

#[tokio::test]
async fn a_websocket_to_a_group_skips_a_dead_server_and_idles_out_after_read_timeout() {
    bounded(async {
        let dead = dead_port().await;
        let (ws_addr, mut seen) = start_websocket_echo().await;
        let timeouts = crate::config::ProxyTimeouts {
            read: Some(Duration::from_millis(600)),
            ..Default::default()
        };
        let routes = SiteRoutes {
            routes: vec![group_route("/ws", &[dead, ws_addr], timeouts)],
            error_pages: HashMap::new(),
            http: Default::default(),
            ..SiteRoutes::default()
        };
        let (addr, proxy) = start_proxy(routes, ProxyLimits::default()).await;

        // Whichever server round robin starts with, the handshake reaches the live one.
        for _ in 0..2 {
            let stream = TcpStream::connect(addr).await.unwrap();
            let (mut socket, response) =
                tokio_tungstenite::client_async("ws://site.example/ws/chat", stream)
                    .await
                    .unwrap();
            assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
            let (uri, _) = seen.recv().await.unwrap();
            assert_eq!(uri, "/ws/chat");
            socket.send(Message::text("hi")).await.unwrap();
            assert_eq!(
                socket.next().await.unwrap().unwrap().to_text().unwrap(),
                "hi"
            );

            // No tunnel_idle_timeout on the route: its read_timeout closes the idle tunnel, long
            // before [limits] tunnel_idle_timeout (an hour).
            let idle = std::time::Instant::now();
            while let Some(Ok(message)) = socket.next().await {
                assert!(message.is_close(), "{message:?}");
            }
            let waited = idle.elapsed();
            assert!(waited >= Duration::from_millis(500), "{waited:?}");
            assert!(waited < Duration::from_secs(5), "{waited:?}");
        }
        wait_for_no_tunnels(&proxy).await;
    })
    .await;
}

fn error_page(
    codes: &[u16],
    target: &str,
    status: error_page::ErrorStatus,
) -> error_page::ErrorPage {
    let target = match target.strip_prefix('@') {
        Some(_) => error_page::ErrorTarget::Named(target.to_owned()),
        None => error_page::ErrorTarget::Uri {
            path: target.to_owned(),
            query: None,
        },
    };
    error_page::ErrorPage {
        codes: codes.to_vec(),
        target,
        status,
    }
}

#[tokio::test]
async fn error_page_serves_a_uri_or_named_route_and_intercepts_upstream_errors_only_when_asked() {
    use error_page::ErrorStatus;
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let pages = dir.path().join("pages");
        std::fs::create_dir_all(&pages).unwrap();
        write_page(&pages, "50x.html", "<h1>down</h1>");
        write_page(&pages, "404.html", "<h1>nothing here</h1>");
        let (dead, app) = (dead_port().await, start_upstream("app").await);
        let site_pages = Arc::new(vec![
            error_page(&[502, 504], "/50x.html", ErrorStatus::Original),
            error_page(&[404], "/404.html", ErrorStatus::Code(StatusCode::OK)),
        ]);
        let locked = Arc::new(vec![error_page(
            &[502],
            "/locked.html",
            ErrorStatus::Target,
        )]);
        let fallback = Arc::new(vec![error_page(
            &[404, 405],
            "@fallback",
            ErrorStatus::Target,
        )]);
        let with = |route: Route, pages: &Arc<Vec<error_page::ErrorPage>>, intercept| Route {
            error_page: pages.clone(),
            intercept_errors: intercept,
            ..route
        };
        let mut routes = SiteRoutes {
            routes: vec![
                with(Route::new("/down/", upstream(dead)), &site_pages, false),
                with(Route::new("/app/", upstream(app)), &site_pages, false),
                with(Route::new("/strict/", upstream(app)), &site_pages, true),
                with(
                    Route::new("/files/", RouteTarget::Static(dir.path().into())),
                    &fallback,
                    false,
                ),
                with(
                    Route::new("/50x.html", RouteTarget::Static(pages.clone())),
                    &site_pages,
                    false,
                ),
                with(
                    Route::new("/404.html", RouteTarget::Static(pages.clone())),
                    &site_pages,
                    false,
                ),
                Route {
                    location: LocationMatch::Named,
                    ..Route::new("@fallback", upstream(app))
                },
                with(Route::new("/private/", upstream(dead)), &locked, false),
                Route {
                    location: LocationMatch::Exact,
                    access: Some(Arc::new(crate::access::Policy {
                        rules: crate::access::AccessList::new(vec![crate::access::Rule::parse(
                            "deny all",
                        )
                        .unwrap()]),
                        auth: None,
                        satisfy: crate::access::Satisfy::All,
                    })),
                    ..Route::new("/locked.html", RouteTarget::Static(pages.clone()))
                },
            ],
            error_page: site_pages.clone(),
            has_error_pages: true,
            ..SiteRoutes::default()
        };
        // The page files are served by exact-path routes under `pages/`.
        for route in &mut routes.routes[4..6] {
            route.location = LocationMatch::Exact;
        }
        let (addr, _proxy) = start_proxy(routes, ProxyLimits::default()).await;

        // certd's own 502: the page, with the original status.
        let (status, headers, body) = read(send(addr, get("/down/x")).await).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(body, "<h1>down</h1>");
        assert_eq!(headers["content-type"], "text/html; charset=utf-8");
        // No route: the site's list, `=200`.
        let (status, _, body) = read(send(addr, get("/nowhere")).await).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "<h1>nothing here</h1>");
        // The upstream's own 404 passes through, unless the route intercepts errors.
        let (status, _, body) = read(send(addr, get("/app/upstream-404")).await).await;
        assert_eq!(
            (status, body.as_ref()),
            (StatusCode::NOT_FOUND, &b"upstream says no"[..])
        );
        let (status, _, body) = read(send(addr, get("/strict/upstream-404")).await).await;
        assert_eq!(
            (status, body.as_ref()),
            (StatusCode::OK, &b"<h1>nothing here</h1>"[..])
        );
        // A named route gets the original path, as a GET, and its status is kept (`=`).
        let post = Request::post("/files/missing?q=1")
            .header("host", "site.example")
            .body(Full::new(Bytes::from_static(b"data")))
            .unwrap();
        let (status, _, body) = read(send(addr, post).await).await;
        assert_eq!(status, StatusCode::OK);
        let seen: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(seen["method"], "GET");
        assert_eq!(seen["uri"], "/files/missing?q=1");
        assert_eq!(seen["body_len"], 0);
        // The error page's route checks access again: it does not open a locked route.
        write_page(&pages, "locked.html", "SECRET");
        let (status, _, body) = read(send(addr, get("/private/x")).await).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(!String::from_utf8_lossy(&body).contains("SECRET"));
    })
    .await;
}

#[tokio::test]
async fn a_folder_is_served_by_its_first_index_name() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("docs")).unwrap();
        write_page(dir.path(), "docs/index.htm", "htm");
        write_page(dir.path(), "docs/default.html", "default");
        let routes = SiteRoutes {
            routes: vec![Route {
                index: vec![
                    "index.html".into(),
                    "index.htm".into(),
                    "default.html".into(),
                ],
                ..Route::new("/", RouteTarget::Static(dir.path().into()))
            }],
            ..SiteRoutes::default()
        };
        let (addr, _proxy) = start_proxy(routes, ProxyLimits::default()).await;
        let (status, _, body) = read(send(addr, get("/docs/")).await).await;
        assert_eq!((status, body.as_ref()), (StatusCode::OK, &b"htm"[..]));
        // A folder with none of the names is forbidden, as in nginx.
        let (status, _, _) = read(send(addr, get("/")).await).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    })
    .await;
}

#[tokio::test]
async fn an_open_tunnel_counts_as_in_flight_for_least_conn_until_it_closes() {
    bounded(async {
        let (ws_addr, mut seen) = start_websocket_echo().await;
        let route = group_route("/ws", &[ws_addr], Default::default());
        let group = route.upstream.clone().unwrap();
        let routes = SiteRoutes {
            routes: vec![route],
            ..SiteRoutes::default()
        };
        let (addr, proxy) = start_proxy(routes, ProxyLimits::default()).await;
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut socket, response) =
            tokio_tungstenite::client_async("ws://site.example/ws/chat", stream)
                .await
                .unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        seen.recv().await.unwrap();
        socket.send(Message::text("hi")).await.unwrap();
        assert_eq!(
            socket.next().await.unwrap().unwrap().to_text().unwrap(),
            "hi"
        );
        assert_eq!(group.in_flight(), [1], "the open tunnel is counted");
        socket.close(None).await.unwrap();
        while socket.next().await.is_some() {}
        wait_for_no_tunnels(&proxy).await;
        assert_eq!(group.in_flight(), [0], "a closed tunnel is not");
    })
    .await;
}

/// Sends `POST <path>` declaring and then sending a 4 MiB body on a raw connection, and returns
/// what came back once the answer's body `until` has arrived (or the connection ended).
async fn post_large_body(addr: SocketAddr, path: &str, until: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SIZE: usize = 4 << 20;
    let mut stream = TcpStream::connect(addr).await?;
    let head =
        format!("POST {path} HTTP/1.1\r\nhost: site.example\r\ncontent-length: {SIZE}\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..SIZE / chunk.len() {
        stream.write_all(&chunk).await?;
    }
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains(until) {
        match stream.read(&mut buffer).await? {
            0 => break,
            n => answer.extend_from_slice(&buffer[..n]),
        }
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test]
async fn a_body_over_max_body_size_is_read_away_behind_the_413_even_where_no_route_matches() {
    bounded(async {
        let app = start_upstream("app").await;
        let routes = vec![Route::new("/app/", upstream(app))];
        let rules = http_rules::HttpRules {
            max_body_size: Some(1024),
            ..Default::default()
        };
        let site = site_with_rules(routes, rules);
        let (addr, _proxy) = start_proxy(site, ProxyLimits::default()).await;
        for path in ["/app/upload", "/nowhere"] {
            let answer = post_large_body(addr, path, "413 Payload Too Large\n")
                .await
                .unwrap_or_else(|error| {
                    panic!("{path}: the client could not send its body: {error}")
                });
            assert!(answer.starts_with("HTTP/1.1 413"), "{path}: {answer}");
        }
    })
    .await;
}

#[tokio::test]
async fn strip_prefix_replaces_the_routes_prefix_by_the_proxys_path_like_proxy_pass_with_a_uri() {
    bounded(async {
        let app = start_upstream("app").await;
        let base = |path: &str| RouteTarget::Proxy(format!("http://{app}{path}").parse().unwrap());
        let strip = |route: Route| Route {
            strip_prefix: true,
            ..route
        };
        let site = SiteRoutes {
            routes: vec![
                strip(Route::new("/jellyfin/", base("/"))),
                strip(Route::new("/api/", base("/v2/"))),
                Route::new("/kept/", base("/v2/")),
            ],
            ..SiteRoutes::default()
        };
        let (addr, _proxy) = start_proxy(site, ProxyLimits::default()).await;
        for (path, expected) in [
            ("/jellyfin/web/index.html?x=1", "/web/index.html?x=1"),
            ("/jellyfin/", "/"),
            ("/api/users/1", "/v2/users/1"),
            ("/kept/users/1", "/v2/kept/users/1"),
        ] {
            let (status, _, body) = read(send(addr, get(path)).await).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            let seen: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(seen["uri"], expected, "{path}");
        }
    })
    .await;
}

/// A proxy for a site whose `/` serves a folder holding `robots.txt` (`try_files $uri @app`) with
/// `root_rules`, and whose named route `@app` proxies to an echo upstream with `app_rules`: which
/// route's rules apply after a fallback. The folder lives as long as the returned guard.
async fn files_else_app(
    root_rules: http_rules::HttpRules,
    app_rules: http_rules::HttpRules,
) -> (SocketAddr, Arc<Proxy>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("robots.txt"), "robots").unwrap();
    let app = start_upstream("app").await;
    let routes = vec![
        Route {
            try_files: Some(TryFiles {
                candidates: vec!["$uri".into()],
                fallback: TryFallback::Named("@app".into()),
            }),
            http: root_rules,
            ..Route::new("/", RouteTarget::Static(dir.path().into()))
        },
        Route {
            location: LocationMatch::Named,
            http: app_rules,
            ..Route::new("@app", upstream(app))
        },
    ];
    let (addr, proxy) = start_proxy(
        site_with_rules(routes, Default::default()),
        ProxyLimits::default(),
    )
    .await;
    (addr, proxy, dir)
}

#[tokio::test]
async fn a_try_files_fallback_to_a_named_route_sends_that_routes_request_headers() {
    bounded(async {
        let set = |name: &'static str, value: &str| http_rules::SetHeader {
            name: hyper::header::HeaderName::from_static(name),
            value: Some(variables::Template::parse(value, false).unwrap()),
        };
        let (addr, _proxy, _dir) = files_else_app(
            http_rules::HttpRules {
                request: Some(Arc::from(vec![set("x-from", "root")])),
                ..Default::default()
            },
            http_rules::HttpRules {
                request: Some(Arc::from(vec![set("x-frame-options", "SAMEORIGIN")])),
                ..Default::default()
            },
        )
        .await;
        let seen = echo(addr, get("/users/sign_in")).await;
        assert_eq!(seen["uri"], "/users/sign_in");
        assert_eq!(
            seen["headers"]["x-frame-options"],
            json!(["SAMEORIGIN"]),
            "{seen}"
        );
        assert!(seen["headers"].get("x-from").is_none(), "{seen}");
        let (status, _, body) = read(send(addr, get("/robots.txt")).await).await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"robots"[..]));
    })
    .await;
}

#[tokio::test]
async fn hide_removes_the_etag_and_last_modified_a_static_route_sets() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.css"), "css").unwrap();
        let hide = |route: Route| Route {
            http: http_rules::HttpRules {
                hide: Some(Arc::from(vec![
                    hyper::header::ETAG,
                    hyper::header::LAST_MODIFIED,
                ])),
                ..Default::default()
            },
            ..route
        };
        std::fs::create_dir(dir.path().join("kept")).unwrap();
        std::fs::write(dir.path().join("kept/a.css"), "css").unwrap();
        let routes = vec![
            hide(Route::new("/", RouteTarget::Static(dir.path().into()))),
            Route::new("/kept/", RouteTarget::Static(dir.path().into())),
        ];
        let site = site_with_rules(routes, Default::default());
        let (addr, _proxy) = start_proxy(site, ProxyLimits::default()).await;
        let (status, headers, body) = read(send(addr, get("/a.css")).await).await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"css"[..]));
        assert!(!headers.contains_key("etag"), "{headers:?}");
        assert!(!headers.contains_key("last-modified"), "{headers:?}");
        let (status, headers, _) = read(send(addr, get("/kept/a.css")).await).await;
        assert_eq!(status, StatusCode::OK);
        assert!(headers.contains_key("etag"), "{headers:?}");
        assert!(headers.contains_key("last-modified"), "{headers:?}");
    })
    .await;
}

#[tokio::test]
async fn after_a_try_files_fallback_the_named_routes_response_headers_apply() {
    bounded(async {
        let add = |name: &'static str, value: &str| response_headers::AddHeader {
            name: hyper::header::HeaderName::from_static(name),
            value: variables::Template::parse(value, false).unwrap(),
            always: false,
        };
        let (addr, _proxy, _dir) = files_else_app(
            http_rules::HttpRules {
                add: Some(Arc::from(vec![add("x-from", "static")])),
                ..Default::default()
            },
            http_rules::HttpRules {
                add: Some(Arc::from(vec![add("x-from", "app $host")])),
                ..Default::default()
            },
        )
        .await;
        let (status, headers, _) = read(send(addr, get("/users/sign_in")).await).await;
        assert_eq!(status, StatusCode::OK);
        let from: Vec<_> = headers.get_all("x-from").iter().collect();
        assert_eq!(from, ["app site.example"], "{headers:?}");
        // A file the first route finds keeps that route's headers.
        let (status, headers, body) = read(send(addr, get("/robots.txt")).await).await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"robots"[..]));
        let from: Vec<_> = headers.get_all("x-from").iter().collect();
        assert_eq!(from, ["static"], "{headers:?}");
    })
    .await;
}
