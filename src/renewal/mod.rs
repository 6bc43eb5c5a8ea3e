//! The renewal schedule: when a site's certificate is due, when to try again after a failure, and when
//! the daemon should next act for a site.
//!
//! The decisions are pure functions of times ([`renew_at`], [`retry_at`], [`next_action_at`]) with
//! table-driven tests, as in certmagic. [`Renewer`] is the one pipeline that renews a site (order →
//! check → store → record); [`Scheduler`] is the daemon's loop that runs it when due.

mod renewer;
mod scheduler;

pub use renewer::{record_failure, Outcome, RenewError, Renewer};
pub use scheduler::{Publish, Scheduler, SchedulerHandle};

use time::{Duration, OffsetDateTime};

use crate::certificate::{self, CertificateError, CertificateInfo};
use crate::config::{RenewalConfig, SiteConfig};
use crate::store::{SiteRecord, Store, StoreError};

/// When a certificate valid from `not_before` to `not_after` is due for renewal: when less than
/// `remaining_fraction` of its lifetime remains.
pub fn renew_at(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    remaining_fraction: f64,
) -> OffsetDateTime {
    let lifetime = not_after - not_before;
    not_after - lifetime * remaining_fraction.clamp(0.0, 1.0)
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
    let backoff = (first * 2_i32.pow(doublings)).min(longest);
    let ours = now + backoff;
    match ca_retry_after {
        Some(theirs) if theirs > ours => theirs,
        _ => ours,
    }
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

/// When the daemon should next act for a site: at once when it has no usable certificate, otherwise at
/// its renewal time plus jitter; never before a retry time recorded after a failure.
pub fn next_action_at(
    state: &SiteState,
    record: &SiteRecord,
    now: OffsetDateTime,
) -> OffsetDateTime {
    let planned = match state {
        SiteState::Missing { .. } => now,
        SiteState::Present { info, renew_at } => *renew_at + jitter(info),
    };
    match record.next_attempt {
        Some(retry) if record.consecutive_failures > 0 && retry > planned => retry,
        _ => planned,
    }
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
    pub fn is_due(&self, now: OffsetDateTime) -> bool {
        match self {
            Self::Missing { .. } => true,
            Self::Present { renew_at, .. } => now >= *renew_at,
        }
    }
}

/// Reads the site's stored pair and decides whether it is due.
pub fn site_state(
    store: &Store,
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
                datetime!(2026-01-11 0:00 UTC),
                0.0,
                datetime!(2026-01-11 0:00 UTC),
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
            (9, None, now + Duration::hours(6)),
            (30, None, now + Duration::hours(6)),
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
        assert_eq!(next_action_at(&missing, &clean, now), now);
        assert_eq!(
            next_action_at(&missing, &failing, now),
            now + Duration::minutes(10)
        );
        let planned = next_action_at(&present, &clean, now);
        assert!(planned >= datetime!(2026-06-30 0:00 UTC));
        assert!(
            planned <= datetime!(2026-06-30 1:00 UTC),
            "jitter is at most an hour: {planned}"
        );
        assert_eq!(
            planned,
            next_action_at(&present, &clean, now),
            "jitter is stable"
        );
        assert_eq!(
            next_action_at(&present, &failing, now),
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
        assert!(jitters
            .iter()
            .all(|j| *j >= Duration::ZERO && *j <= Duration::minutes(101)));
    }
}
