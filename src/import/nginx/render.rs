//! A [`Translation`] as the certd.toml fragment `certd import nginx` prints: `[[site]]` tables with
//! their routes and error pages, and comments that say where each part came from, what certd does
//! instead of the translated lines, and every line it did not translate.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::edge::Edge;
use super::translate::{Covered, Loc, Note, Route, RouteKind, Site, Target, Topic, Translation};

/// The whole fragment.
pub(super) fn render(translation: &Translation) -> String {
    let mut out = String::new();
    let r = Renderer {
        files: &translation.files,
    };
    r.comment(
        &mut out,
        "",
        &format!(
            "certd.toml fragment written by `certd import nginx` from {}",
            translation.files.join(", ")
        ),
    );
    let only_sites = [
        "Append it to a certd.toml that has one [acme] table (directory, agree_tos, email) and at",
        "most one [http] and one [https] table (the listeners: :80 and :443 when absent); this",
        "fragment holds only sites. `# untranslated` lines are nginx directives certd does not take",
        "over; `# differs` marks a translated line where certd does not behave quite like nginx.",
    ];
    let with_tables = [
        "Append it to a certd.toml that has one [acme] table (directory, agree_tos, email) and at",
        "most one [http] and one [https] table (the listeners: :80 and :443 when absent); this",
        "fragment holds sites, and the [https] / [http] keys for client addresses that nginx had.",
        "`# untranslated` lines are nginx directives certd does not take over; `# differs` marks a",
        "translated line where certd does not behave quite like nginx.",
    ];
    let header: &[&str] = if translation.edge.has_tables() || translation.default_site.is_some() {
        &with_tables
    } else {
        &only_sites
    };
    for line in header {
        r.comment(&mut out, "", line);
    }

    if !translation.outside_covered.is_empty() || !translation.outside.is_empty() {
        out.push('\n');
        r.comment(&mut out, "", "outside server blocks:");
        r.covered(&mut out, "", &translation.outside_covered, false);
        r.notes(&mut out, "", &translation.outside);
    }
    r.edge(
        &mut out,
        &translation.edge,
        translation.default_site.as_deref(),
    );
    for table in &translation.upstreams {
        out.push('\n');
        r.comment(
            &mut out,
            "",
            "an nginx upstream block with several servers:",
        );
        out.push_str(table);
    }
    for table in &translation.map_tables {
        out.push('\n');
        r.comment(&mut out, "", "an nginx map block:");
        out.push_str(table);
    }
    if translation.sites.is_empty() {
        out.push('\n');
        r.comment(&mut out, "", "no server block became a site");
    }
    for site in &translation.sites {
        r.site(&mut out, site);
    }
    let untranslated = translation.untranslated();
    if untranslated > 0 {
        out.push('\n');
        r.comment(
            &mut out,
            "",
            &format!(
                "{untranslated} nginx directive{} not translated: see the `# untranslated` \
                 comments above",
                if untranslated == 1 { " was" } else { "s were" }
            ),
        );
    }
    out
}

struct Renderer<'a> {
    files: &'a [String],
}

