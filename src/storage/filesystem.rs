//! The filesystem backend of [`StateStore`]: the state directory laid out by [`crate::store`] (atomic
//! version folders, the `live` link, records, the flock) and the per-CA ledger files of
//! [`crate::ledger`]. This file only maps the interface onto them.

use std::path::PathBuf;

use crate::certificate::CertifiedPem;
use crate::ledger::{Ledger, LedgerEntry};
use crate::store::{SchedulerHeartbeat, SiteRecord, Store, StoreError, StoredCert};

use super::{StateStore, StoreLock};

impl StateStore for Store {
    fn describe(&self) -> String {
        self.layout().root().display().to_string()
    }

    fn readable(&self) -> bool {
        // `sites` takes a missing certs folder for "no sites yet"; an unmounted disk is not that.
        std::fs::read_dir(self.layout().root()).is_ok()
    }

    fn lock(&self) -> Result<StoreLock, StoreError> {
        Store::lock(self).map(StoreLock::new)
    }

    fn lock_holder(&self) -> Option<u32> {
        Store::lock_holder(self)
    }

    fn load_account(&self, directory_url: &str) -> Result<Option<String>, StoreError> {
        Store::load_account(self, directory_url)
    }

    fn save_account(&self, directory_url: &str, json: &str) -> Result<(), StoreError> {
        Store::save_account(self, directory_url, json)
    }

    fn account_location(&self, directory_url: &str) -> PathBuf {
        self.layout().account_file(directory_url)
    }

    fn install(&self, site: &str, pem: &CertifiedPem) -> Result<StoredCert, StoreError> {
        Store::install(self, site, pem)
    }

    fn current(&self, site: &str) -> Result<Option<StoredCert>, StoreError> {
        Store::current(self, site)
    }

    fn versions(&self, site: &str) -> Result<Vec<PathBuf>, StoreError> {
        Store::versions(self, site)
    }

    fn load_record(&self, site: &str) -> Result<SiteRecord, StoreError> {
        Store::load_record(self, site)
    }

    fn save_record(&self, site: &str, record: &SiteRecord) -> Result<(), StoreError> {
        Store::save_record(self, site, record)
    }

    fn sites(&self) -> Result<Vec<String>, StoreError> {
        self.sites_on_disk()
    }

    fn ledger_entries(&self, directory_url: &str) -> Result<Vec<LedgerEntry>, StoreError> {
        Ledger::for_ca(self, directory_url).entries()
    }

    fn ledger_append(&self, directory_url: &str, entry: &LedgerEntry) -> Result<(), StoreError> {
        Ledger::for_ca(self, directory_url).append(entry)
    }

    fn save_scheduler_heartbeat(&self, heartbeat: &SchedulerHeartbeat) -> Result<(), StoreError> {
        Store::save_scheduler_heartbeat(self, heartbeat)
    }

    fn scheduler_heartbeat(&self) -> Result<Option<SchedulerHeartbeat>, StoreError> {
        Store::scheduler_heartbeat(self)
    }
}
