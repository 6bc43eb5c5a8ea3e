//! The DNS half of preflight: a name's A and AAAA records, looked up through `[preflight] resolver` or
//! the nameservers in `/etc/resolv.conf` (never `/etc/hosts`, which the CA cannot see), with each
//! outcome classified as found, empty (NOERROR without records, or NXDOMAIN) or failed.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{ResolveError, TokioResolver};
use tracing::debug;

use super::DnsFailure;

/// The file the system's nameservers are read from when `[preflight] resolver` is not set.
pub(super) const RESOLV_CONF: &str = "/etc/resolv.conf";
/// Each query is sent this many times before the lookup fails.
const ATTEMPTS: u32 = 2;

/// A resolver for one preflight run, and how messages name it.
#[derive(Clone)]
pub(super) struct Dns {
    resolver: TokioResolver,
    /// `127.0.0.1:8053`, or `127.0.0.53:53 (from /etc/resolv.conf)`.
    pub(super) description: String,
    timeout: Duration,
}

/// What one lookup found.
#[derive(Debug)]
pub(super) enum Lookup {
    /// These addresses (never empty).
    Found(Vec<IpAddr>),
    /// No record of this type: NOERROR without any, or NXDOMAIN.
    Empty(ResponseCode),
    /// No usable answer.
    Failed(DnsFailure),
}

impl Dns {
    /// A resolver asking `configured`, or the nameservers of `/etc/resolv.conf` when `None` (read
    /// now, so a changed file is seen by the next run). It keeps no cache: every run asks afresh.
    pub(super) fn new(configured: Option<SocketAddr>, timeout: Duration) -> Self {
        let (servers, description) = match configured {
            Some(addr) => (vec![addr], addr.to_string()),
            None => system_nameservers(),
        };
        let mut configs = Vec::with_capacity(servers.len() * 2);
        for addr in servers {
            // TCP is used when a UDP answer is truncated.
            configs.push(NameServerConfig::new(addr, Protocol::Udp));
            configs.push(NameServerConfig::new(addr, Protocol::Tcp));
        }
        let mut options = ResolverOpts::default();
        options.timeout = timeout;
        options.attempts = ATTEMPTS as usize;
        options.use_hosts_file = ResolveHosts::Never;
        options.cache_size = 0;
        let config = ResolverConfig::from_parts(None, Vec::new(), configs);
        let resolver =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
                .with_options(options)
                .build();
        Self {
            resolver,
            description,
            timeout,
        }
    }

    /// Looks up `name`'s A and AAAA records at once.
    pub(super) async fn addresses(&self, name: &str) -> (Lookup, Lookup) {
        // Fully qualified, so no search domain is ever appended.
        let fqdn = format!("{name}.");
        let (v4, v6) = tokio::join!(
            self.resolver.ipv4_lookup(fqdn.as_str()),
            self.resolver.ipv6_lookup(fqdn.as_str()),
        );
        let v4 = v4.map(|found| found.iter().map(|a| IpAddr::V4(a.0)).collect());
        let v6 = v6.map(|found| found.iter().map(|aaaa| IpAddr::V6(aaaa.0)).collect());
        (self.classify(v4), self.classify(v6))
    }

    fn classify(&self, result: Result<Vec<IpAddr>, ResolveError>) -> Lookup {
        let err = match result {
            Ok(found) if !found.is_empty() => return Lookup::Found(found),
            Ok(_) => return Lookup::Empty(ResponseCode::NoError),
            Err(err) => err,
        };
        match err.proto().map(|proto| proto.kind()) {
            Some(ProtoErrorKind::NoRecordsFound { response_code, .. }) => match *response_code {
                code @ (ResponseCode::NoError | ResponseCode::NXDomain) => Lookup::Empty(code),
                code => Lookup::Failed(DnsFailure::Answered(rcode_name(code))),
            },
            Some(ProtoErrorKind::Timeout) => {
                Lookup::Failed(DnsFailure::TimedOut(self.timeout * ATTEMPTS))
            }
            _ => {
                debug!(resolver = %self.description, %err, "lookup failed");
                Lookup::Failed(DnsFailure::Other(err.to_string()))
            }
        }
    }
}

/// The nameservers of `/etc/resolv.conf` on port 53, and how messages name them.
fn system_nameservers() -> (Vec<SocketAddr>, String) {
    let text = std::fs::read_to_string(RESOLV_CONF).unwrap_or_default();
    let servers: Vec<SocketAddr> = parse_resolv_conf(&text)
        .into_iter()
        .map(|ip| SocketAddr::new(ip, 53))
        .collect();
    if servers.is_empty() {
        // resolv.conf(5): with no nameserver line, the local machine's server is asked.
        let local = SocketAddr::from(([127, 0, 0, 1], 53));
        let description = format!("{local} (the default: {RESOLV_CONF} names no nameserver)");
        return (vec![local], description);
    }
    let list: Vec<String> = servers.iter().map(ToString::to_string).collect();
    let description = format!("{} (from {RESOLV_CONF})", list.join(", "));
    (servers, description)
}

/// The nameserver addresses of a `resolv.conf` text, in order (ones with a zone index are skipped).
pub fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next()? != "nameserver" {
                return None;
            }
            words.next()?.parse().ok()
        })
        .collect()
}

/// A response code as DNS tools print it (`NXDOMAIN`, `SERVFAIL`).
fn rcode_name(code: ResponseCode) -> String {
    match code {
        ResponseCode::NoError => "NOERROR".to_owned(),
        ResponseCode::FormErr => "FORMERR".to_owned(),
        ResponseCode::ServFail => "SERVFAIL".to_owned(),
        ResponseCode::NXDomain => "NXDOMAIN".to_owned(),
        ResponseCode::NotImp => "NOTIMP".to_owned(),
        ResponseCode::Refused => "REFUSED".to_owned(),
        other => format!("response code {}", u16::from(other)),
    }
}
