//! Validation of how a `[[site.route]]` is matched (`path`, `prefix_priority`, `exact`, `regex`,
//! `iregex`, `name`), where nested routes may go, and its `try_files` list: the checks nginx makes
//! on `location` and `try_files`, so a config certd accepts means what it would in nginx.

use std::ops::Range;

use hyper::StatusCode;
use toml::Spanned;

use super::problems::Problems;
use super::raw::RawRoute;
use super::RouteConfig;
use crate::proxy::location::prefix_matches;
use crate::proxy::{LocationMatch, LocationRegex, TryFallback, TryFiles};

/// The enclosing route of a nested route: its key, path and kind.
pub(super) struct Parent<'a> {
    pub(super) key: &'a str,
    pub(super) path: &'a str,
    pub(super) location: &'a LocationMatch,
}

/// A `try_files` fallback naming a route (`"@app"`), checked once all of the site's routes are
/// known.
pub(super) struct NamedReference {
    pub(super) key: String,
    pub(super) span: Range<usize>,
    pub(super) name: String,
}

/// How route `key` is matched: its path (or pattern, or name) and kind, taken out of `route`.
/// `None` (with a problem) when the keys conflict, are missing or are invalid. `siblings` are the
/// routes already accepted at the same level, and `sibling_indexes` their places in the file, to
/// refuse duplicates as nginx does.
pub(super) fn route_match(
    key: &str,
    table: Range<usize>,
    route: &mut RawRoute,
    parent: Option<&Parent<'_>>,
    siblings: &[RouteConfig],
    sibling_indexes: &[usize],
    problems: &mut Problems<'_>,
) -> Option<(String, LocationMatch)> {
    let priority = route.prefix_priority.take();
    let given: Vec<(&str, Spanned<String>)> = [
        ("path", route.path.take()),
        ("exact", route.exact.take()),
        ("regex", route.regex.take()),
        ("iregex", route.iregex.take()),
        ("name", route.name.take()),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.map(|value| (name, value)))
    .collect();
    let (kind, value) = match <[_; 1]>::try_from(given) {
        Ok([one]) => one,
        Err(given) if given.is_empty() => {
            problems.add(
                format!("{key}.path"),
                Some(table),
                "missing: each route needs `path = \"/...\"` (or `exact`, `regex`, `iregex`, \
                 `name`)",
            );
            return None;
        }
        Err(given) => {
            let names: Vec<String> = given.iter().map(|(name, _)| format!("`{name}`")).collect();
            problems.add(
                key,
                Some(table),
                format!(
                    "has {}: a route is matched in one way only",
                    names.join(" and ")
                ),
            );
            return None;
        }
    };
    let span = value.span();
    let text = value.into_inner();
    let field = format!("{key}.{kind}");
    let preferred = priority.as_ref().is_some_and(|flag| *flag.get_ref());
    if let Some(flag) = &priority {
        if kind != "path" {
            problems.add(
                format!("{key}.prefix_priority"),
                Some(flag.span()),
                format!("only applies to `path` routes (a prefix), not to `{kind}`"),
            );
            return None;
        }
    }
    let location = match kind {
        "path" | "exact" => {
            if !text.starts_with('/') {
                problems.add(field, Some(span), format!("{text:?} must start with `/`"));
                return None;
            }
            match (kind, preferred) {
                ("exact", _) => LocationMatch::Exact,
                (_, true) => LocationMatch::PreferredPrefix,
                (_, false) => LocationMatch::Prefix,
            }
        }
        "regex" | "iregex" => match LocationRegex::new(&text, kind == "iregex") {
            Ok(regex) => LocationMatch::Regex(regex),
            Err(error) => {
                problems.add(
                    field,
                    Some(span),
                    format!("{text:?} is not a valid regular expression: {error}"),
                );
                return None;
            }
        },
        _ => {
            let valid = text.strip_prefix('@').is_some_and(|rest| {
                !rest.is_empty()
                    && rest
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            });
            if !valid {
                problems.add(
                    field,
                    Some(span),
                    format!("{text:?} must be `@` and a name (letters, digits, `_`, `-`)"),
                );
                return None;
            }
            LocationMatch::Named
        }
    };
    if let Some(parent) = parent {
        if let Err(reason) = nesting(parent, &text, &location) {
            problems.add(field, Some(span), reason);
            return None;
        }
    }
    // Regexes may repeat (the first one wins); two prefixes (`^~` or not), exact paths or names
    // that are the same are nginx's "duplicate location".
    let same = |seen: &RouteConfig| {
        seen.path == text
            && match (&seen.location, &location) {
                (LocationMatch::Regex(_), _) | (_, LocationMatch::Regex(_)) => false,
                (
                    LocationMatch::Prefix | LocationMatch::PreferredPrefix,
                    LocationMatch::Prefix | LocationMatch::PreferredPrefix,
                ) => true,
                (seen, new) => seen == new,
            }
    };
    if let Some(first) = siblings
        .iter()
        .position(same)
        .and_then(|at| sibling_indexes.get(at))
    {
        let owner = key.rsplit_once('.').map_or("", |(owner, _)| owner);
        problems.add(
            field,
            Some(span),
            format!("{text:?} is routed twice (also {owner}.route[{first}])"),
        );
        return None;
    }
    Some((text, location))
}

