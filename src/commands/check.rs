//! `certd check`: validate the configuration and name every problem in it; with `--preflight`, also
//! check that every name resolves and that an HTTP-01 request for it reaches certd ([`crate::preflight`]).

use std::path::Path;

use tokio::task::JoinSet;

use crate::challenge::ChallengeTokens;
use crate::config::{self, Config};
use crate::exit::{EXIT_OK, EXIT_SOME_FAILED, EXIT_UNUSABLE};
use crate::plain_http::ChallengeResponder;
use crate::preflight::Preflight;
use crate::store::Layout;

/// Validates the configuration file at `path`; prints a summary, or every problem found (exit 2).
/// With `preflight`, then runs the preflight checks for every site (whatever `[preflight] enabled`
/// says): one line per site that passed on stdout, one line per problem on stderr, exit 1 if any.
pub async fn check(path: &Path, preflight: bool) -> u8 {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{err}");
            return EXIT_UNUSABLE;
        }
    };
    let names: usize = config.sites.iter().map(|site| site.names.len()).sum();
    println!(
        "{}: OK: {} site{}, {names} name{}, CA {}, state in {}",
        path.display(),
        config.sites.len(),
        if config.sites.len() == 1 { "" } else { "s" },
        if names == 1 { "" } else { "s" },
        config.acme.directory_url,
        config.state_dir.display(),
    );
    for site in config::sites_without_routes(&config) {
        eprintln!("{}", config::no_routes_warning(&site.names[0]));
    }
    if preflight {
        run_preflight(&config).await
    } else {
        EXIT_OK
    }
}

/// Starts a self-test listener on `[http].listen` and checks every site at once.
async fn run_preflight(config: &Config) -> u8 {
    let preflight = Preflight::new(config);
    let port = preflight.http_port();
    let tokens = ChallengeTokens::default();
    let mut failed = false;
    let responder = match ChallengeResponder::start_for(config, tokens.clone()).await {
        Ok(responder) => Some(responder),
        Err(err) => {
            // A running daemon holds the port (and answers only its own tokens), so the self-test
            // cannot go through it; that is not a problem with the names, so only DNS is checked.
            let socket = Layout::new(&config.state_dir).control_socket();
            if tokio::net::UnixStream::connect(&socket).await.is_ok() {
                eprintln!(
                    "preflight: port {port} is held by the running `certd run` (control socket {}); \
                     the HTTP self-test needs a listener of its own and is skipped, DNS is still \
                     checked",
                    socket.display()
                );
            } else {
                eprintln!("preflight: {err}; the HTTP self-test is skipped, DNS is still checked");
                failed = true;
            }
            None
        }
    };
    let http = responder.is_some();

    let mut tasks = JoinSet::new();
    for (index, site) in config.sites.iter().cloned().enumerate() {
        let (preflight, tokens) = (preflight.clone(), tokens.clone());
        tasks.spawn(async move {
            let result = if http {
                preflight.check_site(&site, &tokens).await
            } else {
                preflight.check_site_dns(&site).await
            };
            (index, site, result)
        });
    }
    let mut results = Vec::with_capacity(config.sites.len());
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(done) => results.push(done),
            Err(err) => {
                eprintln!("preflight: a check ended abnormally: {err}");
                failed = true;
            }
        }
    }
    results.sort_by_key(|(index, _, _)| *index);
    for (_, site, result) in results {
        let count = site.names.len();
        match result {
            Ok(()) if http => println!(
                "{}: preflight OK: every name ({count}) resolves and reaches this certd on port {port}",
                site.name()
            ),
            Ok(()) => println!(
                "{}: preflight OK for DNS: every name ({count}) resolves (HTTP self-test skipped)",
                site.name()
            ),
            Err(err) => {
                eprintln!("{err}");
                failed = true;
            }
        }
    }
    if let Some(responder) = responder {
        responder.shutdown().await;
    }
    if failed {
        EXIT_SOME_FAILED
    } else {
        EXIT_OK
    }
}
