//! ACME ordering: the account at the CA and the order that turns a site's names into a certificate.
//!
//! Built on instant-acme. [`AcmeClient::connect`] loads the account stored for the CA's directory URL
//! (creating and storing one on first use), then [`AcmeClient::order`] runs one RFC 8555 order for a
//! site over HTTP-01: it publishes each challenge's key authorization in [`ChallengeTokens`] (answered by
//! the challenge responder), waits for the CA to validate, finalizes with a fresh key and CSR, and returns
//! the chain and key. Nothing here touches the certificate store: callers validate and persist.
//!
//! Errors keep what the operator needs: the CA's problem document intact (type, detail, subproblems),
//! the site and name at fault, `Retry-After` when the CA sent one, and distinct messages for a CA that
//! cannot be reached and for a TLS failure talking to it.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    HttpClient, Identifier, NewAccount, NewOrder, OrderStatus, Problem, RetryPolicy,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use tracing::{debug, info, info_span, warn, Instrument};
use zeroize::Zeroizing;

use crate::certificate::{self, CertificateError, CertifiedPem};
use crate::challenge::ChallengeTokens;
use crate::config::{AcmeConfig, Config, KeyType, SiteConfig};
use crate::store::{Store, StoreError};

/// How long one HTTP request to the CA may take before it counts as unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for a TCP connection to the CA.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the CA may take to validate all challenges of an order.
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the CA may take to issue once the order is finalized.
const ISSUANCE_TIMEOUT: Duration = Duration::from_secs(120);

/// Why an account could not be used or an order did not produce a certificate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcmeError {
    /// No connection to the CA could be made, or it did not answer in time.
    #[error("cannot reach the CA at {url}: {reason}")]
    Unreachable {
        /// The directory URL.
        url: String,
        /// What failed (connection refused, DNS, timeout, ...).
        reason: String,
    },
    /// A connection was made but TLS failed (typically an untrusted CA certificate).
    #[error("TLS error talking to the CA at {url}: {reason} (if the CA uses a private root, set acme.ca_roots)")]
    Tls {
        /// The directory URL.
        url: String,
        /// The TLS error.
        reason: String,
    },
    /// The server answered, but not like an ACME directory.
    #[error("the server at {url} did not answer like an ACME CA: {reason}")]
    NotAcme {
        /// The directory URL.
        url: String,
        /// What was unexpected.
        reason: String,
    },
    /// `acme.ca_roots` could not be used.
    #[error("acme.ca_roots {}: {reason}", path.display())]
    CaRoots {
        /// The configured file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The CA refused an account operation.
    #[error("the CA refused the ACME account: {}", Described(problem.as_ref()))]
    AccountRejected {
        /// The CA's problem document.
        problem: Box<Problem>,
    },
    /// The CA rate-limited a request.
    #[error("the CA rate-limited {site}: {}{}", Described(problem.as_ref()), retry_hint(retry_after))]
    RateLimited {
        /// The site being ordered.
        site: String,
        /// The CA's problem document.
        problem: Box<Problem>,
        /// When the CA said to try again (`Retry-After`).
        retry_after: Option<OffsetDateTime>,
    },
    /// The CA could not validate control of a name.
    #[error("validation of {name} for site {site} failed: {}", Described(problem.as_ref()))]
    ChallengeFailed {
        /// The site being ordered.
        site: String,
        /// The name whose authorization failed.
        name: String,
        /// The CA's problem document for the failed challenge.
        problem: Box<Problem>,
    },
    /// The CA rejected the order for another reason.
    #[error("the CA rejected the order for {site}: {}", Described(problem.as_ref()))]
    Rejected {
        /// The site being ordered.
        site: String,
        /// The CA's problem document.
        problem: Box<Problem>,
    },
    /// The configuration asks for a profile the CA does not offer.
    #[error("site {site} asks for the ACME profile {profile:?}, which the CA does not offer (it offers: {offered}); fix `profile` in the configuration")]
    UnknownProfile {
        /// The site.
        site: String,
        /// The profile asked for.
        profile: String,
        /// What the CA offers.
        offered: String,
    },
    /// The CA offers no HTTP-01 challenge for a name (certd only answers HTTP-01).
    #[error("the CA offers no http-01 challenge for {name} (site {site})")]
    NoHttp01 {
        /// The site being ordered.
        site: String,
        /// The name without an HTTP-01 challenge.
        name: String,
    },
    /// The order did not progress in time.
    #[error("the CA did not {stage} for {site} in time")]
    TimedOut {
        /// The site being ordered.
        site: String,
        /// What was awaited ("validate the challenges", "issue the certificate").
        stage: &'static str,
    },
    /// The order ended in a state certd cannot continue from.
    #[error("the order for {site} ended {state}")]
    Unexpected {
        /// The site being ordered.
        site: String,
        /// What happened.
        state: String,
    },
    /// Generating the key or CSR failed, or the issued certificate could not be read.
    #[error("certificate for {site}: {source}")]
    Certificate {
        /// The site being ordered.
        site: String,
        /// What went wrong.
        source: CertificateError,
    },
    /// The account could not be loaded or saved.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AcmeError {
    /// Whether the CA says the account certd used does not exist (RFC 8555 `accountDoesNotExist`).
    pub fn is_unknown_account(&self) -> bool {
        match self {
            Self::Rejected { problem, .. } | Self::AccountRejected { problem } => problem
                .r#type
                .as_deref()
                .is_some_and(|kind| kind.ends_with(":accountDoesNotExist")),
            _ => false,
        }
    }

    /// When the CA asked certd to try again, if it did.
    pub fn retry_after(&self) -> Option<OffsetDateTime> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether this error concerns the CA as a whole (unreachable, TLS, not ACME, account) rather than
    /// one site's order.
    pub fn is_ca_wide(&self) -> bool {
        matches!(
            self,
            Self::Unreachable { .. }
                | Self::Tls { .. }
                | Self::NotAcme { .. }
                | Self::CaRoots { .. }
                | Self::AccountRejected { .. }
                | Self::UnknownProfile { .. }
        )
    }
}

