//! The PostgreSQL schema certd migrates and the statements its fleet backend runs, against a real
//! PostgreSQL (harness::Postgres): two nodes share one database; a lease per site with a fencing
//! token that grows with every grant; an install by a node whose lease expired while it was paused
//! is refused by the database, and the newer certificate stays live; a dump holds no private key.
//!
//! The statements are certd's own ([`certd::storage::postgres::schema`]), run through psql's
//! `PREPARE`/`EXECUTE` with the same parameters the backend binds.

use std::time::Duration;

use certd::storage::postgres::schema::{self, FENCED_SQLSTATE};
use certd::storage::sealing::SealingKey;

use crate::harness::Postgres;

const SITE: &str = "fleet.test";
const FLEET_KEY: [u8; 32] = [0x5a; 32];

/// psql literal for `text`.
fn lit(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Applies every pending migration, each in its own transaction with its version recorded.
fn migrate(pg: &Postgres) {
    let exists = pg
        .psql("SELECT to_regclass('certd_schema') IS NOT NULL")
        .trim()
        == "t";
    let current = exists
        .then(|| pg.psql(schema::SCHEMA_VERSION).trim().parse().ok())
        .flatten();
    for migration in schema::pending(current).expect("schema not newer") {
        pg.psql(&format!(
            "BEGIN; {sql}; PREPARE set_version(int4) AS {set}; EXECUTE set_version({version}); COMMIT;",
            sql = migration.sql,
            set = schema::SET_SCHEMA_VERSION,
            version = migration.version,
        ));
    }
}

fn acquire(pg: &Postgres, node: &str, seconds: f64) -> Option<i64> {
    let out = pg.psql(&format!(
        "PREPARE acquire(text, text, float8) AS {}; EXECUTE acquire({}, {}, {seconds});",
        schema::ACQUIRE_LEASE,
        lit(SITE),
        lit(node),
    ));
    let out = out.trim();
    (!out.is_empty()).then(|| out.parse().expect("token is a number"))
}

fn renew(pg: &Postgres, token: i64) -> bool {
    let out = pg.psql(&format!(
        "PREPARE renew(text, int8, float8) AS {}; EXECUTE renew({}, {token}, 60);",
        schema::RENEW_LEASE,
        lit(SITE),
    ));
    !out.trim().is_empty()
}

/// A node's install of a certificate tagged `tag`, presenting `token`.
fn install(pg: &Postgres, node: &str, token: i64, tag: &str) -> Result<i64, String> {
    let key_pem =
        format!("-----BEGIN PRIVATE KEY-----\nsecret-of-{tag}\n-----END PRIVATE KEY-----\n");
    let sealed = SealingKey::from_bytes(&FLEET_KEY)
        .expect("key")
        .seal(&schema::sealed_key_context(SITE, token), key_pem.as_bytes())
        .expect("seal");
    let hex: String = sealed.iter().map(|byte| format!("{byte:02x}")).collect();
    pg.try_psql(&format!(
        "PREPARE install(text, text, text, bytea, text, int8) AS {}; \
         EXECUTE install({}, {}, {}, decode('{hex}', 'hex'), {}, {token});",
        schema::INSTALL,
        lit(SITE),
        lit(&format!(
            "-----BEGIN CERTIFICATE-----\ncert-of-{tag}\n-----END CERTIFICATE-----\n"
        )),
        lit("-----BEGIN CERTIFICATE-----\nintermediate\n-----END CERTIFICATE-----\n"),
        lit(node),
    ))
    .map(|out| {
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("not a version: {out:?}"))
    })
}

#[tokio::test]
async fn a_paused_lease_holders_install_is_refused_by_its_fencing_token() {
    let pg = Postgres::start().await;
    migrate(&pg);
    assert_eq!(
        pg.psql(schema::SCHEMA_VERSION).trim(),
        schema::known_version().to_string()
    );
    // Migrating again is a no-op (certd runs it at every start).
    migrate(&pg);

    // Node A takes a short lease; B cannot while it is live.
    let a = acquire(&pg, "node-a", 1.0).expect("A gets the free lease");
    assert_eq!(acquire(&pg, "node-b", 60.0), None, "B got a lease A holds");

    // A is paused (SIGSTOP, a partition) past its lease; B takes over with a larger token,
    // installs, and its certificate is live.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let b = acquire(&pg, "node-b", 60.0).expect("B gets the expired lease");
    assert!(b > a, "fencing token did not grow: {a} then {b}");
    assert_eq!(install(&pg, "node-b", b, "b"), Ok(1));

    // A wakes up: its renewal finds the lease lost, and its install is refused by the database.
    assert!(!renew(&pg, a), "A renewed a lease it lost");
    let refused = install(&pg, "node-a", a, "a").expect_err("A's stale install was accepted");
    assert!(refused.contains(FENCED_SQLSTATE), "{refused}");
    assert!(refused.contains("fencing token"), "{refused}");
    // Nor can A pass B's token off as its own (the holder is checked too).
    assert!(install(&pg, "node-a", b, "a").is_err());
    assert_eq!(acquire(&pg, "node-a", 60.0), None, "A took B's live lease");

    // B's certificate stayed live, and a later install by B makes version 2 live.
    let current = pg.psql(&format!(
        "PREPARE current(text) AS {}; EXECUTE current({});",
        schema::CURRENT,
        lit(SITE)
    ));
    assert!(current.starts_with("1|"), "{current}");
    assert!(current.contains("cert-of-b"), "{current}");
    assert!(!current.contains("cert-of-a"), "{current}");
    assert!(renew(&pg, b), "B lost its live lease");
    assert_eq!(install(&pg, "node-b", b, "b2"), Ok(2));
    assert_eq!(
        pg.psql(&format!(
            "SELECT version FROM live WHERE site = {}",
            lit(SITE)
        ))
        .trim(),
        "2"
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM cert_versions").trim(),
        "2",
        "the refused install left a row"
    );
}

#[tokio::test]
async fn a_database_dump_holds_no_private_key_in_the_clear() {
    let pg = Postgres::start().await;
    migrate(&pg);
    let token = acquire(&pg, "node-a", 60.0).expect("lease");
    install(&pg, "node-a", token, "dumped").expect("install");

    let dump = pg.dump();
    assert!(
        dump.contains("cert-of-dumped"),
        "the dump lacks the certificate row"
    );
    assert!(
        !dump.contains("PRIVATE KEY"),
        "a private key is in the dump"
    );
    assert!(
        !dump.contains("secret-of-dumped"),
        "key material is in the dump"
    );

    // What the database holds opens with the fleet's key, for this site and grant only.
    let hex = pg.psql(&format!(
        "SELECT encode(sealed_key, 'hex') FROM cert_versions WHERE site = {}",
        lit(SITE)
    ));
    let hex = hex.trim();
    let sealed: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).expect("hex"))
        .collect();
    let key = SealingKey::from_bytes(&FLEET_KEY).expect("key");
    let opened = key
        .open(&schema::sealed_key_context(SITE, token), &sealed)
        .expect("opens");
    assert!(String::from_utf8_lossy(&opened).contains("secret-of-dumped"));
    assert!(key
        .open(&schema::sealed_key_context("other.test", token), &sealed)
        .is_err());
}
