//! WebSocket tunnels under the daemon's limits: a tunnel keeps its connection's slot under
//! `[limits] max_connections` until it closes, and a tunnel that moves no bytes for its
//! `tunnel_idle_timeout` (from `[limits]` or its route) is closed by certd while a busy one stays.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{World, CERT_WAIT};
use crate::harness::{dns, Alpn, Certd, Pebble, RunConfig, Site, TlsVersions, Upstream};

type Tunnel = WebSocketStream<TlsStream<TcpStream>>;

/// How long one step of opening a tunnel (TLS, upgrade, the upstream's hello) may take.
const STEP: Duration = Duration::from_secs(5);

/// Opens a WebSocket through certd to `path` of `a.test` and reads the upstream's hello. `None`
/// when certd closed the connection at any step (over its connection limit).
async fn open_tunnel(world: &World, path: &str) -> Option<Tunnel> {
    let tls = world
        .client
        .try_handshake(dns("a.test"), Alpn::Http1, TlsVersions::Any)
        .await
        .ok()?;
    let url = format!("wss://{}{path}", world.authority("a.test"));
    let (mut socket, _) =
        tokio::time::timeout(STEP, tokio_tungstenite::client_async(url, tls.stream))
            .await
            .expect("the upgrade is answered or refused in time")
            .ok()?;
    let hello = tokio::time::timeout(STEP, socket.next())
        .await
        .expect("the hello comes in time");
    matches!(hello, Some(Ok(Message::Text(_)))).then_some(socket)
}

/// Sends `text` and expects it echoed back through the tunnel.
async fn echo(socket: &mut Tunnel, text: &str) -> Result<(), String> {
    socket
        .send(Message::text(text))
        .await
        .map_err(|error| format!("send: {error}"))?;
    match tokio::time::timeout(STEP, socket.next()).await {
        Ok(Some(Ok(Message::Text(echoed)))) if echoed.as_str() == text => Ok(()),
        other => Err(format!("expected {text:?} echoed, got {other:?}")),
    }
}

/// Waits until certd ends the tunnel (EOF, a close or an error); how long that took.
async fn wait_closed(socket: &mut Tunnel, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        match tokio::time::timeout(within, socket.next()).await {
            Err(_) => panic!("the tunnel is still open after {within:?}"),
            Ok(Some(Ok(Message::Text(text)))) => panic!("unexpected message {text:?}"),
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return started.elapsed(),
            Ok(Some(Ok(_))) => {}
        }
    }
}

#[tokio::test]
async fn tunnels_count_against_max_connections() {
    let pebble = Pebble::start().await;
    let ws_upstream = Upstream::websocket_echo().await;
    let config = RunConfig::for_pebble(
        &pebble,
        vec![Site::new(&["a.test"]).proxy("/ws", &ws_upstream.url())],
    )
    .limit("max_connections", "50");
    let world = World::serve(pebble, Certd::new(), config).await;
    world.client.wait_for_certificate("a.test", CERT_WAIT).await;
    // The probes of `wait_for_certificate` give their slots back once certd sees them close.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..80 {
        match open_tunnel(&world, "/ws").await {
            Some(socket) => open.push(socket),
            None => refused += 1,
        }
    }
    assert!(
        open.len() <= 50,
        "{} of 80 tunnels opened with max_connections = 50",
        open.len()
    );
    assert!(
        open.len() >= 45,
        "only {} tunnels opened ({refused} refused)",
        open.len()
    );
    assert_eq!(open.len() + refused, 80);
    // The ones that opened are real, working tunnels.
    for (i, socket) in open.iter_mut().enumerate() {
        echo(socket, &format!("still here {i}"))
            .await
            .unwrap_or_else(|error| panic!("tunnel {i}: {error}"));
    }
    assert!(
        open_tunnel(&world, "/ws").await.is_none(),
        "a tunnel opened while {} were open",
        open.len()
    );

    // Closing ten gives ten slots back, for tunnels as for any other connection.
    for mut socket in open.drain(..10) {
        socket.close(None).await.expect("close");
        wait_closed(&mut socket, STEP).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut reopened = 0;
    while reopened < 10 {
        assert!(
            Instant::now() < deadline,
            "only {reopened} of 10 tunnels could open after 10 were closed"
        );
        match open_tunnel(&world, "/ws").await {
            Some(mut socket) => {
                echo(&mut socket, "new").await.expect("a new tunnel works");
                open.push(socket);
                reopened += 1;
            }
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(
        open_tunnel(&world, "/ws").await.is_none(),
        "the cap holds again once the freed slots are taken"
    );
}

#[tokio::test]
async fn idle_tunnels_are_closed_and_busy_ones_stay_open() {
    let pebble = Pebble::start().await;
    let ws_upstream = Upstream::websocket_echo().await;
    let config = RunConfig::for_pebble(
        &pebble,
        vec![Site::new(&["a.test"])
            .proxy("/ws", &ws_upstream.url())
            .proxy("/patient", &ws_upstream.url())
            .route_option("/patient", "tunnel_idle_timeout", "\"1h\"")],
    )
    .limit("tunnel_idle_timeout", "\"1s\"");
    let world = World::serve(pebble, Certd::new(), config).await;
    world.client.wait_for_certificate("a.test", CERT_WAIT).await;

    let mut idle = open_tunnel(&world, "/ws").await.expect("idle tunnel");
    let idle_opened = Instant::now();
    let mut busy = open_tunnel(&world, "/ws").await.expect("busy tunnel");
    let mut patient = open_tunnel(&world, "/patient")
        .await
        .expect("patient tunnel");
    let started = Instant::now();

    // A message every 300 ms, for three times the timeout; meanwhile the idle one is closed.
    let mut i = 0;
    let idle_closed = tokio::spawn(async move {
        wait_closed(&mut idle, Duration::from_secs(10)).await;
        Instant::now()
    });
    while started.elapsed() < Duration::from_secs(3) {
        echo(&mut busy, &format!("tick {i}"))
            .await
            .unwrap_or_else(|error| panic!("the busy tunnel at {:?}: {error}", started.elapsed()));
        i += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let idle_after = idle_closed.await.expect("the idle watcher") - idle_opened;
    assert!(
        idle_after >= Duration::from_millis(800) && idle_after < Duration::from_millis(2500),
        "the idle tunnel closed after {idle_after:?}, not about 1 s"
    );
    echo(&mut busy, "still open")
        .await
        .expect("the busy tunnel outlives the timeout");
    // Idle for 3 s, but its route allows an hour.
    echo(&mut patient, "after 3 s idle")
        .await
        .expect("the route's own tunnel_idle_timeout overrides [limits]");
}
