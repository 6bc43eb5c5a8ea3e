//! Translation tests: the two user stories (`fixtures/`, taken verbatim from shared/seeds; see
//! `fixtures/README.md`), loaded back through certd's own config loader, and the directives certd
//! does not take over.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::parse::parse;
use super::translate::{translate, Loc, Note, Target, Topic, Translation};
use super::{translate_texts, ImportError};
use crate::config::{Config, RouteTargetConfig};

const TERRAX9: &str = include_str!("fixtures/terrax9.conf");
const TERRAX9_BEFORE_CERTBOT: &str = include_str!("fixtures/terrax9.before-certbot.conf");
const TOGETHERERS: &str = include_str!("fixtures/togetherers.conf");
const TOGETHERERS_VERBATIM_443: &str = include_str!("fixtures/togetherers.verbatim-443.conf");

/// Parses and translates `(name, text)` files.
fn translated(files: &[(&str, &str)]) -> Translation {
    let parsed: Vec<(String, _)> = files
        .iter()
        .map(|(name, text)| ((*name).to_owned(), parse(text).unwrap()))
        .collect();
    translate(&parsed)
}

/// The rendered fragment of `(name, text)` files.
fn fragment(files: &[(&str, &str)]) -> super::Fragment {
    let files: Vec<(&Path, &str)> = files
        .iter()
        .map(|(name, text)| (Path::new(*name), *text))
        .collect();
    translate_texts(&files).unwrap()
}

/// Loads `fragment` appended to a certd.toml with an `[acme]` table, as `certd check` would, with
/// `dir` as the config's folder.
fn load(fragment: &str, dir: &Path) -> Config {
    let text = format!(
        "[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n\n[http]\nlisten = \
         [\"127.0.0.1:8080\"]\n\n{fragment}"
    );
    crate::config::from_toml(&text, &dir.join("certd.toml"))
        .unwrap_or_else(|err| panic!("{err}\n--- certd.toml ---\n{text}"))
}

/// `(line, directive text)` of every untranslated note.
fn untranslated(translation: &Translation) -> Vec<(usize, String)> {
    translation
        .notes()
        .filter_map(|note| match note {
            Note::Untranslated { at, text, .. } => Some((at.line, text.clone())),
            Note::Differs { .. } => None,
        })
        .collect()
}

fn lines(translation_covered: Option<&BTreeSet<Loc>>) -> Vec<usize> {
    translation_covered
        .map(|set| set.iter().map(|loc| loc.line).collect())
        .unwrap_or_default()
}

fn proxy(url: &str) -> RouteTargetConfig {
    RouteTargetConfig::Proxy(url.parse().unwrap())
}

#[test]
fn terrax9_after_certbot_is_one_site_with_its_redirect_block() {
    let t = translated(&[("terrax9.conf", TERRAX9)]);
    assert_eq!(untranslated(&t), []);
    assert!(t.outside.is_empty());
    let [site] = t.sites.as_slice() else {
        panic!("{t:#?}")
    };
    assert_eq!(site.names, ["terrax9.se", "www.terrax9.se"]);
    let roles: Vec<(usize, &str)> = site.servers.iter().map(|(at, r)| (at.line, *r)).collect();
    assert_eq!(roles, [(1, "https"), (20, "http → https redirect")]);
    // listen 443 ssl, the certificate, certbot's options and dhparam; all certbot's.
    assert_eq!(lines(site.covered.get(&Topic::Tls)), [13, 14, 15, 16, 17]);
    assert!(site.certbot);
    // The two `if ($host = …)`, `listen 80` and `return 404`.
    assert_eq!(lines(site.covered.get(&Topic::Redirect)), [21, 25, 29, 31]);
    let [route] = site.routes.as_slice() else {
        panic!("{site:#?}")
    };
    assert_eq!(route.path, "/");
    assert_eq!(route.target, Target::Proxy("http://localhost:8080".into()));
    assert_eq!(
        lines(route.covered.get(&Topic::ProxyHeaders)),
        [6, 7, 8, 9, 10]
    );
    assert!(site.error_pages.is_empty());

    let fragment = fragment(&[("terrax9.conf", TERRAX9)]);
    assert_eq!(fragment.untranslated, 0);
    let dir = tempfile::tempdir().unwrap();
    let config = load(&fragment.text, dir.path());
    let [site] = config.sites.as_slice() else {
        panic!("{config:#?}")
    };
    assert_eq!(site.names, ["terrax9.se", "www.terrax9.se"]);
    assert_eq!(site.routes.len(), 1);
    assert_eq!(site.routes[0].path, "/");
    assert_eq!(site.routes[0].target, proxy("http://localhost:8080"));
    assert!(site.error_pages.is_empty());
}

#[test]
fn terrax9_before_certbot_becomes_a_site_that_certd_adds_tls_to() {
    let t = translated(&[("terrax9", TERRAX9_BEFORE_CERTBOT)]);
    assert_eq!(untranslated(&t), []);
    let [site] = t.sites.as_slice() else {
        panic!("{t:#?}")
    };
    assert_eq!(site.names, ["terrax9.se", "www.terrax9.se"]);
    assert_eq!(site.servers[0].1, "http");
    assert_eq!(lines(site.covered.get(&Topic::PlainHttp)), [2]);
    assert_eq!(site.routes.len(), 1);
    assert_eq!(
        site.routes[0].target,
        Target::Proxy("http://localhost:8080".into())
    );

    let fragment = fragment(&[("terrax9", TERRAX9_BEFORE_CERTBOT)]);
    assert_eq!(fragment.untranslated, 0);
    let dir = tempfile::tempdir().unwrap();
    let config = load(&fragment.text, dir.path());
    assert_eq!(config.sites[0].names, ["terrax9.se", "www.terrax9.se"]);
    assert_eq!(
        config.sites[0].routes[0].target,
        proxy("http://localhost:8080")
    );
}

