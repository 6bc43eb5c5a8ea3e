//! Answers without an upstream and URI rewriting: nginx `return code [text|URL]` and
//! `rewrite regex replacement [last|break|redirect|permanent]`, as pure functions of the request
//! facts so they are tested without sockets.
//!
//! Rewrites run in order on the normalised path (`$uri`), like nginx. `redirect` / `permanent`
//! answer 302 / 301, as does a replacement starting with `http://`, `https://` or `$scheme`;
//! `break` changes the URI and stays in the route; `last` changes it and routes again; without a
//! flag the next rewrite sees the new URI and, after the last one, the request is routed again.
//! The query is appended to a replacement unless the replacement ends in `?`.

use super::pattern::Pattern;
use super::variables::{RequestFacts, Template};
use hyper::StatusCode;

/// What a rewrite ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewriteFlag {
    /// No flag: go on with the next rewrite, then route again if the URI changed.
    Continue,
    /// `last`: route the new URI again.
    Last,
    /// `break`: use the new URI in this route.
    Break,
    /// `redirect`: answer 302 with the new URI as `Location`.
    Redirect,
    /// `permanent`: answer 301.
    Permanent,
}

/// One `rewrite`.
#[derive(Debug, Clone)]
pub struct Rewrite {
    /// Matched against `$uri`.
    pub regex: Pattern,
    /// The new URI (captures allowed).
    pub replacement: Template,
    /// What happens after.
    pub flag: RewriteFlag,
}

impl PartialEq for Rewrite {
    fn eq(&self, other: &Self) -> bool {
        self.regex.as_str() == other.regex.as_str()
            && self.replacement == other.replacement
            && self.flag == other.flag
    }
}

impl Eq for Rewrite {}

/// One `return`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Return {
    /// The status.
    pub status: StatusCode,
    /// For 301, 302, 303, 307, 308: where to.
    pub location: Option<Template>,
    /// For other statuses: the body (empty when absent).
    pub body: Option<Template>,
    /// The body's `Content-Type`.
    pub content_type: String,
}

/// What the rewrites of a route decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing matched: go on unchanged.
    Unchanged,
    /// Use this path and query in this route (`break`).
    Break {
        /// The new path.
        path: String,
        /// The new query.
        query: Option<String>,
    },
    /// Route this path and query again (`last`, or no flag).
    Reroute {
        /// The new path.
        path: String,
        /// The new query.
        query: Option<String>,
    },
    /// A look-around pattern ran past its step limit: 500, as nginx answers a PCRE match error.
    TooComplex,
    /// Answer with a redirect to this absolute `Location`.
    Redirect {
        /// 301 or 302.
        status: StatusCode,
        /// The absolute target.
        location: String,
    },
}

/// Runs `rules` against the request described by `facts` (whose `uri` and `args` are the current
/// ones).
pub fn run(rules: &[Rewrite], facts: &RequestFacts) -> Outcome {
    let mut facts_now = None::<RequestFacts>;
    let mut changed = false;
    for rule in rules {
        let current = facts_now.as_ref().unwrap_or(facts);
        let groups = match rule.regex.captures(&current.uri) {
            Ok(Some(groups)) => groups,
            Ok(None) => continue,
            Err(error) => {
                tracing::warn!(%error, "rewrite refused");
                return Outcome::TooComplex;
            }
        };
        let replaced = rule.replacement.expand(current, &groups);
        let external = replaced.starts_with("http://")
            || replaced.starts_with("https://")
            || rule.replacement.source().starts_with("$scheme");
        let (path, query) = with_query(&replaced, current.args.as_deref());
        if external || matches!(rule.flag, RewriteFlag::Redirect | RewriteFlag::Permanent) {
            let status = if rule.flag == RewriteFlag::Permanent {
                StatusCode::MOVED_PERMANENTLY
            } else {
                StatusCode::FOUND
            };
            let target = match &query {
                Some(query) => format!("{path}?{query}"),
                None => path,
            };
            return Outcome::Redirect {
                status,
                location: absolute_location(&target, facts),
            };
        }
        match rule.flag {
            RewriteFlag::Break => return Outcome::Break { path, query },
            RewriteFlag::Last => return Outcome::Reroute { path, query },
            _ => {}
        }
        let mut next = current.clone();
        next.uri = path;
        next.args = query;
        facts_now = Some(next);
        changed = true;
    }
    match facts_now {
        Some(last) if changed => Outcome::Reroute {
            path: last.uri,
            query: last.args,
        },
        _ => Outcome::Unchanged,
    }
}

