//! The PostgreSQL backend of [`StateStore`](super::StateStore), for a fleet of certd nodes sharing
//! one database.
//!
//! - [`schema`]: the schema, its versioned migrations and every statement, with the fleet's safety
//!   rules enforced by the database itself (leases per site with a fencing token from one sequence,
//!   a trigger that refuses an install whose token is not the site's live lease).
//! - [`tls`]: `sslmode` on rustls.
//! - this file: the client. tokio-postgres behind a deadpool pool, on a small runtime of its own
//!   (one worker thread, owned by the store and shut down when it is dropped), bridged into the
//!   synchronous [`StateStore`] calls: each call is a task on that runtime with a deadline, and the
//!   caller waits for its answer. The caller may itself be on the daemon's runtime (it blocks as it
//!   would on the disk), which is why the client never runs on the caller's runtime.
//!
//! Private keys and account credentials are sealed with the fleet's key ([`crate::sealing`]) before
//! they leave this process. The writer lock is per node (`node_name`): a session advisory lock on
//! a connection taken out of the pool for as long as the [`StoreLock`] lives.

mod bulk;
mod changes;
pub mod schema;
mod tls;

use std::future::Future;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use zeroize::Zeroizing;

use super::health::StorageHealth;
use super::{AnswerKind, Change, Lease, StateStore, StoreLock};
use crate::certificate::CertifiedPem;
use crate::config::{PostgresConfig, SslMode, PASSWORD_ENV};
use crate::ledger::LedgerEntry;
use crate::sealing::SealingKey;
use crate::store::{SchedulerHeartbeat, SiteRecord, StoreError, StoredCert};

/// The longest any one call may take, connecting included.
const CALL_DEADLINE: Duration = Duration::from_secs(15);
/// How long connecting may take (within [`CALL_DEADLINE`]).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections per node: the daemon's callers are few and short.
const POOL_SIZE: usize = 4;
/// How long an install's own lease lasts (it is released in the same transaction).
const INSTALL_LEASE_SECONDS: f64 = 60.0;
/// Longest password file read.
const PASSWORD_MAX: u64 = 4096;

/// A fleet's shared database.
pub struct PostgresStore {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    pool: Pool,
    key: Arc<SealingKey>,
    node: String,
    described: String,
    /// For the dedicated LISTEN connection (outside the pool).
    pg: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    poll: Duration,
    notify: bool,
    health: Arc<StorageHealth>,
    /// `certd run`'s copy of the pairs it serves, in state_dir ([`PostgresStore::with_local_copy`]).
    local: Option<crate::store::Store>,
    /// Held while a pair is written into `local`: the start-up's background copy and a change's
    /// read may write the same site, and the state directory installs one site at a time.
    local_writes: std::sync::Mutex<()>,
    /// Whether the schema is known to be current (a store opened while the database was down
    /// migrates at its first answer).
    migrated: std::sync::atomic::AtomicBool,
    /// The node lock of a daemon that started while the database was unreachable.
    late_lock: Arc<std::sync::Mutex<LateLock>>,
}

/// The node lock [`StateStore::lock`] could not take because the database was down: it is taken
/// before this node's first lease or install (the writes that two processes under one node name
/// must never both make), and held until the daemon's [`StoreLock`] is dropped.
#[derive(Debug, Default)]
enum LateLock {
    /// Taken with the state_dir lock, or no daemon asked for it.
    #[default]
    NotWanted,
    /// To be taken when the database answers.
    Wanted,
    /// Taken late; held only to be released on drop.
    Held { _lock: Box<NodeLock> },
}

/// Part of the daemon's [`StoreLock`] while the node lock is late: dropping it gives the node lock
/// back (when it was taken meanwhile) and stops further attempts.
#[derive(Debug)]
struct LateLockGuard(Arc<std::sync::Mutex<LateLock>>);

impl Drop for LateLockGuard {
    fn drop(&mut self) {
        let held = std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        // Released outside the mutex (it waits for the database, at most its deadline).
        drop(held);
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.described)
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // Allowed from any context (the store may be dropped on the daemon's runtime); the
        // connections' tasks end with it.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The password from `password_file` (trailing newline dropped) or [`PASSWORD_ENV`].
fn password(config: &PostgresConfig) -> Result<Option<Zeroizing<String>>, StoreError> {
    let Some(path) = &config.password_file else {
        return Ok(std::env::var(PASSWORD_ENV).ok().map(Zeroizing::new));
    };
    let io = |source| StoreError::Io {
        action: "read storage password_file",
        path: path.clone(),
        source,
    };
    let mut text = Zeroizing::new(String::new());
    std::io::Read::read_to_string(
        &mut std::io::Read::take(std::fs::File::open(path).map_err(io)?, PASSWORD_MAX),
        &mut text,
    )
    .map_err(io)?;
    let trimmed = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    Ok(Some(Zeroizing::new(trimmed.to_owned())))
}

/// The error of a failed statement, with the server's own message when it sent one.
fn reason(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        ),
        None => {
            let mut text = err.to_string();
            let mut source = std::error::Error::source(err);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        }
    }
}

