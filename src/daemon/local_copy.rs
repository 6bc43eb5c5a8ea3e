//! Keeping a fleet's node's local copy (its state directory: what it serves from while the database
//! is unreachable) up to date after a full load. Loading every site serves from memory first, then
//! asks this task for a pass ([`StateStore::keep_local_copies`](crate::storage::StateStore::keep_local_copies)),
//! which writes each missing or outdated pair with the state directory's crash-safe install in the
//! background: a key and a certificate that do not belong together are never on disk, and the
//! fsyncs of 100,000 sites never hold up serving. A change to one site is copied as it is read
//! ([`super::storage_sync`]); this is for the loads of every site (start, reload, after an outage).
//!
//! The daemon owns the task ([`LocalCopy::start`]); it ends at shutdown, stopping a pass between two
//! sites. Requests made while a pass runs coalesce into one more pass.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::{Config, SiteConfig};
use crate::storage::SharedStore;

/// The handle that asks for a pass (cheap to clone).
#[derive(Clone)]
pub(super) struct LocalCopy {
    wanted: Arc<watch::Sender<Option<Arc<Config>>>>,
}

impl LocalCopy {
    /// Starts the task on `tasks`, until `shutdown`.
    pub(super) fn start(
        store: SharedStore,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let (wanted, mut requests) = watch::channel(None::<Arc<Config>>);
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    changed = requests.changed() => if changed.is_err() { return },
                }
                let Some(config) = requests.borrow_and_update().clone() else {
                    continue;
                };
                let (store, stop) = (store.clone(), shutdown.clone());
                // Waited for, so that shutdown (which cancels `stop`) finds the pass ended.
                if tokio::task::spawn_blocking(move || pass(&config, store, &stop))
                    .await
                    .is_err()
                {
                    warn!("keeping the local copy failed; the next full load tries again");
                }
            }
        });
        Self {
            wanted: Arc::new(wanted),
        }
    }

    /// Asks for a pass over `config`'s sites (after they were all loaded from the store).
    pub(super) fn request(&self, config: Arc<Config>) {
        self.wanted.send_replace(Some(config));
    }
}

/// One pass over every site of `config`.
fn pass(config: &Config, store: SharedStore, stop: &CancellationToken) {
    let started = Instant::now();
    let names: Vec<&str> = config.sites.iter().map(SiteConfig::name).collect();
    match store.keep_local_copies(&names, stop) {
        Ok(0) => debug!(sites = names.len(), "the local copy is up to date"),
        Ok(written) => info!(
            written,
            sites = names.len(),
            seconds = format_args!("{:.1}", started.elapsed().as_secs_f64()),
            "pairs written to the local copy"
        ),
        Err(err) => warn!(%err, "the local copy is not up to date; the next full load tries again"),
    }
}
