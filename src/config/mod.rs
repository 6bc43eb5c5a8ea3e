//! The configuration file: what the operator asked certd to manage.
//!
//! Loading happens in two steps, as in hickory-dns: the TOML text is deserialized into raw structs that
//! reject unknown keys, then validated into the typed [`Config`] the rest of certd uses. Every problem
//! found is collected (not just the first) so that `certd check` can name them all at once, each with the
//! file, the key, the line where known, and the reason. [`load`] reads a file; [`from_toml`] parses a
//! string so tests need no files.
//!
//! The file, with every key and its default:
//!
//! ```toml
//! state_dir = "state"           # default "state"; relative paths are against the config file's folder
//!
//! [acme]                        # required
//! directory = "letsencrypt"     # required: "letsencrypt", "letsencrypt-staging", "zerossl",
//!                               # "google", or an https:// URL
//! email = "ops@example.org"     # optional contact (a `mailto:` prefix is accepted and removed)
//! agree_tos = true              # required, and must be true: the CA's terms are accepted explicitly
//! ca_roots = "pebble-root.pem"  # optional: extra PEM roots for the CA's own HTTPS; must exist
//! key_type = "ecdsa-p256"       # ecdsa-p256 (default), ecdsa-p384, rsa2048, rsa4096
//! concurrency = 4               # orders in flight at once, 1..=64 (default 4)
//! profile = "tlsserver"         # optional ACME profile, sent when the CA offers profiles
//! challenge = "http-01"         # optional default of sites: http-01, tls-alpn-01 (dns-01 soon)
//! eab_kid = "kid-1"             # external account binding (zerossl and google need it), with ...
//! eab_hmac_key_file = "eab.key" # ... the base64url MAC key in a file others cannot read
//!
//! [http]                        # optional
//! listen = ["0.0.0.0:80"]       # default ["0.0.0.0:80"]; each an IP address with a port
//! redirect = true               # `certd run`: 301 to https for configured names (default true)
//! proxy_protocol = false        # connections start with a PROXY header (needs trusted_proxies)
//!
//! [https]                       # optional, for `certd run`
//! listen = ["0.0.0.0:443"]      # default ["0.0.0.0:443"]
//! default_site = "example.com"  # a site's first name: its certificate for handshakes without SNI
//! trusted_proxies = ["10.0.0.0/8"]  # default none: whose X-Forwarded-For / PROXY header to believe
//! proxy_protocol = false        # connections start with a PROXY header (needs trusted_proxies)
//!
//! [limits]                      # optional, for `certd run`; durations as "500ms", "10s", "2m", "1h"
//! header_read_timeout = "10s"   # TLS handshake and each request's headers
//! idle_timeout = "60s"          # a connection with nothing in flight is closed after this
//! max_header_bytes = 16384      # larger request headers get 431
//! max_connections = 10000       # more are closed at once
//! grace_period = "30s"          # on SIGTERM, time for requests and websockets to finish
//! upstream_connect_timeout = "5s"    # else 502
//! upstream_response_timeout = "60s"  # else 504
//! tunnel_idle_timeout = "1h"    # a websocket moving no bytes either way is closed after this
//!
//! [renewal]                     # optional
//! remaining_fraction = 0.333    # renew when less than this part of the lifetime remains (default 1/3)
//! first_retry = "5m"            # wait after a failed attempt, doubling per failure (default 5m)
//! longest_retry = "6h"          # the longest wait between attempts (default 6h) ...
//! slow_after_failures = 5       # ... until this many failures in a row: then one a day (0: never)
//!
//! [status]                      # optional: `certd status` exit codes (0 ok, 1 warning, 2 critical)
//! warn_days = 14                # warn below this many days left, or after a failed renewal
//! critical_days = 7             # critical below this, when expired, or with no certificate
//!
//! [metrics]                     # optional, for `certd run`: Prometheus text at /metrics
//! listen = "127.0.0.1:9443"     # off by default
//!
//! [hook]                        # optional: run after each renewal and each failed attempt
//! command = ["/usr/local/bin/reload-mail", "--quiet"]   # argv, no shell; CERTD_* in its env
//!
//! [preflight]                   # optional: checks before the first order for a name
//! enabled = true                # DNS resolves, and http://<name>/.well-known/… reaches this certd
//! resolver = "127.0.0.1:53"     # the DNS server to ask (default: the system's resolver)
//!
//! [log]                         # optional; read at start (a change needs a restart)
//! format = "text"               # certd's own log lines on stderr: "text" (default) or "json"
//! access_format = "text"        # `certd run`'s access log: "text" (a certd log line, default),
//!                               # "combined" (nginx's default format) or "json" (one object a line)
//! access_file = "/var/log/certd/access.log"  # default stderr; reopened on SIGUSR1 (logrotate)
//!
//! [[site]]                      # at least one; one certificate per site
//! names = ["example.org", "www.example.org"]  # DNS names or IP addresses, each used once
//! profile = "shortlived"        # optional: this site's ACME profile, overriding [acme] profile
//! challenge = "tls-alpn-01"     # optional: overrides [acme] challenge; absent: automatic
//! # compress = true            # optional: compress its routes' answers (a route's own compress wins)
//!
//!   [[site.route]]              # optional, for `certd run`; matched like nginx `location`
//!   path = "/"                  # a prefix; or exact = "/x", regex = "\\.php$", iregex = "...",
//!                               # name = "@app"; prefix_priority = true makes a prefix `^~`
//!   # try_files = ["$uri", "$uri/", "/index.html"]  # static routes: files first, then a fallback
//!   # [[site.route.route]]      # nested routes, as nginx nests locations
//!   proxy = "http://127.0.0.1:8080"   # reverse-proxy here (http, optional base path) ...
//!   # root = "/srv/www"         # ... or serve files (nginx `root`: the full path is appended)
//!   # tunnel_idle_timeout = "10m"  # proxy routes: overrides [limits] tunnel_idle_timeout
//!   # allow_dotfiles = false    # static routes: serve `.name` paths (default 404; .well-known is served)
//!   # access = ["allow 10.0.0.0/8", "deny all"]  # nginx allow/deny, in order (403)
//!   # auth_basic = "Staff only"  # basic auth realm ("off": none), with ...
//!   # auth_basic_user_file = "/etc/certd/htpasswd"  # ... an htpasswd file (bcrypt, apr1, SHA)
//!   # satisfy = "all"           # "any": an allowed address or a right password is enough
//!   # (the four access keys may also be set on the [[site]], for routes that do not set them)
//!   # compress = true           # gzip/br/zstd for text types; or { encodings, types, min_length, level }
//!   # precompressed = true      # static routes: serve file.br / file.zst / file.gz when accepted
//!   # connect_timeout = "5s"    # proxy routes: override [limits] upstream_connect_timeout
//!   # read_timeout = "60s"      # proxy routes: response head, between body reads, websocket idle
//!   # send_timeout = "60s"      # proxy routes: the upstream must take each piece of the body in time
//!
//!   [site.error_pages]          # optional: a file as the body of an error status
//!   404 = "/srv/www/404.html"
//!
//! [[upstream]]                  # optional: a group routes reach as proxy = "http://app"
//! name = "app"                  # required: one label (letters, digits, - and _)
//! servers = ["127.0.0.1:8080", "unix:/run/app.sock",
//!            { address = "127.0.0.1:8081", weight = 2, max_fails = 1, fail_timeout = "10s", backup = false }]
//! balance = "round_robin"       # round_robin (default, weighted), least_conn, ip_hash
//! next_upstream = ["error", "timeout"]  # also http_500/502/503/504/403/429, non_idempotent; ["off"]
//! next_upstream_tries = 0       # the most servers one request is tried on (0: each server once)
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod access;
mod auth_request;
mod cache;
mod challenge;
mod compress;
mod condition;
mod dns;
mod eab;
mod error_page;
mod fallback;
mod fastcgi;
mod http_rules;
mod limit_except;
mod listeners;
mod location;
mod log;
mod map;
mod operations;
mod problems;
mod raw;
mod serving;
mod storage;
#[cfg(test)]
mod tests;
mod upstreams;
mod validate;

