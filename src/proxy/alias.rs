//! nginx `alias` for static routes: the route's prefix is replaced by the alias folder, so with a
//! route `/avatar/` and `alias = "avatars"`, `/avatar/a.png` is `avatars/a.png` (where `root` would
//! look for `avatars/avatar/a.png`).
//!
//! The file is served by [`static_files::serve`] with the prefix cut from the path, so the root
//! confinement, dotfile and folder rules are exactly those of `root`; only the folder redirect's
//! `Location` gets the prefix back.

use std::path::Path;

use hyper::header::{HeaderValue, LOCATION};
use hyper::http::request::Parts;
use hyper::http::uri::PathAndQuery;
use hyper::{Response, StatusCode, Uri};

use super::ProxyBody;
use crate::static_files;

/// The request path below the route's `prefix`, starting with `/` (`"/"` for the prefix itself).
pub(super) fn below_prefix(prefix: &str, path: &str) -> String {
    let rest = path.strip_prefix(prefix).unwrap_or(path);
    if rest.starts_with('/') {
        rest.to_owned()
    } else {
        format!("/{rest}")
    }
}

/// Serves `parts` (on a route with `prefix`) from `folder`.
pub(super) async fn serve(
    folder: &Path,
    prefix: &str,
    parts: &mut Parts,
    allow_dotfiles: bool,
    index: &[String],
) -> Response<ProxyBody> {
    let below = below_prefix(prefix, parts.uri.path());
    let path_and_query = match parts.uri.query() {
        Some(query) => format!("{below}?{query}"),
        None => below,
    };
    let Ok(path_and_query) = PathAndQuery::try_from(path_and_query) else {
        return super::status_response(StatusCode::BAD_REQUEST);
    };
    let mut uri = hyper::http::uri::Parts::from(parts.uri.clone());
    uri.path_and_query = Some(path_and_query);
    let Ok(uri) = Uri::from_parts(uri) else {
        return super::status_response(StatusCode::BAD_REQUEST);
    };
    parts.uri = uri;
    let mut response =
        static_files::serve_indexed(folder, parts, allow_dotfiles, false, index).await;
    // A folder named without its slash is redirected; the redirect must name the public path.
    if response.status() == StatusCode::MOVED_PERMANENTLY {
        let public = response
            .headers()
            .get(LOCATION)
            .and_then(|location| location.to_str().ok())
            .map(|location| format!("{}{location}", prefix.trim_end_matches('/')));
        if let Some(public) = public.and_then(|public| HeaderValue::from_str(&public).ok()) {
            response.headers_mut().insert(LOCATION, public);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_is_cut_from_the_path() {
        let cases = [
            ("/avatar/", "/avatar/a.png", "/a.png"),
            ("/avatar", "/avatar/a.png", "/a.png"),
            ("/avatar", "/avatar", "/"),
            ("/avatar/", "/avatar/", "/"),
            ("/", "/a/b", "/a/b"),
        ];
        for (prefix, path, expected) in cases {
            assert_eq!(below_prefix(prefix, path), expected, "{prefix} {path}");
        }
    }
}
