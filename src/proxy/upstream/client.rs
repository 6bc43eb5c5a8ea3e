//! The proxy's HTTP/1.1 client to upstreams: hyper's connection-level API
//! (`hyper::client::conn::http1`) over a keep-alive pool of certd's own, one pool shared by every
//! HTTPS worker (issue 14: hyper-util's legacy `Client` spent a task spawn, a boxed future and its
//! pool bookkeeping on every request, and each worker kept keep-alive connections of its own).
//!
//! What the pool does, and why:
//! - **Reuse**: a connection goes back to the pool when its response body has been read to the
//!   end (or had none), never before, so a checked-out connection is idle. A request that finds no
//!   ready connection connects a new one (the connect timeout is [`super::connector`]'s).
//! - **Locality**: a connection's task runs on the worker that opened it. A request takes an idle
//!   connection of its own worker first and one of another worker only when its own has none, so
//!   in steady state an exchange never wakes another core, and a quiet worker still reuses what a
//!   busy one opened instead of connecting again.
//! - **Limits**: at most `max_idle_per_host` idle connections per upstream (a connection finishing
//!   when that many are idle is closed), each closed after `idle_timeout` unused.
//! - **Discard**: a connection that the upstream closed, that failed, whose response was not read
//!   to the end or that was upgraded (websocket) never returns to the pool. A request that a pooled
//!   connection refused before sending anything (the upstream closed it as we picked it) is sent
//!   once more on a new connection, as hyper-util's client does.
//! - **Ownership**: every connection task and the idle reaper are tracked by the pool and end when
//!   the pool is dropped (the last worker's proxy) or its worker runtime ends.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, HOST};
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::{Request, Response, StatusCode, Uri};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::connector::UpstreamConnector;
use crate::proxy::body::RequestBody;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request to an upstream got no response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// The request's URI names no upstream (certd builds it, so this is certd's fault).
    #[error("the upstream URI {uri} has no authority")]
    NoAuthority { uri: Uri },
    /// TCP or unix-socket connect failed or timed out.
    #[error("cannot connect to the upstream {authority}")]
    Connect {
        authority: Authority,
        #[source]
        source: BoxError,
    },
    /// The new connection could not be set up as an HTTP/1.1 connection.
    #[error("HTTP/1.1 handshake with the upstream {authority} failed")]
    Handshake {
        authority: Authority,
        #[source]
        source: hyper::Error,
    },
    /// Sending the request or reading the response head failed.
    #[error("request to the upstream {authority} failed")]
    Request {
        authority: Authority,
        #[source]
        source: hyper::Error,
    },
}

/// A pooled HTTP/1.1 client to upstreams; cloning shares the pool.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamClient {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    connector: UpstreamConnector,
    builder: http1::Builder,
    /// Idle connections per upstream authority, the most recently used last. Held only to take or
    /// put a sender: no I/O and no await under it.
    idle: Mutex<HashMap<Authority, Vec<Idle>>>,
    idle_timeout: Duration,
    max_idle_per_host: usize,
    /// The connection tasks and the reaper.
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

#[derive(Debug)]
struct Idle {
    sender: SendRequest<RequestBody>,
    since: Instant,
    /// The worker thread whose runtime runs the connection's task.
    home: ThreadId,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Ends every connection task (idle or not) and the reaper: nobody can send on them now.
        self.shutdown.cancel();
        self.tasks.close();
    }
}

impl UpstreamClient {
    /// An empty pool. Must be called inside a Tokio runtime: the idle reaper runs on it.
    pub(crate) fn new(
        connector: UpstreamConnector,
        idle_timeout: Duration,
        max_idle_per_host: usize,
    ) -> Self {
        let shared = Arc::new(Shared {
            connector,
            builder: http1::Builder::new(),
            idle: Mutex::new(HashMap::new()),
            idle_timeout,
            max_idle_per_host,
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
        });
        spawn_reaper(&shared);
        Self { shared }
    }

    /// Sends `request` (an absolute `http://authority/path` URI) on an idle connection to its
    /// authority, or a new one. The URI goes out in origin form, with `Host` set to the authority
    /// when the request has none. The response body returns the connection to the pool once read
    /// to the end.
    pub(in crate::proxy) async fn request(
        &self,
        mut request: Request<RequestBody>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let Some(authority) = request.uri().authority().cloned() else {
            return Err(UpstreamError::NoAuthority {
                uri: request.uri().clone(),
            });
        };
        if !request.headers().contains_key(HOST) {
            // An `Authority` is valid header text, so this only fails on certd's own bug.
            if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                request.headers_mut().insert(HOST, host);
            }
        }
        let path = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *request.uri_mut() = Uri::from(path);

