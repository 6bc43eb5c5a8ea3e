//! Upstream faults: an upstream that closes in the middle of its response (headers or body), one that
//! resets the connection, one that never answers (`[limits] upstream_response_timeout = "1s"`), and a
//! port where nothing listens. The client gets 502 or 504 (or, once the body has started, a stream
//! that ends early, never a complete-looking response), the daemon keeps serving everything else, and
//! no file descriptor is left behind in certd.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::{fd_count, fd_listing, write_file, Served};
use crate::harness::{free_port, Certd, Pebble, RunConfig, Site, Upstream};

/// What a faulty upstream does once it has read a request's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Sends half a status line and headers, then closes.
    CloseInHeaders,
    /// Sends headers promising 100000 bytes and 1000 of them, then closes.
    CloseInBody,
    /// Resets the connection (SO_LINGER 0, then close).
    Reset,
    /// Keeps the connection open and never answers.
    Hang,
}

/// How many rounds of every fault the descriptor count is measured over.
const ROUNDS: usize = 8;

/// A listener on a free loopback port misbehaving with `fault` on every connection; aborted on drop.
struct FaultyUpstream {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl FaultyUpstream {
    async fn start(fault: Fault) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                connections.spawn(misbehave(stream, fault));
            }
        });
        Self { addr, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FaultyUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn misbehave(mut stream: TcpStream, fault: Fault) {
    // Read the request's headers (the requests here have no body).
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(4).any(|window| window == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    match fault {
        Fault::CloseInHeaders => {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Le").await;
        }
        Fault::CloseInBody => {
            let head =
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n";
            let _ = stream.write_all(head).await;
            let _ = stream.write_all(&[b'x'; 1000]).await;
            let _ = stream.flush().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Fault::Reset => {
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        }
        Fault::Hang => {
            // Hold the connection until certd gives up on it (it reads EOF then) or the test ends.
            let _ = stream.read(&mut buf).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    }
    drop(stream);
}

/// What a client got for one request.
#[derive(Debug)]
struct Got {
    status: Option<StatusCode>,
    /// Whether the whole body arrived (the response was complete).
    complete: bool,
    elapsed: Duration,
    error: Option<String>,
}

/// Sends `GET path` on a fresh HTTP/1.1 connection and reads the response whole, bounded.
async fn get_fresh(served: &Served, path: &str) -> Got {
    let started = Instant::now();
    let mut h1 = served.client.http1("a.test").await;
    let request = Request::get(path)
        .header(hyper::header::HOST, served.authority("a.test"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let sent = tokio::time::timeout(Duration::from_secs(15), async {
        let response = h1.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await;
        Ok::<_, hyper::Error>((status, body.map(|_| ())))
    })
    .await
    .unwrap_or_else(|_| panic!("GET {path}: no answer within 15 s"));
    let elapsed = started.elapsed();
    match sent {
        Ok((status, body)) => Got {
            status: Some(status),
            complete: body.is_ok(),
            elapsed,
            error: body.err().map(|err| err.to_string()),
        },
        Err(err) => Got {
            status: None,
            complete: false,
            elapsed,
            error: Some(err.to_string()),
        },
    }
}

/// Panics unless `got` is what a client should see when the upstream behind `path` fails.
#[track_caller]
fn assert_failed_cleanly(path: &str, got: &Got) {
    let expected: &[u16] = if path.starts_with("/hang/") {
        &[504]
    } else {
        &[502]
    };
    match got.status {
        Some(status) if expected.contains(&status.as_u16()) => {}
        // Once the upstream's 200 and part of its body are on their way, the only honest signal left is
        // a stream that ends early.
        Some(StatusCode::OK) if path.starts_with("/close-body/") => assert!(
            !got.complete,
            "GET {path}: a truncated upstream body reached the client as a complete response"
        ),
        _ => panic!("GET {path}: expected {expected:?}, got {got:?}"),
    }
    if path.starts_with("/hang/") {
        assert!(
            got.elapsed >= Duration::from_millis(900) && got.elapsed < Duration::from_secs(6),
            "GET {path}: 504 after {:?}, not after the 1 s upstream_response_timeout",
            got.elapsed
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_faults_give_502_or_504_and_leak_no_descriptors() {
    let started = Instant::now();
    let pebble = Pebble::start().await;
    let certd = Certd::new();
    write_file(&certd.dir().join("www/index.html"), b"static\n");
    let echo = Upstream::echo().await;
    let close_headers = FaultyUpstream::start(Fault::CloseInHeaders).await;
    let close_body = FaultyUpstream::start(Fault::CloseInBody).await;
    let reset = FaultyUpstream::start(Fault::Reset).await;
    let hang = FaultyUpstream::start(Fault::Hang).await;
    let refused = format!("http://127.0.0.1:{}", free_port());
    let site = Site::new(&["a.test"])
        .proxy("/ok/", &echo.url())
        .proxy("/close-head/", &close_headers.url())
        .proxy("/close-body/", &close_body.url())
        .proxy("/reset/", &reset.url())
        .proxy("/hang/", &hang.url())
        .proxy("/refused/", &refused)
        .root("/", "www");
    let config = RunConfig::for_pebble(&pebble, vec![site])
        .limit("upstream_response_timeout", "\"1s\"")
        .limit("upstream_connect_timeout", "\"1s\"");
    let mut served = Served::start(pebble, certd, config, &[]).await;
    let pid = served.daemon.pid();
    let faults = [
        "/close-head/x",
        "/close-body/x",
        "/reset/x",
        "/hang/x",
        "/refused/x",
    ];

    // Warm up (the pool holds a connection to the healthy upstream), close, settle, count.
    for _ in 0..3 {
        let got = get_fresh(&served, "/ok/warm").await;
        assert_eq!(got.status, Some(StatusCode::OK), "{got:?}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = fd_count(pid);
    let listing_before = fd_listing(pid);

    // Rounds of every fault at once, each on a fresh connection, with healthy requests beside them.
    let mut seen = Vec::new();
    for round in 0..ROUNDS {
        let results = futures_util::future::join_all(
            faults
                .iter()
                .chain(["/ok/beside", "/index.html"].iter())
                .map(|path| async { (*path, get_fresh(&served, path).await) }),
        )
        .await;
        for (path, got) in results {
            if round == 0 {
                seen.push(format!(
                    "{path}: {:?} after {:?}{}",
                    got.status,
                    got.elapsed,
                    got.error
                        .as_deref()
                        .map(|error| format!(", body: {error}"))
                        .unwrap_or_default()
                ));
            }
            match path {
                "/ok/beside" | "/index.html" => assert!(
                    got.status == Some(StatusCode::OK) && got.complete,
                    "GET {path} beside the faults: {got:?}"
                ),
                _ => assert_failed_cleanly(path, &got),
            }
        }
    }

    // The same faults as streams of one HTTP/2 connection, which must survive all of them.
    let mut h2 = served.client.http2("a.test").await;
    let authority = served.authority("a.test");
    let mut streams = JoinSet::new();
    for path in faults {
        let request = Request::get(format!("https://{authority}{path}"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let response = h2.sender.send_request(request);
        streams.spawn(async move {
            let started = Instant::now();
            let got = match tokio::time::timeout(Duration::from_secs(15), response).await {
                Ok(Ok(response)) => {
                    let status = response.status();
                    let body = response.into_body().collect().await;
                    Got {
                        status: Some(status),
                        complete: body.is_ok(),
                        elapsed: started.elapsed(),
                        error: body.err().map(|err| err.to_string()),
                    }
                }
                Ok(Err(err)) => Got {
                    status: None,
                    complete: false,
                    elapsed: started.elapsed(),
                    error: Some(err.to_string()),
                },
                Err(_) => panic!("HTTP/2 GET {path}: no answer within 15 s"),
            };
            (path, got)
        });
    }
    while let Some(joined) = streams.join_next().await {
        let (path, got) = joined.expect("stream task");
        assert_failed_cleanly(path, &got);
    }
    let request = Request::get(format!("https://{authority}/ok/after"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let reply = h2.send(request).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "the HTTP/2 connection survives its failed streams"
    );
    drop(h2);

    // The daemon is up and serving.
    assert!(
        served.daemon.try_wait().is_none(),
        "certd run exited:\n{}",
        served.daemon.log()
    );
    let got = get_fresh(&served, "/ok/after").await;
    assert_eq!(got.status, Some(StatusCode::OK), "{got:?}");

    // No descriptor left behind: back to where it was, give or take pooled upstream connections.
    let slack = 4;
    let settle = Instant::now();
    let mut after = fd_count(pid);
    while after > before + slack && settle.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        after = fd_count(pid);
    }
    assert!(
        after <= before + slack,
        "certd holds {after} descriptors after {ROUNDS} rounds of upstream faults, {before} before \
         (slack {slack})\n--- before ---\n{listing_before}\n--- after ---\n{}",
        fd_listing(pid)
    );
    println!(
        "upstream faults, HTTP/1.1 outcomes:\n  {}",
        seen.join("\n  ")
    );
    println!(
        "upstream faults: {} faulty requests over HTTP/1.1 and HTTP/2; certd descriptors {before} \
         before, {after} after ({:?} to settle); whole test {:?}",
        ROUNDS * faults.len() + faults.len(),
        settle.elapsed(),
        started.elapsed()
    );
    drop((close_headers, close_body, reset, hang, echo));
}
