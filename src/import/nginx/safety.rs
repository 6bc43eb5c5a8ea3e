//! Never a route that answers differently: which directives change what a location answers
//! ([`effect`]), what a left-out location would have answered ([`LeftOut`]), and the check that
//! drops every route which would answer requests nginx sends to a left-out location
//! ([`resolve`]).
//!
//! certd routes by path prefix. When a location is left out (a regular expression, an exact
//! match, `fastcgi_pass`, `deny`, `try_files … @app`, `alias`, …), the requests nginx answered
//! through it go to whichever certd route covers their path. If that route answers the same way
//! (the same upstream, the same root) nothing changes; otherwise that route is left out too, with
//! the reason, so that `/wp-config.php` can never be served as text by a static root whose
//! `location ~ \.php$` was dropped, and `location /admin { deny all; }` never becomes an open
//! proxy. Dropping a route can uncover a shorter one, so the check repeats until nothing changes.

use super::parse::Directive;
use super::translate::{cover, Covered, Loc, Note, Route, RouteKind, Target, Topic};

/// What one directive inside a location does to the answer, as far as certd can follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Effect {
    /// Nothing a client would see in the answer (logging, buffers, `allow all`).
    None,
    /// A header, a limit or a timeout certd does not apply: the route still answers from the same
    /// upstream or file, and the line is listed as untranslated.
    Degrades(String),
    /// The location answers differently (access control, rewrites, fallbacks, FastCGI…): it
    /// cannot become a route.
    Refuses(String),
}

/// What `d`, inside a location, does to its answer. Directives a route translates itself
/// (`proxy_pass`, `root`, `index`, the proxy headers certd sets) are handled before this is asked.
pub(super) fn effect(d: &Directive) -> Effect {
    let args: Vec<&str> = d.args.iter().map(String::as_str).collect();
    let degrades = |why: &str| Effect::Degrades(why.to_owned());
    let refuses = |why: &str| Effect::Refuses(why.to_owned());
    match (d.name.as_str(), args.as_slice()) {
        (
            "access_log"
            | "error_log"
            | "log_not_found"
            | "tcp_nodelay"
            | "tcp_nopush"
            | "sendfile"
            | "sendfile_max_chunk"
            | "aio"
            | "proxy_buffering"
            | "proxy_request_buffering"
            | "proxy_buffers"
            | "proxy_buffer_size"
            | "proxy_busy_buffers_size"
            | "proxy_max_temp_file_size"
            | "client_body_buffer_size"
            | "proxy_cache_bypass"
            | "proxy_pass_request_headers"
            | "break"
            | "default_type"
            | "send_timeout"
            | "keepalive_timeout"
            | "server_tokens"
            // Framing only: without chunked encoding nginx ends such an answer by closing the
            // connection; the client gets the same status, headers and body.
            | "chunked_transfer_encoding",
            _,
        ) => Effect::None,
        ("allow", ["all"]) | ("proxy_redirect", ["off" | "default"]) => Effect::None,
        // certd's redirects name the scheme and Host the client used (its own folder redirects
        // are relative): a client lands on the same URL whichever nginx sends.
        ("absolute_redirect", ["on" | "off"]) => Effect::None,
        ("auth_basic", ["off"]) => Effect::None,
        ("add_header" | "more_set_headers" | "expires" | "proxy_hide_header", _) => {
            degrades("certd sets response headers with add_header's key only (headers.response.add)")
        }
        (name, _) if name.starts_with("gzip") || name.starts_with("brotli") => {
            degrades("certd compresses for every client that accepts the encoding (gzip_disable, brotli settings)")
        }
        ("client_max_body_size" | "client_body_timeout", _) => {
            degrades("certd has no request body timeout of its own per route")
        }
        ("proxy_read_timeout" | "proxy_connect_timeout" | "proxy_send_timeout", _) => degrades(
            "certd's upstream timeouts are global: [limits] upstream_connect_timeout and \
             upstream_response_timeout (per-route timeouts are being built)",
        ),
        ("proxy_set_header", _) => degrades(
            "certd sends the client's Host and its own X-Forwarded-* headers, and no others \
             (request headers are being built)",
        ),
        ("proxy_cache_use_stale" | "proxy_cache_key", _) => degrades(
            "certd's cache does not answer with a stale copy when the upstream fails \
             (proxy_cache_use_stale) and keys by $scheme$proxy_host$request_uri only \
             (proxy_cache_key); the route asks the upstream instead",
        ),
        (
            "proxy_cache"
            | "proxy_cache_valid"
            | "proxy_ignore_headers"
            | "proxy_pass_header"
            | "proxy_cookie_flags"
            | "proxy_cookie_path"
            | "proxy_redirect"
            | "limit_rate"
            | "limit_rate_after",
            _,
        ) => degrades("certd does not do this; the route answers from the same upstream"),
        ("allow" | "deny", _) => {
            refuses("access control by address in a form certd does not read")
        }
        ("auth_basic" | "auth_basic_user_file", _) => {
            refuses("basic auth in a form certd does not read")
        }
        // The forms certd has (a fixed path; see `super::auth`) are route keys by now.
        ("auth_request", _) => refuses("auth_request in a form certd does not read"),
        ("limit_except", _) => {
            refuses("limit_except belongs in a location (certd: the route key `limit_except`)")
        }
        ("internal", _) => refuses("internal: nginx answers this only to its own redirects"),
        ("alias", _) => refuses(
            "alias: certd's `root` appends the whole request path, so another folder would be \
             served (being built)",
        ),
        ("try_files", _) => refuses(
            "try_files with a fallback: certd would serve files only and never reach the \
             fallback (being built)",
        ),
        ("return" | "rewrite" | "if" | "set", _) => {
            refuses("`if`/`set`: certd has no conditions or variables of its own")
        }
        ("fastcgi_pass" | "uwsgi_pass" | "scgi_pass" | "grpc_pass" | "memcached_pass", _) => {
            refuses("certd has no uwsgi/gRPC/memcached routes, and takes FastCGI only in the WordPress-style PHP idiom (`location ~ \\.php$` beside `location /` over the same root)")
        }
        ("location", _) => refuses("nested locations are not translated yet"),
        _ => refuses("not understood by the importer, so the location is left out"),
    }
}

