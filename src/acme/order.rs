//! One RFC 8555 order: new order (with profile and `replaces`), the challenges answered (HTTP-01
//! from [`ChallengeTokens`], TLS-ALPN-01 from its [`AlpnCertificates`](crate::tls_alpn)), validation,
//! finalization with a fresh key and CSR, and the chain.
//!
//! Which challenge is answered is one `match` on [`ChallengeKind`] in [`AcmeClient::answer`], with
//! one function per kind; each publishes its answer, tells the CA it is ready, and returns a guard
//! that withdraws the answer when the order is done.

use std::time::Duration;

use instant_acme::{
    AuthorizationHandle, AuthorizationStatus, ChallengeType, Identifier, NewOrder, OrderStatus,
    Problem, RetryPolicy,
};
use tracing::{debug, info, info_span, warn, Instrument};
use zeroize::Zeroizing;

use super::{certificate_id, AcmeClient, AcmeError, OrderOptions};
use crate::certificate::{self, CertifiedPem};
use crate::challenge::{ChallengeTokens, PublishedToken};
use crate::config::{ChallengeKind, SiteConfig};
use crate::dns01::{Dns01, TxtRecord};
use crate::tls_alpn::PublishedAlpn;

use super::dns01;

/// How long the CA may take to validate all challenges of an order.
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the CA may take to issue once the order is finalized.
const ISSUANCE_TIMEOUT: Duration = Duration::from_secs(120);
/// The wait before the first poll of an order, for validation and for issuance.
const FIRST_POLL: Duration = Duration::from_millis(50);
/// How much longer each wait is than the one before: polling backs off, and never busy-polls a CA.
const POLL_BACKOFF: f32 = 1.5;

