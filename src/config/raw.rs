//! Step 1 of loading: the file as written, and the deserializer's own errors (syntax errors, unknown
//! keys, values of the wrong type) turned into problems with their key and line.

use std::collections::BTreeMap;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::ConfigProblem;

// ---------------------------------------------------------------------------------------------------
// Step 1: the file as written.
//
// Every key is optional here so that validation, not the deserializer, reports what is missing (and
// reports all of it). Tables are `Spanned` so problems about a missing key can point at the table's
// header line. To add a key: add an `Option` field here (a table gets its own `Raw*` struct with
// `deny_unknown_fields`), then a function in step 2 that turns it into the typed form. The top-level
// `[https]` table becomes `https: Option<Spanned<RawHttp>>`-like, and each site's
// `[[site.route]]` / `[site.error_pages]` become `route: Vec<Spanned<RawRoute>>` and
// `error_pages: Option<Spanned<RawErrorPages>>` on `RawSite`, validated in `sites`.
// ---------------------------------------------------------------------------------------------------

/// The whole file.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) state_dir: Option<Spanned<String>>,
    pub(super) acme: Option<Spanned<RawAcme>>,
    pub(super) http: Option<Spanned<RawHttp>>,
    pub(super) https: Option<Spanned<RawHttps>>,
    pub(super) limits: Option<Spanned<RawLimits>>,
    pub(super) renewal: Option<Spanned<RawRenewal>>,
    pub(super) status: Option<Spanned<RawStatus>>,
    pub(super) metrics: Option<Spanned<RawMetrics>>,
    pub(super) hook: Option<Spanned<RawHook>>,
    pub(super) preflight: Option<Spanned<RawPreflight>>,
    #[serde(default)]
    pub(super) site: Vec<Spanned<RawSite>>,
    #[serde(default)]
    pub(super) upstream: Vec<Spanned<super::upstreams::RawUpstream>>,
    pub(super) storage: Option<Spanned<super::storage::RawStorage>>,
    pub(super) log: Option<Spanned<RawLog>>,
    /// `[[map]]`: variables looked up per request (see `config::map`).
    #[serde(default)]
    pub(super) map: Vec<Spanned<super::map::RawMap>>,
}

/// `[acme]`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAcme {
    pub(super) directory: Option<Spanned<String>>,
    pub(super) email: Option<Spanned<String>>,
    pub(super) agree_tos: Option<Spanned<bool>>,
    pub(super) ca_roots: Option<Spanned<String>>,
    /// A string rather than [`KeyType`], so a bad value is a validation problem reported alongside
    /// the others instead of a deserializer error that stops at the first.
    pub(super) key_type: Option<Spanned<String>>,
    pub(super) concurrency: Option<Spanned<i64>>,
    pub(super) profile: Option<Spanned<String>>,
    pub(super) challenge: Option<Spanned<String>>,
    /// `[acme.dns]` and `dns_hook`: the DNS-01 method of every site (see `config::dns`).
    pub(super) dns: Option<Spanned<super::dns::RawDns>>,
    pub(super) dns_hook: Option<Spanned<String>>,
    pub(super) eab_kid: Option<Spanned<String>>,
    pub(super) eab_hmac_key_file: Option<Spanned<String>>,
    /// `[[acme.ca]]`: the ordered CAs, instead of `directory` (see `config::fallback`).
    pub(super) ca: Option<Spanned<Vec<Spanned<super::fallback::RawCa>>>>,
}

/// `[http]`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    pub(super) listen: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) redirect: Option<Spanned<bool>>,
    pub(super) proxy_protocol: Option<Spanned<bool>>,
}

/// `[https]`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttps {
    pub(super) listen: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) default_site: Option<Spanned<String>>,
    pub(super) trusted_proxies: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) proxy_protocol: Option<Spanned<bool>>,
}

/// `[limits]`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) header_read_timeout: Option<Spanned<RawDuration>>,
    pub(super) idle_timeout: Option<Spanned<RawDuration>>,
    pub(super) max_header_bytes: Option<Spanned<i64>>,
    pub(super) max_connections: Option<Spanned<i64>>,
    pub(super) grace_period: Option<Spanned<RawDuration>>,
    pub(super) upstream_connect_timeout: Option<Spanned<RawDuration>>,
    pub(super) upstream_response_timeout: Option<Spanned<RawDuration>>,
    pub(super) tunnel_idle_timeout: Option<Spanned<RawDuration>>,
}

/// A duration: whole seconds, or text such as `"10s"`, `"2m"`, `"500ms"`, `"1h"`.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
pub(super) enum RawDuration {
    Seconds(i64),
    Text(String),
}

/// `[status]`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStatus {
    pub(super) warn_days: Option<Spanned<i64>>,
    pub(super) critical_days: Option<Spanned<i64>>,
}

/// `[metrics]`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) listen: Option<Spanned<String>>,
}

/// `[preflight]`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPreflight {
    pub(super) enabled: Option<Spanned<bool>>,
    pub(super) resolver: Option<Spanned<String>>,
}

