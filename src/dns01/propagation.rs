//! The lookups DNS-01 needs and the wait for propagation: CNAMEs on `_acme-challenge`, the zone a
//! name is in (SOA), the zone's authoritative servers (NS, then their addresses), and each of those
//! servers asked directly for the TXT record until it answers every value or the time is up.
//!
//! Why every authoritative server: the CA picks one (Let's Encrypt asks from several places), and a
//! secondary that has not transferred the update yet fails the authorization, which cannot be retried.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{ResolveError, TokioResolver};
use tracing::{debug, info};

use super::DnsError;

/// How long one query may take (each is tried twice).
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the authoritative servers are asked again.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The longest CNAME chain followed from `_acme-challenge.<name>`.
const MAX_CNAME_HOPS: usize = 8;
/// The most authoritative server addresses checked for one zone.
const MAX_SERVERS: usize = 16;

/// A resolver for NS, SOA, CNAME and address lookups, and how messages name it.
#[derive(Clone)]
pub struct Lookups {
    resolver: TokioResolver,
    description: String,
}

/// A resolver that asks only `servers`, without cache or hosts file (the CA sees neither).
fn resolver_for(servers: &[SocketAddr]) -> TokioResolver {
    let mut configs = Vec::with_capacity(servers.len() * 2);
    for addr in servers {
        // TCP is used when a UDP answer is truncated.
        configs.push(NameServerConfig::new(*addr, Protocol::Udp));
        configs.push(NameServerConfig::new(*addr, Protocol::Tcp));
    }
    let mut options = ResolverOpts::default();
    options.timeout = QUERY_TIMEOUT;
    options.attempts = 2;
    options.use_hosts_file = ResolveHosts::Never;
    options.cache_size = 0;
    options.ndots = 0;
    let config = ResolverConfig::from_parts(None, Vec::new(), configs);
    TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
        .with_options(options)
        .build()
}

/// Whether `err` means "no such record" (NOERROR without it, or NXDOMAIN).
fn is_empty_answer(err: &ResolveError) -> bool {
    matches!(
        err.proto().map(|proto| proto.kind()),
        Some(ProtoErrorKind::NoRecordsFound { response_code, .. })
            if matches!(*response_code, ResponseCode::NoError | ResponseCode::NXDomain)
    )
}

/// `name` fully qualified, so no search domain is ever appended.
fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

/// A name from an answer, lower-case without the trailing dot.
fn plain(name: &hickory_resolver::proto::rr::Name) -> String {
    name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

impl Lookups {
    /// Lookups through `resolver`, or the nameservers of `/etc/resolv.conf` when `None`.
    pub fn new(resolver: Option<SocketAddr>) -> Self {
        let (servers, description) = match resolver {
            Some(addr) => (vec![addr], addr.to_string()),
            None => {
                let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
                let mut servers: Vec<SocketAddr> = crate::preflight::parse_resolv_conf(&text)
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, 53))
                    .collect();
                if servers.is_empty() {
                    servers.push(SocketAddr::from(([127, 0, 0, 1], 53)));
                }
                let list: Vec<String> = servers.iter().map(ToString::to_string).collect();
                let description = format!("{} (from /etc/resolv.conf)", list.join(", "));
                (servers, description)
            }
        };
        Self {
            resolver: resolver_for(&servers),
            description,
        }
    }

    /// How messages name the resolver.
    pub fn description(&self) -> &str {
        &self.description
    }

    fn failed(&self, what: String, err: impl std::fmt::Display) -> DnsError {
        DnsError::Lookup {
            what,
            resolver: self.description.clone(),
            reason: err.to_string(),
        }
    }

    /// `name`, or the end of the CNAME chain that starts there.
    pub(super) async fn follow_cnames(&self, name: &str) -> Result<String, DnsError> {
        let mut current = name.trim_end_matches('.').to_ascii_lowercase();
        let mut seen = vec![current.clone()];
        for _ in 0..MAX_CNAME_HOPS {
            let target = match self
                .resolver
                .lookup(fqdn(&current).as_str(), RecordType::CNAME)
                .await
            {
                Ok(found) => found.record_iter().find_map(|record| match record.data() {
                    RData::CNAME(cname) => Some(plain(&cname.0)),
                    _ => None,
                }),
                Err(err) if is_empty_answer(&err) => None,
                Err(err) => return Err(self.failed(format!("the CNAME of {current}"), err)),
            };
            let Some(target) = target else {
                return Ok(current);
            };
            if seen.contains(&target) {
                return Err(self.failed(
                    format!("the CNAME of {current}"),
                    format!("a CNAME loop ({} -> {target})", seen.join(" -> ")),
                ));
            }
            debug!(from = %current, to = %target, "following the CNAME of the challenge name");
            seen.push(target.clone());
            current = target;
        }
        Err(self.failed(
            format!("the CNAME of {name}"),
            format!("more than {MAX_CNAME_HOPS} CNAMEs in a row"),
        ))
    }

    /// The zone `name` is in: the owner of the SOA record that answers for it (in the answer for the
    /// zone apex, in the authority section below it), walking up one label at a time otherwise.
    pub(super) async fn zone_of(&self, name: &str) -> Result<String, DnsError> {
        let mut candidate = name.trim_end_matches('.').to_ascii_lowercase();
        loop {
            match self
                .resolver
                .lookup(fqdn(&candidate).as_str(), RecordType::SOA)
                .await
            {
                Ok(found) => {
                    if let Some(owner) = found
                        .record_iter()
                        .find(|record| record.record_type() == RecordType::SOA)
                        .map(|record| plain(record.name()))
                    {
                        return Ok(owner);
                    }
                }
                Err(err) => {
                    let soa = match err.proto().map(|proto| proto.kind()) {
                        Some(ProtoErrorKind::NoRecordsFound { soa: Some(soa), .. }) => {
                            Some(plain(soa.name()))
                        }
                        _ => None,
                    };
                    if let Some(zone) = soa.filter(|zone| !zone.is_empty()) {
                        return Ok(zone);
                    }
                    if !is_empty_answer(&err) {
                        return Err(self.failed(format!("the zone (SOA) of {name}"), err));
                    }
                }
            }
            match candidate.split_once('.') {
                Some((_, parent)) if !parent.is_empty() => candidate = parent.to_owned(),
                _ => {
                    return Err(self.failed(
                        format!("the zone (SOA) of {name}"),
                        "no SOA record at that name or any parent; set `zone` in the dns table",
                    ))
                }
            }
        }
    }

    /// The addresses of `zone`'s authoritative servers (its NS records), each on `port`.
    pub(super) async fn authoritative_servers(
        &self,
        zone: &str,
        port: u16,
    ) -> Result<Vec<(String, SocketAddr)>, DnsError> {
        let what = || format!("the NS records of {zone}");
        let found = self
            .resolver
            .lookup(fqdn(zone).as_str(), RecordType::NS)
            .await
            .map_err(|err| self.failed(what(), err))?;
        let mut hosts: Vec<String> = found
            .record_iter()
            .filter_map(|record| match record.data() {
                RData::NS(ns) => Some(plain(&ns.0)),
                _ => None,
            })
            .collect();
        hosts.sort();
        hosts.dedup();
        if hosts.is_empty() {
            return Err(self.failed(what(), "the answer has no NS records"));
        }
        let mut servers = Vec::new();
        for host in hosts {
            let ips = self
                .resolver
                .lookup_ip(fqdn(&host).as_str())
                .await
                .map_err(|err| self.failed(format!("the address of {host} (NS of {zone})"), err))?;
            let mut ips: Vec<IpAddr> = ips.iter().collect();
            ips.sort();
            ips.dedup();
            for ip in ips {
                let addr = SocketAddr::new(ip, port);
                if servers.len() < MAX_SERVERS && !servers.iter().any(|(_, a)| *a == addr) {
                    servers.push((host.clone(), addr));
                }
            }
        }
        Ok(servers)
    }
}

