//! Validation of a FastCGI route (`fastcgi`, its `root`, `fastcgi_index`, `front_controller`,
//! `fastcgi_param`).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use toml::Spanned;

use super::problems::Problems;
use super::raw::RawFrontController;
use super::RouteTargetConfig;
use crate::fastcgi::{FastcgiAddress, FastcgiTarget};

/// The FastCGI keys of one route (borrowed field by field, as the route is taken apart).
#[derive(Clone, Copy)]
pub(super) struct Keys<'a> {
    pub(super) fastcgi: &'a Option<Spanned<String>>,
    pub(super) fastcgi_index: &'a Option<Spanned<String>>,
    pub(super) front_controller: &'a Option<Spanned<RawFrontController>>,
    pub(super) fastcgi_param: &'a Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    pub(super) allow_dotfiles: &'a Option<Spanned<bool>>,
}

/// The target of route `key` (spanning `table`) that has `fastcgi`, with its `proxy` and `root`.
/// `None` when it has problems (they are added).
pub(super) fn target(
    key: &str,
    table: Range<usize>,
    proxy: Option<Spanned<String>>,
    root: Option<Spanned<String>>,
    route: Keys<'_>,
    folder: &Path,
    problems: &mut Problems<'_>,
) -> Option<RouteTargetConfig> {
    let fastcgi = route.fastcgi.as_ref()?;
    let mut ok = true;
    if let Some(proxy) = proxy {
        problems.add(
            format!("{key}.proxy"),
            Some(proxy.span()),
            "has both `proxy` and `fastcgi`: a route does one or the other",
        );
        ok = false;
    }
    if let Some(allow) = &route.allow_dotfiles {
        problems.add(
            format!("{key}.allow_dotfiles"),
            Some(allow.span()),
            "not for `fastcgi` routes: their dotfiles (`.htaccess`, `.env`) are always refused",
        );
        ok = false;
    }
    let address = match FastcgiAddress::parse(fastcgi.get_ref()) {
        Ok(address) => Some(address),
        Err(reason) => {
            problems.add(format!("{key}.fastcgi"), Some(fastcgi.span()), reason);
            None
        }
    };
    let root = match root {
        None => {
            problems.add(
                key,
                Some(table),
                "a `fastcgi` route needs `root = \"/srv/www\"`, the document root php-fpm runs scripts from",
            );
            None
        }
        Some(root) => {
            let dir = folder.join(root.get_ref());
            if dir.is_dir() {
                Some(dir)
            } else {
                problems.add(
                    format!("{key}.root"),
                    Some(root.span()),
                    format!("{} is not a folder", dir.display()),
                );
                None
            }
        }
    };
    let index = match &route.fastcgi_index {
        None => Some("index.php".to_owned()),
        Some(index) => {
            let name = index.get_ref();
            if name.is_empty() || name.contains('/') || !name.to_ascii_lowercase().ends_with(".php")
            {
                problems.add(
                    format!("{key}.fastcgi_index"),
                    Some(index.span()),
                    format!("{name:?} must be a file name ending in `.php`, e.g. \"index.php\""),
                );
                None
            } else {
                Some(name.clone())
            }
        }
    };
    let front_controller = match route
        .front_controller
        .as_ref()
        .map(|f| (f.get_ref(), f.span()))
    {
        None | Some((RawFrontController::Enabled(true), _)) => Some(Some(format!(
            "/{}",
            index.as_deref().unwrap_or("index.php")
        ))),
        Some((RawFrontController::Enabled(false), _)) => Some(None),
        Some((RawFrontController::Script(script), span)) => {
            let valid = script.starts_with('/')
                && script.to_ascii_lowercase().ends_with(".php")
                && !script.split('/').any(|segment| {
                    segment == "."
                        || segment == ".."
                        || segment.starts_with('.') && !segment.is_empty()
                });
            if valid {
                Some(Some(script.clone()))
            } else {
                problems.add(
                    format!("{key}.front_controller"),
                    Some(span),
                    format!("{script:?} must be a script path like \"/index.php\" (or `false` for none)"),
                );
                None
            }
        }
    };
    let params = extra_params(key, route.fastcgi_param, problems);
    match (ok, address, root, index, front_controller, params) {
        (true, Some(address), Some(root), Some(index), Some(front_controller), Some(params)) => {
            Some(RouteTargetConfig::Fastcgi(FastcgiTarget {
                address,
                root,
                index,
                front_controller,
                params,
            }))
        }
        _ => None,
    }
}

