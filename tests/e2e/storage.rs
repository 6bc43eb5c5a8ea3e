//! The PostgreSQL schema certd migrates and the statements its fleet backend runs, against a real
//! PostgreSQL (harness::Postgres): two nodes share one database; a lease per site with a fencing
//! token that grows with every grant; an install by a node whose lease expired while it was paused
//! is refused by the database, and the newer certificate stays live; a dump holds no private key.
//!
//! The statements are certd's own ([`certd::storage::postgres::schema`]), run through psql's
//! `PREPARE`/`EXECUTE` with the same parameters the backend binds.

use std::time::Duration;

use certd::sealing::SealingKey;
use certd::storage::postgres::schema::{self, FENCED_SQLSTATE};

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

// ---------------------------------------------------------------------------------------------------
// The backend itself (certd::storage::postgres::PostgresStore) and certd on a postgres config.
// ---------------------------------------------------------------------------------------------------

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use certd::config::{PostgresConfig, SslMode};
use certd::storage::postgres::PostgresStore;
use certd::storage::{contract, StateStore};

use crate::harness::{normalize_serial, status_site, Certd, RunConfig, Site};
use crate::run::{World, CERT_WAIT};

/// Writes the fleet key (0600) and the password file (with a trailing newline, as `echo` writes it)
/// into `dir`.
fn write_secrets(dir: &Path, pg: &Postgres) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = dir.join("fleet.key");
    std::fs::write(&key, FLEET_KEY).expect("write key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
    let password = dir.join("db-password");
    std::fs::write(&password, format!("{}\n", pg.password())).expect("write password");
    (key, password)
}

