//! What a server block serves: its `location` blocks (→ routes, with `proxy_pass` and the proxy
//! headers certd handles itself), `index`, and `error_page` (→ `[site.error_pages]`, each file
//! resolved against the root nginx would read it from).

use std::collections::{BTreeMap, BTreeSet};

use super::keys::{Keys, Taken};
use super::parse::{directive_text, Directive};
use super::safety::{self, Effect, LeftOut, Matcher};
use super::server::ServerPart;
use super::translate::{
    cover, Covered, ErrorPage, Loc, Note, Route, RouteKind, Target, Topic, Upstream,
};

/// What a server block's locations and error pages need to know about the block.
pub(super) struct Scope<'a> {
    file: usize,
    upstreams: &'a BTreeMap<String, Upstream>,
    /// The server-level `root`, and where it is.
    pub(super) root: Option<(&'a str, Loc)>,
    /// The block's prefix and exact-match locations.
    locations: Vec<LocationInfo<'a>>,
    /// The URIs its `error_page` directives name.
    error_uris: BTreeSet<&'a str>,
    /// Its server-level keys, which locations inherit.
    pub(super) keys: Keys,
    /// Every URI nginx may redirect to internally (the last `try_files` argument, `error_page`
    /// targets, `rewrite … last` replacements, `auth_request` subrequests), anywhere in the block.
    redirect_uris: Vec<&'a str>,
    /// The URIs `auth_request` asks (see [`super::auth`]).
    auth_uris: Vec<&'a str>,
    /// The server block's directives.
    body: &'a [Directive],
}

/// One location of a server block, as the error page lookup sees it.
struct LocationInfo<'a> {
    exact: bool,
    path: &'a str,
    root: Option<&'a str>,
    proxied: bool,
}

impl<'a> Scope<'a> {
    /// The scope of the server block whose directives are `body`, in file `file`.
    pub(super) fn new(
        file: usize,
        upstreams: &'a BTreeMap<String, Upstream>,
        body: &'a [Directive],
    ) -> Self {
        let root =
            body.iter()
                .rev()
                .find_map(|d| match (d.name.as_str(), d.args.as_slice(), &d.block) {
                    ("root", [root], None) => Some((root.as_str(), Loc { file, line: d.line })),
                    _ => None,
                });
        let locations = body
            .iter()
            .filter(|d| d.name == "location")
            .filter_map(|d| {
                let (exact, path) = match matched(&d.args) {
                    Matched::Prefix(path) => (false, path),
                    Matched::Exact(path) => (true, path),
                    Matched::Other => return None,
                };
                let inner: &[Directive] = d.block.as_deref().unwrap_or_default();
                Some(LocationInfo {
                    exact,
                    path,
                    root: inner
                        .iter()
                        .find_map(|d| match (d.name.as_str(), d.args.as_slice()) {
                            ("root", [root]) => Some(root.as_str()),
                            _ => None,
                        }),
                    proxied: inner.iter().any(|d| d.name == "proxy_pass"),
                })
            })
            .collect();
        let error_uris = body
            .iter()
            .filter(|d| d.name == "error_page")
            .filter_map(|d| d.args.last().map(String::as_str))
            .collect();
        let mut keys = Keys::default();
        for d in body {
            // What a location cannot inherit is refused at server level by `super::server`.
            if !matches!(
                d.name.as_str(),
                "return" | "rewrite" | "try_files" | "alias"
            ) {
                keys.take(d, certd_sets);
            }
        }
        let mut redirect_uris = Vec::new();
        redirect_targets(body, &mut redirect_uris);
        let auth_uris = super::auth::targets(body);
        redirect_uris.extend(auth_uris.iter().copied());
        Self {
            file,
            upstreams,
            root,
            locations,
            error_uris,
            keys,
            redirect_uris,
            auth_uris,
            body,
        }
    }

    fn at(&self, d: &Directive) -> Loc {
        Loc {
            file: self.file,
            line: d.line,
        }
    }

    /// The root nginx reads `uri` from after an internal redirect to it (as `error_page` does):
    /// the exact location for it, else the longest prefix location, else the server's root.
    fn root_for(&self, uri: &str) -> Result<&'a str, String> {
        let location = self
            .locations
            .iter()
            .find(|l| l.exact && l.path == uri)
            .or_else(|| {
                self.locations
                    .iter()
                    .filter(|l| !l.exact && uri.starts_with(l.path))
                    .max_by_key(|l| l.path.len())
            });
        if let Some(location) = location.filter(|l| l.proxied) {
            return Err(format!(
                "nginx fetches {uri} from the upstream of `location {}`; certd error pages are files",
                location.path
            ));
        }
        location
            .and_then(|l| l.root)
            .or(self.root.map(|(root, _)| root))
            .ok_or_else(|| format!("there is no root to find {uri} in"))
    }
}

/// How a `location` matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Matched<'a> {
    /// `location /path` or `location ^~ /path`.
    Prefix(&'a str),
    /// `location = /path`.
    Exact(&'a str),
    /// Regular expressions (`~`, `~*`) and named locations (`@name`).
    Other,
}

/// How a `location` with arguments `args` matches.
pub(super) fn matched(args: &[String]) -> Matched<'_> {
    match args {
        [modifier, path] if modifier == "=" => Matched::Exact(path),
        [modifier, path] if modifier == "^~" => Matched::Prefix(path),
        [one] => {
            if let Some(path) = one.strip_prefix("^~") {
                Matched::Prefix(path)
            } else if let Some(path) = one.strip_prefix('=') {
                Matched::Exact(path)
            } else if one.starts_with('/') {
                Matched::Prefix(one)
            } else {
                Matched::Other
            }
        }
        _ => Matched::Other,
    }
}

