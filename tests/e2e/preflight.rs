//! `certd check --preflight` end to end, with challtestsrv (Pebble's DNS) as `[preflight] resolver`:
//! a name that resolves to certd's own listener passes; a name pointed at another HTTP server, an AAAA
//! record nothing listens on, a name without records and a port held by another program are each
//! reported on one line that names the address and what answered, with exit code 1. Beside a running
//! `certd run` (which holds the port) only DNS is checked.
//!
//! challtestsrv answers A 127.0.0.1 for every name unless told otherwise through its management API
//! ([`Pebble::challtestsrv`]), and certd's self-test listener runs on `127.0.0.1:<http_port>`, where
//! Pebble validates too.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::harness::{Certd, CertdConfig, Daemon, Pebble, Run, RunConfig, Site};

/// A `certd.toml` for `sites` that orders from `pebble` and resolves through its challtestsrv.
fn certd_for(pebble: &Pebble, sites: &[&[&str]]) -> Certd {
    let text = CertdConfig::for_pebble(pebble, sites).to_toml();
    let certd = Certd::new();
    certd.write_config_text(&text);
    certd
}

async fn check_preflight(certd: &Certd) -> Run {
    certd.run("check", &["--preflight"]).await
}

/// The one stderr message that starts with `name: ` (panics unless there is exactly one).
#[track_caller]
fn problem<'a>(run: &'a Run, name: &str) -> &'a str {
    let prefix = format!("{name}: ");
    let found: Vec<&str> = run
        .stderr_messages()
        .into_iter()
        .filter(|line| line.starts_with(&prefix))
        .collect();
    assert_eq!(found.len(), 1, "one problem line for {name}\n{run}");
    found[0]
}

/// Another HTTP server on `addr`, answering every request like a default nginx: 404. Aborted on drop.
struct OtherServer(JoinHandle<()>);

impl OtherServer {
    async fn start(addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr)
            .await
            .expect("bind the other server");
        Self(tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = stream.read(&mut request).await;
                    let body = "<html><body><h1>404 Not Found</h1>nginx</body></html>";
                    let response = format!(
                        "HTTP/1.1 404 Not Found\r\nServer: nginx\r\nContent-Length: {}\r\n\
                         Connection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        }))
    }
}

impl Drop for OtherServer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[tokio::test]
async fn preflight_passes_when_every_name_reaches_this_certd() {
    let pebble = Pebble::start().await;
    let certd = certd_for(&pebble, &[&["a.test", "www.a.test"], &["b.test"]]);
    let run = check_preflight(&certd).await;
    run.expect_code(0);
    for (site, count) in [("a.test", 2), ("b.test", 1)] {
        let line = format!(
            "{site}: preflight OK: every name ({count}) resolves and reaches this certd on port {}",
            pebble.http_port
        );
        assert!(run.stdout.lines().any(|l| l == line), "{line:?}\n{run}");
    }
    // A check writes nothing.
    assert!(!certd.state_dir().exists(), "check must not create state");
}

#[tokio::test]
async fn preflight_names_another_server_answering_on_the_port() {
    let pebble = Pebble::start().await;
    let other_addr = SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2), pebble.http_port));
    let _other = OtherServer::start(other_addr).await;
    pebble
        .challtestsrv(
            "/add-a",
            json!({"host": "b.test", "addresses": ["127.0.0.2"]}),
        )
        .await;
    let certd = certd_for(&pebble, &[&["a.test"], &["b.test"]]);
    let run = check_preflight(&certd).await;
    run.expect_code(1);
    let line = problem(&run, "b.test");
    let expected = format!(
        "b.test: {other_addr} (A record) answered 404 (Server: nginx) \"<html><body><h1>404 Not \
         Found</h1>nginx</body></html>\" instead of certd's self-test token: another server is \
         listening on port {}, or the record points elsewhere",
        pebble.http_port
    );
    assert_eq!(line, expected, "\n{run}");
    // The other site is still checked, and passes.
    assert!(
        run.stdout.contains("a.test: preflight OK"),
        "a.test must pass\n{run}"
    );
}

