//! The per-site and per-route HTTP rules of issue #11 and the hooks that apply them in
//! [`super::Proxy::handle`]: request headers to the upstream (`proxy_set_header`), response headers
//! (`add_header`, `proxy_hide_header`, `hsts`, `expires`), `rewrite`, `return` and `max_body_size`.
//!
//! Inheritance follows nginx: a route that has its own `add` list does not inherit the site's
//! (likewise its own `hide` list, and its own request `set`/`remove`), and a route's
//! `max_body_size` / `expires` replace the site's. Following nginx here keeps imported configs
//! behaving as they did; `hsts` is a site setting that every answer gets, so it cannot be lost
//! by a route that adds headers of its own (nginx's best-known `add_header` surprise).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use hyper::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST, LOCATION};
use hyper::{Request, Response, StatusCode, Uri};

use super::path::{self, NormalPath};
use super::response_headers::{self, AddHeader, Expires};
use super::rewrite::{self, Outcome, Return, Rewrite};
use super::variables::{RequestFacts, Template};
use super::{full_body, status_response, ProxyBody, Route, RouteTarget, SiteRoutes};
use crate::hostname::strip_port;

/// One request header rule: set to a value (with variables; one that expands to `""` removes the
/// header, as in nginx) or remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetHeader {
    /// The header.
    pub name: HeaderName,
    /// The value; `None` removes the header.
    pub value: Option<Template>,
}

/// The rules of a site or of a route. `None` lists inherit from the site (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpRules {
    /// `headers.request.set` / `remove`, in that order.
    pub request: Option<Arc<[SetHeader]>>,
    /// `headers.response.add`.
    pub add: Option<Arc<[AddHeader]>>,
    /// `headers.response.hide`.
    pub hide: Option<Arc<[HeaderName]>>,
    /// `expires`.
    pub expires: Option<Expires>,
    /// `max_body_size` in bytes; `Some(0)` is unlimited.
    pub max_body_size: Option<u64>,
    /// `rewrite` (routes only).
    pub rewrites: Arc<[Rewrite]>,
    /// `if` (routes only): returns that answer when their condition holds, before `rewrites`.
    pub returns_if: Arc<[super::condition::ConditionalReturn]>,
    /// `hsts`: the `Strict-Transport-Security` value (sites only).
    pub hsts: Option<HeaderValue>,
    /// `etag`: `Some(false)` takes the `ETag` off answers served from files (nginx `etag off`,
    /// which leaves upstream answers alone); `None` inherits the site's.
    pub etag: Option<bool>,
}

impl HttpRules {
    /// Whether any rule is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A site's rules, its name (for `$server_name`), and whether it or any route has rules at all
/// (when not, requests skip this module entirely).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiteHttp {
    /// The site's first name.
    pub server_name: String,
    /// The site-wide rules.
    pub rules: HttpRules,
    /// Whether the site or any of its routes has rules or a `return`.
    pub active: bool,
}

impl SiteHttp {
    /// The site's rules for `routes`.
    pub fn new(server_name: String, rules: HttpRules, routes: &[Route]) -> Self {
        let active = !rules.is_empty()
            || routes.iter().any(|route| {
                !route.http.is_empty() || matches!(route.target, RouteTarget::Return(_))
            });
        Self {
            server_name,
            rules,
            active,
        }
    }
}

/// The request's facts for its variables, before any rewrite.
pub(super) fn facts<B>(
    request: &Request<B>,
    path: &NormalPath,
    request_uri: String,
    client: IpAddr,
    site: &SiteHttp,
) -> RequestFacts {
    let authority = super::headers::original_host(request.uri(), request.headers())
        .and_then(|host| host.to_str().ok().map(str::to_owned))
        .unwrap_or_default();
    let host = strip_port(&authority).to_ascii_lowercase();
    RequestFacts {
        host: if host.is_empty() {
            site.server_name.clone()
        } else {
            host
        },
        authority,
        remote_addr: Some(client),
        request_uri,
        uri: path.as_str().to_owned(),
        args: request.uri().query().map(str::to_owned),
        method: request.method().clone(),
        server_name: site.server_name.clone(),
        proxy_host: None,
        forwarded_for: None,
        headers: request.headers().clone(),
        upstream_cache_status: None,
    }
}

