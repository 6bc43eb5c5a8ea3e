//! Reloading the configuration (SIGHUP): what changes at once (sites, routes, certificates, renewal)
//! and what only at the next start (listeners, trust, `[log]`, state dir, storage).

use std::path::Path;
use std::sync::Arc;

use tracing::{error, info, warn};

use super::load::serve_stored;
use super::sites::SiteTable;
use super::Daemon;
use crate::config;

impl Daemon {
    /// Reads the configuration again and applies it: sites added are served (and ordered when they have
    /// no certificate), sites removed stop being served, routes change. An invalid configuration is
    /// refused with the error logged, and the running one stays.
    pub fn reload(&self, config_path: &Path) {
        let mut next = match config::load(config_path) {
            Ok(next) => next,
            Err(err) => {
                error!("reload refused, the running configuration stays: {err}");
                return;
            }
        };
        let current = self.shared.config.load_full();
        if next.http.listen != current.http.listen || next.https.listen != current.https.listen {
            warn!("listen addresses changed; they take effect at the next start");
        }
        if next.https.trusted_proxies != current.https.trusted_proxies
            || next.https.proxy_protocol != current.https.proxy_protocol
            || next.http.proxy_protocol != current.http.proxy_protocol
        {
            warn!("trusted_proxies or proxy_protocol changed; they take effect at the next start");
        }
        if next.log != current.log {
            warn!("[log] changed; it takes effect at the next start");
        }
        if next.state_dir != current.state_dir {
            warn!("state_dir changed; it takes effect at the next start");
            next.state_dir = current.state_dir.clone();
        }
        if next.storage != current.storage {
            warn!("[storage] changed; it takes effect at the next start");
            next.storage = current.storage.clone();
        }
        let next = Arc::new(next);
        let names: Vec<String> = next
            .sites
            .iter()
            .flat_map(|site| site.names.clone())
            .collect();
        // Routes first, then certificates: a removed name stops being routed (and redirected) at
        // the same moment as an added one starts, and its certificate goes last.
        // Unchanged upstream groups keep their servers' health and balancing state.
        let sites = SiteTable::reloaded(&next, &self.shared.metrics, &self.shared.sites.load());
        self.shared.sites.store(Arc::new(sites));
        serve_stored(&next, self.shared.store.as_ref(), &self.shared.resolver);
        self.shared.local_copy.request(next.clone());
        self.shared.resolver.retain(&names);
        self.shared
            .resolver
            .set_default(next.https.default_site.as_deref());
        self.shared.config.store(next.clone());
        let renewer = self.shared.renewer.borrow().reconfigured(next.clone());
        self.shared.renewer.send_replace(renewer);
        info!(sites = next.sites.len(), "configuration reloaded");
    }
}
