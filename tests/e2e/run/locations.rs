//! Route matching as nginx matches `location`s, and `try_files`, through the real daemon over TLS:
//! exact, prefix, `^~`, case-insensitive regex and nested routes each reach their own upstream
//! (on the normalised path), and `try_files` serves a single-page app's files with its
//! `/index.html` fallback and hands what is not a file to a named proxy route (`try_files $uri
//! @app`), never a dotfile; `=404` and a fallback loop (500) end in a status. A named fallback
//! answers with its own response headers, and `[[map]]` variables are looked up per request.

use hyper::StatusCode;

use super::World;
use crate::harness::Upstream;

const NAME: &str = "loc.test";
const SECRET: &str = "DB_PASSWORD=hunter2\n";

/// Starts the daemon for one site, `loc.test`, whose routes are `routes` (TOML written after the
/// site's `names`), once `files` (path under the config folder, contents) are written.
async fn serve(routes: &str, files: &[(&str, &str)]) -> World {
    World::one_site(NAME, routes, files).await
}

/// Which of `upstreams` (by label) received `GET path`, and the path it was sent; panics unless
/// exactly one did.
async fn answered_by(
    world: &World,
    upstreams: &[(&str, &Upstream)],
    path: &str,
) -> (String, String) {
    let before: Vec<usize> = upstreams.iter().map(|(_, up)| up.received()).collect();
    let mut h1 = world.client.http1(NAME).await;
    let reply = h1.get(&world.authority(NAME), path).await;
    assert_eq!(reply.status, StatusCode::OK, "GET {path}: {reply:?}");
    let echoed = reply.echoed();
    let reached: Vec<&str> = upstreams
        .iter()
        .zip(before)
        .filter(|((_, up), before)| up.received() > *before)
        .map(|((label, _), _)| *label)
        .collect();
    assert_eq!(reached.len(), 1, "GET {path} reached {reached:?}");
    (reached[0].to_owned(), echoed.path)
}

#[tokio::test]
async fn each_location_kind_reaches_its_own_upstream_in_nginx_order() {
    let labels = [
        "exact",
        "root",
        "documents",
        "images",
        "gif-jpg",
        "app",
        "app-php",
    ];
    let mut upstreams = Vec::new();
    for _ in labels {
        upstreams.push(Upstream::echo().await);
    }
    let url = |label: &str| {
        let at = labels.iter().position(|l| *l == label).expect("a label");
        upstreams[at].url()
    };
    // nginx's documentation example for `location`, plus a prefix with a nested regex.
    let routes = format!(
        r#"
  [[site.route]]
  exact = "/"
  proxy = "{}"
  [[site.route]]
  path = "/"
  proxy = "{}"
  [[site.route]]
  path = "/documents/"
  proxy = "{}"
  [[site.route]]
  path = "/images/"
  prefix_priority = true
  proxy = "{}"
  [[site.route]]
  iregex = '\.(gif|jpg|jpeg)$'
  proxy = "{}"
  [[site.route]]
  path = "/app/"
  proxy = "{}"
    [[site.route.route]]
    regex = '\.php$'
    proxy = "{}"
"#,
        url("exact"),
        url("root"),
        url("documents"),
        url("images"),
        url("gif-jpg"),
        url("app"),
        url("app-php"),
    );
    let world = serve(&routes, &[]).await;
    let pairs: Vec<(&str, &Upstream)> = labels.iter().copied().zip(upstreams.iter()).collect();
    for (request, expected, sent) in [
        ("/", "exact", "/"),
        ("/index.html", "root", "/index.html"),
        (
            "/documents/document.html",
            "documents",
            "/documents/document.html",
        ),
        ("/images/1.gif", "images", "/images/1.gif"),
        ("/documents/1.jpg", "gif-jpg", "/documents/1.jpg"),
        ("/documents/1.JPG?v=2", "gif-jpg", "/documents/1.JPG?v=2"),
        ("/app/page", "app", "/app/page"),
        ("/app/index.php", "app-php", "/app/index.php"),
        // The nested regex belongs to /app/ only; `~` is case-sensitive.
        ("/index.php", "root", "/index.php"),
        ("/app/INDEX.PHP", "app", "/app/INDEX.PHP"),
        // Matching sees the normalised path: dot segments and encoded letters are resolved first.
        (
            "/images/../documents/2.jpeg",
            "gif-jpg",
            "/documents/2.jpeg",
        ),
        ("/%64ocuments/x", "documents", "/documents/x"),
        ("//images//3.gif", "images", "/images/3.gif"),
    ] {
        let (label, path) = answered_by(&world, &pairs, request).await;
        assert_eq!(
            (label.as_str(), path.as_str()),
            (expected, sent),
            "GET {request}"
        );
    }
}

