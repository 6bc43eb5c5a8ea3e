//! The daemon's renewal loop: one task that knows every site's next action time, sleeps until the
//! earliest, renews what is due through the [`Renewer`], and hands new pairs to the caller to publish.
//!
//! Times come from the store on every pass (certificate validity and the per-site record), so the
//! schedule survives restarts: a site that failed waits for its recorded retry time even after a crash,
//! and a crash loop cannot hammer the CA. It sleeps on tokio's clock, so tests can pause time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use super::{next_action_at, pick_in_window, retry_at, site_state, Outcome, Renewer};
use crate::certificate;
use crate::certificate::CertifiedPem;
use crate::config::SiteConfig;

/// Re-evaluate at least this often even when nothing is due, so clock jumps and outside changes to the
/// state directory are noticed.
const LONGEST_SLEEP: Duration = Duration::from_secs(3600);
/// Ask for an ARI window at most this often, whatever the CA's `Retry-After` says...
const ARI_SHORTEST_POLL: Duration = Duration::from_secs(60);
/// ...and at least this often.
const ARI_LONGEST_POLL: Duration = Duration::from_secs(24 * 3600);
/// When a site's state cannot be read, look again after this long.
const UNREADABLE_RETRY: time::Duration = time::Duration::minutes(5);

/// Called with every newly stored pair; the daemon publishes it to the SNI resolver.
pub type Publish = Arc<dyn Fn(&SiteConfig, &CertifiedPem) + Send + Sync>;

/// The renewal loop.
pub struct Scheduler {
    renewer: watch::Receiver<Renewer>,
    publish: Publish,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
    // Failures also kept in memory, so that a state directory that cannot record them (read-only, full)
    // still cannot make the loop retry at once: site → (failures, not before).
    held_off: HashMap<String, (u32, OffsetDateTime)>,
}

/// Lets others nudge the scheduler to re-plan at once (after a reload, or a renewal it did not run).
#[derive(Debug, Clone)]
pub struct SchedulerHandle {
    wake: Arc<Notify>,
}

impl SchedulerHandle {
    /// Re-plan now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

impl Scheduler {
    /// A scheduler renewing with whatever [`Renewer`] `renewer` holds (a reload sends a new one), calling
    /// `publish` for each new pair, until `shutdown` is cancelled.
    pub fn new(
        renewer: watch::Receiver<Renewer>,
        publish: Publish,
        shutdown: CancellationToken,
    ) -> (Self, SchedulerHandle) {
        let wake = Arc::new(Notify::new());
        let handle = SchedulerHandle { wake: wake.clone() };
        (
            Self {
                renewer,
                publish,
                wake,
                shutdown,
                held_off: HashMap::new(),
            },
            handle,
        )
    }