fn retry_hint(retry_after: &Option<OffsetDateTime>) -> String {
    match retry_after {
        Some(at) => format!(" (the CA asks to retry after {at})"),
        None => String::new(),
    }
}

/// Displays a problem document in full: `type: detail`, then each subproblem.
pub struct Described<'a>(pub &'a Problem);

impl fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let problem = self.0;
        f.write_str(problem.r#type.as_deref().unwrap_or("(no problem type)"))?;
        if let Some(detail) = &problem.detail {
            write!(f, ": {detail}")?;
        }
        if let Some(status) = problem.status {
            write!(f, " (HTTP {status})")?;
        }
        for sub in &problem.subproblems {
            f.write_str("; ")?;
            if let Some(identifier) = &sub.identifier {
                write!(f, "{}: ", identifier.authorized(false))?;
            }
            f.write_str(sub.r#type.as_deref().unwrap_or("(no problem type)"))?;
            if let Some(detail) = &sub.detail {
                write!(f, ": {detail}")?;
            }
        }
        Ok(())
    }
}

/// How to order one certificate.
#[derive(Debug, Clone, Default)]
pub struct OrderOptions {
    /// The kind of key to generate.
    pub key_type: KeyType,
    /// The ACME profile to ask for (only sent when the CA offers profiles).
    pub profile: Option<String>,
    /// The PEM of the certificate this order replaces, for ARI's `replaces`.
    pub replaces: Option<String>,
}

/// The CA's suggested renewal window for a certificate (RFC 9773).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalWindow {
    /// Renew no earlier than this.
    pub start: OffsetDateTime,
    /// Renew before this.
    pub end: OffsetDateTime,
    /// Ask again after this long (the CA's `Retry-After`).
    pub poll_after: Duration,
    /// Why the window is where it is, when the CA says (e.g. after a revocation).
    pub explanation_url: Option<String>,
}

