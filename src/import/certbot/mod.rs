//! `certd import certbot`: adopts certbot's live certificates (and, when it can, its ACME account) into
//! the store (the state directory, or the `[storage]` database) without a new order, so a move from certbot costs no issuance against the CA's
//! rate limits. The CA is never contacted.
//!
//! Each lineage under `--from` (see [`lineage`]) is read through its `live/` links and checked on its
//! own (key matches, in date). It becomes the certificate of the configured `[[site]]` whose names equal
//! its SANs, in any order; a lineage that matches no site is reported with a `[[site]]` to paste, since
//! certd never edits the operator's configuration. The pair is stored as-is as the site's next version,
//! so `certd run` serves it at once and renews it when due. A pair already in the store (same leaf) is
//! left alone, which makes a second run change nothing.
//!
//! certbot's account (see [`account`]) is carried over only when it was made at the configured CA, its
//! key is ECDSA P-256 (what instant-acme signs with), and certd has no account there yet. Otherwise certd
//! registers its own account when it first renews; certificates do not depend on the account.
//!
//! Output: one line per lineage — `<lineage>: imported as <site> (serial <hex>, expires <rfc3339>)`,
//! `<lineage>: already imported`, or `<lineage>: not imported, <site> already has a certificate that
//! lasts as long or longer (...)` on stdout; `<lineage>: skipped: <reason>` on stderr — then one line per
//! certbot account (`account <id>: ...`), and the `[[site]]` tables to paste. Exit codes: 0 every lineage
//! imported or already present, 1 some were skipped, 2 nothing could be done (configuration, `--from`,
//! state directory or its lock).

pub mod account;
mod base64url;
pub mod challenge;
pub mod lineage;
pub mod renewal_conf;
mod report;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use self::account::AccountKey;
use self::lineage::Lineage;
use self::renewal_conf::RenewalConf;
pub use self::report::{AccountOutcome, Outcome, Report};
use crate::certificate;
use crate::config::{self, Config, SiteConfig};
use crate::exit::{EXIT_OK, EXIT_UNUSABLE};
use crate::storage::StateStore;
use crate::store::{SiteRecord, StoreError};
use crate::time_format::rfc3339;

/// Imports certbot's lineages from `from` into the store of the config at `config_path`.
/// Returns the exit code.
pub async fn run(from: &Path, config_path: &Path) -> u8 {
    let config = match config::load(config_path) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{err}");
            return EXIT_UNUSABLE;
        }
    };
    let names = match lineage::lineage_names(from) {
        Ok(names) => names,
        Err(err) => {
            eprintln!("{err}");
            return EXIT_UNUSABLE;
        }
    };
    // Through the storage boundary: the state directory, or the fleet's database (where the key is
    // sealed like any install's, and the other nodes load the pair when they next read it).
    let store = match crate::storage::open(&config) {
        Ok(store) => store,
        Err(err) => {
            eprintln!("{err}");
            return EXIT_UNUSABLE;
        }
    };
    let _lock = match store.lock() {
        Ok(lock) => lock,
        Err(err @ StoreError::Locked { .. }) => {
            eprintln!(
                "{err}; stop `certd run` while importing, then start it again to serve the \
                 imported certificates"
            );
            return EXIT_UNUSABLE;
        }
        Err(err) => {
            eprintln!("{err}");
            return EXIT_UNUSABLE;
        }
    };
    if names.is_empty() {
        eprintln!(
            "{}: no certbot lineages (live/<name>/ or renewal/<name>.conf), nothing to import",
            from.display()
        );
        return EXIT_OK;
    }
    let report = import(&config, &*store, from, &names, OffsetDateTime::now_utc());
    report.print(&config);
    report.exit_code()
}

