//! The one pipeline that renews a site: decide, order, check, store, record.
//!
//! It follows "validate, then persist, then publish": a new pair is checked against the site's names
//! and the clock before it is stored, and any failure leaves the stored pair untouched. Publishing to
//! the live resolver is the caller's step (the daemon's), using the pair in [`Outcome::Issued`].

use std::sync::Arc;

use time::OffsetDateTime;
use tokio::sync::{Mutex, Semaphore};
use tracing::{info, warn, Instrument};

use super::{due_at, is_slowed, retry_at, site_state, SiteState};
use crate::acme::{AcmeClient, AcmeError, OrderOptions};
use crate::certificate::{self, CertificateError, CertificateInfo, CertifiedPem};
use crate::challenge::ChallengeTokens;
use crate::config::{ChallengeKind, Config, RenewalConfig, SiteConfig};
use crate::hook::{self, HookEvent};
use crate::ledger::{self, LedgerEntry, LedgerEvent};
use crate::preflight::Preflight;
use crate::storage::{Lease, SharedStore, StateStore};
use crate::store::{Layout, SiteRecord, StoreError};

/// The outcome of renewing one site.
#[derive(Debug)]
pub enum Outcome {
    /// A new certificate was obtained, checked and stored.
    Issued {
        /// What the new certificate says about itself.
        info: CertificateInfo,
        /// The stored pair, ready to publish.
        pem: CertifiedPem,
    },
    /// The stored certificate is not due.
    NotDue {
        /// When it will be.
        renew_at: OffsetDateTime,
    },
    /// The attempt failed; the stored pair (if any) is unchanged.
    Failed(RenewError),
}

impl RenewError {
    /// When to try again at the earliest, if the CA (or the ledger) said.
    pub fn retry_after(&self) -> Option<OffsetDateTime> {
        match self {
            Self::Acme(acme) => acme.retry_after(),
            Self::DuplicateLimit { until, .. } => Some(*until),
            _ => None,
        }
    }
}

impl Outcome {
    /// The line `certd issue` prints for `site`: `Ok` for stdout, `Err` for a failure (stderr).
    pub fn report(&self, site: &str) -> Result<String, String> {
        match self {
            Self::Issued { info, .. } => Ok(format!(
                "{site}: issued serial {} (expires {})",
                info.serial,
                crate::time_format::rfc3339(info.not_after)
            )),
            Self::NotDue { renew_at } => Ok(format!(
                "{site}: skipped, not due until {}",
                crate::time_format::rfc3339(*renew_at)
            )),
            Self::Failed(err) => Err(format!("{site}: failed: {err}")),
        }
    }
}

/// Why renewing a site failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenewError {
    /// Talking to the CA failed.
    #[error(transparent)]
    Acme(#[from] AcmeError),
    /// The CA issued something that cannot be served for the site.
    #[error("the CA issued a certificate for {site} that cannot be served: {source}")]
    Unusable {
        /// The site.
        site: String,
        /// What is wrong with it.
        source: CertificateError,
    },
    /// The state directory could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The configured CA is a staging CA and the certificate in service came from a production one.
    #[error("{site}: the certificate in service comes from {production}; a staging CA never replaces it (use another state_dir for staging runs)")]
    StagingOverProduction {
        /// The site.
        site: String,
        /// The CA that issued the certificate in service.
        production: String,
    },
    /// A name does not resolve or does not reach this certd, so no order was placed.
    #[error("preflight failed, so no order was placed:\n{0}")]
    Preflight(#[from] crate::preflight::PreflightError),
    /// The ledger shows this name set already got as many certificates this week as the CA allows.
    #[error("{site}: {limit} certificates for these exact names were issued in the last 7 days (the CA's duplicate-certificate limit); not ordering again before {until}", limit = crate::ledger::DUPLICATE_LIMIT)]
    DuplicateLimit {
        /// The site.
        site: String,
        /// When the oldest of those certificates leaves the window.
        until: OffsetDateTime,
    },
}

/// Renews sites: decides, orders, checks, stores and records. Cheap to clone; clones share the ACME
/// account, which is connected on first use (so a CA that is down at start-up is retried later).
#[derive(Debug, Clone)]
pub struct Renewer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    acme: Mutex<Option<AcmeClient>>,
    store: SharedStore,
    tokens: ChallengeTokens,
    config: Arc<Config>,
    // One renewal run at a time across the whole process (scheduler and `certd issue` handed to the
    // daemon, before and after a reload), so a site is never ordered twice at once.
    running: Arc<Mutex<()>>,
}