/// The ARI identifier (authority key identifier and serial) of the certificate in `cert_pem`.
fn certificate_id(cert_pem: &str) -> Result<instant_acme::CertificateIdentifier<'static>, String> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|err| err.to_string())?;
    instant_acme::CertificateIdentifier::try_from(&der).map(|id| id.into_owned())
}

/// An ACME account at one CA, ready to order certificates.
#[derive(Clone)]
pub struct AcmeClient {
    account: Account,
    directory_url: String,
    retry_after: RetryAfter,
}

impl fmt::Debug for AcmeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcmeClient")
            .field("directory_url", &self.directory_url)
            .field("account", &self.account.id())
            .finish()
    }
}

impl AcmeClient {
    /// Loads the account stored for `acme.directory_url`, or creates one at the CA and stores its
    /// credentials (0600) before returning. After this succeeds, call [`AcmeClient::order`] per site.
    pub async fn connect(acme: &AcmeConfig, store: &Store) -> Result<Self, AcmeError> {
        Self::connect_inner(acme, store, false).await
    }

    /// Creates a new account at the CA and stores it in place of the old one. For when the CA no
    /// longer knows the stored account (a test CA restarted, an account deactivated elsewhere).
    pub async fn connect_new_account(acme: &AcmeConfig, store: &Store) -> Result<Self, AcmeError> {
        Self::connect_inner(acme, store, true).await
    }

