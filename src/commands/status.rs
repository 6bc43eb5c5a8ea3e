//! `certd status`: what is managed, when it expires, when it renews, and what last went wrong.
//!
//! Reads only: it takes no lock (the store's layout makes every read see a complete pair) and creates
//! nothing, so it works while `certd issue` or the daemon runs.
//!
//! Exit codes follow the monitoring-plugin convention (Nagios, Icinga, Sensu): 0 OK; 1 WARNING when a
//! certificate has fewer than `[status] warn_days` left or its last renewal failed; 2 CRITICAL when one
//! has fewer than `critical_days` left, is expired, or does not exist; 3 UNKNOWN when the configuration
//! or the state directory cannot be read.
//!
//! While a daemon holds the state directory's lock, its renewal scheduler is checked too: one that
//! has not completed a pass for [`renewal::STALE_AFTER`] (`state/scheduler.json`) is a WARNING, since
//! the daemon then keeps serving while nothing renews.

use std::path::Path;

use serde::Serialize;
use time::OffsetDateTime;

use crate::config::{self, Config, OperationsConfig};
use crate::ledger::{self, LedgerSummary};
use crate::renewal::{self, SiteState};
use crate::storage;
use crate::store::{SchedulerHeartbeat, SiteRecord};
use crate::time_format::rfc3339;

/// Exit code: everything is fine.
pub const STATUS_OK: u8 = 0;
/// Exit code: something needs attention soon.
pub const STATUS_WARNING: u8 = 1;
/// Exit code: a site is (about to be) down.
pub const STATUS_CRITICAL: u8 = 2;
/// Exit code: the status could not be determined.
pub const STATUS_UNKNOWN: u8 = 3;

/// How worried an operator should be about a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Nothing to do.
    Ok,
    /// Renewal failed, or expiry is nearer than `warn_days`.
    Warning,
    /// No certificate, expired, or expiry nearer than `critical_days`.
    Critical,
}

impl Severity {
    /// The monitoring-plugin exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Ok => STATUS_OK,
            Self::Warning => STATUS_WARNING,
            Self::Critical => STATUS_CRITICAL,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Warning => "WARNING",
            Self::Critical => "CRITICAL",
        }
    }
}

/// A site's severity from its days left and whether its last renewal failed.
pub fn severity(
    days_left: Option<i64>,
    renewal_failing: bool,
    thresholds: &OperationsConfig,
) -> Severity {
    match days_left {
        None => Severity::Critical,
        Some(days) if days < thresholds.critical_days.max(0) || days < 0 => Severity::Critical,
        Some(days) if days < thresholds.warn_days || renewal_failing => Severity::Warning,
        Some(_) => Severity::Ok,
    }
}

/// One site's row, as printed (and as JSON with `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct SiteStatus {
    /// The site's first name.
    pub site: String,
    /// OK, warning or critical (see the module docs).
    pub state: Severity,
    /// Every configured name.
    pub names: Vec<String>,
    /// The issuer's distinguished name, when a certificate is stored.
    pub issuer: Option<String>,
    /// The serial number in hex.
    pub serial: Option<String>,
    /// Start of validity (RFC 3339).
    pub not_before: Option<String>,
    /// End of validity (RFC 3339).
    pub not_after: Option<String>,
    /// Whole days until `not_after` (negative once expired).
    pub days_left: Option<i64>,
    /// When renewal is due (RFC 3339).
    pub renew_at: Option<String>,
    /// What decided `renew_at`: `"ari"` (the CA's renewal window) or `"lifetime"` (the fraction rule).
    pub renewal_window: Option<&'static str>,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
    /// Whether attempts have slowed to one a day after repeated failures.
    pub slowed: bool,
    /// The rate-limit ledger's view of this exact name set over the last 7 days.
    pub orders_last_week: LedgerSummary,
    /// Why the stored pair cannot be served, when it cannot.
    pub problem: Option<String>,
    /// The last failure, cleared by a success.
    pub last_error: Option<String>,
    /// The last attempt (RFC 3339).
    pub last_attempt: Option<String>,
    /// The last success (RFC 3339).
    pub last_success: Option<String>,
    /// The earliest next attempt after a failure (RFC 3339).
    pub next_attempt: Option<String>,
    /// The directory URL of the CA that issued the certificate in service (one of `[[acme.ca]]`
    /// when fallback CAs are configured).
    pub issued_by: Option<String>,
}