pub use challenge::ChallengeKind;
pub use dns::{
    read_tsig_secret, DnsConfig, DnsMethod, Rfc2136Config, TsigAlgorithm, DEFAULT_HOOK_TIMEOUT,
    DEFAULT_PROPAGATION_TIMEOUT,
};
pub use eab::{read_mac_key, EabConfig, GOOGLE, ZEROSSL};
pub use fallback::CaConfig;
pub use log::{log_settings, AccessFormat, LogConfig, LogFormat};
pub use storage::{
    PostgresConfig, SslMode, StorageConfig, DEFAULT_LEASE_SECONDS, DEFAULT_POLL, PASSWORD_ENV,
};
// What the proxy runs (an upstream group, a route's timeouts, the tunnel default) is the proxy's;
// re-exported so that readers of a validated `Config` name it through `config`.
pub use crate::proxy::{ProxyTimeouts, DEFAULT_TUNNEL_IDLE_TIMEOUT};
pub use upstreams::{
    Balance, NextUpstream, ServerAddress, ServerConfig, UpstreamConfig, MAX_SERVERS,
};

/// The Let's Encrypt production directory.
pub const LETSENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// The Let's Encrypt staging directory.
pub const LETSENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this configuration was read from (used in messages and to resolve relative paths).
    pub source: PathBuf,
    /// Where certificates, keys, accounts and the lock live. Relative paths in the file are resolved
    /// against the config file's folder.
    pub state_dir: PathBuf,
    /// How to talk to the CA.
    pub acme: AcmeConfig,
    /// The plain-HTTP listener that answers HTTP-01 challenges.
    pub http: HttpConfig,
    /// The TLS listener of `certd run`.
    pub https: HttpsConfig,
    /// Timeouts and caps that protect the daemon from slow or hostile clients and upstreams.
    pub limits: LimitsConfig,
    /// When certificates are renewed.
    pub renewal: RenewalConfig,
    /// When `certd status` warns, and what the daemon exposes and runs for operators.
    pub operations: OperationsConfig,
    /// The sites, in file order. Each gets one certificate covering all its names.
    pub sites: Vec<SiteConfig>,
    /// The `[[upstream]]` groups routes can proxy to, in file order.
    pub upstreams: Vec<UpstreamConfig>,
    /// Where the state is kept (`[storage]`; the state directory by default).
    pub storage: StorageConfig,
    /// `[log]`: how certd's own log and the access log are written.
    pub log: LogConfig,
}

