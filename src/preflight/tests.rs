//! Preflight tests: the messages, resolv.conf parsing, and whole checks against a fake DNS server and
//! fake HTTP servers on loopback addresses (127.0.0.2 and up share the self-test listener's port).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

use super::*;
use crate::plain_http::ChallengeResponder;

#[test]
fn resolv_conf_nameservers_in_order() {
    let text =
        "# generated\nsearch example.org\nnameserver 127.0.0.53\n  nameserver   2001:db8::1 \n\
                nameserver fe80::1%eth0\noptions edns0\nnameserver\nnameservers 10.0.0.1\n";
    let expected: Vec<IpAddr> = vec![
        "127.0.0.53".parse().unwrap(),
        "2001:db8::1".parse().unwrap(),
    ];
    assert_eq!(parse_resolv_conf(text), expected);
    assert!(parse_resolv_conf("").is_empty());
}

#[test]
fn snippets_collapse_whitespace_and_are_bounded() {
    assert_eq!(probe::snippet("  a\r\n\tb  "), "a b");
    let long = "x".repeat(100);
    let cut = probe::snippet(&long);
    assert_eq!(cut.chars().count(), 61);
    assert!(cut.ends_with('…'));
}

#[test]
fn messages_say_what_is_wrong_and_what_to_do() {
    let cases = [
        (
            NameProblem::NoAddress {
                name: "www.a.test".into(),
                resolver: "127.0.0.1:8053".into(),
                nxdomain: true,
            },
            "www.a.test: no A or AAAA record (the resolver 127.0.0.1:8053 answered NXDOMAIN: the \
             name does not exist); add a record pointing at this server",
        ),
        (
            NameProblem::NoAddress {
                name: "a.test".into(),
                resolver: "127.0.0.1:8053".into(),
                nxdomain: false,
            },
            "a.test: no A or AAAA record (the resolver 127.0.0.1:8053 answered NOERROR with no \
             address records); add a record pointing at this server",
        ),
        (
            NameProblem::ForeignAnswer {
                name: "a.test".into(),
                addr: "203.0.113.7:80".parse().unwrap(),
                status: 404,
                server: Some("nginx".into()),
                location: None,
                body_snippet: "Not Found".into(),
            },
            "a.test: 203.0.113.7:80 (A record) answered 404 (Server: nginx) \"Not Found\" instead \
             of certd's self-test token: another server is listening on port 80, or the record \
             points elsewhere",
        ),
        (
            NameProblem::ForeignAnswer {
                name: "a.test".into(),
                addr: "[2001:db8::1]:80".parse().unwrap(),
                status: 301,
                server: None,
                location: Some("https://a.test/".into()),
                body_snippet: String::new(),
            },
            "a.test: [2001:db8::1]:80 (AAAA record) answered 301 redirecting to https://a.test/ \
             with an empty body instead of certd's self-test token: another server is listening \
             on port 80, or the record points elsewhere (the CA tries IPv6 first: fix or remove \
             the AAAA record)",
        ),
        (
            NameProblem::Unreachable {
                name: "a.test".into(),
                addr: "[2001:db8::1]:80".parse().unwrap(),
                reason: "connection refused".into(),
                listen_hint: None,
            },
            "a.test: [2001:db8::1]:80 (AAAA record) cannot be reached: connection refused (the CA \
             tries IPv6 first: fix or remove the AAAA record)",
        ),
        (
            NameProblem::Unreachable {
                name: "a.test".into(),
                addr: "[2001:db8::1]:80".parse().unwrap(),
                reason: "connection refused".into(),
                listen_hint: Some("[::]:80".parse().unwrap()),
            },
            "a.test: [2001:db8::1]:80 (AAAA record) cannot be reached: connection refused; it is \
             this machine's address but [http].listen does not include it: add \"[::]:80\" (the \
             CA tries IPv6 first: fix or remove the AAAA record)",
        ),
        (
            NameProblem::Resolve {
                name: "a.test".into(),
                record: RecordType::Aaaa,
                resolver: "127.0.0.1:8053".into(),
                failure: DnsFailure::Answered("SERVFAIL".into()),
            },
            "a.test: cannot look up its AAAA record: the resolver 127.0.0.1:8053 answered \
             SERVFAIL; fix the domain's DNS servers (or its DNSSEC): the CA's lookup will fail \
             the same way",
        ),
    ];
    for (problem, expected) in cases {
        assert_eq!(problem.to_string(), expected);
        assert!(!problem.to_string().contains('\n'));
    }
    let error = PreflightError {
        site: "a.test".into(),
        problems: vec![
            NameProblem::TimedOut {
                name: "a.test".into(),
                after: Duration::from_secs(20),
            },
            NameProblem::NoHttpAnswer {
                name: "www.a.test".into(),
                addr: "192.0.2.1:80".parse().unwrap(),
                reason: "invalid HTTP version parsed".into(),
            },
        ],
    };
    let lines: Vec<String> = error.to_string().lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{error}");
    assert!(lines[0].starts_with("a.test: the preflight checks did not finish within 20s"));
    assert!(lines[1].starts_with(
        "www.a.test: 192.0.2.1:80 (A record) accepted the connection but gave no HTTP answer \
         (invalid HTTP version parsed): another program is listening on port 80"
    ));
}

