//! The sites the daemon serves, by host name: each with its routes and error pages, built from the
//! configuration and swapped whole on reload.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Config, RouteConfig, RouteTargetConfig, SiteConfig};
use crate::metrics::{Metrics, SiteCounters};
use crate::proxy::http_rules::SiteHttp;
use crate::proxy::{Route, RouteTarget, SiteRoutes, UpstreamGroup};

/// One served site.
pub(super) struct ServedSite {
    /// The site's first name.
    pub name: String,
    /// How its requests are answered.
    pub routes: SiteRoutes,
    /// Its request counters (kept across reloads).
    pub counters: Arc<SiteCounters>,
}

/// Every served site, by each of its names.
#[derive(Default)]
pub(super) struct SiteTable {
    by_name: HashMap<String, Arc<ServedSite>>,
    /// The site of connections without SNI (`[https] default_site`).
    default: Option<Arc<ServedSite>>,
    /// The `[[upstream]]` groups by name, handed to the next table on reload.
    groups: HashMap<String, Arc<UpstreamGroup>>,
}

impl SiteTable {
    /// The table for `config`'s sites.
    pub fn from_config(config: &Config, metrics: &Metrics) -> Self {
        Self::reloaded(config, metrics, &Self::default())
    }

    /// The table for `config`'s sites replacing `previous` on reload: an `[[upstream]]` group
    /// configured exactly as before is the same group, so its servers' passive health
    /// (`max_fails` within `fail_timeout`), balancer position and requests in flight carry over,
    /// as nginx keeps them for an unchanged upstream; a changed group starts afresh.
    pub fn reloaded(config: &Config, metrics: &Metrics, previous: &SiteTable) -> Self {
        let mut by_name = HashMap::new();
        // One of each group, shared by every route that names it, so its servers' health and
        // balancing are the group's, not a route's.
        let groups: HashMap<&str, Arc<UpstreamGroup>> = config
            .upstreams
            .iter()
            .map(|group| {
                let served = match previous.groups.get(&group.name) {
                    Some(running) if running.config() == group => running.clone(),
                    _ => Arc::new(UpstreamGroup::new(group)),
                };
                (group.name.as_str(), served)
            })
            .collect();
        for site in &config.sites {
            let served = Arc::new(ServedSite {
                name: site.name().to_owned(),
                routes: routes(site, &groups),
                counters: metrics.site(site.name()),
            });
            for name in &site.names {
                by_name.insert(name.clone(), served.clone());
            }
        }
        let default = config
            .https
            .default_site
            .as_deref()
            .and_then(|name| by_name.get(name).cloned());
        let groups = groups
            .into_iter()
            .map(|(name, group)| (name.to_owned(), group))
            .collect();
        Self {
            by_name,
            default,
            groups,
        }
    }

    /// The site serving `host` (lower-case, without port): the site naming it exactly, else the
    /// one whose `*.` wildcard covers it (one label only, as the certificate does).
    pub fn site(&self, host: &str) -> Option<&Arc<ServedSite>> {
        self.by_name.get(host).or_else(|| {
            let (_, parent) = host.split_once('.')?;
            self.by_name.get(&format!("*.{parent}"))
        })
    }

    /// The site of connections whose handshake had no SNI, if `[https] default_site` names one.
    pub fn default_site(&self) -> Option<&Arc<ServedSite>> {
        self.default.as_ref()
    }

    /// Whether `host` is one of the configured names (or covered by a wildcard one).
    pub fn serves(&self, host: &str) -> bool {
        self.site(host).is_some()
    }
}

fn routes(site: &SiteConfig, groups: &HashMap<&str, Arc<UpstreamGroup>>) -> SiteRoutes {
    let mut routes = SiteRoutes {
        routes: site.routes.iter().map(|r| route(r, groups)).collect(),
        error_pages: site
            .error_pages
            .iter()
            .map(|(status, path)| (*status, path.clone()))
            .collect(),
        http: Default::default(),
        error_page: site.error_page.clone(),
        has_error_pages: !site.error_page.is_empty() || has_error_pages(&site.routes),
    };
    routes.http = SiteHttp::new(site.name().to_owned(), site.http.clone(), &routes.routes);
    routes
}