impl SiteStatus {
    /// The row of `site` (named `names`) before anything is known of it: critical, since no
    /// certificate has been found yet.
    fn unknown(site: &str, names: &[String]) -> Self {
        Self {
            site: site.to_owned(),
            state: Severity::Critical,
            names: names.to_vec(),
            issuer: None,
            serial: None,
            not_before: None,
            not_after: None,
            days_left: None,
            renew_at: None,
            renewal_window: None,
            consecutive_failures: 0,
            slowed: false,
            orders_last_week: LedgerSummary::default(),
            problem: None,
            last_error: None,
            last_attempt: None,
            last_success: None,
            next_attempt: None,
            issued_by: None,
        }
    }
}

/// The running daemon's renewal scheduler, as its heartbeat (`state/scheduler.json`) tells.
#[derive(Debug, Clone, Serialize)]
pub struct SchedulerStatus {
    /// OK, or a warning when it has not run for [`renewal::STALE_AFTER`].
    pub state: Severity,
    /// The daemon's process id.
    pub daemon_pid: u32,
    /// When the daemon's scheduler started (RFC 3339).
    pub started: Option<String>,
    /// When it last completed a pass (RFC 3339).
    pub last_run: Option<String>,
    /// How often it ended abnormally and was started again.
    pub restarts: u64,
    /// Why it is a warning.
    pub problem: Option<String>,
}

/// The scheduler of the daemon holding the state lock (`lock_holder`), judged from `heartbeat` at
/// `now`; `None` when no daemon runs, since then there is no scheduler to judge (the lock may be
/// held by `certd issue`, whose pid the heartbeat does not carry).
pub fn scheduler_status(
    heartbeat: Option<&SchedulerHeartbeat>,
    lock_holder: Option<u32>,
    now: OffsetDateTime,
) -> Option<SchedulerStatus> {
    let heartbeat = heartbeat.filter(|beat| Some(beat.pid) == lock_holder)?;
    let stale = time::Duration::try_from(renewal::STALE_AFTER).unwrap_or(time::Duration::hours(2));
    let problem = match heartbeat.last_run {
        Some(at) if now - at > stale => {
            Some(format!("renewal scheduler last ran {} ago", ago(now - at)))
        }
        None if now - heartbeat.started > stale => Some(format!(
            "renewal scheduler has not completed a pass since the daemon started {} ago",
            ago(now - heartbeat.started)
        )),
        _ => None,
    };
    Some(SchedulerStatus {
        state: if problem.is_some() {
            Severity::Warning
        } else {
            Severity::Ok
        },
        daemon_pid: heartbeat.pid,
        started: Some(rfc3339(heartbeat.started)),
        last_run: heartbeat.last_run.map(rfc3339),
        restarts: heartbeat.restarts,
        problem,
    })
}

/// `3h`, `2h 5m`, `45m`, `2d 3h`: how long ago, to the minute.
fn ago(elapsed: time::Duration) -> String {
    let minutes = elapsed.whole_minutes().max(0);
    let (days, hours, minutes) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    match (days, hours, minutes) {
        (0, 0, minutes) => format!("{minutes}m"),
        (0, hours, 0) => format!("{hours}h"),
        (0, hours, minutes) => format!("{hours}h {minutes}m"),
        (days, 0, _) => format!("{days}d"),
        (days, hours, _) => format!("{days}d {hours}h"),
    }
}

/// The daemon's scheduler, if a daemon holds the lock of `config`'s state directory.
fn scheduler(config: &Config, now: OffsetDateTime) -> Option<SchedulerStatus> {
    if !has_state(config) {
        return None;
    }
    let store = storage::open(config).ok()?;
    let holder = store.lock_holder()?;
    match store.scheduler_heartbeat() {
        Ok(heartbeat) => scheduler_status(heartbeat.as_ref(), Some(holder), now),
        Err(err) => Some(SchedulerStatus {
            state: Severity::Warning,
            daemon_pid: holder,
            started: None,
            last_run: None,
            restarts: 0,
            problem: Some(format!("renewal scheduler state unreadable: {err}")),
        }),
    }
}

