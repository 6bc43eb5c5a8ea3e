//! What `certd run` serves: ordering at start, the reverse proxy over HTTP/1.1 and HTTP/2 (Host and
//! `X-Forwarded-*`, hop-by-hop headers), websockets, static files with ranges, error pages, upstream
//! failures (502, 504), the port 80 redirect, and refusing unknown or missing SNI.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::header::{CONNECTION, CONTENT_RANGE, CONTENT_TYPE, HOST, LOCATION, RANGE};
use hyper::{Request, StatusCode};
use rustls_pki_types::ServerName;
use tokio_tungstenite::tungstenite::Message;

use super::{next_message, World, CERT_WAIT};
use crate::harness::{
    der_serial, dns, free_port, http_get, normalize_serial, serial_hex, status_site, Alpn, Certd,
    Handshake, Pebble, Refused, RunConfig, Site, TlsVersions, Upstream,
};

/// Asserts that a handshake was refused by the server with a TLS alert before it presented any
/// certificate (so no other site's certificate was served).
#[track_caller]
fn assert_refused_without_certificate(result: Result<Handshake, Refused>, what: &str) {
    match result {
        Ok(handshake) => panic!(
            "{what}: the handshake succeeded with serial {}",
            handshake.serial
        ),
        Err(refused) => {
            assert!(
                refused.presented.is_none(),
                "{what}: the server presented a certificate (serial {}) before the handshake failed: {}",
                refused.presented.as_ref().map(der_serial).unwrap_or_default(),
                refused.error
            );
            assert!(
                refused.error.to_string().contains("alert"),
                "{what}: expected the server to refuse with an alert, got: {}",
                refused.error
            );
        }
    }
}

/// A static file's bytes: no byte repeats within 251, so a wrong range shows.
fn static_content() -> Vec<u8> {
    (0..300u32).map(|i| (i * 7 % 251) as u8).collect()
}

