//! Slowloris against `certd run`: 500 slow sockets at once — a ClientHello or request headers trickled
//! a byte at a time, nothing sent at all, or a connection left idle after one request, on :443 and on
//! :80. Each must be cut off by its deadline (`[limits] header_read_timeout` and `idle_timeout` on
//! :443; the plain-HTTP listener's own 10 s on :80) while normal clients on both ports keep getting
//! answers within a bound.

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