/// Imports lineages `names` from `from` into `store` for `config`, at `now`. The caller holds the
/// state lock.
pub fn import(
    config: &Config,
    store: &dyn StateStore,
    from: &Path,
    names: &[String],
    now: OffsetDateTime,
) -> Report {
    let mut report = Report::default();
    let confs: Vec<(String, RenewalConf)> = names
        .iter()
        .map(|name| (name.clone(), lineage::read_conf(from, name)))
        .collect();

    // Read and check every lineage, and find its site.
    let mut by_site: BTreeMap<String, Vec<(Lineage, &SiteConfig)>> = BTreeMap::new();
    for (name, conf) in &confs {
        let lineage = match lineage::read_lineage(from, name, conf, now) {
            Ok(lineage) => lineage,
            Err(err) => {
                report
                    .lineages
                    .insert(name.clone(), Outcome::Skipped(err.to_string()));
                continue;
            }
        };
        if let Some(reason) = staging_mismatch(conf, &config.acme.directory_url) {
            report
                .lineages
                .insert(name.clone(), Outcome::Skipped(reason));
            continue;
        }
        match match_site(&config.sites, &lineage.info.names) {
            SiteMatch::Site(site) => by_site
                .entry(site.name().to_owned())
                .or_default()
                .push((lineage, site)),
            SiteMatch::NotInConfig { overlapping } => {
                let names = lineage.info.names.join(", ");
                let mut reason =
                    format!("not in the config: no [[site]] has exactly its names ({names})");
                if let Some(site) = overlapping {
                    reason += &format!("; site {} has {}", site.name(), site.names.join(", "));
                }
                reason += "; a [[site]] to add is printed below";
                report
                    .lineages
                    .insert(name.clone(), Outcome::Skipped(reason));
                let mut table = site_table(&lineage);
                // A wildcard, or a lineage certbot renewed over DNS-01, needs DNS-01 here too.
                let dns = challenge::from_conf(conf);
                if lineage.info.names.iter().any(|n| n.starts_with("*."))
                    || matches!(dns, challenge::CertbotChallenge::Dns { .. })
                {
                    table += "
challenge = \"dns-01\"";
                    if let challenge::CertbotChallenge::Dns { suggestion, .. } = dns {
                        table += &format!(
                            "
# and a DNS method, e.g.:
{suggestion}"
                        );
                    } else {
                        table += "   # with [acme.dns] or `dns_hook` configured";
                    }
                }
                if !report.suggestions.contains(&table) {
                    report.suggestions.push(table);
                }
            }
        }
    }

    // One certificate per site: when several lineages have the same names, the one that lasts longest.
    for candidates in by_site.into_values() {
        let Some(best) = candidates
            .iter()
            .enumerate()
            .max_by_key(|(_, (lineage, _))| (lineage.info.not_after, lineage.info.not_before))
            .map(|(index, _)| index)
        else {
            continue;
        };
        let (chosen, site) = &candidates[best];
        for (index, (other, _)) in candidates.iter().enumerate() {
            if index != best {
                report.lineages.insert(
                    other.name.clone(),
                    Outcome::Skipped(format!(
                        "site {} takes lineage {} instead, with the same names and a later expiry ({})",
                        site.name(),
                        chosen.name,
                        rfc3339(chosen.info.not_after)
                    )),
                );
            }
        }
        let outcome = install(store, site, chosen, now);
        if !matches!(outcome, Outcome::Skipped(_)) {
            let conf = confs
                .iter()
                .find(|(name, _)| *name == chosen.name)
                .map(|(_, conf)| conf);
            if let Some(note) = conf.and_then(|conf| challenge::note(&chosen.name, conf, site)) {
                report.notes.push(note);
            }
        }
        report.lineages.insert(chosen.name.clone(), outcome);
    }

    report.accounts = import_accounts(config, store, from, &confs);
    report
}

/// The site a lineage's certificate belongs to.
enum SiteMatch<'c> {
    /// The site whose names equal the certificate's, in any order.
    Site(&'c SiteConfig),
    /// No site has exactly these names; `overlapping` shares some of them.
    NotInConfig {
        /// The first site sharing a name with the certificate, if any.
        overlapping: Option<&'c SiteConfig>,
    },
}

/// Finds the site whose names are exactly `names` (compared as sets, case-insensitively).
fn match_site<'c>(sites: &'c [SiteConfig], names: &[String]) -> SiteMatch<'c> {
    let wanted = name_set(names);
    if let Some(site) = sites.iter().find(|site| name_set(&site.names) == wanted) {
        return SiteMatch::Site(site);
    }
    let overlapping = sites.iter().find(|site| {
        name_set(&site.names)
            .iter()
            .any(|name| wanted.contains(name))
    });
    SiteMatch::NotInConfig { overlapping }
}

fn name_set(names: &[String]) -> Vec<String> {
    let mut set: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
    set.sort();
    set.dedup();
    set
}

