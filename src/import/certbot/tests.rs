//! The import as a whole, on certbot-shaped folders built with rcgen: matching lineages to sites,
//! skipping with reasons, idempotence, and carrying the account over.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use super::test_support::{fresh_p256_jwk, p256_sec1_pem, write_lineage, TestCa};
use super::*;
use crate::store::Store;

const CA: &str = "https://ca.example/dir";
const ACCOUNT_ID: &str = "0123abcd";

/// A config for `CA` with one site per entry of `sites`, a store in a temporary folder, and an empty
/// certbot folder beside it.
struct Setup {
    _dir: tempfile::TempDir,
    config: Config,
    store: Store,
    from: PathBuf,
}

impl Setup {
    fn new(sites: &[&[&str]]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut toml =
            format!("state_dir = \"state\"\n[acme]\ndirectory = \"{CA}\"\nagree_tos = true\n");
        for names in sites {
            let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
            toml += &format!("[[site]]\nnames = [{}]\n", quoted.join(", "));
        }
        let config = config::from_toml(&toml, &dir.path().join("certd.toml")).unwrap();
        let store = Store::open(&config.state_dir).unwrap();
        let from = dir.path().join("letsencrypt");
        fs::create_dir_all(from.join("live")).unwrap();
        Self {
            _dir: dir,
            config,
            store,
            from,
        }
    }

    fn import(&self) -> Report {
        let names = lineage::lineage_names(&self.from).unwrap();
        let _lock = self.store.lock().unwrap();
        import(
            &self.config,
            &self.store,
            &self.from,
            &names,
            OffsetDateTime::now_utc(),
        )
    }

    fn current_leaf(&self, site: &str) -> Option<String> {
        self.store
            .current(site)
            .unwrap()
            .map(|stored| stored.pem.cert_pem)
    }

    /// Writes certbot's account `id` for `server` with the private JWK `jwk`.
    fn write_account(&self, server: &str, id: &str, jwk: &str, account_url: &str) -> PathBuf {
        let dir = account::accounts_dir(&self.from, server).unwrap().join(id);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("private_key.json"), jwk).unwrap();
        fs::write(
            dir.join("regr.json"),
            serde_json::json!({"body": {}, "uri": account_url}).to_string(),
        )
        .unwrap();
        fs::write(dir.join("meta.json"), r#"{"creation_host": "old-server"}"#).unwrap();
        dir
    }
}

fn outcome<'r>(report: &'r Report, lineage: &str) -> &'r Outcome {
    report
        .lineages
        .get(lineage)
        .unwrap_or_else(|| panic!("no outcome for {lineage}: {report:?}"))
}

fn skipped_reason(report: &Report, lineage: &str) -> String {
    match outcome(report, lineage) {
        Outcome::Skipped(reason) => reason.clone(),
        other => panic!("{lineage} was not skipped: {other:?}"),
    }
}

#[test]
fn a_lineage_becomes_its_sites_certificate_once() {
    let setup = Setup::new(&[&["a.test", "www.a.test"]]);
    let ca = TestCa::new();
    // SANs in another order than the config's.
    let pem = ca.leaf(&["www.a.test", "a.test"], -1, 89);
    write_lineage(&setup.from, "a.test", 1, &pem, CA);

    let report = setup.import();
    let info = certificate::parse_pem(&pem.cert_pem).unwrap();
    assert_eq!(
        outcome(&report, "a.test"),
        &Outcome::Imported {
            site: "a.test".into(),
            serial: info.serial.clone(),
            expires: info.not_after,
        }
    );
    assert_eq!(report.exit_code(), 0);
    assert_eq!(
        report.lines()[0],
        (
            false,
            format!(
                "a.test: imported as a.test (serial {}, expires {})",
                info.serial,
                rfc3339(info.not_after)
            )
        )
    );
    let stored = setup.store.current("a.test").unwrap().unwrap();
    assert!(same_leaf(&stored.pem.cert_pem, &pem.cert_pem));
    assert_eq!(stored.pem.chain_pem.trim(), ca.pem.trim());
    assert_eq!(*stored.pem.key_pem, *pem.key_pem);
    let record = setup.store.load_record("a.test").unwrap();
    assert!(record.last_success.is_some() && record.last_error.is_none());

    let again = setup.import();
    assert_eq!(
        outcome(&again, "a.test"),
        &Outcome::AlreadyImported {
            site: "a.test".into()
        }
    );
    assert_eq!(again.lines()[0], (false, "a.test: already imported".into()));
    assert_eq!(again.exit_code(), 0);
    assert_eq!(setup.store.versions("a.test").unwrap().len(), 1);
}

