//! `certd import certbot` end to end: certificates Pebble really issued (through `certd issue` in one
//! folder) are laid out the way certbot keeps them — `archive/` files, relative `live/` links,
//! `renewal/<name>.conf`, and the ACME account under `accounts/` — and imported into a second, fresh
//! folder. Checked: what is imported and what is skipped (with reasons), that Pebble sees no new order,
//! that a second import changes nothing, `certd status`, the certificate `certd run` then serves, and
//! that the daemon orders with the imported account instead of registering a new one.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use crate::harness::{
    normalize_serial, not_after, parse_time, serial_hex, status_site, Certd, CertdConfig, Daemon,
    HttpsClient, Pebble, Run, RunConfig, Site,
};

/// certbot's id for the account the lineages were issued with (any folder name will do).
const ACCOUNT_ID: &str = "4f1e0c3b9a7d2e8f6a5b4c3d2e1f0a9b";

/// How long the daemon gets to order a missing certificate from Pebble.
const CERT_WAIT: Duration = Duration::from_secs(60);

/// A certbot configuration folder being built.
pub(crate) struct CertbotDir {
    dir: tempfile::TempDir,
    server: String,
}

impl CertbotDir {
    pub(crate) fn new(server: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("certd-e2e-letsencrypt-")
            .tempdir()
            .expect("tempdir");
        Self {
            dir,
            server: server.to_owned(),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Lineage `name` at version 1: `archive/<name>/{cert,chain,fullchain,privkey}1.pem`, relative
    /// links from `live/<name>/`, and `renewal/<name>.conf` for this CA and [`ACCOUNT_ID`].
    pub(crate) fn add_lineage(&self, name: &str, cert: &str, chain: &str, key: &str) {
        let archive = self.path().join("archive").join(name);
        let live = self.path().join("live").join(name);
        let renewal = self.path().join("renewal");
        for dir in [&archive, &live, &renewal] {
            std::fs::create_dir_all(dir).expect("create certbot folder");
        }
        let fullchain = format!("{}\n{}", cert.trim_end(), chain);
        for (file, contents) in [
            ("cert", cert),
            ("chain", chain),
            ("fullchain", fullchain.as_str()),
            ("privkey", key),
        ] {
            std::fs::write(archive.join(format!("{file}1.pem")), contents).expect("write archive");
            symlink(
                format!("../../archive/{name}/{file}1.pem"),
                live.join(format!("{file}.pem")),
            )
            .expect("link live");
        }
        let etc = "/etc/letsencrypt";
        let conf = format!(
            "# renew_before_expiry = 30 days\nversion = 2.9.0\narchive_dir = {etc}/archive/{name}\n\
             cert = {etc}/live/{name}/cert.pem\nprivkey = {etc}/live/{name}/privkey.pem\n\
             chain = {etc}/live/{name}/chain.pem\nfullchain = {etc}/live/{name}/fullchain.pem\n\n\
             # Options used in the renewal process\n[renewalparams]\naccount = {ACCOUNT_ID}\n\
             authenticator = nginx\ninstaller = nginx\nserver = {}\nkey_type = ecdsa\n",
            self.server
        );
        std::fs::write(renewal.join(format!("{name}.conf")), conf).expect("write renewal conf");
    }

    /// certbot's account folder for this CA, made from certd's stored credentials: the P-256 key as
    /// a private JWK in `private_key.json`, the account URL in `regr.json`.
    pub(crate) fn add_account(&self, credentials_json: &str) -> String {
        let value: serde_json::Value =
            serde_json::from_str(credentials_json).expect("account.json is JSON");
        let account_url = value["id"].as_str().expect("account URL").to_owned();
        let credentials: instant_acme::AccountCredentials =
            serde_json::from_str(credentials_json).expect("account.json holds credentials");
        let pkcs8 = credentials.private_key().secret_pkcs8_der();
        let pair = rcgen::KeyPair::try_from(pkcs8).expect("a P-256 account key");
        let point = pair.public_key_raw();
        // ECPrivateKey's `INTEGER 1, OCTET STRING (32 bytes)` comes right before the private scalar.
        let at = pkcs8
            .windows(5)
            .position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x20])
            .expect("an ECPrivateKey in the PKCS#8")
            + 5;
        let jwk = serde_json::json!({
            "kty": "EC",
            "crv": "P-256",
            "d": base64url(&pkcs8[at..at + 32]),
            "x": base64url(&point[1..33]),
            "y": base64url(&point[33..65]),
        });
        let host_and_path = self.server.strip_prefix("https://").expect("https URL");
        let dir = self
            .path()
            .join("accounts")
            .join(host_and_path)
            .join(ACCOUNT_ID);
        std::fs::create_dir_all(&dir).expect("create account folder");
        std::fs::write(dir.join("private_key.json"), jwk.to_string()).expect("write key");
        let regr = serde_json::json!({"body": {}, "uri": account_url});
        std::fs::write(dir.join("regr.json"), regr.to_string()).expect("write regr");
        std::fs::write(
            dir.join("meta.json"),
            r#"{"creation_dt": "2024-01-01T00:00:00Z", "creation_host": "old-server", "register_to_eff": null}"#,
        )
        .expect("write meta");
        account_url
    }
}