/// What a task on the store's runtime sees: the pool, the key, and how to describe failures.
#[derive(Clone)]
struct Ctx {
    pool: Pool,
    key: Arc<SealingKey>,
    node: String,
    described: String,
}

impl Ctx {
    fn fail(&self, action: &'static str, reason: impl Into<String>) -> StoreError {
        StoreError::Database {
            store: self.described.clone(),
            action,
            reason: reason.into(),
        }
    }

    fn pg(&self, action: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError + '_ {
        move |err| self.fail(action, reason(&err))
    }

    async fn client(&self, action: &'static str) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|err| {
            let text = match &err {
                deadpool_postgres::PoolError::Backend(pg) => reason(pg),
                other => other.to_string(),
            };
            self.fail(action, format!("cannot connect: {text}"))
        })
    }

    fn corrupt(&self, what: String, reason: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            path: PathBuf::from(format!("{}: {what}", self.described)),
            reason: reason.to_string(),
        }
    }
}

impl PostgresStore {
    /// Connects to the database `config` names, migrates its schema (refusing one newer than this
    /// build knows) and loads the sealing key.
    pub fn open(config: &PostgresConfig) -> Result<Self, StoreError> {
        let store = Self::configure(config)?;
        store.call_raw(migrate)?;
        store
            .migrated
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(store)
    }

    /// [`PostgresStore::open`] for `certd run`: a database that cannot be reached is not an error
    /// (the node serves its local copy meanwhile); the schema is migrated at the first answer.
    /// A schema too new, a wrong key or a bad URL still are.
    pub fn open_for_daemon(config: &PostgresConfig) -> Result<Self, StoreError> {
        let store = Self::configure(config)?;
        match store.call_raw(migrate) {
            Ok(()) => store
                .migrated
                .store(true, std::sync::atomic::Ordering::Release),
            Err(err) if unreachable(&err) => {
                store.health.failed(time::OffsetDateTime::now_utc(), &err);
            }
            Err(err) => return Err(err),
        }
        Ok(store)
    }

    /// Keeps every pair read from the database in `local` too (the state directory's layout), and
    /// serves from it while the database is unreachable.
    #[must_use]
    pub fn with_local_copy(mut self, local: crate::store::Store) -> Self {
        self.local = Some(local);
        self
    }

