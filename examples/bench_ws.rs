//! WebSockets for `bench/run.sh`: an echo upstream, and a load client that measures echoed messages
//! per second through a TLS front (certd or nginx) over N connections for T seconds.
//!
//! ```text
//! cargo build --release --example bench_ws
//! target/release/examples/bench_ws echo 127.0.0.1:18081
//! target/release/examples/bench_ws load --addr 127.0.0.1:8443 --name bench.test --path /ws \
//!     --connections 64 --seconds 10
//! target/release/examples/bench_ws hold --addr 127.0.0.1:8443 --name bench.test --path /ws \
//!     --connections 2000 --seconds 60
//! ```
//!
//! Each `load` connection sends a binary message and waits for its echo before sending the next, so
//! the rate is a round-trip rate through the proxy. `hold` opens N tunnels, checks each with one
//! echo, prints `held=N failed=F`, and keeps them open and idle (to measure the front's memory per
//! open websocket). Results are printed as `key=value` words.

#[path = "bench_common/tls.rs"]
mod tls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use tls::Trust;

#[derive(Parser)]
#[command(about = "WebSocket echo upstream and load client for bench/run.sh")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Echo every text and binary message back, on plain ws://, until killed.
    Echo {
        /// Where to listen, e.g. 127.0.0.1:18081.
        listen: SocketAddr,
    },
    /// Measure echoed messages per second over wss:// through a TLS front.
    Load {
        /// The front's address.
        #[arg(long)]
        addr: SocketAddr,
        /// The server name (SNI and Host).
        #[arg(long)]
        name: String,
        /// The websocket location.
        #[arg(long, default_value = "/ws")]
        path: String,
        /// Connections, each with one message in flight.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// For how long.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Bytes per message.
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// Open N wss:// tunnels through a TLS front, echo one message on each, then hold them idle.
    Hold {
        /// The front's address.
        #[arg(long)]
        addr: SocketAddr,
        /// The server name (SNI and Host).
        #[arg(long)]
        name: String,
        /// The websocket location.
        #[arg(long, default_value = "/ws")]
        path: String,
        /// How many tunnels.
        #[arg(long, default_value_t = 2000)]
        connections: usize,
        /// How long to hold them before exiting by itself.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(async {
            match cli.command {
                Command::Echo { listen } => echo(listen).await,
                Command::Load {
                    addr,
                    name,
                    path,
                    connections,
                    seconds,
                    size,
                } => {
                    load(
                        addr,
                        &name,
                        &path,
                        connections,
                        Duration::from_secs_f64(seconds),
                        size,
                    )
                    .await
                }
                Command::Hold {
                    addr,
                    name,
                    path,
                    connections,
                    seconds,
                } => {
                    hold(
                        addr,
                        &name,
                        &path,
                        connections,
                        Duration::from_secs(seconds),
                    )
                    .await
                }
            }
        })
}

async fn hold(
    addr: SocketAddr,
    name: &str,
    path: &str,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<()> {
    let config = tls::client_config(Trust::Anything, &[b"http/1.1"], false)?;
    let url = format!("wss://{name}:{}{path}", addr.port());
    let mut held = Vec::with_capacity(connections);
    let mut failed = 0usize;
    for _ in 0..connections {
        let opened = async {
            let tls = tls::connect(&config, addr, name).await?;
            let (mut ws, _) = tokio_tungstenite::client_async(url.as_str(), tls).await?;
            ws.send(Message::binary(vec![0x5a_u8; 64])).await?;
            match ws.next().await {
                Some(Ok(message)) if message.len() == 64 => Ok(ws),
                other => anyhow::bail!("no echo: {other:?}"),
            }
        };
        match opened.await {
            Ok(ws) => held.push(ws),
            Err(err) => {
                if failed == 0 {
                    eprintln!("bench_ws hold: {err:#}");
                }
                failed += 1;
            }
        }
    }
    println!("held={} failed={failed}", held.len());
    tokio::time::sleep(duration).await;
    drop(held);
    Ok(())
}

async fn echo(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    eprintln!("bench_ws: echoing on ws://{listen}/");
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                eprintln!("bench_ws: accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            while let Some(Ok(message)) = ws.next().await {
                if message.is_text() || message.is_binary() {
                    if ws.send(message).await.is_err() {
                        return;
                    }
                } else if message.is_close() {
                    return;
                }
            }
        });
    }
}

async fn load(
    addr: SocketAddr,
    name: &str,
    path: &str,
    connections: usize,
    duration: Duration,
    size: usize,
) -> anyhow::Result<()> {
    // WebSockets upgrade an HTTP/1.1 connection: offer only http/1.1.
    let config = tls::client_config(Trust::Anything, &[b"http/1.1"], false)?;
    let url = format!("wss://{name}:{}{path}", addr.port());
    let echoed = Arc::new(AtomicU64::new(0));

    // Connect everything first, so that the measured time is all echoing.
    let mut sockets = Vec::with_capacity(connections);
    for _ in 0..connections {
        let tls = tls::connect(&config, addr, name).await?;
        let (ws, _) = tokio_tungstenite::client_async(url.as_str(), tls)
            .await
            .with_context(|| format!("websocket upgrade at {url}"))?;
        sockets.push(ws);
    }

    let started = Instant::now();
    let deadline = started + duration;
    let payload = vec![0x5a_u8; size];
    let mut tasks = JoinSet::new();
    for mut ws in sockets {
        let (echoed, payload) = (echoed.clone(), payload.clone());
        tasks.spawn(async move {
            while Instant::now() < deadline {
                ws.send(Message::binary(payload.clone())).await?;
                match ws.next().await {
                    Some(Ok(message)) if message.len() == payload.len() => {
                        echoed.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Ok(other)) => anyhow::bail!("unexpected answer: {other:?}"),
                    Some(Err(err)) => return Err(err.into()),
                    None => anyhow::bail!("the connection closed"),
                }
            }
            let _ = ws.close(None).await;
            Ok(())
        });
    }
    let mut errors = 0usize;
    while let Some(result) = tasks.join_next().await {
        if let Err(err) = result.map_err(anyhow::Error::from).and_then(|r| r) {
            if errors == 0 {
                eprintln!("bench_ws load: {err:#}");
            }
            errors += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let echoed = echoed.load(Ordering::Relaxed);
    println!(
        "messages_per_s={:.0} messages={echoed} errors={errors} connections={connections} seconds={elapsed:.2}",
        echoed as f64 / elapsed
    );
    Ok(())
}
