//! nginx `error_page`: an error answer replaced by what the site's routes serve for another URI
//! (an internal redirect) or by a named route, with its status kept, replaced, or taken from the
//! target.
//!
//! ```text
//! error_page 500 502 503 504 /50x.html;   →  [[site.error_page]] codes = [500, 502, 503, 504], target = "/50x.html"
//! error_page 404 =200 /empty.gif;         →  ... codes = [404], target = "/empty.gif", status = 200
//! error_page 404 = @fallback;             →  ... codes = [404], target = "@fallback", status = "target"
//! proxy_intercept_errors on;              →  intercept_errors = true (on the route)
//! ```
//!
//! As in nginx, the list applies to certd's own answers (no route, a missing file, an access refusal,
//! `return`, an unreachable upstream), and to an upstream's (or PHP's) answer only on routes with
//! `intercept_errors = true`. A route's own list replaces the site's (nginx inheritance). The error
//! page's request is a `GET` (a `HEAD` stays a `HEAD`) without a body; it is not itself replaced
//! again when it fails (nginx's `recursive_error_pages off`): what the target answers is sent.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::http::request::Parts;
use hyper::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use tracing::{debug, warn};

use super::body::RequestBody;
use super::path::{self, NormalPath};
use super::{
    alias, headers, http_rules, location, static_files, status_response, try_files, Proxy,
    ProxyBody, Route, RouteTarget, SiteRoutes, UpstreamUsed,
};

/// One `error_page` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorPage {
    /// The statuses it replaces (300 to 599).
    pub codes: Vec<u16>,
    /// What is served in their place.
    pub target: ErrorTarget,
    /// The status of the answer.
    pub status: ErrorStatus,
}

/// Where an error page comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorTarget {
    /// `"/50x.html"` (optionally with `?query`): served as a request for this URI, matched
    /// against the site's routes.
    Uri {
        /// The normalised path.
        path: String,
        /// The query, if the target has one.
        query: Option<String>,
    },
    /// `"@name"`: the named route answers the original request's path.
    Named(String),
}

/// The status the error page is sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorStatus {
    /// `status` absent: the original error's status (nginx `error_page 404 /404.html`).
    #[default]
    Original,
    /// `status = 200`: this status (nginx `error_page 404 =200 /x`).
    Code(StatusCode),
    /// `status = "target"`: whatever the target answered (nginx's bare `=`).
    Target,
}

/// Put by a route on its responses when it has an error page list: the list, and whether the
/// upstream's own errors are replaced too.
#[derive(Debug, Clone)]
pub(super) struct RouteErrorPages {
    pub(super) pages: Arc<Vec<ErrorPage>>,
    pub(super) intercept: bool,
}

/// `response` marked with `route`'s error pages, if it has any.
pub(super) fn mark(route: &Route, mut response: Response<ProxyBody>) -> Response<ProxyBody> {
    if !route.error_page.is_empty() {
        response.extensions_mut().insert(RouteErrorPages {
            pages: route.error_page.clone(),
            intercept: route.intercept_errors,
        });
    }
    response
}

/// Put on responses that an upstream or PHP made (not certd): replaced only with `intercept_errors`.
#[derive(Debug, Clone, Copy)]
pub(super) struct FromUpstream;

/// What is kept of a request to serve its error page after the request itself has been consumed.
pub(super) struct Saved {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Saved {
    /// The client's own path and query (`$request_uri`).
    fn request_uri(&self) -> &str {
        self.uri.path_and_query().map_or("/", |raw| raw.as_str())
    }

