//! nginx `index` for `root` and `alias` routes: a request for a folder (`/docs/`) continues as a
//! request for the first of the route's index names that the folder holds (`/docs/index.html`),
//! matched again against the site's routes, as nginx's index module makes an internal redirect.
//! So `index = ["index.php", "index.html"]` sends `/` to the PHP route when `index.php` is there,
//! never serving the script as a file.
//!
//! ```text
//! index index.html index.htm;   →  index = ["index.html", "index.htm"]
//! index index.php index.html /index.php$request_uri;
//!                               →  index = ["index.php", "index.html", "/index.php$request_uri"]
//! ```
//!
//! A last entry starting with `/` is a URI, not a file: when the folder holds none of the names
//! before it, the request continues there (nginx's absolute index, an internal redirect without a
//! file test), `$uri` and `$request_uri` replaced as in a `try_files` fallback.

use super::path::{self, NormalPath};
use super::{alias, Route, RouteTarget, SiteRoutes};
use crate::static_files;

/// The route and path a folder request continues with: `None` when `path` is not a folder
/// request on a `root`/`alias` route or the folder holds none of the index names (then the route
/// answers it itself: 404, or the folder redirect).
pub(super) async fn resolve<'a>(
    site: &'a SiteRoutes,
    route: &'a Route,
    path: &NormalPath,
    request_uri: &str,
) -> Option<(&'a Route, NormalPath)> {
    if !path.as_str().ends_with('/') {
        return None;
    }
    for name in &route.index {
        if name.starts_with('/') {
            if !matches!(route.target, RouteTarget::Static(_) | RouteTarget::Alias(_)) {
                return None;
            }
            let uri = super::try_files::expand_uri(name, path.as_str(), request_uri);
            let normal = path::normalise(&uri).ok()?;
            let next = site.route(normal.as_str())?;
            return Some((next, normal));
        }
        let candidate = format!("{path}{name}");
        let present = match &route.target {
            RouteTarget::Static(root) => {
                static_files::exists(root, &candidate, route.allow_dotfiles).await
            }
            RouteTarget::Alias(folder) => {
                let below = alias::below_prefix(&route.path, &candidate);
                static_files::exists(folder, &below, route.allow_dotfiles).await
            }
            _ => return None,
        };
        if !present {
            continue;
        }
        let normal = path::normalise(&candidate).ok()?;
        let next = site.route(normal.as_str())?;
        return Some((next, normal));
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::proxy::LocationMatch;

    #[tokio::test]
    async fn a_folder_continues_with_its_first_index_name_matched_again() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("docs")).unwrap();
        std::fs::write(dir.path().join("docs/index.htm"), "htm").unwrap();
        std::fs::write(dir.path().join("index.php"), "<?php").unwrap();
        std::fs::write(dir.path().join("index.html"), "html").unwrap();
        let root = RouteTarget::Static(dir.path().to_owned());
        let php = Route {
            location: LocationMatch::Regex(
                crate::proxy::LocationRegex::new(r"\.php$", false).unwrap(),
            ),
            ..Route::new(
                r"\.php$",
                RouteTarget::Proxy("http://127.0.0.1:9".parse().unwrap()),
            )
        };
        let site = SiteRoutes {
            routes: vec![
                Route {
                    index: vec!["index.php".into(), "index.html".into(), "index.htm".into()],
                    ..Route::new("/", root)
                },
                php,
            ],
            ..SiteRoutes::default()
        };
        let at = |path: &str| path::normalise(path).unwrap();
        let route = &site.routes[0];
        let (next, path) = resolve(&site, route, &at("/"), "/").await.unwrap();
        assert_eq!(
            (next.path.as_str(), path.as_str()),
            (r"\.php$", "/index.php")
        );
        let (next, path) = resolve(&site, route, &at("/docs/"), "/docs/")
            .await
            .unwrap();
        assert_eq!(
            (next.path.as_str(), path.as_str()),
            ("/", "/docs/index.htm")
        );
        assert!(resolve(&site, route, &at("/docs"), "/docs").await.is_none());
        assert!(resolve(&site, route, &at("/missing/"), "/missing/")
            .await
            .is_none());
    }

    #[tokio::test]
    async fn a_last_uri_entry_takes_folders_without_the_other_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("docs")).unwrap();
        std::fs::write(dir.path().join("docs/index.html"), "html").unwrap();
        let front = Route {
            location: LocationMatch::Regex(
                crate::proxy::LocationRegex::new(r"\.php(?:$|/)", false).unwrap(),
            ),
            ..Route::new(
                r"\.php(?:$|/)",
                RouteTarget::Proxy("http://127.0.0.1:9".parse().unwrap()),
            )
        };
        let names = ["index.html", "/index.php$request_uri"];
        let site = SiteRoutes {
            routes: vec![
                Route {
                    index: names.iter().map(|name| (*name).to_owned()).collect(),
                    ..Route::new("/", RouteTarget::Static(dir.path().to_owned()))
                },
                front,
            ],
            ..SiteRoutes::default()
        };
        let at = |path: &str| path::normalise(path).unwrap();
        let route = &site.routes[0];
        let (next, path) = resolve(&site, route, &at("/docs/"), "/docs/")
            .await
            .unwrap();
        assert_eq!(
            (next.path.as_str(), path.as_str()),
            ("/", "/docs/index.html")
        );
        // Whether the folder exists or not, as nginx: the client's URI, query cut off.
        let (next, path) = resolve(&site, route, &at("/apps/"), "/apps/?x=1")
            .await
            .unwrap();
        assert_eq!(
            (next.path.as_str(), path.as_str()),
            (r"\.php(?:$|/)", "/index.php/apps/")
        );
    }
}
