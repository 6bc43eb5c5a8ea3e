//! `[[map]]` (nginx `map $source $name { … }`): a variable whose value is looked up per request from
//! another value. Owns the lookup; the config side is `crate::config::map`, and a
//! [`super::variables::Template`] that names `$name` holds the map and expands it here.
//!
//! nginx's order: exact strings first (compared ignoring case, as nginx's map hash lower-cases both
//! sides), then the regular expressions in the order written (on the value as it is), then the
//! default (empty when there is none).

use regex::Regex;

use super::variables::{RequestFacts, Template};

/// One map, as validated from the config.
#[derive(Debug)]
pub struct ValueMap {
    /// The variable it defines, without `$`.
    name: String,
    /// What is looked up (`$http_x_forwarded_proto`).
    source: Template,
    /// Exact strings, lower-cased, with their values, in the order written.
    exact: Vec<(String, Template)>,
    /// The regular expressions, in the order written.
    regexes: Vec<(Regex, Template)>,
    default: Option<Template>,
}

impl PartialEq for ValueMap {
    /// Two maps are the same variable when they define the same name: names are unique in a
    /// config, and [`Regex`] has no equality of its own.
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for ValueMap {}

/// One `[[map.entry]]`: what it matches.
#[derive(Debug)]
pub enum MapKey {
    /// `exact = "https"`: the whole value, ignoring case.
    Exact(String),
    /// `regex = "^/api/"`: a regular expression (`(?i)` for nginx's `~*`).
    Regex(Regex),
}

impl ValueMap {
    /// A map defining `$name` from `source`; `entries` in the order written.
    pub fn new(
        name: String,
        source: Template,
        entries: Vec<(MapKey, Template)>,
        default: Option<Template>,
    ) -> Self {
        let mut exact = Vec::new();
        let mut regexes = Vec::new();
        for (key, value) in entries {
            match key {
                MapKey::Exact(text) => exact.push((text.to_lowercase(), value)),
                MapKey::Regex(regex) => regexes.push((regex, value)),
            }
        }
        Self {
            name,
            source,
            exact,
            regexes,
            default,
        }
    }

    /// The variable it defines, without `$`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The template chosen for the value `looked_up`.
    fn choose(&self, looked_up: &str) -> Option<&Template> {
        let lower = looked_up.to_lowercase();
        self.exact
            .iter()
            .find(|(text, _)| *text == lower)
            .map(|(_, value)| value)
            .or_else(|| {
                self.regexes
                    .iter()
                    .find(|(regex, _)| regex.is_match(looked_up))
                    .map(|(_, value)| value)
            })
            .or(self.default.as_ref())
    }

    /// The variable's value for one request. Maps can only name maps defined before them (see
    /// `crate::config::map`), so this recursion ends.
    pub fn value(&self, facts: &RequestFacts) -> String {
        let looked_up = self.source.expand(facts, &[]);
        self.choose(&looked_up)
            .map(|value| value.expand(facts, &[]))
            .unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn template(text: &str) -> Template {
        Template::parse(text, false).unwrap()
    }

    fn facts(proto: Option<&str>) -> RequestFacts {
        let mut facts = RequestFacts {
            host: "a.test".into(),
            uri: "/api/x".into(),
            ..RequestFacts::default()
        };
        if let Some(proto) = proto {
            facts
                .headers
                .insert("x-forwarded-proto", proto.parse().unwrap());
        }
        facts
    }

    #[test]
    fn exact_strings_ignore_case_then_regexes_in_order_then_the_default() {
        let map = ValueMap::new(
            "thescheme".into(),
            template("$http_x_forwarded_proto"),
            vec![
                (
                    MapKey::Regex(Regex::new("^ht").unwrap()),
                    template("regex-1"),
                ),
                (MapKey::Exact("https".into()), template("https")),
                (
                    MapKey::Regex(Regex::new("^h").unwrap()),
                    template("regex-2"),
                ),
                (MapKey::Exact(String::new()), template("empty")),
            ],
            Some(template("$scheme")),
        );
        let cases = [
            (Some("HTTPS"), "https"),
            (Some("http"), "regex-1"),
            (Some("hx"), "regex-2"),
            (None, "empty"),
            (Some("gopher"), "https"),
        ];
        for (proto, expected) in cases {
            assert_eq!(map.value(&facts(proto)), expected, "{proto:?}");
        }
    }

    #[test]
    fn without_a_default_an_unmatched_value_is_empty() {
        let map = ValueMap::new(
            "api".into(),
            template("$uri"),
            vec![(MapKey::Exact("/".into()), template("root"))],
            None,
        );
        assert_eq!(map.value(&facts(None)), "");
    }
}
