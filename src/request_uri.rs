//! The request's original URI (nginx's `$request_uri`), kept through certd's internal
//! redirects: normalising the path, rewrites, `try_files` fallbacks and `index` hand-offs change
//! the request's URI, but PHP's `REQUEST_URI` (and `$request_uri` in a `try_files` fallback) is
//! what the client sent, as in nginx.

use hyper::http::Extensions;
use hyper::Uri;

/// The path and query the client sent, put in a request's extensions the first time certd
/// changes its URI (absent: the URI is still the client's own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestUri(pub String);

/// Remembers `uri` (the request's URI before a change) as the original, unless one is already
/// remembered.
pub fn remember(extensions: &mut Extensions, uri: &Uri) {
    if extensions.get::<RequestUri>().is_none() {
        let raw = uri.path_and_query().map_or("/", |raw| raw.as_str());
        extensions.insert(RequestUri(raw.to_owned()));
    }
}

/// The original path and query of a request whose URI is now `uri`.
pub fn original<'a>(extensions: &'a Extensions, uri: &'a Uri) -> &'a str {
    match extensions.get::<RequestUri>() {
        Some(RequestUri(raw)) => raw,
        None => uri.path_and_query().map_or("/", |raw| raw.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_uri_is_kept_through_later_changes() {
        let mut extensions = Extensions::new();
        let first: Uri = "/a/../b?q=1".parse().expect("uri");
        let second: Uri = "/index.php/b?q=1".parse().expect("uri");
        assert_eq!(original(&extensions, &second), "/index.php/b?q=1");
        remember(&mut extensions, &first);
        remember(&mut extensions, &second);
        assert_eq!(original(&extensions, &second), "/a/../b?q=1");
    }
}
