//! One nginx `server { }` block, translated on its own into a [`ServerPart`]: its valid names, whether
//! it only redirects :80 to https, its `listen` and TLS lines, and (through [`super::location`]) its
//! routes and error pages. [`super::translate`] then groups parts into sites.

use std::collections::{BTreeMap, BTreeSet};

use super::edge;
use super::keys::{Keys, Taken};
use super::location::{self, certd_sets, Scope};
use super::parse::{directive_text, Directive};
use super::php::{self, Php};
use super::safety::Matcher;
use super::safety::{self, Effect, LeftOut};
use super::translate::{
    cover, is_tls_setting, why_untranslated, Covered, ErrorPage, Loc, Note, Route, Topic, Upstream,
};
use super::translate::{RouteKind, Target};
use crate::hostname::validate_dns_name;

/// A name from `server_name`, with where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Name {
    /// Validated and lower-cased.
    pub(super) name: String,
    pub(super) at: Loc,
    /// The whole `server_name` directive as nginx text.
    pub(super) text: String,
}

/// What a server block does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// It serves something: it becomes a site.
    Content,
    /// It only redirects to https (and certbot's `return 404` for other hosts): it joins the site
    /// with its names.
    Redirect,
}

/// One server block, translated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ServerPart {
    pub(super) at: Loc,
    /// The block as nginx text, for a note if it becomes no site.
    pub(super) text: String,
    pub(super) names: Vec<Name>,
    /// Why names were left out (`_`, IP addresses, wildcards).
    pub(super) name_problems: Vec<String>,
    pub(super) kind: Kind,
    pub(super) tls: bool,
    pub(super) plain: bool,
    pub(super) covered: Covered,
    pub(super) certbot: bool,
    pub(super) notes: Vec<Note>,
    pub(super) routes: Vec<Route>,
    pub(super) error_pages: Vec<(u16, ErrorPage)>,
    /// Locations that did not become routes (see [`safety`]).
    pub(super) left_out: Vec<LeftOut>,
    /// Its `listen … default_server` lines, each with whether it is TLS.
    pub(super) default_server: Vec<(Loc, bool)>,
    /// The site-level keys of its server-level directives.
    pub(super) keys: Vec<(String, String)>,
    /// nginx's catch-all server: no `server_name`, or only `_`/`""` (see `--default-name`).
    pub(super) catch_all: bool,
}

impl ServerPart {
    /// The set of names, which decides the site it belongs to.
    pub(super) fn key(&self) -> BTreeSet<String> {
        self.names.iter().map(|name| name.name.clone()).collect()
    }

    /// What it did in nginx, for the site's header comment.
    pub(super) fn role(&self) -> &'static str {
        match (self.kind, self.tls, self.plain) {
            (Kind::Redirect, ..) => "http → https redirect",
            (Kind::Content, true, true) => "http and https",
            (Kind::Content, true, false) => "https",
            (Kind::Content, false, _) => "http",
        }
    }
}