/// How a `location` matches, for [`safety`]: the matcher, and whether it is `^~`.
fn matcher(args: &[String]) -> (Matcher, bool) {
    let one = |s: &str| s.to_owned();
    match args {
        [m, path] if m == "=" => (Matcher::Exact(one(path)), false),
        [m, path] if m == "^~" => (Matcher::Prefix(one(path)), true),
        [m, re] if m == "~" || m == "~*" => (Matcher::Regex(one(re)), false),
        [arg] if arg.starts_with('@') => (Matcher::Named, false),
        [arg] if arg.starts_with("^~") => (Matcher::Prefix(one(&arg[2..])), true),
        [arg] if arg.starts_with('=') => (Matcher::Exact(one(&arg[1..])), false),
        [arg] if arg.starts_with("~*") => (Matcher::Regex(one(&arg[2..])), false),
        [arg] if arg.starts_with('~') => (Matcher::Regex(one(&arg[1..])), false),
        [arg] if arg.starts_with('/') => (Matcher::Prefix(one(arg)), false),
        // Not a form the importer knows: assume it could match anything.
        _ => (Matcher::Regex(String::new()), false),
    }
}

/// How a location with arguments `args` matches, as a certd route: its kind and the text shown as
/// its `path` in messages; `Err` when certd cannot match the same requests.
fn route_kind(args: &[String]) -> Result<(RouteKind, String), String> {
    let (modifier, pattern) = match args {
        [m, p] => (m.as_str(), p.as_str()),
        [one] if one.starts_with('@') || one.starts_with('/') => ("", one.as_str()),
        [one] => {
            let split = one.find(['/', '\\', '^', '(', '.']).unwrap_or(0);
            (&one[..split], &one[split..])
        }
        _ => return Err("not a location form the importer knows".to_owned()),
    };
    match modifier {
        "" | "^~" if pattern.starts_with('/') => Ok((RouteKind::Path, pattern.to_owned())),
        "" if pattern.starts_with('@') => {
            let name = &pattern[1..];
            if !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                Ok((RouteKind::Named(pattern.to_owned()), pattern.to_owned()))
            } else {
                Err(format!(
                    "`{pattern}`: certd names are letters, digits, `_` and `-`"
                ))
            }
        }
        "=" if pattern.starts_with('/') => {
            Ok((RouteKind::Exact(pattern.to_owned()), pattern.to_owned()))
        }
        "~" | "~*" => {
            // certd compiles route patterns with the `regex` crate: no look-around or
            // back-references (which it would refuse at load).
            regex::RegexBuilder::new(pattern)
                .case_insensitive(modifier == "~*")
                .size_limit(1 << 20)
                .build()
                .map_err(|err| format!("certd's regular expressions cannot read it: {err}"))?;
            let kind = if modifier == "~" {
                RouteKind::Regex(pattern.to_owned())
            } else {
                RouteKind::IRegex(pattern.to_owned())
            };
            Ok((kind, pattern.to_owned()))
        }
        _ => Err("not a location form the importer knows".to_owned()),
    }
}

/// What a location's body does, directive by directive.
struct Body<'d> {
    proxy_pass: Option<&'d Directive>,
    root: Option<(&'d str, Loc)>,
    keys: Keys,
    covered: Covered,
    notes: Vec<Note>,
    /// Lines that make the location answer differently from any route: (line, text, why).
    refusals: Vec<(Loc, String, String)>,
    /// It only refuses: `deny all` or `return 403|404`, besides lines without effect.
    only_refuses: bool,
    /// Its nested locations.
    nested: Vec<&'d Directive>,
}

