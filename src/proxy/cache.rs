//! The proxy response cache of a route (nginx `proxy_cache`): in memory, capped in entries and
//! bytes, keyed like nginx's default `$scheme$proxy_host$request_uri`, for GET and HEAD only.
//!
//! What it owns: the decision whether an upstream answer may be kept and for how long
//! ([`freshness`], a pure function of the status and headers, in nginx's order: `Cache-Control`,
//! then `Expires`, then the route's `valid` times), the `Vary` check on lookup, and
//! `$upstream_cache_status` ([`Status`], put in the response's extensions for `add_header`).
//!
//! The store is `moka` (already in the tree through hickory-resolver): a concurrent, size-bounded
//! cache with LRU eviction behind a frequency filter, which is what nginx's `max_size` plus
//! `inactive` amount to, without a hand-written list under a lock. Its capacity is a weight:
//! every entry weighs at least `max_size / max_entries`, so a full cache never holds more than
//! `max_entries` entries nor more than `max_size` bytes.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::{
    HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, EXPIRES, SET_COOKIE, VARY,
};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};

use crate::response::{empty_body, full_body, status_response, ProxyBody};

/// `$upstream_cache_status`, in the extensions of a response from a cached route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Not in the cache (or stored for other `Vary` values): fetched from the upstream.
    Miss,
    /// Answered from the cache.
    Hit,
    /// In the cache but too old: fetched from the upstream again.
    Expired,
}

impl Status {
    /// The text nginx gives `$upstream_cache_status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Miss => "MISS",
            Self::Hit => "HIT",
            Self::Expired => "EXPIRED",
        }
    }
}

/// A route's `cache` settings, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `valid`: how long answers with these statuses are kept when the upstream says nothing
    /// (nginx `proxy_cache_valid`); status 0 is `any`, for the statuses not listed themselves; a
    /// status not listed (and no `any`) is not cached without upstream headers.
    pub valid: Vec<(u16, Duration)>,
    /// `max_entries`: how many answers the route keeps.
    pub max_entries: u64,
    /// `max_size`: how many bytes of bodies (and headers) the route keeps.
    pub max_bytes: u64,
    /// `max_entry_size`: a larger answer (or one without a `Content-Length`) is passed through.
    pub max_entry_bytes: u64,
}

impl Policy {
    /// nginx's `max_size` is the cache's only byte cap; an entry is bounded as well so one answer
    /// cannot push out the whole cache.
    pub const DEFAULT_MAX_ENTRIES: u64 = 10_000;
    /// 64 MiB.
    pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
    /// 1 MiB.
    pub const DEFAULT_MAX_ENTRY_BYTES: u64 = 1024 * 1024;
}

/// One kept answer.
#[derive(Debug)]
struct Entry {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    expires: Instant,
    /// The request header values named by the answer's `Vary`, as the storing request sent them.
    vary: Vec<(HeaderName, Option<HeaderValue>)>,
}

/// A route's cache: its [`Policy`] and the store.
pub struct RouteCache {
    policy: Policy,
    store: moka::sync::Cache<String, Arc<Entry>>,
}

impl std::fmt::Debug for RouteCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteCache")
            .field("policy", &self.policy)
            .field("entries", &self.store.entry_count())
            .finish()
    }
}

// Two configs are the same when their policies are: the stored answers are state, not config.
impl PartialEq for RouteCache {
    fn eq(&self, other: &Self) -> bool {
        self.policy == other.policy
    }
}
impl Eq for RouteCache {}

/// What [`RouteCache::lookup`] found.
pub enum Lookup {
    /// A stored answer, ready to send.
    Hit(Response<ProxyBody>),
    /// Ask the upstream, then hand its answer to [`Pending::store`].
    Fetch(Pending),
}

/// A request sent on to the upstream whose answer may be stored.
pub struct Pending {
    cache: Arc<RouteCache>,
    key: String,
    /// `None` for methods the cache never looks up: nginx's `$upstream_cache_status` is empty.
    status: Option<Status>,
    /// Only a GET's answer is stored (a HEAD's has no body), and none for a bypass.
    store: bool,
    request_headers: HeaderMap,
}

