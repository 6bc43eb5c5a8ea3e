//! nginx's `index` and `error_page` through the real daemon over TLS: a folder is answered with the
//! first of the route's index names it holds (an `index.php` goes to the PHP route, never out as a
//! file); an error is replaced by what the site serves for another URI or by a named route, with
//! its status kept, replaced (`=200`) or the target's; an upstream's own error passes through
//! unless the route sets `intercept_errors`.

use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::World;
use crate::harness::Upstream;

const NAME: &str = "pages.test";

/// Starts the daemon for `pages.test` with `site` (TOML written after the site's `names`), once
/// `files` (path under the config folder, contents) are written.
async fn serve(site: &str, files: &[(&str, &str)]) -> World {
    World::one_site(NAME, site, files).await
}

/// An upstream on loopback that answers every request with `503` and the body `app is down`
/// (as an app in maintenance does), its own error page.
async fn failing_upstream() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buffer[..n]),
                    }
                }
                let answer = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 11\r\n\
                              content-type: text/plain\r\nconnection: close\r\n\r\napp is down";
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    (url, task)
}

#[tokio::test]
async fn index_names_are_tried_in_order_and_an_index_php_goes_to_the_php_route() {
    let php = Upstream::echo().await;
    let site = format!(
        r#"index = ["index.php", "index.html"]

  [[site.route]]
  path = "/"
  root = "www"

  [[site.route]]
  path = "/docs/"
  root = "www"
  index = ["start.htm", "index.html"]

  [[site.route]]
  regex = '\.php$'
  proxy = "{}"
"#,
        php.url()
    );
    let world = serve(
        &site,
        &[
            ("www/index.php", "<?php echo 'secret source';"),
            ("www/index.html", "<h1>home</h1>"),
            ("www/docs/start.htm", "<h1>start</h1>"),
            ("www/docs/index.html", "<h1>docs index</h1>"),
            ("www/plain/index.html", "<h1>plain</h1>"),
        ],
    )
    .await;
    let host = world.authority(NAME);
    let mut h1 = world.client.http1(NAME).await;

    // `/` holds index.php first: the request goes on to the PHP route as /index.php.
    let reply = h1.get(&host, "/").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert!(!reply.text().contains("secret source"), "{reply:?}");
    assert_eq!(reply.echoed().path, "/index.php");
    assert_eq!(php.received(), 1);
    // The route's own list, in its order.
    let reply = h1.get(&host, "/docs/").await;
    assert_eq!(reply.text(), "<h1>start</h1>", "{reply:?}");
    // The inherited list's second name, where the first is missing.
    let reply = h1.get(&host, "/plain/").await;
    assert_eq!(reply.text(), "<h1>plain</h1>", "{reply:?}");
    // A folder without any of them is forbidden (nginx without `autoindex`); a missing one is 404.
    std::fs::create_dir_all(world.certd.dir().join("www/empty")).expect("mkdir");
    let reply = h1.get(&host, "/empty/").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{reply:?}");
    let reply = h1.get(&host, "/missing/").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{reply:?}");
}

#[tokio::test]
async fn error_pages_replace_errors_through_the_sites_routes() {
    let app = Upstream::echo().await;
    let (down, _task) = failing_upstream().await;
    let dead = format!("http://127.0.0.1:{}", crate::harness::free_port());
    let site = format!(
        r#"
  [[site.error_page]]
  codes = [502, 503, 504]
  target = "/50x.html"

  [[site.error_page]]
  codes = [404]
  target = "/errors/404.html"
  status = 200

  [[site.route]]
  path = "/"
  root = "www"

  [[site.route]]
  exact = "/50x.html"
  root = "errors"

  [[site.route]]
  path = "/errors/"
  root = "."

  [[site.route]]
  path = "/dead/"
  proxy = "{dead}"

  [[site.route]]
  path = "/maintenance/"
  proxy = "{down}"

  [[site.route]]
  path = "/strict/"
  proxy = "{down}"
  intercept_errors = true

  [[site.route]]
  path = "/spa/"
  root = "www"
    [[site.route.error_page]]
    codes = [404]
    target = "@app"
    status = "target"

  [[site.route]]
  name = "@app"
  proxy = "{app}"
"#,
        app = app.url()
    );
    let world = serve(
        &site,
        &[
            ("www/a.txt", "a"),
            ("errors/50x.html", "<h1>we are down</h1>"),
            ("errors/404.html", "<h1>nothing here</h1>"),
        ],
    )
    .await;
    let host = world.authority(NAME);
    let mut h1 = world.client.http1(NAME).await;

    // certd's own 502 (nothing listens): the page, with the status kept.
    let reply = h1.get(&host, "/dead/x").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{reply:?}");
    assert_eq!(reply.text(), "<h1>we are down</h1>");
    assert_eq!(
        reply.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    // A missing file: `=200`.
    let reply = h1.get(&host, "/missing.txt").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.text(), "<h1>nothing here</h1>");
    // The upstream's own 503 passes through; with intercept_errors it gets the page.
    let reply = h1.get(&host, "/maintenance/x").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    assert_eq!(reply.text(), "app is down");
    let reply = h1.get(&host, "/strict/x").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    assert_eq!(reply.text(), "<h1>we are down</h1>");
    // A route's own list replaces the site's: the named route gets the original path, and its
    // status (`=`).
    let reply = h1.get(&host, "/spa/settings?tab=2").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.echoed().path, "/spa/settings?tab=2");
    assert_eq!(reply.echoed().method, "GET");
}