        if let Some(mut sender) = self.checkout(&authority) {
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.pooled(response, sender, authority)),
                Err(mut refused) => match refused.take_message() {
                    // Nothing was sent: the upstream had closed the idle connection.
                    Some(unsent) => {
                        debug!(upstream = %authority, "pooled connection closed; sending on a new one");
                        request = unsent;
                    }
                    None => {
                        return Err(UpstreamError::Request {
                            authority,
                            source: refused.into_error(),
                        })
                    }
                },
            }
        }
        let mut sender = self.connect(&authority).await?;
        match sender.send_request(request).await {
            Ok(response) => Ok(self.pooled(response, sender, authority)),
            Err(source) => Err(UpstreamError::Request { authority, source }),
        }
    }

    /// How many idle connections the pool holds now, over all upstreams.
    #[cfg(test)]
    pub(crate) fn idle_count(&self) -> usize {
        self.shared.lock().values().map(Vec::len).sum()
    }

    /// `response` with a body that checks `sender` back in at its end; a `101` keeps nothing (the
    /// connection becomes the tunnel).
    fn pooled(
        &self,
        response: Response<Incoming>,
        sender: SendRequest<RequestBody>,
        authority: Authority,
    ) -> Response<UpstreamBody> {
        let checkin = (response.status() != StatusCode::SWITCHING_PROTOCOLS).then(|| Checkin {
            sender,
            authority,
            pool: Arc::downgrade(&self.shared),
        });
        response.map(|inner| UpstreamBody { inner, checkin })
    }

    /// An idle, ready connection to `authority`: this worker's own if it has one, else another
    /// worker's. Closed and expired ones are dropped on the way.
    fn checkout(&self, authority: &Authority) -> Option<SendRequest<RequestBody>> {
        let here = std::thread::current().id();
        let now = Instant::now();
        let mut idle = self.shared.lock();
        let list = idle.get_mut(authority)?;
        list.retain(|entry| self.shared.keeps(entry, now));
        let pick = list
            .iter()
            .rposition(|entry| entry.home == here && entry.sender.is_ready())
            .or_else(|| list.iter().rposition(|entry| entry.sender.is_ready()))?;
        Some(list.remove(pick).sender)
    }

    /// A new HTTP/1.1 connection to `authority`, its task running on this worker's runtime.
    async fn connect(
        &self,
        authority: &Authority,
    ) -> Result<SendRequest<RequestBody>, UpstreamError> {
        let connect_error = |source: BoxError| UpstreamError::Connect {
            authority: authority.clone(),
            source,
        };
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|error| connect_error(error.into()))?;
        let mut connector = self.shared.connector.clone();
        std::future::poll_fn(|cx| tower_service::Service::<Uri>::poll_ready(&mut connector, cx))
            .await
            .map_err(connect_error)?;
        let io = tower_service::Service::call(&mut connector, uri)
            .await
            .map_err(connect_error)?;
        let (sender, connection) =
            self.shared
                .builder
                .handshake(io)
                .await
                .map_err(|source| UpstreamError::Handshake {
                    authority: authority.clone(),
                    source,
                })?;
        let shutdown = self.shared.shutdown.clone();
        let upstream = authority.clone();
        self.shared.tasks.spawn(async move {
            // `with_upgrades`: a `101` hands the connection to the websocket tunnel.
            tokio::select! {
                ended = connection.with_upgrades() => {
                    if let Err(error) = ended {
                        debug!(%upstream, %error, "upstream connection ended with an error");
                    }
                }
                () = shutdown.cancelled() => {}
            }
        });
        Ok(sender)
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Authority, Vec<Idle>>> {
        // The map holds no invariant a panic elsewhere could break half-way.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether an idle entry may stay: open and not idle for longer than the timeout.
    fn keeps(&self, entry: &Idle, now: Instant) -> bool {
        !entry.sender.is_closed() && now.saturating_duration_since(entry.since) < self.idle_timeout
    }

    /// Puts a finished connection back, unless it is closed or the upstream has enough idle ones.
    fn check_in(&self, authority: Authority, sender: SendRequest<RequestBody>) {
        if sender.is_closed() || self.shutdown.is_cancelled() {
            return;
        }
        let entry = Idle {
            sender,
            since: Instant::now(),
            home: std::thread::current().id(),
        };
        let mut idle = self.lock();
        let list = idle.entry(authority).or_default();
        if list.len() < self.max_idle_per_host {
            list.push(entry);
        }
        // Else `entry` drops here, after the lock: its connection closes.
    }

    /// Drops every closed or expired idle connection, and the upstreams left with none.
    fn prune(&self, now: Instant) {
        let mut idle = self.lock();
        idle.retain(|_, list| {
            list.retain(|entry| self.keeps(entry, now));
            !list.is_empty()
        });
    }
}

/// Closes idle connections after the idle timeout even when no request comes to look at them.
fn spawn_reaper(shared: &Arc<Shared>) {
    let pool: Weak<Shared> = Arc::downgrade(shared);
    let shutdown = shared.shutdown.clone();
    // Half the timeout, so an idle connection lives at most 1.5 × it; never a busy loop.
    let every = (shared.idle_timeout / 2).max(Duration::from_millis(50));
    shared.tasks.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let Some(pool) = pool.upgrade() else { return };
            pool.prune(Instant::now());
        }
    });
}