impl RouteCache {
    /// An empty cache for `policy`.
    pub fn new(policy: Policy) -> Self {
        let floor = (policy.max_bytes / policy.max_entries.max(1)).max(1);
        let store = moka::sync::Cache::builder()
            .max_capacity(policy.max_bytes)
            .weigher(move |key: &String, entry: &Arc<Entry>| {
                let bytes = entry_bytes(key, entry).max(floor);
                u32::try_from(bytes).unwrap_or(u32::MAX)
            })
            .build();
        Self { policy, store }
    }

    /// The route's policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Looks `request` up under `proxy_host` (the upstream's authority or group name).
    pub fn lookup<B>(self: &Arc<Self>, request: &Request<B>, proxy_host: &str) -> Lookup {
        let method = request.method();
        let uri = request
            .uri()
            .path_and_query()
            .map_or("/", |raw| raw.as_str());
        let key = format!("https{proxy_host}{uri}");
        let pending = |status, store| Pending {
            cache: Arc::clone(self),
            key: key.clone(),
            status,
            store,
            request_headers: request.headers().clone(),
        };
        if method != Method::GET && method != Method::HEAD {
            return Lookup::Fetch(pending(None, false));
        }
        let get = method == Method::GET;
        let Some(entry) = self.store.get(&key) else {
            return Lookup::Fetch(pending(Some(Status::Miss), get));
        };
        if !vary_matches(&entry.vary, request.headers()) {
            return Lookup::Fetch(pending(Some(Status::Miss), get));
        }
        if entry.expires <= Instant::now() {
            return Lookup::Fetch(pending(Some(Status::Expired), get));
        }
        let mut response = Response::new(if get {
            full_body(entry.body.clone())
        } else {
            empty_body()
        });
        *response.status_mut() = entry.status;
        *response.headers_mut() = entry.headers.clone();
        response.extensions_mut().insert(Status::Hit);
        Lookup::Hit(response)
    }
}

impl Pending {
    /// The upstream's `response`, stored when [`freshness`] allows and it fits, marked with the
    /// cache status either way. An answer that is stored is read in full first (bounded by
    /// `max_entry_size` and the route's read timeout); one that fails midway becomes a 502.
    pub async fn store(self, response: Response<ProxyBody>) -> Response<ProxyBody> {
        let mut response = response;
        let status = self.status;
        // Only the upstream's own answers: certd's 502/504 and error pages are not kept.
        let from_upstream = response
            .extensions()
            .get::<super::error_page::FromUpstream>()
            .is_some();
        let ttl = from_upstream
            .then(|| {
                freshness(
                    response.status(),
                    response.headers(),
                    &self.cache.policy.valid,
                    SystemTime::now(),
                )
            })
            .flatten();
        let length = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        let fits = length.is_some_and(|length| length <= self.cache.policy.max_entry_bytes);
        let (Some(ttl), true, true) = (ttl, fits, self.store) else {
            mark(&mut response, status);
            return response;
        };
        let (parts, body) = response.into_parts();
        // A deadline of its own: the route's read timeout bounds each read, this the whole body.
        let body = match tokio::time::timeout(COLLECT_TIMEOUT, body.collect()).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(error)) => {
                tracing::warn!(%error, "upstream answer for the cache broke off");
                let mut response = status_response(StatusCode::BAD_GATEWAY);
                mark(&mut response, status);
                return response;
            }
            Err(_) => {
                tracing::warn!("upstream answer for the cache took longer than 60 s");
                let mut response = status_response(StatusCode::BAD_GATEWAY);
                mark(&mut response, status);
                return response;
            }
        };
        let vary = vary_values(&parts.headers, &self.request_headers);
        // `checked_add`: a max-age from the upstream may be anything.
        if let (Some(vary), Some(expires)) = (vary, Instant::now().checked_add(ttl)) {
            let entry = Entry {
                status: parts.status,
                headers: parts.headers.clone(),
                body: body.clone(),
                expires,
                vary,
            };
            self.cache.store.insert(self.key, Arc::new(entry));
        }
        let mut response = Response::from_parts(parts, full_body(body));
        mark(&mut response, status);
        response
    }
}

