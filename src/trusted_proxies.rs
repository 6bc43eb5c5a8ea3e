//! `[https] trusted_proxies`: the addresses whose word certd takes about who the client is.
//!
//! A request whose connection comes from one of these (a load balancer, a CDN, another proxy in
//! front of certd) keeps the `X-Forwarded-*` chain it brings, and only such a connection may speak
//! the PROXY protocol. From anyone else, what a client says about its own address is replaced by
//! what certd saw. The set is a list of CIDR ranges (`ipnet`), checked with a linear scan: it holds a
//! handful of entries in practice.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

/// A set of CIDR ranges; empty (trusting nobody) by default. Cheap to clone.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    ranges: Arc<[IpNet]>,
}

impl TrustedProxies {
    /// The set of `ranges`.
    pub fn new(ranges: Vec<IpNet>) -> Self {
        Self {
            ranges: ranges.into(),
        }
    }

    /// Whether `ip` is in one of the ranges. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, what a
    /// dual-stack socket reports for an IPv4 peer) counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.ranges.iter().any(|range| range.contains(&ip))
    }

    /// Whether no range is listed.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The ranges, as configured (host bits cleared).
    pub fn ranges(&self) -> &[IpNet] {
        &self.ranges
    }
}

impl fmt::Debug for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.ranges.iter()).finish()
    }
}

/// One `trusted_proxies` entry: a CIDR range (`"10.0.0.0/8"`, `"fd00::/8"`) or a single address
/// (`"192.0.2.1"` as `/32`, `"::1"` as `/128`). Host bits below the prefix are cleared, as nginx's
/// `set_real_ip_from` and Caddy do (`10.1.2.3/8` is `10.0.0.0/8`).
pub fn parse_range(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(ip.to_canonical()));
    }
    match text.parse::<IpNet>() {
        Ok(range) => Ok(range.trunc()),
        Err(_) => Err(format!(
            "`{text}` is not an IP address or a CIDR range, such as \"10.0.0.0/8\", \
             \"192.0.2.1\" or \"fd00::/8\""
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_as_ranges_or_single_addresses() {
        let cases = [
            ("10.0.0.0/8", Some("10.0.0.0/8")),
            ("10.1.2.3/8", Some("10.0.0.0/8")),
            ("192.0.2.1", Some("192.0.2.1/32")),
            (" 127.0.0.1 ", Some("127.0.0.1/32")),
            ("::1", Some("::1/128")),
            ("fd00::/8", Some("fd00::/8")),
            ("::ffff:10.0.0.1", Some("10.0.0.1/32")),
            ("10.0.0.0/33", None),
            ("example.org", None),
            ("", None),
            ("10.0.0.0/", None),
        ];
        for (text, expected) in cases {
            let parsed = parse_range(text).map(|range| range.to_string()).ok();
            assert_eq!(parsed.as_deref(), expected, "{text:?}");
        }
    }

    #[test]
    fn membership() {
        let trusted = TrustedProxies::new(vec![
            parse_range("10.0.0.0/8").unwrap(),
            parse_range("::1").unwrap(),
        ]);
        let cases = [
            ("10.9.8.7", true),
            ("11.0.0.1", false),
            ("::1", true),
            ("::2", false),
            ("::ffff:10.0.0.1", true),
        ];
        for (ip, expected) in cases {
            assert_eq!(trusted.contains(ip.parse().unwrap()), expected, "{ip}");
        }
        assert!(!TrustedProxies::default().contains("127.0.0.1".parse().unwrap()));
    }
}
