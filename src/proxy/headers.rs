//! Header and URI rewriting for proxied requests and responses: hop-by-hop removal, the `Host` and
//! `X-Forwarded-*` headers, WebSocket upgrade detection and the upstream URI.
//!
//! Everything here is a pure function of headers and URIs so it can be tested without sockets.

use std::net::IpAddr;

use hyper::header::{
    HeaderName, HeaderValue, CONNECTION, COOKIE, EXPECT, HOST, PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::{HeaderMap, Method, Uri, Version};

use super::path::NormalPath;

/// `X-Forwarded-For`: the chain of client addresses.
pub(super) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`: the scheme the client used to reach certd.
pub(super) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`: the host the client asked for.
pub(super) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers that describe one connection rather than the message (RFC 9110 §7.6.1, plus the
/// non-standard `Keep-Alive` and `Proxy-Connection` that old clients still send).
const HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
];

/// Whether any `Connection` header lists `token` (case-insensitive, comma-separated lists).
pub(super) fn connection_has_token(headers: &HeaderMap, token: &str) -> bool {
    list_values(headers, &CONNECTION).any(|value| value.eq_ignore_ascii_case(token))
}

/// The comma-separated elements of every `name` header, trimmed; values that are not visible ASCII
/// are skipped.
fn list_values<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|element| !element.is_empty())
}

/// Removes the hop-by-hop headers, including every header that `Connection` names.
pub(super) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = list_values(headers, &CONNECTION)
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// Whether a request asks to become a WebSocket (RFC 6455 §4.1): HTTP/1.1 `GET` with
/// `Connection: upgrade` and `Upgrade: websocket`. WebSocket over HTTP/2 (RFC 8441) is not supported.
pub(super) fn is_websocket_upgrade(method: &Method, version: Version, headers: &HeaderMap) -> bool {
    method == Method::GET
        && version == Version::HTTP_11
        && connection_has_token(headers, "upgrade")
        && list_values(headers, &UPGRADE).any(|p| p.eq_ignore_ascii_case("websocket"))
}

/// The host the client asked for: the URI's authority (HTTP/2 `:authority`, or an HTTP/1.1
/// absolute-form target, which RFC 9112 §3.2.2 says overrides `Host`), else the `Host` header.
pub(super) fn original_host(uri: &Uri, headers: &HeaderMap) -> Option<HeaderValue> {
    match uri.authority() {
        Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
        None => headers.get(HOST).cloned(),
    }
}

/// The URI to request from `upstream`: its scheme and authority, its base path (if any) followed by
/// the request's normalised path, and the request's query as sent. Taking a [`NormalPath`] means the
/// raw path of a request cannot reach an upstream.
pub(super) fn upstream_uri(
    upstream: &Uri,
    path: &NormalPath,
    query: Option<&str>,
) -> Result<Uri, hyper::http::Error> {
    let base = upstream.path().trim_end_matches('/');
    let path = path.as_str();
    let path_and_query = match query {
        Some(query) => format!("{base}{path}?{query}"),
        None => format!("{base}{path}"),
    };
    let mut parts = hyper::http::uri::Parts::default();
    parts.scheme = Some(upstream.scheme().cloned().unwrap_or(Scheme::HTTP));
    parts.authority = upstream.authority().cloned().or_else(|| Some(localhost()));
    parts.path_and_query = Some(PathAndQuery::try_from(path_and_query)?);
    Ok(Uri::from_parts(parts)?)
}

fn localhost() -> Authority {
    Authority::from_static("localhost")
}