/// Whether a route of this kind may sit inside `parent` (nginx's rules for nested locations).
fn nesting(parent: &Parent<'_>, path: &str, location: &LocationMatch) -> Result<(), String> {
    match (parent.location, location) {
        (_, LocationMatch::Named) => Err(format!(
            "a named route can only be a site's own route, not inside {}",
            parent.key
        )),
        (LocationMatch::Exact | LocationMatch::Named, _) => Err(format!(
            "{} is an `exact` or named route, which cannot hold nested routes",
            parent.key
        )),
        (LocationMatch::Regex(_), LocationMatch::Regex(_)) => Ok(()),
        (LocationMatch::Regex(_), _) => Err(format!(
            "only `regex`/`iregex` routes can be inside the regex route {}",
            parent.key
        )),
        (_, LocationMatch::Regex(_)) => Ok(()),
        _ if prefix_matches(parent.path, path) => Ok(()),
        _ => Err(format!(
            "{path:?} is outside {} ({:?}): a nested route's path must be under its parent's",
            parent.key, parent.path
        )),
    }
}

/// `try_files` of route `key`: candidates (`$uri`, `$uri/`, `/file`, `$uri.html`, and on a
/// `regex` route its groups `$1`…`$9`), then a URI, a `@name` or `=code`. Only static routes look
/// for files (`is_static`).
pub(super) fn try_files(
    key: &str,
    raw: Option<Spanned<Vec<Spanned<String>>>>,
    is_static: bool,
    captures: bool,
    references: &mut Vec<NamedReference>,
    problems: &mut Problems<'_>,
) -> Option<TryFiles> {
    let raw = raw?;
    let field = format!("{key}.try_files");
    if !is_static {
        problems.add(
            field,
            Some(raw.span()),
            "only applies to `root` routes: it looks for files under the route's root",
        );
        return None;
    }
    let span = raw.span();
    let mut items = raw.into_inner();
    let Some(last) = items.pop().filter(|_| !items.is_empty()) else {
        problems.add(
            field,
            Some(span),
            "needs at least one file and a fallback, e.g. [\"$uri\", \"$uri/\", \"/index.html\"]",
        );
        return None;
    };
    let last_key = format!("{field}[{}]", items.len());
    let mut candidates = Vec::with_capacity(items.len());
    let mut valid = true;
    for (i, item) in items.into_iter().enumerate() {
        match uri_pattern(item.get_ref(), captures, false) {
            Ok(pattern) => candidates.push(pattern),
            Err(reason) => {
                problems.add(format!("{field}[{i}]"), Some(item.span()), reason);
                valid = false;
            }
        }
    }
    let text = last.get_ref().trim();
    let fallback = if let Some(code) = text.strip_prefix('=') {
        match code
            .parse::<u16>()
            .ok()
            .filter(|code| (200..=599).contains(code))
        {
            Some(code) => StatusCode::from_u16(code).ok().map(TryFallback::Status),
            None => None,
        }
        .ok_or_else(|| format!("{text:?}: `=` takes an HTTP status from 200 to 599, e.g. \"=404\""))
    } else if text.starts_with('@') {
        references.push(NamedReference {
            key: last_key.clone(),
            span: last.span(),
            name: text.to_owned(),
        });
        Ok(TryFallback::Named(text.to_owned()))
    } else {
        uri_pattern(text, captures, true).map(TryFallback::Uri)
    };
    match fallback {
        Ok(fallback) if valid => Some(TryFiles {
            candidates,
            fallback,
        }),
        Ok(_) => None,
        Err(reason) => {
            problems.add(last_key, Some(last.span()), reason);
            None
        }
    }
}