/// How long a body of at most `max_entry_size` may take to arrive in full before it is stored.
const COLLECT_TIMEOUT: Duration = Duration::from_secs(60);

fn mark(response: &mut Response<ProxyBody>, status: Option<Status>) {
    if let Some(status) = status {
        response.extensions_mut().insert(status);
    }
}

fn entry_bytes(key: &str, entry: &Entry) -> u64 {
    let headers: usize = entry
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    u64::try_from(key.len() + headers + entry.body.len()).unwrap_or(u64::MAX)
}

/// How long an answer may be kept, or `None` when it must not be, in nginx's order: `Set-Cookie`
/// and `Vary: *` are never kept; `Cache-Control` `no-store` / `no-cache` / `private` forbid it,
/// `s-maxage` then `max-age` set the time (0: not kept); else `Expires` (in the past: not kept);
/// else the `valid` time of the status.
pub fn freshness(
    status: StatusCode,
    headers: &HeaderMap,
    valid: &[(u16, Duration)],
    now: SystemTime,
) -> Option<Duration> {
    if headers.contains_key(SET_COOKIE) {
        return None;
    }
    let vary_star = headers
        .get_all(VARY)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|name| name.trim() == "*");
    if vary_star {
        return None;
    }
    let mut max_age = None;
    let mut s_maxage = None;
    for directive in headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
    {
        let directive = directive.trim().to_ascii_lowercase();
        let (name, value) = match directive.split_once('=') {
            Some((name, value)) => (name.trim().to_owned(), Some(value.trim().to_owned())),
            None => (directive.clone(), None),
        };
        let seconds = || value.as_deref().and_then(|value| value.parse::<u64>().ok());
        match name.as_str() {
            "no-store" | "no-cache" | "private" => return None,
            "max-age" => max_age = Some(seconds()?),
            "s-maxage" => s_maxage = Some(seconds()?),
            _ => {}
        }
    }
    if let Some(seconds) = s_maxage.or(max_age) {
        return (seconds > 0).then(|| Duration::from_secs(seconds));
    }
    if let Some(expires) = headers.get(EXPIRES) {
        // An unreadable Expires means "already expired" (RFC 9111 5.3), as nginx reads it.
        let expires = expires
            .to_str()
            .ok()
            .and_then(|text| httpdate::parse_http_date(text).ok())?;
        return expires
            .duration_since(now)
            .ok()
            .filter(|ttl| !ttl.is_zero());
    }
    let time_of = |wanted: u16| valid.iter().find(|(code, _)| *code == wanted);
    time_of(status.as_u16())
        .or_else(|| time_of(0))
        .map(|(_, ttl)| *ttl)
}

/// The request's values of the headers the answer's `Vary` names; `None` for `Vary: *` or a name
/// that is not a header (never stored).
fn vary_values(
    response: &HeaderMap,
    request: &HeaderMap,
) -> Option<Vec<(HeaderName, Option<HeaderValue>)>> {
    let mut values = Vec::new();
    for name in response
        .get_all(VARY)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|name| !name.is_empty())
    {
        let name = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).ok()?;
        let value = request.get(&name).cloned();
        values.push((name, value));
    }
    Some(values)
}

