//! `[[map]]` (nginx `map $source $name { … }`): a variable whose value is chosen per request from
//! another value, usable wherever certd takes variables (request and response headers, `return`
//! targets and bodies, `rewrite` replacements). Validated here into
//! [`crate::proxy::value_map::ValueMap`]s, which the templates of the sites then hold.
//!
//! ```toml
//! [[map]]
//! name = "thescheme"                  # defines $thescheme
//! source = "$http_x_forwarded_proto"  # what is looked up (any value with variables)
//! default = "$scheme"                 # optional: when nothing matches (else empty)
//! entry = [
//!   { exact = "https", value = "https" },    # the whole value, ignoring case
//!   { regex = "^(?i)wss?$", value = "ws" },  # tried after every exact entry, in order
//! ]
//! ```
//!
//! A map may name the maps written before it (never itself or a later one, so no lookup loops).

use std::sync::Arc;

use toml::Spanned;

use super::problems::Problems;
use crate::proxy::value_map::{MapKey, ValueMap};
use crate::proxy::variables::{self, Template};

/// The most entries one map may have: the lookup is a scan per request.
const MAX_ENTRIES: usize = 1024;

/// One `[[map]]` as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMap {
    pub(super) name: Option<Spanned<String>>,
    pub(super) source: Option<Spanned<String>>,
    pub(super) default: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) entry: Vec<Spanned<RawMapEntry>>,
}

/// One entry of a map: `exact` or `regex`, and the `value`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMapEntry {
    pub(super) exact: Option<Spanned<String>>,
    pub(super) regex: Option<Spanned<String>>,
    pub(super) value: Option<Spanned<String>>,
}

/// The validated maps, in file order; an invalid one is left out (its problems reported).
pub(super) fn maps(raw: Vec<Spanned<RawMap>>, problems: &mut Problems<'_>) -> Vec<Arc<ValueMap>> {
    let mut out: Vec<Arc<ValueMap>> = Vec::new();
    for (i, raw) in raw.into_iter().enumerate() {
        let key = format!("map[{i}]");
        let span = raw.span();
        // Each map sees the maps before it.
        let map = variables::with_maps(&out, || one(&key, span, raw.into_inner(), problems));
        if let Some(map) = map {
            if out.iter().any(|other| other.name() == map.name()) {
                problems.add(
                    format!("{key}.name"),
                    None,
                    format!("`${}` is defined by an earlier [[map]] too", map.name()),
                );
                continue;
            }
            out.push(Arc::new(map));
        }
    }
    out
}

fn one(
    key: &str,
    span: std::ops::Range<usize>,
    raw: RawMap,
    problems: &mut Problems<'_>,
) -> Option<ValueMap> {
    let mut valid = true;
    let name = match raw.name {
        None => {
            problems.add(
                format!("{key}.name"),
                Some(span.clone()),
                "missing: the variable it defines, e.g. `name = \"thescheme\"` for $thescheme",
            );
            None
        }
        Some(name) => match name_problem(name.get_ref()) {
            Some(reason) => {
                problems.add(format!("{key}.name"), Some(name.span()), reason);
                None
            }
            None => Some(name.into_inner()),
        },
    };
    let template =
        |field: &str, value: Spanned<String>, problems: &mut Problems<'_>| match Template::parse(
            value.get_ref(),
            false,
        ) {
            Ok(template) => Some(template),
            Err(reason) => {
                problems.add(format!("{key}.{field}"), Some(value.span()), reason);
                None
            }
        };
    let source = match raw.source {
        None => {
            problems.add(
                format!("{key}.source"),
                Some(span.clone()),
                "missing: the value looked up, e.g. `source = \"$http_x_forwarded_proto\"`",
            );
            None
        }
        Some(source) => template("source", source, problems),
    };
    let default = match raw.default {
        None => None,
        Some(default) => {
            let parsed = template("default", default, problems);
            valid &= parsed.is_some();
            parsed
        }
    };
    if raw.entry.len() > MAX_ENTRIES {
        problems.add(
            format!("{key}.entry"),
            Some(span),
            format!("has {} entries; at most {MAX_ENTRIES}", raw.entry.len()),
        );
        return None;
    }
    let mut entries = Vec::new();
    for (n, entry) in raw.entry.into_iter().enumerate() {
        let at = format!("{key}.entry[{n}]");
        let entry_span = entry.span();
        let entry = entry.into_inner();
        let matched = match (entry.exact, entry.regex) {
            (Some(exact), None) => Some(MapKey::Exact(exact.into_inner())),
            (None, Some(regex)) => match regex::Regex::new(regex.get_ref()) {
                Ok(compiled) => Some(MapKey::Regex(compiled)),
                Err(error) => {
                    problems.add(
                        format!("{at}.regex"),
                        Some(regex.span()),
                        format!("{:?} is not a regular expression: {error}", regex.get_ref()),
                    );
                    None
                }
            },
            _ => {
                problems.add(
                    at.clone(),
                    Some(entry_span.clone()),
                    "needs exactly one of `exact = \"...\"` or `regex = \"...\"`",
                );
                None
            }
        };
        let value = match entry.value {
            None => {
                problems.add(
                    format!("{at}.value"),
                    Some(entry_span),
                    "missing: the variable's value when this entry matches",
                );
                None
            }
            Some(value) => template(&format!("entry[{n}].value"), value, problems),
        };
        match (matched, value) {
            (Some(matched), Some(value)) => entries.push((matched, value)),
            _ => valid = false,
        }
    }
    let (name, source) = (name?, source?);
    valid.then(|| ValueMap::new(name, source, entries, default))
}