/// The `[acme]` table.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// The ACME directory URL (the `letsencrypt` / `letsencrypt-staging` shorthands already expanded).
    pub directory_url: String,
    /// Optional contact e-mail, sent as `mailto:` when the account is created.
    pub email: Option<String>,
    /// Extra PEM roots to trust for the CA's own HTTPS endpoint (resolved against the config folder).
    pub ca_roots: Option<PathBuf>,
    /// The kind of key generated for each certificate.
    pub key_type: KeyType,
    /// How many orders may be in flight at once.
    pub concurrency: usize,
    /// The ACME profile to ask for (`classic`, `tlsserver`, `shortlived`, …), when the CA offers
    /// profiles; a site's own `profile` wins.
    pub profile: Option<String>,
    /// `challenge`: the challenge of sites that do not name one; `None` for the automatic choice.
    pub challenge: Option<ChallengeKind>,
    /// `[acme.dns]` / `dns_hook`: how DNS-01 records are published for sites without their own.
    pub dns: Option<DnsConfig>,
    /// `eab_kid` and `eab_hmac_key_file`: the external account binding new accounts are created
    /// with (RFC 8555 §7.3.4), for CAs that require one.
    pub eab: Option<EabConfig>,
    /// `[[acme.ca]]` after the first: the CAs an order falls back to, in order, when the one
    /// before is down or rate-limits (the first's values are the fields above).
    pub fallback: Vec<fallback::CaConfig>,
}

