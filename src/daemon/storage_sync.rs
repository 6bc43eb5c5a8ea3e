//! Serving what the fleet installs: the daemon's end of [`StateStore::changes`]. Each change
//! names a site (or asks for all of them, after the store was unreachable); its live pair is read
//! from the store, checked like every stored pair ([`super::stored::usable_key`]: it covers the names, is
//! in date, its key matches) and swapped into the SNI resolver, the path a reload takes. A pair
//! that is not usable leaves the old one serving.
//!
//! The daemon owns the task ([`follow`]); it starts handling changes once the stored certificates
//! are all in (so an older stored version cannot replace what a change published) and ends on
//! shutdown.
//!
//! This is also where a fleet's node runs the deploy hook (`[hook]`, [`crate::hook`]) for a
//! renewal, whichever node renewed (this one included: its own install is announced to it too):
//! once per new serial, after the pair is in the resolver, with the paths of the node's local copy
//! in its state directory, which is written after the swap and before the hook. A full reload
//! (after this node lost the store) runs it too, for each site whose served certificate the reload
//! changed: another node may have renewed while this one could not hear of it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use time::OffsetDateTime;
use tokio::sync::mpsc::Receiver;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Shared;
use crate::hook::{self, HookEvent};
use crate::storage::Change;
use crate::store::Layout;

/// What a batch of changes asks for.
#[derive(Debug, Default, PartialEq, Eq)]
struct Wanted {
    all: bool,
    sites: BTreeSet<String>,
}

impl Wanted {
    fn add(&mut self, change: Change) {
        match change {
            Change::All => self.all = true,
            Change::Site(site) => {
                self.sites.insert(site);
            }
        }
    }
}

/// Applies `changes` until `shutdown` (or until the store stops sending).
pub(super) async fn follow(
    shared: Arc<Shared>,
    mut changes: Receiver<Change>,
    shutdown: CancellationToken,
) {
    drop(shared.initial_load.lock().await);
    // Site -> the serial the deploy hook last ran for (a notification and a poll may both
    // report one install).
    let mut deployed = HashMap::new();
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => return,
            change = changes.recv() => match change {
                Some(change) => change,
                None => return,
            },
        };
        // Coalesce what queued up meanwhile: one read per site, however many installs.
        let mut wanted = Wanted::default();
        wanted.add(first);
        while let Ok(change) = changes.try_recv() {
            wanted.add(change);
        }
        let applying = shared.clone();
        let Ok(published) = tokio::task::spawn_blocking(move || apply(&applying, wanted)).await
        else {
            warn!("applying a certificate change failed; the next change or poll tries again");
            continue;
        };
        // Shutdown does not wait for a hook (dropping it kills the program).
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = run_deploy_hooks(&shared, &mut deployed, published) => {}
        }
    }
}

/// Runs the deploy hook for each `(site, serial)` just put in service that it has not run for.
async fn run_deploy_hooks(
    shared: &Shared,
    deployed: &mut HashMap<String, String>,
    published: Vec<(String, String)>,
) {
    let config = shared.config.load_full();
    let Some(command) = &config.operations.hook else {
        return;
    };
    let layout = Layout::new(&config.state_dir);
    for (name, serial) in published {
        if deployed.get(&name) == Some(&serial) {
            continue;
        }
        let Some(site) = config.sites.iter().find(|site| site.name() == name) else {
            continue;
        };
        hook::run(
            command,
            site,
            &layout,
            HookEvent::Renewed { serial: &serial },
        )
        .await;
        deployed.insert(name, serial);
    }
}