/// What [`prepare`] decided.
pub(super) enum Prepared<'a, B> {
    /// Serve the (possibly rewritten) request on this route.
    Go(Request<B>, NormalPath, &'a Route),
    /// Answer now (redirect, 400, 500); `Some` route when one matched.
    Answer(Response<ProxyBody>, &'a Route),
    /// Answer 413: the declared body is over `max_body_size`. The request comes back so that its
    /// body can be read and discarded while the answer goes out (nginx's lingering close): a
    /// client still sending it then reads the 413 instead of a reset connection.
    TooLarge(Request<B>, &'a Route),
}

/// Whether `headers` declare a body over the site's own `max_body_size` (for requests no route
/// matches, which nginx checks against the server's `client_max_body_size` before its 404).
pub(super) fn over_site_limit(site: &SiteHttp, headers: &hyper::HeaderMap) -> bool {
    let limit = site.rules.max_body_size.filter(|limit| *limit > 0);
    limit.is_some_and(|limit| declared_length(headers).is_some_and(|length| length > limit))
}

/// The request's `Content-Length`, if it has a valid one.
fn declared_length(headers: &hyper::HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
}

/// How many times `last` may route a request again before it is a loop (nginx's limit, 10).
const MAX_REROUTES: usize = 10;

/// Runs the route's rewrites (routing again for `last`), then checks `max_body_size` against
/// `Content-Length`, and puts the upstream rules into the request for [`super::Proxy::forward`].
pub(super) fn prepare<'a, B>(
    site: &'a SiteRoutes,
    mut route: &'a Route,
    mut request: Request<B>,
    mut path: NormalPath,
    facts: &mut RequestFacts,
) -> Prepared<'a, B> {
    let mut reroutes = 0;
    loop {
        match super::condition::first_answer(&route.http.returns_if, facts) {
            Ok(None) => {}
            Ok(Some(answer)) => {
                let head = request.method() == hyper::Method::HEAD;
                return Prepared::Answer(self::answer(answer, facts, head), route);
            }
            Err(error) => {
                tracing::warn!(%error, "if refused");
                let response = status_response(StatusCode::INTERNAL_SERVER_ERROR);
                return Prepared::Answer(response, route);
            }
        }
        let (new_path, query, again) = match rewrite::run(&route.http.rewrites, facts) {
            Outcome::Unchanged => break,
            Outcome::Redirect { status, location } => {
                return Prepared::Answer(redirect(status, &location), route)
            }
            Outcome::TooComplex => {
                let response = status_response(StatusCode::INTERNAL_SERVER_ERROR);
                return Prepared::Answer(response, route);
            }
            Outcome::Break { path, query } => (path, query, false),
            Outcome::Reroute { path, query } => (path, query, true),
        };
        // A rewritten path is normalised like a client's: a capture cannot climb out of a root.
        let Ok(normal) = path::normalise(&new_path) else {
            return Prepared::Answer(status_response(StatusCode::BAD_REQUEST), route);
        };
        let Some(uri) = rewritten_uri(request.uri(), &normal, query.as_deref()) else {
            return Prepared::Answer(status_response(StatusCode::BAD_REQUEST), route);
        };
        let before = request.uri().clone();
        crate::request_uri::remember(request.extensions_mut(), &before);
        *request.uri_mut() = uri;
        facts.uri = normal.as_str().to_owned();
        facts.args = query;
        path = normal;
        if !again {
            break;
        }
        reroutes += 1;
        if reroutes > MAX_REROUTES {
            tracing::warn!(path = path.as_str(), "rewrite cycle: routed again 10 times");
            return Prepared::Answer(status_response(StatusCode::INTERNAL_SERVER_ERROR), route);
        }
        match site.route(path.as_str()) {
            Some(next) => route = next,
            None => return Prepared::Answer(status_response(StatusCode::NOT_FOUND), route),
        }
    }
    let limit = body_limit(route, &site.http);
    if let Some(limit) = limit {
        if declared_length(request.headers()).is_some_and(|length| length > limit) {
            return Prepared::TooLarge(request, route);
        }
    }
    let set = route
        .http
        .request
        .clone()
        .or(site.http.rules.request.clone());
    // A `try_files` fallback may hand the request to a named route with rules of its own
    // ([`rerouted`]), which needs the facts.
    if set.is_some() || limit.is_some() || route.try_files.is_some() {
        request.extensions_mut().insert(UpstreamRules {
            set,
            facts: facts.clone(),
            body_limit: limit,
        });
    }
    Prepared::Go(request, path, route)
}

