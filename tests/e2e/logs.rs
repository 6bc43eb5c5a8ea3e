//! `[log]`: certd's own log as one JSON object per line, and the access log in nginx's `combined`
//! format written to a file that logrotate can move away (SIGUSR1 opens it again), checked against the
//! real daemon serving real requests.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, StatusCode};

use crate::harness::{toml_str, Certd, Daemon, HttpsClient, Pebble, RunConfig, Site};

const CERT_WAIT: Duration = Duration::from_secs(30);

/// `GET path` with a Referer and a User-Agent an attacker chose: quotes that would forge fields if
/// they were written as received (HTTP forbids control bytes in header values; hyper refuses them).
fn hostile_request(host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::REFERER, "https://ref.test/page")
        .header(hyper::header::USER_AGENT, "agent\" 200 0 \"-\" \"forged")
        .body(Full::new(Bytes::new()))
        .expect("request")
}

/// The lines of `path`, waiting (bounded) until it has at least `count`: the log thread writes them
/// shortly after the response.
async fn wait_for_lines(path: &Path, count: usize, daemon: &Daemon) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= count {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} has {} lines, waited for {count}:\n{text}\ndaemon log:\n{}",
            path.display(),
            lines.len(),
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The fields of a combined line as a log tool splits it (goaccess' `%h %^[%d:%t %^] "%r" %s %b
/// "%R" "%u"`): client, time, request, status, bytes, referer, user agent.
fn parse_combined(line: &str) -> Option<[String; 7]> {
    let (client, rest) = line.split_once(" - - [")?;
    let (time, rest) = rest.split_once("] \"")?;
    let (request, rest) = rest.split_once("\" ")?;
    let (status, rest) = rest.split_once(' ')?;
    let (bytes, rest) = rest.split_once(" \"")?;
    let (referer, rest) = rest.split_once("\" \"")?;
    let agent = rest.strip_suffix('"')?;
    // No field may hold an unescaped quote: that is what keeps the split above unambiguous.
    if [request, referer, agent]
        .iter()
        .any(|field| field.contains('"'))
    {
        return None;
    }
    Some([client, time, request, status, bytes, referer, agent].map(str::to_owned))
}

#[tokio::test]
async fn json_log_and_a_combined_access_log_file_reopened_on_sigusr1() {
    let pebble = Pebble::start().await;
    let certd = Certd::new();
    let files = certd.dir().join("files");
    std::fs::create_dir_all(&files).expect("create the site's root");
    std::fs::write(files.join("hello.txt"), "hello\n").expect("write a file");
    let config = RunConfig::for_pebble(
        &pebble,
        vec![Site::new(&["log.test"]).root("/", &files.display().to_string())],
    );
    let access = certd.dir().join("access.log");
    certd.write_config_text(&format!(
        "{}\n[log]\nformat = \"json\"\naccess_format = \"combined\"\naccess_file = {}\n",
        config.to_toml(),
        toml_str(&access.display().to_string())
    ));
    let daemon = Daemon::start(&certd, config.https_addr()).await;
    let client = HttpsClient::new(config.https_addr(), &pebble.root_pem().await);
    client.wait_for_certificate("log.test", CERT_WAIT).await;
    let mut connection = client.http1("log.test").await;
    let reply = connection
        .send(hostile_request("log.test", "/hello.txt?x=1"))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = connection.get("log.test", "/missing").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);

    let lines = wait_for_lines(&access, 2, &daemon).await;
    assert_eq!(lines.len(), 2, "one line per request: {lines:#?}");
    let [client_ip, time, request, status, bytes, referer, agent] =
        parse_combined(&lines[0]).unwrap_or_else(|| panic!("not a combined line: {:?}", lines[0]));
    assert_eq!(client_ip, "127.0.0.1");
    let time_local =
        regex::Regex::new(r"^\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} \+0000$").expect("regex");
    assert!(time_local.is_match(&time), "{time}");
    assert_eq!(request, "GET /hello.txt?x=1 HTTP/1.1");
    assert_eq!(status, "200");
    assert_eq!(bytes, "6");
    assert_eq!(referer, "https://ref.test/page");
    assert_eq!(agent, "agent\\x22 200 0 \\x22-\\x22 \\x22forged");
    let missing = parse_combined(&lines[1]).expect("a combined line");
    assert_eq!(missing[2], "GET /missing HTTP/1.1");
    assert_eq!(missing[3], "404");

    // certd's own log: every line one JSON object, fields as keys of their own.
    let log = daemon.log();
    let objects: Vec<serde_json::Value> = log
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: not JSON: {line:?}"))
        })
        .collect();
    let running = objects
        .iter()
        .find(|object| object["message"] == "certd is running")
        .unwrap_or_else(|| panic!("no \"certd is running\" object in:\n{log}"));
    assert_eq!(running["level"], "INFO");
    assert!(running["https"].as_str().is_some(), "{running}");
    assert!(
        !log.contains("/hello.txt"),
        "access lines go to the access file, not the log:\n{log}"
    );

    // logrotate: move the file away, SIGUSR1, and the next line goes to a new file of that name.
    let rotated = certd.dir().join("access.log.1");
    std::fs::rename(&access, &rotated).expect("rotate the access log");
    daemon.signal("USR1");
    daemon
        .wait_for_log("access log reopened", Duration::from_secs(10))
        .await;
    let reply = connection.get("log.test", "/after-rotation").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let lines = wait_for_lines(&access, 1, &daemon).await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains("\"GET /after-rotation HTTP/1.1\" 404"),
        "{lines:#?}"
    );
    let old = std::fs::read_to_string(&rotated).expect("the rotated file");
    assert_eq!(old.lines().count(), 2, "{old}");
}

#[tokio::test]
async fn json_access_lines_on_stderr_keep_every_field() {
    let pebble = Pebble::start().await;
    let certd = Certd::new();
    let config = RunConfig::for_pebble(&pebble, vec![Site::new(&["json.test"])]);
    certd.write_config_text(&format!(
        "{}\n[log]\naccess_format = \"json\"\n",
        config.to_toml()
    ));
    let daemon = Daemon::start(&certd, config.https_addr()).await;
    let client = HttpsClient::new(config.https_addr(), &pebble.root_pem().await);
    client.wait_for_certificate("json.test", CERT_WAIT).await;
    let mut connection = client.http1("json.test").await;
    let reply = connection
        .send(hostile_request("json.test", "/nothing"))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    daemon
        .wait_for_log("\"path\":\"/nothing\"", Duration::from_secs(10))
        .await;
    let log = daemon.log();
    let line = log
        .lines()
        .find(|line| line.contains("\"path\":\"/nothing\""))
        .unwrap_or_default();
    let access: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line:?}"));
    assert_eq!(access["client"], "127.0.0.1");
    assert_eq!(access["site"], "json.test");
    assert_eq!(access["host"], "json.test");
    assert_eq!(access["method"], "GET");
    assert_eq!(access["protocol"], "HTTP/1.1");
    assert_eq!(access["status"], 404);
    assert_eq!(access["referer"], "https://ref.test/page");
    assert_eq!(access["user_agent"], "agent\" 200 0 \"-\" \"forged");
    assert!(access["ms"].as_u64().is_some(), "{access}");
    assert!(
        access["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{access}"
    );
}
