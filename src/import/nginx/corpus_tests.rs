//! The importer on real nginx configs (tests/fixtures/nginx/, each file naming its source): for
//! every file, the safety properties that must hold whatever certd can translate today, and a
//! summary table (`cargo test --lib import::nginx::corpus -- --nocapture` prints it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::parse::{parse, Directive};
use super::translate::{translate, Note, Route, RouteKind, Target, Translation};

/// A `location` anywhere in a file, with the lines of the locations around it.
struct Location {
    line: usize,
    ancestors: Vec<usize>,
    args: Vec<String>,
    /// It answers without an upstream or file, or only to some clients: `fastcgi_pass`,
    /// `deny`, `return`, `internal`, `auth_*`, `limit_except`.
    guarded: bool,
    /// It only refuses paths with a dot segment (`location ~ /\. { deny all; }`).
    dotfiles_only: bool,
    /// The names of the directives in its block.
    block: Vec<String>,
}

fn locations(directives: &[Directive], ancestors: &mut Vec<usize>, into: &mut Vec<Location>) {
    for d in directives {
        let Some(block) = &d.block else { continue };
        if d.name == "location" {
            let guarded = block.iter().any(|i| {
                matches!(
                    i.name.as_str(),
                    "fastcgi_pass"
                        | "deny"
                        | "return"
                        | "internal"
                        | "auth_basic"
                        | "auth_request"
                        | "limit_except"
                )
            });
            let re = d.args.last().map(String::as_str).unwrap_or_default();
            into.push(Location {
                block: block.iter().map(|i| i.name.clone()).collect(),
                line: d.line,
                ancestors: ancestors.clone(),
                args: d.args.clone(),
                guarded,
                dotfiles_only: d.args.len() == 2
                    && d.args[0].starts_with('~')
                    && (re.starts_with("/\\.") || re.starts_with("^/\\.")),
            });
        }
        ancestors.push(d.line);
        locations(block, ancestors, into);
        ancestors.pop();
    }
}

/// The path of a prefix or exact location; `None` for regular expressions and named ones.
fn plain_path(args: &[String]) -> Option<&str> {
    match args {
        [m, p] if m == "=" || m == "^~" => Some(p),
        [p] if p.starts_with('/') => Some(p),
        _ => None,
    }
}

/// Whether a regex could match under `prefix`: only `^/literal…` can be shown not to.
fn regex_reaches(args: &[String], prefix: &str) -> bool {
    let re = args.last().map(String::as_str).unwrap_or_default();
    let Some(anchored) = re.strip_prefix('^') else {
        return true;
    };
    let literal: String = anchored
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_'))
        .collect();
    literal.starts_with(prefix) || prefix.starts_with(&literal)
}

struct Summary {
    config: String,
    locations: usize,
    routes: usize,
    left_out: usize,
    reasons: BTreeMap<&'static str, usize>,
    untranslated: usize,
}

/// The reason of a left-out location, in a word.
fn reason(why: &str) -> &'static str {
    let kinds = [
        ("would answer them differently", "overlap"),
        ("to every location", "server-wide"),
        ("exact matches", "exact"),
        ("regular expressions", "regex"),
        ("named location", "named"),
        ("FastCGI", "fastcgi"),
        ("PHP idiom", "fastcgi"),
        ("conditions or variables", "if/set"),
        ("replaces the matched prefix", "proxy_pass URI"),
        ("unknown variable", "variables"),
        ("try_files", "try_files"),
        ("alias", "alias"),
        ("access control", "allow/deny"),
        ("authentication", "auth"),
        ("basic auth", "auth"),
        ("auth_request", "auth"),
        ("limit_except", "limit_except"),
        ("internal", "internal"),
        ("rewrite, redirect", "return/rewrite"),
        ("upstream block", "upstream"),
        ("nested", "nested"),
        ("no proxy_pass and no root", "no target"),
        ("variables", "variables"),
        ("no name in server_name", "no site"),
        ("already a name of site", "duplicate name"),
    ];
    kinds
        .iter()
        .find(|(needle, _)| why.contains(needle))
        .map_or("other", |(_, kind)| kind)
}

