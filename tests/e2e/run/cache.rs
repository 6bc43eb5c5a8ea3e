//! The proxy response cache (`cache` on a proxy route, nginx `proxy_cache`) over real TLS: a
//! second GET is answered from the cache without reaching the upstream, `X-Cached` carries
//! `$upstream_cache_status` (MISS, HIT; empty for a POST, as in nginx), another query is another key, a HEAD is answered
//! from the stored GET, and a POST always goes upstream.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::HOST;
use hyper::{Method, Request, StatusCode};

use super::CERT_WAIT;
use crate::harness::{Certd, Daemon, HttpsClient, Pebble, RunConfig, Site, Upstream};

#[tokio::test]
async fn cached_route_answers_repeats_from_memory_with_the_cache_status() {
    let pebble = Pebble::start().await;
    let upstream = Upstream::echo().await;
    let certd = Certd::new();
    let config = RunConfig::for_pebble(
        &pebble,
        vec![Site::new(&["a.test"])
            .proxy("/", &upstream.url())
            .route_option(
                "/",
                "cache",
                r#"{ valid = { "200" = "10m" }, max_entries = 100 }"#,
            )
            .route_option(
                "/",
                "headers",
                r#"{ response = { add = { "X-Cached" = "$upstream_cache_status" } } }"#,
            )],
    );
    certd.write_config_text(&config.to_toml());
    let _daemon = Daemon::start(&certd, config.https_addr()).await;
    let client = HttpsClient::new(config.https_addr(), &pebble.root_pem().await);
    client.wait_for_certificate("a.test", CERT_WAIT).await;
    let host = format!("a.test:{}", config.https_addr().port());
    let mut h1 = client.http1("a.test").await;
    let request = |method: Method, uri: &str| {
        Request::builder()
            .method(method)
            .uri(uri)
            .header(HOST, &host)
            .body(Full::new(Bytes::new()))
            .expect("request")
    };
    let before = upstream.received();

    let first = h1.send(request(Method::GET, "/c?x=1")).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.header("x-cached"), Some("MISS"));
    assert_eq!(upstream.received(), before + 1);

    let second = h1.send(request(Method::GET, "/c?x=1")).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.header("x-cached"), Some("HIT"));
    assert_eq!(second.body, first.body, "the stored answer");
    assert_eq!(
        upstream.received(),
        before + 1,
        "a hit never reaches the upstream"
    );

    let head = h1.send(request(Method::HEAD, "/c?x=1")).await;
    assert_eq!(head.header("x-cached"), Some("HIT"));
    assert!(head.body.is_empty());

    let other = h1.send(request(Method::GET, "/c?x=2")).await;
    assert_eq!(other.header("x-cached"), Some("MISS"));
    assert_eq!(upstream.received(), before + 2);

    let post = h1.send(request(Method::POST, "/c?x=1")).await;
    // nginx leaves $upstream_cache_status empty for methods the cache does not look up.
    assert_eq!(post.header("x-cached"), None);
    assert_eq!(post.echoed().method, "POST");
    assert_eq!(upstream.received(), before + 3);
}
