//! The HTTPS workers: one single-threaded runtime per core, like nginx's worker processes. Each
//! worker has its own socket on every HTTPS address (a `SO_REUSEPORT` group, so the kernel spreads
//! new connections over the workers). The upstream connection pool is shared, but a request takes
//! a connection its own worker opened first (see `proxy::upstream::client`): a connection, its
//! requests and their upstream exchanges normally stay on one thread, so no request pays for a
//! wake-up on another core, which is what a work-stealing runtime costs a proxy on every request.
//!
//! Shutdown has two steps, driven by the daemon: `shutdown` (the daemon's token) stops accepting and
//! lets every connection and websocket finish; [`Workers::abort`], once the grace period is over,
//! closes whatever is still open.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, Instrument};

use super::https::{self, HttpsContext};
use super::sites::SiteTable;
use crate::config::LimitsConfig;
use crate::metrics::Metrics;
use crate::proxy::{Proxy, ProxyLimits, UpstreamClient};
use crate::proxy_protocol::ProxyProtocol;
use crate::trusted_proxies::TrustedProxies;

/// What every worker shares; each builds its own [`HttpsContext`] from it, around a proxy of its own
/// over the shared upstream pool.
pub(super) struct WorkerSetup {
    pub acceptor: TlsAcceptor,
    pub proxy_limits: ProxyLimits,
    /// The upstream connection pool of all workers.
    pub upstream: UpstreamClient,
    pub sites: Arc<ArcSwap<SiteTable>>,
    pub limits: LimitsConfig,
    /// `[limits] max_connections` counts the connections of all workers together.
    pub connections: Arc<Semaphore>,
    pub metrics: Arc<Metrics>,
    /// `[https] trusted_proxies`: whose forwarding headers the proxy believes.
    pub trusted_proxies: TrustedProxies,
    /// `[https] proxy_protocol`.
    pub proxy_protocol: ProxyProtocol,
    /// Which TLS configuration a ClientHello gets (TLS-ALPN-01 challenges, IP names).
    pub handshake: Arc<super::handshake::Handshake>,
}

/// The running workers.
pub(super) struct Workers {
    threads: Vec<JoinHandle<()>>,
    /// Holds a token per running worker: empty once every worker has drained.
    running: TaskTracker,
    /// Every worker's connections, for the shutdown report.
    connections: TaskTracker,
    abort: CancellationToken,
}

/// How many workers: one per core the process may use.
pub(super) fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, |cores| cores.get())
}

impl Workers {
    /// Starts `listeners.len()` workers; `listeners[i]` holds worker `i`'s socket for every HTTPS
    /// address. Fails only when a thread or runtime cannot be created.
    pub fn start(
        listeners: Vec<Vec<(SocketAddr, std::net::TcpListener)>>,
        setup: Arc<WorkerSetup>,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        let running = TaskTracker::new();
        let connections = TaskTracker::new();
        let abort = CancellationToken::new();
        let mut threads = Vec::with_capacity(listeners.len());
        for (index, sockets) in listeners.into_iter().enumerate() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let worker = run_worker(
                sockets,
                setup.clone(),
                shutdown.clone(),
                abort.clone(),
                connections.clone(),
            );
            let token = running.token();
            let thread = std::thread::Builder::new()
                .name(format!("certd-https-{index}"))
                .spawn(move || {
                    let _running = token;
                    runtime.block_on(worker);
                })?;
            threads.push(thread);
        }
        running.close();
        Ok(Self {
            threads,
            running,
            connections,
            abort,
        })
    }

    /// Resolves once every worker has stopped accepting and its connections and websockets are done.
    pub async fn drained(&self) {
        self.running.wait().await;
    }

    /// How many connections are still open.
    pub fn open_connections(&self) -> usize {
        self.connections.len()
    }

    /// Closes whatever is still open and waits for the workers' threads to end.
    pub async fn abort(self) {
        self.abort.cancel();
        let threads = self.threads;
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                if thread.join().is_err() {
                    error!("an HTTPS worker panicked");
                }
            }
        });
        let _ = joined.await;
    }
}

/// One worker's life: accept on its sockets until `shutdown`, let connections and websockets finish
/// unless `abort` comes first, then end every tunnel still open.
async fn run_worker(
    sockets: Vec<(SocketAddr, std::net::TcpListener)>,
    setup: Arc<WorkerSetup>,
    shutdown: CancellationToken,
    abort: CancellationToken,
    connections: TaskTracker,
) {
    // Built here so that the proxy's tunnel and linger tasks belong to this worker's runtime (the
    // upstream connections this worker opens run on it too).
    let context = Arc::new(HttpsContext {
        sites: setup.sites.clone(),
        proxy: Proxy::with_client(setup.proxy_limits, setup.upstream.clone())
            .with_trusted_proxies(setup.trusted_proxies.clone()),
        limits: setup.limits.clone(),
        connections: setup.connections.clone(),
        metrics: setup.metrics.clone(),
        proxy_protocol: setup.proxy_protocol.clone(),
        handshake: setup.handshake.clone(),
    });
    let mut accepting = Vec::with_capacity(sockets.len());
    for (local, socket) in sockets {
        let listener = match tokio::net::TcpListener::from_std(socket) {
            Ok(listener) => listener,
            Err(err) => {
                error!(%local, %err, "an HTTPS worker cannot accept on its socket");
                continue;
            }
        };
        accepting.push(tokio::spawn(
            https::accept_loop(
                listener,
                setup.acceptor.clone(),
                context.clone(),
                shutdown.clone(),
                connections.clone(),
            )
            .instrument(tracing::info_span!("https", %local)),
        ));
    }
    let drained = async {
        for accept_loop in accepting {
            let _ = accept_loop.await;
        }
        // Upgraded connections (websockets) live on as proxy tunnels after their connection task
        // ended; they count as open too.
        while !connections.is_empty() || context.proxy.open_tunnels() > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::select! {
        () = drained => {}
        () = abort.cancelled() => {}
    }
    context.proxy.close_tunnels().await;
}
