//! The one way certd serves HTTP on accepted connections: the :80 listener ([`crate::plain_http`]),
//! the HTTPS front (`daemon/https.rs`) and the metrics listener (`metrics/listener.rs`) all accept
//! with [`accept_loop`] and serve each connection with [`serve_connection`], within [`ServeLimits`].
//!
//! The limits are those a slow or hostile client must not get around: a cap on connections open at
//! once (one more is closed at accept), a deadline for each request's headers (hyper's header read
//! timeout, which also ends a kept-alive connection that sends nothing more), a cap on the header
//! buffer, an optional idle timeout on connections that move no bytes with no request in flight, and
//! at shutdown a graceful close (the responses in flight are finished, nothing new is read), bounded
//! by an optional drain deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, Instrument as _};

/// hyper's HTTP/1 read buffer cannot be smaller than this.
const MIN_BUF_SIZE: usize = 8192;

/// Streams at once on one HTTP/2 connection.
const MAX_CONCURRENT_STREAMS: u32 = 256;

/// What a connection is held to.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// How long a request's headers may take, counted from the connection (or the previous
    /// response) on.
    pub header_read_timeout: Duration,
    /// The header buffer (HTTP/1, at least 8 KiB) and header list (HTTP/2) cap.
    pub max_header_bytes: usize,
    /// Close a connection that moved no bytes this long while no request was in flight. Without it,
    /// the header read timeout is what ends an idle kept-alive HTTP/1 connection.
    pub idle_timeout: Option<Duration>,
    /// After shutdown, how long a connection may take to finish its responses in flight. Without
    /// it, as long as they take (the owner bounds its tasks).
    pub drain_timeout: Option<Duration>,
    /// Whether HTTP/2 is served too (chosen by the connection's preface); otherwise HTTP/1.1 only.
    pub http2: bool,
}

/// Accepts connections on `listener` until `shutdown`, at most as many open at once as
/// `connections` has permits (one more is closed at accept), and runs `serve` for each as a task on
/// `tasks`, holding its permit until it returns.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    connections: Arc<Semaphore>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr, OwnedSemaphorePermit) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let Some((stream, peer)) = crate::listener::accept(&listener, &shutdown).await else {
            return;
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            debug!(%peer, "connection limit reached; closing");
            continue;
        };
        tasks.spawn(serve(stream, peer, permit).instrument(tracing::debug_span!("conn", %peer)));
    }
}

/// Serves HTTP on `io` with `service` until the client closes, a limit ends it, or `shutdown`
/// (then the responses in flight are finished first, within `limits.drain_timeout`).
pub async fn serve_connection<I, S, B>(
    io: I,
    service: S,
    limits: &ServeLimits,
    shutdown: &CancellationToken,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io = IdleIo::new(io);
    let activity = io.activity.clone();
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let busy = activity.begin_request();
            let response = service.call(request);
            async move {
                let _busy = busy;
                response.await
            }
        })
    };

    if limits.http2 {
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes.max(MIN_BUF_SIZE));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
        // With upgrades: websockets are proxied on HTTPS.
        let connection = builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(connection);
        drive(
            connection,
            |c| c.graceful_shutdown(),
            &activity,
            limits,
            shutdown,
        )
        .await;
    } else {
        // hyper's own HTTP/1 connection, not the version-sniffing one: that reads the first bytes
        // without a deadline, and a client that connects and says nothing would stay.
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes.max(MIN_BUF_SIZE))
            .keep_alive(true)
            .serve_connection(io, service);
        tokio::pin!(connection);
        drive(
            connection,
            |c| c.graceful_shutdown(),
            &activity,
            limits,
            shutdown,
        )
        .await;
    }
}

/// Runs `connection` to its end, closing it gracefully when idle (`limits.idle_timeout`) or at
/// `shutdown`, and at once when the drain deadline after shutdown passes.
async fn drive<C, E>(
    mut connection: std::pin::Pin<&mut C>,
    graceful_shutdown: impl Fn(std::pin::Pin<&mut C>),
    activity: &Activity,
    limits: &ServeLimits,
    shutdown: &CancellationToken,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let idle_timeout = limits.idle_timeout;
    let mut draining = false;
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    loop {
        // Without an idle timeout there is nothing to check: the long sleep only re-arms the loop.
        let check_in = idle_timeout.map_or(Duration::from_secs(3600), |idle| {
            idle.saturating_sub(activity.idle_for())
                .max(Duration::from_millis(100))
        });
        let drained = async {
            match drain_deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    debug!(%err, "connection ended with an error");
                }
                return;
            }
            () = shutdown.cancelled(), if !draining => {
                // Finish the requests in flight, accept no new ones.
                graceful_shutdown(connection.as_mut());
                draining = true;
                drain_deadline = limits
                    .drain_timeout
                    .and_then(|bound| tokio::time::Instant::now().checked_add(bound));
            }
            () = drained => {
                debug!("connection not drained in time; closing");
                return;
            }
            () = tokio::time::sleep(check_in) => {
                if let Some(idle) = idle_timeout {
                    if activity.idle_for() >= idle && !activity.busy() {
                        debug!("idle timeout");
                        graceful_shutdown(connection.as_mut());
                    }
                }
            }
        }
    }
}

/// Wraps a connection's IO to note when bytes last moved, for the idle timeout.
struct IdleIo<T> {
    inner: T,
    activity: Arc<Activity>,
}

/// When a connection last moved bytes, and how many of its requests are in flight.
struct Activity {
    started: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicU64,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = self.last_ms.load(Ordering::Relaxed);
        Duration::from_millis(self.now_ms().saturating_sub(last))
    }

    // A request waiting for its upstream moves no bytes but is not idle.
    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }

    fn begin_request(self: &Arc<Self>) -> RequestInFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        RequestInFlight(self.clone())
    }
}

/// Counts a request as in flight until dropped.
struct RequestInFlight(Arc<Activity>);

impl Drop for RequestInFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<T> IdleIo<T> {
    fn new(inner: T) -> Self {
        Self {
            inner,
            activity: Arc::new(Activity {
                started: Instant::now(),
                last_ms: AtomicU64::new(0),
                in_flight: AtomicU64::new(0),
            }),
        }
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for IdleIo<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        // Only bytes (or EOF) count: hyper polls the connection without any arriving, and counting
        // those polls would keep restarting the idle clock.
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if polled.is_ready() {
            self.activity.touch();
        }
        polled
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for IdleIo<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if polled.is_ready() {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if polled.is_ready() {
            self.activity.touch();
        }
        polled
    }
}