#[derive(Serialize)]
struct StatusReport<'a> {
    state: Severity,
    config: String,
    state_dir: String,
    sites: &'a [SiteStatus],
    scheduler: Option<&'a SchedulerStatus>,
    storage: Option<&'a StorageStatus>,
    fleet: Option<&'a FleetStatus>,
}

/// A fleet's nodes and who did what, from the shared database (`[storage] backend = "postgres"`).
#[derive(Debug, Clone, Serialize)]
pub struct FleetStatus {
    /// Every node that wrote a heartbeat.
    pub nodes: Vec<FleetNode>,
    /// Per site: who installed the live certificate, who holds the lease now.
    pub sites: Vec<FleetSite>,
}

/// One node of [`FleetStatus`].
#[derive(Debug, Clone, Serialize)]
pub struct FleetNode {
    /// Its `node_name`.
    pub node: String,
    /// Its last heartbeat (RFC 3339).
    pub last_heartbeat: String,
    /// How long ago, in seconds.
    pub heartbeat_age_seconds: i64,
}

/// One site of [`FleetStatus`].
#[derive(Debug, Clone, Serialize)]
pub struct FleetSite {
    /// The site.
    pub site: String,
    /// The node that installed the live certificate.
    pub renewed_by: Option<String>,
    /// When (RFC 3339).
    pub renewed_at: Option<String>,
    /// The node holding the site's lease now (an order in flight).
    pub lease_holder: Option<String>,
    /// Until when (RFC 3339).
    pub lease_expires: Option<String>,
}

/// The fleet view of `config`'s shared store, if it has one and it can be read.
fn fleet(config: &Config, now: OffsetDateTime) -> Option<FleetStatus> {
    if matches!(config.storage, crate::config::StorageConfig::Filesystem) {
        return None;
    }
    let view = storage::open(config).ok()?.fleet().ok()??;
    Some(fleet_status(&view, now))
}

/// [`FleetStatus`] of `view` at `now`.
pub fn fleet_status(view: &crate::storage::FleetView, now: OffsetDateTime) -> FleetStatus {
    FleetStatus {
        nodes: view
            .nodes
            .iter()
            .map(|beat| FleetNode {
                node: beat.node.clone(),
                last_heartbeat: rfc3339(beat.at),
                heartbeat_age_seconds: (now - beat.at).whole_seconds().max(0),
            })
            .collect(),
        sites: view
            .sites
            .iter()
            .map(|site| FleetSite {
                site: site.site.clone(),
                renewed_by: site.renewed_by.as_ref().map(|(node, _)| node.clone()),
                renewed_at: site.renewed_by.as_ref().map(|(_, at)| rfc3339(*at)),
                lease_holder: site.lease.as_ref().map(|(node, _)| node.clone()),
                lease_expires: site.lease.as_ref().map(|(_, at)| rfc3339(*at)),
            })
            .collect(),
    }
}

/// The fleet view as text lines.
fn fleet_lines(fleet: &FleetStatus) -> Vec<String> {
    let mut lines = vec!["fleet:".to_owned()];
    for node in &fleet.nodes {
        lines.push(format!(
            "  node {}: last heartbeat {} ({}s ago)",
            node.node, node.last_heartbeat, node.heartbeat_age_seconds
        ));
    }
    for site in &fleet.sites {
        let renewed = match (&site.renewed_by, &site.renewed_at) {
            (Some(node), Some(at)) => format!("renewed by {node} at {at}"),
            _ => "no certificate".to_owned(),
        };
        let lease = match (&site.lease_holder, &site.lease_expires) {
            (Some(node), Some(until)) => format!("lease held by {node} until {until}"),
            _ => "no lease held".to_owned(),
        };
        lines.push(format!("  {}: {renewed}; {lease}", site.site));
    }
    lines
}

/// A fleet's database that cannot be reached (by this command, or by this node's daemon).
#[derive(Debug, Clone, Serialize)]
pub struct StorageStatus {
    /// A warning; critical once a certificate is within `critical_days` of expiry.
    pub state: Severity,
    /// Since when this node's daemon has found it unreachable (RFC 3339), if it has.
    pub unreachable_since: Option<String>,
    /// For how long, in seconds.
    pub unreachable_seconds: Option<u64>,
    /// `storage unreachable since … (for …)`, with the reason when this command met it.
    pub problem: String,
}

