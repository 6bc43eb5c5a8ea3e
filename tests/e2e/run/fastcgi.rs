//! FastCGI routes against a real php-fpm (started by [`PhpFpm`] on a unix socket), over TLS with a
//! verifying client: a WordPress-style docroot with front-controller routing, static files, dotfiles,
//! PHP source never sent as text (not by the PHP route, not by a static route of the same site), the
//! `cgi.fix_pathinfo` attack, POST bodies, redirects from `header()`, STDERR in certd's log, HTTP/2,
//! and 502 once php-fpm is gone.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HOST, LOCATION};
use hyper::{Request, StatusCode};

use super::{World, CERT_WAIT};
use crate::harness::{Certd, Pebble, PhpFpm, RunConfig, Site};

/// Never in any response: it is in `wp-config.php` and in the "image" with PHP in it.
const SECRET: &str = "hunter2-db-password";

/// The front controller: reports what PHP was told, as JSON.
const INDEX_PHP: &str = r#"<?php
if (isset($_GET['redirect'])) {
    header('Location: /x');
    exit;
}
if (isset($_GET['log'])) {
    error_log('certd-stderr-marker');
}
header('Content-Type: application/json');
header('X-Powered-By-Test: php');
echo json_encode([
    'uri' => $_SERVER['REQUEST_URI'],
    'script' => $_SERVER['SCRIPT_NAME'],
    'filename' => $_SERVER['SCRIPT_FILENAME'],
    'path_info' => $_SERVER['PATH_INFO'] ?? '',
    'remote' => $_SERVER['REMOTE_ADDR'],
    'https' => $_SERVER['HTTPS'] ?? '',
    'host' => $_SERVER['HTTP_HOST'] ?? '',
    'method' => $_SERVER['REQUEST_METHOD'],
    'query' => $_GET,
    'post' => $_POST,
    'body_length' => strlen(file_get_contents('php://input')),
    'body_md5' => md5(file_get_contents('php://input')),
]);
"#;

fn write(path: &std::path::Path, contents: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create the folder");
    }
    std::fs::write(path, contents).expect("write the file");
}

/// What [`INDEX_PHP`] reported in a reply (200, JSON, no secret).
macro_rules! php_echo {
    ($reply:expr) => {{
        let reply = $reply;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        assert!(!reply.text().contains(SECRET), "{reply:?}");
        serde_json::from_slice::<serde_json::Value>(&reply.body)
            .unwrap_or_else(|err| panic!("not PHP's JSON ({err}): {}", reply.text()))
    }};
}

