//! The reverse proxy: a site's routes (path prefix → upstream or static root), forwarding requests to
//! upstreams over one pooled HTTP/1.1 client, WebSocket tunnels, and error pages.
//!
//! It reproduces the nginx setup certd replaces:
//!
//! ```text
//! location /        { proxy_pass http://localhost:8080; proxy_http_version 1.1; ... }
//! location /ws      { proxy_pass http://localhost:8081; ... websocket upgrade ... }
//! location /static/ { root /srv/www; }
//! error_page 404 /404.html;  error_page 502 /50x.html;
//! ```
//!
//! Every request's path is normalised first ([`path`]: dot segments, merged slashes, decoded
//! unreserved characters); routes match that path, static roots look it up, and upstreams receive it.
//! Routes are matched with nginx's `location` precedence ([`location`]: exact, prefix, `^~`,
//! regexes, named and nested routes), and static routes may `try_files` ([`try_files`]).
//! Requests arrive over TLS as HTTP/1.1 or HTTP/2 and are forwarded over HTTP/1.1 with their bodies
//! streamed both ways. Hop-by-hop headers are dropped in both directions, `Host` is kept and the
//! `X-Forwarded-*`, `X-Real-IP` and `Forwarded` headers are set (a client's own are believed only
//! from `[https] trusted_proxies`). Error pages replace only the responses certd makes itself (no
//! route, static misses, unreachable or slow upstreams); an upstream's own 404 passes through, as
//! with nginx's default `proxy_intercept_errors off`.

mod alias;
mod auth_request;
mod body;
pub mod cache;
pub mod condition;
pub mod error_page;
mod headers;
pub mod http_rules;
mod index;
pub mod location;
mod path;
pub mod pattern;
pub mod response_headers;
pub mod rewrite;
#[cfg(test)]
mod tests;
pub mod try_files;
mod upstream;
pub mod value_map;
pub mod variables;
mod websocket;

pub use location::{LocationMatch, LocationRegex};
pub use try_files::{TryFallback, TryFiles};
pub(crate) use upstream::UpstreamClient;
pub use upstream::{
    Balance, NextUpstream, ProxyTimeouts, ServerAddress, ServerConfig, UpstreamConfig,
    UpstreamGroup, MAX_SERVERS,
};
pub use websocket::{ConnectionPermit, DEFAULT_TUNNEL_IDLE_TIMEOUT};

use std::collections::HashMap;
use std::error::Error as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use self::path::NormalPath;
use crate::compression;
use crate::static_files;
use crate::trusted_proxies::TrustedProxies;

// The body type and the small generated responses live below both the proxy and the file server
// (src/response.rs); imported here, so the proxy's own modules name them through `super::`.
use crate::response::{empty_body, full_body, status_response, ProxyBody};

/// Where a route sends its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTarget {
    /// Forward to an HTTP upstream, `http://host:port` with an optional base path that is put in
    /// front of the request's path.
    Proxy(Uri),
    /// Serve files under this directory with nginx `root` semantics: the request's whole path is
    /// appended to it (see [`static_files::serve`]).
    Static(PathBuf),
    /// Run PHP scripts over FastCGI (and serve the other files) from a document root, like Caddy's
    /// `php_fastcgi` (see [`crate::fastcgi`]).
    Fastcgi(crate::fastcgi::FastcgiTarget),
    /// Answer without an upstream (nginx `return`).
    Return(rewrite::Return),
    /// Serve files under this directory with nginx `alias` semantics: the route's prefix is
    /// replaced by it.
    Alias(PathBuf),
}

