//! Compression tests: the never-compress rules, the headers of a compressed response, round trips
//! through each codec, and flushing when the upstream pauses (server-sent events).
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderName, HeaderValue};

use super::*;
use crate::response::full_body;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn response(status: u16, pairs: &[(&str, &str)], body: &[u8]) -> Response<ProxyBody> {
    let mut response = Response::new(full_body(body.to_vec()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    *response.headers_mut() = headers(pairs);
    response
}

fn decode(encoding: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        "gzip" => {
            flate2::read::GzDecoder::new(bytes)
                .read_to_end(&mut out)
                .unwrap();
        }
        "br" => {
            brotli::Decompressor::new(bytes, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        "zstd" => out = zstd::decode_all(bytes).unwrap(),
        other => panic!("unknown encoding {other}"),
    }
    out
}

const HTML: &[(&str, &str)] = &[("content-type", "text/html; charset=utf-8")];

#[test]
fn the_never_compress_rules() {
    let policy = Policy::default();
    let html = "text/html; charset=utf-8";
    type Case<'a> = (u16, &'a [(&'a str, &'a str)], bool);
    let cases: &[Case<'_>] = &[
        (200, &[("content-type", html)], true),
        (
            200,
            &[("content-type", html), ("content-length", "4096")],
            true,
        ),
        (404, &[("content-type", html)], true),
        (200, &[("content-type", "TEXT/CSS")], true),
        (200, &[("content-type", "application/json")], true),
        (200, &[("content-type", "image/svg+xml")], true),
        (200, &[("content-type", "text/event-stream")], true),
        // Statuses without a body to compress, or with a part of one.
        (101, &[("content-type", html)], false),
        (204, &[("content-type", html)], false),
        (206, &[("content-type", html)], false),
        (304, &[("content-type", html)], false),
        // Already encoded, or the origin forbids it.
        (
            200,
            &[("content-type", html), ("content-encoding", "gzip")],
            false,
        ),
        (
            200,
            &[
                ("content-type", html),
                ("cache-control", "public, no-transform"),
            ],
            false,
        ),
        // Types not listed: compressed already, or unknown.
        (200, &[("content-type", "image/png")], false),
        (200, &[("content-type", "image/jpeg")], false),
        (200, &[("content-type", "video/mp4")], false),
        (200, &[("content-type", "application/zip")], false),
        (200, &[("content-type", "application/gzip")], false),
        (200, &[("content-type", "font/woff2")], false),
        (200, &[("content-type", "application/octet-stream")], false),
        (200, &[("content-type", "texty/html")], false),
        (200, &[], false),
        // Shorter than min_length, when known.
        (
            200,
            &[("content-type", html), ("content-length", "511")],
            false,
        ),
        (
            200,
            &[("content-type", html), ("content-length", "0")],
            false,
        ),
        (
            200,
            &[("content-type", html), ("content-length", "512")],
            true,
        ),
    ];
    for (status, pairs, expected) in cases {
        let status = StatusCode::from_u16(*status).unwrap();
        assert_eq!(
            policy.compressible(status, &headers(pairs)),
            *expected,
            "{status} {pairs:?}"
        );
    }
}

#[test]
fn head_and_range_requests_are_left_untouched() {
    let policy = Policy::default();
    let accept = headers(&[("accept-encoding", "gzip")]);
    assert_eq!(
        policy.negotiate(&Method::HEAD, &accept),
        Negotiated::Untouched
    );
    let range = headers(&[("accept-encoding", "gzip"), ("range", "bytes=0-9")]);
    assert_eq!(
        policy.negotiate(&Method::GET, &range),
        Negotiated::Untouched
    );
    assert_eq!(
        policy.negotiate(&Method::GET, &accept),
        Negotiated::Encode(Encoding::Gzip)
    );
    assert_eq!(
        policy.negotiate(&Method::GET, &headers(&[("accept-encoding", "identity")])),
        Negotiated::Identity
    );
}

#[tokio::test]
async fn each_encoding_round_trips_and_sets_the_headers() {
    let body: Vec<u8> = (0..20_000u32)
        .flat_map(|i| format!("<p>line {i}</p>\n").into_bytes())
        .collect();
    for encoding in Encoding::ALL {
        let policy = Policy::default();
        let original = response(
            200,
            &[
                ("content-type", "text/html"),
                ("content-length", &body.len().to_string()),
                ("etag", "\"abc\""),
                ("accept-ranges", "bytes"),
                ("vary", "Origin"),
            ],
            &body,
        );
        let compressed = policy.apply(Negotiated::Encode(encoding), original);
        let headers = compressed.headers().clone();
        assert_eq!(headers[CONTENT_ENCODING], encoding.token());
        assert!(!headers.contains_key(CONTENT_LENGTH));
        assert!(!headers.contains_key(ACCEPT_RANGES));
        assert_eq!(headers[ETAG], "W/\"abc\"");
        let vary: Vec<_> = headers.get_all(VARY).iter().collect();
        assert_eq!(vary, ["Origin", "Accept-Encoding"]);
        let bytes = compressed.into_body().collect().await.unwrap().to_bytes();
        assert!(
            bytes.len() < body.len() / 4,
            "{encoding:?}: {}",
            bytes.len()
        );
        assert_eq!(decode(encoding.token(), &bytes), body, "{encoding:?}");
    }
}

#[tokio::test]
async fn refused_responses_keep_their_headers_and_bytes() {
    let policy = Policy::default();
    let png = response(200, &[("content-type", "image/png")], &[7; 4096]);
    let png = policy.apply(Negotiated::Encode(Encoding::Gzip), png);
    assert!(!png.headers().contains_key(CONTENT_ENCODING));
    assert!(!png.headers().contains_key(VARY));
    assert_eq!(
        png.into_body().collect().await.unwrap().to_bytes(),
        vec![7; 4096]
    );

    // A client that accepts nothing gets the identity body, with Vary for caches.
    let identity = policy.apply(Negotiated::Identity, response(200, HTML, &[b'x'; 4096]));
    assert!(!identity.headers().contains_key(CONTENT_ENCODING));
    assert_eq!(identity.headers()[VARY], "Accept-Encoding");

    // Vary is not repeated.
    let already = response(
        200,
        &[("content-type", "text/html"), ("vary", "accept-encoding")],
        &[b'x'; 4096],
    );
    let already = policy.apply(Negotiated::Encode(Encoding::Gzip), already);
    assert_eq!(already.headers().get_all(VARY).iter().count(), 1);

    // An empty body stays empty.
    let empty = policy.apply(Negotiated::Encode(Encoding::Gzip), response(200, HTML, b""));
    assert!(!empty.headers().contains_key(CONTENT_ENCODING));
}

/// Server-sent events: each event reaches the client when the upstream sends it, not when the
/// stream ends or a buffer fills.
#[tokio::test]
async fn a_pause_in_the_body_flushes_what_was_compressed() {
    for encoding in Encoding::ALL {
        let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(4);
        let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
            let chunk = receiver.recv().await?;
            Some((Ok::<_, std::io::Error>(Frame::data(chunk)), receiver))
        });
        let upstream = Response::builder()
            .header(CONTENT_TYPE, "text/event-stream")
            .body(StreamBody::new(stream).boxed())
            .unwrap();
        let mut body = Policy::default()
            .apply(Negotiated::Encode(encoding), upstream)
            .into_body();

        let mut received = Vec::new();
        for event in ["data: one\n\n", "data: two\n\n"] {
            sender.send(Bytes::from(event)).await.unwrap();
            let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
                .await
                .unwrap_or_else(|_| panic!("{encoding:?}: the event waited for more"))
                .unwrap()
                .unwrap();
            received.extend_from_slice(&frame.into_data().unwrap());
            // Everything sent so far decodes from what arrived so far.
            let so_far = partial_decode(encoding, &received);
            assert!(
                so_far.ends_with(event.as_bytes()),
                "{encoding:?}: {so_far:?}"
            );
        }
        drop(sender);
        while let Some(frame) = body.frame().await {
            received.extend_from_slice(&frame.unwrap().into_data().unwrap());
        }
        assert_eq!(
            decode(encoding.token(), &received),
            b"data: one\n\ndata: two\n\n"
        );
    }
}

/// What a stream decodes to so far, without its end.
fn partial_decode(encoding: Encoding, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buffer = [0u8; 4096];
    let mut read = |reader: &mut dyn Read| loop {
        match reader.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buffer[..n]),
        }
    };
    match encoding {
        Encoding::Gzip => read(&mut flate2::read::GzDecoder::new(bytes)),
        Encoding::Brotli => read(&mut brotli::Decompressor::new(bytes, 4096)),
        Encoding::Zstd => read(&mut zstd::stream::read::Decoder::new(bytes).unwrap()),
    }
    out
}
