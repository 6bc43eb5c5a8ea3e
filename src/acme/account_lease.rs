//! Creating a CA's ACME account once across a fleet: the account is created under a lease, the same
//! kind a site's renewal takes ([`account_lease_name`]), so nodes that start together on an empty
//! database do not each register an account and overwrite each other's in the store.
//!
//! [`claim`] decides, for a CA with no usable stored account: either this node holds the lease and
//! creates the account ([`Claim::Create`], after re-checking the store under the lease: another
//! node may have created it meanwhile), or another node holds it and this one waits, with backoff
//! and a bound, and then uses the account that node stored ([`Claim::Stored`]). With the filesystem
//! backend the lease is always granted at once, so nothing changes there.

use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tokio::time::Instant;
use tracing::{info, warn};

use super::AcmeError;
use crate::storage::{account_lease_name, Lease, StateStore};

/// The first pause of a node waiting for another to create the account; it doubles per try ...
const FIRST_PAUSE: Duration = Duration::from_millis(200);
/// ... up to this.
const LONGEST_PAUSE: Duration = Duration::from_secs(2);
/// What a waiting node allows beyond twice the lease: the CA's own deadlines for the requests that
/// create an account (connect, then a response within 30 s).
const WAIT_MARGIN: Duration = Duration::from_secs(45);

/// A digest of stored account credentials, to tell "the account the CA forgot" from one another
/// node created since (the credentials themselves hold the account key and are not kept).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of the credentials JSON `json`.
    pub(super) fn of(json: &str) -> Self {
        Self(Sha256::digest(json.as_bytes()).into())
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fingerprint(..)")
    }
}

/// What to do for a CA's account.
#[derive(Debug)]
pub(super) enum Claim<'a> {
    /// Use these stored credentials: another node created them while this one waited.
    Stored(String),
    /// Create the account at the CA and store it, holding this lease (given back on drop).
    Create(AccountLease<'a>),
}

/// How long a node waits for another to create the account: a holder that died loses its lease
/// after `lease_seconds`, a live one renews it while the CA answers within its deadlines.
pub(super) fn longest_wait(lease_seconds: u32) -> Duration {
    Duration::from_secs(u64::from(lease_seconds).saturating_mul(2)).saturating_add(WAIT_MARGIN)
}

/// Takes the account lease of the CA at `directory_url` for `lease_seconds`, or waits (at most
/// `wait`) for the node holding it to store the account. `forgotten`: the stored credentials the
/// CA no longer knows (a new account is wanted), which do not count as a usable stored account.
pub(super) async fn claim<'a>(
    store: &'a dyn StateStore,
    directory_url: &str,
    lease_seconds: u32,
    forgotten: Option<Fingerprint>,
    wait: Duration,
) -> Result<Claim<'a>, AcmeError> {
    let name = account_lease_name(directory_url);
    let usable =
        |stored: Option<String>| stored.filter(|json| Some(Fingerprint::of(json)) != forgotten);
    let started = Instant::now();
    let mut pause = FIRST_PAUSE;
    let mut waited = false;
    loop {
        if let Some(lease) = store.lease(&name, lease_seconds)? {
            let lease = AccountLease {
                store,
                lease,
                seconds: lease_seconds,
            };
            // Re-checked under the lease: a node that held it before may have stored the account.
            return Ok(match usable(store.load_account(directory_url)?) {
                Some(json) => {
                    drop(lease);
                    Claim::Stored(json)
                }
                None => Claim::Create(lease),
            });
        }
        if !waited {
            info!(
                directory = directory_url,
                "another node is creating the ACME account; waiting for it"
            );
            waited = true;
        }
        if let Some(json) = usable(store.load_account(directory_url)?) {
            return Ok(Claim::Stored(json));
        }
        let elapsed = started.elapsed();
        let Some(left) = wait.checked_sub(elapsed).filter(|left| !left.is_zero()) else {
            return Err(AcmeError::AccountLeaseHeld {
                url: directory_url.to_owned(),
                waited: elapsed,
            });
        };
        tokio::time::sleep(pause.min(left)).await;
        pause = pause.saturating_mul(2).min(LONGEST_PAUSE);
    }
}

