//! The storage boundary: everything certd persists, as one domain-level interface.
//!
//! [`StateStore`] is what renewal, the daemon, `certd issue`, `certd status` and the metrics use: ACME
//! accounts per CA, certificate versions and the live pointer, per-site records, the rate-limit ledger,
//! the scheduler's heartbeat and the writer lock. None of them know which backend they talk to; they
//! hold a [`SharedStore`] made by [`open`].
//!
//! Backends, one file each:
//! - [`filesystem`]: today's state directory ([`crate::store`], [`crate::ledger`]), the default, which
//!   needs no setup.
//! - [`postgres`]: a fleet's shared database (`[storage] backend = "postgres"`), with leases and
//!   fencing enforced by the database.
//!
//! [`crate::sealing`] encrypts what a backend keeps off this machine (private keys, ACME accounts).
//!
//! A new backend (PostgreSQL, etcd) is a new file implementing [`StateStore`] that passes the contract
//! tests in `contract.rs`, plus a case in [`open`].
//!
//! Why synchronous: the callers that read are synchronous today and must stay cheap (the metrics
//! renderer, `certd status`, the SNI resolver's on-demand loader, the threads that load every stored
//! pair at start-up), and the filesystem backend blocks on the disk the same way. A networked backend
//! keeps what the hot paths read in memory and bridges its client into these calls.

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;

use crate::certificate::CertifiedPem;
use crate::config::{Config, StorageConfig};
use crate::ledger::LedgerEntry;
use crate::store::{SchedulerHeartbeat, SiteRecord, Store, StoreError, StoredCert};

pub mod filesystem;
pub mod health;
pub mod postgres;
pub mod transfer;

#[doc(hidden)]
pub mod contract;

/// The store every part of certd shares (cheap to clone).
pub type SharedStore = Arc<dyn StateStore>;

/// Opens the store `config` names: the state directory (created when missing) or the fleet's
/// database (connected, its schema migrated).
pub fn open(config: &Config) -> Result<SharedStore, StoreError> {
    match &config.storage {
        StorageConfig::Filesystem => Ok(Arc::new(Store::open(&config.state_dir)?)),
        StorageConfig::Postgres(pg) => Ok(Arc::new(postgres::PostgresStore::open(pg)?)),
    }
}

/// [`open`] for `certd run`: a fleet's node also keeps the pairs it serves in its state directory
/// (the filesystem layout) and starts, serving from them, while the database is unreachable.
pub fn open_for_daemon(config: &Config) -> Result<SharedStore, StoreError> {
    match &config.storage {
        StorageConfig::Filesystem => open(config),
        StorageConfig::Postgres(pg) => {
            let store = postgres::PostgresStore::open_for_daemon(pg)?
                .with_local_copy(Store::open(&config.state_dir)?);
            if let Some(health) = store.health() {
                health.record_in(&config.state_dir);
            }
            Ok(Arc::new(store))
        }
    }
}

/// Proof that this process holds the store's writer lock; released on drop.
///
/// What it holds is the backend's business (the filesystem's flock on `state/lock`).
#[derive(Debug)]
pub struct StoreLock {
    _held: Box<dyn Debug + Send + Sync>,
}

impl StoreLock {
    /// A lock held for as long as `held` lives.
    pub fn new(held: impl Debug + Send + Sync + 'static) -> Self {
        Self {
            _held: Box::new(held),
        }
    }
}

/// A site's lease: while it lives, only its holder orders and installs that site's certificate.
/// `token` is the fencing token of the grant (it grows with every grant); an install presents it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The site.
    pub site: String,
    /// The fencing token (0 for a backend whose writer lock already excludes every other writer).
    pub token: i64,
}

/// The lease taken before creating the ACME account of the CA at `directory_url` (see
/// `acme::account_lease`): a lease like a site's, under a name no site can have (site names never
/// hold a `:`), so the fleet creates one account per CA, not one per node starting at once.
pub fn account_lease_name(directory_url: &str) -> String {
    format!("{ACCOUNT_LEASE_PREFIX}{directory_url}")
}

/// Whether a lease name is an account's ([`account_lease_name`]) rather than a site's.
pub fn is_account_lease(name: &str) -> bool {
    name.starts_with(ACCOUNT_LEASE_PREFIX)
}

const ACCOUNT_LEASE_PREFIX: &str = "account:";

/// A change to the live certificates noticed by [`StateStore::changes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `site`'s live pair may have changed (another node, or this one, installed a version).
    Site(String),
    /// Changes may have been missed (the store was unreachable): load every site again.
    All,
}

/// What a fleet's nodes do, as the shared store knows it (`certd status`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetView {
    /// Every node that wrote a heartbeat, by name.
    pub nodes: Vec<NodeBeat>,
    /// Per site with a live certificate: who installed it, and who holds its lease now.
    pub sites: Vec<SiteFleet>,
}

