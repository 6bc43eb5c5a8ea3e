//! Access control per route over real TLS: `allow`/`deny` on the real client address (403, and the
//! upstream never hears of the request), HTTP basic auth from an htpasswd file written by Apache's
//! `htpasswd` (bcrypt, apr1 and SHA lines; 401 with the realm until the right password), `satisfy`,
//! site-level keys inherited by routes, and a changed htpasswd file taking effect on SIGHUP.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, StatusCode};

use super::{World, CERT_WAIT};
use crate::harness::{Certd, Http1, Pebble, Reply, RunConfig, Site, Upstream};

/// `GET path` for `host`, with `X-Forwarded-For` and `Authorization: Basic` when given.
async fn get(
    h1: &mut Http1,
    host: &str,
    path: &str,
    forwarded_for: Option<&str>,
    credentials: Option<(&str, &str)>,
) -> Reply {
    let mut request = Request::get(path).header(hyper::header::HOST, host);
    if let Some(client) = forwarded_for {
        request = request.header("x-forwarded-for", client);
    }
    if let Some((user, password)) = credentials {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request = request.header(hyper::header::AUTHORIZATION, format!("Basic {encoded}"));
    }
    h1.send(request.body(Full::new(Bytes::new())).expect("request"))
        .await
}

#[track_caller]
fn assert_status(reply: &Reply, status: StatusCode, what: &str) {
    assert_eq!(reply.status, status, "{what}: {reply:?}");
}