/// What returns a connection to the pool.
#[derive(Debug)]
struct Checkin {
    sender: SendRequest<RequestBody>,
    authority: Authority,
    pool: Weak<Shared>,
}

/// An upstream's response body; read to the end, it returns its connection to the pool.
#[derive(Debug)]
pub(crate) struct UpstreamBody {
    inner: Incoming,
    checkin: Option<Checkin>,
}

impl UpstreamBody {
    fn check_in(&mut self) {
        if let Some(checkin) = self.checkin.take() {
            if let Some(pool) = checkin.pool.upgrade() {
                pool.check_in(checkin.authority, checkin.sender);
            }
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.check_in(),
            // A failed body leaves the connection in an unknown state: it is not reused.
            Poll::Ready(Some(Err(_))) => this.checkin = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // hyper's server stops polling a body once it says it has ended (a `Content-Length`
        // reached, `HEAD`, `204`), so the end is often seen only here. A body dropped before its
        // end takes its connection with it.
        if self.inner.is_end_stream() {
            self.check_in();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    /// An upstream that answers every request on a connection with `body`, counting connections.
    async fn upstream(
        body: &'static str,
    ) -> (
        std::net::SocketAddr,
        Arc<std::sync::atomic::AtomicUsize>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_request| async move {
                        Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                            Bytes::from_static(body.as_bytes()),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, accepted, task)
    }

    fn get(addr: std::net::SocketAddr) -> Request<RequestBody> {
        let mut request = Request::new(RequestBody::empty());
        *request.uri_mut() = format!("http://{addr}/x?y=1").parse().unwrap();
        request
    }

    fn client(idle_timeout: Duration, max_idle: usize) -> UpstreamClient {
        UpstreamClient::new(
            UpstreamConnector::new(Duration::from_secs(5)),
            idle_timeout,
            max_idle,
        )
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_body_is_read() {
        let (addr, accepted, _task) = upstream("hello").await;
        let client = client(Duration::from_secs(60), 8);
        for _ in 0..5 {
            let response = client.request(get(addr)).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"hello");
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(client.idle_count(), 1);
    }

    #[tokio::test]
    async fn a_body_dropped_unread_does_not_return_its_connection() {
        let (addr, accepted, _task) = upstream("a body that nobody reads").await;
        let client = client(Duration::from_secs(60), 8);
        let response = client.request(get(addr)).await.unwrap();
        drop(response);
        assert_eq!(client.idle_count(), 0);
        let response = client.request(get(addr)).await.unwrap();
        response.into_body().collect().await.unwrap();
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn at_most_max_idle_connections_are_kept() {
        let (addr, accepted, _task) = upstream("x").await;
        let client = client(Duration::from_secs(60), 2);
        // Four requests in flight at once need four connections; two stay idle afterwards.
        let responses = futures_util::future::join_all((0..4).map(|_| client.request(get(addr))))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect::<Vec<_>>();
        for response in responses {
            response.into_body().collect().await.unwrap();
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 4);
        assert_eq!(client.idle_count(), 2);
    }

    #[tokio::test]
    async fn idle_connections_close_after_the_idle_timeout() {
        let (addr, accepted, _task) = upstream("x").await;
        let client = client(Duration::from_millis(100), 8);
        let response = client.request(get(addr)).await.unwrap();
        response.into_body().collect().await.unwrap();
        assert_eq!(client.idle_count(), 1);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(client.idle_count(), 0, "the reaper closed it");
        let response = client.request(get(addr)).await.unwrap();
        response.into_body().collect().await.unwrap();
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_replaced() {
        // An upstream that answers one request per connection and then closes it, without saying so.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let mut got = 0;
                while !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf[got..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got += n,
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                drop(stream);
            }
        });
        let client = client(Duration::from_secs(60), 8);
        for _ in 0..3 {
            let response = client.request(get(addr)).await.unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"ok");
            // Let the connection task see the close before the next request.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_refused_connect_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let client = client(Duration::from_secs(60), 8);
        let error = client.request(get(addr)).await.unwrap_err();
        assert!(matches!(error, UpstreamError::Connect { .. }), "{error:?}");
    }

    #[tokio::test]
    async fn dropping_the_pool_ends_its_connection_tasks() {
        let (addr, _accepted, _task) = upstream("x").await;
        let client = client(Duration::from_secs(60), 8);
        let response = client.request(get(addr)).await.unwrap();
        response.into_body().collect().await.unwrap();
        let tasks = client.shared.tasks.clone();
        assert_eq!(tasks.len(), 2, "one connection task and the reaper");
        drop(client);
        tokio::time::timeout(Duration::from_secs(5), tasks.wait())
            .await
            .unwrap();
    }
}
