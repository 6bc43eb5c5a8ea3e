//! The :80 listener's answer to everything that is not an ACME challenge: a redirect to HTTPS for
//! the names certd serves, 404 for any other host.

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::sites::SiteTable;
use crate::challenge;
use crate::plain_http::Fallback;

/// The :80 answer for everything but ACME challenges: 301 to `https://<host><path-and-query>` for a
/// configured name (with the HTTPS port when it is not 443), 404 for any other host.
pub(super) fn redirect_to_https(
    sites: Arc<ArcSwap<SiteTable>>,
    https_port: u16,
    redirect: bool,
) -> Fallback {
    Arc::new(move |request: &Request<Incoming>| {
        let host = request
            .headers()
            .get(hyper::header::HOST)
            .and_then(|value| value.to_str().ok())
            .map(|host| {
                crate::hostname::strip_port(host)
                    .trim_end_matches('.')
                    .to_ascii_lowercase()
            });
        let Some(host) = host.filter(|host| redirect && sites.load().serves(host)) else {
            return challenge::plain(StatusCode::NOT_FOUND, "not found\n");
        };
        let path = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let location = if https_port == 443 {
            format!("https://{host}{path}")
        } else {
            format!("https://{host}:{https_port}{path}")
        };
        let mut response = Response::new(Full::new(Bytes::from_static(b"")));
        *response.status_mut() = StatusCode::MOVED_PERMANENTLY;
        match hyper::header::HeaderValue::try_from(location) {
            Ok(value) => {
                response
                    .headers_mut()
                    .insert(hyper::header::LOCATION, value);
                response
            }
            Err(_) => challenge::plain(StatusCode::BAD_REQUEST, "bad request target\n"),
        }
    })
}