impl Renderer<'_> {
    /// The `[https]` and `[http]` keys for client addresses, when the files have any.
    fn edge(&self, out: &mut String, edge: &Edge, default_site: Option<&str>) {
        if edge.covered.is_empty() && edge.notes.is_empty() {
            if let Some(site) = default_site {
                out.push('\n');
                self.comment(
                    out,
                    "",
                    "nginx's default server (listen … default_server): a certd.toml holds one \
                     [https] table; if yours has one already, move this key into it.",
                );
                let _ = writeln!(out, "[https]\ndefault_site = {}", toml_str(site));
            }
            return;
        }
        out.push('\n');
        self.comment(
            out,
            "",
            "client addresses (nginx's real_ip and listen … proxy_protocol lines): certd has \
             these once, for every site, in [https] and [http]. A certd.toml holds one table of \
             each: if yours has them already, move these keys into them (certd check names a \
             table written twice).",
        );
        self.covered(out, "", &edge.covered, false);
        self.notes(out, "", &edge.notes);
        if !edge.trusted_proxies.is_empty() || edge.https_proxy_protocol || default_site.is_some() {
            out.push_str("[https]\n");
            if let Some(site) = default_site {
                let _ = writeln!(out, "default_site = {}", toml_str(site));
            }
            if !edge.trusted_proxies.is_empty() {
                let ranges: Vec<String> =
                    edge.trusted_proxies.iter().map(|r| toml_str(r)).collect();
                let _ = writeln!(out, "trusted_proxies = [{}]", ranges.join(", "));
            }
            if edge.https_proxy_protocol {
                out.push_str("proxy_protocol = true\n");
            }
        }
        if edge.http_proxy_protocol {
            out.push_str("\n[http]\nproxy_protocol = true\n");
        }
    }

    fn site(&self, out: &mut String, site: &Site) {
        let servers: Vec<String> = site
            .servers
            .iter()
            .map(|(at, role)| format!("{} ({role})", self.at(*at)))
            .collect();
        out.push('\n');
        self.comment(
            out,
            "",
            &format!(
                "site {}: nginx server block{} {}",
                site.names[0],
                if servers.len() == 1 { "" } else { "s" },
                servers.join(", ")
            ),
        );
        out.push_str("[[site]]\n");
        let names: Vec<String> = site.names.iter().map(|name| toml_str(name)).collect();
        let _ = writeln!(out, "names = [{}]", names.join(", "));
        for (key, value) in site.keys.iter().flatten() {
            let _ = writeln!(out, "{key} = {value}");
        }
        self.covered(out, "", &site.covered, site.certbot);
        self.notes(out, "", &site.notes);

        for route in &site.routes {
            self.route(out, route, "site.route", "  ");
        }

        let files: Vec<_> = site.error_pages.iter().filter(|(_, p)| !p.uri).collect();
        if !files.is_empty() {
            let lines: BTreeSet<Loc> = files.iter().map(|(_, page)| page.at).collect();
            out.push('\n');
            self.comment(out, "  ", &format!("{}: error_page", self.lines(&lines)));
            out.push_str("  [site.error_pages]\n");
            for (code, page) in files {
                let _ = writeln!(out, "  {code} = {}", toml_str(&page.file));
            }
        }
        // URI pages, one table per URI (nginx's internal redirect, through the site's routes).
        let mut uris: std::collections::BTreeMap<&str, (Vec<u16>, BTreeSet<Loc>)> =
            std::collections::BTreeMap::new();
        for (code, page) in site.error_pages.iter().filter(|(_, p)| p.uri) {
            let entry = uris.entry(page.file.as_str()).or_default();
            entry.0.push(*code);
            entry.1.insert(page.at);
        }
        for (uri, (codes, lines)) in uris {
            out.push('\n');
            self.comment(
                out,
                "  ",
                &format!(
                    "{}: error_page: certd serves {uri} through the routes, keeping the status",
                    self.lines(&lines)
                ),
            );
            out.push_str("  [[site.error_page]]\n");
            let codes: Vec<String> = codes.iter().map(u16::to_string).collect();
            let _ = writeln!(out, "  codes = [{}]", codes.join(", "));
            let _ = writeln!(out, "  target = {}", toml_str(uri));
        }
    }

    /// One route as the table `table` (`site.route`, `site.route.route` for a nested one).
    fn route(&self, out: &mut String, route: &Route, table: &str, i: &str) {
        out.push('\n');
        self.comment(out, i, &format!("{}: {}", self.at(route.at), route.source));
        let _ = writeln!(out, "{i}[[{table}]]");
        match &route.kind {
            RouteKind::Path => {
                let _ = writeln!(out, "{i}path = {}", toml_str(&route.path));
                if route.preferred {
                    let _ = writeln!(out, "{i}prefix_priority = true");
                }
            }
            RouteKind::Exact(path) => {
                let _ = writeln!(out, "{i}exact = {}", toml_str(path));
            }
            RouteKind::Regex(re) => {
                let _ = writeln!(out, "{i}regex = {}", toml_str(re));
            }
            RouteKind::IRegex(re) => {
                let _ = writeln!(out, "{i}iregex = {}", toml_str(re));
            }
            RouteKind::Named(name) => {
                let _ = writeln!(out, "{i}name = {}", toml_str(name));
            }
        }
        match &route.target {
            Target::Proxy(url) => {
                let _ = writeln!(out, "{i}proxy = {}", toml_str(url));
            }
            Target::Root(dir) => {
                let _ = writeln!(out, "{i}root = {}", toml_str(dir));
            }
            // Written with the keys below.
            Target::Alias(_) | Target::Answer(_) => {}
        }
        for (key, value) in &route.keys {
            let _ = writeln!(out, "{i}{key} = {value}");
        }
        self.covered(out, i, &route.covered, false);
        self.notes(out, i, &route.notes);
        let inner = format!("{i}  ");
        for nested in &route.nested {
            self.route(out, nested, &format!("{table}.route"), &inner);
        }
    }

    /// One `# translated (lines): what certd does` comment per topic.
    fn covered(&self, out: &mut String, indent: &str, covered: &Covered, certbot: bool) {
        for (topic, lines) in covered {
            self.comment(
                out,
                indent,
                &format!("translated ({}): {}", self.lines(lines), topic_text(*topic)),
            );
            if certbot && *topic == Topic::Tls {
                self.comment(
                    out,
                    indent,
                    "  certbot manages this certificate: `certd import certbot` adopts it (and \
                     its account) instead of ordering a new one",
                );
            }
        }
    }

    /// The notes, in line order.
    fn notes(&self, out: &mut String, indent: &str, notes: &[Note]) {
        let mut notes: Vec<&Note> = notes.iter().collect();
        notes.sort_by_key(|note| match note {
            Note::Untranslated { at, .. } | Note::Differs { at, .. } => *at,
        });
        for note in notes {
            match note {
                Note::Untranslated { at, text, why } => {
                    self.comment_line(
                        out,
                        indent,
                        &format!("untranslated ({}): {text}", self.at(*at)),
                    );
                    if let Some(why) = why {
                        self.comment(out, indent, &format!("  why: {why}"));
                    }
                }
                Note::Differs { at, text } => {
                    self.comment(out, indent, &format!("differs ({}): {text}", self.at(*at)));
                }
            }
        }
    }

    /// `# text`, wrapped at [`WIDTH`] columns with `#   ` continuation lines; control characters
    /// (a quoted newline) are escaped so each comment stays valid TOML.
    fn comment(&self, out: &mut String, indent: &str, text: &str) {
        let room = WIDTH.saturating_sub(indent.len() + 2);
        let body = text.trim_start_matches(' ');
        let lead = &text[..text.len() - body.len()];
        let mut line = lead.to_owned();
        let mut fresh = true;
        for word in body.split(' ') {
            if !fresh && line.chars().count() + 1 + word.chars().count() > room {
                self.comment_line(out, indent, &line);
                line = format!("{lead}  ");
                fresh = true;
            }
            if !fresh {
                line.push(' ');
            }
            line.push_str(word);
            fresh = false;
        }
        self.comment_line(out, indent, &line);
    }

    /// `# text` on one line, however long (untranslated directives stay whole, for grep).
    fn comment_line(&self, out: &mut String, indent: &str, text: &str) {
        out.push_str(indent);
        out.push('#');
        if !text.is_empty() {
            out.push(' ');
        }
        out.push_str(&escape_controls(text));
        out.push('\n');
    }

    /// `FILE:LINE`.
    fn at(&self, at: Loc) -> String {
        let file = self.files.get(at.file).map_or("?", String::as_str);
        format!("{file}:{}", at.line)
    }

    /// `FILE:1-3,7` (per file, runs of lines as ranges), files separated by `; `.
    fn lines(&self, lines: &BTreeSet<Loc>) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut current: Option<(usize, Vec<(usize, usize)>)> = None;
        let flush = |current: Option<(usize, Vec<(usize, usize)>)>, parts: &mut Vec<String>| {
            if let Some((file, runs)) = current {
                let runs: Vec<String> = runs
                    .iter()
                    .map(|(first, last)| {
                        if first == last {
                            first.to_string()
                        } else {
                            format!("{first}-{last}")
                        }
                    })
                    .collect();
                let name = self.files.get(file).map_or("?", String::as_str);
                parts.push(format!("{name}:{}", runs.join(",")));
            }
        };
        for loc in lines {
            match &mut current {
                Some((file, runs)) if *file == loc.file => match runs.last_mut() {
                    Some((_, last)) if *last + 1 == loc.line => *last = loc.line,
                    _ => runs.push((loc.line, loc.line)),
                },
                _ => {
                    flush(current.take(), &mut parts);
                    current = Some((loc.file, vec![(loc.line, loc.line)]));
                }
            }
        }
        flush(current, &mut parts);
        parts.join("; ")
    }
}

