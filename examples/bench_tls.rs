//! TLS clients for `bench/run.sh`, for what wrk and h2load cannot do:
//!
//! - `hold`: open N keep-alive HTTPS connections (one GET each), then hold them open, to measure a
//!   server's memory per connection;
//! - `ready`: after `certd run` was started, how long until the first and the last of many names
//!   complete a verified TLS handshake, then check that every name does;
//! - `handshakes`: full TLS 1.3 handshakes per second (no resumption), with one server name or a random
//!   one of many, to show what the SNI lookup costs.
//!
//! ```text
//! cargo build --release --example bench_tls
//! target/release/examples/bench_tls hold --addr 127.0.0.1:8443 --name bench.test --connections 2000
//! target/release/examples/bench_tls ready --addr 127.0.0.1:8443 --names names.txt --ca ca.pem \
//!     --since-ns "$(date +%s%N)"
//! target/release/examples/bench_tls handshakes --addr 127.0.0.1:8443 --names names.txt --seconds 5
//! ```
//!
//! Loopback only by intent: every loop is bounded in count and time. Results are printed as
//! `key=value` words on one line for the script to pick up.

#[path = "bench_common/tls.rs"]
mod tls;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rand::Rng as _;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use tls::Trust;

#[derive(Parser)]
#[command(about = "TLS clients for bench/run.sh")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Open keep-alive HTTPS connections, send one GET on each, and hold them open.
    Hold {
        /// The server's address.
        #[arg(long)]
        addr: SocketAddr,
        /// The server name (SNI and Host).
        #[arg(long)]
        name: String,
        /// How many connections.
        #[arg(long, default_value_t = 2000)]
        connections: usize,
        /// How long to hold them before exiting by itself.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Time from --since-ns until the first and the last name of --names complete a TLS handshake,
    /// then a handshake with every name.
    Ready {
        /// The server's address.
        #[arg(long)]
        addr: SocketAddr,
        /// One server name per line.
        #[arg(long)]
        names: PathBuf,
        /// PEM roots the server's certificates must chain to.
        #[arg(long)]
        ca: PathBuf,
        /// When the server was started, in nanoseconds since the Unix epoch (`date +%s%N`).
        #[arg(long)]
        since_ns: u64,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Full TLS handshakes per second, each on a new connection, without resumption.
    Handshakes {
        /// The server's address.
        #[arg(long)]
        addr: SocketAddr,
        /// One server name per line; each handshake picks one at random.
        #[arg(long, conflicts_with = "name", required_unless_present = "name")]
        names: Option<PathBuf>,
        /// The one server name to use.
        #[arg(long)]
        name: Option<String>,
        /// Handshakes in flight at once.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// For how long.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
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
                Command::Hold {
                    addr,
                    name,
                    connections,
                    seconds,
                } => hold(addr, &name, connections, Duration::from_secs(seconds)).await,
                Command::Ready {
                    addr,
                    names,
                    ca,
                    since_ns,
                    timeout,
                } => {
                    let started = UNIX_EPOCH + Duration::from_nanos(since_ns);
                    ready(addr, &names, &ca, started, Duration::from_secs(timeout)).await
                }
                Command::Handshakes {
                    addr,
                    names,
                    name,
                    connections,
                    seconds,
                } => {
                    let names = match (names, name) {
                        (Some(path), _) => read_names(&path)?,
                        (None, Some(name)) => vec![name],
                        (None, None) => anyhow::bail!("--names or --name is required"),
                    };
                    handshakes(addr, names, connections, Duration::from_secs_f64(seconds)).await
                }
            }
        })
}

fn read_names(path: &Path) -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect();
    anyhow::ensure!(!names.is_empty(), "{} names no server", path.display());
    Ok(names)
}

/// One connection of `hold`: the request sender and the task driving the connection, both kept alive.
type Held = (
    hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    tokio::task::JoinHandle<()>,
);