#[tokio::test]
async fn orders_at_start_and_proxies_over_http1_and_http2() {
    let pebble = Pebble::start().await;
    let upstream = Upstream::echo().await;
    let config = RunConfig::for_pebble(
        &pebble,
        vec![Site::new(&["a.test", "www.a.test"]).proxy("/", &upstream.url())],
    );
    let world = World::serve(pebble, Certd::new(), config).await;

    // The state directory was empty: the daemon orders at start, and serves once it has the pair.
    let serial = world.client.wait_for_certificate("a.test", CERT_WAIT).await;
    assert_eq!(
        world.client.serial("www.a.test").await.expect("www.a.test"),
        serial,
        "one certificate covers both names"
    );
    assert_eq!(
        serial_hex(&world.certd.read_site_file("a.test", "cert.pem")),
        serial,
        "the daemon serves the stored certificate"
    );

    // HTTP/1.1: Host as sent, X-Forwarded-* set, hop-by-hop headers dropped, keep-alive works.
    let host = world.authority("a.test");
    let mut h1 = world.client.http1("a.test").await;
    let request = Request::get("/hello/world?x=1&y=two")
        .header(HOST, &host)
        .header(CONNECTION, "keep-alive, x-hop")
        .header("x-hop", "dropped")
        .header("keep-alive", "timeout=5")
        .header("x-custom", "kept")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let echoed = h1.send(request).await.echoed();
    assert_eq!(echoed.method, "GET");
    assert_eq!(echoed.path, "/hello/world?x=1&y=two");
    assert_eq!(echoed.header("host"), host, "{echoed:#?}");
    assert_eq!(echoed.header("x-forwarded-for"), "127.0.0.1", "{echoed:#?}");
    assert_eq!(echoed.header("x-forwarded-proto"), "https", "{echoed:#?}");
    assert_eq!(echoed.header("x-forwarded-host"), host, "{echoed:#?}");
    assert_eq!(echoed.header("x-custom"), "kept", "{echoed:#?}");
    for hop in ["x-hop", "keep-alive"] {
        assert!(
            !echoed.headers.contains_key(hop),
            "{hop} must not reach the upstream: {echoed:#?}"
        );
    }
    let again = h1.get(&host, "/second").await.echoed();
    assert_eq!(
        again.path, "/second",
        "a second request on the same connection"
    );
    assert_eq!(upstream.received(), 2);

    // HTTP/2 (ALPN h2): the authority becomes Host; the upstream is spoken to over HTTP/1.1.
    let mut h2 = world.client.http2("www.a.test").await;
    assert_eq!(h2.serial, serial);
    let www = world.authority("www.a.test");
    let request = Request::get(format!("https://{www}/over/h2?z=3"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let echoed = h2.send(request).await.echoed();
    assert_eq!(echoed.path, "/over/h2?z=3");
    assert_eq!(echoed.version, "HTTP/1.1");
    assert_eq!(echoed.header("host"), www, "{echoed:#?}");
    assert_eq!(echoed.header("x-forwarded-host"), www, "{echoed:#?}");
    assert_eq!(echoed.header("x-forwarded-proto"), "https", "{echoed:#?}");
    assert_eq!(echoed.header("x-forwarded-for"), "127.0.0.1", "{echoed:#?}");

    // Forwarding headers a client sends cannot spoof the scheme, host or address (the client is no
    // trusted proxy: see run::identity). HTTP/2's split cookies reach the HTTP/1.1 upstream as one
    // header.
    let request = Request::get(format!("https://{www}/spoof"))
        .header("x-forwarded-proto", "http")
        .header("x-forwarded-host", "evil.test")
        .header("x-forwarded-for", "203.0.113.9")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let echoed = h2.send(request).await.echoed();
    assert_eq!(echoed.header("x-forwarded-proto"), "https", "{echoed:#?}");
    assert_eq!(echoed.header("x-forwarded-host"), www, "{echoed:#?}");
    assert_eq!(echoed.header("x-forwarded-for"), "127.0.0.1", "{echoed:#?}");
    assert_eq!(echoed.header("cookie"), "a=1; b=2", "{echoed:#?}");

    // The access log names the request.
    world
        .daemon
        .wait_for_log("/over/h2?z=3", Duration::from_secs(5))
        .await;
    assert!(
        world.daemon.log().contains("certd::access"),
        "{}",
        world.daemon.log()
    );

    // `certd status` reads the state while the daemon holds the lock.
    let status = world.certd.status().await;
    let entry = status_site(&status, "a.test");
    assert_eq!(
        entry["serial"].as_str().map(normalize_serial).as_deref(),
        Some(serial.as_str()),
        "{entry:#}"
    );
    assert!(entry["last_error"].is_null(), "{entry:#}");
    assert_eq!(world.pebble.issued_count(), 1);
}

#[tokio::test]
async fn tunnels_websockets_to_their_route() {
    let pebble = Pebble::start().await;
    let upstream = Upstream::echo().await;
    let ws_upstream = Upstream::websocket_echo().await;
    let config = RunConfig::for_pebble(
        &pebble,
        vec![Site::new(&["a.test"])
            .proxy("/", &upstream.url())
            .proxy("/ws", &ws_upstream.url())],
    );
    let world = World::serve(pebble, Certd::new(), config).await;
    world.client.wait_for_certificate("a.test", CERT_WAIT).await;

    let host = world.authority("a.test");
    let tls = world.client.handshake("a.test", Alpn::Http1).await;
    let (mut socket, response) =
        tokio_tungstenite::client_async(format!("wss://{host}/ws/chat?room=1"), tls.stream)
            .await
            .expect("websocket handshake through certd");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);

    // The upstream's first message describes the upgrade request it received.
    let hello = next_message(&mut socket).await;
    let hello: serde_json::Value =
        serde_json::from_str(hello.to_text().expect("text")).expect("JSON hello");
    assert_eq!(hello["path"], "/ws/chat?room=1", "{hello:#}");
    assert_eq!(hello["headers"]["host"][0], host.as_str(), "{hello:#}");
    assert_eq!(
        hello["headers"]["x-forwarded-proto"][0], "https",
        "{hello:#}"
    );
    assert_eq!(
        hello["headers"]["x-forwarded-for"][0], "127.0.0.1",
        "{hello:#}"
    );

    let messages = [
        Message::text("one"),
        Message::binary(vec![0u8, 1, 2, 254, 255]),
        Message::text("three ✓"),
        Message::text("x".repeat(70_000)),
    ];
    for message in &messages {
        socket.send(message.clone()).await.expect("send");
    }
    for message in &messages {
        assert_eq!(&next_message(&mut socket).await, message);
    }

    socket.close(None).await.expect("close");
    let answer = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("the close is answered within 5 s");
    assert!(
        matches!(answer, Some(Ok(Message::Close(_))) | None),
        "expected the close to be answered, got {answer:?}"
    );
    assert_eq!(ws_upstream.received(), 1);
    assert_eq!(upstream.received(), 0, "the /ws route must win over /");
}

#[tokio::test]
async fn serves_static_ranges_error_pages_and_upstream_failures() {
    let pebble = Pebble::start().await;
    let slow = Upstream::slow(Duration::from_secs(5)).await;
    let certd = Certd::new();
    let www = certd.dir().join("www");
    std::fs::create_dir_all(www.join("static")).expect("mkdir www/static");
    let content = static_content();
    std::fs::write(www.join("static/a.txt"), &content).expect("write a.txt");
    let page = "<h1>back soon</h1>\n";
    std::fs::write(www.join("50x.html"), page).expect("write 50x.html");
    let nothing_listens = format!("http://127.0.0.1:{}", free_port());
    let config = RunConfig::for_pebble(
        &pebble,
        vec![
            Site::new(&["a.test"])
                .proxy("/", &nothing_listens)
                .proxy("/slow", &slow.url())
                .root("/static/", "www")
                .error_page(502, "www/50x.html"),
            Site::new(&["b.test"]).proxy("/", &nothing_listens),
        ],
    )
    .limit("upstream_response_timeout", "\"1s\"");
    let world = World::serve(pebble, certd, config).await;
    world.client.wait_for_certificate("a.test", CERT_WAIT).await;
    world.client.wait_for_certificate("b.test", CERT_WAIT).await;
    let host = world.authority("a.test");
    let mut h1 = world.client.http1("a.test").await;

    // nginx root semantics: /static/a.txt is <config dir>/www/static/a.txt.
    let whole = h1.get(&host, "/static/a.txt").await;
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(whole.body.as_ref(), &content[..]);

    let ranged = |range: &str| {
        Request::get("/static/a.txt")
            .header(HOST, &host)
            .header(RANGE, range)
            .body(Full::new(Bytes::new()))
            .expect("request")
    };
    let reply = h1.send(ranged("bytes=10-19")).await;
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT, "{reply:?}");
    assert_eq!(reply.body.as_ref(), &content[10..20]);
    assert_eq!(reply.header("content-range"), Some("bytes 10-19/300"));
    assert_eq!(reply.header("content-length"), Some("10"));

    let reply = h1.send(ranged("bytes=-7")).await;
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT, "{reply:?}");
    assert_eq!(reply.body.as_ref(), &content[293..]);
    assert_eq!(
        reply.headers.get(CONTENT_RANGE).map(|v| v.as_bytes()),
        Some(&b"bytes 293-299/300"[..])
    );

    let reply = h1.send(ranged("bytes=400-500")).await;
    assert_eq!(reply.status, StatusCode::RANGE_NOT_SATISFIABLE, "{reply:?}");

    assert_eq!(
        h1.get(&host, "/static/missing.txt").await.status,
        StatusCode::NOT_FOUND
    );

    // Upstream down: 502 with the site's error page.
    let reply = h1.get(&host, "/down").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{reply:?}");
    assert_eq!(reply.text(), page);
    assert!(
        reply
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/html")),
        "{reply:?}"
    );
    // A site without error pages gets certd's own 502.
    let mut b = world.client.http1("b.test").await;
    let reply = b.get(&world.authority("b.test"), "/down").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{reply:?}");
    assert_ne!(reply.text(), page);

    // Upstream too slow: 504 after upstream_response_timeout.
    let started = Instant::now();
    let reply = h1.get(&host, "/slow").await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{reply:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "504 must come after the 1 s timeout, not the 5 s answer: {:?}",
        started.elapsed()
    );
    assert_eq!(slow.received(), 1);
}