impl Renewer {
    /// A renewer for `config`'s CA, with challenges answered from `tokens` (a responder must be
    /// listening where the CA validates while renewals run), storing into `store`.
    pub fn new(store: SharedStore, tokens: ChallengeTokens, config: Arc<Config>) -> Self {
        Self {
            inner: Arc::new(Inner {
                acme: Mutex::new(None),
                store,
                tokens,
                config,
                running: Arc::new(Mutex::new(())),
            }),
        }
    }

    /// A renewer for a reloaded configuration. It shares this one's store, challenge tokens and
    /// one-run-at-a-time guard, and its ACME account when the `[acme]` table did not change.
    pub fn reconfigured(&self, config: Arc<Config>) -> Self {
        let old = &self.inner.config.acme;
        let new = &config.acme;
        let same_ca = old.directory_url == new.directory_url
            && old.email == new.email
            && old.ca_roots == new.ca_roots;
        let acme = if same_ca {
            self.inner
                .acme
                .try_lock()
                .ok()
                .and_then(|acme| acme.clone())
        } else {
            None
        };
        Self {
            inner: Arc::new(Inner {
                acme: Mutex::new(acme),
                store: self.inner.store.clone(),
                tokens: self.inner.tokens.clone(),
                config,
                running: self.inner.running.clone(),
            }),
        }
    }

    /// The configuration this renewer works from.
    pub fn config(&self) -> &Arc<Config> {
        &self.inner.config
    }

    /// Where state is kept.
    pub fn store(&self) -> &dyn StateStore {
        self.inner.store.as_ref()
    }

    /// The ACME account, connecting (and creating it) on first use.
    pub async fn connect(&self) -> Result<AcmeClient, AcmeError> {
        let mut acme = self.inner.acme.lock().await;
        if let Some(client) = acme.as_ref() {
            // A reload may have brought new profiles; the directory is already at hand.
            client.check_profiles(&self.inner.config)?;
            return Ok(client.clone());
        }
        let client = AcmeClient::connect(
            &self.inner.config.acme,
            self.inner.store.as_ref(),
            self.inner.config.storage.lease_seconds(),
        )
        .await?;
        client.check_profiles(&self.inner.config)?;
        *acme = Some(client.clone());
        Ok(client)
    }

    /// [`Renewer::connect`] before a run of orders, except that a first CA that is down or
    /// rate-limits is not an error when fallback CAs are configured: the orders go to them.
    pub async fn connect_or_fall_back(&self) -> Result<(), AcmeError> {
        match self.connect().await {
            Err(err) if self.inner.config.acme.ca_count() > 1 && err.falls_through() => {
                warn!(error = %err, "the first CA cannot be used now; orders go to the fallback CAs");
                Ok(())
            }
            other => other.map(drop),
        }
    }

    /// "Issue these sites now", for `certd issue` whether the CLI runs it or hands it to the daemon:
    /// connects to the CA (or the fallback CA) first; when that fails, each site's record says so
    /// (for `certd status`) and the error is returned. Otherwise each site is renewed when due, or
    /// anyway with `force`.
    pub async fn issue_now(
        &self,
        sites: &[SiteConfig],
        force: bool,
    ) -> Result<Vec<(String, Outcome)>, AcmeError> {
        if let Err(err) = self.connect_or_fall_back().await {
            let now = OffsetDateTime::now_utc();
            for site in sites {
                record_failure(
                    self.store(),
                    &self.config().renewal,
                    site,
                    &err.to_string(),
                    err.retry_after(),
                    now,
                );
            }
            return Err(err);
        }
        Ok(self.renew_all(sites, force).await)
    }

