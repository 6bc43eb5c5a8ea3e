//! The HTTP-01 challenge responder: the tokens of orders in flight, and the plain-HTTP listener that
//! answers `GET /.well-known/acme-challenge/<token>` with their key authorizations.
//!
//! Only tokens that an order has published and not yet withdrawn are answered; any other token gets 404.
//! A token is withdrawn when its [`PublishedToken`] guard drops, so a failed or finished order cannot
//! leave a stale answer behind. Requests for other paths go to a [`Fallback`]: 404 for `certd issue`,
//! the redirect to HTTPS in the daemon.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, Instrument};

use crate::answers::{Answers, PublishedAnswer};
use crate::config::LimitsConfig;
use crate::fleet_answers::{FleetAnswers, FleetGuard};
use crate::proxy_protocol::ProxyProtocol;
use crate::storage::AnswerKind;
use crate::store::StoreError;

/// The path prefix of HTTP-01 requests (RFC 8555 §8.3).
pub const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// The key authorizations of the HTTP-01 challenges currently in flight, by token.
///
/// Cheap to clone; all clones share the same set, so the order that publishes a token and the listener
/// that answers it need not know each other.
#[derive(Debug, Clone, Default)]
pub struct ChallengeTokens {
    inner: Answers<Arc<str>>,
    /// The TLS-ALPN-01 certificates of the same orders, kept here so that whatever hands HTTP-01
    /// tokens from the orders to the listeners hands these over too.
    alpn: crate::tls_alpn::AlpnCertificates,
    /// The fleet's store, when answers are shared between nodes: published there too, and asked
    /// on a miss.
    fleet: Option<Arc<FleetAnswers>>,
}

/// Keeps a token answerable; dropping it withdraws the token (here, and from the fleet's store).
#[derive(Debug)]
pub struct PublishedToken {
    _local: PublishedAnswer<Arc<str>>,
    _fleet: Option<FleetGuard>,
}

impl ChallengeTokens {
    /// Tokens (and TLS-ALPN-01 certificates) shared through `store` with every node of the fleet,
    /// when it shares answers ([`crate::storage::StateStore::shares_challenges`]); otherwise the same
    /// as [`ChallengeTokens::default`].
    pub fn shared_through(store: &crate::storage::SharedStore) -> Self {
        let fleet = FleetAnswers::new(store);
        Self {
            inner: Answers::default(),
            alpn: crate::tls_alpn::AlpnCertificates::shared_through(fleet.clone()),
            fleet,
        }
    }

    /// Makes `token` answerable with `key_authorization` by this process until the returned guard
    /// drops.
    pub fn publish(&self, token: String, key_authorization: String) -> PublishedToken {
        PublishedToken {
            _local: self.inner.publish(token, key_authorization.into()),
            _fleet: None,
        }
    }

    /// [`ChallengeTokens::publish`], and in the fleet's store when answers are shared, so that any
    /// node answers `token`: returns once it is there, before the CA may be told to validate.
    pub async fn publish_to_fleet(
        &self,
        token: String,
        key_authorization: String,
    ) -> Result<PublishedToken, StoreError> {
        let fleet = match &self.fleet {
            Some(fleet) => Some(
                fleet
                    .publish(AnswerKind::Http01, &token, &key_authorization)
                    .await?,
            ),
            None => None,
        };
        Ok(PublishedToken {
            _local: self.inner.publish(token, key_authorization.into()),
            _fleet: fleet,
        })
    }

    /// The TLS-ALPN-01 challenge certificates of the orders in flight (answered on `[https] listen`).
    pub fn alpn(&self) -> &crate::tls_alpn::AlpnCertificates {
        &self.alpn
    }

    /// The key authorization for `token`, if an order in flight in this process published it.
    pub fn key_authorization(&self, token: &str) -> Option<Arc<str>> {
        self.inner.get(token)
    }

