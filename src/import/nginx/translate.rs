//! From parsed nginx files to certd sites: what a translation holds ([`Translation`], [`Site`],
//! [`Route`], [`Note`]), the walk over the files' top level, and the grouping of server blocks into
//! sites.
//!
//! Server blocks are grouped by their set of names: the :443 block and the :80 block that only
//! redirects to https (certbot's `if ($host = …)` or a hand-written `return 301` / `rewrite`) become
//! one site, because certd redirects :80 to https by itself. A :80 block that serves content becomes
//! a site too (certd adds TLS). Each name may appear in one site only, as in certd.toml.

use std::collections::{BTreeMap, BTreeSet};

use super::parse::{directive_text, Directive};
use super::server::{self, Kind, ServerPart};

/// Where a directive is: the index of its file in [`Translation::files`], and its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Loc {
    pub(super) file: usize,
    pub(super) line: usize,
}

/// What a translated directive meant, grouped so that one comment explains a set of lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Topic {
    /// Certificates, protocols, ciphers, `listen 443 ssl`: certd's own business.
    Tls,
    /// TLS settings outside any server block.
    TlsDefaults,
    /// The :80 → https redirect, and certbot's `return 404` for other hosts.
    Redirect,
    /// `listen 80` on a block that serves content: certd serves it over https instead.
    PlainHttp,
    /// `index index.html`.
    Index,
    /// `proxy_http_version`, websocket and forwarding headers.
    ProxyHeaders,
    /// `location = /50x.html { }` that an `error_page` uses.
    ErrorPageLocation,
    /// A server-level `root` that no route or error page uses.
    UnusedRoot,
    /// `root`, `location`, … in a block that redirects every request before using them.
    Unreachable,
    /// The same location (same path and target) in another server block of the site.
    SameRoute,
    /// `set_real_ip_from`, `real_ip_header X-Forwarded-For`, `real_ip_recursive`: `[https]
    /// trusted_proxies`.
    TrustedProxies,
    /// `listen … proxy_protocol`, `real_ip_header proxy_protocol`: `proxy_protocol = true`.
    ProxyProtocol,
    /// An exact or regex location that the route covering its paths answers the same way.
    SameAnswer,
    /// A location that does not change the answer (logging, buffers) left to the route's lines.
    NoEffect,
    /// `location /.well-known/acme-challenge/` on a :80 block: certd answers HTTP-01 itself.
    AcmeWebroot,
    /// An `upstream` block with one server: its routes proxy to that address.
    SingleUpstream,
    /// `listen … default_server`: `[https] default_site`.
    DefaultServer,
    /// An `upstream` block with several servers: an `[[upstream]]` group.
    UpstreamGroup,
    /// An http-level `client_max_body_size`: each site's `max_body_size`.
    BodySize,
    /// `location ~ \.php$ { fastcgi_pass … }`: the `/` route runs PHP (`fastcgi`).
    Fastcgi,
    /// A server-level `set $var /literal;` nothing else changes: its value is written where the
    /// variable is used (see `super::vars`).
    LiteralSet,
    /// `location … { internal; … }` no internal redirect reaches: a 404 answer.
    Internal,
    /// A `map` block: a `[[map]]` table (see `super::map`).
    Map,
    /// `proxy_pass_request_body off`, `proxy_set_header Content-Length ""` in a location only
    /// `auth_request` subrequests reach: certd's subrequest has no body (see `super::auth`).
    AuthSubrequest,
}

/// The lines translated per topic.
pub(super) type Covered = BTreeMap<Topic, BTreeSet<Loc>>;

/// Adds `at` to `topic` in `covered`.
pub(super) fn cover(covered: &mut Covered, topic: Topic, at: Loc) {
    covered.entry(topic).or_default().insert(at);
}

fn merge_covered(into: &mut Covered, from: Covered) {
    for (topic, lines) in from {
        into.entry(topic).or_default().extend(lines);
    }
}