/// The whole output for the first story, to pin the format.
#[test]
fn terrax9_fragment_text() {
    let expected = r#"# certd.toml fragment written by `certd import nginx` from terrax9.conf
# Append it to a certd.toml that has one [acme] table (directory, agree_tos, email) and at
# most one [http] and one [https] table (the listeners: :80 and :443 when absent); this
# fragment holds only sites. `# untranslated` lines are nginx directives certd does not take
# over; `# differs` marks a translated line where certd does not behave quite like nginx.

# site terrax9.se: nginx server blocks terrax9.conf:1 (https), terrax9.conf:20 (http → https
#   redirect)
[[site]]
names = ["terrax9.se", "www.terrax9.se"]
max_body_size = "1m"
# translated (terrax9.conf:13-17): TLS: certd obtains and renews the certificate for these names
#   itself and offers TLS 1.2 and 1.3 only (HTTP/2 by ALPN), with its own protocol, cipher and
#   session settings
#   certbot manages this certificate: `certd import certbot` adopts it (and its account) instead of
#     ordering a new one
# translated (terrax9.conf:21,25,29,31): http → https: certd redirects :80 to https for every name
#   of its sites ([http] redirect = true, the default) and answers 404 for other hosts

  # terrax9.conf:4: location /
  [[site.route]]
  path = "/"
  proxy = "http://localhost:8080"
  # translated (terrax9.conf:6-10): proxy settings: certd speaks HTTP/1.1 to upstreams, passes
  #   websocket upgrades through, keeps Host, and sets X-Forwarded-For, X-Forwarded-Proto,
  #   X-Forwarded-Host, X-Real-IP and Forwarded itself
"#;
    assert_eq!(fragment(&[("terrax9.conf", TERRAX9)]).text, expected);
}

#[test]
fn togetherers_is_a_static_site_with_a_websocket_route_and_error_pages() {
    let t = translated(&[("togetherers.conf", TOGETHERERS)]);
    assert_eq!(untranslated(&t), []);
    let [site] = t.sites.as_slice() else {
        panic!("{t:#?}")
    };
    // `server_name togetherers.com, www.togetherers.com;` is split on the comma.
    assert_eq!(site.names, ["togetherers.com", "www.togetherers.com"]);
    let roles: Vec<(usize, &str)> = site.servers.iter().map(|(at, r)| (at.line, *r)).collect();
    assert_eq!(roles, [(1, "https"), (32, "http → https redirect")]);
    // `listen 443;` + `ssl on;` and the ssl_* lines (TLSv1 and TLSv1.1 are not offered).
    assert_eq!(
        lines(site.covered.get(&Topic::Tls)),
        [2, 4, 6, 7, 8, 9, 10, 11]
    );
    assert!(!site.certbot);
    // `listen 80;` and `rewrite ^(.*)$ https://$host$1 permanent;`.
    assert_eq!(lines(site.covered.get(&Topic::Redirect)), [33, 35]);
    // `location = /50x.html { }` serves an error page; `= /40x.html { }` (nginx's stock config
    // pairs it with `error_page 404 /404.html`) is empty, so the `/` route serves it anyway.
    assert_eq!(lines(site.covered.get(&Topic::ErrorPageLocation)), [28]);
    assert_eq!(lines(site.covered.get(&Topic::SameAnswer)), [24]);
    let routes: Vec<(&str, &Target)> = site
        .routes
        .iter()
        .map(|route| (route.path.as_str(), &route.target))
        .collect();
    assert_eq!(
        routes,
        [
            ("/", &Target::Root("<your-static-files-path>".into())),
            ("/ws", &Target::Proxy("http://localhost:8081".into())),
        ]
    );
    let pages: BTreeMap<u16, &str> = site
        .error_pages
        .iter()
        .map(|(code, page)| (*code, page.file.as_str()))
        .collect();
    assert_eq!(
        pages,
        BTreeMap::from([
            (404, "<your-static-files-path>/404.html"),
            (500, "<your-static-files-path>/50x.html"),
            (502, "<your-static-files-path>/50x.html"),
            (503, "<your-static-files-path>/50x.html"),
            (504, "<your-static-files-path>/50x.html"),
        ])
    );
    // What behaves differently is said: the comma, the relative root, `/ws` vs `/wsx`.
    let differs: Vec<usize> = t
        .notes()
        .filter_map(|note| match note {
            Note::Differs { at, .. } => Some(at.line),
            Note::Untranslated { .. } => None,
        })
        .collect();
    assert_eq!(differs, [3, 5, 34, 16]);
}

#[test]
fn togetherers_with_a_real_root_passes_certds_config_check() {
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("404.html"), "not here").unwrap();
    std::fs::write(www.join("50x.html"), "oops").unwrap();
    let nginx = TOGETHERERS.replace("<your-static-files-path>", &www.display().to_string());
    let fragment = fragment(&[("togetherers.conf", &nginx)]);
    assert_eq!(fragment.untranslated, 0, "{}", fragment.text);

    let config = load(&fragment.text, dir.path());
    let [site] = config.sites.as_slice() else {
        panic!("{config:#?}")
    };
    assert_eq!(site.names, ["togetherers.com", "www.togetherers.com"]);
    let routes: Vec<(&str, &RouteTargetConfig)> = site
        .routes
        .iter()
        .map(|route| (route.path.as_str(), &route.target))
        .collect();
    assert_eq!(
        routes,
        [
            ("/", &RouteTargetConfig::Root(www.clone())),
            ("/ws", &proxy("http://localhost:8081")),
        ]
    );
    let expected: BTreeMap<u16, PathBuf> = [
        (404, "404.html"),
        (500, "50x.html"),
        (502, "50x.html"),
        (503, "50x.html"),
        (504, "50x.html"),
    ]
    .into_iter()
    .map(|(code, file)| (code, www.join(file)))
    .collect();
    assert_eq!(site.error_pages, expected);
}

/// The seed's 443 block as written has `// the two server_names …` on the line before
/// `server_name`. nginx reads `//` as a directive that swallows that `server_name` up to its `;`
/// and then refuses the file, so the parser refuses it too, naming the line; the fixture used for
/// translation drops that line.
#[test]
fn the_seeds_slash_comment_is_an_error_with_its_line() {
    let files = [(Path::new("togetherers.conf"), TOGETHERERS_VERBATIM_443)];
    let Err(errors) = translate_texts(&files) else {
        panic!("the `//` line was accepted")
    };
    let [ImportError::Parse { source, .. }] = errors.as_slice() else {
        panic!("{errors:?}")
    };
    assert_eq!(source.line, 3);
    assert_eq!(source.kind, super::ParseErrorKind::SlashComment);
    assert!(errors[0]
        .to_string()
        .starts_with("togetherers.conf:3: `//` does not start a comment in nginx"));
}

const UNSUPPORTED: &str = r#"upstream app {
    server 127.0.0.1:8080;
}

