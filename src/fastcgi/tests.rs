//! Unit tests of the FastCGI exchange against a fake FastCGI server on a unix socket.

use super::*;
use http_body_util::{Empty, Full};
use tokio::net::UnixListener;

/// A docroot with `index.php` and a FastCGI server socket path in one temp folder.
struct Fixture {
    dir: tempfile::TempDir,
}

/// What the fake server read: the params stream and the body.
#[derive(Default)]
struct Received {
    params: Vec<u8>,
    stdin: Vec<u8>,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("www")).expect("mkdir");
        std::fs::write(dir.path().join("www/index.php"), "<?php").expect("write");
        Self { dir }
    }

    fn target(&self) -> FastcgiTarget {
        FastcgiTarget {
            address: FastcgiAddress::Unix(self.dir.path().join("fpm.sock")),
            root: self.dir.path().join("www"),
            index: "index.php".into(),
            front_controller: Some("/index.php".into()),
            params: Vec::new(),
        }
    }

    /// A one-connection FastCGI server that reads the request, then writes `answer` (records
    /// already encoded) and closes; its task returns what it read.
    fn server(&self, answer: BytesMut) -> tokio::task::JoinHandle<Received> {
        let listener = UnixListener::bind(self.dir.path().join("fpm.sock")).expect("bind");
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut received = Received::default();
            while let Ok(Some(record)) = record::read(&mut stream).await {
                match record.kind {
                    record::kind::PARAMS => received.params.extend(record.content),
                    record::kind::STDIN if record.content.is_empty() => break,
                    record::kind::STDIN => received.stdin.extend(record.content),
                    _ => {}
                }
            }
            let _ = stream.write_all(&answer).await;
            received
        })
    }

    async fn get(&self, path: &str, read: Duration) -> Answer {
        let request = Request::get(path)
            .body(Empty::<Bytes>::new())
            .expect("request");
        serve(
            &self.target(),
            &["index.html".to_owned()],
            request,
            connection(),
            deadlines(read),
        )
        .await
    }
}

fn connection() -> params::Connection {
    params::Connection {
        client: "127.0.0.1".parse().expect("ip"),
        client_port: Some(1234),
        server: None,
    }
}

fn deadlines(read: Duration) -> Deadlines {
    Deadlines {
        connect: Duration::from_secs(2),
        read,
    }
}

fn records(parts: &[(u8, &[u8])]) -> BytesMut {
    let mut out = BytesMut::new();
    for (kind, content) in parts {
        record::encode(&mut out, *kind, content);
    }
    out
}

const END: (u8, &[u8]) = (record::kind::END_REQUEST, &[0; 8]);

#[track_caller]
fn local_status(answer: Answer) -> StatusCode {
    match answer {
        Answer::Local(response) => response.status(),
        Answer::Script(response) => panic!("the script answered {}", response.status()),
    }
}

#[tokio::test]
async fn the_response_is_put_together_from_records_and_streamed() {
    let fixture = Fixture::new();
    let server = fixture.server(records(&[
        (record::kind::STDERR, b"PHP Notice: x\n"),
        (record::kind::STDOUT, b"Status: 201 Created\r\nX-A: 1\r"),
        (record::kind::STDOUT, b"\n\r\nfirst "),
        (record::kind::STDOUT, b"second"),
        END,
    ]));
    let request = Request::post("/index.php/tail?q=1")
        .header(CONTENT_LENGTH, "5")
        .body(Full::new(Bytes::from_static(b"hello")))
        .expect("request");
    let answer = serve(
        &fixture.target(),
        &["index.html".to_owned()],
        request,
        connection(),
        deadlines(Duration::from_secs(5)),
    )
    .await;
    let Answer::Script(response) = answer else {
        panic!("not the script's answer");
    };
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["x-a"], "1");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("whole body")
        .to_bytes();
    assert_eq!(&body[..], b"first second");
    let received = server.await.expect("server");
    assert_eq!(received.stdin, b"hello");
    let params = String::from_utf8_lossy(&received.params).into_owned();
    // Each pair is its two lengths, then the name and the value back to back.
    for expected in ["SCRIPT_NAME/index.php", "PATH_INFO/tail", "CONTENT_LENGTH5"] {
        assert!(params.contains(expected), "{expected:?} in {params:?}");
    }
}

#[tokio::test]
async fn nothing_listening_is_502_and_silence_is_504() {
    let fixture = Fixture::new();
    let answer = fixture.get("/", Duration::from_secs(5)).await;
    assert_eq!(local_status(answer), StatusCode::BAD_GATEWAY);

    // Accepts, reads the request, never answers.
    let listener = UnixListener::bind(fixture.dir.path().join("fpm.sock")).expect("bind");
    let _server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(stream);
    });
    let answer = fixture.get("/", Duration::from_millis(200)).await;
    assert_eq!(local_status(answer), StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test]
async fn an_endless_head_is_502() {
    let fixture = Fixture::new();
    let line =
        b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let mut chunk = Vec::new();
    while chunk.len() < 60_000 {
        chunk.extend_from_slice(line);
    }
    let _server = fixture.server(records(&[
        (record::kind::STDOUT, &chunk),
        (record::kind::STDOUT, &chunk),
        END,
    ]));
    let answer = fixture.get("/", Duration::from_secs(5)).await;
    assert_eq!(local_status(answer), StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn a_server_that_ends_without_a_head_is_502_and_a_cut_body_is_an_error() {
    let fixture = Fixture::new();
    let _server = fixture.server(records(&[END]));
    let answer = fixture.get("/", Duration::from_secs(5)).await;
    assert_eq!(local_status(answer), StatusCode::BAD_GATEWAY);

    let fixture = Fixture::new();
    let _server = fixture.server(records(&[(record::kind::STDOUT, b"\r\n\r\npart")]));
    let Answer::Script(response) = fixture.get("/", Duration::from_secs(5)).await else {
        panic!("not the script's answer");
    };
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.into_body().collect().await.is_err());
}

#[test]
fn addresses_are_unix_sockets_or_host_and_port() {
    assert_eq!(
        FastcgiAddress::parse("unix:/run/php/php8.2-fpm.sock"),
        Ok(FastcgiAddress::Unix("/run/php/php8.2-fpm.sock".into()))
    );
    assert_eq!(
        FastcgiAddress::parse("127.0.0.1:9000"),
        Ok(FastcgiAddress::Tcp("127.0.0.1:9000".into()))
    );
    assert_eq!(
        FastcgiAddress::parse("[::1]:9000"),
        Ok(FastcgiAddress::Tcp("[::1]:9000".into()))
    );
    for bad in [
        "unix:run/php.sock",
        "127.0.0.1",
        ":9000",
        "localhost:0",
        "http://127.0.0.1:9000",
    ] {
        assert!(FastcgiAddress::parse(bad).is_err(), "{bad}");
    }
}
