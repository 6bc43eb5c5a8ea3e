//! The serve-or-not policy for a stored certificate: served only when it covers the site's names, is
//! in date, and its key belongs to it; anything else is logged and left for renewal to replace.

use std::sync::Arc;

use time::OffsetDateTime;
use tracing::warn;

use crate::certificate;
use crate::config::SiteConfig;
use crate::resolver;
use crate::storage::StateStore;
use crate::store::{StoreError, StoredCert};

/// The stored pair of `site` in the form rustls serves, if it can be served now: it covers the
/// site's names, is in date, and its key belongs to it (checked by [`resolver::certified_key`]).
pub(super) fn usable_key(
    store: &dyn StateStore,
    site: &SiteConfig,
    now: OffsetDateTime,
) -> Option<(Vec<String>, Arc<rustls::sign::CertifiedKey>)> {
    usable(site, store.current(site.name()), now)
}

/// [`usable_key`] for a pair already read from the store (what `current` said of `site`).
pub(super) fn usable(
    site: &SiteConfig,
    stored: Result<Option<StoredCert>, StoreError>,
    now: OffsetDateTime,
) -> Option<(Vec<String>, Arc<rustls::sign::CertifiedKey>)> {
    let unusable = |reason: &dyn std::fmt::Display| {
        warn!(site = site.name(), %reason, "the stored certificate cannot be served; it will be replaced");
    };
    let stored = match stored {
        Ok(Some(stored)) => stored,
        Ok(None) => return None,
        Err(err) => {
            warn!(site = site.name(), %err, "cannot read the stored certificate");
            return None;
        }
    };
    let info = match certificate::parse_pem(&stored.pem.cert_pem) {
        Ok(info) => info,
        Err(err) => {
            unusable(&err);
            return None;
        }
    };
    if let Some(missing) = site.names.iter().find(|name| !info.names.contains(name)) {
        unusable(&format!("it does not cover {missing}"));
        return None;
    }
    if now < info.not_before || now > info.not_after {
        unusable(&format!(
            "it is valid from {} to {}",
            info.not_before, info.not_after
        ));
        return None;
    }
    match resolver::certified_key(&stored.pem) {
        Ok(key) => Some((site.names.clone(), key)),
        Err(err) => {
            unusable(&err);
            None
        }
    }
}