/// Splits a replacement into path and query, applying nginx's rule: the request's query is kept
/// (after the replacement's own, joined with `&`) unless the replacement ends in `?`.
fn with_query(replaced: &str, args: Option<&str>) -> (String, Option<String>) {
    if let Some(path) = replaced.strip_suffix('?') {
        return match path.split_once('?') {
            Some((path, own)) => (path.to_owned(), Some(own.to_owned())),
            None => (path.to_owned(), None),
        };
    }
    match (replaced.split_once('?'), args) {
        (Some((path, own)), Some(args)) => (path.to_owned(), Some(format!("{own}&{args}"))),
        (Some((path, own)), None) => (path.to_owned(), Some(own.to_owned())),
        (None, args) => (replaced.to_owned(), args.map(str::to_owned)),
    }
}

/// A `Location` that cannot be protocol-relative: absolute URLs are kept, anything else becomes
/// `https://<host as requested><path>`, so a replacement like `//evil.test/` (e.g. from a capture)
/// stays on this site instead of naming another host. Like nginx's default `absolute_redirect on`.
pub fn absolute_location(target: &str, facts: &RequestFacts) -> String {
    let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return target.to_owned();
    }
    let authority = if facts.authority.is_empty() {
        &facts.server_name
    } else {
        &facts.authority
    };
    if target.starts_with('/') {
        format!("https://{authority}{target}")
    } else {
        format!("https://{authority}/{target}")
    }
}

impl Return {
    /// The answer's status, `Location` (absolute, see [`absolute_location`]) and body.
    pub fn answer(&self, facts: &RequestFacts) -> (StatusCode, Option<String>, String) {
        let location = self
            .location
            .as_ref()
            .map(|location| absolute_location(&location.expand(facts, &[]), facts));
        let body = self
            .body
            .as_ref()
            .map(|body| body.expand(facts, &[]))
            .unwrap_or_default();
        (self.status, location, body)
    }
}

