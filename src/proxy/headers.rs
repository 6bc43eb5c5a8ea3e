//! Header and URI rewriting for proxied requests and responses: hop-by-hop removal, the `Host` and
//! forwarding headers (`X-Forwarded-*`, `X-Real-IP`, `Forwarded`: who the client is, believed only
//! from `[https] trusted_proxies`), WebSocket upgrade detection and the upstream URI.
//!
//! Everything here is a pure function of headers and URIs so it can be tested without sockets.

use std::net::IpAddr;

use hyper::header::{
    HeaderName, HeaderValue, CONNECTION, COOKIE, EXPECT, FORWARDED, HOST, PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::{HeaderMap, Method, Uri, Version};

use super::path::NormalPath;
use crate::trusted_proxies::TrustedProxies;

/// `X-Forwarded-For`: the chain of client addresses.
pub(super) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`: the scheme the client used to reach certd.
pub(super) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`: the host the client asked for.
pub(super) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Real-IP`: the client's address alone (nginx's `proxy_set_header X-Real-IP $remote_addr`).
pub(super) const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

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
    // One allocation of the right size: this runs for every proxied request.
    let mut path_and_query =
        String::with_capacity(base.len() + path.len() + query.map_or(0, |query| query.len() + 1));
    path_and_query.push_str(base);
    path_and_query.push_str(path);
    if let Some(query) = query {
        path_and_query.push('?');
        path_and_query.push_str(query);
    }
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
/// client sent it, the forwarding headers set by [`set_forwarding_headers`], HTTP/2 cookie fields
/// joined into one, and, for a WebSocket handshake, `Upgrade` (the client's value) with
/// `Connection: upgrade` put back. `peer` is the address the request's connection came from (the
/// PROXY header's source where the listener speaks the PROXY protocol).
pub(super) fn prepare_request_headers(
    headers: &mut HeaderMap,
    host: Option<HeaderValue>,
    peer: IpAddr,
    trusted: &TrustedProxies,
    websocket_upgrade: Option<HeaderValue>,
) {
    remove_hop_by_hop(headers);
    // certd has already answered any `Expect: 100-continue` itself (hyper sends the 100 when the body
    // is first read); the upstream must not be asked to do it again.
    headers.remove(EXPECT);
    join_cookies(headers);
    if let Some(host) = &host {
        headers.insert(HOST, host.clone());
    }
    set_forwarding_headers(headers, host, peer, trusted);
    if let Some(upgrade) = websocket_upgrade {
        headers.insert(UPGRADE, upgrade);
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Sets the headers that tell the upstream who the client is, like Caddy's `trusted_proxies`.
///
/// From a `peer` that is not trusted, nothing the client said about itself survives:
/// `X-Forwarded-For` and `X-Real-IP` are its address, `X-Forwarded-Proto` is `https`,
/// `X-Forwarded-Host` is the host it asked for, and `Forwarded` (RFC 7239) is replaced by one element
/// saying the same. From a trusted proxy, the chain it brings is kept: its `X-Forwarded-For` gets the
/// proxy's own address appended, its `X-Forwarded-Proto` and `-Host` stay (certd's values where it
/// sent none), its `Forwarded` gets certd's element appended, and `X-Real-IP` is the real client as
/// [`real_client`] finds it.
pub(super) fn set_forwarding_headers(
    headers: &mut HeaderMap,
    host: Option<HeaderValue>,
    peer: IpAddr,
    trusted: &TrustedProxies,
) {
    let peer = peer.to_canonical();
    let from_trusted = trusted.contains(peer);
    let client = real_client(headers, peer, trusted);
    let element = forwarded_element(peer, host.as_ref());
    let (forwarded_for, forwarded) = if from_trusted {
        (
            joined(headers, &X_FORWARDED_FOR, &peer.to_string()),
            joined(headers, &FORWARDED, &element),
        )
    } else {
        (peer.to_string(), element)
    };
    // The values are moved into the headers, not copied: this runs for every proxied request.
    let forwarded_for = owned_value(forwarded_for);
    let real_ip = match (&forwarded_for, client == peer && !from_trusted) {
        // From an untrusted peer both name the peer alone: one value, shared.
        (Some(value), true) => Some(value.clone()),
        _ => owned_value(client.to_string()),
    };
    let keep = |headers: &HeaderMap, name: &HeaderName| from_trusted && headers.contains_key(name);
    if !keep(headers, &X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    }
    if !keep(headers, &X_FORWARDED_HOST) {
        match host {
            Some(host) => headers.insert(X_FORWARDED_HOST, host),
            None => headers.remove(X_FORWARDED_HOST),
        };
    }
    set_or_remove(headers, X_FORWARDED_FOR, forwarded_for);
    set_or_remove(headers, FORWARDED, owned_value(forwarded));
    set_or_remove(headers, X_REAL_IP, real_ip);
}

/// `text` as a header value without copying it; `None` when it cannot be one.
fn owned_value(text: String) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text)).ok()
}

/// The real client of a request that came from `peer`: `peer` itself unless it is a trusted proxy;
/// else the `X-Forwarded-For` chain is walked from the right, skipping trusted addresses, and the
/// first untrusted one is the client (nginx's `real_ip_recursive on`). When every address is trusted
/// it is the leftmost; an entry that is not an address ends the walk at the last one that was.
pub(crate) fn real_client(headers: &HeaderMap, peer: IpAddr, trusted: &TrustedProxies) -> IpAddr {
    let mut client = peer.to_canonical();
    if !trusted.contains(client) {
        return client;
    }
    let chain: Vec<&str> = list_values(headers, &X_FORWARDED_FOR).collect();
    for entry in chain.into_iter().rev() {
        let Some(ip) = chain_address(entry) else {
            return client;
        };
        client = ip;
        if !trusted.contains(ip) {
            return ip;
        }
    }
    client
}

/// An `X-Forwarded-For` entry as an address: `192.0.2.1`, `2001:db8::1`, or with a port as some
/// proxies write them (`192.0.2.1:4711`, `[2001:db8::1]:4711`).
fn chain_address(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    entry
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|address| address.ip().to_canonical())
        .or_else(|| {
            let inner = entry.strip_prefix('[')?.strip_suffix(']')?;
            inner.parse::<IpAddr>().ok()
        })
}

/// certd's own `Forwarded` element (RFC 7239 §4): `for=192.0.2.1;host="a.test";proto=https`, an
/// IPv6 address quoted and bracketed (`for="[2001:db8::1]"`, §6), the host always quoted (it may
/// hold a `:port`, which a token cannot).
fn forwarded_element(peer: IpAddr, host: Option<&HeaderValue>) -> String {
    use std::fmt::Write as _;
    let host = host.and_then(|host| host.to_str().ok());
    // Written into one string of about the right size: this runs for every proxied request.
    let mut element = String::with_capacity(64 + host.map_or(0, str::len));
    // Writing to a String cannot fail.
    let _ = match peer {
        IpAddr::V4(ip) => write!(element, "for={ip}"),
        IpAddr::V6(ip) => write!(element, "for=\"[{ip}]\""),
    };
    if let Some(host) = host {
        element.push_str(";host=\"");
        for c in host.chars() {
            if c == '\\' || c == '"' {
                element.push('\\');
            }
            element.push(c);
        }
        element.push('"');
    }
    element.push_str(";proto=https");
    element
}

/// Every `name` header's value joined with `", "`, then `last`.
fn joined(headers: &HeaderMap, name: &HeaderName, last: &str) -> String {
    let mut chain: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .collect();
    chain.push(last);
    chain.join(", ")
}

/// Sets `name` to `value` alone; removes it when there is none (the text could not be a header
/// value).
fn set_or_remove(headers: &mut HeaderMap, name: HeaderName, value: Option<HeaderValue>) {
    match value {
        Some(value) => {
            headers.insert(name, value);
        }
        None => {
            headers.remove(name);
        }
    }
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
        let trusted = trusted(&["192.0.2.9"]);
        prepare_request_headers(&mut map, host, "192.0.2.9".parse().unwrap(), &trusted, None);
        assert_eq!(map["host"], "site.example");
        assert_eq!(map["x-forwarded-host"], "site.example");
        assert_eq!(
            map["x-forwarded-for"],
            "203.0.113.7, 198.51.100.1, 192.0.2.9"
        );
        assert_eq!(map["x-forwarded-proto"], "http");
        assert_eq!(map["x-real-ip"], "198.51.100.1");
        assert_eq!(map.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(map["cookie"], "a=1; b=2");
        for gone in ["connection", "x-drop", "expect", "upgrade"] {
            assert!(!map.contains_key(gone), "{gone}");
        }
    }

    fn trusted(entries: &[&str]) -> TrustedProxies {
        TrustedProxies::new(
            entries
                .iter()
                .map(|entry| crate::trusted_proxies::parse_range(entry).unwrap())
                .collect(),
        )
    }

    /// What a client can put in a request to claim another address.
    fn forged() -> HeaderMap {
        headers(&[
            ("host", "site.example"),
            ("x-real-ip", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6;proto=http"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "6.6.6.7"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "evil.example"),
        ])
    }

    #[test]
    fn an_untrusted_client_cannot_forge_its_identity() {
        // (trusted proxies, peer, X-Forwarded-For / X-Real-IP, Forwarded)
        let cases = [
            (
                vec![],
                "192.0.2.9",
                "192.0.2.9",
                "for=192.0.2.9;host=\"site.example\";proto=https",
            ),
            (
                vec!["10.0.0.0/8"],
                "192.0.2.9",
                "192.0.2.9",
                "for=192.0.2.9;host=\"site.example\";proto=https",
            ),
            (
                vec!["10.0.0.0/8", "6.6.6.0/24"],
                "2001:db8::9",
                "2001:db8::9",
                "for=\"[2001:db8::9]\";host=\"site.example\";proto=https",
            ),
            (
                vec![],
                "::ffff:192.0.2.9",
                "192.0.2.9",
                "for=192.0.2.9;host=\"site.example\";proto=https",
            ),
        ];
        for (trusted_entries, peer, client, forwarded) in cases {
            let mut map = forged();
            let host = original_host(&"/".parse().unwrap(), &map);
            let trusted = trusted(&trusted_entries);
            prepare_request_headers(&mut map, host, peer.parse().unwrap(), &trusted, None);
            assert_eq!(map["x-forwarded-for"], client, "{peer}");
            assert_eq!(map["x-real-ip"], client, "{peer}");
            assert_eq!(map["forwarded"], forwarded, "{peer}");
            assert_eq!(map["x-forwarded-proto"], "https", "{peer}");
            assert_eq!(map["x-forwarded-host"], "site.example", "{peer}");
            for (name, value) in &map {
                let value = value.to_str().unwrap();
                assert!(!value.contains("6.6.6"), "{peer}: {name}: {value}");
                assert!(!value.contains("evil"), "{peer}: {name}: {value}");
            }
            for name in ["x-forwarded-for", "x-real-ip", "forwarded"] {
                assert_eq!(map.get_all(name).iter().count(), 1, "{peer}: {name}");
            }
        }
    }

    #[test]
    fn a_trusted_proxy_keeps_its_chain() {
        // (trusted proxies, peer, incoming X-Forwarded-For, sent X-Forwarded-For, X-Real-IP)
        let cases = [
            // One balancer in front: the client is the address it reports.
            (
                vec!["10.0.0.0/8"],
                "10.0.0.5",
                Some("203.0.113.7"),
                "203.0.113.7, 10.0.0.5",
                "203.0.113.7",
            ),
            // Two trusted hops: both are skipped.
            (
                vec!["10.0.0.0/8"],
                "10.0.0.5",
                Some("6.6.6.6, 203.0.113.7, 10.0.0.9"),
                "6.6.6.6, 203.0.113.7, 10.0.0.9, 10.0.0.5",
                "203.0.113.7",
            ),
            // No chain: the proxy itself is the client.
            (vec!["10.0.0.0/8"], "10.0.0.5", None, "10.0.0.5", "10.0.0.5"),
            // Everything trusted: the leftmost address.
            (
                vec!["10.0.0.0/8"],
                "10.0.0.5",
                Some("10.1.1.1, 10.2.2.2"),
                "10.1.1.1, 10.2.2.2, 10.0.0.5",
                "10.1.1.1",
            ),
            // Entries with ports, and IPv6.
            (
                vec!["::1", "10.0.0.0/8"],
                "::1",
                Some("[2001:db8::7]:4711, 10.0.0.9:80"),
                "[2001:db8::7]:4711, 10.0.0.9:80, ::1",
                "2001:db8::7",
            ),
            // Garbage stops the walk at the last address that was one.
            (
                vec!["10.0.0.0/8"],
                "10.0.0.5",
                Some("203.0.113.7, unknown, 10.0.0.9"),
                "203.0.113.7, unknown, 10.0.0.9, 10.0.0.5",
                "10.0.0.9",
            ),
        ];
        for (trusted_entries, peer, incoming, sent, client) in cases {
            let mut map = headers(&[("host", "site.example"), ("x-real-ip", "6.6.6.6")]);
            if let Some(incoming) = incoming {
                map.insert(X_FORWARDED_FOR, HeaderValue::from_str(incoming).unwrap());
            }
            let host = original_host(&"/".parse().unwrap(), &map);
            let trusted = trusted(&trusted_entries);
            prepare_request_headers(&mut map, host, peer.parse().unwrap(), &trusted, None);
            assert_eq!(map["x-forwarded-for"], sent, "{incoming:?}");
            assert_eq!(map["x-real-ip"], client, "{incoming:?}");
            assert_eq!(
                real_client(&map, peer.parse().unwrap(), &trusted).to_string(),
                client,
                "{incoming:?}: the access log's client"
            );
        }
    }

    #[test]
    fn a_trusted_proxy_keeps_its_proto_host_and_forwarded() {
        let trusted = trusted(&["10.0.0.0/8"]);
        let mut map = headers(&[
            ("host", "site.example"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "public.example"),
            ("forwarded", "for=203.0.113.7;proto=http"),
        ]);
        let host = original_host(&"/".parse().unwrap(), &map);
        prepare_request_headers(&mut map, host, "10.0.0.5".parse().unwrap(), &trusted, None);
        assert_eq!(map["x-forwarded-proto"], "http");
        assert_eq!(map["x-forwarded-host"], "public.example");
        assert_eq!(
            map["forwarded"],
            "for=203.0.113.7;proto=http, for=10.0.0.5;host=\"site.example\";proto=https"
        );

        // Where it sent none, certd's own values.
        let mut map = headers(&[("host", "site.example")]);
        let host = original_host(&"/".parse().unwrap(), &map);
        prepare_request_headers(&mut map, host, "10.0.0.5".parse().unwrap(), &trusted, None);
        assert_eq!(map["x-forwarded-proto"], "https");
        assert_eq!(map["x-forwarded-host"], "site.example");
        assert_eq!(
            map["forwarded"],
            "for=10.0.0.5;host=\"site.example\";proto=https"
        );
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
        let nobody = TrustedProxies::default();
        prepare_request_headers(&mut map, None, "::1".parse().unwrap(), &nobody, upgrade);
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

    #[test]
    fn the_forwarded_element_quotes_the_host() {
        let host = HeaderValue::from_static("a.test:8443");
        assert_eq!(
            forwarded_element("192.0.2.1".parse().unwrap(), Some(&host)),
            "for=192.0.2.1;host=\"a.test:8443\";proto=https"
        );
        let odd = HeaderValue::from_static("a\"b\\c");
        assert_eq!(
            forwarded_element("2001:db8::1".parse().unwrap(), Some(&odd)),
            "for=\"[2001:db8::1]\";host=\"a\\\"b\\\\c\";proto=https"
        );
        assert_eq!(
            forwarded_element("192.0.2.1".parse().unwrap(), None),
            "for=192.0.2.1;proto=https"
        );
    }
}
