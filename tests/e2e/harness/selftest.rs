//! Checks of the harness itself, independent of certd's own code: Pebble starts and serves its
//! directory and roots, and a plain instant-acme client answering HTTP-01 on `Pebble::http_port` gets a
//! certificate that the harness's checks accept (and the wrong root or key is rejected). If these fail,
//! the problem is the environment or the harness, not certd. Run with `cargo test --test e2e harness`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, RetryPolicy,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::{
    key_matches, sans, serial_hex, verify_chain, Pebble, CONNECTION_PROBLEM, REFUSED_DETAIL,
};

#[tokio::test]
async fn pebble_serves_directory_and_roots() {
    let pebble = Pebble::start().await;

    let directory: serde_json::Value =
        serde_json::from_str(&pebble.acme_get("/dir").await).expect("directory is JSON");
    for key in ["newNonce", "newAccount", "newOrder"] {
        let url = directory[key]
            .as_str()
            .unwrap_or_else(|| panic!("directory lacks {key}: {directory:#}"));
        assert!(
            url.starts_with(&format!("https://127.0.0.1:{}/", pebble.acme_port)),
            "{key}: {url}"
        );
    }

    let root = pebble.root_pem().await;
    let intermediate = pebble.intermediate_pem().await;
    assert!(root.contains("BEGIN CERTIFICATE"), "{root}");
    assert!(intermediate.contains("BEGIN CERTIFICATE"), "{intermediate}");
    assert_ne!(root, intermediate);
    assert_eq!(pebble.issued_count(), 0);
}

#[tokio::test]
async fn pebble_validates_http01_on_http_port() {
    let pebble = Pebble::start().await;
    let names = ["harness.test", "www.harness.test"];
    let (fullchain, key_pem) = order_with_instant_acme(&pebble, &names, true)
        .await
        .unwrap_or_else(|problems| panic!("order failed: {problems:?}"));

    let root = pebble.root_pem().await;
    for name in names {
        verify_chain(&fullchain, &root, name).expect("chain verifies against Pebble's root");
    }
    assert!(
        verify_chain(&fullchain, &root, "other.test").is_err(),
        "a name outside the SANs must fail"
    );
    assert!(
        verify_chain(&fullchain, &pebble.pki().ca_pem, names[0]).is_err(),
        "a chain must not verify against an unrelated root"
    );
    assert_eq!(sans(&fullchain), names);
    assert!(key_matches(&fullchain, &key_pem));
    let other_key = rcgen::KeyPair::generate().expect("key").serialize_pem();
    assert!(!key_matches(&fullchain, &other_key));
    assert!(!serial_hex(&fullchain).is_empty());
    assert_eq!(pebble.issued_count(), 1);
    assert_eq!(pebble.account_count(), 1);
}

/// What certd's failure test relies on: with nothing listening on the validation port, Pebble fails the
/// challenge with a `connection` problem whose detail says the connection was refused.
#[tokio::test]
async fn pebble_reports_connection_problem_when_nothing_listens() {
    let pebble = Pebble::start().await;
    let problems = order_with_instant_acme(&pebble, &["refused.test"], false)
        .await
        .map(|_| ())
        .expect_err("validation must fail with nothing listening");
    let problem = problems.first().expect("a challenge problem");
    assert_eq!(
        problem.r#type.as_deref(),
        Some(CONNECTION_PROBLEM),
        "{problems:?}"
    );
    let detail = problem.detail.as_deref().unwrap_or_default();
    assert!(detail.contains(REFUSED_DETAIL), "{problems:?}");
    assert_eq!(pebble.issued_count(), 0);
}

/// Orders a certificate for `names` with instant-acme, answering HTTP-01 on `127.0.0.1:<http_port>`
/// when `answer` (otherwise nothing listens there). Returns the full chain and the key, as PEM, or the
/// problems Pebble recorded on the challenges.
async fn order_with_instant_acme(
    pebble: &Pebble,
    names: &[&str],
    answer: bool,
) -> Result<(String, String), Vec<instant_acme::Problem>> {
    let tokens: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let responder = if answer {
        let listener = TcpListener::bind(("127.0.0.1", pebble.http_port))
            .await
            .expect("bind http port");
        Some(tokio::spawn(serve_http01(listener, tokens.clone())))
    } else {
        None
    };

    let (account, _) = Account::builder_with_root(pebble.ca_roots_path())
        .expect("account builder")
        .create(
            &NewAccount {
                contact: &["mailto:ops@certd-e2e.example.com"],
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            pebble.directory_url(),
            None,
        )
        .await
        .expect("create account");
    let identifiers: Vec<Identifier> = names
        .iter()
        .map(|name| Identifier::Dns((*name).to_owned()))
        .collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .expect("new order");

    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.expect("authorization");
        if authz.status != AuthorizationStatus::Pending {
            continue;
        }
        let mut challenge = authz
            .challenge(ChallengeType::Http01)
            .expect("an http-01 challenge");
        let key_authorization = challenge.key_authorization().as_str().to_owned();
        tokens
            .lock()
            .expect("tokens lock")
            .insert(challenge.token.clone(), key_authorization);
        challenge.set_ready().await.expect("set ready");
    }

    let retry = RetryPolicy::new().timeout(Duration::from_secs(30));
    let status = match order.poll_ready(&retry).await {
        Ok(status) => status,
        // Pebble puts the failed challenge's problem on the order itself.
        Err(instant_acme::Error::Api(problem)) => return Err(vec![problem]),
        Err(err) => panic!("polling the order: {err}"),
    };
    if status != instant_acme::OrderStatus::Ready {
        let mut problems = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let authz = authz.expect("authorization");
            problems.extend(
                authz
                    .challenges
                    .iter()
                    .filter_map(|challenge| challenge.error.clone()),
            );
        }
        return Err(problems);
    }

    let key = rcgen::KeyPair::generate().expect("certificate key");
    let csr =
        rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .expect("CSR params")
            .serialize_request(&key)
            .expect("CSR");
    order.finalize_csr(csr.der()).await.expect("finalize");
    let fullchain = order.poll_certificate(&retry).await.expect("certificate");
    if let Some(responder) = responder {
        responder.abort();
    }
    Ok((fullchain, key.serialize_pem()))
}

/// A minimal HTTP-01 responder: answers `GET /.well-known/acme-challenge/<token>` from `tokens`.
async fn serve_http01(listener: TcpListener, tokens: Arc<Mutex<HashMap<String, String>>>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let tokens = tokens.clone();
        tokio::spawn(async move {
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let request = String::from_utf8_lossy(&request);
            let path = request.split_whitespace().nth(1).unwrap_or_default();
            let body = path
                .strip_prefix("/.well-known/acme-challenge/")
                .and_then(|token| tokens.lock().expect("tokens lock").get(token).cloned());
            let response = match body {
                Some(body) => format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                ),
                None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
            };
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}