/// Translates the server block `d` of file `file`; `upstreams` are the `upstream` blocks seen.
pub(super) fn server(
    d: &Directive,
    file: usize,
    upstreams: &BTreeMap<String, Upstream>,
    body_size: Option<&str>,
    maps: &BTreeSet<String>,
) -> ServerPart {
    let body: &[Directive] = d.block.as_deref().unwrap_or_default();
    // `set $public /srv;` then `root $public;`: the value written where it is used.
    let literal = super::vars::literal_sets(body, maps);
    let substituted = super::vars::substitute(body, &literal);
    let body: &[Directive] = &substituted;
    let at = |d: &Directive| Loc { file, line: d.line };
    let mut part = ServerPart {
        at: at(d),
        text: directive_text(d),
        names: Vec::new(),
        name_problems: Vec::new(),
        kind: Kind::Content,
        tls: false,
        plain: false,
        covered: Covered::new(),
        certbot: false,
        notes: Vec::new(),
        routes: Vec::new(),
        error_pages: Vec::new(),
        left_out: Vec::new(),
        default_server: Vec::new(),
        keys: Vec::new(),
        catch_all: body
            .iter()
            .filter(|d| d.name == "server_name")
            .flat_map(|d| d.args.iter())
            .all(|a| a.is_empty() || a == "_"),
    };
    for name in body.iter().filter(|d| d.name == "server_name") {
        names(name, at(name), &mut part);
    }

    let ssl_on = body.iter().any(|d| d.name == "ssl" && d.args == ["on"]);
    let listens: Vec<(&Directive, Listen)> = body
        .iter()
        .filter(|d| d.name == "listen")
        .map(|d| (d, listen(d)))
        .collect();
    let is_tls = |l: &Listen| l.ssl || l.port == Some(443) || (ssl_on && l.port != Some(80));
    part.tls = ssl_on || listens.iter().any(|(_, l)| is_tls(l));
    part.plain = listens.is_empty() || listens.iter().any(|(_, l)| !is_tls(l));
    let owned: Vec<String> = part.names.iter().map(|n| n.name.clone()).collect();
    let names: Vec<&str> = owned.iter().map(String::as_str).collect();
    // A server-level `return`/`rewrite` to https runs before any location is matched, so such a
    // block serves nothing; certbot's `if ($host = …)` blocks redirect only the hosts they name
    // and end in `return 404`.
    let redirects: Vec<Redirect> = body
        .iter()
        .filter_map(|d| https_redirect(d, &names)?.ok())
        .collect();
    let serves = body
        .iter()
        .any(|d| matches!(d.name.as_str(), "location" | "root"));
    if redirects.iter().any(|r| r.every_request) || (!redirects.is_empty() && !serves) {
        part.kind = Kind::Redirect;
    }
    // Mastodon's and PeerTube's :80 block: `location / { return 301 https://…; }` beside an ACME
    // webroot location. certd redirects :80 and answers HTTP-01 itself.
    let locations: Vec<&Directive> = body.iter().filter(|d| d.name == "location").collect();
    if !part.tls
        && locations.iter().any(|l| slash_redirect(l, &names))
        && locations
            .iter()
            .all(|l| slash_redirect(l, &names) || acme_webroot(l))
    {
        part.kind = Kind::Redirect;
    }
    for (l, listen) in &listens {
        if l.args
            .iter()
            .any(|a| a == "default_server" || a == "default")
        {
            part.default_server.push((at(l), is_tls(listen)));
        }
    }
    // Directives that apply to every location: a route without them would answer differently.
    let mut server_refusals: Vec<String> = Vec::new();
    // A server-level `index` certd cannot take: only routes that may consult it are left out.
    let mut index_refusals: Vec<String> = Vec::new();

    let scope = Scope::new(file, upstreams, body);
    // The WordPress-style PHP location, when the block has exactly one FastCGI location and it is
    // the idiom certd's FastCGI route does (see `super::php`).
    let fastcgi: Vec<Result<Php, String>> = body
        .iter()
        .filter(|d| d.name == "location")
        .filter_map(|d| php::php_location(d, at(d), upstreams))
        .collect();
    let php = match fastcgi.as_slice() {
        [Ok(php)] => Some(php.clone()),
        _ => None,
    };
    // A PHP location that is a route of its own is translated where it stands (file order
    // matters among regex routes); otherwise it becomes part of the `/` route at the end.
    let own_php = php
        .as_ref()
        .is_some_and(|php| php::own_route_needed(php, body));
    let mut root_used = false;
    for d in body {
        let here = at(d);
        match d.name.as_str() {
            "server_name" => {}
            "set" if super::vars::is_resolved_set(d, &literal) => {
                cover(&mut part.covered, Topic::LiteralSet, here)
            }
            "listen" => {
                let l = listen(d);
                match l.problem {
                    Some(why) => part.notes.push(Note::untranslated(here, d, Some(why))),
                    None if is_tls(&l) => cover(&mut part.covered, Topic::Tls, here),
                    None if part.kind == Kind::Redirect => {
                        cover(&mut part.covered, Topic::Redirect, here)
                    }
                    None => cover(&mut part.covered, Topic::PlainHttp, here),
                }
                part.certbot |= d.certbot;
            }
            _ if is_tls_setting(d) => {
                cover(&mut part.covered, Topic::Tls, here);
                part.certbot |= d.certbot;
            }
            "return" | "rewrite" | "if" => match https_redirect(d, &names) {
                Some(Ok(redirect)) => {
                    cover(&mut part.covered, Topic::Redirect, here);
                    if !redirect.keeps_host {
                        part.notes.push(Note::Differs {
                            at: here,
                            text: "nginx redirects to https://$server_name, the first name; \
                                   certd redirects to the name the client asked for"
                                .to_owned(),
                        });
                    }
                }
                Some(Err(why)) => part.notes.push(Note::untranslated(here, d, Some(why))),
                None if part.kind == Kind::Redirect && d.name == "return" && d.args == ["404"] => {
                    cover(&mut part.covered, Topic::Redirect, here)
                }
                None => {
                    server_refusals.push(format!("line {}: `{}`", here.line, directive_text(d)));
                    part.notes
                        .push(Note::untranslated(here, d, why_untranslated(d)))
                }
            },
            "location" if part.kind == Kind::Redirect && acme_webroot(d) => {
                cover(&mut part.covered, Topic::AcmeWebroot, here)
            }
            "location" if part.kind == Kind::Redirect && slash_redirect(d, &names) => {
                cover(&mut part.covered, Topic::Redirect, here)
            }
            "root" | "location" | "index" | "error_page" if part.kind == Kind::Redirect => {
                cover(&mut part.covered, Topic::Unreachable, here)
            }
            "root" if d.args.len() == 1 && d.block.is_none() => {}
            "index" if d.args == ["index.html"] => cover(&mut part.covered, Topic::Index, here),
            "error_page" => root_used |= location::error_page(&scope, d, &mut part),
            "location" if php.as_ref().is_some_and(|php| php.at == here) => {
                if let (Some(php), true) = (&php, own_php && part.kind == Kind::Content) {
                    root_used |= php::own_route(&scope, d, php, &mut part);
                }
            }
            "location" if d.block.is_some() => {
                root_used |= location::location(&scope, d, &mut part)
            }
            // Translated for every file at once: see `super::edge`.
            _ if edge::is_edge_directive(d) => {}
            // What locations inherit: site keys (see `super::keys`).
            name if !matches!(name, "try_files" | "alias")
                && part.kind == Kind::Content
                && !matches!(Keys::default().take(d, |_, _| false), Taken::NotMine) =>
            {
                match Keys::default().take(d, certd_sets) {
                    Taken::Key => {}
                    Taken::Covered(topic) => cover(&mut part.covered, topic, here),
                    Taken::NotMine => {}
                    Taken::Refused(why) => {
                        let refusals = if name == "index" {
                            &mut index_refusals
                        } else {
                            &mut server_refusals
                        };
                        refusals.push(format!(
                            "line {}: `{}`: {why}",
                            here.line,
                            directive_text(d)
                        ));
                        part.notes.push(Note::untranslated(here, d, Some(why)))
                    }
                }
            }
            "allow"
            | "deny"
            | "auth_basic"
            | "auth_basic_user_file"
            | "auth_request"
            | "try_files"
            | "limit_except"
                if part.kind == Kind::Content =>
            {
                if let Effect::Refuses(why) = safety::effect(d) {
                    server_refusals.push(format!(
                        "line {}: `{}`: {why}",
                        here.line,
                        directive_text(d)
                    ));
                }
                part.notes
                    .push(Note::untranslated(here, d, why_untranslated(d)))
            }
            _ => part
                .notes
                .push(Note::untranslated(here, d, why_untranslated(d))),
        }
    }

    if let Some((root, root_at)) = scope.root.filter(|_| part.kind == Kind::Content) {
        let has_slash = body.iter().any(|d| {
            d.name == "location"
                && matches!(location::matched(&d.args), location::Matched::Prefix("/"))
        });
        if !has_slash {
            part.routes.push(Route {
                path: "/".to_owned(),
                target: super::translate::Target::Root(root.to_owned()),
                at: root_at,
                source: "root (no `location /`: nginx serves the root for every path)".to_owned(),
                text: format!("root {root};"),
                covered: Covered::new(),
                notes: Vec::new(),
                preferred: false,
                kind: super::translate::RouteKind::Path,
                keys: Keys::default().route_keys(&scope.keys, false, true),
                nested: Vec::new(),
            });
            root_used = true;
        }
        if root_used {
            if let Some(note) = location::relative_root(root, root_at) {
                part.notes.push(note);
            }
        } else {
            cover(&mut part.covered, Topic::UnusedRoot, root_at);
        }
    }
    if part.kind == Kind::Content && !(server_refusals.is_empty() && index_refusals.is_empty()) {
        let only_index = server_refusals.is_empty();
        server_refusals.extend(index_refusals);
        let why = format!(
            "left out: nginx applies {} to every location of this server block, and certd \
             would answer without it",
            server_refusals.join(", ")
        );
        for route in std::mem::take(&mut part.routes) {
            if only_index && never_indexes(&route) {
                part.routes.push(route);
                continue;
            }
            if only_index {
                // Kept routes must not take the paths nginx answers through this one.
                part.left_out.push(safety::dropped(&route));
            }
            part.notes.push(Note::Untranslated {
                at: route.at,
                text: route.text,
                why: Some(why.clone()),
            });
        }
    }
    if part.kind == Kind::Content {
        part.keys = scope.keys.site_keys(body_size);
    }
    if let Some(php) = php.filter(|_| part.kind == Kind::Content && !own_php) {
        php_route(&php, body, &mut part);
    }
    safety::fold_same_answers(&mut part.routes, &mut part.covered, &mut part.notes);
    safety::resolve(&mut part.routes, &mut part.left_out, &mut part.notes);
    safety::finish(
        &part.routes,
        &mut part.left_out,
        &mut part.covered,
        &mut part.notes,
    );
    part
}

