//! Prometheus metrics for `certd run` (`[metrics] listen`, off by default): per certificate its expiry,
//! next renewal attempt, consecutive failures and last success; per site the requests by status class;
//! and TLS handshakes and their failures.
//!
//! The exposition is prometheus-client's: HELP/TYPE lines, label escaping, and both formats a
//! scraper may ask for ([`Format`]: OpenMetrics 1.0 when its `Accept` prefers it, as Prometheus's
//! does, the plain text format 0.0.4 otherwise). The HTTP listener scrapers talk to, with its
//! deadlines and connection cap, is the `listener` module.
//!
//! # Adding a metric
//! - **Counted or set as it happens** (a request, a handshake): a prometheus-client
//!   metric as a field of [`Metrics`], registered once in [`Metrics::default`] (one `register` call
//!   with its name and help), and a method that bumps it, called from where it happens.
//! - **Read when scraped** (the state directory, the store, another module's global or its own
//!   record, as the renewal scheduler's [`SchedulerActivity`]): a field of
//!   `ScrapeGauges`, filled in `ScrapeGauges::read`, and one `gauge`/`counter` call in its
//!   [`Collector::encode`]. These always say what is true at the scrape (and what `certd status`
//!   says), and nothing has to keep them up to date.
//!
//! Names are given without the `_total` of a counter and without the unit, which prometheus-client
//! appends (`certd_tls_handshakes` is exported as `certd_tls_handshakes_total`,
//! `certd_scheduler_last_run` with [`Unit::Seconds`] as `certd_scheduler_last_run_seconds`). The
//! exported names are what deploy/monitoring's rules and dashboard query: keep them.

mod listener;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, RwLock};

use hyper::header::ACCEPT;
use hyper::{HeaderMap, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use time::OffsetDateTime;

use crate::config::Config;
use crate::renewal::{next_action_at, site_state, SchedulerActivity, SiteState};
use crate::storage::StateStore;

pub use listener::serve;

/// The daemon's counters, in one prometheus-client registry. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    handshakes: Counter,
    handshake_errors: Counter,
    requests: Family<RequestLabels, Counter>,
    /// Each site's handles into `requests`, so that counting a request takes no lock.
    sites: RwLock<HashMap<String, Arc<SiteCounters>>>,
    /// The renewal scheduler's passes and restarts, which it records itself (renewal owns them, so
    /// that it needs nothing of the metrics); exported at each scrape.
    scheduler: Arc<SchedulerActivity>,
}

impl Default for Metrics {
    fn default() -> Self {
        let metrics = Self {
            registry: Registry::default(),
            handshakes: Counter::default(),
            handshake_errors: Counter::default(),
            requests: Family::default(),
            sites: RwLock::default(),
            scheduler: Arc::default(),
        };
        let mut registry = Registry::default();
        registry.register(
            "certd_http_requests",
            "Requests answered over HTTPS, by site and status class",
            metrics.requests.clone(),
        );
        registry.register(
            "certd_tls_handshakes",
            "Completed TLS handshakes",
            metrics.handshakes.clone(),
        );
        registry.register(
            "certd_tls_handshake_errors",
            "TLS handshakes that failed or timed out",
            metrics.handshake_errors.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }
}

/// The labels of `certd_http_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    site: String,
    /// `1xx` … `5xx`.
    code: &'static str,
}

/// The status classes requests are counted by.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// One site's request counters, by status class (1xx … 5xx).
#[derive(Debug)]
pub struct SiteCounters {
    by_class: [Counter; 5],
}

impl SiteCounters {
    /// Counts one response with `status`.
    pub fn count(&self, status: StatusCode) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.by_class[class].inc();
    }
}

impl Metrics {
    /// Counts a completed TLS handshake.
    pub fn handshake_ok(&self) {
        self.handshakes.inc();
    }

    /// Counts a failed or abandoned TLS handshake (unknown name, garbage, timeout).
    pub fn handshake_failed(&self) {
        self.handshake_errors.inc();
    }

    /// The counters of `site` (its first name), created on first use and kept across reloads. All
    /// five classes are exported from then on, at 0 until counted, so that `rate()` sees the first
    /// request of a class.
    pub fn site(&self, site: &str) -> Arc<SiteCounters> {
        if let Some(counters) = self.read().get(site) {
            return counters.clone();
        }
        self.sites
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
            .entry(site.to_owned())
            .or_insert_with(|| {
                Arc::new(SiteCounters {
                    by_class: CLASSES.map(|code| {
                        let labels = RequestLabels {
                            site: site.to_owned(),
                            code,
                        };
                        self.requests.get_or_create(&labels).clone()
                    }),
                })
            })
            .clone()
    }