/// The width comments are wrapped at.
const WIDTH: usize = 100;

/// `text` with control characters other than tab escaped (`\\n`).
fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// What certd does instead of the lines of `topic`.
fn topic_text(topic: Topic) -> &'static str {
    match topic {
        Topic::Tls => {
            "TLS: certd obtains and renews the certificate for these names itself and offers TLS \
             1.2 and 1.3 only (HTTP/2 by ALPN), with its own protocol, cipher and session settings"
        }
        Topic::TlsDefaults => {
            "TLS settings: certd offers TLS 1.2 and 1.3 only, with its own protocol, cipher and \
             session settings"
        }
        Topic::Redirect => {
            "http → https: certd redirects :80 to https for every name of its sites ([http] \
             redirect = true, the default) and answers 404 for other hosts"
        }
        Topic::PlainHttp => {
            "plain http: certd serves these names over https, with a certificate it obtains, and \
             redirects :80 to https"
        }
        Topic::Index => "index index.html: certd serves a folder's index.html",
        Topic::ProxyHeaders => {
            "proxy settings: certd speaks HTTP/1.1 to upstreams, passes websocket upgrades \
             through, keeps Host, and sets X-Forwarded-For, X-Forwarded-Proto, \
             X-Forwarded-Host, X-Real-IP and Forwarded itself"
        }
        Topic::ErrorPageLocation => {
            "the location of an error page: certd reads that file for [site.error_pages]"
        }
        Topic::UnusedRoot => "root: no route or error page of this server block serves files",
        Topic::Unreachable => {
            "never used by nginx either: this server block redirects every request to https first"
        }
        Topic::SameRoute => "the same location in another server block: one route serves both",
        Topic::TrustedProxies => {
            "real client addresses: from these proxies ([https] trusted_proxies) certd keeps \
             X-Forwarded-For and takes the client from it, skipping every trusted address from \
             the right (real_ip_recursive on); from anyone else it replaces X-Forwarded-For, \
             X-Real-IP and Forwarded with the address it sees"
        }
        Topic::SameAnswer => {
            "a location the route for its paths answers the same way (same upstream or root)"
        }
        Topic::NoEffect => {
            "no effect on the answer (logging, buffering, `allow all`, `try_files $uri =404`)"
        }
        Topic::AcmeWebroot => {
            "ACME webroot on :80: certd answers HTTP-01 challenges for its names itself"
        }
        Topic::SingleUpstream => {
            "upstream with one server: its routes proxy to that address (with one server, nginx \
             never marks it down, so max_fails/fail_timeout change nothing)"
        }
        Topic::UpstreamGroup => {
            "upstream block: an [[upstream]] group (below), which its routes proxy to"
        }
        Topic::Fastcgi => {
            "the PHP location: certd's FastCGI route at / runs existing .php scripts under its root \
             with the standard parameters (SCRIPT_FILENAME, PATH_INFO, …) and never sends PHP \
             source"
        }
        Topic::BodySize => {
            "client_max_body_size: each site's max_body_size (nginx's 1m where nothing sets it)"
        }
        Topic::DefaultServer => {
            "default_server: [https] default_site, the certificate certd offers to handshakes \
             without a name it knows"
        }
        Topic::Map => {
            "map: a [[map]] table below; certd looks the variable up per request, as nginx does"
        }
        Topic::AuthSubrequest => {
            "auth_request subrequest settings: certd's subrequest carries no body and no \
             Content-Length"
        }
        Topic::Internal => {
            "internal: nginx answers 404 to every request a client sends there (nothing in \
             these files redirects there internally), and so does this route"
        }
        Topic::LiteralSet => {
            "set $var with a fixed value nothing else changes: the value is written where the \
             variable is used"
        }
        Topic::ProxyProtocol => {
            "PROXY protocol: connections start with a PROXY header (v1 or v2), accepted only from \
             [https] trusted_proxies, and its source address is the client"
        }
    }
}

/// `s` as a TOML string.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}