    /// The store for `config`, not yet connected.
    fn configure(config: &PostgresConfig) -> Result<Self, StoreError> {
        let key = Arc::new(SealingKey::load(&config.key_file)?);
        let mut pg =
            tokio_postgres::Config::from_str(&config.url).map_err(|err| StoreError::Database {
                store: "the [storage] url".into(),
                action: "parse",
                reason: err.to_string(),
            })?;
        if let Some(password) = password(config)? {
            pg.password(password.as_bytes());
        }
        pg.connect_timeout(CONNECT_TIMEOUT);
        pg.application_name(format!("certd {}", config.node_name));
        pg.ssl_mode(match config.sslmode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
        });
        let described = describe(&pg, &config.node_name);
        let database = |action, reason: String| StoreError::Database {
            store: described.clone(),
            action,
            reason,
        };
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let tls = tls::connector(config.sslmode, config.ca_roots.as_deref())
            .map_err(|reason| database("set up TLS", reason))?;
        let manager = match tls.clone() {
            Some(tls) => Manager::from_config(pg.clone(), tls, manager_config),
            None => Manager::from_config(pg.clone(), tokio_postgres::NoTls, manager_config),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("certd-postgres")
            .enable_all()
            .build()
            .map_err(|err| database("start its runtime", err.to_string()))?;
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(CALL_DEADLINE))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|err| database("build its pool", err.to_string()))?;
        let store = Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            pool,
            key,
            node: config.node_name.clone(),
            health: Arc::new(StorageHealth::new(
                described.clone(),
                time::OffsetDateTime::now_utc(),
            )),
            described,
            pg,
            tls,
            poll: config.poll,
            notify: config.notify,
            local: None,
            local_writes: std::sync::Mutex::new(()),
            migrated: std::sync::atomic::AtomicBool::new(false),
            late_lock: Arc::default(),
        };
        Ok(store)
    }

    fn ctx(&self) -> Ctx {
        Ctx {
            pool: self.pool.clone(),
            key: self.key.clone(),
            node: self.node.clone(),
            described: self.described.clone(),
        }
    }

    /// Runs `work` on the store's runtime with [`CALL_DEADLINE`] and waits for its answer.
    /// Installs `pem` as `site`'s live pair: under `token` (the caller's lease), or under a lease
    /// taken and given back in the same transaction.
    fn install_under(
        &self,
        site: &str,
        pem: &CertifiedPem,
        token: Option<i64>,
    ) -> Result<StoredCert, StoreError> {
        self.take_late_node_lock()?;
        let site = site.to_owned();
        let pem = pem.clone();
        self.call(move |ctx| async move {
            let action = "install a certificate";
            let mut client = ctx.client(action).await?;
            let tx = client.transaction().await.map_err(ctx.pg(action))?;
            let (token, own_lease) = match token {
                Some(token) => (token, false),
                None => {
                    let Some(row) = tx
                        .query_opt(
                            schema::ACQUIRE_LEASE,
                            &[&site, &ctx.node, &INSTALL_LEASE_SECONDS],
                        )
                        .await
                        .map_err(ctx.pg(action))?
                    else {
                        return Err(StoreError::Fenced {
                            site,
                            reason: "another node holds its lease".into(),
                        });
                    };
                    (row.get(0), true)
                }
            };
            let sealed = ctx.key.seal(
                &schema::sealed_key_context(&site, token),
                pem.key_pem.as_bytes(),
            )?;
            let version: i64 = match tx
                .query_one(
                    schema::INSTALL,
                    &[
                        &site,
                        &pem.cert_pem,
                        &pem.chain_pem,
                        &sealed,
                        &ctx.node,
                        &token,
                    ],
                )
                .await
            {
                Ok(row) => row.get(0),
                Err(err) => return Err(install_error(&ctx, &site, &err)),
            };
            // Delivered to every listening node when the transaction commits, and only then.
            tx.execute(schema::NOTIFY_LIVE, &[&site])
                .await
                .map_err(ctx.pg(action))?;
            if own_lease {
                tx.execute(schema::RELEASE_LEASE, &[&site, &token])
                    .await
                    .map_err(ctx.pg(action))?;
            }
            tx.commit().await.map_err(ctx.pg(action))?;
            Ok(StoredCert {
                version: version_path(&ctx.described, &site, version),
                pem,
            })
        })
    }

    /// [`PostgresStore::call_raw`], migrating first when that could not be done at start, and
    /// recording whether the database answered.
    fn call<T, F>(&self, work: impl FnOnce(Ctx) -> F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        if !self.migrated.load(std::sync::atomic::Ordering::Acquire) {
            let migrated = self.call_raw(migrate);
            self.record_health(&migrated);
            migrated?;
            self.migrated
                .store(true, std::sync::atomic::Ordering::Release);
        }
        self.take_late_node_lock_at_first_answer();
        let result = self.call_raw(work);
        self.record_health(&result);
        result
    }

    /// Runs `work` on the store's runtime with [`CALL_DEADLINE`] and waits for its answer.
    fn call_raw<T, F>(&self, work: impl FnOnce(Ctx) -> F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let ctx = self.ctx();
        let timed_out = ctx.fail(
            "answer",
            format!("no answer within {}s", CALL_DEADLINE.as_secs()),
        );
        let future = work(ctx);
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let result = tokio::time::timeout(CALL_DEADLINE, future)
                .await
                .unwrap_or(Err(timed_out));
            // The caller may have given up; nothing to tell then.
            let _ = answer.send(result);
        });
        answered
            .recv_timeout(CALL_DEADLINE + Duration::from_secs(1))
            .unwrap_or_else(|_| {
                Err(self.ctx().fail(
                    "answer",
                    format!("no answer within {}s", CALL_DEADLINE.as_secs()),
                ))
            })
    }

    /// Feeds a call's outcome to [`StorageHealth`]: an answer means reachable; a failure to
    /// connect or to answer in time means not (an error the server sent is not an outage).
    fn record_health<T>(&self, result: &Result<T, StoreError>) {
        let now = time::OffsetDateTime::now_utc();
        match result {
            Ok(_) => {
                self.health.reached(now);
            }
            Err(err) if unreachable(err) => {
                self.health.failed(now, err);
            }
            Err(_) => {}
        }
    }

    /// Keeps `stored` as `site`'s pair in the local copy, unless it is there already; returns
    /// whether it was written.
    fn keep_local_copy(
        &self,
        local: &crate::store::Store,
        site: &str,
        stored: &StoredCert,
    ) -> bool {
        let _writing = self
            .local_writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Ok(Some(copy)) = local.current(site) {
            if copy.pem.cert_pem == stored.pem.cert_pem
                && copy.pem.chain_pem == stored.pem.chain_pem
            {
                return false;
            }
        }
        match local.install(site, &stored.pem) {
            Ok(_) => {
                tracing::debug!(site, "kept in the local copy");
                true
            }
            Err(err) => {
                tracing::warn!(site, %err, "cannot keep the local copy of a certificate");
                false
            }
        }
    }

    /// `site`'s live pair as the database has it.
    fn current_in_database(&self, site: &str) -> Result<Option<StoredCert>, StoreError> {
        let site = site.to_owned();
        self.call(|ctx| async move {
            let client = ctx.client("read the live certificate").await?;
            let Some(row) = client
                .query_opt(schema::CURRENT, &[&site])
                .await
                .map_err(ctx.pg("read the live certificate"))?
            else {
                return Ok(None);
            };
            stored_cert(
                &ctx,
                &site,
                row.get(0),
                row.get(1),
                row.get(2),
                row.get(3),
                row.get(4),
            )
            .map(Some)
        })
    }
}

