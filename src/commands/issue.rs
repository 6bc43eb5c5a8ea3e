//! `certd issue`: obtain certificates for the sites that need them, answering HTTP-01 on `[http].listen`
//! and TLS-ALPN-01 on `[https] listen` while orders are in flight (each only when a due site may use
//! it), then exit. When `certd run` holds the state directory (and port 80), the
//! request is handed to it over its control socket instead, and its answer printed.

use std::path::Path;
use std::sync::Arc;

use time::OffsetDateTime;

use crate::challenge::ChallengeTokens;
use crate::config;
use crate::config::ChallengeKind;
use crate::daemon::{self, ControlRequest};
use crate::exit::{EXIT_OK, EXIT_SOME_FAILED, EXIT_UNUSABLE};
use crate::plain_http::ChallengeResponder;
use crate::renewal::{self, Renewer, SiteState};
use crate::storage;
use crate::store::Layout;
use crate::time_format::rfc3339;
use crate::tls_alpn::AlpnResponder;

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

    // Shared through the store: the CA may ask another node of a fleet.
    let tokens = ChallengeTokens::shared_through(&store);
    let responders = match Responders::start(&config, &due, &tokens).await {
        Ok(responders) => responders,
        Err(err) => {
            eprintln!("{err}");
            return EXIT_UNUSABLE;
        }
    };
    let renewer = Renewer::new(store.clone(), tokens, Arc::new(config));
    let outcomes = renewer.issue_now(&due, force).await;
    responders.shutdown().await;
    let outcomes = match outcomes {
        Ok(outcomes) => outcomes,
        Err(err) => {
            eprintln!("{err}");
            return EXIT_UNUSABLE;
        }
    };

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

/// The challenge listeners of one `certd issue` run.
struct Responders {
    http: Option<ChallengeResponder>,
    tls_alpn: Option<AlpnResponder>,
}

impl Responders {
    /// HTTP-01 on `[http] listen` unless every due site uses another challenge; TLS-ALPN-01 on
    /// `[https] listen` when a due site asks for it (required) or chooses automatically (then only
    /// if the port can be had: the automatic choice starts with HTTP-01, and `[https] listen` may
    /// be another server's while moving to certd).
    async fn start(
        config: &config::Config,
        due: &[config::SiteConfig],
        tokens: &ChallengeTokens,
    ) -> Result<Self, String> {
        let uses = |kind: Option<ChallengeKind>| due.iter().any(|site| site.challenge == kind);
        let needs_http = uses(None) || uses(Some(ChallengeKind::Http01));
        let http = if needs_http {
            let started = ChallengeResponder::start_for(config, tokens.clone()).await;
            Some(started.map_err(|err| err.to_string())?)
        } else {
            None
        };
        let tls_alpn = if uses(Some(ChallengeKind::TlsAlpn01)) || uses(None) {
            match AlpnResponder::start(&config.https.listen, tokens.alpn().clone()).await {
                Ok(responder) => Some(responder),
                Err(err) if !uses(Some(ChallengeKind::TlsAlpn01)) => {
                    tracing::info!(%err, "no TLS-ALPN-01 listener; the automatic choice stays with HTTP-01");
                    None
                }
                Err(err) => {
                    if let Some(http) = http {
                        http.shutdown().await;
                    }
                    return Err(err.to_string());
                }
            }
        } else {
            None
        };
        Ok(Self { http, tls_alpn })
    }

    async fn shutdown(self) {
        if let Some(http) = self.http {
            http.shutdown().await;
        }
        if let Some(tls_alpn) = self.tls_alpn {
            tls_alpn.shutdown().await;
        }
    }
}