/// The storage's status for `config` when it is unreachable: `error` is what this command met
/// (`None`: it could read the store), `recorded` what this node's daemon last recorded.
pub fn storage_status(
    error: Option<&str>,
    recorded: Option<crate::storage::health::HealthState>,
    rows: &[SiteStatus],
    now: OffsetDateTime,
) -> Option<StorageStatus> {
    let down_since = recorded.filter(|state| !state.reachable);
    if error.is_none() && down_since.is_none() {
        return None;
    }
    let mut problem = match down_since {
        Some(state) => format!(
            "storage unreachable since {} (for {})",
            rfc3339(state.since),
            ago(now - state.since)
        ),
        None => "storage unreachable".to_owned(),
    };
    if let Some(error) = error {
        problem.push_str(&format!(": {error}; showing this node's local copy"));
    }
    let state = if rows.iter().any(|row| row.state == Severity::Critical) {
        Severity::Critical
    } else {
        Severity::Warning
    };
    Some(StorageStatus {
        state,
        unreachable_since: down_since.map(|state| rfc3339(state.since)),
        unreachable_seconds: down_since.map(|state| state.unreachable_for(now).as_secs()),
        problem,
    })
}

/// The rows of `config`'s sites from this node's local copy of a fleet's certificates (state_dir),
/// for when the database cannot be read; `None` with the filesystem backend.
fn local_rows(config: &Config, now: OffsetDateTime) -> Option<Vec<SiteStatus>> {
    if matches!(config.storage, crate::config::StorageConfig::Filesystem) {
        return None;
    }
    let mut local = config.clone();
    local.storage = crate::config::StorageConfig::Filesystem;
    collect(&local, now).ok()
}

/// Prints the status of every configured site. Returns the exit code.
pub fn status(config_path: &Path, json: bool) -> u8 {
    let config = match config::load(config_path) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{err}");
            return STATUS_UNKNOWN;
        }
    };
    let now = OffsetDateTime::now_utc();
    let recorded = match config.storage {
        crate::config::StorageConfig::Filesystem => None,
        crate::config::StorageConfig::Postgres(_) => {
            crate::storage::health::recorded(&config.state_dir)
        }
    };
    let (rows, storage) = match collect(&config, now) {
        Ok(rows) => {
            let storage = storage_status(None, recorded, &rows, now);
            (rows, storage)
        }
        Err(message) => match local_rows(&config, now) {
            Some(rows) => {
                let storage = storage_status(Some(&message), recorded, &rows, now);
                (rows, storage)
            }
            None => {
                eprintln!("{message}");
                return STATUS_UNKNOWN;
            }
        },
    };
    let scheduler = scheduler(&config, OffsetDateTime::now_utc());
    let fleet = fleet(&config, now);
    let overall = rows
        .iter()
        .map(|row| row.state)
        .chain(scheduler.as_ref().map(|scheduler| scheduler.state))
        .chain(storage.as_ref().map(|storage| storage.state))
        .max()
        .unwrap_or(Severity::Ok);
    if json {
        let report = StatusReport {
            state: overall,
            config: config.source.display().to_string(),
            state_dir: config.state_dir.display().to_string(),
            sites: &rows,
            scheduler: scheduler.as_ref(),
            storage: storage.as_ref(),
            fleet: fleet.as_ref(),
        };
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(err) => {
                eprintln!("cannot format the status as JSON: {err}");
                return STATUS_UNKNOWN;
            }
        }
    } else {
        print_table(&rows);
        if let Some(scheduler) = &scheduler {
            print_scheduler(scheduler);
        }
        for line in fleet.iter().flat_map(fleet_lines) {
            println!("{line}");
        }
        let mut verdict = summary(overall, &rows, scheduler.as_ref());
        if let Some(storage) = &storage {
            println!("{}", storage.problem);
            verdict.push_str(&format!("; {}", storage.problem));
        }
        println!("{verdict}");
    }
    overall.exit_code()
}