/// A directive that needs the operator's attention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Note {
    /// Not translated: listed so nothing is dropped silently. Makes the exit code 1.
    Untranslated {
        at: Loc,
        /// The directive as nginx text.
        text: String,
        /// Why, when there is something useful to say.
        why: Option<String>,
    },
    /// Translated, but certd behaves differently in a way that may matter.
    Differs { at: Loc, text: String },
}

impl Note {
    /// `d` (at `at`) is not translated, because of `why`.
    pub(super) fn untranslated(at: Loc, d: &Directive, why: Option<String>) -> Self {
        Self::Untranslated {
            at,
            text: directive_text(d),
            why,
        }
    }
}

/// What a route does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// `proxy = "…"`.
    Proxy(String),
    /// `root = "…"`.
    Root(String),
    /// `alias = "…"` (written among the route's keys).
    Alias(String),
    /// `return = { … }` (written among the route's keys): the value.
    Answer(String),
}

/// How a route matches, beside the prefix `path` routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RouteKind {
    /// `path = "…"` (nginx `location /p`, `location ^~ /p`).
    Path,
    /// `exact = "…"` (`location = /p`).
    Exact(String),
    /// `regex = "…"` (`location ~ re`).
    Regex(String),
    /// `iregex = "…"` (`location ~* re`).
    IRegex(String),
    /// `name = "@…"` (`location @name`).
    Named(String),
}

/// One `[[site.route]]`, from one `location` (or from a server-level `root`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Route {
    pub(super) path: String,
    pub(super) target: Target,
    /// Where it came from, and how to name that in a comment (`location /ws`).
    pub(super) at: Loc,
    pub(super) source: String,
    /// The `location` as nginx text, for a note when it cannot be merged.
    pub(super) text: String,
    pub(super) covered: Covered,
    pub(super) notes: Vec<Note>,
    /// `location ^~ /p`: regular expressions are not tried for its paths.
    pub(super) preferred: bool,
    /// How it matches (`path` for [`RouteKind::Path`]).
    pub(super) kind: RouteKind,
    /// Its other keys, in order: (key, TOML value).
    pub(super) keys: Vec<(String, String)>,
    /// Its nested routes (nginx's nested locations), searched first when it matches.
    pub(super) nested: Vec<Route>,
}

/// One `[site.error_pages]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ErrorPage {
    /// The file, or with `uri` the URI.
    pub(super) file: String,
    /// A URI certd serves through the site's routes (`[[site.error_page]]`), as nginx redirects
    /// internally to it; used where a proxy route answers that URI.
    pub(super) uri: bool,
    pub(super) at: Loc,
    pub(super) text: String,
}

/// One `[[site]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Site {
    pub(super) names: Vec<String>,
    /// The server blocks it came from, with what each did (`https`, `http → https redirect`, …).
    pub(super) servers: Vec<(Loc, &'static str)>,
    pub(super) covered: Covered,
    /// Whether certbot wrote some of its TLS lines (then `certd import certbot` is worth a hint).
    pub(super) certbot: bool,
    pub(super) notes: Vec<Note>,
    pub(super) routes: Vec<Route>,
    pub(super) error_pages: BTreeMap<u16, ErrorPage>,
    /// The `listen … default_server` lines of its server blocks, each with whether it is TLS.
    pub(super) default_server: Vec<(Loc, bool)>,
    /// Its site-level keys (from the first server block that serves content): (key, TOML value).
    pub(super) keys: Option<Vec<(String, String)>>,
}

/// Everything `certd import nginx` found in its files.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Translation {
    /// The files, as named on the command line.
    pub(super) files: Vec<String>,
    /// Translated lines outside any site (http-level TLS settings, a catch-all redirect).
    pub(super) outside_covered: Covered,
    /// Notes outside any site: top-level and `http {}` directives, server blocks without a site.
    pub(super) outside: Vec<Note>,
    pub(super) sites: Vec<Site>,
    /// Who the client is: `[https] trusted_proxies` and the `proxy_protocol` keys.
    pub(super) edge: super::edge::Edge,
    /// `[https] default_site`: the site whose server block had `listen … default_server`.
    pub(super) default_site: Option<String>,
    /// The `[[upstream]]` tables of the upstream blocks with several servers, as TOML.
    pub(super) upstreams: Vec<String>,
    /// The variables `map` blocks define (never resolved as constants, see `super::vars`).
    pub(super) maps: std::collections::BTreeSet<String>,
    /// `--default-name`: the site name for nginx's catch-all server block.
    pub(super) default_name: Option<String>,
    /// The `[[map]]` tables of the `map` blocks certd can take, as TOML.
    pub(super) map_tables: Vec<String>,
}

