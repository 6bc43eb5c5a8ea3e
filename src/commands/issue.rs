//! `certd issue`: obtain certificates for the sites that need them, answering HTTP-01 on `[http].listen`
//! while orders are in flight, then exit. When `certd run` holds the state directory (and port 80), the
//! request is handed to it over its control socket instead, and its answer printed.

use std::path::Path;
use std::sync::Arc;

use time::OffsetDateTime;

use super::{rfc3339, EXIT_OK, EXIT_SOME_FAILED, EXIT_UNUSABLE};
use crate::challenge::{ChallengeResponder, ChallengeTokens};
use crate::config;
use crate::daemon::{self, ControlRequest};
use crate::renewal::{self, Renewer, SiteState};
use crate::storage;
use crate::store::Layout;

/// Orders certificates for the sites named in `selected` (all when empty) that have none or are due
/// (all of them with `force`). Returns the exit code.
pub async fn issue(config_path: &Path, force: bool, selected: &[String]) -> u8 {
    let config = match config::load(config_path) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{err}");
            return EXIT_UNUSABLE;
        }
    };
    let sites = match config.select_sites(selected) {
        Ok(sites) => sites,
        Err(message) => {
            eprintln!("{message}");
            return EXIT_UNUSABLE;
        }
    };
    let store = match storage::open(&config) {
        Ok(store) => store,
        Err(err) => {
            eprintln!("{err}");
            return EXIT_UNUSABLE;
        }
    };
    let _lock = match store.lock() {
        Ok(lock) => lock,
        Err(err) => {
            // A running daemon holds the lock and port 80, or this user may not take the lock at
            // all (a state directory owned by the service's user): hand the request to the daemon
            // when one answers, else report why the lock could not be had.
            let request = ControlRequest::Issue {
                force,
                sites: selected.to_vec(),
            };
            let socket = Layout::new(&config.state_dir).control_socket();
            return match daemon::send_control_request(&socket, &request).await {
                Ok(code) => code,
                Err(_) => {
                    eprintln!("{err}");
                    EXIT_UNUSABLE
                }
            };
        }
    };

    // Decide before contacting anyone: a run with nothing due neither binds :80 nor talks to the CA.
    let now = OffsetDateTime::now_utc();
    let mut due = Vec::new();
    let mut failed = false;
    for site in sites {
        let record = store.load_record(site.name()).unwrap_or_default();
        match renewal::site_state(
            store.as_ref(),
            &site,
            config.renewal.remaining_fraction,
            now,
        ) {
            Ok(SiteState::Present { info, renew_at })
                if !force && now < renewal::due_at(&info, renew_at, &record) =>
            {
                println!(
                    "{}: skipped, not due until {}",
                    site.name(),
                    rfc3339(renewal::due_at(&info, renew_at, &record))
                );
            }
            Ok(_) => due.push(site),
            Err(err) => {
                eprintln!("{}: failed: {err}", site.name());
                failed = true;
            }
        }
    }
    if due.is_empty() {
        return if failed { EXIT_SOME_FAILED } else { EXIT_OK };
    }

    let tokens = ChallengeTokens::default();
    let responder = match ChallengeResponder::start_for(&config, tokens.clone()).await {
        Ok(responder) => responder,
        Err(err) => {
            eprintln!("{err}");
            return EXIT_UNUSABLE;
        }
    };
    let renewer = Renewer::new(store.clone(), tokens, Arc::new(config));
    if let Err(err) = renewer.connect().await {
        responder.shutdown().await;
        eprintln!("{err}");
        // Every due site failed with it; `status` should say so for each.
        let now = OffsetDateTime::now_utc();
        for site in &due {
            renewal::record_failure(
                store.as_ref(),
                &renewer.config().renewal,
                site,
                &err.to_string(),
                err.retry_after(),
                now,
            );
        }
        return EXIT_UNUSABLE;
    }
    let outcomes = renewer.renew_all(&due, force).await;
    responder.shutdown().await;

    for (site, outcome) in outcomes {
        match outcome.report(&site) {
            Ok(line) => println!("{line}"),
            Err(line) => {
                eprintln!("{line}");
                failed = true;
            }
        }
    }
    if failed {
        EXIT_SOME_FAILED
    } else {
        EXIT_OK
    }
}