/// `fastcgi_param = { NAME = "value" }`: parameters certd adds to its own (never one of those,
/// which it computes per request), with literal values.
fn extra_params(
    key: &str,
    raw: &Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    problems: &mut Problems<'_>,
) -> Option<Vec<(String, String)>> {
    let Some(raw) = raw else {
        return Some(Vec::new());
    };
    let mut params = Vec::new();
    let mut ok = true;
    for (name, value) in raw.get_ref() {
        let reason = if crate::fastcgi::params::is_own(name) {
            Some(format!(
                "{name:?} is a parameter certd sets itself (from the request and the route)"
            ))
        } else if !crate::fastcgi::params::valid_extra(name, value.get_ref()) {
            Some(format!(
                "{name:?} = {:?}: names are letters, digits and `_`; values are literal text \
                 (no `$` variables, no control characters)",
                value.get_ref()
            ))
        } else {
            None
        };
        match reason {
            Some(reason) => {
                problems.add(
                    format!("{key}.fastcgi_param.{name}"),
                    Some(value.span()),
                    reason,
                );
                ok = false;
            }
            None => params.push((name.clone(), value.get_ref().clone())),
        }
    }
    ok.then_some(params)
}

/// Problems for FastCGI keys on route `key` that has no `fastcgi`: they would do nothing.
pub(super) fn stray_keys(key: &str, route: Keys<'_>, problems: &mut Problems<'_>) {
    if route.fastcgi.is_some() {
        return;
    }
    if let Some(index) = &route.fastcgi_index {
        problems.add(
            format!("{key}.fastcgi_index"),
            Some(index.span()),
            "only applies to `fastcgi` routes",
        );
    }
    if let Some(front) = &route.front_controller {
        problems.add(
            format!("{key}.front_controller"),
            Some(front.span()),
            "only applies to `fastcgi` routes",
        );
    }
    if let Some(params) = &route.fastcgi_param {
        problems.add(
            format!("{key}.fastcgi_param"),
            Some(params.span()),
            "only applies to `fastcgi` routes",
        );
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::config::{from_toml, ConfigProblem, RouteTargetConfig};
    use crate::fastcgi::{FastcgiAddress, FastcgiTarget};

    /// A config in a temp folder with a `www` folder, one site, and `route` as its only route.
    fn load(
        route: &str,
    ) -> (
        tempfile::TempDir,
        Result<crate::config::Config, Vec<ConfigProblem>>,
    ) {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("www")).expect("mkdir");
        let text = format!(
            "[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n[[site]]\nnames = [\"example.org\"]\n[[site.route]]\n{route}\n"
        );
        let result = from_toml(&text, &dir.path().join("certd.toml")).map_err(|err| err.problems);
        (dir, result)
    }

    #[track_caller]
    fn one_problem(route: &str, key: &str, fragment: &str) {
        let (_dir, result) = load(route);
        let problems = result.expect_err("problems");
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(problems[0].key, key, "{problems:#?}");
        assert!(problems[0].line.is_some(), "{problems:#?}");
        assert!(problems[0].reason.contains(fragment), "{problems:#?}");
    }

    #[test]
    fn a_fastcgi_route_has_caddy_like_defaults() {
        let (dir, result) =
            load("path = \"/\"\nroot = \"www\"\nfastcgi = \"unix:/run/php/php8.2-fpm.sock\"");
        let config = result.expect("valid");
        assert_eq!(
            config.sites[0].routes[0].target,
            RouteTargetConfig::Fastcgi(FastcgiTarget {
                address: FastcgiAddress::Unix(PathBuf::from("/run/php/php8.2-fpm.sock")),
                root: dir.path().join("www"),
                index: "index.php".into(),
                front_controller: Some("/index.php".into()),
                params: Vec::new(),
            })
        );
    }

    #[test]
    fn extra_parameters_are_literal_and_never_certds_own() {
        let fastcgi = "path = \"/\"\nroot = \"www\"\nfastcgi = \"127.0.0.1:9000\"";
        let (_dir, result) = load(&format!(
            "{fastcgi}\nfastcgi_param = {{ front_controller_active = \"true\", modHeadersAvailable = \"true\" }}"
        ));
        let config = result.expect("valid");
        let RouteTargetConfig::Fastcgi(target) = &config.sites[0].routes[0].target else {
            panic!("not fastcgi");
        };
        assert_eq!(
            target.params,
            [
                ("front_controller_active".to_owned(), "true".to_owned()),
                ("modHeadersAvailable".to_owned(), "true".to_owned())
            ]
        );
        one_problem(
            &format!("{fastcgi}\nfastcgi_param = {{ SCRIPT_NAME = \"/x.php\" }}"),
            "site[0].route[0].fastcgi_param.SCRIPT_NAME",
            "sets itself",
        );
        one_problem(
            &format!("{fastcgi}\nfastcgi_param = {{ X = \"$uri\" }}"),
            "site[0].route[0].fastcgi_param.X",
            "literal",
        );
        one_problem(
            "path = \"/\"\nroot = \"www\"\nfastcgi_param = { X = \"1\" }",
            "site[0].route[0].fastcgi_param",
            "only applies to `fastcgi` routes",
        );
    }

    #[test]
    fn index_and_front_controller_can_be_changed_or_turned_off() {
        let (_dir, result) = load(
            "path = \"/\"\nroot = \"www\"\nfastcgi = \"127.0.0.1:9000\"\nfastcgi_index = \"app.php\"\nfront_controller = \"/public/app.php\"",
        );
        let config = result.expect("valid");
        let RouteTargetConfig::Fastcgi(target) = &config.sites[0].routes[0].target else {
            panic!("not fastcgi");
        };
        assert_eq!(target.address, FastcgiAddress::Tcp("127.0.0.1:9000".into()));
        assert_eq!(target.index, "app.php");
        assert_eq!(target.front_controller.as_deref(), Some("/public/app.php"));

        let (_dir, result) = load(
            "path = \"/\"\nroot = \"www\"\nfastcgi = \"127.0.0.1:9000\"\nfront_controller = false",
        );
        let config = result.expect("valid");
        let RouteTargetConfig::Fastcgi(target) = &config.sites[0].routes[0].target else {
            panic!("not fastcgi");
        };
        assert_eq!(target.front_controller, None);
    }

    #[test]
    fn bad_fastcgi_routes_name_the_key() {
        let fastcgi = "path = \"/\"\nroot = \"www\"\nfastcgi = \"127.0.0.1:9000\"";
        one_problem(
            "path = \"/\"\nroot = \"www\"\nfastcgi = \"php-fpm.sock\"",
            "site[0].route[0].fastcgi",
            "unix:",
        );
        one_problem(
            "path = \"/\"\nfastcgi = \"127.0.0.1:9000\"",
            "site[0].route[0]",
            "needs `root",
        );
        one_problem(
            "path = \"/\"\nroot = \"nope\"\nfastcgi = \"127.0.0.1:9000\"",
            "site[0].route[0].root",
            "not a folder",
        );
        one_problem(
            &format!("{fastcgi}\nproxy = \"http://127.0.0.1:8080\""),
            "site[0].route[0].proxy",
            "both `proxy` and `fastcgi`",
        );
        one_problem(
            &format!("{fastcgi}\nallow_dotfiles = true"),
            "site[0].route[0].allow_dotfiles",
            "always refused",
        );
        one_problem(
            &format!("{fastcgi}\nfastcgi_index = \"../x.php\""),
            "site[0].route[0].fastcgi_index",
            "ending in `.php`",
        );
        one_problem(
            &format!("{fastcgi}\nfront_controller = \"index.html\""),
            "site[0].route[0].front_controller",
            "/index.php",
        );
        one_problem(
            "path = \"/\"\nroot = \"www\"\nfront_controller = \"/index.php\"",
            "site[0].route[0].front_controller",
            "only applies to `fastcgi` routes",
        );
    }
}
