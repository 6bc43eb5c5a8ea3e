//! Validation of what `certd run` serves: `[limits]`, and each site's
//! `[[site.route]]` and `[site.error_pages]`.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::access::AccessScope;
use super::location::{self as route_location, NamedReference, Parent};
use super::problems::Problems;
use super::raw::{RawDuration, RawLimits, RawRoute};
use super::{LimitsConfig, RouteConfig, RouteTargetConfig, MAX_TUNNEL_IDLE_TIMEOUT};

pub(super) fn limits(raw: Option<Spanned<RawLimits>>, problems: &mut Problems<'_>) -> LimitsConfig {
    let mut limits = LimitsConfig::default();
    let Some(raw) = raw.map(Spanned::into_inner) else {
        return limits;
    };
    let mut duration = |key: &str, value: Option<Spanned<RawDuration>>, into: &mut Duration| {
        if let Some(value) = value {
            match parse_duration_at_most(value.get_ref(), LONGEST_LIMIT) {
                Ok(parsed) if !parsed.is_zero() => *into = parsed,
                Ok(_) => problems.add(
                    format!("limits.{key}"),
                    Some(value.span()),
                    "must be more than zero",
                ),
                Err(reason) => problems.add(format!("limits.{key}"), Some(value.span()), reason),
            }
        }
    };
    duration(
        "header_read_timeout",
        raw.header_read_timeout,
        &mut limits.header_read_timeout,
    );
    duration("idle_timeout", raw.idle_timeout, &mut limits.idle_timeout);
    duration("grace_period", raw.grace_period, &mut limits.grace_period);
    duration(
        "upstream_connect_timeout",
        raw.upstream_connect_timeout,
        &mut limits.upstream_connect_timeout,
    );
    duration(
        "upstream_response_timeout",
        raw.upstream_response_timeout,
        &mut limits.upstream_response_timeout,
    );
    if let Some(timeout) = tunnel_idle_timeout(
        "limits.tunnel_idle_timeout".into(),
        raw.tunnel_idle_timeout,
        problems,
    ) {
        limits.tunnel_idle_timeout = timeout;
    }
    let mut count = |key: &str,
                     value: Option<Spanned<i64>>,
                     range: std::ops::RangeInclusive<i64>,
                     into: &mut usize| {
        if let Some(value) = value {
            match usize::try_from(*value.get_ref()) {
                Ok(parsed) if range.contains(value.get_ref()) => *into = parsed,
                _ => problems.add(
                    format!("limits.{key}"),
                    Some(value.span()),
                    format!(
                        "{} is out of range {}..={}",
                        value.get_ref(),
                        range.start(),
                        range.end()
                    ),
                ),
            }
        }
    };
    count(
        "max_header_bytes",
        raw.max_header_bytes,
        1024..=1024 * 1024,
        &mut limits.max_header_bytes,
    );
    count(
        "max_connections",
        raw.max_connections,
        1..=1_000_000,
        &mut limits.max_connections,
    );
    limits
}

/// A `tunnel_idle_timeout` (in `[limits]` or on a route): more than zero, at most
/// [`MAX_TUNNEL_IDLE_TIMEOUT`]. `None` when absent or refused (the refusal is a problem).
fn tunnel_idle_timeout(
    key: String,
    value: Option<Spanned<RawDuration>>,
    problems: &mut Problems<'_>,
) -> Option<Duration> {
    let value = value?;
    match parse_duration(value.get_ref()) {
        Ok(parsed) if parsed.is_zero() => {
            problems.add(key, Some(value.span()), "must be more than zero");
            None
        }
        Ok(parsed) if parsed > MAX_TUNNEL_IDLE_TIMEOUT => {
            problems.add(
                key,
                Some(value.span()),
                format!(
                    "must be at most {}h (a week)",
                    MAX_TUNNEL_IDLE_TIMEOUT.as_secs() / 3600
                ),
            );
            None
        }
        Ok(parsed) => Some(parsed),
        Err(reason) => {
            problems.add(key, Some(value.span()), reason);
            None
        }
    }
}

