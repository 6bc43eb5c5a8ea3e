//! nginx's header, answer and limit directives as certd keys, over real TLS: `add_header` (with its
//! status rule, `always`, and a route's own list replacing the site's), `hsts`, `proxy_set_header`
//! with variables reaching the echo upstream, `return` (301 and 200 with a body), `rewrite`
//! `permanent` and `break`, `max_body_size` (413 for a declared and a chunked body), `expires`, and
//! `etag = false` (nginx `etag off`).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, ETAG, EXPIRES, HOST, IF_NONE_MATCH,
    LAST_MODIFIED, LOCATION, STRICT_TRANSPORT_SECURITY,
};
use hyper::{Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{World, CERT_WAIT};
use crate::harness::{Alpn, Certd, Pebble, RunConfig, Site, Upstream};

const HSTS: &str = "max-age=63072000; includeSubDomains; preload";

/// `site` keys put after `names`, and `[[site.route]]` tables appended to the last site: what the
/// harness's builder has no words for (site-wide keys, routes without `proxy` or `root`).
async fn serve_with(
    pebble: Pebble,
    certd: Certd,
    config: RunConfig,
    site_keys: &str,
    extra_routes: &str,
) -> World {
    let toml = config.to_toml().replacen(
        "names = [\"a.test\"]\n",
        &format!("names = [\"a.test\"]\n{site_keys}"),
        1,
    );
    let text = format!("{toml}\n{extra_routes}");
    World::serve_text(pebble, certd, config, &text).await
}

/// Sends `head` (a request head ending in a blank line) and `body` over a fresh HTTP/1.1 TLS
/// connection, as written: the response's status line and headers.
async fn raw_exchange(world: &World, head: &str, body: &[u8]) -> String {
    let mut tls = world.client.handshake("a.test", Alpn::Http1).await.stream;
    tls.write_all(head.as_bytes()).await.expect("send the head");
    // The body may be refused before it is all sent; what matters is the answer.
    let _ = tls.write_all(body).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    text.split("\r\n\r\n").next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn nginx_headers_answers_rewrites_and_limits_work_over_tls() {
    let pebble = Pebble::start().await;
    let upstream = Upstream::echo().await;
    let certd = Certd::new();
    let static_dir = certd.dir().join("www/static");
    std::fs::create_dir_all(&static_dir).expect("static folder");
    std::fs::write(static_dir.join("app.css"), "body {}\n").expect("app.css");
    let avatars = certd.dir().join("avatars");
    std::fs::create_dir_all(avatars.join("sub")).expect("avatars folder");
    std::fs::write(avatars.join("a.png"), "avatar a\n").expect("a.png");
    std::fs::write(avatars.join("sub/index.html"), "sub\n").expect("sub/index.html");
    std::fs::write(avatars.join(".secret"), "hunter2\n").expect(".secret");
    // What `root` would serve for /avatar/a.png: the alias must not.
    std::fs::create_dir_all(certd.dir().join("www/avatar")).expect("www/avatar");
    std::fs::write(certd.dir().join("www/avatar/a.png"), "wrong\n").expect("wrong a.png");
    let url = upstream.url();
    let config = RunConfig::for_pebble(
        &pebble,
        vec![Site::new(&["a.test"])
            .proxy("/", &url)
            .route_option(
                "/",
                "headers",
                r#"{ request = { set = { "X-Client" = "$remote_addr", "X-Orig" = "$request_uri", "X-Via" = "$scheme://$host", Host = "$proxy_host" }, remove = ["X-Debug"] } }"#,
            )
            .route_option("/", "max_body_size", "\"1k\"")
            .proxy("/own", &url)
            .route_option("/own", "headers", r#"{ response = { add = { "X-Own" = "1" }, hide = ["X-Upstream-Only"] } }"#)
            .proxy("/old", &url)
            .route_option(
                "/old",
                "rewrite",
                r#"[{ regex = "^/old/(.*)$", replacement = "/new/$1", flag = "permanent" }]"#,
            )
            .proxy("/api", &url)
            .route_option(
                "/api",
                "rewrite",
                r#"[{ regex = "^/api/(.*)$", replacement = "/v2/$1", flag = "break" }]"#,
            )
            .proxy("/legacy", &url)
            .route_option(
                "/legacy",
                "rewrite",
                r#"[{ regex = "^/legacy/(.*)$", replacement = "/api/$1", flag = "last" }]"#,
            )
            .root("/static/", "www")
            .route_option("/static/", "expires", "\"30d\"")],
    );
    let site_keys = format!(
        "hsts = \"{HSTS}\"\nheaders = {{ response = {{ add = {{ \"X-Frame-Options\" = \"DENY\", \
         \"X-Site\" = {{ value = \"$server_name\", always = true }} }} }} }}\n"
    );
    let extra_routes = r#"
  [[site.route]]
  path = "/moved"
  return = { status = 301, location = "https://$host$request_uri" }

  [[site.route]]
  path = "/avatar"
  alias = "avatars"

  [[site.route]]
  path = "/health"
  return = { status = 200, body = "ok from $server_name" }
"#;
    let world = serve_with(pebble, certd, config, &site_keys, extra_routes).await;
    world.client.wait_for_certificate("a.test", CERT_WAIT).await;
    let host = world.authority("a.test");
    let mut h1 = world.client.http1("a.test").await;

    // proxy_set_header: variables expanded, Host replaced by the upstream's, a header removed;
    // certd's forwarding headers are still there.
    let request = Request::get("/app/x?q=1")
        .header(HOST, &host)
        .header("x-debug", "secret")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let reply = h1.send(request).await;
    let echoed = reply.echoed();
    assert_eq!(echoed.header("x-client"), "127.0.0.1", "{echoed:#?}");
    assert_eq!(echoed.header("x-orig"), "/app/x?q=1", "{echoed:#?}");
    assert_eq!(echoed.header("x-via"), "https://a.test", "{echoed:#?}");
    assert_eq!(
        echoed.header("host"),
        url.trim_start_matches("http://"),
        "{echoed:#?}"
    );
    assert_eq!(echoed.header("x-forwarded-host"), host, "{echoed:#?}");
    assert!(!echoed.headers.contains_key("x-debug"), "{echoed:#?}");
    // add_header on a 200 (inherited from the site), HSTS on every answer.
    assert_eq!(reply.header("x-frame-options"), Some("DENY"), "{reply:?}");
    assert_eq!(reply.header("x-site"), Some("a.test"), "{reply:?}");
    assert_eq!(reply.header(STRICT_TRANSPORT_SECURITY.as_str()), Some(HSTS));

    // A route with its own add list does not inherit the site's (nginx's rule); HSTS stays.
    let reply = h1.get(&host, "/own").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.header("x-own"), Some("1"), "{reply:?}");
    assert_eq!(reply.header("x-frame-options"), None, "{reply:?}");
    assert_eq!(reply.header(STRICT_TRANSPORT_SECURITY.as_str()), Some(HSTS));

    // A 404 gets only the `always` headers (and HSTS).
    let reply = h1.get(&host, "/static/missing.css").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{reply:?}");
    assert_eq!(reply.header("x-frame-options"), None, "{reply:?}");
    assert_eq!(reply.header("x-site"), Some("a.test"), "{reply:?}");
    assert_eq!(reply.header(STRICT_TRANSPORT_SECURITY.as_str()), Some(HSTS));
    assert_eq!(reply.header(EXPIRES.as_str()), None, "no expires on a 404");

    // expires on a static route.
    let reply = h1.get(&host, "/static/app.css").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(
        reply.header(CACHE_CONTROL.as_str()),
        Some("max-age=2592000")
    );
    let expires = reply.header(EXPIRES.as_str()).expect("an Expires header");
    let at = httpdate::parse_http_date(expires).expect("an HTTP date");
    let ahead = at
        .duration_since(std::time::SystemTime::now())
        .expect("Expires is in the future");
    assert!(ahead > Duration::from_secs(29 * 86_400), "{expires}");

    // return: a redirect built from variables, and a 200 with a body.
    let reply = h1.get(&host, "/moved/a?b=1").await;
    assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY, "{reply:?}");
    assert_eq!(
        reply.header(LOCATION.as_str()),
        Some("https://a.test/moved/a?b=1")
    );
    assert_eq!(
        reply.header("x-frame-options"),
        Some("DENY"),
        "301 gets add_header"
    );
    let reply = h1.get(&host, "/health").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.text(), "ok from a.test");

    // alias: the prefix is replaced by the folder; dotfiles stay hidden; a folder redirect names
    // the public path.
    let reply = h1.get(&host, "/avatar/a.png").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.text(), "avatar a\n");
    let reply = h1.get(&host, "/avatar/.secret").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{reply:?}");
    let reply = h1.get(&host, "/avatar/sub").await;
    assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY, "{reply:?}");
    assert_eq!(
        reply.header(LOCATION.as_str()),
        Some("/avatar/sub/"),
        "{reply:?}"
    );
    let reply = h1.get(&host, "/avatar/sub/").await;
    assert_eq!(reply.text(), "sub\n");

    // rewrite permanent: 301 to the new path with the query appended; break: the upstream gets
    // the rewritten path.
    let reply = h1.get(&host, "/old/page?x=2").await;
    assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY, "{reply:?}");
    assert_eq!(
        reply.header(LOCATION.as_str()),
        Some(format!("https://{host}/new/page?x=2").as_str())
    );
    let echoed = h1.get(&host, "/api/users?x=1").await.echoed();
    assert_eq!(echoed.path, "/v2/users?x=1", "{echoed:#?}");
    // last: routed again, so /api's own rewrite applies too.
    let echoed = h1.get(&host, "/legacy/users").await.echoed();
    assert_eq!(echoed.path, "/v2/users", "{echoed:#?}");

    // max_body_size = 1k: a declared body over it is refused before the upstream sees it, a
    // chunked one once it goes over.
    let before = upstream.received();
    let request = Request::post("/upload")
        .header(HOST, &host)
        .body(Full::new(Bytes::from(vec![b'x'; 2048])))
        .expect("request");
    let reply = h1.send(request).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE, "{reply:?}");
    assert_eq!(upstream.received(), before, "the upstream never saw it");
    let request = Request::post("/upload")
        .header(HOST, &host)
        .body(Full::new(Bytes::from(vec![b'x'; 1000])))
        .expect("request");
    h1.send(request).await.echoed();

    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let mut body = Vec::new();
    for _ in 0..4 {
        body.extend_from_slice(b"200\r\n");
        body.extend_from_slice(&[b'y'; 0x200]);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let answer = raw_exchange(&world, &head, &body).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

#[tokio::test]
async fn an_unknown_variable_is_a_config_error_naming_key_and_line() {
    let certd = Certd::new();
    certd.write_config_text(
        r#"state_dir = "state"

[acme]
directory = "https://127.0.0.1:14000/dir"
email = "a@a.test"
agree_tos = true

[[site]]
names = ["a.test"]

  [[site.route]]
  path = "/"
  proxy = "http://127.0.0.1:8080"
  headers = { request = { set = { "X-Who" = "$remote_adr" } } }
"#,
    );
    let output = certd.run("check", &[]).await;
    let text = format!("{}{}", output.stdout, output.stderr);
    assert_eq!(output.code, Some(2), "{text}");
    assert!(
        text.contains("site[0].route[0].headers.request.set.X-Who"),
        "{text}"
    );
    assert!(text.contains("certd.toml:14:"), "{text}");
    assert!(text.contains("unknown variable `$remote_adr`"), "{text}");
}

/// nginx `etag off` as `etag = false` on the site: files come without an `ETag` (also when
/// compressed), a route saying `etag = true` keeps it, and If-None-Match has nothing to match.
#[tokio::test]
async fn etag_false_takes_the_etag_off_files() {
    let pebble = Pebble::start().await;
    let certd = Certd::new();
    let www = certd.dir().join("www");
    std::fs::create_dir_all(www.join("on")).expect("www/on");
    let css = "body { color: black; }\n".repeat(100);
    std::fs::write(www.join("app.css"), &css).expect("app.css");
    std::fs::write(www.join("on/app.css"), &css).expect("on/app.css");
    let config = RunConfig::for_pebble(
        &pebble,
        vec![Site::new(&["a.test"])
            .site_option("etag", "false")
            .root("/", "www")
            .route_option("/", "compress", "true")
            .root("/on/", "www")
            .route_option("/on/", "etag", "true")],
    );
    let world = World::serve(pebble, certd, config).await;
    world.client.wait_for_certificate("a.test", CERT_WAIT).await;
    let host = world.authority("a.test");
    let mut h1 = world.client.http1("a.test").await;

    let reply = h1.get(&host, "/app.css").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.text(), css);
    assert!(!reply.headers.contains_key(ETAG), "{reply:?}");
    assert!(reply.headers.contains_key(LAST_MODIFIED), "{reply:?}");

    let request = Request::get("/app.css")
        .header(HOST, &host)
        .header(ACCEPT_ENCODING, "gzip")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let reply = h1.send(request).await;
    assert_eq!(reply.headers[CONTENT_ENCODING], "gzip", "{reply:?}");
    assert!(!reply.headers.contains_key(ETAG), "{reply:?}");

    let reply = h1.get(&host, "/on/app.css").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let etag = reply.headers[ETAG].to_str().expect("ETag").to_owned();
    let request = Request::get("/on/app.css")
        .header(HOST, &host)
        .header(IF_NONE_MATCH, &etag)
        .body(Full::new(Bytes::new()))
        .expect("request");
    assert_eq!(h1.send(request).await.status, StatusCode::NOT_MODIFIED);
}