/// How a left-out location matched requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Matcher {
    /// `location /p`, `location ^~ /p`, or a route left out by [`resolve`].
    Prefix(String),
    /// `location = /p`.
    Exact(String),
    /// `location ~ re` / `~* re`.
    Regex(String),
    /// `location @name`: only reached from `try_files` or `error_page`.
    Named,
}

/// A location that did not become a route, and what it would have answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LeftOut {
    pub(super) at: Loc,
    pub(super) matcher: Matcher,
    /// What it answers with (target and keys), for a route left out by [`resolve`]
    /// (`None` for a location: it is left out because certd cannot answer like it).
    pub(super) answer: Option<(Target, Vec<(String, String)>)>,
    /// It only refuses (`deny`, `return 4xx`) paths with a dot segment, which certd's static
    /// roots refuse as well.
    pub(super) refuses_dotfiles_only: bool,
    /// The first line of the location, for the note of a route dropped because of it.
    pub(super) source: String,
    /// For a location (not a dropped route): its text, why it is not a route, and the notes and
    /// translated lines of its body, reported by [`finish`].
    pub(super) pending: Option<(String, String, Vec<Note>, Covered)>,
    /// `location ^~ /p` (or a `prefix_priority` route): regexes do not take its paths in nginx.
    pub(super) preferred: bool,
    /// A route matching exactly its paths and answering 502, put in place by [`resolve`] (and
    /// listing the location as untranslated) when another route would answer them instead.
    pub(super) stand_in: Option<Box<Route>>,
}

/// Whether the regular expression `re` (nginx `location ~`) could match a path under `prefix`:
/// only a pattern anchored on a literal path (`^/assets/…`) can be shown not to.
fn regex_may_match_under(re: &str, prefix: &str) -> bool {
    let Some(anchored) = re.strip_prefix('^') else {
        return true;
    };
    let literal: String = anchored
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_'))
        .collect();
    literal.starts_with(prefix) || prefix.starts_with(&literal)
}