/// What the fake DNS server answers for a name.
#[derive(Clone)]
enum Answer {
    /// These addresses (A or AAAA as the query asks; NOERROR with none of the other family).
    Addresses(Vec<IpAddr>),
    /// An error response code (3 NXDOMAIN, 2 SERVFAIL, …).
    Rcode(u8),
    /// Nothing at all.
    Silent,
}

/// A UDP DNS server on 127.0.0.1 answering A and AAAA queries from a fixed table; NXDOMAIN for names
/// not in it. Its task is aborted on drop.
struct FakeDns {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeDns {
    async fn start(table: &[(&str, Answer)]) -> Self {
        let table: HashMap<String, Answer> = table
            .iter()
            .map(|(name, answer)| ((*name).to_owned(), answer.clone()))
            .collect();
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                if let Some(reply) = answer(&buf[..len], &table) {
                    let _ = socket.send_to(&reply, peer).await;
                }
            }
        });
        Self { addr, task }
    }
}

/// The reply to one query, or `None` to stay silent.
fn answer(query: &[u8], table: &HashMap<String, Answer>) -> Option<Vec<u8>> {
    // The question: labels from offset 12 up to the root, then QTYPE and QCLASS.
    let mut at = 12;
    let mut labels = Vec::new();
    while *query.get(at)? != 0 {
        let len = usize::from(query[at]);
        labels.push(String::from_utf8_lossy(query.get(at + 1..at + 1 + len)?).to_lowercase());
        at += 1 + len;
    }
    let question_end = at + 5;
    let qtype = u16::from_be_bytes([*query.get(at + 1)?, *query.get(at + 2)?]);
    let name = labels.join(".");
    let (rcode, addresses) = match table.get(&name) {
        None => (3, Vec::new()),
        Some(Answer::Silent) => return None,
        Some(Answer::Rcode(code)) => (*code, Vec::new()),
        Some(Answer::Addresses(all)) => (0, all.clone()),
    };
    let records: Vec<Vec<u8>> = addresses
        .iter()
        .filter_map(|ip| match (ip, qtype) {
            (IpAddr::V4(v4), 1) => Some(v4.octets().to_vec()),
            (IpAddr::V6(v6), 28) => Some(v6.octets().to_vec()),
            _ => None,
        })
        .collect();
    let mut reply = Vec::new();
    reply.extend_from_slice(&query[..2]); // the id
    reply.extend_from_slice(&[0x81, 0x80 | rcode]); // QR, RD, RA, the code
    reply.extend_from_slice(&[0, 1]);
    reply.extend_from_slice(&u16::try_from(records.len()).ok()?.to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0]);
    reply.extend_from_slice(query.get(12..question_end)?);
    for rdata in records {
        reply.extend_from_slice(&[0xc0, 12]); // the name, pointing at the question's
        reply.extend_from_slice(&qtype.to_be_bytes());
        reply.extend_from_slice(&[0, 1, 0, 0, 0, 60]); // IN, TTL 60
        reply.extend_from_slice(&u16::try_from(rdata.len()).ok()?.to_be_bytes());
        reply.extend_from_slice(&rdata);
    }
    Some(reply)
}

/// A TCP server answering every connection with `response` (raw bytes), or with nothing at all (the
/// connection is held open) when `response` is `None`. Its task is aborted on drop.
struct FakeHttp {
    task: JoinHandle<()>,
}

impl Drop for FakeHttp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeHttp {
    async fn start(addr: SocketAddr, response: Option<&'static str>) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                match response {
                    Some(response) => {
                        tokio::spawn(async move {
                            let mut buf = [0u8; 2048];
                            let _ = stream.read(&mut buf).await;
                            let _ = stream.write_all(response.as_bytes()).await;
                            let _ = stream.shutdown().await;
                        });
                    }
                    None => held.push(stream),
                }
            }
        });
        Self { task }
    }
}