fn body<'d>(scope: &Scope<'_>, d: &'d Directive) -> Body<'d> {
    let mut b = Body {
        proxy_pass: None,
        root: None,
        keys: Keys::default(),
        covered: Covered::new(),
        notes: Vec::new(),
        refusals: Vec::new(),
        only_refuses: true,
        nested: Vec::new(),
    };
    let mut refuses_something = false;
    let block: &[Directive] = d.block.as_deref().unwrap_or_default();
    // A location only `auth_request` subrequests reach: what it says about their body certd's
    // bodiless subrequest does anyway.
    let auth_only = block.iter().any(|i| i.name == "internal") && auth_only(scope, &d.args);
    for inner in block {
        let here = scope.at(inner);
        if auth_only && super::auth::subrequest_setting(inner) {
            if inner.name == "proxy_set_header" {
                // Still its own list: the server's proxy_set_header lines are not inherited.
                b.keys.take(inner, |_, _| true);
            }
            cover(&mut b.covered, Topic::AuthSubrequest, here);
            continue;
        }
        if inner.name == "auth_request" {
            if let Some(via) = inner
                .args
                .first()
                .and_then(|uri| super::auth::keeps_length(scope.body, uri))
            {
                b.notes.push(Note::Differs {
                    at: here,
                    text: format!(
                        "for a request with a body, nginx's subrequest carries the client's \
                         Content-Length without the body (`{via}` proxies it and does not set \
                         `proxy_set_header Content-Length \"\"`), so an auth server that reads \
                         request bodies waits for one that never comes; certd's subrequest has \
                         no Content-Length"
                    ),
                });
            }
        }
        let args: Vec<&str> = inner.args.iter().map(String::as_str).collect();
        let refusing = matches!(
            (inner.name.as_str(), args.as_slice()),
            ("deny", ["all"]) | ("return", ["403" | "404"])
        );
        refuses_something |= refusing;
        match (inner.name.as_str(), args.as_slice()) {
            ("proxy_pass", [_]) => b.proxy_pass = Some(inner),
            ("location", _) if inner.block.is_some() => b.nested.push(inner),
            ("root", [dir]) if !dir.contains('$') => b.root = Some((*dir, here)),
            ("index", ["index.html"]) => cover(&mut b.covered, Topic::Index, here),
            ("proxy_http_version", ["1.1" | "1.0"])
            | ("proxy_cache_bypass", _)
            | ("proxy_redirect", ["off"]) => cover(&mut b.covered, Topic::ProxyHeaders, here),
            // nginx's default: error and timeout go on to the next server, as certd does.
            ("proxy_next_upstream", ["error", "timeout"]) => {
                cover(&mut b.covered, Topic::NoEffect, here)
            }
            _ if super::edge::is_edge_directive(inner) => {}
            _ => match b.keys.take(inner, certd_sets) {
                Taken::Key => {}
                Taken::Covered(topic) => cover(&mut b.covered, topic, here),
                Taken::Refused(why) => b.refusals.push((here, directive_text(inner), why)),
                Taken::NotMine => match safety::effect(inner) {
                    Effect::None => cover(&mut b.covered, Topic::NoEffect, here),
                    Effect::Degrades(why) => {
                        b.notes.push(Note::untranslated(here, inner, Some(why)))
                    }
                    Effect::Refuses(why) => {
                        if !refusing {
                            b.only_refuses = false;
                        }
                        b.refusals.push((here, directive_text(inner), why))
                    }
                },
            },
        }
        if !refusing && matches!(inner.name.as_str(), "proxy_pass" | "root") {
            b.only_refuses = false;
        }
    }
    b.only_refuses &= refuses_something;
    if b.keys.has_limit_except() && !b.nested.is_empty() {
        // certd's nested routes do not take their route's `limit_except`: they could answer a
        // method the location refuses.
        if let Some(limit) = d
            .block
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|i| i.name == "limit_except")
        {
            b.refusals.push((
                scope.at(limit),
                directive_text(limit),
                "limit_except beside nested locations: certd's nested routes do not take it"
                    .to_owned(),
            ));
        }
    }
    b
}

/// Whether the block's `try_files` names a regex group (`$1`…`$9`).
fn uses_captures(keys: &Keys) -> bool {
    keys.try_files.iter().flatten().any(|item| {
        item.match_indices('$')
            .any(|(at, _)| item[at + 1..].starts_with(|c: char| ('1'..='9').contains(&c)))
    })
}

/// Whether the location with arguments `args` is reached internally by `auth_request`
/// subrequests and by nothing else.
fn auth_only(scope: &Scope<'_>, args: &[String]) -> bool {
    let catches = |uri: &&&str| match matched(args) {
        Matched::Exact(path) => **uri == path,
        Matched::Prefix(path) => uri.starts_with(path),
        Matched::Other => false,
    };
    let asked = scope.auth_uris.iter().filter(catches).count();
    // `redirect_uris` holds the `auth_request` URIs too.
    asked > 0 && scope.redirect_uris.iter().filter(catches).count() == asked
}

/// The URIs of `tree` nginx may redirect to internally (see [`Scope::redirect_uris`]).
fn redirect_targets<'a>(tree: &'a [Directive], out: &mut Vec<&'a str>) {
    for d in tree {
        let target = match d.name.as_str() {
            "try_files" | "error_page" => d.args.last(),
            // `break` stays in its location, `redirect`/`permanent` go back to the client.
            "rewrite" if matches!(d.args.get(2).map(String::as_str), None | Some("last")) => {
                d.args.get(1)
            }
            _ => None,
        };
        out.extend(target.map(String::as_str));
        redirect_targets(d.block.as_deref().unwrap_or_default(), out);
    }
}

/// `location = /check-auth { internal; … }`, `location ^~ /backups/ { internal; }`: nginx answers
/// 404 to every request a client sends there, before anything else in the block, so the route is
/// a 404 answer, when nothing in the server block redirects there internally (certd has no
/// internal redirects to such a route) and nothing in it changes that 404 (`error_page`,
/// `add_header … always`, a nested location a client could reach). The rewritten location, with
/// `return 404;` as its only line, or `None`.
fn internal_location(scope: &Scope<'_>, d: &Directive, matcher: &Matcher) -> Option<Directive> {
    let inner: &[Directive] = d.block.as_deref().unwrap_or_default();
    if !inner
        .iter()
        .any(|i| i.name == "internal" && i.args.is_empty())
    {
        return None;
    }
    let (path, exact) = match matcher {
        Matcher::Exact(path) => (path.as_str(), true),
        Matcher::Prefix(path) => (path.as_str(), false),
        Matcher::Regex(_) | Matcher::Named => return None,
    };
    let changes_the_404 = inner.iter().any(|i| {
        i.block.is_some()
            || i.name == "error_page"
            || (i.name == "add_header" && i.args.last().is_some_and(|a| a == "always"))
    });
    let reached = scope.redirect_uris.iter().any(|uri| {
        let literal = &uri[..uri.find(['$', '?']).unwrap_or(uri.len())];
        let variable = literal.len() < uri.len();
        if literal.starts_with('@') || literal.starts_with('=') {
            return false;
        }
        if exact {
            literal == path || (variable && path.starts_with(literal))
        } else {
            literal.starts_with(path) || (variable && path.starts_with(literal))
        }
    });
    if changes_the_404 || reached {
        return None;
    }
    let mut answer = d.clone();
    answer.block = Some(vec![Directive {
        name: "return".to_owned(),
        args: vec!["404".to_owned()],
        line: d.line,
        end_line: d.line,
        block: None,
        certbot: false,
    }]);
    Some(answer)
}

