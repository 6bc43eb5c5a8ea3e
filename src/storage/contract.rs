//! The contract every [`StateStore`] backend keeps, as tests written once against the interface and
//! run for each backend (today the filesystem; a new backend adds itself to [`backends`]).
#![allow(clippy::unwrap_used)]

use time::macros::datetime;
use zeroize::Zeroizing;

use super::*;
use crate::ledger::LedgerEvent;

const SITE: &str = "example.test";
const CA: &str = "https://ca.test/directory";
const OTHER_CA: &str = "https://staging.ca.test/directory";

/// A fresh, empty store of every backend, with what keeps it alive (a temporary directory).
fn backends() -> Vec<(Box<dyn std::any::Any>, SharedStore)> {
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStore = Arc::new(Store::open(&dir.path().join("state")).unwrap());
    vec![(Box::new(dir), store)]
}

/// Runs `check` against an empty store of every backend, naming the backend when it fails.
fn for_each_backend(check: impl Fn(&dyn StateStore)) {
    for (_keep, store) in backends() {
        let _lock = store.lock().unwrap();
        eprintln!("backend: {}", store.describe());
        check(store.as_ref());
    }
}

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

#[test]
fn an_empty_store_has_nothing() {
    for_each_backend(|store| {
        assert!(store.current(SITE).unwrap().is_none());
        assert!(store.versions(SITE).unwrap().is_empty());
        assert_eq!(store.load_record(SITE).unwrap(), SiteRecord::default());
        assert!(store.load_account(CA).unwrap().is_none());
        assert!(store.ledger_entries(CA).unwrap().is_empty());
        assert!(store.sites().unwrap().is_empty());
        assert!(store.scheduler_heartbeat().unwrap().is_none());
    });
}

#[test]
fn the_installed_pair_is_current_and_the_next_install_replaces_it() {
    for_each_backend(|store| {
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
    });
}

#[test]
fn records_round_trip_per_site() {
    for_each_backend(|store| {
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
    });
}

#[test]
fn accounts_are_kept_per_ca() {
    for_each_backend(|store| {
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
    });
}

#[test]
fn the_ledger_keeps_entries_in_order_per_ca() {
    for_each_backend(|store| {
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
    });
}

#[test]
fn the_scheduler_heartbeat_round_trips() {
    for_each_backend(|store| {
        let beat = SchedulerHeartbeat {
            pid: std::process::id(),
            started: datetime!(2026-06-01 10:00 UTC),
            last_run: Some(datetime!(2026-06-01 10:05 UTC)),
            restarts: 1,
        };
        store.save_scheduler_heartbeat(&beat).unwrap();
        assert_eq!(store.scheduler_heartbeat().unwrap(), Some(beat));
    });
}

#[test]
fn the_writer_lock_is_exclusive_until_dropped() {
    for (_keep, store) in backends() {
        let held = store.lock().unwrap();
        assert_eq!(store.lock_holder(), Some(std::process::id()));
        assert!(matches!(store.lock(), Err(StoreError::Locked { .. })));
        drop(held);
        store.lock().unwrap();
    }
}
