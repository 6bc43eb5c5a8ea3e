//! Upstream groups (`[[upstream]]`, nginx's `upstream` blocks; what one is: [`group`]): several
//! servers behind one route, picked by a balancer ([`balance`]), left out for a while after
//! failing ([`health`]), with a request sent on to the next server when one fails before answering
//! (nginx's `proxy_next_upstream error timeout`), the connector that reaches TCP and unix-socket
//! servers ([`connector`]), and the pooled HTTP/1.1 client that sends to them ([`client`]).
//!
//! A request is sent again only when that cannot change what happens: its method is idempotent
//! (GET, HEAD, PUT, DELETE, OPTIONS, TRACE; others only with `next_upstream = ["non_idempotent"]`),
//! it has no body (a streamed body cannot be sent twice), and nothing has gone to the client yet
//! (retries happen only before a response head is passed on). A plain `proxy = "http://host:port"`
//! route does not come here: it is forwarded as before, to its one server.

mod balance;
mod client;
mod connector;
mod group;
mod health;
mod timeouts;

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use tracing::{debug, warn};

pub(crate) use self::client::{UpstreamBody, UpstreamClient, UpstreamError};
pub(super) use self::connector::{with_connect_timeout, UpstreamConnector};
pub use self::group::{
    Balance, NextUpstream, ServerAddress, ServerConfig, UpstreamConfig, MAX_SERVERS,
};
pub use self::timeouts::ProxyTimeouts;
pub(super) use self::timeouts::{ReadTimeoutBody, SendClock};

use self::balance::{bit, PeerState};
use super::body::RequestBody;
use super::path::NormalPath;
use super::{
    error_chain, error_page, headers, status_response, ConnectionPermit, Proxy, ProxyBody, Route,
    SiteRoutes, UpstreamUsed,
};

/// One `[[upstream]]` group at run time: its servers and their shared state (health, balancer
/// weights, requests in flight), shared by every route and worker that uses it.
#[derive(Debug)]
pub struct UpstreamGroup {
    config: UpstreamConfig,
    servers: Vec<Server>,
    /// Held only to pick a server or record an outcome: no I/O and no await under it.
    state: Mutex<Vec<PeerState>>,
}

/// What the proxy needs of one server to send it a request.
#[derive(Debug)]
struct Server {
    /// The URI authority requests to it carry (`host:port`, or the synthetic host of a socket).
    authority: Authority,
    /// How it is named in logs and [`UpstreamUsed`]: `http://host:port` or `unix:/path`.
    label: String,
    max_fails: u32,
    fail_timeout: Duration,
}

impl PartialEq for UpstreamGroup {
    /// Groups are equal when configured alike; their run-time state does not count.
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config
    }
}

impl Eq for UpstreamGroup {}