impl Translation {
    /// Every note, wherever it is.
    pub(super) fn notes(&self) -> impl Iterator<Item = &Note> {
        // Nested routes at any depth carry notes too.
        fn route_notes<'t>(route: &'t Route, out: &mut Vec<&'t Note>) {
            out.extend(route.notes.iter());
            for nested in &route.nested {
                route_notes(nested, out);
            }
        }
        let mut out: Vec<&Note> = self.edge.notes.iter().chain(self.outside.iter()).collect();
        for site in &self.sites {
            out.extend(site.notes.iter());
            for route in &site.routes {
                route_notes(route, &mut out);
            }
        }
        out.into_iter()
    }

    /// How many directives were not translated.
    pub(super) fn untranslated(&self) -> usize {
        self.notes()
            .filter(|note| matches!(note, Note::Untranslated { .. }))
            .count()
    }
}

/// Translates parsed files: `files` holds each file's name and directives.
#[cfg(test)]
pub(super) fn translate(files: &[(String, Vec<Directive>)]) -> Translation {
    translate_named(files, None)
}

/// [`translate`], with `default_name` (validated) for nginx's catch-all server block.
pub(super) fn translate_named(
    files: &[(String, Vec<Directive>)],
    default_name: Option<&str>,
) -> Translation {
    let mut translation = Translation {
        files: files.iter().map(|(name, _)| name.clone()).collect(),
        default_name: default_name.map(str::to_owned),
        ..Translation::default()
    };
    let mut upstreams = BTreeMap::new();
    let mut body_size = None;
    for (file, (_, directives)) in files.iter().enumerate() {
        find_upstreams(directives, file, &mut upstreams);
        body_size = body_size.or_else(|| http_body_size(directives));
    }
    translation.upstreams = upstreams
        .values()
        .filter(|u| u.single.is_none())
        .filter_map(|u| u.group.as_ref().ok().cloned())
        .collect();
    translation.maps = super::vars::map_targets(files.iter().map(|(_, d)| d.as_slice()));
    let maps = super::map::maps(files);
    translation.map_tables = maps
        .iter()
        .filter_map(|m| m.result.as_ref().ok().map(|(_, table)| table.clone()))
        .collect();
    let mut parts = Vec::new();
    // With the translated maps in scope, a location using `$name` translates exactly when certd
    // will take the output.
    crate::proxy::variables::with_maps(&super::map::in_scope(&maps), || {
        for (file, (_, directives)) in files.iter().enumerate() {
            walk(
                directives,
                file,
                (&upstreams, &maps),
                body_size.as_deref(),
                false,
                &mut parts,
                &mut translation,
            );
        }
        group(parts, &mut translation);
    });
    translation.edge = super::edge::edge(files);
    translation
}

/// An `upstream NAME { }` block: where it is, and its one server's `host:port` when it has
/// exactly one (TCP, no `backup`/`weight` or other parameters that matter with one server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Upstream {
    pub(super) at: Loc,
    pub(super) single: Option<String>,
    /// The `[[upstream]]` table for it, or why there is none.
    pub(super) group: Result<String, String>,
}

/// The `client_max_body_size` at the top level or in `http { }` of a file, if any.
fn http_body_size(directives: &[Directive]) -> Option<String> {
    directives
        .iter()
        .find_map(|d| match (d.name.as_str(), &d.block, d.args.as_slice()) {
            ("client_max_body_size", None, [size]) => Some(size.clone()),
            ("http", Some(inner), _) => http_body_size(inner),
            _ => None,
        })
}

