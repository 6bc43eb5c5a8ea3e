//! Copying one store's state into another (`certd storage migrate` / `certd storage export`):
//! ACME accounts per CA, each site's live certificate with its record, and the ledgers, without
//! contacting any CA.
//!
//! Only the [`StateStore`] interface is used on both sides, so any pair of backends works (the state
//! directory into PostgreSQL, back, or one database into another). What the destination seals or how
//! it lays files out is its own business: a key copied into PostgreSQL is sealed as any install is.
//!
//! Rules, so that running it twice changes nothing and nothing live is lost silently:
//! - a site whose destination already serves the same leaf is left alone ("already there");
//! - a site whose destination serves another certificate is refused unless
//!   [`TransferOptions::overwrite`] is set; then the source's pair becomes the next version there;
//! - the site's renewal record goes with its certificate (attempts, failures, the ARI window);
//! - ledger lines missing in the destination are appended (a line equal to one there is skipped),
//!   so the rate-limit guard keeps counting what this state ordered;
//! - an account is copied when the destination has none for that CA; a different one there is kept
//!   (or replaced with `overwrite`): certificates do not depend on the account.
//!
//! Only the live version of each site is copied: older versions are the source's rollback history
//! and stay where they are. The scheduler heartbeat and leases belong to a running node and are not
//! copied.

use std::collections::BTreeMap;

use super::StateStore;
use crate::certificate;
use crate::store::{SiteRecord, StoreError};

/// What a transfer may do.
#[derive(Debug, Clone, Default)]
pub struct TransferOptions {
    /// Replace a site's certificate (and a CA's account) the destination already has.
    pub overwrite: bool,
}

/// What happened to one site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteOutcome {
    /// Its live pair (serial in hex, when the leaf parses) and record were copied.
    Copied {
        /// The leaf's serial.
        serial: Option<String>,
    },
    /// The destination already serves the same leaf.
    AlreadyThere,
    /// The source has no certificate for it; its record was copied when the destination had none.
    RecordOnly,
    /// Not copied: the destination serves another certificate.
    Refused {
        /// The destination's serial.
        theirs: Option<String>,
    },
    /// Reading or writing failed.
    Failed(String),
}

/// What happened to one CA's account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountOutcome {
    /// Copied.
    Copied,
    /// The destination has the same one.
    AlreadyThere,
    /// The destination has another one, kept.
    KeptTheirs,
    /// Reading or writing failed.
    Failed(String),
}

/// What a transfer did, per site and per CA.
#[derive(Debug, Clone, Default)]
pub struct TransferReport {
    /// Per site, sorted.
    pub sites: BTreeMap<String, SiteOutcome>,
    /// Per CA directory URL, for the CAs whose account the source has.
    pub accounts: BTreeMap<String, AccountOutcome>,
    /// Per CA directory URL: ledger lines appended (CAs whose ledger the source has lines for).
    pub ledger_appended: BTreeMap<String, usize>,
    /// Ledger failures, per CA directory URL.
    pub ledger_failed: BTreeMap<String, String>,
}

impl TransferReport {
    /// Whether anything was refused or failed (the command exits 1 then).
    pub fn has_problems(&self) -> bool {
        !self.ledger_failed.is_empty()
            || self.sites.values().any(|outcome| {
                matches!(
                    outcome,
                    SiteOutcome::Refused { .. } | SiteOutcome::Failed(_)
                )
            })
            || self
                .accounts
                .values()
                .any(|outcome| matches!(outcome, AccountOutcome::Failed(_)))
    }

    /// One line per site, CA account and ledger, for people.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (site, outcome) in &self.sites {
            lines.push(match outcome {
                SiteOutcome::Copied { serial } => format!(
                    "{site}: copied (serial {})",
                    serial.as_deref().unwrap_or("unreadable")
                ),
                SiteOutcome::AlreadyThere => format!("{site}: already there"),
                SiteOutcome::RecordOnly => format!("{site}: no certificate; record copied"),
                SiteOutcome::Refused { theirs } => format!(
                    "{site}: not copied: the destination already serves another certificate \
                     (serial {}); pass --overwrite to replace it",
                    theirs.as_deref().unwrap_or("unreadable")
                ),
                SiteOutcome::Failed(reason) => format!("{site}: failed: {reason}"),
            });
        }
        for (url, outcome) in &self.accounts {
            lines.push(match outcome {
                AccountOutcome::Copied => format!("account {url}: copied"),
                AccountOutcome::AlreadyThere => format!("account {url}: already there"),
                AccountOutcome::KeptTheirs => format!(
                    "account {url}: the destination has another account there, kept \
                     (--overwrite replaces it)"
                ),
                AccountOutcome::Failed(reason) => format!("account {url}: failed: {reason}"),
            });
        }
        for (url, appended) in &self.ledger_appended {
            lines.push(format!("ledger {url}: {appended} line(s) appended"));
        }
        for (url, reason) in &self.ledger_failed {
            lines.push(format!("ledger {url}: failed: {reason}"));
        }
        lines
    }
}

