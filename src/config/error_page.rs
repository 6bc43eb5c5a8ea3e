//! Validation of `index` (nginx `index`), `[[site.error_page]]` / `[[site.route.error_page]]`
//! (nginx `error_page`) and `intercept_errors` (nginx `proxy_intercept_errors` /
//! `fastcgi_intercept_errors`).
//!
//! ```toml
//! index = ["index.html", "index.htm"]     # on a site or a root/alias route; default ["index.html"]
//!
//! [[site.error_page]]
//! codes = [500, 502, 503, 504]
//! target = "/50x.html"                    # a URI, served through the site's routes, or "@name"
//! status = 200                            # optional: the answer's status; "target": the target's
//! ```

use toml::Spanned;

use super::location::NamedReference;
use super::problems::Problems;
use crate::proxy::error_page::{ErrorPage, ErrorStatus, ErrorTarget};

/// One `[[site.error_page]]` as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawErrorPage {
    pub(super) codes: Option<Spanned<Vec<Spanned<i64>>>>,
    pub(super) target: Option<Spanned<String>>,
    pub(super) status: Option<Spanned<RawErrorStatus>>,
}

/// `status = 200` or `status = "target"`.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
pub(super) enum RawErrorStatus {
    Code(i64),
    Text(String),
}

/// An `index` list at `key`: at least one plain file name (no `/`, not starting with `.`).
pub(super) fn index(
    key: &str,
    raw: Option<Spanned<Vec<Spanned<String>>>>,
    problems: &mut Problems<'_>,
) -> Option<Vec<String>> {
    let raw = raw?;
    if raw.get_ref().is_empty() {
        problems.add(
            key,
            Some(raw.span()),
            "is empty: list at least one file name, e.g. [\"index.html\"]",
        );
        return None;
    }
    let mut names = Vec::new();
    let mut valid = true;
    let last = raw.get_ref().len() - 1;
    for (i, name) in raw.into_inner().into_iter().enumerate() {
        let text = name.get_ref();
        let reason = if i == last && text.starts_with('/') {
            // nginx's absolute last index: a URI the folder request continues with.
            uri_entry(text)
        } else if text.is_empty() {
            Some("is empty")
        } else if text.starts_with('/') {
            Some("is a URI: only the last entry may be one (nginx's absolute index)")
        } else if text.contains(['/', '\\']) {
            Some("names a file in the requested folder: it cannot contain `/`")
        } else if text.starts_with('.') {
            Some("starts with `.`: dotfiles are never served as a folder's index")
        } else if text.contains('$') {
            Some("variables are not supported in index names")
        } else {
            None
        };
        match reason {
            Some(reason) => {
                problems.add(
                    format!("{key}[{i}]"),
                    Some(name.span()),
                    format!("{text:?} {reason}"),
                );
                valid = false;
            }
            None => names.push(name.into_inner()),
        }
    }
    valid.then_some(names)
}

/// Why the last `index` entry `text`, a URI starting with `/`, cannot be one: `None` when it can
/// (variables `$uri` and `$request_uri` only, no dot segments).
fn uri_entry(text: &str) -> Option<&'static str> {
    let rest = text.replace("$request_uri", "").replace("$uri", "");
    if rest.contains('$') {
        Some("only the variables `$uri` and `$request_uri` are supported in an index URI")
    } else if rest.contains('?') {
        Some("a query in an index URI is not supported (the request's own query is kept)")
    } else if rest
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        Some("has a `.` or `..` segment")
    } else {
        None
    }
}

