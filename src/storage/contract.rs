//! The contract every [`StateStore`] backend keeps, as checks written once against the interface:
//! the unit tests run them against the filesystem, the e2e tests (`tests/e2e/storage.rs`) against a
//! real PostgreSQL. Each check takes a fresh, empty store whose writer lock the caller holds, except
//! [`the_writer_lock_is_exclusive_until_dropped`], which takes it itself. Public (and hidden from
//! the docs) only so the e2e tests can run it; it panics on a broken contract, like a test.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use time::macros::datetime;
use zeroize::Zeroizing;

use super::StateStore;
use crate::certificate::CertifiedPem;
use crate::ledger::{LedgerEntry, LedgerEvent};
use crate::store::{SchedulerHeartbeat, SiteRecord, StoreError, StoredCert};

const SITE: &str = "example.test";
const CA: &str = "https://ca.test/directory";
const OTHER_CA: &str = "https://staging.ca.test/directory";

/// A check of the contract, run against one fresh store.
pub type Check = fn(&dyn StateStore);

/// Every check that runs with the writer lock held by the caller, by name.
pub const CHECKS: &[(&str, Check)] = &[
    ("an_empty_store_has_nothing", an_empty_store_has_nothing),
    (
        "the_installed_pair_is_current_and_the_next_install_replaces_it",
        the_installed_pair_is_current_and_the_next_install_replaces_it,
    ),
    (
        "batches_read_what_current_reads_in_order",
        batches_read_what_current_reads_in_order,
    ),
    ("records_round_trip_per_site", records_round_trip_per_site),
    ("accounts_are_kept_per_ca", accounts_are_kept_per_ca),
    (
        "the_ledger_keeps_entries_in_order_per_ca",
        the_ledger_keeps_entries_in_order_per_ca,
    ),
    (
        "the_scheduler_heartbeat_round_trips",
        the_scheduler_heartbeat_round_trips,
    ),
];

/// Distinguishable fake material: no backend parses PEM.
fn pem(tag: &str) -> CertifiedPem {
    CertifiedPem {
        cert_pem: format!("-----BEGIN CERTIFICATE-----\nleaf {tag}\n-----END CERTIFICATE-----\n"),
        chain_pem: format!("-----BEGIN CERTIFICATE-----\nca {tag}\n-----END CERTIFICATE-----\n"),
        key_pem: Zeroizing::new(format!(
            "-----BEGIN PRIVATE KEY-----\nkey {tag}\n-----END PRIVATE KEY-----\n"
        )),
    }
}

fn assert_pair(stored: &StoredCert, expected: &CertifiedPem) {
    assert_eq!(stored.pem.cert_pem, expected.cert_pem);
    assert_eq!(stored.pem.chain_pem, expected.chain_pem);
    assert_eq!(*stored.pem.key_pem, *expected.key_pem);
}

pub fn an_empty_store_has_nothing(store: &dyn StateStore) {
    assert!(store.current(SITE).unwrap().is_none());
    assert!(store.versions(SITE).unwrap().is_empty());
    assert_eq!(store.load_record(SITE).unwrap(), SiteRecord::default());
    assert!(store.load_account(CA).unwrap().is_none());
    assert!(store.ledger_entries(CA).unwrap().is_empty());
    assert!(store.sites().unwrap().is_empty());
    assert!(store.scheduler_heartbeat().unwrap().is_none());
}

pub fn the_installed_pair_is_current_and_the_next_install_replaces_it(store: &dyn StateStore) {
    let first = pem("one");
    let installed = store.install(SITE, &first).unwrap();
    assert_pair(&installed, &first);
    assert_pair(&store.current(SITE).unwrap().unwrap(), &first);

    let second = pem("two");
    store.install(SITE, &second).unwrap();
    assert_pair(&store.current(SITE).unwrap().unwrap(), &second);
    // The previous version is kept (a rollback needs it); both are listed, oldest first.
    assert_eq!(store.versions(SITE).unwrap().len(), 2);
    assert!(store.current("other.test").unwrap().is_none());
    assert_eq!(store.sites().unwrap(), vec![SITE.to_owned()]);
}

