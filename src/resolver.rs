//! The SNI resolver: which certificate a TLS handshake gets, by server name.
//!
//! rustls calls [`SniResolver::resolve`] inside the handshake, so it must not block or do I/O: it reads
//! a map behind an atomic pointer (arc-swap). A renewed certificate is swapped in with one store, so
//! handshakes after the swap see the new certificate while connections already open keep theirs. Names
//! are matched exactly (lower-cased), then as a `*.` wildcard one label up; an unknown name gets no
//! certificate and rustls refuses the handshake with an alert. A ClientHello without SNI gets the
//! certificate of `[https] default_site` ([`SniResolver::set_default`]), and is refused without one.
//!
//! The one exception to "no I/O" is the first second or so after start, while the stored certificates
//! of thousands of sites are still being loaded behind the listeners: a name asked for before its turn
//! is loaded there and then by the [`OnDemand`] loader, instead of being refused.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::certificate::CertifiedPem;

/// Loads the certificate for a (lower-cased) server name that is not published yet: the names of its
/// site and the key to serve them with, or `None` when no usable certificate is stored for it.
pub type OnDemand = dyn Fn(&str) -> Option<(Vec<String>, Arc<CertifiedKey>)> + Send + Sync;

/// The certificate each server name is answered with.
#[derive(Default)]
pub struct SniResolver {
    by_name: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
    on_demand: ArcSwapOption<Box<OnDemand>>,
    /// The name whose certificate a ClientHello without SNI gets (`[https] default_site`).
    default_name: ArcSwapOption<String>,
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let map = self.by_name.load();
        let mut names: Vec<&String> = map.keys().collect();
        names.sort();
        f.debug_struct("SniResolver")
            .field("names", &names)
            .finish()
    }
}

/// A certificate that rustls cannot use.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve the certificate: {0}")]
pub struct UnusableCertificate(String);

