//! A route's `read_timeout` on the response body (nginx `proxy_read_timeout`): the upstream must
//! send the next piece of the body within the timeout of the previous one, or the response is cut
//! off (the client sees the connection reset, as with nginx, since the head has been sent).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

/// An upstream's response body with a deadline between two frames.
#[derive(Debug)]
pub(crate) struct ReadTimeoutBody {
    inner: Incoming,
    timeout: Duration,
    /// Boxed so the body stays `Unpin`; made once per response, only on routes with a read timeout.
    deadline: Pin<Box<Sleep>>,
}

impl ReadTimeoutBody {
    pub(crate) fn new(inner: Incoming, timeout: Duration) -> Self {
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
