//! `certd status`: what is managed, when it expires, when it renews, and what last went wrong.
//!
//! Reads only: it takes no lock (the store's layout makes every read see a complete pair) and creates
//! nothing, so it works while `certd issue` or the daemon runs.

use std::path::Path;

use serde::Serialize;
use time::OffsetDateTime;

use super::{rfc3339, EXIT_OK, EXIT_UNUSABLE};
use crate::config::{self, Config};
use crate::renewal::{self, SiteState};
use crate::store::{SiteRecord, Store};

/// One site's row, as printed (and as JSON with `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct SiteStatus {
    /// The site's first name.
    pub site: String,
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
}

#[derive(Serialize)]
struct StatusReport<'a> {
    config: String,
    state_dir: String,
    sites: &'a [SiteStatus],
}

/// Prints the status of every configured site. Returns the exit code.
pub fn status(config_path: &Path, json: bool) -> u8 {
    let config = match config::load(config_path) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{err}");
            return EXIT_UNUSABLE;
        }
    };
    let rows = match collect(&config, OffsetDateTime::now_utc()) {
        Ok(rows) => rows,
        Err(message) => {
            eprintln!("{message}");
            return EXIT_UNUSABLE;
        }
    };
    if json {
        let report = StatusReport {
            config: config.source.display().to_string(),
            state_dir: config.state_dir.display().to_string(),
            sites: &rows,
        };
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(err) => {
                eprintln!("cannot format the status as JSON: {err}");
                return EXIT_UNUSABLE;
            }
        }
    } else {
        print_table(&rows);
    }
    EXIT_OK
}

/// Every configured site's status at `now`.
pub fn collect(config: &Config, now: OffsetDateTime) -> Result<Vec<SiteStatus>, String> {
    // A state directory that does not exist yet simply holds nothing; status must not create it.
    let store = if config.state_dir.exists() {
        Some(Store::open(&config.state_dir).map_err(|err| err.to_string())?)
    } else {
        None
    };
    let mut rows = Vec::with_capacity(config.sites.len());
    for site in &config.sites {
        let mut row = SiteStatus {
            site: site.name().to_owned(),
            names: site.names.clone(),
            issuer: None,
            serial: None,
            not_before: None,
            not_after: None,
            days_left: None,
            renew_at: None,
            problem: None,
            last_error: None,
            last_attempt: None,
            last_success: None,
            next_attempt: None,
        };
        if let Some(store) = &store {
            match renewal::site_state(store, site, config.renewal.remaining_fraction, now) {
                Ok(SiteState::Present { info, renew_at }) => {
                    row.issuer = Some(info.issuer);
                    row.serial = Some(info.serial);
                    row.not_before = Some(rfc3339(info.not_before));
                    row.not_after = Some(rfc3339(info.not_after));
                    row.days_left = Some((info.not_after - now).whole_days());
                    row.renew_at = Some(rfc3339(renew_at));
                }
                Ok(SiteState::Missing { problem }) => row.problem = problem,
                Err(err) => row.problem = Some(err.to_string()),
            }
            let record: SiteRecord = match store.load_record(site.name()) {
                Ok(record) => record,
                Err(err) => {
                    row.problem.get_or_insert(err.to_string());
                    SiteRecord::default()
                }
            };
            row.last_error = record.last_error;
            row.last_attempt = record.last_attempt.map(rfc3339);
            row.last_success = record.last_success.map(rfc3339);
            row.next_attempt = record.next_attempt.map(rfc3339);
        }
        rows.push(row);
    }
    Ok(rows)
}

fn print_table(rows: &[SiteStatus]) {
    let dash = || "-".to_owned();
    let table: Vec<[String; 7]> = rows
        .iter()
        .map(|row| {
            [
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
    let header = [
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
        if let Some(problem) = &row.problem {
            println!("  problem: {problem}");
        }
        if let Some(error) = &row.last_error {
            let when = row.last_attempt.as_deref().unwrap_or("?");
            println!("  last error ({when}): {error}");
            if let Some(next) = &row.next_attempt {
                println!("  next attempt not before {next}");
            }
        }
    }
}