    /// The parts of `request` an error page needs, kept only on sites that have error pages.
    pub(super) fn of<B>(request: &Request<B>) -> Self {
        Self {
            method: request.method().clone(),
            uri: request.uri().clone(),
            headers: request.headers().clone(),
        }
    }
}

/// The error page entry replacing an answer with `status`: from `pages`, if `from_upstream` is
/// false or `intercept` is set.
pub(super) fn entry(
    pages: &[ErrorPage],
    status: StatusCode,
    from_upstream: bool,
    intercept: bool,
) -> Option<&ErrorPage> {
    if from_upstream && !intercept {
        return None;
    }
    let code = status.as_u16();
    if !(300..=599).contains(&code) {
        return None;
    }
    pages.iter().find(|page| page.codes.contains(&code))
}

/// The status an error page answer is sent with.
pub(super) fn final_status(
    page: ErrorStatus,
    original: StatusCode,
    target: StatusCode,
) -> StatusCode {
    match page {
        ErrorStatus::Original => original,
        ErrorStatus::Code(code) => code,
        ErrorStatus::Target => target,
    }
}

impl Proxy {
    /// `response` to the request `saved`, or its error page when the site or route has one for
    /// its status.
    pub(super) async fn apply_error_page(
        &self,
        site: &SiteRoutes,
        saved: Saved,
        response: Response<ProxyBody>,
        client: SocketAddr,
    ) -> Response<ProxyBody> {
        let from_upstream = response.extensions().get::<FromUpstream>().is_some();
        let (pages, intercept) = match response.extensions().get::<RouteErrorPages>() {
            Some(route) => (route.pages.clone(), route.intercept),
            None => (site.error_page.clone(), false),
        };
        let original = response.status();
        let Some(page) = entry(&pages, original, from_upstream, intercept) else {
            return response;
        };
        let head = saved.method == Method::HEAD;
        let (path, query) = match &page.target {
            ErrorTarget::Uri { path, query } => (path.clone(), query.clone()),
            ErrorTarget::Named(_) => (
                saved.uri.path().to_owned(),
                saved.uri.query().map(str::to_owned),
            ),
        };
        let Ok(path) = path::normalise(&path) else {
            return response;
        };
        let route = match &page.target {
            ErrorTarget::Uri { .. } => site.route(path.as_str()),
            ErrorTarget::Named(name) => location::named(&site.routes, name),
        };
        let answer = match route {
            None => {
                debug!(path = path.as_str(), "no route for the error page");
                status_response(StatusCode::NOT_FOUND)
            }
            Some(route) => match try_files::resolve_from(site, route, path, saved.request_uri())
                .await
            {
                try_files::Resolved::Route(route, path) => {
                    let parts = internal_parts(&saved, &path, query.as_deref(), head);
                    match parts {
                        Some(parts) => Box::pin(self.serve_internal(route, parts, path, client))
                            .await
                            .unwrap_or(response),
                        None => response,
                    }
                }
                try_files::Resolved::Status(status) => status_response(status),
                try_files::Resolved::NoRoute => status_response(StatusCode::NOT_FOUND),
            },
        };
        let target = answer.status();
        let mut answer = answer;
        *answer.status_mut() = final_status(page.status, original, target);
        answer
    }

    /// What `route` answers to the bodiless internal request `parts` (for `path`); `None` when
    /// certd cannot send it there (then the original error is sent).
    pub(super) async fn serve_internal(
        &self,
        route: &Route,
        mut parts: Parts,
        path: NormalPath,
        client: SocketAddr,
    ) -> Option<Response<ProxyBody>> {
        let head = parts.method == Method::HEAD;
        // An internal redirect is checked again, as nginx runs the access phase for the new
        // location: an error page never opens a route the client may not use.
        if let Some(refused) = self
            .refused_by_headers(&parts.method, &parts.headers, route, client)
            .await
        {
            return Some(refused);
        }
        let response = match &route.target {
            RouteTarget::Static(root) => {
                let mut response = static_files::serve_indexed(
                    root,
                    &parts,
                    route.allow_dotfiles,
                    route.precompressed,
                    &route.index,
                )
                .await;
                let used = UpstreamUsed(format!("static:{}", root.display()));
                response.extensions_mut().insert(used);
                response
            }
            RouteTarget::Alias(folder) => {
                let allow = route.allow_dotfiles;
                let mut response =
                    alias::serve(folder, &route.path, &mut parts, allow, &route.index).await;
                let used = UpstreamUsed(format!("static:{}", folder.display()));
                response.extensions_mut().insert(used);
                response
            }
            RouteTarget::Return(answer) => {
                let facts = super::variables::RequestFacts::default();
                http_rules::answer(answer, &facts, head)
            }
            RouteTarget::Proxy(upstream) => {
                let path = match route.strip_prefix {
                    true => super::stripped(&route.path, path),
                    false => path,
                };
                let (uri, label, _flight) = match &route.upstream {
                    None => (upstream.clone(), super::upstream_label(upstream), None),
                    Some(group) => {
                        let (flight, authority, label) = group.any_server(client.ip())?;
                        let mut uri = hyper::http::uri::Parts::from(upstream.clone());
                        uri.authority = Some(authority);
                        (Uri::from_parts(uri).ok()?, label, Some(flight))
                    }
                };
                self.forward_internal(parts, &path, &uri, &label, client, route)
                    .await
            }
            RouteTarget::Fastcgi(target) => {
                let request = Request::from_parts(parts, Empty::<Bytes>::new());
                let connection = crate::fastcgi::params::Connection {
                    client: client.ip(),
                    client_port: Some(client.port()),
                    server: None,
                };
                let deadlines = crate::fastcgi::Deadlines {
                    connect: self.limits.connect_timeout,
                    read: self.limits.response_timeout,
                };
                match crate::fastcgi::serve(target, &route.index, request, connection, deadlines)
                    .await
                {
                    crate::fastcgi::Answer::Script(response) => response,
                    crate::fastcgi::Answer::Local(response) => response,
                }
            }
        };
        Some(response)
    }