/// Whether any of `routes` (or the routes nested in them) has error pages.
fn has_error_pages(routes: &[RouteConfig]) -> bool {
    routes
        .iter()
        .any(|route| !route.error_page.is_empty() || has_error_pages(&route.routes))
}

/// The served form of one route and the routes nested in it.
fn route(route: &RouteConfig, groups: &HashMap<&str, Arc<UpstreamGroup>>) -> Route {
    Route {
        path: route.path.clone(),
        target: match &route.target {
            RouteTargetConfig::Proxy(uri) => RouteTarget::Proxy(uri.clone()),
            RouteTargetConfig::Root(root) => RouteTarget::Static(root.clone()),
            RouteTargetConfig::Fastcgi(target) => RouteTarget::Fastcgi(target.clone()),
            RouteTargetConfig::Return(answer) => RouteTarget::Return(answer.clone()),
            RouteTargetConfig::Alias(folder) => RouteTarget::Alias(folder.clone()),
        },
        tunnel_idle_timeout: route.tunnel_idle_timeout,
        allow_dotfiles: route.allow_dotfiles,
        location: route.location.clone(),
        routes: route
            .routes
            .iter()
            .map(|nested| self::route(nested, groups))
            .collect(),
        try_files: route.try_files.clone(),
        access: route.access.clone(),
        compress: route.compress.clone(),
        precompressed: route.precompressed,
        http: route.http.clone(),
        upstream: route
            .upstream
            .as_deref()
            .and_then(|name| groups.get(name).cloned()),
        timeouts: route.timeouts,
        index: route.index.clone(),
        error_page: route.error_page.clone(),
        intercept_errors: route.intercept_errors,
        strip_prefix: route.strip_prefix,
        limit_except: route.limit_except.clone(),
        auth_request: route.auth_request.clone(),
        internal: route.internal,
        cache: route.cache.clone(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config(app_servers: &str) -> Config {
        let text = format!(
            "[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n\
             [[site]]\nnames = [\"a.test\"]\n\
             [[site.route]]\npath = \"/\"\nproxy = \"http://app\"\n\
             [[site.route]]\npath = \"/api/\"\nproxy = \"http://api\"\n\
             [[upstream]]\nname = \"app\"\nservers = [{app_servers}]\n\
             [[upstream]]\nname = \"api\"\nservers = [\"127.0.0.1:2\"]\n"
        );
        crate::config::from_toml(&text, std::path::Path::new("/etc/certd.toml")).unwrap()
    }

    /// The group of route `i` of `a.test`.
    fn group(table: &SiteTable, i: usize) -> Arc<UpstreamGroup> {
        let site = table.site("a.test").unwrap();
        site.routes.routes[i].upstream.clone().unwrap()
    }

    #[test]
    fn a_reload_keeps_unchanged_upstream_groups_and_their_state_and_renews_changed_ones() {
        let metrics = Metrics::default();
        let first = SiteTable::from_config(&config("\"127.0.0.1:1\""), &metrics);
        let same = SiteTable::reloaded(&config("\"127.0.0.1:1\""), &metrics, &first);
        assert!(Arc::ptr_eq(&group(&first, 0), &group(&same, 0)));
        assert!(Arc::ptr_eq(&group(&first, 1), &group(&same, 1)));

        let changed =
            SiteTable::reloaded(&config("\"127.0.0.1:1\", \"127.0.0.1:3\""), &metrics, &same);
        assert!(!Arc::ptr_eq(&group(&same, 0), &group(&changed, 0)));
        assert_eq!(group(&changed, 0).config().servers.len(), 2);
        assert!(
            Arc::ptr_eq(&group(&same, 1), &group(&changed, 1)),
            "the unchanged group next to it is kept"
        );
    }
}