/// A `[[site]]` table for the lineage's names, ready to paste. The lineage's own name goes first when
/// it is one of them, so the site keeps the name the operator knows it by.
fn site_table(lineage: &Lineage) -> String {
    let mut names = lineage.info.names.clone();
    if let Some(position) = names.iter().position(|name| *name == lineage.name) {
        let own = names.remove(position);
        names.insert(0, own);
    }
    names.dedup();
    let quoted: Vec<String> = names
        .iter()
        .map(|name| toml::Value::String(name.clone()).to_string())
        .collect();
    format!("[[site]]\nnames = [{}]", quoted.join(", "))
}

/// Whether `site` renews over DNS-01 with a DNS method configured.
pub(crate) fn site_uses_dns01(site: &SiteConfig) -> bool {
    site.challenge == Some(config::ChallengeKind::Dns01) && site.dns.is_some()
}

/// Whether `url` is a Let's Encrypt staging directory, whose certificates no browser trusts.
fn is_staging(url: &str) -> bool {
    url.split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .is_some_and(|host| {
            host.starts_with("acme-staging") && host.ends_with(".api.letsencrypt.org")
        })
}

/// A reason to skip a lineage issued by a staging CA when certd is configured for another CA: serving
/// it would put an untrusted certificate in front of visitors until the next renewal.
fn staging_mismatch(conf: &RenewalConf, directory_url: &str) -> Option<String> {
    let server = conf.server.as_deref()?;
    (is_staging(server) && !same_url(server, directory_url)).then(|| {
        format!(
            "it was issued by Let's Encrypt's staging CA ({server}), whose certificates browsers do \
             not trust, and the config uses {directory_url}"
        )
    })
}

fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// Stores `lineage` as `site`'s current pair unless the store already has it (or a certificate that
/// lasts at least as long).
fn install(
    store: &dyn StateStore,
    site: &SiteConfig,
    lineage: &Lineage,
    now: OffsetDateTime,
) -> Outcome {
    let site_name = site.name().to_owned();
    match store.current(&site_name) {
        Ok(Some(stored)) => {
            if same_leaf(&stored.pem.cert_pem, &lineage.pem.cert_pem) {
                return Outcome::AlreadyImported { site: site_name };
            }
            if let Ok(info) = certificate::check_pair(&stored.pem, &site.names, now) {
                if info.not_after >= lineage.info.not_after {
                    return Outcome::NewerPresent {
                        site: site_name,
                        serial: info.serial,
                        expires: info.not_after,
                    };
                }
            }
        }
        Ok(None) => {}
        // What is there cannot be served anyway; the import puts a complete pair in front of it.
        Err(err) => {
            tracing::warn!(site = %site_name, error = %err, "the stored certificate cannot be read")
        }
    }
    // Checked again against the site's names: this is what certd will serve for them.
    if let Err(err) = certificate::check_pair(&lineage.pem, &site.names, now) {
        return Outcome::Skipped(err.to_string());
    }
    if let Err(err) = store.install(&site_name, &lineage.pem) {
        return Outcome::Skipped(format!("cannot store it: {err}"));
    }
    // A fresh start for the renewal schedule: earlier failures no longer apply to this certificate.
    let previous = store.load_record(&site_name).unwrap_or_default();
    let record = SiteRecord {
        last_attempt: previous.last_attempt,
        last_success: Some(now),
        ..SiteRecord::default()
    };
    if let Err(err) = store.save_record(&site_name, &record) {
        tracing::warn!(site = %site_name, error = %err, "cannot save the site's record");
    }
    tracing::info!(site = %site_name, lineage = %lineage.name, serial = %lineage.info.serial, "imported certbot's certificate");
    Outcome::Imported {
        site: site_name,
        serial: lineage.info.serial.clone(),
        expires: lineage.info.not_after,
    }
}

