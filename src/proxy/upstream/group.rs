//! What an `[[upstream]]` group is (nginx's `upstream { server ...; }` block): its servers, how one
//! is picked, and which failures send a request on to the next. The proxy runs a group from this;
//! `crate::config`'s `upstreams` reads and checks it from the TOML, so the arrow runs from config to
//! the proxy and not back.

use std::path::PathBuf;
use std::time::Duration;

/// The most servers a group may have: the balancer keeps the servers a request has tried in one
/// 64-bit mask (as nginx keeps them in a bitmap), and a bigger group is a typo more often than not.
pub const MAX_SERVERS: usize = 64;

/// One validated `[[upstream]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// `name`, lower-cased: routes say `proxy = "http://<name>"`.
    pub name: String,
    /// `servers`, in file order (primary and backup servers alike).
    pub servers: Vec<ServerConfig>,
    /// `balance`: how a server is picked for each request.
    pub balance: Balance,
    /// `next_upstream`: which failures send a request on to the next server.
    pub next_upstream: NextUpstream,
    /// `next_upstream_tries`: the most servers one request is tried on (0: every server once).
    pub next_upstream_tries: usize,
}

/// One server of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Where it listens.
    pub address: ServerAddress,
    /// `weight` (default 1): its share of the requests under round robin and least_conn.
    pub weight: u32,
    /// `max_fails` (default 1): this many failures within `fail_timeout` take the server out of
    /// rotation for `fail_timeout`; 0 never does.
    pub max_fails: u32,
    /// `fail_timeout` (default 10 s).
    pub fail_timeout: Duration,
    /// `backup`: used only while every primary server is down.
    pub backup: bool,
}

/// A server's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAddress {
    /// `"host:port"`, connected to over TCP.
    Tcp(String),
    /// `"unix:/run/app.sock"`: a unix socket.
    Unix(PathBuf),
}

/// How a group picks a server (nginx: the default round robin, `least_conn`, `ip_hash`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// `"round_robin"`: smooth weighted round robin, as nginx.
    #[default]
    RoundRobin,
    /// `"least_conn"`: the server with the fewest requests in flight (relative to its weight).
    LeastConn,
    /// `"ip_hash"`: the same client goes to the same server (IPv4: by its first three octets).
    IpHash,
}

/// Which failures of one server send a request on to the next (nginx `proxy_next_upstream`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextUpstream {
    /// `"error"`: connecting failed, or the connection failed before a response head arrived.
    pub error: bool,
    /// `"timeout"`: connecting or waiting for the response head timed out.
    pub timeout: bool,
    /// `"http_500"`, `"http_502"`, … : the upstream answered with one of these statuses.
    pub statuses: Vec<u16>,
    /// `"non_idempotent"`: POST, PATCH and LOCK are retried too (off by default, as in nginx).
    pub non_idempotent: bool,
}

impl Default for NextUpstream {
    fn default() -> Self {
        Self {
            error: true,
            timeout: true,
            statuses: Vec::new(),
            non_idempotent: false,
        }
    }
}