/// A live version as read from its row: the key opened under the context it was sealed with (its
/// site and fencing token), so a key moved to another row does not open.
fn stored_cert(
    ctx: &Ctx,
    site: &str,
    version: i64,
    cert_pem: String,
    chain_pem: String,
    sealed: &[u8],
    token: i64,
) -> Result<StoredCert, StoreError> {
    let key = ctx
        .key
        .open(&schema::sealed_key_context(site, token), sealed)?;
    let key_pem = String::from_utf8(key.to_vec())
        .map_err(|err| ctx.corrupt(format!("key of {site}"), err))?;
    Ok(StoredCert {
        version: version_path(&ctx.described, site, version),
        pem: CertifiedPem {
            cert_pem,
            chain_pem,
            key_pem: Zeroizing::new(key_pem),
        },
    })
}

impl PostgresStore {
    /// This node's writer lock in the database.
    fn node_lock(&self) -> Result<NodeLock, StoreError> {
        let handle = self.handle.clone();
        let client = self.call(|ctx| async move {
            let client = ctx.client("take the writer lock").await?;
            let taken: bool = client
                .query_one(schema::TRY_NODE_LOCK, &[&ctx.node])
                .await
                .map_err(ctx.pg("take the writer lock"))?
                .get(0);
            if !taken {
                let holder = client
                    .query_opt(schema::NODE_LOCK_HOLDER, &[&ctx.node])
                    .await
                    .ok()
                    .flatten()
                    .and_then(|row| u32::try_from(row.get::<_, i32>(1)).ok());
                return Err(StoreError::Locked {
                    path: PathBuf::from(ctx.described.clone()),
                    pid: holder,
                });
            }
            let pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
            client
                .execute(
                    schema::SET_NODE_LOCK_HOLDER,
                    &[&ctx.node, &this_host(), &pid],
                )
                .await
                .map_err(ctx.pg("take the writer lock"))?;
            Ok(client)
        })?;
        Ok(NodeLock {
            client: Some(client),
            node: self.node.clone(),
            handle,
        })
    }
}

impl PostgresStore {
    /// In every call: a daemon that started without its node lock takes it as soon as the database
    /// answers. Not taken (unreachable still, or another process holds it) is tried again at the next
    /// call, and refuses the next lease ([`Self::take_late_node_lock`]). `try_lock`: the lock's own
    /// calls come through here while the slot is held.
    fn take_late_node_lock_at_first_answer(&self) {
        let Ok(mut slot) = self.late_lock.try_lock() else {
            return;
        };
        if !matches!(*slot, LateLock::Wanted) {
            return;
        }
        match self.node_lock() {
            Ok(lock) => {
                tracing::info!("the database answers: this node holds its node lock now");
                *slot = LateLock::Held {
                    _lock: Box::new(lock),
                };
            }
            Err(err) => tracing::debug!(%err, "the node lock cannot be taken yet"),
        }
    }

    /// Takes the node lock a daemon started without (the database was down), if it has not yet:
    /// refused ([`StoreError::Locked`]) while another process of this node name holds it.
    fn take_late_node_lock(&self) -> Result<(), StoreError> {
        let mut slot = self
            .late_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if matches!(*slot, LateLock::Wanted) {
            let lock = self.node_lock()?;
            tracing::info!("the database answers: this node holds its node lock now");
            *slot = LateLock::Held {
                _lock: Box::new(lock),
            };
        }
        Ok(())
    }
}

/// Whether `err` says the database could not be reached (rather than that it refused something).
fn unreachable(err: &StoreError) -> bool {
    matches!(err, StoreError::Database { action, reason, .. }
        if *action == "answer" || reason.starts_with("cannot connect"))
}

