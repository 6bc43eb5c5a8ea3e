//! Validation of the access keys of a `[[site]]` and its `[[site.route]]`s: `access` (nginx
//! `allow`/`deny`), `auth_basic`, `auth_basic_user_file` and `satisfy`, and their inheritance.
//!
//! As nginx inherits each of these directives from `server` into a `location` that does not set its
//! own, a route takes each key it leaves out from its site: `access` as a whole list (a route's own
//! list replaces the site's, `access = []` clears it), `auth_basic` (`"off"` turns inherited auth off),
//! `auth_basic_user_file` and `satisfy` one by one. htpasswd files are read here, so a bad line is a
//! configuration error (naming the file and line) at load and at SIGHUP, never a surprise later.

use std::collections::HashSet;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use toml::Spanned;

use super::problems::Problems;
use super::raw::RawRoute;
use crate::access::{AccessList, BasicAuth, Htpasswd, Policy, Rule, Satisfy};

/// The access keys of one table, as written.
pub(super) struct AccessKeys {
    pub(super) access: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) auth_basic: Option<Spanned<String>>,
    pub(super) auth_basic_user_file: Option<Spanned<String>>,
    pub(super) satisfy: Option<Spanned<String>>,
}

/// A key that was set: its value, its dotted name and where it is.
#[derive(Clone)]
struct Set<T> {
    value: T,
    key: String,
    span: Range<usize>,
}

/// The validated access keys of one table (a site or a route); `None`: not set there.
#[derive(Clone, Default)]
struct Level {
    rules: Option<AccessList>,
    /// `Some(None)` is `auth_basic = "off"`.
    realm: Option<Set<Option<String>>>,
    /// `Some(None)`: set, but the file could not be used (already reported).
    users: Option<Set<Option<Arc<Htpasswd>>>>,
    satisfy: Option<Satisfy>,
}

/// The access keys in force at one level of the configuration: a site's own, or a route's merged
/// over those of the site or route it is nested in (as nginx inherits from `server` into `location`,
/// and from a `location` into the locations nested in it).
#[derive(Clone, Default)]
pub(super) struct AccessScope(Level);

/// Validates a site's access keys: the scope its routes inherit from.
pub(super) fn site_scope(
    site: usize,
    keys: AccessKeys,
    folder: &Path,
    problems: &mut Problems<'_>,
) -> AccessScope {
    AccessScope(level(&format!("site[{site}]"), keys, folder, problems))
}

impl AccessScope {
    /// The scope of the route `key`: its own keys (taken out of `route`) over this one's, each key
    /// on its own (`access` as a whole list).
    pub(super) fn route(
        &self,
        key: &str,
        route: &mut RawRoute,
        folder: &Path,
        problems: &mut Problems<'_>,
    ) -> AccessScope {
        let keys = AccessKeys {
            access: route.access.take(),
            auth_basic: route.auth_basic.take(),
            auth_basic_user_file: route.auth_basic_user_file.take(),
            satisfy: route.satisfy.take(),
        };
        let own = level(key, keys, folder, problems);
        let inherited = &self.0;
        AccessScope(Level {
            rules: own.rules.or_else(|| inherited.rules.clone()),
            realm: own.realm.or_else(|| inherited.realm.clone()),
            users: own.users.or_else(|| inherited.users.clone()),
            satisfy: own.satisfy.or(inherited.satisfy),
        })
    }

    /// The scope of a route's `limit_except` table `key`: its `access` list in place of the
    /// route's, the route's basic auth and `satisfy` kept (nginx's `limit_except` block inherits
    /// them from its location).
    pub(super) fn limited(
        &self,
        key: &str,
        access: Option<Spanned<Vec<Spanned<String>>>>,
        folder: &Path,
        problems: &mut Problems<'_>,
    ) -> AccessScope {
        let keys = AccessKeys {
            access,
            auth_basic: None,
            auth_basic_user_file: None,
            satisfy: None,
        };
        let own = level(key, keys, folder, problems);
        AccessScope(Level {
            rules: own.rules.or_else(|| self.0.rules.clone()),
            ..self.0.clone()
        })
    }