fn check(config: &str, text: &str) -> (Translation, Summary) {
    let directives = parse(text).unwrap_or_else(|e| panic!("{config}: {e}"));
    let mut all = Vec::new();
    locations(&directives, &mut Vec::new(), &mut all);
    let t = translate(&[(config.to_owned(), directives)]);

    let routes: Vec<_> = t.sites.iter().flat_map(|s| s.routes.iter()).collect();
    // Nested routes (at any depth) count as routes of their location.
    fn flatten<'r>(route: &'r super::translate::Route, out: &mut Vec<&'r super::translate::Route>) {
        out.push(route);
        for nested in &route.nested {
            flatten(nested, out);
        }
    }
    let mut all_routes: Vec<&super::translate::Route> = Vec::new();
    for r in &routes {
        flatten(r, &mut all_routes);
    }
    let route_lines: BTreeSet<usize> = all_routes.iter().map(|r| r.at.line).collect();
    let mut covered: BTreeSet<usize> = BTreeSet::new();
    let covers = t
        .sites
        .iter()
        .map(|s| &s.covered)
        .chain(std::iter::once(&t.outside_covered));
    for c in covers {
        covered.extend(c.values().flatten().map(|at| at.line));
    }
    let mut untranslated: BTreeMap<usize, String> = BTreeMap::new();
    for note in t.notes() {
        if let Note::Untranslated { at, why, .. } = note {
            untranslated.insert(at.line, why.clone().unwrap_or_default());
        }
    }

    let mut summary = Summary {
        config: config.to_owned(),
        locations: all.len(),
        routes: routes.len(),
        left_out: 0,
        reasons: BTreeMap::new(),
        untranslated: t.untranslated(),
    };
    for l in &all {
        // A guarded location (deny, auth, FastCGI, return …) becomes a route only with its guard.
        if let Some(r) = all_routes
            .iter()
            .find(|r| r.at.line == l.line)
            .filter(|_| l.guarded)
        {
            let key = |name: &str| r.keys.iter().any(|(k, _)| k == name);
            // A nested location certd cannot answer like nginx stands as a route answering 502.
            let refuses = matches!(&r.target, Target::Answer(a) if a.contains("502"));
            let guards = refuses
                || l.block.iter().all(|i| match i.as_str() {
                    "deny" => key("access"),
                    "auth_basic" => key("auth_basic"),
                    "return" => matches!(r.target, Target::Answer(_)),
                    "internal" => {
                        key("internal")
                            || matches!(&r.target, Target::Answer(a) if a.contains("404"))
                    }
                    "limit_except" => key("limit_except"),
                    "auth_request" => key("auth_request"),
                    // A PHP location translated on its own must run PHP, never serve files.
                    "fastcgi_pass" => key("fastcgi"),
                    _ => true,
                });
            assert!(
                guards,
                "{config}:{}: a guarded location became a route without its guard",
                l.line
            );
        }
        // And no route answers the paths nginx sends to a guarded location that is not a route.
        // (A covered one is certd's own: the :80 redirect, an ACME webroot.)
        if l.guarded
            && !l.dotfiles_only
            && !route_lines.contains(&l.line)
            && !covered.contains(&l.line)
        {
            for r in &routes {
                let reaches = match (&r.kind, plain_path(&l.args)) {
                    (RouteKind::Exact(_) | RouteKind::Named(_), _) => false,
                    (RouteKind::Regex(_) | RouteKind::IRegex(_), Some(path)) => {
                        let strong = l.args.len() == 2 && (l.args[0] == "=" || l.args[0] == "^~");
                        strong && regex_reaches(std::slice::from_ref(&r.path), path)
                    }
                    (RouteKind::Regex(_) | RouteKind::IRegex(_), None) => {
                        let re = l.args.last().map(String::as_str).unwrap_or_default();
                        r.at.line > l.line && !super::safety::disjoint(&r.path, re)
                    }
                    (RouteKind::Path, Some(path)) => {
                        path.starts_with(r.path.as_str())
                            && !routes.iter().any(|o| {
                                o.kind == RouteKind::Path
                                    && o.path.len() > r.path.len()
                                    && path.starts_with(o.path.as_str())
                            })
                    }
                    (RouteKind::Path, None) => !r.preferred && regex_reaches(&l.args, &r.path),
                };
                // certd's FastCGI route runs the PHP that nginx's PHP location ran.
                let runs_php = l.block.iter().any(|n| n == "fastcgi_pass")
                    && r.keys.iter().any(|(k, _)| k == "fastcgi");
                assert!(
                    !reaches || r.at.line == l.line || runs_php,
                    "{config}:{}: route {} ({:?}, line {}) answers paths nginx sends to the \
                     guarded `location {}`",
                    l.line,
                    r.path,
                    r.target,
                    r.at.line,
                    l.args.join(" ")
                );
            }
        }
        if l.dotfiles_only {
            // Only static roots may take the paths a dotfile rule refuses: they refuse them too.
            for r in routes
                .iter()
                .filter(|r| r.kind == RouteKind::Path && !route_lines.contains(&l.line))
            {
                assert!(
                    r.preferred || matches!(r.target, Target::Root(_)),
                    "{config}:{}: route {} would proxy dotfiles nginx refuses",
                    l.line,
                    r.path
                );
            }
        }
        // Every location is a route, translated, or listed as untranslated with its line (or
        // sits inside one that is).
        // Checked first: a nested location that stands as a route answering 502 is left out.
        if let Some(why) = untranslated.get(&l.line) {
            summary.left_out += 1;
            *summary.reasons.entry(reason(why)).or_default() += 1;
            continue;
        }
        if route_lines.contains(&l.line) || covered.contains(&l.line) {
            continue;
        }
        let inside = l
            .ancestors
            .iter()
            .any(|a| untranslated.contains_key(a) || covered.contains(a));
        if let Some(why) = l.ancestors.iter().rev().find_map(|a| untranslated.get(a)) {
            summary.left_out += 1;
            *summary.reasons.entry(reason(why)).or_default() += 1;
        }
        assert!(
            inside,
            "{config}:{}: `location {}` is neither a route nor reported",
            l.line,
            l.args.join(" ")
        );
        assert!(
            !l.ancestors.iter().any(|a| route_lines.contains(a)),
            "{config}:{}: a nested location inside a route is not a nested route",
            l.line
        );
    }
    // Anything left out makes the exit status 1.
    if summary.left_out > 0 || t.sites.iter().any(|s| s.routes.is_empty()) {
        assert!(t.untranslated() > 0, "{config}: left out but exit status 0");
    }
    (t, summary)
}

