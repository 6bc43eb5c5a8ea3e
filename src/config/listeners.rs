//! Validation of the two listener tables, `[http]` (the :80 listener: HTTP-01 answers and redirects)
//! and `[https]` (the TLS listener and who it trusts), and the `listen` lists both have.

use std::net::SocketAddr;

use toml::Spanned;

use super::problems::Problems;
use super::raw::{RawHttp, RawHttps};
use super::{HttpConfig, HttpsConfig, SiteConfig};
use crate::trusted_proxies::{self, TrustedProxies};

/// `0.0.0.0:80`.
const DEFAULT_HTTP_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::UNSPECIFIED,
    80,
));

/// `0.0.0.0:443`.
const DEFAULT_HTTPS_LISTEN: std::net::SocketAddr = std::net::SocketAddr::V4(
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 443),
);

pub(super) fn https(raw: Option<Spanned<RawHttps>>, problems: &mut Problems<'_>) -> HttpsConfig {
    let raw = raw.map(Spanned::into_inner);
    let (listen, trusted, proxy_protocol) = match raw {
        Some(raw) => (raw.listen, raw.trusted_proxies, raw.proxy_protocol),
        None => (None, None, None),
    };
    let trusted_proxies = trusted_proxies(trusted, problems);
    HttpsConfig {
        listen: match listen {
            Some(listen) => listen_addresses("https.listen", listen, problems),
            None => vec![DEFAULT_HTTPS_LISTEN],
        },
        default_site: None,
        proxy_protocol: proxy_protocol_flag("https", proxy_protocol, &trusted_proxies, problems),
        trusted_proxies,
    }
}

/// `https.default_site`: the first name of one of `sites` (checked against the validated sites, so
/// it is called once they are).
pub(super) fn default_site(
    raw: Option<Spanned<String>>,
    sites: &[SiteConfig],
    problems: &mut Problems<'_>,
) -> Option<String> {
    let raw = raw?;
    let name = raw
        .get_ref()
        .trim()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if sites.iter().any(|site| site.name() == name) {
        return Some(name);
    }
    let reason = match sites.iter().find(|site| site.names.contains(&name)) {
        Some(site) => format!(
            "`{}` is a name of the site `{}`: write the site's first name, `{}`",
            raw.get_ref(),
            site.name(),
            site.name()
        ),
        None => format!(
            "`{}` is not the first name of any [[site]]; the sites are: {}",
            raw.get_ref(),
            sites
                .iter()
                .map(|site| format!("`{}`", site.name()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    problems.add("https.default_site", Some(raw.span()), reason);
    None
}

/// `https.trusted_proxies`: CIDR ranges or single addresses.
fn trusted_proxies(
    raw: Option<Spanned<Vec<Spanned<String>>>>,
    problems: &mut Problems<'_>,
) -> TrustedProxies {
    let Some(raw) = raw else {
        return TrustedProxies::default();
    };
    let mut ranges = Vec::new();
    for (i, entry) in raw.into_inner().into_iter().enumerate() {
        match trusted_proxies::parse_range(entry.get_ref()) {
            Ok(range) => ranges.push(range),
            Err(reason) => problems.add(
                format!("https.trusted_proxies[{i}]"),
                Some(entry.span()),
                reason,
            ),
        }
    }
    TrustedProxies::new(ranges)
}

/// `<table>.proxy_protocol`, which needs someone to accept PROXY headers from.
pub(super) fn proxy_protocol_flag(
    table: &str,
    raw: Option<Spanned<bool>>,
    trusted: &TrustedProxies,
    problems: &mut Problems<'_>,
) -> bool {
    let Some(raw) = raw else {
        return false;
    };
    let enabled = *raw.get_ref();
    if enabled && trusted.is_empty() {
        problems.add(
            format!("{table}.proxy_protocol"),
            Some(raw.span()),
            "needs `[https] trusted_proxies`: PROXY headers are only accepted from the load \
             balancers listed there (e.g. trusted_proxies = [\"10.0.0.0/8\"])",
        );
    }
    enabled
}

pub(super) fn http(
    raw: Option<Spanned<RawHttp>>,
    trusted: &crate::trusted_proxies::TrustedProxies,
    problems: &mut Problems<'_>,
) -> HttpConfig {
    let (listen, redirect, proxy_protocol) = match raw {
        Some(table) => {
            let table = table.into_inner();
            (table.listen, table.redirect, table.proxy_protocol)
        }
        None => (None, None, None),
    };
    HttpConfig {
        listen: match listen {
            Some(listen) => listen_addresses("http.listen", listen, problems),
            None => default_http_listen(),
        },
        redirect: redirect.is_none_or(|redirect| *redirect.get_ref()),
        proxy_protocol: proxy_protocol_flag("http", proxy_protocol, trusted, problems),
    }
}

fn default_http_listen() -> Vec<SocketAddr> {
    vec![DEFAULT_HTTP_LISTEN]
}

/// A `listen = [...]` list under `key` (`http.listen`, `https.listen`).
pub(super) fn listen_addresses(
    key: &str,
    raw: Spanned<Vec<Spanned<String>>>,
    problems: &mut Problems<'_>,
) -> Vec<SocketAddr> {
    if raw.get_ref().is_empty() {
        problems.add(
            key,
            Some(raw.span()),
            "is empty: list at least one address, such as \"0.0.0.0:80\" or \"[::]:80\"",
        );
    }
    let mut addresses: Vec<SocketAddr> = Vec::new();
    for (i, entry) in raw.into_inner().into_iter().enumerate() {
        let entry_key = format!("{key}[{i}]");
        match entry.get_ref().parse::<SocketAddr>() {
            Ok(address) => match addresses.iter().position(|seen| *seen == address) {
                Some(first) => problems.add(
                    entry_key,
                    Some(entry.span()),
                    format!("{address} is listed twice (also {key}[{first}])"),
                ),
                None => addresses.push(address),
            },
            Err(_) => problems.add(
                entry_key,
                Some(entry.span()),
                format!(
                    "`{}` is not an IP address with a port, such as \"0.0.0.0:80\" or \"[::]:80\"",
                    entry.get_ref()
                ),
            ),
        }
    }
    addresses
}
