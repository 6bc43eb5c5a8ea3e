//! The renewal schedule: when a site's certificate is due, when to try again after a failure, and when
//! the daemon should next act for a site.
//!
//! The decisions are pure functions of times ([`renew_at`], [`due_at`], [`retry_at`],
//! [`next_action_at`], [`pick_in_window`]) with table-driven tests, as in certmagic. When the CA offers
//! ACME Renewal Information (RFC 9773), its window decides; otherwise the lifetime rule does. [`Renewer`] is the one pipeline that renews a site (order →
//! check → store → record); [`Scheduler`] is the daemon's loop that runs it when due.

mod activity;
mod renewer;
mod scheduler;

pub use activity::SchedulerActivity;
pub use renewer::{Outcome, Renewer};
pub use scheduler::{Publish, Scheduler, SchedulerHandle, STALE_AFTER};

use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use crate::certificate::{self, CertificateError, CertificateInfo};
use crate::config::{RenewalConfig, SiteConfig};
use crate::storage::StateStore;
use crate::store::{SiteRecord, StoreError};

/// Certificates living this long or less renew with half their lifetime left, whatever the configured
/// fraction (a 6-day certificate renewed with a third left has two days to spare: too few).
const SHORT_LIFETIME: Duration = Duration::days(10);

/// The spacing of attempts once they have slowed (`[renewal] slow_after_failures`).
const SLOW_RETRY: Duration = Duration::days(1);

/// The latest time any renewal decision yields. Dates from the network (certificate validity, ARI
/// windows, `Retry-After`) or the configuration (retry delays) are added with [`saturating_add`], which
/// stops here instead of overflowing (a panic in `OffsetDateTime + Duration`). It is far beyond any
/// certificate's life, yet RFC 3339 (four-digit years) and Unix time can still express it.
pub const FAR_FUTURE: OffsetDateTime = datetime!(9999-12-31 0:00 UTC);

/// The earliest time a decision yields (the start of Unix time, so metrics never see a negative one).
pub const FAR_PAST: OffsetDateTime = datetime!(1970-01-01 0:00 UTC);

/// `at + by`, held within [`FAR_PAST`, `FAR_FUTURE`] instead of panicking on overflow.
pub fn saturating_add(at: OffsetDateTime, by: Duration) -> OffsetDateTime {
    match at.checked_add(by) {
        Some(sum) => sum.clamp(FAR_PAST, FAR_FUTURE),
        None if by.is_negative() => FAR_PAST,
        None => FAR_FUTURE,
    }
}

/// `at + by` for a `std` duration (which may exceed what `time::Duration` holds), saturating like
/// [`saturating_add`].
pub fn saturating_add_std(at: OffsetDateTime, by: std::time::Duration) -> OffsetDateTime {
    match Duration::try_from(by) {
        Ok(by) => saturating_add(at, by),
        Err(_) => FAR_FUTURE,
    }
}

/// The lifetime rule: a certificate valid from `not_before` to `not_after` is due when less than
/// `remaining_fraction` of its lifetime remains (at least half for lifetimes of 10 days or less).
pub fn renew_at(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    remaining_fraction: f64,
) -> OffsetDateTime {
    let lifetime = not_after - not_before;
    let mut fraction = remaining_fraction.clamp(0.0, 1.0);
    if lifetime <= SHORT_LIFETIME {
        fraction = fraction.max(0.5);
    }
    not_after - lifetime * fraction
}

/// When the certificate `info` is due: the time picked inside the CA's ARI window when the record
/// holds one for this very certificate, else the lifetime rule (`lifetime_renew_at`) plus [`jitter`].
pub fn due_at(
    info: &CertificateInfo,
    lifetime_renew_at: OffsetDateTime,
    record: &SiteRecord,
) -> OffsetDateTime {
    match (&record.ari_serial, record.ari_renew_at) {
        (Some(serial), Some(at)) if *serial == info.serial => at,
        _ => saturating_add(lifetime_renew_at, jitter(info)),
    }
}