const NGINX_404: &str =
    "HTTP/1.1 404 Not Found\r\nServer: nginx/1.22.1\r\nContent-Type: text/html\r\n\
    Content-Length: 153\r\nConnection: close\r\n\r\n<html>\r\n<head><title>404 Not Found</title>\
    </head>\r\n<body>\r\n<center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx/1.22.1\
    </center>\r\n</body>\r\n</html>\r\n";

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A configuration listening on `listen`, resolving through `dns`, with the given sites.
fn config(listen: SocketAddr, dns: SocketAddr, sites: &[&[&str]]) -> Config {
    let mut text =
        String::from("[acme]\ndirectory = \"https://127.0.0.1:9/dir\"\nagree_tos = true\n");
    text += &format!("[http]\nlisten = [\"{listen}\"]\n[preflight]\nresolver = \"{dns}\"\n");
    for names in sites {
        let names: Vec<String> = names.iter().map(|name| format!("\"{name}\"")).collect();
        text += &format!("[[site]]\nnames = [{}]\n", names.join(", "));
    }
    crate::config::from_toml(&text, Path::new("/test/certd.toml")).unwrap()
}

/// A self-test listener on 127.0.0.1 at a port that is also free on 127.0.0.2 to 127.0.0.4.
async fn responder(tokens: &ChallengeTokens) -> ChallengeResponder {
    for _ in 0..20 {
        let responder =
            ChallengeResponder::start(&["127.0.0.1:0".parse().unwrap()], tokens.clone())
                .await
                .unwrap();
        let port = responder.local_addrs()[0].port();
        let free = (2..=4).all(|last| std::net::TcpListener::bind((loopback(last), port)).is_ok());
        if free {
            return responder;
        }
        responder.shutdown().await;
    }
    panic!("no port free on 127.0.0.1 to 127.0.0.4");
}

/// Shorter timeouts, for the silent resolver and the server that never answers (still generous for a
/// loaded CI machine).
fn fast(mut preflight: Preflight) -> Preflight {
    preflight.dns_timeout = Duration::from_millis(800);
    preflight.address_timeout = Duration::from_millis(1500);
    preflight.name_timeout = Duration::from_secs(10);
    preflight
}

#[tokio::test]
async fn a_name_that_reaches_this_process_passes_and_the_token_is_withdrawn() {
    let dns = FakeDns::start(&[
        ("a.test", Answer::Addresses(vec![loopback(1)])),
        ("www.a.test", Answer::Addresses(vec![loopback(1)])),
    ])
    .await;
    let tokens = ChallengeTokens::default();
    let responder = responder(&tokens).await;
    let listen = responder.local_addrs()[0];
    let config = config(listen, dns.addr, &[&["a.test", "www.a.test"]]);
    let preflight = Preflight::new(&config);
    assert_eq!(preflight.http_port(), listen.port());
    preflight
        .check_site(&config.sites[0], &tokens)
        .await
        .unwrap();
    assert!(tokens.is_empty(), "self-test tokens must be withdrawn");
    responder.shutdown().await;
}

#[tokio::test]
async fn every_problem_of_every_name_is_reported_in_name_order() {
    let dns = FakeDns::start(&[
        ("ok.test", Answer::Addresses(vec![loopback(1)])),
        ("nginx.test", Answer::Addresses(vec![loopback(2)])),
        ("silent.test", Answer::Addresses(vec![loopback(3)])),
        ("other-certd.test", Answer::Addresses(vec![loopback(4)])),
        (
            "v6.test",
            Answer::Addresses(vec![loopback(1), "::1".parse().unwrap()]),
        ),
        ("empty.test", Answer::Addresses(Vec::new())),
        ("broken.test", Answer::Rcode(2)),
    ])
    .await;
    let tokens = ChallengeTokens::default();
    let responder = responder(&tokens).await;
    let listen = responder.local_addrs()[0];
    let port = listen.port();
    let _nginx = FakeHttp::start(SocketAddr::new(loopback(2), port), Some(NGINX_404)).await;
    let _silent = FakeHttp::start(SocketAddr::new(loopback(3), port), None).await;
    let other = ChallengeResponder::start(
        &[SocketAddr::new(loopback(4), port)],
        ChallengeTokens::default(),
    )
    .await
    .unwrap();
    let names = [
        "ok.test",
        "nginx.test",
        "silent.test",
        "other-certd.test",
        "v6.test",
        "missing.test",
        "empty.test",
        "broken.test",
    ];
    let config = config(listen, dns.addr, &[&names]);
    let preflight = fast(Preflight::new(&config));
    let err = preflight
        .check_site(&config.sites[0], &tokens)
        .await
        .unwrap_err();
    assert_eq!(err.site, "ok.test");
    let text = err.to_string();
    let problem_names: Vec<&str> = err.problems.iter().map(NameProblem::name).collect();
    assert_eq!(
        problem_names,
        [
            "nginx.test",
            "silent.test",
            "other-certd.test",
            "v6.test",
            "missing.test",
            "empty.test",
            "broken.test",
            "broken.test",
        ],
        "{text}"
    );
    let resolver = dns.addr.to_string();
    let nginx = SocketAddr::new(loopback(2), port);
    assert!(
        matches!(&err.problems[0], NameProblem::ForeignAnswer { addr, status: 404, server: Some(server), body_snippet, .. }
            if *addr == nginx && server == "nginx/1.22.1" && body_snippet.contains("404 Not Found")),
        "{text}"
    );
    assert!(
        matches!(&err.problems[1], NameProblem::NoHttpAnswer { addr, .. } if addr.ip() == loopback(3)),
        "{text}"
    );
    assert!(
        err.problems[2]
            .to_string()
            .contains("another certd answered"),
        "{text}"
    );
    let v6 = SocketAddr::new("::1".parse().unwrap(), port);
    assert_eq!(
        err.problems[3],
        NameProblem::Unreachable {
            name: "v6.test".into(),
            addr: v6,
            reason: "connection refused".into(),
            listen_hint: Some(SocketAddr::new("::".parse().unwrap(), port)),
        },
        "{text}"
    );
    assert_eq!(
        err.problems[4],
        NameProblem::NoAddress {
            name: "missing.test".into(),
            resolver: resolver.clone(),
            nxdomain: true,
        }
    );
    assert_eq!(
        err.problems[5],
        NameProblem::NoAddress {
            name: "empty.test".into(),
            resolver: resolver.clone(),
            nxdomain: false,
        }
    );
    for (problem, record) in err.problems[6..]
        .iter()
        .zip([RecordType::A, RecordType::Aaaa])
    {
        assert_eq!(
            *problem,
            NameProblem::Resolve {
                name: "broken.test".into(),
                record,
                resolver: resolver.clone(),
                failure: DnsFailure::Answered("SERVFAIL".into()),
            }
        );
    }
    assert!(tokens.is_empty(), "self-test tokens must be withdrawn");
    other.shutdown().await;
    responder.shutdown().await;
}

