//! DNS-01 end to end: a real BIND 9 ([`Bind`]) authoritative for the test zones with a TSIG key, a
//! Pebble that resolves and validates through that BIND (`-dnsserver`), and `certd issue` publishing
//! the TXT records by RFC 2136 updates or through an exec hook that runs `nsupdate`.
//!
//! Checked: a wildcard plus apex certificate (and a CNAME-delegated `_acme-challenge`) issued with the
//! exact SANs and a chain to Pebble's root, every TXT record gone afterwards, and a wrong TSIG key
//! failing with a message that says what to check, no certificate, and the order abandoned at the CA.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use instant_acme::{Account, AccountCredentials, OrderStatus};

use crate::harness::{
    parse_issue_stdout, sans, toml_str, verify_chain, Bind, Certd, IssueOutcome, Pebble,
    PebbleOptions, TSIG_KEY,
};

/// The zone the sites live in.
const ZONE: &str = "example.test";
/// The zone `_acme-challenge.delegated.example.test` points into (CNAME delegation).
const VALIDATION_ZONE: &str = "validation.test";

/// BIND with both zones; `_acme-challenge.delegated` is a CNAME into the validation zone.
async fn start_bind() -> Bind {
    Bind::start(&[
        (
            ZONE,
            "_acme-challenge.delegated IN CNAME delegated.validation.test.",
        ),
        (VALIDATION_ZONE, ""),
    ])
    .await
}

async fn start_pebble(bind: &Bind) -> Pebble {
    Pebble::start_with(PebbleOptions {
        dns_server: Some(bind.addr()),
        ..PebbleOptions::default()
    })
    .await
}

/// `[acme]` for `pebble`, `dns` appended to it (an `[acme.dns]` table or `dns_hook = ...`), and
/// `sites` as DNS-01 sites.
fn config(pebble: &Pebble, bind: &Bind, dns: &str, sites: &[&[&str]]) -> String {
    let mut toml = format!(
        "state_dir = \"state\"\n\n[acme]\ndirectory = {}\nagree_tos = true\nca_roots = {}\n\
         key_type = \"ecdsa-p256\"\n{dns}\n\n[http]\nlisten = [\"127.0.0.1:{}\"]\n\n\
         [preflight]\nresolver = {}\n",
        toml_str(&pebble.directory_url()),
        toml_str(&pebble.ca_roots_path().display().to_string()),
        pebble.http_port,
        toml_str(&bind.addr().to_string()),
    );
    for names in sites {
        let names: Vec<String> = names.iter().map(|name| toml_str(name)).collect();
        toml += &format!(
            "\n[[site]]\nnames = [{}]\nchallenge = \"dns-01\"\n",
            names.join(", ")
        );
    }
    toml
}

/// The `[acme.dns]` table for RFC 2136 updates to `bind` with the secret in `secret_file`.
fn rfc2136_table(bind: &Bind, secret_file: &Path) -> String {
    format!(
        "\n[acme.dns]\nserver = {}\ntsig_key = {}\ntsig_secret_file = {}\nnameserver_port = {}\n\
         propagation_timeout = \"30s\"\n",
        toml_str(&bind.addr().to_string()),
        toml_str(TSIG_KEY),
        toml_str(&secret_file.display().to_string()),
        bind.port,
    )
}

/// Asserts `certd issue` issued `site` with exactly `names`, chained to Pebble's root.
async fn assert_issued(certd: &Certd, pebble: &Pebble, stdout: &str, site: &str, names: &[&str]) {
    let outcomes = parse_issue_stdout(stdout);
    assert!(
        matches!(outcomes.get(site), Some(IssueOutcome::Issued { .. })),
        "{site} not issued: {stdout}"
    );
    let fullchain = certd.read_site_file(site, "fullchain.pem");
    let mut want: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    want.sort();
    let mut got = sans(&fullchain);
    got.sort();
    assert_eq!(got, want, "SANs of {site}");
    let root = pebble.root_pem().await;
    for name in names {
        // A wildcard is checked the way a client uses it: for a one-label subdomain.
        let host = name.replace('*', "any-host");
        verify_chain(&fullchain, &root, &host)
            .unwrap_or_else(|err| panic!("{site}: chain for {host}: {err}"));
    }
}

/// The status of the order at `url`, fetched with the account certd stored. Pebble reports an order
/// whose authorizations were deactivated as `deactivated` (RFC 8555 says `invalid`), which
/// instant-acme cannot parse; that answer is returned as such.
async fn order_status(certd: &Certd, pebble: &Pebble, url: String) -> String {
    let files = certd.account_files();
    let json = std::fs::read_to_string(files.first().expect("certd stored an account"))
        .expect("read the account");
    let credentials: AccountCredentials = serde_json::from_str(&json).expect("account JSON");
    let account = Account::builder_with_root(pebble.ca_roots_path())
        .expect("HTTP client")
        .from_credentials(credentials)
        .await
        .expect("load certd's account at Pebble");
    match account.order(url).await {
        Ok(mut order) => match order.state().status {
            OrderStatus::Pending => "pending",
            OrderStatus::Ready => "ready",
            OrderStatus::Processing => "processing",
            OrderStatus::Valid => "valid",
            OrderStatus::Invalid => "invalid",
        }
        .to_owned(),
        Err(err) if err.to_string().contains("unknown variant `deactivated`") => {
            "deactivated".to_owned()
        }
        Err(err) => panic!("fetch the order: {err}"),
    }
}