/// `postgresql certd@127.0.0.1:5432/certd (node node-a)`, without the password.
fn describe(pg: &tokio_postgres::Config, node: &str) -> String {
    let hosts: Vec<String> = pg
        .get_hosts()
        .iter()
        .zip(pg.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(host, port)| match host {
            tokio_postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
            tokio_postgres::config::Host::Unix(path) => format!("{}:{port}", path.display()),
        })
        .collect();
    format!(
        "postgresql {}@{}/{} (node {node})",
        pg.get_user().unwrap_or(""),
        hosts.join(","),
        pg.get_dbname().unwrap_or("")
    )
}

/// Applies the pending migrations, each in its own transaction under a lock (nodes may start at
/// once), re-reading the version inside it.
async fn migrate(ctx: Ctx) -> Result<(), StoreError> {
    let mut client = ctx.client("migrate").await?;
    loop {
        let tx = client.transaction().await.map_err(ctx.pg("migrate"))?;
        tx.execute(schema::MIGRATION_LOCK, &[])
            .await
            .map_err(ctx.pg("migrate"))?;
        let exists: bool = tx
            .query_one(schema::SCHEMA_EXISTS, &[])
            .await
            .map_err(ctx.pg("migrate"))?
            .get(0);
        let current = if exists {
            tx.query_opt(schema::SCHEMA_VERSION, &[])
                .await
                .map_err(ctx.pg("migrate"))?
                .map(|row| row.get::<_, i32>(0))
        } else {
            None
        };
        let current = current
            .map(|v| {
                u32::try_from(v).map_err(|_| ctx.fail("migrate", format!("schema version {v}")))
            })
            .transpose()?;
        let pending =
            schema::pending(current).map_err(|err| ctx.fail("migrate", err.to_string()))?;
        let Some(next) = pending.first() else {
            return tx.commit().await.map_err(ctx.pg("migrate"));
        };
        tracing::info!(
            version = next.version,
            what = next.description,
            "migrating the certd schema"
        );
        tx.batch_execute(next.sql)
            .await
            .map_err(ctx.pg("migrate"))?;
        let version = i32::try_from(next.version).map_err(|_| ctx.fail("migrate", "version"))?;
        tx.execute(schema::SET_SCHEMA_VERSION, &[&version])
            .await
            .map_err(ctx.pg("migrate"))?;
        tx.commit().await.map_err(ctx.pg("migrate"))?;
    }
}

/// This machine's hostname, as recorded beside a node lock.
fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_default()
}

/// The node's writer lock: the session holding the advisory lock, out of the pool.
struct NodeLock {
    client: Option<deadpool_postgres::Object>,
    node: String,
    handle: tokio::runtime::Handle,
}

impl std::fmt::Debug for NodeLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeLock({})", self.node)
    }
}

impl Drop for NodeLock {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let node = self.node.clone();
        let (done, finished) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let released = async {
                client
                    .execute(schema::CLEAR_NODE_LOCK_HOLDER, &[&node])
                    .await?;
                client.query_one(schema::NODE_UNLOCK, &[&node]).await
            };
            if tokio::time::timeout(CALL_DEADLINE, released)
                .await
                .map_or(true, |result| result.is_err())
            {
                // Never hand a session that may still hold the lock back to the pool: closing it
                // makes the server release the lock.
                drop(deadpool_postgres::Object::take(client));
            }
            let _ = done.send(());
        });
        let _ = finished.recv_timeout(CALL_DEADLINE + Duration::from_secs(1));
    }
}