fn corpus() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nginx");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, text)
        })
        .filter(|(name, _)| name.ends_with(".conf"))
        .collect();
    files.sort();
    files
}

/// The file with its placeholder server names (`YOUR_SERVER_FQDN`, `<public_url>`, …, or none)
/// replaced by a real one, so that its locations are translated too rather than the whole block
/// being left out for want of a name.
fn named(name: &str, text: &str) -> String {
    let host = format!("{}.example", name.trim_end_matches(".conf"));
    let mut text = text.to_owned();
    for placeholder in [
        "YOUR_SERVER_FQDN",
        "<public_url>",
        "<your-nc-domain>",
        "DOMAIN_NAME",
        "${WEBSERVER_HOST}",
        "enter.your.web.hostname.here",
        "localhost",
    ] {
        text = text.replace(
            &format!("server_name {placeholder};"),
            &format!("server_name {host};"),
        );
    }
    if !text.contains("server_name") {
        text = text.replacen(
            "listen 80;",
            &format!("listen 80;\n  server_name {host};"),
            1,
        );
    }
    text
}

#[test]
fn every_corpus_config_imports_safely() {
    let files = corpus();
    assert!(files.len() >= 15, "the corpus has {} files", files.len());
    let mut rows = Vec::new();
    for (name, text) in &files {
        // Each file says where it comes from.
        assert!(
            text.lines()
                .next()
                .is_some_and(|l| l.starts_with("# Source: ")),
            "{name}: no `# Source:` line at the top"
        );
        check(name, text);
        rows.push(check(name, &named(name, text)).1);
    }
    println!("\n(placeholder server names replaced by NAME.example; every file is checked as published too)");
    println!(
        "{:<28} {:>9} {:>6} {:>8} {:>12}  left out by reason",
        "config", "locations", "routes", "left out", "untranslated"
    );
    let mut total = (0, 0, 0);
    for row in &rows {
        let reasons: Vec<String> = row
            .reasons
            .iter()
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect();
        println!(
            "{:<28} {:>9} {:>6} {:>8} {:>12}  {}",
            row.config,
            row.locations,
            row.routes,
            row.left_out,
            row.untranslated,
            reasons.join(", ")
        );
        total = (
            total.0 + row.locations,
            total.1 + row.routes,
            total.2 + row.left_out,
        );
    }
    println!(
        "{:<28} {:>9} {:>6} {:>8}",
        format!("{} configs", rows.len()),
        total.0,
        total.1,
        total.2
    );
    // The locations each file still leaves out (before the importer took nginx's location
    // forms, headers, limits, access, compression, upstream groups and PHP: 68 of 79).
    let left_out: Vec<(&str, usize)> = rows
        .iter()
        .map(|row| (row.config.as_str(), row.left_out))
        .collect();
    assert_eq!(
        left_out,
        [
            ("code-server.conf", 0),
            ("discourse.conf", 1),
            ("gitea.conf", 0),
            ("gitlab.conf", 0),
            ("grafana.conf", 0),
            ("home-assistant.conf", 0),
            ("immich.conf", 1),
            ("jellyfin.conf", 1),
            ("mastodon.conf", 0),
            ("minio.conf", 0),
            ("nextcloud.conf", 0),
            ("odoo.conf", 0),
            ("peertube.conf", 5),
            ("pixelfed.conf", 0),
            ("plausible.conf", 0),
            ("synapse.conf", 0),
            ("uptime-kuma.conf", 0),
            ("wordpress-restrictions.conf", 0),
            ("wordpress.conf", 1),
        ]
    );
    assert_eq!(total, (82, 57, 9));
}