/// The account lease of one CA, held while this node creates the account; given back on drop.
#[derive(Debug)]
pub(super) struct AccountLease<'a> {
    store: &'a dyn StateStore,
    lease: Lease,
    seconds: u32,
}

impl AccountLease<'_> {
    /// Runs `work` (creating and storing the account), renewing the lease every third of it so that
    /// a slow CA does not let another node take over and create a second account.
    pub(super) async fn hold_while<T>(&self, work: impl std::future::Future<Output = T>) -> T {
        let every = Duration::from_secs(u64::from((self.seconds / 3).max(1)));
        tokio::pin!(work);
        let mut lost = false;
        loop {
            tokio::select! {
                done = &mut work => return done,
                () = tokio::time::sleep(every), if !lost => {
                    match self.store.renew_lease(&self.lease, self.seconds) {
                        Ok(true) => {}
                        Ok(false) => {
                            // Another node may now create an account too; this one still finishes
                            // (its account works), and the last one stored is what the fleet uses.
                            warn!(lease = %self.lease.site, "the account lease was lost while creating the account");
                            lost = true;
                        }
                        Err(err) => warn!(lease = %self.lease.site, %err, "cannot renew the account lease"),
                    }
                }
            }
        }
    }
}

impl Drop for AccountLease<'_> {
    fn drop(&mut self) {
        if let Err(err) = self.store.release_lease(&self.lease) {
            warn!(lease = %self.lease.site, %err, "cannot release the account lease (it expires by itself)");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::sync::Mutex;

    use super::*;
    use crate::store::{Store, StoreError};

    const CA: &str = "https://ca.test/dir";

    /// A fleet's store as one node sees it: leases and accounts in memory, with "another node"
    /// scripted to hold the account lease for the first `held_for` tries and to store its account
    /// on the `stored_at`-th look-up; everything else goes to a real state directory.
    #[derive(Debug)]
    struct FleetStore {
        fs: Store,
        state: Mutex<FleetState>,
    }

    #[derive(Debug, Default)]
    struct FleetState {
        accounts: HashMap<String, String>,
        leases: HashMap<String, i64>,
        held_for: usize,
        stored_at: Option<(usize, String)>,
        lease_tries: usize,
        lookups: usize,
        released: Vec<i64>,
        renewed: usize,
        next_token: i64,
    }

    impl FleetStore {
        fn new(dir: &std::path::Path, state: FleetState) -> Self {
            Self {
                fs: Store::open(dir).unwrap(),
                state: Mutex::new(state),
            }
        }
    }

    impl StateStore for FleetStore {
        fn describe(&self) -> String {
            "scripted fleet store".into()
        }
        fn lock(&self) -> Result<crate::storage::StoreLock, StoreError> {
            StateStore::lock(&self.fs)
        }
        fn lock_holder(&self) -> Option<u32> {
            StateStore::lock_holder(&self.fs)
        }
        fn load_account(&self, url: &str) -> Result<Option<String>, StoreError> {
            let mut state = self.state.lock().unwrap();
            state.lookups += 1;
            if let Some((at, json)) = state.stored_at.clone() {
                if state.lookups >= at {
                    state.accounts.insert(url.to_owned(), json);
                }
            }
            Ok(state.accounts.get(url).cloned())
        }
        fn save_account(&self, url: &str, json: &str) -> Result<(), StoreError> {
            let mut state = self.state.lock().unwrap();
            state.accounts.insert(url.to_owned(), json.to_owned());
            Ok(())
        }
        fn account_location(&self, url: &str) -> PathBuf {
            PathBuf::from(format!("account of {url}"))
        }
        fn install(
            &self,
            site: &str,
            pem: &crate::certificate::CertifiedPem,
        ) -> Result<crate::store::StoredCert, StoreError> {
            StateStore::install(&self.fs, site, pem)
        }
        fn current(&self, site: &str) -> Result<Option<crate::store::StoredCert>, StoreError> {
            StateStore::current(&self.fs, site)
        }
        fn versions(&self, site: &str) -> Result<Vec<PathBuf>, StoreError> {
            StateStore::versions(&self.fs, site)
        }
        fn load_record(&self, site: &str) -> Result<crate::store::SiteRecord, StoreError> {
            StateStore::load_record(&self.fs, site)
        }
        fn save_record(
            &self,
            site: &str,
            record: &crate::store::SiteRecord,
        ) -> Result<(), StoreError> {
            StateStore::save_record(&self.fs, site, record)
        }
        fn sites(&self) -> Result<Vec<String>, StoreError> {
            StateStore::sites(&self.fs)
        }
        fn ledger_entries(&self, url: &str) -> Result<Vec<crate::ledger::LedgerEntry>, StoreError> {
            StateStore::ledger_entries(&self.fs, url)
        }
        fn ledger_append(
            &self,
            url: &str,
            entry: &crate::ledger::LedgerEntry,
        ) -> Result<(), StoreError> {
            StateStore::ledger_append(&self.fs, url, entry)
        }
        fn save_scheduler_heartbeat(
            &self,
            heartbeat: &crate::store::SchedulerHeartbeat,
        ) -> Result<(), StoreError> {
            StateStore::save_scheduler_heartbeat(&self.fs, heartbeat)
        }
        fn scheduler_heartbeat(
            &self,
        ) -> Result<Option<crate::store::SchedulerHeartbeat>, StoreError> {
            StateStore::scheduler_heartbeat(&self.fs)
        }
        fn lease(&self, name: &str, _: u32) -> Result<Option<Lease>, StoreError> {
            let mut state = self.state.lock().unwrap();
            state.lease_tries += 1;
            if state.lease_tries <= state.held_for || state.leases.contains_key(name) {
                return Ok(None);
            }
            state.next_token += 1;
            let token = state.next_token;
            state.leases.insert(name.to_owned(), token);
            Ok(Some(Lease {
                site: name.to_owned(),
                token,
            }))
        }
        fn renew_lease(&self, lease: &Lease, _: u32) -> Result<bool, StoreError> {
            let mut state = self.state.lock().unwrap();
            state.renewed += 1;
            Ok(state.leases.get(&lease.site) == Some(&lease.token))
        }
        fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
            let mut state = self.state.lock().unwrap();
            state.leases.remove(&lease.site);
            state.released.push(lease.token);
            Ok(())
        }
    }

    fn fleet(state: FleetState) -> (tempfile::TempDir, FleetStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = FleetStore::new(dir.path(), state);
        (dir, store)
    }

    #[tokio::test]
    async fn the_first_node_creates_under_the_lease_and_gives_it_back() {
        let (_dir, store) = fleet(FleetState::default());
        let claim = claim(&store, CA, 60, None, longest_wait(60)).await.unwrap();
        let Claim::Create(lease) = claim else {
            panic!("expected to create: {claim:?}")
        };
        assert_eq!(lease.lease.site, format!("account:{CA}"));
        assert!(store
            .state
            .lock()
            .unwrap()
            .leases
            .contains_key(&lease.lease.site));
        drop(lease);
        let state = store.state.lock().unwrap();
        assert!(state.leases.is_empty());
        assert_eq!(state.released, vec![1]);
    }

    #[tokio::test]
    async fn an_account_stored_by_the_previous_holder_is_used_once_the_lease_is_taken() {
        // The re-check under the lease: between this node's first look-up (empty) and its lease,
        // another node created the account and gave the lease back.
        let (_dir, store) = fleet(FleetState {
            stored_at: Some((1, r#"{"id":"theirs"}"#.into())),
            ..FleetState::default()
        });
        let claim = claim(&store, CA, 60, None, longest_wait(60)).await.unwrap();
        match claim {
            Claim::Stored(json) => assert_eq!(json, r#"{"id":"theirs"}"#),
            other => panic!("expected the stored account: {other:?}"),
        }
        let state = store.state.lock().unwrap();
        assert!(state.leases.is_empty(), "the lease is given back at once");
        assert_eq!(state.released.len(), 1);
    }

    #[tokio::test]
    async fn a_node_that_cannot_get_the_lease_waits_and_uses_the_account_the_holder_stored() {
        let (_dir, store) = fleet(FleetState {
            held_for: usize::MAX,
            // The holder stores its account at this node's third look-up.
            stored_at: Some((3, r#"{"id":"holder"}"#.into())),
            ..FleetState::default()
        });
        let before = Instant::now();
        let claim = claim(&store, CA, 60, None, longest_wait(60)).await.unwrap();
        match claim {
            Claim::Stored(json) => assert_eq!(json, r#"{"id":"holder"}"#),
            other => panic!("expected the holder's account: {other:?}"),
        }
        // Two pauses with backoff: 200 ms, then 400 ms.
        let waited = before.elapsed();
        assert!(
            waited >= Duration::from_millis(600) && waited < Duration::from_millis(1500),
            "{waited:?}"
        );
        let state = store.state.lock().unwrap();
        assert_eq!(state.lease_tries, 3);
        assert!(state.released.is_empty(), "it never held the lease");
    }

    #[tokio::test]
    async fn a_holder_that_stores_nothing_leaves_the_waiter_to_take_over_after_the_lease() {
        // The holder died: its lease expires (here: the fourth try succeeds) and this node creates.
        let (_dir, store) = fleet(FleetState {
            held_for: 3,
            ..FleetState::default()
        });
        let claim = claim(&store, CA, 60, None, longest_wait(60)).await.unwrap();
        assert!(matches!(claim, Claim::Create(_)), "{claim:?}");
    }

    #[tokio::test]
    async fn waiting_is_bounded_and_says_for_what() {
        let (_dir, store) = fleet(FleetState {
            held_for: usize::MAX,
            ..FleetState::default()
        });
        let wait = Duration::from_secs(1);
        let before = Instant::now();
        let err = claim(&store, CA, 60, None, wait).await.unwrap_err();
        let waited = before.elapsed();
        assert!(
            waited >= wait && waited < wait + Duration::from_millis(900),
            "it waits the bound: {waited:?}"
        );
        let text = err.to_string();
        assert!(text.contains(CA) && text.contains("another node"), "{text}");
        // Backoff: tries at 0, 0.2, 0.6 s and at the bound (the 0.8 s pause cut to what is left):
        // 4 tries in 1 s, not 5.
        assert_eq!(store.state.lock().unwrap().lease_tries, 4);
    }

    #[tokio::test]
    async fn the_account_the_ca_forgot_does_not_count_as_stored() {
        let forgotten = r#"{"id":"forgotten"}"#;
        let (_dir, store) = fleet(FleetState {
            accounts: HashMap::from([(CA.to_owned(), forgotten.to_owned())]),
            ..FleetState::default()
        });
        let claimed = claim(
            &store,
            CA,
            60,
            Some(Fingerprint::of(forgotten)),
            longest_wait(60),
        )
        .await
        .unwrap();
        assert!(matches!(claimed, Claim::Create(_)), "{claimed:?}");

        // Another node already replaced it: that one is used.
        let (_dir, store) = fleet(FleetState {
            accounts: HashMap::from([(CA.to_owned(), r#"{"id":"replacement"}"#.to_owned())]),
            ..FleetState::default()
        });
        let claimed = claim(
            &store,
            CA,
            60,
            Some(Fingerprint::of(forgotten)),
            longest_wait(60),
        )
        .await
        .unwrap();
        assert!(matches!(claimed, Claim::Stored(ref json) if json.contains("replacement")));
    }

    #[tokio::test]
    async fn the_lease_is_renewed_while_the_account_is_created() {
        let (_dir, store) = fleet(FleetState::default());
        let Claim::Create(lease) = claim(&store, CA, 3, None, longest_wait(3)).await.unwrap()
        else {
            panic!("expected to create")
        };
        // A CA that takes 3.5 s: the 3 s lease is renewed every second.
        let answer = lease
            .hold_while(async {
                tokio::time::sleep(Duration::from_millis(3500)).await;
                7
            })
            .await;
        assert_eq!(answer, 7);
        assert_eq!(store.state.lock().unwrap().renewed, 3);
    }

    #[test]
    fn the_wait_covers_a_dead_holders_lease_and_the_cas_deadlines() {
        assert_eq!(longest_wait(60), Duration::from_secs(165));
        assert_eq!(longest_wait(3), Duration::from_secs(51));
        assert_eq!(
            longest_wait(u32::MAX),
            Duration::from_secs(2 * u64::from(u32::MAX) + 45)
        );
    }
}