/// The one `host:port` of upstream block `block`, when it has exactly one plain TCP server.
/// `max_fails`/`fail_timeout` change nothing with one server: nginx never marks its only server
/// down.
pub(super) fn single_server(block: &[Directive]) -> Option<String> {
    let mut servers = block.iter().filter(|d| d.name == "server");
    let server = servers.next()?;
    if servers.next().is_some()
        || block
            .iter()
            .any(|d| !matches!(d.name.as_str(), "server" | "keepalive"))
    {
        return None;
    }
    let (address, params) = server.args.split_first()?;
    let harmless = params
        .iter()
        .all(|p| p.starts_with("fail_timeout=") || p.starts_with("max_fails="));
    let plain = !address.starts_with("unix:")
        && !address.contains('$')
        && address
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    (harmless && plain).then(|| address.clone())
}

/// Records the `upstream NAME { }` blocks at the top level or in `http { }`, so a `proxy_pass` that
/// names one can use its single server or say why not.
fn find_upstreams(directives: &[Directive], file: usize, into: &mut BTreeMap<String, Upstream>) {
    for d in directives {
        match (d.name.as_str(), &d.block, d.args.as_slice()) {
            ("upstream", Some(block), [name]) => {
                into.entry(name.clone()).or_insert(Upstream {
                    at: Loc { file, line: d.line },
                    single: single_server(block),
                    group: super::upstream::group(name, block),
                });
            }
            ("http", Some(inner), _) => find_upstreams(inner, file, into),
            _ => {}
        }
    }
}

/// The top level of a file (a sites-enabled snippet or a whole nginx.conf) and its `http { }`.
fn walk(
    directives: &[Directive],
    file: usize,
    (upstreams, maps): (&BTreeMap<String, Upstream>, &[super::map::Map]),
    body_size: Option<&str>,
    in_http: bool,
    parts: &mut Vec<ServerPart>,
    translation: &mut Translation,
) {
    for d in directives {
        let at = Loc { file, line: d.line };
        match (d.name.as_str(), &d.block) {
            ("server", Some(_)) => parts.push(server::server(
                d,
                file,
                upstreams,
                body_size,
                &translation.maps,
            )),
            ("http", Some(inner)) if !in_http => walk(
                inner,
                file,
                (upstreams, maps),
                body_size,
                true,
                parts,
                translation,
            ),
            ("client_max_body_size", None) if body_size == d.args.first().map(String::as_str) => {
                cover(&mut translation.outside_covered, Topic::BodySize, at)
            }
            _ if is_tls_setting(d) => {
                cover(&mut translation.outside_covered, Topic::TlsDefaults, at)
            }
            _ if is_upgrade_map(d) => {
                cover(&mut translation.outside_covered, Topic::ProxyHeaders, at)
            }
            ("map", Some(_)) => match maps.iter().find(|m| m.at == at).map(|m| &m.result) {
                Some(Ok(_)) => cover(&mut translation.outside_covered, Topic::Map, at),
                Some(Err(why)) => {
                    translation
                        .outside
                        .push(Note::untranslated(at, d, Some(why.clone())))
                }
                None => translation
                    .outside
                    .push(Note::untranslated(at, d, why_untranslated(d))),
            },
            ("upstream", Some(block)) if single_server(block).is_some() => {
                cover(&mut translation.outside_covered, Topic::SingleUpstream, at)
            }
            ("upstream", Some(block)) => {
                match (d.args.as_slice(), super::upstream::group_notes(block)) {
                    ([name], _) if super::upstream::group(name, block).is_err() => {
                        let why = super::upstream::group(name, block).err();
                        translation.outside.push(Note::untranslated(at, d, why))
                    }
                    (_, notes) => {
                        cover(&mut translation.outside_covered, Topic::UpstreamGroup, at);
                        for (line, text) in notes {
                            translation.outside.push(Note::Differs {
                                at: Loc { file, line },
                                text,
                            });
                        }
                    }
                }
            }
            // Translated for every file at once: see `super::edge`.
            _ if super::edge::is_edge_directive(d) => {}
            _ => translation
                .outside
                .push(Note::untranslated(at, d, why_untranslated(d))),
        }
    }
}

