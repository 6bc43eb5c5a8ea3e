//! The HTTPS front: accepts TCP connections, terminates TLS with the SNI resolver's certificates, serves
//! HTTP/1.1 and HTTP/2 on them, and hands each request to the proxy for the site its host names, once
//! [`admission`](super::admission) has accepted it for this connection.
//!
//! Limits keep a slow or hostile client from exhausting the daemon: a cap on concurrent connections
//! (excess connections are closed at once), a TLS handshake deadline, a header read deadline, a cap on
//! header size, and an idle timeout. With `[https] proxy_protocol`, a connection's PROXY header is read
//! (from a trusted proxy only) before TLS, and its source stands for the client from then on.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::admission;
use super::handshake::Accepted;
use super::sites::SiteTable;
use crate::config::LimitsConfig;
use crate::metrics::Metrics;
use crate::proxy::{ConnectionPermit, Proxy, UpstreamUsed};
use crate::proxy_protocol::ProxyProtocol;
use crate::resolver::SniResolver;
use crate::response::ProxyBody;

/// Everything a connection needs, shared by all of them.
pub(super) struct HttpsContext {
    pub sites: Arc<ArcSwap<SiteTable>>,
    pub proxy: Proxy,
    pub limits: LimitsConfig,
    pub connections: Arc<Semaphore>,
    pub metrics: Arc<Metrics>,
    /// Whether connections start with a PROXY header (`[https] proxy_protocol`), and from whom.
    pub proxy_protocol: ProxyProtocol,
    /// Which TLS configuration a ClientHello gets (TLS-ALPN-01 challenges, IP names).
    pub handshake: Arc<super::handshake::Handshake>,
}

/// The rustls configuration: TLS 1.2 and 1.3 only, ALPN h2 then http/1.1, certificates from `resolver`,
/// and stateless session tickets so returning clients resume without a full handshake.
pub(super) fn tls_config(
    resolver: Arc<SniResolver>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    Ok(Arc::new(config))
}

/// Accepts connections on `listener` until `shutdown`; each connection runs as a task on `tasks`.
pub(super) async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    context: Arc<HttpsContext>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let connections = context.connections.clone();
    let connection_shutdown = shutdown.clone();
    crate::http_server::accept_loop(
        listener,
        connections,
        shutdown,
        tasks,
        move |stream, peer, permit| {
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            let context = context.clone();
            let shutdown = connection_shutdown.clone();
            async move {
                let permit = ConnectionPermit::new(permit);
                serve_connection(stream, peer, acceptor, context, shutdown, permit).await;
            }
        },
    )
    .await;
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    context: Arc<HttpsContext>,
    shutdown: CancellationToken,
    permit: ConnectionPermit,
) {
    let limits = &context.limits;
    let mut stream = stream;
    let local_addr = stream.local_addr().ok();
    let local = local_addr.map(crate::fastcgi::ServerAddr);
    // Behind a TCP load balancer, the client is the PROXY header's source, read before TLS.
    let peer = match context
        .proxy_protocol
        .client_address(&mut stream, peer, limits.header_read_timeout)
        .await
    {
        Ok(client) => client,
        Err(err) => {
            debug!(%err, "connection closed");
            return;
        }
    };
    let handshake = context.handshake.accept(&acceptor, stream, local_addr);
    let (tls, sni) = match tokio::time::timeout(limits.header_read_timeout, handshake).await {
        Ok(Ok(Accepted::Site { tls, name })) => {
            context.metrics.handshake_ok();
            // Shared by the connection's requests, not copied for each.
            (tls, name.map(Arc::<str>::from))
        }
        // A CA validating TLS-ALPN-01: answered, and nothing to serve.
        Ok(Ok(Accepted::Challenge)) => return,
        Ok(Err(err)) => {
            context.metrics.handshake_failed();
            debug!(%err, "TLS handshake failed");
            return;
        }
        Err(_) => {
            context.metrics.handshake_failed();
            debug!("TLS handshake timed out");
            return;
        }
    };
    let service_context = context.clone();
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        // A request that becomes a tunnel keeps the connection's slot after hyper lets go of it.
        request.extensions_mut().insert(permit.clone());
        if let Some(local) = local {
            request.extensions_mut().insert(local);
        }
        let context = service_context.clone();
        let sni = sni.clone();
        async move { Ok::<_, Infallible>(handle(&context, request, peer, sni.as_deref()).await) }
    });
    let serve_limits = crate::http_server::ServeLimits {
        header_read_timeout: limits.header_read_timeout,
        max_header_bytes: limits.max_header_bytes,
        idle_timeout: Some(limits.idle_timeout),
        // Finish the requests in flight, accept no new ones; the daemon bounds how long.
        drain_timeout: None,
        http2: true,
    };
    crate::http_server::serve_connection(TokioIo::new(tls), service, &serve_limits, &shutdown)
        .await;
}