#[tokio::test]
async fn try_files_serves_a_single_page_app_and_falls_back_to_a_named_proxy() {
    let app = Upstream::echo().await;
    let routes = format!(
        r#"
  [[site.route]]
  path = "/spa/"
  root = "www"
  try_files = ["$uri", "$uri/", "/spa/index.html"]
  [[site.route]]
  path = "/assets/"
  root = "www"
  try_files = ["$uri", "=404"]
  [[site.route]]
  path = "/loop/"
  root = "www"
  try_files = ["$uri", "/loop/again"]
  [[site.route]]
  path = "/"
  root = "www"
  try_files = ["$uri", "@app"]
  [[site.route]]
  name = "@app"
  proxy = "{}"
"#,
        app.url()
    );
    let files = [
        ("www/spa/index.html", "<h1>the app</h1>"),
        ("www/spa/main.js", "console.log(1)"),
        ("www/spa/docs/index.html", "<h1>docs</h1>"),
        ("www/spa/.env", SECRET),
        ("www/assets/logo.svg", "<svg/>"),
        ("www/robots.txt", "User-agent: *"),
        ("www/.env", SECRET),
        ("www/.git/config", SECRET),
    ];
    let world = serve(&routes, &files).await;
    let host = world.authority(NAME);
    let mut h1 = world.client.http1(NAME).await;

    // The single-page app: its files, a folder's index, and index.html for every other path.
    for (request, body) in [
        ("/spa/main.js", "console.log(1)"),
        ("/spa/docs/", "<h1>docs</h1>"),
        ("/spa/settings/profile", "<h1>the app</h1>"),
        ("/spa/", "<h1>the app</h1>"),
        // A dotfile is not a file to try_files: the app's page answers, never the secret.
        ("/spa/.env", "<h1>the app</h1>"),
        ("/assets/logo.svg", "<svg/>"),
        ("/robots.txt", "User-agent: *"),
    ] {
        let reply = h1.get(&host, request).await;
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (StatusCode::OK, body),
            "GET {request}"
        );
    }
    // A folder without its `/`: `$uri/` finds it and, as in nginx, the request goes on as
    // `/spa/docs`, which the static root redirects to the folder.
    let reply = h1.get(&host, "/spa/docs").await;
    assert_eq!(
        reply.status,
        StatusCode::MOVED_PERMANENTLY,
        "GET /spa/docs: {reply:?}"
    );
    let location = reply.headers.get("location").and_then(|v| v.to_str().ok());
    assert!(
        location.is_some_and(|l| l.ends_with("/spa/docs/")),
        "GET /spa/docs: {reply:?}"
    );
    assert_eq!(
        h1.get(&host, "/assets/missing.png").await.status,
        StatusCode::NOT_FOUND
    );
    // A fallback that matches its own route again ends after 10 internal redirects, as in nginx.
    assert_eq!(
        h1.get(&host, "/loop/x").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(app.received(), 0, "files were served without the app");

    // What is not a file goes to the app, with the request's own path and query.
    for (n, request) in ["/users/1?tab=2", "/.env", "/.git/config"]
        .iter()
        .enumerate()
    {
        let reply = h1.get(&host, request).await;
        assert!(
            !reply.text().contains("hunter2"),
            "GET {request} served a dotfile"
        );
        assert_eq!(reply.echoed().path, *request, "GET {request}");
        assert_eq!(app.received(), n + 1, "GET {request} reached the app");
    }
}

