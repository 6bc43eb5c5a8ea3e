//! `certd import nginx`: the two user stories' nginx configurations (the fixtures beside the
//! translator, taken from shared/seeds) are translated by the real binary, appended to a certd.toml
//! that has `[acme]` and `[http]`, and `certd check` accepts the result. Unsupported directives make
//! the exit code 1 and are listed with file and line; a file nginx itself would refuse makes it 2.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{free_port, Certd, Pebble, RunConfig};
use crate::run::{World, CERT_WAIT};

const WORDPRESS: &str = include_str!("../fixtures/nginx/wordpress.conf");
const MASTODON: &str = include_str!("../fixtures/nginx/mastodon.conf");

const TERRAX9: &str = include_str!("../../src/import/nginx/fixtures/terrax9.conf");
const TERRAX9_BEFORE_CERTBOT: &str =
    include_str!("../../src/import/nginx/fixtures/terrax9.before-certbot.conf");
const TOGETHERERS: &str = include_str!("../../src/import/nginx/fixtures/togetherers.conf");
const TOGETHERERS_VERBATIM_443: &str =
    include_str!("../../src/import/nginx/fixtures/togetherers.verbatim-443.conf");

/// Writes `text` to `name` in the working folder and returns its path.
fn write(certd: &Certd, name: &str, text: &str) -> PathBuf {
    let path = certd.dir().join(name);
    std::fs::write(&path, text).expect("write nginx file");
    path
}

/// Runs `certd import nginx FILE...` in `certd`'s folder (a macro: the harness does not export the
/// type of a finished run).
macro_rules! import {
    ($certd:expr, $($file:expr),+ $(,)?) => {{
        let files: Vec<String> = [$($file.display().to_string()),+].into();
        let mut args = vec!["nginx"];
        args.extend(files.iter().map(String::as_str));
        $certd.run("import", &args).await
    }};
}

/// certd.toml: the tables the fragment expects to exist, then the fragment.
fn config_with(fragment: &str) -> String {
    format!(
        "state_dir = \"state\"\n\n[acme]\ndirectory = \"letsencrypt\"\nemail = \
         \"ops@certd-e2e.example.com\"\nagree_tos = true\n\n[http]\nlisten = \
         [\"127.0.0.1:{}\"]\n\n{fragment}",
        free_port()
    )
}

/// Imports `files`, expects exit 0, writes certd.toml with the fragment, and expects `certd check`
/// to accept it. Returns the fragment.
async fn import_and_check(certd: &Certd, files: &[&Path]) -> String {
    let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let mut args = vec!["nginx"];
    args.extend(files.iter().map(String::as_str));
    let run = certd.run("import", &args).await;
    run.expect_code(0);
    assert!(
        !run.stdout.contains("# untranslated ("),
        "everything should translate:\n{run}"
    );
    certd.write_config_text(&config_with(&run.stdout));
    certd.check().await.expect_code(0);
    run.stdout
}

#[tokio::test]
async fn terrax9_after_certbot_imports_and_checks() {
    let certd = Certd::new();
    let nginx = write(&certd, "terrax9", TERRAX9);
    let fragment = import_and_check(&certd, &[&nginx]).await;
    assert_eq!(fragment.matches("[[site]]").count(), 1, "{fragment}");
    assert!(fragment.contains("names = [\"terrax9.se\", \"www.terrax9.se\"]"));
    assert!(fragment.contains("proxy = \"http://localhost:8080\""));
    // certbot's :80 block is the https redirect certd does by itself.
    assert!(fragment.contains(&format!("translated ({}:21,25,29,31)", nginx.display())));
}

#[tokio::test]
async fn terrax9_before_certbot_imports_and_checks() {
    let certd = Certd::new();
    let nginx = write(&certd, "terrax9", TERRAX9_BEFORE_CERTBOT);
    let fragment = import_and_check(&certd, &[&nginx]).await;
    assert!(fragment.contains("names = [\"terrax9.se\", \"www.terrax9.se\"]"));
    assert!(fragment.contains("plain http: certd serves these names over https"));
}