/// The one-line verdict monitoring systems show: `OK: 2 sites`, `WARNING: a.test renewal failing`,
/// `WARNING: renewal scheduler last ran 3h ago`. A stale scheduler is named whatever else is.
fn summary(overall: Severity, rows: &[SiteStatus], scheduler: Option<&SchedulerStatus>) -> String {
    let mut flagged: Vec<String> = rows
        .iter()
        .filter(|row| row.state == overall && overall != Severity::Ok)
        .map(|row| match (row.days_left, &row.last_error) {
            (None, _) => format!("{} has no certificate", row.site),
            (Some(days), _) if days < 0 => format!("{} expired", row.site),
            (Some(days), Some(_)) => format!("{} renewal failing, {days} days left", row.site),
            (Some(days), None) => format!("{} expires in {days} days", row.site),
        })
        .collect();
    flagged.extend(scheduler.and_then(|scheduler| scheduler.problem.clone()));
    if flagged.is_empty() {
        format!(
            "{}: {} site{}",
            overall.label(),
            rows.len(),
            if rows.len() == 1 { "" } else { "s" }
        )
    } else {
        format!("{}: {}", overall.label(), flagged.join("; "))
    }
}

/// Whether there may be state to read: a database always, a state directory once it exists.
fn has_state(config: &Config) -> bool {
    !matches!(config.storage, crate::config::StorageConfig::Filesystem) || config.state_dir.exists()
}

/// Every configured site's status at `now`.
pub fn collect(config: &Config, now: OffsetDateTime) -> Result<Vec<SiteStatus>, String> {
    // A state directory that does not exist yet simply holds nothing; status must not create it.
    let store = if has_state(config) {
        Some(storage::open(config).map_err(|err| err.to_string())?)
    } else {
        None
    };
    let ledger = match &store {
        Some(store) => store
            .ledger_entries(&config.acme.directory_url)
            .map_err(|err| err.to_string())?,
        None => Vec::new(),
    };
    let mut rows = Vec::with_capacity(config.sites.len());
    for site in &config.sites {
        let mut row = SiteStatus::unknown(site.name(), &site.names);
        if let Some(store) = &store {
            let record: SiteRecord = match store.load_record(site.name()) {
                Ok(record) => record,
                Err(err) => {
                    row.problem = Some(err.to_string());
                    SiteRecord::default()
                }
            };
            match renewal::site_state(store.as_ref(), site, config.renewal.remaining_fraction, now)
            {
                Ok(SiteState::Present { info, renew_at }) => {
                    let from_ari = record.ari_serial.as_deref() == Some(info.serial.as_str())
                        && record.ari_renew_at.is_some();
                    row.renew_at = Some(rfc3339(renewal::due_at(&info, renew_at, &record)));
                    row.renewal_window = Some(if from_ari { "ari" } else { "lifetime" });
                    row.issuer = Some(info.issuer);
                    row.serial = Some(info.serial);
                    row.not_before = Some(rfc3339(info.not_before));
                    row.not_after = Some(rfc3339(info.not_after));
                    row.days_left = Some((info.not_after - now).whole_days());
                }
                Ok(SiteState::Missing { problem }) => row.problem = row.problem.take().or(problem),
                Err(err) => row.problem = Some(err.to_string()),
            }
            row.consecutive_failures = record.consecutive_failures;
            row.orders_last_week = ledger::summary(&ledger, &site.names, now);
            row.slowed = renewal::is_slowed(record.consecutive_failures, &config.renewal);
            row.last_error = record.last_error;
            row.last_attempt = record.last_attempt.map(rfc3339);
            row.last_success = record.last_success.map(rfc3339);
            row.next_attempt = record.next_attempt.map(rfc3339);
            row.issued_by = record.issued_by.filter(|_| row.serial.is_some());
        }
        row.state = severity(row.days_left, row.last_error.is_some(), &config.operations);
        rows.push(row);
    }
    Ok(rows)
}

fn print_scheduler(scheduler: &SchedulerStatus) {
    let last_run = scheduler.last_run.as_deref().unwrap_or("never");
    let restarts = match scheduler.restarts {
        0 => String::new(),
        1 => ", restarted once".to_owned(),
        n => format!(", restarted {n} times"),
    };
    println!(
        "scheduler: {} (daemon pid {}), last ran {last_run}{restarts}",
        scheduler.state.label(),
        scheduler.daemon_pid
    );
    if let Some(problem) = &scheduler.problem {
        println!("  problem: {problem}");
    }
}