server {
    listen 443 ssl http2;
    server_name shop.example.com;
    include snippets/security-headers.conf;
    root /srv/shop;
    add_header Strict-Transport-Security "max-age=31536000" always;
    gzip on;

    location / {
        try_files $uri $uri/ /index.html;
    }

    location /api/ {
        proxy_pass http://app;
    }

    location ~ \.php$ {
        fastcgi_pass unix:/run/php/php8.2-fpm.sock;
        include fastcgi_params;
    }

    location /admin/ {
        auth_basic "admin";
        proxy_pass http://127.0.0.1:9000;
        proxy_set_header X-Api-Key "secret value";
    }
}
"#;

#[test]
fn unsupported_directives_are_listed_with_their_line() {
    let t = translated(&[("shop.conf", UNSUPPORTED)]);
    assert_eq!(
        untranslated(&t),
        [
            (8, "include snippets/security-headers.conf;".to_owned()),
            // The server's HSTS header and gzip are site keys now; these three are left out
            // because nginx sends their `.php` paths to FastCGI.
            (
                13,
                "location / { try_files $uri $uri/ /index.html; }".to_owned()
            ),
            (17, "location /api/ { proxy_pass http://app; }".to_owned()),
            (
                26,
                "location /admin/ { auth_basic admin; proxy_pass http://127.0.0.1:9000; \
                 proxy_set_header X-Api-Key \"secret value\"; }"
                    .to_owned()
            ),
            (
                21,
                "location ~ \\.php$ { fastcgi_pass unix:/run/php/php8.2-fpm.sock; include \
                 fastcgi_params; }"
                    .to_owned()
            ),
            (5, "server { server_name shop.example.com; … }".to_owned()),
        ]
    );
    // Nothing answers the same as nginx: no route at all (not `/` over the PHP root, not an
    // unauthenticated `/admin/`), and the empty site is reported.
    assert!(t.sites[0].routes.is_empty());

    let fragment = fragment(&[("shop.conf", UNSUPPORTED)]);
    assert_eq!(fragment.untranslated, 6);
    for (line, text) in untranslated(&t) {
        let comment = format!("# untranslated (shop.conf:{line}): {text}");
        assert!(
            fragment.text.contains(&comment),
            "{comment}\n{}",
            fragment.text
        );
    }
    assert!(fragment
        .text
        .contains("# 6 nginx directives were not translated"));
    // Still valid TOML, with the site in it.
    let value: toml::Value = toml::from_str(&fragment.text).unwrap();
    assert_eq!(
        value["site"][0]["names"][0].as_str(),
        Some("shop.example.com")
    );
}

#[test]
fn exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let seed = write("terrax9", TERRAX9);
    let unsupported = write("shop", UNSUPPORTED);
    let invalid = write("broken", "server {\n  listen 80;\n");
    let run = |files: &[PathBuf]| {
        let mut out = Vec::new();
        let code = super::run_to(files, None, &mut out);
        (code, String::from_utf8(out).unwrap())
    };
    let (code, out) = run(std::slice::from_ref(&seed));
    assert_eq!(code, 0);
    assert!(out.contains("[[site]]"));
    let (code, out) = run(&[seed.clone(), unsupported]);
    assert_eq!(code, 1);
    assert!(out.contains("# untranslated ("));
    // Nothing on stdout when a file is unusable, so `>> certd.toml` appends nothing.
    assert_eq!(run(&[seed.clone(), invalid]), (2, String::new()));
    assert_eq!(run(&[seed, dir.path().join("missing")]), (2, String::new()));
}

#[test]
fn a_whole_nginx_conf_lists_what_is_outside_server_blocks() {
    let text = "user www-data;\nevents {\n\tworker_connections 768;\n}\nhttp {\n\tsendfile on;\n\t\
                ssl_protocols TLSv1.2 TLSv1.3;\n\tinclude /etc/nginx/sites-enabled/*;\n\tserver \
                {\n\t\tlisten 80;\n\t\tserver_name a.example;\n\t\tlocation / { proxy_pass \
                http://127.0.0.1:3000; }\n\t}\n}\n";
    let t = translated(&[("nginx.conf", text)]);
    assert_eq!(
        untranslated(&t),
        [
            (1, "user www-data;".to_owned()),
            (2, "events { worker_connections 768; }".to_owned()),
            (6, "sendfile on;".to_owned()),
            (8, "include /etc/nginx/sites-enabled/*;".to_owned()),
        ]
    );
    assert_eq!(lines(t.outside_covered.get(&Topic::TlsDefaults)), [7]);
    assert_eq!(t.sites.len(), 1);
    assert_eq!(t.sites[0].names, ["a.example"]);
}

#[test]
fn names_that_are_not_dns_names_are_left_out_and_listed() {
    let text = "server {\n  listen 80;\n  server_name a.example _ 10.0.0.1 *.b.example \
                A.Example;\n  location / { proxy_pass http://127.0.0.1:3000; }\n}\n\
                server {\n  listen 80 default_server;\n  server_name _;\n  return 444;\n}\n";
    let t = translated(&[("n.conf", text)]);
    assert_eq!(t.sites.len(), 1);
    assert_eq!(t.sites[0].names, ["a.example"]);
    let why: Vec<String> = t
        .notes()
        .filter_map(|note| match note {
            Note::Untranslated { at, why, .. } => Some(format!("{}: {}", at.line, why.clone()?)),
            Note::Differs { .. } => None,
        })
        .collect();
    assert_eq!(why.len(), 4, "{why:#?}");
    assert!(why[0].starts_with("6: no name in server_name"), "{why:#?}");
    assert!(why[1].starts_with("3: `_` is nginx's catch-all"));
    assert!(why[2].starts_with("3: `10.0.0.1` is left out: an IP address"));
    assert!(why[3].starts_with("3: `*.b.example` is left out: wildcard"));
}