/// Whether nginx's `index` never takes part in answering `route`'s requests, so that a
/// server-level `index` certd cannot translate (`index index.php /index.php$request_uri`) leaves
/// it as it is: it only answers with `return`, or it is an exact location for a path that does
/// not end in `/` and serves that one file. Either way without `try_files` (`$uri/` would consult
/// the index), rewrites or error pages (which go on to other locations) and nested locations.
fn never_indexes(route: &Route) -> bool {
    let elsewhere = route.keys.iter().any(|(key, _)| {
        matches!(key.as_str(), "try_files" | "rewrite") || key.starts_with("error_page")
    });
    if elsewhere || !route.nested.is_empty() {
        return false;
    }
    match (&route.target, &route.kind) {
        (Target::Answer(_), _) => true,
        (Target::Root(_) | Target::Alias(_), RouteKind::Exact(path)) => !path.ends_with('/'),
        _ => false,
    }
}

/// Makes the `/` static route the FastCGI route of `php` (its `try_files … /index.php` becomes
/// the front controller), and records the PHP location as answered by it, so that every other
/// route nginx would not send `.php` paths to is checked by [`safety::resolve`]; without such a
/// route the PHP location is left out.
fn php_route(php: &Php, body: &[Directive], part: &mut ServerPart) {
    let d = body
        .iter()
        .find(|d| d.name == "location" && part_at(part, d) == php.at);
    let text = d.map(directive_text).unwrap_or_default();
    let source = d.map_or_else(String::new, |d| format!("location {}", d.args.join(" ")));
    let slash = part.routes.iter_mut().find(|r| {
        r.kind == RouteKind::Path && r.path == "/" && matches!(r.target, Target::Root(_))
    });
    let own_root = d
        .and_then(|d| d.block.as_deref())
        .is_some_and(|b| b.iter().any(|i| i.name == "root"));
    let Some(route) = slash.filter(|_| !own_root) else {
        part.left_out.push(LeftOut {
            stand_in: None,
            at: php.at,
            matcher: Matcher::Regex(php.re.clone()),
            answer: None,
            refuses_dotfiles_only: false,
            source,
            pending: Some((
                text,
                "certd runs PHP from a FastCGI route over the server's root at `/`, and this \
                 block has no such static `location /` (or the PHP location has its own root)"
                    .to_owned(),
                Vec::new(),
                Covered::new(),
            )),
            preferred: false,
        });
        return;
    };
    let try_files = route.keys.iter().position(|(k, _)| k == "try_files");
    let front = match try_files.map(|i| route.keys[i].1.as_str()) {
        Some("[\"$uri\", \"$uri/\", \"/index.php\"]") => "\"/index.php\"",
        Some("[\"$uri\", \"$uri/\", \"=404\"]" | "[\"$uri\", \"=404\"]") | None => "false",
        Some(_) => {
            let why = "its try_files is not the front-controller idiom certd's FastCGI route has \
                       (`try_files $uri $uri/ /index.php?$args`)";
            part.left_out.push(LeftOut {
                stand_in: None,
                at: php.at,
                matcher: Matcher::Regex(php.re.clone()),
                answer: None,
                refuses_dotfiles_only: false,
                source,
                pending: Some((text, why.to_owned(), Vec::new(), Covered::new())),
                preferred: false,
            });
            return;
        }
    };
    // A folder: certd's FastCGI route tries the route's `index` names in order (a `.php` one runs,
    // another is served) and answers 403 with none, as nginx's index module does; only when no
    // name is a script does it put its `fastcgi_index` first, which nginx would not.
    let script = php.index.as_deref().unwrap_or("index.php");
    let index = route
        .keys
        .iter()
        .chain(part.keys.iter())
        .find(|(k, _)| k == "index")
        .map_or("[\"index.html\"]", |(_, v)| v.as_str());
    if !index.to_ascii_lowercase().contains(".php\"") {
        let why = format!(
            "nginx's `index` here is {index}, with no PHP script: certd's FastCGI route would run \
             a folder's {script} first (add it to nginx's `index` list to translate this)"
        );
        part.left_out.push(LeftOut {
            stand_in: None,
            at: php.at,
            matcher: Matcher::Regex(php.re.clone()),
            answer: None,
            refuses_dotfiles_only: false,
            source,
            pending: Some((text, why, Vec::new(), Covered::new())),
            preferred: false,
        });
        return;
    }
    if let Some(i) = try_files {
        route.keys.remove(i);
    }
    let mut keys = vec![("fastcgi".to_owned(), super::keys::toml_str(&php.pass))];
    if let Some(index) = &php.index {
        keys.push(("fastcgi_index".to_owned(), super::keys::toml_str(index)));
    }
    keys.push(("front_controller".to_owned(), front.to_owned()));
    if php.intercept {
        keys.push(("intercept_errors".to_owned(), "true".to_owned()));
    }
    keys.append(&mut route.keys);
    route.keys = keys;
    route.source.push_str(&format!(
        " with `{source}` (line {}): certd's FastCGI route",
        php.at.line
    ));
    if front != "false" {
        route.notes.push(Note::Differs {
            at: php.at,
            text: "nginx hands every path ending in .php to php-fpm (a missing script is \
                   php-fpm's own 404 page); certd runs existing scripts only and answers a \
                   missing one 404 itself"
                .to_owned(),
        });
    }
    cover(&mut part.covered, Topic::Fastcgi, php.at);
    part.left_out.push(LeftOut {
        stand_in: None,
        at: php.at,
        matcher: Matcher::Regex(php.re.clone()),
        answer: Some((route.target.clone(), route.keys.clone())),
        refuses_dotfiles_only: false,
        source,
        pending: None,
        preferred: false,
    });
}

