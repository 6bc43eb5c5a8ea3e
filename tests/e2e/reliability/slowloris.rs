//! Slowloris against `certd run`: 500 slow sockets at once — a ClientHello or request headers trickled
//! a byte at a time, nothing sent at all, or a connection left idle after one request, on :443 and on
//! :80. Each must be cut off by its deadline (`[limits] header_read_timeout` and `idle_timeout` on
//! :443; the plain-HTTP listener's own 10 s on :80) while normal clients on both ports keep getting
//! answers within a bound.
//!
//! On HTTP/1.1 hyper's own header timer also cuts an idle keep-alive connection, so the slowloris test
//! cannot tell the idle timeout from it. The idle timeout itself (certd's timer in
//! `src/daemon/https.rs`) is tested over HTTP/2, with an idle timeout far below the header timeout: an
//! idle connection is closed one idle timeout after its last answer and not before, and a connection
//! whose request waits for a slow upstream is not idle.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{open_files_limit, raw_http, static_site, status_of, write_file, Served};
use crate::harness::{dns, Alpn, Certd, Pebble, RunConfig};

/// `[limits] header_read_timeout` for the slowloris test.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(4);
/// `[limits] idle_timeout` for the slowloris test.
const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// The plain-HTTP listener's own header deadline (fixed in `src/challenge.rs`, not configurable).
const PORT_80_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How much later than its deadline a slow socket may be cut off (a loaded CI machine).
const CUT_SLACK: Duration = Duration::from_secs(4);
/// One byte per this long.
const TRICKLE_EVERY: Duration = Duration::from_millis(250);
/// A normal request (fresh connection, TLS handshake and a GET) must be answered within this, even
/// under attack.
const NORMAL_BOUND: Duration = Duration::from_secs(3);