/// After `try_files` handed the request to another route (nginx's internal redirect to a named
/// location), the request headers sent upstream are that route's (`proxy_set_header` in the
/// named location), not those of the route the request first matched.
pub(super) fn rerouted<B>(request: &mut Request<B>, site: &SiteRoutes, route: &Route) {
    if let Some(rules) = request.extensions_mut().get_mut::<UpstreamRules>() {
        rules.set = route
            .http
            .request
            .clone()
            .or(site.http.rules.request.clone());
    }
}

/// The effective body limit (`None`: unlimited).
fn body_limit(route: &Route, site: &SiteHttp) -> Option<u64> {
    route
        .http
        .max_body_size
        .or(site.rules.max_body_size)
        .filter(|limit| *limit > 0)
}

fn rewritten_uri(old: &Uri, path: &NormalPath, query: Option<&str>) -> Option<Uri> {
    let path_and_query = match query {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    };
    let mut parts = hyper::http::uri::Parts::from(old.clone());
    parts.path_and_query = Some(path_and_query.parse().ok()?);
    Uri::from_parts(parts).ok()
}

fn redirect(status: StatusCode, location: &str) -> Response<ProxyBody> {
    let mut response = Response::new(super::empty_body());
    *response.status_mut() = status;
    match HeaderValue::from_str(location) {
        Ok(location) => {
            response.headers_mut().insert(LOCATION, location);
            response
                .headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(0));
            response
        }
        // A capture may hold bytes a header cannot: refuse rather than redirect somewhere else.
        Err(_) => status_response(StatusCode::BAD_REQUEST),
    }
}

/// The answer of a `return` route.
pub(super) fn answer(answer: &Return, facts: &RequestFacts, head: bool) -> Response<ProxyBody> {
    let (status, location, body) = answer.answer(facts);
    if let Some(location) = location {
        let mut response = redirect(status, &location);
        *response.status_mut() = status;
        return response;
    }
    let length = body.len();
    let mut response = Response::new(if head {
        super::empty_body()
    } else {
        full_body(body)
    });
    *response.status_mut() = status;
    if let Ok(content_type) = HeaderValue::from_str(&answer.content_type) {
        response.headers_mut().insert(CONTENT_TYPE, content_type);
    }
    response
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(length));
    response
}

/// Applies the response header rules of `route` (or the site's, where the route has none) to an
/// answer about to be sent.
pub(super) fn finish(
    mut response: Response<ProxyBody>,
    route: Option<&Route>,
    site: &SiteHttp,
    facts: &RequestFacts,
) -> Response<ProxyBody> {
    let rules = route.map(|route| &route.http);
    let add = rules
        .and_then(|rules| rules.add.as_deref())
        .or(site.rules.add.as_deref())
        .unwrap_or(&[]);
    let hide = rules
        .and_then(|rules| rules.hide.as_deref())
        .or(site.rules.hide.as_deref())
        .unwrap_or(&[]);
    let expires = rules.and_then(|rules| rules.expires).or(site.rules.expires);
    let etag = rules.and_then(|rules| rules.etag).or(site.rules.etag);
    if etag == Some(false) && served_from_file(&response) {
        response.headers_mut().remove(hyper::header::ETAG);
    }
    let status = response.status();
    let rules = response_headers::ResponseRules {
        hide,
        expires,
        add,
        hsts: site.rules.hsts.as_ref(),
    };
    response_headers::apply(
        response.headers_mut(),
        status,
        &rules,
        facts,
        SystemTime::now(),
    );
    response
}

/// Whether certd's file server made the answer (a root, an alias, a `try_files` file or an error
/// page file), the answers nginx's `etag` applies to.
fn served_from_file(response: &Response<ProxyBody>) -> bool {
    response
        .extensions()
        .get::<super::UpstreamUsed>()
        .is_some_and(|used| used.0.starts_with("static:"))
}

/// What [`super::Proxy::forward`] applies to a proxied request, put in its extensions by
/// [`prepare`].
#[derive(Debug, Clone)]
pub(super) struct UpstreamRules {
    set: Option<Arc<[SetHeader]>>,
    facts: RequestFacts,
    /// The body limit in bytes, if any.
    pub(super) body_limit: Option<u64>,
}

