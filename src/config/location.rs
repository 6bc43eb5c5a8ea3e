//! Validation of how a `[[site.route]]` is matched (`path`, `prefix_priority`, `exact`, `regex`,
//! `iregex`, `name`), where nested routes may go, and its `try_files` list: the checks nginx makes
//! on `location` and `try_files`, so a config certd accepts means what it would in nginx.

use std::ops::Range;

use hyper::StatusCode;
use toml::Spanned;

use super::raw::RawRoute;
use super::validate::Problems;
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
/// routes already accepted at the same level, to refuse duplicates as nginx does.
pub(super) fn route_match(
    key: &str,
    table: Range<usize>,
    route: &mut RawRoute,
    parent: Option<&Parent<'_>>,
    siblings: &[RouteConfig],
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
    if let Some(first) = siblings.iter().position(same) {
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

/// `try_files` of route `key`: candidates (`$uri`, `$uri/`, `/file`, `$uri.html`), then a URI, a
/// `@name` or `=code`. Only static routes look for files (`is_static`).
pub(super) fn try_files(
    key: &str,
    raw: Option<Spanned<Vec<Spanned<String>>>>,
    is_static: bool,
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
    let mut candidates = Vec::with_capacity(items.len());
    let mut valid = true;
    for (i, item) in items.into_iter().enumerate() {
        match uri_pattern(item.get_ref()) {
            Ok(pattern) => candidates.push(pattern),
            Err(reason) => {
                problems.add(format!("{field}[{i}]"), Some(item.span()), reason);
                valid = false;
            }
        }
    }
    let last_key = format!("{field}[{}]", candidates.len());
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
        uri_pattern(text).map(TryFallback::Uri)
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

/// A `try_files` path: starts with `/` or `$uri`, uses no other variable. A trailing `?$args` or
/// `?$query_string` (the nginx idiom for keeping the query) is dropped: certd always keeps it.
fn uri_pattern(text: &str) -> Result<String, String> {
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
    if path.replace("$uri", "").contains('$') {
        return Err(format!(
            "{text:?}: only the variable `$uri` is supported in try_files"
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