#[tokio::test]
async fn php_runs_behind_a_fastcgi_route_like_wordpress() {
    let mut php = PhpFpm::start().await;
    let pebble = Pebble::start().await;
    let certd = Certd::new();
    let www = certd.dir().join("www");
    write(&www.join("index.php"), INDEX_PHP);
    write(
        &www.join("wp-config.php"),
        &format!("<?php\ndefine('DB_PASSWORD', '{SECRET}');\n"),
    );
    write(&www.join("style.css"), "body { color: red; }\n");
    write(&www.join(".htaccess"), &format!("# {SECRET}\n"));
    write(
        &www.join("uploads/x.jpg"),
        &format!("<?php echo 'EXECUTED {SECRET}';"),
    );
    let fastcgi = format!("{:?}", php.address());
    let config = RunConfig::for_pebble(
        &pebble,
        vec![
            Site::new(&["blog.test"])
                .root("/", "www")
                .route_option("/", "fastcgi", &fastcgi),
            // A static root over the same PHP docroot, on a site that also runs PHP.
            Site::new(&["files.test"])
                .root("/", "www")
                .root("/app/", "www")
                .route_option("/app/", "fastcgi", &fastcgi),
        ],
    );
    let world = World::serve(pebble, certd, config).await;
    world
        .client
        .wait_for_certificate("blog.test", CERT_WAIT)
        .await;
    world
        .client
        .wait_for_certificate("files.test", CERT_WAIT)
        .await;
    let host = world.authority("blog.test");
    let mut h1 = world.client.http1("blog.test").await;

    // `/` runs the front controller.
    let reply = h1.get(&host, "/").await;
    assert_eq!(reply.header("x-powered-by-test"), Some("php"), "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let echo = php_echo!(reply);
    assert_eq!(echo["script"], "/index.php");
    assert_eq!(echo["uri"], "/");
    assert_eq!(echo["https"], "on");
    assert_eq!(echo["remote"], "127.0.0.1");
    assert_eq!(echo["host"], host.as_str());
    let index = std::fs::canonicalize(www.join("index.php")).expect("canonical");
    assert_eq!(echo["filename"], index.to_string_lossy().as_ref());

    // A pretty permalink reaches the front controller with REQUEST_URI and the query kept.
    let echo = php_echo!(h1.get(&host, "/2024/01/hello/?p=1").await);
    assert_eq!(echo["script"], "/index.php");
    assert_eq!(echo["uri"], "/2024/01/hello/?p=1");
    assert_eq!(echo["query"]["p"], "1");

    // PATH_INFO after the script.
    let echo = php_echo!(h1.get(&host, "/index.php/extra/path?q=2").await);
    assert_eq!(echo["script"], "/index.php");
    assert_eq!(echo["path_info"], "/extra/path");

    // wp-config.php runs (printing nothing); its source is never sent.
    let reply = h1.get(&host, "/wp-config.php").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert!(!reply.text().contains(SECRET), "{reply:?}");
    assert!(!reply.text().contains("<?php"), "{reply:?}");

    // Static files are static; dotfiles and missing scripts are 404.
    let reply = h1.get(&host, "/style.css").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.text(), "body { color: red; }\n");
    assert_eq!(
        reply.header("content-type"),
        Some("text/css; charset=utf-8")
    );
    for path in ["/.htaccess", "/missing.php", "/uploads/x.jpg/evil.php"] {
        let reply = h1.get(&host, path).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}: {reply:?}");
        assert!(!reply.text().contains("EXECUTED"), "{path}: {reply:?}");
        assert!(!reply.text().contains(SECRET), "{path}: {reply:?}");
    }

    // A POST body reaches PHP.
    let request = Request::post("/index.php")
        .header(HOST, &host)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from_static(b"title=Hello+world&n=42")))
        .expect("request");
    let echo = php_echo!(h1.send(request).await);
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["post"]["title"], "Hello world");
    assert_eq!(echo["post"]["n"], "42");

    // A 2 MiB body crosses many STDIN records and arrives whole.
    let big: Vec<u8> = (0..2 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let request = Request::post("/upload.php-less/path")
        .header(HOST, &host)
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(Full::new(Bytes::from(big.clone())))
        .expect("request");
    let echo = php_echo!(h1.send(request).await);
    assert_eq!(echo["script"], "/index.php");
    assert_eq!(echo["body_length"], big.len());
    let md5 = std::process::Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(&big)?;
            child.wait_with_output()
        })
        .expect("md5sum");
    let md5 = String::from_utf8_lossy(&md5.stdout);
    assert_eq!(
        echo["body_md5"],
        md5.split_whitespace().next().expect("a digest")
    );

    // header('Location: ...') is a 302 redirect.
    let reply = h1.get(&host, "/?redirect=1").await;
    assert_eq!(reply.status, StatusCode::FOUND, "{reply:?}");
    assert_eq!(reply.header("location"), Some("/x"));

    // What PHP writes to stderr is in certd's log, with the script.
    let echo = php_echo!(h1.get(&host, "/?log=1").await);
    assert_eq!(echo["query"]["log"], "1");
    world
        .daemon
        .wait_for_log("certd-stderr-marker", std::time::Duration::from_secs(10))
        .await;

    // HTTP/2: the host comes from `:authority`.
    let mut h2 = world.client.http2("blog.test").await;
    let request = Request::get(format!("https://{host}/2024/?p=7"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let echo = php_echo!(h2.send(request).await);
    assert_eq!(echo["uri"], "/2024/?p=7");
    assert_eq!(echo["host"], host.as_str());

    // A static route on a site that runs PHP never sends PHP source.
    let files = world.authority("files.test");
    let mut f = world.client.http1("files.test").await;
    let reply = f.get(&files, "/wp-config.php").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{reply:?}");
    assert!(!reply.text().contains(SECRET), "{reply:?}");
    let reply = f.get(&files, "/style.css").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");

    // php-fpm gone: 502.
    php.stop();
    let reply = h1.get(&host, "/").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{reply:?}");
    // Static files still work without it.
    let reply = h1.get(&host, "/style.css").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert!(!reply.headers.contains_key(LOCATION), "{reply:?}");
}