impl UpstreamRules {
    /// Sets and removes the operator's request headers, after certd's own (hop-by-hop removal,
    /// `Host`, forwarding headers) so an explicit header wins, as with nginx `proxy_set_header`.
    /// Config validation refuses rules for hop-by-hop headers and `Content-Length`, so framing and
    /// upgrades stay certd's.
    pub(super) fn apply(&self, headers: &mut hyper::HeaderMap, upstream: &Uri) {
        let Some(set) = &self.set else {
            return;
        };
        let mut facts = self.facts.clone();
        facts.proxy_host = upstream.authority().map(|authority| authority.to_string());
        facts.forwarded_for = headers
            .get(super::headers::X_FORWARDED_FOR)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        for rule in set.iter() {
            let value = rule.value.as_ref().map(|value| value.expand(&facts, &[]));
            match value.as_deref().map(HeaderValue::from_str) {
                Some(Ok(value)) if !value.is_empty() => {
                    headers.insert(rule.name.clone(), value);
                }
                // Removing `Host` would make an invalid HTTP/1.1 request; config refuses it, and
                // an empty expansion keeps certd's.
                _ if rule.name == HOST => {}
                _ => {
                    headers.remove(&rule.name);
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn etag_off_takes_the_etag_off_files_only() {
        let answer = |used: &str| {
            let mut response = status_response(StatusCode::OK);
            response
                .headers_mut()
                .insert(hyper::header::ETAG, HeaderValue::from_static("\"1-2\""));
            response
                .extensions_mut()
                .insert(super::super::UpstreamUsed(used.to_owned()));
            response
        };
        let off = HttpRules {
            etag: Some(false),
            ..HttpRules::default()
        };
        let site = SiteHttp::new("a.test".to_owned(), off.clone(), &[]);
        let facts = RequestFacts::default();
        let route = Route::new("/", RouteTarget::Static("/srv".into()));
        let file = finish(answer("static:/srv"), Some(&route), &site, &facts);
        assert!(!file.headers().contains_key(hyper::header::ETAG));
        // nginx's `etag` is the static module's: an upstream's ETag stays.
        let proxied = finish(answer("http://127.0.0.1:8080"), Some(&route), &site, &facts);
        assert!(proxied.headers().contains_key(hyper::header::ETAG));
        // A route's own `etag = true` wins over the site's.
        let mut on = Route::new("/", RouteTarget::Static("/srv".into()));
        on.http.etag = Some(true);
        let file = finish(answer("static:/srv"), Some(&on), &site, &facts);
        assert!(file.headers().contains_key(hyper::header::ETAG));
        let plain = SiteHttp::new("a.test".to_owned(), HttpRules::default(), &[]);
        let file = finish(answer("static:/srv"), Some(&route), &plain, &facts);
        assert!(file.headers().contains_key(hyper::header::ETAG));
    }

    #[test]
    fn set_headers_win_and_empty_values_remove() {
        let rule = |name: &'static str, value: Option<&str>| SetHeader {
            name: HeaderName::from_static(name),
            value: value.map(|value| Template::parse(value, false).unwrap()),
        };
        let rules = UpstreamRules {
            set: Some(Arc::from(vec![
                rule("host", Some("$proxy_host")),
                rule("x-real-ip", Some("$remote_addr")),
                rule("x-chain", Some("$proxy_add_x_forwarded_for")),
                rule("x-empty", Some("$http_x_none")),
                rule("x-debug", None),
            ])),
            facts: RequestFacts {
                remote_addr: Some("192.0.2.7".parse().unwrap()),
                ..RequestFacts::default()
            },
            body_limit: None,
        };
        let mut headers = hyper::HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_static("a.test"));
        headers.insert("x-forwarded-for", HeaderValue::from_static("192.0.2.7"));
        headers.insert("x-empty", HeaderValue::from_static("client's"));
        headers.insert("x-debug", HeaderValue::from_static("1"));
        rules.apply(&mut headers, &"http://127.0.0.1:8080".parse().unwrap());
        assert_eq!(headers[HOST], "127.0.0.1:8080");
        assert_eq!(headers["x-real-ip"], "192.0.2.7");
        assert_eq!(headers["x-chain"], "192.0.2.7");
        assert!(!headers.contains_key("x-empty"));
        assert!(!headers.contains_key("x-debug"));
    }
}
