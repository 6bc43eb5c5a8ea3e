//! The plain-HTTP listener(s) on `[http] listen`: HTTP-01 challenge answers from
//! [`ChallengeTokens`], and every other request through a [`Fallback`] (404 for `certd issue`, the
//! redirect to HTTPS in the daemon). Connections are served by [`crate::http_server`] within
//! `[limits]`, after the PROXY header when `[http] proxy_protocol` asks for one.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, Instrument};

use crate::challenge::{plain, ChallengeTokens};
use crate::config::LimitsConfig;
use crate::http_server::ServeLimits;
use crate::proxy_protocol::ProxyProtocol;

/// How long an open connection may take to finish its response at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

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
    #[cfg(test)]
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
            let served = Arc::new(Served {
                tokens: tokens.clone(),
                fallback: fallback.clone(),
                limits: ServeLimits {
                    header_read_timeout: limits.header_read_timeout,
                    max_header_bytes: limits.max_header_bytes,
                    // hyper's header read timeout also ends a kept-alive connection that sends
                    // nothing more: a CA's validator or a browser about to be redirected needs no more.
                    idle_timeout: None,
                    drain_timeout: Some(DRAIN_TIMEOUT),
                    http2: false,
                },
                proxy_protocol: proxy_protocol.clone(),
                shutdown: shutdown.clone(),
            });
            tasks.spawn(
                crate::http_server::accept_loop(
                    listener,
                    connections.clone(),
                    shutdown.clone(),
                    tasks.clone(),
                    move |stream, peer, permit| {
                        let served = served.clone();
                        async move {
                            let _permit = permit;
                            served.connection(stream, peer).await;
                        }
                    },
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

/// What the connections of one listener answer with, and within which limits.
struct Served {
    tokens: ChallengeTokens,
    fallback: Fallback,
    limits: ServeLimits,
    proxy_protocol: ProxyProtocol,
    shutdown: CancellationToken,
}

impl Served {
    async fn connection(&self, mut stream: tokio::net::TcpStream, peer: SocketAddr) {
        // Behind a TCP load balancer the connection starts with a PROXY header; its source is the
        // client, for the log lines of this connection.
        let client = match self
            .proxy_protocol
            .client_address(&mut stream, peer, self.limits.header_read_timeout)
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
        let (tokens, fallback) = (self.tokens.clone(), self.fallback.clone());
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let (tokens, fallback) = (tokens.clone(), fallback.clone());
            async move {
                let answered = tokens.respond(request.method(), request.uri().path()).await;
                Ok::<_, Infallible>(answered.unwrap_or_else(|| fallback(&request)))
            }
        });
        crate::http_server::serve_connection(
            TokioIo::new(stream),
            service,
            &self.limits,
            &self.shutdown,
        )
        .await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
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
