//! The daemon's renewal loop: one task that knows every site's next action time, sleeps until the
//! earliest, renews what is due through the [`Renewer`], and hands new pairs to the caller to publish.
//!
//! Times come from the store on every pass (certificate validity and the per-site record), so the
//! schedule survives restarts: a site that failed waits for its recorded retry time even after a crash,
//! and a crash loop cannot hammer the CA. It sleeps on tokio's clock, so tests can pause time.
//!
//! The loop must never stop silently while the daemon keeps serving: [`Scheduler::spawn`] runs it
//! under [`supervise`], which starts it again (with a log line, `certd_scheduler_restarts_total`
//! and a short backoff) if it panics or returns before shutdown. Each completed pass is recorded in
//! memory (`certd_scheduler_last_run_seconds`) and in `state/scheduler.json`, which `certd status`
//! reads to warn about a scheduler that has stopped running.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn, Instrument};

use super::activity::SchedulerActivity;
use super::{
    next_action_at, pick_in_window, retry_at, saturating_add, saturating_add_std, site_state,
    Outcome, Renewer,
};
use crate::certificate;
use crate::certificate::CertifiedPem;
use crate::config::SiteConfig;
use crate::storage::StateStore;
use crate::store::SchedulerHeartbeat;

/// Re-evaluate at least this often even when nothing is due, so clock jumps and outside changes to the
/// state directory are noticed.
pub const LONGEST_SLEEP: Duration = Duration::from_secs(3600);
/// How long renewals first wait for an unreachable shared store; it doubles up to the longest.
const STORAGE_FIRST_WAIT: Duration = Duration::from_secs(1);
const STORAGE_LONGEST_WAIT: Duration = Duration::from_secs(10);

/// A scheduler whose last completed pass is older than this has stopped working: two of its longest
/// sleeps, so one slow pass (many sites, a slow CA) is not yet alarming. `certd status` warns then.
pub const STALE_AFTER: Duration = Duration::from_secs(2 * 3600);
/// Ask for an ARI window at most this often, whatever the CA's `Retry-After` says...
const ARI_SHORTEST_POLL: Duration = Duration::from_secs(60);
/// ...and at least this often.
const ARI_LONGEST_POLL: Duration = Duration::from_secs(24 * 3600);
/// When a site's state cannot be read, look again after this long.
const UNREADABLE_RETRY: time::Duration = time::Duration::minutes(5);
/// How long the supervisor waits before starting a failed scheduler again: short, since renewals are
/// stopped meanwhile, doubling while it keeps failing quickly so a panic loop does not spin.
const RESTART_BACKOFF: RestartBackoff = RestartBackoff {
    first: Duration::from_secs(5),
    longest: Duration::from_secs(300),
};

/// Called with every newly stored pair; the daemon publishes it to the SNI resolver.
pub type Publish = Arc<dyn Fn(&SiteConfig, &CertifiedPem) + Send + Sync>;

