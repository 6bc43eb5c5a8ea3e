//! The DNS-01 side of an order: one TXT record per pending authorization (a wildcard and its apex
//! share `_acme-challenge.<apex>`), published through the site's [`Dns01`] method, visible on every
//! authoritative server before the CA is told, and removed again whatever happens.
//!
//! When a record cannot be published or does not propagate, the order's pending authorizations are
//! deactivated (RFC 8555 §7.5.2) so no order is left pending at the CA, and the records already
//! published are removed.

use instant_acme::{AuthorizationStatus, ChallengeType, Identifier};
use tracing::{debug, info, warn};

use super::{AcmeClient, AcmeError};
use crate::dns01::{Dns01, DnsError, TxtRecord};

impl AcmeClient {
    /// Publishes a TXT record for each pending authorization of `order`, waits until all are visible
    /// on the authoritative servers, then tells the CA the challenges are ready. `published` collects
    /// every record added, also on failure, for [`remove_records`].
    pub(super) async fn answer_dns01(
        &self,
        site: &str,
        order: &mut instant_acme::Order,
        dns: &Dns01,
        published: &mut Vec<TxtRecord>,
    ) -> Result<(), AcmeError> {
        let dns_error = |name: &str, source: DnsError| AcmeError::Dns {
            site: site.to_owned(),
            name: name.to_owned(),
            source,
        };
        // Pass 1: publish. Challenges are only marked ready once every record is visible, because
        // the CA may validate the moment one is.
        let mut pending = 0usize;
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.map_err(|err| self.site_error(site, err))?;
            let shown = authorization.identifier().to_string();
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                status => {
                    return Err(AcmeError::Unexpected {
                        site: site.to_owned(),
                        state: format!("with the authorization for {shown} {status:?}"),
                    })
                }
            }
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
            let name = dns
                .record_name(&domain)
                .await
                .map_err(|source| dns_error(&shown, source))?;
            let record = TxtRecord { name, value };
            dns.publish(&record)
                .await
                .map_err(|source| dns_error(&shown, source))?;
            debug!(name = %shown, record = %record.name, "DNS-01 record published");
            published.push(record);
            pending += 1;
        }
        if pending == 0 {
            return Ok(());
        }
        dns.wait_until_visible(published).await.map_err(|source| {
            let name = match &source {
                DnsError::NotPropagated { record, .. } => record.clone(),
                _ => "(propagation)".to_owned(),
            };
            dns_error(&name, source)
        })?;

        // Pass 2: every record is visible; tell the CA.
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
            records = published.len(),
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
