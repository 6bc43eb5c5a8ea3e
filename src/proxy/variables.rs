//! nginx-style variables in header values, `return` targets and `rewrite` replacements: a
//! [`Template`] is parsed once from the config (an unknown variable is a config error there) and
//! expanded per request from [`RequestFacts`].
//!
//! Supported: `$host`, `$remote_addr` (the real client, see [`super::Proxy::client_ip`]), `$scheme`,
//! `$request_uri` (path and query as the client sent them), `$uri` (the normalised path, after any
//! rewrite), `$args` / `$query_string`, `$is_args`, `$request_method`, `$server_name`,
//! `$proxy_host` (the upstream's `host:port`), `$proxy_add_x_forwarded_for`, `$http_<name>` (a request
//! header, `_` for `-`), `$arg_<name>` (a query argument, as the client wrote it; the first when
//! repeated, empty when absent), `$1`…`$9` (the captures of a `rewrite` regex), and the variables of the
//! config's `[[map]]` tables (see [`super::value_map`]). `${name}` separates a name from letters that
//! follow it.
//!
//! The maps a template may name are set for the parse with [`with_maps`] (the config does this
//! around the validation of everything that holds templates), so the many functions that parse a
//! template keep their signatures; a parsed template holds its maps itself.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use hyper::header::HeaderName;
use hyper::{HeaderMap, Method};

/// One variable.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Var {
    Host,
    RemoteAddr,
    Scheme,
    RequestUri,
    Uri,
    Args,
    IsArgs,
    RequestMethod,
    ServerName,
    ProxyHost,
    ProxyAddXForwardedFor,
    Http(HeaderName),
    /// `$arg_<name>`: the name as written (nginx compares it case-insensitively).
    Arg(String),
    Capture(usize),
    Map(Arc<super::value_map::ValueMap>),
    UpstreamCacheStatus,
}

thread_local! {
    /// The `[[map]]` variables templates parsed on this thread may name (see [`with_maps`]).
    static MAPS: RefCell<Vec<Arc<super::value_map::ValueMap>>> = const { RefCell::new(Vec::new()) };
}

/// Runs `parse` with `maps` as the `[[map]]` variables that [`Template::parse`] knows, restoring
/// the previous set afterwards (also when `parse` panics, as the guard drops).
pub fn with_maps<R>(maps: &[Arc<super::value_map::ValueMap>], parse: impl FnOnce() -> R) -> R {
    struct Restore(Vec<Arc<super::value_map::ValueMap>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = std::mem::take(&mut self.0);
            MAPS.with(|maps| *maps.borrow_mut() = previous);
        }
    }
    let previous = MAPS.with(|current| current.replace(maps.to_vec()));
    let _restore = Restore(previous);
    parse()
}

/// Whether `name` (without `$`) is a variable certd defines itself, which a map cannot redefine.
pub fn is_builtin(name: &str) -> bool {
    with_maps(&[], || variable(name, false).is_ok())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

/// A value with variables, parsed from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
    source: String,
}

/// What a request's variables expand to, gathered once per request.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts {
    /// `$host`: the requested host, lower-case, without port.
    pub host: String,
    /// The `Host` as sent (with any port), for absolute redirects.
    pub authority: String,
    /// `$remote_addr`: the real client.
    pub remote_addr: Option<IpAddr>,
    /// `$request_uri`: path and query as the client sent them.
    pub request_uri: String,
    /// `$uri`: the normalised path (after any rewrite).
    pub uri: String,
    /// `$args`: the query (after any rewrite), without `?`.
    pub args: Option<String>,
    /// `$request_method`.
    pub method: Method,
    /// `$server_name`: the site's first name.
    pub server_name: String,
    /// `$proxy_host`: the upstream's authority, on proxy routes.
    pub proxy_host: Option<String>,
    /// `$proxy_add_x_forwarded_for`: the `X-Forwarded-For` certd sends upstream.
    pub forwarded_for: Option<String>,
    /// The request's headers, for `$http_<name>`.
    pub headers: HeaderMap,
    /// `$upstream_cache_status` (MISS, HIT, EXPIRED) on routes with a `cache`, set once
    /// the answer is known; empty elsewhere, as in nginx.
    pub upstream_cache_status: Option<&'static str>,
}