#[tokio::test]
async fn a_named_fallback_answers_with_its_own_response_headers_and_map_variables() {
    let app = Upstream::echo().await;
    // `[[map]]` after the routes starts a new top-level table, as TOML allows.
    let routes = format!(
        r#"
  [[site.route]]
  path = "/"
  root = "www"
  try_files = ["$uri", "@app"]
  headers.response.add = {{ X-From = "static" }}
  [[site.route]]
  name = "@app"
  proxy = "{}"
  headers.request.set = {{ X-Proto-Seen = "$thescheme" }}
  headers.response.add = {{ X-From = "app $thescheme" }}

[[map]]
name = "thescheme"
source = "$http_x_forwarded_proto"
default = "$scheme"
entry = [{{ exact = "http", value = "http" }}]
"#,
        app.url()
    );
    let world = serve(&routes, &[("www/robots.txt", "User-agent: *")]).await;
    let host = world.authority(NAME);
    let mut h1 = world.client.http1(NAME).await;

    // A file the first route finds carries that route's headers.
    let reply = h1.get(&host, "/robots.txt").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-from"), Some("static"), "{reply:?}");

    // The named route answers with its own `add` (nginx: the named location's add_header), and
    // the map is looked up per request: the default, then an exact entry.
    let reply = h1.get(&host, "/users/1").await;
    assert_eq!(reply.header("x-from"), Some("app https"), "{reply:?}");
    assert_eq!(reply.echoed().header("x-proto-seen"), "https");
    let request = hyper::Request::get("/users/2")
        .header("host", &host)
        .header("x-forwarded-proto", "HTTP")
        .body(http_body_util::Full::default())
        .expect("a request");
    let reply = h1.send(request).await;
    assert_eq!(reply.header("x-from"), Some("app http"), "{reply:?}");
    assert_eq!(reply.echoed().header("x-proto-seen"), "http");
    assert_eq!(app.received(), 2);
}

/// PeerTube's shape: `location = /upload { limit_except POST HEAD { deny all; } auth_request
/// /check-auth; try_files /dev/null @api; }` and an internal `/check-auth` that hands its
/// subrequest to a named location. nginx's access phase (limit_except, auth_request) runs in the
/// location the request matched, before `try_files` hands it on: so must certd's.
#[tokio::test]
async fn access_and_auth_request_run_before_try_files_hands_the_request_on() {
    let app = Upstream::echo().await;
    let (auth_url, seen, auth_task) = super::access::auth_server().await;
    let routes = format!(
        r#"
  [[site.route]]
  path = "/"
  root = "www"
  try_files = ["/dev/null", "@api"]
  [[site.route]]
  exact = "/check-auth"
  root = "www"
  internal = true
  try_files = ["/dev/null", "@auth"]
  [[site.route]]
  exact = "/upload"
  root = "www"
  try_files = ["/dev/null", "@api"]
  auth_request = "/check-auth"
  limit_except = {{ methods = ["POST", "HEAD"], access = ["deny all"] }}
  [[site.route]]
  name = "@api"
  proxy = "{}"
  [[site.route]]
  name = "@auth"
  proxy = "{auth_url}"
"#,
        app.url()
    );
    let world = serve(&routes, &[("www/index.html", "<h1>www</h1>")]).await;
    let host = world.authority(NAME);
    let mut h1 = world.client.http1(NAME).await;
    let upload = |cookie: Option<&str>| {
        let mut request = hyper::Request::post("/upload").header(hyper::header::HOST, &host);
        if let Some(cookie) = cookie {
            request = request.header(hyper::header::COOKIE, cookie);
        }
        request
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                b"0123456789",
            )))
            .expect("request")
    };

    // Asked first, then handed to @api with its body.
    let (before, asked) = (app.received(), seen.lock().expect("log").len());
    let reply = h1.send(upload(Some("session=good"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.echoed().method, "POST");
    assert_eq!(reply.echoed().path, "/upload");
    assert_eq!(app.received() - before, 1);
    let log = seen.lock().expect("log").clone();
    assert_eq!(log.len(), asked + 1, "{log:?}");
    // The subrequest went through /check-auth's try_files to @auth: a bodiless GET.
    let sub = &log[asked];
    assert_eq!(
        (sub.method.as_str(), sub.path.as_str()),
        ("GET", "/check-auth")
    );
    assert_eq!(sub.content_length, None, "{sub:?}");

    // Refused by the subrequest: the upstream never hears of it.
    for (cookie, status) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some("session=banned"), StatusCode::FORBIDDEN),
    ] {
        let before = app.received();
        let reply = h1.send(upload(cookie)).await;
        assert_eq!(reply.status, status, "cookie {cookie:?}: {reply:?}");
        assert_eq!(app.received(), before, "cookie {cookie:?} reached @api");
    }
    // limit_except of the matched route: GET is denied although @api has no such rule.
    let before = app.received();
    let reply = h1
        .send(
            hyper::Request::get("/upload")
                .header(hyper::header::HOST, &host)
                .header(hyper::header::COOKIE, "session=good")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .expect("request"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{reply:?}");
    assert_eq!(app.received(), before);
    // Other paths go straight to @api; the internal route answers no client.
    assert_eq!(h1.get(&host, "/videos/1").await.echoed().path, "/videos/1");
    let asked = seen.lock().expect("log").len();
    assert_eq!(
        h1.get(&host, "/check-auth").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(seen.lock().expect("log").len(), asked);
    auth_task.abort();
}