    /// How many tokens are answerable now.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether no token is answerable now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// [`ChallengeTokens::answer`], and for a token this process does not hold, the answer another
    /// node of the fleet published (bounded; see [`crate::fleet_answers`]).
    pub async fn respond(&self, method: &Method, path: &str) -> Option<Response<Full<Bytes>>> {
        let local = self.answer(method, path)?;
        let Some(fleet) = &self.fleet else {
            return Some(local);
        };
        let token = path.strip_prefix(CHALLENGE_PREFIX)?;
        if local.status() != StatusCode::NOT_FOUND || !well_formed(token) {
            return Some(local);
        }
        match fleet.lookup(AnswerKind::Http01, token).await {
            Some(key_authorization) => {
                debug!(token, "answered an HTTP-01 challenge of another node");
                Some(key_authorization_response(key_authorization.as_bytes()))
            }
            None => Some(local),
        }
    }

    /// The response to a request for `path`, if the path is an HTTP-01 challenge path: the key
    /// authorization for a published token, 404 for any other token. `None` for every other path, so
    /// that the caller decides (404 here, a redirect to HTTPS in the daemon).
    pub fn answer(&self, method: &Method, path: &str) -> Option<Response<Full<Bytes>>> {
        let token = path.strip_prefix(CHALLENGE_PREFIX)?;
        if method != Method::GET && method != Method::HEAD {
            return Some(plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed\n",
            ));
        }
        match well_formed(token)
            .then(|| self.key_authorization(token))
            .flatten()
        {
            Some(key_authorization) => {
                debug!(token, "answered an HTTP-01 challenge");
                Some(key_authorization_response(key_authorization.as_bytes()))
            }
            None => Some(plain(StatusCode::NOT_FOUND, "unknown challenge token\n")),
        }
    }
}

/// Tokens are base64url (RFC 8555 §8.1); anything else cannot be one of ours.
fn well_formed(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The 200 answer carrying a key authorization.
fn key_authorization_response(key_authorization: &[u8]) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::copy_from_slice(key_authorization)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/octet-stream"),
    );
    response
}

/// A short plain-text response.
pub fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The listener could not be started.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen for HTTP-01 challenges on {addr}: {source}{}",
    bind_hint(source)
)]
pub struct ChallengeError {
    /// The address from `[http].listen`.
    pub addr: SocketAddr,
    /// Why binding failed.
    pub source: std::io::Error,
}

fn bind_hint(err: &std::io::Error) -> &'static str {
    match err.kind() {
        std::io::ErrorKind::PermissionDenied => {
            " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
        }
        std::io::ErrorKind::AddrInUse => {
            " (another program, perhaps nginx or a running `certd run`, holds the port)"
        }
        _ => "",
    }
}

/// Answers every request that is not an HTTP-01 challenge.
pub type Fallback = Arc<dyn Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync>;

/// A fallback that answers 404 to everything.
pub fn not_found() -> Fallback {
    Arc::new(|_: &Request<Incoming>| plain(StatusCode::NOT_FOUND, "not found\n"))
}

