//! Response compression through the real daemon over TLS: a proxied 10 KiB `text/html` page is
//! compressed with the route's preferred encoding among those the client accepts (and decodes to
//! the upstream's bytes), images, Range requests and clients that accept nothing are passed
//! through untouched, server-sent events arrive one by one, and a static root serves its `.gz`
//! next to a file with `precompressed = true`.

use std::convert::Infallible;
use std::io::Read;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, HOST, RANGE, VARY};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::{World, CERT_WAIT};
use crate::harness::{Certd, Pebble, RunConfig, Site};

/// A 10 KiB HTML page, compressible but not trivially so.
fn page() -> Vec<u8> {
    let mut page = b"<!doctype html><title>t</title>\n".to_vec();
    let mut i = 0u32;
    while page.len() < 10 * 1024 {
        page.extend_from_slice(
            format!("<p id=\"p{i}\">paragraph {}</p>\n", i * 7919 % 1000).as_bytes(),
        );
        i += 1;
    }
    page.truncate(10 * 1024);
    page
}

type UpstreamBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// An upstream serving `/page.html` (10 KiB HTML), `/logo.png` (10 KiB "image") and
/// `/events` (a server-sent event, then a second one once `next_event` is notified).
struct Upstream {
    url: String,
    next_event: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    async fn start() -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind upstream");
        let url = format!("http://{}", listener.local_addr().expect("local_addr"));
        let next_event = Arc::new(Notify::new());
        let notify = next_event.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let notify = notify.clone();
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let notify = notify.clone();
                    async move { Ok::<_, Infallible>(answer(request.uri().path(), notify)) }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            url,
            next_event,
            task,
        }
    }
}

fn answer(path: &str, notify: Arc<Notify>) -> Response<UpstreamBody> {
    let (content_type, body): (&str, UpstreamBody) = match path {
        "/page.html" => (
            "text/html; charset=utf-8",
            Full::new(Bytes::from(page())).boxed(),
        ),
        "/logo.png" => (
            "image/png",
            Full::new(Bytes::from(vec![0x89; 10 * 1024])).boxed(),
        ),
        _ => {
            let events = futures_util::stream::unfold(0u8, move |step| {
                let notify = notify.clone();
                async move {
                    match step {
                        0 => Some((Bytes::from_static(b"data: one\n\n"), 1)),
                        1 => {
                            notify.notified().await;
                            Some((Bytes::from_static(b"data: two\n\n"), 2))
                        }
                        _ => None,
                    }
                }
            });
            let frames = futures_util::StreamExt::map(events, |chunk| {
                Ok::<_, Infallible>(Frame::data(chunk))
            });
            ("text/event-stream", StreamBody::new(frames).boxed())
        }
    };
    Response::builder()
        .header(CONTENT_TYPE, content_type)
        .body(body)
        .expect("response")
}

fn request(host: &str, path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut request = Request::get(path).header(HOST, host);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Full::new(Bytes::new())).expect("request")
}

fn decode(encoding: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let result = match encoding {
        "gzip" => flate2::read::GzDecoder::new(bytes).read_to_end(&mut out),
        "br" => brotli::Decompressor::new(bytes, 4096).read_to_end(&mut out),
        "zstd" => zstd::stream::read::Decoder::new(bytes)
            .and_then(|mut decoder| decoder.read_to_end(&mut out)),
        other => panic!("unexpected encoding {other}"),
    };
    result.unwrap_or_else(|error| panic!("{encoding} body does not decode: {error}"));
    out
}

/// Asserts that a reply (status, `Content-Encoding`, body) was passed on as the upstream sent it.
macro_rules! assert_untouched {
    ($reply:expr, $expected:expr, $what:expr) => {{
        let reply = &$reply;
        assert!(reply.status.is_success(), "{}: {reply:?}", $what);
        assert_eq!(reply.header("content-encoding"), None, "{}", $what);
        assert_eq!(reply.body.as_ref(), &$expected[..], "{}", $what);
    }};
}

