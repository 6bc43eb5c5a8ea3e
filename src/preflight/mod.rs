//! Preflight: before the first order for a name, check from here that the CA's HTTP-01 validation can
//! succeed, so that a doomed order is never spent (Let's Encrypt counts failed validations).
//!
//! For every name of a site, concurrently: its A and AAAA records are looked up (through `[preflight]
//! resolver`, or the nameservers in `/etc/resolv.conf`; never `/etc/hosts`, which the CA cannot see),
//! then every address is asked for `http://<name>/.well-known/acme-challenge/<random token>` on the
//! port of the first `[http].listen` address, the way the CA will ask. The random token and key
//! authorization are published in this process's [`ChallengeTokens`] for the duration of the check, so
//! only a request that reaches this very process gets the expected answer back. Everything else — no
//! record, a failed lookup, an address nothing answers on, another server answering — is a
//! [`NameProblem`] whose message says what is wrong and what to do about it. Every address counts: an
//! AAAA record that fails is a problem even when the A record works, because Let's Encrypt tries IPv6
//! first.
//!
//! The check runs from this machine, not from the CA's: behind a NAT that cannot reach its own public
//! address ("hairpinning") it reports a problem the CA would not see. `[preflight] enabled = false`
//! turns the automatic check off for such setups.
//!
//! `dns.rs` looks names up, `probe.rs` sends the HTTP self-test, `problem.rs` words the findings.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::proto::op::ResponseCode;
use rand::distr::{Alphanumeric, SampleString};
use tokio::task::JoinSet;
use tracing::{debug, warn, Instrument};

use crate::challenge::{ChallengeTokens, CHALLENGE_PREFIX};
use crate::config::{Config, SiteConfig};

mod dns;
mod probe;
mod problem;
#[cfg(test)]
mod tests;

pub use dns::parse_resolv_conf;
use dns::{Dns, Lookup};
use probe::{Probe, ProbeFailure};
pub use problem::{DnsFailure, NameProblem, PreflightError, RecordType};

/// How long one DNS query may take before it is sent again (twice in all).
const DNS_TIMEOUT: Duration = Duration::from_secs(3);
/// How long connecting to one address may take, and then getting its whole answer.
const ADDRESS_TIMEOUT: Duration = Duration::from_secs(5);
/// The bound on all checks of one name (lookups, then every address at once).
const NAME_TIMEOUT: Duration = Duration::from_secs(20);

/// Checks that a site's names resolve and that HTTP-01 requests for them reach this process.
///
/// Cheap to clone. Build it from the configuration with [`Preflight::new`], then call
/// [`Preflight::check_site`] while a [`crate::challenge::ChallengeResponder`] answers from the same
/// [`ChallengeTokens`] on `[http].listen`, and order only when it returns `Ok`.
#[derive(Debug, Clone)]
pub struct Preflight {
    /// `[preflight] resolver`; `None` for the nameservers in `/etc/resolv.conf`.
    resolver: Option<SocketAddr>,
    /// The port the CA validates on: that of the first `[http].listen` address.
    http_port: u16,
    /// `[http].listen`, to tell "this machine's address, but certd does not listen there".
    listen: Vec<SocketAddr>,
    dns_timeout: Duration,
    address_timeout: Duration,
    name_timeout: Duration,
}

impl Preflight {
    /// A preflight for `config`: its `[preflight] resolver` and the port of its first `[http].listen`
    /// address (80 if none). It does not look at `[preflight] enabled`: callers decide whether to run
    /// it (the renewal path only when it is on; `certd check --preflight` always).
    pub fn new(config: &Config) -> Self {
        Self {
            resolver: config.operations.preflight_resolver,
            http_port: config.http.listen.first().map_or(80, SocketAddr::port),
            listen: config.http.listen.clone(),
            dns_timeout: DNS_TIMEOUT,
            address_timeout: ADDRESS_TIMEOUT,
            name_timeout: NAME_TIMEOUT,
        }
    }

