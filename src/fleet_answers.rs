//! Challenge answers shared by a fleet: an order on one node publishes its answers through the
//! store ([`StateStore::publish_challenge`]) before the CA is told to validate, and whichever node
//! the CA's request lands on answers it, from memory ([`crate::answers`]) or, on a miss, from the
//! store.
//!
//! The store is asked only when it shares answers at all ([`StateStore::shares_challenges`]; the
//! filesystem backend does not), and every look-up is bounded, because a challenge path is open to
//! anyone on port 80: at most [`MAX_LOOKUPS`] at once (the rest wait, within the deadline), each
//! within [`LOOKUP_DEADLINE`], and a name the store did not know is answered "unknown" from a small
//! negative cache for [`MISS_TTL`] without asking again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::storage::{AnswerKind, SharedStore};
use crate::store::StoreError;

/// How long a published answer may stay in the store when its order never withdraws it (the node
/// died): longer than any order waits for validation.
pub const ANSWER_SECONDS: u32 = 3600;
/// The longest a look-up may take before the request is answered "unknown".
pub const LOOKUP_DEADLINE: Duration = Duration::from_secs(5);
/// Look-ups in flight at once, per node.
pub const MAX_LOOKUPS: usize = 8;
/// How long a miss is remembered. A real answer is in the store before the CA is told to validate,
/// so a name that missed was never asked for by the CA: remembering it costs no validation.
pub const MISS_TTL: Duration = Duration::from_secs(10);
/// Misses remembered at most (the cache is emptied when full: a flood of random tokens must not
/// grow it).
const MAX_MISSES: usize = 4096;

/// The store's half of the published answers; shared by every clone of the answer maps.
#[derive(Debug)]
pub struct FleetAnswers {
    store: SharedStore,
    lookups: Semaphore,
    misses: Mutex<HashMap<(AnswerKind, String), Instant>>,
}

/// Keeps an answer published in the store; dropping it withdraws the answer.
#[derive(Debug)]
pub struct FleetGuard {
    store: SharedStore,
    kind: AnswerKind,
    name: String,
}

impl Drop for FleetGuard {
    fn drop(&mut self) {
        let (store, kind, name) = (
            self.store.clone(),
            self.kind,
            std::mem::take(&mut self.name),
        );
        let withdraw = move || {
            if let Err(err) = store.withdraw_challenge(kind, &name) {
                // It expires on its own after ANSWER_SECONDS.
                warn!(%err, kind = kind.as_str(), name, "cannot withdraw a challenge answer");
            }
        };
        // Off the async worker: the store blocks (bounded by its own call deadline).
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(withdraw)),
            Err(_) => withdraw(),
        }
    }
}

impl FleetAnswers {
    /// The shared half for `store`, or `None` when it does not share answers between nodes.
    pub fn new(store: &SharedStore) -> Option<Arc<Self>> {
        store.shares_challenges().then(|| {
            Arc::new(Self {
                store: store.clone(),
                lookups: Semaphore::new(MAX_LOOKUPS),
                misses: Mutex::default(),
            })
        })
    }

    /// Publishes `answer` for `kind` and `name` in the store, and returns once it is there (so the
    /// CA may be told to validate).
    pub async fn publish(
        &self,
        kind: AnswerKind,
        name: &str,
        answer: &str,
    ) -> Result<FleetGuard, StoreError> {
        let (store, owned, answer) = (self.store.clone(), name.to_owned(), answer.to_owned());
        let published = tokio::task::spawn_blocking(move || {
            store.publish_challenge(kind, &owned, &answer, ANSWER_SECONDS)
        })
        .await;
        match published {
            Ok(result) => result?,
            Err(join) => {
                return Err(StoreError::Database {
                    store: self.store.describe(),
                    action: "publish a challenge answer",
                    reason: join.to_string(),
                })
            }
        }
        self.forget_miss(kind, name);
        Ok(FleetGuard {
            store: self.store.clone(),
            kind,
            name: name.to_owned(),
        })
    }