/// The kind of private key generated for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256 (the default: small, fast, universally supported).
    #[default]
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    #[serde(rename = "ecdsa-p384")]
    EcdsaP384,
    /// RSA with a 2048-bit modulus.
    #[serde(rename = "rsa2048")]
    Rsa2048,
    /// RSA with a 4096-bit modulus.
    #[serde(rename = "rsa4096")]
    Rsa4096,
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::EcdsaP256 => "ecdsa-p256",
            Self::EcdsaP384 => "ecdsa-p384",
            Self::Rsa2048 => "rsa2048",
            Self::Rsa4096 => "rsa4096",
        })
    }
}

/// The `[http]` table.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Addresses the HTTP-01 responder listens on.
    pub listen: Vec<SocketAddr>,
    /// Whether `certd run` answers every other request for a configured name with a 301 to HTTPS
    /// (default true); when false those get 404.
    pub redirect: bool,
    /// `proxy_protocol = true`: every connection must come from `[https] trusted_proxies` and start
    /// with a PROXY protocol (v1 or v2) header (default false).
    pub proxy_protocol: bool,
}

/// The `[https]` table.
#[derive(Debug, Clone)]
pub struct HttpsConfig {
    /// Addresses `certd run` terminates TLS on (default `0.0.0.0:443`).
    pub listen: Vec<SocketAddr>,
    /// The first name of the site whose certificate a handshake without SNI gets, and whose names
    /// are the only ones requests on such a connection may ask for; `None`: such handshakes are
    /// refused.
    pub default_site: Option<String>,
    /// Proxies in front of certd whose `X-Forwarded-For` chain and PROXY headers are believed
    /// (default none: every client's own forwarding headers are replaced).
    pub trusted_proxies: crate::trusted_proxies::TrustedProxies,
    /// `proxy_protocol = true`: every connection must come from `trusted_proxies` and start with a
    /// PROXY protocol (v1 or v2) header (default false).
    pub proxy_protocol: bool,
}

/// The `[limits]` table. Durations are written `"10s"`, `"2m"`, `"500ms"` or as whole seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// A client must finish the TLS handshake, and each request's headers, within this (default 10 s).
    pub header_read_timeout: Duration,
    /// A connection that moves no bytes and has no request in flight is closed after this (default 60 s).
    pub idle_timeout: Duration,
    /// Requests whose headers are larger get 431 (default 16 KiB).
    pub max_header_bytes: usize,
    /// Connections beyond this many are closed at once (default 10,000).
    pub max_connections: usize,
    /// On SIGTERM, requests in flight and open websockets get this long to finish (default 30 s).
    pub grace_period: Duration,
    /// Connecting to an upstream may take this long before the client gets 502 (default 5 s).
    pub upstream_connect_timeout: Duration,
    /// An upstream must start answering within this, else the client gets 504 (default 60 s).
    pub upstream_response_timeout: Duration,
    /// A WebSocket (or other upgraded) tunnel that moves no bytes either way for this long is closed
    /// (default 1 h; a route's `tunnel_idle_timeout` overrides it).
    pub tunnel_idle_timeout: Duration,
}

/// The longest `tunnel_idle_timeout` accepted: a week. Longer would make the idle timeout no bound.
pub const MAX_TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 16 * 1024,
            max_connections: 10_000,
            grace_period: Duration::from_secs(30),
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_response_timeout: Duration::from_secs(60),
            tunnel_idle_timeout: DEFAULT_TUNNEL_IDLE_TIMEOUT,
        }
    }
}

/// The `[renewal]` table.
#[derive(Debug, Clone, Copy)]
pub struct RenewalConfig {
    /// Renew when less than this fraction of the certificate's lifetime remains (default 1/3).
    pub remaining_fraction: f64,
    /// The wait after a first failed attempt; each further failure doubles it (default 5 minutes).
    pub first_retry: Duration,
    /// Retries never wait longer than this (default 6 hours)...
    pub longest_retry: Duration,
    /// ...until this many failures in a row, after which attempts slow to one a day, so that a name
    /// that keeps failing cannot burn the CA's rate limits (default 5; 0 never slows).
    pub slow_after_failures: u32,
}