/// Whether certd sets request header `name` to `value` by itself.
pub(super) fn certd_sets(name: &str, value: &str) -> bool {
    proxy_header(name, value).is_some()
}

/// Translates the server-level `location` `d` into `part`: a route, or a [`LeftOut`] with the
/// reason. Returns whether it uses the server's root.
pub(super) fn location(scope: &Scope<'_>, d: &Directive, part: &mut ServerPart) -> bool {
    let at = scope.at(d);
    let (matcher, preferred) = matcher(&d.args);
    if let Matcher::Exact(path) = &matcher {
        let inner: &[Directive] = d.block.as_deref().unwrap_or_default();
        let simple = inner
            .iter()
            .all(|d| matches!(d.name.as_str(), "root" | "internal"));
        if simple && scope.error_uris.contains(path.as_str()) {
            cover(&mut part.covered, Topic::ErrorPageLocation, at);
            return false;
        }
    }
    if let Some(answer) = internal_location(scope, d, &matcher) {
        for inner in d.block.as_deref().unwrap_or_default() {
            cover(&mut part.covered, Topic::Internal, scope.at(inner));
        }
        return location(scope, &answer, part);
    }
    let path = match &matcher {
        Matcher::Prefix(path) | Matcher::Exact(path) => path.clone(),
        // What a regex or named location would add to the path: nothing known.
        Matcher::Regex(_) | Matcher::Named => String::new(),
    };
    let b = body(scope, d);
    let source = format!("location {}", d.args.join(" "));
    let mut uses_server_root = false;
    let kind = route_kind(&d.args);
    let is_path = matches!(kind, Ok((RouteKind::Path, _)));
    let mut strip = false;
    let target: Result<Target, String> = if let Some(answer) = &b.keys.answer {
        Ok(Target::Answer(answer.clone()))
    } else if let Some(proxy_pass) = b.proxy_pass {
        if b.keys.try_files.is_some() {
            Err(
                "try_files beside proxy_pass: nginx proxies only the paths that exist as files \
                 under root"
                    .to_owned(),
            )
        } else {
            if is_path && proxy_strips(&proxy_pass.args[0], &path) {
                strip = true;
            }
            proxy_target(&proxy_pass.args[0], &path, scope.upstreams, is_path).map(Target::Proxy)
        }
    } else if let Some(dir) = &b.keys.alias {
        if is_path {
            Ok(Target::Alias(dir.clone()))
        } else {
            Err("alias outside a prefix location (nginx then uses the regex's captures)".to_owned())
        }
    } else if let Some((dir, _)) = b.root {
        Ok(Target::Root(dir.to_owned()))
    } else if let Some((dir, _)) = scope.root {
        uses_server_root = true;
        Ok(Target::Root(dir.to_owned()))
    } else {
        Err("no proxy_pass and no root (nginx would serve its own html folder)".to_owned())
    };
    let mut why: Vec<String> = b
        .refusals
        .iter()
        .map(|(here, text, why)| format!("line {}: `{text}`: {why}", here.line))
        .collect();
    if let Err(err) = &kind {
        why.insert(0, err.clone());
    }
    if let Err(err) = &target {
        why.push(err.clone());
    }
    if b.keys.try_files.is_some() && !matches!(target, Ok(Target::Root(_))) {
        why.push("try_files needs a root to look for files in".to_owned());
    }
    if uses_captures(&b.keys)
        && !matches!(kind, Ok((RouteKind::Regex(_) | RouteKind::IRegex(_), _)))
    {
        why.push("try_files uses `$1`…`$9` outside a regex location".to_owned());
    }
    let mut nested = Vec::new();
    if why.is_empty() && !b.nested.is_empty() {
        match nested_routes(scope, &b.keys, b.root.or(scope.root), &b.nested) {
            Ok(routes) => nested = routes,
            Err(err) => why.push(err),
        }
    }
    if matches!(kind, Ok((RouteKind::Named(_) | RouteKind::Exact(_), _))) && !b.nested.is_empty() {
        why.push("certd nests routes in path and regex routes only".to_owned());
    }
    if let (Ok((kind, shown)), true, Ok(target)) = (&kind, why.is_empty(), &target) {
        let used = route(
            scope,
            d,
            (kind.clone(), shown.clone()),
            preferred,
            target.clone(),
            b,
            uses_server_root,
            part,
        );
        if let Some(route) = part.routes.last_mut() {
            route.nested = nested;
            if strip {
                route
                    .keys
                    .push(("strip_prefix".to_owned(), "true".to_owned()));
            }
        }
        return used;
    }
    let refuses_dotfiles_only =
        b.only_refuses && matches!(&matcher, Matcher::Regex(re) if safety::dotfiles_only(re));
    // A location certd can match exactly as nginx does (and with no nested locations, whose
    // regexes nginx would try first for its paths) becomes a stand-in that answers 502 for
    // precisely its requests: the other routes then take none of its paths, so they need not be
    // left out in turn (see `safety::resolve`), and nothing nginx answered here is served.
    // A prefix without a trailing `/` is not one: nginx's `location /x` also takes `/xy`, which
    // certd's route would leave to another one.
    let exactly = match &kind {
        Ok((RouteKind::Path, path)) => path.ends_with('/'),
        Ok(_) => true,
        Err(_) => false,
    };
    let stand_in = match (&kind, exactly, b.nested.is_empty(), refuses_dotfiles_only) {
        (Ok(kind), true, true, false) => {
            let mut stand_in = refusing_route(d, at, kind.clone(), why.join("; "));
            stand_in.source = format!("{source} (answers 502)");
            Some(Box::new(stand_in))
        }
        _ => None,
    };
    let (mut notes, covered) = (b.notes, b.covered);
    if let Some((dir, root_at)) = b.root {
        notes.extend(relative_root(dir, root_at));
    }
    part.left_out.push(LeftOut {
        at,
        matcher,
        answer: None,
        refuses_dotfiles_only,
        source,
        pending: Some((directive_text(d), why.join("; "), notes, covered)),
        preferred,
        stand_in,
    });
    uses_server_root
}