fn print_table(rows: &[SiteStatus]) {
    let dash = || "-".to_owned();
    let table: Vec<[String; 8]> = rows
        .iter()
        .map(|row| {
            [
                row.state.label().to_owned(),
                row.site.clone(),
                row.names.join(","),
                row.not_after
                    .clone()
                    .unwrap_or_else(|| "no certificate".into()),
                row.days_left
                    .map(|days| days.to_string())
                    .unwrap_or_else(dash),
                row.renew_at.clone().unwrap_or_else(|| "now".into()),
                row.serial.clone().unwrap_or_else(dash),
                row.issuer.clone().unwrap_or_else(dash),
            ]
        })
        .collect();
    // The state leads each row so problems stand out.
    let header = [
        "STATE",
        "SITE",
        "NAMES",
        "NOT AFTER",
        "DAYS LEFT",
        "RENEW AT",
        "SERIAL",
        "ISSUER",
    ];
    let mut widths = header.map(str::len);
    for line in &table {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.len());
        }
    }
    let print = |cells: &[String]| {
        let line: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    };
    print(&header.map(str::to_owned));
    for (line, row) in table.iter().zip(rows) {
        print(line);
        if let Some(ca) = &row.issued_by {
            println!("  issued by the CA at {ca}");
        }
        if let Some(problem) = &row.problem {
            println!("  problem: {problem}");
        }
        if let Some(error) = &row.last_error {
            let when = row.last_attempt.as_deref().unwrap_or("?");
            println!("  last error ({when}): {error}");
            if let Some(next) = &row.next_attempt {
                println!("  next attempt not before {next}");
            }
            let week = &row.orders_last_week;
            println!(
                "  orders in the last 7 days: {} issued, {} failed (the CA allows {} per name set)",
                week.issued,
                week.failed,
                ledger::DUPLICATE_LIMIT
            );
            if row.slowed {
                println!(
                    "  {} failures in a row: attempts slowed to one a day",
                    row.consecutive_failures
                );
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn severity_follows_days_left_and_failures() {
        let thresholds = OperationsConfig::default(); // warn 14, critical 7
        let cases = [
            (None, false, Severity::Critical),
            (Some(-1), false, Severity::Critical),
            (Some(3), false, Severity::Critical),
            (Some(10), false, Severity::Warning),
            (Some(60), true, Severity::Warning),
            (Some(60), false, Severity::Ok),
        ];
        for (days, failing, expected) in cases {
            assert_eq!(
                severity(days, failing, &thresholds),
                expected,
                "{days:?} {failing}"
            );
        }
    }

    fn heartbeat(last_run: Option<OffsetDateTime>) -> SchedulerHeartbeat {
        SchedulerHeartbeat {
            pid: 4242,
            started: time::macros::datetime!(2026-06-01 8:00 UTC),
            last_run,
            restarts: 1,
        }
    }

    #[test]
    fn a_daemon_whose_scheduler_stopped_running_is_a_warning() {
        use time::macros::datetime;
        let now = datetime!(2026-06-01 12:00 UTC);
        // Ran 59 minutes ago: fine.
        let recent = heartbeat(Some(datetime!(2026-06-01 11:01 UTC)));
        let status = scheduler_status(Some(&recent), Some(4242), now).unwrap();
        assert_eq!(status.state, Severity::Ok);
        assert_eq!(status.problem, None);
        assert_eq!(status.last_run.as_deref(), Some("2026-06-01T11:01:00Z"));
        // Exactly two hours is still fine; three hours is not.
        let edge = heartbeat(Some(datetime!(2026-06-01 10:00 UTC)));
        assert_eq!(
            scheduler_status(Some(&edge), Some(4242), now)
                .unwrap()
                .state,
            Severity::Ok
        );
        let stale = heartbeat(Some(datetime!(2026-06-01 9:00 UTC)));
        let status = scheduler_status(Some(&stale), Some(4242), now).unwrap();
        assert_eq!(status.state, Severity::Warning);
        assert_eq!(
            status.problem.as_deref(),
            Some("renewal scheduler last ran 3h ago")
        );
        // Never completed a pass in the four hours since the daemon started.
        let never = heartbeat(None);
        assert_eq!(
            scheduler_status(Some(&never), Some(4242), now)
                .unwrap()
                .problem
                .as_deref(),
            Some("renewal scheduler has not completed a pass since the daemon started 4h ago")
        );
        // No daemon (nobody holds the lock, or someone else does, e.g. `certd issue`): no verdict.
        assert!(scheduler_status(Some(&stale), None, now).is_none());
        assert!(scheduler_status(Some(&stale), Some(7), now).is_none());
        assert!(scheduler_status(None, Some(4242), now).is_none());
        // A last run in the future (clock stepped back) is no warning.
        let future = heartbeat(Some(datetime!(2026-06-02 0:00 UTC)));
        assert_eq!(
            scheduler_status(Some(&future), Some(4242), now)
                .unwrap()
                .state,
            Severity::Ok
        );
    }

    #[test]
    fn the_summary_names_a_stale_scheduler() {
        let now = time::macros::datetime!(2026-06-01 12:00 UTC);
        let stale = heartbeat(Some(time::macros::datetime!(2026-06-01 9:00 UTC)));
        let status = scheduler_status(Some(&stale), Some(4242), now).unwrap();
        assert_eq!(
            summary(Severity::Warning, &[], Some(&status)),
            "WARNING: renewal scheduler last ran 3h ago"
        );
        assert_eq!(ago(time::Duration::minutes(125)), "2h 5m");
        assert_eq!(ago(time::Duration::minutes(45)), "45m");
        assert_eq!(ago(time::Duration::hours(51)), "2d 3h");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod storage_outage {
    use super::*;
    use crate::storage::health::HealthState;
    use time::macros::datetime;

    fn row(state: Severity) -> SiteStatus {
        SiteStatus {
            state,
            days_left: Some(30),
            ..SiteStatus::unknown("a.test", &["a.test".to_owned()])
        }
    }

    #[test]
    fn an_outage_is_a_warning_with_its_duration_and_critical_near_expiry() {
        let now = datetime!(2026-06-01 12:00 UTC);
        let down = HealthState {
            reachable: false,
            since: datetime!(2026-06-01 10:55 UTC),
        };
        assert!(storage_status(None, None, &[row(Severity::Ok)], now).is_none());
        let up = HealthState {
            reachable: true,
            since: down.since,
        };
        assert!(storage_status(None, Some(up), &[row(Severity::Ok)], now).is_none());

        let status = storage_status(
            Some("cannot connect"),
            Some(down),
            &[row(Severity::Ok)],
            now,
        )
        .unwrap();
        assert_eq!(status.state, Severity::Warning);
        assert_eq!(status.unreachable_seconds, Some(3900));
        assert!(
            status
                .problem
                .starts_with("storage unreachable since 2026-06-01T10:55:00Z (for 1h 5m)"),
            "{}",
            status.problem
        );
        assert!(
            status.problem.contains("cannot connect"),
            "{}",
            status.problem
        );

        let critical = storage_status(None, Some(down), &[row(Severity::Critical)], now).unwrap();
        assert_eq!(critical.state, Severity::Critical);
    }

    #[test]
    fn the_fleet_view_names_nodes_installers_and_lease_holders() {
        use crate::storage::{FleetView, NodeBeat, SiteFleet};
        let now = datetime!(2026-06-01 12:00 UTC);
        let view = FleetView {
            nodes: vec![NodeBeat {
                node: "node-a".into(),
                at: datetime!(2026-06-01 11:59:30 UTC),
            }],
            sites: vec![
                SiteFleet {
                    site: "a.test".into(),
                    renewed_by: Some(("node-b".into(), datetime!(2026-06-01 11:00 UTC))),
                    lease: Some(("node-c".into(), datetime!(2026-06-01 12:01 UTC))),
                },
                SiteFleet {
                    site: "b.test".into(),
                    renewed_by: None,
                    lease: None,
                },
            ],
        };
        let fleet = fleet_status(&view, now);
        assert_eq!(fleet.nodes[0].heartbeat_age_seconds, 30);
        let lines = fleet_lines(&fleet);
        assert_eq!(
            lines,
            [
                "fleet:",
                "  node node-a: last heartbeat 2026-06-01T11:59:30Z (30s ago)",
                "  a.test: renewed by node-b at 2026-06-01T11:00:00Z; lease held by node-c until 2026-06-01T12:01:00Z",
                "  b.test: no certificate; no lease held",
            ]
        );
    }
}