/// The renewal loop.
pub struct Scheduler {
    renewer: watch::Receiver<Renewer>,
    publish: Publish,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
    // Failures also kept in memory, so that a state directory that cannot record them (read-only, full)
    // still cannot make the loop retry at once: site → (failures, not before). Lost when the loop is
    // restarted after a panic; the restart backoff still spaces attempts.
    held_off: HashMap<String, (u32, OffsetDateTime)>,
    activity: Arc<SchedulerActivity>,
    // When this daemon's scheduler first started, for the heartbeat.
    started: OffsetDateTime,
    // Whether saving the heartbeat failed already (warned once, then only at debug).
    heartbeat_unsaved: bool,
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
                activity: Arc::default(),
                started: OffsetDateTime::now_utc(),
                heartbeat_unsaved: false,
            },
            handle,
        )
    }

    /// Records restarts and completed passes in `activity` (the one the daemon's metrics read).
    pub fn with_activity(mut self, activity: Arc<SchedulerActivity>) -> Self {
        self.activity = activity;
        self
    }

    /// A fresh loop with the same inputs, for the supervisor to start (again).
    fn replica(&self) -> Self {
        Self {
            renewer: self.renewer.clone(),
            publish: self.publish.clone(),
            wake: self.wake.clone(),
            shutdown: self.shutdown.clone(),
            held_off: HashMap::new(),
            activity: self.activity.clone(),
            started: self.started,
            heartbeat_unsaved: false,
        }
    }

    /// Records a completed pass: in memory for metrics, and in `state/scheduler.json` for `status`.
    fn beat(&mut self, renewer: &Renewer) {
        let now = OffsetDateTime::now_utc();
        self.activity.ran(now);
        if let Err(err) = save_heartbeat(renewer, self.started, &self.activity) {
            if std::mem::replace(&mut self.heartbeat_unsaved, true) {
                debug!(%err, "cannot save the scheduler heartbeat");
            } else {
                warn!(%err, "cannot save the scheduler heartbeat; `certd status` cannot tell whether renewals run");
            }
        }
    }

    /// Runs until shutdown. An order in flight at shutdown is abandoned: the store only ever switches
    /// to a complete pair, so nothing is left half-done.
    pub async fn run(mut self) {
        let mut storage_wait = STORAGE_FIRST_WAIT;
        loop {
            let renewer = self.renewer.borrow_and_update().clone();
            // While the shared store is down an order could be neither leased nor installed:
            // renewals wait, with backoff, and probe it (its health logs the change, once).
            if store_unreachable(renewer.store()) {
                debug!(
                    seconds = storage_wait.as_secs(),
                    "storage unreachable; renewals wait"
                );
                tokio::select! {
                    () = tokio::time::sleep(storage_wait) => {}
                    () = self.shutdown.cancelled() => return,
                }
                storage_wait = storage_wait.saturating_mul(2).min(STORAGE_LONGEST_WAIT);
                let _ = renewer.store().readable();
                continue;
            }
            storage_wait = STORAGE_FIRST_WAIT;
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
                        Outcome::NotDue { renew_at } => {
                            // Another node holds the lease, or renewed the site meanwhile: look
                            // again then, not in a loop of lease attempts.
                            let failures = self.held_off.get(&name).map_or(0, |(count, _)| *count);
                            self.held_off.insert(name.clone(), (failures, renew_at));
                        }
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
                self.beat(&renewer);
                continue;
            }
            self.beat(&renewer);
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

    /// Spawns [`Scheduler::run`] on `tasks` under [`supervise`], which starts it again should it
    /// panic or end before shutdown, and itself ends on shutdown.
    pub fn spawn(self, tasks: &tokio_util::task::TaskTracker) {
        let shutdown = self.shutdown.clone();
        let activity = self.activity.clone();
        let renewer = self.renewer.clone();
        let started = self.started;
        // Written before the first pass, so `status` knows this daemon runs a scheduler even if that
        // pass never completes.
        if let Err(err) = save_heartbeat(&renewer.borrow(), started, &activity) {
            warn!(%err, "cannot save the scheduler heartbeat; `certd status` cannot tell whether renewals run");
        }
        let on_restart = move |_: &str| {
            activity.restarted();
            if let Err(err) = save_heartbeat(&renewer.borrow(), started, &activity) {
                debug!(%err, "cannot save the scheduler heartbeat");
            }
        };
        let template = self;
        tasks.spawn(
            supervise(
                move || template.replica().run(),
                shutdown,
                RESTART_BACKOFF,
                on_restart,
            )
            .instrument(tracing::info_span!("scheduler")),
        );
    }
}

/// Writes the heartbeat for `certd status`: this process, when its scheduler started, and the last
/// completed pass and restart count from `activity`.
fn save_heartbeat(
    renewer: &Renewer,
    started: OffsetDateTime,
    activity: &SchedulerActivity,
) -> Result<(), crate::store::StoreError> {
    renewer
        .store()
        .save_scheduler_heartbeat(&SchedulerHeartbeat {
            pid: std::process::id(),
            started,
            last_run: activity.last_run(),
            restarts: activity.restarts(),
        })
}

/// How long [`supervise`] waits before a restart: `first`, doubling after each run that failed
/// within [`RESTART_RESET_AFTER`], up to `longest`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RestartBackoff {
    pub(crate) first: Duration,
    pub(crate) longest: Duration,
}

/// A run that lasted this long before failing starts the backoff over.
const RESTART_RESET_AFTER: Duration = Duration::from_secs(600);

