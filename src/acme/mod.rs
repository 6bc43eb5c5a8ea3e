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
//!
//! Files: this one holds the account ([`AcmeClient::connect`]), profiles and renewal information;
//! `account_lease.rs` creating the account once across a fleet; `order.rs` the order itself; `error.rs` what can go wrong; `http.rs` the HTTP client to the CA;
//! `trust.rs` the roots it trusts.

mod account_lease;
mod dns01;
mod error;
mod http;
mod order;
#[cfg(test)]
mod tests;
mod trust;

pub use error::{AcmeError, Described};

use std::fmt;
use std::time::Duration;

use instant_acme::{Account, AccountCredentials, NewAccount};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use tracing::{debug, info};

use self::account_lease::{Claim, Fingerprint};
use self::error::{classify_ca_error, is_rate_limit};
use self::http::{BoundedRetryAfter, CaHttpClient, RetryAfter};
use crate::config::{AcmeConfig, ChallengeKind, Config, KeyType};
use crate::storage::StateStore;
use crate::store::StoreError;

/// How to order one certificate.
#[derive(Debug, Clone, Default)]
pub struct OrderOptions {
    /// The kind of key to generate.
    pub key_type: KeyType,
    /// The ACME profile to ask for (only sent when the CA offers profiles).
    pub profile: Option<String>,
    /// The PEM of the certificate this order replaces, for ARI's `replaces`.
    pub replaces: Option<String>,
    /// The challenge every name is validated with (the renewer has already made the automatic
    /// choice).
    pub challenge: ChallengeKind,
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
    /// Of the stored credentials this account came from (see [`AcmeClient::connect_new_account`]).
    fingerprint: Fingerprint,
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
    ///
    /// Creating takes the CA's account lease for `lease_seconds` first (`account_lease.rs`), so
    /// nodes of a fleet starting together create one account: a node that cannot get it waits and
    /// uses the account the holder stored.
    pub async fn connect(
        acme: &AcmeConfig,
        store: &dyn StateStore,
        lease_seconds: u32,
    ) -> Result<Self, AcmeError> {
        Self::connect_inner(acme, store, lease_seconds, None).await
    }

    /// Creates a new account at the CA and stores it in place of `forgotten`'s. For when the CA no
    /// longer knows the stored account (a test CA restarted, an account deactivated elsewhere). In a
    /// fleet, an account another node stored in its place meanwhile is used instead.
    pub async fn connect_new_account(
        acme: &AcmeConfig,
        store: &dyn StateStore,
        lease_seconds: u32,
        forgotten: &AcmeClient,
    ) -> Result<Self, AcmeError> {
        Self::connect_inner(acme, store, lease_seconds, Some(forgotten.fingerprint)).await
    }

    async fn connect_inner(
        acme: &AcmeConfig,
        store: &dyn StateStore,
        lease_seconds: u32,
        forgotten: Option<Fingerprint>,
    ) -> Result<Self, AcmeError> {
        let url = acme.directory_url.clone();
        let retry_after = RetryAfter::default();
        let http = CaHttpClient::new(acme.ca_roots.as_deref(), retry_after.clone())?;
        let builder = Account::builder_with_http(Box::new(BoundedRetryAfter(http.clone())));

        let stored = match forgotten {
            Some(_) => None,
            None => store.load_account(&url)?,
        };
        let (account, fingerprint) = match stored {
            Some(json) => {
                let account = restore(builder, store, &url, &json).await?;
                debug!(account = account.id(), "reusing the stored ACME account");
                (account, Fingerprint::of(&json))
            }
            None => {
                let wait = account_lease::longest_wait(lease_seconds);
                match account_lease::claim(store, &url, lease_seconds, forgotten, wait).await? {
                    Claim::Stored(json) => {
                        let account = restore(builder, store, &url, &json).await?;
                        info!(account = account.id(), directory = %url, "using the ACME account another node created");
                        (account, Fingerprint::of(&json))
                    }
                    Claim::Create(lease) => {
                        lease.hold_while(create(acme, builder, store, &url)).await?
                    }
                }
            }
        };
        Ok(Self {
            account,
            directory_url: url,
            retry_after,
            fingerprint,
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

/// What to add to the CA's refusal of a new account when it is about external account binding.
fn account_hint(problem: &instant_acme::Problem, have_eab: bool) -> &'static str {
    let about_eab = problem
        .r#type
        .as_deref()
        .is_some_and(|kind| kind.ends_with(":externalAccountRequired"))
        || problem
            .detail
            .as_deref()
            .is_some_and(|detail| detail.to_ascii_lowercase().contains("external account"));
    match (about_eab, have_eab) {
        (true, false) => {
            " (this CA needs external account binding: set [acme] eab_kid and eab_hmac_key_file \
             to the key id and MAC key from its website)"
        }
        (true, true) => " (check [acme] eab_kid and the key in eab_hmac_key_file)",
        (false, _) => "",
    }
}

/// The account whose stored credentials are `json`.
async fn restore(
    builder: instant_acme::AccountBuilder,
    store: &dyn StateStore,
    url: &str,
    json: &str,
) -> Result<Account, AcmeError> {
    let credentials: AccountCredentials =
        serde_json::from_str(json).map_err(|err| StoreError::Corrupt {
            path: store.account_location(url),
            reason: format!("not ACME account credentials: {err}"),
        })?;
    builder
        .from_credentials(credentials)
        .await
        .map_err(|err| classify_ca_error(url, err))
}

/// Registers a new account at the CA (bound to `[acme] eab_*` when set) and stores it.
async fn create(
    acme: &AcmeConfig,
    builder: instant_acme::AccountBuilder,
    store: &dyn StateStore,
    url: &str,
) -> Result<(Account, Fingerprint), AcmeError> {
    // Only a new account is bound: the stored one already is, at the CA.
    let external_account = match &acme.eab {
        Some(eab) => {
            let key = crate::config::read_mac_key(&eab.hmac_key_file).map_err(|reason| {
                AcmeError::Eab {
                    path: eab.hmac_key_file.clone(),
                    reason,
                }
            })?;
            Some(instant_acme::ExternalAccountKey::new(eab.kid.clone(), &key))
        }
        None => None,
    };
    let contact = acme.email.as_ref().map(|email| format!("mailto:{email}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            url.to_owned(),
            external_account.as_ref(),
        )
        .await
        .map_err(|err| match err {
            instant_acme::Error::Api(problem) => AcmeError::AccountRejected {
                eab_hint: account_hint(&problem, acme.eab.is_some()),
                problem: Box::new(problem),
            },
            other => classify_ca_error(url, other),
        })?;
    let json = serde_json::to_string(&credentials).map_err(|err| StoreError::Corrupt {
        path: store.account_location(url),
        reason: format!("cannot serialize the account credentials: {err}"),
    })?;
    store.save_account(url, &json)?;
    info!(account = account.id(), directory = %url, "created an ACME account");
    Ok((account, Fingerprint::of(&json)))
}
