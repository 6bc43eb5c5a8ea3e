//! Validation of the HTTP rules of sites and routes (issue #11): `headers.request` / `headers.response`,
//! `hsts`, `max_body_size`, `expires`, `rewrite` and `return`, into [`HttpRules`] and
//! [`Return`]. Every value with variables is parsed here, so an unknown variable is a config
//! problem naming its key and line, never a surprise at request time.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use hyper::header::{HeaderName, HeaderValue};
use hyper::StatusCode;
use toml::Spanned;

use super::problems::Problems;
use super::RouteTargetConfig;
use crate::proxy::http_rules::{HttpRules, SetHeader};
use crate::proxy::pattern::Pattern;
use crate::proxy::response_headers::{parse_expires, AddHeader};
use crate::proxy::rewrite::{is_redirect, Return, Rewrite, RewriteFlag};
use crate::proxy::variables::Template;

/// `headers = { request = {...}, response = {...} }`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeaders {
    request: Option<RawRequestHeaders>,
    response: Option<RawResponseHeaders>,
}

/// `headers.request`: nginx `proxy_set_header`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequestHeaders {
    set: Option<BTreeMap<String, Spanned<String>>>,
    remove: Option<Vec<Spanned<String>>>,
}

/// `headers.response`: nginx `add_header` and `proxy_hide_header`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResponseHeaders {
    add: Option<BTreeMap<String, Spanned<RawAddValue>>>,
    hide: Option<Vec<Spanned<String>>>,
}

/// `"DENY"`, or `{ value = "DENY", always = true }`.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum RawAddValue {
    Text(String),
    Table(RawAddTable),
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAddTable {
    value: String,
    always: Option<bool>,
}

/// `hsts = true` or `hsts = "max-age=...; includeSubDomains; preload"`.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
pub(super) enum RawHsts {
    On(bool),
    Value(String),
}

/// `max_body_size = "10m"` or bytes.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
pub(super) enum RawSize {
    Bytes(i64),
    Text(String),
}

/// One `rewrite = [{ regex = "...", replacement = "...", flag = "permanent" }]` entry.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRewrite {
    regex: Option<Spanned<String>>,
    replacement: Option<Spanned<String>>,
    flag: Option<Spanned<String>>,
}

/// `return = { status = 301, location = "..." }` / `{ status = 200, body = "ok" }`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReturn {
    status: Option<Spanned<i64>>,
    location: Option<Spanned<String>>,
    body: Option<Spanned<String>>,
    content_type: Option<Spanned<String>>,
}

/// What `hsts = true` sends: two years for the host and its subdomains. `preload` is left to the
/// operator, because it is a promise to the browsers' preload lists that is slow to undo.
const DEFAULT_HSTS: &str = "max-age=63072000; includeSubDomains";

/// The rules of `site[i]`.
pub(super) fn site(
    i: usize,
    headers: Option<Spanned<RawHeaders>>,
    hsts: Option<Spanned<RawHsts>>,
    max_body_size: Option<Spanned<RawSize>>,
    expires: Option<Spanned<String>>,
    problems: &mut Problems<'_>,
) -> HttpRules {
    let key = format!("site[{i}]");
    let mut rules = common(&key, headers, max_body_size, expires, problems);
    if let Some(hsts) = hsts {
        let span = hsts.span();
        rules.hsts = match hsts.into_inner() {
            RawHsts::On(false) => None,
            RawHsts::On(true) => Some(HeaderValue::from_static(DEFAULT_HSTS)),
            RawHsts::Value(value) => {
                let valid = value.to_ascii_lowercase().contains("max-age=");
                match HeaderValue::from_str(value.trim()) {
                    Ok(header) if valid => Some(header),
                    _ => {
                        problems.add(
                            format!("{key}.hsts"),
                            Some(span),
                            format!(
                                "{value:?} is not a Strict-Transport-Security value: write e.g. \
                                 \"max-age=63072000; includeSubDomains\", or `hsts = true`"
                            ),
                        );
                        None
                    }
                }
            }
        };
    }
    rules
}

