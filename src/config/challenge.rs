//! Which ACME challenge proves control of a site's names: `challenge = "http-01" | "tls-alpn-01" |
//! "dns-01"` on a `[[site]]`, with `[acme] challenge` as the default of sites that do not say.
//!
//! Without either the choice is automatic (`None` in [`super::SiteConfig::challenge`]): HTTP-01, and
//! TLS-ALPN-01 when preflight finds port 80 unreachable while the names resolve (the renewer decides,
//! see `renewal::renewer`). The kinds a name may use are checked here too: a wildcard can only be
//! proven over DNS-01 (RFC 8555 §7.1.3), an IP address never over DNS-01 (RFC 8738 §7).

use std::fmt;

/// An ACME challenge type certd can answer.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum ChallengeKind {
    /// HTTP-01 (RFC 8555 §8.3): `http://<name>/.well-known/acme-challenge/<token>` on `[http] listen`.
    #[default]
    #[serde(rename = "http-01")]
    Http01,
    /// TLS-ALPN-01 (RFC 8737): a ClientHello offering only `acme-tls/1` on `[https] listen` gets a
    /// self-signed certificate carrying the key authorization's digest.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// DNS-01 (RFC 8555 §8.4): a TXT record at `_acme-challenge.<name>`.
    #[serde(rename = "dns-01")]
    Dns01,
}

/// Every kind, in the order the documentation lists them.
pub const KINDS: [ChallengeKind; 3] = [
    ChallengeKind::Http01,
    ChallengeKind::TlsAlpn01,
    ChallengeKind::Dns01,
];

impl ChallengeKind {
    /// The name the configuration and the ACME protocol use (`http-01`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http01 => "http-01",
            Self::TlsAlpn01 => "tls-alpn-01",
            Self::Dns01 => "dns-01",
        }
    }
}

impl fmt::Display for ChallengeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reads a `challenge` value. Whether a `dns-01` site has a DNS method is checked with the site
/// (see `validate::sites`).
pub(super) fn parse(value: &str) -> Result<ChallengeKind, String> {
    let Some(kind) = KINDS.iter().copied().find(|kind| kind.as_str() == value) else {
        let known: Vec<String> = KINDS.iter().map(|kind| format!("\"{kind}\"")).collect();
        return Err(format!(
            "{value:?} is not a challenge type certd knows; use one of {}, or leave the key out \
             for the automatic choice (http-01, then tls-alpn-01 when port 80 is unreachable)",
            known.join(", ")
        ));
    };
    Ok(kind)
}

/// What kind of name a `names` entry is, as far as challenges care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NameShape {
    /// A host name.
    Dns,
    /// `*.example.org`.
    Wildcard,
    /// An IPv4 or IPv6 literal.
    Ip,
}

impl NameShape {
    /// The shape of an already validated (lower-cased, canonical) name.
    pub(super) fn of(name: &str) -> Self {
        if name.starts_with("*.") {
            Self::Wildcard
        } else if name.parse::<std::net::IpAddr>().is_ok() {
            Self::Ip
        } else {
            Self::Dns
        }
    }
}

/// Whether a name of `shape` can be proven with `kind` (`None`: the automatic choice, which is
/// HTTP-01 or TLS-ALPN-01). The reason names what to write instead.
pub(super) fn name_allows(shape: NameShape, kind: Option<ChallengeKind>) -> Result<(), String> {
    match (shape, kind) {
        (NameShape::Wildcard, Some(ChallengeKind::Dns01)) => Ok(()),
        (NameShape::Wildcard, kind) => Err(format!(
            "a wildcard name can only be validated over DNS-01 (RFC 8555 section 7.1.3), but the \
             site uses {}; set `challenge = \"dns-01\"` on the site, or list each name instead",
            kind.map_or(
                "the automatic choice (http-01 or tls-alpn-01)".to_owned(),
                |kind| { format!("\"{kind}\"") }
            )
        )),
        (NameShape::Ip, Some(ChallengeKind::Dns01)) => Err(
            "an IP address cannot be validated over DNS-01 (RFC 8738 section 7); use \
             `challenge = \"http-01\"` or `\"tls-alpn-01\"` for this site"
                .to_owned(),
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_by_their_protocol_names() {
        assert_eq!(parse("http-01"), Ok(ChallengeKind::Http01));
        assert_eq!(parse("tls-alpn-01"), Ok(ChallengeKind::TlsAlpn01));
        assert_eq!(parse("dns-01"), Ok(ChallengeKind::Dns01));
        let unknown = parse("HTTP-01").unwrap_err();
        assert!(unknown.contains("\"tls-alpn-01\""), "{unknown}");
    }

    #[test]
    fn wildcards_need_dns01_and_ips_refuse_it() {
        assert_eq!(NameShape::of("*.a.test"), NameShape::Wildcard);
        assert_eq!(NameShape::of("127.0.0.1"), NameShape::Ip);
        assert_eq!(NameShape::of("::1"), NameShape::Ip);
        assert_eq!(NameShape::of("a.test"), NameShape::Dns);
        assert!(name_allows(NameShape::Wildcard, Some(ChallengeKind::Dns01)).is_ok());
        for kind in [
            None,
            Some(ChallengeKind::Http01),
            Some(ChallengeKind::TlsAlpn01),
        ] {
            let err = name_allows(NameShape::Wildcard, kind).unwrap_err();
            assert!(err.contains("challenge = \"dns-01\""), "{err}");
            assert!(name_allows(NameShape::Ip, kind).is_ok());
            assert!(name_allows(NameShape::Dns, kind).is_ok());
        }
        assert!(name_allows(NameShape::Ip, Some(ChallengeKind::Dns01)).is_err());
    }
}