#[tokio::test]
async fn rfc2136_issues_wildcard_apex_and_cname_delegated_names_and_removes_the_records() {
    let bind = start_bind().await;
    let pebble = start_pebble(&bind).await;
    let certd = Certd::new();
    let secret = bind.write_secret_file(&certd.dir().join("tsig.key"), None, 0o600);
    certd.write_config_text(&config(
        &pebble,
        &bind,
        &rfc2136_table(&bind, &secret),
        &[
            &["example.test", "*.example.test"],
            &["delegated.example.test"],
        ],
    ));

    let run = certd.issue(&[]).await;
    run.expect_code(0);
    assert_issued(
        &certd,
        &pebble,
        &run.stdout,
        "example.test",
        &["example.test", "*.example.test"],
    )
    .await;
    assert_issued(
        &certd,
        &pebble,
        &run.stdout,
        "delegated.example.test",
        &["delegated.example.test"],
    )
    .await;
    // The delegated record was written where the CNAME points, found by its own SOA.
    assert!(
        bind.log().contains("validation.test"),
        "no update in the validation zone:\n{}",
        bind.log()
    );
    for name in ["_acme-challenge.example.test", "delegated.validation.test"] {
        assert_eq!(bind.txt(name), Vec::<String>::new(), "{name} left behind");
    }
}

#[tokio::test]
async fn a_wrong_tsig_key_fails_clearly_leaves_no_certificate_and_abandons_the_order() {
    let bind = start_bind().await;
    let pebble = start_pebble(&bind).await;
    let certd = Certd::new();
    let wrong = "d3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmctd3Jv";
    let secret = bind.write_secret_file(&certd.dir().join("tsig.key"), Some(wrong), 0o600);
    certd.write_config_text(&config(
        &pebble,
        &bind,
        &rfc2136_table(&bind, &secret),
        &[&["example.test", "*.example.test"]],
    ));

    let run = certd.issue(&[]).await;
    assert_ne!(run.code, Some(0), "issued with a wrong key\n{run}");
    assert!(
        run.stderr.contains("NOTAUTH") && run.stderr.contains("tsig_key"),
        "the error does not say the key was refused\n{run}"
    );
    assert!(
        !certd.site_dir("example.test").join("live").exists(),
        "a certificate was stored"
    );
    // The order's authorizations were deactivated, which makes the order invalid, not pending:
    // asked at the CA with certd's own account.
    let url = run
        .stderr
        .split("order created url=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no order URL logged\n{run}"))
        .to_owned();
    let status = order_status(&certd, &pebble, url).await;
    assert!(
        status == "invalid" || status == "deactivated",
        "the order was left {status}"
    );
    assert_eq!(
        bind.txt("_acme-challenge.example.test"),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn the_exec_hook_publishes_with_nsupdate_and_cleans_up() {
    let bind = start_bind().await;
    let pebble = start_pebble(&bind).await;
    let certd = Certd::new();
    let key = bind.write_secret_file(&certd.dir().join("nsupdate.key"), None, 0o600);
    let calls = certd.dir().join("hook-calls");
    let hook = certd.dir().join("dns-hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nset -e\n\
             case \"$1\" in\n\
               add) cmd=\"update add $2 60 TXT \\\"$3\\\"\" ;;\n\
               remove) cmd=\"update delete $2 TXT \\\"$3\\\"\" ;;\n\
               *) echo \"unknown action $1\" >&2; exit 2 ;;\n\
             esac\n\
             printf 'server 127.0.0.1 {port}\\n%s\\nsend\\n' \"$cmd\" | nsupdate -k {key}\n\
             echo \"$1 $2\" >> {calls}\n",
            port = bind.port,
            key = key.display(),
            calls = calls.display(),
        ),
    )
    .expect("write hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let dns = format!(
        "dns_hook = {}\n\n[acme.dns]\nnameserver_port = {}\npropagation_timeout = \"30s\"\n",
        toml_str(&hook.display().to_string()),
        bind.port
    );
    certd.write_config_text(&config(
        &pebble,
        &bind,
        &dns,
        &[&["hook.example.test", "*.hook.example.test"]],
    ));

    let run = certd.issue(&[]).await;
    run.expect_code(0);
    assert_issued(
        &certd,
        &pebble,
        &run.stdout,
        "hook.example.test",
        &["hook.example.test", "*.hook.example.test"],
    )
    .await;
    let calls = std::fs::read_to_string(&calls).expect("the hook was never called");
    let record = "_acme-challenge.hook.example.test.";
    assert_eq!(
        calls
            .lines()
            .filter(|l| *l == format!("add {record}"))
            .count(),
        2,
        "{calls}"
    );
    assert_eq!(
        calls
            .lines()
            .filter(|l| *l == format!("remove {record}"))
            .count(),
        2,
        "{calls}"
    );
    assert_eq!(
        bind.txt("_acme-challenge.hook.example.test"),
        Vec::<String>::new()
    );
}
