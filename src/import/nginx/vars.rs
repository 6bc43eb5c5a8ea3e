//! Server-level `set $var /literal;` resolved statically: Discourse's `set $public
//! /var/www/discourse/public;` then `root $public;`. nginx evaluates `$public` per request, but
//! when the only assignment is one server-level `set` with a value without variables (no `if`
//! around it, no other `set` or `map` for the name), every request sees that same value, so the
//! importer may write the value where the variable is used and translate the lines as usual.
//!
//! Only arguments nginx interpolates are replaced: never a `location` pattern, an `if`
//! condition, a `map`, or the regex of a `rewrite`.

use std::collections::{BTreeMap, BTreeSet};

use super::parse::Directive;

/// The names (without `$`) that `map` blocks anywhere in `files` define.
pub(super) fn map_targets<'a>(files: impl Iterator<Item = &'a [Directive]>) -> BTreeSet<String> {
    fn walk(tree: &[Directive], out: &mut BTreeSet<String>) {
        for d in tree {
            if d.name == "map" {
                if let Some(var) = d.args.get(1).and_then(|v| v.strip_prefix('$')) {
                    out.insert(var.to_owned());
                }
            }
            walk(d.block.as_deref().unwrap_or_default(), out);
        }
    }
    let mut out = BTreeSet::new();
    for tree in files {
        walk(tree, &mut out);
    }
    out
}

/// The server-level `set`s of server block `body` that are constants: name (without `$`) →
/// value.
pub(super) fn literal_sets(
    body: &[Directive],
    maps: &BTreeSet<String>,
) -> BTreeMap<String, String> {
    fn count(tree: &[Directive], var: &str) -> usize {
        tree.iter()
            .map(|d| {
                let here =
                    usize::from(d.name == "set" && d.args.first().map(String::as_str) == Some(var));
                here + count(d.block.as_deref().unwrap_or_default(), var)
            })
            .sum()
    }
    let mut out = BTreeMap::new();
    // A server-level `return`/`rewrite`/`if` before the `set` runs first and sees no value.
    let before = |d: &Directive| {
        body.iter()
            .take_while(|other| !std::ptr::eq(*other, d))
            .any(|other| matches!(other.name.as_str(), "return" | "rewrite" | "if"))
    };
    for d in body.iter().filter(|d| d.name == "set" && d.block.is_none()) {
        if before(d) {
            continue;
        }
        let [var, value] = d.args.as_slice() else {
            continue;
        };
        let Some(name) = var.strip_prefix('$') else {
            continue;
        };
        let plain_name =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if plain_name && !value.contains('$') && !maps.contains(name) && count(body, var) == 1 {
            out.insert(name.to_owned(), value.clone());
        }
    }
    out
}

/// Whether `d` is one of the `set`s [`literal_sets`] resolved.
pub(super) fn is_resolved_set(d: &Directive, vars: &BTreeMap<String, String>) -> bool {
    d.name == "set"
        && d.args
            .first()
            .and_then(|v| v.strip_prefix('$'))
            .is_some_and(|name| vars.contains_key(name))
}

/// `body` with every use of `vars` in interpolated arguments replaced by its value.
pub(super) fn substitute(body: &[Directive], vars: &BTreeMap<String, String>) -> Vec<Directive> {
    body.iter()
        .map(|d| {
            let mut d = d.clone();
            substitute_one(&mut d, vars);
            d
        })
        .collect()
}

fn substitute_one(d: &mut Directive, vars: &BTreeMap<String, String>) {
    if vars.is_empty() {
        return;
    }
    // Arguments nginx does not interpolate, or where a replacement would change what is matched.
    let skip = match d.name.as_str() {
        "location" | "if" | "map" | "set" => usize::MAX,
        "rewrite" => 1,
        _ => 0,
    };
    for arg in d.args.iter_mut().skip(skip) {
        *arg = replace(arg, vars);
    }
    for inner in d.block.iter_mut().flatten() {
        substitute_one(inner, vars);
    }
}

/// `text` with `$name` and `${name}` of `vars` replaced (a longer name such as `$public_x` is
/// another variable and stays).
fn replace(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, used) = match after.strip_prefix('{') {
            Some(braced) => match braced.find('}') {
                Some(end) => (&braced[..end], end + 2),
                None => ("", 0),
            },
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        match vars.get(name).filter(|_| used > 0) {
            Some(value) => {
                out.push_str(value);
                rest = &after[used..];
            }
            None => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<Directive> {
        super::super::parse::parse(text).unwrap()
    }

    #[test]
    fn a_literal_server_set_is_resolved_where_nginx_interpolates() {
        let body = parse(
            "set $public /srv/pub; location / { root $public; proxy_set_header X-Map ${public}/=/d/; \
             add_header X-Other $public_x; } location ~ $public { }",
        );
        let vars = literal_sets(&body, &BTreeSet::new());
        assert_eq!(vars.get("public").map(String::as_str), Some("/srv/pub"));
        let out = substitute(&body, &vars);
        assert!(is_resolved_set(&out[0], &vars));
        assert_eq!(out[0].args, ["$public", "/srv/pub"]);
        let inner = out[1].block.as_deref().unwrap();
        assert_eq!(inner[0].args, ["/srv/pub"]);
        assert_eq!(inner[1].args, ["X-Map", "/srv/pub/=/d/"]);
        assert_eq!(inner[2].args, ["X-Other", "$public_x"]);
        assert_eq!(out[2].args, ["~", "$public"]);
    }

    #[test]
    fn a_set_that_can_change_is_not_resolved() {
        for text in [
            // a value with a variable
            "set $public $document_root/x; root $public;",
            // assigned again in a location or an if
            "set $public /a; location / { set $public /b; root $public; }",
            "set $public /a; if ($host = x) { set $public /b; } root $public;",
            // a server-level return before it sees no value
            "return 301 https://x$public; set $public /a;",
        ] {
            let body = parse(text);
            assert!(literal_sets(&body, &BTreeSet::new()).is_empty(), "{text}");
        }
        // a map for the same name
        let maps = map_targets(std::iter::once(
            parse("map $host $public { default /a; }").as_slice(),
        ));
        let body = parse("set $public /a; root $public;");
        assert!(literal_sets(&body, &maps).is_empty());
    }
}