/// `[log]`. Strings, so a bad value is a validation problem naming the choices.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) format: Option<Spanned<String>>,
    pub(super) access_format: Option<Spanned<String>>,
    pub(super) access_file: Option<Spanned<String>>,
}

/// `[hook]`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHook {
    pub(super) command: Option<Spanned<Vec<String>>>,
}

/// One `[[site.route]]`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) path: Option<Spanned<String>>,
    pub(super) proxy: Option<Spanned<String>>,
    pub(super) root: Option<Spanned<String>>,
    pub(super) tunnel_idle_timeout: Option<Spanned<RawDuration>>,
    pub(super) allow_dotfiles: Option<Spanned<bool>>,
    /// `access`, `auth_basic`, `auth_basic_user_file`, `satisfy` (see `config::access`).
    pub(super) access: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) auth_basic: Option<Spanned<String>>,
    pub(super) auth_basic_user_file: Option<Spanned<String>>,
    pub(super) satisfy: Option<Spanned<String>>,
    pub(super) exact: Option<Spanned<String>>,
    pub(super) prefix_priority: Option<Spanned<bool>>,
    pub(super) regex: Option<Spanned<String>>,
    pub(super) iregex: Option<Spanned<String>>,
    pub(super) name: Option<Spanned<String>>,
    pub(super) try_files: Option<Spanned<Vec<Spanned<String>>>>,
    /// Nested `[[site.route.route]]` tables.
    #[serde(default)]
    pub(super) route: Vec<Spanned<RawRoute>>,
    pub(super) fastcgi: Option<Spanned<String>>,
    pub(super) fastcgi_index: Option<Spanned<String>>,
    pub(super) front_controller: Option<Spanned<RawFrontController>>,
    /// `fastcgi_param = { NAME = "value" }`: extra FastCGI parameters.
    pub(super) fastcgi_param: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    pub(super) compress: Option<Spanned<RawCompress>>,
    pub(super) precompressed: Option<Spanned<bool>>,
    pub(super) headers: Option<Spanned<super::http_rules::RawHeaders>>,
    pub(super) max_body_size: Option<Spanned<super::http_rules::RawSize>>,
    pub(super) expires: Option<Spanned<String>>,
    /// nginx `etag`: `false` takes the ETag off the files this route serves.
    pub(super) etag: Option<Spanned<bool>>,
    pub(super) rewrite: Option<Vec<Spanned<super::http_rules::RawRewrite>>>,
    #[serde(rename = "return")]
    pub(super) answer: Option<Spanned<super::http_rules::RawReturn>>,
    /// `if = [{ test = "…", return = { … } }]`.
    #[serde(rename = "if")]
    pub(super) returns_if: Option<Vec<Spanned<super::condition::RawIf>>>,
    pub(super) alias: Option<Spanned<String>>,
    pub(super) connect_timeout: Option<Spanned<RawDuration>>,
    pub(super) read_timeout: Option<Spanned<RawDuration>>,
    pub(super) send_timeout: Option<Spanned<RawDuration>>,
    /// `index`, `[[site.route.error_page]]`, `intercept_errors` (see `config::error_page`).
    pub(super) index: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) error_page: Option<Vec<Spanned<super::error_page::RawErrorPage>>>,
    pub(super) intercept_errors: Option<Spanned<bool>>,
    /// `strip_prefix` (proxy prefix routes; nginx `proxy_pass` with a URI part).
    pub(super) strip_prefix: Option<Spanned<bool>>,
    /// `limit_except` (see `config::limit_except`).
    pub(super) limit_except: Option<Spanned<super::limit_except::RawLimitExcept>>,
    /// `auth_request`, `internal` (see `config::auth_request`).
    pub(super) auth_request: Option<Spanned<String>>,
    pub(super) internal: Option<Spanned<bool>>,
    /// `cache` (see `config::cache`).
    pub(super) cache: Option<Spanned<super::cache::RawCache>>,
}

/// `front_controller`: a script path, or `false` for none.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
pub(super) enum RawFrontController {
    Enabled(bool),
    Script(String),
}

/// A route's `compress`: `true`/`false`, or a table of options (which turns compression on).
#[derive(Debug)]
pub(super) enum RawCompress {
    Enabled(bool),
    Options(Box<RawCompressOptions>),
}

// By hand rather than `#[serde(untagged)]`: untagged buffers the value, which loses both the
// table's own errors (an unknown key would only say "did not match any variant") and `Spanned`.
impl<'de> serde::Deserialize<'de> for RawCompress {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawCompress;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false, or a table such as { encodings = [\"zstd\", \"gzip\"] }")
            }
            fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<RawCompress, E> {
                Ok(RawCompress::Enabled(value))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RawCompress, A::Error> {
                serde::Deserialize::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|options| RawCompress::Options(Box::new(options)))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `compress = { ... }` on a route.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCompressOptions {
    pub(super) encodings: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) types: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) min_length: Option<Spanned<i64>>,
    pub(super) level: Option<Spanned<RawCompressLevel>>,
}