/// The routes of the locations `nested` inside a location whose own keys are `outer` and whose
/// root (its own or the server's) is `root`. A nested location certd cannot answer like nginx
/// becomes a route that answers 502, listed as untranslated with the reason: it matches exactly
/// the requests nginx sends to that location, so the parent never answers them differently (nor
/// serves what that location would have refused). `Err` with the reason when a nested location
/// cannot even be matched like nginx (then the outer location is left out whole).
fn nested_routes(
    scope: &Scope<'_>,
    outer: &Keys,
    root: Option<(&str, Loc)>,
    nested: &[&Directive],
) -> Result<Vec<Route>, String> {
    let mut routes = Vec::new();
    for d in nested {
        let at = scope.at(d);
        let fail = |why: String| {
            format!(
                "line {}: nested `location {}`: {why}",
                at.line,
                d.args.join(" ")
            )
        };
        let (kind, path) = route_kind(&d.args).map_err(fail)?;
        if matches!(kind, RouteKind::Named(_)) {
            return Err(fail(
                "nginx allows named locations at server level only".to_owned(),
            ));
        }
        match nested_route(scope, outer, root, d, (kind.clone(), path.clone())) {
            Ok(route) => routes.push(route),
            Err(why) => {
                let mut route = refusing_route(d, at, (kind, path), why);
                route.source = format!("location {} (nested; answers 502)", d.args.join(" "));
                routes.push(route);
            }
        }
    }
    Ok(routes)
}

/// The route standing in for location `d` (nested, see [`nested_routes`], or at server level,
/// see [`location`]) that certd cannot answer like nginx: it matches as `d` does and answers 502.
fn refusing_route(d: &Directive, at: Loc, (kind, path): (RouteKind, String), why: String) -> Route {
    let answer = "{ status = 502 }".to_owned();
    Route {
        path,
        target: Target::Answer(answer.clone()),
        at,
        source: format!("location {} (answers 502)", d.args.join(" ")),
        text: directive_text(d),
        covered: Covered::new(),
        notes: vec![Note::untranslated(
            at,
            d,
            Some(format!(
                "{why}; this route answers 502 for the requests nginx sends to this location, so \
                 no other route answers them differently"
            )),
        )],
        preferred: d.args.first().is_some_and(|m| m == "^~"),
        kind,
        keys: vec![("return".to_owned(), answer)],
        nested: Vec::new(),
    }
}

/// Nested location `d` (matched as `kind`/`path`) as a route, or why certd cannot answer it like
/// nginx.
fn nested_route(
    scope: &Scope<'_>,
    outer: &Keys,
    root: Option<(&str, Loc)>,
    d: &Directive,
    (kind, path): (RouteKind, String),
) -> Result<Route, String> {
    let at = scope.at(d);
    let b = body(scope, d);
    if let Some((here, text, why)) = b.refusals.first() {
        return Err(format!("line {}: `{text}`: {why}", here.line));
    }
    if !b.nested.is_empty()
        && !matches!(
            kind,
            RouteKind::Path | RouteKind::Regex(_) | RouteKind::IRegex(_)
        )
    {
        return Err("certd nests routes in path and regex routes only".to_owned());
    }
    // Deeper locations inherit from this one as this one does from its parent.
    let inner = if b.nested.is_empty() {
        Vec::new()
    } else {
        nested_routes(scope, &b.keys.or(outer), b.root.or(root), &b.nested)?
    };
    // nginx inherits root into a nested location, never proxy_pass, return or try_files.
    let mut strip = false;
    let target = if let Some(answer) = &b.keys.answer {
        Target::Answer(answer.clone())
    } else if let Some(proxy_pass) = b.proxy_pass {
        if b.keys.try_files.is_some() {
            return Err("try_files beside proxy_pass".to_owned());
        }
        let prefix = if kind == RouteKind::Path {
            path.as_str()
        } else {
            ""
        };
        let prefix_route = kind == RouteKind::Path;
        strip = prefix_route && proxy_strips(&proxy_pass.args[0], prefix);
        Target::Proxy(proxy_target(
            &proxy_pass.args[0],
            prefix,
            scope.upstreams,
            prefix_route,
        )?)
    } else if let Some(dir) = &b.keys.alias {
        if kind != RouteKind::Path {
            return Err("alias outside a prefix location".to_owned());
        }
        Target::Alias(dir.clone())
    } else if let Some((dir, _)) = b.root.or(root) {
        Target::Root(dir.to_owned())
    } else {
        return Err("no proxy_pass and no root".to_owned());
    };
    if b.keys.try_files.is_some() && !matches!(target, Target::Root(_)) {
        return Err("try_files needs a root to look for files in".to_owned());
    }
    if uses_captures(&b.keys) && !matches!(kind, RouteKind::Regex(_) | RouteKind::IRegex(_)) {
        return Err("try_files uses `$1`…`$9` outside a regex location".to_owned());
    }
    let mut keys = b.keys.or(outer).route_keys(
        &scope.keys,
        matches!(target, Target::Proxy(_)),
        matches!(target, Target::Root(_) | Target::Alias(_)),
    );
    if strip {
        keys.push(("strip_prefix".to_owned(), "true".to_owned()));
    }
    let mut notes = b.notes;
    if kind == RouteKind::Path && !path.ends_with('/') {
        notes.push(Note::Differs {
            at,
            text: format!(
                "nginx's `location {path}` also matches {path}x…; certd's route matches \
                     {path} and {path}/… only"
            ),
        });
    }
    Ok(Route {
        path,
        target,
        at,
        source: format!("location {} (nested)", d.args.join(" ")),
        text: directive_text(d),
        covered: b.covered,
        notes,
        preferred: d.args.first().is_some_and(|m| m == "^~"),
        kind,
        keys,
        nested: inner,
    })
}

