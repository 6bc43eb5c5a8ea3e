//! DNS-01 (RFC 8555 §8.4): publishing `_acme-challenge` TXT records, waiting until every
//! authoritative server of the zone answers them, and removing them again.
//!
//! [`Dns01`] is built from a site's [`DnsConfig`] and offers [`Dns01::record_name`] (the TXT name for
//! an identifier, a CNAME on `_acme-challenge.<name>` followed), [`Dns01::publish`] /
//! [`Dns01::remove`] (by the configured method: `rfc2136.rs` sends a TSIG-signed dynamic update to the
//! primary, `exec_hook.rs` runs the operator's program) and [`Dns01::wait_until_visible`]
//! (`propagation.rs`: NS lookup of the zone, then each authoritative server asked directly). The ACME
//! side (which authorizations, when to tell the CA) is in `acme::dns01`.
//!
//! Every lookup goes through the configured resolver (`[acme.dns] resolver`, else `[preflight]
//! resolver`, else the system's), so a test or split-horizon setup sees what it configured; every
//! network exchange has a deadline, and the hook a timeout.

mod exec_hook;
mod propagation;
mod rfc2136;

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::{DnsConfig, DnsMethod};

pub use propagation::Lookups;

/// The label DNS-01 records live under (RFC 8555 §8.4).
pub const CHALLENGE_LABEL: &str = "_acme-challenge";

/// One TXT record certd publishes: the (CNAME-followed) name, lower-case without a trailing dot, and
/// the base64url digest of the key authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxtRecord {
    /// `_acme-challenge.example.org`, or the target of its CNAME.
    pub name: String,
    /// The value the CA expects.
    pub value: String,
}

/// What can go wrong publishing, checking or removing a DNS-01 record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// The TSIG secret file cannot be used.
    #[error("cannot use the TSIG secret: {reason}")]
    Secret {
        /// Why (names the file).
        reason: String,
    },
    /// A record or zone name is not a DNS name hickory can encode.
    #[error("{name:?} is not a usable DNS name: {reason}")]
    BadName {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The record would be outside the configured zone.
    #[error(
        "the record {record} (where the challenge name or its CNAME leads) is not in the zone \
         {zone} configured in `dns.zone`; fix `zone`, or leave it out to find the zone with an SOA \
         lookup"
    )]
    OutsideZone {
        /// The record name.
        record: String,
        /// The configured zone.
        zone: String,
    },
    /// The primary server did not answer the update in time or the connection failed.
    #[error("the DNS server {server} cannot take the update of {record}: {reason}")]
    Unreachable {
        /// The primary.
        server: SocketAddr,
        /// The record name.
        record: String,
        /// What failed.
        reason: String,
    },
    /// The primary answered the update with an error code.
    #[error("the DNS server {server} refused the update of {record} with {rcode}: {hint}")]
    UpdateRefused {
        /// The primary.
        server: SocketAddr,
        /// The record name.
        record: String,
        /// `NOTAUTH`, `REFUSED`, …
        rcode: String,
        /// What to check.
        hint: String,
    },
    /// The primary's answer could not be read or is not signed with our key.
    #[error("the DNS server {server} answered the update of {record} unusably: {reason}")]
    BadResponse {
        /// The primary.
        server: SocketAddr,
        /// The record name.
        record: String,
        /// Why.
        reason: String,
    },
    /// The DNS hook failed.
    #[error("the DNS hook {program} {action} {record} failed: {reason}")]
    Hook {
        /// The program.
        program: PathBuf,
        /// `add` or `remove`.
        action: &'static str,
        /// The record name.
        record: String,
        /// Exit status and stderr, a timeout, or why it could not start.
        reason: String,
    },
    /// A lookup (CNAME, SOA, NS or a server's address) failed.
    #[error("looking up {what} through {resolver} failed: {reason}")]
    Lookup {
        /// What was looked up (`the NS records of example.org`).
        what: String,
        /// The resolver asked.
        resolver: String,
        /// Why.
        reason: String,
    },
    /// Not every authoritative server answered the value in time.
    #[error(
        "the TXT record {record} did not reach every authoritative server of {zone} within {secs}s: \
         {missing}"
    )]
    NotPropagated {
        /// The record name.
        record: String,
        /// The zone.
        zone: String,
        /// The `propagation_timeout`, in seconds.
        secs: u64,
        /// Each server that does not answer it, and what it answered.
        missing: String,
    },
}

/// A site's DNS-01 method with the lookups it needs.
#[derive(Clone)]
pub struct Dns01 {
    config: DnsConfig,
    lookups: Lookups,
}

impl std::fmt::Debug for Dns01 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns01")
            .field("method", &self.config.method)
            .field("resolver", &self.lookups.description())
            .finish()
    }
}

impl Dns01 {
    /// The method of `config`, its lookups through `config.resolver` or else `preflight_resolver`
    /// (else the nameservers of `/etc/resolv.conf`).
    pub fn new(config: &DnsConfig, preflight_resolver: Option<SocketAddr>) -> Self {
        Self {
            config: config.clone(),
            lookups: Lookups::new(config.resolver.or(preflight_resolver)),
        }
    }

    /// The TXT record name for `domain` (an identifier without `*.`): `_acme-challenge.<domain>`, or
    /// where a CNAME chain from there leads (RFC 8555 §8.4 lets the CA follow it).
    pub async fn record_name(&self, domain: &str) -> Result<String, DnsError> {
        let name = format!("{CHALLENGE_LABEL}.{}", domain.trim_end_matches('.'));
        self.lookups.follow_cnames(&name).await
    }

    /// Adds `record` (other values at the same name stay: an apex and its wildcard share one name).
    pub async fn publish(&self, record: &TxtRecord) -> Result<(), DnsError> {
        self.update(record, true).await
    }

    /// Removes `record`'s value (only that one).
    pub async fn remove(&self, record: &TxtRecord) -> Result<(), DnsError> {
        self.update(record, false).await
    }

    async fn update(&self, record: &TxtRecord, add: bool) -> Result<(), DnsError> {
        match &self.config.method {
            DnsMethod::Rfc2136(rfc2136) => {
                let zone = match &rfc2136.zone {
                    Some(zone) => zone.clone(),
                    None => self.lookups.zone_of(&record.name).await?,
                };
                rfc2136::update(rfc2136, &zone, record, add).await
            }
            DnsMethod::Hook { program, timeout } => {
                exec_hook::run(program, *timeout, add, record).await
            }
        }
    }

    /// Waits until every authoritative server of each record's zone answers its value, polling until
    /// `propagation_timeout`. The error names each server that does not, and what it answers.
    pub async fn wait_until_visible(&self, records: &[TxtRecord]) -> Result<(), DnsError> {
        let mut names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
        names.dedup();
        names.sort_unstable();
        names.dedup();
        for name in names {
            let zone = match &self.config.method {
                DnsMethod::Rfc2136(rfc2136) if rfc2136.zone.is_some() => {
                    rfc2136.zone.clone().unwrap_or_default()
                }
                _ => self.lookups.zone_of(name).await?,
            };
            let servers = self
                .lookups
                .authoritative_servers(&zone, self.config.nameserver_port)
                .await?;
            // Every record at this name, so one poll checks the apex's and the wildcard's value.
            let values: Vec<&str> = records
                .iter()
                .filter(|other| other.name == name)
                .map(|other| other.value.as_str())
                .collect();
            propagation::wait(
                name,
                &values,
                &zone,
                &servers,
                self.config.propagation_timeout,
            )
            .await?;
        }
        Ok(())
    }
}