/// The cases issue #11 names, one by one.
#[test]
fn the_dangerous_shapes_of_the_issue() {
    let files: BTreeMap<String, String> = corpus().into_iter().collect();
    let get = |name: &str| {
        let text = files.get(name).unwrap_or_else(|| panic!("{name} missing"));
        check(name, text).0
    };

    // WordPress: `location ~ \.php$ { fastcgi_pass … }` is dropped: its PHP goes to an upstream
    // group (two php-fpm servers), which certd's FastCGI route does not have. It stands as a
    // regex route answering 502, tried before `/` as nginx tries it, so the static root over the
    // PHP docroot never serves `/wp-config.php` as text.
    let t = get("wordpress.conf");
    let php = t.sites[0]
        .routes
        .iter()
        .position(|r| matches!(&r.kind, RouteKind::Regex(re) if re.contains("php")))
        .expect("the PHP location's stand-in");
    assert!(
        matches!(&t.sites[0].routes[php].target, Target::Answer(a) if a.contains("502")),
        "{:?}",
        t.sites[0].routes
    );
    assert!(t.untranslated() > 0);
    // The deny rules are routes with `access = ["deny all"]`, in their order among the regexes.
    let t = get("wordpress-restrictions.conf");
    let denies: Vec<&str> = t.sites[0]
        .routes
        .iter()
        .filter(|r| {
            r.keys
                .iter()
                .any(|(k, v)| k == "access" && v.contains("deny all"))
        })
        .map(|r| r.path.as_str())
        .collect();
    assert_eq!(denies, ["/\\.", "/(?:uploads|files)/.*\\.php$"]);

    // GitLab: `try_files $uri $uri/index.html $uri.html @gitlab` never becomes static-only.
    let t = get("gitlab.conf");
    assert!(t.sites.iter().all(|s| s.routes.is_empty()));

    // Mastodon: the :80 block (ACME webroot + `location / { return 301 https://… }`) is certd's
    // own redirect, not site content; the streaming API is proxied to its upstream's one server.
    let t = get("mastodon.conf");
    assert_eq!(t.sites.len(), 1);
    let site = &t.sites[0];
    assert!(site
        .servers
        .iter()
        .any(|(_, role)| *role == "http → https redirect"));
    let routes: Vec<(&str, &Target)> = site
        .routes
        .iter()
        .map(|r| (r.path.as_str(), &r.target))
        .collect();
    assert_eq!(
        routes,
        [
            ("/", &Target::Proxy("http://127.0.0.1:3000".to_owned())),
            (
                "/api/v1/streaming",
                &Target::Proxy("http://127.0.0.1:4000".to_owned())
            )
        ]
    );
    // Its proxy_cache is the route's cache, and X-Cached carries the cache status.
    let text = &super::render::render(&t);
    assert!(
        text.contains("cache = { valid = { \"200\" = \"168h\", \"410\" = \"24h\" } }"),
        "{text}"
    );
    assert!(text.contains("$upstream_cache_status"), "{text}");
    // Its static files are nested routes of `/` over the server's root, as in nginx.
    let nested: Vec<(&str, &Target)> = site.routes[0]
        .nested
        .iter()
        .map(|r| (r.path.as_str(), &r.target))
        .collect();
    let public = Target::Root("/home/mastodon/live/public".to_owned());
    assert_eq!(
        nested,
        [
            ("/sw.js", &public),
            (
                "^/(assets|avatars|emoji|headers|packs|shortcuts|sounds)/",
                &public
            ),
            ("/system/", &public),
        ]
    );
    // Gitea: `location /_/static/assets/ { alias … }` is no route over the wrong folder, and
    // `/` does not proxy the paths nginx serves from that folder.
    let t = get("gitea.conf");
    let alias = t.sites[0]
        .routes
        .iter()
        .find(|r| r.path == "/_/static/assets/")
        .map(|r| &r.target);
    assert_eq!(
        alias,
        Some(&Target::Alias("/path/to/gitea/public/".to_owned()))
    );

    // Grafana, Home Assistant, Odoo: the `$connection_upgrade` map is certd's websocket support,
    // not an untranslated line; the single-server upstreams are proxied to.
    for name in ["grafana.conf", "home-assistant.conf", "odoo.conf"] {
        let t = get(name);
        assert!(
            !t.notes().any(|n| matches!(n,
                Note::Untranslated { text, .. } if text.starts_with("map $http_upgrade"))),
            "{name}"
        );
    }
    let t = get("odoo.conf");
    let mut routes: Vec<(&str, &Target)> = t.sites[0]
        .routes
        .iter()
        .map(|r| (r.path.as_str(), &r.target))
        .collect();
    routes.sort_by_key(|(path, _)| *path);
    assert_eq!(
        routes,
        [
            ("/", &Target::Proxy("http://127.0.0.1:8069".to_owned())),
            (
                "/websocket",
                &Target::Proxy("http://127.0.0.1:8072".to_owned())
            )
        ]
    );

    // Home Assistant: `listen … default_server` on the TLS block → `[https] default_site`.
    let t = get("home-assistant.conf");
    assert_eq!(t.default_site.as_deref(), Some("example.com"));

    // Nextcloud: every location is a route, in nginx's order; the PHP location is a FastCGI
    // route of its own (so PHP source is never served as a file), and the `data/` and `config/`
    // folders answer 404 before any route that serves files.
    let t = get("nextcloud.conf");
    let routes: Vec<&Route> = t.sites.iter().flat_map(|s| &s.routes).collect();
    assert_eq!(routes.len(), 10, "{routes:#?}");
    let php = routes
        .iter()
        .find(|r| r.kind == RouteKind::Regex("\\.php(?:$|/)".to_owned()))
        .unwrap_or_else(|| panic!("no PHP route: {routes:#?}"));
    assert!(php.keys.iter().any(|(k, _)| k == "fastcgi"), "{php:#?}");
    let hidden = routes
        .iter()
        .position(|r| {
            r.kind
                == RouteKind::Regex(
                    "^/(?:build|tests|config|lib|3rdparty|templates|data)(?:$|/)".to_owned(),
                )
        })
        .unwrap_or_else(|| panic!("no data/config guard: {routes:#?}"));
    let first_files = routes
        .iter()
        .position(|r| {
            matches!(r.kind, RouteKind::Regex(_)) && r.keys.iter().any(|(k, _)| k == "try_files")
        })
        .unwrap_or_default();
    assert!(hidden < first_files, "{routes:#?}");
    assert!(matches!(routes[hidden].target, Target::Answer(_)));
}

