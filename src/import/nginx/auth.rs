//! nginx `auth_request` in a server block: which URIs its locations ask before answering, what
//! the location answering that subrequest may say about it (`proxy_pass_request_body off`,
//! `proxy_set_header Content-Length ""`, which certd's bodiless subrequest does anyway), and
//! whether nginx's subrequest carries the client's `Content-Length` where certd's carries none.
//!
//! nginx's subrequest is a `GET` with the client's headers and no body; its proxy module sends
//! `Content-Length` from the client's request unless the location that proxies the subrequest
//! sets `proxy_set_header Content-Length ""`. An auth server that reads a request body then waits
//! for one that never comes (nginx's documentation tells to clear the header for that reason).
//! certd's subrequest has neither body nor `Content-Length`: the same for every request without
//! a body, and for the others wherever the header is cleared; elsewhere the route is translated
//! with a `# differs` note saying so.

use super::location::{matched, Matched};
use super::parse::Directive;

/// The URIs `auth_request URI` names anywhere in `body` (a server block), `off` left out.
pub(super) fn targets(body: &[Directive]) -> Vec<&str> {
    let mut out = Vec::new();
    walk(body, &mut out);
    out
}

fn walk<'a>(tree: &'a [Directive], out: &mut Vec<&'a str>) {
    for d in tree {
        if d.name == "auth_request" {
            if let [uri] = d.args.as_slice() {
                if uri != "off" {
                    out.push(uri.as_str());
                }
            }
        }
        walk(d.block.as_deref().unwrap_or_default(), out);
    }
}

/// Whether `d`, inside the location answering `auth_request` subrequests only, does what
/// certd's subrequest does by itself: no body, no `Content-Length`.
pub(super) fn subrequest_setting(d: &Directive) -> bool {
    let args: Vec<&str> = d.args.iter().map(String::as_str).collect();
    match (d.name.as_str(), args.as_slice()) {
        ("proxy_pass_request_body", ["off"]) => true,
        ("proxy_set_header", [name, ""]) => name.eq_ignore_ascii_case("content-length"),
        _ => false,
    }
}

/// The location of server block `body` that answers a request for `uri` by prefix or exact
/// match (regex locations are not followed: `None` then means "not known").
fn location_for<'a>(body: &'a [Directive], uri: &str) -> Option<&'a Directive> {
    let locations = body.iter().filter(|d| d.name == "location");
    let mut longest: Option<(&Directive, usize)> = None;
    for d in locations {
        match matched(&d.args) {
            Matched::Exact(path) if path == uri => return Some(d),
            Matched::Prefix(path)
                if uri.starts_with(path) && longest.is_none_or(|(_, len)| path.len() > len) =>
            {
                longest = Some((d, path.len()));
            }
            _ => {}
        }
    }
    longest.map(|(d, _)| d)
}

fn named<'a>(body: &'a [Directive], name: &str) -> Option<&'a Directive> {
    body.iter()
        .find(|d| d.name == "location" && d.args.first().is_some_and(|a| a == name))
}

/// Whether `location` clears `Content-Length` for its upstream: its own `proxy_set_header`
/// list, or the server's when it has none (nginx inherits the list as a whole).
fn clears_length(location: &Directive, server: &[Directive]) -> bool {
    let sets = |tree: &[Directive]| -> Option<bool> {
        let list: Vec<&Directive> = tree
            .iter()
            .filter(|d| d.name == "proxy_set_header")
            .collect();
        (!list.is_empty()).then(|| list.iter().any(|d| subrequest_setting(d)))
    };
    sets(location.block.as_deref().unwrap_or_default())
        .or_else(|| sets(server))
        .unwrap_or(false)
}

/// For `auth_request uri` in server block `body`: the location that proxies nginx's subrequest
/// with the client's `Content-Length` (its first line, for the note), or `None` when it clears
/// the header (or the subrequest is not proxied, or its path is not followed).
pub(super) fn keeps_length(body: &[Directive], uri: &str) -> Option<String> {
    let mut location = location_for(body, uri)?;
    // `try_files … @name` hands the subrequest to a named location, with that one's settings.
    for _ in 0..10 {
        let inner: &[Directive] = location.block.as_deref().unwrap_or_default();
        if inner.iter().any(|d| d.name == "proxy_pass") {
            return (!clears_length(location, body))
                .then(|| format!("location {}", location.args.join(" ")));
        }
        let fallback = inner
            .iter()
            .find(|d| d.name == "try_files")
            .and_then(|d| d.args.last())
            .filter(|last| last.starts_with('@'))?;
        location = named(body, fallback)?;
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn server(text: &str) -> Vec<Directive> {
        let mut parsed = super::super::parse::parse(text).unwrap();
        parsed.remove(0).block.unwrap()
    }

    #[test]
    fn the_location_proxying_the_subrequest_decides_whether_it_carries_content_length() {
        // PeerTube's: the auth location clears it, but hands the subrequest to @api, which
        // does not.
        let body = server(
            "server { location @api { proxy_set_header Host $host; proxy_pass http://b; }\n\
             location = /check-auth { internal; proxy_set_header Content-Length \"\";\n\
             proxy_pass_request_body off; try_files /dev/null @api; }\n\
             location = /up { auth_request /check-auth; try_files /dev/null @api; } }",
        );
        assert_eq!(targets(&body), ["/check-auth"]);
        assert_eq!(
            keeps_length(&body, "/check-auth").as_deref(),
            Some("location @api")
        );
        // nginx's documented form: the proxying location clears it.
        let body = server(
            "server { location = /auth { internal; proxy_pass http://a;\n\
             proxy_pass_request_body off; proxy_set_header Content-Length \"\"; } }",
        );
        assert_eq!(keeps_length(&body, "/auth"), None);
        // The server's list, inherited by a location without its own.
        let body = server(
            "server { proxy_set_header Content-Length \"\"; location /auth { proxy_pass http://a; } }",
        );
        assert_eq!(keeps_length(&body, "/auth/x"), None);
        let body = server("server { location /auth { proxy_pass http://a; } }");
        assert_eq!(
            keeps_length(&body, "/auth"),
            Some("location /auth".to_owned())
        );
    }

    #[test]
    fn only_the_settings_certd_does_itself_are_taken() {
        let d = |text: &str| super::super::parse::parse(text).unwrap().remove(0);
        assert!(subrequest_setting(&d("proxy_pass_request_body off;")));
        assert!(subrequest_setting(&d(
            "proxy_set_header Content-Length \"\";"
        )));
        assert!(!subrequest_setting(&d(
            "proxy_set_header Content-Length 0;"
        )));
        assert!(!subrequest_setting(&d("proxy_pass_request_body on;")));
    }
}