/// Whether the route at `index` would serve (some of) the paths nginx sends to the left-out
/// location `out`: a prefix route when it is the longest route covering its path (for a regex,
/// whenever the expression could match under the route's path); a regex route when it could
/// match paths of a `^~` or exact location, or comes after a left-out regex (nginx tries them in
/// order, so it now gets that regex's paths). Exact and named routes take no other location's
/// paths, in certd as in nginx.
fn serves(routes: &[Route], index: usize, out: &LeftOut) -> bool {
    let route = &routes[index];
    match &route.kind {
        RouteKind::Exact(_) | RouteKind::Named(_) => return false,
        RouteKind::Regex(re) | RouteKind::IRegex(re) => {
            let icase = matches!(route.kind, RouteKind::IRegex(_));
            let may = |path: &str| icase || regex_may_match_under(re, path);
            return match &out.matcher {
                Matcher::Named => false,
                Matcher::Regex(other) => route.at > out.at && !disjoint(re, other),
                // One path: whether the expression takes it is known exactly.
                Matcher::Exact(path) => regex::RegexBuilder::new(re)
                    .case_insensitive(icase)
                    .build()
                    .map_or_else(|_| may(path), |re| re.is_match(path)),
                Matcher::Prefix(path) => out.preferred && may(path),
            };
        }
        RouteKind::Path => {}
    }
    let path = match &out.matcher {
        Matcher::Named => return false,
        Matcher::Regex(re) => return !route.preferred && regex_may_match_under(re, &route.path),
        Matcher::Prefix(path) | Matcher::Exact(path) => path,
    };
    let longest = routes
        .iter()
        .enumerate()
        .filter(|(_, r)| r.kind == RouteKind::Path && path.starts_with(r.path.as_str()))
        .max_by_key(|(_, r)| r.path.len())
        .map(|(i, _)| i);
    longest == Some(index)
}

/// The file extensions a regex requires a path to end in (`\.php$` → php, `\.(js|css)$` → js,
/// css), lower-cased, when that is all it says about the end of the path.
fn extensions(re: &str) -> Option<Vec<String>> {
    let body = re.strip_suffix('$')?;
    let dot = body.rfind("\\.")?;
    let (before, ext) = (&body[..dot], &body[dot + 2..]);
    if before.contains('|') {
        return None;
    }
    let ext = ext
        .strip_prefix("(?:")
        .or_else(|| ext.strip_prefix('('))
        .and_then(|e| e.strip_suffix(')'))
        .unwrap_or(ext);
    let list: Vec<String> = ext.split('|').map(str::to_ascii_lowercase).collect();
    list.iter()
        .all(|e| !e.is_empty() && e.chars().all(|c| c.is_ascii_alphanumeric()))
        .then_some(list)
}

/// Whether no path can match both regexes: they require different file extensions.
pub(super) fn disjoint(a: &str, b: &str) -> bool {
    match (extensions(a), extensions(b)) {
        (Some(a), Some(b)) => !a.iter().any(|e| b.contains(e)),
        _ => false,
    }
}

/// The `@name` a route's `try_files` falls back to, if any.
fn fallback_name(route: &Route) -> Option<String> {
    let (_, value) = route.keys.iter().find(|(key, _)| key == "try_files")?;
    let parsed: toml::Value = toml::from_str(&format!("v = {value}")).ok()?;
    let last = parsed.get("v")?.as_array()?.last()?.as_str()?.to_owned();
    last.starts_with('@').then_some(last)
}

/// Drops every route of `routes` that would answer requests a location of `left_out` answers
/// differently in nginx, repeating until nothing changes. Each dropped route gets a note in
/// `notes` naming the location it yields to, and joins `left_out`.
pub(super) fn resolve(routes: &mut Vec<Route>, left_out: &mut Vec<LeftOut>, notes: &mut Vec<Note>) {
    loop {
        let mut dropped = None;
        'find: for out in left_out.iter() {
            for index in 0..routes.len() {
                let route = &routes[index];
                let same =
                    out.answer.as_ref().is_some_and(|(target, keys)| {
                        *target == route.target && *keys == route.keys
                    }) || (out.refuses_dotfiles_only && matches!(route.target, Target::Root(_)));
                if !same && serves(routes, index, out) {
                    dropped = Some((index, out.clone()));
                    break 'find;
                }
            }
        }
        // A try_files fallback to a named location that is not a route.
        if dropped.is_none() {
            for (index, route) in routes.iter().enumerate() {
                let Some(name) = fallback_name(route) else {
                    continue;
                };
                let named = |r: &Route| r.kind == RouteKind::Named(name.clone());
                if !routes.iter().any(named) {
                    let cause = left_out
                        .iter()
                        .find(|out| out.source == format!("location {name}"))
                        .cloned()
                        .unwrap_or(LeftOut {
                            stand_in: None,
                            at: route.at,
                            matcher: Matcher::Named,
                            answer: None,
                            refuses_dotfiles_only: false,
                            source: format!("location {name}"),
                            pending: None,
                            preferred: false,
                        });
                    dropped = Some((index, cause));
                    break;
                }
            }
        }
        let Some((index, cause)) = dropped else {
            return;
        };
        // A location certd can match exactly keeps its paths by standing in as a 502 route, so
        // the route that would take them need not go.
        if let Some(stand_in) = &cause.stand_in {
            left_out.retain(|out| out.at != cause.at || out.source != cause.source);
            let at = routes
                .iter()
                .position(|r| r.at > stand_in.at)
                .unwrap_or(routes.len());
            routes.insert(at, (**stand_in).clone());
            continue;
        }
        let route = routes.remove(index);
        notes.push(Note::Untranslated {
            at: route.at,
            text: route.text.clone(),
            why: Some(format!(
                "left out: nginx answers some of its paths through `{}` (line {}), which is left \
                 out, and this route would answer them differently",
                cause.source, cause.at.line
            )),
        });
        left_out.push(LeftOut {
            stand_in: None,
            at: route.at,
            matcher: matcher(&route),
            answer: route
                .nested
                .is_empty()
                .then(|| (route.target.clone(), route.keys.clone())),
            refuses_dotfiles_only: false,
            source: route.source.clone(),
            pending: None,
            preferred: route.preferred,
        });
    }
}