/// The longest any `[limits]` duration may be: a timeout or grace period of more than a day is a typo
/// (and a huge one would overflow the deadline arithmetic built on it).
pub(super) const LONGEST_LIMIT: (Duration, &str) = (Duration::from_secs(24 * 3600), "24h");

/// [`parse_duration`], refusing more than `longest` (the duration, and how the error message shows
/// it) with a reason naming the limit.
pub(super) fn parse_duration_at_most(
    raw: &RawDuration,
    (longest, shown): (Duration, &str),
) -> Result<Duration, String> {
    let parsed = parse_duration(raw)?;
    if parsed > longest {
        let written = match raw {
            RawDuration::Seconds(seconds) => seconds.to_string(),
            RawDuration::Text(text) => format!("{:?}", text.trim()),
        };
        return Err(format!(
            "{written} is more than the longest allowed, {shown}"
        ));
    }
    Ok(parsed)
}

/// `"10s"`, `"2m"`, `"1h"`, `"500ms"`, `"1h 30m"`, `"2days"` (humantime's units: ms, s, m, h, d, w,
/// and their long names), or whole seconds (a number, or text of digits only).
pub(super) fn parse_duration(raw: &RawDuration) -> Result<Duration, String> {
    let text = match raw {
        RawDuration::Seconds(seconds) => {
            return u64::try_from(*seconds)
                .map(Duration::from_secs)
                .map_err(|_| format!("{seconds} is negative"))
        }
        RawDuration::Text(text) => text.trim(),
    };
    if !text.is_empty() && text.bytes().all(|c| c.is_ascii_digit()) {
        // humantime wants a unit; certd always read bare digits as seconds.
        return text
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| format!("{text:?} is too long to be a duration"));
    }
    // humantime reads "M" as months and "y" as years; a config duration never means those, and
    // a month of 30.44 days is no one's idea of a timeout, so they are refused like any typo.
    let calendar = ["M", "month", "months", "y", "year", "years"];
    if text
        .split(|c: char| !c.is_ascii_alphabetic())
        .any(|unit| calendar.contains(&unit))
    {
        return Err(bad_duration(text));
    }
    humantime::parse_duration(text).map_err(|err| match err {
        // Checked: no saturation that would silently turn a typo into the longest duration.
        humantime::DurationError::NumberOverflow => {
            format!("{text:?} is too long to be a duration")
        }
        _ => bad_duration(text),
    })
}

fn bad_duration(text: &str) -> String {
    format!("{text:?} is not a duration: write e.g. \"500ms\", \"10s\", \"2m\" or \"1h\"")
}

/// The `[[site.route]]` tables of site `site`, with their nested routes.
pub(super) fn routes(
    site: usize,
    raw: Vec<Spanned<RawRoute>>,
    folder: &Path,
    inherited: &Inherited,
    upstreams: &[super::UpstreamConfig],
    problems: &mut Problems<'_>,
) -> Vec<RouteConfig> {
    let mut context = RouteContext {
        folder,
        upstreams,
        references: Vec::new(),
        reported: HashSet::new(),
    };
    let routes = routes_in(
        &format!("site[{site}]"),
        None,
        raw,
        inherited,
        &mut context,
        problems,
    );
    route_location::check_references(&context.references, &routes, problems);
    routes
}

/// What a route takes from the site or route it is in for the keys it does not set itself, as nginx
/// inherits directives from `server` into `location` and into the locations nested in it.
pub(super) struct Inherited {
    /// `access`, `auth_basic`, `auth_basic_user_file`, `satisfy`.
    pub(super) access: AccessScope,
    /// `compress`.
    pub(super) compress: Option<std::sync::Arc<crate::compression::Policy>>,
    /// `index`.
    pub(super) index: Vec<String>,
    /// `error_page`.
    pub(super) error_page: std::sync::Arc<Vec<crate::proxy::error_page::ErrorPage>>,
}

/// What every route of one site is validated against, and what their validation collects.
struct RouteContext<'a> {
    /// The config file's folder, for relative paths.
    folder: &'a Path,
    /// The `[[upstream]]` groups a `proxy` may name.
    upstreams: &'a [super::UpstreamConfig],
    /// Named routes that `try_files` refers to, checked once every route is known.
    references: Vec<NamedReference>,
    /// Access-key problems already reported (a site-level one is reported once, not per route).
    reported: HashSet<String>,
}