/// A time inside the CA's suggested window `[start, end]`, uniformly at random as RFC 9773 §4.2
/// advises (so that many clients do not renew at the window's first second); `now` when the window
/// is already over. `random` is in `[0, 1)`.
pub fn pick_in_window(
    start: OffsetDateTime,
    end: OffsetDateTime,
    now: OffsetDateTime,
    random: f64,
) -> OffsetDateTime {
    if end <= now {
        return now;
    }
    let start = start.max(now);
    if end <= start {
        return start;
    }
    // NaN would panic in `Duration * f64`.
    let random = if random.is_finite() {
        random.clamp(0.0, 1.0)
    } else {
        0.0
    };
    // Both ends are valid dates, so the span fits a `Duration` and the pick lies between them.
    saturating_add(start, (end - start) * random)
}

/// When to try again after `consecutive_failures` failures (1 for the first), at `now`: exponential
/// backoff from `[renewal] first_retry` (minutes) to `longest_retry` (hours), but never before the CA's
/// `Retry-After`.
pub fn retry_at(
    consecutive_failures: u32,
    now: OffsetDateTime,
    ca_retry_after: Option<OffsetDateTime>,
    renewal: &RenewalConfig,
) -> OffsetDateTime {
    let doublings = consecutive_failures.saturating_sub(1).min(16);
    let first = Duration::try_from(renewal.first_retry).unwrap_or(Duration::minutes(5));
    let longest = Duration::try_from(renewal.longest_retry).unwrap_or(Duration::hours(6));
    // The configuration bounds both delays, but this must not panic whatever it holds.
    let mut backoff = first
        .checked_mul(2_i32.pow(doublings))
        .unwrap_or(Duration::MAX)
        .min(longest);
    if is_slowed(consecutive_failures, renewal) {
        backoff = backoff.max(SLOW_RETRY);
    }
    let ours = saturating_add(now, backoff);
    match ca_retry_after {
        Some(theirs) if theirs > ours => theirs,
        _ => ours,
    }
}

/// Whether attempts have slowed to one a day after `consecutive_failures` failures in a row.
pub fn is_slowed(consecutive_failures: u32, renewal: &RenewalConfig) -> bool {
    renewal.slow_after_failures > 0 && consecutive_failures >= renewal.slow_after_failures
}

/// Spreads renewals of many certificates: a delay after `renew_at` derived from the serial, up to 1% of
/// the lifetime and at most an hour, so certificates issued together do not all renew in the same
/// second, yet the same certificate always gets the same time (stable across restarts).
pub fn jitter(info: &CertificateInfo) -> Duration {
    let lifetime = info.not_after - info.not_before;
    let ceiling = (lifetime / 100_i32).min(Duration::hours(1));
    let ceiling_ms = ceiling.whole_milliseconds().max(1) as u64;
    // FNV-1a over the serial: stable, cheap, and well spread for this purpose.
    let hash = info
        .serial
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    Duration::milliseconds((hash % ceiling_ms) as i64)
}

/// When the daemon should next act for a site: at once when it has no usable certificate, otherwise
/// when it is due ([`due_at`]); never before a retry time recorded after a failure, and, when an
/// attempt was cut short by a crash, never before that attempt plus the first retry delay.
pub fn next_action_at(
    state: &SiteState,
    record: &SiteRecord,
    now: OffsetDateTime,
    renewal: &RenewalConfig,
) -> OffsetDateTime {
    let mut planned = match state {
        SiteState::Missing { .. } => now,
        SiteState::Present { info, renew_at } => due_at(info, *renew_at, record),
    };
    if let Some(retry) = record.next_attempt {
        if record.consecutive_failures > 0 {
            planned = planned.max(retry);
        }
    }
    if let Some(started) = record.attempt_started {
        let first = Duration::try_from(renewal.first_retry).unwrap_or(Duration::minutes(5));
        planned = planned.max(saturating_add(started, first));
    }
    planned
}

