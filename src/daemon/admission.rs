//! Which requests the HTTPS front accepts, and for which site: the RFC 9112 / RFC 9113 checks of a
//! request's head that hyper leaves to the application (one valid `Host`, `:authority` agreeing with
//! it, message framing that no other parser could read differently), and the rule that a request
//! may only ask for a name of the site whose certificate its connection was given.
//!
//! That last rule is what makes domain fronting impossible: a TLS connection for `a.test` (or, with
//! no SNI, for `[https] default_site`) cannot be used to reach `b.test`, even though both are
//! served here. Names of one site (`a.test` and `www.a.test` on one certificate) share connections,
//! as HTTP/2 connection coalescing expects. Refused requests get 421 Misdirected Request
//! (RFC 9110 §15.5.20), which tells a browser to retry on a fresh connection.
//!
//! Everything here is a pure function of the request head, the SNI name and the site table.

use std::sync::Arc;

use hyper::header::{HeaderMap, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use hyper::http::uri::Authority;
use hyper::{Request, Version};

use super::sites::{ServedSite, SiteTable};
use crate::hostname::normalise_host;

/// Why a request is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum Refusal {
    /// A malformed request (400): what is wrong with it.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The request names a host this connection is not for, or one not served here (421).
    #[error("misdirected request: the host is not a name of this connection's site")]
    Misdirected,
}

/// The site that serves `request`, which arrived on a connection whose handshake named `sni` (the
/// default site's connection when `None`), or why it is refused.
pub(super) fn admit<'t, B>(
    request: &Request<B>,
    sni: Option<&str>,
    sites: &'t SiteTable,
) -> Result<&'t Arc<ServedSite>, Refusal> {
    check_framing(request.headers())?;
    let host = request_host(request)?;
    let connection_site = match sni {
        Some(sni) => sites.site(&normalise_host(sni)),
        None => sites.default_site(),
    };
    let Some(connection_site) = connection_site else {
        return Err(Refusal::Misdirected);
    };
    let Some(host) = host else {
        // HTTP/1.0 without Host: the connection's own site is the only answer.
        return Ok(connection_site);
    };
    match sites.site(&normalise_host(host.host())) {
        Some(site) if Arc::ptr_eq(site, connection_site) => Ok(site),
        _ => Err(Refusal::Misdirected),
    }
}

/// `Transfer-Encoding` and `Content-Length` as only one reading allows (RFC 9112 §6): at most one
/// `Content-Length`, made of digits only; a `Transfer-Encoding` only as the single coding `chunked`,
/// and never together with `Content-Length`. hyper already refuses a non-final `chunked` and
/// differing lengths; the rest it would accept (dropping `Content-Length`, joining equal lengths),
/// and a front that accepts what a back end reads differently is how requests are smuggled.
fn check_framing(headers: &HeaderMap) -> Result<(), Refusal> {
    // `Transfer_Encoding` is another header to hyper, but some back ends (CGI-style frameworks)
    // read `_` as `-`: it would frame the request differently there. nginx drops such headers
    // (`underscores_in_headers off`); refusing says why.
    if headers.keys().any(|name| {
        let name = name.as_str();
        name.contains('_')
            && ["transfer-encoding", "content-length"]
                .iter()
                .any(|framing| name.replace('_', "-") == *framing)
    }) {
        return Err(Refusal::BadRequest(
            "a framing header spelt with `_` (Transfer_Encoding, Content_Length)",
        ));
    }
    let mut lengths = headers.get_all(CONTENT_LENGTH).iter();
    let length = lengths.next();
    if lengths.next().is_some() {
        return Err(Refusal::BadRequest("more than one Content-Length"));
    }
    if let Some(length) = length {
        let digits = length.as_bytes();
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(Refusal::BadRequest(
                "a Content-Length that is not one number",
            ));
        }
    }
    let mut codings = headers.get_all(TRANSFER_ENCODING).iter();
    if let Some(coding) = codings.next() {
        if codings.next().is_some() || !coding.as_bytes().eq_ignore_ascii_case(b"chunked") {
            return Err(Refusal::BadRequest(
                "a Transfer-Encoding other than a single `chunked`",
            ));
        }
        if length.is_some() {
            return Err(Refusal::BadRequest(
                "both Content-Length and Transfer-Encoding",
            ));
        }
    }
    Ok(())
}