    /// Runs until shutdown. An order in flight at shutdown is abandoned: the store only ever switches
    /// to a complete pair, so nothing is left half-done.
    pub async fn run(mut self) {
        loop {
            let renewer = self.renewer.borrow_and_update().clone();
            tokio::select! {
                () = refresh_renewal_windows(&renewer) => {}
                () = self.shutdown.cancelled() => return,
            }
            let (due, next) = plan(&renewer, &self.held_off, OffsetDateTime::now_utc());
            if !due.is_empty() {
                let names: Vec<&str> = due.iter().map(SiteConfig::name).collect();
                info!(sites = ?names, "renewing");
                let outcomes = tokio::select! {
                    outcomes = renewer.renew_all(&due, false) => outcomes,
                    () = self.shutdown.cancelled() => return,
                };
                let now = OffsetDateTime::now_utc();
                for (name, outcome) in outcomes {
                    match outcome {
                        Outcome::Issued { pem, .. } => {
                            self.held_off.remove(&name);
                            if let Some(site) = due.iter().find(|site| site.name() == name) {
                                (self.publish)(site, &pem);
                            }
                        }
                        Outcome::NotDue { .. } => {}
                        Outcome::Failed(err) => {
                            let failures =
                                self.held_off.get(&name).map_or(0, |(count, _)| *count) + 1;
                            let ca_retry_after = err.retry_after();
                            let until =
                                retry_at(failures, now, ca_retry_after, &renewer.config().renewal);
                            self.held_off.insert(name.clone(), (failures, until));
                            warn!(site = %name, error = %err, next_attempt = %until, "renewal failed; the current certificate stays in service");
                        }
                    }
                }
                continue;
            }
            let sleep = next
                .map(|at| {
                    let wait = at - OffsetDateTime::now_utc();
                    Duration::try_from(wait).unwrap_or(Duration::ZERO)
                })
                .unwrap_or(LONGEST_SLEEP)
                .min(LONGEST_SLEEP);
            debug!(seconds = sleep.as_secs(), "next renewal check");
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                () = self.wake.notified() => {}
                changed = self.renewer.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Spawns [`Scheduler::run`] on `tasks`.
    pub fn spawn(self, tasks: &tokio_util::task::TaskTracker) {
        tasks.spawn(self.run().instrument(tracing::info_span!("scheduler")));
    }
}

/// Asks the CA for the renewal window (ARI, RFC 9773) of every stored certificate whose last answer
/// has expired, picks a time at random inside it, and records it with the next poll time, so a restart
/// keeps the choice. A CA without ARI is asked again a day later; one that cannot be reached is left
/// for the next pass (the lifetime rule still applies meanwhile).
async fn refresh_renewal_windows(renewer: &Renewer) {
    let config = renewer.config();
    let store = renewer.store();
    for site in &config.sites {
        let now = OffsetDateTime::now_utc();
        let Ok(Some(stored)) = store.current(site.name()) else {
            continue;
        };
        let Ok(info) = certificate::parse_pem(&stored.pem.cert_pem) else {
            continue;
        };
        let mut record = store.load_record(site.name()).unwrap_or_default();
        let for_this_certificate = record.ari_serial.as_deref() == Some(info.serial.as_str());
        if for_this_certificate && record.ari_poll_at.is_some_and(|poll| poll > now) {
            continue;
        }
        let acme = match renewer.connect().await {
            Ok(acme) => acme,
            Err(err) => {
                debug!(%err, "cannot ask the CA for renewal windows now");
                return;
            }
        };
        match acme.renewal_window(&stored.pem.cert_pem).await {
            Ok(Some(window)) => {
                // RFC 9773 §4.2: keep an earlier pick while it stays inside the window.
                let keep = for_this_certificate
                    && record
                        .ari_renew_at
                        .is_some_and(|at| at >= window.start && at <= window.end);
                if !keep {
                    record.ari_renew_at = Some(pick_in_window(
                        window.start,
                        window.end,
                        now,
                        rand::random::<f64>(),
                    ));
                }
                let poll = window.poll_after.clamp(ARI_SHORTEST_POLL, ARI_LONGEST_POLL);
                record.ari_poll_at = Some(now + poll);
                info!(
                    site = site.name(),
                    window_start = %window.start,
                    window_end = %window.end,
                    renew_at = ?record.ari_renew_at,
                    explanation = window.explanation_url.as_deref().unwrap_or("-"),
                    "renewal window from the CA (ARI)"
                );
            }
            Ok(None) => {
                record.ari_renew_at = None;
                record.ari_poll_at = Some(now + ARI_LONGEST_POLL);
            }
            Err(err) => {
                warn!(site = site.name(), %err, "cannot fetch the renewal window (ARI); using the lifetime rule for now");
                record.ari_poll_at = Some(now + UNREADABLE_RETRY);
                if !for_this_certificate {
                    record.ari_renew_at = None;
                }
            }
        }
        record.ari_serial = Some(info.serial);
        if let Err(err) = store.save_record(site.name(), &record) {
            warn!(site = site.name(), %err, "cannot save the site's record");
        }
    }
}

/// The sites due at `now`, and the earliest future action time among the others.
fn plan(
    renewer: &Renewer,
    held_off: &HashMap<String, (u32, OffsetDateTime)>,
    now: OffsetDateTime,
) -> (Vec<SiteConfig>, Option<OffsetDateTime>) {
    let config = renewer.config();
    let store = renewer.store();
    let mut due = Vec::new();
    let mut next: Option<OffsetDateTime> = None;
    for site in &config.sites {
        let mut at = match site_state(store, site, config.renewal.remaining_fraction, now) {
            Ok(state) => {
                let record = store.load_record(site.name()).unwrap_or_default();
                next_action_at(&state, &record, now, &config.renewal)
            }
            Err(err) => {
                warn!(site = site.name(), %err, "cannot read the stored certificate");
                now + UNREADABLE_RETRY
            }
        };
        if let Some((_, until)) = held_off.get(site.name()) {
            at = at.max(*until);
        }
        // Wake up to ask the CA for a fresh renewal window too.
        if let Some(poll) = store
            .load_record(site.name())
            .ok()
            .and_then(|record| record.ari_poll_at)
            .filter(|poll| *poll > now)
        {
            next = Some(next.map_or(poll, |earliest| earliest.min(poll)));
        }
        if at <= now {
            due.push(site.clone());
        } else {
            next = Some(next.map_or(at, |earliest| earliest.min(at)));
        }
    }
    (due, next)
}