    async fn connect_inner(
        acme: &AcmeConfig,
        store: &Store,
        new_account: bool,
    ) -> Result<Self, AcmeError> {
        let url = acme.directory_url.clone();
        let retry_after = RetryAfter::default();
        let http = CaHttpClient::new(acme.ca_roots.as_deref(), retry_after.clone())?;
        let builder = Account::builder_with_http(Box::new(http.clone()));

        let stored = if new_account {
            None
        } else {
            store.load_account(&url)?
        };
        let account = match stored {
            Some(json) => {
                let credentials: AccountCredentials =
                    serde_json::from_str(&json).map_err(|err| StoreError::Corrupt {
                        path: store.layout().account_file(&url),
                        reason: format!("not ACME account credentials: {err}"),
                    })?;
                let account = builder
                    .from_credentials(credentials)
                    .await
                    .map_err(|err| classify_ca_error(&url, err))?;
                debug!(account = account.id(), "reusing the stored ACME account");
                account
            }
            None => {
                let contact = acme.email.as_ref().map(|email| format!("mailto:{email}"));
                let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
                let (account, credentials) = builder
                    .create(
                        &NewAccount {
                            contact: &contacts,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        url.clone(),
                        None,
                    )
                    .await
                    .map_err(|err| match err {
                        instant_acme::Error::Api(problem) => AcmeError::AccountRejected {
                            problem: Box::new(problem),
                        },
                        other => classify_ca_error(&url, other),
                    })?;
                let json =
                    serde_json::to_string(&credentials).map_err(|err| StoreError::Corrupt {
                        path: store.layout().account_file(&url),
                        reason: format!("cannot serialize the account credentials: {err}"),
                    })?;
                store.save_account(&url, &json)?;
                info!(account = account.id(), directory = %url, "created an ACME account");
                account
            }
        };
        Ok(Self {
            account,
            directory_url: url,
            retry_after,
        })
    }

    /// The CA's directory URL.
    pub fn directory_url(&self) -> &str {
        &self.directory_url
    }

    /// The account's URL at the CA.
    pub fn account_id(&self) -> &str {
        self.account.id()
    }

    /// The profiles the CA's directory offers (RFC draft "ACME profiles"); empty when it offers none.
    pub fn offered_profiles(&self) -> Vec<String> {
        self.account
            .profiles()
            .map(|profile| profile.name.to_owned())
            .collect()
    }

    /// Checks every profile `config` asks for against the CA's directory, so that a profile the CA
    /// does not offer is a configuration error when certd connects, not a failed order at 3 a.m. A CA
    /// that offers no profiles at all is told none (and this returns `Ok`).
    pub fn check_profiles(&self, config: &Config) -> Result<(), AcmeError> {
        let offered = self.offered_profiles();
        if offered.is_empty() {
            return Ok(());
        }
        for site in &config.sites {
            if let Some(profile) = site.profile.as_ref().or(config.acme.profile.as_ref()) {
                if !offered.contains(profile) {
                    return Err(AcmeError::UnknownProfile {
                        site: site.name().to_owned(),
                        profile: profile.clone(),
                        offered: offered.join(", "),
                    });
                }
            }
        }
        Ok(())
    }

    /// The CA's suggested renewal window for `cert_pem` (ACME Renewal Information, RFC 9773), or
    /// `None` when the CA does not offer ARI.
    pub async fn renewal_window(&self, cert_pem: &str) -> Result<Option<RenewalWindow>, AcmeError> {
        let id = certificate_id(cert_pem).map_err(|reason| AcmeError::NotAcme {
            url: self.directory_url.clone(),
            reason: format!("cannot build the ARI certificate identifier: {reason}"),
        })?;
        match self.account.renewal_info(&id).await {
            Ok((info, poll_after)) => Ok(Some(RenewalWindow {
                start: info.suggested_window.start,
                end: info.suggested_window.end,
                poll_after,
                explanation_url: info.explanation_url,
            })),
            Err(instant_acme::Error::Unsupported(_)) => Ok(None),
            Err(err) => Err(self.site_error("(renewal information)", err)),
        }
    }

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

        let retry = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .backoff(1.5)
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
            .initial_delay(Duration::from_millis(250))
            .backoff(1.5)
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

    fn site_error(&self, site: &str, err: instant_acme::Error) -> AcmeError {
        match err {
            instant_acme::Error::Api(problem) if is_rate_limit(&problem) => {
                AcmeError::RateLimited {
                    site: site.to_owned(),
                    problem: Box::new(problem),
                    retry_after: self.retry_after.take(),
                }
            }
            instant_acme::Error::Api(problem) => AcmeError::Rejected {
                site: site.to_owned(),
                problem: Box::new(problem),
            },
            other => classify_ca_error(&self.directory_url, other),
        }
    }
}

fn is_rate_limit(problem: &Problem) -> bool {
    problem
        .r#type
        .as_deref()
        .is_some_and(|kind| kind.ends_with(":rateLimited"))
}

/// Maps a transport-level failure to the message an operator can act on.
fn classify_ca_error(url: &str, err: instant_acme::Error) -> AcmeError {
    let url = url.to_owned();
    match err {
        instant_acme::Error::Api(problem) => AcmeError::AccountRejected {
            problem: Box::new(problem),
        },
        instant_acme::Error::Json(err) => AcmeError::NotAcme {
            url,
            reason: err.to_string(),
        },
        instant_acme::Error::InvalidUri(err) => AcmeError::NotAcme {
            url,
            reason: format!("invalid URL: {err}"),
        },
        instant_acme::Error::Timeout(_) => AcmeError::Unreachable {
            url,
            reason: "timed out".into(),
        },
        other => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&other);
            let mut reasons = Vec::new();
            while let Some(err) = source {
                if let Some(tls) = err.downcast_ref::<rustls::Error>() {
                    return AcmeError::Tls {
                        url,
                        reason: tls.to_string(),
                    };
                }
                if let Some(io) = err.downcast_ref::<std::io::Error>() {
                    if let Some(tls) = io
                        .get_ref()
                        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                    {
                        return AcmeError::Tls {
                            url,
                            reason: tls.to_string(),
                        };
                    }
                }
                let text = err.to_string();
                if reasons.last() != Some(&text) {
                    reasons.push(text);
                }
                source = err.source();
            }
            AcmeError::Unreachable {
                url,
                reason: reasons.join(": "),
            }
        }
    }
}

/// The most recent `Retry-After` the CA sent on an error response.
#[derive(Debug, Clone, Default)]
struct RetryAfter(Arc<Mutex<Option<OffsetDateTime>>>);

