//! nginx `limit_except`: the access rules a route applies to the request methods it does *not*
//! list. `limit_except GET { deny all; }` lets `GET` (and `HEAD`, which nginx allows with `GET`)
//! through with the route's own policy and refuses every other method with 403.
//!
//! As nginx's `limit_except` block inherits from its location, the policy of the unlisted methods
//! is the route's own with the block's `allow`/`deny` list in place of the route's list (basic
//! auth and `satisfy` stay the route's); it is built when the configuration is loaded
//! (`config::limit_except`), so a request only compares its method here.

use std::sync::Arc;

use hyper::Method;

use super::Policy;

/// The methods nginx's `limit_except` accepts (ngx_http_core_module's `ngx_methods_names`).
const NGINX_METHODS: [&str; 14] = [
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "MKCOL",
    "COPY",
    "MOVE",
    "OPTIONS",
    "PROPFIND",
    "PROPPATCH",
    "LOCK",
    "UNLOCK",
    "PATCH",
];

/// A route's `limit_except`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitExcept {
    /// The listed methods, which keep the route's own policy (`HEAD` added with `GET`).
    methods: Vec<Method>,
    /// What every other method must pass (it may be open: `limit_except GET { allow all; }`).
    pub policy: Arc<Policy>,
}

impl LimitExcept {
    /// The rule for `methods` (names as [`parse_method`] gives them) and `policy`.
    pub fn new(mut methods: Vec<Method>, policy: Arc<Policy>) -> Self {
        // nginx: "Allowing the GET method makes the HEAD method also allowed."
        if methods.contains(&Method::GET) && !methods.contains(&Method::HEAD) {
            methods.push(Method::HEAD);
        }
        Self { methods, policy }
    }

    /// The policy a request with `method` must pass instead of the route's, if any: `None` for a
    /// listed method. A method nginx does not know is never listed, so it is restricted too.
    pub fn policy_for(&self, method: &Method) -> Option<&Policy> {
        (!self.methods.contains(method)).then_some(&*self.policy)
    }
}

/// Reads one method name of a `limit_except` list: one of nginx's, upper case as nginx requires.
pub fn parse_method(name: &str) -> Result<Method, String> {
    if !NGINX_METHODS.contains(&name) {
        return Err(format!(
            "{name:?} is not a method nginx's limit_except takes: one of {}",
            NGINX_METHODS.join(", ")
        ));
    }
    Method::from_bytes(name.as_bytes()).map_err(|error| format!("{name:?}: {error}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::access::{AccessList, Rule};

    fn deny_all() -> Arc<Policy> {
        Arc::new(Policy {
            rules: AccessList::new(vec![Rule::parse("deny all").unwrap()]),
            ..Policy::default()
        })
    }

    #[test]
    fn listed_methods_keep_the_routes_policy_and_get_implies_head() {
        let limit = LimitExcept::new(vec![Method::GET], deny_all());
        assert!(limit.policy_for(&Method::GET).is_none());
        assert!(limit.policy_for(&Method::HEAD).is_none());
        assert_eq!(limit.policy_for(&Method::POST), Some(&*deny_all()));
        assert!(limit.policy_for(&Method::DELETE).is_some());
        let odd = Method::from_bytes(b"BREW").unwrap();
        assert!(
            limit.policy_for(&odd).is_some(),
            "an unknown method is restricted"
        );
    }

    #[test]
    fn head_alone_does_not_allow_get() {
        let limit = LimitExcept::new(vec![Method::POST, Method::HEAD], deny_all());
        assert!(limit.policy_for(&Method::POST).is_none());
        assert!(limit.policy_for(&Method::HEAD).is_none());
        assert!(limit.policy_for(&Method::GET).is_some());
    }

    #[test]
    fn method_names_are_nginxs() {
        assert_eq!(parse_method("PROPFIND").unwrap().as_str(), "PROPFIND");
        assert!(parse_method("get").unwrap_err().contains("not a method"));
        assert!(parse_method("BREW").is_err());
    }
}