fn part_at(part: &ServerPart, d: &Directive) -> Loc {
    Loc {
        file: part.at.file,
        line: d.line,
    }
}

/// `location / { return 301 https://$host$request_uri; }` (or another https redirect of the
/// same host and path).
fn slash_redirect(d: &Directive, names: &[&str]) -> bool {
    let inner: &[Directive] = d.block.as_deref().unwrap_or_default();
    d.args == ["/"]
        && matches!(inner, [only] if matches!(https_redirect(only, names), Some(Ok(r)) if r.every_request))
}

/// An ACME webroot location (`/.well-known/acme-challenge/`): HTTP-01 answers, which certd gives
/// itself on :80.
fn acme_webroot(d: &Directive) -> bool {
    d.args.last().is_some_and(|path| {
        path.trim_end_matches('/')
            .ends_with("/.well-known/acme-challenge")
    })
}

/// Reads one `server_name` directive into `part`: names are split on whitespace and commas,
/// validated, lower-cased and de-duplicated; invalid ones are noted.
fn names(d: &Directive, at: Loc, part: &mut ServerPart) {
    let text = directive_text(d);
    for arg in &d.args {
        for piece in arg.split(',') {
            let piece = piece.trim();
            if piece.is_empty() {
                continue;
            }
            if piece == "_" {
                let why = "`_` is nginx's catch-all, no DNS name: name the site with `certd \
                           import nginx --default-name NAME`"
                    .to_owned();
                part.notes
                    .push(Note::untranslated(at, d, Some(why.clone())));
                part.name_problems.push(why);
                continue;
            }
            match validate_dns_name(piece) {
                Ok(name) => {
                    if arg.contains(',') {
                        part.notes.push(Note::Differs {
                            at,
                            text: format!(
                                "nginx takes `{arg}`, comma included, as a name that no request \
                                 matches; certd uses `{name}`"
                            ),
                        });
                    }
                    if !part.names.iter().any(|seen| seen.name == name) {
                        part.names.push(Name {
                            name,
                            at,
                            text: text.clone(),
                        });
                    }
                }
                Err(reason) => {
                    let why = format!("`{piece}` is left out: {reason}");
                    part.notes
                        .push(Note::untranslated(at, d, Some(why.clone())));
                    part.name_problems.push(why);
                }
            }
        }
    }
}