/// What the store holds for a site, and whether it needs renewing.
#[derive(Debug, Clone)]
pub enum SiteState {
    /// No certificate yet (or one that cannot be served: unreadable, mismatched, not covering the names).
    Missing {
        /// Why an existing pair cannot be used, if there is one.
        problem: Option<String>,
    },
    /// A usable certificate.
    Present {
        /// What it says about itself.
        info: CertificateInfo,
        /// When it is due for renewal.
        renew_at: OffsetDateTime,
    },
}

impl SiteState {
    /// Whether an order should be placed at `now`.
    #[cfg(test)]
    pub fn is_due(&self, now: OffsetDateTime) -> bool {
        match self {
            Self::Missing { .. } => true,
            Self::Present { renew_at, .. } => now >= *renew_at,
        }
    }
}

/// Reads the site's stored pair and decides whether it is due.
pub fn site_state(
    store: &dyn StateStore,
    site: &SiteConfig,
    remaining_fraction: f64,
    now: OffsetDateTime,
) -> Result<SiteState, StoreError> {
    let Some(stored) = store.current(site.name())? else {
        return Ok(SiteState::Missing { problem: None });
    };
    // An expired pair still "exists", but it is due; any other defect means it cannot be served.
    let checked = certificate::check_pair(&stored.pem, &site.names, now);
    let info = match checked {
        Ok(info) => info,
        Err(CertificateError::OutOfDate { .. }) => {
            match certificate::parse_pem(&stored.pem.cert_pem) {
                Ok(info) => info,
                Err(err) => {
                    return Ok(SiteState::Missing {
                        problem: Some(err.to_string()),
                    })
                }
            }
        }
        Err(err) => {
            return Ok(SiteState::Missing {
                problem: Some(err.to_string()),
            })
        }
    };
    let renew_at = renew_at(info.not_before, info.not_after, remaining_fraction);
    Ok(SiteState::Present { info, renew_at })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn renewal_is_due_when_a_third_of_the_lifetime_remains() {
        let cases = [
            // (not_before, not_after, fraction, expected renew_at)
            (
                datetime!(2026-01-01 0:00 UTC),
                datetime!(2026-04-01 0:00 UTC),
                1.0 / 3.0,
                datetime!(2026-03-02 0:00 UTC),
            ),
            (
                datetime!(2026-01-01 0:00 UTC),
                datetime!(2026-01-31 0:00 UTC),
                0.5,
                datetime!(2026-01-16 0:00 UTC),
            ),
            (
                datetime!(2026-01-01 0:00 UTC),
                datetime!(2026-02-20 0:00 UTC),
                0.0,
                datetime!(2026-02-20 0:00 UTC),
            ),
        ];
        for (not_before, not_after, fraction, expected) in cases {
            assert_eq!(
                renew_at(not_before, not_after, fraction),
                expected,
                "{not_before}..{not_after} at {fraction}"
            );
        }
    }

    #[test]
    fn retries_back_off_from_minutes_to_hours_and_honour_retry_after() {
        let now = datetime!(2026-06-01 12:00 UTC);
        let cases = [
            (1, None, now + Duration::minutes(5)),
            (2, None, now + Duration::minutes(10)),
            (4, None, now + Duration::minutes(40)),
            (3, None, now + Duration::minutes(20)),
            // Five failures in a row: one attempt a day (`slow_after_failures`).
            (9, None, now + Duration::days(1)),
            // The CA's Retry-After wins when it is later than our backoff...
            (1, Some(now + Duration::hours(3)), now + Duration::hours(3)),
            // ...and never makes us retry sooner.
            (
                4,
                Some(now + Duration::minutes(1)),
                now + Duration::minutes(40),
            ),
        ];
        for (failures, retry_after, expected) in cases {
            assert_eq!(
                retry_at(failures, now, retry_after, &RenewalConfig::default()),
                expected,
                "{failures} failures, {retry_after:?}"
            );
        }
    }

    #[test]
    fn a_missing_certificate_is_always_due() {
        let state = SiteState::Missing { problem: None };
        assert!(state.is_due(datetime!(2000-01-01 0:00 UTC)));
    }

    #[test]
    fn the_next_action_waits_for_a_recorded_retry_but_not_for_an_old_one() {
        let now = datetime!(2026-06-01 12:00 UTC);
        let info = CertificateInfo {
            serial: "0a1b".into(),
            issuer: "CN=test".into(),
            not_before: datetime!(2026-05-01 0:00 UTC),
            not_after: datetime!(2026-07-30 0:00 UTC),
            names: vec!["a.test".into()],
        };
        let present = SiteState::Present {
            renew_at: datetime!(2026-06-30 0:00 UTC),
            info: info.clone(),
        };
        let missing = SiteState::Missing { problem: None };
        let clean = SiteRecord::default();
        let failing = SiteRecord {
            consecutive_failures: 2,
            next_attempt: Some(now + Duration::minutes(10)),
            ..SiteRecord::default()
        };
        assert_eq!(
            next_action_at(&missing, &clean, now, &RenewalConfig::default()),
            now
        );
        assert_eq!(
            next_action_at(&missing, &failing, now, &RenewalConfig::default()),
            now + Duration::minutes(10)
        );
        let planned = next_action_at(&present, &clean, now, &RenewalConfig::default());
        // The lifetime rule's time plus serial 0a1b's jitter: FNV-1a("0a1b") mod one hour = 249 ms.
        assert_eq!(planned, datetime!(2026-06-30 0:00:00.249 UTC));
        assert_eq!(
            next_action_at(&present, &failing, now, &RenewalConfig::default()),
            planned,
            "an earlier retry does not pull renewal forward"
        );
    }

    #[test]
    fn jitter_differs_between_certificates_and_stays_small() {
        let base = CertificateInfo {
            serial: String::new(),
            issuer: String::new(),
            not_before: datetime!(2026-01-01 0:00 UTC),
            not_after: datetime!(2026-01-08 0:00 UTC),
            names: vec![],
        };
        let jitters: std::collections::HashSet<_> = (0..50)
            .map(|n| {
                jitter(&CertificateInfo {
                    serial: format!("{n:04x}"),
                    ..base.clone()
                })
            })
            .collect();
        assert!(
            jitters.len() > 40,
            "serials should spread: {}",
            jitters.len()
        );
        // 1% of 7 days is 100.8 minutes, so the one-hour ceiling applies.
        assert!(
            jitters
                .iter()
                .all(|j| *j >= Duration::ZERO && *j < Duration::hours(1)),
            "{jitters:?}"
        );
        // Fixed values (FNV-1a of the serial, modulo the ceiling in milliseconds), so that a change
        // to the spreading is noticed: serial 0000 → 548,789 ms under a one-hour ceiling...
        let ninety_days = CertificateInfo {
            serial: "0000".into(),
            not_after: datetime!(2026-04-01 0:00 UTC),
            ..base.clone()
        };
        assert_eq!(jitter(&ninety_days), Duration::milliseconds(548_789));
        // ...and serial 0001 (920,578 under one hour) under 1% of one day, 864,000 ms.
        let one_day = CertificateInfo {
            serial: "0001".into(),
            not_after: datetime!(2026-01-02 0:00 UTC),
            ..base.clone()
        };
        assert_eq!(jitter(&one_day), Duration::milliseconds(776_578));
        // A certificate that ends before it starts gets none (and no panic).
        let backwards = CertificateInfo {
            serial: "0001".into(),
            not_before: datetime!(2026-01-02 0:00 UTC),
            not_after: datetime!(2026-01-01 0:00 UTC),
            ..base
        };
        assert_eq!(jitter(&backwards), Duration::ZERO);
    }

    #[test]
    fn short_lifetimes_renew_with_half_left() {
        let start = datetime!(2026-01-01 0:00 UTC);
        // 6 days (shortlived profile): half, not a third.
        assert_eq!(
            renew_at(start, start + Duration::days(6), 1.0 / 3.0),
            start + Duration::days(3)
        );
        // 45 days (tlsserver profile): a third.
        assert_eq!(
            renew_at(start, start + Duration::days(45), 1.0 / 3.0),
            start + Duration::days(30)
        );
        // A configured fraction above a half stays.
        assert_eq!(
            renew_at(start, start + Duration::days(6), 0.75),
            start + Duration::hours(36)
        );
    }

    #[test]
    fn repeated_failures_slow_to_one_attempt_a_day() {
        let now = datetime!(2026-06-01 12:00 UTC);
        let renewal = RenewalConfig::default();
        assert_eq!(
            retry_at(4, now, None, &renewal),
            now + Duration::minutes(40)
        );
        assert_eq!(retry_at(5, now, None, &renewal), now + Duration::days(1));
        assert_eq!(retry_at(40, now, None, &renewal), now + Duration::days(1));
        let never = RenewalConfig {
            slow_after_failures: 0,
            ..renewal
        };
        assert_eq!(retry_at(40, now, None, &never), now + Duration::hours(6));
    }

    #[test]
    fn the_ari_window_decides_when_it_is_for_this_certificate() {
        let info = CertificateInfo {
            serial: "0a1b".into(),
            issuer: "CN=test".into(),
            not_before: datetime!(2026-05-01 0:00 UTC),
            not_after: datetime!(2026-07-30 0:00 UTC),
            names: vec!["a.test".into()],
        };
        let lifetime = datetime!(2026-06-30 0:00 UTC);
        let ari = SiteRecord {
            ari_serial: Some("0a1b".into()),
            ari_renew_at: Some(datetime!(2026-06-05 3:00 UTC)),
            ..SiteRecord::default()
        };
        assert_eq!(
            due_at(&info, lifetime, &ari),
            datetime!(2026-06-05 3:00 UTC)
        );
        let stale = SiteRecord {
            ari_serial: Some("ffff".into()),
            ..ari.clone()
        };
        // Otherwise the lifetime rule plus serial 0a1b's jitter (249 ms).
        let with_jitter = datetime!(2026-06-30 0:00:00.249 UTC);
        assert_eq!(due_at(&info, lifetime, &stale), with_jitter);
        assert_eq!(due_at(&info, lifetime, &SiteRecord::default()), with_jitter);
    }

    #[test]
    fn a_time_is_picked_inside_the_window() {
        let now = datetime!(2026-06-01 12:00 UTC);
        let (start, end) = (now + Duration::hours(10), now + Duration::hours(20));
        assert_eq!(pick_in_window(start, end, now, 0.0), start);
        assert_eq!(
            pick_in_window(start, end, now, 0.5),
            now + Duration::hours(15)
        );
        // A window already open starts now; one already over means now.
        assert_eq!(pick_in_window(now - Duration::hours(1), end, now, 0.0), now);
        assert_eq!(
            pick_in_window(now - Duration::hours(2), now - Duration::hours(1), now, 0.7),
            now
        );
    }

    #[test]
    fn a_crash_mid_order_counts_as_a_failed_attempt() {
        let now = datetime!(2026-06-01 12:00 UTC);
        let missing = SiteState::Missing { problem: None };
        let crashed = SiteRecord {
            attempt_started: Some(now - Duration::minutes(1)),
            ..SiteRecord::default()
        };
        assert_eq!(
            next_action_at(&missing, &crashed, now, &RenewalConfig::default()),
            now + Duration::minutes(4)
        );
    }
    #[test]
    fn absurd_durations_and_dates_saturate_instead_of_panicking() {
        let now = datetime!(2026-06-01 12:00 UTC);
        assert_eq!(
            saturating_add(now, Duration::hours(1)),
            datetime!(2026-06-01 13:00 UTC)
        );
        for by in [
            Duration::MAX,
            Duration::seconds(i64::MAX),
            Duration::seconds(300_000_000_000),
        ] {
            assert_eq!(saturating_add(now, by), FAR_FUTURE, "{by}");
        }
        for by in [Duration::MIN, Duration::seconds(-300_000_000_000)] {
            assert_eq!(saturating_add(now, by), FAR_PAST, "{by}");
        }
        assert_eq!(
            saturating_add_std(now, std::time::Duration::MAX),
            FAR_FUTURE
        );
        assert_eq!(
            saturating_add_std(now, std::time::Duration::from_secs(300_000_000_000)),
            FAR_FUTURE
        );
        assert_eq!(
            saturating_add(datetime!(9999-12-31 23:59:59 UTC), Duration::ZERO),
            FAR_FUTURE
        );
    }

    #[test]
    fn retries_with_absurd_delays_saturate() {
        let now = datetime!(2026-06-01 12:00 UTC);
        let huge = std::time::Duration::from_secs(i64::MAX as u64);
        let renewal = RenewalConfig {
            first_retry: huge,
            longest_retry: huge,
            ..RenewalConfig::default()
        };
        for failures in [1, 2, 17, u32::MAX] {
            assert_eq!(
                retry_at(failures, now, None, &renewal),
                FAR_FUTURE,
                "{failures}"
            );
        }
        // A CA's far date is kept (it is valid) and never pulls a retry sooner.
        assert_eq!(
            retry_at(
                1,
                now,
                Some(datetime!(9000-01-01 0:00 UTC)),
                &RenewalConfig::default()
            ),
            datetime!(9000-01-01 0:00 UTC)
        );
        // A crash mid-order at the very end of time, plus a first retry of i64::MAX seconds.
        let crashed = SiteRecord {
            attempt_started: Some(datetime!(9999-12-31 23:00 UTC)),
            ..SiteRecord::default()
        };
        let missing = SiteState::Missing { problem: None };
        assert_eq!(
            next_action_at(&missing, &crashed, now, &renewal),
            FAR_FUTURE
        );
    }

    #[test]
    fn far_certificate_dates_and_windows_do_not_panic() {
        let info = CertificateInfo {
            serial: "0000".into(),
            issuer: "CN=test".into(),
            not_before: datetime!(-9999-01-01 0:00 UTC),
            not_after: datetime!(9999-12-31 23:59:59 UTC),
            names: vec!["a.test".into()],
        };
        // X.509's "no expiry" date: renew_at is two thirds through, due_at saturates (jitter 9 min).
        let renew = renew_at(info.not_before, info.not_after, 1.0 / 3.0);
        assert!(renew > datetime!(3000-01-01 0:00 UTC), "{renew}");
        assert_eq!(
            due_at(&info, info.not_after, &SiteRecord::default()),
            FAR_FUTURE
        );
        let present = SiteState::Present {
            info: info.clone(),
            renew_at: info.not_after,
        };
        assert_eq!(
            next_action_at(
                &present,
                &SiteRecord::default(),
                datetime!(2026-06-01 12:00 UTC),
                &RenewalConfig::default()
            ),
            FAR_FUTURE
        );

        let now = datetime!(2026-06-01 12:00 UTC);
        let (far_start, far_end) = (
            datetime!(9999-12-30 0:00 UTC),
            datetime!(9999-12-31 23:59:59 UTC),
        );
        assert_eq!(pick_in_window(far_start, far_end, now, 0.0), far_start);
        assert_eq!(
            pick_in_window(far_start, far_end, now, 1.0),
            FAR_FUTURE,
            "held at FAR_FUTURE"
        );
        // The widest window there is, and a random number that is not one.
        let widest = pick_in_window(datetime!(-9999-01-01 0:00 UTC), far_end, now, 0.5);
        assert!(widest > now && widest <= FAR_FUTURE, "{widest}");
        assert_eq!(pick_in_window(far_start, far_end, now, f64::NAN), far_start);
        // A window that ends before it starts.
        assert_eq!(
            pick_in_window(
                datetime!(2026-06-03 0:00 UTC),
                datetime!(2026-06-02 0:00 UTC),
                now,
                0.5
            ),
            datetime!(2026-06-03 0:00 UTC)
        );
    }
}