/// How nginx picks `route`'s requests, as a left-out location's matcher.
fn matcher(route: &Route) -> Matcher {
    match &route.kind {
        RouteKind::Path => Matcher::Prefix(route.path.clone()),
        RouteKind::Exact(path) => Matcher::Exact(path.clone()),
        RouteKind::Regex(re) => Matcher::Regex(re.clone()),
        // Could match in any case: no literal prefix confines it.
        RouteKind::IRegex(_) => Matcher::Regex(String::new()),
        RouteKind::Named(_) => Matcher::Named,
    }
}

/// `route` as a location that is left out (it answers nothing certd can say: `answer` is
/// `None`), for [`resolve`] to drop the routes that would take its paths.
pub(super) fn dropped(route: &Route) -> LeftOut {
    LeftOut {
        stand_in: None,
        at: route.at,
        matcher: matcher(route),
        answer: None,
        refuses_dotfiles_only: false,
        source: route.source.clone(),
        pending: None,
        preferred: route.preferred,
    }
}

/// Folds an exact route into the prefix route that answers its path anyway (the same target and
/// keys, and no regex route that would take the path instead): nginx's `location = /40x.html`
/// beside `location /` over the same root. Its lines are reported as translated by that route.
pub(super) fn fold_same_answers(
    routes: &mut Vec<Route>,
    covered: &mut Covered,
    notes: &mut Vec<Note>,
) {
    let mut i = 0;
    while i < routes.len() {
        let RouteKind::Exact(path) = &routes[i].kind else {
            i += 1;
            continue;
        };
        let prefix = routes
            .iter()
            .filter(|r| r.kind == RouteKind::Path && path.starts_with(r.path.as_str()))
            .max_by_key(|r| r.path.len());
        let same = prefix.is_some_and(|r| {
            r.target == routes[i].target && r.keys == routes[i].keys && r.nested.is_empty()
        });
        let regex_takes = routes.iter().any(|r| match &r.kind {
            RouteKind::Regex(re) | RouteKind::IRegex(re) => regex::RegexBuilder::new(re)
                .case_insensitive(matches!(r.kind, RouteKind::IRegex(_)))
                .build()
                .map_or(true, |re| re.is_match(path)),
            _ => false,
        });
        if same && !regex_takes {
            let route = routes.remove(i);
            cover(covered, Topic::SameAnswer, route.at);
            notes.extend(route.notes);
        } else {
            i += 1;
        }
    }
}

/// Reports the left-out locations after [`resolve`]: an exact or regex location whose paths a
/// route answers the same way is translated by that route (its untranslated lines are listed);
/// every other one is listed as untranslated with its reason.
pub(super) fn finish(
    routes: &[Route],
    left_out: &mut [LeftOut],
    covered: &mut Covered,
    notes: &mut Vec<Note>,
) {
    for out in left_out.iter_mut() {
        let Some((text, why, body_notes, _body_covered)) = out.pending.take() else {
            continue;
        };
        let answered = out.answer.is_some()
            && matches!(out.matcher, Matcher::Exact(_) | Matcher::Regex(_))
            && (0..routes.len()).any(|i| serves(routes, i, out));
        if answered {
            cover(covered, Topic::SameAnswer, out.at);
            notes.extend(body_notes);
        } else {
            notes.push(Note::Untranslated {
                at: out.at,
                text,
                why: Some(why),
            });
        }
    }
}