fn store_config(pg: &Postgres, database: &str, dir: &Path, node: &str) -> PostgresConfig {
    let (key_file, password_file) = write_secrets(dir, pg);
    PostgresConfig {
        url: pg.url_of(database),
        password_file: Some(password_file),
        sslmode: SslMode::Prefer,
        ca_roots: None,
        node_name: node.to_owned(),
        key_file,
        lease_seconds: certd::storage::LEASE_SECONDS,
        poll: certd::config::DEFAULT_POLL,
        notify: true,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_postgres_backend_keeps_the_storage_contract() {
    let pg = Postgres::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // The store is synchronous (its own runtime inside): run it off this test's runtime.
    let checks = tokio::task::spawn_blocking({
        let configs: Vec<PostgresConfig> = (0..=contract::CHECKS.len())
            .map(|n| {
                pg.psql_in("postgres", &format!("CREATE DATABASE contract_{n}"));
                store_config(&pg, &format!("contract_{n}"), dir.path(), "node-a")
            })
            .collect();
        move || {
            for ((name, check), config) in contract::CHECKS.iter().zip(&configs) {
                eprintln!("check: {name}");
                let store = PostgresStore::open(config).expect("open the store");
                let _lock = store.lock().expect("lock");
                check(&store);
            }
            let last = configs.last().expect("one more database");
            contract::the_writer_lock_is_exclusive_until_dropped(
                &PostgresStore::open(last).expect("open"),
            );
        }
    });
    checks
        .await
        .expect("every contract check passes on PostgreSQL");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_backend_migrates_seals_keys_and_refuses_a_newer_schema() {
    let pg = Postgres::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = store_config(&pg, "certd", dir.path(), "node-a");
    let wrong_key = {
        let mut config = config.clone();
        config.key_file = dir.path().join("other.key");
        std::fs::write(&config.key_file, [0x11u8; 32]).expect("write");
        std::fs::set_permissions(&config.key_file, std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
        config
    };
    let opened = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            let store = PostgresStore::open(&config).expect("open migrates");
            let _lock = store.lock().expect("lock");
            store
                .install(
                    SITE,
                    &certd::certificate::CertifiedPem {
                        cert_pem: "-----BEGIN CERTIFICATE-----\ncert-of-sealed\n-----END CERTIFICATE-----\n".into(),
                        chain_pem: String::new(),
                        key_pem: zeroize::Zeroizing::new(
                            "-----BEGIN PRIVATE KEY-----\nsecret-of-sealed\n-----END PRIVATE KEY-----\n".into(),
                        ),
                    },
                )
                .expect("install");
            store.save_account("https://ca.test/dir", r#"{"secret":"account-secret"}"#)
                .expect("save account");
            // Opening again (a restart) finds the schema current.
            drop(store);
            PostgresStore::open(&config).expect("reopen").current(SITE).expect("current")
        })
        .await
        .expect("join")
    };
    let current = opened.expect("a live pair");
    assert!(current.pem.key_pem.contains("secret-of-sealed"));
    assert_eq!(
        pg.psql(schema::SCHEMA_VERSION).trim(),
        schema::known_version().to_string()
    );

    let dump = pg.dump();
    assert!(dump.contains("cert-of-sealed"), "the dump lacks the row");
    for secret in ["PRIVATE KEY", "secret-of-sealed", "account-secret"] {
        assert!(
            !dump.contains(secret),
            "{secret} is in the dump in the clear"
        );
    }

    // Another fleet's key opens nothing: the read fails, naming the key file, never a wrong key.
    let refused = tokio::task::spawn_blocking(move || {
        PostgresStore::open(&wrong_key)
            .expect("open")
            .current(SITE)
            .map(|_| ())
    })
    .await
    .expect("join")
    .expect_err("a key sealed with another key opened");
    assert!(refused.to_string().contains("does not open"), "{refused}");

    // A newer certd migrated the database: this one refuses to touch it.
    pg.psql("UPDATE certd_schema SET version = version + 1");
    let refused = tokio::task::spawn_blocking(move || PostgresStore::open(&config).map(|_| ()))
        .await
        .expect("join")
        .expect_err("opened a newer schema");
    assert!(refused.to_string().contains("newer than"), "{refused}");
}

#[tokio::test(flavor = "multi_thread")]
async fn certd_issues_into_postgres_and_run_serves_it_from_there() {
    let pg = Postgres::start().await;
    let pebble = crate::harness::Pebble::start().await;
    let certd = Certd::new();
    write_secrets(certd.dir(), &pg);
    std::fs::create_dir_all(certd.dir().join("www")).expect("mkdir");
    std::fs::write(certd.dir().join("www/index.html"), "from the fleet\n").expect("write");
    let config = RunConfig::for_pebble(&pebble, vec![Site::new(&["pg.test"]).root("/", "www")])
        .table(&format!(
            "[storage]\nbackend = \"postgres\"\nurl = \"{}\"\npassword_file = \"db-password\"\n\
             sslmode = \"disable\"\nnode_name = \"node-a\"\nkey_file = \"fleet.key\"\n",
            pg.url()
        ));
    config.write(&certd);

    // While another node holds the site's lease, this node leaves the site to it: no order.
    certd.status().await; // opening the store creates the schema
    pg.psql(
        "INSERT INTO leases (site, holder, token, expires_at) \
         VALUES ('pg.test', 'node-z', nextval('certd_fencing'), now() + interval '1 hour')",
    );
    let held = certd.issue(&[]).await;
    assert_eq!(
        pg.psql("SELECT count(*) FROM cert_versions").trim(),
        "0",
        "ordered while node-z held the lease:\n{held}"
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM ledger").trim(),
        "0",
        "an order was placed while node-z held the lease:\n{held}"
    );
    assert!(held.stderr.contains("another node holds"), "{held}");
    pg.psql("DELETE FROM leases");

    let issued = certd.issue(&[]).await;
    issued.expect_code(0);
    assert_eq!(
        pg.psql("SELECT count(*) FROM leases").trim(),
        "0",
        "the lease was not given back"
    );
    // Into the database, not the state directory.
    assert_eq!(
        pg.psql(
            "SELECT count(*) FROM cert_versions WHERE site = 'pg.test' AND installed_by = 'node-a'"
        )
        .trim(),
        "1",
        "{issued}"
    );
    assert!(
        !certd.site_dir("pg.test").exists(),
        "the certificate was written to the state directory"
    );
    assert_eq!(pg.psql("SELECT count(*) FROM accounts").trim(), "1");
    let dump = pg.dump();
    assert!(
        !dump.contains("PRIVATE KEY"),
        "a private key is in the dump"
    );

    let status = certd.status().await;
    let serial = normalize_serial(
        status_site(&status, "pg.test")["serial"]
            .as_str()
            .unwrap_or_else(|| panic!("no serial in {status:#}")),
    );

    // certd run serves the pair it reads from the database.
    let world = World::serve(pebble, certd, config).await;
    let served = world
        .client
        .wait_for_certificate("pg.test", CERT_WAIT)
        .await;
    assert_eq!(normalize_serial(&served), serial);
    let mut h1 = world.client.http1("pg.test").await;
    let reply = h1.get(&world.authority("pg.test"), "/").await;
    assert_eq!(reply.text(), "from the fleet\n", "{reply:?}");
    // A second run of issue finds the certificate in the database and skips it.
    let again = world.certd.issue(&[]).await;
    assert_eq!(
        pg.psql("SELECT count(*) FROM cert_versions").trim(),
        "1",
        "{again}"
    );
}

/// A pair whose key names `tag`.
fn tagged(tag: &str) -> certd::certificate::CertifiedPem {
    certd::certificate::CertifiedPem {
        cert_pem: format!(
            "-----BEGIN CERTIFICATE-----\ncert-of-{tag}\n-----END CERTIFICATE-----\n"
        ),
        chain_pem: String::new(),
        key_pem: zeroize::Zeroizing::new(format!(
            "-----BEGIN PRIVATE KEY-----\nsecret-of-{tag}\n-----END PRIVATE KEY-----\n"
        )),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_share_a_lease_and_a_paused_holders_install_is_refused() {
    let pg = Postgres::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let a_config = store_config(&pg, "certd", dir.path(), "node-a");
    let b_config = PostgresConfig {
        node_name: "node-b".into(),
        ..a_config.clone()
    };
    tokio::task::spawn_blocking(move || {
        let a = PostgresStore::open(&a_config).expect("open node-a");
        let b = PostgresStore::open(&b_config).expect("open node-b");
        // Each node has its own writer lock.
        let _a_lock = a.lock().expect("lock a");
        let _b_lock = b.lock().expect("lock b");

        let a_lease = a
            .lease(SITE, 1)
            .expect("lease")
            .expect("A gets the free lease");
        assert_eq!(
            b.lease(SITE, 60).expect("lease"),
            None,
            "B got A's live lease"
        );
        // Nor can B install around the lease.
        assert!(matches!(
            b.install(SITE, &tagged("b-early")),
            Err(certd::store::StoreError::Fenced { .. })
        ));

        // A is paused past its lease; B takes over with a larger token and installs.
        std::thread::sleep(Duration::from_millis(1500));
        let b_lease = b
            .lease(SITE, 60)
            .expect("lease")
            .expect("B gets the expired lease");
        assert!(
            b_lease.token > a_lease.token,
            "{a_lease:?} then {b_lease:?}"
        );
        b.install_leased(SITE, &tagged("b"), &b_lease)
            .expect("B installs");

        // A wakes up: its lease is gone and its install is refused; B's pair stays live.
        assert!(
            !a.renew_lease(&a_lease, 60).expect("renew"),
            "A renewed a lost lease"
        );
        let refused = a
            .install_leased(SITE, &tagged("a"), &a_lease)
            .expect_err("A's stale install was accepted");
        assert!(
            matches!(refused, certd::store::StoreError::Fenced { .. }),
            "{refused}"
        );
        assert!(refused.to_string().contains("fencing token"), "{refused}");
        for node in [&a, &b] {
            let live = node.current(SITE).expect("current").expect("a live pair");
            assert!(
                live.pem.cert_pem.contains("cert-of-b"),
                "{}",
                live.pem.cert_pem
            );
            assert!(live.pem.key_pem.contains("secret-of-b"));
        }
        assert_eq!(a.versions(SITE).expect("versions").len(), 1);

        // Released, the lease is free for A again.
        b.release_lease(&b_lease).expect("release");
        let again = a
            .lease(SITE, 60)
            .expect("lease")
            .expect("A gets the released lease");
        assert!(again.token > b_lease.token);
        a.install_leased(SITE, &tagged("a2"), &again)
            .expect("A installs");
        assert!(b
            .current(SITE)
            .expect("current")
            .expect("live")
            .pem
            .cert_pem
            .contains("cert-of-a2"));
    })
    .await
    .expect("the fleet keeps its fencing rules");
}

#[tokio::test(flavor = "multi_thread")]
async fn sslmode_require_encrypts_and_verify_full_checks_the_servers_ca() {
    let pg = Postgres::start_tls().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let base = store_config(&pg, "certd", dir.path(), "node-tls");
    let other_ca = crate::harness::TestPki::generate(dir.path()).ca_path;
    let configs = [
        PostgresConfig {
            sslmode: SslMode::Require,
            ..base.clone()
        },
        PostgresConfig {
            sslmode: SslMode::VerifyFull,
            ca_roots: Some(pg.tls_ca_path()),
            ..base.clone()
        },
    ];
    for config in configs {
        let mode = config.sslmode;
        let store = tokio::task::spawn_blocking(move || {
            let store = PostgresStore::open(&config).expect("open over TLS");
            store.sites().expect("a statement over TLS");
            store
        })
        .await
        .expect("join");
        // Every connection certd holds is encrypted (the pool keeps them open).
        let encrypted = pg.psql(
            "SELECT count(*), bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'certd node-tls'",
        );
        let (count, all) = encrypted.trim().split_once('|').expect("two columns");
        assert!(
            count.parse::<u32>().expect("count") >= 1,
            "{mode:?}: {encrypted}"
        );
        assert_eq!(all, "t", "{mode:?}: a plain connection: {encrypted}");
        tokio::task::spawn_blocking(move || drop(store))
            .await
            .expect("join");
    }
    // verify-full against roots the server's certificate does not chain to: refused.
    let wrong = PostgresConfig {
        sslmode: SslMode::VerifyFull,
        ca_roots: Some(other_ca),
        ..base
    };
    let refused = tokio::task::spawn_blocking(move || PostgresStore::open(&wrong).map(|_| ()))
        .await
        .expect("join")
        .expect_err("verify-full accepted a server outside ca_roots");
    assert!(refused.to_string().contains("cannot connect"), "{refused}");
}

/// A fleet node's load of many sites (`current_batches`, what the daemon's start runs): the pairs
/// come from the database in batches and nothing is written to the node's local copy on the way
/// (serving first); `keep_local_copies` then writes each pair the copy lacks, once; with the
/// database down, the same batched read serves from that copy, each site its own pair.
#[tokio::test(flavor = "multi_thread")]
async fn a_batched_load_serves_first_and_the_local_copy_follows_and_answers_in_an_outage() {
    let mut pg = Postgres::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = store_config(&pg, "certd", dir.path(), "node-a");
    let state = dir.path().join("state");
    let sites: Vec<String> = (0..7).map(|n| format!("s{n}.fleet.test")).collect();
    let node = {
        let (config, state, sites) = (config.clone(), state.clone(), sites.clone());
        tokio::task::spawn_blocking(move || {
            let writer = PostgresStore::open(&config).expect("open");
            for site in &sites {
                writer.install(site, &tagged(site)).expect("install");
            }
            let node = PostgresStore::open_for_daemon(&config)
                .expect("open")
                .with_local_copy(certd::store::Store::open(&state).expect("state dir"));
            let local = certd::store::Store::open(&state).expect("state dir");
            let mut names: Vec<&str> = sites.iter().map(String::as_str).collect();
            names.insert(3, "missing.fleet.test");
            let read = read_in_batches(&node, &names);
            assert_eq!(read.len(), 8);
            for (name, pair) in names.iter().zip(&read) {
                match pair {
                    Some(key) if *name != "missing.fleet.test" => {
                        assert!(key.contains(&format!("secret-of-{name}")), "{name}: {key}");
                    }
                    None => assert_eq!(*name, "missing.fleet.test"),
                    Some(key) => panic!("{name} has a pair: {key}"),
                }
            }
            for site in &sites {
                assert!(
                    local.current(site).expect("read the copy").is_none(),
                    "{site} was written during the load"
                );
            }
            let stop = tokio_util::sync::CancellationToken::new();
            assert_eq!(node.keep_local_copies(&names, &stop).expect("copy"), 7);
            for site in &sites {
                let copy = local.current(site).expect("read").expect("copied");
                assert!(copy.pem.key_pem.contains(&format!("secret-of-{site}")));
            }
            // Up to date: nothing written again.
            assert_eq!(node.keep_local_copies(&names, &stop).expect("copy"), 0);
            // A cancelled pass writes nothing.
            writer
                .install(&sites[0], &tagged("renewed"))
                .expect("install");
            stop.cancel();
            assert_eq!(node.keep_local_copies(&names, &stop).expect("copy"), 0);
            (
                node,
                names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
            )
        })
        .await
        .expect("the batched load and the local copy")
    };
    pg.stop();
    let read = tokio::task::spawn_blocking(move || {
        let (node, names) = node;
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        read_in_batches(&node, &names)
    })
    .await
    .expect("join");
    for (index, pair) in read.iter().enumerate() {
        if index == 3 {
            assert!(pair.is_none(), "the missing site read as {pair:?}");
            continue;
        }
        let site = &sites[if index > 3 { index - 1 } else { index }];
        // The copy written before the outage: s0's renewal was never copied (that pass was
        // cancelled), so the copy still holds its first pair.
        let key = pair.as_deref().expect("served from the local copy");
        assert!(key.contains(&format!("secret-of-{site}")), "{site}: {key}");
    }
}

/// `names` read through `current_batches` three at a time (checking the batches' starts): each
/// site's key, `None` for a site without a pair or one that failed.
fn read_in_batches(store: &dyn StateStore, names: &[&str]) -> Vec<Option<String>> {
    let mut read = Vec::new();
    store.current_batches(names, 3, &mut |start, pairs| {
        assert_eq!(start, read.len(), "batches in order");
        assert!(pairs.len() <= 3);
        read.extend(pairs.into_iter().map(|pair| {
            pair.ok()
                .flatten()
                .map(|stored| stored.pem.key_pem.to_string())
        }));
    });
    read
}