/// A `try_files` path: starts with `/` or `$uri`, uses no other variable (but `$1`…`$9` with
/// `captures`; the `fallback` may also use `$request_uri`, what the client sent). A trailing
/// `?$args` or `?$query_string` (the nginx idiom for keeping the query) is dropped: certd always
/// keeps it.
fn uri_pattern(text: &str, captures: bool, fallback: bool) -> Result<String, String> {
    let path = text
        .strip_suffix("?$args")
        .or_else(|| text.strip_suffix("?$query_string"))
        .unwrap_or(text);
    if !(path.starts_with('/') || path.starts_with("$uri")) {
        return Err(format!("{text:?} must start with `/` or `$uri`"));
    }
    if path.contains('?') {
        return Err(format!(
            "{text:?}: a query in try_files is not supported (the request's own query is kept)"
        ));
    }
    let mut rest = match fallback {
        true => path.replace("$request_uri", "").replace("$uri", ""),
        false => path.replace("$uri", ""),
    };
    if captures {
        for n in 1..=9 {
            rest = rest.replace(&format!("${n}"), "");
        }
    }
    if rest.contains('$') {
        let supported = match fallback {
            true => "`$uri` and `$request_uri` are",
            false => "`$uri` is",
        };
        return Err(format!(
            "{text:?}: only the variable {supported} supported in try_files (and `$1`…`$9` on a \
             `regex` route)"
        ));
    }
    Ok(path.to_owned())
}

