//! Signals to `certd run`: SIGHUP reloads (sites added, changed and removed; an invalid configuration
//! refused), SIGTERM drains (requests and websockets in flight finish, bounded by the grace period),
//! and a restart serves the stored certificates at once.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::{Request, StatusCode};
use tokio_tungstenite::tungstenite::Message;

use super::{next_message, World, CERT_WAIT};
use crate::harness::{http_get, Alpn, Certd, Daemon, Pebble, RunConfig, Site, Upstream};

#[tokio::test]
async fn sighup_adds_and_removes_sites_and_refuses_an_invalid_config() {
    let pebble = Pebble::start().await;
    let upstream = Upstream::echo().await;
    let config = RunConfig::for_pebble(
        &pebble,
        vec![Site::new(&["a.test"]).proxy("/", &upstream.url())],
    );
    let mut world = World::serve(pebble, Certd::new(), config).await;
    let a_serial = world.client.wait_for_certificate("a.test", CERT_WAIT).await;
    assert!(
        world.client.serial("b.test").await.is_err(),
        "b.test is not configured yet"
    );

    // Add b.test and move a.test's "/" to another upstream: b.test gets a certificate and is served,
    // a.test keeps its certificate and follows its new route.
    let moved = Upstream::echo().await;
    world.config.sites[0] = Site::new(&["a.test"]).proxy("/", &moved.url());
    world
        .config
        .sites
        .push(Site::new(&["b.test"]).proxy("/", &upstream.url()));
    world.config.write(&world.certd);
    world.daemon.signal("HUP");
    let b_serial = world.client.wait_for_certificate("b.test", CERT_WAIT).await;
    let b_host = world.authority("b.test");
    let echoed = world
        .client
        .http1("b.test")
        .await
        .get(&b_host, "/b")
        .await
        .echoed();
    assert_eq!(echoed.header("host"), b_host);
    let a_host = world.authority("a.test");
    let mut a = world.client.http1("a.test").await;
    assert_eq!(a.get(&a_host, "/moved").await.echoed().path, "/moved");
    assert_eq!(moved.received(), 1, "a.test's new route must be used");
    let http_port = world.pebble.http_port;
    let reply = http_get(http_port, "b.test", "/r").await;
    assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY, "{reply:?}");
    assert_eq!(
        world.client.serial("a.test").await.expect("a.test"),
        a_serial
    );
    assert_eq!(
        world.pebble.issued_count(),
        2,
        "a.test must not be reordered"
    );

    // An invalid configuration is refused; both sites keep being served.
    let valid = world.config.to_toml();
    world
        .certd
        .write_config_text(&format!("no_such_key = true\n{valid}"));
    world.daemon.signal("HUP");
    world
        .daemon
        .wait_for_log("reload refused", Duration::from_secs(10))
        .await;
    assert_eq!(
        world.client.serial("a.test").await.expect("a.test"),
        a_serial
    );
    assert_eq!(
        world.client.serial("b.test").await.expect("b.test"),
        b_serial
    );
    let mut a = world.client.http1("a.test").await;
    assert_eq!(a.get(&a_host, "/still").await.echoed().path, "/still");
    assert_eq!(moved.received(), 2, "the running routes must stay");
    assert!(
        world.daemon.try_wait().is_none(),
        "an invalid reload must not stop the daemon"
    );

    // Remove a.test: it stops being served; b.test stays.
    world.config.sites.remove(0);
    world.config.write(&world.certd);
    world.daemon.signal("HUP");
    let refused = world
        .client
        .wait_until_refused("a.test", Duration::from_secs(10))
        .await;
    assert!(refused.presented.is_none(), "{refused:?}");
    // The site table is swapped a moment after the resolver, so poll (briefly) for :80 too.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reply = http_get(world.pebble.http_port, "a.test", "/r").await;
        if reply.status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a removed site is still redirected: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        world.client.serial("b.test").await.expect("b.test"),
        b_serial
    );
    assert_eq!(world.pebble.issued_count(), 2);
}

#[tokio::test]
async fn sighup_adding_a_name_to_a_site_orders_a_certificate_covering_it() {
    let pebble = Pebble::start().await;
    let upstream = Upstream::echo().await;
    let config = RunConfig::for_pebble(
        &pebble,
        vec![Site::new(&["a.test"]).proxy("/", &upstream.url())],
    );
    let mut world = World::serve(pebble, Certd::new(), config).await;
    let old = world.client.wait_for_certificate("a.test", CERT_WAIT).await;

    world.config.sites[0] = Site::new(&["a.test", "www.a.test"]).proxy("/", &upstream.url());
    world.config.write(&world.certd);
    world.daemon.signal("HUP");
    let www = world
        .client
        .wait_for_certificate("www.a.test", CERT_WAIT)
        .await;
    assert_ne!(www, old, "www.a.test needs a new certificate");
    assert_eq!(
        world.client.serial("a.test").await.expect("a.test"),
        www,
        "both names are served with the new certificate"
    );
    let reply = world
        .client
        .http1("www.a.test")
        .await
        .get(&world.authority("www.a.test"), "/")
        .await;
    assert_eq!(reply.echoed().path, "/");
    assert_eq!(world.status_serial("a.test").await, www);
}

