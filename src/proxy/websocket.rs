//! WebSocket tunnels: once an upstream has answered a handshake with `101 Switching Protocols`, the
//! client's connection and the upstream's are spliced together and bytes are copied both ways.
//!
//! certd does not parse WebSocket frames; after the handshake it is a byte pipe. Each tunnel is a task
//! owned by the [`Proxy`](super::Proxy)'s tracker and ends when either side closes or fails, when no
//! byte has moved either way for its idle timeout, or when the proxy is shut down. A tunnel keeps its
//! client connection's [`ConnectionPermit`] until it ends, so tunnels count against
//! `[limits] max_connections` like any other open connection.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info_span, Instrument};

/// The default `[limits] tunnel_idle_timeout`. nginx closes a tunnel after `proxy_read_timeout`
/// (60 s) without a byte from the upstream, and WebSocket guides for nginx raise it to an hour or
/// more for apps that do not ping; an hour keeps those apps working while a tunnel whose peer
/// vanished without a FIN still gives its connection slot back.
pub const DEFAULT_TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// A client connection's slot under `[limits] max_connections`, shared by the connection and the
/// tunnel it may become.
///
/// The HTTPS front puts one in the extensions of every request it hands to
/// [`Proxy::handle`](super::Proxy::handle). hyper's connection future ends when the connection is
/// upgraded, which would free the slot while the connection is still open as a tunnel; the tunnel
/// therefore takes a clone and the slot is given back only when the last holder is dropped.
#[derive(Debug, Clone)]
pub struct ConnectionPermit {
    _held: Arc<OwnedSemaphorePermit>,
}

impl ConnectionPermit {
    /// Wraps the permit the connection was accepted with.
    pub fn new(permit: OwnedSemaphorePermit) -> Self {
        Self {
            _held: Arc::new(permit),
        }
    }
}

/// Everything a tunnel needs besides its owner.
pub(super) struct Tunnel {
    /// Completes once hyper has written the `101` response to the client.
    pub client: OnUpgrade,
    /// Completes once the upstream's `101` has been read.
    pub upstream: OnUpgrade,
    /// The client's address, for the log.
    pub client_addr: SocketAddr,
    /// The upstream, for the log.
    pub upstream_label: String,
    /// The tunnel is closed after this long without a byte in either direction.
    pub idle_timeout: Duration,
    /// The client connection's slot, held until the tunnel ends (`None` outside the HTTPS front,
    /// e.g. in tests that serve the proxy directly).
    pub permit: Option<ConnectionPermit>,
    /// Whatever else must live as long as the tunnel: for a server of an `[[upstream]]` group,
    /// its count of requests in flight, so `least_conn` sees the open tunnel.
    pub held: Option<Held>,
}

/// Something a tunnel keeps until it ends (see [`Tunnel::held`]).
pub(super) type Held = Box<dyn Send + Sync>;

/// Spawns the task that waits for both upgrades to complete and then copies bytes between them.
///
/// The client's upgrade completes only once the `101` response has been written, so this must be
/// called before that response is returned, and the task waits for it.
pub(super) fn spawn_tunnel(tracker: &TaskTracker, shutdown: CancellationToken, tunnel: Tunnel) {
    let span =
        info_span!("websocket", client = %tunnel.client_addr, upstream = %tunnel.upstream_label);
    tracker.spawn(run(tunnel, shutdown).instrument(span));
}