    /// The port addresses are checked on.
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// Checks every name of `site`: resolves A and AAAA, and GETs
    /// `http://<address>:<port>/.well-known/acme-challenge/<random token>` with `Host: <name>` from
    /// every address, expecting the random key authorization it publishes in `tokens` for the time of
    /// the check (withdrawn before it returns, also when the future is dropped).
    ///
    /// Precondition: a listener answering from `tokens` runs on `[http].listen` (the daemon's, or the
    /// one `certd issue` starts for its orders). Names are checked concurrently and each within 20
    /// seconds, so the whole call takes at most about 20 seconds. Returns every problem found, in the
    /// order of the site's names; on `Ok`, go on to order.
    pub async fn check_site(
        &self,
        site: &SiteConfig,
        tokens: &ChallengeTokens,
    ) -> Result<(), PreflightError> {
        self.check(site.name(), &site.names, Some(tokens)).await
    }

    /// [`Preflight::check_site`] for only `names` of the site named `site` (for example the names a
    /// changed site added, when the others are already in its certificate).
    pub async fn check_names(
        &self,
        site: &str,
        names: &[String],
        tokens: &ChallengeTokens,
    ) -> Result<(), PreflightError> {
        self.check(site, names, Some(tokens)).await
    }

    /// Only the DNS half of [`Preflight::check_site`]: every name has an A or AAAA record and every
    /// lookup succeeds. For when no listener can be started (`certd run` holds the port).
    pub async fn check_site_dns(&self, site: &SiteConfig) -> Result<(), PreflightError> {
        self.check(site.name(), &site.names, None).await
    }

    /// The DNS half for only `names` of the site named `site`: for a site validated over
    /// TLS-ALPN-01, where port 80 does not matter.
    pub async fn check_names_dns(
        &self,
        site: &str,
        names: &[String],
    ) -> Result<(), PreflightError> {
        self.check(site, names, None).await
    }