/// One `location`: a path prefix and where its requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The path prefix, e.g. `"/"`, `"/ws"`, `"/static/"` (the exact path, regex pattern or
    /// `@name` for other [`Route::location`]s); see [`SiteRoutes::route`] for matching.
    pub path: String,
    /// Where matching requests go.
    pub target: RouteTarget,
    /// For proxy routes: how long a WebSocket tunnel may move no bytes before it is closed, in place
    /// of [`ProxyLimits::tunnel_idle_timeout`].
    pub tunnel_idle_timeout: Option<Duration>,
    /// For static routes: serve paths with a segment starting with `.` (otherwise 404, except
    /// `/.well-known/`).
    pub allow_dotfiles: bool,
    /// Who may use the route (`access`, `auth_basic`, `satisfy`), checked before its target runs;
    /// `None`: everyone.
    pub access: Option<std::sync::Arc<crate::access::Policy>>,
    /// How [`Route::path`] is matched (prefix, `^~`, exact, regex, named); see [`location`].
    pub location: LocationMatch,
    /// Routes nested in this one, searched when it is the longest prefix (or the regex) that
    /// matched, as nginx searches nested locations.
    pub routes: Vec<Route>,
    /// For static routes: files to look for before falling back (nginx `try_files`).
    pub try_files: Option<TryFiles>,
    /// Compress responses (proxied or static) for clients that accept it; `None` when off, which
    /// costs nothing per request.
    pub compress: Option<Arc<compression::Policy>>,
    /// For static routes: send `file.br` / `file.zst` / `file.gz` in place of `file` to clients
    /// that accept it.
    pub precompressed: bool,
    /// Headers, rewrites and limits of this route ([`http_rules`]).
    pub http: http_rules::HttpRules,
    /// For proxy routes to an `[[upstream]]` group: the group, whose servers take the place of the
    /// target's host (its base path still applies). `None`: the target's host is the one server.
    pub upstream: Option<std::sync::Arc<UpstreamGroup>>,
    /// For proxy routes: connect, read and send timeouts in place of [`ProxyLimits`]'.
    pub timeouts: ProxyTimeouts,
    /// For `root` and `alias` routes: the names a folder request looks for, in order (nginx
    /// `index`; see [`index`]).
    pub index: Vec<String>,
    /// The error pages of this route's answers (its own list, or the one it inherited), see
    /// [`error_page`]; empty: none.
    pub error_page: Arc<Vec<error_page::ErrorPage>>,
    /// For proxy and FastCGI routes: the upstream's own error answers get the error pages too
    /// (nginx `proxy_intercept_errors on`).
    pub intercept_errors: bool,
    /// For proxy prefix routes: the route's prefix is cut from the request's path before it is
    /// appended to the target's path (nginx `proxy_pass` with a URI part); see [`stripped`].
    pub strip_prefix: bool,
    /// The access policy of the methods nginx's `limit_except` does not list; `None`: every
    /// method has [`Route::access`].
    pub limit_except: Option<Arc<crate::access::LimitExcept>>,
    /// The path whose subrequest must answer 2xx before the target runs (nginx `auth_request`;
    /// see [`auth_request`]).
    pub auth_request: Option<String>,
    /// Only internal requests reach it; a client's request that matches it gets 404.
    pub internal: bool,
    /// For proxy routes: the response cache ([`cache`]); `None`: every request goes upstream.
    pub cache: Option<Arc<cache::RouteCache>>,
}

impl Route {
    /// A prefix route for `path` with every option at its default (no timeouts of its own, no
    /// access rules, no compression, no nested routes): routes built in code start here.
    pub fn new(path: impl Into<String>, target: RouteTarget) -> Self {
        Self {
            path: path.into(),
            target,
            tunnel_idle_timeout: None,
            allow_dotfiles: false,
            access: None,
            location: LocationMatch::Prefix,
            routes: Vec::new(),
            try_files: None,
            compress: None,
            precompressed: false,
            http: http_rules::HttpRules::default(),
            upstream: None,
            timeouts: ProxyTimeouts::default(),
            index: static_files::DEFAULT_INDEX
                .iter()
                .map(|name| (*name).to_owned())
                .collect(),
            error_page: Arc::default(),
            intercept_errors: false,
            strip_prefix: false,
            limit_except: None,
            auth_request: None,
            internal: false,
            cache: None,
        }
    }
}

/// The routes and error pages of one site.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiteRoutes {
    /// The site's routes, in config order (regexes are tried in it); see [`SiteRoutes::route`].
    pub routes: Vec<Route>,
    /// Files served in place of certd's own error responses, by status code (like nginx
    /// `error_page`): 404 (no route, static miss), 502 (upstream unreachable), 504 (upstream too
    /// slow), 500, 503, …
    pub error_pages: HashMap<u16, PathBuf>,
    /// The site's name and site-wide headers and limits ([`http_rules`]).
    pub http: http_rules::SiteHttp,
    /// `[[site.error_page]]`: the error pages of answers made outside any route (no route
    /// matched, a refused path); routes carry their own ([`Route::error_page`]).
    pub error_page: Arc<Vec<error_page::ErrorPage>>,
    /// Whether the site or any of its routes has error pages: only then is a copy of each
    /// request's head kept for them.
    pub has_error_pages: bool,
}

impl SiteRoutes {
    /// The route for a request path, by nginx's `location` precedence ([`location`]): an exact
    /// route, else the longest prefix if it is `^~`, else the first matching regex, else the longest
    /// prefix. Named routes are never matched by path.
    ///
    /// A prefix ending in `/` matches every path under it (`"/static/"` matches `"/static/a.css"`
    /// but not `"/static"`); any other prefix matches itself and the paths below it (`"/ws"` matches
    /// `"/ws"` and `"/ws/x"` but not `"/wsx"`).
    pub fn route(&self, path: &str) -> Option<&Route> {
        location::find(&self.routes, path)
    }
}

/// Timeouts and pool sizes for the connections to upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyLimits {
    /// How long a TCP connect to an upstream may take before the request fails with 504.
    pub connect_timeout: Duration,
    /// How long an upstream may take to start answering before the request fails with 504, counted
    /// from when the request body has been forwarded in full (at once for requests without one), so
    /// a long upload does not count against it. A response body, once started, may stream for as
    /// long as it needs.
    pub response_timeout: Duration,
    /// How long an idle keep-alive connection to an upstream stays in the pool.
    pub pool_idle_timeout: Duration,
    /// How many idle keep-alive connections are kept per upstream.
    pub pool_max_idle_per_host: usize,
    /// How long a WebSocket tunnel may move no bytes either way before it is closed, unless its
    /// route says otherwise.
    pub tunnel_idle_timeout: Duration,
}

