//! Store tests: layout, modes, atomic installs, crash leftovers, the lock, accounts and records.
#![allow(clippy::unwrap_used)]

use super::*;
use std::os::unix::fs::symlink;
use zeroize::Zeroizing;

const SITE: &str = "example.test";

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state")).unwrap();
    (dir, store)
}

/// Distinguishable fake material: the store does not parse PEM.
fn pem(tag: &str) -> CertifiedPem {
    CertifiedPem {
        cert_pem: format!("-----BEGIN CERTIFICATE-----\nleaf {tag}\n-----END CERTIFICATE-----\n"),
        chain_pem: format!(
            "-----BEGIN CERTIFICATE-----\nintermediate {tag}\n-----END CERTIFICATE-----\n"
        ),
        key_pem: Zeroizing::new(format!(
            "-----BEGIN PRIVATE KEY-----\nkey {tag}\n-----END PRIVATE KEY-----\n"
        )),
    }
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
}

fn assert_same(stored: &StoredCert, expected: &CertifiedPem) {
    assert_eq!(stored.pem.cert_pem, expected.cert_pem);
    assert_eq!(stored.pem.chain_pem, expected.chain_pem);
    assert_eq!(*stored.pem.key_pem, *expected.key_pem);
}

fn live_target(store: &Store) -> PathBuf {
    fs::read_link(store.layout().live_link(SITE).unwrap()).unwrap()
}

#[test]
fn install_then_current_returns_the_same_pair() {
    let (_dir, store) = open();
    assert!(store.current(SITE).unwrap().is_none());
    let pem = pem("one");
    let installed = store.install(SITE, &pem).unwrap();
    assert_eq!(
        installed.version,
        store.layout().version_dir(SITE, 1).unwrap()
    );
    let current = store.current(SITE).unwrap().unwrap();
    assert_eq!(current.version, installed.version);
    assert_same(&current, &pem);
    assert_eq!(live_target(&store), Path::new("versions/000001"));
}

#[test]
fn contract_paths_are_links_through_live_with_the_installed_content() {
    let (_dir, store) = open();
    let pem = pem("one");
    store.install(SITE, &pem).unwrap();
    let layout = store.layout();
    let read = |path: PathBuf| {
        assert!(fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            fs::read_link(&path).unwrap(),
            Path::new("live").join(path.file_name().unwrap())
        );
        fs::read_to_string(path).unwrap()
    };
    assert_eq!(read(layout.cert_pem(SITE).unwrap()), pem.cert_pem);
    assert_eq!(read(layout.chain_pem(SITE).unwrap()), pem.chain_pem);
    assert_eq!(read(layout.privkey_pem(SITE).unwrap()), *pem.key_pem);
    let fullchain = read(layout.fullchain_pem(SITE).unwrap());
    assert_eq!(fullchain, format!("{}{}", pem.cert_pem, pem.chain_pem));
    assert_eq!(fullchain, pem.fullchain_pem());
}

#[test]
fn files_are_0600_and_folders_0700() {
    let (_dir, store) = open();
    store.install(SITE, &pem("one")).unwrap();
    store.save_record(SITE, &SiteRecord::default()).unwrap();
    let layout = store.layout();
    let version = layout.version_dir(SITE, 1).unwrap();
    for dir in [
        layout.root().to_owned(),
        layout.accounts_dir(),
        layout.certs_dir(),
        layout.site_dir(SITE).unwrap(),
        layout.versions_dir(SITE).unwrap(),
        version.clone(),
    ] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    for file in PEM_FILES {
        assert_eq!(mode(&version.join(file)), 0o600, "{file}");
    }
    assert_eq!(mode(&layout.record_file(SITE).unwrap()), 0o600);
}

#[test]
fn open_tightens_existing_loose_folders() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("state");
    fs::create_dir_all(root.join("certs")).unwrap();
    for path in [&root, &root.join("certs")] {
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let store = Store::open(&root).unwrap();
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&store.layout().certs_dir()), 0o700);
    assert_eq!(mode(&store.layout().accounts_dir()), 0o700);
}