#[tokio::test]
async fn preflight_names_an_aaaa_record_nothing_answers_on() {
    let pebble = Pebble::start().await;
    // The A record (127.0.0.1, challtestsrv's default) reaches certd; the AAAA record does not, since
    // certd listens on 127.0.0.1 only. The CA tries IPv6 first, so that alone fails the name.
    pebble
        .challtestsrv("/add-aaaa", json!({"host": "c.test", "addresses": ["::1"]}))
        .await;
    let certd = certd_for(&pebble, &[&["c.test"]]);
    let run = check_preflight(&certd).await;
    run.expect_code(1);
    let line = problem(&run, "c.test");
    let port = pebble.http_port;
    assert!(
        line.starts_with(&format!(
            "c.test: [::1]:{port} (AAAA record) cannot be reached: connection refused"
        )),
        "{line}\n{run}"
    );
    assert!(
        line.contains(&format!(
            "[http].listen does not include it: add \"[::]:{port}\""
        )),
        "{line}\n{run}"
    );
    assert!(
        line.ends_with("(the CA tries IPv6 first: fix or remove the AAAA record)"),
        "{line}\n{run}"
    );
}

#[tokio::test]
async fn preflight_names_a_name_without_address_records() {
    let pebble = Pebble::start().await;
    // challtestsrv now answers NOERROR without records for every name that has none of its own.
    pebble
        .challtestsrv("/set-default-ipv4", json!({"ip": ""}))
        .await;
    let certd = certd_for(&pebble, &[&["d.test", "www.d.test"]]);
    let run = check_preflight(&certd).await;
    run.expect_code(1);
    for name in ["d.test", "www.d.test"] {
        let expected = format!(
            "{name}: no A or AAAA record (the resolver {} answered NOERROR with no address \
             records); add a record pointing at this server",
            pebble.dns_addr()
        );
        assert_eq!(problem(&run, name), expected, "\n{run}");
    }
}

#[tokio::test]
async fn preflight_reports_a_held_port_and_still_checks_dns() {
    let pebble = Pebble::start().await;
    let _held = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, pebble.http_port))
        .expect("hold the http port");
    let certd = certd_for(&pebble, &[&["a.test"]]);
    let run = check_preflight(&certd).await;
    run.expect_code(1);
    let messages = run.stderr_messages();
    assert!(
        messages.iter().any(
            |line| line.starts_with("preflight: cannot listen for HTTP-01")
                && line.contains("the HTTP self-test is skipped, DNS is still checked")
        ),
        "{run}"
    );
    assert!(
        run.stdout.contains(
            "a.test: preflight OK for DNS: every name (1) resolves (HTTP self-test skipped)"
        ),
        "{run}"
    );
}

#[tokio::test]
async fn preflight_beside_a_running_daemon_checks_dns_only() {
    let pebble = Pebble::start().await;
    let certd = Certd::new();
    let config = RunConfig::for_pebble(&pebble, vec![Site::new(&["a.test"])]);
    let text = config.to_toml();
    certd.write_config_text(&text);
    let _daemon = Daemon::start(&certd, config.https_addr()).await;
    let socket = certd.state_dir().join("control.sock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::UnixStream::connect(&socket).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "no control socket at {}",
            socket.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let run = check_preflight(&certd).await;
    run.expect_code(0);
    let held = format!(
        "preflight: port {} is held by the running `certd run`",
        pebble.http_port
    );
    assert!(
        run.stderr_messages()
            .iter()
            .any(|line| line.starts_with(&held)),
        "{run}"
    );
    assert!(
        run.stdout.contains(
            "a.test: preflight OK for DNS: every name (1) resolves (HTTP self-test skipped)"
        ),
        "{run}"
    );
}

#[tokio::test]
async fn an_invalid_config_is_still_exit_2_with_preflight() {
    let certd = Certd::new();
    certd.write_config_text("[acme]\ndirectory = \"letsencrypt\"\n");
    let run = check_preflight(&certd).await;
    run.expect_code(2);
}