impl Default for ProxyLimits {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            pool_idle_timeout: Duration::from_secs(90),
            // Enough idle connections for many HTTP/2 streams in flight at once; idle ones still
            // close after `pool_idle_timeout`.
            pool_max_idle_per_host: 1024,
            tunnel_idle_timeout: DEFAULT_TUNNEL_IDLE_TIMEOUT,
        }
    }
}

/// Which upstream (or static root) answered a request, put in the extensions of every response
/// from [`Proxy::handle`] that matched a route, for the access log: `"http://host:port"` (with the
/// base path, if any) for upstreams, `"static:<root>"` for static routes; for an `[[upstream]]`
/// group, the server that answered (`"http://host:port"` or `"unix:/path"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUsed(pub String);

/// Forwards requests to upstreams and serves static routes, for every site.
///
/// One pooled client ([`upstream::UpstreamClient`]) is shared by all sites, and by every worker in
/// the daemon, so keep-alive connections to an upstream are reused across requests. WebSocket tunnels run as tasks owned by the proxy; [`Proxy::close_tunnels`] ends
/// them at shutdown.
#[derive(Debug)]
pub struct Proxy {
    client: upstream::UpstreamClient,
    limits: ProxyLimits,
    tunnels: TaskTracker,
    shutdown: CancellationToken,
    trusted_proxies: TrustedProxies,
    access: crate::access::Guard,
    /// Tasks reading away the bodies of requests answered early ([`Proxy::linger`]).
    lingering: TaskTracker,
}

/// The most of an unread request body [`Proxy::linger`] reads away.
const LINGER_BYTES: u64 = 64 * 1024 * 1024;
/// How long [`Proxy::linger`] reads in all (nginx's `lingering_time`).
const LINGER_TIME: Duration = Duration::from_secs(30);
/// How long [`Proxy::linger`] waits for the next piece (nginx's `lingering_timeout`).
const LINGER_IDLE: Duration = Duration::from_secs(5);

impl Proxy {
    /// A proxy with an empty connection pool of its own. Must be called inside a Tokio runtime.
    pub fn new(limits: ProxyLimits) -> Self {
        Self::with_client(limits, upstream_client(&limits))
    }

    /// A proxy sending to upstreams over `client`, a pool it shares with other proxies (the
    /// daemon's workers).
    pub(crate) fn with_client(limits: ProxyLimits, client: upstream::UpstreamClient) -> Self {
        Self {
            client,
            limits,
            tunnels: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            trusted_proxies: TrustedProxies::default(),
            access: crate::access::Guard::default(),
            lingering: TaskTracker::new(),
        }
    }

    /// This proxy, believing the `X-Forwarded-For` chain of requests whose connection comes from
    /// `trusted` (see [`Proxy::client_ip`]); by default it believes nobody's.
    pub fn with_trusted_proxies(mut self, trusted: TrustedProxies) -> Self {
        self.trusted_proxies = trusted;
        self
    }

    /// The real client of a request whose connection came from `peer` (the PROXY header's source
    /// where the listener speaks the PROXY protocol): `peer`, unless it is a trusted proxy and the
    /// request's `X-Forwarded-For` names someone behind it. What the upstream gets as `X-Real-IP`.
    pub fn client_ip(
        &self,
        headers: &hyper::HeaderMap,
        peer: std::net::IpAddr,
    ) -> std::net::IpAddr {
        headers::real_client(headers, peer, &self.trusted_proxies)
    }

