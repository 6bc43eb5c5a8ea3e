//! Putting stored certificates in service: at start and on reload every site's pair is read and
//! checked in parallel and published in one step; a name not loaded yet is loaded on its first
//! handshake; a newly issued pair is swapped in. Which pairs may be served is [`super::stored`]'s.

use std::sync::Arc;

use time::OffsetDateTime;
use tracing::{info, warn};

use super::stored::{usable, usable_key};
use crate::certificate::{self, CertifiedPem};
use crate::config::{Config, SiteConfig};
use crate::resolver::{self, SniResolver};
use crate::storage::{SharedStore, StateStore, CURRENT_BATCH};

/// Publishes every usable stored certificate of `config`'s sites; returns how many sites are served.
/// Each loading thread reads its share of the sites [`CURRENT_BATCH`] at a time (one query each on a
/// database), so that what is held in memory besides the published keys is one batch per thread. A
/// fleet's node does not write its local copy here: [`super::local_copy`] does, afterwards.
pub(super) fn serve_stored(
    config: &Config,
    store: &dyn StateStore,
    resolver: &SniResolver,
) -> usize {
    let now = OffsetDateTime::now_utc();
    // Reading and checking thousands of pairs is CPU-bound (certificate and key parsing): spread it
    // over the cores, then publish everything in one store. A thread's batch is parsed while the
    // other's is read.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let chunk = config.sites.len().div_ceil(threads).max(1);
    let ready: Vec<(Vec<String>, Arc<rustls::sign::CertifiedKey>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = config
            .sites
            .chunks(chunk)
            .map(|sites| scope.spawn(move || load_share(store, sites, now)))
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().unwrap_or_default())
            .collect()
    });
    let served = ready.len();
    resolver.publish_all(ready);
    served
}

/// The usable stored pairs of `sites`, read in batches.
fn load_share(
    store: &dyn StateStore,
    sites: &[SiteConfig],
    now: OffsetDateTime,
) -> Vec<(Vec<String>, Arc<rustls::sign::CertifiedKey>)> {
    let names: Vec<&str> = sites.iter().map(SiteConfig::name).collect();
    let mut ready = Vec::with_capacity(sites.len());
    store.current_batches(&names, CURRENT_BATCH, &mut |start, pairs| {
        let batch = sites.get(start..).unwrap_or_default();
        ready.extend(
            batch
                .iter()
                .zip(pairs)
                .filter_map(|(site, stored)| usable(site, stored, now)),
        );
    });
    ready
}

/// The loader of [`SniResolver::load_on_demand`] for `config`'s sites: finds the site of a name
/// (exactly, else by the `*.` wildcard of its parent, like the resolver) and loads its stored pair.
pub(super) fn load_on_demand(config: Arc<Config>, store: SharedStore) -> Box<resolver::OnDemand> {
    let mut site_of = std::collections::HashMap::new();
    for (index, site) in config.sites.iter().enumerate() {
        for name in &site.names {
            site_of.entry(name.to_ascii_lowercase()).or_insert(index);
        }
    }
    Box::new(move |name: &str| {
        let wildcard = name
            .split_once('.')
            .map(|(_, parent)| format!("*.{parent}"));
        let index = site_of
            .get(name)
            .or_else(|| wildcard.and_then(|wildcard| site_of.get(&wildcard)))?;
        let site = config.sites.get(*index)?;
        usable_key(store.as_ref(), site, OffsetDateTime::now_utc())
    })
}

/// Swaps `pem` in for every name of `site`. Returns whether it could be used.
pub(super) fn publish(resolver: &SniResolver, site: &SiteConfig, pem: &CertifiedPem) -> bool {
    match resolver::certified_key(pem) {
        Ok(key) => {
            resolver.publish(&site.names, key);
            let serial = certificate::parse_pem(&pem.cert_pem)
                .map(|info| info.serial)
                .unwrap_or_default();
            info!(site = site.name(), %serial, "certificate in service");
            true
        }
        Err(err) => {
            warn!(site = site.name(), %err, "certificate not swapped in");
            false
        }
    }
}
