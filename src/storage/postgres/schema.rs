//! The database schema, its versioned migrations, and every statement the PostgreSQL backend runs.
//!
//! certd creates and migrates the schema itself: `certd_schema` holds the version applied, each
//! [`Migration`] moves it up by one in its own transaction, and [`pending`] refuses a database whose
//! version is newer than this build knows (a newer certd migrated it; an older one must not write
//! to a schema it does not understand).
//!
//! Safety rules live in the database, not in each node's code:
//! - **Leases**: one row per site (`leases`), granted by [`ACQUIRE_LEASE`] only when there is none
//!   or it has expired, by the database's clock (so node clocks may drift). Every grant draws a new
//!   token from the `certd_fencing` sequence, so tokens only grow.
//! - **Fencing**: the trigger `certd_fenced_install` refuses (SQLSTATE [`FENCED_SQLSTATE`]) a new
//!   certificate version unless its `fencing_token` and `installed_by` are the site's unexpired
//!   lease, and locks that lease row for the rest of the transaction so it cannot change hands
//!   mid-install. A node paused past its lease (SIGSTOP, a partition) that wakes up and installs is
//!   refused; the newer certificate stays live.
//! - Private keys (`cert_versions.sealed_key`) and ACME accounts (`accounts.sealed`) are stored
//!   sealed with the fleet's key ([`crate::sealing`]); the rest is not secret.

/// The SQLSTATE the fencing trigger raises (class `CD`, certd's own).
pub const FENCED_SQLSTATE: &str = "CDF01";

/// One step of the schema.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// The schema version after this step (1, 2, ...; no gaps).
    pub version: u32,
    /// What it does, for the log.
    pub description: &'static str,
    /// The statements, run in one transaction.
    pub sql: &'static str,
}

/// Every migration this build knows, in order.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "accounts, certificate versions and live pointer, records, ledger, leases with fencing, challenges, heartbeats",
    sql: r#"