    /// Renews every site in `sites` that is due (all of them with `force`), at most
    /// `acme.concurrency` orders at a time, and returns each site's outcome in the given order.
    pub async fn renew_all(&self, sites: &[SiteConfig], force: bool) -> Vec<(String, Outcome)> {
        let _running = self.inner.running.lock().await;
        let permits = Arc::new(Semaphore::new(self.inner.config.acme.concurrency.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for (index, site) in sites.iter().cloned().enumerate() {
            let renewer = self.clone();
            let permits = permits.clone();
            tasks.spawn(async move {
                // The semaphore is never closed, so acquiring cannot fail.
                let _permit = permits.acquire_owned().await.ok();
                let outcome = renewer.renew_one(&site, force).await;
                (index, site.name().to_owned(), outcome)
            });
        }
        let mut outcomes = Vec::with_capacity(sites.len());
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(done) => outcomes.push(done),
                Err(err) => warn!(%err, "a renewal task ended abnormally"),
            }
        }
        outcomes.sort_by_key(|(index, _, _)| *index);
        outcomes
            .into_iter()
            .map(|(_, site, outcome)| (site, outcome))
            .collect()
    }

    /// Renews `site` under its lease: taken first (another node holding it means that node is on
    /// it), kept alive while the order runs, presented by the install, given back at the end. The
    /// decision whether the site is due is taken after the lease, so it sees what the previous
    /// holder installed.
    async fn renew_one(&self, site: &SiteConfig, force: bool) -> Outcome {
        let store = &self.inner.store;
        let lease_seconds = self.inner.config.storage.lease_seconds();
        let lease = match store.lease(site.name(), lease_seconds) {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                let again =
                    OffsetDateTime::now_utc() + time::Duration::seconds(i64::from(lease_seconds));
                info!(site = site.name(), renew_at = %again, "another node holds the site's lease");
                return Outcome::NotDue { renew_at: again };
            }
            Err(err) => return Outcome::Failed(err.into()),
        };
        // Owned here and aborted when this returns (or is dropped on shutdown).
        let keep_alive = tokio::spawn({
            let store = store.clone();
            let lease = lease.clone();
            async move {
                let every = std::time::Duration::from_secs(u64::from(lease_seconds / 3));
                loop {
                    tokio::time::sleep(every).await;
                    match store.renew_lease(&lease, lease_seconds) {
                        Ok(true) => {}
                        Ok(false) => {
                            warn!(site = %lease.site, "the site's lease was lost; its install will be refused");
                            return;
                        }
                        Err(err) => {
                            warn!(site = %lease.site, %err, "cannot renew the site's lease")
                        }
                    }
                }
            }
        });
        let _abort = AbortOnDrop(keep_alive);
        let outcome = self.renew_one_leased(site, force, &lease).await;
        if let Err(err) = store.release_lease(&lease) {
            warn!(site = site.name(), %err, "cannot release the site's lease (it expires by itself)");
        }
        outcome
    }

    async fn renew_one_leased(&self, site: &SiteConfig, force: bool, lease: &Lease) -> Outcome {
        let span = tracing::info_span!("renew", site = site.name());
        async {
            let now = OffsetDateTime::now_utc();
            let remaining = self.inner.config.renewal.remaining_fraction;
            let state = match site_state(self.inner.store.as_ref(), site, remaining, now) {
                Ok(state) => state,
                Err(err) => return Outcome::Failed(err.into()),
            };
            let record = self
                .inner
                .store
                .load_record(site.name())
                .unwrap_or_default();
            // The site's own choice, else (the automatic choice) what worked last time, else
            // HTTP-01; preflight may still turn an automatic HTTP-01 into TLS-ALPN-01 below.
            let mut challenge = site.challenge.or(record.challenge).unwrap_or_default();
            let mut replaces = None;
            if let (SiteState::Present { .. }, Some(issuer)) = (&state, &record.issued_by) {
                let ours = &self.inner.config.acme.directory_url;
                if issuer != ours && is_staging(ours) && !is_staging(issuer) {
                    let err = RenewError::StagingOverProduction {
                        site: site.name().to_owned(),
                        production: issuer.clone(),
                    };
                    self.record(site, Err(&err));
                    return Outcome::Failed(err);
                }
            }
            match &state {
                SiteState::Present { info, renew_at } => {
                    let due = due_at(info, *renew_at, &record);
                    if !force && now < due {
                        info!(renew_at = %due, "not due");
                        return Outcome::NotDue { renew_at: due };
                    }
                    replaces = self
                        .inner
                        .store
                        .current(site.name())
                        .ok()
                        .flatten()
                        .map(|stored| stored.pem.cert_pem);
                }
                SiteState::Missing {
                    problem: Some(problem),
                } => warn!(%problem, "the stored certificate cannot be served; ordering a new one"),
                SiteState::Missing { problem: None } => {}
            }
            // A name certd has never had a certificate for gets checked first: an order whose
            // validation is bound to fail would only spend the CA's rate limits.
            // The HTTP self-test says nothing about DNS-01, which the propagation check covers.
            let dns01 = site.challenge == Some(crate::config::ChallengeKind::Dns01);
            if self.inner.config.operations.preflight && !dns01 {
                let new_names: Vec<String> = match &state {
                    SiteState::Present { info, .. } => site
                        .names
                        .iter()
                        .filter(|name| !info.names.contains(name))
                        .cloned()
                        .collect(),
                    SiteState::Missing { .. } => site.names.clone(),
                };
                if !new_names.is_empty() {
                    let preflight = Preflight::new(&self.inner.config);
                    let checked = match challenge {
                        ChallengeKind::Http01 => {
                            preflight
                                .check_names(site.name(), &new_names, &self.inner.tokens)
                                .await
                        }
                        // Port 80 plays no part; the names must still resolve to this machine.
                        ChallengeKind::TlsAlpn01 => {
                            preflight.check_names_dns(site.name(), &new_names).await
                        }
                        // The DNS method checks its own records.
                        ChallengeKind::Dns01 => Ok(()),
                    };
                    let checked = match checked {
                        Err(err)
                            if site.challenge.is_none()
                                && self.inner.tokens.alpn().is_answered()
                                && only_port_80_unreachable(&err) =>
                        {
                            // The names resolve (else there were other problems): the automatic
                            // choice moves to port 443.
                            info!(error = %err, "port 80 is unreachable; validating over TLS-ALPN-01 instead");
                            challenge = ChallengeKind::TlsAlpn01;
                            Ok(())
                        }
                        other => other,
                    };
                    if let Err(err) = checked {
                        let err = RenewError::Preflight(err);
                        self.record(site, Err(&err));
                        return Outcome::Failed(err);
                    }
                }
            }
            // The CAs in order: the next one only when the one before is down or rate-limits
            // (`AcmeError::falls_through`); each keeps its own ledger and account.
            let issued_by = record.issued_by.clone();
            let last_ca = self.inner.config.acme.ca_count() - 1;
            let mut index = 0;
            let (ca, result) = loop {
                // `index` never passes `last_ca`, so the first CA is only a formality here.
                let acme = self
                    .inner
                    .config
                    .acme
                    .for_ca(index)
                    .unwrap_or_else(|| self.inner.config.acme.clone());
                let ca = acme.directory_url;
                let entries = self.inner.store.ledger_entries(&ca).unwrap_or_default();
                let limited = ledger::duplicate_limit_applies(&ca)
                    .then(|| ledger::duplicate_limit_until(&entries, &site.names, now))
                    .flatten();
                if let Some(until) = limited {
                    let err = RenewError::DuplicateLimit {
                        site: site.name().to_owned(),
                        until,
                    };
                    if index < last_ca {
                        warn!(%ca, error = %err, "trying the next CA");
                        index += 1;
                        continue;
                    }
                    self.record(site, Err(&err));
                    return Outcome::Failed(err);
                }
                // No entry, no order: a state directory that cannot record orders cannot protect
                // the CA's rate limits (nor store a certificate).
                let ordered = LedgerEntry::new(now, site.name(), &site.names, LedgerEvent::Ordered);
                if let Err(err) = self.inner.store.ledger_append(&ca, &ordered) {
                    let err = RenewError::Store(err);
                    self.record(site, Err(&err));
                    return Outcome::Failed(err);
                }
                // Marked before the order, cleared with its outcome: a crash in between counts as
                // a failed attempt at the next start (see `next_action_at`).
                let started = SiteRecord {
                    attempt_started: Some(now),
                    ..record.clone()
                };
                if let Err(err) = self.inner.store.save_record(site.name(), &started) {
                    warn!(%err, "cannot save the site's record");
                }
                // ARI's `replaces` names a certificate of this CA's; another CA cannot know it.
                let same_issuer = issued_by.as_deref().map_or(index == 0, |issuer| issuer == ca);
                let replaces = replaces.clone().filter(|_| same_issuer);
                let result = self
                    .order_and_store(index, site, replaces, lease, challenge)
                    .await;
                let mut outcome = LedgerEntry::new(
                    OffsetDateTime::now_utc(),
                    site.name(),
                    &site.names,
                    LedgerEvent::Issued,
                );
                match &result {
                    Ok((info, _)) => outcome.serial = Some(info.serial.clone()),
                    Err(err) => {
                        outcome.event = LedgerEvent::Failed;
                        outcome.error = Some(err.to_string());
                        outcome.retry_after = err.retry_after();
                    }
                }
                if let Err(err) = self.inner.store.ledger_append(&ca, &outcome) {
                    warn!(%err, "cannot record the order's outcome in the ledger");
                }
                match &result {
                    Err(RenewError::Acme(err)) if index < last_ca && err.falls_through() => {
                        warn!(%ca, error = %err, "the CA is down or rate-limits; ordering from the next CA");
                        index += 1;
                    }
                    _ => break (ca, result),
                }
            };
            self.record_with(
                site,
                result.as_ref().map(|(info, _)| info),
                Some(challenge),
                Some(ca),
            );
            if let Some(command) = &self.inner.config.operations.hook {
                let event = match &result {
                    // A fleet's nodes run the deploy hook when they swap the pair in
                    // (`daemon::storage_sync`), this one included: the install's announcement
                    // reaches every node, so running it here too would run it twice.
                    Ok(_) if self.inner.store.announces_installs() => None,
                    Ok((info, _)) => Some(HookEvent::Renewed {
                        serial: &info.serial,
                    }),
                    // Another node renewed: nothing failed, and its pair reaches this node's hook.
                    Err(err) if is_fenced(err) => None,
                    Err(err) => Some(HookEvent::Failed {
                        error: &err.to_string(),
                    }),
                };
                if let Some(event) = event {
                    // Hooks are given this machine's copies (the state directory's contract paths).
                    let layout = Layout::new(&self.inner.config.state_dir);
                    hook::run(command, site, &layout, event).await;
                }
            }
            match result {
                Ok((info, pem)) => Outcome::Issued { info, pem },
                Err(err) => Outcome::Failed(err),
            }
        }
        .instrument(span)
        .await
    }

    /// Orders from the CA at `index` of the configured list (0: the first, whose account is kept
    /// connected; the fallbacks connect for the order, their accounts stored like the first's).
    async fn order_and_store(
        &self,
        index: usize,
        site: &SiteConfig,
        replaces: Option<String>,
        lease: &Lease,
        challenge: ChallengeKind,
    ) -> Result<(CertificateInfo, CertifiedPem), RenewError> {
        let config = self
            .inner
            .config
            .acme
            .for_ca(index)
            .unwrap_or_else(|| self.inner.config.acme.clone());
        let acme = if index == 0 {
            self.connect().await?
        } else {
            AcmeClient::connect(
                &config,
                self.inner.store.as_ref(),
                self.inner.config.storage.lease_seconds(),
            )
            .await?
        };
        let offers_profiles = !acme.offered_profiles().is_empty();
        let options = OrderOptions {
            key_type: config.key_type,
            profile: site
                .profile
                .clone()
                .or_else(|| config.profile.clone())
                .filter(|_| offers_profiles),
            replaces,
            challenge,
        };
        let pem = match acme.order(site, &options, &self.inner.tokens).await {
            Err(err) if err.is_unknown_account() => {
                // The CA forgot the stored account: register a new one and try once more.
                warn!(error = %err, "the CA does not know the stored account; creating a new one");
                let fresh = AcmeClient::connect_new_account(
                    &config,
                    self.inner.store.as_ref(),
                    self.inner.config.storage.lease_seconds(),
                    &acme,
                )
                .await?;
                if index == 0 {
                    *self.inner.acme.lock().await = Some(fresh.clone());
                }
                // Another account cannot replace this one's certificate.
                let options = OrderOptions {
                    replaces: None,
                    ..options
                };
                fresh.order(site, &options, &self.inner.tokens).await?
            }
            other => other?,
        };
        let info = certificate::check_pair(&pem, &site.names, OffsetDateTime::now_utc()).map_err(
            |source| RenewError::Unusable {
                site: site.name().to_owned(),
                source,
            },
        )?;
        let stored = self.inner.store.install_leased(site.name(), &pem, lease)?;
        info!(serial = %info.serial, not_after = %info.not_after, version = %stored.version.display(), "certificate stored");
        Ok((info, pem))
    }

    // A record that cannot be written must not turn a stored certificate into a failure: it only feeds
    // `status` and retry spacing, so it is logged and left.
    fn record(&self, site: &SiteConfig, result: Result<&CertificateInfo, &RenewError>) {
        self.record_with(site, result, None, None);
    }

    /// [`Renewer::record`], noting on success which challenge validated the certificate.
    fn record_with(
        &self,
        site: &SiteConfig,
        result: Result<&CertificateInfo, &RenewError>,
        challenge: Option<ChallengeKind>,
        issuer: Option<String>,
    ) {
        let now = OffsetDateTime::now_utc();
        let record = match result {
            Ok(_) => SiteRecord {
                last_attempt: Some(now),
                last_success: Some(now),
                issued_by: issuer.or_else(|| Some(self.inner.config.acme.directory_url.clone())),
                challenge,
                ..SiteRecord::default()
            },
            // A refused install means another node renewed the site and recorded its success in
            // the shared record: a failure written now would overwrite it (and back off a site
            // that is fine).
            Err(err) if is_fenced(err) => {
                info!(error = %err, "another node renewed the site; its certificate stays live");
                return;
            }
            Err(err) => {
                let ca_retry_after = err.retry_after();
                let record = record_failure(
                    self.inner.store.as_ref(),
                    &self.inner.config.renewal,
                    site,
                    &err.to_string(),
                    ca_retry_after,
                    now,
                );
                if let Some(next) = record.next_attempt {
                    warn!(error = %err, next_attempt = %next, "renewal failed; the current certificate stays in service");
                }
                if is_slowed(record.consecutive_failures, &self.inner.config.renewal) {
                    warn!(
                        failures = record.consecutive_failures,
                        "renewal keeps failing; slowed to one attempt a day"
                    );
                }
                return;
            }
        };
        if let Err(err) = self.inner.store.save_record(site.name(), &record) {
            warn!(%err, "cannot save the site's record");
        }
    }
}