/// The routes `raw` of `owner` (a site, or the route they are nested in, `parent`).
fn routes_in(
    owner: &str,
    parent: Option<&Parent<'_>>,
    raw: Vec<Spanned<RawRoute>>,
    inherited: &Inherited,
    context: &mut RouteContext<'_>,
    problems: &mut Problems<'_>,
) -> Vec<RouteConfig> {
    let (folder, upstreams) = (context.folder, context.upstreams);
    let mut routes: Vec<RouteConfig> = Vec::with_capacity(raw.len());
    // Where each of `routes` is in the file, for problems that name an earlier route.
    let mut indexes = Vec::with_capacity(raw.len());
    for (i, route) in raw.into_iter().enumerate() {
        let key = format!("{owner}.route[{i}]");
        let table = route.span();
        let mut route = route.into_inner();
        // Taken out first, so a route refused below still has its access keys checked, and the
        // routes nested in it inherit them.
        let here = Inherited {
            access: inherited.access.route(&key, &mut route, folder, problems),
            compress: match route.compress.take() {
                Some(own) => {
                    super::compress::policy(&format!("{key}.compress"), Some(own), problems)
                }
                None => inherited.compress.clone(),
            },
            index: match route.index.take() {
                Some(own) => {
                    index_only_on_files(&key, &route, &own, problems);
                    super::error_page::index(&format!("{key}.index"), Some(own), problems)
                        .unwrap_or_else(|| inherited.index.clone())
                }
                None => inherited.index.clone(),
            },
            error_page: match super::error_page::error_pages(
                &format!("{key}.error_page"),
                route.error_page.take(),
                &mut context.references,
                problems,
            ) {
                Some(own) => std::sync::Arc::new(own),
                None => inherited.error_page.clone(),
            },
        };
        let Some((path, location)) = route_location::route_match(
            &key,
            table.clone(),
            &mut route,
            parent,
            &routes,
            &indexes,
            problems,
        ) else {
            continue;
        };
        let fastcgi_keys = super::fastcgi::Keys {
            fastcgi: &route.fastcgi,
            fastcgi_index: &route.fastcgi_index,
            front_controller: &route.front_controller,
            fastcgi_param: &route.fastcgi_param,
            allow_dotfiles: &route.allow_dotfiles,
        };
        super::fastcgi::stray_keys(&key, fastcgi_keys, problems);
        let mut group = None;
        let target = match (route.proxy, route.root) {
            (proxy, root) if route.answer.is_some() => {
                let other = proxy.is_some()
                    || root.is_some()
                    || route.alias.is_some()
                    || route.fastcgi.is_some();
                match super::http_rules::return_target(&key, table, route.answer, other, problems) {
                    Some(target) => target,
                    None => continue,
                }
            }
            (proxy, root) if route.alias.is_some() => {
                let other = proxy.is_some() || root.is_some() || route.fastcgi.is_some();
                match super::http_rules::alias_target(
                    &key,
                    table,
                    route.alias,
                    other,
                    folder,
                    problems,
                ) {
                    Some(target) => target,
                    None => continue,
                }
            }
            (proxy, root) if route.fastcgi.is_some() => {
                let table = table.clone();
                match super::fastcgi::target(
                    &key,
                    table,
                    proxy,
                    root,
                    fastcgi_keys,
                    folder,
                    problems,
                ) {
                    Some(target) => target,
                    None => continue,
                }
            }
            (Some(proxy), None) => match upstream(proxy.get_ref()).and_then(|uri| {
                group = super::upstreams::group_of(&uri, upstreams)?;
                Ok(uri)
            }) {
                Ok(uri) => RouteTargetConfig::Proxy(uri),
                Err(reason) => {
                    problems.add(format!("{key}.proxy"), Some(proxy.span()), reason);
                    continue;
                }
            },
            (None, Some(root)) => {
                let dir = folder.join(root.get_ref());
                if !dir.is_dir() {
                    problems.add(
                        format!("{key}.root"),
                        Some(root.span()),
                        format!("{} is not a folder", dir.display()),
                    );
                    continue;
                }
                RouteTargetConfig::Root(dir)
            }
            (Some(_), Some(_)) => {
                problems.add(
                    key,
                    Some(table),
                    "has both `proxy` and `root`: a route does one or the other",
                );
                continue;
            }
            (None, None) => {
                problems.add(
                    key,
                    Some(table),
                    "needs `proxy = \"http://127.0.0.1:8080\"` or `root = \"/srv/www\"`",
                );
                continue;
            }
        };
        // Each option belongs to one kind of route; on the other it would silently do nothing.
        let is_proxy = matches!(target, RouteTargetConfig::Proxy(_));
        if let (false, Some(timeout)) = (is_proxy, &route.tunnel_idle_timeout) {
            problems.add(
                format!("{key}.tunnel_idle_timeout"),
                Some(timeout.span()),
                "only applies to `proxy` routes (a static route has no tunnels)",
            );
        }
        if let (true, Some(allow)) = (is_proxy, &route.allow_dotfiles) {
            problems.add(
                format!("{key}.allow_dotfiles"),
                Some(allow.span()),
                "only applies to `root` routes (the upstream decides what it serves)",
            );
        }
        let mut http = super::http_rules::route(
            &key,
            &target,
            route.headers,
            route.max_body_size,
            route.expires,
            route.rewrite,
            problems,
        );
        http.etag = route.etag.map(Spanned::into_inner);
        let http = crate::proxy::http_rules::HttpRules {
            returns_if: std::sync::Arc::from(super::condition::returns_if(
                &key,
                route.returns_if,
                problems,
            )),
            ..http
        };
        let tunnel_idle_timeout = if is_proxy {
            tunnel_idle_timeout(
                format!("{key}.tunnel_idle_timeout"),
                route.tunnel_idle_timeout,
                problems,
            )
        } else {
            None
        };
        if let (true, Some(precompressed)) = (is_proxy, &route.precompressed) {
            problems.add(
                format!("{key}.precompressed"),
                Some(precompressed.span()),
                "only applies to `root` routes (files next to the requested one); use `compress` \
                 for proxied responses",
            );
        }
        let try_files = route_location::try_files(
            &key,
            route.try_files,
            !is_proxy,
            matches!(location, crate::proxy::LocationMatch::Regex(_)),
            &mut context.references,
            problems,
        );
        let nested = routes_in(
            &key,
            Some(&Parent {
                key: &key,
                path: &path,
                location: &location,
            }),
            route.route,
            &here,
            context,
            problems,
        );
        let intercept_errors = match route.intercept_errors {
            Some(intercept)
                if !matches!(
                    target,
                    RouteTargetConfig::Proxy(_) | RouteTargetConfig::Fastcgi(_)
                ) =>
            {
                problems.add(
                    format!("{key}.intercept_errors"),
                    Some(intercept.span()),
                    "only applies to `proxy` and `fastcgi` routes (certd's own errors always get \
                     the error pages)",
                );
                false
            }
            Some(intercept) => *intercept.get_ref(),
            None => false,
        };
        let strip_prefix = match route.strip_prefix {
            Some(strip)
                if *strip.get_ref()
                    && !(is_proxy
                        && matches!(
                            location,
                            crate::proxy::LocationMatch::Prefix
                                | crate::proxy::LocationMatch::PreferredPrefix
                        )) =>
            {
                problems.add(
                    format!("{key}.strip_prefix"),
                    Some(strip.span()),
                    "only applies to `proxy` routes matched by `path` (a prefix to cut)",
                );
                false
            }
            Some(strip) => *strip.get_ref(),
            None => false,
        };
        indexes.push(i);
        let timeouts = proxy_timeouts(
            &key,
            is_proxy,
            [
                route.connect_timeout,
                route.read_timeout,
                route.send_timeout,
            ],
            problems,
        );
        routes.push(RouteConfig {
            path,
            target,
            tunnel_idle_timeout,
            allow_dotfiles: route.allow_dotfiles.is_some_and(|allow| *allow.get_ref()),
            access: here.access.policy(&mut context.reported, problems),
            location,
            routes: nested,
            try_files,
            compress: here.compress,
            precompressed: route.precompressed.is_some_and(|on| *on.get_ref()),
            http,
            upstream: group,
            timeouts,
            index: here.index,
            error_page: here.error_page,
            intercept_errors,
            strip_prefix,
            limit_except: super::limit_except::limit_except(
                &key,
                route.limit_except,
                &here.access,
                folder,
                &mut context.reported,
                problems,
            ),
            auth_request: super::auth_request::auth_request(&key, route.auth_request, problems),
            internal: route.internal.is_some_and(|internal| *internal.get_ref()),
            cache: super::cache::route_cache(&key, route.cache, is_proxy, problems),
        });
    }
    routes
}