#[test]
fn second_install_keeps_the_previous_version_and_third_prunes_the_oldest() {
    let (_dir, store) = open();
    let layout = store.layout();
    store.install(SITE, &pem("one")).unwrap();
    let second = store.install(SITE, &pem("two")).unwrap();
    assert_eq!(
        store.versions(SITE).unwrap(),
        [
            layout.version_dir(SITE, 1).unwrap(),
            layout.version_dir(SITE, 2).unwrap()
        ]
    );
    assert_eq!(live_target(&store), Path::new("versions/000002"));
    assert_eq!(
        store.current(SITE).unwrap().unwrap().version,
        second.version
    );
    // The previous version is intact, for a manual rollback.
    assert_eq!(
        fs::read_to_string(layout.version_dir(SITE, 1).unwrap().join("cert.pem")).unwrap(),
        pem("one").cert_pem
    );

    store.install(SITE, &pem("three")).unwrap();
    assert_eq!(
        store.versions(SITE).unwrap(),
        [
            layout.version_dir(SITE, 2).unwrap(),
            layout.version_dir(SITE, 3).unwrap()
        ]
    );
    assert_same(&store.current(SITE).unwrap().unwrap(), &pem("three"));
    assert_eq!(
        fs::read_to_string(layout.cert_pem(SITE).unwrap()).unwrap(),
        pem("three").cert_pem
    );
}

#[test]
fn crash_leftovers_are_not_served_and_are_cleaned_by_the_next_install() {
    let (_dir, store) = open();
    let layout = store.layout();
    store.install(SITE, &pem("one")).unwrap();
    let site_dir = layout.site_dir(SITE).unwrap();
    let versions_dir = layout.versions_dir(SITE).unwrap();

    // A crash while writing version 2: a partial temporary folder and a temporary live link that
    // was never renamed (dangling, since the folder was never renamed either).
    let partial = versions_dir.join(".tmp-2-00000000deadbeef");
    fs::create_dir(&partial).unwrap();
    fs::write(partial.join("cert.pem"), "partial").unwrap();
    let dangling = site_dir.join("live.tmp-00000000deadbeef");
    symlink("versions/000002", &dangling).unwrap();
    let stale_record = site_dir.join(".record.json.tmp-1-00000000deadbeef");
    fs::write(&stale_record, "{").unwrap();

    assert_same(&store.current(SITE).unwrap().unwrap(), &pem("one"));
    assert_eq!(
        store.versions(SITE).unwrap(),
        [layout.version_dir(SITE, 1).unwrap()]
    );

    store.install(SITE, &pem("two")).unwrap();
    assert!(!partial.exists());
    assert!(fs::symlink_metadata(&dangling).is_err());
    assert!(!stale_record.exists());
    assert_eq!(live_target(&store), Path::new("versions/000002"));
    assert_same(&store.current(SITE).unwrap().unwrap(), &pem("two"));
    let leftovers: Vec<_> = fs::read_dir(&site_dir)
        .unwrap()
        .chain(fs::read_dir(&versions_dir).unwrap())
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(TMP_MARK))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_version_renamed_in_but_never_made_live_is_not_served() {
    let (_dir, store) = open();
    let layout = store.layout();
    store.install(SITE, &pem("one")).unwrap();
    // A crash between the rename into versions/ and the live swap.
    write_version(&layout.version_dir(SITE, 2).unwrap(), &pem("orphan")).unwrap();

    assert_same(&store.current(SITE).unwrap().unwrap(), &pem("one"));
    assert_eq!(
        fs::read_to_string(layout.cert_pem(SITE).unwrap()).unwrap(),
        pem("one").cert_pem
    );

    let installed = store.install(SITE, &pem("two")).unwrap();
    assert_eq!(installed.version, layout.version_dir(SITE, 3).unwrap());
    assert_same(&store.current(SITE).unwrap().unwrap(), &pem("two"));
    // The version served until now is the one kept; the orphan is pruned.
    assert_eq!(
        store.versions(SITE).unwrap(),
        [
            layout.version_dir(SITE, 1).unwrap(),
            layout.version_dir(SITE, 3).unwrap()
        ]
    );
}

