//! One RFC 8555 order: new order (with profile and `replaces`), HTTP-01 challenges answered from
//! [`ChallengeTokens`], validation, finalization with a fresh key and CSR, and the chain.

use std::time::Duration;

use instant_acme::{
    AuthorizationStatus, ChallengeType, Identifier, NewOrder, OrderStatus, Problem, RetryPolicy,
};
use tracing::{debug, info, info_span, warn, Instrument};
use zeroize::Zeroizing;

use super::{certificate_id, AcmeClient, AcmeError, OrderOptions};
use crate::certificate::{self, CertifiedPem};
use crate::challenge::ChallengeTokens;
use crate::config::SiteConfig;

/// How long the CA may take to validate all challenges of an order.
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the CA may take to issue once the order is finalized.
const ISSUANCE_TIMEOUT: Duration = Duration::from_secs(120);
/// The wait before the first poll of an order, for validation and for issuance.
const FIRST_POLL: Duration = Duration::from_millis(50);
/// How much longer each wait is than the one before: polling backs off, and never busy-polls a CA.
const POLL_BACKOFF: f32 = 1.5;

impl AcmeClient {
    /// Orders a certificate for all of `site`'s names over HTTP-01 with a fresh key, as `options` say.
    ///
    /// The challenge responder must be answering from `tokens` (on the port the CA validates) while this
    /// runs; tokens are withdrawn when it returns, whatever the outcome. The returned material has not
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
        let identifiers: Vec<Identifier> =
            site.names.iter().cloned().map(Identifier::Dns).collect();
        let mut order = self.new_order(&site_name, &identifiers, options).await?;
        info!(url = order.url(), "order created");

        // Held until this function returns: the CA may validate any time after `set_ready`.
        let mut published = Vec::with_capacity(identifiers.len());
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization =
                authorization.map_err(|err| self.site_error(&site_name, err))?;
            let name = authorization.identifier().to_string();
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                status => {
                    return Err(AcmeError::Unexpected {
                        site: site_name,
                        state: format!("with the authorization for {name} {status:?}"),
                    })
                }
            }
            let mut challenge =
                authorization
                    .challenge(ChallengeType::Http01)
                    .ok_or_else(|| AcmeError::NoHttp01 {
                        site: site_name.clone(),
                        name: name.clone(),
                    })?;
            published.push(tokens.publish(
                challenge.token.clone(),
                challenge.key_authorization().as_str().to_owned(),
            ));
            challenge
                .set_ready()
                .await
                .map_err(|err| self.site_error(&site_name, err))?;
            debug!(%name, "challenge ready");
        }

        // First look after 50 ms (a CA that validates at once, like a local Pebble, answers within
        // that), then 1.5 × longer each time: about ten polls in the first 4 s of a slow
        // validation, never faster than 20 a second. A `Retry-After` from the CA replaces the delay.
        let retry = RetryPolicy::new()
            .initial_delay(FIRST_POLL)
            .backoff(POLL_BACKOFF)
            .timeout(VALIDATION_TIMEOUT);
        let ready = order.poll_ready(&retry).await;
        drop(published);
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

        let key = tokio::task::spawn_blocking(move || certificate::generate_key(key_type))
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
        let fullchain = match order.poll_certificate(&retry).await {
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