/// Why `name` cannot be a map's variable, if it cannot.
fn name_problem(name: &str) -> Option<String> {
    if let Some(bare) = name.strip_prefix('$') {
        return Some(format!("write the name without `$`: `name = \"{bare}\"`"));
    }
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Some(format!(
            "{name:?} is not a variable name (letters, digits and `_`)"
        ));
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return Some(format!("`${name}` is a regex capture, not a name"));
    }
    if variables::is_builtin(name) {
        return Some(format!(
            "`${name}` is a variable certd defines itself; choose another name"
        ));
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    use super::super::{from_toml, Config};
    use crate::proxy::variables::RequestFacts;

    const HEAD: &str = "[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n";

    fn parse(text: &str) -> Result<Config, Vec<(String, Option<usize>, String)>> {
        from_toml(&format!("{HEAD}{text}"), Path::new("/etc/certd/certd.toml")).map_err(|err| {
            err.problems
                .into_iter()
                .map(|problem| (problem.key, problem.line, problem.reason))
                .collect()
        })
    }

    const SITE: &str = r#"
[[site]]
names = ["example.org"]
[[site.route]]
path = "/"
proxy = "http://127.0.0.1:8080"
headers.request.set = { X-Forwarded-Proto = "$thescheme" }
headers.response.add = { X-Chain = "[$upper]" }
"#;

    #[test]
    fn a_map_variable_is_looked_up_per_request_wherever_templates_are() {
        let config = parse(&format!(
            r#"
[[map]]
name = "thescheme"
source = "$http_x_forwarded_proto"
default = "$scheme"
entry = [{{ exact = "http", value = "http" }}, {{ regex = "^(?i)gopher", value = "old" }}]
[[map]]
name = "upper"
source = "$thescheme"
entry = [{{ exact = "old", value = "very $thescheme" }}]
{SITE}"#
        ))
        .unwrap();
        let http = &config.sites[0].routes[0].http;
        let request = http.request.as_deref().unwrap();
        let scheme = request[0].value.as_ref().unwrap();
        let add = &http.add.as_deref().unwrap()[0].value;
        let mut facts = RequestFacts::default();
        assert_eq!(scheme.expand(&facts, &[]), "https");
        assert_eq!(add.expand(&facts, &[]), "[]");
        for (proto, expected, chained) in [
            ("HTTP", "http", "[]"),
            ("Gopher+", "old", "[very old]"),
            ("https", "https", "[]"),
        ] {
            facts
                .headers
                .insert("x-forwarded-proto", proto.parse().unwrap());
            assert_eq!(scheme.expand(&facts, &[]), expected, "{proto}");
            assert_eq!(add.expand(&facts, &[]), chained, "{proto}");
        }
    }

    #[test]
    fn bad_maps_are_reported_with_their_key_and_line() {
        let cases: [(&str, &str, &str); 8] = [
            (
                "name = \"$x\"\nsource = \"$host\"",
                "map[0].name",
                "without `$`",
            ),
            (
                "name = \"host\"\nsource = \"$host\"",
                "map[0].name",
                "certd defines itself",
            ),
            ("name = \"x\"", "map[0].source", "missing"),
            (
                "name = \"x\"\nsource = \"$nope\"",
                "map[0].source",
                "unknown variable `$nope`",
            ),
            (
                "name = \"x\"\nsource = \"$host\"\nentry = [{ regex = \"(\", value = \"a\" }]",
                "map[0].entry[0].regex",
                "not a regular expression",
            ),
            (
                "name = \"x\"\nsource = \"$host\"\nentry = [{ value = \"a\" }]",
                "map[0].entry[0]",
                "exactly one of",
            ),
            (
                "name = \"x\"\nsource = \"$x\"",
                "map[0].source",
                "unknown variable `$x`",
            ),
            (
                "name = \"x\"\nsource = \"$host\"\nentry = [{ exact = \"a\", value = \"$1\" }]",
                "map[0].entry[0].value",
                "captures",
            ),
        ];
        for (body, key, fragment) in cases {
            let text = format!("[[map]]\n{body}\n[[site]]\nnames = [\"example.org\"]\n");
            let found = parse(&text).unwrap_err();
            assert_eq!(found.len(), 1, "{body}: {found:#?}");
            assert_eq!(found[0].0, key, "{body}: {found:#?}");
            assert!(
                found[0].1.is_some_and(|line| line >= 4),
                "{body}: {found:#?}"
            );
            assert!(found[0].2.contains(fragment), "{body}: {found:#?}");
        }
        // A site naming a map that does not exist is the usual unknown-variable problem.
        let found = parse(&format!("{SITE}\n")).unwrap_err();
        assert!(found.iter().any(|(key, _, reason)| key
            .ends_with("headers.request.set.X-Forwarded-Proto")
            && reason.contains("[[map]]")));
    }
}