#[test]
fn server_blocks_are_grouped_by_names() {
    let text = r#"
server {
    listen 443 ssl;
    server_name a.example www.a.example;
    location / { proxy_pass http://127.0.0.1:3000; }
}
server {
    listen 80;
    server_name www.a.example a.example;
    location / { proxy_pass http://127.0.0.1:3000; }
    location /old/ { proxy_pass http://127.0.0.1:4000; }
}
server {
    listen 443 ssl;
    server_name a.example b.example;
    location / { proxy_pass http://127.0.0.1:5000; }
}
server {
    listen 80;
    server_name c.example;
    return 301 https://$host$request_uri;
}
server {
    listen 80;
    server_name a.example;
    return 301 https://$host$request_uri;
}
"#;
    let t = translated(&[("g.conf", text)]);
    let sites: Vec<(Vec<&str>, Vec<&str>)> = t
        .sites
        .iter()
        .map(|site| {
            (
                site.names.iter().map(String::as_str).collect(),
                site.routes.iter().map(|r| r.path.as_str()).collect(),
            )
        })
        .collect();
    assert_eq!(
        sites,
        [
            (vec!["a.example", "www.a.example"], vec!["/", "/old/"]),
            (vec!["b.example"], vec!["/"]),
        ]
    );
    // The same `location /` in the :80 and :443 blocks of a site is one route.
    assert_eq!(
        lines(t.sites[0].routes[0].covered.get(&Topic::SameRoute)),
        [10]
    );
    // `a.example` is taken by the first site; c.example is served by no block; the a.example
    // redirect joins the site that has the name.
    let notes = untranslated(&t);
    assert_eq!(notes.len(), 2, "{notes:#?}");
    assert_eq!(notes[0].0, 18);
    assert!(notes[0]
        .1
        .starts_with("server { listen 80; server_name c.example;"));
    assert_eq!(
        notes[1],
        (15, "server_name a.example b.example;".to_owned())
    );
    assert_eq!(lines(t.sites[0].covered.get(&Topic::Redirect)), [24, 26]);
}

#[test]
fn error_pages_use_the_root_nginx_would_read_them_from() {
    let text = r#"server {
    listen 443 ssl;
    server_name a.example;
    root /srv/a;
    location / { }
    location /app/ { proxy_pass http://127.0.0.1:3000; }
    error_page 404 /404.html;
    error_page 500 502 503 504 /50x.html;
    location = /50x.html { root /usr/share/nginx/html; }
    error_page 403 /app/403.html;
    error_page 418 =200 /teapot.html;
}
server {
    listen 443 ssl;
    server_name b.example;
    location / { proxy_pass http://127.0.0.1:3000; }
    error_page 502 /502.html;
}
"#;
    let t = translated(&[("e.conf", text)]);
    let pages: BTreeMap<u16, &str> = t.sites[0]
        .error_pages
        .iter()
        .filter(|(_, page)| !page.uri)
        .map(|(code, page)| (*code, page.file.as_str()))
        .collect();
    assert_eq!(
        pages,
        BTreeMap::from([
            (404, "/srv/a/404.html"),
            (500, "/usr/share/nginx/html/50x.html"),
            (502, "/usr/share/nginx/html/50x.html"),
            (503, "/usr/share/nginx/html/50x.html"),
            (504, "/usr/share/nginx/html/50x.html"),
        ])
    );
    // /app/403.html and b.example's /502.html are fetched from the upstream of the location
    // that answers them: URI pages, served through the routes as nginx redirects internally.
    let uris = |site: usize| -> Vec<(u16, &str)> {
        t.sites[site]
            .error_pages
            .iter()
            .filter(|(_, page)| page.uri)
            .map(|(code, page)| (*code, page.file.as_str()))
            .collect()
    };
    assert_eq!(uris(0), [(403, "/app/403.html")]);
    assert_eq!(uris(1), [(502, "/502.html")]);
    let notes: Vec<usize> = untranslated(&t).iter().map(|(line, _)| *line).collect();
    // `=200` changes the status.
    assert_eq!(notes, [11]);
}

#[test]
fn an_error_page_a_proxy_answers_is_a_uri_page_certd_check_accepts() {
    let text = "server {\n listen 443 ssl;\n server_name b.example;\n                 location / { proxy_pass http://127.0.0.1:3000; }\n                 error_page 404 500 502 /500.html;\n}\n";
    let fragment = fragment(&[("e.conf", text)]);
    assert_eq!(fragment.untranslated, 0, "{}", fragment.text);
    assert!(
        fragment
            .text
            .contains("[[site.error_page]]\n  codes = [404, 500, 502]\n  target = \"/500.html\""),
        "{}",
        fragment.text
    );
    let dir = tempfile::tempdir().unwrap();
    let config = load(&fragment.text, dir.path());
    let pages = &config.sites[0].error_page;
    assert_eq!(pages.len(), 1, "{pages:?}");
    assert_eq!(pages[0].codes, [404, 500, 502]);
    assert!(
        matches!(&pages[0].target, crate::proxy::error_page::ErrorTarget::Uri { path, .. } if path == "/500.html"),
        "{pages:?}"
    );
    assert!(config.sites[0].error_pages.is_empty());
}

#[test]
fn certbot_scheme_redirect_in_a_combined_block() {
    let text = r#"server {
    listen 80;
    listen 443 ssl; # managed by Certbot
    server_name a.example;
    ssl_certificate /etc/letsencrypt/live/a.example/fullchain.pem; # managed by Certbot
    ssl_certificate_key /etc/letsencrypt/live/a.example/privkey.pem; # managed by Certbot
    if ($scheme != "https") {
        return 301 https://$host$request_uri;
    } # managed by Certbot
    location / { proxy_pass http://127.0.0.1:3000; }
}
"#;
    let t = translated(&[("c.conf", text)]);
    assert_eq!(untranslated(&t), []);
    let site = &t.sites[0];
    assert_eq!(site.servers[0].1, "http and https");
    assert!(site.certbot);
    assert_eq!(lines(site.covered.get(&Topic::Redirect)), [7]);
    assert_eq!(lines(site.covered.get(&Topic::PlainHttp)), [2]);
}

#[test]
fn quoted_newlines_stay_inside_one_comment_line() {
    let text = "server {\n  server_name a.example;\n  return 200 \"a\nb\";\n}\n";
    let fragment = fragment(&[("q.conf", text)]);
    assert!(fragment
        .text
        .contains("# untranslated (q.conf:3): return 200 \"a\\nb\";\n"));
    toml::from_str::<toml::Value>(&fragment.text).unwrap();
}

/// A server-level `return 301 https://…` runs before any location, so the `root` and locations
/// of such a block are dead in nginx too: they make no route that would clash with the :443 block.
#[test]
fn a_block_that_redirects_every_request_serves_nothing() {
    let text = r#"server {
    listen 80;
    server_name a.example;
    root /var/www/html;
    index index.html;
    location / { try_files $uri $uri/ =404; }
    return 301 https://$host$request_uri;
}
server {
    listen 443 ssl;
    server_name a.example;
    location / { proxy_pass http://127.0.0.1:3000; }
}
"#;
    let t = translated(&[("r.conf", text)]);
    assert_eq!(untranslated(&t), []);
    let [site] = t.sites.as_slice() else {
        panic!("{t:#?}")
    };
    let roles: Vec<&str> = site.servers.iter().map(|(_, role)| *role).collect();
    assert_eq!(roles, ["https", "http → https redirect"]);
    assert_eq!(site.routes.len(), 1);
    assert_eq!(
        site.routes[0].target,
        Target::Proxy("http://127.0.0.1:3000".into())
    );
    assert_eq!(lines(site.covered.get(&Topic::Unreachable)), [4, 5, 6]);
    assert_eq!(lines(site.covered.get(&Topic::Redirect)), [2, 7]);
}

/// A site behind a load balancer: realip from its addresses, PROXY protocol on both listeners.
const BEHIND_A_BALANCER: &str = "http {
  set_real_ip_from 10.0.0.0/8;
  set_real_ip_from 192.0.2.1;
  real_ip_header X-Forwarded-For;
  real_ip_recursive on;
  server {
    listen 443 ssl proxy_protocol;
    server_name app.example;
    ssl_certificate /etc/ssl/app.pem;
    set_real_ip_from 10.0.0.0/8;
    location / {
      proxy_pass http://127.0.0.1:8080;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }
  }
  server {
    listen 80 proxy_protocol;
    server_name app.example;
    return 301 https://$host$request_uri;
  }
}
";

#[test]
fn real_ip_and_proxy_protocol_become_trusted_proxies_and_proxy_protocol() {
    let t = translated(&[("lb.conf", BEHIND_A_BALANCER)]);
    assert_eq!(untranslated(&t), []);
    assert_eq!(t.edge.trusted_proxies, ["10.0.0.0/8", "192.0.2.1/32"]);
    assert!(t.edge.https_proxy_protocol);
    assert!(t.edge.http_proxy_protocol);
    assert_eq!(
        lines(t.edge.covered.get(&Topic::TrustedProxies)),
        [2, 3, 4, 5, 10]
    );
    assert_eq!(lines(t.edge.covered.get(&Topic::ProxyProtocol)), [7, 18]);
    // The server-level range is certd's for every site: said so.
    assert!(t.edge.notes.iter().any(|note| matches!(
        note,
        Note::Differs { at, .. } if at.line == 10
    )));
    // `proxy_set_header X-Real-IP $remote_addr` is what certd does by itself: translated.
    let route = &t.sites[0].routes[0];
    assert_eq!(lines(route.covered.get(&Topic::ProxyHeaders)), [13, 14]);

    // The fragment, appended to a certd.toml without [https] and [http], is what certd loads.
    let fragment = fragment(&[("lb.conf", BEHIND_A_BALANCER)]);
    assert_eq!(fragment.untranslated, 0, "{}", fragment.text);
    assert!(
        fragment.text.contains(
            "[https]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.1/32\"]\nproxy_protocol = true\n"
        ),
        "{}",
        fragment.text
    );
    assert!(
        fragment.text.contains("\n[http]\nproxy_protocol = true\n"),
        "{}",
        fragment.text
    );
    let text = format!(
        "[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n\n{}",
        fragment.text
    );
    let config = crate::config::from_toml(&text, Path::new("/etc/certd/certd.toml"))
        .unwrap_or_else(|err| panic!("{err}\n{text}"));
    let ranges: Vec<String> = config
        .https
        .trusted_proxies
        .ranges()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(ranges, ["10.0.0.0/8", "192.0.2.1/32"]);
    assert!(config.https.proxy_protocol);
    assert!(config.http.proxy_protocol);
    assert_eq!(config.sites[0].names, ["app.example"]);

    // `real_ip_header proxy_protocol` (the address from the PROXY header) is certd's way too.
    let from_header = BEHIND_A_BALANCER.replace("X-Forwarded-For;", "proxy_protocol;");
    let t = translated(&[("lb.conf", &from_header)]);
    assert_eq!(untranslated(&t), []);
    assert_eq!(lines(t.edge.covered.get(&Topic::ProxyProtocol)), [4, 7, 18]);
}

#[test]
fn real_ip_forms_certd_cannot_follow_are_listed_with_a_reason() {
    /// The untranslated notes of `text`: (line, why).
    fn reasons(text: &str) -> Vec<(usize, String)> {
        translated(&[("lb.conf", text)])
            .notes()
            .filter_map(|note| match note {
                Note::Untranslated { at, why, .. } => Some((at.line, why.clone().unwrap())),
                Note::Differs { .. } => None,
            })
            .collect()
    }
    let site = |listen: &str, extra: &str| {
        format!(
            "server {{\n  listen {listen};\n  server_name app.example;\n  {extra}\n  \
             location / {{ proxy_pass http://127.0.0.1:8080; }}\n}}\n"
        )
    };
    let cases: [(String, usize, &str); 7] = [
        (
            format!(
                "set_real_ip_from 10.0.0.0/8;\nreal_ip_header CF-Connecting-IP;\n{}",
                site("443 ssl", "")
            ),
            2,
            "never from CF-Connecting-IP",
        ),
        (
            format!("set_real_ip_from 10.0.0.0/8;\n{}", site("443 ssl", "")),
            1,
            "not from X-Real-IP",
        ),
        (
            format!(
                "set_real_ip_from unix:;\nreal_ip_header X-Forwarded-For;\n{}",
                site("443 ssl", "")
            ),
            1,
            "TCP only",
        ),
        (
            format!(
                "set_real_ip_from lb.internal;\nreal_ip_header X-Forwarded-For;\n{}",
                site("443 ssl", "")
            ),
            1,
            "not an IP address or a CIDR range",
        ),
        (site("443 ssl proxy_protocol", ""), 2, "no set_real_ip_from"),
        (
            format!(
                "set_real_ip_from 10.0.0.0/8;\nreal_ip_header X-Forwarded-For;\n{}{}",
                site("443 ssl proxy_protocol", ""),
                site("443 ssl", "").replace("app.example", "other.example")
            ),
            4,
            "lb.conf:10 listens without it",
        ),
        (
            format!(
                "set_real_ip_from 10.0.0.0/8;\nreal_ip_header proxy_protocol;\n{}",
                site("443 ssl", "")
            ),
            2,
            "no PROXY header",
        ),
    ];
    for (text, line, reason) in cases {
        let found = reasons(&text);
        assert!(
            found
                .iter()
                .any(|(at, why)| *at == line && why.contains(reason)),
            "line {line}, {reason:?} in {found:#?}\n{text}"
        );
        assert_eq!(found.len(), 1, "{found:#?}\n{text}");
    }

    // Nothing certd would refuse is written: no proxy_protocol without trusted_proxies.
    let fragment = fragment(&[("lb.conf", &site("443 ssl proxy_protocol", ""))]);
    assert!(
        !fragment.text.contains("proxy_protocol = true"),
        "{}",
        fragment.text
    );
    assert_eq!(fragment.untranslated, 1);
}

#[test]
fn try_files_to_404_is_a_static_root_but_not_beside_proxy_pass() {
    let t = translated(&[(
        "a.conf",
        "server {\n  listen 443 ssl;\n  server_name a.example;\n  root /srv/a;\n  location / {\n    \
         try_files $uri $uri/ =404;\n  }\n  location /app/ {\n    proxy_pass http://127.0.0.1:9000;\n    \
         try_files $uri $uri/ =404;\n  }\n}\n",
    )]);
    let routes: Vec<(&str, &Target)> = t.sites[0]
        .routes
        .iter()
        .map(|r| (r.path.as_str(), &r.target))
        .collect();
    // `/app/` proxies only paths that exist as files: no route can do that, so it stands as a
    // route answering 502 for its paths, and `/` (a static root) keeps the others.
    let answer = Target::Answer("{ status = 502 }".to_owned());
    assert_eq!(
        routes,
        [
            ("/", &Target::Root("/srv/a".to_owned())),
            ("/app/", &answer)
        ]
    );
    assert!(!untranslated(&t).iter().any(|(line, _)| *line == 5));
    assert!(untranslated(&t)
        .iter()
        .any(|(line, text)| *line == 8 && text.starts_with("location /app/")));
}

#[test]
fn try_files_to_404_in_a_static_location_is_what_a_root_does() {
    let t = translated(&[(
        "a.conf",
        "server {\n  listen 443 ssl;\n  server_name a.example;\n  root /srv/a;\n  location / {\n    \
         try_files $uri $uri/ =404;\n  }\n}\n",
    )]);
    let routes: Vec<(&str, &Target)> = t.sites[0]
        .routes
        .iter()
        .map(|r| (r.path.as_str(), &r.target))
        .collect();
    assert_eq!(routes, [("/", &Target::Root("/srv/a".to_owned()))]);
    assert_eq!(t.untranslated(), 0);
}

#[test]
fn default_server_becomes_https_default_site_that_certd_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = "server {\n  listen 443 ssl default_server;\n  server_name a.example;\n  \
                 location / {\n    proxy_pass http://127.0.0.1:9000;\n  }\n}\n\
                 server {\n  listen 443 ssl;\n  server_name b.example;\n  location / {\n    \
                 proxy_pass http://127.0.0.1:9001;\n  }\n}\n";
    let fragment = fragment(&[("two.conf", nginx)]);
    assert_eq!(fragment.untranslated, 0, "{}", fragment.text);
    assert!(fragment
        .text
        .contains("[https]\ndefault_site = \"a.example\"\n"));
    let config = load(&fragment.text, dir.path());
    assert_eq!(config.https.default_site.as_deref(), Some("a.example"));
}

#[test]
fn a_literal_server_set_is_the_root_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let public = dir.path().join("public");
    std::fs::create_dir(&public).unwrap();
    let nginx = format!(
        "server {{\n  listen 443 ssl;\n  server_name a.example;\n  set $public {};\n  \
         location / {{\n    root $public;\n  }}\n}}\n",
        public.display()
    );
    let fragment = fragment(&[("a.conf", &nginx)]);
    assert_eq!(fragment.untranslated, 0, "{}", fragment.text);
    let config = load(&fragment.text, dir.path());
    assert_eq!(
        config.sites[0].routes[0].target,
        RouteTargetConfig::Root(public.clone())
    );
    // The same `set` changed in a location: nothing is resolved, the location is left out.
    let changed = nginx.replace("root $public;", "set $public /tmp; root $public;");
    let t = translated(&[("a.conf", &changed)]);
    assert!(t.sites[0].routes.is_empty());
    assert!(untranslated(&t).iter().any(|(line, _)| *line == 4));
}

#[test]
fn proxy_pass_with_another_uri_on_a_prefix_location_strips_the_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = "server {\n  listen 443 ssl;\n  server_name a.example;\n  \
                 location /jellyfin/ {\n    proxy_pass http://127.0.0.1:8096/;\n  }\n  \
                 location /api {\n    proxy_pass http://127.0.0.1:9000/v1;\n  }\n  \
                 location /odd/ {\n    proxy_pass http://127.0.0.1:9000/x;\n  }\n}\n";
    let fragment = fragment(&[("a.conf", nginx)]);
    let config = load(&fragment.text, dir.path());
    let routes: Vec<(&str, &RouteTargetConfig, bool)> = config.sites[0]
        .routes
        .iter()
        .map(|r| (r.path.as_str(), &r.target, r.strip_prefix))
        .collect();
    assert_eq!(
        routes,
        [
            ("/jellyfin/", &proxy("http://127.0.0.1:8096/"), true),
            ("/api", &proxy("http://127.0.0.1:9000/v1"), true),
        ],
        "{}",
        fragment.text
    );
    // `/odd/` → `/x`: /odd/a would become /xa, which certd cannot do: left out.
    assert_eq!(fragment.untranslated, 1, "{}", fragment.text);
}

#[test]
fn the_php_idiom_needs_a_php_script_among_the_index_names() {
    let php = |index: &str| {
        format!(
            "server {{\n  listen 443 ssl;\n  server_name a.example;\n  root /srv/a;\n  {index}\n  \
             location / {{\n    try_files $uri $uri/ /index.php?$args;\n  }}\n  \
             location ~ \\.php$ {{\n    include fastcgi_params;\n    \
             fastcgi_pass unix:/run/php.sock;\n  }}\n}}\n"
        )
    };
    let fastcgi = |t: &Translation| {
        t.sites[0]
            .routes
            .iter()
            .any(|r| r.keys.iter().any(|(k, _)| k == "fastcgi"))
    };
    // certd's FastCGI route tries the route's index names like nginx's index module (403 with
    // none), so WordPress's `index index.php` translates as it is.
    for index in ["index index.php index.html;", "index index.php;"] {
        assert!(fastcgi(&translated(&[("a.conf", &php(index))])), "{index}");
    }
    // With no PHP name among them (nginx's default `index index.html`) nginx runs no index.php
    // for a folder; certd's route would put its fastcgi_index first.
    for index in ["index index.html;", ""] {
        let t = translated(&[("a.conf", &php(index))]);
        assert!(!fastcgi(&t), "{index}");
        assert!(t.sites[0].routes.is_empty(), "{index}");
    }
}

#[test]
fn an_internal_location_no_redirect_reaches_answers_404() {
    let server = |more: &str| {
        format!(
            "server {{\n  listen 443 ssl;\n  server_name a.example;\n  \
             location ^~ /backups/ {{\n    internal;\n  }}\n  \
             location / {{\n    proxy_pass http://127.0.0.1:9000;\n{more}  }}\n}}\n"
        )
    };
    let t = translated(&[("a.conf", &server(""))]);
    let backups = t.sites[0].routes.iter().find(|r| r.path == "/backups/");
    assert!(
        matches!(backups.map(|r| &r.target), Some(Target::Answer(a)) if a.contains("404")),
        "{:?}",
        t.sites[0].routes
    );
    assert_eq!(t.untranslated(), 0);
    // An error page or a `rewrite … last` into it is nginx's own redirect, which a 404 answer
    // would not take: no 404 route then.
    for more in [
        "    error_page 502 /backups/down.html;\n",
        "    rewrite ^/old/(.*)$ /backups/$1 last;\n",
    ] {
        let t = translated(&[("a.conf", &server(more))]);
        assert!(
            !t.sites[0].routes.iter().any(|r| r.path == "/backups/"
                && matches!(&r.target, Target::Answer(a) if a.contains("404"))),
            "{more}"
        );
    }
}

#[test]
fn the_catch_all_server_is_the_default_name_site() {
    let dir = tempfile::tempdir().unwrap();
    let grafana = "upstream grafana {\n  server localhost:3000;\n}\nserver {\n  listen 80;\n  \
                   location / {\n    proxy_pass http://grafana;\n  }\n}\n";
    let named = |name: Option<&str>, text: &str| {
        super::translate_texts_named(&[(Path::new("g.conf"), text)], name).unwrap()
    };
    // Without a name there is no site: certd needs one for the certificate.
    assert!(!named(None, grafana).text.contains("[[site]]"));
    let fragment = named(Some("grafana.example"), grafana);
    let config = load(&fragment.text, dir.path());
    assert_eq!(config.sites[0].names, ["grafana.example"]);
    assert_eq!(
        config.https.default_site.as_deref(),
        Some("grafana.example")
    );
    assert_eq!(
        config.sites[0].routes[0].target,
        proxy("http://localhost:3000")
    );
    // `server_name _` with default_server beside a named block: the same.
    let two = "server {\n  listen 443 ssl default_server;\n  server_name _;\n  location / {\n    \
               proxy_pass http://127.0.0.1:9000;\n  }\n}\nserver {\n  listen 443 ssl;\n  \
               server_name b.example;\n  location / {\n    proxy_pass http://127.0.0.1:9001;\n  \
               }\n}\n";
    let fragment = named(Some("a.example"), two);
    assert_eq!(fragment.untranslated, 0, "{}", fragment.text);
    let config = load(&fragment.text, dir.path());
    assert_eq!(config.sites.len(), 2);
    assert_eq!(config.https.default_site.as_deref(), Some("a.example"));
    // A nameless block that is not nginx's default for its port answers only requests without a
    // Host: no site.
    let not_default = two.replace(" default_server", "");
    assert_eq!(
        load(&named(Some("a.example"), &not_default).text, dir.path())
            .sites
            .len(),
        1
    );
}

#[test]
fn limit_except_with_allow_deny_becomes_the_route_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = |inner: &str| {
        format!(
            "server {{\n  listen 443 ssl;\n  server_name a.example;\n  \
             location = /upload {{\n    limit_except POST head {{ {inner} }}\n    \
             proxy_pass http://127.0.0.1:9000;\n  }}\n  \
             location / {{\n    proxy_pass http://127.0.0.1:9000;\n  }}\n}}\n"
        )
    };
    let fragment = fragment(&[("a.conf", &server("allow 10.0.0.0/8; deny all;"))]);
    assert_eq!(fragment.untranslated, 0, "{}", fragment.text);
    assert!(
        fragment.text.contains(
            "limit_except = { methods = [\"POST\", \"HEAD\"], access = [\"allow 10.0.0.0/8\", \
             \"deny all\"] }"
        ),
        "{}",
        fragment.text
    );
    let config = load(&fragment.text, dir.path());
    let upload = config.sites[0]
        .routes
        .iter()
        .find(|r| r.path == "/upload")
        .unwrap();
    let limit = upload.limit_except.as_deref().unwrap();
    assert!(limit.policy_for(&hyper::Method::POST).is_none());
    assert!(limit.policy_for(&hyper::Method::GET).is_some());
    // Anything but allow/deny inside: the location is left out with the reason, standing as a
    // route answering 502 so that `/` does not answer its path.
    let t = translated(&[("a.conf", &server("auth_basic \"x\"; deny all;"))]);
    let upload = t.sites[0].routes.iter().find(|r| r.path == "/upload");
    assert!(
        matches!(upload.map(|r| &r.target), Some(Target::Answer(a)) if a.contains("502")),
        "{:?}",
        t.sites[0].routes
    );
    let text = fragment_text(&server("auth_basic \"x\"; deny all;"));
    assert!(text.contains("allow/deny rules only"), "{text}");
    // Beside nested locations, which certd's nested routes would answer without it: left out.
    let nested = "server {\n  listen 443 ssl;\n  server_name a.example;\n  location /dav/ {\n    \
                  limit_except GET { deny all; }\n    proxy_pass http://127.0.0.1:9000;\n    \
                  location /dav/inner/ {\n      proxy_pass http://127.0.0.1:9000;\n    }\n  }\n}\n";
    let t = translated(&[("a.conf", nested)]);
    assert!(t.sites[0].routes.is_empty(), "{:?}", t.sites[0].routes);
    assert!(fragment_text(nested).contains("nested routes do not take it"));
}

fn fragment_text(conf: &str) -> String {
    super::translate_texts(&[(Path::new("a.conf"), conf)])
        .map(|f| f.text)
        .unwrap_or_else(|err| format!("{err:?}"))
}

/// A server-level `index` certd cannot take (a URI fallback with a variable, as Nextcloud's
/// `index index.php index.html /index.php$request_uri`) leaves out only the locations that may
/// consult it: an exact location for one file and the `return`-only ones stay, unless a left-out
/// location takes some of their paths in nginx (the `\.php$` regex takes `/remote.php`).
#[test]
fn an_untranslatable_server_index_keeps_the_routes_that_never_consult_it() {
    use super::translate::RouteKind;
    let conf = "server {\n\
        listen 443 ssl;\n\
        server_name cloud.example.com;\n\
        root /srv/cloud;\n\
        index index.php index.html /index.php$args;\n\
        location = /robots.txt { access_log off; }\n\
        location = /folder/ { }\n\
        location /old { return 301 /new; }\n\
        location ~ ^/(?:data|config)(?:$|/) { return 404; }\n\
        location / { try_files $uri $uri/ /index.php$request_uri; }\n\
        }\n";
    let t = translated(&[("cloud.conf", conf)]);
    let mut routes: Vec<(RouteKind, &Target)> = t.sites[0]
        .routes
        .iter()
        .map(|r| (r.kind.clone(), &r.target))
        .collect();
    routes.sort_by_key(|(kind, _)| format!("{kind:?}"));
    assert_eq!(routes.len(), 3, "{routes:?}");
    assert_eq!(
        routes[0],
        (
            RouteKind::Exact("/robots.txt".to_owned()),
            &Target::Root("/srv/cloud".to_owned())
        )
    );
    assert_eq!(routes[1].0, RouteKind::Path);
    assert!(matches!(routes[1].1, Target::Answer(_)), "{routes:?}");
    assert_eq!(
        routes[2].0,
        RouteKind::Regex("^/(?:data|config)(?:$|/)".to_owned())
    );
    // The exact folder and `location /` consult the index: left out, with the reason.
    let left: Vec<(usize, String)> = untranslated(&t);
    for line in [7, 10] {
        assert!(
            left.iter().any(|(l, _)| *l == line),
            "line {line}: {left:?}"
        );
    }
    let why = t
        .notes()
        .find_map(|n| match n {
            Note::Untranslated { at, why, .. } if at.line == 7 => why.clone(),
            _ => None,
        })
        .unwrap();
    assert!(why.contains("/index.php$args"), "{why}");

    // A left-out PHP location beside it stands as a regex route answering 502: `location /old`
    // does not take `/old.php`, which nginx sends to the PHP location.
    let php = conf.replace(
        "location / {",
        "location ~ \\.php$ { fastcgi_split_path_info ^(.+?\\.php)(/.*)$; }\nlocation / {",
    );
    let t = translated(&[("cloud.conf", &php)]);
    let stand_in = t.sites[0]
        .routes
        .iter()
        .find(|r| r.kind == RouteKind::Regex("\\.php$".to_owned()));
    assert!(
        matches!(stand_in.map(|r| &r.target), Some(Target::Answer(a)) if a.contains("502")),
        "{:?}",
        t.sites[0].routes
    );
}

/// Nextcloud's layout: a PHP location with a look-ahead rewrite and its own parameters, static
/// locations falling back to `/index.php$request_uri`, the server's absolute last index, an `if`
/// return and `absolute_redirect off`, each translated and accepted by certd's loader.
#[test]
fn a_nextcloud_server_block_is_translated_whole() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("www");
    std::fs::create_dir(&root).unwrap();
    let conf = format!(
        "server {{\n listen 443 ssl;\n server_name cloud.example.com;\n root {};\n\
         index index.php index.html /index.php$request_uri;\n\
         location = / {{ if ( $http_user_agent ~ ^DavClnt ) {{ return 302 /remote.php/webdav/$is_args$args; }} }}\n\
         location ^~ /.well-known {{ absolute_redirect off; return 301 /index.php$request_uri; }}\n\
         location ~ \\.php(?:$|/) {{\n  rewrite ^/(?!index|remote) /index.php$request_uri;\n\
           fastcgi_split_path_info ^(.+?\\.php)(/.*)$;\n  set $path_info $fastcgi_path_info;\n\
           try_files $fastcgi_script_name =404;\n  include fastcgi_params;\n\
           fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;\n\
           fastcgi_param PATH_INFO $path_info;\n  fastcgi_param front_controller_active true;\n\
           fastcgi_pass unix:/run/php/php-fpm.sock;\n }}\n\
         location ~ \\.css$ {{ try_files $uri /index.php$request_uri; }}\n\
         location / {{ try_files $uri $uri/ /index.php$request_uri; }}\n}}\n",
        root.display()
    );
    let fragment = fragment(&[("nextcloud.conf", &conf)]);
    assert_eq!(fragment.untranslated, 0, "{}", fragment.text);
    for expected in [
        "index = [\"index.php\", \"index.html\", \"/index.php$request_uri\"]",
        "if = [{ test = \"$http_user_agent ~ ^DavClnt\", return = { status = 302",
        "regex = '\\.php(?:$|/)'",
        "front_controller = false",
        "fastcgi_param = { \"front_controller_active\" = \"true\" }",
        "rewrite = [{ regex = \"^/(?!index|remote)\", replacement = \"/index.php$request_uri\" }]",
        "try_files = [\"$uri\", \"/index.php$request_uri\"]",
    ] {
        assert!(
            fragment.text.contains(expected),
            "{expected}\n{}",
            fragment.text
        );
    }
    let config = load(&fragment.text, dir.path());
    let routes = &config.sites[0].routes;
    let php = routes
        .iter()
        .find(|route| route.path == "\\.php(?:$|/)")
        .unwrap();
    let RouteTargetConfig::Fastcgi(target) = &php.target else {
        panic!("not FastCGI: {:?}", php.target);
    };
    assert_eq!(target.front_controller, None);
    assert_eq!(php.http.rewrites.len(), 1);
    let slash = routes
        .iter()
        .find(|route| route.path == "/" && route.http.returns_if.len() == 1);
    assert!(slash.is_some(), "{routes:#?}");
}

/// What certd's `if` and flagless rewrites cannot do like nginx stays untranslated, with a reason.
#[test]
fn ifs_and_flagless_rewrites_certd_cannot_order_like_nginx_are_left_out() {
    for location in [
        "location /a/ { rewrite ^ /b/; return 403; }",
        "location /a/ { rewrite ^/a/(.*) /b/$1 last; if ($arg_x) { return 403; } }",
        "location /a/ { if (-f $request_filename) { return 403; } }",
        "location /a/ { if ($http_x ~ y) { rewrite ^ /z; } }",
    ] {
        let conf = format!("server {{\n listen 443 ssl;\n server_name a.example.com;\n root /srv;\n {location}\n}}\n");
        let fragment = fragment(&[("a.conf", &conf)]);
        assert!(fragment.untranslated > 0, "{location}\n{}", fragment.text);
        // Its paths are either left to no route or to a stand-in answering 502, never served.
        let stand_in = "path = \"/a/\"\n  return = { status = 502 }";
        assert_eq!(
            fragment.text.matches("path = \"/a/\"").count(),
            fragment.text.matches(stand_in).count(),
            "{location}\n{}",
            fragment.text
        );
    }
}
