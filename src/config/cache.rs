//! A route's `cache` table (nginx `proxy_cache` with `proxy_cache_valid`, and the caps of
//! `proxy_cache_path`): read from TOML and checked into a [`crate::proxy::cache::Policy`].
//!
//! ```toml
//! cache = { valid = { "200 302" = "10m", "404" = "1m" }, max_entries = 10000, max_size = "64m" }
//! ```

use std::sync::Arc;

use toml::Spanned;

use super::http_rules::{parse_size, RawSize};
use super::problems::Problems;
use super::raw::RawDuration;
use super::serving::parse_duration;
use crate::proxy::cache::{Policy, RouteCache};

/// `cache = { ... }` on a proxy route.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    /// Status codes (space-separated, as in `proxy_cache_valid`) to how long they are kept.
    #[serde(default)]
    valid: std::collections::BTreeMap<String, RawDuration>,
    max_entries: Option<Spanned<i64>>,
    max_size: Option<Spanned<RawSize>>,
    max_entry_size: Option<Spanned<RawSize>>,
}

/// The validated cache of route `key`, or `None` (with problems added) when it is off or wrong.
pub(super) fn route_cache(
    key: &str,
    raw: Option<Spanned<RawCache>>,
    is_proxy: bool,
    problems: &mut Problems,
) -> Option<Arc<RouteCache>> {
    let raw = raw?;
    let span = raw.span();
    let key = format!("{key}.cache");
    if !is_proxy {
        problems.add(&key, Some(span), "only applies to `proxy` routes");
        return None;
    }
    let raw = raw.into_inner();
    let mut ok = true;
    let mut valid = Vec::new();
    for (codes, duration) in &raw.valid {
        let ttl = match parse_duration(duration) {
            Ok(ttl) => ttl,
            Err(why) => {
                problems.add(format!("{key}.valid.{codes:?}"), Some(span.clone()), why);
                ok = false;
                continue;
            }
        };
        for code in codes.split_whitespace() {
            match code.parse::<u16>() {
                Ok(code) if (100..=599).contains(&code) => valid.push((code, ttl)),
                // `any`: every status without a time of its own (nginx `proxy_cache_valid any`).
                _ if code == "any" => valid.push((0, ttl)),
                _ => {
                    problems.add(
                        format!("{key}.valid"),
                        Some(span.clone()),
                        format!("{code:?} is not an HTTP status code (write e.g. \"200 302\" or \"any\")"),
                    );
                    ok = false;
                }
            }
        }
    }
    let mut size = |name: &str, raw: Option<Spanned<RawSize>>, default: u64| match raw {
        None => Some(default),
        Some(raw) => match parse_size(raw.get_ref()) {
            Ok(0) => {
                problems.add(
                    format!("{key}.{name}"),
                    Some(raw.span()),
                    "must be more than 0",
                );
                None
            }
            Ok(bytes) => Some(bytes),
            Err(why) => {
                problems.add(format!("{key}.{name}"), Some(raw.span()), why);
                None
            }
        },
    };
    let max_bytes = size("max_size", raw.max_size, Policy::DEFAULT_MAX_BYTES);
    let max_entry_bytes = size(
        "max_entry_size",
        raw.max_entry_size,
        Policy::DEFAULT_MAX_ENTRY_BYTES,
    );
    let max_entries = match raw.max_entries {
        None => Some(Policy::DEFAULT_MAX_ENTRIES),
        Some(n) => match u64::try_from(*n.get_ref()) {
            Ok(n) if n > 0 => Some(n),
            _ => {
                problems.add(
                    format!("{key}.max_entries"),
                    Some(n.span()),
                    "must be more than 0",
                );
                None
            }
        },
    };
    let (Some(max_bytes), Some(max_entry_bytes), Some(max_entries), true) =
        (max_bytes, max_entry_bytes, max_entries, ok)
    else {
        return None;
    };
    Some(Arc::new(RouteCache::new(Policy {
        valid,
        max_entries,
        max_bytes,
        max_entry_bytes,
    })))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    const HEAD: &str = "[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n\
                        [[site]]\nnames = [\"example.org\"]\n";

    fn parse(route: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
        let text = format!("{HEAD}[[site.route]]\npath = \"/\"\n{route}");
        super::super::from_toml(&text, Path::new("/etc/certd/certd.toml"))
    }

    #[test]
    fn cache_tables_are_read_and_checked() {
        let config = parse(
            "proxy = \"http://127.0.0.1:3000\"\ncache = { valid = { \"200 302\" = \"10m\", \
             \"404\" = \"1m\", any = \"5s\" }, max_entries = 5, max_size = \"1m\" }\n",
        )
        .unwrap();
        let cache = config.sites[0].routes[0].cache.as_ref().unwrap();
        let policy = cache.policy();
        assert_eq!((policy.max_entries, policy.max_bytes), (5, 1024 * 1024));
        let ten = Duration::from_secs(600);
        assert!(policy.valid.contains(&(200, ten)) && policy.valid.contains(&(302, ten)));
        assert!(policy.valid.contains(&(404, Duration::from_secs(60))));
        assert!(policy.valid.contains(&(0, Duration::from_secs(5))));

        for (cache, key) in [
            (
                "cache = { valid = { \"2x0\" = \"1m\" } }",
                "site[0].route[0].cache.valid",
            ),
            (
                "cache = { max_entries = 0 }",
                "site[0].route[0].cache.max_entries",
            ),
            (
                "cache = { max_size = \"1t\" }",
                "site[0].route[0].cache.max_size",
            ),
        ] {
            let route = format!("proxy = \"http://127.0.0.1:3000\"\n{cache}\n");
            let problems = parse(&route).unwrap_err().problems;
            assert_eq!(problems.len(), 1, "{cache}: {problems:?}");
            assert_eq!(problems[0].key, key, "{cache}");
        }
        let unknown = parse("proxy = \"http://127.0.0.1:3000\"\ncache = { zone = \"x\" }\n");
        assert!(format!("{:?}", unknown.unwrap_err()).contains("zone"));
        let problems = parse("root = \"/srv\"\ncache = {}\n").unwrap_err().problems;
        assert_eq!(problems[0].key, "site[0].route[0].cache");
    }
}