    /// The answer another node published for `kind` and `name`, if the store has one and says so
    /// within [`LOOKUP_DEADLINE`].
    pub async fn lookup(&self, kind: AnswerKind, name: &str) -> Option<String> {
        if self.missed_recently(kind, name) {
            return None;
        }
        let store = self.store.clone();
        let owned = name.to_owned();
        let looked_up = tokio::time::timeout(LOOKUP_DEADLINE, async {
            let _permit = self.lookups.acquire().await.ok()?;
            // The blocking call keeps its thread until the store's own deadline even when this
            // request gives up first; the permit is what bounds how many there can be.
            tokio::task::spawn_blocking(move || store.challenge_answer(kind, &owned))
                .await
                .ok()
        })
        .await;
        match looked_up {
            Ok(Some(Ok(Some(answer)))) => {
                debug!(
                    kind = kind.as_str(),
                    name, "answered from the fleet's store"
                );
                Some(answer)
            }
            Ok(Some(Ok(None))) => {
                self.remember_miss(kind, name);
                None
            }
            Ok(Some(Err(err))) => {
                debug!(%err, kind = kind.as_str(), name, "cannot look up a challenge answer");
                None
            }
            Ok(None) | Err(_) => {
                debug!(
                    kind = kind.as_str(),
                    name, "challenge look-up did not finish in time"
                );
                None
            }
        }
    }

    fn missed_recently(&self, kind: AnswerKind, name: &str) -> bool {
        let misses = self
            .misses
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        misses
            .get(&(kind, name.to_owned()))
            .is_some_and(|at| at.elapsed() < MISS_TTL)
    }

    fn remember_miss(&self, kind: AnswerKind, name: &str) {
        let mut misses = self
            .misses
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if misses.len() >= MAX_MISSES {
            misses.retain(|_, at| at.elapsed() < MISS_TTL);
            if misses.len() >= MAX_MISSES {
                misses.clear();
            }
        }
        misses.insert((kind, name.to_owned()), Instant::now());
    }