/// Rewrites a request's headers for the upstream: hop-by-hop headers removed, `Host` kept as the
/// client sent it, `X-Forwarded-For` extended with the client's address, `X-Forwarded-Proto: https`,
/// `X-Forwarded-Host`, HTTP/2 cookie fields joined into one, and, for a WebSocket handshake,
/// `Upgrade` (the client's value) with `Connection: upgrade` put back.
pub(super) fn prepare_request_headers(
    headers: &mut HeaderMap,
    host: Option<HeaderValue>,
    client_ip: IpAddr,
    websocket_upgrade: Option<HeaderValue>,
) {
    let forwarded_for = forwarded_for(headers, client_ip);
    remove_hop_by_hop(headers);
    // certd has already answered any `Expect: 100-continue` itself (hyper sends the 100 when the body
    // is first read); the upstream must not be asked to do it again.
    headers.remove(EXPECT);
    join_cookies(headers);
    if let Some(host) = host {
        headers.insert(HOST, host.clone());
        headers.insert(X_FORWARDED_HOST, host);
    }
    if let Some(forwarded_for) = forwarded_for {
        headers.insert(X_FORWARDED_FOR, forwarded_for);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    if let Some(upgrade) = websocket_upgrade {
        headers.insert(UPGRADE, upgrade);
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// The `X-Forwarded-For` value to send: every existing value, then the client's address.
fn forwarded_for(headers: &HeaderMap, client_ip: IpAddr) -> Option<HeaderValue> {
    let mut chain: Vec<String> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
        .collect();
    chain.push(client_ip.to_string());
    HeaderValue::from_str(&chain.join(", ")).ok()
}

/// HTTP/2 clients may split `Cookie` into several fields (RFC 9113 §8.2.3); HTTP/1.1 upstreams expect
/// one, joined with `"; "`.
fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(COOKIE).iter().count() < 2 {
        return;
    }
    let joined: Vec<&[u8]> = headers
        .get_all(COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if let Ok(value) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
        headers.insert(COOKIE, value);
    }
}

/// Rewrites an upstream's `101 Switching Protocols` headers for the client: hop-by-hop headers
/// removed, then the upstream's `Upgrade` with `Connection: upgrade` put back.
pub(super) fn prepare_switching_headers(headers: &mut HeaderMap) {
    let upgrade = headers.get(UPGRADE).cloned();
    remove_hop_by_hop(headers);
    if let Some(upgrade) = upgrade {
        headers.insert(UPGRADE, upgrade);
    }
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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

    #[test]
    fn hop_by_hop_headers_and_connection_tokens_are_removed() {
        let mut map = headers(&[
            ("connection", "close, X-Secret"),
            ("connection", "x-other"),
            ("x-secret", "1"),
            ("x-other", "2"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-t"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("proxy-authenticate", "Basic"),
            ("x-public", "3"),
            ("content-type", "text/plain"),
        ]);
        remove_hop_by_hop(&mut map);
        let mut left: Vec<&str> = map.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-public"]);
    }

    #[test]
    fn websocket_upgrade_detection() {
        let ws = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ]);
        let cases = [
            (Method::GET, Version::HTTP_11, &ws, true),
            (Method::POST, Version::HTTP_11, &ws, false),
            (Method::GET, Version::HTTP_10, &ws, false),
            (Method::GET, Version::HTTP_2, &ws, false),
        ];
        for (method, version, map, expected) in cases {
            assert_eq!(
                is_websocket_upgrade(&method, version, map),
                expected,
                "{method} {version:?}"
            );
        }
        let no_connection = headers(&[("upgrade", "websocket")]);
        assert!(!is_websocket_upgrade(
            &Method::GET,
            Version::HTTP_11,
            &no_connection
        ));
        let h2c = headers(&[("connection", "upgrade"), ("upgrade", "h2c")]);
        assert!(!is_websocket_upgrade(&Method::GET, Version::HTTP_11, &h2c));
    }

    #[test]
    fn upstream_uri_keeps_path_and_query_and_prefixes_base_path() {
        let cases = [
            (
                "http://localhost:8080",
                "/a/b?x=1",
                "http://localhost:8080/a/b?x=1",
            ),
            ("http://localhost:8080/", "/", "http://localhost:8080/"),
            (
                "http://127.0.0.1:9000/app",
                "/a?q",
                "http://127.0.0.1:9000/app/a?q",
            ),
            (
                "http://127.0.0.1:9000/app/",
                "/a",
                "http://127.0.0.1:9000/app/a",
            ),
            ("http://u:1", "https://example.com/x?y", "http://u:1/x?y"),
            ("http://u:1", "*", "http://u:1/"),
            // The upstream gets the normalised path; the query goes as sent.
            (
                "http://127.0.0.1:9000/app",
                "/x/../a//%2e/b?q=/../%2e",
                "http://127.0.0.1:9000/app/a/b?q=/../%2e",
            ),
        ];
        for (upstream, request, expected) in cases {
            let request: Uri = request.parse().unwrap();
            let path = super::super::path::normalise(request.path()).unwrap();
            let uri = upstream_uri(&upstream.parse().unwrap(), &path, request.query()).unwrap();
            assert_eq!(uri.to_string(), expected, "{upstream} + {request}");
        }
    }

    #[test]
    fn original_host_prefers_the_uri_authority() {
        let map = headers(&[("host", "from-header.example")]);
        let origin_form: Uri = "/x".parse().unwrap();
        let absolute: Uri = "https://from-uri.example:8443/x".parse().unwrap();
        assert_eq!(
            original_host(&origin_form, &map).unwrap(),
            "from-header.example"
        );
        assert_eq!(
            original_host(&absolute, &map).unwrap(),
            "from-uri.example:8443"
        );
        assert_eq!(original_host(&origin_form, &HeaderMap::new()), None);
    }

    #[test]
    fn request_headers_are_prepared_for_the_upstream() {
        let mut map = headers(&[
            ("host", "site.example"),
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-for", "198.51.100.1"),
            ("x-forwarded-proto", "http"),
            ("connection", "x-drop"),
            ("x-drop", "1"),
            ("expect", "100-continue"),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
        ]);
        let host = original_host(&"/".parse().unwrap(), &map);
        prepare_request_headers(&mut map, host, "192.0.2.9".parse().unwrap(), None);
        assert_eq!(map["host"], "site.example");
        assert_eq!(map["x-forwarded-host"], "site.example");
        assert_eq!(
            map["x-forwarded-for"],
            "203.0.113.7, 198.51.100.1, 192.0.2.9"
        );
        assert_eq!(map.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(map["x-forwarded-proto"], "https");
        assert_eq!(map["cookie"], "a=1; b=2");
        for gone in ["connection", "x-drop", "expect", "upgrade"] {
            assert!(!map.contains_key(gone), "{gone}");
        }
    }

    #[test]
    fn websocket_handshake_keeps_upgrade_headers() {
        let mut map = headers(&[
            ("host", "site.example"),
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]);
        let upgrade = map.get(UPGRADE).cloned();
        prepare_request_headers(&mut map, None, "::1".parse().unwrap(), upgrade);
        assert_eq!(map["connection"], "upgrade");
        assert_eq!(map["upgrade"], "websocket");
        assert_eq!(map["sec-websocket-key"], "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(map["x-forwarded-for"], "::1");

        let mut response = headers(&[
            ("connection", "Upgrade, x-drop"),
            ("x-drop", "1"),
            ("upgrade", "websocket"),
            ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ]);
        prepare_switching_headers(&mut response);
        assert_eq!(response["connection"], "upgrade");
        assert_eq!(response["upgrade"], "websocket");
        assert!(!response.contains_key("x-drop"));
        assert!(response.contains_key("sec-websocket-accept"));
    }
}
