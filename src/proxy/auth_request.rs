//! nginx `auth_request`: before a route's target runs, a bodiless subrequest for another URI of
//! the same site decides whether the request goes on. The subrequest is routed like any internal
//! request (locations, `try_files`, named routes, `internal` routes), carries the client's headers
//! (cookies, `Authorization`) and is a `GET`, as nginx's subrequests are.
//!
//! As in ngx_http_auth_request_module: a 2xx answer lets the request through; 401 is sent to the
//! client with the subrequest's `WWW-Authenticate`; 403 is sent as 403; anything else (no route,
//! an unreachable upstream, a redirect, 404, 5xx) is 500. The subrequest's body is dropped.
//!
//! One difference on purpose: nginx passes the client's `Content-Length` on with the bodiless
//! subrequest unless the config clears it (the reason its docs add `proxy_set_header
//! Content-Length ""`), so the auth server waits for a body that never comes. certd's subrequest
//! has neither a body nor a `Content-Length`.

use std::net::SocketAddr;

use hyper::http::request::Parts;
use hyper::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use tracing::{debug, warn};

use super::path::{self, NormalPath};
use super::{status_response, try_files, Proxy, ProxyBody, SiteRoutes};

/// What the subrequest's status means for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// 2xx: serve the request.
    Pass,
    /// Answer with this status (401 and 403 as they are, anything else 500).
    Refuse(StatusCode),
}

/// nginx's reading of the subrequest's `status`.
pub(super) fn verdict(status: StatusCode) -> Verdict {
    match status {
        s if s.is_success() => Verdict::Pass,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Verdict::Refuse(status),
        _ => Verdict::Refuse(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

/// The subrequest for `path`: `GET` without a query or a body, with the client's headers (less
/// the ones that frame a body).
fn subrequest_parts(uri: &Uri, headers: &HeaderMap, path: &NormalPath) -> Option<Parts> {
    let mut target = hyper::http::uri::Parts::from(uri.clone());
    target.path_and_query = Some(path.as_str().parse().ok()?);
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = Method::GET;
    parts.uri = Uri::from_parts(target).ok()?;
    parts.headers = headers.clone();
    parts.headers.remove(hyper::header::CONTENT_LENGTH);
    parts.headers.remove(hyper::header::TRANSFER_ENCODING);
    Some(parts)
}

impl Proxy {
    /// Runs the `auth_request` subrequest for `uri` on `site` for a request with `request_uri`
    /// and `headers`; `None` lets the request through, `Some` is certd's answer instead.
    pub(super) async fn auth_request(
        &self,
        site: &SiteRoutes,
        uri: &str,
        request_uri: &Uri,
        headers: &HeaderMap,
        client: SocketAddr,
    ) -> Option<Response<ProxyBody>> {
        let failed = || Some(status_response(StatusCode::INTERNAL_SERVER_ERROR));
        let Ok(path) = path::normalise(uri) else {
            return failed();
        };
        let Some(route) = site.route(path.as_str()) else {
            warn!(uri, "auth_request: no route answers the subrequest");
            return failed();
        };
        let original = request_uri.path_and_query().map_or("/", |raw| raw.as_str());
        let answer = match try_files::resolve_from(site, route, path, original).await {
            try_files::Resolved::Route(route, path) => {
                let parts = subrequest_parts(request_uri, headers, &path)?;
                Box::pin(self.serve_internal(route, parts, path, client)).await
            }
            try_files::Resolved::Status(status) => Some(status_response(status)),
            try_files::Resolved::NoRoute => None,
        };
        let Some(answer) = answer else {
            warn!(uri, "auth_request: the subrequest could not be sent");
            return failed();
        };
        match verdict(answer.status()) {
            Verdict::Pass => None,
            Verdict::Refuse(status) => {
                if status == StatusCode::INTERNAL_SERVER_ERROR {
                    warn!(
                        uri,
                        status = answer.status().as_u16(),
                        "auth_request: unexpected status"
                    );
                } else {
                    debug!(
                        uri,
                        status = status.as_u16(),
                        "auth_request refused the request"
                    );
                }
                let mut response = status_response(status);
                if status == StatusCode::UNAUTHORIZED {
                    for value in answer.headers().get_all(hyper::header::WWW_AUTHENTICATE) {
                        response
                            .headers_mut()
                            .append(hyper::header::WWW_AUTHENTICATE, value.clone());
                    }
                }
                Some(response)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn two_hundreds_pass_401_and_403_are_kept_the_rest_is_500() {
        assert_eq!(verdict(StatusCode::OK), Verdict::Pass);
        assert_eq!(verdict(StatusCode::NO_CONTENT), Verdict::Pass);
        for kept in [StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN] {
            assert_eq!(verdict(kept), Verdict::Refuse(kept));
        }
        for other in [
            StatusCode::FOUND,
            StatusCode::NOT_FOUND,
            StatusCode::BAD_GATEWAY,
            StatusCode::INTERNAL_SERVER_ERROR,
        ] {
            assert_eq!(
                verdict(other),
                Verdict::Refuse(StatusCode::INTERNAL_SERVER_ERROR)
            );
        }
    }

    #[test]
    fn the_subrequest_is_a_bodiless_get_with_the_clients_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("cookie", "session=1".parse().unwrap());
        headers.insert(hyper::header::CONTENT_LENGTH, "1048576".parse().unwrap());
        headers.insert(hyper::header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        let uri: Uri = "https://a.test/upload?x=1".parse().unwrap();
        let path = path::normalise("/check-auth").unwrap();
        let parts = subrequest_parts(&uri, &headers, &path).unwrap();
        assert_eq!(parts.method, Method::GET);
        assert_eq!(parts.uri.path(), "/check-auth");
        assert_eq!(parts.uri.query(), None);
        assert_eq!(parts.headers["cookie"], "session=1");
        assert!(parts.headers.get(hyper::header::CONTENT_LENGTH).is_none());
        assert!(parts
            .headers
            .get(hyper::header::TRANSFER_ENCODING)
            .is_none());
    }
}