/// Turns stored PEM into the form rustls serves, checking that the key belongs to the leaf.
pub fn certified_key(pem: &CertifiedPem) -> Result<Arc<CertifiedKey>, UnusableCertificate> {
    let chain = CertificateDer::pem_slice_iter(pem.fullchain_pem().as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| UnusableCertificate(format!("bad certificate PEM: {err}")))?;
    if chain.is_empty() {
        return Err(UnusableCertificate("no certificate in the chain".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(pem.key_pem.as_bytes())
        .map_err(|err| UnusableCertificate(format!("bad private key PEM: {err}")))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider)
        .map_err(|err| UnusableCertificate(err.to_string()))?;
    Ok(Arc::new(certified))
}

impl SniResolver {
    /// An empty resolver: every handshake is refused until a certificate is published.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `key` for every name in `names` from the next handshake on. One atomic store: a
    /// concurrent handshake sees either the old map or the new one.
    pub fn publish(&self, names: &[String], key: Arc<CertifiedKey>) {
        self.by_name.rcu(|current| {
            let mut next = HashMap::clone(current);
            for name in names {
                next.insert(name.to_ascii_lowercase(), key.clone());
            }
            next
        });
    }

    /// Serves each `(names, key)` pair, all in one atomic store: loading thousands of sites at start
    /// costs one copy of the map, not one per site.
    pub fn publish_all(&self, entries: Vec<(Vec<String>, Arc<CertifiedKey>)>) {
        if entries.is_empty() {
            return;
        }
        self.by_name.rcu(|current| {
            let mut next = HashMap::clone(current);
            next.reserve(entries.iter().map(|(names, _)| names.len()).sum());
            for (names, key) in &entries {
                for name in names {
                    next.insert(name.to_ascii_lowercase(), key.clone());
                }
            }
            next
        });
    }

    /// Stops serving `names` (a site removed from the configuration).
    #[cfg(test)]
    pub fn withdraw(&self, names: &[String]) {
        self.by_name.rcu(|current| {
            let mut next = HashMap::clone(current);
            for name in names {
                next.remove(&name.to_ascii_lowercase());
            }
            next
        });
    }

    /// Keeps only `names`, withdrawing every other name in one store.
    pub fn retain(&self, names: &[String]) {
        let keep: std::collections::HashSet<String> =
            names.iter().map(|name| name.to_ascii_lowercase()).collect();
        self.by_name.rcu(|current| {
            let mut next = HashMap::clone(current);
            next.retain(|name, _| keep.contains(name));
            next
        });
    }

    /// Until [`SniResolver::loaded`], names that are not published yet are looked up with `load`
    /// (and published when it finds them).
    pub fn load_on_demand(&self, load: Box<OnDemand>) {
        self.on_demand.store(Some(Arc::new(load)));
    }

    /// Everything stored is published: unknown names are refused from now on, without a look at the
    /// disk.
    pub fn loaded(&self) {
        self.on_demand.store(None);
    }

    /// From the next handshake on, a ClientHello without SNI gets the certificate served for `name`
    /// (looked up at each handshake, so a renewal is picked up), or is refused when `None`.
    pub fn set_default(&self, name: Option<&str>) {
        self.default_name
            .store(name.map(|name| Arc::new(name.trim_end_matches('.').to_ascii_lowercase())));
    }

    /// The certificate for `server_name`: an exact match, else a `*.` wildcard for its parent.
    pub fn lookup(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
        let name = server_name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(key) = self.published(&name) {
            return Some(key);
        }
        let load = self.on_demand.load_full()?;
        let (names, key) = load(&name)?;
        self.publish(&names, key.clone());
        Some(key)
    }

    fn published(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let map = self.by_name.load();
        if let Some(key) = map.get(name) {
            return Some(key.clone());
        }
        // An address has no parent domain a wildcard could cover.
        if name.parse::<std::net::IpAddr>().is_ok() {
            return None;
        }
        let (_, parent) = name.split_once('.')?;
        map.get(&format!("*.{parent}")).cloned()
    }

    /// How many names are served.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_name.load().len()
    }

    /// Whether no name is served.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SniResolver {
    /// The certificate for a handshake that named `sni`, or none: when it named nothing (or an IP
    /// address, which rustls does not pass on as a name), the default site's certificate if one is
    /// set; refusing is better than guessing and handing out some other site's certificate.
    fn certificate_for(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let default;
        let name = match sni {
            Some(name) => name,
            None => {
                default = self.default_name.load_full()?;
                default.as_str()
            }
        };
        let key = self.lookup(name);
        if key.is_none() {
            tracing::debug!(
                server_name = name,
                "no certificate for this name; refusing the handshake"
            );
        }
        key
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.certificate_for(client_hello.server_name())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::KeyType;
    use zeroize::Zeroizing;

    fn key_for(names: &[&str]) -> Arc<CertifiedKey> {
        let key = crate::certificate::generate_key(KeyType::EcdsaP256).unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        certified_key(&CertifiedPem {
            cert_pem: cert.pem(),
            chain_pem: String::new(),
            key_pem: Zeroizing::new(key.serialize_pem()),
        })
        .unwrap()
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn exact_names_then_wildcards_and_nothing_else() {
        let resolver = SniResolver::new();
        let site = key_for(&["a.test", "www.a.test"]);
        let wildcard = key_for(&["*.b.test"]);
        resolver.publish(&names(&["a.test", "www.a.test"]), site.clone());
        resolver.publish(&names(&["*.b.test"]), wildcard.clone());

        assert!(Arc::ptr_eq(&resolver.lookup("WWW.A.test").unwrap(), &site));
        assert!(Arc::ptr_eq(
            &resolver.lookup("x.b.test").unwrap(),
            &wildcard
        ));
        assert!(
            resolver.lookup("b.test").is_none(),
            "a wildcard does not cover its own parent"
        );
        assert!(
            resolver.lookup("y.x.b.test").is_none(),
            "a wildcard covers one label only"
        );
        assert!(resolver.lookup("other.test").is_none());
    }

    #[test]
    fn an_exact_certificate_wins_over_a_wildcard_for_the_same_name() {
        let resolver = SniResolver::new();
        let wildcard = key_for(&["*.b.test"]);
        let exact = key_for(&["x.b.test"]);
        // Either order of publishing: the exact name is looked up first.
        resolver.publish(&names(&["x.b.test"]), exact.clone());
        resolver.publish(&names(&["*.b.test"]), wildcard.clone());
        assert!(Arc::ptr_eq(&resolver.lookup("X.b.test").unwrap(), &exact));
        assert!(Arc::ptr_eq(
            &resolver.lookup("y.b.test").unwrap(),
            &wildcard
        ));
        // Withdrawing the exact site leaves its name to the wildcard.
        resolver.withdraw(&names(&["x.b.test"]));
        assert!(Arc::ptr_eq(
            &resolver.lookup("x.b.test").unwrap(),
            &wildcard
        ));
        // IP names are exact only: an address has no `*.` parent.
        resolver.publish(&names(&["*.0.0.1"]), wildcard.clone());
        assert!(resolver.lookup("127.0.0.1").is_none());
        let ip = key_for(&["127.0.0.1"]);
        resolver.publish(&names(&["127.0.0.1"]), ip.clone());
        assert!(Arc::ptr_eq(&resolver.lookup("127.0.0.1").unwrap(), &ip));
    }

    #[test]
    fn a_swap_replaces_the_pointer_and_withdraw_removes_names() {
        let resolver = SniResolver::new();
        let old = key_for(&["a.test"]);
        let new = key_for(&["a.test"]);
        resolver.publish(&names(&["a.test"]), old.clone());
        let before = resolver.lookup("a.test").unwrap();
        resolver.publish(&names(&["a.test"]), new.clone());
        let after = resolver.lookup("a.test").unwrap();
        assert!(Arc::ptr_eq(&before, &old));
        assert!(Arc::ptr_eq(&after, &new));

        resolver.publish_all(vec![(names(&["b.test", "c.test"]), old)]);
        assert_eq!(resolver.len(), 3);
        resolver.retain(&names(&["b.test"]));
        assert!(resolver.lookup("a.test").is_none());
        resolver.withdraw(&names(&["b.test"]));
        assert!(resolver.is_empty());
    }

    #[test]
    fn names_not_published_yet_are_loaded_on_demand_until_everything_is() {
        let resolver = SniResolver::new();
        let stored = key_for(&["a.test", "www.a.test"]);
        let asked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let (key, log) = (stored.clone(), asked.clone());
        resolver.load_on_demand(Box::new(move |name| {
            log.lock().unwrap().push(name.to_owned());
            (name == "www.a.test").then(|| (names(&["a.test", "www.a.test"]), key.clone()))
        }));

        assert!(Arc::ptr_eq(
            &resolver.lookup("WWW.a.test.").unwrap(),
            &stored
        ));
        // Published with every name of its site: no second load for either.
        assert!(Arc::ptr_eq(&resolver.lookup("a.test").unwrap(), &stored));
        assert!(resolver.lookup("other.test").is_none());
        assert_eq!(*asked.lock().unwrap(), ["www.a.test", "other.test"]);

        resolver.loaded();
        assert!(resolver.lookup("other.test").is_none());
        assert_eq!(
            asked.lock().unwrap().len(),
            2,
            "no loads once everything is loaded"
        );
    }

    #[test]
    fn a_handshake_without_sni_gets_the_default_sites_certificate_if_any() {
        let resolver = SniResolver::new();
        let site = key_for(&["a.test", "www.a.test"]);
        resolver.publish(&names(&["a.test", "www.a.test"]), site.clone());
        assert!(
            resolver.certificate_for(None).is_none(),
            "no default: refused"
        );
        resolver.set_default(Some("A.test."));
        assert!(Arc::ptr_eq(&resolver.certificate_for(None).unwrap(), &site));
        // Looked up at each handshake: a renewed certificate is served without SNI too.
        let renewed = key_for(&["a.test", "www.a.test"]);
        resolver.publish(&names(&["a.test", "www.a.test"]), renewed.clone());
        assert!(Arc::ptr_eq(
            &resolver.certificate_for(None).unwrap(),
            &renewed
        ));
        assert!(resolver.certificate_for(Some("other.test")).is_none());
        resolver.set_default(None);
        assert!(resolver.certificate_for(None).is_none());
    }

    #[test]
    fn a_key_that_does_not_match_is_refused() {
        let key = crate::certificate::generate_key(KeyType::EcdsaP256).unwrap();
        let other = crate::certificate::generate_key(KeyType::EcdsaP256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.test".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let result = certified_key(&CertifiedPem {
            cert_pem: cert.pem(),
            chain_pem: String::new(),
            key_pem: Zeroizing::new(other.serialize_pem()),
        });
        assert!(result.is_err());
    }
}