/// The serial of `cert_pem`'s leaf, when it parses.
fn serial(cert_pem: &str) -> Option<String> {
    certificate::parse_pem(cert_pem)
        .ok()
        .map(|info| info.serial)
}

/// Whether two chains start with the same leaf (the PEM text, whitespace at the ends aside: both
/// were written by certd or its importer, so the same certificate has the same text).
fn same_leaf(a: &str, b: &str) -> bool {
    a.trim() == b.trim()
}

/// Copies `from`'s state into `to`: every site `from` holds, and the accounts and ledgers of the CAs
/// at `directory_urls` (the configured ones: the interface is asked per CA). The caller holds both
/// stores' writer locks.
pub fn transfer(
    from: &dyn StateStore,
    to: &dyn StateStore,
    directory_urls: &[String],
    options: &TransferOptions,
) -> Result<TransferReport, StoreError> {
    let mut report = TransferReport::default();
    for site in from.sites()? {
        let outcome = transfer_site(from, to, &site, options)
            .unwrap_or_else(|err| SiteOutcome::Failed(err.to_string()));
        report.sites.insert(site, outcome);
    }
    for url in directory_urls {
        if let Some(outcome) = transfer_account(from, to, url, options) {
            report.accounts.insert(url.clone(), outcome);
        }
        match transfer_ledger(from, to, url) {
            Ok(0) => {}
            Ok(appended) => {
                report.ledger_appended.insert(url.clone(), appended);
            }
            Err(err) => {
                report.ledger_failed.insert(url.clone(), err.to_string());
            }
        }
    }
    Ok(report)
}

fn transfer_site(
    from: &dyn StateStore,
    to: &dyn StateStore,
    site: &str,
    options: &TransferOptions,
) -> Result<SiteOutcome, StoreError> {
    let record = from.load_record(site)?;
    let Some(ours) = from.current(site)? else {
        if record != SiteRecord::default() && to.load_record(site)? == SiteRecord::default() {
            to.save_record(site, &record)?;
        }
        return Ok(SiteOutcome::RecordOnly);
    };
    if let Some(theirs) = to.current(site)? {
        if same_leaf(&theirs.pem.cert_pem, &ours.pem.cert_pem) {
            return Ok(SiteOutcome::AlreadyThere);
        }
        if !options.overwrite {
            return Ok(SiteOutcome::Refused {
                theirs: serial(&theirs.pem.cert_pem),
            });
        }
    }
    to.install(site, &ours.pem)?;
    to.save_record(site, &record)?;
    Ok(SiteOutcome::Copied {
        serial: serial(&ours.pem.cert_pem),
    })
}

/// `None` when the source has no account at `url`.
fn transfer_account(
    from: &dyn StateStore,
    to: &dyn StateStore,
    url: &str,
    options: &TransferOptions,
) -> Option<AccountOutcome> {
    let ours = match from.load_account(url) {
        Ok(Some(ours)) => ours,
        Ok(None) => return None,
        Err(err) => return Some(AccountOutcome::Failed(err.to_string())),
    };
    let outcome = match to.load_account(url) {
        Ok(Some(theirs)) if theirs == ours => AccountOutcome::AlreadyThere,
        Ok(Some(_)) if !options.overwrite => AccountOutcome::KeptTheirs,
        Ok(_) => match to.save_account(url, &ours) {
            Ok(()) => AccountOutcome::Copied,
            Err(err) => AccountOutcome::Failed(err.to_string()),
        },
        Err(err) => AccountOutcome::Failed(err.to_string()),
    };
    Some(outcome)
}