/// A route's own `index` is refused where there are no files to look for: on `proxy` and
/// `return` routes, and on `fastcgi` routes (which have `fastcgi_index`).
fn index_only_on_files(
    key: &str,
    route: &RawRoute,
    own: &Spanned<Vec<Spanned<String>>>,
    problems: &mut Problems<'_>,
) {
    let files = route.answer.is_none()
        && route.fastcgi.is_none()
        && route.proxy.is_none()
        && (route.root.is_some() || route.alias.is_some());
    if !files {
        problems.add(
            format!("{key}.index"),
            Some(own.span()),
            "only applies to `root` and `alias` routes (a `fastcgi` route has `fastcgi_index`)",
        );
    }
}

/// A route's `connect_timeout`, `read_timeout` and `send_timeout`: proxy routes only, more than
/// zero; a read timeout may be as long as a tunnel's idle timeout (websocket apps set hours), the
/// others at most a day.
fn proxy_timeouts(
    key: &str,
    is_proxy: bool,
    [connect, read, send]: [Option<Spanned<RawDuration>>; 3],
    problems: &mut Problems<'_>,
) -> super::ProxyTimeouts {
    let week = (MAX_TUNNEL_IDLE_TIMEOUT, "168h (a week)");
    let mut parse = |name: &str, value: Option<Spanned<RawDuration>>, longest| {
        let value = value?;
        let key = format!("{key}.{name}");
        if !is_proxy {
            problems.add(key, Some(value.span()), "only applies to `proxy` routes");
            return None;
        }
        match parse_duration_at_most(value.get_ref(), longest) {
            Ok(parsed) if !parsed.is_zero() => Some(parsed),
            Ok(_) => {
                problems.add(key, Some(value.span()), "must be more than zero");
                None
            }
            Err(reason) => {
                problems.add(key, Some(value.span()), reason);
                None
            }
        }
    };
    super::ProxyTimeouts {
        connect: parse("connect_timeout", connect, LONGEST_LIMIT),
        read: parse("read_timeout", read, week),
        send: parse("send_timeout", send, LONGEST_LIMIT),
    }
}