fn process_runs(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

impl StateStore for PostgresStore {
    fn describe(&self) -> String {
        self.described.clone()
    }

    fn lock(&self) -> Result<StoreLock, StoreError> {
        let Some(local) = &self.local else {
            return self.node_lock().map(StoreLock::new);
        };
        // The local copy is this machine's state directory: its flock too.
        let local_lock = crate::store::Store::lock(local)?;
        match self.node_lock() {
            Ok(node) => Ok(StoreLock::new((local_lock, Some(node)))),
            Err(err) if unreachable(&err) => {
                tracing::warn!(%err, "the database is unreachable: this node starts under its state_dir lock and takes the node lock before its first lease");
                *self
                    .late_lock
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = LateLock::Wanted;
                Ok(StoreLock::new((
                    local_lock,
                    LateLockGuard(self.late_lock.clone()),
                )))
            }
            Err(err) => Err(err),
        }
    }

    fn lock_holder(&self) -> Option<u32> {
        let (host, pid) = self
            .call(|ctx| async move {
                let client = ctx.client("read the writer lock").await?;
                let row = client
                    .query_opt(schema::NODE_LOCK_HOLDER, &[&ctx.node])
                    .await
                    .map_err(ctx.pg("read the writer lock"))?;
                Ok(row.map(|row| (row.get::<_, String>(0), row.get::<_, i32>(1))))
            })
            .ok()??;
        let pid = u32::try_from(pid).ok()?;
        (host == this_host() && process_runs(pid)).then_some(pid)
    }

    fn load_account(&self, directory_url: &str) -> Result<Option<String>, StoreError> {
        let url = directory_url.to_owned();
        self.call(|ctx| async move {
            let client = ctx.client("load the ACME account").await?;
            let Some(row) = client
                .query_opt(schema::LOAD_ACCOUNT, &[&url])
                .await
                .map_err(ctx.pg("load the ACME account"))?
            else {
                return Ok(None);
            };
            let sealed: Vec<u8> = row.get(0);
            let opened = ctx
                .key
                .open(&schema::sealed_account_context(&url), &sealed)?;
            String::from_utf8(opened.to_vec())
                .map(Some)
                .map_err(|err| ctx.corrupt(format!("account of {url}"), err))
        })
    }

    fn save_account(&self, directory_url: &str, json: &str) -> Result<(), StoreError> {
        let url = directory_url.to_owned();
        let sealed = self
            .key
            .seal(&schema::sealed_account_context(&url), json.as_bytes())?;
        self.call(|ctx| async move {
            let client = ctx.client("save the ACME account").await?;
            client
                .execute(schema::SAVE_ACCOUNT, &[&url, &sealed])
                .await
                .map_err(ctx.pg("save the ACME account"))?;
            Ok(())
        })
    }

    fn account_location(&self, directory_url: &str) -> PathBuf {
        PathBuf::from(format!("{}: account of {directory_url}", self.described))
    }

    fn install(&self, site: &str, pem: &CertifiedPem) -> Result<StoredCert, StoreError> {
        self.install_under(site, pem, None)
    }

    fn install_leased(
        &self,
        site: &str,
        pem: &CertifiedPem,
        lease: &Lease,
    ) -> Result<StoredCert, StoreError> {
        self.install_under(site, pem, Some(lease.token))
    }

    fn lease(&self, site: &str, seconds: u32) -> Result<Option<Lease>, StoreError> {
        self.take_late_node_lock()?;
        let site = site.to_owned();
        self.call(move |ctx| async move {
            let client = ctx.client("take a lease").await?;
            let row = client
                .query_opt(
                    schema::ACQUIRE_LEASE,
                    &[&site, &ctx.node, &f64::from(seconds)],
                )
                .await
                .map_err(ctx.pg("take a lease"))?;
            Ok(row.map(|row| Lease {
                site,
                token: row.get(0),
            }))
        })
    }

    fn renew_lease(&self, lease: &Lease, seconds: u32) -> Result<bool, StoreError> {
        let lease = lease.clone();
        self.call(move |ctx| async move {
            let client = ctx.client("renew a lease").await?;
            let row = client
                .query_opt(
                    schema::RENEW_LEASE,
                    &[&lease.site, &lease.token, &f64::from(seconds)],
                )
                .await
                .map_err(ctx.pg("renew a lease"))?;
            Ok(row.is_some())
        })
    }

    fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        let lease = lease.clone();
        self.call(move |ctx| async move {
            let client = ctx.client("release a lease").await?;
            client
                .execute(schema::RELEASE_LEASE, &[&lease.site, &lease.token])
                .await
                .map_err(ctx.pg("release a lease"))?;
            Ok(())
        })
    }

    fn current(&self, site: &str) -> Result<Option<StoredCert>, StoreError> {
        let Some(local) = &self.local else {
            return self.current_in_database(site);
        };
        // Known to be down: the local copy at once (the change watch notices the database is
        // back and loads everything again), rather than a connection attempt per handshake.
        if !self.health.state().reachable {
            if let Ok(Some(copy)) = local.current(site) {
                return Ok(Some(copy));
            }
        }
        match self.current_in_database(site) {
            Ok(Some(stored)) => {
                self.keep_local_copy(local, site, &stored);
                Ok(Some(stored))
            }
            Err(err) if unreachable(&err) => match local.current(site) {
                Ok(Some(copy)) => Ok(Some(copy)),
                _ => Err(err),
            },
            other => other,
        }
    }

    fn current_batches(
        &self,
        sites: &[&str],
        batch: usize,
        each: &mut dyn FnMut(usize, Vec<Result<Option<StoredCert>, StoreError>>),
    ) {
        let batch = batch.max(1);
        for (number, chunk) in sites.chunks(batch).enumerate() {
            each(number.saturating_mul(batch), self.current_batch(chunk));
        }
    }

    fn keep_local_copies(
        &self,
        sites: &[&str],
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<usize, StoreError> {
        self.keep_local_copies_of(sites, stop)
    }

    fn versions(&self, site: &str) -> Result<Vec<PathBuf>, StoreError> {
        let site = site.to_owned();
        self.call(|ctx| async move {
            let client = ctx.client("list versions").await?;
            let rows = client
                .query(schema::VERSIONS, &[&site])
                .await
                .map_err(ctx.pg("list versions"))?;
            Ok(rows
                .iter()
                .map(|row| version_path(&ctx.described, &site, row.get(0)))
                .collect())
        })
    }

    fn load_record(&self, site: &str) -> Result<SiteRecord, StoreError> {
        let site = site.to_owned();
        self.call(|ctx| async move {
            let client = ctx.client("load a site record").await?;
            let Some(row) = client
                .query_opt(schema::LOAD_RECORD, &[&site])
                .await
                .map_err(ctx.pg("load a site record"))?
            else {
                return Ok(SiteRecord::default());
            };
            let text: String = row.get(0);
            serde_json::from_str(&text).map_err(|err| ctx.corrupt(format!("record of {site}"), err))
        })
    }

    fn save_record(&self, site: &str, record: &SiteRecord) -> Result<(), StoreError> {
        let site = site.to_owned();
        let text = serde_json::to_string(record)
            .map_err(|err| self.ctx().corrupt(format!("record of {site}"), err))?;
        self.call(|ctx| async move {
            let client = ctx.client("save a site record").await?;
            client
                .execute(schema::SAVE_RECORD, &[&site, &text])
                .await
                .map_err(ctx.pg("save a site record"))?;
            Ok(())
        })
    }

    fn sites(&self) -> Result<Vec<String>, StoreError> {
        self.call(|ctx| async move {
            let client = ctx.client("list sites").await?;
            let rows = client
                .query(schema::SITES, &[])
                .await
                .map_err(ctx.pg("list sites"))?;
            Ok(rows.iter().map(|row| row.get(0)).collect())
        })
    }

    fn ledger_entries(&self, directory_url: &str) -> Result<Vec<LedgerEntry>, StoreError> {
        let url = directory_url.to_owned();
        self.call(|ctx| async move {
            let client = ctx.client("read the ledger").await?;
            let rows = client
                .query(schema::LEDGER_ENTRIES, &[&url])
                .await
                .map_err(ctx.pg("read the ledger"))?;
            rows.iter()
                .map(|row| {
                    serde_json::from_str(row.get::<_, &str>(0))
                        .map_err(|err| ctx.corrupt(format!("ledger of {url}"), err))
                })
                .collect()
        })
    }

    fn ledger_append(&self, directory_url: &str, entry: &LedgerEntry) -> Result<(), StoreError> {
        let url = directory_url.to_owned();
        let ctx = self.ctx();
        let text = serde_json::to_string(entry)
            .map_err(|err| ctx.corrupt(format!("ledger of {url}"), err))?;
        let at = entry
            .at
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|err| ctx.corrupt(format!("ledger of {url}"), err))?;
        self.call(|ctx| async move {
            let client = ctx.client("append to the ledger").await?;
            client
                .execute(schema::LEDGER_APPEND, &[&url, &at, &text])
                .await
                .map_err(ctx.pg("append to the ledger"))?;
            Ok(())
        })
    }

    fn save_scheduler_heartbeat(&self, heartbeat: &SchedulerHeartbeat) -> Result<(), StoreError> {
        let text = serde_json::to_string(heartbeat)
            .map_err(|err| self.ctx().corrupt("heartbeat".into(), err))?;
        self.call(|ctx| async move {
            let client = ctx.client("save the heartbeat").await?;
            client
                .execute(schema::SAVE_HEARTBEAT, &[&ctx.node, &text])
                .await
                .map_err(ctx.pg("save the heartbeat"))?;
            Ok(())
        })
    }

    fn scheduler_heartbeat(&self) -> Result<Option<SchedulerHeartbeat>, StoreError> {
        self.call(|ctx| async move {
            let client = ctx.client("read the heartbeat").await?;
            let Some(row) = client
                .query_opt(schema::HEARTBEAT, &[&ctx.node])
                .await
                .map_err(ctx.pg("read the heartbeat"))?
            else {
                return Ok(None);
            };
            serde_json::from_str(row.get::<_, &str>(0))
                .map(Some)
                .map_err(|err| ctx.corrupt("heartbeat".into(), err))
        })
    }

    fn shares_challenges(&self) -> bool {
        true
    }

    fn announces_installs(&self) -> bool {
        true
    }

    fn publish_challenge(
        &self,
        kind: AnswerKind,
        name: &str,
        answer: &str,
        seconds: u32,
    ) -> Result<(), StoreError> {
        let key = schema::challenge_key(kind, name);
        let answer = answer.to_owned();
        self.call(move |ctx| async move {
            let client = ctx.client("publish a challenge answer").await?;
            client
                .execute(schema::PURGE_CHALLENGES, &[])
                .await
                .map_err(ctx.pg("publish a challenge answer"))?;
            client
                .execute(
                    schema::PUBLISH_CHALLENGE,
                    &[&key, &answer, &f64::from(seconds)],
                )
                .await
                .map_err(ctx.pg("publish a challenge answer"))?;
            Ok(())
        })
    }

    fn challenge_answer(&self, kind: AnswerKind, name: &str) -> Result<Option<String>, StoreError> {
        let key = schema::challenge_key(kind, name);
        self.call(move |ctx| async move {
            let client = ctx.client("look up a challenge answer").await?;
            let row = client
                .query_opt(schema::CHALLENGE_ANSWER, &[&key])
                .await
                .map_err(ctx.pg("look up a challenge answer"))?;
            Ok(row.map(|row| row.get(0)))
        })
    }

    fn withdraw_challenge(&self, kind: AnswerKind, name: &str) -> Result<(), StoreError> {
        let key = schema::challenge_key(kind, name);
        self.call(move |ctx| async move {
            let client = ctx.client("withdraw a challenge answer").await?;
            client
                .execute(schema::WITHDRAW_CHALLENGE, &[&key])
                .await
                .map_err(ctx.pg("withdraw a challenge answer"))?;
            Ok(())
        })
    }

    fn changes(
        &self,
        stop: tokio_util::sync::CancellationToken,
    ) -> Option<tokio::sync::mpsc::Receiver<Change>> {
        // Read before the daemon's initial load, so that whatever changes after it is a change
        // to the poll; unreadable now (the database is down), the first poll that succeeds asks
        // for everything.
        let baseline = self
            .call(|ctx| async move { changes::live_versions(&ctx).await })
            .ok();
        let (tx, rx) = tokio::sync::mpsc::channel(super::CHANGES_QUEUED);
        let watch = changes::Watch {
            ctx: self.ctx(),
            pg: self.pg.clone(),
            tls: self.tls.clone(),
            poll: self.poll,
            notify: self.notify,
            health: self.health.clone(),
        };
        self.handle.spawn(watch.run(baseline, tx, stop));
        Some(rx)
    }

    fn health(&self) -> Option<Arc<StorageHealth>> {
        Some(self.health.clone())
    }

    fn fleet(&self) -> Result<Option<super::FleetView>, StoreError> {
        self.call(|ctx| async move {
            let action = "read the fleet view";
            let client = ctx.client(action).await?;
            let at = |secs: f64| {
                // Seconds from the database's clock: whole seconds are enough for a status.
                time::OffsetDateTime::from_unix_timestamp(secs as i64)
                    .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
            };
            let nodes = client
                .query(schema::FLEET_NODES, &[])
                .await
                .map_err(ctx.pg(action))?
                .iter()
                .map(|row| super::NodeBeat {
                    node: row.get(0),
                    at: at(row.get(1)),
                })
                .collect();
            let mut sites: std::collections::BTreeMap<String, super::SiteFleet> =
                std::collections::BTreeMap::new();
            let entry = |sites: &mut std::collections::BTreeMap<String, super::SiteFleet>,
                         site: String| {
                sites
                    .entry(site.clone())
                    .or_insert_with(|| super::SiteFleet {
                        site,
                        renewed_by: None,
                        lease: None,
                    })
                    .clone()
            };
            for row in client
                .query(schema::FLEET_INSTALLS, &[])
                .await
                .map_err(ctx.pg(action))?
            {
                let mut site = entry(&mut sites, row.get(0));
                site.renewed_by = Some((row.get(1), at(row.get(2))));
                sites.insert(site.site.clone(), site);
            }
            for row in client
                .query(schema::FLEET_LEASES, &[])
                .await
                .map_err(ctx.pg(action))?
            {
                // An account's lease lives for the seconds its creation takes and is no site.
                if super::is_account_lease(row.get(0)) {
                    continue;
                }
                let mut site = entry(&mut sites, row.get(0));
                site.lease = Some((row.get(1), at(row.get(2))));
                sites.insert(site.site.clone(), site);
            }
            Ok(Some(super::FleetView {
                nodes,
                sites: sites.into_values().collect(),
            }))
        })
    }
}

/// How a version is named in messages: `<store>/<site>/000042`.
fn version_path(described: &str, site: &str, version: i64) -> PathBuf {
    PathBuf::from(format!("{described}/{site}/{version:06}"))
}

/// An install's failure: [`StoreError::Fenced`] when the trigger refused the token.
fn install_error(ctx: &Ctx, site: &str, err: &tokio_postgres::Error) -> StoreError {
    match err.as_db_error() {
        Some(db) if db.code().code() == schema::FENCED_SQLSTATE => StoreError::Fenced {
            site: site.to_owned(),
            reason: db.message().to_owned(),
        },
        _ => ctx.fail("install a certificate", reason(err)),
    }
}