#[test]
fn rsa_and_sec1_keys_are_imported_as_they_are() {
    let setup = Setup::new(&[&["rsa.test"], &["sec1.test"]]);
    let ca = TestCa::new();
    let rsa_key =
        rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            .unwrap();
    let rsa = ca.leaf_for(&["rsa.test"], -1, 89, &rsa_key);
    write_lineage(&setup.from, "rsa.test", 1, &rsa, CA);
    let ec_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut sec1 = ca.leaf_for(&["sec1.test"], -1, 89, &ec_key);
    sec1.key_pem = zeroize::Zeroizing::new(p256_sec1_pem(&ec_key));
    write_lineage(&setup.from, "sec1.test", 1, &sec1, CA);

    let report = setup.import();
    assert_eq!(report.exit_code(), 0, "{report:?}");
    for (site, pem) in [("rsa.test", &rsa), ("sec1.test", &sec1)] {
        let stored = setup.store.current(site).unwrap().unwrap();
        assert_eq!(
            *stored.pem.key_pem, *pem.key_pem,
            "{site}: the key file as it was"
        );
        // What the TLS side loads keys with.
        rustls_pki_types::PrivateKeyDer::from_pem_slice(stored.pem.key_pem.as_bytes()).unwrap();
    }
    assert!(sec1.key_pem.starts_with("-----BEGIN EC PRIVATE KEY-----"));
}

#[test]
fn bad_lineages_are_skipped_with_reasons_and_the_rest_still_import() {
    let setup = Setup::new(&[&["good.test"], &["expired.test"], &["mismatched.test"]]);
    let ca = TestCa::new();
    write_lineage(
        &setup.from,
        "good.test",
        1,
        &ca.leaf(&["good.test"], -1, 89),
        CA,
    );
    write_lineage(
        &setup.from,
        "expired.test",
        4,
        &ca.leaf(&["expired.test"], -100, -10),
        CA,
    );
    let mut mismatched = ca.leaf(&["mismatched.test"], -1, 89);
    mismatched.key_pem = ca.leaf(&["good.test"], -1, 89).key_pem;
    write_lineage(&setup.from, "mismatched.test", 1, &mismatched, CA);

    let report = setup.import();
    assert!(matches!(
        outcome(&report, "good.test"),
        Outcome::Imported { .. }
    ));
    assert!(skipped_reason(&report, "expired.test").contains("expired on"));
    assert!(skipped_reason(&report, "mismatched.test").contains("does not match"));
    assert_eq!(report.exit_code(), 1);
    let stderr: Vec<String> = report
        .lines()
        .into_iter()
        .filter(|(stderr, _)| *stderr)
        .map(|(_, line)| line)
        .collect();
    assert_eq!(stderr.len(), 2, "{stderr:?}");
    // The renewal configurations name an account that is not there: said on stdout, no failure.
    assert!(report.accounts[0].message.contains("does not exist"));
    assert!(!report.accounts[0].problem);
    assert!(stderr[0].starts_with("expired.test: skipped: the certificate expired on "));
    assert!(stderr[1].starts_with("mismatched.test: skipped: the private key "));
    assert!(setup.current_leaf("expired.test").is_none());
    assert!(setup.current_leaf("mismatched.test").is_none());
}

#[test]
fn a_lineage_without_a_site_gets_a_table_to_paste() {
    let setup = Setup::new(&[&["a.test"]]);
    let ca = TestCa::new();
    write_lineage(
        &setup.from,
        "www.a.test",
        1,
        &ca.leaf(&["a.test", "www.a.test"], -1, 89),
        CA,
    );
    write_lineage(
        &setup.from,
        "wild",
        1,
        &ca.leaf(&["*.w.test", "w.test"], -1, 89),
        CA,
    );

    let report = setup.import();
    let reason = skipped_reason(&report, "www.a.test");
    assert!(reason.starts_with("not in the config"), "{reason}");
    assert!(reason.contains("site a.test has a.test"), "{reason}");
    // The lineage's own name first, so the new site keeps it.
    let plain = "[[site]]\nnames = [\"www.a.test\", \"a.test\"]";
    assert!(
        report.suggestions.iter().any(|table| table == plain),
        "{:?}",
        report.suggestions
    );
    let pasted = format!("[acme]\ndirectory = \"{CA}\"\nagree_tos = true\n{plain}\n");
    config::from_toml(&pasted, Path::new("certd.toml")).unwrap();
    // A wildcard lineage is imported like any other once a DNS-01 site has its names.
    assert!(skipped_reason(&report, "wild").starts_with("not in the config"));
    assert!(
        report.suggestions.iter().any(|table| table.contains("\"*.w.test\"")
            && table.contains("challenge = \"dns-01\"")),
        "{:?}",
        report.suggestions
    );
    assert_eq!(report.exit_code(), 1);
    assert!(
        setup.current_leaf("a.test").is_none(),
        "a subset is no match"
    );
}

