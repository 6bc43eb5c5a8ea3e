//! Validation of a route's `auth_request` (nginx `auth_request /uri`): the URI of the same site
//! whose subrequest decides whether a request goes on (see [`crate::proxy`]'s `auth_request`), and
//! `internal` (nginx `internal`: a route only internal requests reach).

use toml::Spanned;

use super::problems::Problems;

/// The route `key`'s `auth_request` URI; `None` when unset, `"off"` or unusable (reported).
pub(super) fn auth_request(
    key: &str,
    raw: Option<Spanned<String>>,
    problems: &mut Problems<'_>,
) -> Option<String> {
    let raw = raw?;
    let key = format!("{key}.auth_request");
    let uri = raw.get_ref();
    if uri == "off" {
        return None;
    }
    if !uri.starts_with('/') || uri.contains(['?', '#', '$']) {
        problems.add(
            key,
            Some(raw.span()),
            format!(
                "{uri:?} must be a path of this site, such as \"/auth\" (no query, no \
                 variables), or \"off\""
            ),
        );
        return None;
    }
    match crate::proxy::normalise_path(uri) {
        Ok(path) if path == *uri => Some(path),
        Ok(path) => {
            problems.add(
                key,
                Some(raw.span()),
                format!("{uri:?} is not a normalised path (certd would ask for {path:?})"),
            );
            None
        }
        Err(reason) => {
            problems.add(key, Some(raw.span()), reason);
            None
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    fn load(route: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
        let text = format!(
            "[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n[[site]]\nnames = \
             [\"example.org\"]\n[[site.route]]\npath = \"/\"\nproxy = \"http://127.0.0.1:9000\"\n\
             {route}\n"
        );
        crate::config::from_toml(&text, Path::new("/etc/certd/certd.toml"))
    }

    #[test]
    fn auth_request_takes_a_path_of_the_site_and_internal_a_bool() {
        let config = load("auth_request = \"/check-auth\"\ninternal = true").unwrap();
        let route = &config.sites[0].routes[0];
        assert_eq!(route.auth_request.as_deref(), Some("/check-auth"));
        assert!(route.internal);
        let config = load("auth_request = \"off\"").unwrap();
        assert_eq!(config.sites[0].routes[0].auth_request, None);
        assert!(!config.sites[0].routes[0].internal);
        for bad in ["auth", "/auth?x=1", "/$uri", "/a/../b"] {
            let err = load(&format!("auth_request = {bad:?}")).unwrap_err();
            assert_eq!(err.problems.len(), 1, "{bad}: {err}");
            assert_eq!(
                err.problems[0].key, "site[0].route[0].auth_request",
                "{bad}"
            );
        }
    }
}