async fn run(tunnel: Tunnel, shutdown: CancellationToken) {
    let Tunnel {
        client,
        upstream,
        idle_timeout,
        permit,
        held,
        ..
    } = tunnel;
    // Dropped when this task ends, whichever way it ends.
    let _permit = permit;
    let _held = held;
    let upgraded = tokio::select! {
        upgraded = async { tokio::try_join!(client, upstream) } => upgraded,
        () = shutdown.cancelled() => return,
    };
    let (client, upstream) = match upgraded {
        Ok(pair) => pair,
        Err(error) => {
            debug!(%error, "websocket upgrade did not complete");
            return;
        }
    };
    let clock = IdleClock::new();
    let (client_read, mut client_write) = tokio::io::split(TokioIo::new(client));
    let (upstream_read, mut upstream_write) = tokio::io::split(TokioIo::new(upstream));
    let mut client_read = Watched::new(client_read, &clock);
    let mut upstream_read = Watched::new(upstream_read, &clock);
    debug!("websocket tunnel open");
    // Each direction copies until its reader closes, then passes the close on (FIN). The
    // tunnel ends as soon as either direction is done: after a WebSocket close handshake the
    // side that closes first has nothing more to receive, and a side that vanished cannot.
    let to_upstream = async {
        let copied = tokio::io::copy(&mut client_read, &mut upstream_write).await?;
        upstream_write.shutdown().await?;
        Ok::<_, std::io::Error>(copied)
    };
    let to_client = async {
        let copied = tokio::io::copy(&mut upstream_read, &mut client_write).await?;
        client_write.shutdown().await?;
        Ok::<_, std::io::Error>(copied)
    };
    tokio::select! {
        copied = to_upstream => match copied {
            Ok(bytes) => debug!(to_upstream = bytes, "websocket tunnel closed by the client"),
            Err(error) => debug!(%error, "websocket tunnel failed"),
        },
        copied = to_client => match copied {
            Ok(bytes) => debug!(to_client = bytes, "websocket tunnel closed by the upstream"),
            Err(error) => debug!(%error, "websocket tunnel failed"),
        },
        () = clock.idle_for_at_least(idle_timeout) => {
            let timeout_ms = u64::try_from(idle_timeout.as_millis()).unwrap_or(u64::MAX);
            debug!(timeout_ms, "websocket tunnel closed: idle");
        }
        () = shutdown.cancelled() => debug!("websocket tunnel closed at shutdown"),
    }
}

/// When a tunnel last moved a byte, in either direction.
///
/// Reads are what is watched: every byte written was read first, and a peer that stops reading
/// stops the copy in its direction, so a stalled writer also shows as no reads.
struct IdleClock {
    started: Instant,
    /// Milliseconds after `started` of the last read that returned bytes.
    last_ms: AtomicU64,
}

impl IdleClock {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

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

    /// Completes once nothing has moved for `timeout`. It sleeps until the earliest moment that
    /// could be so, then checks again, so a busy tunnel costs one timer per `timeout`, not per read.
    async fn idle_for_at_least(&self, timeout: Duration) {
        loop {
            let idle = self.idle_for();
            if idle >= timeout {
                return;
            }
            tokio::time::sleep(timeout.saturating_sub(idle)).await;
        }
    }
}

/// A reader that notes on its [`IdleClock`] each time bytes arrive.
struct Watched<'a, R> {
    inner: R,
    clock: &'a IdleClock,
}

impl<'a, R> Watched<'a, R> {
    fn new(inner: R, clock: &'a IdleClock) -> Self {
        Self { inner, clock }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Watched<'_, R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.touch();
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_idle_clock_waits_for_the_timeout_after_the_last_read() {
        let clock = IdleClock::new();
        let timeout = Duration::from_millis(400);
        tokio::time::sleep(Duration::from_millis(250)).await;
        clock.touch();
        let touched = Instant::now();
        clock.idle_for_at_least(timeout).await;
        let waited = touched.elapsed();
        assert!(
            waited >= Duration::from_millis(390),
            "counted from the last read, not from the start: {waited:?}"
        );
        assert!(waited < Duration::from_secs(2), "{waited:?}");
    }

    #[tokio::test]
    async fn reads_that_bring_bytes_touch_the_clock() {
        let clock = IdleClock::new();
        let (mut writer, reader) = tokio::io::duplex(64);
        let mut reader = Watched::new(reader, &clock);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(clock.idle_for() >= Duration::from_millis(190));
        writer.write_all(b"ping").await.unwrap_or_default();
        let mut buf = [0u8; 16];
        let read = tokio::io::AsyncReadExt::read(&mut reader, &mut buf).await;
        assert_eq!(read.ok(), Some(4));
        assert!(clock.idle_for() < Duration::from_millis(100));
    }
}