    fn forget_miss(&self, kind: AnswerKind, name: &str) {
        let mut misses = self
            .misses
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        misses.remove(&(kind, name.to_owned()));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use crate::storage::StateStore;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A store that shares answers in a map and counts look-ups: what the database does for a
    /// fleet, without one.
    #[derive(Debug, Default)]
    pub(crate) struct SharingStore {
        pub answers: Mutex<HashMap<String, String>>,
        pub lookups: AtomicUsize,
        inner: Option<crate::store::Store>,
    }

    impl SharingStore {
        pub(crate) fn new(dir: &std::path::Path) -> Arc<Self> {
            Arc::new(Self {
                inner: Some(crate::store::Store::open(dir).unwrap()),
                ..Self::default()
            })
        }
        fn fs(&self) -> &crate::store::Store {
            self.inner.as_ref().unwrap()
        }
        fn key(kind: AnswerKind, name: &str) -> String {
            format!("{}:{name}", kind.as_str())
        }
    }

    // Everything but the challenge methods goes to a real state directory.
    impl StateStore for SharingStore {
        fn describe(&self) -> String {
            "sharing test store".into()
        }
        fn lock(&self) -> Result<crate::storage::StoreLock, StoreError> {
            StateStore::lock(self.fs())
        }
        fn lock_holder(&self) -> Option<u32> {
            StateStore::lock_holder(self.fs())
        }
        fn load_account(&self, url: &str) -> Result<Option<String>, StoreError> {
            StateStore::load_account(self.fs(), url)
        }
        fn save_account(&self, url: &str, json: &str) -> Result<(), StoreError> {
            StateStore::save_account(self.fs(), url, json)
        }
        fn account_location(&self, url: &str) -> std::path::PathBuf {
            StateStore::account_location(self.fs(), url)
        }
        fn install(
            &self,
            site: &str,
            pem: &crate::certificate::CertifiedPem,
        ) -> Result<crate::store::StoredCert, StoreError> {
            StateStore::install(self.fs(), site, pem)
        }
        fn current(&self, site: &str) -> Result<Option<crate::store::StoredCert>, StoreError> {
            StateStore::current(self.fs(), site)
        }
        fn versions(&self, site: &str) -> Result<Vec<std::path::PathBuf>, StoreError> {
            StateStore::versions(self.fs(), site)
        }
        fn load_record(&self, site: &str) -> Result<crate::store::SiteRecord, StoreError> {
            StateStore::load_record(self.fs(), site)
        }
        fn save_record(
            &self,
            site: &str,
            record: &crate::store::SiteRecord,
        ) -> Result<(), StoreError> {
            StateStore::save_record(self.fs(), site, record)
        }
        fn sites(&self) -> Result<Vec<String>, StoreError> {
            StateStore::sites(self.fs())
        }
        fn ledger_entries(&self, url: &str) -> Result<Vec<crate::ledger::LedgerEntry>, StoreError> {
            StateStore::ledger_entries(self.fs(), url)
        }
        fn ledger_append(
            &self,
            url: &str,
            entry: &crate::ledger::LedgerEntry,
        ) -> Result<(), StoreError> {
            StateStore::ledger_append(self.fs(), url, entry)
        }
        fn save_scheduler_heartbeat(
            &self,
            heartbeat: &crate::store::SchedulerHeartbeat,
        ) -> Result<(), StoreError> {
            StateStore::save_scheduler_heartbeat(self.fs(), heartbeat)
        }
        fn scheduler_heartbeat(
            &self,
        ) -> Result<Option<crate::store::SchedulerHeartbeat>, StoreError> {
            StateStore::scheduler_heartbeat(self.fs())
        }
        fn shares_challenges(&self) -> bool {
            true
        }
        fn publish_challenge(
            &self,
            kind: AnswerKind,
            name: &str,
            answer: &str,
            _: u32,
        ) -> Result<(), StoreError> {
            self.answers
                .lock()
                .unwrap()
                .insert(Self::key(kind, name), answer.to_owned());
            Ok(())
        }
        fn challenge_answer(
            &self,
            kind: AnswerKind,
            name: &str,
        ) -> Result<Option<String>, StoreError> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            Ok(self
                .answers
                .lock()
                .unwrap()
                .get(&Self::key(kind, name))
                .cloned())
        }
        fn withdraw_challenge(&self, kind: AnswerKind, name: &str) -> Result<(), StoreError> {
            self.answers.lock().unwrap().remove(&Self::key(kind, name));
            Ok(())
        }
    }

    #[tokio::test]
    async fn answers_reach_another_node_and_misses_do_not_hammer_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let shared = SharingStore::new(dir.path());
        let store: SharedStore = shared.clone();
        // Two nodes: two FleetAnswers over the same store.
        let (a, b) = (
            FleetAnswers::new(&store).unwrap(),
            FleetAnswers::new(&store).unwrap(),
        );
        assert_eq!(b.lookup(AnswerKind::Http01, "tok").await, None);
        let guard = a
            .publish(AnswerKind::Http01, "tok", "tok.key")
            .await
            .unwrap();
        // b remembers its miss for a while (the CA never asks before the publish).
        assert_eq!(b.lookup(AnswerKind::Http01, "tok").await, None);
        b.forget_miss(AnswerKind::Http01, "tok");
        assert_eq!(
            b.lookup(AnswerKind::Http01, "tok").await.as_deref(),
            Some("tok.key")
        );
        assert_eq!(b.lookup(AnswerKind::TlsAlpn01, "tok").await, None);

        // A flood of unknown tokens asks the store once per token, not once per request.
        let before = shared.lookups.load(Ordering::SeqCst);
        for _ in 0..50 {
            assert_eq!(b.lookup(AnswerKind::Http01, "guess").await, None);
        }
        assert_eq!(shared.lookups.load(Ordering::SeqCst), before + 1);

        drop(guard);
        // The withdrawal runs off the async worker; wait for it.
        for _ in 0..100 {
            if shared.answers.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(shared.answers.lock().unwrap().is_empty());

        // The filesystem backend shares nothing: no look-ups at all.
        let fs: SharedStore = Arc::new(crate::store::Store::open(&dir.path().join("fs")).unwrap());
        assert!(FleetAnswers::new(&fs).is_none());
    }
}
