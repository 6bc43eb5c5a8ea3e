//! Prometheus metrics for `certd run` (`[metrics] listen`, off by default): per certificate its expiry,
//! next renewal attempt, consecutive failures and last success; per site the requests by status class;
//! and TLS handshakes and their failures.
//!
//! Counters are atomics bumped on the request path; certificate gauges are read from the state
//! directory at scrape time, so they always say what is on disk (and what `certd status` says). The
//! HTTP listener scrapers talk to, with its deadlines and connection cap, is the `listener` module.

mod listener;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use hyper::StatusCode;
use time::OffsetDateTime;

use crate::config::Config;
use crate::renewal::{next_action_at, site_state, SiteState};
use crate::storage::StateStore;

pub use listener::serve;

/// The daemon's counters. Cheap to share (`Arc`).
#[derive(Debug, Default)]
pub struct Metrics {
    handshakes: AtomicU64,
    handshake_errors: AtomicU64,
    sites: RwLock<HashMap<String, Arc<SiteCounters>>>,
    scheduler_restarts: AtomicU64,
    // Unix seconds; 0 until the first pass.
    scheduler_last_run: AtomicI64,
}

/// One site's request counters, by status class (1xx … 5xx).
#[derive(Debug, Default)]
pub struct SiteCounters {
    by_class: [AtomicU64; 5],
}