/// The plain-HTTP listener(s) answering HTTP-01 challenges, and everything else through a
/// [`Fallback`]. It owns its accept loops and connection tasks; [`ChallengeResponder::shutdown`] ends
/// them all.
#[derive(Debug)]
pub struct ChallengeResponder {
    local_addrs: Vec<SocketAddr>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl ChallengeResponder {
    /// Binds every address (all or nothing) and starts answering from `tokens`, 404 for anything else,
    /// with the default `[limits]`.
    pub async fn start(
        addrs: &[SocketAddr],
        tokens: ChallengeTokens,
    ) -> Result<Self, ChallengeError> {
        Self::start_with(
            addrs,
            tokens,
            not_found(),
            &LimitsConfig::default(),
            ProxyProtocol::Off,
        )
        .await
    }

    /// [`ChallengeResponder::start`] on `config`'s `[http]` listeners, speaking the PROXY protocol
    /// there when `[http] proxy_protocol` says so (for `certd issue` behind a TCP load balancer).
    pub async fn start_for(
        config: &crate::config::Config,
        tokens: ChallengeTokens,
    ) -> Result<Self, ChallengeError> {
        let proxy_protocol =
            ProxyProtocol::new(config.http.proxy_protocol, &config.https.trusted_proxies);
        Self::start_with(
            &config.http.listen,
            tokens,
            not_found(),
            &LimitsConfig::default(),
            proxy_protocol,
        )
        .await
    }

    /// Binds every address (all or nothing) and starts answering from `tokens`, and every other request
    /// with `fallback`. `limits` apply as on :443: the header read timeout (which also closes a
    /// keep-alive connection that sends nothing more), the header size cap and the connection cap.
    /// With `proxy_protocol` required, each connection must first send a PROXY header (read within
    /// the header read timeout) from a trusted proxy, or it is closed.
    pub async fn start_with(
        addrs: &[SocketAddr],
        tokens: ChallengeTokens,
        fallback: Fallback,
        limits: &LimitsConfig,
        proxy_protocol: ProxyProtocol,
    ) -> Result<Self, ChallengeError> {
        let mut listeners = Vec::with_capacity(addrs.len());
        for &addr in addrs {
            let listener = crate::listener::bind_tcp(addr)
                .map_err(|source| ChallengeError { addr, source })?;
            listeners.push((addr, listener));
        }
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
        let mut local_addrs = Vec::with_capacity(listeners.len());
        for (addr, listener) in listeners {
            let local = listener
                .local_addr()
                .map_err(|source| ChallengeError { addr, source })?;
            local_addrs.push(local);
            info!(%local, "answering HTTP-01 challenges");
            tasks.spawn(
                accept_loop(
                    listener,
                    Served {
                        tokens: tokens.clone(),
                        fallback: fallback.clone(),
                        limits: limits.clone(),
                        connections: connections.clone(),
                        proxy_protocol: proxy_protocol.clone(),
                    },
                    shutdown.clone(),
                    tasks.clone(),
                )
                .instrument(tracing::info_span!("http01", %local)),
            );
        }
        Ok(Self {
            local_addrs,
            shutdown,
            tasks,
        })
    }

    /// The addresses actually bound (useful when a port 0 was configured).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Stops accepting, gives open connections a moment to finish, and waits for every task to end.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// What an accept loop answers with, and within which limits.
struct Served {
    tokens: ChallengeTokens,
    fallback: Fallback,
    limits: LimitsConfig,
    connections: Arc<tokio::sync::Semaphore>,
    proxy_protocol: ProxyProtocol,
}

async fn accept_loop(
    listener: TcpListener,
    served: Served,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let Some((stream, peer)) = crate::listener::accept(&listener, &shutdown).await else {
            return;
        };
        let Ok(permit) = served.connections.clone().try_acquire_owned() else {
            debug!(%peer, "connection limit reached; closing");
            continue;
        };
        let tokens = served.tokens.clone();
        let fallback = served.fallback.clone();
        let shutdown = shutdown.clone();
        let header_read_timeout = served.limits.header_read_timeout;
        let max_buf_size = served.limits.max_header_bytes.max(8192);
        let proxy_protocol = served.proxy_protocol.clone();
        tasks.spawn(
            async move {
                let _permit = permit;
                let mut stream = stream;
                // Behind a TCP load balancer the connection starts with a PROXY header; its source
                // is the client, for the log lines of this connection.
                let client = match proxy_protocol
                    .client_address(&mut stream, peer, header_read_timeout)
                    .await
                {
                    Ok(client) => client,
                    Err(err) => {
                        debug!(%err, "connection closed");
                        return;
                    }
                };
                if client != peer {
                    debug!(%client, "PROXY header read");
                }
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let (tokens, fallback) = (tokens.clone(), fallback.clone());
                    async move {
                        let answered = tokens.respond(request.method(), request.uri().path()).await;
                        Ok::<_, Infallible>(answered.unwrap_or_else(|| fallback(&request)))
                    }
                });
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(header_read_timeout)
                    .max_buf_size(max_buf_size)
                    .keep_alive(true);
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                tokio::pin!(connection);
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(err) = result {
                            debug!(%err, "connection ended with an error");
                        }
                    }
                    () = shutdown.cancelled() => {
                        connection.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(Duration::from_secs(2), connection).await;
                    }
                }
            }
            .instrument(tracing::debug_span!("conn", %peer)),
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body(response: Response<Full<Bytes>>) -> String {
        String::from_utf8(
            response
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn only_published_tokens_are_answered_and_only_while_published() {
        let tokens = ChallengeTokens::default();
        let path = format!("{CHALLENGE_PREFIX}abc_DEF-123");
        let guard = tokens.publish("abc_DEF-123".into(), "abc_DEF-123.thumb".into());

        let answer = tokens.answer(&Method::GET, &path).unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(body(answer).await, "abc_DEF-123.thumb");

        let other = tokens
            .answer(&Method::GET, &format!("{CHALLENGE_PREFIX}other"))
            .unwrap();
        assert_eq!(other.status(), StatusCode::NOT_FOUND);
        let traversal = tokens
            .answer(&Method::GET, &format!("{CHALLENGE_PREFIX}../abc_DEF-123"))
            .unwrap();
        assert_eq!(traversal.status(), StatusCode::NOT_FOUND);
        assert!(tokens.answer(&Method::GET, "/index.html").is_none());

        drop(guard);
        assert!(tokens.is_empty());
        let gone = tokens.answer(&Method::GET, &path).unwrap();
        assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_token_published_by_another_node_is_answered_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store: crate::storage::SharedStore =
            crate::fleet_answers::tests::SharingStore::new(dir.path());
        let (ours, theirs) = (
            ChallengeTokens::shared_through(&store),
            ChallengeTokens::shared_through(&store),
        );
        let path = format!("{CHALLENGE_PREFIX}tok_1");
        let guard = theirs
            .publish_to_fleet("tok_1".into(), "tok_1.thumb".into())
            .await
            .unwrap();
        assert!(ours.is_empty());
        let answer = ours.respond(&Method::GET, &path).await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(body(answer).await, "tok_1.thumb");
        // Without the store (a single node), the same request is unknown.
        let alone = ChallengeTokens::default();
        let answer = alone.respond(&Method::GET, &path).await.unwrap();
        assert_eq!(answer.status(), StatusCode::NOT_FOUND);
        drop(guard);
    }

    #[tokio::test]
    async fn the_listener_answers_over_http_and_shuts_down() {
        let tokens = ChallengeTokens::default();
        let _guard = tokens.publish("tok".into(), "tok.key".into());
        let responder = ChallengeResponder::start(&["127.0.0.1:0".parse().unwrap()], tokens)
            .await
            .unwrap();
        let addr = responder.local_addrs()[0];

        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(
                    format!("GET {path} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await
                .unwrap();
            let mut text = String::new();
            stream.read_to_string(&mut text).await.unwrap();
            text
        };
        let ok = get("/.well-known/acme-challenge/tok").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.ends_with("tok.key"), "{ok}");
        let missing = get("/anything").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");

        responder.shutdown().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    async fn responder_with(limits: LimitsConfig) -> (ChallengeResponder, SocketAddr) {
        let responder = ChallengeResponder::start_with(
            &["127.0.0.1:0".parse().unwrap()],
            ChallengeTokens::default(),
            not_found(),
            &limits,
            ProxyProtocol::Off,
        )
        .await
        .unwrap();
        let addr = responder.local_addrs()[0];
        (responder, addr)
    }

    /// Sends `prefix` then a challenge request; the answer, or "" when the server closed at once.
    async fn exchange(addr: SocketAddr, prefix: &[u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut request = prefix.to_vec();
        request.extend_from_slice(
            b"GET /.well-known/acme-challenge/tok HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
        );
        // The server may close before reading everything: then the write or the read fails.
        let _ = stream.write_all(&request).await;
        let mut answer = Vec::new();
        let read = stream.read_to_end(&mut answer);
        let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test]
    async fn with_the_proxy_protocol_only_proxied_connections_are_answered() {
        let tokens = ChallengeTokens::default();
        let _guard = tokens.publish("tok".into(), "tok.key".into());
        let trusted = |entry: &str| {
            crate::trusted_proxies::TrustedProxies::new(vec![crate::trusted_proxies::parse_range(
                entry,
            )
            .unwrap()])
        };
        let listen: [SocketAddr; 1] = ["127.0.0.1:0".parse().unwrap()];
        let limits = LimitsConfig::default();
        let start = |trusted| {
            ChallengeResponder::start_with(
                &listen,
                tokens.clone(),
                not_found(),
                &limits,
                ProxyProtocol::Required(trusted),
            )
        };
        let responder = start(trusted("127.0.0.1")).await.unwrap();
        let addr = responder.local_addrs()[0];
        let mut v2_local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        v2_local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        let answered: [&[u8]; 3] = [
            b"PROXY TCP4 198.51.100.7 127.0.0.1 40000 80\r\n",
            b"PROXY UNKNOWN\r\n",
            &v2_local,
        ];
        for prefix in answered {
            let answer = exchange(addr, prefix).await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{prefix:?}: {answer}");
            assert!(answer.ends_with("tok.key"), "{prefix:?}: {answer}");
        }
        // Without a header (Pebble or a client reaching :80 directly) or with a broken one: closed.
        for prefix in [&b""[..], b"PROXY TCP4 1.2.3\r\n"] {
            let answer = exchange(addr, prefix).await;
            assert_eq!(answer, "", "{prefix:?}");
        }
        responder.shutdown().await;

        // From an address outside trusted_proxies, even a well-formed header is refused.
        let responder = start(trusted("10.0.0.0/8")).await.unwrap();
        let addr = responder.local_addrs()[0];
        let answer = exchange(addr, answered[0]).await;
        assert_eq!(answer, "");
        responder.shutdown().await;
    }

    /// Whether the server closes `stream` (EOF or reset) within `bound`.
    async fn closed_within(mut stream: tokio::net::TcpStream, bound: Duration) -> bool {
        use tokio::io::AsyncReadExt;
        let mut rest = Vec::new();
        tokio::time::timeout(bound, stream.read_to_end(&mut rest))
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn silent_and_idle_connections_are_closed_after_the_header_timeout() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (responder, addr) = responder_with(LimitsConfig {
            header_read_timeout: Duration::from_millis(300),
            ..LimitsConfig::default()
        })
        .await;
        // One never sends its headers; the other goes quiet after a request.
        let silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut quiet = tokio::net::TcpStream::connect(addr).await.unwrap();
        quiet
            .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .await
            .unwrap();
        let mut head = [0u8; 12];
        quiet.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 404");
        // Well before the default 10 s would.
        assert!(closed_within(silent, Duration::from_secs(5)).await);
        assert!(closed_within(quiet, Duration::from_secs(5)).await);
        responder.shutdown().await;
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_closed_at_once() {
        let (responder, addr) = responder_with(LimitsConfig {
            max_connections: 1,
            ..LimitsConfig::default()
        })
        .await;
        let held = tokio::net::TcpStream::connect(addr).await.unwrap();
        // The held one would get 10 s for its headers; the excess one is closed long before.
        let excess = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(closed_within(excess, Duration::from_secs(5)).await);
        drop(held);
        responder.shutdown().await;
    }

    #[tokio::test]
    async fn a_port_in_use_is_a_clear_error() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let err = ChallengeResponder::start(&[addr], ChallengeTokens::default())
            .await
            .unwrap_err();
        assert_eq!(err.addr, addr);
        assert!(err.to_string().contains("another program"), "{err}");
    }
}
