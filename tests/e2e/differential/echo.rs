//! Echo backends for the differential test: HTTP/1.1 servers on loopback that answer every request
//! with which backend answered, the method, the path and query, and the headers they received (in
//! `X-Echo-*` response headers and a JSON body), and accept websocket upgrades (101, then close), so
//! a comparison can tell which backend and path a proxy reached and what it forwarded.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha1::Digest as _;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Bodies larger than this are not read to the end (the status says so).
const BODY_CAP: usize = 64 << 20;

/// One echo backend; its accept loop and connections end when it is dropped.
pub struct Echo {
    _tasks: JoinSet<()>,
}

impl Echo {
    /// Listens on `127.0.0.1:<port>` and reports itself as `id`.
    pub async fn start(id: &str, port: u16) -> Self {
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .await
            .unwrap_or_else(|err| panic!("echo {id}: bind 127.0.0.1:{port}: {err}"));
        let id: Arc<str> = Arc::from(id);
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let id = id.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let id = id.clone();
                        async move { Ok::<_, Infallible>(answer(&id, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Self { _tasks: tasks }
    }
}

async fn answer(id: &str, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = request.method().to_string();
    let uri = request
        .uri()
        .path_and_query()
        .map_or("/".to_owned(), |pq| pq.to_string());
    let mut headers = BTreeMap::new();
    for (name, value) in request.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|v: &mut String| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let upgrade = headers
        .get("upgrade")
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
        && headers
            .get("connection")
            .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade"));
    let key = headers.get("sec-websocket-key").cloned();
    let mut builder = Response::builder()
        .header("x-echo-backend", id)
        .header("x-echo-method", &method)
        .header("x-echo-uri", &uri)
        .header("x-powered-by", "echo-backend");
    if upgrade {
        let accept = key.map(|key| {
            let mut sha = sha1::Sha1::new();
            sha.update(key.as_bytes());
            sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
            base64::engine::general_purpose::STANDARD.encode(sha.finalize())
        });
        // Take the upgraded connection and close it: the 101 itself is what is compared.
        tokio::spawn(async move {
            let _ = hyper::upgrade::on(request).await;
        });
        builder = builder
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade");
        if let Some(accept) = accept {
            builder = builder.header("sec-websocket-accept", accept);
        }
        return builder
            .body(Full::new(Bytes::new()))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())));
    }
    let body_bytes = match Limited::new(request.into_body(), BODY_CAP).collect().await {
        Ok(body) => body.to_bytes().len().to_string(),
        Err(_) => "over-cap-or-error".to_owned(),
    };
    let json = serde_json::json!({
        "backend": id,
        "method": method,
        "uri": uri,
        "headers": headers,
        "body_bytes": body_bytes,
    });
    builder
        .header("content-type", "application/json")
        .header("x-echo-body-bytes", body_bytes)
        .body(Full::new(Bytes::from(json.to_string())))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}