/// `level = { gzip = 5, br = 4, zstd = 3 }` in a route's `compress`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCompressLevel {
    pub(super) gzip: Option<Spanned<i64>>,
    pub(super) br: Option<Spanned<i64>>,
    pub(super) zstd: Option<Spanned<i64>>,
}

/// `[renewal]`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRenewal {
    pub(super) remaining_fraction: Option<Spanned<f64>>,
    pub(super) first_retry: Option<Spanned<RawDuration>>,
    pub(super) longest_retry: Option<Spanned<RawDuration>>,
    pub(super) slow_after_failures: Option<Spanned<i64>>,
}

/// One `[[site]]`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSite {
    pub(super) names: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub(super) route: Vec<Spanned<RawRoute>>,
    /// Status code (as a TOML key, so a string) → file.
    pub(super) error_pages: Option<Spanned<std::collections::BTreeMap<String, Spanned<String>>>>,
    pub(super) profile: Option<Spanned<String>>,
    /// The site-level defaults of the route keys of the same names (see `config::access`).
    pub(super) access: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) auth_basic: Option<Spanned<String>>,
    pub(super) auth_basic_user_file: Option<Spanned<String>>,
    pub(super) satisfy: Option<Spanned<String>>,
    /// `[site.compress]` or `compress = ...`: the default of the site's routes that do not say.
    pub(super) compress: Option<Spanned<RawCompress>>,
    pub(super) headers: Option<Spanned<super::http_rules::RawHeaders>>,
    pub(super) hsts: Option<Spanned<super::http_rules::RawHsts>>,
    pub(super) max_body_size: Option<Spanned<super::http_rules::RawSize>>,
    pub(super) expires: Option<Spanned<String>>,
    /// nginx `etag`: the default of the site's routes.
    pub(super) etag: Option<Spanned<bool>>,
    /// `index` and `[[site.error_page]]`: the defaults of the site's routes (see
    /// `config::error_page`).
    pub(super) index: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) error_page: Option<Vec<Spanned<super::error_page::RawErrorPage>>>,
    pub(super) challenge: Option<Spanned<String>>,
    /// `[site.dns]` and `dns_hook`: this site's own DNS-01 method (see `config::dns`).
    pub(super) dns: Option<Spanned<super::dns::RawDns>>,
    pub(super) dns_hook: Option<Spanned<String>>,
}

// ---------------------------------------------------------------------------------------------------
// Deserializer errors: syntax errors, unknown keys, and values of the wrong type.
// ---------------------------------------------------------------------------------------------------

/// Turns a failed deserialization into problems. Syntax errors are all reported (the parser recovers
/// and continues); a serde error (an unknown key, a wrong type) stops deserialization, so it is the
/// only one, and its key is found by locating its span in the parsed document.
pub(super) fn deserializer_problems(text: &str, err: &toml::de::Error) -> Vec<ConfigProblem> {
    let (document, syntax_errors) = DeTable::parse_recoverable(text);
    let problem = |key: String, error: &toml::de::Error| ConfigProblem {
        key,
        line: error.span().map(|span| line_at(text, span.start)),
        reason: error.message().to_owned(),
    };
    if syntax_errors.is_empty() {
        let key = err
            .span()
            .and_then(|span| key_at(document.get_ref(), "", span.start))
            .unwrap_or_default();
        vec![problem(key, err)]
    } else {
        let mut problems: Vec<ConfigProblem> = syntax_errors
            .iter()
            .map(|error| problem(String::new(), error))
            .collect();
        problems.sort_by_key(|problem| problem.line.unwrap_or(usize::MAX));
        problems
    }
}

/// The dotted path (`acme.key_type`, `site[1].names[0]`) of the innermost key or value in `table`
/// whose span holds byte `offset`. Every entry is searched, because a table's own span covers only its
/// header line, not its contents.
fn key_at(table: &DeTable<'_>, prefix: &str, offset: usize) -> Option<String> {
    table.iter().find_map(|(key, value)| {
        let path = join_key(prefix, key.get_ref());
        if key.span().contains(&offset) {
            Some(path)
        } else {
            value_key_at(value, &path, offset)
        }
    })
}

fn value_key_at(value: &Spanned<DeValue<'_>>, path: &str, offset: usize) -> Option<String> {
    let inner = match value.get_ref() {
        DeValue::Table(table) => key_at(table, path, offset),
        DeValue::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| value_key_at(item, &format!("{path}[{i}]"), offset)),
        _ => None,
    };
    inner.or_else(|| value.span().contains(&offset).then(|| path.to_owned()))
}

/// Appends `key` to a dotted path, quoting it as TOML would if it is not a bare key.
fn join_key(prefix: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if prefix.is_empty() {
        key
    } else {
        format!("{prefix}.{key}")
    }
}

/// The 1-based line holding byte `offset` of `text`.
pub(super) fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}