#[tokio::test]
async fn port_80_redirects_configured_names_and_404s_the_rest() {
    let pebble = Pebble::start().await;
    let http_port = pebble.http_port;
    let config = RunConfig::for_pebble(
        &pebble,
        vec![Site::new(&["a.test", "www.a.test"]).proxy("/", "http://127.0.0.1:9")],
    );
    let world = World::serve(pebble, Certd::new(), config).await;
    let https_port = world.config.https_port;

    let reply = http_get(http_port, "a.test", "/x?y=1").await;
    assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY, "{reply:?}");
    assert_eq!(
        reply.header(LOCATION.as_str()),
        Some(format!("https://a.test:{https_port}/x?y=1").as_str())
    );

    // The Host's own port (and case) do not leak into the redirect.
    let reply = http_get(http_port, &format!("WWW.A.test:{http_port}"), "/deep/path").await;
    assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY, "{reply:?}");
    assert_eq!(
        reply.header(LOCATION.as_str()),
        Some(format!("https://www.a.test:{https_port}/deep/path").as_str())
    );

    let reply = http_get(http_port, "other.test", "/x?y=1").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{reply:?}");
    assert!(reply.header(LOCATION.as_str()).is_none(), "{reply:?}");

    let reply = http_get(
        http_port,
        "a.test",
        "/.well-known/acme-challenge/no-such-token",
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{reply:?}");
}

#[tokio::test]
async fn unknown_or_missing_sni_is_refused() {
    let pebble = Pebble::start().await;
    let config = RunConfig::for_pebble(
        &pebble,
        vec![Site::new(&["a.test"]).proxy("/", "http://127.0.0.1:9")],
    );
    let world = World::serve(pebble, Certd::new(), config).await;
    let serial = world.client.wait_for_certificate("a.test", CERT_WAIT).await;

    for versions in [TlsVersions::Any, TlsVersions::Tls12] {
        let served = world
            .client
            .try_handshake(dns("a.test"), Alpn::Http1, versions)
            .await
            .unwrap_or_else(|refused| panic!("a.test over {versions:?}: {refused:?}"));
        assert_eq!(served.serial, serial);
        if versions == TlsVersions::Tls12 {
            assert_eq!(served.version, rustls::ProtocolVersion::TLSv1_2);
        }
        assert_refused_without_certificate(
            world
                .client
                .try_handshake(dns("nope.test"), Alpn::Http1, versions)
                .await,
            &format!("SNI nope.test over {versions:?}"),
        );
        // rustls sends no SNI for an IP address.
        let no_sni = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
        assert_refused_without_certificate(
            world
                .client
                .try_handshake(no_sni, Alpn::Http1, versions)
                .await,
            &format!("no SNI over {versions:?}"),
        );
    }
}