/// An answer to one challenge, answerable until dropped (after the CA has validated, or failed to).
#[derive(Debug)]
enum Published {
    /// An HTTP-01 token and its key authorization.
    Http01(#[allow(dead_code)] PublishedToken),
    /// A TLS-ALPN-01 challenge certificate.
    TlsAlpn01(#[allow(dead_code)] PublishedAlpn),
    /// A DNS-01 TXT record, removed by [`dns01::remove_records`] (removal is async, so no guard).
    Dns01(TxtRecord),
}

/// The ACME identifier of a configured name: an IP address (RFC 8738) or a DNS name.
pub(super) fn identifier(name: &str) -> Identifier {
    match name.parse::<std::net::IpAddr>() {
        Ok(ip) => Identifier::Ip(ip),
        Err(_) => Identifier::Dns(name.to_owned()),
    }
}

impl AcmeClient {
    /// Orders a certificate for all of `site`'s names over `options.challenge` with a fresh key, as
    /// `options` say.
    ///
    /// The challenge responder must be answering from `tokens` (on the port the CA validates: `[http]
    /// listen` for HTTP-01, `[https] listen` for TLS-ALPN-01) while this runs; answers are withdrawn
    /// when it returns, whatever the outcome. The returned material has not
    /// been checked: call [`certificate::check_pair`] before storing it.
    pub async fn order(
        &self,
        site: &SiteConfig,
        options: &OrderOptions,
        tokens: &ChallengeTokens,
    ) -> Result<CertifiedPem, AcmeError> {
        let span = info_span!("order", site = site.name());
        self.order_inner(site, options, tokens)
            .instrument(span)
            .await
    }

    /// Creates the order, with `replaces` when renewing a certificate the CA knows through ARI. A CA
    /// that refuses `replaces` (`alreadyReplaced`, or a certificate from another account or CA) gets
    /// the same order once more without it, rather than a renewal that never happens.
    async fn new_order(
        &self,
        site: &str,
        identifiers: &[Identifier],
        options: &OrderOptions,
    ) -> Result<instant_acme::Order, AcmeError> {
        let mut request = NewOrder::new(identifiers);
        if let Some(profile) = options.profile.as_deref() {
            request = request.profile(profile);
        }
        let replaces = match options.replaces.as_deref().map(certificate_id) {
            Some(Ok(id)) => Some(id),
            Some(Err(reason)) => {
                debug!(%reason, "renewing without `replaces`");
                None
            }
            None => None,
        };
        let Some(replaces) = replaces else {
            return self
                .account
                .new_order(&request)
                .await
                .map_err(|err| self.site_error(site, err));
        };
        match self.account.new_order(&request.replaces(replaces)).await {
            Ok(order) => {
                info!("order replaces the current certificate (ARI)");
                Ok(order)
            }
            // No ARI at this CA: `replaces` means nothing here.
            Err(instant_acme::Error::Unsupported(_)) => {
                let mut request = NewOrder::new(identifiers);
                if let Some(profile) = options.profile.as_deref() {
                    request = request.profile(profile);
                }
                self.account
                    .new_order(&request)
                    .await
                    .map_err(|err| self.site_error(site, err))
            }
            Err(err @ (instant_acme::Error::Api(_) | instant_acme::Error::Other(_))) => {
                let refused = self.site_error(site, err);
                if matches!(refused, AcmeError::RateLimited { .. }) {
                    return Err(refused);
                }
                warn!(error = %refused, "the CA refused `replaces`; ordering once more without it");
                let mut request = NewOrder::new(identifiers);
                if let Some(profile) = options.profile.as_deref() {
                    request = request.profile(profile);
                }
                self.account
                    .new_order(&request)
                    .await
                    .map_err(|err| self.site_error(site, err))
            }
            Err(err) => Err(self.site_error(site, err)),
        }
    }

    async fn order_inner(
        &self,
        site: &SiteConfig,
        options: &OrderOptions,
        tokens: &ChallengeTokens,
    ) -> Result<CertifiedPem, AcmeError> {
        let site_name = site.name().to_owned();
        let key_type = options.key_type;
        let identifiers: Vec<Identifier> = site.names.iter().map(|name| identifier(name)).collect();
        let mut order = self.new_order(&site_name, &identifiers, options).await?;
        info!(url = order.url(), "order created");

        // DNS-01 publishes through the site's DNS method; found before the order is answered.
        let dns = match options.challenge {
            ChallengeKind::Dns01 => match site.dns.as_ref() {
                Some(config) => Some(Dns01::new(config, None)),
                None => {
                    self.abandon_order(&mut order).await;
                    return Err(AcmeError::NoDnsMethod { site: site_name });
                }
            },
            _ => None,
        };
        // Held until this function returns: the CA may validate any time after `set_ready`.
        let mut published = Vec::with_capacity(identifiers.len());
        // DNS-01 records, removed after validation whatever its outcome.
        let mut records: Vec<TxtRecord> = Vec::new();
        let answered: Result<(), AcmeError> = async {
            let mut authorizations = order.authorizations();
            while let Some(authorization) = authorizations.next().await {
                let authorization =
                    authorization.map_err(|err| self.site_error(&site_name, err))?;
                let name = authorization.identifier().to_string();
                match authorization.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    status => {
                        return Err(AcmeError::Unexpected {
                            site: site_name.clone(),
                            state: format!("with the authorization for {name} {status:?}"),
                        })
                    }
                }
                match self
                    .answer(
                        &site_name,
                        options.challenge,
                        authorization,
                        tokens,
                        dns.as_ref(),
                    )
                    .await?
                {
                    Published::Dns01(record) => records.push(record),
                    other => published.push(other),
                }
                debug!(%name, challenge = %options.challenge, "challenge answered");
            }
            if let Some(dns) = &dns {
                self.ready_dns01(&site_name, &mut order, dns, &records)
                    .await?;
            }
            Ok(())
        }
        .await;
        if let Err(err) = answered {
            if let Some(dns) = &dns {
                // Nothing is left pending at the CA, and no record in the zone.
                self.abandon_order(&mut order).await;
                dns01::remove_records(dns, &records).await;
            }
            return Err(err);
        }

        // The key is made while the CA validates: an RSA key takes long enough to matter.
        let key = tokio::task::spawn_blocking(move || certificate::generate_key(key_type));
        // First look after 50 ms (a CA that validates at once, like a local Pebble, answers within
        // that), then 1.5 × longer each time: about ten polls in the first 4 s of a slow
        // validation, never faster than 20 a second. A `Retry-After` from the CA replaces the delay.
        let retry = RetryPolicy::new()
            .initial_delay(FIRST_POLL)
            .backoff(POLL_BACKOFF)
            .timeout(VALIDATION_TIMEOUT);
        let ready = order.poll_ready(&retry).await;
        drop(published);
        if let Some(dns) = &dns {
            dns01::remove_records(dns, &records).await;
        }
        match ready {
            Ok(OrderStatus::Ready) => {}
            Ok(_) | Err(instant_acme::Error::Api(_)) => {
                // Find the authorization that failed so the message names the name and carries the
                // challenge's own problem document (the order's is usually a summary).
                let order_problem = match ready {
                    Err(instant_acme::Error::Api(problem)) => Some(problem),
                    _ => order.state().error.clone(),
                };
                return Err(self
                    .failed_validation(&site_name, &mut order, order_problem)
                    .await);
            }
            Err(instant_acme::Error::Timeout(_)) => {
                return Err(AcmeError::TimedOut {
                    site: site_name,
                    stage: "validate the challenges",
                })
            }
            Err(err) => return Err(self.site_error(&site_name, err)),
        }
        info!("all names validated");

        let key = key
            .await
            .map_err(|err| AcmeError::Unexpected {
                site: site_name.clone(),
                state: format!("with key generation aborted: {err}"),
            })?
            .map_err(|source| AcmeError::Certificate {
                site: site_name.clone(),
                source,
            })?;
        let csr =
            certificate::csr_der(&site.names, &key).map_err(|source| AcmeError::Certificate {
                site: site_name.clone(),
                source,
            })?;
        order
            .finalize_csr(&csr)
            .await
            .map_err(|err| self.site_error(&site_name, err))?;
        let retry = RetryPolicy::new()
            .initial_delay(FIRST_POLL)
            .backoff(POLL_BACKOFF)
            .timeout(ISSUANCE_TIMEOUT);
        // A CA that issued while answering the finalize (the order is already valid) is asked for
        // the chain at once, without a wait and a poll first.
        let issued = if order.state().status == OrderStatus::Valid {
            order
                .certificate()
                .await
                .and_then(|chain| chain.ok_or(instant_acme::Error::Str("no certificate URL")))
        } else {
            order.poll_certificate(&retry).await
        };
        let fullchain = match issued {
            Ok(chain) => chain,
            Err(instant_acme::Error::Timeout(_)) => {
                return Err(AcmeError::TimedOut {
                    site: site_name,
                    stage: "issue the certificate",
                })
            }
            Err(err) => return Err(self.site_error(&site_name, err)),
        };
        info!("certificate issued");
        CertifiedPem::from_fullchain(&fullchain, Zeroizing::new(key.serialize_pem())).map_err(
            |source| AcmeError::Certificate {
                site: site_name,
                source,
            },
        )
    }

    /// Answers one pending authorization with a challenge of `kind`.
    async fn answer(
        &self,
        site: &str,
        kind: ChallengeKind,
        authorization: AuthorizationHandle<'_>,
        tokens: &ChallengeTokens,
        dns: Option<&Dns01>,
    ) -> Result<Published, AcmeError> {
        match (kind, dns) {
            (ChallengeKind::Http01, _) => self.answer_http01(site, authorization, tokens).await,
            (ChallengeKind::TlsAlpn01, _) => {
                self.answer_tls_alpn01(site, authorization, tokens).await
            }
            // Published only: `ready_dns01` marks them ready once every record is visible.
            (ChallengeKind::Dns01, Some(dns)) => self
                .publish_dns01(site, authorization, dns)
                .await
                .map(Published::Dns01),
            (ChallengeKind::Dns01, None) => Err(AcmeError::NoDnsMethod {
                site: site.to_owned(),
            }),
        }
    }

    /// HTTP-01: the key authorization under its token, answered on `[http] listen`.
    async fn answer_http01(
        &self,
        site: &str,
        mut authorization: AuthorizationHandle<'_>,
        tokens: &ChallengeTokens,
    ) -> Result<Published, AcmeError> {
        let name = authorization.identifier().to_string();
        let mut challenge = authorization
            .challenge(ChallengeType::Http01)
            .ok_or_else(|| AcmeError::NoHttp01 {
                site: site.to_owned(),
                name,
            })?;
        // In a fleet, in the store before the CA is told: its request may land on another node.
        let published = tokens
            .publish_to_fleet(
                challenge.token.clone(),
                challenge.key_authorization().as_str().to_owned(),
            )
            .await?;
        challenge
            .set_ready()
            .await
            .map_err(|err| self.site_error(site, err))?;
        Ok(Published::Http01(published))
    }

    /// TLS-ALPN-01: a challenge certificate for the identifier, answered on `[https] listen` to
    /// ClientHellos offering only `acme-tls/1`.
    async fn answer_tls_alpn01(
        &self,
        site: &str,
        mut authorization: AuthorizationHandle<'_>,
        tokens: &ChallengeTokens,
    ) -> Result<Published, AcmeError> {
        // An IP address prints as the address, which is also the certificate's SAN.
        let identifier = authorization.identifier().to_string();
        let offered = offered_types(&authorization);
        let Some(mut challenge) = authorization.challenge(ChallengeType::TlsAlpn01) else {
            return Err(AcmeError::NoChallenge {
                site: site.to_owned(),
                name: identifier,
                kind: ChallengeKind::TlsAlpn01,
                offered,
            });
        };
        let key_authorization = challenge.key_authorization().as_str().to_owned();
        let published = tokens
            .alpn()
            .publish_to_fleet(&identifier, &key_authorization)
            .await
            .map_err(|err| match err {
                crate::tls_alpn::PublishError::Certificate(source) => AcmeError::Certificate {
                    site: site.to_owned(),
                    source,
                },
                crate::tls_alpn::PublishError::Store(err) => AcmeError::Store(err),
            })?;
        challenge
            .set_ready()
            .await
            .map_err(|err| self.site_error(site, err))?;
        Ok(Published::TlsAlpn01(published))
    }

    async fn failed_validation(
        &self,
        site: &str,
        order: &mut instant_acme::Order,
        order_problem: Option<Problem>,
    ) -> AcmeError {
        let mut authorizations = order.authorizations();
        while let Some(Ok(mut authorization)) = authorizations.next().await {
            if authorization.refresh().await.is_err() {
                continue;
            }
            if authorization.status != AuthorizationStatus::Invalid {
                continue;
            }
            let name = authorization.identifier().to_string();
            let problem = authorization
                .challenges
                .iter()
                .find_map(|challenge| challenge.error.clone())
                .or_else(|| order_problem.clone());
            if let Some(problem) = problem {
                return AcmeError::ChallengeFailed {
                    site: site.to_owned(),
                    name,
                    problem: Box::new(problem),
                };
            }
        }
        match order_problem {
            Some(problem) => AcmeError::Rejected {
                site: site.to_owned(),
                problem: Box::new(problem),
            },
            None => AcmeError::Unexpected {
                site: site.to_owned(),
                state: "invalid without a problem document".into(),
            },
        }
    }
}

/// The challenge types the CA offers for an authorization, for messages.
fn offered_types(authorization: &AuthorizationHandle<'_>) -> String {
    let types: Vec<String> = authorization
        .challenges
        .iter()
        .map(|challenge| format!("{:?}", challenge.r#type))
        .collect();
    if types.is_empty() {
        "none".to_owned()
    } else {
        types.join(", ")
    }
}
