//! A fallback CA (`[[acme.ca]]`): with the first CA down, the order goes to the second, and the site
//! record and `certd status` name the CA that issued the certificate in service; once the first is
//! back, the next order (`certd issue --force`) starts from it again.

use std::net::SocketAddr;

use crate::harness::{
    parse_issue_stdout, status_site, toml_str, Certd, CertdConfig, IssueOutcome, Pebble,
};

/// The `[acme]` table of `base` with its single `directory` / `ca_roots` replaced by one
/// `[[acme.ca]]` per Pebble, in order.
fn with_cas(base: &str, cas: &[&Pebble]) -> String {
    let mut text: String = base
        .lines()
        .filter(|line| !line.starts_with("directory = ") && !line.starts_with("ca_roots = "))
        .map(|line| format!("{line}\n"))
        .collect();
    let mut tables = String::new();
    for ca in cas {
        tables += &format!(
            "\n[[acme.ca]]\ndirectory = {}\nca_roots = {}\n",
            toml_str(&ca.directory_url()),
            toml_str(&ca.ca_roots_path().display().to_string())
        );
    }
    let at = text.find("\n[http]").expect("an [http] table");
    text.insert_str(at, &tables);
    text
}

fn issued_serial(run: &crate::harness::Run) -> String {
    match parse_issue_stdout(&run.stdout).get("a.test") {
        Some(IssueOutcome::Issued { serial, .. }) => serial.clone(),
        other => panic!("a.test must be issued, got {other:?}\n{run}"),
    }
}

#[tokio::test]
async fn an_order_falls_back_to_the_second_ca_while_the_first_is_down() {
    let mut first = Pebble::start().await;
    let second = Pebble::start().await;
    // The first CA goes away: its ACME port refuses connections.
    first.stop();

    let certd = Certd::new();
    let mut config = CertdConfig::for_pebble(&second, &[&["a.test"]]);
    // Each Pebble validates HTTP-01 on its own port.
    config.listen = vec![
        SocketAddr::from(([127, 0, 0, 1], first.http_port)),
        SocketAddr::from(([127, 0, 0, 1], second.http_port)),
    ];
    certd.write_config_text(&with_cas(&config.to_toml(), &[&first, &second]));

    let run = certd.issue(&[]).await;
    run.expect_code(0);
    issued_serial(&run);
    assert!(
        run.stderr.contains("ordering from the next CA")
            || run.stderr.contains("orders go to the fallback CAs"),
        "the fallback must be logged\n{run}"
    );
    assert_eq!(second.issued_count(), 1, "the second CA issued it");
    let status = certd.status().await;
    assert_eq!(
        status_site(&status, "a.test")["issued_by"],
        second.directory_url(),
        "{status:#}"
    );
    let text = certd.run("status", &[]).await;
    assert!(
        text.stdout
            .contains(&format!("issued by the CA at {}", second.directory_url())),
        "{text}"
    );

    // The first CA is back (a fresh Pebble on the same ports): the next order goes to it again.
    first.restart().await;
    let run = certd.issue(&["--force"]).await;
    run.expect_code(0);
    issued_serial(&run);
    assert_eq!(
        first.issued_count(),
        1,
        "the first CA issued the renewal\n{run}"
    );
    assert_eq!(
        second.issued_count(),
        1,
        "the second CA was not asked again"
    );
    let status = certd.status().await;
    assert_eq!(
        status_site(&status, "a.test")["issued_by"],
        first.directory_url(),
        "{status:#}"
    );
}
