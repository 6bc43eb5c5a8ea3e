//! `certd issue` end to end against a real Pebble: first issuance, skipping, forced renewal, a challenge
//! that cannot validate, an unreachable CA, the state lock, and choosing sites by name.
//!
//! Each test starts its own Pebble on its own ports, so they run in parallel.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::harness::{
    free_port, key_matches, mode, normalize_serial, not_after, parse_issue_stdout, parse_time,
    sans, serial_hex, status_site, verify_chain, walk, Certd, CertdConfig, IssueOutcome, Pebble,
    TestPki, CONNECTION_PROBLEM, REFUSED_DETAIL,
};

/// Two sites with two names each.
const SITES: &[&[&str]] = &[&["a.test", "www.a.test"], &["b.test", "www.b.test"]];

/// The files every site folder exposes (symlinks through `live`).
const PEM_FILES: [&str; 4] = ["cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"];

/// Issues for `sites` and asserts the run succeeded with one `issued` line per site.
async fn issue_all(certd: &Certd, sites: &[&[&str]], args: &[&str]) -> Vec<String> {
    let run = certd.issue(args).await;
    run.expect_code(0);
    let outcomes = parse_issue_stdout(&run.stdout);
    let mut serials = Vec::new();
    for names in sites {
        match outcomes.get(names[0]) {
            Some(IssueOutcome::Issued { serial, .. }) => serials.push(serial.clone()),
            other => panic!("{}: expected issued, got {other:?}\n{run}", names[0]),
        }
    }
    assert_eq!(
        outcomes.len(),
        sites.len(),
        "one line per site expected\n{run}"
    );
    serials
}

/// The contents of a site's four PEM files, and where `live` points.
fn snapshot(certd: &Certd, site: &str) -> (Vec<String>, PathBuf) {
    let files = PEM_FILES
        .iter()
        .map(|file| certd.read_site_file(site, file))
        .collect();
    let live = std::fs::canonicalize(certd.site_dir(site).join("live")).expect("resolve live");
    (files, live)
}

fn sorted(names: impl IntoIterator<Item = impl Into<String>>) -> Vec<String> {
    let mut names: Vec<String> = names.into_iter().map(Into::into).collect();
    names.sort();
    names
}

