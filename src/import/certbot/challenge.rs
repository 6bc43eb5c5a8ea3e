//! How certbot validated a lineage, from its renewal configuration, and what the import tells the
//! operator about renewing it in certd.
//!
//! A lineage renewed over DNS-01 (`pref_challs = dns-01`, a `dns-*` authenticator plugin, or the
//! `manual` authenticator with hooks and DNS-01 preferred) is imported like any other: its certificate
//! needs no new order. Renewing it needs DNS-01 in certd too, so the import checks the site's config:
//! when the site uses `challenge = "dns-01"` with a DNS method the note says so; otherwise the note
//! says exactly what to configure, with an `[acme.dns]` table filled from certbot's `dns-rfc2136`
//! credentials (never the secret itself), or a `dns_hook` wrapper that runs certbot's manual hooks.

use std::path::Path;

use super::renewal_conf::RenewalConf;
use crate::config::{DnsMethod, SiteConfig};

/// How certbot renewed a lineage, as far as certd cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertbotChallenge {
    /// HTTP-01 (webroot, standalone, nginx, apache) or not recorded: certd's default works.
    Http,
    /// DNS-01, with what certbot used for it.
    Dns {
        /// `the dns-rfc2136 plugin`, `manual hooks (…)`, …, for the note.
        how: String,
        /// A configuration to paste, when one can be derived.
        suggestion: String,
    },
}

/// How certbot validated the lineage with renewal configuration `conf`.
pub fn from_conf(conf: &RenewalConf) -> CertbotChallenge {
    let authenticator = conf.authenticator.as_deref().unwrap_or("").trim();
    let prefers_dns = conf
        .pref_challs
        .as_deref()
        .unwrap_or("")
        .split(',')
        .any(|challenge| matches!(challenge.trim(), "dns-01" | "dns"));
    if authenticator == "dns-rfc2136" {
        return CertbotChallenge::Dns {
            how: "certbot's dns-rfc2136 plugin".to_owned(),
            suggestion: rfc2136_suggestion(conf.dns_rfc2136_credentials.as_deref()),
        };
    }
    if let Some(plugin) = authenticator.strip_prefix("dns-") {
        return CertbotChallenge::Dns {
            how: format!("certbot's dns-{plugin} plugin"),
            suggestion: format!(
                "dns_hook = \"/usr/local/bin/certd-dns-{plugin}\"   # a program called `add|remove \
                 <record-name> <value>` that uses your provider's API\n\n[acme.dns]\n\
                 propagation_timeout = \"2m\""
            ),
        };
    }
    // Manual hooks without DNS-01 preferred were HTTP-01 hooks, which certd answers itself.
    if authenticator == "manual" && prefers_dns {
        let auth = conf.manual_auth_hook.as_deref().unwrap_or("true");
        let cleanup = conf.manual_cleanup_hook.as_deref().unwrap_or("true");
        return CertbotChallenge::Dns {
            how: format!("certbot's manual hooks ({auth})"),
            suggestion: manual_hook_wrapper(auth, cleanup),
        };
    }
    if prefers_dns {
        return CertbotChallenge::Dns {
            how: format!("the {authenticator} authenticator with --preferred-challenges dns"),
            suggestion: "[acme.dns]   # or `dns_hook = \"/path\"` in [acme]\n\
                         server = \"192.0.2.53:53\"\ntsig_key = \"certd\"\n\
                         tsig_secret_file = \"/etc/certd/tsig.key\""
                .to_owned(),
        };
    }
    CertbotChallenge::Http
}

/// An `[acme.dns]` table from the dns-rfc2136 plugin's credentials file (an ini file of
/// `dns_rfc2136_server`, `_port`, `_name`, `_algorithm`, `_secret`); placeholders where it cannot be
/// read. The secret is never copied into the suggestion: it belongs in a 0600 file of its own.
fn rfc2136_suggestion(credentials: Option<&Path>) -> String {
    let text = credentials
        .and_then(|path| std::fs::read_to_string(path).ok())
        .map(zeroize::Zeroizing::new);
    let value = |key: &str| -> Option<String> {
        text.as_ref()?.lines().find_map(|line| {
            let (name, value) = line.split_once('=')?;
            (name.trim() == key).then(|| value.trim().to_owned())
        })
    };
    let server = value("dns_rfc2136_server").unwrap_or_else(|| "192.0.2.53".to_owned());
    let port = value("dns_rfc2136_port").unwrap_or_else(|| "53".to_owned());
    let name = value("dns_rfc2136_name").unwrap_or_else(|| "certd".to_owned());
    let algorithm = value("dns_rfc2136_algorithm")
        .map(|alg| alg.to_ascii_lowercase())
        .unwrap_or_else(|| "hmac-sha256".to_owned());
    let shown = credentials.map_or_else(
        || "certbot's credentials file".to_owned(),
        |path| path.display().to_string(),
    );
    format!(
        "[acme.dns]\nserver = \"{server}:{port}\"\ntsig_key = \"{}\"\ntsig_algorithm = \"{algorithm}\"\n\
         tsig_secret_file = \"/etc/certd/tsig.key\"   # the dns_rfc2136_secret of {shown}, alone, mode 0600",
        name.trim_end_matches('.')
    )
}