/// Whether `status` is one `return` answers with a `Location` (nginx's redirect codes).
pub fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn facts(uri: &str, args: Option<&str>) -> RequestFacts {
        RequestFacts {
            host: "a.test".into(),
            authority: "a.test:8443".into(),
            uri: uri.into(),
            args: args.map(str::to_owned),
            request_uri: uri.into(),
            server_name: "a.test".into(),
            ..RequestFacts::default()
        }
    }

    fn rule(regex: &str, replacement: &str, flag: RewriteFlag) -> Rewrite {
        Rewrite {
            regex: Pattern::new(regex).unwrap(),
            replacement: Template::parse(replacement, true).unwrap(),
            flag,
        }
    }

    #[test]
    fn rewrite_forms() {
        use RewriteFlag::*;
        let redirect = |status: u16, location: &str| Outcome::Redirect {
            status: StatusCode::from_u16(status).unwrap(),
            location: location.into(),
        };
        let brk = |path: &str, query: Option<&str>| Outcome::Break {
            path: path.into(),
            query: query.map(str::to_owned),
        };
        let reroute = |path: &str, query: Option<&str>| Outcome::Reroute {
            path: path.into(),
            query: query.map(str::to_owned),
        };
        let cases: Vec<(Vec<Rewrite>, &str, Option<&str>, Outcome)> = vec![
            // permanent / redirect: 301 / 302, query appended.
            (
                vec![rule("^/old/(.*)$", "/new/$1", Permanent)],
                "/old/a",
                Some("q=1"),
                redirect(301, "https://a.test:8443/new/a?q=1"),
            ),
            (
                vec![rule("^/old/(.*)$", "/new/$1", Redirect)],
                "/old/a",
                None,
                redirect(302, "https://a.test:8443/new/a"),
            ),
            // A trailing `?` drops the query; the replacement's own query comes first.
            (
                vec![rule("^/old/(.*)$", "/new/$1?", Permanent)],
                "/old/a",
                Some("q=1"),
                redirect(301, "https://a.test:8443/new/a"),
            ),
            (
                vec![rule("^/p/(\\d+)$", "/post.php?id=$1", Break)],
                "/p/7",
                Some("q=1"),
                brk("/post.php", Some("id=7&q=1")),
            ),
            // An absolute replacement redirects without a flag.
            (
                vec![rule("^(.*)$", "https://b.test$1", Continue)],
                "/x",
                None,
                redirect(302, "https://b.test/x"),
            ),
            // A capture that would make `//evil.test` stays on this site.
            (
                vec![rule("^/go(.*)$", "$1", Redirect)],
                "/go//evil.test/",
                None,
                redirect(302, "https://a.test:8443//evil.test/"),
            ),
            (
                vec![rule("^/api/(.*)$", "/v2/$1", Break)],
                "/api/users",
                None,
                brk("/v2/users", None),
            ),
            (
                vec![rule("^/api/(.*)$", "/v2/$1", Last)],
                "/api/users",
                None,
                reroute("/v2/users", None),
            ),
            // No flag: the next rule sees the new URI, then the request is routed again.
            (
                vec![rule("^/a$", "/b", Continue), rule("^/b$", "/c", Continue)],
                "/a",
                None,
                reroute("/c", None),
            ),
            (
                vec![rule("^/a$", "/b", Continue), rule("^/b$", "/c", Break)],
                "/a",
                None,
                brk("/c", None),
            ),
            (
                vec![rule("^/nope$", "/b", Break)],
                "/a",
                None,
                Outcome::Unchanged,
            ),
        ];
        for (rules, uri, args, expected) in cases {
            assert_eq!(run(&rules, &facts(uri, args)), expected, "{uri}");
        }
    }

    #[test]
    fn return_forms() {
        let facts = facts("/x", Some("a=1"));
        let moved = Return {
            status: StatusCode::MOVED_PERMANENTLY,
            location: Some(Template::parse("https://$host$request_uri", false).unwrap()),
            body: None,
            content_type: "text/plain".into(),
        };
        assert_eq!(
            moved.answer(&facts),
            (
                StatusCode::MOVED_PERMANENTLY,
                Some("https://a.test/x".into()),
                String::new()
            )
        );
        let relative = Return {
            status: StatusCode::FOUND,
            location: Some(Template::parse("/login", false).unwrap()),
            body: None,
            content_type: "text/plain".into(),
        };
        assert_eq!(
            relative.answer(&facts).1.as_deref(),
            Some("https://a.test:8443/login")
        );
        let ok = Return {
            status: StatusCode::OK,
            location: None,
            body: Some(Template::parse("ok from $server_name", false).unwrap()),
            content_type: "text/plain".into(),
        };
        assert_eq!(
            ok.answer(&facts),
            (StatusCode::OK, None, "ok from a.test".into())
        );
        let forbidden = Return {
            status: StatusCode::FORBIDDEN,
            location: None,
            body: None,
            content_type: "text/plain".into(),
        };
        assert_eq!(
            forbidden.answer(&facts),
            (StatusCode::FORBIDDEN, None, String::new())
        );
        assert!(is_redirect(308) && !is_redirect(200));
    }
}