#[test]
fn a_version_missing_a_file_is_corrupt() {
    let (_dir, store) = open();
    let installed = store.install(SITE, &pem("one")).unwrap();
    let key = installed.version.join("privkey.pem");
    fs::remove_file(&key).unwrap();
    match store.current(SITE) {
        Err(StoreError::Corrupt { path, .. }) => assert_eq!(path, key),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn a_live_link_outside_versions_is_corrupt() {
    let (_dir, store) = open();
    store.install(SITE, &pem("one")).unwrap();
    let live = store.layout().live_link(SITE).unwrap();
    replace_symlink(Path::new("/etc"), &live).unwrap();
    match store.current(SITE) {
        Err(StoreError::Corrupt { path, .. }) => assert_eq!(path, live),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn the_state_directory_can_be_moved() {
    let (dir, store) = open();
    store.install(SITE, &pem("one")).unwrap();
    let moved = dir.path().join("moved");
    fs::rename(store.layout().root(), &moved).unwrap();
    let store = Store::open(&moved).unwrap();
    assert_same(&store.current(SITE).unwrap().unwrap(), &pem("one"));
    assert_eq!(
        fs::read_to_string(store.layout().fullchain_pem(SITE).unwrap()).unwrap(),
        pem("one").fullchain_pem()
    );
}

#[test]
fn lock_is_exclusive_names_the_holder_and_is_released_on_drop() {
    let (_dir, store) = open();
    let held = store.lock().unwrap();
    assert_eq!(held.path(), store.layout().lock_file());
    assert_eq!(mode(held.path()), 0o600);
    assert_eq!(
        fs::read_to_string(held.path()).unwrap().trim(),
        std::process::id().to_string()
    );
    // flock belongs to the open file, so a second open in this same process conflicts.
    match store.lock() {
        Err(StoreError::Locked { path, pid }) => {
            assert_eq!(path, store.layout().lock_file());
            assert_eq!(pid, Some(std::process::id()));
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    // A clone of the store shares nothing with the held lock either.
    assert!(matches!(
        store.clone().lock(),
        Err(StoreError::Locked { .. })
    ));
    drop(held);
    let again = store.lock().unwrap();
    drop(again);
}

#[test]
fn accounts_are_kept_per_directory_url() {
    let (_dir, store) = open();
    let le = "https://acme-v02.api.letsencrypt.org/directory";
    let pebble = "https://127.0.0.1:14000/dir";
    assert_eq!(store.load_account(le).unwrap(), None);
    store.save_account(le, r#"{"id":"le"}"#).unwrap();
    store.save_account(pebble, r#"{"id":"pebble"}"#).unwrap();
    assert_eq!(store.load_account(le).unwrap().unwrap(), r#"{"id":"le"}"#);
    assert_eq!(
        store.load_account(pebble).unwrap().unwrap(),
        r#"{"id":"pebble"}"#
    );
    let layout = store.layout();
    let le_file = layout.account_file(le);
    let pebble_file = layout.account_file(pebble);
    assert_eq!(
        le_file,
        layout
            .accounts_dir()
            .join("acme-v02.api.letsencrypt.org_directory/account.json")
    );
    assert_eq!(
        pebble_file,
        layout
            .accounts_dir()
            .join("127.0.0.1_14000_dir/account.json")
    );
    for file in [&le_file, &pebble_file] {
        assert_eq!(mode(file), 0o600);
        assert_eq!(mode(file.parent().unwrap()), 0o700);
    }
    // Saving again replaces the content.
    store.save_account(le, r#"{"id":"le2"}"#).unwrap();
    assert_eq!(store.load_account(le).unwrap().unwrap(), r#"{"id":"le2"}"#);
}

#[test]
fn ca_keys_are_readable_and_distinct() {
    let table = [
        (
            "https://acme-v02.api.letsencrypt.org/directory",
            "acme-v02.api.letsencrypt.org_directory",
        ),
        ("https://127.0.0.1:14000/dir", "127.0.0.1_14000_dir"),
        ("https://ACME.example:443/dir", "acme.example_dir"),
        ("https://acme.example", "acme.example"),
        ("https://acme.example/a/b", "acme.example_a_b"),
        ("https://acme.example:1/b", "acme.example_1_b"),
    ];
    for (url, key) in table {
        assert_eq!(ca_key(url), key, "{url}");
    }
    // URLs the readable form alone would confuse get a hash suffix and differ.
    let urls = [
        "https://acme.example/a/b",
        "https://acme.example/a_b",
        "http://acme.example/a/b",
        "https://acme.example/a/b/",
        "https://acme.example/a//b",
        "https://acme.example/a/b?x=1",
        "https://acme.example:1/b",
        "https://acme.example/1/b",
        "https://[::1]:14000/dir",
        "https://[::1]/dir",
        "",
        "https://.hidden/dir",
    ];
    let keys: std::collections::HashSet<String> = urls.iter().map(|url| ca_key(url)).collect();
    assert_eq!(keys.len(), urls.len(), "{keys:?}");
    for key in &keys {
        assert!(
            !key.is_empty() && !key.starts_with('.') && !key.contains('/'),
            "{key}"
        );
        assert!(key.len() <= 255, "{key}");
    }
    let long = format!("https://acme.example/{}", "a".repeat(400));
    assert!(ca_key(&long).len() <= 255);
    assert_ne!(ca_key(&long), ca_key(&format!("{long}b")));
}

#[test]
fn records_round_trip_and_bad_json_is_corrupt() {
    let (_dir, store) = open();
    assert_eq!(store.load_record(SITE).unwrap(), SiteRecord::default());
    let record = SiteRecord {
        last_attempt: Some(time::OffsetDateTime::from_unix_timestamp(1_735_787_045).unwrap()),
        last_success: None,
        last_error: Some("urn:ietf:params:acme:error:rateLimited".into()),
        consecutive_failures: 3,
        next_attempt: Some(time::OffsetDateTime::from_unix_timestamp(1_735_790_645).unwrap()),
        ari_serial: Some("0a1b".into()),
        ari_renew_at: Some(time::OffsetDateTime::from_unix_timestamp(1_735_800_000).unwrap()),
        ..SiteRecord::default()
    };
    store.save_record(SITE, &record).unwrap();
    assert_eq!(store.load_record(SITE).unwrap(), record);
    let path = store.layout().record_file(SITE).unwrap();
    assert_eq!(mode(&path), 0o600);

    fs::write(&path, "{ not json").unwrap();
    match store.load_record(SITE) {
        Err(StoreError::Corrupt { path: at, .. }) => assert_eq!(at, path),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn write_atomic_replaces_content_and_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("file.json");
    write_atomic(&path, b"one", FILE_MODE).unwrap();
    write_atomic(&path, b"two", FILE_MODE).unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), "two");
    assert_eq!(mode(&path), 0o600);
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    match write_atomic(&dir.path().join("missing/file"), b"x", FILE_MODE) {
        Err(StoreError::Io { path, .. }) => {
            assert!(path.starts_with(dir.path().join("missing")))
        }
        other => panic!("expected Io, got {other:?}"),
    }
}

#[test]
fn unsafe_site_names_are_refused() {
    let (_dir, store) = open();
    for site in ["", "../etc", "a/b", ".hidden", ".."] {
        assert!(
            matches!(
                store.layout().site_dir(site),
                Err(StoreError::InvalidSite { .. })
            ),
            "{site:?}"
        );
        assert!(store.install(site, &pem("x")).is_err(), "{site:?}");
        assert!(store.current(site).is_err(), "{site:?}");
    }
}

#[test]
fn sites_on_disk_lists_site_folders() {
    let (_dir, store) = open();
    assert!(store.sites_on_disk().unwrap().is_empty());
    store.install("b.test", &pem("b")).unwrap();
    store.save_record("a.test", &SiteRecord::default()).unwrap();
    fs::write(store.layout().certs_dir().join("stray-file"), "").unwrap();
    assert_eq!(store.sites_on_disk().unwrap(), ["a.test", "b.test"]);
}
