//! `try_files`: a static route that first looks for files and otherwise falls back to a URI (an
//! internal redirect, matched again), a named route (e.g. the app's proxy), or a status.
//!
//! ```text
//! try_files $uri $uri/ /index.html;   →  try_files = ["$uri", "$uri/", "/index.html"]
//! try_files $uri @app;                →  try_files = ["$uri", "@app"]
//! try_files $uri =404;                →  try_files = ["$uri", "=404"]
//! try_files $uri /index.php$request_uri;  →  try_files = ["$uri", "/index.php$request_uri"]
//! ```
//!
//! Each candidate but the last is a path under the route's static root, `$uri` standing for the
//! request's normalised path; a candidate ending in `/` is a folder, present when its `index.html`
//! is. A candidate the static root would refuse (a dotfile, a symlink out of the root) counts as
//! absent, so `try_files` never serves what a plain static route would not. On a `regex` route,
//! `$1`…`$9` are the groups of its pattern matched against the path (PeerTube's
//! `try_files /storage/client-overrides/$1 /client/dist/$1 @api`); what they expand to is
//! normalised and looked up under the root like any other candidate. As in nginx, at most
//! [`MAX_INTERNAL_REDIRECTS`] fallbacks are followed for one request; a loop ends in 500.
//!
//! A fallback URI may name `$request_uri`, what the client sent (Nextcloud's front controller
//! `/index.php$request_uri`): as in nginx, a `?` in the result starts the query, which certd
//! takes from the request itself (the same one, unless a rewrite changed it).

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
    /// `"/index.html"`: the request continues with this path (`$uri` and `$request_uri`
    /// replaced, see [`expand_uri`]), matched again against the site's routes.
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

/// The route answering `path` on `site`, following `try_files` of the routes it meets;
/// `request_uri` is the client's own path and query (`$request_uri`).
pub async fn resolve<'a>(
    site: &'a SiteRoutes,
    path: NormalPath,
    request_uri: &str,
) -> Resolved<'a> {
    let Some(route) = site.route(path.as_str()) else {
        return Resolved::NoRoute;
    };
    resolve_from(site, route, path, request_uri).await
}

/// `written` (a `try_files` fallback or an `index` URI) with `$uri` replaced by `uri` and
/// `$request_uri` by `request_uri`, in one pass (a client's path that spells `$uri` stays as it
/// is), and cut at the first `?`: the path part, which certd normalises and routes.
pub fn expand_uri(written: &str, uri: &str, request_uri: &str) -> String {
    path_part(expand(written, uri, request_uri, None))
}

/// `expanded` up to its first `?` (what follows is a query, which certd takes from the request).
fn path_part(mut expanded: String) -> String {
    if let Some(query) = expanded.find('?') {
        expanded.truncate(query);
    }
    expanded
}

/// [`resolve`] for a request that has already been matched to `route` (and possibly rewritten on
/// the way there, as nginx's rewrite phase runs before `try_files`).
pub async fn resolve_from<'a>(
    site: &'a SiteRoutes,
    route: &'a Route,
    path: NormalPath,
    request_uri: &str,
) -> Resolved<'a> {
    if route.try_files.is_none() {
        return Resolved::Route(route, path);
    }
    // Boxed: the file lookups make a large future, and most requests never need it (the future of
    // every request is moved a few times on its way into hyper).
    Box::pin(follow(site, route, path, request_uri)).await
}