async fn hold(
    addr: SocketAddr,
    name: &str,
    connections: usize,
    seconds: Duration,
) -> anyhow::Result<()> {
    let config = tls::client_config(Trust::Anything, &[b"http/1.1"], false)?;
    // Open them 64 at a time, like a burst of browsers rather than a SYN flood.
    let opening = Arc::new(Semaphore::new(64));
    let mut tasks = JoinSet::new();
    for _ in 0..connections {
        let config = config.clone();
        let opening = opening.clone();
        let name = name.to_owned();
        tasks.spawn(async move {
            let _permit = opening.acquire_owned().await?;
            open_and_get(&config, addr, &name).await
        });
    }
    let mut held: Vec<Held> = Vec::with_capacity(connections);
    let mut failed = 0usize;
    let mut first_error = None;
    while let Some(result) = tasks.join_next().await {
        match result.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok(connection) => held.push(connection),
            Err(err) => {
                failed += 1;
                first_error.get_or_insert(err);
            }
        }
    }
    if let Some(err) = first_error {
        eprintln!("bench_tls hold: {failed} connections failed; first: {err:#}");
    }
    let open = held
        .iter()
        .filter(|(sender, _)| !sender.is_closed())
        .count();
    println!("held={open} failed={failed}");
    std::io::stdout().flush()?;
    tokio::time::sleep(seconds).await;
    let still_open = held
        .iter()
        .filter(|(sender, _)| !sender.is_closed())
        .count();
    println!("still_open={still_open}");
    Ok(())
}

async fn open_and_get(
    config: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    name: &str,
) -> anyhow::Result<Held> {
    let tls = tls::connect(config, addr, name).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = hyper::Request::get("/")
        .header(hyper::header::HOST, name)
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    anyhow::ensure!(
        response.status().is_success(),
        "GET / answered {}",
        response.status()
    );
    response.into_body().collect().await?;
    Ok((sender, driver))
}

async fn ready(
    addr: SocketAddr,
    names_file: &Path,
    ca: &Path,
    started: SystemTime,
    timeout: Duration,
) -> anyhow::Result<()> {
    let names = read_names(names_file)?;
    let config = tls::client_config(Trust::CaFile(ca), &[], false)?;
    let deadline = Instant::now() + timeout;
    let since_start = || {
        SystemTime::now()
            .duration_since(started)
            .unwrap_or_default()
            .as_secs_f64()
            * 1000.0
    };

    // Poll until the name completes a verified handshake: connection refused (not listening yet) and
    // handshake failures (name not served yet) both mean "not yet".
    let until_served = |name: String| {
        let config = config.clone();
        async move {
            loop {
                if tls::connect(&config, addr, &name).await.is_ok() {
                    return Ok(since_start());
                }
                if Instant::now() > deadline {
                    anyhow::bail!("{name} was not served within {} s", timeout.as_secs());
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };
    let first_ms = until_served(names[0].clone()).await?;
    let last_ms = until_served(names[names.len() - 1].clone()).await?;

    // Then every name once, 16 at a time, each verified against its own name.
    let sweep_started = Instant::now();
    let gate = Arc::new(Semaphore::new(16));
    let mut tasks = JoinSet::new();
    for name in names {
        let config = config.clone();
        let gate = gate.clone();
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            tls::connect(&config, addr, &name)
                .await
                .with_context(|| format!("handshake for {name}"))
                .map(drop)
        });
    }
    let (mut ok, mut failed) = (0usize, 0usize);
    let mut first_error = None;
    while let Some(result) = tasks.join_next().await {
        match result.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok(()) => ok += 1,
            Err(err) => {
                failed += 1;
                first_error.get_or_insert(err);
            }
        }
    }
    if let Some(err) = first_error {
        eprintln!("bench_tls ready: {failed} names failed; first: {err:#}");
    }
    println!(
        "first_ms={first_ms:.0} last_ms={last_ms:.0} all_ms={all_ms:.0} names_ok={ok} names_failed={failed} sweep_s={sweep:.2}",
        all_ms = since_start(),
        sweep = sweep_started.elapsed().as_secs_f64(),
    );
    Ok(())
}

async fn handshakes(
    addr: SocketAddr,
    names: Vec<String>,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<()> {
    let config = tls::client_config(Trust::Anything, &[], false)?;
    let names = Arc::new(names);
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = JoinSet::new();
    for _ in 0..connections {
        let (config, names, ok, failed) =
            (config.clone(), names.clone(), ok.clone(), failed.clone());
        tasks.spawn(async move {
            while Instant::now() < deadline {
                let name = &names[rand::rng().random_range(0..names.len())];
                match tls::connect(&config, addr, name).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    let ok = ok.load(Ordering::Relaxed);
    println!(
        "handshakes_per_s={:.0} handshakes={ok} failed={} names={} seconds={elapsed:.2}",
        ok as f64 / elapsed,
        failed.load(Ordering::Relaxed),
        names.len(),
    );
    Ok(())
}