/// The authority the request asks for (its host is normalised by the caller): the URI's
/// authority (HTTP/2 `:authority`, or an HTTP/1.1 absolute-form target, which RFC 9112 §3.2.2 says
/// wins over `Host`), else the `Host` header. `None` only for HTTP/1.0 without `Host`.
///
/// Refused (RFC 9112 §3.2, RFC 9113 §8.3.1): more than one `Host`, an invalid one, none on
/// HTTP/1.1, and an HTTP/2 request whose `Host` names another host or port than its `:authority`
/// or that has neither.
fn request_host<B>(request: &Request<B>) -> Result<Option<Authority>, Refusal> {
    let mut hosts = request.headers().get_all(HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(Refusal::BadRequest("more than one Host header"));
    }
    let header = header
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|text| text.parse::<Authority>().ok())
                .filter(|authority| {
                    !authority.as_str().contains('@') && !authority.host().is_empty()
                })
                .ok_or(Refusal::BadRequest("an invalid Host header"))
        })
        .transpose()?;
    let authority = request.uri().authority();
    if request.version() == Version::HTTP_2 {
        if let (Some(authority), Some(header)) = (authority, &header) {
            if !same_origin(authority, header) {
                return Err(Refusal::BadRequest("Host and :authority disagree"));
            }
        }
    }
    let chosen = match (authority, header) {
        (Some(authority), _) => authority.clone(),
        (None, Some(header)) => header,
        (None, None) if request.version() == Version::HTTP_10 => return Ok(None),
        (None, None) if request.version() == Version::HTTP_2 => {
            return Err(Refusal::BadRequest("neither :authority nor Host"));
        }
        (None, None) => return Err(Refusal::BadRequest("an HTTP/1.1 request without Host")),
    };
    Ok(Some(chosen))
}

