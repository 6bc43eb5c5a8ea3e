//! External account binding against a Pebble that requires it (`externalAccountBindingRequired`,
//! one key in `externalAccountMACKeys`): without EAB the account is refused with the CA's own
//! problem, with the right key id and MAC key it is created and certificates are issued.

use std::os::unix::fs::PermissionsExt as _;

use crate::harness::{parse_issue_stdout, Certd, CertdConfig, IssueOutcome, Pebble, PebbleOptions};

const KID: &str = "kid-certd-e2e";
/// A base64url MAC key as Pebble's example config has them.
const MAC_KEY: &str = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";

#[tokio::test]
async fn a_ca_requiring_eab_refuses_an_account_without_it_and_accepts_one_with_it() {
    let pebble = Pebble::start_with(PebbleOptions {
        eab: Some((KID, MAC_KEY)),
        ..PebbleOptions::default()
    })
    .await;
    let certd = Certd::new();
    let base = CertdConfig::for_pebble(&pebble, &[&["a.test"]]).to_toml();
    certd.write_config_text(&base);

    let run = certd.issue(&[]).await;
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("urn:ietf:params:acme:error:externalAccountRequired"),
        "the CA's problem type\n{run}"
    );
    assert!(
        run.stderr
            .contains("set [acme] eab_kid and eab_hmac_key_file"),
        "{run}"
    );
    assert!(certd.account_files().is_empty(), "no account may be stored");

    // The key as a CA's dashboard shows it, pasted with a newline; readable by its owner only.
    let key = certd.dir().join("eab.key");
    std::fs::write(&key, format!("{MAC_KEY}\n")).expect("write key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    certd.write_config_text(&base.replace(
        "agree_tos = true\n",
        &format!("agree_tos = true\neab_kid = \"{KID}\"\neab_hmac_key_file = \"eab.key\"\n"),
    ));
    let run = certd.issue(&[]).await;
    run.expect_code(0);
    assert!(
        matches!(
            parse_issue_stdout(&run.stdout).get("a.test"),
            Some(IssueOutcome::Issued { .. })
        ),
        "{run}"
    );
    assert_eq!(certd.account_files().len(), 1);
    assert_eq!(pebble.account_count(), 1);
}