/// Whether `d` is the websocket idiom `map $http_upgrade $connection_upgrade { default upgrade;
/// '' close; }`, which certd does by itself (it passes upgrades through and closes otherwise).
pub(super) fn is_upgrade_map(d: &Directive) -> bool {
    let Some(block) = &d.block else {
        return false;
    };
    if d.name != "map" || d.args != ["$http_upgrade", "$connection_upgrade"] {
        return false;
    }
    let entries: BTreeSet<(String, String)> = block
        .iter()
        .filter_map(|e| match e.args.as_slice() {
            [value] if e.block.is_none() => Some((e.name.clone(), value.to_ascii_lowercase())),
            _ => None,
        })
        .collect();
    block.len() == 2
        && entries
            == BTreeSet::from([
                ("default".to_owned(), "upgrade".to_owned()),
                (String::new(), "close".to_owned()),
            ])
}

/// Whether `d` is a TLS setting that certd decides itself (certificates, protocols, ciphers,
/// sessions, OCSP stapling, certbot's options file).
pub(super) fn is_tls_setting(d: &Directive) -> bool {
    const SETTINGS: [&str; 14] = [
        "ssl_certificate",
        "ssl_certificate_key",
        "ssl_protocols",
        "ssl_ciphers",
        "ssl_session_timeout",
        "ssl_session_cache",
        "ssl_session_tickets",
        "ssl_prefer_server_ciphers",
        "ssl_dhparam",
        "ssl_ecdh_curve",
        "ssl_stapling",
        "ssl_stapling_verify",
        "ssl_trusted_certificate",
        "ssl_buffer_size",
    ];
    let args: Vec<&str> = d.args.iter().map(String::as_str).collect();
    d.block.is_none()
        && (SETTINGS.contains(&d.name.as_str())
            || (d.name == "ssl" && args == ["on"])
            || (d.name == "http2" && args == ["on"])
            || (d.name == "include"
                && matches!(args.as_slice(), [path] if path.ends_with("/options-ssl-nginx.conf"))))
}

/// A hint for an untranslated directive, for the ones people often have.
pub(super) fn why_untranslated(d: &Directive) -> Option<String> {
    let why = match d.name.as_str() {
        "include" => {
            "not followed: if that file holds server blocks, pass it to `certd import nginx` too"
        }
        "upstream" => "not a group certd can balance like nginx",
        "try_files" => {
            "certd's try_files is a route key: at server level nginx runs it before any location"
        }
        "more_set_headers" => "certd's response headers are add_header's (`headers.response.add`)",
        "auth_request" => "certd has no subrequest authentication",
        "access_log" | "error_log" => {
            "certd logs one line per request (site, method, path, status) to stderr"
        }
        "rewrite" | "return" => {
            "at server level nginx runs these before any location; certd's are route keys"
        }
        "if" | "set" | "map" => "certd has no variables of its own or conditions",
        "events" | "user" | "worker_processes" | "worker_connections" | "pid" => {
            "nginx process settings; certd has none of these"
        }
        "gzip_disable" => "certd compresses for every client that accepts gzip",
        _ => return None,
    };
    Some(why.to_owned())
}