impl SiteCounters {
    /// Counts one response with `status`.
    pub fn count(&self, status: StatusCode) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// Counts a completed TLS handshake.
    pub fn handshake_ok(&self) {
        self.handshakes.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed or abandoned TLS handshake (unknown name, garbage, timeout).
    pub fn handshake_failed(&self) {
        self.handshake_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters of `site` (its first name), created on first use and kept across reloads.
    pub fn site(&self, site: &str) -> Arc<SiteCounters> {
        if let Some(counters) = self.read().get(site) {
            return counters.clone();
        }
        self.sites
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
            .entry(site.to_owned())
            .or_default()
            .clone()
    }

    /// Counts a restart of the renewal scheduler after it ended abnormally.
    pub fn scheduler_restarted(&self) {
        self.scheduler_restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// How often the renewal scheduler was restarted.
    pub fn scheduler_restarts(&self) -> u64 {
        self.scheduler_restarts.load(Ordering::Relaxed)
    }

    /// Records that the renewal scheduler completed a pass at `at`.
    pub fn scheduler_ran(&self, at: OffsetDateTime) {
        self.scheduler_last_run
            .store(at.unix_timestamp(), Ordering::Relaxed);
    }

    /// When the renewal scheduler last completed a pass, if it has.
    pub fn scheduler_last_run(&self) -> Option<OffsetDateTime> {
        match self.scheduler_last_run.load(Ordering::Relaxed) {
            0 => None,
            seconds => OffsetDateTime::from_unix_timestamp(seconds).ok(),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<SiteCounters>>> {
        self.sites
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The Prometheus text exposition of everything, with certificate gauges for `config`'s sites.
    pub fn render(&self, config: &Config, store: &dyn StateStore, now: OffsetDateTime) -> String {
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, rows: Vec<(String, f64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (site, value) in rows {
                let _ = writeln!(out, "{name}{{site=\"{}\"}} {value}", escape(&site));
            }
        };
        let mut not_after = Vec::new();
        let mut next_renewal = Vec::new();
        let mut failures = Vec::new();
        let mut slowed = Vec::new();
        let mut last_success = Vec::new();
        // A state directory that cannot be listed (an unmounted disk, a lost NFS mount) looks like
        // "no certificates" to the rest; this says it outright.
        let mut readable = store.readable();
        for site in &config.sites {
            let name = site.name().to_owned();
            let record = store.load_record(&name).unwrap_or_default();
            let state = site_state(store, site, config.renewal.remaining_fraction, now);
            readable &= state.is_ok();
            if let Ok(state) = state {
                if let SiteState::Present { info, .. } = &state {
                    not_after.push((name.clone(), info.not_after.unix_timestamp() as f64));
                }
                let next = next_action_at(&state, &record, now, &config.renewal);
                next_renewal.push((name.clone(), next.unix_timestamp() as f64));
            }
            failures.push((name.clone(), f64::from(record.consecutive_failures)));
            let is_slowed = crate::renewal::is_slowed(record.consecutive_failures, &config.renewal);
            slowed.push((name.clone(), if is_slowed { 1.0 } else { 0.0 }));
            if let Some(success) = record.last_success {
                last_success.push((name, success.unix_timestamp() as f64));
            }
        }
        gauge(
            "certd_certificate_not_after_seconds",
            "End of validity of the certificate in service (Unix time).",
            not_after,
        );
        gauge(
            "certd_certificate_next_renewal_seconds",
            "When the next renewal attempt is planned (Unix time).",
            next_renewal,
        );
        gauge(
            "certd_renewal_consecutive_failures",
            "Failed renewal attempts since the last success.",
            failures,
        );
        gauge(
            "certd_renewal_slowed",
            "1 when repeated failures have slowed attempts to one a day.",
            slowed,
        );
        gauge(
            "certd_renewal_last_success_seconds",
            "When a certificate was last obtained (Unix time).",
            last_success,
        );
        let _ = writeln!(
            out,
            "# HELP certd_state_readable 1 when the state directory and every site's certificate in \
             it could be read at this scrape, 0 otherwise.\n\
             # TYPE certd_state_readable gauge\n\
             certd_state_readable {}",
            u8::from(readable)
        );

        let _ = writeln!(
            out,
            "# HELP certd_http_requests_total Requests answered over HTTPS, by site and status class.\n\
             # TYPE certd_http_requests_total counter"
        );
        let mut sites: Vec<(String, Arc<SiteCounters>)> = self
            .read()
            .iter()
            .map(|(site, counters)| (site.clone(), counters.clone()))
            .collect();
        sites.sort_by(|a, b| a.0.cmp(&b.0));
        for (site, counters) in sites {
            for (class, count) in counters.by_class.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "certd_http_requests_total{{site=\"{}\",code=\"{}xx\"}} {}",
                    escape(&site),
                    class + 1,
                    count.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP certd_tls_handshakes_total Completed TLS handshakes.\n\
             # TYPE certd_tls_handshakes_total counter\n\
             certd_tls_handshakes_total {}\n\
             # HELP certd_tls_handshake_errors_total TLS handshakes that failed or timed out.\n\
             # TYPE certd_tls_handshake_errors_total counter\n\
             certd_tls_handshake_errors_total {}",
            self.handshakes.load(Ordering::Relaxed),
            self.handshake_errors.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP certd_scheduler_restarts_total Times the renewal scheduler ended abnormally and was started again.\n\
             # TYPE certd_scheduler_restarts_total counter\n\
             certd_scheduler_restarts_total {}\n\
             # HELP certd_scheduler_last_run_seconds When the renewal scheduler last completed a pass (Unix time; 0: not yet).\n\
             # TYPE certd_scheduler_last_run_seconds gauge\n\
             certd_scheduler_last_run_seconds {}",
            self.scheduler_restarts.load(Ordering::Relaxed),
            self.scheduler_last_run.load(Ordering::Relaxed),
        );
        render_log_drops(
            &mut out,
            crate::logging::dropped_lines().saturating_add(crate::access_log::dropped_lines()),
        );
        out
    }
}

/// Log lines dropped because stderr did not keep up (see [`crate::logging`]).
fn render_log_drops(out: &mut String, dropped: u64) {
    let _ = writeln!(
        out,
        "# HELP certd_log_lines_dropped_total Log lines dropped because the log queue was full \
         (stderr did not keep up).\n\
         # TYPE certd_log_lines_dropped_total counter\n\
         certd_log_lines_dropped_total {dropped}"
    );
}

/// Label values escape backslash, quote and newline (Prometheus text format).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// What a scrape needs: the counters, and the current configuration and store for the gauges.
pub type ScrapeSource = Arc<dyn Fn() -> String + Send + Sync>;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_site_and_class() {
        let metrics = Metrics::default();
        metrics.site("a.test").count(StatusCode::OK);
        metrics.site("a.test").count(StatusCode::NOT_FOUND);
        metrics.site("a.test").count(StatusCode::OK);
        metrics.handshake_ok();
        metrics.handshake_failed();
        let config = crate::config::from_toml(
            "[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n[[site]]\nnames = [\"a.test\"]\n",
            std::path::Path::new("/tmp/certd.toml"),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let text = metrics.render(&config, &store, OffsetDateTime::now_utc());
        assert!(
            text.contains("certd_http_requests_total{site=\"a.test\",code=\"2xx\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("certd_http_requests_total{site=\"a.test\",code=\"4xx\"} 1"),
            "{text}"
        );
        assert!(text.contains("certd_tls_handshakes_total 1"), "{text}");
        assert!(
            text.contains("certd_tls_handshake_errors_total 1"),
            "{text}"
        );
        assert!(
            text.contains("certd_renewal_consecutive_failures{site=\"a.test\"} 0"),
            "{text}"
        );
        // No certificate yet: the next renewal is now.
        assert!(
            text.contains("certd_certificate_next_renewal_seconds{site=\"a.test\"}"),
            "{text}"
        );
        assert!(
            !text.contains("certd_certificate_not_after_seconds{"),
            "{text}"
        );
    }

    #[test]
    fn an_unreadable_state_directory_is_reported() {
        let metrics = Metrics::default();
        let config = crate::config::from_toml(
            "[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n[[site]]\nnames = [\"a.test\"]\n",
            std::path::Path::new("/tmp/certd.toml"),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let now = OffsetDateTime::now_utc();
        let text = metrics.render(&config, &store, now);
        assert!(text.contains("\ncertd_state_readable 1\n"), "{text}");
        // A live link that points nowhere sensible: the site's certificate cannot be read.
        let live = store.layout().live_link("a.test").unwrap();
        std::fs::create_dir_all(live.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink("elsewhere", &live).unwrap();
        let text = metrics.render(&config, &store, now);
        assert!(text.contains("\ncertd_state_readable 0\n"), "{text}");
        std::fs::remove_file(&live).unwrap();
        // The whole state directory gone (an unmounted disk).
        let gone = crate::store::Store::open(dir.path()).unwrap();
        drop(dir);
        let text = metrics.render(&config, &gone, now);
        assert!(text.contains("\ncertd_state_readable 0\n"), "{text}");
    }

    #[test]
    fn the_scheduler_is_reported_and_far_record_dates_do_not_panic() {
        let metrics = Metrics::default();
        let config = crate::config::from_toml(
            "[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n[[site]]\nnames = [\"a.test\"]\n",
            std::path::Path::new("/tmp/certd.toml"),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        // A crash mid-order recorded at the last second of year 9999 (a broken clock, an edited
        // file): the first retry after it is beyond what a date can hold.
        let last_second = OffsetDateTime::from_unix_timestamp(253_402_300_799).unwrap();
        let record = crate::store::SiteRecord {
            attempt_started: Some(last_second),
            ..Default::default()
        };
        store.save_record("a.test", &record).unwrap();
        let now = OffsetDateTime::from_unix_timestamp(1_780_000_000).unwrap();
        let text = metrics.render(&config, &store, now);
        assert!(
            text.contains("certd_scheduler_last_run_seconds 0\n"),
            "{text}"
        );
        assert!(
            text.contains("certd_scheduler_restarts_total 0\n"),
            "{text}"
        );
        assert!(
            text.contains("certd_certificate_next_renewal_seconds{site=\"a.test\"} 253402214400\n"),
            "held at 9999-12-31: {text}"
        );
        metrics.scheduler_restarted();
        metrics.scheduler_ran(now);
        let text = metrics.render(&config, &store, now);
        assert!(
            text.contains(
                "# TYPE certd_scheduler_restarts_total counter\ncertd_scheduler_restarts_total 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE certd_scheduler_last_run_seconds gauge\ncertd_scheduler_last_run_seconds 1780000000"),
            "{text}"
        );
        assert_eq!(metrics.scheduler_last_run(), Some(now));
    }

    #[test]
    fn dropped_log_lines_are_a_counter() {
        let mut out = String::new();
        render_log_drops(&mut out, 42);
        assert!(
            out.contains("# TYPE certd_log_lines_dropped_total counter\n"),
            "{out}"
        );
        assert!(
            out.ends_with("\ncertd_log_lines_dropped_total 42\n"),
            "{out}"
        );
    }
}