    /// Handles one request that arrived over TLS for a configured site, from `client`.
    ///
    /// Never fails: problems become error responses (404, 502, 504, …), replaced by the site's error
    /// pages where it has them. For WebSocket upgrades to work, the server connection that calls this
    /// must be served with upgrades enabled (`serve_connection_with_upgrades`).
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        site: &SiteRoutes,
        client: SocketAddr,
    ) -> Response<ProxyBody> {
        if !site.has_error_pages {
            return self.handle_request(request, site, client).await;
        }
        let saved = error_page::Saved::of(&request);
        let response = Box::pin(self.handle_request(request, site, client)).await;
        Box::pin(self.apply_error_page(site, saved, response, client)).await
    }

    /// [`Proxy::handle`] before `error_page`.
    async fn handle_request(
        &self,
        request: Request<Incoming>,
        site: &SiteRoutes,
        client: SocketAddr,
    ) -> Response<ProxyBody> {
        let head = request.method() == Method::HEAD;
        // `$request_uri` is what the client sent, before normalising.
        let request_uri = site.http.active.then(|| {
            let raw = request.uri().path_and_query();
            raw.map_or_else(|| "/".to_owned(), |raw| raw.as_str().to_owned())
        });
        // Routing, static files and upstreams all see this one path, never the raw one.
        let (request, path) = match normalise_request_path(request) {
            Ok(normalised) => normalised,
            Err(refused) => {
                debug!(%refused, "request path refused");
                let response = status_response(StatusCode::BAD_REQUEST);
                return Box::pin(error_page(site, response, head)).await;
            }
        };
        let facts = request_uri.map(|request_uri| {
            let client = self.client_ip(request.headers(), client.ip());
            http_rules::facts(&request, &path, request_uri, client, &site.http)
        });
        let route = site.route(path.as_str()).filter(|route| {
            // nginx `internal`: a client's own request never reaches the route.
            if route.internal {
                debug!(path = path.as_str(), "internal route refused to a client");
            }
            !route.internal
        });
        let Some(route) = route else {
            debug!(path = path.as_str(), "no route");
            // nginx checks the server's body limit before it answers that nothing matched.
            let status = if http_rules::over_site_limit(&site.http, request.headers()) {
                self.linger(request.into_body());
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::NOT_FOUND
            };
            let response = Box::pin(error_page(site, status_response(status), head)).await;
            return match &facts {
                Some(facts) => http_rules::finish(response, None, &site.http, facts),
                None => response,
            };
        };
        if let Some(mut facts) = facts {
            // Boxed: sites without rules never carry this future's state.
            let response = self.handle_with_rules(request, site, route, path, client, &mut facts);
            return Box::pin(response).await;
        }
        self.handle_route(request, site, route, path, client, head)
            .await
            .0
    }

    /// [`Proxy::handle`] for a site with [`http_rules`]: rewrites, `return`, limits and headers
    /// around [`Proxy::handle_route`].
    async fn handle_with_rules(
        &self,
        request: Request<Incoming>,
        site: &SiteRoutes,
        route: &Route,
        path: NormalPath,
        client: SocketAddr,
        facts: &mut variables::RequestFacts,
    ) -> Response<ProxyBody> {
        let head = request.method() == Method::HEAD;
        let (request, path, route) = match http_rules::prepare(site, route, request, path, facts) {
            http_rules::Prepared::Go(request, path, route) => (request, path, route),
            http_rules::Prepared::TooLarge(request, route) => {
                self.linger(request.into_body());
                let response = status_response(StatusCode::PAYLOAD_TOO_LARGE);
                let response = error_page::mark(route, error_page(site, response, head).await);
                return http_rules::finish(response, Some(route), &site.http, facts);
            }
            http_rules::Prepared::Answer(response, route) => {
                let response = error_page::mark(route, error_page(site, response, head).await);
                return http_rules::finish(response, Some(route), &site.http, facts);
            }
        };
        let response = match &route.target {
            RouteTarget::Return(answer) => {
                let mut response = http_rules::answer(answer, facts, head);
                response
                    .extensions_mut()
                    .insert(UpstreamUsed("return".to_owned()));
                error_page::mark(route, response)
            }
            _ => {
                // The response rules are those of the route that answered: after `try_files`
                // or `index` handed the request on, nginx applies the `add_header` etc. of the
                // location it ended in, not of the one it first matched.
                let (response, answered) = self
                    .handle_route(request, site, route, path, client, head)
                    .await;
                facts.upstream_cache_status = response
                    .extensions()
                    .get::<cache::Status>()
                    .map(|status| status.as_str());
                return http_rules::finish(response, Some(answered), &site.http, facts);
            }
        };
        http_rules::finish(response, Some(route), &site.http, facts)
    }

    /// Serves a request on the route it matched; returns the answer and the route that gave it
    /// (another one when `try_files` or `index` handed the request on).
    async fn handle_route<'a>(
        &self,
        request: Request<Incoming>,
        site: &'a SiteRoutes,
        route: &'a Route,
        path: NormalPath,
        client: SocketAddr,
        head: bool,
    ) -> (Response<ProxyBody>, &'a Route) {
        // nginx's access phase (allow/deny, auth_basic, limit_except, auth_request) runs in the
        // location the request matched, before `try_files` hands it to another one (whose own
        // rules are then checked as well, in `serve_route`).
        let matched = route;
        if route.try_files.is_some() {
            if let Some(refused) = Box::pin(self.gate(&request, site, route, client)).await {
                self.linger(request.into_body());
                return (Box::pin(error_page(site, refused, head)).await, route);
            }
        }
        let original = crate::request_uri::original(request.extensions(), request.uri());
        let resolved = try_files::resolve_from(site, route, path, original).await;
        let (route, request, path) = match resolved {
            try_files::Resolved::Route(next, routed) => match with_path(request, routed) {
                Ok((mut request, path)) => {
                    if !std::ptr::eq(next, route) {
                        http_rules::rerouted(&mut request, site, next);
                    }
                    (next, request, path)
                }
                Err(status) => {
                    let response = Box::pin(error_page(site, status_response(status), head));
                    return (response.await, route);
                }
            },
            try_files::Resolved::Status(status) => {
                let response = Box::pin(error_page(site, status_response(status), head));
                return (response.await, route);
            }
            try_files::Resolved::NoRoute => {
                debug!("no route");
                let response = status_response(StatusCode::NOT_FOUND);
                return (Box::pin(error_page(site, response, head)).await, route);
            }
        };
        // nginx `index`: a folder continues as a request for its index file, routed again.
        let original = crate::request_uri::original(request.extensions(), request.uri());
        let indexed = index::resolve(site, route, &path, original).await;
        let (route, request, path) = match indexed {
            Some((next, indexed)) => match with_path(request, indexed) {
                Ok((request, path)) => (next, request, path),
                Err(status) => {
                    let response = Box::pin(error_page(site, status_response(status), head));
                    return (response.await, route);
                }
            },
            None => (route, request, path),
        };
        let gated = std::ptr::eq(matched, route) && matched.try_files.is_some();
        let response = self
            .serve_route(request, site, route, path, client, head, gated)
            .await;
        (error_page::mark(route, response), route)
    }

    /// The answer refusing `request` by `route`'s access rules or its `auth_request`
    /// subrequest; `None` lets it through.
    async fn gate(
        &self,
        request: &Request<Incoming>,
        site: &SiteRoutes,
        route: &Route,
        client: SocketAddr,
    ) -> Option<Response<ProxyBody>> {
        if let Some(refused) = self.refused_access(request, route, client).await {
            return Some(refused);
        }
        let uri = route.auth_request.as_ref()?;
        let (target, headers) = (request.uri(), request.headers());
        Box::pin(self.auth_request(site, uri, target, headers, client)).await
    }

    /// Serves a request on the route it ends up on (after `try_files` and `index`); `gated`: its
    /// access rules and `auth_request` were checked already (see [`Proxy::handle_route`]).
    #[allow(clippy::too_many_arguments)]
    async fn serve_route(
        &self,
        request: Request<Incoming>,
        site: &SiteRoutes,
        route: &Route,
        path: NormalPath,
        client: SocketAddr,
        head: bool,
        gated: bool,
    ) -> Response<ProxyBody> {
        if !gated {
            if let Some(refused) = Box::pin(self.gate(&request, site, route, client)).await {
                self.linger(request.into_body());
                return Box::pin(error_page(site, refused, head)).await;
            }
        }
        // Decided now: the request is consumed below. Nothing is done when the route is off.
        let compress = route.compress.as_deref().map(|policy| {
            (
                policy,
                policy.negotiate(request.method(), request.headers()),
            )
        });
        let response = match &route.target {
            RouteTarget::Static(root) => {
                if static_refuses(site, path.as_str()) {
                    debug!(path = path.as_str(), "PHP source refused on a static route");
                    let response = status_response(StatusCode::NOT_FOUND);
                    return Box::pin(error_page(site, response, head)).await;
                }
                let (parts, body) = request.into_parts();
                self.linger(body);
                // Boxed, like the error pages below: the future of every proxied request is moved
                // a few times on its way into hyper, so branches it rarely takes stay out of it.
                let response = Box::pin(async {
                    let response = static_files::serve_indexed(
                        root,
                        &parts,
                        route.allow_dotfiles,
                        route.precompressed,
                        &route.index,
                    )
                    .await;
                    error_page(site, response, head).await
                });
                let mut response = response.await;
                let used = UpstreamUsed(format!("static:{}", root.display()));
                response.extensions_mut().insert(used);
                response
            }
            RouteTarget::Proxy(upstream) => 'proxy: {
                // The cache sits before compression, as in nginx: it keeps the upstream's own
                // answer, and each client gets it encoded as it accepts.
                let proxy_host = upstream
                    .authority()
                    .map_or("", |authority| authority.as_str());
                let lookup = route
                    .cache
                    .as_ref()
                    .map(|store| store.lookup(&request, proxy_host));
                let pending = match lookup {
                    Some(cache::Lookup::Hit(mut response)) => {
                        self.linger(request.into_body());
                        let used = UpstreamUsed(upstream_label(upstream));
                        response.extensions_mut().insert(used);
                        break 'proxy response;
                    }
                    Some(cache::Lookup::Fetch(pending)) => Some(pending),
                    None => None,
                };
                let path = match route.strip_prefix {
                    true => stripped(&route.path, path),
                    false => path,
                };
                if let Some(group) = &route.upstream {
                    // Boxed: groups are the rarer case, and their retry loop is large.
                    return Box::pin(
                        self.forward_group(request, &path, upstream, group, route, site, client),
                    )
                    .await;
                }
                let label = upstream_label(upstream);
                let idle = route
                    .tunnel_idle_timeout
                    .or(route.timeouts.read)
                    .unwrap_or(self.limits.tunnel_idle_timeout);
                let response = self
                    .forward(
                        request,
                        &path,
                        upstream,
                        &label,
                        client,
                        idle,
                        route.timeouts,
                    )
                    .await;
                let mut response = match response {
                    Ok(response) => response,
                    Err(status) => Box::pin(error_page(site, status_response(status), head)).await,
                };
                response.extensions_mut().insert(UpstreamUsed(label));
                match pending {
                    // Boxed: only cached routes carry the store's state.
                    Some(pending) => Box::pin(pending.store(response)).await,
                    None => response,
                }
            }
            RouteTarget::Fastcgi(target) => {
                Box::pin(self.fastcgi(request, site, target, &route.index, client)).await
            }
            // Only sites with rules have `return` routes, and those are answered by
            // `handle_with_rules`; this keeps the match whole.
            RouteTarget::Return(answer) => {
                let facts = variables::RequestFacts::default();
                http_rules::answer(answer, &facts, head)
            }
            RouteTarget::Alias(folder) => {
                let (mut parts, body) = request.into_parts();
                self.linger(body);
                let response = Box::pin(async {
                    let allow = route.allow_dotfiles;
                    let response =
                        alias::serve(folder, &route.path, &mut parts, allow, &route.index).await;
                    error_page(site, response, head).await
                });
                let mut response = response.await;
                let used = UpstreamUsed(format!("static:{}", folder.display()));
                response.extensions_mut().insert(used);
                response
            }
        };
        match compress {
            Some((policy, negotiated)) => policy.apply(negotiated, response),
            None => response,
        }
    }

    /// The 403 or 401 for a request the route's access policy refuses; `None` lets it through.
    /// Checked on the real client address, the one `X-Real-IP` carries (nginx's realip module).
    async fn refused_access(
        &self,
        request: &Request<Incoming>,
        route: &Route,
        client: SocketAddr,
    ) -> Option<Response<ProxyBody>> {
        self.refused_by_headers(request.method(), request.headers(), route, client)
            .await
    }

    /// [`Proxy::refused_access`] for a request of which only the headers are at hand (an
    /// error page's internal request).
    async fn refused_by_headers(
        &self,
        method: &Method,
        headers: &hyper::HeaderMap,
        route: &Route,
        client: SocketAddr,
    ) -> Option<Response<ProxyBody>> {
        // An unlisted method of `limit_except` has that policy in place of the route's.
        let limited = route
            .limit_except
            .as_deref()
            .and_then(|limit| limit.policy_for(method));
        let policy = limited.or(route.access.as_deref())?;
        let ip = self.client_ip(headers, client.ip());
        match self.access.check(policy, headers, ip).await {
            crate::access::Outcome::Allowed => None,
            crate::access::Outcome::Forbidden => {
                debug!(%ip, route = route.path, "access denied");
                Some(status_response(StatusCode::FORBIDDEN))
            }
            crate::access::Outcome::Unauthorized(realm) => {
                let mut response = status_response(StatusCode::UNAUTHORIZED);
                // The realm was checked to be printable ASCII when the configuration was loaded.
                if let Ok(value) = HeaderValue::from_str(&crate::access::challenge(&realm)) {
                    response
                        .headers_mut()
                        .insert(hyper::header::WWW_AUTHENTICATE, value);
                }
                Some(response)
            }
        }
    }

    /// Answers a request for a FastCGI route (see [`crate::fastcgi`]).
    async fn fastcgi(
        &self,
        request: Request<Incoming>,
        site: &SiteRoutes,
        target: &crate::fastcgi::FastcgiTarget,
        index: &[String],
        peer: SocketAddr,
    ) -> Response<ProxyBody> {
        let head = request.method() == Method::HEAD;
        let client = self.client_ip(request.headers(), peer.ip());
        let connection = crate::fastcgi::params::Connection {
            client,
            client_port: (client == peer.ip()).then_some(peer.port()),
            server: request
                .extensions()
                .get::<crate::fastcgi::ServerAddr>()
                .map(|server| server.0),
        };
        let deadlines = crate::fastcgi::Deadlines {
            connect: self.limits.connect_timeout,
            read: self.limits.response_timeout,
        };
        let mut response =
            match crate::fastcgi::serve(target, index, request, connection, deadlines).await {
                crate::fastcgi::Answer::Script(mut response) => {
                    response.extensions_mut().insert(error_page::FromUpstream);
                    response
                }
                crate::fastcgi::Answer::Local(response) => error_page(site, response, head).await,
            };
        let used = UpstreamUsed(format!("fastcgi:{}", target.address));
        response.extensions_mut().insert(used);
        response
    }

    /// Reads and discards the rest of a request body certd answered without reading (a 413, a
    /// static file), as nginx's lingering close does: hyper would otherwise close the connection
    /// with the body unread, and a client still sending it gets a reset instead of the answer.
    /// Bounded: at most [`LINGER_BYTES`], [`LINGER_TIME`] in all and [`LINGER_IDLE`] between two
    /// reads (nginx's `lingering_time` and `lingering_timeout`), and it ends at shutdown.
    fn linger(&self, body: Incoming) {
        use hyper::body::Body as _;
        if body.is_end_stream() {
            return;
        }
        let shutdown = self.shutdown.child_token();
        self.lingering.spawn(async move {
            let drain = async {
                let mut body = body;
                let mut read: u64 = 0;
                while read < LINGER_BYTES {
                    match tokio::time::timeout(LINGER_IDLE, body.frame()).await {
                        Ok(Some(Ok(frame))) => {
                            let size = frame.data_ref().map_or(0, |data| data.len());
                            read = read.saturating_add(u64::try_from(size).unwrap_or(u64::MAX));
                        }
                        Ok(Some(Err(_)) | None) | Err(_) => break,
                    }
                }
            };
            tokio::select! {
                _ = tokio::time::timeout(LINGER_TIME, drain) => {}
                () = shutdown.cancelled() => {}
            }
        });
    }

    /// Ends every open WebSocket tunnel and waits for their tasks to finish. New tunnels can still be
    /// opened afterwards, but they end at once.
    pub async fn close_tunnels(&self) {
        self.shutdown.cancel();
        self.tunnels.close();
        self.tunnels.wait().await;
        self.lingering.close();
        self.lingering.wait().await;
    }

    /// How many WebSocket tunnels are open (or completing their handshake) now.
    pub fn open_tunnels(&self) -> usize {
        self.tunnels.len()
    }

    /// Sends `request` to `upstream`; `Err` is the status certd answers with itself.
    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        mut request: Request<Incoming>,
        path: &NormalPath,
        upstream: &Uri,
        label: &str,
        client: SocketAddr,
        tunnel_idle_timeout: Duration,
        timeouts: ProxyTimeouts,
    ) -> Result<Response<ProxyBody>, StatusCode> {
        let websocket =
            headers::is_websocket_upgrade(request.method(), request.version(), request.headers());
        let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut request));
        // Kept only by a tunnel: its connection slot stays taken for as long as the tunnel is open.
        let permit = request.extensions_mut().remove::<ConnectionPermit>();
        let rules = request
            .extensions_mut()
            .remove::<http_rules::UpstreamRules>();

        let (mut parts, body) = request.into_parts();
        let host = headers::original_host(&parts.uri, &parts.headers);
        let upgrade = websocket
            .then(|| parts.headers.get(hyper::header::UPGRADE).cloned())
            .flatten();
        parts.uri = headers::upstream_uri(upstream, path, parts.uri.query()).map_err(|error| {
            warn!(upstream = label, %error, "cannot build the upstream URI");
            StatusCode::BAD_GATEWAY
        })?;
        parts.version = Version::HTTP_11;
        headers::prepare_request_headers(
            &mut parts.headers,
            host,
            client.ip(),
            &self.trusted_proxies,
            upgrade,
        );
        if let Some(rules) = &rules {
            rules.apply(&mut parts.headers, upstream);
        }
        let (body, body_sent) = body::RequestBody::new(body);
        let body = body.with_limit(rules.and_then(|rules| rules.body_limit));
        let (body, stalled) = upstream::send_timeout(body, timeouts.send);
        let request = Request::from_parts(parts, body);

        // The upstream has `response_timeout` to start answering once it has the whole request.
        let response_timeout = timeouts.read.unwrap_or(self.limits.response_timeout);
        let deadline = async {
            body_sent.wait().await;
            tokio::time::sleep(response_timeout).await;
        };
        let sent = upstream::with_connect_timeout(timeouts.connect, self.client.request(request));
        let response = tokio::select! {
            answer = sent => match answer {
                Ok(response) => response,
                Err(error) => {
                    if body::exceeded_limit(&error) {
                        debug!(upstream = label, "request body over max_body_size");
                        return Err(StatusCode::PAYLOAD_TOO_LARGE);
                    }
                    let error = error_chain(&error);
                    if error.timed_out {
                        warn!(upstream = label, error = %error.text, "upstream connect timed out");
                        return Err(StatusCode::GATEWAY_TIMEOUT);
                    }
                    warn!(upstream = label, error = %error.text, "upstream request failed");
                    return Err(StatusCode::BAD_GATEWAY);
                }
            },
            () = deadline => {
                let timeout_ms = response_timeout.as_millis();
                warn!(upstream = label, timeout_ms, "upstream did not answer in time");
                return Err(StatusCode::GATEWAY_TIMEOUT);
            }
            () = stalled => {
                warn!(upstream = label, "upstream did not take the request body in time (send_timeout)");
                return Err(StatusCode::GATEWAY_TIMEOUT);
            }
        };
        self.finish_response(
            response,
            client_upgrade,
            permit,
            label,
            client,
            tunnel_idle_timeout,
            timeouts.read,
            None,
        )
    }

    /// The client's response to the upstream's `response`: a `101` starts the WebSocket tunnel
    /// (`client_upgrade` is the client's side of it), anything else streams through without its
    /// hop-by-hop headers, its body bounded by `read_timeout` between two reads when set.
    #[allow(clippy::too_many_arguments)]
    fn finish_response(
        &self,
        mut response: Response<upstream::UpstreamBody>,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
        permit: Option<ConnectionPermit>,
        label: &str,
        client: SocketAddr,
        tunnel_idle_timeout: Duration,
        read_timeout: Option<Duration>,
        held: Option<websocket::Held>,
    ) -> Result<Response<ProxyBody>, StatusCode> {
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_upgrade) = client_upgrade else {
                warn!(
                    upstream = label,
                    "upstream switched protocols without being asked"
                );
                return Err(StatusCode::BAD_GATEWAY);
            };
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            websocket::spawn_tunnel(
                &self.tunnels,
                self.shutdown.child_token(),
                websocket::Tunnel {
                    client: client_upgrade,
                    upstream: upstream_upgrade,
                    client_addr: client,
                    upstream_label: label.to_owned(),
                    idle_timeout: tunnel_idle_timeout,
                    permit,
                    held,
                },
            );
            let (mut parts, _body) = response.into_parts();
            headers::prepare_switching_headers(&mut parts.headers);
            return Ok(Response::from_parts(parts, empty_body()));
        }

        headers::remove_hop_by_hop(response.headers_mut());
        response.extensions_mut().insert(error_page::FromUpstream);
        Ok(response.map(|body| match read_timeout {
            None => body.map_err(std::io::Error::other).boxed(),
            Some(timeout) => upstream::ReadTimeoutBody::new(body, timeout).boxed(),
        }))
    }
}