impl Template {
    /// Parses `text`; `captures` says whether `$1`…`$9` may appear (only in `rewrite`). `Err` is the
    /// reason, for the config problem.
    pub fn parse(text: &str, captures: bool) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            literal.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let (name, next) = if let Some(braced) = after.strip_prefix('{') {
                let end = braced
                    .find('}')
                    .ok_or_else(|| format!("{text:?}: `${{` without a closing `}}`"))?;
                (&braced[..end], &braced[end + 1..])
            } else if after.starts_with(|c: char| c.is_ascii_digit()) {
                after.split_at(1)
            } else {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                after.split_at(end)
            };
            if name.is_empty() {
                return Err(format!(
                    "{text:?}: `$` must be followed by a variable name such as `$host`"
                ));
            }
            let var = variable(name, captures).map_err(|reason| format!("{text:?}: {reason}"))?;
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(Part::Var(var));
            rest = next;
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Self {
            parts,
            source: text.to_owned(),
        })
    }

    /// The highest `$N` capture it uses (0 when none).
    pub fn max_capture(&self) -> usize {
        self.parts
            .iter()
            .filter_map(|part| match part {
                Part::Var(Var::Capture(n)) => Some(*n),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// The text as written in the config.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The value for one request; `captures` are a rewrite regex's groups (`$1` is `captures[1]`),
    /// a missing one expanding to nothing, as in nginx.
    pub fn expand(&self, facts: &RequestFacts, captures: &[Option<&str>]) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Var(var) => expand_var(var, facts, captures, &mut out),
            }
        }
        out
    }
}

fn expand_var(var: &Var, facts: &RequestFacts, captures: &[Option<&str>], out: &mut String) {
    match var {
        Var::Host => out.push_str(&facts.host),
        Var::RemoteAddr => {
            if let Some(ip) = facts.remote_addr {
                let _ = write!(out, "{ip}");
            }
        }
        // Every request certd proxies arrived over TLS.
        Var::Scheme => out.push_str("https"),
        Var::RequestUri => out.push_str(&facts.request_uri),
        Var::Uri => out.push_str(&facts.uri),
        Var::Args => out.push_str(facts.args.as_deref().unwrap_or("")),
        Var::IsArgs => {
            if facts.args.is_some() {
                out.push('?');
            }
        }
        Var::RequestMethod => out.push_str(facts.method.as_str()),
        Var::ServerName => out.push_str(&facts.server_name),
        Var::ProxyHost => out.push_str(facts.proxy_host.as_deref().unwrap_or("")),
        Var::ProxyAddXForwardedFor => match &facts.forwarded_for {
            Some(chain) => out.push_str(chain),
            None => {
                if let Some(ip) = facts.remote_addr {
                    let _ = write!(out, "{ip}");
                }
            }
        },
        Var::Arg(name) => out.push_str(argument(facts.args.as_deref(), name)),
        Var::Http(name) => {
            // nginx joins repeated headers with ", " (for cookies "; "); the first is enough for
            // the values people put in headers, and joining keeps nothing hidden.
            let values: Vec<&str> = facts
                .headers
                .get_all(name)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .collect();
            out.push_str(&values.join(", "));
        }
        Var::Capture(n) => out.push_str(captures.get(*n).copied().flatten().unwrap_or("")),
        Var::Map(map) => out.push_str(&map.value(facts)),
        Var::UpstreamCacheStatus => out.push_str(facts.upstream_cache_status.unwrap_or("")),
    }
}

/// The value of query argument `name` in `args` (nginx's `$arg_<name>`): the first `name=value`
/// pair whose name equals `name` ignoring ASCII case, not decoded; empty when there is none (and
/// for a bare `name` without `=`).
fn argument<'a>(args: Option<&'a str>, name: &str) -> &'a str {
    args.unwrap_or("")
        .split('&')
        .find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            key.eq_ignore_ascii_case(name).then_some(value)
        })
        .unwrap_or("")
}

