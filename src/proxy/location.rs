//! Which route answers a request path: nginx's `location` precedence over certd's routes.
//!
//! A route matches in one of five ways ([`LocationMatch`]): a path prefix (`location /x`), a
//! preferred prefix (`location ^~ /x`), an exact path (`location = /x`), a regular expression
//! (`location ~ re`, `location ~* re`), or by name only (`location @name`, reached from
//! `try_files`). Prefix and regex routes may hold nested routes, as nginx locations may.
//!
//! The search is nginx's (ngx_http_core_find_location), one level at a time:
//! 1. an exact route equal to the path wins at once;
//! 2. else the longest matching prefix is remembered, and the search descends into its nested
//!    routes first (a final answer from there wins);
//! 3. unless that prefix is `^~`, the level's regexes are tried in config order: the first that
//!    matches wins (or one of its nested regexes, if any of those matches);
//! 4. else the remembered prefix (or what its nested routes remembered) answers.
//!
//! Prefixes keep certd's meaning, which differs from nginx's plain string prefix: `/ws` matches
//! `/ws` and `/ws/x` but not `/wsx`; `/static/` matches everything under it.

use regex::Regex;

use super::Route;

/// How large a compiled route regex may grow: a pattern from a config file is not allowed to make
/// the daemon take a lot of memory (`a{1000}{1000}`).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// How a route's [`Route::path`] is matched against request paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LocationMatch {
    /// `path = "/x"` (nginx `location /x`): the path and everything below it.
    #[default]
    Prefix,
    /// `path = "/x"` with `prefix_priority = true` (nginx `location ^~ /x`): a prefix that, when it
    /// is the longest match, stops the regexes from being tried.
    PreferredPrefix,
    /// `exact = "/x"` (nginx `location = /x`): only that path.
    Exact,
    /// `regex` / `iregex` (nginx `location ~` / `~*`); [`Route::path`] holds the pattern as written.
    Regex(LocationRegex),
    /// `name = "@app"` (nginx `location @app`): never matched by path, only named by `try_files`.
    Named,
}

/// A compiled route regex. Two are equal when their patterns and case handling are.
#[derive(Debug, Clone)]
pub struct LocationRegex {
    regex: Regex,
    case_insensitive: bool,
}

impl LocationRegex {
    /// Compiles `pattern` (case-insensitively for `~*`), bounded by [`REGEX_SIZE_LIMIT`].
    pub fn new(pattern: &str, case_insensitive: bool) -> Result<Self, regex::Error> {
        let regex = regex::RegexBuilder::new(pattern)
            .case_insensitive(case_insensitive)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()?;
        Ok(Self {
            regex,
            case_insensitive,
        })
    }

    /// Whether the pattern matches anywhere in `path` (anchor it with `^`/`$` as in nginx).
    pub fn is_match(&self, path: &str) -> bool {
        self.regex.is_match(path)
    }

    /// The groups of the pattern's first match in `path` (`$1` is index 1), for `try_files`
    /// entries that use them; `None` when it does not match.
    pub fn captures<'p>(&self, path: &'p str) -> Option<Vec<Option<&'p str>>> {
        let captures = self.regex.captures(path)?;
        Some(
            captures
                .iter()
                .map(|group| group.map(|m| m.as_str()))
                .collect(),
        )
    }
}

impl PartialEq for LocationRegex {
    fn eq(&self, other: &Self) -> bool {
        self.regex.as_str() == other.regex.as_str()
            && self.case_insensitive == other.case_insensitive
    }
}

impl Eq for LocationRegex {}

/// The route among `routes` (and their nested routes) that answers `path`, by nginx's precedence.
pub fn find<'a>(routes: &'a [Route], path: &str) -> Option<&'a Route> {
    match search(routes, path) {
        Search::Final(route) | Search::Prefix(route) => Some(route),
        Search::Nothing => None,
    }
}

/// The named route `name` (written with its `@`) among `routes`.
pub fn named<'a>(routes: &'a [Route], name: &str) -> Option<&'a Route> {
    routes
        .iter()
        .find(|route| route.location == LocationMatch::Named && route.path == name)
}

/// Whether a prefix route's `prefix` matches `path` (certd's prefix meaning, see the module docs).
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
    }
}