/// A `listen` directive, as far as certd cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Listen {
    port: Option<u16>,
    ssl: bool,
    /// `proxy_protocol`: connections start with a PROXY header (see [`super::edge`]).
    pub(super) proxy_protocol: bool,
    /// Why it is not translated (a port other than 80 and 443, a parameter certd lacks).
    problem: Option<String>,
}

/// The `listen` directives of a server block's `body`, each with whether it is TLS (`ssl`, port
/// 443, or `ssl on` in the block and not port 80).
pub(super) fn listens(body: &[Directive]) -> Vec<(&Directive, Listen, bool)> {
    let ssl_on = body.iter().any(|d| d.name == "ssl" && d.args == ["on"]);
    body.iter()
        .filter(|d| d.name == "listen")
        .map(|d| {
            let l = listen(d);
            let tls = l.ssl || l.port == Some(443) || (ssl_on && l.port != Some(80));
            (d, l, tls)
        })
        .collect()
}

fn listen(d: &Directive) -> Listen {
    let mut listen = Listen {
        port: None,
        ssl: false,
        proxy_protocol: false,
        problem: None,
    };
    let Some((address, params)) = d.args.split_first() else {
        listen.problem = Some("no address".to_owned());
        return listen;
    };
    if address.starts_with("unix:") {
        listen.problem = Some("certd listens on TCP addresses only".to_owned());
        return listen;
    }
    let port = if address.chars().all(|c| c.is_ascii_digit()) {
        Some(address.as_str())
    } else if address.starts_with('[') {
        address.split_once("]:").map(|(_, port)| port)
    } else {
        address.rsplit_once(':').map(|(_, port)| port)
    };
    listen.port = match port {
        None => Some(80),
        Some(port) => port.parse().ok(),
    };
    for param in params {
        let known = [
            "http2",
            "default_server",
            "default",
            "reuseport",
            "deferred",
            "bind",
        ];
        let tuning = [
            "ipv6only=",
            "backlog=",
            "rcvbuf=",
            "sndbuf=",
            "fastopen=",
            "so_keepalive=",
        ];
        if param == "ssl" {
            listen.ssl = true;
        } else if param == "proxy_protocol" {
            listen.proxy_protocol = true;
        } else if !known.contains(&param.as_str()) && !tuning.iter().any(|t| param.starts_with(t)) {
            listen.problem = Some(format!("certd's listeners have no `{param}`"));
        }
    }
    if !matches!(listen.port, Some(80 | 443)) && listen.problem.is_none() {
        listen.problem = Some(
            "certd serves every site on [http] listen and [https] listen (:80 and :443 by \
             default); set those for other ports"
                .to_owned(),
        );
    }
    listen
}

