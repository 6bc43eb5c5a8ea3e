//! `try_files`: a static route that first looks for files and otherwise falls back to a URI (an
//! internal redirect, matched again), a named route (e.g. the app's proxy), or a status.
//!
//! ```text
//! try_files $uri $uri/ /index.html;   →  try_files = ["$uri", "$uri/", "/index.html"]
//! try_files $uri @app;                →  try_files = ["$uri", "@app"]
//! try_files $uri =404;                →  try_files = ["$uri", "=404"]
//! ```
//!
//! Each candidate but the last is a path under the route's static root, `$uri` standing for the
//! request's normalised path; a candidate ending in `/` is a folder, present when its `index.html`
//! is. A candidate the static root would refuse (a dotfile, a symlink out of the root) counts as
//! absent, so `try_files` never serves what a plain static route would not. As in nginx, at most
//! [`MAX_INTERNAL_REDIRECTS`] fallbacks are followed for one request; a loop ends in 500.

use hyper::StatusCode;

use super::path::{self, NormalPath};
use super::{location, Route, RouteTarget, SiteRoutes};
use crate::static_files;

/// How many fallbacks (URIs or named routes) one request may go through, as nginx's limit of 10
/// internal redirects.
pub const MAX_INTERNAL_REDIRECTS: usize = 10;

/// A route's `try_files` list, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TryFiles {
    /// The paths to look for, in order, with `$uri` not yet replaced.
    pub candidates: Vec<String>,
    /// What happens when none is there.
    pub fallback: TryFallback,
}

/// The last element of `try_files`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TryFallback {
    /// `"/index.html"`: the request continues with this path (`$uri` replaced), matched again
    /// against the site's routes.
    Uri(String),
    /// `"@app"`: the request, unchanged, goes to the named route.
    Named(String),
    /// `"=404"`: certd answers with this status.
    Status(StatusCode),
}

/// Where a request ends up once `try_files` has been applied.
#[derive(Debug)]
pub enum Resolved<'a> {
    /// This route answers, with this path (the file found, the fallback URI, or the request's own).
    Route(&'a Route, NormalPath),
    /// No route matches the path.
    NoRoute,
    /// certd answers with this status (`=code`, a loop of fallbacks, or a bad fallback URI).
    Status(StatusCode),
}

/// The route answering `path` on `site`, following `try_files` of the routes it meets.
pub async fn resolve(site: &SiteRoutes, path: NormalPath) -> Resolved<'_> {
    let mut path = path;
    let Some(mut route) = site.route(path.as_str()) else {
        return Resolved::NoRoute;
    };
    for _ in 0..=MAX_INTERNAL_REDIRECTS {
        let (Some(try_files), RouteTarget::Static(root)) = (&route.try_files, &route.target) else {
            return Resolved::Route(route, path);
        };
        for candidate in &try_files.candidates {
            let candidate = candidate.replace("$uri", path.as_str());
            // A candidate that does not normalise (e.g. `..` from the config) is simply absent.
            let Ok(normal) = path::normalise(&candidate) else {
                continue;
            };
            if static_files::exists(root, normal.as_str(), route.allow_dotfiles).await {
                return Resolved::Route(route, normal);
            }
        }
        match &try_files.fallback {
            TryFallback::Status(status) => return Resolved::Status(*status),
            TryFallback::Named(name) => match location::named(&site.routes, name) {
                Some(named) => route = named,
                None => return Resolved::Status(StatusCode::INTERNAL_SERVER_ERROR),
            },
            TryFallback::Uri(uri) => {
                let Ok(normal) = path::normalise(&uri.replace("$uri", path.as_str())) else {
                    return Resolved::Status(StatusCode::INTERNAL_SERVER_ERROR);
                };
                path = normal;
                match site.route(path.as_str()) {
                    Some(next) => route = next,
                    None => return Resolved::NoRoute,
                }
            }
        }
    }
    tracing::warn!(
        path = path.as_str(),
        "more than {MAX_INTERNAL_REDIRECTS} try_files fallbacks: a loop"
    );
    Resolved::Status(StatusCode::INTERNAL_SERVER_ERROR)
}