/// What one authoritative server answers for the TXT record now.
async fn txt_values(server: &TokioResolver, name: &str) -> Result<Vec<String>, String> {
    match server.txt_lookup(fqdn(name).as_str()).await {
        Ok(found) => Ok(found
            .iter()
            .map(|txt| {
                txt.txt_data()
                    .iter()
                    .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
                    .collect::<String>()
            })
            .collect()),
        Err(err) if is_empty_answer(&err) => Ok(Vec::new()),
        Err(err) => Err(err.to_string()),
    }
}

/// Polls each of `servers` for `name` until every one answers all of `values`, or `timeout` passes.
pub(super) async fn wait(
    name: &str,
    values: &[&str],
    zone: &str,
    servers: &[(String, SocketAddr)],
    timeout: Duration,
) -> Result<(), DnsError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let clients: Vec<(String, SocketAddr, TokioResolver)> = servers
        .iter()
        .map(|(host, addr)| (host.clone(), *addr, resolver_for(&[*addr])))
        .collect();
    let mut pending: Vec<usize> = (0..clients.len()).collect();
    let mut last: Vec<String> = vec![String::new(); clients.len()];
    loop {
        let mut still = Vec::new();
        for &i in &pending {
            let (_, _, client) = &clients[i];
            // Bounded by what is left, so a silent server cannot stretch the wait past the timeout.
            let left = deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .clamp(Duration::from_millis(100), QUERY_TIMEOUT * 2);
            let answer = tokio::time::timeout(left, txt_values(client, name))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {}ms", left.as_millis())));
            match answer {
                Ok(found) if values.iter().all(|v| found.iter().any(|f| f == v)) => {}
                Ok(found) if found.is_empty() => {
                    last[i] = "no TXT record there yet".to_owned();
                    still.push(i);
                }
                Ok(found) => {
                    last[i] = format!("answers {found:?}");
                    still.push(i);
                }
                Err(reason) => {
                    last[i] = reason;
                    still.push(i);
                }
            }
        }
        pending = still;
        if pending.is_empty() {
            info!(
                record = name,
                zone,
                servers = clients.len(),
                "TXT record visible on every authoritative server"
            );
            return Ok(());
        }
        if tokio::time::Instant::now() + POLL_INTERVAL > deadline {
            let missing: Vec<String> = pending
                .iter()
                .map(|&i| {
                    let (host, addr, _) = &clients[i];
                    format!("{host} ({addr}): {}", last[i])
                })
                .collect();
            return Err(DnsError::NotPropagated {
                record: name.to_owned(),
                zone: zone.to_owned(),
                secs: timeout.as_secs(),
                missing: missing.join("; "),
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_server_that_never_answers_the_value_is_named_in_the_error() {
        // A bound UDP socket that never replies: the server is there but silent.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let err = wait(
            "_acme-challenge.example.test",
            &["value"],
            "example.test",
            &[("ns2.example.test".to_owned(), addr)],
            Duration::from_millis(1500),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains(&format!("ns2.example.test ({addr})")), "{err}");
        assert!(err.contains("_acme-challenge.example.test"), "{err}");
        assert!(err.contains("within 1s"), "{err}");
    }
}