/// A location that becomes a route.
#[allow(clippy::too_many_arguments)]
fn route(
    scope: &Scope<'_>,
    d: &Directive,
    (kind, path): (RouteKind, String),
    preferred: bool,
    target: Target,
    b: Body<'_>,
    uses_server_root: bool,
    part: &mut ServerPart,
) -> bool {
    let at = scope.at(d);
    let (covered, mut notes) = (b.covered, b.notes);
    if let (Target::Root(_), Some((dir, root_at))) = (&target, b.root) {
        notes.extend(relative_root(dir, root_at));
    }
    if let (Target::Proxy(_) | Target::Answer(_), Some((dir, root_at))) = (&target, b.root) {
        cover(&mut part.covered, Topic::UnusedRoot, root_at);
        let _ = dir;
    }
    if kind == RouteKind::Path && !path.ends_with('/') {
        notes.push(Note::Differs {
            at,
            text: format!(
                "nginx's `location {path}` also matches {path}x…; certd's route matches {path} and \
                 {path}/… only"
            ),
        });
    }
    let mut source = format!("location {}", d.args.join(" "));
    if uses_server_root {
        if let Some((_, root_at)) = scope.root {
            source.push_str(&format!(" (root from line {})", root_at.line));
        }
    }
    let keys = b.keys.route_keys(
        &scope.keys,
        matches!(target, Target::Proxy(_)),
        matches!(target, Target::Root(_) | Target::Alias(_)),
    );
    part.routes.push(Route {
        path,
        target,
        at,
        source,
        text: directive_text(d),
        covered,
        notes,
        preferred,
        kind,
        keys,
        nested: Vec::new(),
    });
    uses_server_root
}

/// `proxy_set_header NAME VALUE`: `Some` when certd does the same by itself (with a difference to
/// mention, if any), `None` when it does not.
fn proxy_header(name: &str, value: &str) -> Option<Option<&'static str>> {
    let ok = match name.to_ascii_lowercase().as_str() {
        "upgrade" => value == "$http_upgrade",
        "connection" => matches!(
            value.to_ascii_lowercase().as_str(),
            "upgrade" | "$connection_upgrade" | "$http_connection" | ""
        ),
        "host" => matches!(value, "$host" | "$http_host"),
        "x-forwarded-for" => matches!(value, "$proxy_add_x_forwarded_for" | "$remote_addr"),
        "x-forwarded-proto" => matches!(value, "$scheme" | "https"),
        "x-forwarded-host" => matches!(value, "$host" | "$http_host" | "$server_name"),
        // certd sets X-Real-IP to the client's address itself (the real client behind
        // `[https] trusted_proxies`, like nginx's $remote_addr with the realip module).
        "x-real-ip" => value == "$remote_addr",
        _ => false,
    };
    ok.then_some(None)
}

/// The `proxy = "…"` for `proxy_pass URL` in `location PATH`; `Err` with the reason when certd
/// cannot proxy there the same way.
fn proxy_target(
    url: &str,
    path: &str,
    upstreams: &BTreeMap<String, Upstream>,
    prefix_route: bool,
) -> Result<String, String> {
    if url.contains('$') {
        return Err("the address uses variables; certd proxies to a fixed address".to_owned());
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(if url.starts_with("https://") {
            "certd reaches upstreams over plain http only (on loopback or a private network)"
                .to_owned()
        } else {
            "certd proxies to http:// addresses only".to_owned()
        });
    };
    let (authority, uri) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if authority.is_empty() {
        return Err("the address has no host".to_owned());
    }
    let authority = match upstreams.get(authority) {
        Some(Upstream {
            single: Some(address),
            ..
        }) => address.as_str(),
        Some(Upstream { group: Ok(_), .. }) => authority,
        Some(Upstream {
            at,
            group: Err(why),
            ..
        }) => {
            return Err(format!(
                "`{authority}` is the upstream block on line {}: {why}",
                at.line
            ))
        }
        None => authority,
    };
    if uri.contains('?') {
        return Err("certd upstreams cannot have a query".to_owned());
    }
    if prefix_route && strips_prefix(uri, path) {
        // nginx swaps the matched prefix for the URI part: certd's `strip_prefix = true` (the
        // caller adds it, see `proxy_strips`) cuts the route's prefix and appends the rest.
        let proxy = format!("http://{authority}{uri}");
        proxy
            .parse::<hyper::Uri>()
            .map_err(|err| format!("`{proxy}` is not a URL certd accepts: {err}"))?;
        return Ok(proxy);
    }
    if !uri.is_empty() && uri != path {
        // certd puts a base path in front of the whole path; nginx swaps the matched prefix.
        let example = if path.ends_with('/') {
            format!("{path}x")
        } else {
            format!("{path}/x")
        };
        let nginx = format!("{uri}{}", example.get(path.len()..).unwrap_or_default());
        return Err(format!(
            "nginx replaces the matched prefix {path} with {uri} ({example} → {nginx}); certd \
             would put {uri} in front of the whole path"
        ));
    }
    // With its own path equal to the location's, nginx sends the same path: no base path.
    let proxy = format!("http://{authority}");
    proxy
        .parse::<hyper::Uri>()
        .map_err(|err| format!("`{proxy}` is not a URL certd accepts: {err}"))?;
    Ok(proxy)
}