    /// Sends the bodiless internal request `parts` to `upstream` (one attempt).
    async fn forward_internal(
        &self,
        mut parts: Parts,
        path: &NormalPath,
        upstream: &Uri,
        label: &str,
        client: SocketAddr,
        route: &Route,
    ) -> Response<ProxyBody> {
        let host = headers::original_host(&parts.uri, &parts.headers);
        let Ok(uri) = headers::upstream_uri(upstream, path, parts.uri.query()) else {
            return status_response(StatusCode::BAD_GATEWAY);
        };
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        headers::prepare_request_headers(
            &mut parts.headers,
            host,
            client.ip(),
            &self.trusted_proxies,
            None,
        );
        let request = Request::from_parts(parts, RequestBody::empty());
        let timeout = route.timeouts.read.unwrap_or(self.limits.response_timeout);
        let sent = super::upstream::with_connect_timeout(
            route.timeouts.connect,
            self.client.request(request),
        );
        let mut response = match tokio::time::timeout(timeout, sent).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                let error = super::error_chain(&error);
                warn!(upstream = label, error = %error.text, "error page request failed");
                return status_response(StatusCode::BAD_GATEWAY);
            }
            Err(_) => {
                warn!(upstream = label, "error page request timed out");
                return status_response(StatusCode::GATEWAY_TIMEOUT);
            }
        };
        headers::remove_hop_by_hop(response.headers_mut());
        let mut response = response.map(|body| body.map_err(std::io::Error::other).boxed());
        response
            .extensions_mut()
            .insert(UpstreamUsed(label.to_owned()));
        response
    }
}

/// The internal request for an error page: `GET` (or `HEAD`) of `path?query` with the original
/// headers, without a body.
fn internal_parts(
    saved: &Saved,
    path: &NormalPath,
    query: Option<&str>,
    head: bool,
) -> Option<Parts> {
    let path_and_query = match query {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    };
    let mut uri = hyper::http::uri::Parts::from(saved.uri.clone());
    uri.path_and_query = Some(path_and_query.parse().ok()?);
    let uri = Uri::from_parts(uri).ok()?;
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = if head { Method::HEAD } else { Method::GET };
    parts.uri = uri;
    parts.headers = saved.headers.clone();
    // The error page has no body, whatever the original request had.
    parts.headers.remove(hyper::header::CONTENT_LENGTH);
    parts.headers.remove(hyper::header::TRANSFER_ENCODING);
    parts.headers.remove(hyper::header::CONTENT_TYPE);
    Some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(codes: &[u16]) -> ErrorPage {
        ErrorPage {
            codes: codes.to_vec(),
            target: ErrorTarget::Uri {
                path: "/50x.html".into(),
                query: None,
            },
            status: ErrorStatus::Original,
        }
    }

    #[test]
    fn upstream_errors_are_replaced_only_when_intercepted() {
        let pages = [page(&[404]), page(&[502, 503])];
        let bad = StatusCode::BAD_GATEWAY;
        assert_eq!(entry(&pages, bad, false, false), Some(&pages[1]));
        assert_eq!(entry(&pages, bad, true, false), None);
        assert_eq!(entry(&pages, bad, true, true), Some(&pages[1]));
        assert_eq!(
            entry(&pages, StatusCode::NOT_FOUND, false, false),
            Some(&pages[0])
        );
        assert_eq!(entry(&pages, StatusCode::OK, false, false), None);
        assert_eq!(
            entry(&pages, StatusCode::INTERNAL_SERVER_ERROR, false, true),
            None
        );
    }

    #[test]
    fn the_status_is_kept_replaced_or_the_targets() {
        let (original, target) = (StatusCode::NOT_FOUND, StatusCode::OK);
        assert_eq!(
            final_status(ErrorStatus::Original, original, target),
            original
        );
        assert_eq!(final_status(ErrorStatus::Target, original, target), target);
        let code = ErrorStatus::Code(StatusCode::NO_CONTENT);
        assert_eq!(final_status(code, original, target), StatusCode::NO_CONTENT);
    }
}
