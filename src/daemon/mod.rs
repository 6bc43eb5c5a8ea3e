//! `certd run`: the long-running daemon.
//!
//! It owns the listeners (:80 answers HTTP-01 challenges and redirects everything else to HTTPS; :443
//! terminates TLS and reverse-proxies, on one worker thread per core: see `workers`), the renewal
//! scheduler, and the control socket through which `certd issue` reaches it. The listeners accept at
//! once; certificates already in the state directory are loaded behind them (a name asked for before
//! its turn is loaded on demand), and missing ones are ordered while the rest serve. A renewed
//! certificate is validated, stored, then swapped into the SNI resolver in one atomic store. SIGHUP
//! reloads the configuration (an invalid one is refused and the running one kept); SIGTERM or SIGINT
//! stops accepting, lets requests in flight and open websockets finish for up to the grace period, and
//! exits 0.

mod admission;
mod control;
mod handshake;
mod https;
mod issue;
mod load;
mod local_copy;
mod redirect;
mod reload;
mod sites;
mod storage_sync;
mod stored;
mod trim;
mod workers;

pub use control::{send as send_control_request, ControlRequest, Reply};

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use time::OffsetDateTime;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use self::load::{load_on_demand, publish, serve_stored};
use self::redirect::redirect_to_https;
use self::sites::SiteTable;
use self::workers::{WorkerSetup, Workers};
use crate::certificate::CertifiedPem;
use crate::challenge::ChallengeTokens;
use crate::config::{self, Config, SiteConfig};
use crate::exit::{EXIT_OK, EXIT_UNUSABLE};
use crate::metrics::Metrics;
use crate::plain_http::{self, ChallengeResponder};
use crate::proxy::ProxyLimits;
use crate::proxy_protocol::ProxyProtocol;
use crate::renewal::{self, Renewer, Scheduler, SchedulerHandle};
use crate::resolver::SniResolver;
use crate::storage::{self, SharedStore, StoreLock};
use crate::store::Layout;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The state directory could not be opened or locked.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The plain-HTTP listener could not bind.
    #[error(transparent)]
    Http(#[from] plain_http::ChallengeError),
    /// An HTTPS listener could not bind.
    #[error("cannot listen for HTTPS on {addr}: {source}")]
    Https {
        /// The address from `[https].listen`.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTPS workers' threads could not be started.
    #[error("cannot start the HTTPS workers: {0}")]
    Workers(std::io::Error),
    /// The TLS configuration could not be built.
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The metrics listener could not bind.
    #[error("cannot listen for metrics on {addr}: {source}")]
    Metrics {
        /// The address from `[metrics].listen`.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The control socket could not be created.
    #[error("cannot create the control socket {}: {source}", path.display())]
    Control {
        /// The socket's path.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Runs the daemon for the configuration at `config_path` until SIGTERM or SIGINT. Returns the exit
/// code.
pub async fn run(config_path: &Path) -> u8 {
    let config = match config::load(config_path) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{err}");
            return EXIT_UNUSABLE;
        }
    };
    for site in config::sites_without_routes(&config) {
        warn!(site = %site.names[0], "{}", config::no_routes_warning(&site.names[0]));
    }
    let daemon = match Daemon::start(config).await {
        Ok(daemon) => daemon,
        Err(err) => {
            eprintln!("certd: {err}");
            return EXIT_UNUSABLE;
        }
    };
    if let Err(err) = daemon.wait_for_signals(config_path).await {
        error!(%err, "cannot listen for signals");
    }
    daemon.shutdown().await;
    EXIT_OK
}

/// The running daemon.
pub struct Daemon {
    shared: Arc<Shared>,
    workers: Workers,
    http: ChallengeResponder,
    https_addrs: Vec<SocketAddr>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    _lock: StoreLock,
}

/// What the daemon's tasks share.
struct Shared {
    config: ArcSwap<Config>,
    store: SharedStore,
    sites: Arc<ArcSwap<SiteTable>>,
    resolver: Arc<SniResolver>,
    renewer: watch::Sender<Renewer>,
    scheduler: SchedulerHandle,
    metrics: Arc<Metrics>,
    /// Held until the stored certificates are all published at start. Reloads and `certd issue`
    /// wait for it, so that nothing they publish is then overwritten by an older stored version.
    initial_load: Arc<tokio::sync::Mutex<()>>,
    /// This machine's state directory (the control socket), whatever backend holds the state.
    local: Layout,
    /// Brings a fleet node's local copy up to date after every full load.
    local_copy: local_copy::LocalCopy,
}

impl Daemon {
    /// Locks the state directory, binds every listener, starts the HTTPS workers and the control
    /// socket, then loads the stored certificates in the background and starts the scheduler once
    /// they are in.
    pub async fn start(config: Config) -> Result<Self, DaemonError> {
        let store = storage::open_for_daemon(&config)?;
        let lock = store.lock()?;
        let shutdown = CancellationToken::new();
        // Subscribed before the stored certificates are read, so no change falls between them.
        let changes = store.changes(shutdown.clone());
        // This machine's runtime files (the control socket) live in state_dir whatever backend
        // holds the state; a database-backed node may not have the folder yet.
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&config.state_dir)
                .map_err(|source| crate::store::StoreError::Io {
                    action: "create directory",
                    path: config.state_dir.clone(),
                    source,
                })?;
        }
        let config = Arc::new(config);

        // The stored certificates are loaded behind listeners that already accept (thousands of
        // sites take a while); until then, a name asked for is loaded on demand.
        let resolver = Arc::new(SniResolver::new());
        resolver.load_on_demand(load_on_demand(config.clone(), store.clone()));
        resolver.set_default(config.https.default_site.as_deref());
        let metrics = Arc::new(Metrics::default());
        let sites = Arc::new(ArcSwap::from_pointee(SiteTable::from_config(
            &config, &metrics,
        )));

        let tasks = TaskTracker::new();

        // Bind everything before serving anything: a port that cannot be had is a start-up error.
        let worker_count = workers::default_count();
        let mut https_addrs = Vec::with_capacity(config.https.listen.len());
        let mut worker_sockets: Vec<Vec<_>> = (0..worker_count).map(|_| Vec::new()).collect();
        for &addr in &config.https.listen {
            let group = crate::listener::bind_tcp_group(addr, worker_count)
                .map_err(|source| DaemonError::Https { addr, source })?;
            let local = group
                .first()
                .map(|socket| socket.local_addr())
                .transpose()
                .map_err(|source| DaemonError::Https { addr, source })?
                .unwrap_or(addr);
            https_addrs.push(local);
            for (sockets, socket) in worker_sockets.iter_mut().zip(group) {
                sockets.push((local, socket));
            }
        }
        let https_port = https_addrs.first().map_or(443, SocketAddr::port);
        // Shared through the store: any node of a fleet answers another's challenges.
        let tokens = ChallengeTokens::shared_through(&store);
        let fallback = redirect_to_https(sites.clone(), https_port, config.http.redirect);
        let http = ChallengeResponder::start_with(
            &config.http.listen,
            tokens.clone(),
            fallback,
            &config.limits,
            ProxyProtocol::new(config.http.proxy_protocol, &config.https.trusted_proxies),
        )
        .await?;

        // One upstream pool for all workers, so its idle limit is for all of them together.
        let proxy_limits = ProxyLimits {
            connect_timeout: config.limits.upstream_connect_timeout,
            response_timeout: config.limits.upstream_response_timeout,
            tunnel_idle_timeout: config.limits.tunnel_idle_timeout,
            ..ProxyLimits::default()
        };
        let setup = Arc::new(WorkerSetup {
            acceptor: TlsAcceptor::from(https::tls_config(resolver.clone())?),
            proxy_limits,
            upstream: crate::proxy::upstream_client(&proxy_limits),
            sites: sites.clone(),
            limits: config.limits.clone(),
            connections: Arc::new(Semaphore::new(config.limits.max_connections)),
            metrics: metrics.clone(),
            trusted_proxies: config.https.trusted_proxies.clone(),
            proxy_protocol: ProxyProtocol::new(
                config.https.proxy_protocol,
                &config.https.trusted_proxies,
            ),
            handshake: Arc::new(handshake::Handshake::new(
                resolver.clone(),
                tokens.alpn().clone(),
            )?),
        });
        // After a load, the freed heap goes back to the system (see `trim.rs`).
        tasks.spawn(trim::release_after_load(
            setup.connections.clone(),
            config.limits.max_connections,
            shutdown.clone(),
        ));
        let workers = Workers::start(worker_sockets, setup, shutdown.clone())
            .map_err(DaemonError::Workers)?;
        for local in &https_addrs {
            info!(%local, workers = worker_count, "serving HTTPS");
        }

        let renewer = Renewer::new(store.clone(), tokens, config.clone());
        let (renewer_tx, renewer_rx) = watch::channel(renewer);
        let publish_resolver = resolver.clone();
        let publish: renewal::Publish = Arc::new(move |site: &SiteConfig, pem: &CertifiedPem| {
            publish(&publish_resolver, site, pem);
        });
        let (scheduler, scheduler_handle) = Scheduler::new(renewer_rx, publish, shutdown.clone());
        let scheduler = scheduler.with_activity(metrics.scheduler().clone());
        let local_copy = local_copy::LocalCopy::start(store.clone(), &tasks, shutdown.clone());
        let initial_load = Arc::new(tokio::sync::Mutex::new(()));
        let loading = initial_load.clone().try_lock_owned().ok();
        let (load_config, load_store, load_resolver) =
            (config.clone(), store.clone(), resolver.clone());
        let load_tasks = tasks.clone();
        let load_local_copy = local_copy.clone();
        tasks.spawn(async move {
            let _loading = loading;
            let load = tokio::task::spawn_blocking(move || {
                let served = serve_stored(&load_config, load_store.as_ref(), &load_resolver);
                load_resolver.loaded();
                info!(
                    served,
                    sites = load_config.sites.len(),
                    "stored certificates in service"
                );
                load_local_copy.request(load_config);
            });
            if load.await.is_err() {
                // Only a panic gets here; the resolver keeps loading names as they are asked for.
                error!(
                    "loading the stored certificates failed; each name is loaded when asked for"
                );
            }
            // Renewals publish what they issue: only once the stored versions are all in, so that
            // none of them can replace a newer one.
            scheduler.spawn(&load_tasks);
        });

        let local = Layout::new(&config.state_dir);
        let shared = Arc::new(Shared {
            config: ArcSwap::new(config),
            store: store.clone(),
            sites,
            resolver,
            renewer: renewer_tx,
            scheduler: scheduler_handle,
            metrics,
            initial_load,
            local,
            local_copy,
        });

        if let Some(addr) = shared.config.load().operations.metrics_listen {
            let listener = crate::listener::bind_tcp(addr)
                .map_err(|source| DaemonError::Metrics { addr, source })?;
            info!(%addr, "serving metrics at /metrics");
            let scrape_shared = shared.clone();
            let render: crate::metrics::ScrapeSource = Arc::new(move |format| {
                let config = scrape_shared.config.load();
                scrape_shared.metrics.render_as(
                    format,
                    &config,
                    scrape_shared.store.as_ref(),
                    OffsetDateTime::now_utc(),
                )
            });
            tasks.spawn(crate::metrics::serve(
                listener,
                render,
                shutdown.clone(),
                tasks.clone(),
            ));
        }

        if let Some(changes) = changes {
            tasks.spawn(storage_sync::follow(
                shared.clone(),
                changes,
                shutdown.clone(),
            ));
        }

        let control_path = shared.local.control_socket();
        let control = control::bind(&control_path).map_err(|source| DaemonError::Control {
            path: control_path.clone(),
            source,
        })?;
        tasks.spawn(control::serve(
            control,
            shared.clone(),
            shutdown.clone(),
            tasks.clone(),
        ));

        info!(http = ?http.local_addrs(), https = ?https_addrs, "certd is running");
        Ok(Self {
            shared,
            workers,
            http,
            https_addrs,
            shutdown,
            tasks,
            _lock: lock,
        })
    }

    /// The addresses the HTTP listener is bound to.
    pub fn http_addrs(&self) -> &[SocketAddr] {
        self.http.local_addrs()
    }

    /// The addresses the HTTPS listeners are bound to.
    pub fn https_addrs(&self) -> &[SocketAddr] {
        &self.https_addrs
    }

    /// Reloads on SIGHUP, reopens the access log on SIGUSR1, until SIGTERM or SIGINT arrives.
    pub async fn wait_for_signals(&self, config_path: &Path) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = signal(SignalKind::hangup())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut reopen = signal(SignalKind::user_defined1())?;
        loop {
            tokio::select! {
                // logrotate's postrotate: the access log file is opened again under its name.
                _ = reopen.recv() => crate::access_log::reopen(),
                _ = hangup.recv() => {
                    drop(self.shared.initial_load.lock().await);
                    self.reload(config_path);
                }
                _ = terminate.recv() => { info!("SIGTERM: shutting down"); return Ok(()) }
                _ = interrupt.recv() => { info!("SIGINT: shutting down"); return Ok(()) }
            }
        }
    }

    /// Stops accepting, lets requests in flight finish for up to the grace period, then returns.
    pub async fn shutdown(self) {
        let grace = self.shared.config.load().limits.grace_period;
        self.shutdown.cancel();
        self.http.shutdown().await;
        self.tasks.close();
        let drained = async {
            self.tasks.wait().await;
            self.workers.drained().await;
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            warn!(
                seconds = grace.as_secs(),
                connections = self.workers.open_connections(),
                "grace period over; closing what is still open"
            );
        }
        self.workers.abort().await;
        let _ = std::fs::remove_file(self.shared.local.control_socket());
        info!("stopped");
    }
}