/// An https redirect certd takes over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Redirect {
    /// A server-level `return` or `rewrite`: every request is redirected, before any location.
    every_request: bool,
    /// False for a redirect to `$server_name` (the first name) instead of the requested host.
    keeps_host: bool,
}

/// Whether `d` redirects to https at the same host and path: `return 301 https://$host$request_uri`,
/// `rewrite ^(.*)$ https://$host$1 permanent`, and certbot's `if ($host = NAME) { return 301 …; }`
/// or `if ($scheme != "https") { … }`. `None` when it is not such a redirect at all; `Some(Err)`
/// when it is an `if` redirect certd cannot take over.
fn https_redirect(d: &Directive, names: &[&str]) -> Option<Result<Redirect, String>> {
    let args: Vec<&str> = d.args.iter().map(String::as_str).collect();
    let every_request = |keeps_host| {
        Ok(Redirect {
            every_request: true,
            keeps_host,
        })
    };
    match (d.name.as_str(), args.as_slice(), &d.block) {
        ("return", [code, url], None) if matches!(*code, "301" | "302" | "303" | "307" | "308") => {
            let (keeps_host, tail) = https_host(url)?;
            (tail == "$request_uri").then(|| every_request(keeps_host))
        }
        ("rewrite", [regex, replacement, "permanent" | "redirect"], None) => {
            let (keeps_host, tail) = https_host(replacement)?;
            let whole = ["^(.*)$", "^(.*)", "(.*)", "(.*)$"];
            let after_slash = ["^/(.*)$", "^/(.*)", "/(.*)", "/(.*)$"];
            let any = ["^", "^.*", "^.*$", ".*", "^/", "^/.*"];
            let ok = match tail {
                "$1" => whole.contains(regex),
                "/$1" => after_slash.contains(regex),
                "$request_uri" | "$request_uri?" => {
                    any.contains(regex) || whole.contains(regex) || after_slash.contains(regex)
                }
                _ => false,
            };
            ok.then(|| every_request(keeps_host))
        }
        ("if", _, Some(inner)) => {
            let [only] = inner.as_slice() else {
                return None;
            };
            let redirect = Redirect {
                // Only the requests the condition picks.
                every_request: false,
                ..https_redirect(only, names)?.ok()?
            };
            let condition = args.join(" ");
            let condition = condition
                .trim()
                .trim_start_matches('(')
                .trim_end_matches(')');
            let words: Vec<&str> = condition.split_whitespace().collect();
            match words.as_slice() {
                ["$host", "=", host] => {
                    let host = host.to_ascii_lowercase();
                    if names.contains(&host.as_str()) {
                        Some(Ok(redirect))
                    } else {
                        Some(Err(format!(
                            "redirects `{host}`, which is not a name of this server block"
                        )))
                    }
                }
                ["$scheme", "!=", "https"] | ["$scheme", "=", "http"] => Some(Ok(redirect)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// For `https://$host…` (or `$http_host`, `$server_name`): whether the host is kept, and the rest.
fn https_host(url: &str) -> Option<(bool, &str)> {
    let rest = url.strip_prefix("https://")?;
    if let Some(tail) = rest
        .strip_prefix("$host")
        .or_else(|| rest.strip_prefix("$http_host"))
    {
        Some((true, tail))
    } else {
        rest.strip_prefix("$server_name").map(|tail| (false, tail))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::import::nginx::parse::parse;

    fn first(text: &str) -> Directive {
        parse(text).unwrap().remove(0)
    }

    #[test]
    fn https_redirects_are_recognised() {
        let names = ["a.example", "www.a.example"];
        let all = |keeps_host| {
            Some(Ok(Redirect {
                every_request: true,
                keeps_host,
            }))
        };
        let some = Some(Ok(Redirect {
            every_request: false,
            keeps_host: true,
        }));
        let cases = [
            ("return 301 https://$host$request_uri;", all(true)),
            ("return 302 https://$http_host$request_uri;", all(true)),
            ("return 301 https://$server_name$request_uri;", all(false)),
            ("rewrite ^(.*)$ https://$host$1 permanent;", all(true)),
            ("rewrite ^/(.*)$ https://$host/$1 permanent;", all(true)),
            ("rewrite ^ https://$host$request_uri? permanent;", all(true)),
            (
                "if ($host = www.a.example) { return 301 https://$host$request_uri; }",
                some.clone(),
            ),
            (
                "if ($scheme != \"https\") { return 301 https://$host$request_uri; }",
                some.clone(),
            ),
            (
                "if ($host = b.example) { return 301 https://$host$request_uri; }",
                Some(Err(
                    "redirects `b.example`, which is not a name of this server block".to_owned(),
                )),
            ),
            ("return 301 https://a.example$request_uri;", None),
            ("return 301 http://$host$request_uri;", None),
            ("return 404;", None),
            ("rewrite ^/old$ https://$host/new permanent;", None),
            ("rewrite ^(.*)$ https://$host$1 last;", None),
            ("if ($http_user_agent ~ bot) { return 403; }", None),
        ];
        for (text, expected) in cases {
            assert_eq!(https_redirect(&first(text), &names), expected, "{text}");
        }
    }

    #[test]
    fn listen_forms() {
        let cases = [
            ("listen 80;", Some(80), false, false),
            ("listen [::]:80 default_server;", Some(80), false, false),
            ("listen 443 ssl http2;", Some(443), true, false),
            ("listen [::]:443 ssl ipv6only=on;", Some(443), true, false),
            ("listen 0.0.0.0:443 ssl;", Some(443), true, false),
            ("listen 127.0.0.1;", Some(80), false, false),
            ("listen 443;", Some(443), false, false),
            ("listen 8443 ssl;", Some(8443), true, true),
            ("listen 443 ssl proxy_protocol;", Some(443), true, false),
            ("listen 80 proxy_protocol;", Some(80), false, false),
            ("listen unix:/run/nginx.sock;", None, false, true),
        ];
        for (text, port, ssl, problem) in cases {
            let l = listen(&first(text));
            assert_eq!(
                (l.port, l.ssl, l.problem.is_some()),
                (port, ssl, problem),
                "{text}"
            );
            assert_eq!(l.proxy_protocol, text.contains("proxy_protocol"), "{text}");
        }
    }
}