#[tokio::test]
async fn issues_two_sites_with_verified_chains_and_private_files() {
    let pebble = Pebble::start().await;
    let certd = Certd::with_config(&CertdConfig::for_pebble(&pebble, SITES));

    let run = certd.issue(&[]).await;
    run.expect_code(0);
    let outcomes = parse_issue_stdout(&run.stdout);
    assert_eq!(outcomes.len(), 2, "one line per site\n{run}");
    let root = pebble.root_pem().await;
    let intermediate = pebble.intermediate_pem().await;
    let status = certd.status().await;

    for names in SITES {
        let site = names[0];
        let Some(IssueOutcome::Issued { serial, expires }) = outcomes.get(site) else {
            panic!("{site} was not issued\n{run}");
        };
        let site_dir = certd.site_dir(site);
        for file in PEM_FILES {
            let path = site_dir.join(file);
            let meta = std::fs::symlink_metadata(&path)
                .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            assert!(
                meta.file_type().is_symlink(),
                "{} should link through live/",
                path.display()
            );
            let target = std::fs::canonicalize(&path).expect("resolve link");
            assert!(
                target.starts_with(
                    std::fs::canonicalize(site_dir.join("versions")).expect("versions")
                ),
                "{} resolves to {}, outside versions/",
                path.display(),
                target.display()
            );
        }
        assert!(
            site_dir.join("record.json").is_file(),
            "no record.json for {site}"
        );

        let cert = certd.read_site_file(site, "cert.pem");
        let chain = certd.read_site_file(site, "chain.pem");
        let fullchain = certd.read_site_file(site, "fullchain.pem");
        let key = certd.read_site_file(site, "privkey.pem");

        for name in *names {
            verify_chain(&fullchain, &root, name)
                .unwrap_or_else(|err| panic!("{site} fullchain.pem: {err}"));
            verify_chain(&format!("{cert}\n{chain}"), &root, name)
                .unwrap_or_else(|err| panic!("{site} cert.pem + chain.pem: {err}"));
        }
        assert!(verify_chain(&fullchain, &root, "other.test").is_err());
        assert_eq!(
            sorted(sans(&cert)),
            sorted(names.iter().copied()),
            "{site}: SANs must be exactly the names"
        );
        assert!(
            key_matches(&cert, &key),
            "{site}: privkey.pem does not match cert.pem"
        );
        assert_eq!(
            serial_hex(&fullchain),
            serial_hex(&cert),
            "{site}: fullchain must start with cert.pem"
        );
        assert_eq!(
            serial_hex(&chain),
            serial_hex(&intermediate),
            "{site}: chain.pem must hold Pebble's intermediate"
        );
        assert_eq!(&serial_hex(&cert), serial, "{site}: stdout serial");
        assert_eq!(not_after(&cert), *expires, "{site}: stdout expiry");
        assert_eq!(
            mode(&site_dir.join("privkey.pem")),
            0o600,
            "{site}: privkey.pem mode"
        );

        let entry = status_site(&status, site);
        assert_eq!(
            entry["names"],
            serde_json::json!(names),
            "{site}: status names"
        );
        let status_serial = entry["serial"]
            .as_str()
            .unwrap_or_else(|| panic!("no serial: {entry:#}"));
        assert_eq!(
            &normalize_serial(status_serial),
            serial,
            "{site}: status serial"
        );
        assert!(
            entry["issuer"]
                .as_str()
                .is_some_and(|issuer| !issuer.is_empty()),
            "{entry:#}"
        );
        let not_before = parse_time(entry["not_before"].as_str().expect("not_before"));
        let not_after_status = parse_time(entry["not_after"].as_str().expect("not_after"));
        let renew_at = parse_time(entry["renew_at"].as_str().expect("renew_at"));
        assert_eq!(not_after_status, *expires, "{site}: status not_after");
        assert!(
            not_before < renew_at && renew_at < not_after_status,
            "{entry:#}"
        );
        assert!(
            entry["days_left"].as_i64().is_some_and(|days| days > 0),
            "{entry:#}"
        );
        assert!(entry["last_error"].is_null(), "{entry:#}");
    }

    // Private state: every folder 0700, every key file 0600, nothing writable by others.
    for path in walk(&certd.state_dir()) {
        let meta = std::fs::symlink_metadata(&path).expect("stat");
        if meta.is_dir() {
            assert_eq!(mode(&path), 0o700, "{} should be 0700", path.display());
        } else if meta.is_file() {
            assert_eq!(
                mode(&path) & 0o022,
                0,
                "{} is writable by others",
                path.display()
            );
            if path.file_name().is_some_and(|name| name == "privkey.pem") {
                assert_eq!(mode(&path), 0o600, "{}", path.display());
            }
        }
    }
    let accounts = certd.account_files();
    assert_eq!(accounts.len(), 1, "one account expected: {accounts:?}");
    assert_eq!(
        mode(&accounts[0]),
        0o600,
        "the account file holds a private key"
    );
    assert_eq!(pebble.issued_count(), 2);
}