/// [`resolve`] from `route`, which has `try_files`.
async fn follow<'a>(
    site: &'a SiteRoutes,
    route: &'a Route,
    path: NormalPath,
    request_uri: &str,
) -> Resolved<'a> {
    let (mut route, mut path) = (route, path);
    for _ in 0..=MAX_INTERNAL_REDIRECTS {
        let (Some(try_files), RouteTarget::Static(root)) = (&route.try_files, &route.target) else {
            return Resolved::Route(route, path);
        };
        let captures = match &route.location {
            location::LocationMatch::Regex(regex) => regex.captures(path.as_str()),
            _ => None,
        };
        let captures = captures.unwrap_or_default();
        for written in &try_files.candidates {
            // The configuration allows `$request_uri` only in the fallback.
            let candidate = expand(written, path.as_str(), "", Some(&captures));
            // nginx tests a candidate written with a trailing `/` as a folder and any other as a
            // file: `$uri` for `/docs/` is a folder, which that file test never takes.
            if candidate.ends_with('/') && !written.ends_with('/') {
                continue;
            }
            // A candidate that does not normalise (e.g. `..` from the config) is simply absent.
            let Ok(normal) = path::normalise(&candidate) else {
                continue;
            };
            if static_files::exists(root, normal.as_str(), route.allow_dotfiles).await {
                // nginx drops the `/` a folder candidate is written with before it continues:
                // `$uri/` for `/docs` goes on as `/docs`, which the static module redirects to
                // `/docs/`; for `/docs/` it is `/docs//`, going on as `/docs/`.
                let without = match written.ends_with('/') {
                    true => candidate.strip_suffix('/').filter(|rest| !rest.is_empty()),
                    false => None,
                };
                if let Some(Ok(folder)) = without.map(path::normalise) {
                    return Resolved::Route(route, folder);
                }
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
                let expanded = path_part(expand(uri, path.as_str(), request_uri, Some(&captures)));
                let Ok(normal) = path::normalise(&expanded) else {
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

/// `written` with `$request_uri` replaced by `request_uri`, `$uri` by `uri` and `$1`…`$9` by
/// `captures` (a missing group is empty, as in nginx; without `captures`, on a route that is not a
/// regex, `$1` stays as written), in one pass: what a variable expands to is never read again.
fn expand(
    written: &str,
    uri: &str,
    request_uri: &str,
    captures: Option<&[Option<&str>]>,
) -> String {
    let mut out = String::with_capacity(written.len() + request_uri.len().max(uri.len()));
    let mut rest = written;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(next) = after.strip_prefix("request_uri") {
            out.push_str(request_uri);
            rest = next;
        } else if let Some(next) = after.strip_prefix("uri") {
            out.push_str(uri);
            rest = next;
        } else if let (Some(captures), Some(digit)) = (
            captures,
            after.chars().next().filter(|c| ('1'..='9').contains(c)),
        ) {
            let n = usize::from(digit as u8 - b'0');
            out.push_str(captures.get(n).copied().flatten().unwrap_or(""));
            rest = &after[1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use super::*;
    use crate::proxy::LocationMatch;

    fn static_route(path: &str, root: &Path, try_files: &[&str]) -> Route {
        let (last, candidates) = try_files.split_last().unwrap();
        let fallback = if let Some(code) = last.strip_prefix('=') {
            TryFallback::Status(StatusCode::from_u16(code.parse().unwrap()).unwrap())
        } else if last.starts_with('@') {
            TryFallback::Named((*last).to_owned())
        } else {
            TryFallback::Uri((*last).to_owned())
        };
        Route {
            try_files: Some(TryFiles {
                candidates: candidates.iter().map(|c| (*c).to_owned()).collect(),
                fallback,
            }),
            ..Route::new(path, RouteTarget::Static(root.to_owned()))
        }
    }

    #[test]
    fn captures_and_uri_expand_in_candidates() {
        let groups = [Some("/client/a.png"), Some("a.png"), None];
        assert_eq!(
            expand("/over/$1", "/client/a.png", "", Some(&groups)),
            "/over/a.png"
        );
        assert_eq!(expand("$uri.gz", "/x", "", Some(&groups)), "/x.gz");
        // A missing group is empty; a `$` not before `uri` or a digit stays.
        assert_eq!(expand("/a/$2/$9/b$", "/x", "", Some(&groups)), "/a///b$");
        assert_eq!(expand("$urix", "/p", "", Some(&[])), "/px");
    }

    fn app() -> Route {
        Route {
            location: LocationMatch::Named,
            ..Route::new(
                "@app",
                RouteTarget::Proxy("http://127.0.0.1:9".parse().unwrap()),
            )
        }
    }

    fn root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "spa").unwrap();
        std::fs::write(dir.path().join("a.css"), "css").unwrap();
        std::fs::write(dir.path().join(".env"), "SECRET=1").unwrap();
        std::fs::create_dir(dir.path().join("docs")).unwrap();
        std::fs::write(dir.path().join("docs/index.html"), "docs").unwrap();
        std::fs::create_dir(dir.path().join("empty")).unwrap();
        dir
    }

    fn site(routes: Vec<Route>) -> SiteRoutes {
        SiteRoutes {
            routes,
            error_pages: HashMap::new(),
            http: Default::default(),
            ..SiteRoutes::default()
        }
    }

    /// Where `path` ends up: the route's path and the path it is served with, or the status.
    async fn outcome(site: &SiteRoutes, path: &str) -> String {
        match resolve(site, path::normalise(path).unwrap(), path).await {
            Resolved::Route(route, path) => format!("{} {}", route.path, path),
            Resolved::NoRoute => "no route".into(),
            Resolved::Status(status) => status.as_u16().to_string(),
        }
    }

    #[tokio::test]
    async fn spa_fallback_serves_files_folders_then_index_html() {
        let dir = root();
        let site = site(vec![static_route(
            "/",
            dir.path(),
            &["$uri", "$uri/", "/index.html"],
        )]);
        for (request, expected) in [
            ("/a.css", "/ /a.css"),
            // A folder without its `/` goes on without it (the folder redirect answers).
            ("/docs", "/ /docs"),
            ("/docs/", "/ /docs/"),
            ("/settings/profile", "/ /index.html"),
            // A folder without index.html is not there.
            ("/empty", "/ /index.html"),
            // Dotfiles count as absent: the SPA answers, the file is never served.
            ("/.env", "/ /index.html"),
        ] {
            assert_eq!(outcome(&site, request).await, expected, "{request}");
        }
    }

    #[tokio::test]
    async fn a_named_fallback_hands_the_original_path_to_the_named_route() {
        let dir = root();
        let site = site(vec![
            static_route("/", dir.path(), &["$uri", "@app"]),
            app(),
        ]);
        assert_eq!(outcome(&site, "/a.css").await, "/ /a.css");
        assert_eq!(outcome(&site, "/users/1").await, "@app /users/1");
        assert_eq!(outcome(&site, "/.env").await, "@app /.env");
        // `$uri` is a file test: a folder, even one with an index.html, goes to the app.
        assert_eq!(outcome(&site, "/").await, "@app /");
        assert_eq!(outcome(&site, "/docs/").await, "@app /docs/");
    }

    #[tokio::test]
    async fn a_uri_fallback_is_matched_again() {
        let dir = root();
        let site = site(vec![
            static_route("/", dir.path(), &["$uri", "/api$uri"]),
            Route {
                path: "/api".into(),
                location: LocationMatch::Prefix,
                ..app()
            },
        ]);
        assert_eq!(outcome(&site, "/a.css").await, "/ /a.css");
        assert_eq!(outcome(&site, "/users").await, "/api /api/users");
    }

    #[tokio::test]
    async fn a_request_uri_fallback_appends_what_the_client_sent() {
        let dir = root();
        let site = site(vec![
            static_route(
                "/",
                dir.path(),
                &["$uri", "$uri/", "/index.php$request_uri"],
            ),
            Route {
                path: "/index.php".into(),
                location: LocationMatch::Prefix,
                ..app()
            },
        ]);
        assert_eq!(outcome(&site, "/a.css").await, "/ /a.css");
        assert_eq!(
            outcome(&site, "/apps/files").await,
            "/index.php /index.php/apps/files"
        );
        // What the client sent, not the normalised path; the query is cut off (the request keeps
        // its own).
        let site_path = path::normalise("/a/b").unwrap();
        match resolve(&site, site_path, "/a/./b?q=1").await {
            Resolved::Route(route, path) => {
                assert_eq!(
                    (route.path.as_str(), path.as_str()),
                    ("/index.php", "/index.php/a/b")
                )
            }
            _ => panic!("not routed"),
        }
    }

    #[test]
    fn uris_expand_in_one_pass_and_lose_their_query() {
        let cases = [
            ("/index.php$request_uri", "/x", "/x?a=1", "/index.php/x"),
            ("$uri/index.html", "/docs", "/docs", "/docs/index.html"),
            (
                "/p$uri",
                "/$request_uri",
                "/%24request_uri",
                "/p/$request_uri",
            ),
            ("/cost$5", "/x", "/x", "/cost$5"),
        ];
        for (written, uri, request_uri, expected) in cases {
            assert_eq!(expand_uri(written, uri, request_uri), expected, "{written}");
        }
    }

    #[tokio::test]
    async fn status_fallbacks_loops_and_missing_names_end_in_a_status() {
        let dir = root();
        let site = site(vec![
            static_route("/", dir.path(), &["$uri", "=404"]),
            static_route("/loop/", dir.path(), &["$uri", "/loop/again"]),
            static_route("/lost/", dir.path(), &["$uri", "@nowhere"]),
        ]);
        assert_eq!(outcome(&site, "/a.css").await, "/ /a.css");
        assert_eq!(outcome(&site, "/missing").await, "404");
        assert_eq!(outcome(&site, "/loop/x").await, "500");
        assert_eq!(outcome(&site, "/lost/x").await, "500");
    }

    #[tokio::test]
    async fn ten_fallbacks_are_followed_and_the_eleventh_is_refused() {
        let dir = root();
        // /r0/ falls back to /r1/x, …, /r{n-1}/ to /index.html (a file): n fallbacks in all.
        let chain = |n: usize| {
            let routes = (0..n)
                .map(|i| {
                    let next = if i + 1 == n {
                        "/index.html".to_owned()
                    } else {
                        format!("/r{}/x", i + 1)
                    };
                    static_route(&format!("/r{i}/"), dir.path(), &["$uri", &next])
                })
                .chain([Route {
                    try_files: None,
                    ..static_route("/index.html", dir.path(), &["=404"])
                }])
                .collect();
            site(routes)
        };
        assert_eq!(
            outcome(&chain(MAX_INTERNAL_REDIRECTS), "/r0/x").await,
            "/index.html /index.html"
        );
        assert_eq!(
            outcome(&chain(MAX_INTERNAL_REDIRECTS + 1), "/r0/x").await,
            "500"
        );
    }
}