/// Base64url without padding, as JWKs use it.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0_u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 0x3f) as usize]));
        }
    }
    out
}

/// `certd import certbot --from <from> --config <certd.toml>`.
pub(crate) async fn import(certd: &Certd, from: &Path) -> Run {
    certd
        .run_raw(vec![
            "import".into(),
            "certbot".into(),
            "--from".into(),
            from.display().to_string(),
            "--config".into(),
            certd.config_path().display().to_string(),
        ])
        .await
}

#[tokio::test]
async fn certbot_lineages_and_account_move_in_without_a_new_order() {
    let pebble = Pebble::start().await;

    // certbot's certificates: really issued by Pebble, through certd in a folder of its own.
    let issuer = Certd::with_config(&CertdConfig::for_pebble(
        &pebble,
        &[&["a.test", "www.a.test"], &["b.test"], &["c.test"]],
    ));
    issuer.issue(&[]).await.expect_code(0);
    let read = |site: &str, file: &str| issuer.read_site_file(site, file);
    let certbot = CertbotDir::new(&pebble.directory_url());
    // A good lineage, one whose key belongs to another lineage, and one for a site certd does not have.
    certbot.add_lineage(
        "a.test",
        &read("a.test", "cert.pem"),
        &read("a.test", "chain.pem"),
        &read("a.test", "privkey.pem"),
    );
    certbot.add_lineage(
        "b.test",
        &read("b.test", "cert.pem"),
        &read("b.test", "chain.pem"),
        &read("a.test", "privkey.pem"),
    );
    certbot.add_lineage(
        "c.test",
        &read("c.test", "cert.pem"),
        &read("c.test", "chain.pem"),
        &read("c.test", "privkey.pem"),
    );
    let account_files = issuer.account_files();
    assert_eq!(account_files.len(), 1, "the issuer has one account");
    let account_url =
        certbot.add_account(&std::fs::read_to_string(&account_files[0]).expect("read account"));
    let a_cert = read("a.test", "cert.pem");
    let a_serial = serial_hex(&a_cert);
    let issued_before = pebble.issued_count();
    assert_eq!(issued_before, 3);
    assert_eq!(pebble.account_count(), 1);

    // The new home lists a.test and b.test, not c.test, and serves HTTPS (for `certd run` below).
    let certd = Certd::new();
    let config = RunConfig::for_pebble(
        &pebble,
        vec![Site::new(&["www.a.test", "a.test"]), Site::new(&["b.test"])],
    );
    config.write(&certd);

    let run = import(&certd, certbot.path()).await;
    run.expect_code(1);
    let stdout: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        stdout.len(),
        2,
        "one line for a.test, one for the account\n{run}"
    );
    let rest = stdout[0]
        .strip_prefix("a.test: imported as www.a.test (serial ")
        .unwrap_or_else(|| panic!("unexpected first line\n{run}"));
    let (serial, expires) = rest
        .strip_suffix(')')
        .and_then(|rest| rest.split_once(", expires "))
        .unwrap_or_else(|| panic!("unexpected imported line\n{run}"));
    assert_eq!(normalize_serial(serial), a_serial);
    assert_eq!(parse_time(expires), not_after(&a_cert));
    assert_eq!(
        stdout[1],
        format!(
            "account {ACCOUNT_ID}: imported as certd's account at {} ({account_url})",
            pebble.directory_url()
        ),
        "{run}"
    );
    let messages = run.stderr_messages();
    let b_line = messages
        .iter()
        .find(|line| line.starts_with("b.test: skipped: "))
        .unwrap_or_else(|| panic!("no line for b.test\n{run}"));
    assert!(
        b_line.contains("does not match the certificate"),
        "b.test's reason must be the key mismatch\n{run}"
    );
    let c_line = messages
        .iter()
        .find(|line| line.starts_with("c.test: skipped: "))
        .unwrap_or_else(|| panic!("no line for c.test\n{run}"));
    assert!(c_line.contains("not in the config"), "{run}");
    assert!(
        run.stderr.contains("[[site]]\nnames = [\"c.test\"]"),
        "a [[site]] for c.test, ready to paste\n{run}"
    );
    assert!(
        !messages.iter().any(|line| line.starts_with("a.test:")),
        "{run}"
    );

    // Nothing was ordered; the state holds certbot's pair as it was.
    assert_eq!(
        pebble.issued_count(),
        issued_before,
        "the import must not order"
    );
    assert_eq!(
        certd.read_site_file("www.a.test", "cert.pem").trim(),
        a_cert.trim()
    );
    assert_eq!(
        certd.read_site_file("www.a.test", "privkey.pem"),
        read("a.test", "privkey.pem")
    );
    assert_eq!(certd.versions("www.a.test").len(), 1);
    assert!(!certd.site_dir("b.test").join("cert.pem").exists());
    let status = certd.status().await;
    let entry = status_site(&status, "www.a.test");
    assert_eq!(
        normalize_serial(entry["serial"].as_str().expect("a serial in status")),
        a_serial,
        "{entry:#}"
    );

    // A second import changes nothing.
    let again = import(&certd, certbot.path()).await;
    again.expect_code(1);
    assert_eq!(
        again.stdout.lines().collect::<Vec<_>>(),
        vec![
            "a.test: already imported".to_owned(),
            format!("account {ACCOUNT_ID}: already imported"),
        ],
        "{again}"
    );
    assert_eq!(certd.versions("www.a.test").len(), 1, "no new version");
    assert_eq!(pebble.issued_count(), issued_before);

    // `certd run` serves the imported certificate at once, for both names.
    let daemon = Daemon::start(&certd, config.https_addr()).await;
    let client = HttpsClient::new(config.https_addr(), &pebble.root_pem().await);
    for name in ["a.test", "www.a.test"] {
        let served = client
            .serial(name)
            .await
            .unwrap_or_else(|refused| panic!("{name} not served: {refused:?}"));
        assert_eq!(served, a_serial, "{name}: the imported certificate");
    }

    // While the daemon holds the state directory, the import refuses.
    let locked = import(&certd, certbot.path()).await;
    locked.expect_code(2);
    assert!(
        locked.stderr_messages().join("\n").contains("locked"),
        "{locked}"
    );

    // b.test had no usable certificate: the daemon orders it with certbot's account, so Pebble
    // registers no new one.
    let b_serial = client.wait_for_certificate("b.test", CERT_WAIT).await;
    assert_ne!(b_serial, serial_hex(&read("b.test", "cert.pem")));
    assert_eq!(
        pebble.account_count(),
        1,
        "the daemon must order with the imported account"
    );
    drop(daemon);
}

#[tokio::test]
async fn an_unreadable_from_or_an_invalid_config_does_nothing() {
    let certd = Certd::new();
    certd.write_config_text(
        "[acme]\ndirectory = \"https://127.0.0.1:1/dir\"\nagree_tos = true\n\n\
         [[site]]\nnames = [\"a.test\"]\n",
    );
    let missing = certd.dir().join("no-such-letsencrypt");
    let run = import(&certd, &missing).await;
    run.expect_code(2);
    assert!(
        run.stderr_messages()
            .join("\n")
            .contains(&missing.display().to_string()),
        "{run}"
    );
    assert!(!certd.state_dir().exists(), "nothing is written\n{run}");

    let not_certbot = tempfile::tempdir().expect("tempdir");
    let run = import(&certd, not_certbot.path()).await;
    run.expect_code(2);
    assert!(
        run.stderr_messages()
            .join("\n")
            .contains("not a certbot configuration folder"),
        "{run}"
    );

    certd.write_config_text("[acme]\n");
    let run = import(&certd, not_certbot.path()).await;
    run.expect_code(2);
    assert!(!certd.state_dir().exists(), "nothing is written\n{run}");
}