CREATE TABLE certd_schema (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    version integer NOT NULL
);
CREATE TABLE accounts (
    directory_url text PRIMARY KEY,
    sealed bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE SEQUENCE certd_fencing;
CREATE TABLE leases (
    site text PRIMARY KEY,
    holder text NOT NULL,
    token bigint NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE TABLE cert_versions (
    site text NOT NULL,
    version bigint NOT NULL CHECK (version > 0),
    cert_pem text NOT NULL,
    chain_pem text NOT NULL,
    sealed_key bytea NOT NULL,
    installed_by text NOT NULL,
    fencing_token bigint NOT NULL,
    installed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site, version)
);
CREATE TABLE live (
    site text PRIMARY KEY,
    version bigint NOT NULL,
    FOREIGN KEY (site, version) REFERENCES cert_versions (site, version)
);
CREATE TABLE site_records (
    site text PRIMARY KEY,
    record jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE ledger (
    id bigserial PRIMARY KEY,
    directory_url text NOT NULL,
    at timestamptz NOT NULL,
    entry jsonb NOT NULL
);
CREATE INDEX ledger_by_ca ON ledger (directory_url, at);
CREATE TABLE challenges (
    token text PRIMARY KEY,
    key_authorization text NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE TABLE heartbeats (
    node text PRIMARY KEY,
    beat jsonb NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE FUNCTION certd_fenced_install() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM 1 FROM leases
        WHERE site = NEW.site AND holder = NEW.installed_by AND token = NEW.fencing_token
          AND expires_at > now()
        FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'CDF01',
            MESSAGE = format('install of %s by %s refused: fencing token %s is not the live lease',
                             NEW.site, NEW.installed_by, NEW.fencing_token);
    END IF;
    RETURN NEW;
END
$fn$;
CREATE TRIGGER certd_fenced_install BEFORE INSERT ON cert_versions
    FOR EACH ROW EXECUTE FUNCTION certd_fenced_install();
"#,
}, Migration {
    version: 2,
    description: "who holds each node's writer lock (the lock itself is a session advisory lock)",
    sql: r#"
CREATE TABLE node_locks (
    node text PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    taken_at timestamptz NOT NULL DEFAULT now()
);
"#,
}];

/// The newest schema version this build knows.
pub fn known_version() -> u32 {
    MIGRATIONS.last().map_or(0, |migration| migration.version)
}

/// The schema version is newer than this build knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the database's certd schema is version {found}, newer than the {known} this certd knows; upgrade this node (a newer certd migrated the database)")]
pub struct SchemaTooNew {
    /// The version in `certd_schema`.
    pub found: u32,
    /// [`known_version`].
    pub known: u32,
}

/// The migrations still to run on a database at schema version `current` (`None`: no schema yet),
/// or [`SchemaTooNew`].
pub fn pending(current: Option<u32>) -> Result<&'static [Migration], SchemaTooNew> {
    let current = current.unwrap_or(0);
    let known = known_version();
    if current > known {
        return Err(SchemaTooNew {
            found: current,
            known,
        });
    }
    // Versions have no gaps and start at 1, so the migrations after `current` are a suffix.
    let done = MIGRATIONS
        .iter()
        .take_while(|migration| migration.version <= current)
        .count();
    Ok(MIGRATIONS.get(done..).unwrap_or_default())
}

/// The schema version applied, or nothing when `certd_schema` is empty. Run it only once
/// `to_regclass('certd_schema')` says the table exists.
pub const SCHEMA_VERSION: &str = "SELECT version FROM certd_schema";

/// Records `$1` (int4) as the schema version, in the migration's transaction.
pub const SET_SCHEMA_VERSION: &str = "INSERT INTO certd_schema (version) VALUES ($1) \
     ON CONFLICT (only_row) DO UPDATE SET version = EXCLUDED.version";

/// Takes the lease of site `$1` for node `$2` for `$3` seconds (float8) when nobody holds an unexpired
/// one; returns the new fencing token, or no row when another node holds it.
pub const ACQUIRE_LEASE: &str = "INSERT INTO leases (site, holder, token, expires_at) \
     VALUES ($1, $2, nextval('certd_fencing'), now() + make_interval(secs => $3)) \
     ON CONFLICT (site) DO UPDATE \
     SET holder = EXCLUDED.holder, token = EXCLUDED.token, expires_at = EXCLUDED.expires_at \
     WHERE leases.expires_at <= now() \
     RETURNING token";

/// Extends the lease of site `$1` with token `$2` by `$3` seconds from now, while it is still live;
/// no row when it was lost (expired, taken over).
pub const RENEW_LEASE: &str = "UPDATE leases SET expires_at = now() + make_interval(secs => $3) \
     WHERE site = $1 AND token = $2 AND expires_at > now() RETURNING expires_at";

/// Gives up the lease of site `$1` with token `$2` (after the install, or when the work was not due).
pub const RELEASE_LEASE: &str = "DELETE FROM leases WHERE site = $1 AND token = $2";

/// Installs a new version of site `$1` and makes it live, in one statement: cert `$2`, chain `$3`,
/// sealed key `$4`, by node `$5` presenting fencing token `$6` (the trigger refuses a stale one).
/// Returns the new version number.
pub const INSTALL: &str = "WITH next AS ( \
         SELECT COALESCE(MAX(version), 0) + 1 AS version FROM cert_versions WHERE site = $1 \
     ), added AS ( \
         INSERT INTO cert_versions (site, version, cert_pem, chain_pem, sealed_key, installed_by, fencing_token) \
         SELECT $1, next.version, $2, $3, $4, $5, $6 FROM next \
         RETURNING site, version \
     ) \
     INSERT INTO live (site, version) SELECT site, version FROM added \
     ON CONFLICT (site) DO UPDATE SET version = EXCLUDED.version \
     RETURNING version";

/// The live pair of site `$1`: version, cert, chain, sealed key, and the fencing token of its
/// install (part of the sealed key's context).
pub const CURRENT: &str =
    "SELECT v.version, v.cert_pem, v.chain_pem, v.sealed_key, v.fencing_token \
     FROM live l JOIN cert_versions v ON v.site = l.site AND v.version = l.version \
     WHERE l.site = $1";

/// The live versions of the sites in `$1` (a text array), each row a [`CURRENT`] row led by its
/// site: one statement, so each certificate comes with the key of its own version.
pub const CURRENT_MANY: &str =
    "SELECT l.site, v.version, v.cert_pem, v.chain_pem, v.sealed_key, v.fencing_token \
     FROM live l JOIN cert_versions v ON v.site = l.site AND v.version = l.version \
     WHERE l.site = ANY($1)";

/// Refreshes node `$1`'s heartbeat time (the change poll, every `[storage] poll`).
pub const TOUCH_HEARTBEAT: &str = "UPDATE heartbeats SET at = now() WHERE node = $1";

/// Every node's last heartbeat (Unix seconds, float8).
pub const FLEET_NODES: &str =
    "SELECT node, extract(epoch FROM at)::float8 FROM heartbeats ORDER BY node";

/// Every live certificate's installer and install time (Unix seconds).
pub const FLEET_INSTALLS: &str =
    "SELECT v.site, v.installed_by, extract(epoch FROM v.installed_at)::float8 \
     FROM live l JOIN cert_versions v ON v.site = l.site AND v.version = l.version";

/// Every unexpired lease: site, holder, expiry (Unix seconds).
pub const FLEET_LEASES: &str =
    "SELECT site, holder, extract(epoch FROM expires_at)::float8 FROM leases WHERE expires_at > now()";

/// Every site's live version: what the change poll compares.
pub const LIVE_VERSIONS: &str = "SELECT site, version FROM live";

/// Announces that site `$1`'s live pair changed, on commit (the channel of
/// [`super::changes::CHANNEL`]).
pub const NOTIFY_LIVE: &str = "SELECT pg_notify('certd_live', $1)";

/// Serialises migrations of nodes starting at once (transaction-scoped advisory lock).
pub const MIGRATION_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('certd-migrations'))";

