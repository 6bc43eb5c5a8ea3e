//! A Nextcloud-style front controller through the real daemon over TLS, with a real php-fpm: the
//! routes `certd import nginx` makes of Nextcloud's nginx config. A regex FastCGI route that runs
//! existing scripts only, whose look-ahead rewrite (`^/(?!index|remote)`, no flag) sends other
//! scripts to `/index.php` with the client's URI after it; static routes falling back to
//! `/index.php$request_uri`; the site's `index` ending in that URI; an `if` return on the
//! User-Agent; `$arg_v` from a `[[map]]` in a response header; and PHP's `REQUEST_URI` is always
//! what the client sent.

use hyper::StatusCode;

use super::{World, CERT_WAIT};
use crate::harness::{Certd, Daemon, HttpsClient, Pebble, PhpFpm, RunConfig, Site};

const NAME: &str = "cloud.test";

/// Reports what PHP was told, as JSON.
const SCRIPT: &str = r#"<?php
header('Content-Type: application/json');
echo json_encode([
    'file' => basename(__FILE__),
    'script' => $_SERVER['SCRIPT_NAME'],
    'uri' => $_SERVER['REQUEST_URI'],
    'path_info' => $_SERVER['PATH_INFO'] ?? '',
    'query' => $_SERVER['QUERY_STRING'] ?? '',
    'front' => $_SERVER['front_controller_active'] ?? '',
]);
"#;

#[tokio::test]
async fn a_nextcloud_front_controller_gets_what_the_client_sent() {
    let php = PhpFpm::start().await;
    let pebble = Pebble::start().await;
    let certd = Certd::new();
    let www = certd.dir().join("www");
    for (path, contents) in [
        ("index.php", SCRIPT),
        ("remote.php", SCRIPT),
        ("legacy.php", SCRIPT),
        ("apps/style.css", "body {}\n"),
        ("docs/index.html", "docs\n"),
    ] {
        let path = www.join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("create the folder");
        std::fs::write(&path, contents).expect("write the file");
    }
    let fastcgi = format!("{:?}", php.address());
    let routes = format!(
        r#"
index = ["index.php", "index.html", "/index.php$request_uri"]
  [[site.route]]
  exact = "/"
  root = "www"
  if = [{{ test = "$http_user_agent ~ ^DavClnt", return = {{ status = 302, location = "/remote.php/webdav/$is_args$args" }} }}]
  [[site.route]]
  regex = '\.php(?:$|/)'
  root = "www"
  fastcgi = {fastcgi}
  front_controller = false
  fastcgi_param = {{ front_controller_active = "true" }}
  rewrite = [{{ regex = '^/(?!index|remote)', replacement = "/index.php$request_uri" }}]
  [[site.route]]
  regex = '\.css$'
  root = "www"
  try_files = ["$uri", "/index.php$request_uri"]
  headers = {{ response = {{ add = {{ "Cache-Control" = "max-age=60$immutable" }} }} }}
  [[site.route]]
  path = "/"
  root = "www"
  try_files = ["$uri", "$uri/", "/index.php$request_uri"]

[[map]]
name = "immutable"
source = "$arg_v"
default = ", immutable"
entry = [{{ exact = "", value = "" }}]
"#
    );
    let config = RunConfig::for_pebble(&pebble, vec![Site::new(&[NAME])]);
    certd.write_config_text(&format!("{}{routes}", config.to_toml()));
    let daemon = Daemon::start(&certd, config.https_addr()).await;
    let client = HttpsClient::new(config.https_addr(), &pebble.root_pem().await);
    let world = World {
        daemon,
        client,
        config,
        certd,
        pebble,
    };
    world.client.wait_for_certificate(NAME, CERT_WAIT).await;
    let host = world.authority(NAME);
    let mut h1 = world.client.http1(NAME).await;
    let php_json = |reply: &crate::harness::Reply| -> serde_json::Value {
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        serde_json::from_slice(&reply.body)
            .unwrap_or_else(|err| panic!("not PHP's JSON ({err}): {}", reply.text()))
    };

    // `/`: the site's index runs index.php; REQUEST_URI is the client's.
    let echo = php_json(&h1.get(&host, "/?q=1").await);
    assert_eq!(
        (&echo["script"], &echo["uri"], &echo["front"]),
        (&"/index.php".into(), &"/?q=1".into(), &"true".into())
    );
    // A Microsoft DAV client is sent to WebDAV by the `if`.
    let request = hyper::Request::get("/?a=b")
        .header(hyper::header::HOST, &host)
        .header(hyper::header::USER_AGENT, "DavClnt")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let reply = h1.send(request).await;
    assert_eq!(reply.status, StatusCode::FOUND, "{reply:?}");
    let location = reply.header("location").unwrap_or_default().to_owned();
    assert!(location.ends_with("/remote.php/webdav/?a=b"), "{location}");

    // Scripts in the look-ahead's list run themselves, with PATH_INFO.
    let echo = php_json(&h1.get(&host, "/remote.php/dav/files").await);
    assert_eq!(echo["script"], "/remote.php");
    assert_eq!(echo["path_info"], "/dav/files");
    assert_eq!(echo["uri"], "/remote.php/dav/files");
    // Others (existing or not) are rewritten to the front controller, the client's URI after it.
    for path in ["/legacy.php", "/missing.php", "/x/.php"] {
        let echo = php_json(&h1.get(&host, path).await);
        assert_eq!(echo["script"], "/index.php", "{path}");
        assert_eq!(echo["path_info"], path, "{path}");
        assert_eq!(echo["uri"], path, "{path}");
    }

    // A static file is served with the map's header; a missing one goes to the front controller.
    let reply = h1.get(&host, "/apps/style.css").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.text(), "body {}\n");
    assert_eq!(
        reply.header("cache-control"),
        Some("max-age=60"),
        "{reply:?}"
    );
    let reply = h1.get(&host, "/apps/style.css?v=3").await;
    assert_eq!(
        reply.header("cache-control"),
        Some("max-age=60, immutable"),
        "{reply:?}"
    );
    let echo = php_json(&h1.get(&host, "/apps/gone.css?v=1").await);
    assert_eq!(echo["script"], "/index.php");
    assert_eq!(echo["path_info"], "/apps/gone.css");
    assert_eq!(echo["uri"], "/apps/gone.css?v=1");
    assert_eq!(echo["query"], "v=1");

    // Pretty URLs reach the front controller; a folder with an index.html serves it.
    let echo = php_json(&h1.get(&host, "/apps/files/?dir=/").await);
    assert_eq!(echo["script"], "/index.php");
    assert_eq!(echo["uri"], "/apps/files/?dir=/");
    let reply = h1.get(&host, "/docs/").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.text(), "docs\n");
    drop(php);
}
