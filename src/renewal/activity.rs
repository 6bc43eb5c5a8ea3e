//! What the renewal scheduler of this process has done: when it last completed a pass and how often
//! it was restarted after ending abnormally. The scheduler writes it; its heartbeat
//! (`state/scheduler.json`, for `certd status`) and the metrics (`certd_scheduler_*`, read at each
//! scrape) read it. Plain data owned by renewal, so that renewal needs nothing of the metrics.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use time::OffsetDateTime;

/// The scheduler's pass and restart counts, shared (`Arc`) between the scheduler and its readers.
#[derive(Debug, Default)]
pub struct SchedulerActivity {
    /// Unix seconds of the last completed pass; 0 until the first.
    last_run: AtomicI64,
    restarts: AtomicU64,
}

impl SchedulerActivity {
    /// Records that the scheduler completed a pass at `at`.
    pub fn ran(&self, at: OffsetDateTime) {
        self.last_run.store(at.unix_timestamp(), Ordering::Relaxed);
    }

    /// Counts a restart of the scheduler after it ended abnormally.
    pub fn restarted(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// When the scheduler last completed a pass, if it has.
    pub fn last_run(&self) -> Option<OffsetDateTime> {
        match self.last_run_unix() {
            0 => None,
            seconds => OffsetDateTime::from_unix_timestamp(seconds).ok(),
        }
    }

    /// The last completed pass in Unix seconds, 0 before the first (as the metric says it).
    pub fn last_run_unix(&self) -> i64 {
        self.last_run.load(Ordering::Relaxed)
    }

    /// How often the scheduler was restarted.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_and_restarts_are_kept() {
        let activity = SchedulerActivity::default();
        assert_eq!((activity.last_run(), activity.restarts()), (None, 0));
        assert_eq!(activity.last_run_unix(), 0);
        let at = OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_780_000_000);
        activity.ran(at);
        activity.restarted();
        activity.restarted();
        assert_eq!(activity.last_run(), Some(at));
        assert_eq!(activity.last_run_unix(), 1_780_000_000);
        assert_eq!(activity.restarts(), 2);
    }
}
