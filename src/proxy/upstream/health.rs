//! Passive health of one upstream server, as nginx's `max_fails` / `fail_timeout`: a server that
//! fails `max_fails` times within `fail_timeout` is left out for `fail_timeout`. Nothing is probed;
//! only real requests count. Every method takes the time as an argument, so the state machine is a
//! pure function of the events and tests need no clock.

use std::time::{Duration, Instant};

/// The failures of one server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Health {
    /// Failures counted in the current window.
    fails: u32,
    /// When the first failure of the current window happened.
    window_start: Option<Instant>,
    /// The server is left out until then.
    down_until: Option<Instant>,
}

impl Health {
    /// Whether the server may be picked at `now`.
    pub(crate) fn is_up(&self, now: Instant) -> bool {
        self.down_until.is_none_or(|until| now >= until)
    }

    /// Counts a failure at `now`; the server goes down when it is the `max_fails`-th within
    /// `fail_timeout` (never with `max_fails` 0). A server that was tried while down (every server
    /// was) stays down for another `fail_timeout`. Returns whether the server is now down.
    pub(crate) fn failed(&mut self, now: Instant, max_fails: u32, fail_timeout: Duration) -> bool {
        if max_fails == 0 {
            return false;
        }
        let until = now.checked_add(fail_timeout);
        if !self.is_up(now) {
            self.down_until = until;
            return true;
        }
        let window_over = self
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) > fail_timeout);
        if window_over {
            self.window_start = Some(now);
            self.fails = 0;
        }
        self.fails = self.fails.saturating_add(1);
        if self.fails >= max_fails {
            // `None` only if `now + fail_timeout` overflows the clock: then it stays up, which is
            // the safe side (requests still get answers).
            self.down_until = until;
            self.fails = 0;
            self.window_start = None;
        }
        !self.is_up(now)
    }

    /// A request succeeded: its failures are forgotten, and a server that was tried while down is
    /// back.
    pub(crate) fn succeeded(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn at(start: Instant, seconds: u64) -> Instant {
        start + Duration::from_secs(seconds)
    }

    #[test]
    fn max_fails_within_fail_timeout_take_a_server_down_for_fail_timeout() {
        let t0 = Instant::now();
        let mut health = Health::default();
        assert!(!health.failed(t0, 3, TIMEOUT));
        assert!(!health.failed(at(t0, 4), 3, TIMEOUT));
        assert!(health.is_up(at(t0, 5)));
        assert!(
            health.failed(at(t0, 8), 3, TIMEOUT),
            "third failure within 10 s"
        );
        assert!(!health.is_up(at(t0, 9)));
        assert!(!health.is_up(at(t0, 17)));
        assert!(health.is_up(at(t0, 18)), "back after fail_timeout");
    }

    #[test]
    fn failures_further_apart_than_fail_timeout_do_not_add_up() {
        let t0 = Instant::now();
        let mut health = Health::default();
        for step in 0..5 {
            assert!(!health.failed(at(t0, step * 11), 2, TIMEOUT), "step {step}");
        }
        assert!(health.is_up(at(t0, 60)));
    }

    #[test]
    fn one_failure_is_enough_by_default_and_zero_never_counts() {
        let t0 = Instant::now();
        let mut health = Health::default();
        assert!(health.failed(t0, 1, TIMEOUT));
        let mut never = Health::default();
        for step in 0..100 {
            assert!(!never.failed(at(t0, step), 0, TIMEOUT));
        }
        assert!(never.is_up(t0));
    }

    #[test]
    fn a_success_forgets_failures_and_brings_a_down_server_back() {
        let t0 = Instant::now();
        let mut health = Health::default();
        health.failed(t0, 2, TIMEOUT);
        health.succeeded();
        assert!(
            !health.failed(at(t0, 1), 2, TIMEOUT),
            "the count started again"
        );
        assert!(health.failed(at(t0, 2), 2, TIMEOUT));
        health.succeeded();
        assert!(health.is_up(at(t0, 3)));
    }

    #[test]
    fn failing_while_down_extends_the_down_time() {
        let t0 = Instant::now();
        let mut health = Health::default();
        health.failed(t0, 1, TIMEOUT);
        assert!(health.failed(at(t0, 5), 1, TIMEOUT));
        assert!(!health.is_up(at(t0, 14)));
        assert!(health.is_up(at(t0, 15)));
    }
}