/// The rules of a route, `key` being `site[i].route[j]`.
pub(super) fn route(
    key: &str,
    target: &RouteTargetConfig,
    headers: Option<Spanned<RawHeaders>>,
    max_body_size: Option<Spanned<RawSize>>,
    expires: Option<Spanned<String>>,
    rewrite: Option<Vec<Spanned<RawRewrite>>>,
    problems: &mut Problems<'_>,
) -> HttpRules {
    let is_proxy = matches!(target, RouteTargetConfig::Proxy(_));
    if let (false, Some(headers)) = (is_proxy, &headers) {
        // `headers.response.hide` removes a header from any answer (e.g. a static file's ETag).
        let upstream_only = headers.get_ref().request.is_some();
        if upstream_only {
            problems.add(
                format!("{key}.headers"),
                Some(headers.span()),
                "`headers.request` only applies to `proxy` routes (there is no upstream here)",
            );
        }
    }
    let mut rules = common(key, headers, max_body_size, expires, problems);
    let mut rewrites = Vec::new();
    for (n, raw) in rewrite.unwrap_or_default().into_iter().enumerate() {
        if let Some(rule) = rewrite_rule(&format!("{key}.rewrite[{n}]"), raw, problems) {
            rewrites.push(rule);
        }
    }
    rules.rewrites = Arc::from(rewrites);
    rules
}

fn common(
    key: &str,
    headers: Option<Spanned<RawHeaders>>,
    max_body_size: Option<Spanned<RawSize>>,
    expires: Option<Spanned<String>>,
    problems: &mut Problems<'_>,
) -> HttpRules {
    let mut rules = HttpRules::default();
    if let Some(headers) = headers.map(Spanned::into_inner) {
        if let Some(request) = headers.request {
            rules.request = Some(request_rules(key, request, problems));
        }
        if let Some(response) = headers.response {
            if let Some(add) = response.add {
                rules.add = Some(add_rules(key, add, problems));
            }
            if let Some(hide) = response.hide {
                let names = hide
                    .into_iter()
                    .enumerate()
                    .filter_map(|(n, name)| {
                        let at = format!("{key}.headers.response.hide[{n}]");
                        header_name(&at, name.get_ref(), Some(name.span()), false, problems)
                    })
                    .collect::<Vec<_>>();
                rules.hide = Some(Arc::from(names));
            }
        }
    }
    if let Some(size) = max_body_size {
        match parse_size(size.get_ref()) {
            Ok(bytes) => rules.max_body_size = Some(bytes),
            Err(reason) => problems.add(format!("{key}.max_body_size"), Some(size.span()), reason),
        }
    }
    if let Some(expires) = expires {
        match parse_expires(expires.get_ref()) {
            Ok(parsed) => rules.expires = Some(parsed),
            Err(reason) => problems.add(format!("{key}.expires"), Some(expires.span()), reason),
        }
    }
    rules
}

fn request_rules(
    key: &str,
    raw: RawRequestHeaders,
    problems: &mut Problems<'_>,
) -> Arc<[SetHeader]> {
    let mut rules = Vec::new();
    for (name, value) in raw.set.unwrap_or_default() {
        let at = format!("{key}.headers.request.set.{name}");
        let span = value.span();
        let Some(header) = header_name(&at, &name, Some(span.clone()), true, problems) else {
            continue;
        };
        match Template::parse(value.get_ref(), false) {
            Ok(template) => rules.push(SetHeader {
                name: header,
                value: Some(template),
            }),
            Err(reason) => problems.add(at, Some(span), reason),
        }
    }
    for (n, name) in raw.remove.unwrap_or_default().into_iter().enumerate() {
        let at = format!("{key}.headers.request.remove[{n}]");
        let Some(header) = header_name(&at, name.get_ref(), Some(name.span()), true, problems)
        else {
            continue;
        };
        if header == hyper::header::HOST {
            problems.add(
                at,
                Some(name.span()),
                "`Host` cannot be removed (HTTP/1.1 needs it); set it instead, e.g. \
                 `Host = \"$proxy_host\"`",
            );
            continue;
        }
        rules.push(SetHeader {
            name: header,
            value: None,
        });
    }
    Arc::from(rules)
}