/// One kind of slow socket.
struct Attack {
    what: &'static str,
    /// How many of them.
    count: usize,
    /// The plain-HTTP port rather than the HTTPS one.
    port_80: bool,
    /// Complete a TLS handshake first.
    tls: bool,
    /// Sent at once (a whole request, for a connection that then idles).
    at_once: Vec<u8>,
    /// Then sent a byte at a time.
    trickled: Vec<u8>,
    /// The server must have cut it off this long after it started.
    cut_by: Duration,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_sockets_are_cut_off_while_normal_clients_are_served() {
    let started = Instant::now();
    let pebble = Pebble::start().await;
    let certd = Certd::new();
    write_file(&certd.dir().join("www/index.html"), b"hello\n");
    let config = RunConfig::for_pebble(&pebble, vec![static_site("a.test", "www")])
        .limit("header_read_timeout", "\"4s\"")
        .limit("idle_timeout", "\"3s\"");
    let served = Served::start(pebble, certd, config, &[]).await;
    let https = served.config.https_addr();
    let http = served.config.base.listen[0];

    let mut slow_headers = b"GET /index.html HTTP/1.1\r\nHost: a.test\r\nX-Slow: ".to_vec();
    slow_headers.extend(std::iter::repeat_n(b'a', 4096));
    let whole_request = b"GET /index.html HTTP/1.1\r\nHost: a.test\r\n\r\n".to_vec();
    let attacks = [
        Attack {
            what: "a ClientHello trickled on :443",
            count: 180,
            port_80: false,
            tls: false,
            at_once: Vec::new(),
            trickled: client_hello_bytes("a.test"),
            cut_by: HEADER_READ_TIMEOUT + CUT_SLACK,
        },
        Attack {
            what: "headers trickled over TLS on :443",
            count: 180,
            port_80: false,
            tls: true,
            at_once: Vec::new(),
            trickled: slow_headers.clone(),
            cut_by: HEADER_READ_TIMEOUT + CUT_SLACK,
        },
        Attack {
            what: "nothing sent on :443",
            count: 20,
            port_80: false,
            tls: false,
            at_once: Vec::new(),
            trickled: Vec::new(),
            cut_by: HEADER_READ_TIMEOUT + CUT_SLACK,
        },
        Attack {
            what: "idle over TLS after one request on :443",
            count: 20,
            port_80: false,
            tls: true,
            at_once: whole_request.clone(),
            trickled: Vec::new(),
            cut_by: IDLE_TIMEOUT.max(HEADER_READ_TIMEOUT) + CUT_SLACK,
        },
        Attack {
            what: "headers trickled on :80",
            count: 60,
            port_80: true,
            tls: false,
            at_once: Vec::new(),
            trickled: slow_headers,
            cut_by: PORT_80_HEADER_TIMEOUT + CUT_SLACK,
        },
        Attack {
            what: "nothing sent on :80",
            count: 20,
            port_80: true,
            tls: false,
            at_once: Vec::new(),
            trickled: Vec::new(),
            cut_by: PORT_80_HEADER_TIMEOUT + CUT_SLACK,
        },
        Attack {
            what: "idle after one request on :80",
            count: 20,
            port_80: true,
            tls: false,
            at_once: whole_request,
            trickled: Vec::new(),
            cut_by: PORT_80_HEADER_TIMEOUT + CUT_SLACK,
        },
    ];
    let total: usize = attacks.iter().map(|attack| attack.count).sum();
    // Each slow socket costs a descriptor here and one in certd.
    if let Some(limit) = open_files_limit() {
        assert!(
            limit >= 2 * total as u64 + 200,
            "the open files limit ({limit}) is too low for {total} slow sockets"
        );
    }

    // Open every slow socket; each task reports when the server cut it off.
    let open = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let setup = Instant::now();
    for (index, attack) in attacks.iter().enumerate() {
        for _ in 0..attack.count {
            let open = open.clone();
            let client = served.client.clone();
            let (tls, port_80) = (attack.tls, attack.port_80);
            let (at_once, trickled) = (attack.at_once.clone(), attack.trickled.clone());
            tasks.spawn(async move {
                let cut = if tls {
                    let stream = client.handshake("a.test", Alpn::Http1).await.stream;
                    open.fetch_add(1, Ordering::SeqCst);
                    trickle(stream, &at_once, &trickled).await
                } else {
                    let addr = if port_80 { http } else { https };
                    let stream = TcpStream::connect(addr).await.expect("connect slow socket");
                    open.fetch_add(1, Ordering::SeqCst);
                    trickle(stream, &at_once, &trickled).await
                };
                open.fetch_sub(1, Ordering::SeqCst);
                (index, cut)
            });
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while open.load(Ordering::SeqCst) < total * 9 / 10 {
        assert!(
            Instant::now() < deadline,
            "only {} of {total} slow sockets got going",
            open.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let setup_took = setup.elapsed();

    // Under attack, normal clients are still answered within the bound, on both ports.
    let under_attack = open.load(Ordering::SeqCst);
    let mut slowest = Duration::ZERO;
    for round in 0..10 {
        let begun = Instant::now();
        let reply = tokio::time::timeout(NORMAL_BOUND, async {
            let mut h1 = served.client.http1("a.test").await;
            h1.get(&served.authority("a.test"), "/index.html").await
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "a normal request took over {NORMAL_BOUND:?} with {} slow sockets open",
                open.load(Ordering::SeqCst)
            )
        });
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        assert_eq!(reply.text(), "hello\n");
        if round % 3 == 0 {
            let reply = tokio::time::timeout(NORMAL_BOUND, raw_http(http, "a.test", "/"))
                .await
                .unwrap_or_else(|_| panic!("a normal :80 request took over {NORMAL_BOUND:?}"));
            assert_eq!(status_of(&reply), Some(301), "{reply}");
        }
        slowest = slowest.max(begun.elapsed());
    }
    let still_open = open.load(Ordering::SeqCst);
    assert!(
        still_open >= total / 2,
        "the normal requests must run while the slow sockets are open (only {still_open} left)"
    );

    // Every slow socket is cut off by its deadline.
    let mut latest = vec![Duration::ZERO; attacks.len()];
    let mut problems = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (index, cut) = joined.expect("slow socket task");
        let attack = &attacks[index];
        match cut {
            Some(cut) if cut <= attack.cut_by => latest[index] = latest[index].max(cut),
            Some(cut) => problems.push(format!("{}: cut off only after {cut:?}", attack.what)),
            None => problems.push(format!("{}: never cut off", attack.what)),
        }
    }
    problems.dedup();
    assert!(
        problems.is_empty(),
        "slow sockets outlived their deadlines:\n{}",
        problems.join("\n")
    );
    let mut h1 = served.client.http1("a.test").await;
    assert_eq!(h1.get("a.test", "/index.html").await.status, StatusCode::OK);
    let cut_offs: Vec<String> = attacks
        .iter()
        .zip(&latest)
        .map(|(attack, latest)| {
            format!(
                "{} x{}: last cut off after {latest:?}",
                attack.what, attack.count
            )
        })
        .collect();
    println!(
        "slowloris: {total} slow sockets up in {setup_took:?}; {under_attack} open while 10 normal \
         requests ran (slowest {slowest:?}); whole test {:?}\n  {}",
        started.elapsed(),
        cut_offs.join("\n  ")
    );
}

/// Writes `at_once`, then `trickled` one byte every [`TRICKLE_EVERY`], watching for the server to
/// close. Returns how long after the start the server cut the socket off, or `None` if it still had
/// not after 25 s.
async fn trickle<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    at_once: &[u8],
    trickled: &[u8],
) -> Option<Duration> {
    let start = Instant::now();
    if !at_once.is_empty() {
        let wrote = async {
            stream.write_all(at_once).await?;
            stream.flush().await
        };
        if wrote.await.is_err() {
            return Some(start.elapsed());
        }
    }
    let mut buf = [0u8; 1024];
    let mut next = 0;
    while start.elapsed() < Duration::from_secs(25) {
        if next < trickled.len() {
            let wrote = async {
                stream.write_all(&trickled[next..=next]).await?;
                stream.flush().await
            };
            if wrote.await.is_err() {
                return Some(start.elapsed());
            }
            next += 1;
        }
        match tokio::time::timeout(TRICKLE_EVERY, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            // A response, a 408 or an alert before the close: keep reading until it closes.
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    None
}

/// The bytes of a real TLS ClientHello for `name` (what a browser's first flight looks like).
pub(super) fn client_hello_bytes(name: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let mut connection =
        rustls::ClientConnection::new(Arc::new(config), dns(name)).expect("client connection");
    let mut bytes = Vec::new();
    while connection.wants_write() {
        connection.write_tls(&mut bytes).expect("write ClientHello");
    }
    bytes
}

/// `[limits] idle_timeout` for the HTTP/2 idle tests...
const H2_IDLE_TIMEOUT: Duration = Duration::from_secs(2);
/// ...far below `header_read_timeout`, so a close near [`H2_IDLE_TIMEOUT`] can only be the idle timer
/// (certd's own loop in `src/daemon/https.rs`; hyper's header timer covers HTTP/1.1 only).
const H2_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How late after the idle timeout the close may come (a loaded CI machine; it comes within a few
/// milliseconds when idle).
const H2_CLOSE_SLACK: Duration = Duration::from_millis(1500);
/// How much earlier than the idle timeout (measured by the client, from the last answer) the close may
/// come: the server's clock starts when it wrote the answer, a little before the client read it.
const H2_EARLY_SLACK: Duration = Duration::from_millis(300);

/// An HTTP/2 client connection whose end (GOAWAY and close by the server) the test can watch.
struct WatchedH2 {
    sender: hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>>,
    ended: tokio::task::JoinHandle<()>,
    authority: String,
}

impl WatchedH2 {
    async fn open(served: &Served, name: &str) -> Self {
        let handshake = served.client.handshake(name, Alpn::H2).await;
        assert_eq!(
            handshake.alpn.as_deref(),
            Some(&b"h2"[..]),
            "certd must choose h2"
        );
        let (sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(handshake.stream),
        )
        .await
        .expect("HTTP/2 client handshake");
        let ended = tokio::spawn(async move {
            let _ = connection.await;
        });
        Self {
            sender,
            ended,
            authority: served.authority(name),
        }
    }

    /// `GET path` on this connection: the status and body, or the error (a refused stream after a
    /// GOAWAY, a closed connection).
    async fn get(&mut self, path: &str) -> Result<(StatusCode, String), String> {
        use http_body_util::BodyExt;
        let request = hyper::Request::get(format!("https://{}{path}", self.authority))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request");
        let response = tokio::time::timeout(Duration::from_secs(20), async {
            self.sender.ready().await?;
            self.sender.send_request(request).await
        })
        .await
        .map_err(|_| format!("GET {path}: no answer within 20 s"))?
        .map_err(|err| format!("GET {path}: {err}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|err| format!("GET {path}: body: {err}"))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// Waits (at most `within`) for the server to end the connection; how long that took, or `None`.
    async fn wait_closed(&mut self, within: Duration) -> Option<Duration> {
        let start = Instant::now();
        tokio::time::timeout(within, &mut self.ended)
            .await
            .ok()
            .map(|_| start.elapsed())
    }
}

impl Drop for WatchedH2 {
    fn drop(&mut self) {
        self.ended.abort();
    }
}

/// A daemon serving `a.test` from files, with `/slow` proxied to `slow`, an idle timeout of
/// [`H2_IDLE_TIMEOUT`] and a header timeout of [`H2_HEADER_READ_TIMEOUT`].
async fn served_for_h2_idle(slow: &crate::harness::Upstream) -> Served {
    let pebble = Pebble::start().await;
    let certd = Certd::new();
    write_file(&certd.dir().join("www/index.html"), b"hello\n");
    let site = static_site("a.test", "www").proxy("/slow", &slow.url());
    let config = RunConfig::for_pebble(&pebble, vec![site])
        .limit(
            "header_read_timeout",
            &format!("\"{}s\"", H2_HEADER_READ_TIMEOUT.as_secs()),
        )
        .limit(
            "idle_timeout",
            &format!("\"{}s\"", H2_IDLE_TIMEOUT.as_secs()),
        );
    Served::start(pebble, certd, config, &[]).await
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout_and_not_before() {
    let slow = crate::harness::Upstream::slow(Duration::ZERO).await;
    let served = served_for_h2_idle(&slow).await;
    let mut h2 = WatchedH2::open(&served, "a.test").await;
    let opened = Instant::now();

    // Requests spaced by less than the idle timeout keep the connection open well past it: each one
    // starts the idle clock again.
    for _ in 0..4 {
        let reply = h2.get("/index.html").await.expect("served while in use");
        assert_eq!(reply, (StatusCode::OK, "hello\n".to_owned()));
        assert!(
            h2.wait_closed(H2_IDLE_TIMEOUT * 3 / 5).await.is_none(),
            "the connection was closed less than the idle timeout after a request"
        );
    }
    assert!(opened.elapsed() > H2_IDLE_TIMEOUT);

    // Then silence: the server ends each connection one idle timeout after its last answer. Several
    // connections, answered at different moments, so a timer that only fires by luck is caught.
    let mut idle = vec![h2];
    for _ in 0..4 {
        idle.push(WatchedH2::open(&served, "a.test").await);
    }
    let mut answered = Vec::new();
    for h2 in &mut idle {
        let reply = h2.get("/index.html").await.expect("served");
        assert_eq!(reply.0, StatusCode::OK);
        answered.push(Instant::now());
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let mut closes = Vec::new();
    for (index, (h2, answered)) in idle.iter_mut().zip(answered).enumerate() {
        let deadline = answered + H2_IDLE_TIMEOUT + H2_CLOSE_SLACK;
        let within = deadline.saturating_duration_since(Instant::now());
        let closed = h2.wait_closed(within).await.map(|_| answered.elapsed());
        let closed_after = closed.unwrap_or_else(|| {
            panic!(
                "idle HTTP/2 connection {index} was still open {:?} after its last answer \
                 (idle_timeout {H2_IDLE_TIMEOUT:?})",
                H2_IDLE_TIMEOUT + H2_CLOSE_SLACK
            )
        });
        assert!(
            closed_after + H2_EARLY_SLACK >= H2_IDLE_TIMEOUT,
            "connection {index} closed {closed_after:?} after its last answer, before \
             idle_timeout {H2_IDLE_TIMEOUT:?}"
        );
        assert!(
            h2.get("/index.html").await.is_err(),
            "a request on the closed connection must fail"
        );
        closes.push(closed_after);
    }
    println!("slowloris: idle HTTP/2 connections closed {closes:?} after their last answers");
}

#[tokio::test]
async fn an_http2_connection_waiting_for_its_upstream_is_not_idle() {
    let upstream_delay = H2_IDLE_TIMEOUT * 3;
    let slow = crate::harness::Upstream::slow(upstream_delay).await;
    let served = served_for_h2_idle(&slow).await;
    let mut h2 = WatchedH2::open(&served, "a.test").await;

    // One request waits for the slow upstream, moving no bytes for three idle timeouts.
    let mut waiting = h2.sender.clone();
    let request = hyper::Request::get(format!("https://{}/slow/wait", h2.authority))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let started = Instant::now();
    let slow_reply = tokio::spawn(async move {
        use http_body_util::BodyExt;
        let response = waiting.send_request(request).await?;
        let status = response.status();
        response.into_body().collect().await?;
        Ok::<_, hyper::Error>(status)
    });
    slow.wait_received(1, Duration::from_secs(10)).await;

    // Well past the idle timeout, the connection still takes new requests: no GOAWAY was sent.
    tokio::time::sleep(H2_IDLE_TIMEOUT * 2).await;
    assert!(
        slow.answered() == 0,
        "the upstream answered early; the test shows nothing"
    );
    let reply = h2
        .get("/index.html")
        .await
        .expect("a new request while one waits for its upstream (the idle timer must not fire)");
    assert_eq!(reply, (StatusCode::OK, "hello\n".to_owned()));

    // The waiting request gets its answer.
    let status = tokio::time::timeout(Duration::from_secs(20), slow_reply)
        .await
        .expect("the slow answer in time")
        .expect("slow request task")
        .expect("the slow request must be answered, not cut off");
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() >= upstream_delay);

    // Then, idle for real, it is closed.
    assert!(
        h2.wait_closed(H2_IDLE_TIMEOUT + H2_CLOSE_SLACK)
            .await
            .is_some(),
        "the connection was not closed once idle"
    );
}
