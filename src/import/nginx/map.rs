//! nginx `map $source $name { … }` blocks (top level or `http { }`) as certd `[[map]]` tables
//! (see `crate::config::map`): exact strings, `~`/`~*` regular expressions, `default`, and
//! `volatile` (certd looks every map up per request anyway). The websocket idiom
//! `map $http_upgrade $connection_upgrade` is not one of them: certd does that by itself (see
//! `super::translate::is_upgrade_map`).
//!
//! While the sites are translated, the maps that could be translated are in scope for
//! [`crate::proxy::variables::Template::parse`] (via `with_maps`), so a location that uses `$name`
//! translates exactly when certd will accept the output; a map that cannot be translated is listed
//! as untranslated and every location using its variable is left out, as before.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;

use super::parse::Directive;
use super::translate::{is_upgrade_map, Loc};
use crate::proxy::value_map::{MapKey, ValueMap};
use crate::proxy::variables::{self, Template};

/// One `map` block: where it is, and its `[[map]]` table or why there is none.
#[derive(Debug, Clone)]
pub(super) struct Map {
    pub(super) at: Loc,
    pub(super) result: Result<(Arc<ValueMap>, String), String>,
}

/// The `map` blocks at the top level and in `http { }` of `files`, in order, each translated with
/// the maps before it in scope.
pub(super) fn maps(files: &[(String, Vec<Directive>)]) -> Vec<Map> {
    fn collect<'a>(tree: &'a [Directive], file: usize, out: &mut Vec<(Loc, &'a Directive)>) {
        for d in tree {
            match (d.name.as_str(), &d.block) {
                ("map", Some(_)) if !is_upgrade_map(d) => out.push((Loc { file, line: d.line }, d)),
                ("http", Some(inner)) => collect(inner, file, out),
                _ => {}
            }
        }
    }
    let mut found = Vec::new();
    for (file, (_, tree)) in files.iter().enumerate() {
        collect(tree, file, &mut found);
    }
    let mut out: Vec<Map> = Vec::new();
    for (at, d) in found {
        let earlier: Vec<Arc<ValueMap>> = in_scope(&out);
        let result = variables::with_maps(&earlier, || translate(d)).and_then(|(map, table)| {
            if earlier.iter().any(|other| other.name() == map.name()) {
                Err(format!(
                    "`${}` is defined by an earlier map too",
                    map.name()
                ))
            } else {
                Ok((Arc::new(map), table))
            }
        });
        out.push(Map { at, result });
    }
    out
}

/// The maps of `maps` that were translated.
pub(super) fn in_scope(maps: &[Map]) -> Vec<Arc<ValueMap>> {
    maps.iter()
        .filter_map(|m| m.result.as_ref().ok().map(|(map, _)| Arc::clone(map)))
        .collect()
}

/// One `map` directive as a [`ValueMap`] and its `[[map]]` table, or why certd cannot take it.
fn translate(d: &Directive) -> Result<(ValueMap, String), String> {
    let [source, name] = d.args.as_slice() else {
        return Err("expected `map $source $name { … }`".to_owned());
    };
    let Some(name) = name.strip_prefix('$') else {
        return Err(format!(
            "`{name}`: the second argument must be a `$variable`"
        ));
    };
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!("`${name}` is not a variable name certd takes"));
    }
    if variables::is_builtin(name) {
        return Err(format!("`${name}` is a variable certd defines itself"));
    }
    let source_template = Template::parse(source, false)?;
    let mut default = None;
    let mut entries = Vec::new();
    let mut rows = Vec::new();
    let mut exact_seen = BTreeSet::new();
    for e in d.block.as_deref().unwrap_or_default() {
        if e.block.is_some() {
            return Err(format!("line {}: a block inside a map", e.line));
        }
        match (e.name.as_str(), e.args.as_slice()) {
            ("volatile", []) => {}
            ("hostnames", []) => {
                return Err(
                    "`hostnames` (wildcard host names as keys) is not supported by certd's maps"
                        .to_owned(),
                )
            }
            ("include", _) => return Err("`include` inside a map is not followed".to_owned()),
            ("default", [value]) => {
                default = Some(
                    Template::parse(value, false)
                        .map_err(|why| format!("line {}: {why}", e.line))?,
                );
            }
            (key, [value]) => {
                let template = Template::parse(value, false)
                    .map_err(|why| format!("line {}: {why}", e.line))?;
                let (kind, text, matched) = if let Some(pattern) = key.strip_prefix("~*") {
                    let regex = format!("(?i){pattern}");
                    (
                        "regex",
                        regex.clone(),
                        MapKey::Regex(compile(&regex, e.line)?),
                    )
                } else if let Some(pattern) = key.strip_prefix('~') {
                    (
                        "regex",
                        pattern.to_owned(),
                        MapKey::Regex(compile(pattern, e.line)?),
                    )
                } else {
                    // nginx: a leading `\` escapes a key that would otherwise be special (`\~`).
                    let literal = key.strip_prefix('\\').unwrap_or(key);
                    if !exact_seen.insert(literal.to_lowercase()) {
                        return Err(format!("line {}: the key {literal:?} twice", e.line));
                    }
                    (
                        "exact",
                        literal.to_owned(),
                        MapKey::Exact(literal.to_owned()),
                    )
                };
                rows.push(format!(
                    "  {{ {kind} = {}, value = {} }},",
                    toml_str(&text),
                    toml_str(value)
                ));
                entries.push((matched, template));
            }
            _ => return Err(format!("line {}: expected `KEY VALUE;` in a map", e.line)),
        }
    }
    let mut table = String::from("[[map]]\n");
    let _ = writeln!(table, "name = {}", toml_str(name));
    let _ = writeln!(table, "source = {}", toml_str(source));
    if let Some(value) = &default {
        let _ = writeln!(table, "default = {}", toml_str(value.source()));
    }
    if !rows.is_empty() {
        table.push_str("entry = [\n");
        for row in &rows {
            table.push_str(row);
            table.push('\n');
        }
        table.push_str("]\n");
    }
    Ok((
        ValueMap::new(name.to_owned(), source_template, entries, default),
        table,
    ))
}