    /// The record the renewal scheduler keeps of its passes and restarts, to hand to it
    /// ([`crate::renewal::Scheduler::with_activity`]) so that scrapes export it.
    pub fn scheduler(&self) -> &Arc<SchedulerActivity> {
        &self.scheduler
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<SiteCounters>>> {
        self.sites
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The plain text exposition (format 0.0.4) of everything, with certificate gauges for
    /// `config`'s sites. Only the tests read a page without negotiating its format.
    #[cfg(test)]
    pub fn render(&self, config: &Config, store: &dyn StateStore, now: OffsetDateTime) -> String {
        self.render_as(Format::Text, config, store, now)
    }

    /// The exposition of everything in `format`, with the gauges read now (`ScrapeGauges`) for
    /// `config`'s sites from `store`.
    pub fn render_as(
        &self,
        format: Format,
        config: &Config,
        store: &dyn StateStore,
        now: OffsetDateTime,
    ) -> String {
        let mut at_scrape = Registry::default();
        at_scrape.register_collector(Box::new(ScrapeGauges::read(
            config,
            store,
            &self.scheduler,
            now,
        )));
        let mut out = String::new();
        let encoded = match format {
            Format::OpenMetrics => {
                use prometheus_client::encoding::text;
                text::encode_registry(&mut out, &self.registry)
                    .and_then(|()| text::encode_registry(&mut out, &at_scrape))
                    .and_then(|()| text::encode_eof(&mut out))
            }
            Format::Text => {
                use prometheus_client::encoding::prometheus_text;
                prometheus_text::encode(&mut out, &self.registry)
                    .and_then(|()| prometheus_text::encode(&mut out, &at_scrape))
            }
        };
        // Writing into a String fails only if an encoder refuses a value; say so in the page
        // rather than serve a silently truncated one.
        if let Err(error) = encoded {
            tracing::error!(%error, "encoding the metrics failed");
            let _ = writeln!(out, "\n# encoding the metrics failed: {error}");
        }
        out
    }
}

/// The exposition formats a scrape can be answered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus's plain text format 0.0.4, what every scraper reads.
    Text,
    /// OpenMetrics 1.0 text (`# EOF`, `# UNIT`, counter families without `_total`).
    OpenMetrics,
}

impl Format {
    /// The format for a scrape with these request headers: OpenMetrics when the `Accept` header
    /// gives `application/openmetrics-text` a higher quality than the plain text format (as
    /// Prometheus does), plain text otherwise: without `Accept`, with `*/*`, on a tie, and when
    /// the header cannot be read (a scraper that asks for neither still gets the format
    /// Prometheus expects, rather than a 406).
    pub fn negotiate(headers: &HeaderMap) -> Self {
        let mut openmetrics: f32 = 0.0;
        let mut text: f32 = 0.0;
        let ranges = headers
            .get_all(ACCEPT)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','));
        for range in ranges {
            let Ok(media) = range.trim().parse::<mime::Mime>() else {
                continue;
            };
            let quality = match media.get_param("q") {
                None => 1.0,
                Some(q) => match q.as_str().parse::<f32>() {
                    Ok(q) if (0.0..=1.0).contains(&q) => q,
                    _ => continue,
                },
            };
            let version = media.get_param("version");
            let (kind, subtype) = (media.type_().as_str(), media.subtype().as_str());
            match (kind, subtype) {
                ("application", "openmetrics-text") => openmetrics = openmetrics.max(quality),
                // `version=1.0.0` of text/plain is the UTF-8-names variant certd does not
                // claim; only the version it sends, or none, counts.
                ("text", "plain") if version.is_none_or(|v| v.as_str() == "0.0.4") => {
                    text = text.max(quality);
                }
                ("text", "*") | ("*", "*") => text = text.max(quality),
                _ => {}
            }
        }
        if openmetrics > text {
            Self::OpenMetrics
        } else {
            Self::Text
        }
    }

    /// The `Content-Type` of a page in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// What a scrape reads at the time it happens: each site's certificate and renewal state from the
/// state directory, whether that could be read, and other modules' own counters. A
/// prometheus-client [`Collector`], built by [`Metrics::render_as`] for each scrape.
#[derive(Debug, Default)]
struct ScrapeGauges {
    /// Times the renewal scheduler was restarted.
    scheduler_restarts: u64,
    /// The renewal scheduler's last completed pass (Unix seconds; 0: not yet).
    scheduler_last_run: i64,
    sites: Vec<SiteGauges>,
    /// The state directory and every site's certificate in it could be read.
    readable: bool,
    /// Log lines dropped because stderr did not keep up (see [`crate::logging`]).
    log_lines_dropped: u64,
    /// The storage answered its last probe (a store on this machine: it is readable).
    storage_up: bool,
    /// How long the shared storage has been unreachable (0 while it answers).
    storage_unreachable_seconds: u64,
}

/// One site's row of [`ScrapeGauges`]; times in Unix seconds.
#[derive(Debug, Default)]
struct SiteGauges {
    site: String,
    not_after: Option<i64>,
    next_renewal: Option<i64>,
    consecutive_failures: u32,
    slowed: bool,
    last_success: Option<i64>,
}