    async fn check(
        &self,
        site: &str,
        names: &[String],
        tokens: Option<&ChallengeTokens>,
    ) -> Result<(), PreflightError> {
        let dns = Dns::new(self.resolver, self.dns_timeout);
        // Owned by this call: dropping it (the caller gave up) aborts every check still running.
        let mut tasks = JoinSet::new();
        for (index, name) in names.iter().enumerate() {
            let (check, dns, name, tokens) =
                (self.clone(), dns.clone(), name.clone(), tokens.cloned());
            let span = tracing::debug_span!("preflight", name = %name);
            tasks.spawn(
                async move {
                    let checked = check.check_name(&dns, &name, tokens.as_ref());
                    let problems = tokio::time::timeout(check.name_timeout, checked)
                        .await
                        .unwrap_or_else(|_| {
                            vec![NameProblem::TimedOut {
                                name: name.clone(),
                                after: check.name_timeout,
                            }]
                        });
                    (index, problems)
                }
                .instrument(span),
            );
        }
        let problems: Vec<NameProblem> = join_in_order(tasks).await.into_iter().flatten().collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(PreflightError {
                site: site.to_owned(),
                problems,
            })
        }
    }

    /// Every problem with one name: first its lookups, then each of its addresses.
    async fn check_name(
        &self,
        dns: &Dns,
        name: &str,
        tokens: Option<&ChallengeTokens>,
    ) -> Vec<NameProblem> {
        let (v4, v6) = match name.parse::<IpAddr>() {
            // An IP name (RFC 8738) is its own address: the CA connects to it without a lookup.
            Ok(ip) => (
                Lookup::Found(vec![ip]),
                Lookup::Empty(ResponseCode::NoError),
            ),
            Err(_) => dns.addresses(name).await,
        };
        debug!(?v4, ?v6, "looked up");
        let mut problems = Vec::new();
        if let (Lookup::Empty(a), Lookup::Empty(aaaa)) = (&v4, &v6) {
            problems.push(NameProblem::NoAddress {
                name: name.to_owned(),
                resolver: dns.description.clone(),
                nxdomain: *a == ResponseCode::NXDomain || *aaaa == ResponseCode::NXDomain,
            });
        }
        for (record, lookup) in [(RecordType::A, &v4), (RecordType::Aaaa, &v6)] {
            if let Lookup::Failed(failure) = lookup {
                problems.push(NameProblem::Resolve {
                    name: name.to_owned(),
                    record,
                    resolver: dns.description.clone(),
                    failure: failure.clone(),
                });
            }
        }
        let Some(tokens) = tokens else {
            return problems;
        };
        let addresses: BTreeSet<IpAddr> = [v4, v6]
            .into_iter()
            .flat_map(|lookup| match lookup {
                Lookup::Found(found) => found,
                Lookup::Empty(_) | Lookup::Failed(_) => Vec::new(),
            })
            .collect();
        if addresses.is_empty() {
            return problems;
        }

        // A fresh token per name, so concurrent checks never answer for each other; withdrawn when
        // `_published` drops, even if this check is cancelled.
        let token = format!(
            "certd-preflight-{}",
            Alphanumeric.sample_string(&mut rand::rng(), 24)
        );
        let expected = format!(
            "{token}.{}",
            Alphanumeric.sample_string(&mut rand::rng(), 32)
        );
        // Through the fleet's store when there is one: the name may point at another node.
        let _published = match tokens
            .publish_to_fleet(token.clone(), expected.clone())
            .await
        {
            Ok(published) => published,
            Err(err) => {
                tracing::warn!(%err, "cannot publish the self-test answer to the fleet; only this node answers it");
                tokens.publish(token.clone(), expected.clone())
            }
        };
        let probe = Arc::new(Probe {
            name: name.to_owned(),
            path: format!("{CHALLENGE_PREFIX}{token}"),
            expected,
            timeout: self.address_timeout,
        });
        let mut tasks = JoinSet::new();
        for (index, ip) in addresses.into_iter().enumerate() {
            let addr = SocketAddr::new(ip, self.http_port);
            let (probe, check) = (probe.clone(), self.clone());
            tasks.spawn(async move {
                let failed = probe.run(addr).await.err();
                let problem = failed.map(|failure| check.problem(&probe.name, addr, failure));
                (index, problem)
            });
        }
        problems.extend(join_in_order(tasks).await.into_iter().flatten());
        problems
    }

    fn problem(&self, name: &str, addr: SocketAddr, failure: ProbeFailure) -> NameProblem {
        let name = name.to_owned();
        match failure {
            ProbeFailure::Unreachable(reason) => NameProblem::Unreachable {
                name,
                addr,
                reason,
                listen_hint: self.listen_hint(addr),
            },
            ProbeFailure::NoHttp(reason) => NameProblem::NoHttpAnswer { name, addr, reason },
            ProbeFailure::Foreign {
                status,
                server,
                location,
                body_snippet,
            } => NameProblem::ForeignAnswer {
                name,
                addr,
                status,
                server,
                location,
                body_snippet,
            },
        }
    }

    /// For an address of this machine that no `[http].listen` address covers, the wildcard listen
    /// address to add: then a refused connection is certd's own configuration, not DNS or a firewall.
    fn listen_hint(&self, addr: SocketAddr) -> Option<SocketAddr> {
        if listen_covers(&self.listen, addr) {
            return None;
        }
        // Binding succeeds only for addresses assigned to one of this machine's interfaces.
        UdpSocket::bind(SocketAddr::new(addr.ip(), 0)).ok()?;
        let wildcard: IpAddr = if addr.is_ipv4() {
            [0u8; 4].into()
        } else {
            [0u16; 8].into()
        };
        Some(SocketAddr::new(wildcard, addr.port()))
    }
}

/// Whether a listener on one of `listen` accepts connections to `addr` (the same address, or the
/// wildcard of its family; certd binds IPv6 wildcards IPv6-only).
fn listen_covers(listen: &[SocketAddr], addr: SocketAddr) -> bool {
    listen.iter().any(|listen| {
        listen.port() == addr.port()
            && (listen.ip() == addr.ip()
                || (listen.ip().is_unspecified() && listen.is_ipv4() == addr.is_ipv4()))
    })
}

/// Waits for every task of `tasks` (each returning its index and a result) and returns the results
/// in index order. A task that panicked is logged and left out.
async fn join_in_order<T: 'static>(mut tasks: JoinSet<(usize, T)>) -> Vec<T> {
    let mut done = Vec::with_capacity(tasks.len());
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(result) => done.push(result),
            Err(err) => warn!(%err, "a preflight task ended abnormally"),
        }
    }
    done.sort_by_key(|(index, _)| *index);
    done.into_iter().map(|(_, result)| result).collect()
}
