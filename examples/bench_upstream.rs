//! The HTTP upstream of `bench/run.sh`: a tiny HTTP/1.1 keep-alive server on loopback that answers
//! every request with the same 1 KiB `text/plain` body, so that certd and nginx proxy to exactly the
//! same thing.
//!
//! ```text
//! cargo build --release --example bench_upstream
//! target/release/examples/bench_upstream 127.0.0.1:18080
//! ```
//!
//! It runs until killed. Two worker threads: the machine the benchmark was written for has two cores,
//! shared by the load generator, the proxy under test and this upstream.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The size of every response body.
const BODY_BYTES: usize = 1024;

fn main() -> anyhow::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .ok_or_else(|| {
            anyhow::anyhow!("usage: bench_upstream <listen address, e.g. 127.0.0.1:18080>")
        })?
        .parse()?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(serve(addr))
}

async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    let body = Bytes::from(vec![b'x'; BODY_BYTES]);
    eprintln!("bench_upstream: {BODY_BYTES}-byte answers on http://{addr}/");
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: transient, keep serving.
                eprintln!("bench_upstream: accept failed: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |_request: Request<Incoming>| {
                let body = body.clone();
                async move {
                    let response = Response::builder()
                        .header(hyper::header::CONTENT_TYPE, "text/plain")
                        .body(Full::new(body))
                        .expect("a static response is valid");
                    Ok::<_, Infallible>(response)
                }
            });
            // Errors here are clients going away mid-request; nothing to do about them.
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