/// The outcome of searching one level, like nginx's `NGX_OK` / `NGX_AGAIN` / `NGX_DECLINED`.
enum Search<'a> {
    /// An exact or regex route: the search is over.
    Final(&'a Route),
    /// The longest prefix: it answers unless a regex of an enclosing level matches.
    Prefix(&'a Route),
    /// Nothing at this level matches.
    Nothing,
}

fn search<'a>(routes: &'a [Route], path: &str) -> Search<'a> {
    if let Some(exact) = routes
        .iter()
        .find(|route| route.location == LocationMatch::Exact && route.path == path)
    {
        return Search::Final(exact);
    }
    let mut result = Search::Nothing;
    let mut skip_regexes = false;
    let longest = routes
        .iter()
        .filter(|route| {
            matches!(
                route.location,
                LocationMatch::Prefix | LocationMatch::PreferredPrefix
            ) && prefix_matches(&route.path, path)
        })
        .max_by_key(|route| route.path.len());
    if let Some(prefix) = longest {
        skip_regexes = prefix.location == LocationMatch::PreferredPrefix;
        result = match search(&prefix.routes, path) {
            Search::Final(route) => return Search::Final(route),
            Search::Prefix(nested) => Search::Prefix(nested),
            Search::Nothing => Search::Prefix(prefix),
        };
    }
    if !skip_regexes {
        for route in routes {
            if let LocationMatch::Regex(regex) = &route.location {
                if regex.is_match(path) {
                    // Inside a regex route only regexes nest (the config refuses prefixes there).
                    return match search(&route.routes, path) {
                        Search::Final(nested) => Search::Final(nested),
                        Search::Prefix(_) | Search::Nothing => Search::Final(route),
                    };
                }
            }
        }
    }
    result
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::proxy::RouteTarget;

    /// A route answering with upstream `http://{label}`, so a test can say which one matched.
    fn route(location: LocationMatch, path: &str, label: &str, nested: Vec<Route>) -> Route {
        Route {
            location,
            routes: nested,
            ..Route::new(
                path.to_owned(),
                RouteTarget::Proxy(format!("http://{label}").parse().unwrap()),
            )
        }
    }

    fn prefix(path: &str, label: &str) -> Route {
        route(LocationMatch::Prefix, path, label, Vec::new())
    }

    fn preferred(path: &str, label: &str) -> Route {
        route(LocationMatch::PreferredPrefix, path, label, Vec::new())
    }

    fn exact(path: &str, label: &str) -> Route {
        route(LocationMatch::Exact, path, label, Vec::new())
    }

    fn regex(pattern: &str, label: &str) -> Route {
        let compiled = LocationMatch::Regex(LocationRegex::new(pattern, false).unwrap());
        route(compiled, pattern, label, Vec::new())
    }

    fn iregex(pattern: &str, label: &str) -> Route {
        let compiled = LocationMatch::Regex(LocationRegex::new(pattern, true).unwrap());
        route(compiled, pattern, label, Vec::new())
    }

    fn nest(mut parent: Route, nested: Vec<Route>) -> Route {
        parent.routes = nested;
        parent
    }

    /// Which route (by label) answers each path; `None` for no route.
    fn assert_answers(routes: &[Route], cases: &[(&str, Option<&str>)]) {
        for (path, expected) in cases {
            let found = find(routes, path).map(|route| match &route.target {
                RouteTarget::Proxy(uri) => uri.authority().unwrap().to_string(),
                _ => unreachable!("tests route to upstreams"),
            });
            assert_eq!(found.as_deref(), *expected, "request {path}");
        }
    }

    /// The example of nginx's documentation of `location` (ngx_http_core_module), with its
    /// documented answers.
    #[test]
    fn the_nginx_documentation_example_answers_as_documented() {
        let routes = [
            exact("/", "a"),
            prefix("/", "b"),
            prefix("/documents/", "c"),
            preferred("/images/", "d"),
            iregex(r"\.(gif|jpg|jpeg)$", "e"),
        ];
        assert_answers(
            &routes,
            &[
                ("/", Some("a")),
                ("/index.html", Some("b")),
                ("/documents/document.html", Some("c")),
                ("/images/1.gif", Some("d")),
                ("/documents/1.jpg", Some("e")),
                // Case-insensitive, and a regex beats the longest plain prefix.
                ("/documents/1.JPG", Some("e")),
                ("/1.jpeg", Some("e")),
            ],
        );
    }

    #[test]
    fn plain_prefixes_keep_certds_longest_prefix_meaning() {
        let routes = [
            prefix("/", "root"),
            prefix("/ws", "ws"),
            prefix("/static/", "static"),
        ];
        assert_answers(
            &routes,
            &[
                ("/ws", Some("ws")),
                ("/ws/chat", Some("ws")),
                ("/wsx", Some("root")),
                ("/static/a.css", Some("static")),
                ("/static", Some("root")),
                ("/", Some("root")),
            ],
        );
        assert_answers(&[prefix("/api", "api")], &[("/", None), ("/apix", None)]);
    }

    #[test]
    fn exact_wins_at_once_and_matches_only_itself() {
        let routes = [
            preferred("/login", "prefix"),
            exact("/login", "exact"),
            regex("login", "regex"),
        ];
        assert_answers(
            &routes,
            &[
                ("/login", Some("exact")),
                ("/login/", Some("prefix")),
                ("/login/x", Some("prefix")),
                ("/relogin", Some("regex")),
            ],
        );
    }

    #[test]
    fn regexes_are_tried_in_config_order_unless_the_longest_prefix_is_preferred() {
        let routes = [
            prefix("/", "root"),
            regex(r"\.php$", "php"),
            regex(r"^/app/.*\.php$", "app-php"),
            preferred("/assets/", "assets"),
            // Only the longest prefix counts: a shorter `^~` does not stop the regexes.
            preferred("/files/", "files"),
            prefix("/files/deep/", "deep"),
        ];
        assert_answers(
            &routes,
            &[
                ("/index.php", Some("php")),
                // The first regex in order wins, not the most specific.
                ("/app/index.php", Some("php")),
                ("/assets/x.php", Some("assets")),
                ("/files/x.php", Some("files")),
                ("/files/deep/x.php", Some("php")),
                ("/files/deep/x.txt", Some("deep")),
                ("/readme", Some("root")),
            ],
        );
    }

    #[test]
    fn case_sensitive_regexes_do_not_match_other_cases() {
        let routes = [prefix("/", "root"), regex(r"\.png$", "png")];
        assert_answers(
            &routes,
            &[("/a.png", Some("png")), ("/A.PNG", Some("root"))],
        );
        let routes = [prefix("/", "root"), iregex(r"\.png$", "png")];
        assert_answers(&routes, &[("/a.png", Some("png")), ("/A.PNG", Some("png"))]);
    }

    #[test]
    fn nested_routes_are_searched_first_as_nginx_does() {
        let routes = [
            prefix("/", "root"),
            nest(
                prefix("/app/", "app"),
                vec![
                    regex(r"\.php$", "app-php"),
                    prefix("/app/static/", "app-static"),
                    exact("/app/health", "app-health"),
                ],
            ),
            regex(r"\.php$", "php"),
            regex(r"\.css$", "css"),
            nest(
                regex(r"^/media/", "media"),
                vec![iregex(r"\.(png|jpg)$", "media-image")],
            ),
        ];
        assert_answers(
            &routes,
            &[
                // A nested regex of the longest prefix goes before the site's regexes.
                ("/app/x.php", Some("app-php")),
                ("/x.php", Some("php")),
                // A nested prefix is remembered, but a site regex still beats it.
                ("/app/static/a.js", Some("app-static")),
                ("/app/static/a.css", Some("css")),
                ("/app/health", Some("app-health")),
                ("/app/other", Some("app")),
                // Inside a regex route, its nested regexes are tried.
                ("/media/a.PNG", Some("media-image")),
                ("/media/a.txt", Some("media")),
            ],
        );
    }

    #[test]
    fn a_nested_preferred_prefix_skips_only_its_own_levels_regexes() {
        let routes = [
            nest(
                prefix("/a/", "a"),
                vec![
                    nest(preferred("/a/b/", "b"), Vec::new()),
                    regex(r"\.txt$", "nested-txt"),
                ],
            ),
            regex(r"\.css$", "css"),
        ];
        assert_answers(
            &routes,
            &[
                ("/a/b/x.txt", Some("b")),
                ("/a/x.txt", Some("nested-txt")),
                // As in nginx, the enclosing level's regexes are still tried.
                ("/a/b/x.css", Some("css")),
            ],
        );
    }

    #[test]
    fn named_routes_are_never_matched_by_path() {
        let routes = [route(LocationMatch::Named, "@app", "app", Vec::new())];
        assert_answers(&routes, &[("/", None), ("/@app", None)]);
        assert_eq!(named(&routes, "@app").unwrap().path, "@app");
        assert!(named(&routes, "@other").is_none());
        assert!(named(&[prefix("/", "root")], "/").is_none());
    }

    #[test]
    fn regex_size_is_bounded() {
        assert!(LocationRegex::new(r"\w{1000}{1000}", false).is_err());
        assert!(LocationRegex::new(r"\.(png|jpg)$", true).is_ok());
        assert_eq!(
            LocationRegex::new("a", true).unwrap(),
            LocationRegex::new("a", true).unwrap()
        );
        assert_ne!(
            LocationRegex::new("a", true).unwrap(),
            LocationRegex::new("a", false).unwrap()
        );
    }
}
