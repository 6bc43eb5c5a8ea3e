//! The metrics listener: serves `GET /metrics` over plain HTTP/1.1 to scrapers.
//!
//! Anyone who can reach the port can connect, so each connection is held ([`crate::http_server`]) to
//! what a scrape needs: the request headers within [`HEADER_TIMEOUT`] and [`MAX_HEADER_BYTES`] (which also closes a kept-alive connection that sits idle
//! that long), at most [`MAX_CONNECTIONS`] open at once (more are closed at accept), and at shutdown
//! every connection is closed as soon as its response in flight is written, so that a kept-alive
//! scraper does not hold the daemon for its whole grace period. The page is rendered on a blocking
//! thread: the certificate gauges read the state directory.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ScrapeSource;
use crate::http_server::ServeLimits;

/// How long a scraper may take to send a request's headers, counted from the connection (or the
/// previous response) on. Scrapers send theirs at once; this only ends slow or stuck clients, and
/// idle kept-alive connections (a scraper simply reconnects for its next scrape).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Metrics connections open at once. A Prometheus server holds one per target; this leaves room for
/// an HA pair, a second monitoring system and someone with curl, while a flood of connections costs
/// at most this many tasks.
const MAX_CONNECTIONS: usize = 16;
/// A scrape's request head is a few hundred bytes; this is the smallest buffer hyper takes.
const MAX_HEADER_BYTES: usize = 8192;