/// A `dns_hook` script that runs certbot's manual hooks with the environment they expect.
fn manual_hook_wrapper(auth: &str, cleanup: &str) -> String {
    format!(
        "dns_hook = \"/usr/local/bin/certd-certbot-hooks\"   # in [acme]; the file holds:\n\
         #   #!/bin/sh\n\
         #   d=\"${{2#_acme-challenge.}}\"; export CERTBOT_DOMAIN=\"${{d%.}}\" CERTBOT_VALIDATION=\"$3\"\n\
         #   case \"$1\" in add) exec sh -c '{auth}' ;; remove) exec sh -c '{cleanup}' ;; esac"
    )
}

/// Whether `site` renews over DNS-01 with a method configured, and how, for the note.
pub fn site_dns_method(site: &SiteConfig) -> Option<String> {
    if !super::site_uses_dns01(site) {
        return None;
    }
    match &site.dns.as_ref()?.method {
        DnsMethod::Rfc2136(rfc2136) => Some(format!(
            "RFC 2136 updates to {} (key {})",
            rfc2136.server, rfc2136.key_name
        )),
        DnsMethod::Hook { program, .. } => Some(format!("the DNS hook {}", program.display())),
    }
}

/// The note for lineage `lineage` imported as `site`, when certbot validated it over DNS-01:
/// `(is a problem, text)`. `None` for HTTP-01 lineages.
pub fn note(lineage: &str, conf: &RenewalConf, site: &SiteConfig) -> Option<(bool, String)> {
    let CertbotChallenge::Dns { how, suggestion } = from_conf(conf) else {
        return None;
    };
    Some(match site_dns_method(site) {
        Some(method) => (
            false,
            format!(
                "{lineage}: certbot validated it over DNS-01 ({how}); site {} renews over DNS-01 \
                 with {method}",
                site.name()
            ),
        ),
        None => (
            true,
            format!(
                "{lineage}: certbot validated it over DNS-01 ({how}), but site {} is not set up for \
                 DNS-01, so its renewal would not work the way certbot's did; set `challenge = \
                 \"dns-01\"` in the site and a DNS method, e.g.:\n{suggestion}",
                site.name()
            ),
        ),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn conf(authenticator: &str, pref_challs: Option<&str>) -> RenewalConf {
        RenewalConf {
            authenticator: Some(authenticator.to_owned()),
            pref_challs: pref_challs.map(str::to_owned),
            ..RenewalConf::default()
        }
    }

    #[test]
    fn http_authenticators_need_nothing() {
        assert_eq!(from_conf(&conf("webroot", None)), CertbotChallenge::Http);
        assert_eq!(
            from_conf(&conf("standalone", Some("http-01,"))),
            CertbotChallenge::Http
        );
        assert_eq!(from_conf(&RenewalConf::default()), CertbotChallenge::Http);
    }

    #[test]
    fn manual_hooks_with_dns_preferred_get_a_wrapper_running_them() {
        let mut manual = conf("manual", Some("dns-01,"));
        manual.manual_auth_hook = Some("/etc/letsencrypt/auth.sh".into());
        manual.manual_cleanup_hook = Some("/etc/letsencrypt/cleanup.sh".into());
        let CertbotChallenge::Dns { how, suggestion } = from_conf(&manual) else {
            panic!("not DNS-01");
        };
        assert!(how.contains("/etc/letsencrypt/auth.sh"), "{how}");
        assert!(suggestion.contains("dns_hook"), "{suggestion}");
        assert!(
            suggestion.contains("exec sh -c '/etc/letsencrypt/cleanup.sh'"),
            "{suggestion}"
        );
        assert!(suggestion.contains("CERTBOT_VALIDATION"), "{suggestion}");
    }

    #[test]
    fn the_rfc2136_plugin_becomes_an_acme_dns_table_without_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rfc2136.ini");
        std::fs::write(
            &path,
            "dns_rfc2136_server = 192.0.2.7\ndns_rfc2136_port = 5353\n\
             dns_rfc2136_name = certbot.\ndns_rfc2136_secret = c2VjcmV0\n\
             dns_rfc2136_algorithm = HMAC-SHA512\n",
        )
        .unwrap();
        let mut plugin = conf("dns-rfc2136", None);
        plugin.dns_rfc2136_credentials = Some(path);
        let CertbotChallenge::Dns { suggestion, .. } = from_conf(&plugin) else {
            panic!("not DNS-01");
        };
        assert!(
            suggestion.contains("server = \"192.0.2.7:5353\""),
            "{suggestion}"
        );
        assert!(
            suggestion.contains("tsig_key = \"certbot\""),
            "{suggestion}"
        );
        assert!(
            suggestion.contains("tsig_algorithm = \"hmac-sha512\""),
            "{suggestion}"
        );
        assert!(
            !suggestion.contains("c2VjcmV0"),
            "the secret leaked: {suggestion}"
        );
    }
}