/// A node's last heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeBeat {
    /// Its `node_name`.
    pub node: String,
    /// When it last wrote one.
    pub at: time::OffsetDateTime,
}

/// One site in the fleet view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteFleet {
    /// The site.
    pub site: String,
    /// The node that installed the live certificate, and when (`None`: no certificate yet).
    pub renewed_by: Option<(String, time::OffsetDateTime)>,
    /// The node holding the site's lease now, and until when.
    pub lease: Option<(String, time::OffsetDateTime)>,
}

/// How many sites [`StateStore::current_batches`] is asked for at a time by the daemon: one query
/// of a networked backend, and the most pairs (about 2 KiB of PEM each) held in memory at once
/// per loading thread.
pub const CURRENT_BATCH: usize = 500;

/// How many changes may wait for the daemon before the backend waits for it.
pub const CHANGES_QUEUED: usize = 256;

/// How long a lease lasts before it must be renewed (a paused node loses it after this).
pub use crate::config::DEFAULT_LEASE_SECONDS as LEASE_SECONDS;

/// Which challenge a published answer is for (see [`StateStore::publish_challenge`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnswerKind {
    /// An HTTP-01 key authorization, by token.
    Http01,
    /// A TLS-ALPN-01 answer (the identifier and key authorization a challenge certificate is
    /// made from), by the server name the CA sends.
    TlsAlpn01,
}

impl AnswerKind {
    /// The challenge type's ACME name (`http-01`, `tls-alpn-01`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http01 => "http-01",
            Self::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

/// Everything certd persists. Every method that writes assumes the caller holds the [`StoreLock`]
/// from [`StateStore::lock`].
pub trait StateStore: Debug + Send + Sync {
    /// Where the state is kept, for messages (`/var/lib/certd`).
    fn describe(&self) -> String;

    /// Takes the writer lock without waiting; [`StoreError::Locked`] when another process has it.
    fn lock(&self) -> Result<StoreLock, StoreError>;

    /// The pid of the process on this machine holding the writer lock, if one does and still runs.
    fn lock_holder(&self) -> Option<u32>;

    /// The saved ACME account credentials (JSON) for the CA at `directory_url`, if any.
    fn load_account(&self, directory_url: &str) -> Result<Option<String>, StoreError>;

    /// Saves the ACME account credentials (they hold the account key) for the CA at `directory_url`.
    fn save_account(&self, directory_url: &str, json: &str) -> Result<(), StoreError>;

    /// Where the account of `directory_url` is kept, for messages about it.
    fn account_location(&self, directory_url: &str) -> PathBuf;

    /// Stores `pem` (already validated) as the next version of `site` and makes it the one served,
    /// in one step: a failure leaves the previous version live.
    fn install(&self, site: &str, pem: &CertifiedPem) -> Result<StoredCert, StoreError>;

    /// The live pair of `site`, or `None` when it has none; never a certificate with another's key.
    fn current(&self, site: &str) -> Result<Option<StoredCert>, StoreError>;

    /// The live pairs of `sites`, read `batch` sites at a time: `each(start, pairs)` gets every
    /// batch as soon as it is read, `pairs[i]` being what [`StateStore::current`] says of
    /// `sites[start + i]`. For loading thousands of sites at once (the daemon's start): a backend on
    /// the network answers each batch with one query; the default asks [`StateStore::current`]
    /// once per site. A fleet's node does not write its local copy here, so that serving is not
    /// held up by the disk: [`StateStore::keep_local_copies`] does that afterwards.
    fn current_batches(
        &self,
        sites: &[&str],
        batch: usize,
        each: &mut dyn FnMut(usize, Vec<Result<Option<StoredCert>, StoreError>>),
    ) {
        let batch = batch.max(1);
        for (number, chunk) in sites.chunks(batch).enumerate() {
            let pairs = chunk.iter().map(|site| self.current(site)).collect();
            each(number.saturating_mul(batch), pairs);
        }
    }