#[tokio::test]
async fn togetherers_imports_and_checks() {
    let certd = Certd::new();
    // The seed's placeholder root, made a real folder with the error pages it names.
    let www = certd.dir().join("www");
    std::fs::create_dir(&www).expect("mkdir www");
    std::fs::write(www.join("404.html"), "not here").expect("write 404.html");
    std::fs::write(www.join("50x.html"), "oops").expect("write 50x.html");
    let text = TOGETHERERS.replace("<your-static-files-path>", &www.display().to_string());
    let nginx = write(&certd, "togetherers", &text);
    let fragment = import_and_check(&certd, &[&nginx]).await;

    let value: toml::Value = toml::from_str(&fragment).expect("the fragment is TOML");
    let site = &value["site"][0];
    assert_eq!(
        site["names"],
        toml::Value::Array(vec!["togetherers.com".into(), "www.togetherers.com".into()])
    );
    let routes: Vec<(String, String)> = site["route"]
        .as_array()
        .expect("routes")
        .iter()
        .map(|route| {
            let target = route.get("proxy").or(route.get("root")).expect("target");
            (
                route["path"].as_str().expect("path").to_owned(),
                target.as_str().expect("target").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        routes,
        [
            ("/".to_owned(), www.display().to_string()),
            ("/ws".to_owned(), "http://localhost:8081".to_owned()),
        ]
    );
    let pages = site["error_pages"].as_table().expect("error_pages");
    let codes: Vec<&str> = pages.keys().map(String::as_str).collect();
    assert_eq!(codes, ["404", "500", "502", "503", "504"]);
    assert_eq!(
        pages["404"].as_str(),
        Some(www.join("404.html").display().to_string().as_str())
    );
    assert_eq!(
        pages["502"].as_str(),
        Some(www.join("50x.html").display().to_string().as_str())
    );
}

#[tokio::test]
async fn both_files_of_a_story_at_once_make_one_site() {
    let certd = Certd::new();
    let before = write(&certd, "terrax9.before", TERRAX9_BEFORE_CERTBOT);
    let after = write(&certd, "terrax9.after", TERRAX9);
    let fragment = import_and_check(&certd, &[&after, &before]).await;
    assert_eq!(fragment.matches("[[site]]").count(), 1, "{fragment}");
    assert_eq!(fragment.matches("[[site.route]]").count(), 1, "{fragment}");
}

#[tokio::test]
async fn the_seeds_slash_comment_is_refused_with_file_and_line() {
    let certd = Certd::new();
    let nginx = write(&certd, "togetherers", TOGETHERERS_VERBATIM_443);
    let run = import!(certd, nginx);
    run.expect_code(2);
    assert_eq!(run.stdout, "", "nothing to append on error:\n{run}");
    let expected = format!(
        "{}:3: `//` does not start a comment in nginx",
        nginx.display()
    );
    assert!(run.stderr.contains(&expected), "{run}");
}

#[tokio::test]
async fn an_unreadable_file_is_exit_2() {
    let certd = Certd::new();
    let missing = certd.dir().join("missing.conf");
    let run = import!(certd, missing);
    run.expect_code(2);
    assert_eq!(run.stdout, "");
    assert!(run.stderr.contains("missing.conf: cannot read"), "{run}");
}

#[tokio::test]
async fn unsupported_directives_are_listed_and_exit_1() {
    let certd = Certd::new();
    let text =
        "upstream app {\n    server 127.0.0.1:8080;\n}\n\nserver {\n    listen 443 ssl;\n    \
                server_name shop.example.com;\n    include snippets/headers.conf;\n    \
                add_header X-Frame-Options DENY;\n    location / {\n        proxy_pass \
                http://127.0.0.1:9000;\n        try_files $uri @app;\n    }\n    location ~ \
                \\.php$ {\n        fastcgi_pass unix:/run/php.sock;\n    }\n}\n";
    let nginx = write(&certd, "shop", text);
    let run = import!(certd, nginx);
    run.expect_code(1);
    let file = nginx.display();
    for (line, directive) in [
        (8, "include snippets/headers.conf;"),
        // The whole location: `try_files … @app` would never reach the app.
        (
            10,
            "location / { proxy_pass http://127.0.0.1:9000; try_files $uri @app; }",
        ),
        (
            14,
            "location ~ \\.php$ { fastcgi_pass unix:/run/php.sock; }",
        ),
        (5, "server { server_name shop.example.com; … }"),
    ] {
        let comment = format!("# untranslated ({file}:{line}): {directive}");
        assert!(run.stdout.contains(&comment), "missing {comment:?}\n{run}");
    }
    assert!(
        run.stderr
            .contains("4 directive(s) could not be translated"),
        "{run}"
    );
    // The site without routes is still valid (for its certificate), with a warning.
    certd.write_config_text(&config_with(&run.stdout));
    let check = certd.check().await;
    check.expect_code(0);
    assert!(
        check
            .stderr
            .contains("warning: site shop.example.com has no [[site.route]]"),
        "{check}"
    );
}

/// Imports `nginx` (its `server_name` set to `name`), then starts `certd run` on a configuration
/// for Pebble with the fragment appended.
async fn import_and_run(nginx_text: &str, name: &str, from: &str) -> (World, String) {
    let pebble = Pebble::start().await;
    let certd = Certd::new();
    let text = nginx_text.replace(
        &format!("server_name {from};"),
        &format!("server_name {name};"),
    );
    let nginx = write(&certd, "site.conf", &text);
    let run = import!(certd, nginx);
    // Something is left out: always exit 1, never a silent 0.
    run.expect_code(1);
    let config = RunConfig::for_pebble(&pebble, Vec::new());
    let text = format!("{}\n{}", config.to_toml(), run.stdout);
    // Checked as written before it is served (serve_text writes the same text again).
    certd.write_config_text(&text);
    let check = certd.check().await;
    check.expect_code(0);
    let world = World::serve_text(pebble, certd, config, &text).await;
    world.client.wait_for_certificate(name, CERT_WAIT).await;
    (world, run.stdout)
}

#[tokio::test]
async fn imported_wordpress_never_serves_php_source() {
    // The docroot nginx runs WordPress from, with its database credentials in wp-config.php.
    let dir = tempfile::tempdir().expect("tempdir");
    let www = dir.path().join("wordpress");
    std::fs::create_dir_all(&www).expect("mkdir");
    let secret = "<?php define('DB_PASSWORD', 'hunter2');";
    std::fs::write(www.join("wp-config.php"), secret).expect("write wp-config.php");
    std::fs::write(www.join("index.php"), "<?php require 'wp-blog-header.php';").expect("write");
    std::fs::write(www.join("style.css"), "body {}").expect("write");
    let text = WORDPRESS.replace(
        "root /var/www/wordpress;",
        &format!("root {};", www.display()),
    );
    let (world, fragment) = import_and_run(&text, "wp.test", "domain.tld").await;

    let host = world.authority("wp.test");
    let mut h1 = world.client.http1("wp.test").await;
    for path in ["/wp-config.php", "/index.php", "/"] {
        let reply = h1.get(&host, path).await;
        // The PHP location certd cannot run stands in as a 502 for its own paths (`.php`); what
        // it would have answered through `index index.php` is not there (404).
        assert!(
            [StatusCode::NOT_FOUND, StatusCode::BAD_GATEWAY].contains(&reply.status),
            "{path}: {reply:?}"
        );
        assert!(!reply.text().contains("hunter2"), "{path}: {reply:?}");
        assert!(!reply.text().contains("<?php"), "{path}: {reply:?}");
    }
    // The asset location (`location ~* \.(js|css|…)$ { expires max; }`) needs other extensions
    // than the PHP one, so it is a route, with nginx's `expires max`.
    let reply = h1.get(&host, "/style.css").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.text(), "body {}");
    assert_eq!(
        reply
            .headers
            .get("cache-control")
            .and_then(|value| value.to_str().ok()),
        Some("max-age=315360000"),
        "{reply:?}"
    );
    // The FastCGI location (php-fpm through an upstream group, which certd's FastCGI route lacks)
    // is listed with its line and stands in as a 502 for exactly its paths, so the static `/`
    // route beside it (whose `try_files` ends in `/index.php`) never reaches a PHP file.
    assert!(fragment.contains("fastcgi_pass php;"), "{fragment}");
    assert!(
        fragment.contains("location ~ \\.php$ (answers 502)"),
        "{fragment}"
    );
}

#[tokio::test]
async fn imported_mastodon_port_80_block_is_the_redirect() {
    // The public folder both of Mastodon's server blocks name as root.
    let dir = tempfile::tempdir().expect("tempdir");
    let public = dir.path().join("public");
    std::fs::create_dir_all(&public).expect("mkdir");
    std::fs::write(public.join("index.html"), "MASTODON-PUBLIC-FOLDER").expect("write");
    std::fs::write(public.join("sw.js"), "SERVICE-WORKER").expect("write sw.js");
    let text = MASTODON.replace(
        "root /home/mastodon/live/public;",
        &format!("root {};", public.display()),
    );
    let (world, fragment) = import_and_run(&text, "mastodon.test", "example.com").await;

    // Plain http: certd's redirect, the same URL over https.
    let http = world.config.base.listen[0];
    let mut tcp = tokio::net::TcpStream::connect(http)
        .await
        .expect("connect :80");
    tcp.write_all(b"GET /about?x=1 HTTP/1.1\r\nHost: mastodon.test\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut response))
        .await
        .expect("the answer in time")
        .expect("read");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 301"), "{response}");
    let expected = format!(
        "location: https://{}/about?x=1",
        world.authority("mastodon.test")
    );
    assert!(
        response.to_ascii_lowercase().contains(&expected),
        "{response}"
    );

    // Over https, `/` is not the :80 block's folder served as the site's content.
    let host = world.authority("mastodon.test");
    let mut h1 = world.client.http1("mastodon.test").await;
    // It is proxied to Mastodon's backend as in nginx (none runs here: 502).
    let reply = h1.get(&host, "/").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{reply:?}");
    assert!(
        !reply.text().contains("MASTODON-PUBLIC-FOLDER"),
        "{reply:?}"
    );
    // Its nested `location = /sw.js` is a nested route over the public folder, with its header.
    let reply = h1.get(&host, "/sw.js").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.text(), "SERVICE-WORKER");
    assert_eq!(
        reply
            .headers
            .get("cache-control")
            .and_then(|value| value.to_str().ok()),
        Some("public, max-age=604800, must-revalidate"),
        "{reply:?}"
    );
    assert!(
        fragment.contains("http → https redirect"),
        "the :80 block joins the site as its redirect:\n{fragment}"
    );
    assert!(
        fragment.contains("ACME webroot on :80"),
        "the ACME location is certd's own HTTP-01:\n{fragment}"
    );
}
