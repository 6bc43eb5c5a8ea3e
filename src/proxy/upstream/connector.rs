//! The connector of the proxy's pooled client: TCP through hyper-util's `HttpConnector`, and unix
//! sockets for servers written `unix:/path`. A unix server is addressed by a synthetic host, the
//! hex of its path under `.unix.invalid` (`.invalid` never resolves, RFC 2606), so the client's
//! pool keeps one set of connections per socket and the path travels in the URI with no shared
//! map. The connect timeout is the route's own when the request runs inside
//! [`with_connect_timeout`], else the `[limits]` one.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpStream, UnixStream};

/// The suffix of the synthetic host of a unix socket server.
const UNIX_SUFFIX: &str = ".unix.invalid";

tokio::task_local! {
    /// The connect timeout of the route whose request is being sent.
    static CONNECT_TIMEOUT: Duration;
}

/// Runs `request` (a send on the proxy's client) with `timeout` as its connect timeout. The client
/// calls the connector from the task that polls the request, so the connector sees it.
pub(crate) async fn with_connect_timeout<F: Future>(
    timeout: Option<Duration>,
    request: F,
) -> F::Output {
    match timeout {
        Some(timeout) => CONNECT_TIMEOUT.scope(timeout, request).await,
        None => request.await,
    }
}

/// The synthetic authority (`<hex of path>.unix.invalid`) that routes a request to the unix
/// socket at `path`.
pub(crate) fn unix_authority(path: &Path) -> String {
    use std::fmt::Write as _;
    use std::os::unix::ffi::OsStrExt as _;
    let bytes = path.as_os_str().as_bytes();
    let mut host = String::with_capacity(bytes.len() * 2 + UNIX_SUFFIX.len());
    for byte in bytes {
        let _ = write!(host, "{byte:02x}");
    }
    host.push_str(UNIX_SUFFIX);
    host
}

/// The socket path a synthetic host names, if it is one.
fn unix_path(uri: &Uri) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStringExt as _;
    let hex = uri.host()?.strip_suffix(UNIX_SUFFIX)?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect();
    Some(PathBuf::from(std::ffi::OsString::from_vec(bytes?)))
}

/// Connects to TCP and unix socket upstreams.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamConnector {
    http: HttpConnector,
    connect_timeout: Duration,
}

impl UpstreamConnector {
    /// A connector whose connects time out after `connect_timeout` unless a route says otherwise.
    pub(crate) fn new(connect_timeout: Duration) -> Self {
        let mut http = HttpConnector::new();
        // The timeout is applied around the whole connect below, where a route can change it.
        http.set_connect_timeout(None);
        http.set_nodelay(true);
        Self {
            http,
            connect_timeout,
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn timed_out(timeout: Duration) -> BoxError {
    Box::new(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("connect timed out after {}ms", timeout.as_millis()),
    ))
}

impl tower_service::Service<Uri> for UpstreamConnector {
    type Response = UpstreamStream;
    type Error = BoxError;
    // Boxed like HttpConnector's own future; it is made once per new connection, not per request.
    type Future = Pin<Box<dyn Future<Output = Result<UpstreamStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower_service::Service::<Uri>::poll_ready(&mut self.http, cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let timeout = CONNECT_TIMEOUT
            .try_with(|timeout| *timeout)
            .unwrap_or(self.connect_timeout);
        if let Some(path) = unix_path(&uri) {
            return Box::pin(async move {
                match tokio::time::timeout(timeout, UnixStream::connect(&path)).await {
                    Ok(Ok(stream)) => Ok(UpstreamStream::Unix(TokioIo::new(stream))),
                    Ok(Err(error)) => Err(Box::new(io::Error::new(
                        error.kind(),
                        format!("unix socket {}: {error}", path.display()),
                    )) as BoxError),
                    Err(_) => Err(timed_out(timeout)),
                }
            });
        }
        let connecting = self.http.call(uri);
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(Ok(stream)) => Ok(UpstreamStream::Tcp(stream)),
                Ok(Err(error)) => Err(error.into()),
                Err(_) => Err(timed_out(timeout)),
            }
        })
    }
}

/// A connection to an upstream.
#[derive(Debug)]
pub(crate) enum UpstreamStream {
    /// Over TCP.
    Tcp(TokioIo<TcpStream>),
    /// Over a unix socket.
    Unix(TokioIo<UnixStream>),
}

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        match self {
            Self::Tcp(stream) => stream.connected(),
            Self::Unix(_) => Connected::new(),
        }
    }
}

impl Read for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::Unix(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl Write for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(stream) => Pin::new(stream).poll_write(cx, buf),
            Self::Unix(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(stream) => Pin::new(stream).poll_flush(cx),
            Self::Unix(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(stream) => Pin::new(stream).poll_shutdown(cx),
            Self::Unix(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(stream) => stream.is_write_vectored(),
            Self::Unix(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Self::Unix(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn unix_paths_round_trip_through_the_synthetic_host() {
        let path = Path::new("/run/app/php-fpm.sock");
        let uri: Uri = format!("http://{}/x?y", unix_authority(path))
            .parse()
            .unwrap();
        assert_eq!(unix_path(&uri).as_deref(), Some(path));
        let tcp: Uri = "http://127.0.0.1:8080/".parse().unwrap();
        assert_eq!(unix_path(&tcp), None);
        let odd: Uri = "http://abc.unix.invalid/".parse().unwrap();
        assert_eq!(unix_path(&odd), None);
    }
}