#[tokio::test]
async fn a_silent_resolver_is_a_timeout_and_the_dns_only_check_skips_http() {
    let dns = FakeDns::start(&[
        ("quiet.test", Answer::Silent),
        // Nothing listens on 127.0.0.2 at all: only the HTTP half would notice.
        ("elsewhere.test", Answer::Addresses(vec![loopback(2)])),
    ])
    .await;
    let listen = SocketAddr::new(loopback(1), 9);
    let config = config(listen, dns.addr, &[&["quiet.test"], &["elsewhere.test"]]);
    let preflight = fast(Preflight::new(&config));
    let err = preflight
        .check_site_dns(&config.sites[0])
        .await
        .unwrap_err();
    assert_eq!(err.problems.len(), 2, "{err}");
    assert!(
        err.problems.iter().all(|problem| matches!(
            problem,
            NameProblem::Resolve {
                failure: DnsFailure::TimedOut(_),
                ..
            }
        )),
        "{err}"
    );
    assert!(
        err.to_string().contains("no answer from the resolver"),
        "{err}"
    );
    preflight.check_site_dns(&config.sites[1]).await.unwrap();
}

#[tokio::test]
async fn an_address_that_refuses_is_unreachable_with_advice() {
    // 127.0.0.2 is this machine's, but a listener on 127.0.0.1 does not cover it.
    let dns = FakeDns::start(&[("a.test", Answer::Addresses(vec![loopback(2)]))]).await;
    let tokens = ChallengeTokens::default();
    let responder = responder(&tokens).await;
    let listen = responder.local_addrs()[0];
    let config = config(listen, dns.addr, &[&["a.test"]]);
    let err = fast(Preflight::new(&config))
        .check_site(&config.sites[0], &tokens)
        .await
        .unwrap_err();
    let expected = format!(
        "a.test: 127.0.0.2:{port} (A record) cannot be reached: connection refused; it is this \
         machine's address but [http].listen does not include it: add \"0.0.0.0:{port}\"",
        port = listen.port()
    );
    assert_eq!(err.to_string(), expected);
    responder.shutdown().await;
}

#[test]
fn listen_coverage_follows_the_address_family() {
    let port = 80;
    let at = |text: &str| -> SocketAddr { text.parse().unwrap() };
    assert!(listen_covers(&[at("0.0.0.0:80")], at("203.0.113.7:80")));
    assert!(!listen_covers(&[at("0.0.0.0:80")], at("[2001:db8::1]:80")));
    assert!(listen_covers(&[at("[::]:80")], at("[2001:db8::1]:80")));
    assert!(listen_covers(
        &[at("127.0.0.1:80")],
        SocketAddr::new(loopback(1), port)
    ));
    assert!(!listen_covers(&[at("127.0.0.1:80")], at("127.0.0.2:80")));
    assert!(!listen_covers(&[at("127.0.0.1:8080")], at("127.0.0.1:80")));
}