impl Default for RenewalConfig {
    fn default() -> Self {
        Self {
            remaining_fraction: 1.0 / 3.0,
            first_retry: Duration::from_secs(5 * 60),
            longest_retry: Duration::from_secs(6 * 3600),
            slow_after_failures: 5,
        }
    }
}

/// `[status]`, `[metrics]` and `[hook]`: what operators watch and plug in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationsConfig {
    /// `[status] warn_days`: `certd status` exits 1 (warning) when a certificate has fewer days left,
    /// or its last renewal failed (default 14).
    pub warn_days: i64,
    /// `[status] critical_days`: `certd status` exits 2 (critical) when a certificate has fewer days
    /// left, is expired, or is missing (default 7).
    pub critical_days: i64,
    /// `[metrics] listen`: where `certd run` serves Prometheus metrics at `/metrics` (off by default;
    /// keep it on loopback or a private network).
    pub metrics_listen: Option<SocketAddr>,
    /// `[hook] command`: a program (argv, no shell) run after each renewal and each failed attempt,
    /// with the site and file paths in its environment.
    pub hook: Option<Vec<String>>,
    /// `[preflight] enabled`: check DNS and reachability before the first order for a name (default
    /// true).
    pub preflight: bool,
    /// `[preflight] resolver`: the DNS server preflight asks (default: the system's resolver).
    pub preflight_resolver: Option<SocketAddr>,
}

impl Default for OperationsConfig {
    fn default() -> Self {
        Self {
            warn_days: 14,
            critical_days: 7,
            metrics_listen: None,
            hook: None,
            preflight: true,
            preflight_resolver: None,
        }
    }
}

/// One `[[site]]`: one certificate covering all of `names`, and how `certd run` answers for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteConfig {
    /// The DNS names, lower-cased, in file order; the first one names the site.
    pub names: Vec<String>,
    /// The `[[site.route]]` tables, in file order (the longest matching prefix wins).
    pub routes: Vec<RouteConfig>,
    /// `[site.error_pages]`: a file served as the body of each listed status.
    pub error_pages: BTreeMap<u16, PathBuf>,
    /// The ACME profile for this site's certificate, overriding `[acme] profile`.
    pub profile: Option<String>,
    /// `headers`, `hsts`, `max_body_size`, `expires`: the site-wide HTTP rules.
    pub http: crate::proxy::http_rules::HttpRules,
    /// `[[site.error_page]]`: the error pages of answers made outside any route (each route
    /// carries the list it inherited or set, [`RouteConfig::error_page`]).
    pub error_page: std::sync::Arc<Vec<crate::proxy::error_page::ErrorPage>>,
    /// `challenge` (else `[acme] challenge`): how the CA validates the names; `None` for the
    /// automatic choice (HTTP-01, then TLS-ALPN-01 when preflight finds port 80 unreachable).
    pub challenge: Option<ChallengeKind>,
    /// How this site's DNS-01 records are published: its own `[site.dns]` / `dns_hook`, else
    /// `[acme.dns]` / `dns_hook`; `None` when neither is configured.
    pub dns: Option<DnsConfig>,
}

