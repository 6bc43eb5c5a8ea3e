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