/// [`HEADER_TIMEOUT`] and [`MAX_CONNECTIONS`], other values in tests.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) header_timeout: Duration,
    pub(super) max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: HEADER_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown`; the connections end then too.
pub async fn serve(
    listener: TcpListener,
    render: ScrapeSource,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    serve_with(listener, render, Limits::default(), shutdown, tasks).await;
}

/// [`serve`] with `limits`.
pub(super) async fn serve_with(
    listener: TcpListener,
    render: ScrapeSource,
    limits: Limits,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let serve_limits = ServeLimits {
        header_read_timeout: limits.header_timeout,
        max_header_bytes: MAX_HEADER_BYTES,
        // The header timeout also ends a kept-alive connection idle that long.
        idle_timeout: None,
        // Finish the response in flight, if any, then close; an idle connection closes at once.
        drain_timeout: Some(limits.header_timeout),
        http2: false,
    };
    crate::http_server::accept_loop(
        listener,
        permits,
        shutdown.clone(),
        tasks,
        move |stream, _peer, permit| {
            let render = render.clone();
            let shutdown = shutdown.clone();
            async move {
                let _permit = permit;
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let render = render.clone();
                    async move { Ok::<_, Infallible>(respond(&request, render).await) }
                });
                crate::http_server::serve_connection(
                    TokioIo::new(stream),
                    service,
                    &serve_limits,
                    &shutdown,
                )
                .await;
            }
        },
    )
    .await;
}

async fn respond(request: &Request<Incoming>, render: ScrapeSource) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        let mut response = Response::new(Full::new(Bytes::from_static(b"see /metrics\n")));
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    }
    let format = super::Format::negotiate(request.headers());
    // Rendering reads the state directory (certificates and renewal records): not on an async
    // worker thread, where a slow disk would stall every task scheduled there.
    match tokio::task::spawn_blocking(move || render(format)).await {
        Ok(text) => {
            let mut response = Response::new(Full::new(Bytes::from(text)));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(format.content_type()),
            );
            response
        }
        Err(err) => {
            tracing::error!(%err, "rendering the metrics failed");
            let mut response = Response::new(Full::new(Bytes::from_static(
                b"rendering the metrics failed\n",
            )));
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            response
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Instant;

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    /// The listener on a free loopback port, rendering a fixed page.
    struct Server {
        addr: std::net::SocketAddr,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    }

    impl Server {
        async fn start(limits: Limits) -> Self {
            Self::start_rendering(limits, Arc::new(|_| "certd_up 1\n".to_owned())).await
        }

        async fn start_rendering(limits: Limits, render: ScrapeSource) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let shutdown = CancellationToken::new();
            let tasks = TaskTracker::new();
            tasks.spawn(serve_with(
                listener,
                render,
                limits,
                shutdown.clone(),
                tasks.clone(),
            ));
            Self {
                addr,
                shutdown,
                tasks,
            }
        }

        /// A kept-alive HTTP/1.1 client connection that has done one scrape.
        async fn scraped_connection(&self) -> hyper::client::conn::http1::SendRequest<String> {
            let tcp = TcpStream::connect(self.addr).await.unwrap();
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .unwrap();
            tokio::spawn(connection);
            let response = sender
                .send_request(
                    Request::get("/metrics")
                        .header("host", "127.0.0.1")
                        .body(String::new())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"certd_up 1\n");
            sender
        }
    }

    /// Whether the server closes `tcp` within `within`, while the client sends `trickle` one byte
    /// every 100 ms (nothing when empty).
    async fn closed_within(mut tcp: TcpStream, trickle: &[u8], within: Duration) -> bool {
        let (mut read, mut write) = tcp.split();
        let trickle = async {
            for byte in trickle {
                if write.write_all(&[*byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            std::future::pending::<()>().await;
        };
        let closed = async {
            let mut buf = [0u8; 1024];
            // A close may come with an error response first; read until EOF or reset.
            while let Ok(n @ 1..) = read.read(&mut buf).await {
                let _ = n;
            }
        };
        tokio::select! {
            () = trickle => unreachable!(),
            result = tokio::time::timeout(within, closed) => result.is_ok(),
        }
    }

    #[tokio::test]
    async fn a_kept_alive_scraper_does_not_delay_shutdown() {
        let server = Server::start(Limits::default()).await;
        let sender = server.scraped_connection().await;
        let started = Instant::now();
        server.shutdown.cancel();
        server.tasks.close();
        tokio::time::timeout(Duration::from_secs(2), server.tasks.wait())
            .await
            .expect("the kept-alive connection must be closed at shutdown");
        assert!(started.elapsed() < Duration::from_secs(2));
        // The server closed it; the client sees that too.
        tokio::time::timeout(Duration::from_secs(2), async {
            while !sender.is_closed() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the client sees the connection closed");
    }

    #[tokio::test]
    async fn slow_and_idle_clients_are_closed_after_the_header_timeout() {
        let limits = Limits {
            header_timeout: Duration::from_millis(500),
            ..Limits::default()
        };
        let server = Server::start(limits).await;
        // A slowloris: headers one byte every 100 ms, never finished.
        let slow = TcpStream::connect(server.addr).await.unwrap();
        let trickle =
            b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa";
        assert!(
            closed_within(slow, trickle, Duration::from_secs(3)).await,
            "a client trickling its headers must be closed"
        );
        // A client that connects and says nothing.
        let silent = TcpStream::connect(server.addr).await.unwrap();
        assert!(closed_within(silent, b"", Duration::from_secs(3)).await);
        // A kept-alive connection idle after a scrape.
        let sender = server.scraped_connection().await;
        tokio::time::timeout(Duration::from_secs(3), async {
            while !sender.is_closed() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("an idle kept-alive connection is closed after the header timeout");
    }

    #[tokio::test]
    async fn a_request_head_over_the_cap_is_refused() {
        let server = Server::start(Limits::default()).await;
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        let padding = "a".repeat(2 * MAX_HEADER_BYTES);
        let request = format!(
            "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: {padding}\r\nConnection: close\r\n\r\n"
        );
        // The server may stop reading before all of it: then the write fails, which is fine.
        let _ = tcp.write_all(request.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), tcp.read_to_end(&mut answer)).await;
        assert!(
            answer.starts_with(b"HTTP/1.1 431"),
            "a head over the cap must be refused, not scraped: {:?}",
            String::from_utf8_lossy(&answer)
        );
    }

    #[tokio::test]
    async fn connections_past_the_cap_are_closed() {
        let limits = Limits {
            max_connections: 2,
            ..Limits::default()
        };
        let server = Server::start(limits).await;
        let first = server.scraped_connection().await;
        let _second = server.scraped_connection().await;
        let third = TcpStream::connect(server.addr).await.unwrap();
        assert!(
            closed_within(third, b"", Duration::from_secs(2)).await,
            "a third connection must be closed at once"
        );
        // A freed place is taken again (the server notices the close a moment later).
        drop(first);
        let deadline = Instant::now() + Duration::from_secs(2);
        while !served(server.addr).await {
            assert!(Instant::now() < deadline, "the freed place is not reused");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether a one-off scrape on a new connection is answered.
    async fn served(addr: std::net::SocketAddr) -> bool {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let request = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        if tcp.write_all(request).await.is_err() {
            return false;
        }
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut answer)).await;
        answer.starts_with(b"HTTP/1.1 200 OK")
    }

    /// The test runtime has one thread: a render that blocked it would stall the other connection.
    #[tokio::test]
    async fn a_slow_render_does_not_stall_other_connections() {
        let render: ScrapeSource = Arc::new(|_| {
            // Stands in for a slow disk under the state directory.
            std::thread::sleep(Duration::from_millis(1500));
            "certd_up 1\n".to_owned()
        });
        let server = Server::start_rendering(Limits::default(), render).await;
        let addr = server.addr;
        let started = Instant::now();
        let slow = tokio::spawn(async move { served(addr).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await.unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 404"), "{answer:?}");
        assert!(
            started.elapsed() < Duration::from_millis(700),
            "another connection waited {:?} for a render",
            started.elapsed()
        );
        assert!(slow.await.unwrap(), "the slow scrape is answered too");
    }
}
