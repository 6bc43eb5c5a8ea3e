//! A fleet of `certd run` nodes for a test ([`Fleet`]): node N listens on 127.0.0.N (the same HTTP-01
//! and HTTPS ports on each address), every node has its own folder, state directory and
//! `node_name`, and all share one [`Postgres`] database and one [`Pebble`].
//!
//! Every site name resolves (challtestsrv's DNS, for Pebble and for certd's preflight alike) to a
//! [`Relay`] on 127.0.0.250 that forwards each challenge request to a node **other than the one
//! holding the site's lease** (read from the `leases` table when the request arrives), so a
//! validation passes only when the nodes share their answers. The relay records what it forwarded,
//! and can hold validation requests (not preflight's) until released, which keeps the lease holder
//! mid-order for as long as a test needs. With [`Layout::tls_alpn`] the nodes serve HTTPS on Pebble's
//! TLS-ALPN-01 port and a second relay there forwards each connection the same way, by the
//! ClientHello's server name.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::acme_proxy::{AcmeProxy, ProxyOptions};
use super::certd::{toml_str, Certd};
use super::daemon::{Daemon, RunConfig, Site};
use super::pebble::Pebble;
use super::postgres::Postgres;

/// Where every site name resolves: the relay.
pub const RELAY_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 250);
/// The fleet's sealing key (any 32 bytes will do in a test).
const FLEET_KEY: [u8; 32] = [0x3c; 32];
/// The longest a relayed exchange may take.
const RELAY_DEADLINE: Duration = Duration::from_secs(30);

/// One node of the fleet, or of a test that starts its nodes itself ([`Node::new`]).
pub struct Node {
    /// `[storage] node_name` (`node-1`, …).
    pub name: String,
    /// The loopback address it listens on.
    pub ip: Ipv4Addr,
    /// Where it serves HTTPS (on `ip`).
    pub https: SocketAddr,
    /// Its folder, configuration and state directory.
    pub certd: Certd,
    /// Its running daemon (`None` once a test took it away).
    pub daemon: Option<Daemon>,
}

impl Node {
    /// A node named `name`, not started: its own folder with `config`'s listeners moved to `ip`,
    /// on `pg`'s shared database (the fleet's sealing key and `pg`'s password written beside the
    /// configuration). `storage` is appended to the `[storage]` table (it may go on with further
    /// tables).
    pub fn new(pg: &Postgres, config: RunConfig, name: &str, ip: Ipv4Addr, storage: &str) -> Self {
        let certd = Certd::new();
        let https = SocketAddr::from((ip, config.https_port));
        certd.write_config_text(&node_toml(pg, &certd, config, name, ip, storage));
        Self {
            name: name.to_owned(),
            ip,
            https,
            certd,
            daemon: None,
        }
    }

    /// Starts its daemon (and waits until it serves HTTPS).
    pub async fn start(&mut self) {
        self.daemon = Some(Daemon::start(&self.certd, self.https).await);
    }

    /// Kills its daemon (by its pid, on drop of its guard).
    pub fn stop(&mut self) {
        self.daemon = None;
    }

    /// The running daemon.
    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("the node's daemon runs")
    }

    /// The daemon's log.
    pub fn log(&self) -> String {
        self.daemon.as_ref().map(Daemon::log).unwrap_or_default()
    }
}

/// N nodes, their database, their CA and the relay in front of them.
pub struct Fleet {
    // Drop order: the nodes first, then what they talk to.
    /// The nodes, `node-1` on 127.0.0.1 first.
    pub nodes: Vec<Node>,
    /// The proxy in front of Pebble with [`Layout::new_account_delay`], kept for the nodes.
    _acme_proxy: Option<AcmeProxy>,
    /// The relay every site name resolves to.
    pub relay: Relay,
    /// The shared database.
    pub pg: Postgres,
    /// The shared CA.
    pub pebble: Pebble,
    /// Each node's HTTPS port (the same on every address).
    pub https_port: u16,
}