#[tokio::test]
async fn second_run_skips_and_force_renews_with_the_same_account() {
    let pebble = Pebble::start().await;
    let certd = Certd::with_config(&CertdConfig::for_pebble(&pebble, SITES));
    let first_serials = issue_all(&certd, SITES, &[]).await;
    let accounts = certd.account_files();
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    let account = std::fs::read(&accounts[0]).expect("read account");
    let before: Vec<_> = SITES
        .iter()
        .map(|names| snapshot(&certd, names[0]))
        .collect();
    let status = certd.status().await;

    // Not due: nothing is ordered and nothing changes.
    let run = certd.issue(&[]).await;
    run.expect_code(0);
    let outcomes = parse_issue_stdout(&run.stdout);
    assert_eq!(outcomes.len(), 2, "{run}");
    for (names, before) in SITES.iter().zip(&before) {
        let site = names[0];
        let Some(IssueOutcome::Skipped { until }) = outcomes.get(site) else {
            panic!("{site} should be skipped\n{run}");
        };
        let renew_at = parse_time(
            status_site(&status, site)["renew_at"]
                .as_str()
                .expect("renew_at"),
        );
        assert!(
            (*until - renew_at).abs() <= time::Duration::seconds(1),
            "{until} vs renew_at {renew_at}"
        );
        assert!(*until > time::OffsetDateTime::now_utc());
        assert_eq!(
            &snapshot(&certd, site),
            before,
            "{site} changed on a skipped run"
        );
        assert_eq!(certd.versions(site).len(), 1);
    }
    assert_eq!(
        pebble.issued_count(),
        2,
        "a run with nothing due must not order"
    );

    // --force renews every site: new serials, new version, old version kept, same account.
    let second_serials = issue_all(&certd, SITES, &["--force"]).await;
    assert_eq!(pebble.issued_count(), 4);
    let root = pebble.root_pem().await;
    for ((names, (old_files, old_live)), (first, second)) in SITES
        .iter()
        .zip(&before)
        .zip(first_serials.iter().zip(&second_serials))
    {
        let site = names[0];
        assert_ne!(
            first, second,
            "{site}: --force must produce a new certificate"
        );
        let (new_files, new_live) = snapshot(&certd, site);
        assert_ne!(
            &new_live, old_live,
            "{site}: live must point at the new version"
        );
        assert_eq!(serial_hex(&new_files[0]), *second);
        for name in *names {
            verify_chain(&new_files[2], &root, name).unwrap_or_else(|err| panic!("{site}: {err}"));
        }
        assert!(
            key_matches(&new_files[0], &new_files[3]),
            "{site}: new key does not match"
        );

        let versions = certd.versions(site);
        assert_eq!(
            versions.len(),
            2,
            "{site}: previous version must be kept: {versions:?}"
        );
        assert!(
            versions.contains(old_live),
            "{site}: {} was removed",
            old_live.display()
        );
        for (file, old) in PEM_FILES.iter().zip(old_files) {
            let kept = std::fs::read_to_string(old_live.join(file)).expect("read kept version");
            assert_eq!(&kept, old, "{site}: previous {file} changed");
        }
        let entry = status_site(&certd.status().await, site).clone();
        assert_eq!(
            entry["serial"].as_str().map(normalize_serial).as_ref(),
            Some(second),
            "{entry:#}"
        );
    }
    assert_eq!(
        certd.account_files(),
        accounts,
        "the account must be reused"
    );
    assert_eq!(
        std::fs::read(&accounts[0]).expect("read account"),
        account,
        "the account file changed"
    );
    assert_eq!(pebble.account_count(), 1, "Pebble saw a second account");
}

#[tokio::test]
async fn site_names_on_the_command_line_select_sites() {
    let pebble = Pebble::start().await;
    let certd = Certd::with_config(&CertdConfig::for_pebble(&pebble, SITES));

    let status = certd.status().await;
    for names in SITES {
        let entry = status_site(&status, names[0]);
        assert_eq!(entry["names"], serde_json::json!(names), "{entry:#}");
        for field in [
            "serial",
            "not_before",
            "not_after",
            "renew_at",
            "last_error",
        ] {
            assert!(
                entry[field].is_null(),
                "{field} should be null before any issuance: {entry:#}"
            );
        }
    }

    let run = certd.issue(&["b.test"]).await;
    run.expect_code(0);
    let outcomes = parse_issue_stdout(&run.stdout);
    assert!(
        matches!(outcomes.get("b.test"), Some(IssueOutcome::Issued { .. })),
        "{run}"
    );
    assert!(
        !outcomes.contains_key("a.test"),
        "a.test was not asked for\n{run}"
    );
    assert_eq!(pebble.issued_count(), 1);
    assert!(!certd.site_dir("a.test").join("cert.pem").exists());
    let status = certd.status().await;
    assert!(
        status_site(&status, "a.test")["serial"].is_null(),
        "{status:#}"
    );
    assert!(
        status_site(&status, "b.test")["serial"].is_string(),
        "{status:#}"
    );
}