/// An upstream: `http://host:port` with an optional base path, no query.
fn upstream(text: &str) -> Result<hyper::Uri, String> {
    let uri: hyper::Uri = text
        .parse()
        .map_err(|err| format!("{text:?} is not a URL: {err}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "{text:?}: upstreams are reached over plain http (on loopback or a private network)"
            ))
        }
        _ => return Err(format!("{text:?} must start with http://")),
    }
    if uri.authority().is_none() {
        return Err(format!("{text:?} has no host"));
    }
    if uri.query().is_some() {
        return Err(format!("{text:?}: an upstream cannot have a query"));
    }
    Ok(uri)
}

/// `[site.error_pages]` of site `site`: status → file.
pub(super) fn error_pages(
    site: usize,
    raw: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    folder: &Path,
    problems: &mut Problems<'_>,
) -> BTreeMap<u16, PathBuf> {
    let mut pages = BTreeMap::new();
    let Some(raw) = raw else {
        return pages;
    };
    for (status, file) in raw.into_inner() {
        let key = format!("site[{site}].error_pages.{status}");
        let code = match status.parse::<u16>() {
            Ok(code) if (400..=599).contains(&code) => code,
            _ => {
                problems.add(
                    key,
                    Some(file.span()),
                    format!("{status:?} is not an HTTP error status (400 to 599)"),
                );
                continue;
            }
        };
        let path = folder.join(file.get_ref());
        if !path.is_file() {
            problems.add(
                key,
                Some(file.span()),
                format!("{} is not a readable file", path.display()),
            );
            continue;
        }
        pages.insert(code, path);
    }
    pages
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_read_in_the_usual_units() {
        let cases = [
            (RawDuration::Seconds(10), Ok(Duration::from_secs(10))),
            (RawDuration::Text("10s".into()), Ok(Duration::from_secs(10))),
            (
                RawDuration::Text("500ms".into()),
                Ok(Duration::from_millis(500)),
            ),
            (RawDuration::Text("2m".into()), Ok(Duration::from_secs(120))),
            (
                RawDuration::Text("1h".into()),
                Ok(Duration::from_secs(3600)),
            ),
            (RawDuration::Text("42".into()), Ok(Duration::from_secs(42))),
            (
                RawDuration::Text("1h 30m".into()),
                Ok(Duration::from_secs(5400)),
            ),
            (
                RawDuration::Text("2days".into()),
                Ok(Duration::from_secs(172_800)),
            ),
        ];
        for (raw, expected) in cases {
            assert_eq!(parse_duration(&raw), expected, "{raw:?}");
        }
        assert!(parse_duration(&RawDuration::Text("10 parsecs".into())).is_err());
        // Months and years are not timeouts.
        assert!(parse_duration(&RawDuration::Text("1M".into())).is_err());
        assert!(parse_duration(&RawDuration::Text("1year".into())).is_err());
        assert!(parse_duration(&RawDuration::Text("".into())).is_err());
        assert!(parse_duration(&RawDuration::Text("-5s".into())).is_err());
        assert!(parse_duration(&RawDuration::Seconds(-1)).is_err());
    }

    #[test]
    fn durations_that_overflow_or_exceed_the_limit_are_refused() {
        // u64::MAX hours in milliseconds does not fit: no silent u64::MAX ms.
        assert_eq!(
            parse_duration(&RawDuration::Text("18446744073709551615h".into())),
            Err("\"18446744073709551615h\" is too long to be a duration".into())
        );
        assert_eq!(
            parse_duration_at_most(&RawDuration::Text("1000000000h".into()), LONGEST_LIMIT),
            Err("\"1000000000h\" is more than the longest allowed, 24h".into())
        );
        assert_eq!(
            parse_duration_at_most(&RawDuration::Seconds(i64::MAX), LONGEST_LIMIT),
            Err("9223372036854775807 is more than the longest allowed, 24h".into())
        );
        assert_eq!(
            parse_duration_at_most(&RawDuration::Text("24h".into()), LONGEST_LIMIT),
            Ok(Duration::from_secs(86_400))
        );
        assert!(parse_duration_at_most(&RawDuration::Seconds(86_401), LONGEST_LIMIT).is_err());
    }

    #[test]
    fn strip_prefix_is_for_proxy_routes_matched_by_a_prefix() {
        let head = "[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n\
                    [[site]]\nnames = [\"example.org\"]\n";
        let parse = |route: &str| {
            let text = format!("{head}[[site.route]]\n{route}strip_prefix = true\n");
            super::super::from_toml(&text, Path::new("/etc/certd/certd.toml"))
        };
        let config = parse("path = \"/app/\"\nproxy = \"http://127.0.0.1:1/\"\n").unwrap();
        assert!(config.sites[0].routes[0].strip_prefix);
        for refused in [
            "regex = '^/app'\nproxy = \"http://127.0.0.1:1/\"\n",
            "exact = \"/app\"\nproxy = \"http://127.0.0.1:1/\"\n",
            "path = \"/app/\"\nreturn = { status = 204 }\n",
        ] {
            let problems = parse(refused).unwrap_err().problems;
            assert_eq!(problems.len(), 1, "{refused}: {problems:?}");
            assert_eq!(
                problems[0].key, "site[0].route[0].strip_prefix",
                "{refused}"
            );
        }
    }

    #[test]
    fn upstreams_must_be_plain_http_with_a_host() {
        assert!(upstream("http://127.0.0.1:8080").is_ok());
        assert!(upstream("http://localhost:8080/base").is_ok());
        assert!(upstream("https://127.0.0.1:8443").is_err());
        assert!(upstream("127.0.0.1:8080").is_err());
        assert!(upstream("http://127.0.0.1:8080/?a=b").is_err());
    }
}
