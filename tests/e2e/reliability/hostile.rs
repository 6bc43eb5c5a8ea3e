//! Hostile clients against `certd run` (slow ones are in `slowloris`): request headers over
//! `[limits] max_header_bytes`, more connections than `max_connections`, a ClientHello without SNI or
//! for an unknown name, garbage bytes on :443 and :80, and path traversal on static routes and the
//! challenge path. Each must hurt only its own connection, and no response may ever carry a byte from
//! outside the static root.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use super::slowloris::client_hello_bytes;
use super::{exchange, raw_http, static_site, status_of, write_file, Served};
use crate::harness::{dns, Alpn, Certd, Pebble, RunConfig, TlsVersions};

#[tokio::test]
async fn oversized_headers_get_431_and_connections_over_the_limit_are_closed() {
    let pebble = Pebble::start().await;
    let certd = Certd::new();
    write_file(&certd.dir().join("www/index.html"), b"hello\n");
    let config = RunConfig::for_pebble(&pebble, vec![static_site("a.test", "www")])
        .limit("max_header_bytes", "4096")
        .limit("max_connections", "20");
    let served = Served::start(pebble, certd, config, &[]).await;
    let host = served.authority("a.test");

    let with_header = |size: usize| {
        Request::get("/index.html")
            .header(hyper::header::HOST, &host)
            .header("x-filler", "a".repeat(size))
            .body(Full::new(Bytes::new()))
            .expect("request")
    };
    // Within the limit: served.
    let mut h1 = served.client.http1("a.test").await;
    let reply = h1.send(with_header(2048)).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "2 KiB of headers is within 4096 bytes"
    );
    drop(h1);

    // Over it, by a little and by a lot, on HTTP/1.1: 431. (Problems are collected, so that one
    // failing size does not hide what the others and the connection limit do.)
    let mut problems = Vec::new();
    for size in [6 * 1024, 12 * 1024, 64 * 1024] {
        let mut h1 = served.client.http1("a.test").await;
        let response = tokio::time::timeout(
            Duration::from_secs(10),
            h1.sender.send_request(with_header(size)),
        )
        .await
        .expect("an answer in time");
        match response {
            Ok(response) if response.status() == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {}
            Ok(response) => problems.push(format!(
                "HTTP/1.1 request with {size} bytes of headers (max_header_bytes = 4096) got {}, \
                 not 431",
                response.status()
            )),
            // The server answers 431 and closes while a client this far over is still sending: the
            // unread bytes make the close a reset, which may destroy the 431 on its way. Closed is
            // what matters.
            Err(_) if size >= 64 * 1024 => {}
            Err(err) => problems.push(format!(
                "HTTP/1.1 request with {size} bytes of headers: no 431, the connection failed: {err}"
            )),
        }
    }

    // Over it on HTTP/2: 431, or the stream refused; the connection stays usable either way.
    let mut h2 = served.client.http2("a.test").await;
    let uri = format!("https://{host}/index.html");
    let big = Request::get(&uri)
        .header("x-filler", "a".repeat(6 * 1024))
        .body(Full::new(Bytes::new()))
        .expect("request");
    match tokio::time::timeout(Duration::from_secs(10), h2.sender.send_request(big))
        .await
        .expect("an answer in time")
    {
        Ok(response) if response.status() == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {}
        Ok(response) => problems.push(format!(
            "HTTP/2 request with 6144 bytes of headers (max_header_bytes = 4096) got {}, not 431",
            response.status()
        )),
        Err(err) => println!("oversized headers over HTTP/2: stream refused ({err})"),
    }
    let small = Request::get(&uri)
        .body(Full::new(Bytes::new()))
        .expect("request");
    let reply = h2.send(small).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "the HTTP/2 connection still works"
    );
    drop(h2);

    // `max_connections = 20`: twenty idle sockets take every slot; the next connection is closed at
    // once; when they go, connections are served again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let addr = served.config.https_addr();
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(TcpStream::connect(addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let over = served.client.serial("a.test").await;
    assert!(
        over.is_err(),
        "a 21st connection must be closed while 20 are open"
    );
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(10);
    while served.client.serial("a.test").await.is_err() {
        assert!(
            Instant::now() < deadline,
            "connections are not served again after the idle ones closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test]
async fn refused_handshakes_and_garbage_close_only_their_own_connection() {
    let pebble = Pebble::start().await;
    let certd = Certd::new();
    write_file(&certd.dir().join("www/index.html"), b"hello\n");
    let config = RunConfig::for_pebble(&pebble, vec![static_site("a.test", "www")]);
    let served = Served::start(pebble, certd, config, &[]).await;
    let https = served.config.https_addr();
    let http = served.config.base.listen[0];
    let host = served.authority("a.test");

    // Connections that are open before the attacks and must still work after them.
    let mut before = served.client.http1("a.test").await;
    assert_eq!(
        before.get(&host, "/index.html").await.status,
        StatusCode::OK
    );
    let mut before_80 = plain_http1(http).await;
    let reply = before_80
        .send_request(plain_get("a.test", "/x"))
        .await
        .expect("port 80");
    assert_eq!(reply.status(), StatusCode::MOVED_PERMANENTLY);

    // No SNI, and a name certd does not serve: refused, and no certificate is shown.
    let no_sni = served
        .client
        .try_handshake(
            ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
            Alpn::Http1,
            TlsVersions::Any,
        )
        .await;
    let unknown = served
        .client
        .try_handshake(dns("unknown.test"), Alpn::Http1, TlsVersions::Tls12)
        .await;
    for (what, result) in [("no SNI", no_sni), ("unknown SNI", unknown)] {
        match result {
            Ok(handshake) => panic!("{what}: handshake succeeded, serial {}", handshake.serial),
            Err(refused) => assert!(
                refused.presented.is_none(),
                "{what}: a certificate was presented before the refusal ({})",
                refused.error
            ),
        }
    }

    // Garbage on :443 and :80: that connection is closed, promptly.
    let mut junk: Vec<u8> = (0..4096).map(|_| rand::random::<u8>()).collect();
    junk[0] = 0x16; // looks like a TLS handshake record, then nonsense
    let garbage: [(&str, SocketAddr, Vec<u8>); 6] = [
        ("random bytes on :443", https, junk.clone()),
        (
            "plain HTTP on :443",
            https,
            b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n".to_vec(),
        ),
        (
            "a TLS record claiming 16 MiB on :443",
            https,
            vec![0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0x00, 0x00],
        ),
        ("random bytes on :80", http, junk.clone()),
        (
            "a bad request line on :80",
            http,
            b"\x00\x01GARBAGE / HTTP/9.9\r\n\r\n".to_vec(),
        ),
        (
            "a TLS ClientHello on :80",
            http,
            client_hello_bytes("a.test"),
        ),
    ];
    for (what, addr, bytes) in garbage {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let (answer, closed) = exchange(&mut tcp, &bytes, Duration::from_secs(15)).await;
        assert!(closed, "{what}: the connection was not closed within 15 s");
        if let Some(status) = status_of(&answer) {
            assert!(
                (400..500).contains(&status),
                "{what}: answered {status}:\n{answer}"
            );
        }
    }

    // The connections opened before are still served, and so are new ones.
    let reply = before.get(&host, "/index.html").await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "the earlier HTTPS connection still works"
    );
    let reply = before_80
        .send_request(plain_get("a.test", "/y"))
        .await
        .expect("the earlier port 80 connection still works");
    assert_eq!(reply.status(), StatusCode::MOVED_PERMANENTLY);
    let mut after = served.client.http1("a.test").await;
    assert_eq!(after.get(&host, "/index.html").await.text(), "hello\n");
    let reply = raw_http(http, "a.test", "/z").await;
    assert_eq!(status_of(&reply), Some(301), "{reply}");
}

/// A keep-alive HTTP/1.1 client connection to the plain-HTTP listener.
async fn plain_http1(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let tcp = TcpStream::connect(addr).await.expect("connect to :80");
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
}

fn plain_get(host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header(hyper::header::HOST, host)
        .body(Full::new(Bytes::new()))
        .expect("request")
}

#[tokio::test]
async fn path_traversal_never_reads_outside_the_root() {
    let pebble = Pebble::start().await;
    let certd = Certd::new();
    let dir = certd.dir().to_path_buf();
    let secret = format!("SECRET-{:016x}", rand::random::<u64>());
    // Inside the site's root: what may be served.
    write_file(&dir.join("www/public/index.html"), b"public\n");
    write_file(&dir.join("www/public/static/ok.txt"), b"ok\n");
    // Outside it (the folder above the root, and the config folder): what must never be.
    write_file(&dir.join("www/secret.txt"), secret.as_bytes());
    write_file(&dir.join("secret.txt"), secret.as_bytes());
    // Symlinks inside the root that lead out of it.
    std::os::unix::fs::symlink("../../secret.txt", dir.join("www/public/static/link.txt"))
        .expect("symlink");
    std::os::unix::fs::symlink("../..", dir.join("www/public/static/up")).expect("symlink");
    let passwd_line = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|text| text.lines().next().map(str::to_owned))
        .filter(|line| !line.is_empty());

    let config = RunConfig::for_pebble(
        &pebble,
        vec![crate::harness::Site::new(&["a.test"])
            .root("/static/", "www/public")
            .root("/", "www/public")],
    );
    let served = Served::start(pebble, certd, config, &[]).await;
    let port = served.config.https_port;
    let http = served.config.base.listen[0];

    // The routes work.
    let mut h1 = served.client.http1("a.test").await;
    assert_eq!(h1.get("a.test", "/static/ok.txt").await.text(), "ok\n");

    let targets = [
        "/static/../secret.txt",
        "/static/../../secret.txt",
        "/static/../../../secret.txt",
        "/static/%2e%2e/secret.txt",
        "/static/%2E%2E/%2E%2E/secret.txt",
        "/static/.%2e/.%2e/secret.txt",
        "/static/..%2fsecret.txt",
        "/static/..%2f..%2fsecret.txt",
        "/static/%2e%2e%2f%2e%2e%2fsecret.txt",
        "/static/..%5c..%5csecret.txt",
        "/static/..\\..\\secret.txt",
        "/static/%252e%252e/%252e%252e/secret.txt",
        "/static/ok.txt%00/../../secret.txt",
        "/static/link.txt",
        "/static/up/secret.txt",
        "/static/up/up/secret.txt",
        "/static/up/",
        "/../secret.txt",
        "/..",
        "//etc/passwd",
        "/static//etc/passwd",
        "/static/../../../../../../../../etc/passwd",
        "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/.well-known/acme-challenge/../../secret.txt",
        "/.well-known/acme-challenge/%2e%2e/%2e%2e/secret.txt",
        "/.well-known/acme-challenge/..%2f..%2fsecret.txt",
    ];
    let absolute = [
        format!("https://a.test:{port}/static/../secret.txt"),
        format!("https://a.test:{port}/static/%2e%2e/%2e%2e/secret.txt"),
        "http://a.test/../../secret.txt".to_owned(),
        "http://a.test//etc/passwd".to_owned(),
        "file:///etc/passwd".to_owned(),
    ];
    let all: Vec<String> = targets
        .iter()
        .map(|target| (*target).to_owned())
        .chain(absolute)
        .collect();

    let leaks = |what: &str, response: &str| {
        assert!(
            !response.contains(&secret),
            "{what}: the secret outside the root was served:\n{response}"
        );
        if let Some(line) = &passwd_line {
            assert!(
                !response.contains(line.as_str()),
                "{what}: /etc/passwd was served:\n{response}"
            );
        }
    };
    let mut statuses = Vec::new();
    for target in &all {
        // Over HTTPS, raw, so the target reaches certd exactly as written.
        let mut tls = served.client.handshake("a.test", Alpn::Http1).await.stream;
        let request =
            format!("GET {target} HTTP/1.1\r\nHost: a.test:{port}\r\nConnection: close\r\n\r\n");
        let (response, _) = exchange(&mut tls, request.as_bytes(), Duration::from_secs(10)).await;
        leaks(&format!("https {target}"), &response);
        let status = status_of(&response);
        assert_ne!(
            status,
            Some(200),
            "https {target} answered 200:\n{response}"
        );
        // Over plain HTTP on :80: the challenge responder and the redirect.
        let response = raw_http(http, "a.test", target).await;
        leaks(&format!("http {target}"), &response);
        assert_ne!(
            status_of(&response),
            Some(200),
            "http {target}:\n{response}"
        );
        statuses.push(format!("{target} -> {status:?}"));
    }
    println!(
        "path traversal, HTTPS answers:\n  {}",
        statuses.join("\n  ")
    );
    // Still serving.
    let mut h1 = served.client.http1("a.test").await;
    assert_eq!(h1.get("a.test", "/index.html").await.text(), "public\n");
}