/// Whether the regular expression of `location ~ re { deny all; }` only picks paths with a dot
/// segment (`/\.`, `/\.ht`, `^/\.`), which certd's static roots refuse too.
pub(super) fn dotfiles_only(re: &str) -> bool {
    let re = re.strip_prefix('^').unwrap_or(re);
    re.starts_with("/\\.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str, target: Target) -> Route {
        Route {
            path: path.to_owned(),
            target,
            at: Loc { file: 0, line: 1 },
            source: format!("location {path}"),
            text: format!("location {path} {{ … }}"),
            covered: Covered::new(),
            notes: Vec::new(),
            preferred: false,
            kind: RouteKind::Path,
            keys: Vec::new(),
            nested: Vec::new(),
        }
    }

    fn left_out(line: usize, matcher: Matcher, answer: Option<Target>) -> LeftOut {
        LeftOut {
            stand_in: None,
            at: Loc { file: 0, line },
            matcher,
            answer: answer.map(|target| (target, Vec::new())),
            refuses_dotfiles_only: false,
            source: format!("location at {line}"),
            pending: None,
            preferred: false,
        }
    }

    #[test]
    fn routes_that_would_answer_a_left_out_location_are_dropped_in_turn() {
        let root = || Target::Root("/srv".to_owned());
        let app = || Target::Proxy("http://127.0.0.1:3000".to_owned());
        // `/` and `/a` serve the same root; `/a/admin` (deny all) is left out: `/a` would answer
        // it, so `/a` goes; then `/` would, so `/` goes too. `/api` proxies and is untouched.
        let mut routes = vec![
            route("/", root()),
            route("/a", root()),
            route("/api", app()),
        ];
        let mut out = vec![left_out(9, Matcher::Prefix("/a/admin".to_owned()), None)];
        let mut notes = Vec::new();
        resolve(&mut routes, &mut out, &mut notes);
        let left: Vec<&str> = routes.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(left, ["/api"]);
        assert_eq!(notes.len(), 2);

        // A regex location answering from the same root as `/` changes nothing; one that runs
        // PHP takes `/` down, but not a `^~` route.
        let mut routes = vec![route("/", root())];
        let mut out = vec![left_out(
            3,
            Matcher::Regex("\\.css$".to_owned()),
            Some(root()),
        )];
        resolve(&mut routes, &mut out, &mut Vec::new());
        assert_eq!(routes.len(), 1);
        let mut preferred = route("/static/", root());
        preferred.preferred = true;
        let mut routes = vec![route("/", root()), preferred];
        let mut out = vec![left_out(4, Matcher::Regex("\\.php$".to_owned()), None)];
        resolve(&mut routes, &mut out, &mut Vec::new());
        let left: Vec<&str> = routes.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(left, ["/static/"]);

        // A dotfile rule leaves static roots alone (they refuse dotfiles too), not proxies.
        let mut dots = left_out(5, Matcher::Regex("/\\.".to_owned()), None);
        dots.refuses_dotfiles_only = true;
        let mut routes = vec![route("/", root())];
        resolve(&mut routes, &mut vec![dots.clone()], &mut Vec::new());
        assert_eq!(routes.len(), 1);
        let mut routes = vec![route("/", app())];
        resolve(&mut routes, &mut vec![dots], &mut Vec::new());
        assert!(routes.is_empty());

        // A named location takes no requests by itself.
        let mut routes = vec![route("/", app())];
        resolve(
            &mut routes,
            &mut vec![left_out(6, Matcher::Named, None)],
            &mut Vec::new(),
        );
        assert_eq!(routes.len(), 1);
    }

    #[test]
    fn anchored_regexes_are_confined_to_their_literal_prefix() {
        assert!(regex_may_match_under("\\.php$", "/"));
        assert!(regex_may_match_under("^/assets/", "/"));
        assert!(regex_may_match_under("^/assets/", "/assets/img"));
        assert!(!regex_may_match_under("^/assets/", "/api"));
        assert!(regex_may_match_under("^(/_matrix|/_synapse)", "/api"));
        assert!(disjoint("\\.php$", "\\.(js|css|png)$"));
        assert!(disjoint("\\.php$", "^/static/.*\\.(?:css|js)$"));
        assert!(!disjoint("\\.php$", "\\.(PHP|js)$"));
        assert!(!disjoint("\\.php$", "\\.php(/|$)"));
        assert!(!disjoint("\\.php$", "a|\\.css$"));
        assert!(dotfiles_only("/\\."));
        assert!(dotfiles_only("^/\\.ht"));
        assert!(!dotfiles_only("\\.php$"));
    }
}
