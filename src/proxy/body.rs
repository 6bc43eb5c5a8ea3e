//! The request body forwarded to an upstream: the client's body streamed through unchanged, telling
//! the proxy when it has been sent in full, so that the response timeout counts from then (like
//! nginx's `proxy_read_timeout`) and a long upload is not mistaken for a slow upstream.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::oneshot;

/// The client's body, forwarded frame by frame.
#[derive(Debug)]
pub(super) struct RequestBody {
    inner: Incoming,
    sent: Option<oneshot::Sender<()>>,
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
            return (Self { inner, sent: None }, BodySent(None));
        }
        let (sender, receiver) = oneshot::channel();
        let body = Self {
            inner,
            sent: Some(sender),
        };
        (body, BodySent(Some(receiver)))
    }

    fn signal_sent(&mut self) {
        if let Some(sender) = self.sent.take() {
            let _ = sender.send(());
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.signal_sent(),
            // hyper stops polling a body once it reports its end, so check after every frame.
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.signal_sent(),
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