fn compile(pattern: &str, line: usize) -> Result<regex::Regex, String> {
    regex::Regex::new(pattern).map_err(|error| {
        format!(
            "line {line}: {pattern:?} is not a regular expression certd's engine takes: {error}"
        )
    })
}

/// `s` as a TOML string.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::proxy::variables::RequestFacts;

    fn maps_of(text: &str) -> Vec<Map> {
        let files = vec![(
            "a.conf".to_owned(),
            super::super::parse::parse(text).unwrap(),
        )];
        maps(&files)
    }

    #[test]
    fn a_map_becomes_a_table_and_a_lookup_like_nginx() {
        let found = maps_of(
            "http { map $http_x_forwarded_proto $thescheme { default $scheme; https https; \
             ~*^GO gopher; '' empty; volatile; } }\n\
             map $thescheme $chained { gopher \"was $thescheme\"; }\n\
             map $http_upgrade $connection_upgrade { default upgrade; '' close; }",
        );
        assert_eq!(found.len(), 2, "the websocket idiom is not a [[map]]");
        let (map, table) = found[0].result.as_ref().unwrap();
        assert_eq!(
            table,
            "[[map]]\nname = \"thescheme\"\nsource = \"$http_x_forwarded_proto\"\n\
             default = \"$scheme\"\nentry = [\n  { exact = \"https\", value = \"https\" },\n  \
             { regex = \"(?i)^GO\", value = \"gopher\" },\n  { exact = \"\", value = \"empty\" },\n]\n"
        );
        let mut facts = RequestFacts::default();
        assert_eq!(map.value(&facts), "empty");
        facts
            .headers
            .insert("x-forwarded-proto", "gopher".parse().unwrap());
        assert_eq!(map.value(&facts), "gopher");
        let (chained, _) = found[1].result.as_ref().unwrap();
        assert_eq!(chained.value(&facts), "was gopher");
        // The table is what certd's config reads.
        let text = format!(
            "[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n{table}{}\
             [[site]]\nnames = [\"a.test\"]\n",
            found[1].result.as_ref().unwrap().1
        );
        crate::config::from_toml(&text, std::path::Path::new("/etc/certd/certd.toml")).unwrap();
    }

    #[test]
    fn maps_certd_cannot_take_say_why() {
        for (text, why) in [
            ("map $host $x { hostnames; .a.test 1; }", "hostnames"),
            ("map $host $x { include keys.map; }", "include"),
            ("map $host $x { ~(?<=a)b 1; }", "not a regular expression"),
            ("map $host $x { a $1; }", "captures"),
            ("map $host $host { a 1; }", "defines itself"),
            ("map $nope $x { a 1; }", "unknown variable `$nope`"),
            ("map $host $x { a 1; A 2; }", "twice"),
        ] {
            let found = maps_of(text);
            let error = found[0].result.as_ref().unwrap_err();
            assert!(error.contains(why), "{text}: {error}");
        }
    }
}
