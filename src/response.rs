//! The response body every handler returns ([`ProxyBody`]) and the small generated bodies and
//! responses, below both the proxy and the static file server (and compression, FastCGI) so none of
//! them has to import another for them.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};

/// The body of every response the proxy returns: an upstream's body streamed through, a file
/// streamed from disk, or a short generated body.
pub type ProxyBody = BoxBody<Bytes, std::io::Error>;

/// A short `text/plain` response for `status`, e.g. `404 Not Found`.
pub(crate) fn status_response(status: StatusCode) -> Response<ProxyBody> {
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut response = Response::new(full_body(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A body holding `bytes`.
pub(crate) fn full_body(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A body with nothing in it.
pub(crate) fn empty_body() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}
