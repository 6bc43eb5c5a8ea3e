//! Validation of a route's `if` list (nginx `if (…) { return …; }`): each entry a `test` that
//! [`crate::proxy::condition::Condition`] reads and a `return` table like the route's own.

use toml::Spanned;

use super::http_rules::{return_target, RawReturn};
use super::problems::Problems;
use super::RouteTargetConfig;
use crate::proxy::condition::{Condition, ConditionalReturn};

/// `{ test = "$http_user_agent ~ ^DavClnt", return = { status = 302, location = "…" } }`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIf {
    test: Option<Spanned<String>>,
    #[serde(rename = "return")]
    answer: Option<Spanned<RawReturn>>,
}

/// The `if` entries of route `key`, or the problems they have (added; those entries dropped).
pub(super) fn returns_if(
    key: &str,
    raw: Option<Vec<Spanned<RawIf>>>,
    problems: &mut Problems<'_>,
) -> Vec<ConditionalReturn> {
    let mut rules = Vec::new();
    for (n, entry) in raw.unwrap_or_default().into_iter().enumerate() {
        let at = format!("{key}.if[{n}]");
        let span = entry.span();
        let entry = entry.into_inner();
        let (Some(test), Some(answer)) = (entry.test, entry.answer) else {
            problems.add(
                at,
                Some(span),
                "needs `test` and `return`, e.g. { test = \"$http_user_agent ~ ^DavClnt\", \
                 return = { status = 302, location = \"/remote.php/webdav/\" } }",
            );
            continue;
        };
        let condition = match Condition::parse(test.get_ref()) {
            Ok(condition) => condition,
            Err(reason) => {
                problems.add(format!("{at}.test"), Some(test.span()), reason);
                continue;
            }
        };
        if let Some(RouteTargetConfig::Return(answer)) =
            return_target(&at, span, Some(answer), false, problems)
        {
            rules.push(ConditionalReturn { condition, answer });
        }
    }
    rules
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::from_toml;

    const HEAD: &str = "[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n\
                        [[site]]\nnames = [\"example.org\"]\n[[site.route]]\nexact = \"/\"\n\
                        proxy = \"http://127.0.0.1:1\"\n";

    #[test]
    fn conditional_returns_are_read_and_bad_ones_named() {
        let config = from_toml(
            &format!(
                "{HEAD}if = [{{ test = '$http_user_agent ~ ^DavClnt', return = {{ status = 302, \
                 location = \"/remote.php/webdav/$is_args$args\" }} }}]\n"
            ),
            Path::new("/etc/certd/certd.toml"),
        )
        .expect("valid");
        let rules = &config.sites[0].routes[0].http.returns_if;
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].condition.source(), "$http_user_agent ~ ^DavClnt");
        assert_eq!(rules[0].answer.status.as_u16(), 302);

        let problems = from_toml(
            &format!(
                "{HEAD}if = [{{ test = '-f $request_filename', return = {{ status = 403 }} }}, \
                 {{ test = '$uri', return = {{ status = 301 }} }}, {{ test = '$uri' }}]\n"
            ),
            Path::new("/etc/certd/certd.toml"),
        )
        .expect_err("invalid")
        .problems;
        let has = |key: &str, fragment: &str| {
            assert!(
                problems
                    .iter()
                    .any(|p| p.key == key && p.line.is_some() && p.reason.contains(fragment)),
                "{key} {fragment:?} not in {problems:#?}"
            );
        };
        has("site[0].route[0].if[0].test", "file tests");
        has("site[0].route[0].if[1].return.location", "missing");
        has("site[0].route[0].if[2]", "needs `test` and `return`");
    }
}