    /// The policy of a route with this scope; `None` when it is open to everyone (or the keys are
    /// unusable, which is reported once per key in `reported`).
    pub(super) fn policy(
        &self,
        reported: &mut HashSet<String>,
        problems: &mut Problems<'_>,
    ) -> Option<Arc<Policy>> {
        match effective(&Level::default(), self.0.clone()) {
            Ok(policy) if policy.is_open() => None,
            Ok(policy) => Some(Arc::new(policy)),
            Err((key, span, reason)) => {
                // A site-level mistake is reported once, not once per route that inherits it.
                if reported.insert(key.clone()) {
                    problems.add(key, Some(span), reason);
                }
                None
            }
        }
    }
}

/// A route's policy from its own keys and its site's.
fn effective(site: &Level, own: Level) -> Result<Policy, (String, Range<usize>, String)> {
    let rules = own.rules.or_else(|| site.rules.clone()).unwrap_or_default();
    let realm = own.realm.or_else(|| site.realm.clone());
    let users = own.users.or_else(|| site.users.clone());
    let satisfy = own.satisfy.or(site.satisfy).unwrap_or_default();
    let auth = match (realm, users) {
        (Some(realm), Some(users)) => match (realm.value, users.value) {
            (Some(realm), Some(users)) => Some(BasicAuth { realm, users }),
            // Off, or a file already reported as unusable.
            _ => None,
        },
        (Some(realm), None) => {
            match realm.value {
                Some(_) => return Err((
                    realm.key,
                    realm.span,
                    "needs `auth_basic_user_file = \"/path/to/htpasswd\"` (on the route or its \
                     site): without users, certd would refuse every password"
                        .into(),
                )),
                None => None,
            }
        }
        (None, Some(users)) => {
            return Err((
                users.key,
                users.span,
                "does nothing without `auth_basic = \"Realm\"` (on the route or its site)".into(),
            ))
        }
        (None, None) => None,
    };
    Ok(Policy {
        rules,
        auth,
        satisfy,
    })
}

