//! The HTTP half of preflight: one self-test request to one address, the way the CA sends it
//! (`GET /.well-known/acme-challenge/<token>`, `Host: <name>`), and what came back when it was not the
//! expected key authorization.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{HeaderValue, CONNECTION, HOST, LOCATION, SERVER, USER_AGENT};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

/// How much of an answer body is read; the expected key authorization is far shorter.
const BODY_LIMIT: usize = 4096;
/// How many characters of a foreign answer's body a message quotes.
const SNIPPET_CHARS: usize = 60;

/// One HTTP self-test request, sent to each address of a name.
#[derive(Debug)]
pub(super) struct Probe {
    /// The name, sent as `Host`.
    pub(super) name: String,
    /// `/.well-known/acme-challenge/<token>`.
    pub(super) path: String,
    /// The key authorization published for the token.
    pub(super) expected: String,
    /// For connecting, and again for the whole answer.
    pub(super) timeout: Duration,
}

/// Why an address did not give back the self-test token.
#[derive(Debug)]
pub(super) enum ProbeFailure {
    /// No connection: refused, timed out, no route.
    Unreachable(String),
    /// Connected, but no HTTP answer came.
    NoHttp(String),
    /// An HTTP answer that is not the token's.
    Foreign {
        status: u16,
        server: Option<String>,
        location: Option<String>,
        body_snippet: String,
    },
}

impl Probe {
    /// GETs the token path from `addr`; `Ok` when the answer is 200 with the expected key
    /// authorization (trailing whitespace ignored, as the CA does). Redirects are not followed: certd
    /// never redirects a challenge path, so a redirect is another server's answer.
    pub(super) async fn run(&self, addr: SocketAddr) -> Result<(), ProbeFailure> {
        let within = super::problem::duration(self.timeout);
        let stream = match tokio::time::timeout(self.timeout, TcpStream::connect(addr)).await {
            Err(_) => {
                let reason = format!("no answer within {within}");
                return Err(ProbeFailure::Unreachable(reason));
            }
            Ok(Err(err)) => return Err(ProbeFailure::Unreachable(io_reason(&err))),
            Ok(Ok(stream)) => stream,
        };
        match tokio::time::timeout(self.timeout, self.exchange(stream, addr.port())).await {
            Err(_) => Err(ProbeFailure::NoHttp(format!(
                "no complete answer within {within}"
            ))),
            Ok(result) => result,
        }
    }

    async fn exchange(&self, stream: TcpStream, port: u16) -> Result<(), ProbeFailure> {
        let no_http = |err: hyper::Error| ProbeFailure::NoHttp(err.to_string());
        let request = self.request(port)?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                .await
                .map_err(no_http)?;
        let exchange = async {
            let response = sender.send_request(request).await.map_err(no_http)?;
            let status = response.status().as_u16();
            let header = |name| {
                response
                    .headers()
                    .get(name)
                    .and_then(|value: &HeaderValue| value.to_str().ok())
                    .map(str::to_owned)
            };
            let (server, location) = (header(SERVER), header(LOCATION));
            let mut body = response.into_body();
            let mut read = Vec::new();
            while read.len() < BODY_LIMIT {
                match body.frame().await {
                    None => break,
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            read.extend_from_slice(data);
                        }
                    }
                    Some(Err(err)) => return Err(no_http(err)),
                }
            }
            let text = String::from_utf8_lossy(&read);
            if status == 200 && text.trim_end() == self.expected {
                return Ok(());
            }
            Err(ProbeFailure::Foreign {
                status,
                server,
                location,
                body_snippet: snippet(&text),
            })
        };
        // The connection is driven beside the exchange, in this task. Its end (the server closing
        // after answering) does not end the exchange, which still reads what was buffered; its error
        // reaches the exchange as well.
        let mut exchange = std::pin::pin!(exchange);
        let mut connection = std::pin::pin!(connection);
        let mut connection_done = false;
        loop {
            tokio::select! {
                result = &mut exchange => return result,
                ended = &mut connection, if !connection_done => {
                    connection_done = true;
                    if let Err(err) = ended {
                        debug!(%err, "preflight connection ended with an error");
                    }
                }
            }
        }
    }

    fn request(&self, port: u16) -> Result<Request<Empty<Bytes>>, ProbeFailure> {
        // As the CA sends it: the port only when it is not the default.
        // An IPv6 name goes in brackets, as in a URL.
        let name = if self.name.contains(':') {
            format!("[{}]", self.name)
        } else {
            self.name.clone()
        };
        let host = if port == 80 {
            name
        } else {
            format!("{name}:{port}")
        };
        Request::get(self.path.as_str())
            .header(HOST, host)
            .header(USER_AGENT, "certd-preflight")
            .header(CONNECTION, "close")
            .body(Empty::new())
            .map_err(|err| ProbeFailure::NoHttp(format!("cannot build the request: {err}")))
    }
}

/// An I/O error as a short reason: "connection refused", not "Connection refused (os error 111)".
fn io_reason(err: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match err.kind() {
        ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        ErrorKind::ConnectionReset => "connection reset".to_owned(),
        ErrorKind::NetworkUnreachable => "network unreachable (no route from here)".to_owned(),
        ErrorKind::HostUnreachable => "host unreachable".to_owned(),
        _ => err.to_string(),
    }
}

/// The start of a body, whitespace collapsed, for quoting in a message.
pub(super) fn snippet(text: &str) -> String {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut chars = collapsed.chars();
    let mut out: String = chars.by_ref().take(SNIPPET_CHARS).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}