/// [`StateStore::current_batches`]: batches of the size asked for, in order, each site with its own
/// pair (a site without one is `None`), the newest version after a second install.
pub fn batches_read_what_current_reads_in_order(store: &dyn StateStore) {
    let (one, two, three) = (pem("one"), pem("two"), pem("three"));
    store.install(SITE, &one).unwrap();
    store.install("b.test", &two).unwrap();
    store.install("b.test", &three).unwrap();
    let sites = ["b.test", "none.test", SITE, "b.test", "c.test"];
    let mut batches = Vec::new();
    store.current_batches(&sites, 2, &mut |start, pairs| {
        let pairs: Vec<Option<StoredCert>> = pairs.into_iter().map(Result::unwrap).collect();
        batches.push((start, pairs));
    });
    assert_eq!(
        batches
            .iter()
            .map(|(start, pairs)| (*start, pairs.len()))
            .collect::<Vec<_>>(),
        [(0, 2), (2, 2), (4, 1)]
    );
    let pairs: Vec<Option<StoredCert>> = batches.into_iter().flat_map(|(_, p)| p).collect();
    for (index, expected) in [(0, &three), (2, &one), (3, &three)] {
        assert_pair(pairs[index].as_ref().unwrap(), expected);
    }
    assert!(pairs[1].is_none() && pairs[4].is_none());
    // No local copy to keep in a store given no state directory.
    let stop = tokio_util::sync::CancellationToken::new();
    assert_eq!(store.keep_local_copies(&sites, &stop).unwrap(), 0);
}

pub fn records_round_trip_per_site(store: &dyn StateStore) {
    let record = SiteRecord {
        last_attempt: Some(datetime!(2026-06-01 10:00 UTC)),
        last_error: Some("the CA said no".into()),
        consecutive_failures: 2,
        next_attempt: Some(datetime!(2026-06-01 11:00 UTC)),
        issued_by: Some(CA.into()),
        ..SiteRecord::default()
    };
    store.save_record(SITE, &record).unwrap();
    assert_eq!(store.load_record(SITE).unwrap(), record);
    assert_eq!(
        store.load_record("other.test").unwrap(),
        SiteRecord::default()
    );

    let cleared = SiteRecord {
        last_success: Some(datetime!(2026-06-01 12:00 UTC)),
        ..SiteRecord::default()
    };
    store.save_record(SITE, &cleared).unwrap();
    assert_eq!(store.load_record(SITE).unwrap(), cleared);
}

pub fn accounts_are_kept_per_ca(store: &dyn StateStore) {
    store.save_account(CA, r#"{"id":"production"}"#).unwrap();
    store.save_account(OTHER_CA, r#"{"id":"staging"}"#).unwrap();
    assert_eq!(
        store.load_account(CA).unwrap().unwrap(),
        r#"{"id":"production"}"#
    );
    assert_eq!(
        store.load_account(OTHER_CA).unwrap().unwrap(),
        r#"{"id":"staging"}"#
    );
    store.save_account(CA, r#"{"id":"replaced"}"#).unwrap();
    assert_eq!(
        store.load_account(CA).unwrap().unwrap(),
        r#"{"id":"replaced"}"#
    );
}

pub fn the_ledger_keeps_entries_in_order_per_ca(store: &dyn StateStore) {
    let names = vec!["example.test".to_owned(), "www.example.test".to_owned()];
    let ordered = LedgerEntry::new(
        datetime!(2026-06-01 10:00 UTC),
        SITE,
        &names,
        LedgerEvent::Ordered,
    );
    let mut issued = LedgerEntry::new(
        datetime!(2026-06-01 10:01 UTC),
        SITE,
        &names,
        LedgerEvent::Issued,
    );
    issued.serial = Some("01ab".into());
    store.ledger_append(CA, &ordered).unwrap();
    store.ledger_append(CA, &issued).unwrap();
    assert_eq!(store.ledger_entries(CA).unwrap(), vec![ordered, issued]);
    assert!(store.ledger_entries(OTHER_CA).unwrap().is_empty());
}

pub fn the_scheduler_heartbeat_round_trips(store: &dyn StateStore) {
    let beat = SchedulerHeartbeat {
        pid: std::process::id(),
        started: datetime!(2026-06-01 10:00 UTC),
        last_run: Some(datetime!(2026-06-01 10:05 UTC)),
        restarts: 1,
    };
    store.save_scheduler_heartbeat(&beat).unwrap();
    assert_eq!(store.scheduler_heartbeat().unwrap(), Some(beat));
}

/// The writer lock: exclusive, its holder this process, free again once dropped. Run it without
/// holding the lock.
pub fn the_writer_lock_is_exclusive_until_dropped(store: &dyn StateStore) {
    let held = store.lock().unwrap();
    assert_eq!(store.lock_holder(), Some(std::process::id()));
    assert!(matches!(store.lock(), Err(StoreError::Locked { .. })));
    drop(held);
    store.lock().unwrap();
}

#[cfg(test)]
mod filesystem {
    use super::*;
    use crate::store::Store;

    fn fresh() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state")).unwrap();
        (dir, store)
    }

    #[test]
    fn the_filesystem_keeps_the_contract() {
        for (name, check) in CHECKS {
            let (_dir, store) = fresh();
            let _lock = StateStore::lock(&store).unwrap();
            eprintln!("check: {name}");
            check(&store);
        }
        let (_dir, store) = fresh();
        the_writer_lock_is_exclusive_until_dropped(&store);
    }
}
