//! Whether the store answers, and since when: what the daemon's metrics (`certd_storage_up`,
//! `certd_storage_unreachable_seconds`), its renewals and its log go by while a networked backend's
//! database is down. The backend records every probe; only a change of state is logged, so an
//! outage of an hour is two lines, not one per attempt.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use time::OffsetDateTime;

/// The store's reachability as last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthState {
    /// Whether the last probe reached the store.
    pub reachable: bool,
    /// Since when it has been so (the first probe that saw it, or the start).
    pub since: OffsetDateTime,
}

impl HealthState {
    /// How long the store has been unreachable at `now`; zero while it is reachable.
    pub fn unreachable_for(&self, now: OffsetDateTime) -> std::time::Duration {
        if self.reachable {
            return std::time::Duration::ZERO;
        }
        std::time::Duration::try_from(now - self.since).unwrap_or_default()
    }
}

/// Shared record of the store's reachability (cheap to read; written by the backend's probes).
#[derive(Debug)]
pub struct StorageHealth {
    state: Mutex<HealthState>,
    described: String,
    /// Where each change is also written, for `certd status` (another process).
    record: Mutex<Option<PathBuf>>,
}

/// The file in state_dir a daemon records its store's reachability in.
pub const RECORD_FILE: &str = "storage-health.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct Recorded {
    reachable: bool,
    #[serde(with = "time::serde::rfc3339")]
    since: OffsetDateTime,
}

/// The reachability a daemon recorded in `state_dir`, if it did.
pub fn recorded(state_dir: &Path) -> Option<HealthState> {
    let text = std::fs::read_to_string(state_dir.join(RECORD_FILE)).ok()?;
    let recorded: Recorded = serde_json::from_str(&text).ok()?;
    Some(HealthState {
        reachable: recorded.reachable,
        since: recorded.since,
    })
}

impl StorageHealth {
    /// A store taken to be reachable since `now` (it was when it was opened).
    pub fn new(described: String, now: OffsetDateTime) -> Self {
        Self {
            state: Mutex::new(HealthState {
                reachable: true,
                since: now,
            }),
            described,
            record: Mutex::new(None),
        }
    }

    /// Writes the state to `state_dir`'s [`RECORD_FILE`] now and at every change.
    pub fn record_in(&self, state_dir: &Path) {
        let path = state_dir.join(RECORD_FILE);
        self.write(&path, self.state());
        *self
            .record
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(path);
    }

    fn write(&self, path: &Path, state: HealthState) {
        let recorded = Recorded {
            reachable: state.reachable,
            since: state.since,
        };
        let written = serde_json::to_vec(&recorded)
            .map_err(|err| err.to_string())
            .and_then(|bytes| {
                crate::store::write_atomic(path, &bytes, 0o644).map_err(|err| err.to_string())
            });
        if let Err(err) = written {
            tracing::warn!(path = %path.display(), %err, "cannot record the storage's reachability for `certd status`");
        }
    }

    /// The state as last recorded.
    pub fn state(&self) -> HealthState {
        *self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a probe that reached the store; true (and logged) when it was unreachable before.
    pub fn reached(&self, now: OffsetDateTime) -> bool {
        let Some(was) = self.change(true, now) else {
            return false;
        };
        tracing::info!(
            store = %self.described,
            down_seconds = was.unreachable_for(now).as_secs(),
            "storage reachable again"
        );
        true
    }

    /// Records a probe that failed with `reason`; true (and logged) when it was reachable before.
    pub fn failed(&self, now: OffsetDateTime, reason: &dyn std::fmt::Display) -> bool {
        if self.change(false, now).is_none() {
            return false;
        }
        tracing::warn!(
            store = %self.described,
            %reason,
            "storage unreachable; serving what this node has, renewals wait until it is back"
        );
        true
    }

    /// Sets the state; the previous one when it changed.
    fn change(&self, reachable: bool, now: OffsetDateTime) -> Option<HealthState> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.reachable == reachable {
            return None;
        }
        let was = *state;
        *state = HealthState {
            reachable,
            since: now,
        };
        let now_state = *state;
        drop(state);
        let record = self
            .record
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(path) = record {
            self.write(&path, now_state);
        }
        Some(was)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn only_a_change_of_state_counts_and_the_outage_is_timed_from_its_first_failure() {
        let start = datetime!(2026-06-01 10:00 UTC);
        let health = StorageHealth::new("db".into(), start);
        assert!(!health.reached(start), "reachable already");
        assert_eq!(
            health.state().unreachable_for(start),
            std::time::Duration::ZERO
        );

        let down = datetime!(2026-06-01 10:05 UTC);
        assert!(health.failed(down, &"refused"));
        assert!(!health.failed(datetime!(2026-06-01 10:06 UTC), &"refused"));
        let state = health.state();
        assert!(!state.reachable);
        assert_eq!(state.since, down);
        assert_eq!(
            state.unreachable_for(datetime!(2026-06-01 10:15 UTC)),
            std::time::Duration::from_secs(600)
        );
        // A clock that went back yields zero, not a panic.
        assert_eq!(
            state.unreachable_for(datetime!(2026-06-01 09:00 UTC)),
            std::time::Duration::ZERO
        );

        let dir = tempfile::tempdir().unwrap();
        health.record_in(dir.path());
        assert_eq!(recorded(dir.path()), Some(health.state()));

        let back = datetime!(2026-06-01 10:20 UTC);
        assert!(health.reached(back));
        assert_eq!(
            health.state(),
            HealthState {
                reachable: true,
                since: back
            }
        );
        assert_eq!(
            recorded(dir.path()),
            Some(health.state()),
            "a change is recorded"
        );
    }
}