/// One `[[site.route]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// The path prefix it answers, starting with `/` (for `exact` routes the path, for `regex` /
    /// `iregex` routes the pattern, for named routes the `@name`; see `location`).
    pub path: String,
    /// Where its requests go.
    pub target: RouteTargetConfig,
    /// `tunnel_idle_timeout` (proxy routes): overrides `[limits] tunnel_idle_timeout` for the
    /// WebSocket tunnels of this route.
    pub tunnel_idle_timeout: Option<Duration>,
    /// `allow_dotfiles` (static routes): serve files and folders whose name starts with `.`
    /// (default false: 404, except under `/.well-known/`).
    pub allow_dotfiles: bool,
    /// `access`, `auth_basic`, `auth_basic_user_file`, `satisfy`: who may use the route, with the
    /// site-level keys already inherited; `None` when it is open to everyone.
    pub access: Option<std::sync::Arc<crate::access::Policy>>,
    /// How `path` is matched: `path` (prefix), `prefix_priority` (`^~`), `exact`, `regex`,
    /// `iregex` or `name`.
    pub location: crate::proxy::LocationMatch,
    /// Nested `[[site.route.route]]` tables, in file order.
    pub routes: Vec<RouteConfig>,
    /// `try_files` (static routes).
    pub try_files: Option<crate::proxy::TryFiles>,
    /// `compress`: compress this route's responses (proxied or static) for clients that accept
    /// it; `None` when off.
    pub compress: Option<std::sync::Arc<crate::compression::Policy>>,
    /// `precompressed` (static routes): serve `file.br` / `file.zst` / `file.gz` next to a file to
    /// clients that accept the encoding.
    pub precompressed: bool,
    /// `headers`, `rewrite`, `max_body_size`, `expires`: the route's HTTP rules.
    pub http: crate::proxy::http_rules::HttpRules,
    /// For proxy routes to a group (`proxy = "http://<name>"`): the `[[upstream]]`'s name.
    pub upstream: Option<String>,
    /// `connect_timeout`, `read_timeout`, `send_timeout` (proxy routes): override `[limits]`.
    pub timeouts: ProxyTimeouts,
    /// `index` (root and alias routes, inherited from the site or enclosing route): the names a
    /// folder request looks for; default `["index.html"]`.
    pub index: Vec<String>,
    /// `[[site.route.error_page]]`, or the list inherited from the enclosing route or the site.
    pub error_page: std::sync::Arc<Vec<crate::proxy::error_page::ErrorPage>>,
    /// `intercept_errors` (proxy and FastCGI routes): the upstream's own errors get the error
    /// pages too.
    pub intercept_errors: bool,
    /// `strip_prefix` (proxy prefix routes): the route's prefix is cut from the path before it is
    /// appended to the proxy's own path (nginx `location /app/ { proxy_pass http://up/; }`).
    pub strip_prefix: bool,
    /// `limit_except`: the access rules of the methods it does not list (nginx `limit_except`);
    /// `None`: every method has the route's own.
    pub limit_except: Option<std::sync::Arc<crate::access::LimitExcept>>,
    /// `auth_request`: the path of this site whose subrequest must answer 2xx before the route's
    /// target runs (nginx `auth_request`); `None`: no subrequest.
    pub auth_request: Option<String>,
    /// `internal`: only internal requests (error pages, `try_files` fallbacks, `auth_request`)
    /// reach the route; a client's request for its path gets 404 (nginx `internal`).
    pub internal: bool,
    /// `cache` (proxy routes): the route's response cache (nginx `proxy_cache`); `None`: off.
    pub cache: Option<std::sync::Arc<crate::proxy::cache::RouteCache>>,
}

/// What a route does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTargetConfig {
    /// `proxy = "http://127.0.0.1:8080"`: reverse-proxy to this upstream.
    Proxy(hyper::Uri),
    /// `root = "/srv/www"`: serve files below this folder (nginx `root` semantics: the whole request
    /// path is appended).
    Root(PathBuf),
    /// `fastcgi = "unix:/run/php/php-fpm.sock"` with `root`: run PHP from that document root.
    Fastcgi(crate::fastcgi::FastcgiTarget),
    /// `return = { status = 301, location = "..." }`: answer without an upstream.
    Return(crate::proxy::rewrite::Return),
    /// `alias = "/srv/avatars"`: serve files below this folder with the route's prefix replaced by
    /// it (nginx `alias`).
    Alias(PathBuf),
}

impl SiteConfig {
    /// The site's name: its first DNS name. It names the folder under `state/certs/`.
    pub fn name(&self) -> &str {
        &self.names[0]
    }