#[tokio::test]
async fn proxied_and_static_responses_are_compressed_for_clients_that_accept_it() {
    let pebble = Pebble::start().await;
    let upstream = Upstream::start().await;
    let certd = Certd::new();
    let www = certd.dir().join("www/static");
    std::fs::create_dir_all(&www).expect("www");
    let app_js = "function f(x) { return x * 2; }\n".repeat(100);
    std::fs::write(www.join("app.js"), &app_js).expect("app.js");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, app_js.as_bytes()).expect("gzip");
    let app_js_gz = gz.finish().expect("gzip");
    std::fs::write(www.join("app.js.gz"), &app_js_gz).expect("app.js.gz");
    let style = "body { margin: 0 }\n".repeat(100);
    std::fs::write(www.join("style.css"), &style).expect("style.css");

    let config = RunConfig::for_pebble(
        &pebble,
        vec![Site::new(&["a.test"])
            .proxy("/", &upstream.url)
            .route_option("/", "compress", "true")
            .root("/static/", "www")
            .route_option("/static/", "precompressed", "true")
            .route_option("/static/", "compress", "{ encodings = [\"zstd\"] }")],
    );
    let world = World::serve(pebble, certd, config).await;
    world.client.wait_for_certificate("a.test", CERT_WAIT).await;
    let host = world.authority("a.test");
    let mut h1 = world.client.http1("a.test").await;
    let page = page();

    // The preferred encoding among those accepted (route order: zstd, br, gzip).
    for (accept, expected) in [
        ("gzip, br", "br"),
        ("gzip", "gzip"),
        ("gzip, br, zstd", "zstd"),
    ] {
        let reply = h1
            .send(request(&host, "/page.html", &[("accept-encoding", accept)]))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{accept}: {reply:?}");
        assert_eq!(reply.header("content-encoding"), Some(expected), "{accept}");
        assert_eq!(reply.header("content-length"), None, "{accept}");
        assert_eq!(reply.header("vary"), Some("Accept-Encoding"), "{accept}");
        assert_eq!(
            reply.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert!(
            reply.body.len() < page.len() / 2,
            "{accept}: {} bytes",
            reply.body.len()
        );
        assert_eq!(decode(expected, &reply.body), page, "{accept}");
    }

    // Over HTTP/2 as well.
    let mut h2 = world.client.http2("a.test").await;
    let reply = h2
        .send(
            Request::get(format!("https://{host}/page.html"))
                .header(ACCEPT_ENCODING, "gzip, br")
                .body(Full::new(Bytes::new()))
                .expect("request"),
        )
        .await;
    assert_eq!(reply.header("content-encoding"), Some("br"), "{reply:?}");
    assert_eq!(decode("br", &reply.body), page);

    // Not compressed: an image, a range, a client that accepts nothing or refuses with q=0.
    let reply = h1
        .send(request(
            &host,
            "/logo.png",
            &[("accept-encoding", "gzip, br")],
        ))
        .await;
    assert_untouched!(reply, [0x89u8; 10 * 1024], "image/png");
    assert_eq!(reply.header("vary"), None);
    let reply = h1
        .send(request(
            &host,
            "/page.html",
            &[("accept-encoding", "gzip, br"), ("range", "bytes=0-99")],
        ))
        .await;
    assert_untouched!(reply, &page, "a Range request");
    let reply = h1.send(request(&host, "/page.html", &[])).await;
    assert_untouched!(reply, &page, "no Accept-Encoding");
    assert_eq!(reply.header("vary"), Some("Accept-Encoding"));
    let reply = h1
        .send(request(
            &host,
            "/page.html",
            &[("accept-encoding", "gzip;q=0, br;q=0, zstd;q=0")],
        ))
        .await;
    assert_untouched!(reply, &page, "every encoding refused");

    // Server-sent events: the first event arrives compressed before the upstream sends the second.
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        h1.sender
            .send_request(request(&host, "/events", &[("accept-encoding", "gzip")])),
    )
    .await
    .expect("the event stream starts in time")
    .expect("response");
    assert_eq!(response.headers()[CONTENT_ENCODING], "gzip");
    let mut body = response.into_body();
    let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("the first event arrives before the stream ends")
        .expect("a frame")
        .expect("no error");
    let mut received = frame.into_data().expect("data").to_vec();
    let mut so_far = Vec::new();
    let _ = flate2::read::GzDecoder::new(received.as_slice()).read_to_end(&mut so_far);
    assert_eq!(so_far, b"data: one\n\n");
    upstream.next_event.notify_one();
    let rest = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("the stream ends in time")
        .expect("body")
        .to_bytes();
    received.extend_from_slice(&rest);
    assert_eq!(decode("gzip", &received), b"data: one\n\ndata: two\n\n");

    // A static root: the .gz next to the file, with the original's type.
    let mut h1 = world.client.http1("a.test").await;
    let reply = h1
        .send(request(
            &host,
            "/static/app.js",
            &[("accept-encoding", "gzip, br")],
        ))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.header("content-encoding"), Some("gzip"));
    assert_eq!(
        reply.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(
        reply.headers.get(VARY).map(|v| v.as_bytes()),
        Some(&b"Accept-Encoding"[..])
    );
    assert_eq!(
        reply.body.as_ref(),
        app_js_gz.as_slice(),
        "the .gz file itself"
    );
    assert_eq!(decode("gzip", &reply.body), app_js.as_bytes());
    // ... a Range of the file is of the identity file.
    let reply = h1
        .send(request(
            &host,
            "/static/app.js",
            &[("accept-encoding", "gzip"), (RANGE.as_str(), "bytes=0-7")],
        ))
        .await;
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT, "{reply:?}");
    assert_eq!(reply.header("content-encoding"), None);
    assert_eq!(reply.body.as_ref(), &app_js.as_bytes()[..8]);
    // ... and a file without a sidecar is compressed on the fly with the route's encoding.
    let reply = h1
        .send(request(
            &host,
            "/static/style.css",
            &[("accept-encoding", "gzip, zstd")],
        ))
        .await;
    assert_eq!(reply.header("content-encoding"), Some("zstd"), "{reply:?}");
    assert_eq!(decode("zstd", &reply.body), style.as_bytes());
    let etag = reply.header("etag").expect("an ETag");
    assert!(etag.starts_with("W/\""), "{etag}");
}
