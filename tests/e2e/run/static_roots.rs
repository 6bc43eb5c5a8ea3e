//! Static roots as an attacker probes them: dotfiles (`/.env`, `/.git/config`, hidden folders) are
//! 404 unless the route sets `allow_dotfiles`, `/.well-known/` is served, and the redirect from a
//! folder to its slashed path never points off the site (`//name` → `/name/`, not the
//! protocol-relative `//name/`), over HTTP/1.1 (raw request line, as a client that does not
//! normalise sends it) and HTTP/2.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::LOCATION;
use hyper::{Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{World, CERT_WAIT};
use crate::harness::{Alpn, Certd, Pebble, RunConfig, Site};

const SECRET: &str = "DB_PASSWORD=hunter2\n";

fn write(path: &std::path::Path, contents: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create the folder");
    }
    std::fs::write(path, contents).expect("write the file");
}

/// `GET <target>` sent as written over a fresh HTTP/1.1 TLS connection: the status and `Location`.
async fn raw_get(world: &World, name: &str, target: &str) -> (u16, Option<String>) {
    let mut tls = world.client.handshake(name, Alpn::Http1).await.stream;
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        world.authority(name)
    );
    tls.write_all(request.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut response))
        .await
        .expect("the response in time")
        .ok();
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let location = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("location")
                .then(|| value.trim().to_owned())
        });
    (status, location)
}

#[tokio::test]
async fn dotfiles_are_hidden_and_folder_redirects_stay_on_the_site() {
    let pebble = Pebble::start().await;
    let certd = Certd::new();
    let www = certd.dir().join("www");
    write(&www.join(".env"), SECRET);
    write(&www.join(".git/config"), SECRET);
    write(&www.join("a/.hidden/x"), SECRET);
    write(
        &www.join(".well-known/security.txt"),
        "Contact: mailto:sec@a.test\n",
    );
    write(&www.join("name/index.html"), "<h1>name</h1>\n");
    let config = RunConfig::for_pebble(
        &pebble,
        vec![
            Site::new(&["a.test"]).root("/", "www"),
            Site::new(&["b.test"])
                .root("/", "www")
                .route_option("/", "allow_dotfiles", "true"),
        ],
    );
    let world = World::serve(pebble, certd, config).await;
    world.client.wait_for_certificate("a.test", CERT_WAIT).await;
    world.client.wait_for_certificate("b.test", CERT_WAIT).await;

    let host = world.authority("a.test");
    let mut h1 = world.client.http1("a.test").await;
    for hidden in ["/.env", "/.git/config", "/a/.hidden/x", "/%2eenv"] {
        let reply = h1.get(&host, hidden).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{hidden}: {reply:?}");
        assert!(!reply.text().contains("hunter2"), "{hidden}: {reply:?}");
    }
    let reply = h1.get(&host, "/.well-known/security.txt").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.text(), "Contact: mailto:sec@a.test\n");
    let reply = h1.get(&host, "/name/").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");

    // A route that allows dotfiles serves them.
    let mut b = world.client.http1("b.test").await;
    let reply = b.get(&world.authority("b.test"), "/.env").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.text(), SECRET);

    // HTTP/1.1: the request line exactly as an attacker's link makes a browser send it.
    for (target, expected) in [
        ("/name", "/name/"),
        ("//name", "/name/"),
        ("///name?x=1", "/name/?x=1"),
    ] {
        let (status, location) = raw_get(&world, "a.test", target).await;
        assert_eq!(status, 301, "{target}");
        assert_eq!(location.as_deref(), Some(expected), "{target}");
    }

    // HTTP/2: the same request is answered, not reset.
    let mut h2 = world.client.http2("a.test").await;
    for (path, expected) in [("//name", "/name/"), ("//name?x=1", "/name/?x=1")] {
        let request = Request::get(format!("https://{host}{path}"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let response =
            tokio::time::timeout(Duration::from_secs(10), h2.sender.send_request(request))
                .await
                .expect("an answer in time")
                .unwrap_or_else(|error| panic!("HTTP/2 {path}: {error:?}"));
        assert_eq!(response.status(), StatusCode::MOVED_PERMANENTLY, "{path}");
        assert_eq!(
            response
                .headers()
                .get(LOCATION)
                .and_then(|value| value.to_str().ok()),
            Some(expected),
            "{path}"
        );
        let _ = response.into_body().collect().await;
    }
}