#[tokio::test]
async fn addresses_are_allowed_and_denied_in_order_for_the_real_client() {
    let pebble = Pebble::start().await;
    let upstream = Upstream::echo().await;
    let site = Site::new(&["a.test"])
        .proxy("/", &upstream.url())
        .proxy("/lan", &upstream.url())
        .route_option(
            "/lan",
            "access",
            r#"["deny 10.9.0.0/16", "allow 10.0.0.0/8", "allow 2001:db8::/32", "deny all"]"#,
        )
        .proxy("/local", &upstream.url())
        .route_option("/local", "access", r#"["allow 127.0.0.1", "deny all"]"#);
    // The test client connects from 127.0.0.1, trusted as a proxy: its X-Forwarded-For names the
    // real client, as nginx's realip module would take it.
    let config =
        RunConfig::for_pebble(&pebble, vec![site]).https("trusted_proxies", r#"["127.0.0.1"]"#);
    let world = World::serve(pebble, Certd::new(), config).await;
    world.client.wait_for_certificate("a.test", CERT_WAIT).await;
    let host = world.authority("a.test");
    let mut h1 = world.client.http1("a.test").await;

    let cases = [
        ("/lan/x", Some("10.1.2.3"), StatusCode::OK),
        ("/lan/x", Some("10.9.1.1"), StatusCode::FORBIDDEN),
        ("/lan", Some("2001:db8::7"), StatusCode::OK),
        ("/lan", Some("2001:db9::7"), StatusCode::FORBIDDEN),
        ("/lan", Some("192.0.2.1"), StatusCode::FORBIDDEN),
        // Without a forwarded address the client is the connection's own, 127.0.0.1.
        ("/lan", None, StatusCode::FORBIDDEN),
        ("/local", None, StatusCode::OK),
        ("/local", Some("10.1.2.3"), StatusCode::FORBIDDEN),
        // A chain: the last address not of a trusted proxy is the client.
        ("/lan", Some("192.0.2.1, 10.1.2.3"), StatusCode::OK),
        ("/lan", Some("10.1.2.3, 192.0.2.1"), StatusCode::FORBIDDEN),
        ("/", Some("192.0.2.1"), StatusCode::OK),
    ];
    for (path, client, status) in cases {
        let before = upstream.received();
        let reply = get(&mut h1, &host, path, client, None).await;
        assert_status(&reply, status, &format!("{path} from {client:?}"));
        let reached = upstream.received() - before;
        if status == StatusCode::OK {
            assert_eq!(reached, 1, "{path} from {client:?} reaches the upstream");
            assert_eq!(reply.echoed().path, path);
        } else {
            assert_eq!(
                reached, 0,
                "{path} from {client:?} must not reach the upstream"
            );
            assert!(reply.text().starts_with("403"), "{reply:?}");
        }
    }
}

/// Writes `users` with Apache's `htpasswd`: `(user, password, format flag)`.
fn htpasswd(file: &Path, users: &[(&str, &str, &str)]) {
    let _ = std::fs::remove_file(file);
    for (i, (user, password, flag)) in users.iter().enumerate() {
        let mut command = Command::new("htpasswd");
        if i == 0 {
            command.arg("-c");
        }
        let output = command
            .args(["-b", flag])
            .arg(file)
            .args([user, password])
            .output()
            .expect("htpasswd runs (Debian package apache2-utils; scripts/test.sh installs it)");
        assert!(
            output.status.success(),
            "htpasswd {flag} {user}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[tokio::test]
async fn basic_auth_accepts_each_htpasswd_format_and_reloads_on_sighup() {
    let pebble = Pebble::start().await;
    let upstream = Upstream::echo().await;
    let certd = Certd::new();
    let users = certd.dir().join("htpasswd");
    htpasswd(
        &users,
        &[
            ("bcrypt", "first secret", "-B"),
            ("apr1", "second secret", "-m"),
            ("sha", "third secret", "-s"),
        ],
    );
    let lines = std::fs::read_to_string(&users).expect("htpasswd file");
    for prefix in ["bcrypt:$2y$", "apr1:$apr1$", "sha:{SHA}"] {
        assert!(lines.contains(prefix), "{prefix} in {lines}");
    }
    let site = Site::new(&["a.test"])
        .site_option("auth_basic", r#""Staff only""#)
        .site_option("auth_basic_user_file", r#""htpasswd""#)
        .proxy("/", &upstream.url())
        .proxy("/public", &upstream.url())
        .route_option("/public", "auth_basic", r#""off""#)
        .proxy("/office", &upstream.url())
        .route_option("/office", "access", r#"["allow 127.0.0.1", "deny all"]"#)
        .route_option("/office", "satisfy", r#""any""#)
        .proxy("/closed", &upstream.url())
        .route_option("/closed", "access", r#"["deny 127.0.0.1"]"#);
    let config = RunConfig::for_pebble(&pebble, vec![site]);
    let world = World::serve(pebble, certd, config).await;
    world.client.wait_for_certificate("a.test", CERT_WAIT).await;
    let host = world.authority("a.test");
    let mut h1 = world.client.http1("a.test").await;

    let refused: [(&str, Option<(&str, &str)>); 4] = [
        ("missing", None),
        ("wrong password", Some(("bcrypt", "second secret"))),
        ("unknown user", Some(("nobody", "first secret"))),
        ("another user's password", Some(("sha", "first secret"))),
    ];
    for (what, credentials) in refused {
        let before = upstream.received();
        let reply = get(&mut h1, &host, "/app", None, credentials).await;
        assert_status(&reply, StatusCode::UNAUTHORIZED, what);
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Basic realm=\"Staff only\""),
            "{what}: {reply:?}"
        );
        assert_eq!(
            upstream.received(),
            before,
            "{what} must not reach the upstream"
        );
    }
    for (user, password) in [
        ("bcrypt", "first secret"),
        ("apr1", "second secret"),
        ("sha", "third secret"),
    ] {
        let reply = get(&mut h1, &host, "/app", None, Some((user, password))).await;
        assert_status(&reply, StatusCode::OK, user);
        assert_eq!(reply.echoed().path, "/app");
    }
    // A page's assets with the same credentials: each answered (bcrypt runs once, then the cache).
    for i in 0..20 {
        let path = format!("/asset/{i}.css");
        let reply = get(
            &mut h1,
            &host,
            &path,
            None,
            Some(("bcrypt", "first secret")),
        )
        .await;
        assert_status(&reply, StatusCode::OK, &path);
    }

    // `auth_basic = "off"` on a route; `satisfy any` with an allowed address needs no password;
    // with `satisfy all` a denied address gets 403 even with the right password.
    let reply = get(&mut h1, &host, "/public/x", None, None).await;
    assert_status(&reply, StatusCode::OK, "auth off");
    let reply = get(&mut h1, &host, "/office", None, None).await;
    assert_status(&reply, StatusCode::OK, "satisfy any, allowed address");
    let reply = get(
        &mut h1,
        &host,
        "/closed",
        None,
        Some(("sha", "third secret")),
    )
    .await;
    assert_status(&reply, StatusCode::FORBIDDEN, "satisfy all, denied address");

    // A new password, read on SIGHUP: the old one (cached a moment ago) no longer works.
    htpasswd(
        &users,
        &[
            ("bcrypt", "new secret", "-B"),
            ("sha", "third secret", "-s"),
        ],
    );
    world.daemon.signal("HUP");
    world
        .daemon
        .wait_for_log("configuration reloaded", Duration::from_secs(10))
        .await;
    let reply = get(
        &mut h1,
        &host,
        "/app",
        None,
        Some(("bcrypt", "first secret")),
    )
    .await;
    assert_status(
        &reply,
        StatusCode::UNAUTHORIZED,
        "old password after reload",
    );
    let reply = get(
        &mut h1,
        &host,
        "/app",
        None,
        Some(("apr1", "second secret")),
    )
    .await;
    assert_status(
        &reply,
        StatusCode::UNAUTHORIZED,
        "removed user after reload",
    );
    let reply = get(&mut h1, &host, "/app", None, Some(("bcrypt", "new secret"))).await;
    assert_status(&reply, StatusCode::OK, "new password after reload");

    // Neither passwords nor the Authorization header are logged.
    let log = world.daemon.log();
    let header = base64::engine::general_purpose::STANDARD.encode("bcrypt:first secret");
    for secret in [
        "first secret",
        "second secret",
        "new secret",
        header.as_str(),
    ] {
        assert!(!log.contains(secret), "{secret:?} is in the daemon's log");
    }
}

/// `method path` for `host`, from the real client `forwarded_for` when given, with a small body
/// for the methods that carry one.
async fn send(
    h1: &mut Http1,
    host: &str,
    method: &str,
    path: &str,
    forwarded_for: Option<&str>,
) -> Reply {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, host);
    if let Some(client) = forwarded_for {
        request = request.header("x-forwarded-for", client);
    }
    let body = match method {
        "POST" | "PUT" => Bytes::from_static(b"payload"),
        _ => Bytes::new(),
    };
    h1.send(request.body(Full::new(body)).expect("request"))
        .await
}

#[tokio::test]
async fn limit_except_refuses_the_methods_it_does_not_list() {
    let pebble = Pebble::start().await;
    let upstream = Upstream::echo().await;
    // PeerTube's upload endpoint (`limit_except POST HEAD { deny all; }`) and a route where only
    // reads are open to everyone (`limit_except GET { allow 10.0.0.0/8; deny all; }`).
    let site = Site::new(&["a.test"])
        .proxy("/upload", &upstream.url())
        .route_option(
            "/upload",
            "limit_except",
            r#"{ methods = ["POST", "HEAD"], access = ["deny all"] }"#,
        )
        .proxy("/wiki", &upstream.url())
        .route_option(
            "/wiki",
            "limit_except",
            r#"{ methods = ["GET"], access = ["allow 10.0.0.0/8", "deny all"] }"#,
        );
    let config =
        RunConfig::for_pebble(&pebble, vec![site]).https("trusted_proxies", r#"["127.0.0.1"]"#);
    let world = World::serve(pebble, Certd::new(), config).await;
    world.client.wait_for_certificate("a.test", CERT_WAIT).await;
    let host = world.authority("a.test");
    let mut h1 = world.client.http1("a.test").await;

    let cases = [
        ("POST", "/upload", None, StatusCode::OK),
        ("HEAD", "/upload", None, StatusCode::OK),
        ("GET", "/upload", None, StatusCode::FORBIDDEN),
        ("PUT", "/upload", None, StatusCode::FORBIDDEN),
        ("DELETE", "/upload", None, StatusCode::FORBIDDEN),
        // GET implies HEAD; every other method needs an allowed address.
        ("GET", "/wiki/page", Some("192.0.2.1"), StatusCode::OK),
        ("HEAD", "/wiki/page", Some("192.0.2.1"), StatusCode::OK),
        (
            "POST",
            "/wiki/page",
            Some("192.0.2.1"),
            StatusCode::FORBIDDEN,
        ),
        (
            "OPTIONS",
            "/wiki/page",
            Some("192.0.2.1"),
            StatusCode::FORBIDDEN,
        ),
        ("POST", "/wiki/page", Some("10.1.2.3"), StatusCode::OK),
        ("PATCH", "/wiki/page", Some("10.1.2.3"), StatusCode::OK),
    ];
    for (method, path, client, status) in cases {
        let before = upstream.received();
        let reply = send(&mut h1, &host, method, path, client).await;
        assert_status(&reply, status, &format!("{method} {path} from {client:?}"));
        let reached = upstream.received() - before;
        if status == StatusCode::OK {
            assert_eq!(
                reached, 1,
                "{method} {path} from {client:?} reaches the upstream"
            );
            if method != "HEAD" {
                assert_eq!(reply.echoed().method, method);
                assert_eq!(reply.echoed().path, path);
            }
        } else {
            assert_eq!(reached, 0, "{method} {path} must not reach the upstream");
            assert!(reply.text().starts_with("403"), "{reply:?}");
        }
    }
}

/// What the test auth server saw of one subrequest.
#[derive(Debug, Clone)]
pub(super) struct AuthSeen {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) cookie: Option<String>,
    pub(super) content_length: Option<String>,
}

/// An auth server on loopback (the `auth_request` target's upstream): `session=good` → 200,
/// `session=banned` → 403, `session=odd` → 302, no cookie → 401 with a `WWW-Authenticate`. It
/// records every request; the task is aborted when the test ends.
pub(super) async fn auth_server() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<AuthSeen>>>,
    tokio::task::JoinHandle<()>,
) {
    use hyper::body::Incoming;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind auth server");
    let url = format!("http://{}", listener.local_addr().expect("local_addr"));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = log.clone();
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let log = log.clone();
                async move {
                    let header = |name: &str| {
                        request
                            .headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned)
                    };
                    let cookie = header("cookie");
                    log.lock().expect("auth log").push(AuthSeen {
                        method: request.method().to_string(),
                        path: request.uri().path().to_owned(),
                        cookie: cookie.clone(),
                        content_length: header("content-length"),
                    });
                    let mut response = hyper::Response::builder();
                    response = match cookie.as_deref() {
                        Some("session=good") => response.status(200),
                        Some("session=banned") => response.status(403),
                        Some("session=odd") => response.status(302).header("location", "/x"),
                        _ => response
                            .status(401)
                            .header("www-authenticate", "Bearer realm=\"test\""),
                    };
                    Ok::<_, std::convert::Infallible>(
                        response
                            .body(Full::new(Bytes::from_static(b"auth says")))
                            .expect("auth response"),
                    )
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, seen, task)
}

#[tokio::test]
async fn auth_request_asks_an_internal_route_before_the_upstream() {
    let pebble = Pebble::start().await;
    let upstream = Upstream::echo().await;
    let (auth_url, seen, auth_task) = auth_server().await;
    // PeerTube's shape: `location = /check-auth { internal; proxy_pass …; }` and an upload
    // location with `auth_request /check-auth;`.
    let site = Site::new(&["a.test"])
        .proxy("/", &upstream.url())
        .proxy("/check-auth", &auth_url)
        .route_option("/check-auth", "internal", "true")
        .proxy("/upload", &upstream.url())
        .route_option("/upload", "auth_request", r#""/check-auth""#);
    let config = RunConfig::for_pebble(&pebble, vec![site]);
    let world = World::serve(pebble, Certd::new(), config).await;
    world.client.wait_for_certificate("a.test", CERT_WAIT).await;
    let host = world.authority("a.test");
    let mut h1 = world.client.http1("a.test").await;

    let upload = |cookie: Option<&str>| {
        let mut request = Request::post("/upload/video?part=1").header(hyper::header::HOST, &host);
        if let Some(cookie) = cookie {
            request = request.header(hyper::header::COOKIE, cookie);
        }
        request
            .body(Full::new(Bytes::from_static(b"0123456789")))
            .expect("request")
    };
    let cases = [
        (Some("session=good"), StatusCode::OK),
        (None, StatusCode::UNAUTHORIZED),
        (Some("session=banned"), StatusCode::FORBIDDEN),
        // A redirect (or any other status) from the auth server is an error, as in nginx.
        (Some("session=odd"), StatusCode::INTERNAL_SERVER_ERROR),
    ];
    for (cookie, status) in cases {
        let (before, asked) = (upstream.received(), seen.lock().expect("log").len());
        let reply = h1.send(upload(cookie)).await;
        assert_eq!(reply.status, status, "cookie {cookie:?}: {reply:?}");
        let log = seen.lock().expect("log").clone();
        assert_eq!(log.len(), asked + 1, "one subrequest per request: {log:?}");
        let sub = &log[asked];
        // A bodiless GET of the auth URI, with the client's headers.
        assert_eq!(
            (sub.method.as_str(), sub.path.as_str()),
            ("GET", "/check-auth")
        );
        assert_eq!(sub.cookie.as_deref(), cookie);
        assert_eq!(sub.content_length, None, "{sub:?}");
        let reached = upstream.received() - before;
        if status == StatusCode::OK {
            assert_eq!(reached, 1);
            assert_eq!(reply.echoed().method, "POST");
            assert_eq!(reply.echoed().path, "/upload/video?part=1");
        } else {
            assert_eq!(reached, 0, "cookie {cookie:?} must not reach the upstream");
            assert!(!reply.text().contains("auth says"), "{reply:?}");
        }
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(
                reply.header("www-authenticate"),
                Some("Bearer realm=\"test\"")
            );
        }
    }
    // The internal route answers no client: 404, and the auth server hears nothing.
    let asked = seen.lock().expect("log").len();
    let reply = get(&mut h1, &host, "/check-auth", None, None).await;
    assert_status(&reply, StatusCode::NOT_FOUND, "GET /check-auth");
    assert_eq!(seen.lock().expect("log").len(), asked);
    // Routes without auth_request never ask.
    let reply = get(&mut h1, &host, "/other", None, None).await;
    assert_status(&reply, StatusCode::OK, "GET /other");
    assert_eq!(seen.lock().expect("log").len(), asked);
    auth_task.abort();
}