/// Whether two PEM texts start with the same certificate (compared as DER).
fn same_leaf(a: &str, b: &str) -> bool {
    match (
        CertificateDer::from_pem_slice(a.as_bytes()),
        CertificateDer::from_pem_slice(b.as_bytes()),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Considers every certbot account the lineages name (or, when a renewal configuration names none, the
/// only account certbot has at that CA) and imports the one for the configured CA when certd can use it.
fn import_accounts(
    config: &Config,
    store: &dyn StateStore,
    from: &Path,
    confs: &[(String, RenewalConf)],
) -> Vec<AccountOutcome> {
    let directory_url = &config.acme.directory_url;
    // (server, account id) → how many lineages use it.
    let mut used: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (_, conf) in confs {
        let Some(server) = conf.server.clone() else {
            continue;
        };
        let id = match &conf.account {
            Some(id) => id.clone(),
            None => {
                let ids = account::accounts_dir(from, &server)
                    .map(|dir| account::account_ids(&dir))
                    .unwrap_or_default();
                match <[String; 1]>::try_from(ids) {
                    Ok([only]) => only,
                    Err(_) => continue,
                }
            }
        };
        *used.entry((server, id)).or_default() += 1;
    }
    // The configured CA's accounts first, the most used first among them.
    let mut order: Vec<((String, String), usize)> = used.into_iter().collect();
    order.sort_by_key(|((server, id), count)| {
        (
            !same_url(server, directory_url),
            std::cmp::Reverse(*count),
            id.clone(),
        )
    });

    let mut outcomes = Vec::new();
    for ((server, id), _) in order {
        let outcome = |message: String, problem: bool| AccountOutcome {
            id: id.clone(),
            message,
            problem,
        };
        if !same_url(&server, directory_url) {
            outcomes.push(outcome(
                format!("not imported: it is registered at {server}, and the config uses {directory_url}"),
                false,
            ));
            continue;
        }
        let Some(accounts_dir) = account::accounts_dir(from, &server) else {
            continue;
        };
        let account_dir = accounts_dir.join(&id);
        if !account_dir.exists() {
            // Copied without accounts/, or certbot removed the account: nothing to carry over.
            outcomes.push(outcome(
                format!(
                    "not imported: {} does not exist; certd will register its own account when it \
                     first renews (the imported certificates are not affected)",
                    account_dir.display()
                ),
                false,
            ));
            continue;
        }
        let certbot = match account::read_account(&accounts_dir, &id) {
            Ok(certbot) => certbot,
            Err(err) => {
                outcomes.push(outcome(
                    format!(
                        "not imported: {err}; certd will register its own account when it first \
                         renews (the imported certificates are not affected)"
                    ),
                    true,
                ));
                continue;
            }
        };
        match store.load_account(directory_url) {
            Ok(Some(stored)) => {
                let message = if account::stored_account_url(&stored).as_deref()
                    == Some(certbot.url.as_str())
                {
                    "already imported".to_owned()
                } else {
                    format!("not imported: certd already has an account at {directory_url}")
                };
                outcomes.push(outcome(message, false));
                continue;
            }
            Ok(None) => {}
            Err(err) => {
                outcomes.push(outcome(format!("not imported: {err}"), true));
                continue;
            }
        }
        let pkcs8 = match &certbot.key {
            AccountKey::P256(pkcs8) => pkcs8,
            AccountKey::Unsupported(kind) => {
                outcomes.push(outcome(
                    format!(
                        "not imported: its key is {kind}, and certd's ACME client signs with ECDSA \
                         P-256 account keys only; certd will register its own account at \
                         {directory_url} when it first renews (the imported certificates are not \
                         affected)"
                    ),
                    false,
                ));
                continue;
            }
        };
        let saved =
            account::credentials_json(&certbot.url, pkcs8, directory_url).and_then(|json| {
                store
                    .save_account(directory_url, &json)
                    .map_err(|err| err.to_string())
            });
        outcomes.push(match saved {
            Ok(()) => {
                tracing::info!(account = %certbot.url, directory = %directory_url, "imported certbot's ACME account");
                outcome(
                    format!(
                        "imported as certd's account at {directory_url} ({})",
                        certbot.url
                    ),
                    false,
                )
            }
            Err(reason) => outcome(format!("not imported: {reason}"), true),
        });
    }
    outcomes
}

/// Reads a file holding a secret (a key, an account key) into a buffer that is wiped when dropped.
/// `Ok(None)` when the file is not UTF-8 text; each caller says what it expected instead.
fn read_secret(path: &Path) -> std::io::Result<Option<zeroize::Zeroizing<String>>> {
    let bytes = zeroize::Zeroizing::new(std::fs::read(path)?);
    Ok(std::str::from_utf8(&bytes)
        .ok()
        .map(|text| zeroize::Zeroizing::new(text.to_owned())))
}