/// Each `try_files` `@name` of a site names one of its named routes.
pub(super) fn check_references(
    references: &[NamedReference],
    routes: &[RouteConfig],
    problems: &mut Problems<'_>,
) {
    for reference in references {
        let found = routes
            .iter()
            .any(|route| route.location == LocationMatch::Named && route.path == reference.name);
        if !found {
            problems.add(
                reference.key.clone(),
                Some(reference.span.clone()),
                format!(
                    "{:?} names no route: add a [[site.route]] with name = {:?}",
                    reference.name, reference.name
                ),
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    use super::super::{from_toml, Config};
    use super::*;

    const HEAD: &str = "[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n\
                        [[site]]\nnames = [\"example.org\"]\n";

    fn parse(routes: &str) -> Result<Config, Vec<(String, Option<usize>, String)>> {
        from_toml(
            &format!("{HEAD}{routes}"),
            Path::new("/etc/certd/certd.toml"),
        )
        .map_err(|err| {
            err.problems
                .into_iter()
                .map(|problem| (problem.key, problem.line, problem.reason))
                .collect()
        })
    }

    #[test]
    fn every_kind_of_route_is_read_with_nested_routes_and_try_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().display();
        let config = parse(&format!(
            r#"
[[site.route]]
exact = "/"
proxy = "http://127.0.0.1:1"
[[site.route]]
path = "/"
root = "{root}"
try_files = ["$uri", "$uri/", "@app"]
  [[site.route.route]]
  iregex = '\.(png|jpg)$'
  root = "{root}"
  [[site.route.route]]
  path = "/docs/"
  root = "{root}"
  try_files = ["$uri", "/index.php?$args"]
[[site.route]]
path = "/images/"
prefix_priority = true
root = "{root}"
[[site.route]]
regex = '\.php$'
proxy = "http://127.0.0.1:2"
[[site.route]]
name = "@app"
proxy = "http://127.0.0.1:3"
"#
        ))
        .unwrap();
        let routes = &config.sites[0].routes;
        let kinds: Vec<(&str, &LocationMatch)> = routes
            .iter()
            .map(|route| (route.path.as_str(), &route.location))
            .collect();
        assert_eq!(kinds[0], ("/", &LocationMatch::Exact));
        assert_eq!(kinds[1], ("/", &LocationMatch::Prefix));
        assert_eq!(kinds[2], ("/images/", &LocationMatch::PreferredPrefix));
        assert!(matches!(kinds[3], (r"\.php$", LocationMatch::Regex(_))));
        assert_eq!(kinds[4], ("@app", &LocationMatch::Named));
        assert_eq!(
            routes[1].try_files,
            Some(TryFiles {
                candidates: vec!["$uri".into(), "$uri/".into()],
                fallback: TryFallback::Named("@app".into()),
            })
        );
        let nested = &routes[1].routes;
        assert_eq!(
            nested[0].location,
            LocationMatch::Regex(LocationRegex::new(r"\.(png|jpg)$", true).unwrap())
        );
        assert_eq!(
            nested[1].try_files.as_ref().unwrap().fallback,
            TryFallback::Uri("/index.php".into())
        );
    }

    #[test]
    fn bad_locations_are_each_named_with_key_and_line() {
        let problems = parse(
            r#"
[[site.route]]
regex = '\.(php$'
proxy = "http://127.0.0.1:1"
[[site.route]]
path = "/a"
exact = "/a"
proxy = "http://127.0.0.1:1"
[[site.route]]
exact = "/b"
prefix_priority = true
proxy = "http://127.0.0.1:1"
[[site.route]]
name = "app"
proxy = "http://127.0.0.1:1"
[[site.route]]
path = "/x/"
proxy = "http://127.0.0.1:1"
  [[site.route.route]]
  path = "/y/"
  proxy = "http://127.0.0.1:1"
  [[site.route.route]]
  name = "@inner"
  proxy = "http://127.0.0.1:1"
[[site.route]]
iregex = 'a'
proxy = "http://127.0.0.1:1"
  [[site.route.route]]
  path = "/a/"
  proxy = "http://127.0.0.1:1"
[[site.route]]
path = "/c"
proxy = "http://127.0.0.1:1"
[[site.route]]
path = "/c"
prefix_priority = true
proxy = "http://127.0.0.1:1"
[[site.route]]
regex = '\w{1000}{1000}'
proxy = "http://127.0.0.1:1"
"#,
        )
        .unwrap_err();
        let has = |key: &str, line: usize, reason: &str| {
            assert!(
                problems
                    .iter()
                    .any(|(k, l, r)| k == key && *l == Some(line) && r.contains(reason)),
                "{key} (line {line}) with {reason:?} not in {problems:#?}"
            );
        };
        has(
            "site[0].route[0].regex",
            8,
            "not a valid regular expression",
        );
        has("site[0].route[1]", 10, "has `path` and `exact`");
        has(
            "site[0].route[2].prefix_priority",
            16,
            "only applies to `path`",
        );
        has("site[0].route[3].name", 19, "must be `@` and a name");
        has(
            "site[0].route[4].route[0].path",
            25,
            "is outside site[0].route[4]",
        );
        has(
            "site[0].route[4].route[1].name",
            28,
            "a named route can only be",
        );
        has(
            "site[0].route[5].route[0].path",
            34,
            "only `regex`/`iregex` routes",
        );
        has(
            "site[0].route[7].path",
            40,
            "routed twice (also site[0].route[6])",
        );
        has("site[0].route[8].regex", 44, "size limit");
    }

    #[test]
    fn bad_try_files_are_each_named() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().display();
        let problems = parse(&format!(
            r#"
[[site.route]]
path = "/"
proxy = "http://127.0.0.1:1"
try_files = ["$uri", "=404"]
[[site.route]]
path = "/a/"
root = "{root}"
try_files = ["/index.html"]
[[site.route]]
path = "/b/"
root = "{root}"
try_files = ["$uri", "/$request_uri", "=999"]
[[site.route]]
path = "/c/"
root = "{root}"
try_files = ["$uri", "@missing"]
[[site.route]]
path = "/d/"
root = "{root}"
try_files = ["uri", "/x?a=b"]
"#
        ))
        .unwrap_err();
        let has = |key: &str, reason: &str| {
            assert!(
                problems
                    .iter()
                    .any(|(k, l, r)| k == key && l.is_some() && r.contains(reason)),
                "{key} with {reason:?} not in {problems:#?}"
            );
        };
        has(
            "site[0].route[0].try_files",
            "only applies to `root` routes",
        );
        has(
            "site[0].route[1].try_files",
            "at least one file and a fallback",
        );
        has("site[0].route[2].try_files[1]", "only the variable `$uri`");
        has(
            "site[0].route[2].try_files[2]",
            "HTTP status from 200 to 599",
        );
        has("site[0].route[3].try_files[1]", "names no route");
        has(
            "site[0].route[4].try_files[0]",
            "must start with `/` or `$uri`",
        );
        has("site[0].route[4].try_files[1]", "a query in try_files");
    }
}