/// Turns the server blocks into sites (see the module documentation).
fn group(parts: Vec<ServerPart>, translation: &mut Translation) {
    let (content, redirects): (Vec<ServerPart>, Vec<ServerPart>) = parts
        .into_iter()
        .partition(|part| part.kind == Kind::Content);
    // The site each name belongs to.
    let mut claimed: BTreeMap<String, usize> = BTreeMap::new();

    let mut groups: Vec<(BTreeSet<String>, Vec<ServerPart>)> = Vec::new();
    let only_one = content.len() == 1;
    let named: BTreeSet<String> = content.iter().flat_map(|p| p.key()).collect();
    for mut part in content {
        // nginx's catch-all server answers every Host; with `--default-name` it is that site,
        // and the default one for handshakes without a name.
        let default = only_one || !part.default_server.is_empty();
        if let (true, true, true, Some(name)) = (
            part.names.is_empty(),
            part.catch_all,
            default,
            translation
                .default_name
                .clone()
                .filter(|name| !named.contains(name)),
        ) {
            part.names.push(super::server::Name {
                name: name.clone(),
                at: part.at,
                text: format!("--default-name {name}"),
            });
            part.notes.push(Note::Differs {
                at: part.at,
                text: format!(
                    "nginx's catch-all server answers requests for any name; certd answers \
                     {name} (--default-name) and refuses other names (421)"
                ),
            });
            if part.default_server.is_empty() {
                part.default_server.push((part.at, part.tls));
            }
            part.notes.retain(|note| {
                !matches!(note, Note::Untranslated { text, .. } if text.starts_with("server_name"))
            });
        }
        if part.names.is_empty() {
            translation.outside.push(whole_server(
                &part,
                "no name in server_name that certd can obtain a certificate for, so there is \
                 no site for it",
            ));
            continue;
        }
        let key = part.key();
        match groups.iter_mut().find(|(seen, _)| *seen == key) {
            Some((_, group)) => group.push(part),
            None => groups.push((key, vec![part])),
        }
    }
    for (_, parts) in groups {
        let mut names = Vec::new();
        let mut notes = Vec::new();
        for name in &parts[0].names {
            match claimed.get(&name.name) {
                Some(&site) => notes.push(Note::Untranslated {
                    at: name.at,
                    text: name.text.clone(),
                    why: Some(format!(
                        "`{}` is left out: it is already a name of site {} (certd allows each \
                         name in one site only)",
                        name.name, translation.sites[site].names[0]
                    )),
                }),
                None => names.push(name.name.clone()),
            }
        }
        if names.is_empty() {
            for part in &parts {
                translation.outside.push(whole_server(
                    part,
                    "all its names belong to other sites already",
                ));
            }
            continue;
        }
        let index = translation.sites.len();
        for name in &names {
            claimed.insert(name.clone(), index);
        }
        let mut site = Site {
            names,
            servers: Vec::new(),
            covered: Covered::new(),
            certbot: false,
            notes,
            routes: Vec::new(),
            error_pages: BTreeMap::new(),
            default_server: Vec::new(),
            keys: None,
        };
        for part in parts {
            site.merge(part);
        }
        translation.sites.push(site);
    }

    for part in redirects {
        if part.names.is_empty() {
            merge_covered(&mut translation.outside_covered, part.covered);
            translation.outside.extend(part.notes);
            continue;
        }
        let key = part.key();
        if let Some(site) = translation
            .sites
            .iter_mut()
            .find(|site| site.names.iter().cloned().collect::<BTreeSet<_>>() == key)
        {
            site.merge(part);
            continue;
        }
        let unserved: Vec<&str> = part
            .names
            .iter()
            .filter(|name| !claimed.contains_key(&name.name))
            .map(|name| name.name.as_str())
            .collect();
        let first_site = part.names.first().and_then(|name| claimed.get(&name.name));
        if let (true, Some(&site)) = (unserved.is_empty(), first_site) {
            translation.sites[site].merge(part);
        } else {
            let why = format!(
                "no server block in these files serves {} over https; certd redirects :80 to \
                 https only for the names of its sites",
                unserved.join(", ")
            );
            translation.outside.push(whole_server(&part, &why));
        }
    }

    for site in &mut translation.sites {
        if site.routes.is_empty() {
            let at = site
                .servers
                .first()
                .map(|(at, _)| *at)
                .unwrap_or(Loc { file: 0, line: 0 });
            site.notes.push(Note::Untranslated {
                at,
                text: format!("server {{ server_name {}; … }}", site.names.join(" ")),
                why: Some(
                    "this site has no routes: certd would obtain its certificate and answer 404 \
                     for every path (certd check warns about it); add the routes by hand once \
                     certd can answer like the locations listed above"
                        .to_owned(),
                ),
            });
        }
    }
    default_site(translation);
}