/// An empty upstream connection pool sized by `limits`. Must be called inside a Tokio runtime.
pub(crate) fn upstream_client(limits: &ProxyLimits) -> upstream::UpstreamClient {
    upstream::UpstreamClient::new(
        upstream::UpstreamConnector::new(limits.connect_timeout),
        limits.pool_idle_timeout,
        limits.pool_max_idle_per_host,
    )
}

/// `raw` normalised as request paths are (for paths in the configuration), or why it is refused.
pub fn normalise_path(raw: &str) -> Result<String, String> {
    path::normalise(raw)
        .map(|path| path.to_string())
        .map_err(|refused| refused.to_string())
}

/// `request` with its URI's path replaced by the normalised one (the query kept as sent), and that
/// path; `Err` when the path is refused (400).
fn normalise_request_path(
    request: Request<Incoming>,
) -> Result<(Request<Incoming>, NormalPath), path::PathRefused> {
    let path = path::normalise(request.uri().path())?;
    // The normalised path is made of the bytes of a path that parsed, so setting it cannot fail;
    // if it did, refusing is the safe answer.
    with_path(request, path).map_err(|_| path::PathRefused::BadPercentEncoding)
}

/// `request` with its URI's path set to `path` (by `try_files`: the file found or the fallback
/// URI), the query kept; unchanged when it already has that path.
fn with_path(
    request: Request<Incoming>,
    path: NormalPath,
) -> Result<(Request<Incoming>, NormalPath), StatusCode> {
    if path.as_str() == request.uri().path() {
        return Ok((request, path));
    }
    let (mut parts, body) = request.into_parts();
    crate::request_uri::remember(&mut parts.extensions, &parts.uri);
    let path_and_query = match parts.uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    };
    let mut uri = hyper::http::uri::Parts::from(parts.uri);
    // A normalised path from the config or a request parses; if not, that is certd's fault: 500.
    uri.path_and_query = Some(
        hyper::http::uri::PathAndQuery::try_from(path_and_query)
            .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?,
    );
    parts.uri = Uri::from_parts(uri).map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok((Request::from_parts(parts, body), path))
}