/// The `error_page` tables at `key` (`site[0].error_page`, `site[0].route[1].error_page`).
pub(super) fn error_pages(
    key: &str,
    raw: Option<Vec<Spanned<RawErrorPage>>>,
    references: &mut Vec<NamedReference>,
    problems: &mut Problems<'_>,
) -> Option<Vec<ErrorPage>> {
    let raw = raw?;
    let mut pages = Vec::with_capacity(raw.len());
    for (i, page) in raw.into_iter().enumerate() {
        let key = format!("{key}[{i}]");
        let table = page.span();
        let page = page.into_inner();
        let codes = match page.codes {
            None => {
                problems.add(
                    format!("{key}.codes"),
                    Some(table.clone()),
                    "missing: list the statuses it replaces, e.g. codes = [502, 503, 504]",
                );
                None
            }
            Some(codes) if codes.get_ref().is_empty() => {
                problems.add(
                    format!("{key}.codes"),
                    Some(codes.span()),
                    "is empty: list at least one status",
                );
                None
            }
            Some(codes) => {
                let mut valid = Vec::new();
                let mut ok = true;
                for (j, code) in codes.into_inner().into_iter().enumerate() {
                    match u16::try_from(*code.get_ref()) {
                        Ok(code) if (300..=599).contains(&code) => valid.push(code),
                        _ => {
                            problems.add(
                                format!("{key}.codes[{j}]"),
                                Some(code.span()),
                                format!(
                                    "{} is not a status an error page can replace (300 to 599)",
                                    code.get_ref()
                                ),
                            );
                            ok = false;
                        }
                    }
                }
                ok.then_some(valid)
            }
        };
        let target = match page.target {
            None => {
                problems.add(
                    format!("{key}.target"),
                    Some(table.clone()),
                    "missing: a URI such as \"/50x.html\" or a named route such as \"@fallback\"",
                );
                None
            }
            Some(target) => match error_target(target.get_ref()) {
                Ok(parsed) => {
                    if let ErrorTarget::Named(name) = &parsed {
                        references.push(NamedReference {
                            key: format!("{key}.target"),
                            span: target.span(),
                            name: name.clone(),
                        });
                    }
                    Some(parsed)
                }
                Err(reason) => {
                    problems.add(format!("{key}.target"), Some(target.span()), reason);
                    None
                }
            },
        };
        let status = match page.status {
            None => Some(ErrorStatus::Original),
            Some(status) => {
                let parsed = match status.get_ref() {
                    RawErrorStatus::Text(text) if text == "target" => Ok(ErrorStatus::Target),
                    RawErrorStatus::Text(text) => Err(format!(
                        "{text:?}: write a status such as 200, or \"target\" for the target's own"
                    )),
                    RawErrorStatus::Code(code) => u16::try_from(*code)
                        .ok()
                        .filter(|code| (200..=599).contains(code))
                        .and_then(|code| hyper::StatusCode::from_u16(code).ok())
                        .map(ErrorStatus::Code)
                        .ok_or_else(|| format!("{code} is not a status (200 to 599)")),
                };
                match parsed {
                    Ok(status) => Some(status),
                    Err(reason) => {
                        problems.add(format!("{key}.status"), Some(status.span()), reason);
                        None
                    }
                }
            }
        };
        if let (Some(codes), Some(target), Some(status)) = (codes, target, status) {
            pages.push(ErrorPage {
                codes,
                target,
                status,
            });
        }
    }
    Some(pages)
}