    /// A site with these names and nothing to serve (for tests and tools).
    pub fn with_names(names: Vec<String>) -> Self {
        Self {
            names,
            routes: Vec::new(),
            error_pages: BTreeMap::new(),
            profile: None,
            http: Default::default(),
            error_page: Default::default(),
            challenge: None,
            dns: None,
        }
    }
}

impl Config {
    /// The sites named in `selected` by their first name (case-insensitive), in that order, or every
    /// site when `selected` is empty. An unknown name is an error that lists the known ones.
    pub fn select_sites(&self, selected: &[String]) -> Result<Vec<SiteConfig>, String> {
        if selected.is_empty() {
            return Ok(self.sites.clone());
        }
        selected
            .iter()
            .map(|wanted| {
                let wanted = wanted.to_ascii_lowercase();
                self.sites
                    .iter()
                    .find(|site| site.name() == wanted)
                    .cloned()
                    .ok_or_else(|| {
                        let known: Vec<&str> = self.sites.iter().map(SiteConfig::name).collect();
                        format!(
                            "{}: no site named {wanted:?} (sites are named by their first name: {})",
                            self.source.display(),
                            known.join(", ")
                        )
                    })
            })
            .collect()
    }
}

/// Everything wrong with a configuration file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file that was read.
    pub file: PathBuf,
    /// Each problem found, in file order.
    pub problems: Vec<ConfigProblem>,
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The key in dotted form (`acme.agree_tos`, `site[1].names[0]`), empty when the whole file is at fault.
    pub key: String,
    /// The 1-based line, where it is known.
    pub line: Option<usize>,
    /// What is wrong, in words an operator can act on.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        write!(
            f,
            "{}: {count} problem{} in the configuration",
            self.file.display(),
            if count == 1 { "" } else { "s" }
        )?;
        for problem in &self.problems {
            write!(f, "\n  {}", self.file.display())?;
            if let Some(line) = problem.line {
                write!(f, ":{line}")?;
            }
            if !problem.key.is_empty() {
                write!(f, ": {}", problem.key)?;
            }
            write!(f, ": {}", problem.reason)?;
        }
        Ok(())
    }
}

/// Reads and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
        file: path.to_path_buf(),
        problems: vec![ConfigProblem {
            key: String::new(),
            line: None,
            reason: format!("cannot read the file: {err}"),
        }],
    })?;
    from_toml(&text, path)
}

/// Parses and validates configuration `text`; `path` is where it came from (for messages and for
/// resolving relative paths against its folder).
pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let raw: raw::RawConfig = toml::from_str(text).map_err(|err| ConfigError {
        file: path.to_path_buf(),
        problems: raw::deserializer_problems(text, &err),
    })?;
    let mut problems = problems::Problems::new(text);
    let config = validate::validate(raw, path, &mut problems);
    if problems.found.is_empty() {
        Ok(config)
    } else {
        let mut problems = problems.found;
        // Stable, so problems on one line keep the order they were found in; those without a line
        // (a missing table) come last.
        problems.sort_by_key(|problem| problem.line.unwrap_or(usize::MAX));
        Err(ConfigError {
            file: path.to_path_buf(),
            problems,
        })
    }
}

/// The sites of `config` with no `[[site.route]]`: certd obtains and renews their certificates
/// but answers 404 for every path of theirs. Legitimate for certificates used by another server
/// (`certd issue`, or the daemon renewing them); `certd check` and `certd run` warn about each.
pub fn sites_without_routes(config: &Config) -> impl Iterator<Item = &SiteConfig> {
    config.sites.iter().filter(|site| site.routes.is_empty())
}

/// The warning for a site without routes: not an error, since a site can exist only for its
/// certificate (used by another server), but under `certd run` every request to it gets 404.
pub fn no_routes_warning(site: &str) -> String {
    format!(
        "warning: site {site} has no [[site.route]]: certd obtains and renews its certificate, \
         but `certd run` answers 404 for every path of it (fine if the certificate is for \
         another server; otherwise add its routes)"
    )
}