/// Every corpus fragment is a certd.toml certd reads: the only problems `certd check` may find
/// are the folders and files of the machine the config came from (roots, htpasswd files), which
/// this one does not have.
#[test]
fn every_corpus_fragment_is_a_config_certd_accepts() {
    let dir = std::env::temp_dir();
    for (name, text) in corpus() {
        let text = named(&name, &text);
        let directives = parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let t = translate(&[(name.clone(), directives)]);
        let fragment = super::render::render(&t);
        // Its folders made real, so that certd checks everything else about the routes.
        let folders = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let fragment: String = fragment
            .lines()
            .map(|line| {
                let trimmed = line.trim_start();
                for key in ["root = ", "alias = "] {
                    if trimmed.starts_with(key) {
                        let dir = folders.path().join(format!("d{}", line.len()));
                        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
                        return format!("{key}{:?}\n", dir.display().to_string());
                    }
                }
                format!("{line}\n")
            })
            .collect();
        let config = format!("[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n\n{fragment}");
        let Err(err) = crate::config::from_toml(&config, &dir.join("certd.toml")) else {
            continue;
        };
        for line in err.to_string().lines().filter(|l| !l.trim().is_empty()) {
            let machine = [
                "problem in the configuration",
                "problems in the configuration",
                "is not a folder",
                "is not a readable file",
                "not a file",
                "No such file",
                "does not exist",
                "cannot read",
                "not found",
            ]
            .iter()
            .any(|needle| line.contains(needle));
            assert!(
                machine || line.starts_with("certd.toml:") && line.ends_with(':'),
                "{name}: {line}\n--- fragment ---\n{fragment}"
            );
        }
    }
}