/// An error page's `target`: `/uri[?query]` or `@name`.
fn error_target(text: &str) -> Result<ErrorTarget, String> {
    if let Some(name) = text.strip_prefix('@') {
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(format!("{text:?} is not a route name"));
        }
        return Ok(ErrorTarget::Named(text.to_owned()));
    }
    if !text.starts_with('/') {
        return Err(format!(
            "{text:?}: write a URI on this site starting with `/` (e.g. \"/50x.html\") or a \
             named route (\"@fallback\")"
        ));
    }
    if text.contains('$') {
        return Err(format!(
            "{text:?}: variables are not supported in error page targets"
        ));
    }
    let (path, query) = match text.split_once('?') {
        Some((path, query)) => (path, Some(query.to_owned())),
        None => (text, None),
    };
    let normal = crate::proxy::normalise_path(path)
        .map_err(|refused| format!("{text:?} is not a usable path: {refused}"))?;
    Ok(ErrorTarget::Uri {
        path: normal,
        query,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    use super::super::{from_toml, Config};
    use super::*;

    const HEAD: &str = "[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n\
                        [[site]]\nnames = [\"example.org\"]\n";

    fn parse(site: &str) -> Result<Config, Vec<(String, String)>> {
        from_toml(&format!("{HEAD}{site}"), Path::new("/etc/certd/certd.toml")).map_err(|err| {
            err.problems
                .into_iter()
                .map(|problem| (problem.key, problem.reason))
                .collect()
        })
    }

    #[test]
    fn index_and_error_pages_are_inherited_like_nginx_and_a_route_list_replaces_the_sites() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().display();
        let config = parse(&format!(
            r#"
index = ["index.htm", "index.html"]
[[site.error_page]]
codes = [500, 502]
target = "/50x.html"
[[site.error_page]]
codes = [404]
target = "@missing"
status = "target"
[[site.route]]
path = "/"
root = "{root}"
[[site.route]]
path = "/app/"
proxy = "http://127.0.0.1:8080"
intercept_errors = true
  [[site.route.error_page]]
  codes = [404]
  target = "/404.html"
  status = 200
  [[site.route.route]]
  path = "/app/static/"
  root = "{root}"
  index = ["start.html"]
[[site.route]]
name = "@missing"
root = "{root}"
"#
        ))
        .unwrap();
        let site = &config.sites[0];
        assert_eq!(site.error_page.len(), 2);
        assert_eq!(site.error_page[1].status, ErrorStatus::Target);
        let [files, app, named] = &site.routes[..] else {
            panic!("three routes: {:?}", site.routes);
        };
        assert_eq!(files.index, ["index.htm", "index.html"]);
        assert_eq!(files.error_page, site.error_page);
        assert!(!files.intercept_errors);
        assert!(app.intercept_errors);
        assert_eq!(app.error_page.len(), 1);
        assert_eq!(
            app.error_page[0].status,
            ErrorStatus::Code(hyper::StatusCode::OK)
        );
        let nested = &app.routes[0];
        assert_eq!(nested.index, ["start.html"]);
        assert_eq!(nested.error_page, app.error_page, "nested routes inherit");
        assert_eq!(named.index, ["index.htm", "index.html"]);

        let plain = parse(&format!(
            "[[site.route]]\npath = \"/\"\nroot = \"{root}\"\n"
        ))
        .unwrap();
        assert_eq!(plain.sites[0].routes[0].index, ["index.html"]);
        assert!(plain.sites[0].error_page.is_empty());
    }

    #[test]
    fn bad_index_names_and_error_pages_are_refused_with_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().display();
        let problems = parse(&format!(
            r#"
index = ["../x.html", ".index.html", "ok.html"]
[[site.error_page]]
codes = [200, 404]
target = "50x.html"
status = "same"
[[site.error_page]]
target = "@nowhere"
[[site.route]]
path = "/"
proxy = "http://127.0.0.1:8080"
index = ["index.html"]
[[site.route]]
path = "/files/"
root = "{root}"
index = []
intercept_errors = true
"#
        ))
        .unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "site[0].index[0]",
                "site[0].index[1]",
                "site[0].error_page[0].codes[0]",
                "site[0].error_page[0].target",
                "site[0].error_page[0].status",
                "site[0].error_page[1].codes",
                "site[0].error_page[1].target",
                "site[0].route[0].index",
                "site[0].route[1].index",
                "site[0].route[1].intercept_errors",
            ],
            "{problems:#?}"
        );
        assert!(
            problems[0].1.contains("cannot contain `/`"),
            "{}",
            problems[0].1
        );
        assert!(problems.iter().any(|(key, reason)| {
            key == "site[0].error_page[1].target" && reason.contains("names no route")
        }));
    }

    #[test]
    fn targets_are_uris_or_route_names() {
        assert_eq!(
            error_target("/50x.html?from=error").unwrap(),
            ErrorTarget::Uri {
                path: "/50x.html".into(),
                query: Some("from=error".into())
            }
        );
        assert_eq!(
            error_target("@app").unwrap(),
            ErrorTarget::Named("@app".into())
        );
        for bad in ["50x.html", "@", "/$uri", "https://other.test/"] {
            assert!(error_target(bad).is_err(), "{bad}");
        }
    }
}