impl RetryAfter {
    fn set(&self, at: OffsetDateTime) {
        *self.0.lock().unwrap_or_else(|poison| poison.into_inner()) = Some(at);
    }

    fn take(&self) -> Option<OffsetDateTime> {
        self.0
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take()
    }
}

/// The HTTP client instant-acme talks to the CA with: system and web roots plus `acme.ca_roots`, bounded
/// connect and request times, and a record of `Retry-After` (instant-acme's error keeps only the body).
#[derive(Clone)]
struct CaHttpClient {
    inner: Client<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>,
    retry_after: RetryAfter,
}

impl CaHttpClient {
    fn new(extra_roots: Option<&Path>, retry_after: RetryAfter) -> Result<Self, AcmeError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        // The system store may be missing or partly unreadable; the web roots above still apply.
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if let Some(path) = extra_roots {
            add_pem_roots(&mut roots, path)?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|err| AcmeError::Tls {
            url: String::new(),
            reason: err.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Ok(Self {
            inner: Client::builder(TokioExecutor::new()).build(connector),
            retry_after,
        })
    }
}

fn add_pem_roots(roots: &mut rustls::RootCertStore, path: &Path) -> Result<(), AcmeError> {
    let bad = |reason: String| AcmeError::CaRoots {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|err| bad(err.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| bad(err.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in the file".into()));
    }
    for cert in certs {
        roots
            .add(cert)
            .map_err(|err| bad(format!("not a usable root certificate: {err}")))?;
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
#[error("no answer within {} s", REQUEST_TIMEOUT.as_secs())]
struct RequestTimedOut;

impl HttpClient for CaHttpClient {
    fn request(
        &self,
        req: hyper::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let response = self.inner.request(req);
        let retry_after = self.retry_after.clone();
        Box::pin(async move {
            let response = match tokio::time::timeout(REQUEST_TIMEOUT, response).await {
                Ok(Ok(response)) => response,
                Ok(Err(err)) => return Err(instant_acme::Error::Other(Box::new(err))),
                Err(_) => return Err(instant_acme::Error::Other(Box::new(RequestTimedOut))),
            };
            if !response.status().is_success() {
                if let Some(at) = response
                    .headers()
                    .get(hyper::header::RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| parse_retry_after(value, SystemTime::now()))
                {
                    retry_after.set(at);
                }
            }
            Ok(BytesResponse::from(response))
        })
    }
}

/// `Retry-After` is either delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
fn parse_retry_after(value: &str, now: SystemTime) -> Option<OffsetDateTime> {
    let value = value.trim();
    let at = match value.parse::<u64>() {
        Ok(seconds) => now.checked_add(Duration::from_secs(seconds))?,
        Err(_) => httpdate::parse_http_date(value).ok()?,
    };
    Some(OffsetDateTime::from(at))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(OffsetDateTime::from(now + Duration::from_secs(120)))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now).map(|at| at.unix_timestamp()),
            Some(784_111_777)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn a_problem_is_described_with_its_subproblems() {
        let problem: Problem = serde_json::from_str(
            r#"{"type":"urn:ietf:params:acme:error:rejectedIdentifier","detail":"Error creating new order","status":400,
                "subproblems":[{"type":"urn:ietf:params:acme:error:malformed","detail":"bad name","identifier":{"type":"dns","value":"x_y.test"}}]}"#,
        )
        .unwrap();
        let text = Described(&problem).to_string();
        assert_eq!(
            text,
            "urn:ietf:params:acme:error:rejectedIdentifier: Error creating new order (HTTP 400); \
             x_y.test: urn:ietf:params:acme:error:malformed: bad name"
        );
    }

    #[test]
    fn rate_limits_are_recognised_by_problem_type() {
        let problem: Problem = serde_json::from_str(
            r#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many"}"#,
        )
        .unwrap();
        assert!(is_rate_limit(&problem));
        let problem: Problem =
            serde_json::from_str(r#"{"type":"urn:ietf:params:acme:error:malformed"}"#).unwrap();
        assert!(!is_rate_limit(&problem));
    }
}
