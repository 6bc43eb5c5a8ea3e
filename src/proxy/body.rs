//! The request body forwarded to an upstream: the client's body streamed through unchanged, telling
//! the proxy when it has been sent in full, so that the response timeout counts from then (like
//! nginx's `proxy_read_timeout`) and a long upload is not mistaken for a slow upstream. A body with
//! a `max_body_size` limit fails once more than that has arrived, which aborts the upstream request;
//! one with a `send_timeout` tells its clock when the upstream is slow to take a piece.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::oneshot;

/// The client's body, forwarded frame by frame.
#[derive(Debug)]
pub(super) struct RequestBody {
    /// `None`: no body (a request sent again to the next server of a group).
    inner: Option<Incoming>,
    sent: Option<oneshot::Sender<()>>,
    /// `max_body_size` and how much has arrived so far.
    limit: Option<(u64, u64)>,
    /// Set on routes with a `send_timeout`: when the upstream was handed a piece it has not taken.
    send_clock: Option<std::sync::Arc<super::upstream::SendClock>>,
}

/// Why a forwarded request body ended early.
#[derive(Debug, thiserror::Error)]
pub(super) enum BodyError {
    /// Reading the client's body failed.
    #[error(transparent)]
    Client(#[from] hyper::Error),
    /// The client sent more than the route's `max_body_size`.
    #[error("the request body is larger than max_body_size ({limit} bytes)")]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
}

/// Whether a failed upstream request failed because its body went over `max_body_size`.
pub(super) fn exceeded_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(cause) = source {
        if matches!(
            cause.downcast_ref::<BodyError>(),
            Some(BodyError::TooLarge { .. })
        ) {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Completes when the request body has been sent in full (or dropped, e.g. because the upstream
/// answered without reading it, or the request failed).
pub(super) struct BodySent(Option<oneshot::Receiver<()>>);

impl BodySent {
    /// Waits until the body is sent or dropped.
    pub(super) async fn wait(self) {
        if let Some(receiver) = self.0 {
            // An error means the body was dropped unsent: nothing more will be sent either way.
            let _ = receiver.await;
        }
    }
}

impl RequestBody {
    pub(super) fn new(inner: Incoming) -> (Self, BodySent) {
        if inner.is_end_stream() {
            return (Self::empty(), BodySent(None));
        }
        let (sender, receiver) = oneshot::channel();
        let body = Self {
            inner: Some(inner),
            sent: Some(sender),
            limit: None,
            send_clock: None,
        };
        (body, BodySent(Some(receiver)))
    }

    /// A body with nothing in it, sent in full at once.
    pub(super) fn empty() -> Self {
        Self {
            inner: None,
            sent: None,
            limit: None,
            send_clock: None,
        }
    }

    /// This body, failing once more than `limit` bytes have arrived (`None`: no limit).
    pub(super) fn with_limit(mut self, limit: Option<u64>) -> Self {
        self.limit = limit.map(|limit| (limit, 0));
        self
    }

    /// This body, telling `clock` when the upstream is slow to take its pieces.
    pub(super) fn with_send_clock(
        mut self,
        clock: std::sync::Arc<super::upstream::SendClock>,
    ) -> Self {
        self.send_clock = Some(clock);
        self
    }

    fn signal_sent(&mut self) {
        if let Some(sender) = self.sent.take() {
            let _ = sender.send(());
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(clock) = &this.send_clock {
            clock.taken();
        }
        let polled = Pin::new(&mut *inner)
            .poll_frame(cx)
            .map_err(BodyError::from);
        if let (Poll::Ready(Some(Ok(frame))), Some((limit, seen))) = (&polled, &mut this.limit) {
            let length = frame.data_ref().map_or(0, |data| data.len() as u64);
            *seen = seen.saturating_add(length);
            if *seen > *limit {
                let limit = *limit;
                return Poll::Ready(Some(Err(BodyError::TooLarge { limit })));
            }
        }
        if let (Some(clock), Poll::Ready(Some(Ok(_)))) = (&this.send_clock, &polled) {
            if !inner.is_end_stream() {
                clock.handed();
            }
        }
        let sent = match &polled {
            Poll::Ready(None) => true,
            // hyper stops polling a body once it reports its end, so check after every frame.
            Poll::Ready(Some(Ok(_))) => inner.is_end_stream(),
            _ => false,
        };
        if sent {
            this.signal_sent();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint)
    }
}
