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

use super::raw::RawRoute;
use super::validate::Problems;
use super::RouteConfig;
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

/// The access keys of a site and of each of its routes, taken out of the raw routes before they are
/// validated, to be attached to the validated routes by [`RouteAccess::attach`].
pub(super) struct RouteAccess {
    site: Level,
    /// Each raw route's path (if it has one) and its keys, in file order.
    routes: Vec<(Option<String>, Level)>,
}

/// Validates the site's access keys and takes those of each of its routes out of `routes`.
pub(super) fn take_route_keys(
    site: usize,
    keys: AccessKeys,
    routes: &mut [Spanned<RawRoute>],
    folder: &Path,
    problems: &mut Problems<'_>,
) -> RouteAccess {
    let site_level = level(&format!("site[{site}]"), keys, folder, problems);
    let routes = routes
        .iter_mut()
        .enumerate()
        .map(|(i, route)| {
            let route = route.get_mut();
            let keys = AccessKeys {
                access: route.access.take(),
                auth_basic: route.auth_basic.take(),
                auth_basic_user_file: route.auth_basic_user_file.take(),
                satisfy: route.satisfy.take(),
            };
            let path = route.path.as_ref().map(|path| path.get_ref().clone());
            let level = level(&format!("site[{site}].route[{i}]"), keys, folder, problems);
            (path, level)
        })
        .collect();
    RouteAccess {
        site: site_level,
        routes,
    }
}

impl RouteAccess {
    /// Sets each validated route's policy: its own keys, then the site's for those it leaves out.
    pub(super) fn attach(self, routes: &mut [RouteConfig], problems: &mut Problems<'_>) {
        // A site-level mistake is reported once, not once per route that inherits it.
        let mut reported = HashSet::new();
        for route in routes.iter_mut() {
            let own = self
                .routes
                .iter()
                .find(|(path, _)| path.as_deref() == Some(route.path.as_str()))
                .map(|(_, level)| level.clone())
                .unwrap_or_default();
            match effective(&self.site, own) {
                Ok(policy) if policy.is_open() => route.access = None,
                Ok(policy) => route.access = Some(Arc::new(policy)),
                Err((key, span, reason)) => {
                    if reported.insert(key.clone()) {
                        problems.add(key, Some(span), reason);
                    }
                }
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