/// Whether two authorities name the same host and port (a missing port is 443: the only scheme
/// served here is https).
fn same_origin(a: &Authority, b: &Authority) -> bool {
    normalise_host(a.host()) == normalise_host(b.host())
        && a.port_u16().unwrap_or(443) == b.port_u16().unwrap_or(443)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn table(default_site: Option<&str>) -> SiteTable {
        let text = format!(
            "[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n{}[[site]]\nnames = \
             [\"a.test\", \"www.a.test\"]\n[[site]]\nnames = [\"b.test\"]\n",
            default_site
                .map(|name| format!("[https]\ndefault_site = \"{name}\"\n"))
                .unwrap_or_default()
        );
        let config =
            crate::config::from_toml(&text, std::path::Path::new("/etc/certd.toml")).unwrap();
        SiteTable::from_config(&config, &Metrics::default())
    }

    fn request(version: Version, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::get(uri).version(version);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    fn admitted(
        sites: &SiteTable,
        sni: Option<&str>,
        request: &Request<()>,
    ) -> Result<String, Refusal> {
        admit(request, sni, sites).map(|site| site.name.clone())
    }

    #[test]
    fn wildcard_and_ip_sites_admit_their_hosts_and_exact_names_win() {
        let text = "[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n[[site]]\nnames = \
                    [\"x.b.test\"]\n[[site]]\nnames = [\"wild.b.test\"]\n[[site]]\nnames = \
                    [\"127.0.0.1\", \"::1\"]\n";
        let mut config =
            crate::config::from_toml(text, std::path::Path::new("/etc/certd.toml")).unwrap();
        // A wildcard site needs DNS-01 to be configured; the table only sees its names.
        config.sites[1].names = vec!["*.b.test".to_owned()];
        let sites = SiteTable::from_config(&config, &Metrics::default());
        let get = |host: &str| request(Version::HTTP_11, "/", &[("host", host)]);
        let wild = Ok("*.b.test".to_owned());
        assert_eq!(admitted(&sites, Some("y.b.test"), &get("Y.b.test")), wild);
        assert_eq!(
            admitted(&sites, Some("x.b.test"), &get("x.b.test")),
            Ok("x.b.test".to_owned())
        );
        // One label only, and an exact site's host is not the wildcard connection's.
        assert_eq!(
            admitted(&sites, Some("y.b.test"), &get("x.b.test")),
            Err(Refusal::Misdirected)
        );
        assert_eq!(
            admitted(&sites, Some("a.y.b.test"), &get("a.y.b.test")),
            Err(Refusal::Misdirected)
        );
        // An IP site's connection is named by its address; IPv6 hosts come in brackets.
        let ip = Ok("127.0.0.1".to_owned());
        assert_eq!(
            admitted(&sites, Some("127.0.0.1"), &get("127.0.0.1:8443")),
            ip
        );
        assert_eq!(admitted(&sites, Some("::1"), &get("[0:0::1]:443")), ip);
    }

    #[test]
    fn the_host_must_be_a_name_of_the_connections_site() {
        const HTTP_10: Version = Version::HTTP_10;
        const HTTP_11: Version = Version::HTTP_11;
        const HTTP_2: Version = Version::HTTP_2;
        let sites = table(None);
        let bad = |reason| Err(Refusal::BadRequest(reason));
        let a = Ok("a.test".to_owned());
        type Case<'a> = (Option<&'a str>, Request<()>, Result<String, Refusal>);
        let cases: Vec<Case<'_>> = vec![
            (
                Some("a.test"),
                request(HTTP_11, "/", &[("host", "a.test")]),
                a.clone(),
            ),
            (
                Some("a.test"),
                request(HTTP_11, "/", &[("host", "WWW.A.test.:8443")]),
                a.clone(),
            ),
            (
                Some("www.a.test"),
                request(HTTP_2, "https://a.test/", &[]),
                a.clone(),
            ),
            (
                Some("a.test"),
                request(HTTP_11, "/", &[("host", "b.test")]),
                Err(Refusal::Misdirected),
            ),
            (
                Some("a.test"),
                request(HTTP_2, "https://b.test/", &[]),
                Err(Refusal::Misdirected),
            ),
            (
                Some("a.test"),
                request(HTTP_11, "/", &[("host", "c.test")]),
                Err(Refusal::Misdirected),
            ),
            // Absolute form wins over Host (RFC 9112 §3.2.2), so it is what is checked.
            (
                Some("a.test"),
                request(HTTP_11, "https://b.test/", &[("host", "a.test")]),
                Err(Refusal::Misdirected),
            ),
            (Some("a.test"), request(HTTP_10, "/", &[]), a.clone()),
            // No SNI and no default site: nothing may be asked for.
            (
                None,
                request(HTTP_11, "/", &[("host", "a.test")]),
                Err(Refusal::Misdirected),
            ),
            // Hygiene.
            (
                Some("a.test"),
                request(HTTP_11, "/", &[("host", "a.test"), ("host", "a.test")]),
                bad("more than one Host header"),
            ),
            (
                Some("a.test"),
                request(HTTP_11, "/", &[]),
                bad("an HTTP/1.1 request without Host"),
            ),
            (
                Some("a.test"),
                request(HTTP_2, "/", &[]),
                bad("neither :authority nor Host"),
            ),
            (
                Some("a.test"),
                request(HTTP_11, "/", &[("host", "a.test/x")]),
                bad("an invalid Host header"),
            ),
            (
                Some("a.test"),
                request(HTTP_11, "/", &[("host", "u@a.test")]),
                bad("an invalid Host header"),
            ),
            (
                Some("a.test"),
                request(HTTP_11, "/", &[("host", "")]),
                bad("an invalid Host header"),
            ),
            (
                Some("a.test"),
                request(HTTP_2, "https://a.test/", &[("host", "b.test")]),
                bad("Host and :authority disagree"),
            ),
            (
                Some("a.test"),
                request(HTTP_2, "https://a.test/", &[("host", "a.test:8443")]),
                bad("Host and :authority disagree"),
            ),
            (
                Some("a.test"),
                request(HTTP_2, "https://a.test:443/", &[("host", "A.test")]),
                a.clone(),
            ),
        ];
        for (sni, request, expected) in cases {
            assert_eq!(
                admitted(&sites, sni, &request),
                expected,
                "{sni:?} {request:?}"
            );
        }
    }

    #[test]
    fn without_sni_only_the_default_sites_names_are_served() {
        let sites = table(Some("a.test"));
        let host = |name| request(Version::HTTP_11, "/", &[("host", name)]);
        assert_eq!(
            admitted(&sites, None, &host("www.a.test")),
            Ok("a.test".into())
        );
        assert_eq!(
            admitted(&sites, None, &host("b.test")),
            Err(Refusal::Misdirected)
        );
        assert_eq!(
            admitted(&sites, Some("b.test"), &host("b.test")),
            Ok("b.test".into())
        );
    }

    #[test]
    fn framing_is_refused_unless_it_has_one_reading() {
        let cases: [(&[(&str, &str)], bool); 14] = [
            (&[("transfer_encoding", "chunked")], false),
            (&[("content_length", "5")], false),
            (&[], true),
            (&[("content-length", "5")], true),
            (&[("transfer-encoding", "chunked")], true),
            (&[("transfer-encoding", "Chunked")], true),
            (&[("content-length", "5"), ("content-length", "5")], false),
            (&[("content-length", "5, 5")], false),
            (&[("content-length", "+5")], false),
            (
                &[("transfer-encoding", "chunked"), ("content-length", "5")],
                false,
            ),
            (&[("transfer-encoding", "gzip, chunked")], false),
            (
                &[
                    ("transfer-encoding", "chunked"),
                    ("transfer-encoding", "chunked"),
                ],
                false,
            ),
            (&[("transfer-encoding", "xchunked")], false),
            (&[("transfer-encoding", "chunked, identity")], false),
        ];
        for (headers, ok) in cases {
            let mut map = HeaderMap::new();
            for (name, value) in headers {
                map.append(
                    hyper::header::HeaderName::from_static(name),
                    hyper::header::HeaderValue::from_static(value),
                );
            }
            assert_eq!(check_framing(&map).is_ok(), ok, "{headers:?}");
        }
    }

    #[test]
    fn host_names_are_borrowed_when_already_normal() {
        use std::borrow::Cow;
        assert!(matches!(normalise_host("a.test"), Cow::Borrowed("a.test")));
        assert!(matches!(normalise_host("a.test."), Cow::Borrowed("a.test")));
        assert_eq!(normalise_host("WWW.A.Test."), "www.a.test");
        let sites = table(None);
        let upper = request(Version::HTTP_11, "/", &[("host", "WWW.A.TEST")]);
        assert_eq!(
            admitted(&sites, Some("a.test"), &upper),
            Ok("a.test".to_owned())
        );
    }
}