impl ScrapeGauges {
    /// Reads the gauges of `config`'s sites from `store` and of the renewal scheduler from
    /// `scheduler`, as of `now`.
    fn read(
        config: &Config,
        store: &dyn StateStore,
        scheduler: &SchedulerActivity,
        now: OffsetDateTime,
    ) -> Self {
        // A state directory that cannot be listed (an unmounted disk, a lost NFS mount) looks like
        // "no certificates" to the rest; `certd_state_readable` says it outright.
        let mut readable = store.readable();
        let mut sites = Vec::with_capacity(config.sites.len());
        for site in &config.sites {
            let name = site.name().to_owned();
            let record = store.load_record(&name).unwrap_or_default();
            let state = site_state(store, site, config.renewal.remaining_fraction, now);
            readable &= state.is_ok();
            let mut row = SiteGauges {
                site: name,
                consecutive_failures: record.consecutive_failures,
                slowed: crate::renewal::is_slowed(record.consecutive_failures, &config.renewal),
                last_success: record.last_success.map(OffsetDateTime::unix_timestamp),
                ..SiteGauges::default()
            };
            if let Ok(state) = state {
                if let SiteState::Present { info, .. } = &state {
                    row.not_after = Some(info.not_after.unix_timestamp());
                }
                let next = next_action_at(&state, &record, now, &config.renewal);
                row.next_renewal = Some(next.unix_timestamp());
            }
            sites.push(row);
        }
        // A store on this machine has no outage to time: its `up` is whether it is readable.
        let storage = store.health().map_or(
            crate::storage::health::HealthState {
                reachable: readable,
                since: now,
            },
            |health| health.state(),
        );
        Self {
            scheduler_restarts: scheduler.restarts(),
            scheduler_last_run: scheduler.last_run_unix(),
            sites,
            readable,
            log_lines_dropped: crate::logging::dropped_lines()
                .saturating_add(crate::access_log::dropped_lines()),
            storage_up: storage.reachable,
            storage_unreachable_seconds: storage.unreachable_for(now).as_secs(),
        }
    }
}

impl Collector for ScrapeGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let seconds = Some(&Unit::Seconds);
        let per_site = |value: fn(&SiteGauges) -> Option<i64>| {
            self.sites
                .iter()
                .filter_map(move |row| Some((row.site.as_str(), value(row)?)))
        };
        // First, so that the page reads as before these moved out of the registry: right after
        // the counters counted as they happen.
        let restarts = encoder.encode_descriptor(
            "certd_scheduler_restarts",
            "Times the renewal scheduler ended abnormally and was started again.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.scheduler_restarts).encode(restarts)?;
        let last_run = encoder.encode_descriptor(
            "certd_scheduler_last_run",
            "When the renewal scheduler last completed a pass (Unix time; 0: not yet).",
            seconds,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.scheduler_last_run).encode(last_run)?;
        gauge(
            &mut encoder,
            "certd_certificate_not_after",
            "End of validity of the certificate in service (Unix time).",
            seconds,
            per_site(|row| row.not_after),
        )?;
        gauge(
            &mut encoder,
            "certd_certificate_next_renewal",
            "When the next renewal attempt is planned (Unix time).",
            seconds,
            per_site(|row| row.next_renewal),
        )?;
        gauge(
            &mut encoder,
            "certd_renewal_consecutive_failures",
            "Failed renewal attempts since the last success.",
            None,
            per_site(|row| Some(i64::from(row.consecutive_failures))),
        )?;
        gauge(
            &mut encoder,
            "certd_renewal_slowed",
            "1 when repeated failures have slowed attempts to one a day.",
            None,
            per_site(|row| Some(i64::from(row.slowed))),
        )?;
        gauge(
            &mut encoder,
            "certd_renewal_last_success",
            "When a certificate was last obtained (Unix time).",
            seconds,
            per_site(|row| row.last_success),
        )?;
        let readable = encoder.encode_descriptor(
            "certd_state_readable",
            "1 when the state directory and every site's certificate in it could be read at this \
             scrape, 0 otherwise.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::from(self.readable)).encode(readable)?;
        let storage_up = encoder.encode_descriptor(
            "certd_storage_up",
            "1 when the storage answered its last probe (the fleet's database; the state \
             directory: readable at this scrape), 0 while it is unreachable.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::from(self.storage_up)).encode(storage_up)?;
        let unreachable = encoder.encode_descriptor(
            "certd_storage_unreachable",
            "How long the shared storage has been unreachable (0 while it answers).",
            seconds,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::try_from(self.storage_unreachable_seconds).unwrap_or(i64::MAX))
            .encode(unreachable)?;
        let dropped = encoder.encode_descriptor(
            "certd_log_lines_dropped",
            "Log lines dropped because the log queue was full (stderr did not keep up).",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.log_lines_dropped).encode(dropped)
    }
}

/// One gauge family labelled by `site`, with a sample per `(site, value)` of `rows`.
fn gauge<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    rows: impl Iterator<Item = (&'a str, i64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (site, value) in rows {
        let labels = [("site", site)];
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// What a scrape needs: the counters, and the current configuration and store for the gauges;
/// renders the page in the format the scraper asked for.
pub type ScrapeSource = Arc<dyn Fn(Format) -> String + Send + Sync>;

#[cfg(test)]
mod tests;