/// Whether the schema table exists yet.
pub const SCHEMA_EXISTS: &str = "SELECT to_regclass('certd_schema') IS NOT NULL";

/// Takes node `$1`'s writer lock for this session without waiting; true when taken.
pub const TRY_NODE_LOCK: &str = "SELECT pg_try_advisory_lock(hashtext('certd-node:' || $1))";

/// Gives node `$1`'s writer lock back.
pub const NODE_UNLOCK: &str = "SELECT pg_advisory_unlock(hashtext('certd-node:' || $1))";

/// Records who holds node `$1`'s writer lock: host `$2`, pid `$3` (int4).
pub const SET_NODE_LOCK_HOLDER: &str =
    "INSERT INTO node_locks (node, host, pid) VALUES ($1, $2, $3) \
     ON CONFLICT (node) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid, taken_at = now()";

/// Forgets the holder of node `$1`'s writer lock.
pub const CLEAR_NODE_LOCK_HOLDER: &str = "DELETE FROM node_locks WHERE node = $1";

/// The recorded holder of node `$1`'s writer lock: host, pid.
pub const NODE_LOCK_HOLDER: &str = "SELECT host, pid FROM node_locks WHERE node = $1";

/// The sealed account credentials of the CA at `$1`.
pub const LOAD_ACCOUNT: &str = "SELECT sealed FROM accounts WHERE directory_url = $1";

/// Saves the sealed account credentials `$2` of the CA at `$1`.
pub const SAVE_ACCOUNT: &str = "INSERT INTO accounts (directory_url, sealed) VALUES ($1, $2) \
     ON CONFLICT (directory_url) DO UPDATE SET sealed = EXCLUDED.sealed, updated_at = now()";

/// The versions of site `$1`, oldest first.
pub const VERSIONS: &str = "SELECT version FROM cert_versions WHERE site = $1 ORDER BY version";

/// The record (JSON text) of site `$1`.
pub const LOAD_RECORD: &str = "SELECT record::text FROM site_records WHERE site = $1";

/// Saves record `$2` (JSON text) of site `$1`.
pub const SAVE_RECORD: &str =
    "INSERT INTO site_records (site, record) VALUES ($1, $2::text::jsonb) \
     ON CONFLICT (site) DO UPDATE SET record = EXCLUDED.record, updated_at = now()";