impl UpstreamGroup {
    /// The group `config` describes, every server up.
    pub fn new(config: &UpstreamConfig) -> Self {
        let mut servers = Vec::with_capacity(config.servers.len());
        let mut state = Vec::with_capacity(config.servers.len());
        for server in &config.servers {
            let (authority, label) = match &server.address {
                ServerAddress::Tcp(address) => (address.parse(), format!("http://{address}")),
                ServerAddress::Unix(path) => (
                    connector::unix_authority(path).parse(),
                    format!("unix:{}", path.display()),
                ),
            };
            // Validation has checked every address; one that still does not parse is left out
            // rather than taking the daemon down.
            let Ok(authority) = authority else {
                warn!(upstream = %config.name, server = %label, "cannot address this server");
                continue;
            };
            servers.push(Server {
                authority,
                label,
                max_fails: server.max_fails,
                fail_timeout: server.fail_timeout,
            });
            state.push(PeerState::new(server.weight, server.backup));
        }
        Self {
            config: config.clone(),
            servers,
            state: Mutex::new(state),
        }
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &UpstreamConfig {
        &self.config
    }

    /// The most servers one request may be tried on.
    fn max_tries(&self) -> usize {
        max_tries(self.config.next_upstream_tries, self.servers.len())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Vec<PeerState>> {
        // A panic elsewhere while holding the lock leaves counters, not broken invariants.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Picks a server not in `tried` for a request from `client`, and counts it in flight until
    /// the returned guard is dropped.
    fn acquire(self: &Arc<Self>, tried: u64, client: IpAddr) -> Option<InFlight> {
        let mut state = self.state();
        let index = balance::choose(
            self.config.balance,
            &mut state,
            tried,
            client,
            Instant::now(),
        )?;
        let peer = state.get_mut(index)?;
        peer.in_flight = peer.in_flight.saturating_add(1);
        Some(InFlight {
            group: self.clone(),
            index,
        })
    }

    /// A server for one bodiless internal request (an error page), counted in flight while the
    /// guard lives: its authority and label.
    pub(super) fn any_server(
        self: &Arc<Self>,
        client: IpAddr,
    ) -> Option<(InFlight, Authority, String)> {
        let flight = self.acquire(0, client)?;
        let server = self.servers.get(flight.index)?;
        let (authority, label) = (server.authority.clone(), server.label.clone());
        Some((flight, authority, label))
    }

    /// Each server's requests in flight (open tunnels included), for tests.
    #[cfg(test)]
    pub(super) fn in_flight(&self) -> Vec<usize> {
        self.state().iter().map(|peer| peer.in_flight).collect()
    }

    fn failed(&self, index: usize) {
        let Some(server) = self.servers.get(index) else {
            return;
        };
        let mut state = self.state();
        if let Some(peer) = state.get_mut(index) {
            if peer
                .health
                .failed(Instant::now(), server.max_fails, server.fail_timeout)
            {
                warn!(
                    upstream = %self.config.name,
                    server = %server.label,
                    fail_timeout_ms = server.fail_timeout.as_millis(),
                    "upstream server is down; it is left out for fail_timeout"
                );
            }
        }
    }

    fn succeeded(&self, index: usize) {
        if let Some(peer) = self.state().get_mut(index) {
            peer.health.succeeded();
        }
    }
}

/// A request in flight to one server of a group (for `least_conn`); dropped when its response
/// body has been streamed (or the request failed).
#[derive(Debug)]
pub(super) struct InFlight {
    group: Arc<UpstreamGroup>,
    index: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(peer) = self.group.state().get_mut(self.index) {
            peer.in_flight = peer.in_flight.saturating_sub(1);
        }
    }
}

/// How one attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Connecting failed, or the connection broke before a response head.
    Error,
    /// Connecting, or waiting for the response head, took too long.
    Timeout,
}

impl Failure {
    /// What the client gets when this was the last attempt.
    fn status(self) -> StatusCode {
        match self {
            Self::Error => StatusCode::BAD_GATEWAY,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

/// nginx's idempotent methods: those it sends on to the next server by default.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// Whether a request may be sent again to another server: it has no body (a streamed one cannot
/// be replayed) and is idempotent, unless `non_idempotent` retries were asked for.
fn may_resend(method: &Method, body_empty: bool, next: &NextUpstream) -> bool {
    body_empty && (next.non_idempotent || is_idempotent(method))
}

/// Whether `failure` sends the request on to the next server.
fn retries_on(next: &NextUpstream, failure: Failure) -> bool {
    match failure {
        Failure::Error => next.error,
        Failure::Timeout => next.timeout,
    }
}

/// Whether an answer with `status` sends the request on to the next server, and whether it counts
/// as the server failing (nginx never counts 403 and 404 as failures).
fn status_outcome(next: &NextUpstream, status: StatusCode) -> (bool, bool) {
    let listed =
        status != StatusCode::SWITCHING_PROTOCOLS && next.statuses.contains(&status.as_u16());
    (listed, listed && status != StatusCode::FORBIDDEN)
}

/// `next_upstream_tries` (0: no limit) bounded by the number of servers: each is tried at most once.
fn max_tries(tries: usize, servers: usize) -> usize {
    match tries {
        0 => servers,
        tries => tries.min(servers),
    }
}

/// `body` watched by a route's `send_timeout`, and what completes when the upstream has not taken a
/// piece of it in time (never without a timeout). Only such routes pay for the clock.
pub(super) fn send_timeout(
    body: RequestBody,
    timeout: Option<Duration>,
) -> (RequestBody, impl std::future::Future<Output = ()>) {
    let clock = timeout.map(|timeout| (Arc::new(SendClock::new()), timeout));
    let body = match &clock {
        Some((clock, _)) => body.with_send_clock(clock.clone()),
        None => body,
    };
    let stalled = async move {
        match clock {
            Some((clock, timeout)) => clock.stalled(timeout).await,
            None => std::future::pending().await,
        }
    };
    (body, stalled)
}

/// An upstream's response body that keeps its request counted in flight until it is done.
struct InFlightBody {
    inner: ProxyBody,
    _flight: InFlight,
}

impl Body for InFlightBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Proxy {
    /// Handles a request for a route whose upstream is `group`: `base` is the route's
    /// `proxy = "http://<group>/base"` (its path is put in front of the request's).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn forward_group(
        &self,
        request: Request<Incoming>,
        path: &NormalPath,
        base: &Uri,
        group: &Arc<UpstreamGroup>,
        route: &Route,
        site: &SiteRoutes,
        client: SocketAddr,
    ) -> Response<ProxyBody> {
        let head = request.method() == Method::HEAD;
        let (answer, label) = self
            .send_to_group(request, path, base, group, route, client)
            .await;
        let mut response = match answer {
            Ok(response) => response,
            Err(status) => error_page(site, status_response(status), head).await,
        };
        response.extensions_mut().insert(UpstreamUsed(label));
        response
    }

    /// Sends the request to the group's servers until one answers or no attempt is left; `Err` is
    /// the status certd answers with itself. The label is the server that answered (or was tried
    /// last).
    async fn send_to_group(
        &self,
        mut request: Request<Incoming>,
        path: &NormalPath,
        base: &Uri,
        group: &Arc<UpstreamGroup>,
        route: &Route,
        client: SocketAddr,
    ) -> (Result<Response<ProxyBody>, StatusCode>, String) {
        let mut label = format!("upstream:{}", group.name());
        let websocket =
            headers::is_websocket_upgrade(request.method(), request.version(), request.headers());
        let mut client_upgrade = websocket.then(|| hyper::upgrade::on(&mut request));
        let mut permit = request.extensions_mut().remove::<ConnectionPermit>();
        // The route's `proxy_set_header` rules and body limit, as for a single upstream: a group
        // is only a different way of picking the server.
        let rules = request
            .extensions_mut()
            .remove::<super::http_rules::UpstreamRules>();

        let (mut parts, body) = request.into_parts();
        let host = headers::original_host(&parts.uri, &parts.headers);
        let upgrade = websocket
            .then(|| parts.headers.get(hyper::header::UPGRADE).cloned())
            .flatten();
        let path_and_query: PathAndQuery =
            match headers::upstream_uri(base, path, parts.uri.query())
                .map(|uri| uri.into_parts().path_and_query)
            {
                Ok(Some(path_and_query)) => path_and_query,
                Ok(None) | Err(_) => {
                    warn!(upstream = %label, "cannot build the upstream URI");
                    return (Err(StatusCode::BAD_GATEWAY), label);
                }
            };
        // ip_hash hashes the real client (behind `[https] trusted_proxies`, the one they name), as
        // nginx's does `$remote_addr` with the realip module; read before the headers are rewritten.
        let client_ip = match group.config.balance {
            Balance::IpHash => {
                headers::real_client(&parts.headers, client.ip(), &self.trusted_proxies)
            }
            _ => client.ip(),
        };
        headers::prepare_request_headers(
            &mut parts.headers,
            host,
            client.ip(),
            &self.trusted_proxies,
            upgrade,
        );
        // `$proxy_host` is the group's name, as nginx's is the `upstream` block's.
        if let Some(rules) = &rules {
            rules.apply(&mut parts.headers, base);
        }
        let body_limit = rules.and_then(|rules| rules.body_limit);
        let next = &group.config.next_upstream;
        let resend = may_resend(&parts.method, body.is_end_stream(), next);
        let mut body = Some(body);
        let max_tries = group.max_tries();
        let response_timeout = route.timeouts.read.unwrap_or(self.limits.response_timeout);
        let tunnel_idle_timeout = route
            .tunnel_idle_timeout
            .or(route.timeouts.read)
            .unwrap_or(self.limits.tunnel_idle_timeout);

        let mut tried = 0u64;
        let mut attempts = 0usize;
        let mut last_failure = StatusCode::BAD_GATEWAY;
        loop {
            let Some(flight) = group.acquire(tried, client_ip) else {
                if attempts == 0 {
                    warn!(upstream = %label, "no server of the group can be tried");
                }
                return (Err(last_failure), label);
            };
            let Some(server) = group.servers.get(flight.index) else {
                return (Err(StatusCode::BAD_GATEWAY), label);
            };
            tried |= bit(flight.index);
            attempts += 1;
            label.clone_from(&server.label);
            let last = !resend || attempts >= max_tries;

            let mut uri = hyper::http::uri::Parts::default();
            uri.scheme = Some(Scheme::HTTP);
            uri.authority = Some(server.authority.clone());
            uri.path_and_query = Some(path_and_query.clone());
            let Ok(uri) = Uri::from_parts(uri) else {
                return (Err(StatusCode::BAD_GATEWAY), label);
            };
            let (request_body, body_sent) = match body.take() {
                Some(body) => {
                    let (body, sent) = RequestBody::new(body);
                    (body.with_limit(body_limit), Some(sent))
                }
                None => (RequestBody::empty(), None),
            };
            let (request_body, stalled) = send_timeout(request_body, route.timeouts.send);
            let mut attempt = Request::new(request_body);
            *attempt.method_mut() = parts.method.clone();
            *attempt.uri_mut() = uri;
            *attempt.version_mut() = Version::HTTP_11;
            *attempt.headers_mut() = if last {
                std::mem::take(&mut parts.headers)
            } else {
                parts.headers.clone()
            };

            let sent = with_connect_timeout(route.timeouts.connect, self.client.request(attempt));
            let deadline = async {
                if let Some(body_sent) = body_sent {
                    body_sent.wait().await;
                }
                tokio::time::sleep(response_timeout).await;
            };
            let failure = tokio::select! {
                answer = sent => match answer {
                    Ok(response) => {
                        let (retry, failed) = status_outcome(next, response.status());
                        if failed {
                            group.failed(flight.index);
                        } else {
                            group.succeeded(flight.index);
                        }
                        if retry && !last {
                            debug!(upstream = %label, status = response.status().as_u16(), "trying the next server");
                            continue;
                        }
                        // A tunnel stays counted in flight for as long as it is open (least_conn
                        // must see it); any other answer until its body has been streamed.
                        let (held, flight): (Option<super::websocket::Held>, _) =
                            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                                (Some(Box::new(flight)), None)
                            } else {
                                (None, Some(flight))
                            };
                        let answer = self
                            .finish_response(
                                response,
                                client_upgrade.take(),
                                permit.take(),
                                &label,
                                client,
                                tunnel_idle_timeout,
                                route.timeouts.read,
                                held,
                            )
                            .map(|response| match flight {
                                Some(flight) => response.map(|body| {
                                    InFlightBody { inner: body, _flight: flight }.boxed()
                                }),
                                None => response,
                            });
                        return (answer, label);
                    }
                    Err(error) => {
                        if super::body::exceeded_limit(&error) {
                            debug!(upstream = %label, "request body over max_body_size");
                            return (Err(StatusCode::PAYLOAD_TOO_LARGE), label);
                        }
                        let error = error_chain(&error);
                        warn!(upstream = %label, error = %error.text, "upstream request failed");
                        if error.timed_out { Failure::Timeout } else { Failure::Error }
                    }
                },
                () = deadline => {
                    let timeout_ms = response_timeout.as_millis();
                    warn!(upstream = %label, timeout_ms, "upstream did not answer in time");
                    Failure::Timeout
                }
                () = stalled => {
                    warn!(upstream = %label, "upstream did not take the request body in time (send_timeout)");
                    Failure::Timeout
                }
            };
            group.failed(flight.index);
            last_failure = failure.status();
            if last || !retries_on(next, failure) {
                return (Err(last_failure), label);
            }
            debug!(upstream = %label, ?failure, "trying the next server");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_idempotent_requests_without_a_body_are_sent_again() {
        let default = NextUpstream::default();
        for method in [
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
            Method::TRACE,
        ] {
            assert!(may_resend(&method, true, &default), "{method}");
            assert!(
                !may_resend(&method, false, &default),
                "{method} with a body"
            );
        }
        for method in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!may_resend(&method, true, &default), "{method}");
        }
        let any = NextUpstream {
            non_idempotent: true,
            ..NextUpstream::default()
        };
        assert!(may_resend(&Method::POST, true, &any));
        assert!(
            !may_resend(&Method::POST, false, &any),
            "a streamed body is never replayed"
        );
    }

    #[test]
    fn errors_and_timeouts_retry_by_default_and_off_retries_nothing() {
        let default = NextUpstream::default();
        assert!(retries_on(&default, Failure::Error));
        assert!(retries_on(&default, Failure::Timeout));
        assert_eq!(
            status_outcome(&default, StatusCode::BAD_GATEWAY),
            (false, false)
        );
        let off = NextUpstream {
            error: false,
            timeout: false,
            statuses: Vec::new(),
            non_idempotent: false,
        };
        assert!(!retries_on(&off, Failure::Error));
        assert!(!retries_on(&off, Failure::Timeout));
        let statuses = NextUpstream {
            statuses: vec![503, 403],
            ..NextUpstream::default()
        };
        assert_eq!(
            status_outcome(&statuses, StatusCode::SERVICE_UNAVAILABLE),
            (true, true)
        );
        assert_eq!(
            status_outcome(&statuses, StatusCode::FORBIDDEN),
            (true, false),
            "403 is no failure"
        );
        assert_eq!(status_outcome(&statuses, StatusCode::OK), (false, false));
    }

    #[test]
    fn tries_are_bounded_by_the_servers_and_next_upstream_tries() {
        assert_eq!(max_tries(0, 3), 3);
        assert_eq!(max_tries(2, 3), 2);
        assert_eq!(max_tries(5, 3), 3);
        assert_eq!(max_tries(1, 3), 1);
    }
}