/// Whether `proxy_pass URL` in prefix `location PATH` replaces the matched prefix in a way
/// certd's `strip_prefix = true` does the same: a URI part other than the path itself, and
/// both ending in `/` or neither (`/jellyfin/` → `http://s/`: `/jellyfin/x` → `/x`). A route whose
/// `proxy` [`proxy_target`] made with a path must get `strip_prefix = true`.
pub(super) fn proxy_strips(url: &str, path: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let uri = &rest[rest.find('/').unwrap_or(rest.len())..];
    strips_prefix(uri, path)
}

fn strips_prefix(uri: &str, path: &str) -> bool {
    !uri.is_empty()
        && uri != path
        && path.starts_with('/')
        && path.ends_with('/') == uri.ends_with('/')
        && !uri.contains(['?', '$'])
}

/// A server-level `error_page CODE... URI`: one `[site.error_pages]` entry per code, the file
/// being URI under the root nginx would read it from. Returns whether that is the server's root.
pub(super) fn error_page(scope: &Scope<'_>, d: &Directive, part: &mut ServerPart) -> bool {
    let at = scope.at(d);
    if let Some((codes, uri)) = proxied_error_page(scope, d) {
        let text = directive_text(d);
        for code in codes {
            part.error_pages.push((
                code,
                ErrorPage {
                    file: uri.clone(),
                    uri: true,
                    at,
                    text: text.clone(),
                },
            ));
        }
        return false;
    }
    match error_files(scope, d) {
        Ok(files) => {
            let text = directive_text(d);
            for code in files.codes {
                part.error_pages.push((
                    code,
                    ErrorPage {
                        file: files.file.clone(),
                        uri: false,
                        at,
                        text: text.clone(),
                    },
                ));
            }
            scope
                .root
                .is_some_and(|(server_root, _)| server_root == files.root)
        }
        Err(why) => {
            part.notes.push(Note::untranslated(at, d, Some(why)));
            false
        }
    }
}

/// The codes and URI of `error_page CODE... /URI` whose URI a proxied location answers: nginx
/// then fetches the page from that upstream (a GET, keeping the original status), which is what
/// certd's `[[site.error_page]]` does through the site's routes.
fn proxied_error_page(scope: &Scope<'_>, d: &Directive) -> Option<(Vec<u16>, String)> {
    let (uri, codes) = d.args.split_last().filter(|(_, codes)| !codes.is_empty())?;
    if !uri.starts_with('/') || uri.contains(['$', '?']) || codes.iter().any(|c| c.starts_with('='))
    {
        return None;
    }
    let proxied = scope.root_for(uri).err()?;
    if !proxied.starts_with("nginx fetches") {
        return None;
    }
    codes
        .iter()
        .map(|code| code.parse::<u16>().ok().filter(|c| (400..=599).contains(c)))
        .collect::<Option<Vec<u16>>>()
        .map(|codes| (codes, uri.clone()))
}

/// What one `error_page` directive sets.
struct ErrorFiles<'a> {
    codes: Vec<u16>,
    /// The file for all of them.
    file: String,
    /// The root it is under.
    root: &'a str,
}