    /// Brings the local copy of a fleet's node (its state directory) up to date with the live
    /// pairs of `sites`, each written with the state directory's crash-safe install, until `stop`
    /// is cancelled; returns how many pairs were written. The default (a store that is on this
    /// machine already) has nothing to copy.
    fn keep_local_copies(
        &self,
        sites: &[&str],
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<usize, StoreError> {
        let _ = (sites, stop);
        Ok(0)
    }

    /// The complete versions of `site` that are kept, oldest first.
    fn versions(&self, site: &str) -> Result<Vec<PathBuf>, StoreError>;

    /// The record of `site`'s renewal attempts; the default when there is none.
    fn load_record(&self, site: &str) -> Result<SiteRecord, StoreError>;

    /// Saves the record of `site`'s renewal attempts.
    fn save_record(&self, site: &str, record: &SiteRecord) -> Result<(), StoreError>;

    /// Every site the store holds anything for (including ones no longer configured), sorted.
    fn sites(&self) -> Result<Vec<String>, StoreError>;

    /// The ledger of orders placed with the CA at `directory_url`, oldest first.
    fn ledger_entries(&self, directory_url: &str) -> Result<Vec<LedgerEntry>, StoreError>;

    /// Appends `entry` to the ledger of the CA at `directory_url`, durably.
    fn ledger_append(&self, directory_url: &str, entry: &LedgerEntry) -> Result<(), StoreError>;

    /// Saves the renewal scheduler's heartbeat.
    fn save_scheduler_heartbeat(&self, heartbeat: &SchedulerHeartbeat) -> Result<(), StoreError>;

    /// The renewal scheduler's last heartbeat, or `None` when none was written.
    fn scheduler_heartbeat(&self) -> Result<Option<SchedulerHeartbeat>, StoreError>;

    /// Whether the store can be read at all right now (the `certd_state_readable` gauge): a state
    /// directory that cannot be listed, or a database that does not answer, looks like "no
    /// certificates" to everything else.
    fn readable(&self) -> bool {
        self.sites().is_ok()
    }

    /// Takes `site`'s lease for `seconds`; `None` while another node holds it. The default suits a
    /// backend whose writer lock ([`StateStore::lock`]) already excludes every other writer.
    /// `site` may also be an [`account_lease_name`]: the same rules, for creating an account.
    fn lease(&self, site: &str, seconds: u32) -> Result<Option<Lease>, StoreError> {
        let _ = seconds;
        Ok(Some(Lease {
            site: site.to_owned(),
            token: 0,
        }))
    }

    /// Extends `lease` by `seconds` from now; `false` when it was lost (expired, taken over).
    fn renew_lease(&self, lease: &Lease, seconds: u32) -> Result<bool, StoreError> {
        let _ = (lease, seconds);
        Ok(true)
    }

    /// Gives `lease` up.
    fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        let _ = lease;
        Ok(())
    }

    /// [`StateStore::install`] presenting `lease`: refused ([`StoreError::Fenced`]) unless it is
    /// still the site's live lease.
    fn install_leased(
        &self,
        site: &str,
        pem: &CertifiedPem,
        lease: &Lease,
    ) -> Result<StoredCert, StoreError> {
        let _ = lease;
        self.install(site, pem)
    }

    /// Whether answers given to [`StateStore::publish_challenge`] reach the other nodes of a fleet,
    /// so that a node asks the store for a challenge it does not hold in memory. The default
    /// (a single node, which answers from memory) says no, and the other challenge methods do
    /// nothing.
    fn shares_challenges(&self) -> bool {
        false
    }

    /// Whether every install is announced through [`StateStore::changes`] to every node serving
    /// from this store, the installing one included, so that the daemon's change handler (not the
    /// renewal) swaps the pair in and runs the deploy hook. The default (a single node) says no.
    fn announces_installs(&self) -> bool {
        false
    }

    /// Publishes the pending answer of a challenge (`kind`, keyed by `name`: a token, a server
    /// name) for at most `seconds`, so that every node answers it. Called before the CA is told to
    /// validate; the caller withdraws it when the order no longer needs it.
    fn publish_challenge(
        &self,
        kind: AnswerKind,
        name: &str,
        answer: &str,
        seconds: u32,
    ) -> Result<(), StoreError> {
        let _ = (kind, name, answer, seconds);
        Ok(())
    }

    /// The unexpired answer published for `kind` and `name` by any node, if there is one.
    fn challenge_answer(&self, kind: AnswerKind, name: &str) -> Result<Option<String>, StoreError> {
        let _ = (kind, name);
        Ok(None)
    }

    /// Withdraws the answer published for `kind` and `name` (nothing when there is none).
    fn withdraw_challenge(&self, kind: AnswerKind, name: &str) -> Result<(), StoreError> {
        let _ = (kind, name);
        Ok(())
    }
    /// Changes to the live certificates made anywhere (this node included), as they are noticed,
    /// until `stop` is cancelled or the receiver is dropped. `None`: the backend has nothing to
    /// watch (the filesystem's state is this node's alone, and every change goes through it).
    fn changes(
        &self,
        stop: tokio_util::sync::CancellationToken,
    ) -> Option<tokio::sync::mpsc::Receiver<Change>> {
        let _ = stop;
        None
    }

    /// Whether the store answered its last probe, and since when; `None` for a store that is on
    /// this machine (its readability is [`StateStore::readable`]).
    fn health(&self) -> Option<Arc<health::StorageHealth>> {
        None
    }

    /// The fleet's view (nodes' heartbeats, who renewed each site, who holds a lease); `None`
    /// for a store that only this node uses.
    fn fleet(&self) -> Result<Option<FleetView>, StoreError> {
        Ok(None)
    }
}