fn vary_matches(stored: &[(HeaderName, Option<HeaderValue>)], request: &HeaderMap) -> bool {
    stored
        .iter()
        .all(|(name, value)| request.get(name) == value.as_ref())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    const DAY: Duration = Duration::from_secs(24 * 3600);

    /// A status, the upstream's headers, and the expected freshness.
    type Case<'a> = (StatusCode, &'a [(&'static str, &'a str)], Option<Duration>);

    #[test]
    fn freshness_follows_nginx_order() {
        let valid = [(200, 7 * DAY), (410, DAY)];
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let in_an_hour = httpdate::fmt_http_date(now + Duration::from_secs(3600));
        let an_hour_ago = httpdate::fmt_http_date(now - Duration::from_secs(3600));
        let ok = StatusCode::OK;
        let table: &[Case<'_>] = &[
            (ok, &[], Some(7 * DAY)),
            (StatusCode::GONE, &[], Some(DAY)),
            (StatusCode::NOT_FOUND, &[], None),
            (ok, &[("cache-control", "no-store")], None),
            (ok, &[("cache-control", "public, no-cache")], None),
            (ok, &[("cache-control", "private, max-age=60")], None),
            (
                ok,
                &[("cache-control", "max-age=60")],
                Some(Duration::from_secs(60)),
            ),
            (
                ok,
                &[("cache-control", "max-age=60, s-maxage=5")],
                Some(Duration::from_secs(5)),
            ),
            (ok, &[("cache-control", "max-age=0")], None),
            (ok, &[("cache-control", "max-age=x")], None),
            // Upstream headers cache a status `valid` does not list, as in nginx.
            (
                StatusCode::NOT_FOUND,
                &[("cache-control", "max-age=9")],
                Some(Duration::from_secs(9)),
            ),
            (
                ok,
                &[("expires", &in_an_hour)],
                Some(Duration::from_secs(3600)),
            ),
            (ok, &[("expires", &an_hour_ago)], None),
            (ok, &[("expires", "0")], None),
            (
                ok,
                &[("cache-control", "max-age=60"), ("expires", &an_hour_ago)],
                Some(Duration::from_secs(60)),
            ),
            (ok, &[("set-cookie", "a=b")], None),
            (ok, &[("vary", "Accept, *")], None),
        ];
        for (status, pairs, expected) in table {
            let got = freshness(*status, &headers(pairs), &valid, now);
            assert_eq!(got, *expected, "{status} {pairs:?}");
        }
        // `any` (status 0) covers the statuses without a time of their own, whatever its place.
        let any = [(0, Duration::from_secs(60)), (200, DAY)];
        let none = HeaderMap::new();
        assert_eq!(
            freshness(StatusCode::NOT_FOUND, &none, &any, now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(freshness(ok, &none, &any, now), Some(DAY));
    }

    fn policy() -> Policy {
        Policy {
            valid: vec![(200, Duration::from_secs(600))],
            max_entries: 2,
            max_bytes: 1 << 20,
            max_entry_bytes: 1024,
        }
    }

    fn get(uri: &str, pairs: &[(&'static str, &str)]) -> Request<()> {
        let mut request = Request::get(uri).body(()).unwrap();
        *request.headers_mut() = headers(pairs);
        request
    }

    fn upstream(body: &'static str, pairs: &[(&'static str, &str)]) -> Response<ProxyBody> {
        let mut response = Response::new(full_body(body));
        *response.headers_mut() = headers(pairs);
        response
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        response
            .extensions_mut()
            .insert(super::super::error_page::FromUpstream);
        response
    }

    async fn fetch(
        cache: &Arc<RouteCache>,
        request: &Request<()>,
        answer: Response<ProxyBody>,
    ) -> (Option<Status>, Bytes) {
        let response = match cache.lookup(request, "app") {
            Lookup::Hit(response) => response,
            Lookup::Fetch(pending) => pending.store(answer).await,
        };
        let status = response.extensions().get::<Status>().copied();
        (
            status,
            response.into_body().collect().await.unwrap().to_bytes(),
        )
    }

    #[tokio::test]
    async fn miss_then_hit_keyed_by_uri_and_vary() {
        let cache = Arc::new(RouteCache::new(policy()));
        let a = get("/a?x=1", &[("accept-language", "de")]);
        let vary = [("vary", "Accept-Language")];
        assert_eq!(
            fetch(&cache, &a, upstream("one", &vary)).await,
            (Some(Status::Miss), "one".into())
        );
        assert_eq!(
            fetch(&cache, &a, upstream("two", &vary)).await,
            (Some(Status::Hit), "one".into())
        );
        // Another query is another key.
        let b = get("/a?x=2", &[("accept-language", "de")]);
        assert_eq!(
            fetch(&cache, &b, upstream("three", &vary)).await.0,
            Some(Status::Miss)
        );
        // Other Vary values: fetched again, and that answer replaces the stored one.
        let en = get("/a?x=1", &[("accept-language", "en")]);
        assert_eq!(
            fetch(&cache, &en, upstream("four", &vary)).await,
            (Some(Status::Miss), "four".into())
        );
        assert_eq!(
            fetch(&cache, &en, upstream("five", &vary)).await,
            (Some(Status::Hit), "four".into())
        );
        // POST is never looked up nor stored.
        let mut post = get("/a?x=1", &[("accept-language", "en")]);
        *post.method_mut() = Method::POST;
        assert_eq!(
            fetch(&cache, &post, upstream("six", &[])).await,
            (None, "six".into())
        );
    }

    #[tokio::test]
    async fn refused_answers_are_passed_through_unstored() {
        let cache = Arc::new(RouteCache::new(policy()));
        let request = get("/p", &[]);
        let cases = [
            upstream("a", &[("set-cookie", "s=1")]),
            upstream("b", &[("cache-control", "private")]),
            upstream(
                "this body is longer than the entry limit allows, so it streams through and is not kept",
                &[],
            ),
        ];
        let mut long = Policy {
            max_entry_bytes: 10,
            ..policy()
        };
        long.max_entries = 5;
        let small = Arc::new(RouteCache::new(long));
        for (i, answer) in cases.into_iter().enumerate() {
            let cache = if i == 2 { &small } else { &cache };
            assert_eq!(fetch(cache, &request, answer).await.0, Some(Status::Miss));
            let again = fetch(cache, &request, upstream("z", &[("set-cookie", "s=1")])).await;
            assert_eq!(again, (Some(Status::Miss), "z".into()), "case {i}");
        }
        // certd's own 502 (no FromUpstream mark) is never kept.
        let mut own = upstream("bad gateway", &[]);
        own.extensions_mut().clear();
        assert_eq!(
            fetch(&cache, &get("/own", &[]), own).await.0,
            Some(Status::Miss)
        );
        assert_eq!(
            fetch(&cache, &get("/own", &[]), upstream("up", &[])).await,
            (Some(Status::Miss), "up".into())
        );
    }

    #[tokio::test]
    async fn expired_entries_are_fetched_again() {
        let cache = Arc::new(RouteCache::new(policy()));
        let request = get("/e", &[]);
        let short = [("cache-control", "max-age=1")];
        assert_eq!(
            fetch(&cache, &request, upstream("old", &short)).await.0,
            Some(Status::Miss)
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(
            fetch(&cache, &request, upstream("new", &[])).await,
            (Some(Status::Expired), "new".into())
        );
        assert_eq!(
            fetch(&cache, &request, upstream("x", &[])).await,
            (Some(Status::Hit), "new".into())
        );
    }

    #[test]
    fn the_weight_floor_caps_the_entry_count() {
        let cache = RouteCache::new(Policy {
            max_entries: 2,
            max_bytes: 1000,
            ..policy()
        });
        for i in 0..50 {
            let entry = Entry {
                status: StatusCode::OK,
                headers: HeaderMap::new(),
                body: Bytes::from_static(b"x"),
                expires: Instant::now() + Duration::from_secs(60),
                vary: Vec::new(),
            };
            cache.store.insert(format!("k{i}"), Arc::new(entry));
        }
        cache.store.run_pending_tasks();
        assert!(
            cache.store.entry_count() <= 2,
            "{}",
            cache.store.entry_count()
        );
    }
}