/// Runs the task `start` makes, and when it panics or returns while `shutdown` is not cancelled,
/// logs an error with the reason, calls `on_restart` with it, waits per `backoff` and starts a new
/// one. Returns on shutdown (aborting the task if it has not ended by itself), so the supervisor has
/// its owner's lifetime and the task has the supervisor's.
pub(crate) async fn supervise<F, Fut>(
    mut start: F,
    shutdown: CancellationToken,
    backoff: RestartBackoff,
    mut on_restart: impl FnMut(&str),
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut delay = backoff.first;
    loop {
        let began = tokio::time::Instant::now();
        let mut task = tokio::spawn(start().in_current_span());
        let joined = tokio::select! {
            joined = &mut task => joined,
            () = shutdown.cancelled() => {
                task.abort();
                let _ = task.await;
                return;
            }
        };
        let reason = match joined {
            Ok(()) if shutdown.is_cancelled() => return,
            Ok(()) => "it returned before shutdown".to_owned(),
            Err(err) if err.is_panic() => {
                format!("it panicked: {}", panic_message(err.into_panic()))
            }
            // Cancelled: only the runtime itself shutting down aborts it.
            Err(_) => return,
        };
        if began.elapsed() >= RESTART_RESET_AFTER {
            delay = backoff.first;
        }
        error!(
            %reason,
            restart_in_ms = delay.as_millis() as u64,
            "the renewal scheduler stopped; starting it again"
        );
        on_restart(&reason);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => return,
        }
        delay = delay.saturating_mul(2).min(backoff.longest);
    }
}