/// Every site with a certificate or a record, sorted.
pub const SITES: &str = "SELECT site FROM live UNION SELECT site FROM site_records ORDER BY 1";

/// The ledger of the CA at `$1` (JSON text), in the order appended.
pub const LEDGER_ENTRIES: &str =
    "SELECT entry::text FROM ledger WHERE directory_url = $1 ORDER BY id";

/// Appends entry `$3` (JSON text) at `$2` (RFC 3339 text) to the ledger of the CA at `$1`.
pub const LEDGER_APPEND: &str = "INSERT INTO ledger (directory_url, at, entry) \
     VALUES ($1, $2::text::timestamptz, $3::text::jsonb)";

/// Saves node `$1`'s scheduler heartbeat `$2` (JSON text).
pub const SAVE_HEARTBEAT: &str =
    "INSERT INTO heartbeats (node, beat) VALUES ($1, $2::text::jsonb) \
     ON CONFLICT (node) DO UPDATE SET beat = EXCLUDED.beat, at = now()";

/// Node `$1`'s scheduler heartbeat (JSON text).
pub const HEARTBEAT: &str = "SELECT beat::text FROM heartbeats WHERE node = $1";

/// What a site's sealed private key is bound to (the AEAD's associated data): the site and the
/// fencing token of the grant that installed it, both stored beside it, so a sealed key copied into
/// another site's row, or another install's, does not open.
pub fn sealed_key_context(site: &str, fencing_token: i64) -> String {
    format!("privkey:{site}:{fencing_token}")
}

/// What a CA's sealed account credentials are bound to.
pub fn sealed_account_context(directory_url: &str) -> String {
    format!("account:{directory_url}")
}

/// The `challenges` row of a published answer: `token` holds `<kind>:<name>` (an HTTP-01 token is
/// base64url and a server name has no `:`, so kinds never collide), `key_authorization` the answer.
pub fn challenge_key(kind: crate::storage::AnswerKind, name: &str) -> String {
    format!("{}:{name}", kind.as_str())
}

/// Publishes answer `$2` under key `$1` (see [`challenge_key`]) for `$3` seconds (float8); a
/// second publish of the same key replaces it.
pub const PUBLISH_CHALLENGE: &str =
    "INSERT INTO challenges (token, key_authorization, expires_at) \
     VALUES ($1, $2, now() + make_interval(secs => $3)) \
     ON CONFLICT (token) DO UPDATE \
     SET key_authorization = EXCLUDED.key_authorization, expires_at = EXCLUDED.expires_at";

/// Drops answers past their expiry (left behind by a node that died mid-order).
pub const PURGE_CHALLENGES: &str = "DELETE FROM challenges WHERE expires_at <= now()";

/// The unexpired answer under key `$1`.
pub const CHALLENGE_ANSWER: &str =
    "SELECT key_authorization FROM challenges WHERE token = $1 AND expires_at > now()";

/// Withdraws the answer under key `$1`.
pub const WITHDRAW_CHALLENGE: &str = "DELETE FROM challenges WHERE token = $1";

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_from_one_without_gaps() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(
                migration.version as usize,
                index + 1,
                "{}",
                migration.description
            );
        }
        assert_eq!(known_version(), MIGRATIONS.len() as u32);
    }

    #[test]
    fn pending_runs_what_is_missing_and_refuses_a_newer_schema() {
        assert_eq!(pending(None).unwrap().len(), MIGRATIONS.len());
        assert_eq!(pending(Some(0)).unwrap().len(), MIGRATIONS.len());
        assert!(pending(Some(known_version())).unwrap().is_empty());
        let err = pending(Some(known_version() + 1)).unwrap_err();
        assert_eq!(
            err,
            SchemaTooNew {
                found: known_version() + 1,
                known: known_version()
            }
        );
        assert!(err.to_string().contains("newer than"), "{err}");
    }

    #[test]
    fn the_trigger_raises_the_sqlstate_the_backend_maps() {
        assert!(MIGRATIONS[0]
            .sql
            .contains(&format!("ERRCODE = '{FENCED_SQLSTATE}'")));
    }
}