impl Fleet {
    /// Starts PostgreSQL, Pebble and the relay, points every name of `sites` at the relay, and
    /// starts `count` nodes serving `sites` together, with `[storage] lease = "<lease>"` and
    /// `extra` (whole tables) appended to each node's configuration.
    pub async fn start(count: u8, sites: &[&[&str]], lease: &str, extra: &str) -> Self {
        Self::start_with(count, sites, lease, extra, Layout::default()).await
    }

    /// [`Fleet::start`] with the relay holding validation requests from the start (see
    /// [`Relay::hold`]): the first lease holder stays mid-order until the test releases them.
    pub async fn start_held(count: u8, sites: &[&[&str]], lease: &str, extra: &str) -> Self {
        let layout = Layout {
            held: true,
            ..Layout::default()
        };
        Self::start_with(count, sites, lease, extra, layout).await
    }

    /// [`Fleet::start`] laid out as `layout` says.
    pub async fn start_with(
        count: u8,
        sites: &[&[&str]],
        lease: &str,
        extra: &str,
        layout: Layout,
    ) -> Self {
        assert!((1..=9).contains(&count), "1 to 9 nodes");
        assert!(
            !layout.site_per_node || sites.len() == usize::from(count),
            "one site per node"
        );
        let pg = Postgres::start().await;
        let pebble = Pebble::start().await;
        for names in sites {
            for name in *names {
                pebble
                    .challtestsrv(
                        "/add-a",
                        serde_json::json!({"host": name, "addresses": [RELAY_IP.to_string()]}),
                    )
                    .await;
            }
        }
        let node_ips: Vec<Ipv4Addr> = (1..=count).map(|n| Ipv4Addr::new(127, 0, 0, n)).collect();
        let relay = Relay::start(&pg, &pebble, &node_ips, layout.tls_alpn).await;
        if layout.held {
            relay.hold();
        }
        // Pebble validates TLS-ALPN-01 on its tlsPort: the nodes' HTTPS port then.
        let https_port = if layout.tls_alpn {
            pebble.tls_port
        } else {
            super::pebble::free_port()
        };
        let challenge = layout.tls_alpn.then_some("tls-alpn-01");
        let acme_proxy = match layout.new_account_delay {
            Some(delay) => Some(
                AcmeProxy::start(
                    &pebble,
                    ProxyOptions {
                        new_account_delay: delay,
                        ..ProxyOptions::default()
                    },
                )
                .await,
            ),
            None => None,
        };

        let mut nodes = Vec::new();
        for (index, ip) in node_ips.iter().enumerate() {
            let name = format!("node-{}", index + 1);
            let served = if layout.site_per_node {
                &sites[index..=index]
            } else {
                sites
            };
            let served = served
                .iter()
                .map(|names| match challenge {
                    Some(kind) => Site::new(names).site_option("challenge", &toml_str(kind)),
                    None => Site::new(names),
                })
                .collect();
            let mut config = RunConfig::for_pebble(&pebble, served);
            config.https_port = https_port;
            let storage = format!("lease = {}\n\n{extra}\n", toml_str(lease));
            let node = Node::new(&pg, config, &name, *ip, &storage);
            if let Some(proxy) = &acme_proxy {
                // The same configuration, ordering through the proxy.
                let toml = std::fs::read_to_string(node.certd.config_path())
                    .expect("read the node's configuration");
                node.certd.write_config_text(&toml.replace(
                    &toml_str(&pebble.directory_url()),
                    &toml_str(&proxy.directory_url()),
                ));
            }
            nodes.push(node);
        }
        // Started together: every node races for the same leases.
        let started = join_all(
            nodes
                .iter()
                .map(|node| {
                    Box::pin(Daemon::start(&node.certd, node.https))
                        as std::pin::Pin<Box<dyn std::future::Future<Output = Daemon> + '_>>
                })
                .collect(),
        )
        .await;
        for (node, daemon) in nodes.iter_mut().zip(started) {
            node.daemon = Some(daemon);
        }
        Self {
            nodes,
            _acme_proxy: acme_proxy,
            relay,
            pg,
            pebble,
            https_port,
        }
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|node| node.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// The node named `name`, to stop or signal it.
    pub fn node_mut(&mut self, name: &str) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|node| node.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// Where node `name` serves HTTPS.
    pub fn https_addr(&self, name: &str) -> SocketAddr {
        SocketAddr::from((self.node(name).ip, self.https_port))
    }

    /// Runs `sql` in the shared database; the rows, `|`-separated, one a line.
    pub fn sql(&self, sql: &str) -> String {
        self.pg.psql(sql).trim().to_owned()
    }

    /// Polls (bounded by `wait`) until `site` has `versions` installed certificate versions;
    /// returns the node that installed the newest.
    pub async fn wait_for_installs(&self, site: &str, versions: usize, wait: Duration) -> String {
        let deadline = Instant::now() + wait;
        loop {
            let count: usize = self
                .sql(&format!(
                    "SELECT count(*) FROM cert_versions WHERE site = '{site}'"
                ))
                .parse()
                .unwrap_or(0);
            if count >= versions {
                return self.sql(&format!(
                    "SELECT installed_by FROM cert_versions WHERE site = '{site}' \
                     ORDER BY version DESC LIMIT 1"
                ));
            }
            assert!(
                Instant::now() < deadline,
                "{site}: {count} of {versions} versions installed within {wait:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The live certificate of `site` in the database (PEM).
    pub fn live_cert(&self, site: &str) -> String {
        self.sql(&format!(
            "SELECT v.cert_pem FROM live l JOIN cert_versions v USING (site, version) \
             WHERE l.site = '{site}'"
        ))
    }

    /// How many new orders Pebble received (its "orders in the db" log lines).
    pub fn pebble_orders(&self) -> usize {
        self.pebble.log().matches("orders in the db").count()
    }

    /// How many ledger entries of `event` (`ordered`, `issued`, `failed`) the fleet wrote for `site`.
    pub fn ledger(&self, site: &str, event: &str) -> usize {
        self.sql(&format!(
            "SELECT count(*) FROM ledger WHERE entry->>'site' = '{site}' \
             AND entry->>'event' = '{event}'"
        ))
        .parse()
        .unwrap_or(0)
    }

    /// Every node's log, for a failure message.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for node in &self.nodes {
            text += &format!("----- {} ({}) -----\n{}\n", node.name, node.ip, node.log());
        }
        text += &format!("----- relay -----\n{:#?}\n", self.relay.seen());
        text
    }
}

/// How a [`Fleet`] is laid out beyond its nodes and sites.
#[derive(Debug, Clone, Copy, Default)]
pub struct Layout {
    /// The relay holds validation requests from the start ([`Fleet::start_held`]).
    pub held: bool,
    /// Node N serves only the Nth site (as many sites as nodes), so every node orders its own
    /// site at start and none waits for another's site lease.
    pub site_per_node: bool,
    /// Every site uses `challenge = "tls-alpn-01"`, the nodes serve HTTPS on Pebble's TLS-ALPN-01
    /// port, and the relay forwards those connections too.
    pub tls_alpn: bool,
    /// The nodes order through an [`AcmeProxy`] that holds each new-account request this long.
    pub new_account_delay: Option<Duration>,
}

/// The configuration of node `name` (see [`Node::new`]), writing its key and password files.
fn node_toml(
    pg: &Postgres,
    certd: &Certd,
    mut config: RunConfig,
    name: &str,
    ip: Ipv4Addr,
    storage: &str,
) -> String {
    let key = certd.dir().join("fleet.key");
    std::fs::write(&key, FLEET_KEY).expect("write the fleet key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
    std::fs::write(
        certd.dir().join("db-password"),
        format!("{}\n", pg.password()),
    )
    .expect("write the password file");
    for listen in &mut config.base.listen {
        listen.set_ip(IpAddr::V4(ip));
    }
    // RunConfig writes its HTTPS listener on 127.0.0.1; this node's is on its own address.
    let toml = config.to_toml().replace(
        &toml_str(&config.https_addr().to_string()),
        &toml_str(&SocketAddr::from((ip, config.https_port)).to_string()),
    );
    toml + &format!(
        "\n[storage]\nbackend = \"postgres\"\nurl = {}\npassword_file = \"db-password\"\n\
         sslmode = \"disable\"\nnode_name = {}\nkey_file = \"fleet.key\"\n{storage}",
        toml_str(&pg.url()),
        toml_str(name),
    )
}

/// Runs the futures concurrently (on this task) and returns their outputs in order.
async fn join_all<'a, T>(
    mut futures: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'a>>>,
) -> Vec<T> {
    use std::task::Poll;
    let mut outputs: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                if let Poll::Ready(value) = future.as_mut().poll(cx) {
                    *output = Some(value);
                }
            }
        }
        if outputs.iter().all(Option::is_some) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// One request the relay handled.
#[derive(Debug, Clone)]
pub struct Relayed {
    /// The `Host` header (a TLS-ALPN-01 connection's server name).
    pub host: String,
    /// The request path ([`TLS_ALPN_PATH`] for a TLS-ALPN-01 connection).
    pub path: String,
    /// The lease holder of the site when it arrived.
    pub holder: Option<String>,
    /// The node it was forwarded to (`None`: no node to forward to, or it failed).
    pub to: Option<String>,
    /// The status line the node answered with.
    pub status: String,
}

/// What [`Relayed::path`] says for a connection relayed on the TLS-ALPN-01 port.
pub const TLS_ALPN_PATH: &str = "(tls-alpn-01)";

impl Relayed {
    /// Whether this was certd's preflight self-test rather than the CA.
    pub fn is_preflight(&self) -> bool {
        self.path.contains("certd-preflight-")
    }
}

#[derive(Default)]
struct RelayState {
    seen: Vec<Relayed>,
    /// Validation requests waiting while held: (host, lease holder when it arrived).
    waiting: Vec<(String, Option<String>)>,
    /// Nodes the relay no longer forwards to (killed, paused).
    avoid: HashSet<String>,
}

/// The challenge relay (see the module header).
pub struct Relay {
    state: Arc<Mutex<RelayState>>,
    hold: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// The TLS-ALPN-01 port's relay, when the fleet has one.
    tls_task: Option<JoinHandle<()>>,
    connection: JoinHandle<Result<(), tokio_postgres::Error>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(task) = &self.tls_task {
            task.abort();
        }
        self.connection.abort();
    }
}