/// Appends the lines of `from`'s ledger at `url` that `to` lacks; how many.
fn transfer_ledger(
    from: &dyn StateStore,
    to: &dyn StateStore,
    url: &str,
) -> Result<usize, StoreError> {
    let ours = from.ledger_entries(url)?;
    if ours.is_empty() {
        return Ok(0);
    }
    let mut theirs = to.ledger_entries(url)?;
    let mut appended = 0;
    for entry in ours {
        // Each of their lines matches at most one of ours: two equal orders stay two.
        if let Some(at) = theirs.iter().position(|line| *line == entry) {
            theirs.swap_remove(at);
            continue;
        }
        to.ledger_append(url, &entry)?;
        appended += 1;
    }
    Ok(appended)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::certificate::CertifiedPem;
    use crate::ledger::{LedgerEntry, LedgerEvent};
    use crate::store::Store;
    use time::OffsetDateTime;
    use zeroize::Zeroizing;

    const CA: &str = "https://ca.test/dir";

    fn pair(name: &str) -> CertifiedPem {
        let key = crate::certificate::generate_key(crate::config::KeyType::EcdsaP256).unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        CertifiedPem {
            cert_pem: cert.pem(),
            chain_pem: String::new(),
            key_pem: Zeroizing::new(key.serialize_pem()),
        }
    }

    fn entry(site: &str) -> LedgerEntry {
        LedgerEntry {
            at: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            site: site.to_owned(),
            names: vec![site.to_owned()],
            event: LedgerEvent::Issued,
            serial: Some("01".into()),
            error: None,
            retry_after: None,
        }
    }

    fn stores() -> (tempfile::TempDir, Store, Store) {
        let dir = tempfile::tempdir().unwrap();
        let from = Store::open(&dir.path().join("from")).unwrap();
        let to = Store::open(&dir.path().join("to")).unwrap();
        (dir, from, to)
    }

    #[test]
    fn copies_everything_once_and_a_second_run_changes_nothing() {
        let (_dir, from, to) = stores();
        let a = pair("a.test");
        from.install("a.test", &a).unwrap();
        let record = SiteRecord {
            consecutive_failures: 2,
            ..SiteRecord::default()
        };
        from.save_record("a.test", &record).unwrap();
        from.save_account(CA, r#"{"id":"acct"}"#).unwrap();
        StateStore::ledger_append(&from, CA, &entry("a.test")).unwrap();
        StateStore::ledger_append(&from, CA, &entry("a.test")).unwrap();

        let urls = vec![CA.to_owned()];
        let report = transfer(&from, &to, &urls, &TransferOptions::default()).unwrap();
        assert!(matches!(
            report.sites["a.test"],
            SiteOutcome::Copied { serial: Some(_) }
        ));
        assert_eq!(report.accounts[CA], AccountOutcome::Copied);
        assert_eq!(report.ledger_appended[CA], 2);
        assert!(!report.has_problems());
        let copied = StateStore::current(&to, "a.test").unwrap().unwrap();
        assert_eq!(copied.pem.cert_pem, a.cert_pem);
        assert_eq!(*copied.pem.key_pem, *a.key_pem);
        assert_eq!(StateStore::load_record(&to, "a.test").unwrap(), record);
        assert_eq!(
            StateStore::load_account(&to, CA).unwrap().as_deref(),
            Some(r#"{"id":"acct"}"#)
        );

        let again = transfer(&from, &to, &urls, &TransferOptions::default()).unwrap();
        assert_eq!(again.sites["a.test"], SiteOutcome::AlreadyThere);
        assert_eq!(again.accounts[CA], AccountOutcome::AlreadyThere);
        assert!(again.ledger_appended.is_empty());
        assert_eq!(StateStore::versions(&to, "a.test").unwrap().len(), 1);
        assert_eq!(StateStore::ledger_entries(&to, CA).unwrap().len(), 2);
    }

    #[test]
    fn a_site_the_destination_serves_otherwise_is_refused_unless_overwrite() {
        let (_dir, from, to) = stores();
        let ours = pair("a.test");
        let theirs = pair("a.test");
        from.install("a.test", &ours).unwrap();
        to.install("a.test", &theirs).unwrap();
        to.save_account(CA, "theirs").unwrap();
        from.save_account(CA, "ours").unwrap();
        let urls = vec![CA.to_owned()];

        let refused = transfer(&from, &to, &urls, &TransferOptions::default()).unwrap();
        assert!(matches!(
            refused.sites["a.test"],
            SiteOutcome::Refused { theirs: Some(_) }
        ));
        assert_eq!(refused.accounts[CA], AccountOutcome::KeptTheirs);
        assert!(refused.has_problems());
        assert!(refused.lines()[0].contains("--overwrite"), "{refused:?}");
        let live = StateStore::current(&to, "a.test").unwrap().unwrap();
        assert_eq!(live.pem.cert_pem, theirs.cert_pem);

        let forced = transfer(&from, &to, &urls, &TransferOptions { overwrite: true }).unwrap();
        assert!(matches!(forced.sites["a.test"], SiteOutcome::Copied { .. }));
        assert_eq!(forced.accounts[CA], AccountOutcome::Copied);
        let live = StateStore::current(&to, "a.test").unwrap().unwrap();
        assert_eq!(live.pem.cert_pem, ours.cert_pem);
        // The destination's own certificate is kept as the version before.
        assert_eq!(StateStore::versions(&to, "a.test").unwrap().len(), 2);
    }

    #[test]
    fn a_site_without_a_certificate_carries_its_record_only() {
        let (_dir, from, to) = stores();
        let record = SiteRecord {
            consecutive_failures: 3,
            ..SiteRecord::default()
        };
        from.save_record("b.test", &record).unwrap();
        let report = transfer(&from, &to, &[], &TransferOptions::default()).unwrap();
        assert_eq!(report.sites["b.test"], SiteOutcome::RecordOnly);
        assert_eq!(StateStore::load_record(&to, "b.test").unwrap(), record);
        assert!(StateStore::current(&to, "b.test").unwrap().is_none());
    }
}