/// The codes, file and root of `error_page` `d`, or why certd cannot take it over.
fn error_files<'a>(scope: &Scope<'a>, d: &Directive) -> Result<ErrorFiles<'a>, String> {
    let Some((uri, codes)) = d.args.split_last().filter(|(_, codes)| !codes.is_empty()) else {
        return Err("expected `error_page CODE... URI`".to_owned());
    };
    if d.args.iter().any(|arg| arg.starts_with('=')) {
        return Err("`=CODE` changes the status; certd keeps the status of its error".to_owned());
    }
    if !uri.starts_with('/') || uri.contains('$') {
        return Err("certd error pages are files, not redirects or named locations".to_owned());
    }
    let root = scope.root_for(uri)?;
    let codes = codes
        .iter()
        .map(|code| match code.parse::<u16>() {
            Ok(parsed) if (400..=599).contains(&parsed) => Ok(parsed),
            _ => Err(format!(
                "`{code}`: certd error pages are for statuses 400 to 599"
            )),
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(ErrorFiles {
        codes,
        file: format!("{}{uri}", root.trim_end_matches('/')),
        root,
    })
}

/// For a relative `root`: nginx and certd resolve it against different folders.
pub(super) fn relative_root(root: &str, at: Loc) -> Option<Note> {
    (!root.starts_with('/')).then(|| Note::Differs {
        at,
        text: format!(
            "the root `{root}` is relative: nginx resolves it against its prefix (often \
             /usr/share/nginx or /etc/nginx), certd against certd.toml's folder; write an \
             absolute path"
        ),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn proxy_pass_paths() {
        let none = BTreeMap::new();
        let ok = |url, path| proxy_target(url, path, &none, false).unwrap();
        assert_eq!(ok("http://localhost:8080", "/"), "http://localhost:8080");
        assert_eq!(ok("http://127.0.0.1:8081", "/ws"), "http://127.0.0.1:8081");
        // The same path as the location: nginx maps /api/x to /api/x, as certd does without one.
        assert_eq!(
            ok("http://127.0.0.1:9000/api/", "/api/"),
            "http://127.0.0.1:9000"
        );
        assert_eq!(ok("http://127.0.0.1:9000/", "/"), "http://127.0.0.1:9000");
        // Another path: nginx swaps the prefix, which certd's base path does not do.
        let why = proxy_target("http://127.0.0.1:9000/", "/api/", &none, false).unwrap_err();
        assert!(why.contains("/api/x → /x"), "{why}");
        // On a prefix route that is `strip_prefix = true` with the URI part as the base path,
        // when both end in `/` or neither does.
        let strip = |url, path| proxy_target(url, path, &none, true).unwrap();
        assert_eq!(
            strip("http://127.0.0.1:9000/", "/api/"),
            "http://127.0.0.1:9000/"
        );
        assert!(proxy_strips("http://127.0.0.1:9000/", "/api/"));
        assert_eq!(strip("http://s:1/v1", "/api"), "http://s:1/v1");
        assert!(proxy_strips("http://s:1/v1", "/api"));
        assert!(!proxy_strips("http://s:1/api/", "/api/"));
        assert!(!proxy_strips("http://s:1", "/api/"));
        assert!(!proxy_strips("http://s:1/", "/api"));
        assert!(proxy_target("http://127.0.0.1:9000/", "/api", &none, true).is_err());
        assert!(
            proxy_target("http://127.0.0.1:9000/v1", "/api", &none, false)
                .unwrap_err()
                .contains("/api/x → /v1/x")
        );

        let upstreams = BTreeMap::from([
            (
                "bad".to_owned(),
                Upstream {
                    at: Loc { file: 0, line: 3 },
                    single: None,
                    group: Err("hash".to_owned()),
                },
            ),
            (
                "app".to_owned(),
                Upstream {
                    at: Loc { file: 0, line: 5 },
                    single: None,
                    group: Ok(String::new()),
                },
            ),
            (
                "one".to_owned(),
                Upstream {
                    at: Loc { file: 0, line: 7 },
                    single: Some("127.0.0.1:3000".to_owned()),
                    group: Ok(String::new()),
                },
            ),
        ]);
        assert!(proxy_target("http://bad", "/", &upstreams, false)
            .unwrap_err()
            .contains("line 3"));
        assert_eq!(
            proxy_target("http://app", "/", &upstreams, false).unwrap(),
            "http://app"
        );
        assert_eq!(
            proxy_target("http://one", "/", &upstreams, false).unwrap(),
            "http://127.0.0.1:3000"
        );
        assert!(proxy_target("https://127.0.0.1:8443", "/", &none, false).is_err());
        assert!(proxy_target("http://$backend", "/", &none, false).is_err());
        assert!(proxy_target("unix:/run/app.sock", "/", &none, false).is_err());
        assert!(proxy_target("http://127.0.0.1:8080/?a=b", "/", &none, false).is_err());
    }

    #[test]
    fn proxy_headers_certd_sets_itself() {
        assert_eq!(proxy_header("Upgrade", "$http_upgrade"), Some(None));
        assert_eq!(proxy_header("Connection", "upgrade"), Some(None));
        assert_eq!(proxy_header("Connection", "Upgrade"), Some(None));
        assert_eq!(proxy_header("Host", "$host"), Some(None));
        assert_eq!(
            proxy_header("X-Forwarded-For", "$proxy_add_x_forwarded_for"),
            Some(None)
        );
        assert_eq!(proxy_header("X-Forwarded-Proto", "$scheme"), Some(None));
        // What certd sets by itself (the real client behind [https] trusted_proxies).
        assert_eq!(proxy_header("X-Real-IP", "$remote_addr"), Some(None));
        assert_eq!(proxy_header("X-Real-IP", "$http_x_real_ip"), None);
        assert_eq!(proxy_header("Host", "backend.internal"), None);
        assert_eq!(proxy_header("X-Api-Key", "secret"), None);
    }

    #[test]
    fn location_modifiers() {
        let m = |args: &[&str]| {
            let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
            format!("{:?}", matched(&args))
        };
        assert_eq!(m(&["/"]), "Prefix(\"/\")");
        assert_eq!(m(&["^~", "/static/"]), "Prefix(\"/static/\")");
        assert_eq!(m(&["=", "/50x.html"]), "Exact(\"/50x.html\")");
        assert_eq!(m(&["=/50x.html"]), "Exact(\"/50x.html\")");
        assert_eq!(m(&["~", "\\.php$"]), "Other");
        assert_eq!(m(&["~*", "\\.(png|jpg)$"]), "Other");
        assert_eq!(m(&["@fallback"]), "Other");
    }
}