/// The path sent to a `strip_prefix` route's upstream: `path` without the route's `prefix`, as a
/// path of its own (`/app/` with `/app/users/1` gives `/users/1`, `/app/` itself gives `/`), which
/// the target's path is then put in front of. With `proxy = "http://up/"` or `"http://up/v2/"` on
/// a route `/app/`, this is nginx's `proxy_pass` with a URI part replacing the location's prefix.
fn stripped(prefix: &str, path: NormalPath) -> NormalPath {
    let rest = path.as_str().strip_prefix(prefix).unwrap_or(path.as_str());
    let joined = format!("/{}", rest.trim_start_matches('/'));
    // Cut from a normal path at a segment boundary, so it is normal too; if not, keep the path.
    path::normalise(&joined).unwrap_or(path)
}

/// How an upstream is named in logs and [`UpstreamUsed`]: its URI without a trailing `/`.
fn upstream_label(upstream: &Uri) -> String {
    use std::fmt::Write as _;
    // One allocation: this runs for every proxied request.
    let mut label = String::with_capacity(64);
    // Writing to a String cannot fail.
    let _ = write!(label, "{upstream}");
    label.truncate(label.trim_end_matches('/').len());
    label
}

/// An error's message with its sources, and whether any of them is an I/O timeout.
struct ErrorChain {
    text: String,
    timed_out: bool,
}