/// Publishes the live pairs `wanted` names (blocking: the store is read); returns the sites put
/// in service with their serials (after a full reload: those whose certificate it changed).
fn apply(shared: &Shared, wanted: Wanted) -> Vec<(String, String)> {
    let config = shared.config.load_full();
    if wanted.all {
        // What each site served before, to tell which certificates the reload replaced (the
        // initial load is done, so a look-up reads the resolver's map and nothing else).
        let before: Vec<_> = config
            .sites
            .iter()
            .map(|site| shared.resolver.lookup(site.name()))
            .collect();
        let served = super::serve_stored(&config, shared.store.as_ref(), &shared.resolver);
        let replaced: Vec<_> = config
            .sites
            .iter()
            .zip(before)
            .filter_map(|(site, before)| {
                let after = shared.resolver.lookup(site.name())?;
                (!same_leaf(before.as_deref(), &after))
                    .then(|| (site.name().to_owned(), serial_of(&after)))
            })
            .collect();
        info!(
            served,
            replaced = replaced.len(),
            "certificates loaded again from the store"
        );
        // The replaced sites' local copies are written now, as their hooks are given those
        // paths; the rest is rewritten in the background.
        write_local_copies(shared, &replaced);
        shared.local_copy.request(config);
        return replaced;
    }
    let mut published = Vec::new();
    let now = OffsetDateTime::now_utc();
    for name in &wanted.sites {
        // A site this node does not serve (not in its configuration) is not its business.
        let Some(site) = config.sites.iter().find(|site| site.name() == name) else {
            continue;
        };
        // Read without writing the local copy (`current_batches`), so that the swap does not
        // wait for the disk (its fsyncs queue behind a background pass of the local copy); the
        // copy is written below, before the deploy hook is given its paths.
        let mut read = None;
        shared
            .store
            .current_batches(&[name.as_str()], 1, &mut |_, pairs| {
                read = pairs.into_iter().next();
            });
        let stored = read.unwrap_or(Ok(None));
        if let Some((names, key)) = super::stored::usable(site, stored, now) {
            let serial = serial_of(&key);
            shared.resolver.publish(&names, key);
            info!(site = %name, %serial, "certificate from the store in service");
            published.push((name.clone(), serial));
        }
    }
    write_local_copies(shared, &published);
    published
}

/// Writes the local copies of the sites just put in service (blocking), before their deploy hooks
/// are given the paths; a failure is logged, and the next full load writes them again.
fn write_local_copies(shared: &Shared, sites: &[(String, String)]) {
    let names: Vec<&str> = sites.iter().map(|(name, _)| name.as_str()).collect();
    if names.is_empty() {
        return;
    }
    if let Err(err) = shared
        .store
        .keep_local_copies(&names, &tokio_util::sync::CancellationToken::new())
    {
        warn!(%err, "the local copy of a new certificate is not written; the next full load tries again");
    }
}

/// The serial (lower-case hex) of `key`'s certificate; empty when it cannot be read.
fn serial_of(key: &CertifiedKey) -> String {
    key.end_entity_cert()
        .ok()
        .and_then(|der| x509_parser::parse_x509_certificate(der.as_ref()).ok())
        .map(|(_, cert)| {
            cert.raw_serial()
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect::<String>()
        })
        .unwrap_or_default()
}

/// Whether `after` serves the same certificate as `before` (`None`: nothing was served). Compared
/// by the certificate's bytes: a reload makes a new key object even for an unchanged pair.
fn same_leaf(before: Option<&CertifiedKey>, after: &CertifiedKey) -> bool {
    before.is_some_and(|before| before.cert.first() == after.cert.first())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key(names: &[&str]) -> CertifiedKey {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let generated = rcgen::generate_simple_self_signed(names).unwrap();
        let pem = crate::certificate::CertifiedPem {
            cert_pem: generated.cert.pem(),
            chain_pem: String::new(),
            key_pem: generated.signing_key.serialize_pem().into(),
        };
        Arc::unwrap_or_clone(crate::resolver::certified_key(&pem).unwrap())
    }

    #[test]
    fn a_reload_counts_as_a_new_certificate_only_when_the_served_one_changed() {
        let old = key(&["a.test"]);
        let reloaded = CertifiedKey::new(old.cert.clone(), old.key.clone());
        let renewed = key(&["a.test"]);
        assert!(
            same_leaf(Some(&old), &reloaded),
            "the same pair, read again"
        );
        assert!(!same_leaf(Some(&old), &renewed), "renewed by another node");
        assert!(!same_leaf(None, &renewed), "the site's first certificate");
        let serial = serial_of(&renewed);
        assert!(!serial.is_empty() && serial != serial_of(&old), "{serial}");
    }

    #[test]
    fn changes_coalesce_per_site_and_all_wins() {
        let mut wanted = Wanted::default();
        wanted.add(Change::Site("b.test".into()));
        wanted.add(Change::Site("a.test".into()));
        wanted.add(Change::Site("b.test".into()));
        assert!(!wanted.all);
        assert_eq!(
            wanted.sites.iter().map(String::as_str).collect::<Vec<_>>(),
            ["a.test", "b.test"]
        );
        wanted.add(Change::All);
        assert!(wanted.all);
    }
}