fn add_rules(
    key: &str,
    raw: BTreeMap<String, Spanned<RawAddValue>>,
    problems: &mut Problems<'_>,
) -> Arc<[AddHeader]> {
    let mut rules = Vec::new();
    for (name, value) in raw {
        let at = format!("{key}.headers.response.add.{name}");
        let span = value.span();
        let Some(header) = header_name(&at, &name, Some(span.clone()), false, problems) else {
            continue;
        };
        let (text, always) = match value.into_inner() {
            RawAddValue::Text(text) => (text, false),
            RawAddValue::Table(table) => (table.value, table.always.unwrap_or(false)),
        };
        match Template::parse(&text, false) {
            Ok(template) => rules.push(AddHeader {
                name: header,
                value: template,
                always,
            }),
            Err(reason) => problems.add(at, Some(span), reason),
        }
    }
    Arc::from(rules)
}

/// Headers that frame the message or the connection: certd sets them itself, and a rule for them
/// would break the exchange rather than change it.
const MANAGED: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "expect",
];

fn header_name(
    key: &str,
    name: &str,
    span: Option<Range<usize>>,
    request: bool,
    problems: &mut Problems<'_>,
) -> Option<HeaderName> {
    let Ok(header) = HeaderName::from_bytes(name.trim().as_bytes()) else {
        problems.add(key, span, format!("{name:?} is not a header name"));
        return None;
    };
    if MANAGED.contains(&header.as_str()) {
        let why = if request && matches!(header.as_str(), "upgrade" | "connection") {
            "certd forwards WebSocket upgrades itself (nginx's `$connection_upgrade` idiom is \
             not needed)"
        } else {
            "it frames the message or the connection, which certd manages"
        };
        problems.add(key, span, format!("`{name}` cannot be changed: {why}"));
        return None;
    }
    Some(header)
}