#[test]
fn of_two_lineages_with_the_same_names_the_longer_lasting_one_wins() {
    let setup = Setup::new(&[&["a.test"]]);
    let ca = TestCa::new();
    let short = ca.leaf(&["a.test"], -30, 60);
    let long = ca.leaf(&["a.test"], -1, 89);
    write_lineage(&setup.from, "a.test", 1, &short, CA);
    write_lineage(&setup.from, "a.test-0001", 1, &long, CA);

    let report = setup.import();
    assert!(matches!(
        outcome(&report, "a.test-0001"),
        Outcome::Imported { .. }
    ));
    assert!(skipped_reason(&report, "a.test").contains("takes lineage a.test-0001 instead"));
    assert!(same_leaf(
        &setup.current_leaf("a.test").unwrap(),
        &long.cert_pem
    ));
}

#[test]
fn a_certificate_certd_already_has_is_kept_when_it_lasts_longer() {
    let setup = Setup::new(&[&["a.test"]]);
    let ca = TestCa::new();
    let certd_own = ca.leaf(&["a.test"], -1, 89);
    {
        let _lock = setup.store.lock().unwrap();
        setup.store.install("a.test", &certd_own).unwrap();
    }
    write_lineage(&setup.from, "a.test", 1, &ca.leaf(&["a.test"], -40, 50), CA);

    let report = setup.import();
    assert!(
        matches!(outcome(&report, "a.test"), Outcome::NewerPresent { .. }),
        "{report:?}"
    );
    assert_eq!(report.exit_code(), 0);
    assert_eq!(setup.store.versions("a.test").unwrap().len(), 1);

    // A certbot certificate that lasts longer than the stored one replaces it, as a new version.
    let newer = ca.leaf(&["a.test"], -1, 120);
    write_lineage(&setup.from, "a.test", 2, &newer, CA);
    let report = setup.import();
    assert!(matches!(
        outcome(&report, "a.test"),
        Outcome::Imported { .. }
    ));
    assert_eq!(setup.store.versions("a.test").unwrap().len(), 2);
    assert!(same_leaf(
        &setup.current_leaf("a.test").unwrap(),
        &newer.cert_pem
    ));
}

#[test]
fn a_staging_certificate_is_not_put_in_front_of_a_production_config() {
    let setup = Setup::new(&[&["a.test"]]);
    let ca = TestCa::new();
    write_lineage(
        &setup.from,
        "a.test",
        1,
        &ca.leaf(&["a.test"], -1, 89),
        crate::config::LETSENCRYPT_STAGING,
    );
    let reason = skipped_reason(&setup.import(), "a.test");
    assert!(reason.contains("staging"), "{reason}");
    assert!(setup.current_leaf("a.test").is_none());
}

#[test]
fn a_p256_account_at_the_configured_ca_is_imported_once() {
    let setup = Setup::new(&[&["a.test"]]);
    let ca = TestCa::new();
    write_lineage(&setup.from, "a.test", 1, &ca.leaf(&["a.test"], -1, 89), CA);
    let (jwk, key) = fresh_p256_jwk();
    setup.write_account(CA, ACCOUNT_ID, &jwk, "https://ca.example/acct/42");

    let report = setup.import();
    assert_eq!(report.accounts.len(), 1, "{report:?}");
    assert_eq!(
        report.accounts[0].message,
        format!("imported as certd's account at {CA} (https://ca.example/acct/42)")
    );
    let stored = setup.store.load_account(CA).unwrap().unwrap();
    let credentials: instant_acme::AccountCredentials = serde_json::from_str(&stored).unwrap();
    let imported = rcgen::KeyPair::try_from(credentials.private_key().secret_pkcs8_der()).unwrap();
    assert_eq!(imported.public_key_raw(), key.public_key_raw());
    assert_eq!(
        account::stored_account_url(&stored).as_deref(),
        Some("https://ca.example/acct/42")
    );

    let again = setup.import();
    assert_eq!(again.accounts[0].message, "already imported");
    assert_eq!(setup.store.load_account(CA).unwrap().unwrap(), stored);
    assert_eq!(
        again.lines().last().unwrap(),
        &(false, format!("account {ACCOUNT_ID}: already imported"))
    );
}