/// Routes one request to its site and logs it, access-log style.
async fn handle(
    context: &HttpsContext,
    request: Request<Incoming>,
    peer: SocketAddr,
    sni: Option<&str>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let method = request.method().clone();
    // A reference to the request's own bytes, not a copy.
    let path = request.uri().path_and_query().cloned();
    let client = context.proxy.client_ip(request.headers(), peer.ip());
    let sites = context.sites.load();
    let admitted = admission::admit(&request, sni, &sites);
    let site = admitted.as_ref().ok();
    let http1 = request.version() != hyper::Version::HTTP_2;
    let version = request.version();
    let logged_headers = crate::access_log::RequestHeaders::of(&request);
    let response = if head_size(&request) > context.limits.max_header_bytes {
        // hyper's own HTTP/1 cap cannot go below 8 KiB and HTTP/2's counts differently; this one
        // enforces `[limits] max_header_bytes` as configured, for both.
        status_only(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
    } else {
        match &admitted {
            Ok(site) => context.proxy.handle(request, &site.routes, peer).await,
            Err(refusal) => {
                debug!(%refusal, "request refused");
                refused(*refusal, http1)
            }
        }
    };
    if let Some(site) = site {
        site.counters.count(response.status());
    }
    let upstream = response
        .extensions()
        .get::<UpstreamUsed>()
        .map(|used| used.0.as_str())
        .unwrap_or("-");
    let bytes = response
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok());
    crate::access_log::record(&crate::access_log::Entry {
        client,
        site: site.map(|site| site.name.as_str()).unwrap_or("-"),
        method: &method,
        path: path.as_ref().map_or("/", |path| path.as_str()),
        version,
        request: &logged_headers,
        status: response.status().as_u16(),
        bytes,
        elapsed: started.elapsed(),
        upstream,
    });
    response
}

/// The answer to a request [`admission::admit`] refused. Over HTTP/1 the connection is closed
/// after it: whatever follows a request whose framing or host was in doubt is not read as another.
fn refused(refusal: admission::Refusal, http1: bool) -> Response<ProxyBody> {
    let mut response = match refusal {
        admission::Refusal::BadRequest(_) => status_only(StatusCode::BAD_REQUEST),
        admission::Refusal::Misdirected => status_only(StatusCode::MISDIRECTED_REQUEST),
    };
    if http1 {
        response.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
    response
}

/// A response certd makes itself: 400 (a malformed request), 421 (the request names a host this
/// connection's site does not have), 431 (its headers are over `[limits] max_header_bytes`).
fn status_only(status: StatusCode) -> Response<ProxyBody> {
    use http_body_util::BodyExt;
    let text = match status {
        StatusCode::MISDIRECTED_REQUEST => "this server does not serve that host\n",
        StatusCode::BAD_REQUEST => "bad request\n",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "request headers too large\n",
        _ => "\n",
    };
    let body = http_body_util::Full::new(bytes::Bytes::from_static(text.as_bytes()))
        .map_err(|never| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
}

/// The size of a request's head as sent: the request line and every header line.
fn head_size<B>(request: &Request<B>) -> usize {
    let line = request.method().as_str().len()
        + request
            .uri()
            .path_and_query()
            .map_or(1, |pq| pq.as_str().len())
        + 12;
    let headers: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    line + headers
}
