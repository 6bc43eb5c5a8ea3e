//! The DNS-01 side of an order: one TXT record per pending authorization (a wildcard and its apex
//! share `_acme-challenge.<apex>`), published through the site's [`Dns01`] method, visible on every
//! authoritative server before the CA is told, and removed again whatever happens.
//!
//! When a record cannot be published or does not propagate, the order's pending authorizations are
//! deactivated (RFC 8555 §7.5.2) so no order is left pending at the CA, and the records already
//! published are removed.

use instant_acme::{AuthorizationHandle, AuthorizationStatus, ChallengeType, Identifier};
use tracing::{debug, info, warn};

use super::{AcmeClient, AcmeError};
use crate::dns01::{Dns01, DnsError, TxtRecord};

impl AcmeClient {
    /// DNS-01, step 1 for one pending authorization: publishes its TXT record (at
    /// `_acme-challenge.<name>`, or where that name's CNAME leads) and returns it. The challenge is
    /// not marked ready yet: the CA may validate the moment it is, so [`AcmeClient::ready_dns01`]
    /// does that once every record is visible.
    pub(super) async fn publish_dns01(
        &self,
        site: &str,
        mut authorization: AuthorizationHandle<'_>,
        dns: &Dns01,
    ) -> Result<TxtRecord, AcmeError> {
        let shown = authorization.identifier().to_string();
        let Identifier::Dns(domain) = authorization.identifier().identifier.clone() else {
            return Err(AcmeError::Unexpected {
                site: site.to_owned(),
                state: format!("with {shown}, which is not a DNS name, for DNS-01"),
            });
        };
        let challenge = authorization
            .challenge(ChallengeType::Dns01)
            .ok_or_else(|| AcmeError::NoDns01 {
                site: site.to_owned(),
                name: shown.clone(),
            })?;
        let value = challenge.key_authorization().dns_value();
        let dns_error = |source: DnsError| AcmeError::Dns {
            site: site.to_owned(),
            name: shown.clone(),
            source: Box::new(source),
        };
        let name = dns.record_name(&domain).await.map_err(dns_error)?;
        let record = TxtRecord { name, value };
        dns.publish(&record).await.map_err(dns_error)?;
        debug!(name = %shown, record = %record.name, "DNS-01 record published");
        Ok(record)
    }

    /// DNS-01, step 2: waits until every authoritative server answers all of `records`, then tells
    /// the CA that each pending authorization's DNS-01 challenge is ready.
    pub(super) async fn ready_dns01(
        &self,
        site: &str,
        order: &mut instant_acme::Order,
        dns: &Dns01,
        records: &[TxtRecord],
    ) -> Result<(), AcmeError> {
        if records.is_empty() {
            return Ok(());
        }
        dns.wait_until_visible(records)
            .await
            .map_err(|source| AcmeError::Dns {
                site: site.to_owned(),
                name: match &source {
                    DnsError::NotPropagated { record, .. } => record.clone(),
                    _ => records[0].name.clone(),
                },
                source: Box::new(source),
            })?;
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.map_err(|err| self.site_error(site, err))?;
            if authorization.status != AuthorizationStatus::Pending {
                continue;
            }
            let shown = authorization.identifier().to_string();
            let mut challenge = authorization
                .challenge(ChallengeType::Dns01)
                .ok_or_else(|| AcmeError::NoDns01 {
                    site: site.to_owned(),
                    name: shown.clone(),
                })?;
            challenge
                .set_ready()
                .await
                .map_err(|err| self.site_error(site, err))?;
            debug!(name = %shown, "DNS-01 challenge ready");
        }
        info!(
            records = records.len(),
            "DNS-01 records visible; challenges ready"
        );
        Ok(())
    }

    /// Deactivates the order's pending authorizations so the order becomes invalid at the CA rather
    /// than staying pending after certd gave up on it. Best effort: failures are logged.
    pub(super) async fn abandon_order(&self, order: &mut instant_acme::Order) {
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let Ok(mut authorization) = authorization else {
                continue;
            };
            if authorization.status != AuthorizationStatus::Pending {
                continue;
            }
            let name = authorization.identifier().to_string();
            match authorization.deactivate().await {
                Ok(_) => debug!(%name, "authorization deactivated"),
                Err(err) => warn!(%name, %err, "cannot deactivate the authorization"),
            }
        }
        info!(
            url = order.url(),
            "order abandoned: its pending authorizations are deactivated"
        );
    }
}

/// Removes every record in `published` (each value on its own, so an operator's other records at the
/// same name stay). Failures are logged, not returned: the order's outcome is what the caller reports.
pub(super) async fn remove_records(dns: &Dns01, published: &[TxtRecord]) {
    for record in published {
        match dns.remove(record).await {
            Ok(()) => debug!(record = %record.name, "DNS-01 record removed"),
            Err(err) => {
                warn!(record = %record.name, %err, "cannot remove the DNS-01 record; remove it by hand")
            }
        }
    }
}