#[test]
fn an_rsa_account_is_reported_and_certd_keeps_none() {
    let setup = Setup::new(&[&["a.test"]]);
    let ca = TestCa::new();
    write_lineage(&setup.from, "a.test", 1, &ca.leaf(&["a.test"], -1, 89), CA);
    // Only the modulus length matters here.
    let n = "x".repeat(342);
    let jwk = format!(r#"{{"kty":"RSA","n":"{n}","e":"AQAB","d":"AQAB","p":"AQAB","q":"AQAB"}}"#);
    setup.write_account(CA, ACCOUNT_ID, &jwk, "https://ca.example/acct/42");

    let report = setup.import();
    let account = &report.accounts[0];
    assert!(!account.problem);
    assert!(account
        .message
        .starts_with("not imported: its key is RSA 2048-bit"));
    assert!(account.message.contains("register its own account"));
    assert!(setup.store.load_account(CA).unwrap().is_none());
    assert_eq!(report.exit_code(), 0, "an account never fails the import");
}

#[test]
fn accounts_for_another_ca_or_when_certd_has_one_are_left_alone() {
    let setup = Setup::new(&[&["a.test"], &["b.test"]]);
    let ca = TestCa::new();
    let other_ca = "https://other-ca.example/directory";
    write_lineage(&setup.from, "a.test", 1, &ca.leaf(&["a.test"], -1, 89), CA);
    write_lineage(
        &setup.from,
        "b.test",
        1,
        &ca.leaf(&["b.test"], -1, 89),
        other_ca,
    );
    let (jwk, _) = fresh_p256_jwk();
    setup.write_account(CA, ACCOUNT_ID, &jwk, "https://ca.example/acct/42");
    setup.write_account(other_ca, ACCOUNT_ID, &jwk, "https://other-ca.example/a/1");
    {
        let _lock = setup.store.lock().unwrap();
        setup
            .store
            .save_account(CA, r#"{"id":"https://ca.example/acct/1","key_pkcs8":"AA"}"#)
            .unwrap();
    }

    let report = setup.import();
    let messages: Vec<&str> = report.accounts.iter().map(|a| a.message.as_str()).collect();
    assert_eq!(
        messages,
        vec![
            format!("not imported: certd already has an account at {CA}").as_str(),
            format!("not imported: it is registered at {other_ca}, and the config uses {CA}")
                .as_str(),
        ]
    );
    // Both certificates import whatever their CA.
    assert_eq!(report.exit_code(), 0, "{report:?}");
}

#[test]
fn without_an_account_line_the_only_account_at_the_ca_is_used_and_broken_ones_are_reported() {
    let setup = Setup::new(&[&["a.test"]]);
    let ca = TestCa::new();
    write_lineage(&setup.from, "a.test", 1, &ca.leaf(&["a.test"], -1, 89), CA);
    let conf = setup.from.join("renewal/a.test.conf");
    let text = fs::read_to_string(&conf).unwrap();
    fs::write(&conf, text.replace("account = 0123abcd\n", "")).unwrap();
    let dir = setup.write_account(CA, "onlyone", "{\"kty\": 5}", "https://ca.example/acct/9");

    let report = setup.import();
    let account = &report.accounts[0];
    assert_eq!(account.id, "onlyone");
    assert!(account.problem, "{account:?}");
    assert!(
        account
            .message
            .contains(&dir.join("private_key.json").display().to_string()),
        "{account:?}"
    );
    assert_eq!(
        report.exit_code(),
        0,
        "the certificate imported; the account is optional"
    );
}

#[test]
fn report_lines_go_to_stdout_or_stderr() {
    let mut report = Report::default();
    report
        .lineages
        .insert("b".into(), Outcome::Skipped("not in the config".into()));
    report
        .lineages
        .insert("a".into(), Outcome::AlreadyImported { site: "a".into() });
    report.accounts.push(AccountOutcome {
        id: "abc".into(),
        message: "already imported".into(),
        problem: false,
    });
    assert_eq!(
        report.lines(),
        vec![
            (false, "a: already imported".to_owned()),
            (true, "b: skipped: not in the config".to_owned()),
            (false, "account abc: already imported".to_owned()),
        ]
    );
    assert_eq!(report.exit_code(), 1);
}

#[test]
fn sites_match_by_name_set_only() {
    let sites = vec![
        SiteConfig::with_names(vec!["a.test".into(), "www.a.test".into()]),
        SiteConfig::with_names(vec!["b.test".into()]),
    ];
    let names = |list: &[&str]| list.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
    let cases: [(&[&str], Option<&str>); 5] = [
        (&["www.a.test", "a.test"], Some("a.test")),
        (&["A.test", "www.a.test", "a.test"], Some("a.test")),
        (&["b.test"], Some("b.test")),
        (&["a.test"], None),
        (&["a.test", "www.a.test", "b.test"], None),
    ];
    for (cert_names, expected) in cases {
        let found = match match_site(&sites, &names(cert_names)) {
            SiteMatch::Site(site) => Some(site.name()),
            _ => None,
        };
        assert_eq!(found, expected, "{cert_names:?}");
    }
    assert!(is_staging(crate::config::LETSENCRYPT_STAGING));
    assert!(!is_staging(crate::config::LETSENCRYPT_PRODUCTION));
}

#[test]
fn dns01_lineages_are_imported_and_the_report_says_how_they_renew() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let hook = dir.path().join("dns-hook.sh");
    fs::write(&hook, "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o700)).unwrap();
    let toml = format!(
        "state_dir = \"state\"\n[acme]\ndirectory = \"{CA}\"\nagree_tos = true\n\
         dns_hook = \"{}\"\n\
         [[site]]\nnames = [\"w.test\", \"*.w.test\"]\nchallenge = \"dns-01\"\n\
         [[site]]\nnames = [\"h.test\"]\n",
        hook.display()
    );
    let config = config::from_toml(&toml, &dir.path().join("certd.toml")).unwrap();
    let store = Store::open(&config.state_dir).unwrap();
    let from = dir.path().join("letsencrypt");
    fs::create_dir_all(from.join("live")).unwrap();
    let setup = Setup {
        _dir: dir,
        config,
        store,
        from,
    };
    let ca = TestCa::new();
    write_lineage(
        &setup.from,
        "w.test",
        1,
        &ca.leaf(&["w.test", "*.w.test"], -1, 89),
        CA,
    );
    write_lineage(&setup.from, "h.test", 1, &ca.leaf(&["h.test"], -1, 89), CA);
    // certbot renewed both with `--manual --preferred-challenges dns --manual-auth-hook ...`.
    for name in ["w.test", "h.test"] {
        let path = setup.from.join("renewal").join(format!("{name}.conf"));
        let text = fs::read_to_string(&path).unwrap().replace(
            "authenticator = standalone",
            "authenticator = manual\npref_challs = dns-01,\n\
             manual_auth_hook = /etc/letsencrypt/auth.sh\n\
             manual_cleanup_hook = /etc/letsencrypt/cleanup.sh",
        );
        fs::write(&path, text).unwrap();
    }

    let report = setup.import();
    for (lineage, site) in [("w.test", "w.test"), ("h.test", "h.test")] {
        assert!(
            matches!(report.lineages.get(lineage), Some(Outcome::Imported { site: s, .. }) if s == site),
            "{lineage}: {:?}",
            report.lineages.get(lineage)
        );
        assert!(
            setup.current_leaf(site).is_some(),
            "{site} has no certificate"
        );
    }
    let note = |lineage: &str| {
        report
            .notes
            .iter()
            .find(|(_, text)| text.starts_with(&format!("{lineage}: ")))
            .cloned()
            .unwrap_or_else(|| panic!("no note for {lineage}: {:?}", report.notes))
    };
    let (problem, text) = note("w.test");
    assert!(!problem, "{text}");
    assert!(
        text.contains("renews over DNS-01 with the DNS hook"),
        "{text}"
    );
    let (problem, text) = note("h.test");
    assert!(problem, "{text}");
    assert!(text.contains("set `challenge = \"dns-01\"`"), "{text}");
    assert!(
        text.contains("exec sh -c '/etc/letsencrypt/auth.sh'"),
        "{text}"
    );
    assert_eq!(report.exit_code(), 0, "imported, so nothing was skipped");
}