/// Validates the access keys of the table `prefix` (`site[0]`, `site[0].route[2]`).
fn level(prefix: &str, keys: AccessKeys, folder: &Path, problems: &mut Problems<'_>) -> Level {
    let rules = keys.access.map(|list| {
        let mut rules = Vec::new();
        for (i, entry) in list.into_inner().into_iter().enumerate() {
            match Rule::parse(entry.get_ref()) {
                Ok(rule) => rules.push(rule),
                Err(reason) => {
                    problems.add(format!("{prefix}.access[{i}]"), Some(entry.span()), reason)
                }
            }
        }
        AccessList::new(rules)
    });
    let realm = keys.auth_basic.map(|realm| {
        let key = format!("{prefix}.auth_basic");
        let span = realm.span();
        let text = realm.into_inner();
        let value = if text == "off" {
            None
        } else if text.is_empty() || !text.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
            problems.add(
                key.clone(),
                Some(span.clone()),
                format!(
                    "{text:?}: the realm must be printable ASCII text, e.g. \"Staff only\" \
                     (or \"off\" for no basic auth)"
                ),
            );
            None
        } else {
            Some(text)
        };
        Set { value, key, span }
    });
    let users = keys.auth_basic_user_file.map(|file| {
        let key = format!("{prefix}.auth_basic_user_file");
        let span = file.span();
        let path = folder.join(file.get_ref());
        let value = match Htpasswd::load(&path) {
            Ok(users) => Some(Arc::new(users)),
            Err(errors) => {
                for error in errors {
                    problems.add(key.clone(), Some(span.clone()), error.to_string());
                }
                None
            }
        };
        Set { value, key, span }
    });
    let satisfy = keys
        .satisfy
        .and_then(|satisfy| match satisfy.get_ref().as_str() {
            "all" => Some(Satisfy::All),
            "any" => Some(Satisfy::Any),
            other => {
                problems.add(
                    format!("{prefix}.satisfy"),
                    Some(satisfy.span()),
                    format!("{other:?} must be \"all\" (the default) or \"any\""),
                );
                None
            }
        });
    Level {
        rules,
        realm,
        users,
        satisfy,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::PathBuf;

    use super::super::{from_toml, Config, ConfigProblem};
    use crate::access::{Outcome, Satisfy};

    /// A folder with an htpasswd file `users` (alice: "password", as `{SHA}`), and a config file
    /// path in it.
    fn folder() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("users"),
            "alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n",
        )
        .unwrap();
        let path = dir.path().join("certd.toml");
        (dir, path)
    }

    fn config(site_keys: &str, routes: &str) -> String {
        format!(
            "[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n[[site]]\n\
             names = [\"example.org\"]\n{site_keys}\n{routes}"
        )
    }

    fn parse(text: &str, path: &std::path::Path) -> Config {
        match from_toml(text, path) {
            Ok(config) => config,
            Err(err) => panic!("expected a valid config, got:\n{err}"),
        }
    }

    fn problems(text: &str, path: &std::path::Path) -> Vec<ConfigProblem> {
        match from_toml(text, path) {
            Ok(_) => panic!("expected problems"),
            Err(err) => err.problems,
        }
    }

    const ROUTES: &str = "[[site.route]]\npath = \"/\"\nproxy = \"http://127.0.0.1:8080\"\n\
                          [[site.route]]\npath = \"/admin\"\nproxy = \"http://127.0.0.1:8081\"\n\
                          access = [\"allow 10.0.0.0/8\", \"deny all\"]\nsatisfy = \"any\"\n\
                          [[site.route]]\npath = \"/open\"\nproxy = \"http://127.0.0.1:8082\"\n\
                          auth_basic = \"off\"\naccess = []\n";

    #[tokio::test]
    async fn routes_inherit_each_key_from_their_site_unless_they_set_it() {
        let (_dir, path) = folder();
        let site = "access = [\"deny 192.0.2.0/24\"]\nauth_basic = \"Staff\"\n\
                    auth_basic_user_file = \"users\"";
        let config = parse(&config(site, ROUTES), &path);
        let routes = &config.sites[0].routes;
        let root = routes[0].access.as_deref().unwrap();
        let admin = routes[1].access.as_deref().unwrap();
        assert!(routes[2].access.is_none(), "auth off and rules cleared");

        // `/` has the site's rules and auth, satisfy all.
        assert_eq!(root.satisfy, Satisfy::All);
        assert_eq!(root.auth.as_ref().unwrap().realm, "Staff");
        let guard = crate::access::Guard::default();
        let none = hyper::HeaderMap::new();
        let denied = "192.0.2.7".parse().unwrap();
        assert_eq!(guard.check(root, &none, denied).await, Outcome::Forbidden);
        // `/admin` replaced the rules, kept the site's auth, and satisfies either.
        assert_eq!(admin.satisfy, Satisfy::Any);
        assert!(admin.auth.is_some());
        let inside = "10.1.1.1".parse().unwrap();
        assert_eq!(guard.check(admin, &none, inside).await, Outcome::Allowed);
        assert_eq!(
            guard.check(admin, &none, denied).await,
            Outcome::Unauthorized("Staff".into())
        );
    }

    #[tokio::test]
    async fn nested_routes_inherit_from_the_route_they_are_in() {
        // nginx: a location nested in `location /admin { deny all; }` is denied too, unless it says
        // otherwise; an open nested route would be a hole in the parent's rule.
        let (_dir, path) = folder();
        let routes = "[[site.route]]\npath = \"/admin/\"\nproxy = \"http://127.0.0.1:8081\"\n\
                      access = [\"deny all\"]\n\
                      [[site.route.route]]\nregex = '\\.json$'\nproxy = \"http://127.0.0.1:8082\"\n\
                      [[site.route.route]]\npath = \"/admin/public/\"\n\
                      proxy = \"http://127.0.0.1:8083\"\naccess = [\"allow all\"]\n";
        let config = parse(&config("", routes), &path);
        let admin = &config.sites[0].routes[0];
        let json = admin.routes[0].access.as_deref().expect("inherited deny");
        let guard = crate::access::Guard::default();
        let none = hyper::HeaderMap::new();
        let client = "192.0.2.7".parse().unwrap();
        assert_eq!(guard.check(json, &none, client).await, Outcome::Forbidden);
        let public = admin.routes[1].access.as_deref();
        match public {
            None => {}
            Some(policy) => assert_eq!(guard.check(policy, &none, client).await, Outcome::Allowed),
        }
    }

    #[test]
    fn routes_without_access_keys_stay_open() {
        let (_dir, path) = folder();
        let config = parse(&config("", ROUTES), &path);
        let routes = &config.sites[0].routes;
        assert!(routes[0].access.is_none());
        assert!(routes[1].access.is_some());
        assert!(routes[2].access.is_none());
    }

    #[test]
    fn bad_entries_name_key_index_and_line() {
        let (_dir, path) = folder();
        let text = config(
            "",
            "[[site.route]]\npath = \"/\"\nproxy = \"http://127.0.0.1:8080\"\n\
             access = [\"allow 10.0.0.0/8\", \"allow 10.0.0.0/40\", \"permit all\"]\n\
             satisfy = \"some\"\n",
        );
        let found = problems(&text, &path);
        let keys: Vec<(&str, Option<usize>)> = found
            .iter()
            .map(|problem| (problem.key.as_str(), problem.line))
            .collect();
        assert_eq!(
            keys,
            [
                ("site[0].route[0].access[1]", Some(10)),
                ("site[0].route[0].access[2]", Some(10)),
                ("site[0].route[0].satisfy", Some(11)),
            ],
            "{found:#?}"
        );
        assert!(found[2].reason.contains("\"all\""), "{found:#?}");
    }

    #[test]
    fn htpasswd_problems_name_the_file_and_its_line() {
        let (dir, path) = folder();
        std::fs::write(
            dir.path().join("bad"),
            "ok:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\nold:abJnggxhB/yWI\n",
        )
        .unwrap();
        let site = "auth_basic = \"Staff\"\nauth_basic_user_file = \"bad\"";
        let found = problems(&config(site, ROUTES), &path);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].key, "site[0].auth_basic_user_file");
        assert_eq!(found[0].line, Some(7));
        let file = dir.path().join("bad");
        assert!(
            found[0]
                .reason
                .starts_with(&format!("{}:2: user `old`: crypt(3)", file.display())),
            "{found:#?}"
        );

        let site = "auth_basic = \"Staff\"\nauth_basic_user_file = \"missing\"";
        let found = problems(&config(site, ROUTES), &path);
        assert_eq!(found[0].key, "site[0].auth_basic_user_file");
        assert!(
            found[0].reason.contains("cannot read the file"),
            "{found:#?}"
        );
    }

    #[test]
    fn auth_needs_both_a_realm_and_users() {
        let (_dir, path) = folder();
        // Reported once, at the site's key, although three routes inherit it.
        let found = problems(&config("auth_basic = \"Staff\"", ROUTES), &path);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].key, "site[0].auth_basic");
        assert!(found[0].reason.contains("auth_basic_user_file"));

        let found = problems(&config("auth_basic_user_file = \"users\"", ROUTES), &path);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].key, "site[0].auth_basic_user_file");

        let found = problems(&config("auth_basic = \"bad\\nrealm\"", ROUTES), &path);
        assert_eq!(found[0].key, "site[0].auth_basic");
        assert!(found[0].reason.contains("printable"), "{found:#?}");
    }
}