fn variable(name: &str, captures: bool) -> Result<Var, String> {
    if let Ok(n) = name.parse::<usize>() {
        return if captures && (1..=9).contains(&n) {
            Ok(Var::Capture(n))
        } else if captures {
            Err(format!("`${n}`: captures are `$1` to `$9`"))
        } else {
            Err(format!(
                "`${n}`: regex captures exist only in a `rewrite` replacement"
            ))
        };
    }
    Ok(match name {
        "host" => Var::Host,
        "remote_addr" => Var::RemoteAddr,
        "scheme" => Var::Scheme,
        "request_uri" => Var::RequestUri,
        "uri" | "document_uri" => Var::Uri,
        "args" | "query_string" => Var::Args,
        "is_args" => Var::IsArgs,
        "request_method" => Var::RequestMethod,
        "server_name" => Var::ServerName,
        "proxy_host" => Var::ProxyHost,
        "proxy_add_x_forwarded_for" => Var::ProxyAddXForwardedFor,
        "upstream_cache_status" => Var::UpstreamCacheStatus,
        _ if name.starts_with("arg_") && name.len() > 4 => Var::Arg(name[4..].to_owned()),
        _ => match name.strip_prefix("http_") {
            Some(header) if !header.is_empty() => {
                let header = header.replace('_', "-").to_ascii_lowercase();
                Var::Http(
                    HeaderName::from_bytes(header.as_bytes())
                        .map_err(|_| format!("`${name}`: {header:?} is not a header name"))?,
                )
            }
            _ => {
                let map =
                    MAPS.with(|maps| maps.borrow().iter().find(|map| map.name() == name).cloned());
                return map.map(Var::Map).ok_or_else(|| {
                    format!(
                        "unknown variable `${name}`; certd knows $host, $remote_addr, $scheme, \
                         $request_uri, $uri, $args, $is_args, $request_method, $server_name, \
                         $proxy_host, $proxy_add_x_forwarded_for, $upstream_cache_status, $http_<header>, \
                         $arg_<name> and the variables of `[[map]]` tables"
                    )
                });
            }
        },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn facts() -> RequestFacts {
        let mut headers = HeaderMap::new();
        headers.insert("x-user-id", "42".parse().unwrap());
        RequestFacts {
            host: "a.test".into(),
            authority: "a.test:8443".into(),
            remote_addr: Some("192.0.2.7".parse().unwrap()),
            request_uri: "/old/x%2Fy?a=1".into(),
            uri: "/old/x%2Fy".into(),
            args: Some("a=1".into()),
            method: Method::POST,
            server_name: "a.test".into(),
            proxy_host: Some("127.0.0.1:8080".into()),
            forwarded_for: Some("203.0.113.1, 192.0.2.7".into()),
            headers,
            upstream_cache_status: Some("HIT"),
        }
    }

    #[test]
    fn variables_expand_from_the_request() {
        let cases = [
            ("https://$host$request_uri", "https://a.test/old/x%2Fy?a=1"),
            (
                "$scheme://$server_name$uri$is_args$args",
                "https://a.test/old/x%2Fy?a=1",
            ),
            ("$remote_addr", "192.0.2.7"),
            ("${host}abc", "a.testabc"),
            ("id=$http_x_user_id;", "id=42;"),
            ("[$http_x_missing]", "[]"),
            ("$request_method $proxy_host", "POST 127.0.0.1:8080"),
            ("$proxy_add_x_forwarded_for", "203.0.113.1, 192.0.2.7"),
            ("cache=$upstream_cache_status", "cache=HIT"),
            ("no variables", "no variables"),
        ];
        for (text, expected) in cases {
            let template = Template::parse(text, false).unwrap();
            assert_eq!(template.expand(&facts(), &[]), expected, "{text}");
        }
    }

    #[test]
    fn query_arguments_are_found_by_name_ignoring_case() {
        let cases = [
            (Some("v=3&x=1"), "v", "3"),
            (Some("a=1&V=2&v=3"), "v", "2"),
            (Some("vv=1&v"), "v", ""),
            (Some("x=%20y"), "x", "%20y"),
            (None, "v", ""),
        ];
        for (args, name, value) in cases {
            assert_eq!(argument(args, name), value, "{args:?} {name}");
        }
        let template = Template::parse("max-age=1$arg_v", false).unwrap();
        let mut facts = facts();
        facts.args = Some("v=abc".into());
        assert_eq!(template.expand(&facts, &[]), "max-age=1abc");
    }

    #[test]
    fn captures_expand_only_in_rewrites() {
        let template = Template::parse("/new/$1/$2$3", true).unwrap();
        assert_eq!(
            template.expand(&facts(), &[Some("/old/a"), Some("a"), None]),
            "/new/a/"
        );
        assert!(Template::parse("/new/$1", false)
            .unwrap_err()
            .contains("only in a `rewrite`"));
    }

    #[test]
    fn unknown_or_malformed_variables_are_refused() {
        for (text, reason) in [
            ("$hots", "unknown variable `$hots`"),
            ("a$", "must be followed by a variable name"),
            ("a$-b", "must be followed by a variable name"),
            ("${host", "without a closing"),
            ("$http_", "unknown variable"),
        ] {
            let error = Template::parse(text, false).unwrap_err();
            assert!(error.contains(reason), "{text}: {error}");
        }
    }
}