#[tokio::test]
async fn sigterm_drains_requests_and_websockets_then_exits_0() {
    let pebble = Pebble::start().await;
    let slow = Upstream::slow(Duration::from_secs(3)).await;
    let ws_upstream = Upstream::websocket_echo().await;
    let config = RunConfig::for_pebble(
        &pebble,
        vec![Site::new(&["a.test"])
            .proxy("/", &slow.url())
            .proxy("/ws", &ws_upstream.url())],
    )
    .limit("grace_period", "\"10s\"");
    let mut world = World::serve(pebble, Certd::new(), config).await;
    let serial = world.client.wait_for_certificate("a.test", CERT_WAIT).await;
    let host = world.authority("a.test");

    // A websocket is open and a request to the slow upstream is in flight when SIGTERM arrives.
    let tls = world.client.handshake("a.test", Alpn::Http1).await;
    let (mut socket, _) = tokio_tungstenite::client_async(format!("wss://{host}/ws"), tls.stream)
        .await
        .expect("websocket handshake");
    next_message(&mut socket).await;
    let mut h1 = world.client.http1("a.test").await;
    let request_host = host.clone();
    let in_flight = tokio::spawn(async move { h1.get(&request_host, "/in-flight").await });
    let mut h2 = world.client.http2("a.test").await;
    let request = Request::get(format!("https://{host}/in-flight-h2"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let in_flight_h2 = tokio::spawn(async move { h2.send(request).await });
    slow.wait_received(2, Duration::from_secs(10)).await;
    let sent_at = Instant::now();
    world.daemon.signal("TERM");

    // New connections are refused at once, while the request is still in flight.
    let deadline = Instant::now() + Duration::from_secs(2);
    while tokio::net::TcpStream::connect(world.config.https_addr())
        .await
        .is_ok()
    {
        assert!(
            Instant::now() < deadline,
            "the HTTPS port still accepts connections 2 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let http_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, world.pebble.http_port));
    while tokio::net::TcpStream::connect(http_addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "port 80 still accepts connections 2 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(slow.answered(), 0, "the requests must still be in flight");

    // The requests in flight complete, over HTTP/1.1 and HTTP/2.
    let reply = in_flight.await.expect("request task");
    assert_eq!(reply.echoed().path, "/in-flight");
    let reply = in_flight_h2.await.expect("request task");
    assert_eq!(reply.echoed().path, "/in-flight-h2");
    assert!(sent_at.elapsed() < Duration::from_secs(10));

    // The websocket still works; the daemon waits for it.
    socket
        .send(Message::text("after SIGTERM"))
        .await
        .expect("send after SIGTERM");
    assert_eq!(
        next_message(&mut socket).await,
        Message::text("after SIGTERM")
    );
    assert!(
        world.daemon.try_wait().is_none(),
        "the daemon must wait for the open websocket"
    );
    socket.close(None).await.expect("close");
    while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(5), socket.next()).await {}

    let status = world
        .daemon
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("certd run still running 10 s after the websocket closed"));
    assert_eq!(status.code(), Some(0), "{}", world.daemon.log());
    assert!(
        sent_at.elapsed() < Duration::from_secs(10),
        "the drain took longer than the grace period: {:?}",
        sent_at.elapsed()
    );
    let log = world.daemon.log();
    assert!(!log.contains("grace period over"), "{log}");
    assert!(
        tokio::net::TcpStream::connect(world.config.https_addr())
            .await
            .is_err(),
        "nothing may listen after the exit"
    );

    // Started again on the same state with a new site: the stored certificate is served at once and
    // not reordered, the missing one is ordered.
    world
        .config
        .sites
        .push(Site::new(&["b.test"]).proxy("/", &slow.url()));
    world.config.write(&world.certd);
    world.daemon = Daemon::start(&world.certd, world.config.https_addr()).await;
    assert_eq!(
        world
            .client
            .serial("a.test")
            .await
            .expect("stored certificate served at start"),
        serial
    );
    world.client.wait_for_certificate("b.test", CERT_WAIT).await;
    assert_eq!(world.client.serial("a.test").await.expect("a.test"), serial);
    assert_eq!(world.pebble.issued_count(), 2, "only b.test may be ordered");
}

#[tokio::test]
async fn sigterm_closes_what_is_still_open_after_the_grace_period() {
    let pebble = Pebble::start().await;
    let ws_upstream = Upstream::websocket_echo().await;
    let config = RunConfig::for_pebble(
        &pebble,
        vec![Site::new(&["a.test"]).proxy("/ws", &ws_upstream.url())],
    )
    .limit("grace_period", "\"1s\"");
    let mut world = World::serve(pebble, Certd::new(), config).await;
    world.client.wait_for_certificate("a.test", CERT_WAIT).await;
    let host = world.authority("a.test");
    let tls = world.client.handshake("a.test", Alpn::Http1).await;
    let (mut socket, _) = tokio_tungstenite::client_async(format!("wss://{host}/ws"), tls.stream)
        .await
        .expect("websocket handshake");
    next_message(&mut socket).await;

    // The websocket stays open past the grace period: the daemon closes it and exits 0 anyway.
    let sent_at = Instant::now();
    world.daemon.signal("TERM");
    let status = world
        .daemon
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| {
            panic!("certd run still running 10 s after SIGTERM with a 1 s grace period")
        });
    let took = sent_at.elapsed();
    assert_eq!(status.code(), Some(0), "{}", world.daemon.log());
    assert!(
        took >= Duration::from_millis(900),
        "exited after {took:?}, before the grace period was over"
    );
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} to stop with a 1 s grace period"
    );
    assert!(
        world.daemon.log().contains("grace period over"),
        "{}",
        world.daemon.log()
    );
    let end = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("the websocket ends with the daemon");
    assert!(
        !matches!(end, Some(Ok(Message::Text(_) | Message::Binary(_)))),
        "{end:?}"
    );
}
