//! A proxy route's own timeouts ([`ProxyTimeouts`]), and how two of them are kept: `read_timeout`
//! on the response body (nginx `proxy_read_timeout`): the upstream must send the next piece of the
//! body within the timeout of the previous one, or the response is cut off (the client sees the
//! connection reset, as with nginx, since the head has been sent); and `send_timeout` between two
//! writes of the request body.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// A proxy route's own timeouts; `None` keeps the `[limits]` (or tunnel) default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyTimeouts {
    /// `connect_timeout` (nginx `proxy_connect_timeout`): for connecting to a server.
    pub connect: Option<Duration>,
    /// `read_timeout` (nginx `proxy_read_timeout`): for the response head, then between two reads
    /// of the response body, and the idle time of a WebSocket tunnel unless
    /// `tunnel_idle_timeout` is set.
    pub read: Option<Duration>,
    /// `send_timeout` (nginx `proxy_send_timeout`): between two writes of the request body to the
    /// upstream.
    pub send: Option<Duration>,
}

/// An upstream's response body with a deadline between two frames.
#[derive(Debug)]
pub(crate) struct ReadTimeoutBody {
    inner: super::UpstreamBody,
    timeout: Duration,
    /// Boxed so the body stays `Unpin`; made once per response, only on routes with a read timeout.
    deadline: Pin<Box<Sleep>>,
}

impl ReadTimeoutBody {
    pub(crate) fn new(inner: super::UpstreamBody, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl Body for ReadTimeoutBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                // `checked_add`: a timeout near the end of the clock just never fires.
                if let Some(next) = Instant::now().checked_add(this.timeout) {
                    this.deadline.as_mut().reset(next);
                }
                Poll::Ready(frame.map(|frame| frame.map_err(std::io::Error::other)))
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "upstream sent nothing for {}ms (read_timeout)",
                        this.timeout.as_millis()
                    ),
                )))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A route's `send_timeout` (nginx `proxy_send_timeout`): once the request body has handed hyper a
/// piece, the upstream must take it (hyper asks for the next piece only when it has written the
/// last) within the timeout. Time spent waiting for the client's next piece does not count.
#[derive(Debug)]
pub(crate) struct SendClock {
    base: Instant,
    /// Milliseconds after `base` at which a piece was handed over and not yet taken; `u64::MAX`:
    /// none is waiting.
    handed_at: std::sync::atomic::AtomicU64,
    handed: tokio::sync::Notify,
}

const NOT_WAITING: u64 = u64::MAX;

impl SendClock {
    /// A clock with nothing waiting.
    pub(crate) fn new() -> Self {
        Self {
            base: Instant::now(),
            handed_at: std::sync::atomic::AtomicU64::new(NOT_WAITING),
            handed: tokio::sync::Notify::new(),
        }
    }

    /// A piece of the body has been handed to hyper for the upstream.
    pub(crate) fn handed(&self) {
        let at = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(NOT_WAITING - 1);
        self.handed_at
            .store(at, std::sync::atomic::Ordering::Release);
        self.handed.notify_one();
    }

    /// hyper asks for the next piece (or the body has ended): nothing is waiting on the upstream.
    pub(crate) fn taken(&self) {
        self.handed_at
            .store(NOT_WAITING, std::sync::atomic::Ordering::Release);
    }

    /// Completes when a piece has waited longer than `timeout` for the upstream to take it.
    pub(crate) async fn stalled(&self, timeout: Duration) {
        loop {
            let at = self.handed_at.load(std::sync::atomic::Ordering::Acquire);
            if at == NOT_WAITING {
                self.handed.notified().await;
                continue;
            }
            let deadline = self
                .base
                .checked_add(Duration::from_millis(at))
                .and_then(|handed| handed.checked_add(timeout));
            let Some(deadline) = deadline else {
                // Beyond the clock's range: never.
                return std::future::pending().await;
            };
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real time (tokio's test-util clock is not enabled here), in steps far apart from the
    // timeout so a busy machine does not blur them.
    #[tokio::test]
    async fn a_piece_the_upstream_does_not_take_in_time_is_a_stall() {
        let clock = std::sync::Arc::new(SendClock::new());
        let timeout = Duration::from_millis(400);
        let watch = {
            let clock = clock.clone();
            tokio::spawn(async move { clock.stalled(timeout).await })
        };
        // Waiting for the client does not count.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert!(!watch.is_finished());
        // Pieces taken within the timeout do not count either.
        for _ in 0..4 {
            clock.handed();
            tokio::time::sleep(Duration::from_millis(100)).await;
            clock.taken();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert!(!watch.is_finished());
        clock.handed();
        tokio::time::timeout(Duration::from_secs(5), watch)
            .await
            .expect("a stall once a piece waits longer than the timeout")
            .expect("watch task");
    }
}
