//! TLS grading with `testssl.sh` against `certd run`: no SSLv2/SSLv3/TLS 1.0/TLS 1.1 offered, no
//! NULL, anonymous, EXPORT, LOW (DES, RC4), 3DES or obsolete CBC cipher category offered, none of
//! SWEET32, BEAST, LUCKY13 or POODLE flagged, strong ciphers with forward secrecy offered, nothing else
//! rated HIGH or CRITICAL (but what only the CA decides), and a chain that verifies up to Pebble's root
//! (given to testssl with `--add-ca`). testssl's report and findings are printed in the test output.
//!
//! Fails, saying what to install, when neither `testssl` (Debian's name) nor `testssl.sh` is on
//! `PATH`: an ungraded TLS setup is not a pass.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{static_site, write_file, Served};
use crate::harness::{Certd, Pebble, RunConfig};

/// testssl gets this long in all (the checks chosen take well under a minute).
const TESTSSL_TIMEOUT: Duration = Duration::from_secs(240);

/// The first of `testssl`, `testssl.sh` found on `PATH`.
fn find_testssl() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["testssl", "testssl.sh"].iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

#[tokio::test]
async fn testssl_finds_no_old_protocol_weak_cipher_or_broken_chain() {
    let testssl = find_testssl().unwrap_or_else(|| {
        panic!(
            "tls_grade: neither `testssl` nor `testssl.sh` is on PATH: install the Debian package \
             `testssl.sh` (scripts/test.sh does)"
        )
    });
    let started = Instant::now();
    let pebble = Pebble::start().await;
    let certd = Certd::new();
    write_file(&certd.dir().join("www/index.html"), b"graded\n");
    let config = RunConfig::for_pebble(&pebble, vec![static_site("a.test", "www")]);
    let served = Served::start(pebble, certd, config, &[]).await;
    let work = served.certd.dir().join("testssl");
    std::fs::create_dir_all(&work).expect("create testssl folder");
    let root = work.join("pebble-root.pem");
    write_file(&root, served.pebble.root_pem().await.as_bytes());
    let json = work.join("findings.json");

    let mut command = tokio::process::Command::new(&testssl);
    command
        .args(["--quiet", "--fast", "--color", "0", "--warnings", "off"])
        .args(["--openssl-timeout", "10", "--connect-timeout", "10"])
        .args(["--ip", "127.0.0.1"])
        .arg("--add-ca")
        .arg(&root)
        .arg("--jsonfile")
        .arg(&json)
        // Protocols, cipher categories (RC4 is in LOW), forward secrecy, server defaults (the chain),
        // and the cipher-related vulnerabilities: SWEET32 (3DES), BEAST and LUCKY13 (CBC), POODLE.
        // (`-4`, RC4 on its own, needs an OpenSSL with RC4 under `--fast`; Debian's has none.)
        .args(["-p", "-s", "-f", "-S", "-W", "-A", "-L", "-O"])
        .arg(format!("https://a.test:{}", served.config.https_port))
        .current_dir(&work)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(TESTSSL_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("testssl did not finish within {TESTSSL_TIMEOUT:?}"))
        .expect("run testssl");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!(
        "----- testssl ({}, {took:?}) -----\n{stdout}\n----- stderr -----\n{}",
        testssl.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&json)
        .unwrap_or_else(|err| panic!("testssl wrote no JSON ({err}):\n{stdout}"));
    let findings: Vec<serde_json::Value> = serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("testssl's JSON does not parse ({err}):\n{text}"));
    let finding = |id: &str| -> Option<String> {
        findings
            .iter()
            .find(|entry| entry["id"] == id)
            .and_then(|entry| entry["finding"].as_str())
            .map(str::to_owned)
    };

    let mut problems = Vec::new();
    // Protocols: nothing older than TLS 1.2; TLS 1.2 and 1.3 offered.
    for id in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"] {
        match finding(id) {
            Some(found) if found.starts_with("not offered") => {}
            other => problems.push(format!("{id}: expected `not offered`, got {other:?}")),
        }
    }
    for id in ["TLS1_2", "TLS1_3"] {
        match finding(id) {
            Some(found) if found.starts_with("offered") => {}
            other => problems.push(format!("{id}: expected `offered`, got {other:?}")),
        }
    }
    // Weak cipher categories: none offered.
    for id in [
        "cipherlist_NULL",
        "cipherlist_aNULL",
        "cipherlist_EXPORT",
        "cipherlist_LOW",
        "cipherlist_3DES_IDEA",
        "cipherlist_AVERAGE",
    ] {
        match finding(id) {
            Some(found) if found.starts_with("not offered") => {}
            other => problems.push(format!("{id}: expected `not offered`, got {other:?}")),
        }
    }
    // Strong (AEAD) ciphers with forward secrecy offered (the ids differ between testssl versions).
    for ids in [["cipherlist_STRONG", "cipherlist_STRONG_FS"], ["PFS", "FS"]] {
        match ids.iter().find_map(|id| finding(id)) {
            Some(found) if found.starts_with("offered") => {}
            other => problems.push(format!("{ids:?}: expected `offered`, got {other:?}")),
        }
    }
    // The chain certd serves verifies to Pebble's root.
    let chain_ids: Vec<&serde_json::Value> = findings
        .iter()
        .filter(|entry| {
            entry["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("cert_chain_of_trust"))
        })
        .collect();
    if chain_ids.is_empty() {
        problems.push("no cert_chain_of_trust finding".to_owned());
    }
    for entry in chain_ids {
        let found = entry["finding"].as_str().unwrap_or_default();
        if !found.starts_with("passed") {
            problems.push(format!("{}: {found}", entry["id"]));
        }
    }
    // Nothing flagged as vulnerable, and nothing rated HIGH or CRITICAL anywhere, except what the
    // CA decides and certd cannot: Pebble's certificates carry no CRL or OCSP URI and live 5 years.
    const CA_PROPERTIES: [&str; 4] = [
        "cert_revocation",
        "cert_validityPeriod",
        "cert_ocspURL",
        "cert_crlDistributionPoints",
    ];
    for entry in &findings {
        let id = entry["id"].as_str().unwrap_or_default();
        let severity = entry["severity"].as_str().unwrap_or_default();
        let found = entry["finding"].as_str().unwrap_or_default();
        let vulnerable = ["SWEET32", "BEAST", "LUCKY13", "POODLE_SSL"].contains(&id)
            && !found.contains("not vulnerable");
        let severe = matches!(severity, "HIGH" | "CRITICAL") && !CA_PROPERTIES.contains(&id);
        if vulnerable || severe {
            problems.push(format!("{id} ({severity}): {found}"));
        }
    }
    let summary: Vec<String> = findings
        .iter()
        .filter(|entry| entry["severity"] != "DEBUG")
        .map(|entry| {
            format!(
                "{:<28} {:<8} {}",
                entry["id"].as_str().unwrap_or_default(),
                entry["severity"].as_str().unwrap_or_default(),
                entry["finding"].as_str().unwrap_or_default()
            )
        })
        .collect();
    println!("----- testssl findings -----\n{}", summary.join("\n"));
    assert!(
        problems.is_empty(),
        "testssl found problems:\n{}",
        problems.join("\n")
    );
    println!("tls_grade: whole test {:?}", started.elapsed());
}