fn error_chain(error: &upstream::UpstreamError) -> ErrorChain {
    let mut text = error.to_string();
    let mut timed_out = false;
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
        }
        source = cause.source();
    }
    ErrorChain { text, timed_out }
}

/// Replaces the body of certd's own error response with the site's error page for its status, if it
/// has one; other headers (e.g. `Allow`, `Content-Range`) are kept. Error pages are small, so the
/// file is read whole. An unreadable page is logged and the default body kept.
async fn error_page(
    site: &SiteRoutes,
    response: Response<ProxyBody>,
    head: bool,
) -> Response<ProxyBody> {
    if !response.status().is_client_error() && !response.status().is_server_error() {
        return response;
    }
    let Some(path) = site.error_pages.get(&response.status().as_u16()) else {
        return response;
    };
    let content = match tokio::fs::read(path).await {
        Ok(content) => content,
        Err(error) => {
            warn!(path = %path.display(), %error, "cannot read error page");
            return response;
        }
    };
    let (mut parts, _default) = response.into_parts();
    let content_type = static_files::content_type(path);
    parts.headers.insert(CONTENT_TYPE, content_type);
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(content.len()));
    let body = if head {
        empty_body()
    } else {
        full_body(content)
    };
    Response::from_parts(parts, body)
}

// Here rather than in fastcgi (which the proxy calls), so that fastcgi needs nothing of the proxy.
/// Whether a static route of `site` must refuse `path` because it is PHP source and the site runs
/// PHP: a `root` over a PHP docroot would otherwise send `wp-config.php` as text.
fn static_refuses(site: &SiteRoutes, path: &str) -> bool {
    crate::fastcgi::script::is_php_source(path)
        && site
            .routes
            .iter()
            .any(|route| matches!(route.target, RouteTarget::Fastcgi(_)))
}