/// `[https] default_site`: the site whose server block has `listen … default_server` (on a TLS
/// listen if several sites have one), when exactly one site qualifies.
fn default_site(translation: &mut Translation) {
    let with = |tls_only: bool| -> Vec<(usize, Loc)> {
        translation
            .sites
            .iter()
            .enumerate()
            .filter_map(|(i, site)| {
                site.default_server
                    .iter()
                    .find(|(_, tls)| *tls || !tls_only)
                    .map(|(at, _)| (i, *at))
            })
            .collect()
    };
    let tls = with(true);
    let candidates = if tls.is_empty() { with(false) } else { tls };
    match candidates.as_slice() {
        [] => {}
        [(site, at)] => {
            let site = &mut translation.sites[*site];
            cover(&mut site.covered, Topic::DefaultServer, *at);
            translation.default_site = Some(site.names[0].clone());
        }
        several => {
            for (site, at) in several {
                translation.sites[*site].notes.push(Note::Untranslated {
                    at: *at,
                    text: "listen … default_server;".to_owned(),
                    why: Some(
                        "several sites are nginx's default server; certd has one [https] \
                         default_site: set it by hand"
                            .to_owned(),
                    ),
                });
            }
        }
    }
}

/// A note for a whole server block that becomes no site, with the reasons it gave for its names.
fn whole_server(part: &ServerPart, why: &str) -> Note {
    let mut why = why.to_owned();
    for problem in &part.name_problems {
        why.push_str("; ");
        why.push_str(problem);
    }
    Note::Untranslated {
        at: part.at,
        text: part.text.clone(),
        why: Some(why),
    }
}

impl Site {
    /// Adds one server block's routes, error pages and notes to this site.
    fn merge(&mut self, part: ServerPart) {
        self.servers.push((part.at, part.role()));
        self.default_server
            .extend(part.default_server.iter().copied());
        merge_covered(&mut self.covered, part.covered);
        self.certbot |= part.certbot;
        self.notes.extend(part.notes);
        let mut routes = part.routes;
        if part.kind == Kind::Content {
            match &self.keys {
                None => self.keys = Some(part.keys),
                Some(keys) if *keys == part.keys => {}
                Some(_) => {
                    for route in routes.drain(..) {
                        self.notes.push(Note::Untranslated {
                            at: route.at,
                            text: route.text,
                            why: Some(
                                "another server block of this site sets different server-level \
                                 headers, limits, access or compression; certd has one set per site"
                                    .to_owned(),
                            ),
                        });
                    }
                }
            }
        }
        for route in routes {
            match self
                .routes
                .iter_mut()
                .find(|seen| seen.path == route.path && seen.kind == route.kind)
            {
                None => self.routes.push(route),
                Some(seen)
                    if seen.target == route.target
                        && seen.keys == route.keys
                        && seen.nested == route.nested =>
                {
                    cover(&mut seen.covered, Topic::SameRoute, route.at);
                    merge_covered(&mut seen.covered, route.covered);
                    seen.notes.extend(route.notes);
                }
                Some(seen) => self.notes.push(Note::Untranslated {
                    at: route.at,
                    text: route.text,
                    why: Some(format!(
                        "`{}` is already routed by line {} of another server block",
                        route.path, seen.at.line
                    )),
                }),
            }
        }
        for (code, page) in part.error_pages {
            match self.error_pages.get(&code) {
                None => {
                    self.error_pages.insert(code, page);
                }
                Some(seen) if seen.file == page.file => {}
                Some(seen) => self.notes.push(Note::Untranslated {
                    at: page.at,
                    text: page.text,
                    why: Some(format!(
                        "the {code} page is already {} (line {})",
                        seen.file, seen.at.line
                    )),
                }),
            }
        }
    }
}