/// Whether every problem preflight found is a connection to port 80 that failed, with the names
/// resolving: what the automatic choice takes as "port 80 is blocked" (TLS-ALPN-01 then).
fn only_port_80_unreachable(err: &crate::preflight::PreflightError) -> bool {
    !err.problems.is_empty()
        && err
            .problems
            .iter()
            .all(|problem| matches!(problem, crate::preflight::NameProblem::Unreachable { .. }))
}

/// Whether `directory_url` is a staging (test) CA, whose certificates browsers do not trust.
pub fn is_staging(directory_url: &str) -> bool {
    directory_url == crate::config::LETSENCRYPT_STAGING || directory_url.contains("staging")
}

/// Records a failed attempt for `site` (error text, failure count, next retry time) and returns the
/// record as saved. Also used when the CA cannot be reached at all, which fails every due site.
pub fn record_failure(
    store: &dyn StateStore,
    renewal: &RenewalConfig,
    site: &SiteConfig,
    error: &str,
    ca_retry_after: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> SiteRecord {
    let mut record = store.load_record(site.name()).unwrap_or_default();
    record.last_attempt = Some(now);
    record.attempt_started = None;
    record.last_error = Some(error.to_owned());
    record.consecutive_failures = record.consecutive_failures.saturating_add(1);
    record.next_attempt = Some(retry_at(
        record.consecutive_failures,
        now,
        ca_retry_after,
        renewal,
    ));
    if let Err(err) = store.save_record(site.name(), &record) {
        warn!(site = site.name(), %err, "cannot save the site's record");
    }
    record
}

/// Aborts the task when dropped: the lease keep-alive ends with the renewal that owns it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether `err` is an install the store refused because another node holds the site's lease.
fn is_fenced(err: &RenewError) -> bool {
    matches!(err, RenewError::Store(StoreError::Fenced { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The paused node of the fleet: its install was refused because another node renewed the
    // site meanwhile and recorded its success in the shared record, which must stay.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn a_refused_install_leaves_the_winners_record() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "state_dir = \"{}\"\n[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n\
             [[site]]\nnames = [\"a.test\"]\n[[site.route]]\npath = \"/\"\nproxy = \"http://127.0.0.1:1\"\n",
            dir.path().join("state").display()
        );
        let config =
            crate::config::from_toml(&text, std::path::Path::new("/etc/certd.toml")).unwrap();
        let store: SharedStore = Arc::new(crate::store::Store::open(&config.state_dir).unwrap());
        let site = config.sites[0].clone();
        let won = SiteRecord {
            last_attempt: Some(OffsetDateTime::UNIX_EPOCH),
            last_success: Some(OffsetDateTime::UNIX_EPOCH),
            issued_by: Some("https://ca.test/dir".into()),
            ..SiteRecord::default()
        };
        store.save_record("a.test", &won).unwrap();
        let renewer = Renewer::new(store.clone(), ChallengeTokens::default(), Arc::new(config));
        let fenced = RenewError::Store(StoreError::Fenced {
            site: "a.test".into(),
            reason: "the lease is held by node b".into(),
        });
        renewer.record_with(&site, Err(&fenced), None, None);
        assert_eq!(store.load_record("a.test").unwrap(), won);
        // Any other failure is recorded.
        let broken = RenewError::StagingOverProduction {
            site: "a.test".into(),
            production: "https://ca.test/dir".into(),
        };
        renewer.record_with(&site, Err(&broken), None, None);
        assert_eq!(store.load_record("a.test").unwrap().consecutive_failures, 1);
    }

    #[test]
    fn staging_cas_are_recognised() {
        assert!(is_staging(crate::config::LETSENCRYPT_STAGING));
        assert!(!is_staging(crate::config::LETSENCRYPT_PRODUCTION));
        assert!(!is_staging("https://127.0.0.1:14000/dir"));
    }
}