/// The text a panic was raised with, when it has one.
fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "(no message)".to_owned()
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
        // Only the first CA is asked: a certificate a fallback CA issued is unknown to it, and
        // renews by the lifetime rule (its order starts from the first CA again).
        if record
            .issued_by
            .as_deref()
            .is_some_and(|issuer| issuer != config.acme.directory_url)
        {
            continue;
        }
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
        let answer = acme
            .renewal_window(&stored.pem.cert_pem)
            .await
            .map(|window| window.map(|window| usable_window(window, info.not_after)));
        match answer {
            Ok(Some(Err(reason))) => {
                warn!(
                    site = site.name(),
                    %reason,
                    "ignoring the CA's renewal window (ARI); using the lifetime rule for now"
                );
                record.ari_poll_at = Some(saturating_add(now, UNREADABLE_RETRY));
                if !for_this_certificate {
                    record.ari_renew_at = None;
                }
            }
            Ok(Some(Ok(window))) => {
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
                record.ari_poll_at = Some(ari_poll_at(now, window.poll_after));
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
                record.ari_poll_at = Some(saturating_add_std(now, ARI_LONGEST_POLL));
            }
            Err(err) => {
                warn!(site = site.name(), %err, "cannot fetch the renewal window (ARI); using the lifetime rule for now");
                record.ari_poll_at = Some(saturating_add(now, UNREADABLE_RETRY));
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

/// When to ask for the window again after the CA said `poll_after` (its `Retry-After`): between a
/// minute and a day later whatever it said (RFC 9773 §4.3).
fn ari_poll_at(now: OffsetDateTime, poll_after: Duration) -> OffsetDateTime {
    saturating_add_std(now, poll_after.clamp(ARI_SHORTEST_POLL, ARI_LONGEST_POLL))
}

/// `window` if it can be followed for a certificate valid until `not_after`: one that ends before it
/// starts, or starts only after the certificate has expired, is a CA defect (following it would let
/// the certificate lapse), so the lifetime rule decides instead.
fn usable_window(
    window: crate::acme::RenewalWindow,
    not_after: OffsetDateTime,
) -> Result<crate::acme::RenewalWindow, String> {
    if window.end < window.start {
        return Err(format!(
            "the window ends ({}) before it starts ({})",
            window.end, window.start
        ));
    }
    if window.start > not_after {
        return Err(format!(
            "the window starts ({}) after the certificate expires ({not_after})",
            window.start
        ));
    }
    Ok(window)
}

/// Whether the shared store is known to be down now (a store only this node uses never is).
fn store_unreachable(store: &dyn StateStore) -> bool {
    store
        .health()
        .is_some_and(|health| !health.state().reachable)
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
            Err(err) if store_unreachable(store) => {
                // The shared store went down during this pass: the loop's storage backoff takes
                // over at once, rather than this site waiting the unreadable-state delay.
                debug!(site = site.name(), %err, "cannot read the stored certificate: storage unreachable");
                saturating_add_std(now, STORAGE_FIRST_WAIT)
            }
            Err(err) => {
                warn!(site = site.name(), %err, "cannot read the stored certificate");
                saturating_add(now, UNREADABLE_RETRY)
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use time::macros::datetime;

    const QUICK: RestartBackoff = RestartBackoff {
        first: Duration::from_millis(10),
        longest: Duration::from_millis(40),
    };

    #[tokio::test]
    async fn a_panicking_scheduler_is_restarted_and_the_supervisor_ends_on_shutdown() {
        let shutdown = CancellationToken::new();
        let starts = Arc::new(AtomicU32::new(0));
        let (restarted_tx, mut restarted) = tokio::sync::mpsc::unbounded_channel();
        let body = {
            let (starts, shutdown) = (starts.clone(), shutdown.clone());
            move || {
                let (starts, shutdown) = (starts.clone(), shutdown.clone());
                async move {
                    match starts.fetch_add(1, Ordering::SeqCst) {
                        0 => panic!("an absurd date"),
                        // Returning while not shut down is restarted too.
                        1 => {}
                        _ => shutdown.cancelled().await,
                    }
                }
            }
        };
        let supervisor = tokio::spawn(supervise(body, shutdown.clone(), QUICK, move |reason| {
            let _ = restarted_tx.send(reason.to_owned());
        }));
        let first = restarted.recv().await.unwrap();
        assert_eq!(first, "it panicked: an absurd date");
        let second = restarted.recv().await.unwrap();
        assert_eq!(second, "it returned before shutdown");
        // The third run lives until shutdown.
        while starts.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!supervisor.is_finished());
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), supervisor)
            .await
            .expect("the supervisor ends on shutdown")
            .unwrap();
        assert_eq!(starts.load(Ordering::SeqCst), 3);
        assert!(restarted.try_recv().is_err(), "no restart after shutdown");
    }

    #[tokio::test]
    async fn a_task_that_ignores_shutdown_is_aborted_and_backoff_waits_end_on_shutdown() {
        let shutdown = CancellationToken::new();
        let stuck = supervise(std::future::pending::<()>, shutdown.clone(), QUICK, |_| {});
        let supervisor = tokio::spawn(stuck);
        tokio::time::sleep(Duration::from_millis(20)).await;
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), supervisor)
            .await
            .expect("the supervisor ends on shutdown")
            .unwrap();

        // Shut down during a (long) backoff wait.
        let shutdown = CancellationToken::new();
        let slow = RestartBackoff {
            first: Duration::from_secs(3600),
            longest: Duration::from_secs(3600),
        };
        let (tx, mut restarted) = tokio::sync::mpsc::unbounded_channel();
        let supervisor = tokio::spawn(supervise(
            || async { panic!("once") },
            shutdown.clone(),
            slow,
            move |_| {
                let _ = tx.send(());
            },
        ));
        restarted.recv().await.unwrap();
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), supervisor)
            .await
            .expect("the backoff wait ends on shutdown")
            .unwrap();
    }

    fn window(start: OffsetDateTime, end: OffsetDateTime) -> crate::acme::RenewalWindow {
        crate::acme::RenewalWindow {
            start,
            end,
            poll_after: Duration::from_secs(300_000_000_000),
            explanation_url: None,
        }
    }

    #[test]
    fn the_ari_poll_is_between_a_minute_and_a_day() {
        let now = datetime!(2026-06-01 12:00 UTC);
        for (poll_after, expected) in [
            (
                Duration::from_secs(300_000_000_000),
                datetime!(2026-06-02 12:00 UTC),
            ),
            (Duration::MAX, datetime!(2026-06-02 12:00 UTC)),
            (
                Duration::from_secs(i64::MAX as u64),
                datetime!(2026-06-02 12:00 UTC),
            ),
            (Duration::ZERO, datetime!(2026-06-01 12:01 UTC)),
            (Duration::from_secs(7200), datetime!(2026-06-01 14:00 UTC)),
        ] {
            assert_eq!(ari_poll_at(now, poll_after), expected, "{poll_after:?}");
        }
        // Even at the end of time.
        assert_eq!(
            ari_poll_at(datetime!(9999-12-31 23:59 UTC), Duration::MAX),
            crate::renewal::FAR_FUTURE
        );
    }

    #[test]
    fn absurd_ari_windows_are_not_followed() {
        let not_after = datetime!(2026-07-30 0:00 UTC);
        assert!(usable_window(
            window(
                datetime!(2026-06-05 0:00 UTC),
                datetime!(2026-06-06 0:00 UTC)
            ),
            not_after
        )
        .is_ok());
        let backwards = usable_window(
            window(
                datetime!(2026-06-06 0:00 UTC),
                datetime!(2026-06-05 0:00 UTC),
            ),
            not_after,
        );
        assert!(backwards.unwrap_err().contains("before it starts"));
        let far = usable_window(
            window(
                datetime!(9999-12-30 0:00 UTC),
                datetime!(9999-12-31 23:59:59 UTC),
            ),
            not_after,
        );
        assert!(far.unwrap_err().contains("after the certificate expires"));
    }
}