/// `pg`'s connection in libpq keyword form (the URL's user, host, port and database).
fn pg_keywords(pg: &Postgres) -> String {
    let url = pg.url();
    let rest = url.trim_start_matches("postgres://");
    let (user, rest) = rest.split_once('@').expect("user in the url");
    let (host_port, database) = rest.split_once('/').expect("database in the url");
    let (host, port) = host_port.split_once(':').expect("port in the url");
    format!("user={user} host={host} port={port} dbname={database}")
}

impl Relay {
    async fn start(pg: &Postgres, pebble: &Pebble, nodes: &[Ipv4Addr], tls_alpn: bool) -> Self {
        let listener = TcpListener::bind(SocketAddr::from((RELAY_IP, pebble.http_port)))
            .await
            .expect("bind the relay");
        let state = Arc::new(Mutex::new(RelayState::default()));
        let (hold, held) = watch::channel(false);
        let (db, connection) = tokio_postgres::connect(
            &format!("{} password={}", pg_keywords(pg), pg.password()),
            tokio_postgres::NoTls,
        )
        .await
        .expect("the relay connects to the database");
        let connection = tokio::spawn(connection);
        let routing = Arc::new(Routing {
            db,
            nodes: nodes
                .iter()
                .enumerate()
                .map(|(index, ip)| (format!("node-{}", index + 1), *ip))
                .collect(),
            http_port: pebble.http_port,
            tls_port: pebble.tls_port,
        });
        let tls_task = if tls_alpn {
            let listener = TcpListener::bind(SocketAddr::from((RELAY_IP, pebble.tls_port)))
                .await
                .expect("bind the TLS-ALPN-01 relay");
            let (state, routing) = (state.clone(), routing.clone());
            Some(tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let (state, routing) = (state.clone(), routing.clone());
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(
                            RELAY_DEADLINE,
                            relay_tls(stream, &state, &routing),
                        )
                        .await;
                    });
                }
            }))
        } else {
            None
        };
        let task = tokio::spawn({
            let state = state.clone();
            async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let (state, routing, held) = (state.clone(), routing.clone(), held.clone());
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(
                            RELAY_DEADLINE,
                            relay_one(stream, &state, &routing, held),
                        )
                        .await;
                    });
                }
            }
        });
        Self {
            state,
            hold,
            task,
            tls_task,
            connection,
        }
    }

    /// Every request handled so far.
    pub fn seen(&self) -> Vec<Relayed> {
        self.state.lock().expect("relay state").seen.clone()
    }

    /// Holds the CA's validation requests (preflight's pass) until [`Relay::release`].
    pub fn hold(&self) {
        self.hold.send_replace(true);
    }

    /// Lets held and later validation requests through.
    pub fn release(&self) {
        self.hold.send_replace(false);
    }

    /// Never forwards to `node` again (it was killed or paused).
    pub fn avoid(&self, node: &str) {
        self.state
            .lock()
            .expect("relay state")
            .avoid
            .insert(node.to_owned());
    }

    /// Polls (bounded by `wait`) until a validation request for `host` is held; returns the lease
    /// holder of the site when it arrived (the node now mid-order).
    pub async fn wait_for_held(&self, host: &str, wait: Duration) -> String {
        let deadline = Instant::now() + wait;
        loop {
            let waiting = self.state.lock().expect("relay state").waiting.clone();
            if let Some((_, holder)) = waiting.iter().find(|(at, _)| at == host) {
                return holder
                    .clone()
                    .unwrap_or_else(|| panic!("{host}'s validation arrived with no lease holder"));
            }
            assert!(
                Instant::now() < deadline,
                "no validation request for {host} held within {wait:?}: {:#?}",
                self.seen()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

struct Routing {
    /// The relay's own connection to the database.
    db: tokio_postgres::Client,
    nodes: Vec<(String, Ipv4Addr)>,
    http_port: u16,
    tls_port: u16,
}

impl Routing {
    /// The lease holder of the site whose name is `host` (sites are keyed by their first name; the
    /// tests use one name per site).
    async fn holder(&self, host: &str) -> Option<String> {
        let row = self
            .db
            .query_opt(
                "SELECT holder FROM leases WHERE site = $1 AND expires_at > now()",
                &[&host],
            )
            .await
            .ok()??;
        Some(row.get(0))
    }

    /// A node other than `holder` that the relay still forwards to.
    fn other_than(
        &self,
        holder: Option<&String>,
        state: &Mutex<RelayState>,
    ) -> Option<(String, Ipv4Addr)> {
        let avoid = state.lock().expect("relay state").avoid.clone();
        self.nodes
            .iter()
            .find(|(name, _)| Some(name) != holder && !avoid.contains(name))
            .cloned()
    }
}

/// Reads one request head, picks a node that does not hold the site's lease, forwards the request
/// there (with `Connection: close`) and relays the whole answer.
async fn relay_one(
    mut client: TcpStream,
    state: &Mutex<RelayState>,
    routing: &Arc<Routing>,
    mut held: watch::Receiver<bool>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 16 * 1024 {
            return;
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let path = text
        .lines()
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .unwrap_or_default()
        .to_owned();
    let host = text
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("host").then(|| value.trim())
        })
        .unwrap_or_default();
    let host = host.split(':').next().unwrap_or_default().to_owned();
    let mut relayed = Relayed {
        host: host.clone(),
        path,
        holder: None,
        to: None,
        status: String::new(),
    };
    if !relayed.is_preflight() && *held.borrow() {
        // Held while the test keeps the holder mid-order.
        let holder = routing.holder(&host).await;
        state
            .lock()
            .expect("relay state")
            .waiting
            .push((host.clone(), holder));
        let _ = held.wait_for(|hold| !*hold).await;
    }
    let holder = routing.holder(&host).await;
    relayed.holder = holder.clone();
    let target = routing.other_than(holder.as_ref(), state);
    if let Some((name, ip)) = target {
        relayed.to = Some(name);
        let mut request = String::new();
        for line in text.split("\r\n").take_while(|line| !line.is_empty()) {
            if !line.to_ascii_lowercase().starts_with("connection:") {
                request += line;
                request += "\r\n";
            }
        }
        request += "Connection: close\r\n\r\n";
        if let Ok(mut node) =
            TcpStream::connect(SocketAddr::new(IpAddr::V4(ip), routing.http_port)).await
        {
            let mut answer = Vec::new();
            if node.write_all(request.as_bytes()).await.is_ok()
                && node.read_to_end(&mut answer).await.is_ok()
            {
                relayed.status = String::from_utf8_lossy(&answer)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let _ = client.write_all(&answer).await;
            }
        }
    }
    let _ = client.shutdown().await;
    state.lock().expect("relay state").seen.push(relayed);
}

/// The largest ClientHello the TLS-ALPN-01 relay reads (Pebble's is far smaller).
const MAX_HELLO: usize = 16 * 1024;

/// Reads the ClientHello's first record, picks a node that does not hold the lease of the site its
/// server name names, and splices the connection to that node's HTTPS port; `status` records how
/// many bytes the node sent back (a challenge certificate and the handshake's end).
async fn relay_tls(mut client: TcpStream, state: &Mutex<RelayState>, routing: &Arc<Routing>) {
    let mut hello = Vec::new();
    let mut buf = [0u8; 4096];
    let host = loop {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => hello.extend_from_slice(&buf[..n]),
        }
        let whole = hello
            .get(3..5)
            .map(|len| 5 + usize::from(u16::from_be_bytes([len[0], len[1]])));
        if whole.is_some_and(|whole| hello.len() >= whole) {
            break server_name(&hello).unwrap_or_default();
        }
        if hello.len() > MAX_HELLO {
            return;
        }
    };
    let holder = routing.holder(&host).await;
    let mut relayed = Relayed {
        host,
        path: TLS_ALPN_PATH.to_owned(),
        holder: holder.clone(),
        to: None,
        status: String::new(),
    };
    if let Some((name, ip)) = routing.other_than(holder.as_ref(), state) {
        relayed.to = Some(name);
        if let Ok(mut node) =
            TcpStream::connect(SocketAddr::new(IpAddr::V4(ip), routing.tls_port)).await
        {
            if node.write_all(&hello).await.is_ok() {
                if let Ok((_, back)) = tokio::io::copy_bidirectional(&mut client, &mut node).await {
                    relayed.status = format!("{back} bytes back");
                }
            }
        }
    }
    let _ = client.shutdown().await;
    state.lock().expect("relay state").seen.push(relayed);
}

/// The `server_name` (RFC 6066) of the ClientHello that starts `record`, if it has one.
fn server_name(record: &[u8]) -> Option<String> {
    struct Cursor<'a>(&'a [u8]);
    impl<'a> Cursor<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
            self.0 = rest;
            Some(head)
        }
        fn len8(&mut self) -> Option<&'a [u8]> {
            let n = usize::from(*self.take(1)?.first()?);
            self.take(n)
        }
        fn len16(&mut self) -> Option<&'a [u8]> {
            let n = self.take(2)?;
            self.take(usize::from(u16::from_be_bytes([n[0], n[1]])))
        }
    }
    // Record header (type 22, version, length), then the handshake header (type 1, 3-byte length).
    let mut hello = Cursor(record.get(5..)?);
    if record.first() != Some(&22) || hello.take(4)?.first() != Some(&1) {
        return None;
    }
    hello.take(2 + 32)?; // version, random
    hello.len8()?; // session id
    hello.len16()?; // cipher suites
    hello.len8()?; // compression methods
    let mut extensions = Cursor(hello.len16()?);
    while !extensions.0.is_empty() {
        let kind = extensions.take(2)?;
        let body = extensions.len16()?;
        if kind == [0, 0] {
            // server_name_list: (type 0 = host_name, 16-bit length, name)
            let mut list = Cursor(Cursor(body).len16()?);
            if list.take(1)? == [0] {
                return String::from_utf8(list.len16()?.to_vec()).ok();
            }
            return None;
        }
    }
    None
}