#[tokio::test]
async fn failed_challenge_reports_the_ca_problem_and_keeps_the_old_certificate() {
    let pebble = Pebble::start().await;
    let mut config = CertdConfig::for_pebble(&pebble, SITES);
    let certd = Certd::with_config(&config);
    let serials = issue_all(&certd, SITES, &[]).await;
    let before: Vec<_> = SITES
        .iter()
        .map(|names| snapshot(&certd, names[0]))
        .collect();

    // certd now answers on a port where Pebble does not look; Pebble's connection is refused.
    let elsewhere = free_port();
    assert_ne!(elsewhere, pebble.http_port);
    config.listen = vec![SocketAddr::from(([127, 0, 0, 1], elsewhere))];
    certd.write_config(&config);

    let run = certd.issue(&["--force"]).await;
    run.expect_code(1);
    assert!(!run.stdout.contains("issued"), "{run}");
    let messages = run.stderr_messages();
    for ((names, before), serial) in SITES.iter().zip(&before).zip(&serials) {
        let site = names[0];
        let prefix = format!("{site}: failed: ");
        let line = messages
            .iter()
            .find(|line| line.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no `{prefix}...` line on stderr\n{run}"));
        assert!(
            line.contains(CONNECTION_PROBLEM),
            "the CA's problem type is missing: {line}"
        );
        assert!(
            line.contains(REFUSED_DETAIL),
            "the CA's problem detail is missing: {line}"
        );

        assert_eq!(
            &snapshot(&certd, site),
            before,
            "{site}: a failed renewal must not touch the old files"
        );
        assert_eq!(
            certd.versions(site).len(),
            1,
            "{site}: a failed renewal left a version behind"
        );

        let status = certd.status().await;
        let entry = status_site(&status, site);
        let last_error = entry["last_error"]
            .as_str()
            .unwrap_or_else(|| panic!("no last_error: {entry:#}"));
        assert!(last_error.contains(CONNECTION_PROBLEM), "{entry:#}");
        assert!(!entry["last_attempt"].is_null(), "{entry:#}");
        assert_eq!(
            entry["serial"].as_str().map(normalize_serial).as_ref(),
            Some(serial),
            "{entry:#}"
        );
    }
    assert_eq!(pebble.issued_count(), 2);
}

#[tokio::test]
async fn unreachable_ca_fails_fast_with_exit_2() {
    let certd = Certd::new();
    let pki = TestPki::generate(certd.dir());
    let url = format!("https://127.0.0.1:{}/dir", free_port());
    certd.write_config(&CertdConfig {
        directory_url: url.clone(),
        ca_roots: Some(pki.ca_path.clone()),
        email: None,
        listen: vec![SocketAddr::from(([127, 0, 0, 1], free_port()))],
        sites: vec![vec!["a.test".to_owned()]],
        preflight_resolver: None,
    });

    let run = certd.issue(&[]).await;
    run.expect_code(2);
    assert!(
        run.elapsed < Duration::from_secs(30),
        "took {:?}\n{run}",
        run.elapsed
    );
    let messages = run.stderr_messages().join("\n");
    assert!(
        messages.contains(&url),
        "the message must name the CA URL\n{run}"
    );
    let lower = messages.to_lowercase();
    assert!(
        ["cannot reach", "unreachable", "connect"]
            .iter()
            .any(|word| lower.contains(word)),
        "the message must say the CA cannot be reached\n{run}"
    );
    assert!(!certd.site_dir("a.test").join("cert.pem").exists());
}
