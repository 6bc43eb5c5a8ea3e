//! Validation of a route's `limit_except` table (nginx `limit_except METHOD ... { allow/deny }`):
//! the methods that keep the route's own access policy, and the `access` list every other method
//! must pass.
//!
//! ```toml
//! [[site.route]]
//! exact = "/api/v1/videos/upload"
//! proxy = "http://127.0.0.1:9000"
//! limit_except = { methods = ["POST"], access = ["deny all"] }   # GET, PUT, ... → 403
//! ```
//!
//! The policy of the unlisted methods is built here, from the route's access scope with the
//! table's list in place of the route's (see [`crate::access::limit_except`]).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use toml::Spanned;

use super::access::AccessScope;
use super::problems::Problems;
use crate::access::limit_except::{parse_method, LimitExcept};

/// `limit_except = { methods = [...], access = [...] }` on a route.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimitExcept {
    pub(super) methods: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) access: Option<Spanned<Vec<Spanned<String>>>>,
}

/// The route `key`'s `limit_except`, whose own access keys are `scope`; `None` when it has none
/// or it is unusable (reported).
pub(super) fn limit_except(
    key: &str,
    raw: Option<Spanned<RawLimitExcept>>,
    scope: &AccessScope,
    folder: &Path,
    reported: &mut HashSet<String>,
    problems: &mut Problems<'_>,
) -> Option<Arc<LimitExcept>> {
    let raw = raw?;
    let key = format!("{key}.limit_except");
    let span = raw.span();
    let raw = raw.into_inner();
    let Some(listed) = raw.methods else {
        problems.add(
            format!("{key}.methods"),
            Some(span),
            "is required: the methods that keep the route's access rules, e.g. [\"GET\"]",
        );
        return None;
    };
    let Some(access) = raw.access else {
        problems.add(
            format!("{key}.access"),
            Some(span),
            "is required: the allow/deny rules of the other methods, e.g. [\"deny all\"] (an \
             empty limit_except changes nothing)",
        );
        return None;
    };
    let list_span = listed.span();
    let listed = listed.into_inner();
    if listed.is_empty() {
        problems.add(
            format!("{key}.methods"),
            Some(list_span),
            "must name at least one method",
        );
        return None;
    }
    let mut methods = Vec::new();
    for (i, name) in listed.into_iter().enumerate() {
        match parse_method(name.get_ref()) {
            Ok(method) => methods.push(method),
            Err(reason) => problems.add(format!("{key}.methods[{i}]"), Some(name.span()), reason),
        }
    }
    if methods.is_empty() {
        // Each name is reported above.
        return None;
    }
    let limited = scope.limited(&key, Some(access), folder, problems);
    // `None` is an open policy (or a problem already reported): nothing is refused then.
    let policy = limited.policy(reported, problems).unwrap_or_default();
    Some(Arc::new(LimitExcept::new(methods, policy)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    use hyper::Method;

    fn load(route: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
        let text = format!(
            "[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n[[site]]\nnames = \
             [\"example.org\"]\n[[site.route]]\npath = \"/\"\nproxy = \"http://127.0.0.1:9000\"\n\
             {route}\n"
        );
        crate::config::from_toml(&text, Path::new("/etc/certd/certd.toml"))
    }

    #[test]
    fn unlisted_methods_get_the_tables_rules_and_keep_the_routes_auth() {
        let config = load(
            "limit_except = { methods = [\"GET\"], access = [\"allow 10.0.0.0/8\", \"deny all\"] }",
        )
        .unwrap();
        let route = &config.sites[0].routes[0];
        assert!(route.access.is_none(), "the route itself stays open");
        let limit = route.limit_except.as_deref().unwrap();
        assert!(limit.policy_for(&Method::GET).is_none());
        assert!(limit.policy_for(&Method::HEAD).is_none());
        let policy = limit.policy_for(&Method::POST).unwrap();
        let verdict = |ip: &str| policy.rules.verdict(ip.parse().unwrap());
        assert_eq!(verdict("10.1.2.3"), crate::access::Verdict::Allowed);
        assert_eq!(verdict("192.0.2.1"), crate::access::Verdict::Denied);
        // Without the key, every method has the route's policy.
        assert!(load("").unwrap().sites[0].routes[0].limit_except.is_none());
    }

    #[test]
    fn problems_name_the_key() {
        let problem = |route: &str| {
            let err = load(route).unwrap_err();
            assert_eq!(err.problems.len(), 1, "{err}");
            let p = &err.problems[0];
            (p.key.clone(), p.reason.clone())
        };
        let (key, why) = problem("limit_except = { methods = [\"get\"], access = [\"deny all\"] }");
        assert_eq!(key, "site[0].route[0].limit_except.methods[0]");
        assert!(why.contains("not a method"), "{why}");
        let (key, _) = problem("limit_except = { access = [\"deny all\"] }");
        assert_eq!(key, "site[0].route[0].limit_except.methods");
        let (key, why) = problem("limit_except = { methods = [\"GET\"] }");
        assert_eq!(key, "site[0].route[0].limit_except.access");
        assert!(why.contains("required"), "{why}");
        let (key, _) =
            problem("limit_except = { methods = [\"GET\"], access = [\"deny everyone\"] }");
        assert_eq!(key, "site[0].route[0].limit_except.access[0]");
        let (key, _) = problem("limit_except = { methods = [], access = [\"deny all\"] }");
        assert_eq!(key, "site[0].route[0].limit_except.methods");
        let err =
            load("limit_except = { methods = [\"GET\"], access = [], deny = 1 }").unwrap_err();
        assert!(err.to_string().contains("deny"), "{err}");
    }
}