/// `"1m"`, `"512k"`, `"2g"`, or bytes (nginx sizes: k/m/g, either case); `0` is unlimited.
pub(super) fn parse_size(raw: &RawSize) -> Result<u64, String> {
    let text = match raw {
        RawSize::Bytes(bytes) => {
            return u64::try_from(*bytes).map_err(|_| format!("{bytes} is negative"))
        }
        RawSize::Text(text) => text.trim(),
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || format!("{text:?} is not a size: write e.g. \"1m\", \"512k\", \"2g\" or bytes");
    let number: u64 = number.parse().map_err(|_| bad())?;
    let per_unit: u64 = match unit.trim() {
        "" => 1,
        "k" | "K" => 1024,
        "m" | "M" => 1024 * 1024,
        "g" | "G" => 1024 * 1024 * 1024,
        _ => return Err(bad()),
    };
    number
        .checked_mul(per_unit)
        .ok_or_else(|| format!("{text:?} is too large"))
}

fn rewrite_rule(
    key: &str,
    raw: Spanned<RawRewrite>,
    problems: &mut Problems<'_>,
) -> Option<Rewrite> {
    let table = raw.span();
    let raw = raw.into_inner();
    let (Some(regex), Some(replacement)) = (raw.regex, raw.replacement) else {
        problems.add(
            key,
            Some(table),
            "needs `regex` and `replacement`, e.g. { regex = \"^/old/(.*)$\", replacement = \
             \"/new/$1\", flag = \"permanent\" }",
        );
        return None;
    };
    let compiled = match Pattern::new(regex.get_ref()) {
        Ok(compiled) => compiled,
        Err(error) => {
            problems.add(
                format!("{key}.regex"),
                Some(regex.span()),
                format!("{:?} is not a regular expression: {error}", regex.get_ref()),
            );
            return None;
        }
    };
    let template = match Template::parse(replacement.get_ref(), true) {
        Ok(template) => template,
        Err(reason) => {
            problems.add(
                format!("{key}.replacement"),
                Some(replacement.span()),
                reason,
            );
            return None;
        }
    };
    let groups = compiled.groups();
    if template.max_capture() > groups {
        problems.add(
            format!("{key}.replacement"),
            Some(replacement.span()),
            format!(
                "uses `${}` but the regex has {groups} capture group(s)",
                template.max_capture()
            ),
        );
        return None;
    }
    let flag = match raw.flag.as_ref().map(|flag| flag.get_ref().as_str()) {
        None => RewriteFlag::Continue,
        Some("last") => RewriteFlag::Last,
        Some("break") => RewriteFlag::Break,
        Some("redirect") => RewriteFlag::Redirect,
        Some("permanent") => RewriteFlag::Permanent,
        Some(other) => {
            problems.add(
                format!("{key}.flag"),
                raw.flag.as_ref().map(Spanned::span),
                format!("{other:?} is not a rewrite flag: last, break, redirect or permanent"),
            );
            return None;
        }
    };
    Some(Rewrite {
        regex: compiled,
        replacement: template,
        flag,
    })
}

/// A route's `return` target; `other` says the route also has `proxy` or `root`.
pub(super) fn return_target(
    key: &str,
    table: Range<usize>,
    raw: Option<Spanned<RawReturn>>,
    other: bool,
    problems: &mut Problems<'_>,
) -> Option<RouteTargetConfig> {
    let raw = raw?;
    let span = raw.span();
    let raw = raw.into_inner();
    if other {
        problems.add(
            key,
            Some(table),
            "has `return` and `proxy` or `root`: a route does one of them",
        );
        return None;
    }
    let Some(status) = raw.status else {
        problems.add(
            format!("{key}.return.status"),
            Some(span),
            "missing: e.g. `return = { status = 301, location = \"https://$host$request_uri\" }`",
        );
        return None;
    };
    let code = match u16::try_from(*status.get_ref()) {
        Ok(444) => {
            problems.add(
                format!("{key}.return.status"),
                Some(status.span()),
                "444 (nginx: close without answering) is not supported; answer e.g. 403",
            );
            return None;
        }
        Ok(code @ 200..=599) => code,
        _ => {
            problems.add(
                format!("{key}.return.status"),
                Some(status.span()),
                format!("{} is not an HTTP status (200 to 599)", status.get_ref()),
            );
            return None;
        }
    };
    let status_code = StatusCode::from_u16(code).ok()?;
    let mut template = |field: &str, value: Option<Spanned<String>>| {
        let value = value?;
        match Template::parse(value.get_ref(), false) {
            Ok(template) => Some(template),
            Err(reason) => {
                problems.add(format!("{key}.return.{field}"), Some(value.span()), reason);
                None
            }
        }
    };
    let had_location = raw.location.is_some();
    let location = template("location", raw.location);
    let body = template("body", raw.body);
    if is_redirect(code) && !had_location {
        problems.add(
            format!("{key}.return.location"),
            Some(span),
            format!("missing: a {code} redirect needs `location = \"https://...\"`"),
        );
        return None;
    }
    if !is_redirect(code) && had_location {
        problems.add(
            format!("{key}.return.location"),
            Some(span),
            format!("only redirects (301, 302, 303, 307, 308) have a location, not {code}"),
        );
        return None;
    }
    if is_redirect(code) && body.is_some() {
        problems.add(
            format!("{key}.return.body"),
            Some(span),
            "a redirect has a `location`, not a `body`",
        );
        return None;
    }
    if had_location && location.is_none() {
        return None;
    }
    let content_type = match raw.content_type {
        None => "text/plain; charset=utf-8".to_owned(),
        Some(value) if HeaderValue::from_str(value.get_ref()).is_ok() => value.into_inner(),
        Some(value) => {
            problems.add(
                format!("{key}.return.content_type"),
                Some(value.span()),
                format!("{:?} is not a header value", value.get_ref()),
            );
            return None;
        }
    };
    Some(RouteTargetConfig::Return(Return {
        status: status_code,
        location,
        body,
        content_type,
    }))
}

/// A route's `alias` target (a folder, relative to the config file's); `other` says the route
/// also has `proxy` or `root`.
pub(super) fn alias_target(
    key: &str,
    table: Range<usize>,
    raw: Option<Spanned<String>>,
    other: bool,
    folder: &std::path::Path,
    problems: &mut Problems<'_>,
) -> Option<RouteTargetConfig> {
    let raw = raw?;
    if other {
        problems.add(
            key,
            Some(table),
            "has `alias` and `proxy` or `root`: a route does one of them (`alias` replaces the \
             route's prefix, `root` appends the whole path)",
        );
        return None;
    }
    let dir = folder.join(raw.get_ref());
    if !dir.is_dir() {
        problems.add(
            format!("{key}.alias"),
            Some(raw.span()),
            format!("{} is not a folder", dir.display()),
        );
        return None;
    }
    Some(RouteTargetConfig::Alias(dir))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn etag_is_read_on_sites_and_routes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("www")).unwrap();
        let text = "[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n\
                    [[site]]\nnames = [\"example.org\"]\netag = false\n\
                    [[site.route]]\npath = \"/\"\nroot = \"www\"\n\
                    [[site.route]]\npath = \"/on/\"\nroot = \"www\"\netag = true\n";
        let config = crate::config::from_toml(text, &dir.path().join("certd.toml")).unwrap();
        assert_eq!(config.sites[0].http.etag, Some(false));
        assert_eq!(config.sites[0].routes[0].http.etag, None);
        assert_eq!(config.sites[0].routes[1].http.etag, Some(true));
    }

    #[test]
    fn sizes_read_nginx_units() {
        let cases = [
            (RawSize::Text("1m".into()), Ok(1024 * 1024)),
            (RawSize::Text("512k".into()), Ok(512 * 1024)),
            (RawSize::Text("2G".into()), Ok(2 * 1024 * 1024 * 1024)),
            (RawSize::Bytes(0), Ok(0)),
            (RawSize::Text("100".into()), Ok(100)),
        ];
        for (raw, expected) in cases {
            assert_eq!(parse_size(&raw), expected, "{raw:?}");
        }
        assert!(parse_size(&RawSize::Bytes(-1)).is_err());
        assert!(parse_size(&RawSize::Text("1t".into())).is_err());
        assert!(parse_size(&RawSize::Text("99999999999999999999g".into())).is_err());
    }

    /// One route (the TOML lines after `path = "/"`) or site keys, and the one problem expected.
    #[test]
    fn bad_rules_are_named_with_key_line_and_reason() {
        let route = |lines: &str| {
            format!(
                "[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n[[site]]\n\
                 names = [\"a.test\"]\n[[site.route]]\npath = \"/\"\n{lines}\n"
            )
        };
        let site = |lines: &str| {
            format!(
                "[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n[[site]]\n\
                 names = [\"a.test\"]\n{lines}\n[[site.route]]\npath = \"/\"\n\
                 proxy = \"http://127.0.0.1:1\"\n"
            )
        };
        let proxy = "proxy = \"http://127.0.0.1:1\"\n";
        let cases = [
            (
                route(&format!("{proxy}headers = {{ request = {{ set = {{ X = \"$nope\" }} }} }}")),
                "site[0].route[0].headers.request.set.X",
                "unknown variable `$nope`",
            ),
            (
                route(&format!("{proxy}headers = {{ request = {{ set = {{ Connection = \"x\" }} }} }}")),
                "site[0].route[0].headers.request.set.Connection",
                "WebSocket upgrades itself",
            ),
            (
                route(&format!("{proxy}headers = {{ request = {{ remove = [\"Host\"] }} }}")),
                "site[0].route[0].headers.request.remove[0]",
                "cannot be removed",
            ),
            (
                route(&format!("{proxy}headers = {{ response = {{ add = {{ \"Content-Length\" = \"1\" }} }} }}")),
                "site[0].route[0].headers.response.add.Content-Length",
                "frames the message",
            ),
            (
                route(&format!("{proxy}rewrite = [{{ regex = \"(?<=a\", replacement = \"/\" }}]")),
                "site[0].route[0].rewrite[0].regex",
                "not a regular expression",
            ),
            (
                route(&format!("{proxy}rewrite = [{{ regex = \"^/a\", replacement = \"/b\", flag = \"forever\" }}]")),
                "site[0].route[0].rewrite[0].flag",
                "not a rewrite flag",
            ),
            (
                route(&format!("{proxy}rewrite = [{{ regex = \"^/a\", replacement = \"/$1\" }}]")),
                "site[0].route[0].rewrite[0].replacement",
                "has 0 capture group(s)",
            ),
            (
                route(&format!("{proxy}max_body_size = \"1t\"")),
                "site[0].route[0].max_body_size",
                "not a size",
            ),
            (
                route("return = { status = 301 }"),
                "site[0].route[0].return.location",
                "needs `location",
            ),
            (
                route("return = { status = 200, location = \"/x\" }"),
                "site[0].route[0].return.location",
                "only redirects",
            ),
            (
                route("return = { status = 444 }"),
                "site[0].route[0].return.status",
                "not supported",
            ),
            (
                route(&format!("{proxy}return = {{ status = 403 }}")),
                "site[0].route[0]",
                "a route does one of them",
            ),
            (
                route("return = { status = 200, body = \"$hots\" }"),
                "site[0].route[0].return.body",
                "unknown variable `$hots`",
            ),
            (
                route("return = { status = 200 }\nheaders = { request = { set = { X = \"1\" } } }"),
                "site[0].route[0].headers",
                "only applies to `proxy` routes",
            ),
            (
                site("hsts = \"includeSubDomains\""),
                "site[0].hsts",
                "not a Strict-Transport-Security value",
            ),
            (
                site("expires = \"soon\""),
                "site[0].expires",
                "not an expiry",
            ),
        ];
        for (text, key, fragment) in cases {
            let err = super::super::from_toml(&text, std::path::Path::new("certd.toml"))
                .expect_err(&text);
            assert_eq!(err.problems.len(), 1, "{text}\n{err}");
            let problem = &err.problems[0];
            assert_eq!(problem.key, key, "{text}\n{err}");
            assert!(problem.line.is_some(), "{text}\n{err}");
            assert!(problem.reason.contains(fragment), "{text}\n{err}");
        }
    }

    #[test]
    fn good_rules_load() {
        let text = "[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n[[site]]\n\
                    names = [\"a.test\"]\nhsts = true\nmax_body_size = \"10m\"\n\
                    headers = { response = { add = { \"X-Frame-Options\" = \"DENY\" } } }\n\
                    [[site.route]]\npath = \"/\"\nproxy = \"http://127.0.0.1:1\"\n\
                    max_body_size = 0\n\
                    rewrite = [{ regex = \"^/old/(.*)$\", replacement = \"/new/$1\", flag = \"last\" }]\n\
                    [[site.route]]\npath = \"/go\"\n\
                    return = { status = 302, location = \"https://$host$request_uri\" }\n\
                    [[site.route]]\npath = \"/assets/\"\nroot = \"/tmp\"\n\
                    headers = { response = { hide = [\"ETag\", \"Last-Modified\"] } }\n";
        let config = super::super::from_toml(text, std::path::Path::new("certd.toml")).unwrap();
        let site = &config.sites[0];
        assert_eq!(
            site.http.hsts.as_ref().unwrap(),
            "max-age=63072000; includeSubDomains"
        );
        assert_eq!(site.http.max_body_size, Some(10 * 1024 * 1024));
        assert_eq!(site.http.add.as_ref().unwrap().len(), 1);
        assert_eq!(site.routes[0].http.max_body_size, Some(0));
        assert_eq!(site.routes[0].http.rewrites[0].flag, RewriteFlag::Last);
        assert!(matches!(
            site.routes[1].target,
            RouteTargetConfig::Return(Return {
                status: StatusCode::FOUND,
                ..
            })
        ));
        // A static route may hide the ETag / Last-Modified certd sets (nginx `add_header ETag ""`).
        assert_eq!(site.routes[2].http.hide.as_ref().unwrap().len(), 2);
    }
}
