//! Sends one [`Probe`] to one server (TLS with SNI and `Host` of the site, verified against that
//! server's test root, or plain http for port 80) on a connection of its own, and keeps the whole
//! answer: status, headers, and the body (gunzipped when it came gzip-encoded). A request that fails
//! or takes over [`DEADLINE`] is an answer too (status 0), never a panic.

use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::probe::Probe;

/// Per request, connect to last byte.
const DEADLINE: Duration = Duration::from_secs(5);

/// Answers larger than this are cut (nothing in the test tree is near it).
const BODY_CAP: usize = 8 << 20;

/// One server's answer to a probe.
#[derive(Debug, Clone)]
pub struct Answer {
    /// 0 when there was no answer (see `error`).
    pub status: u16,
    pub error: Option<String>,
    pub headers: hyper::HeaderMap,
    /// The body, decoded when `Content-Encoding: gzip`.
    pub body: Bytes,
}

impl Answer {
    fn failed(error: String) -> Self {
        Self {
            status: 0,
            error: Some(error),
            headers: hyper::HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<String> {
        let values: Vec<String> = self
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }
}

/// A server under test: where its ports are and which root its certificates chain to.
#[derive(Clone)]
pub struct Target {
    pub https: SocketAddr,
    pub http_port: u16,
    tls: TlsConnector,
}

impl Target {
    pub fn new(https_port: u16, http_port: u16, root_pem: &str) -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(root_pem.as_bytes()).expect("parse the test root"))
            .expect("add the test root");
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self {
            https: SocketAddr::from((Ipv4Addr::LOCALHOST, https_port)),
            http_port,
            tls: TlsConnector::from(Arc::new(config)),
        }
    }

    /// Sends `probe` for the site `name`.
    pub async fn send(&self, name: &str, probe: &Probe) -> Answer {
        match tokio::time::timeout(DEADLINE, self.exchange(name, probe)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => Answer::failed(error),
            Err(_) => Answer::failed(format!("no answer within {DEADLINE:?}")),
        }
    }

    async fn exchange(&self, name: &str, probe: &Probe) -> Result<Answer, String> {
        let mut request = Request::builder()
            .method(probe.method)
            .uri(probe.path.as_str())
            .header(hyper::header::HOST, name);
        for (key, value) in &probe.headers {
            request = request.header(*key, value.as_str());
        }
        let request = request
            .body(Full::new(Bytes::from(vec![b'x'; probe.body_len])))
            .map_err(|err| format!("request: {err}"))?;
        if probe.plain_http {
            let tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, self.http_port))
                .await
                .map_err(|err| format!("connect :{}: {err}", self.http_port))?;
            if probe.body_len > 0 {
                return raw_exchange(tcp, name, probe).await;
            }
            exchange(tcp, request).await
        } else {
            let tcp = TcpStream::connect(self.https)
                .await
                .map_err(|err| format!("connect {}: {err}", self.https))?;
            let server_name =
                ServerName::try_from(name.to_owned()).map_err(|err| format!("SNI: {err}"))?;
            let tls = self
                .tls
                .connect(server_name, tcp)
                .await
                .map_err(|err| format!("TLS: {err}"))?;
            if probe.body_len > 0 {
                return raw_exchange(tls, name, probe).await;
            }
            exchange(tls, request).await
        }
    }
}

async fn exchange<S>(stream: S, request: Request<Full<Bytes>>) -> Result<Answer, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| format!("HTTP/1.1 handshake: {err}"))?;
    let task = tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|err| format!("request: {err}"))?;
        let (parts, body) = response.into_parts();
        let body = if parts.status == hyper::StatusCode::SWITCHING_PROTOCOLS {
            Bytes::new()
        } else {
            Limited::new(body, BODY_CAP)
                .collect()
                .await
                .map_err(|err| format!("body: {err}"))?
                .to_bytes()
        };
        let gzip = parts
            .headers
            .get(hyper::header::CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
        let body = if gzip {
            let mut decoded = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut decoded)
                .map_err(|err| format!("gzip body: {err}"))?;
            Bytes::from(decoded)
        } else {
            body
        };
        Ok(Answer {
            status: parts.status.as_u16(),
            error: None,
            headers: parts.headers,
            body,
        })
    }
    .await;
    task.abort();
    result
}

/// A request with a body, written by a task of its own while the answer is read: a server may answer
/// (413) before the body is all sent and close, and a client that stops at the failed write (as
/// hyper's does) would never see that answer. `Connection: close`, so the answer ends at EOF.
async fn raw_exchange<S>(stream: S, name: &str, probe: &Probe) -> Result<Answer, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let mut head = format!(
        "{} {} HTTP/1.1\r\nhost: {name}\r\ncontent-length: {}\r\nconnection: close\r\n",
        probe.method, probe.path, probe.body_len
    );
    for (key, value) in &probe.headers {
        head += &format!("{key}: {value}\r\n");
    }
    head += "\r\n";
    let (mut reader, mut writer) = tokio::io::split(stream);
    let body_len = probe.body_len;
    let write = tokio::spawn(async move {
        if writer.write_all(head.as_bytes()).await.is_err() {
            return writer;
        }
        let chunk = vec![b'x'; 64 << 10];
        let mut left = body_len;
        while left > 0 {
            let n = left.min(chunk.len());
            if writer.write_all(&chunk[..n]).await.is_err() {
                break;
            }
            left -= n;
        }
        let _ = writer.flush().await;
        // Kept (not shut down) until the answer is read: a TLS close would end the exchange.
        writer
    });
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if raw.len() > BODY_CAP {
                    break;
                }
            }
        }
    }
    write.abort();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no complete answer ({} bytes)", raw.len()))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let mut headers = hyper::HeaderMap::new();
    for line in lines {
        if let Some((key, value)) = line.split_once(':') {
            if let (Ok(key), Ok(value)) = (
                hyper::header::HeaderName::from_bytes(key.trim().as_bytes()),
                hyper::header::HeaderValue::from_str(value.trim()),
            ) {
                headers.append(key, value);
            }
        }
    }
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .get(hyper::header::TRANSFER_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    let gzip = headers
        .get(hyper::header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    if gzip {
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut decoded)
            .map_err(|err| format!("gzip body: {err}"))?;
        body = decoded;
    }
    Ok(Answer {
        status,
        error: None,
        headers,
        body: Bytes::from(body),
    })
}

/// A chunked body's content.
fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk size line without its end")?;
        let size_text = String::from_utf8_lossy(&raw[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|err| format!("chunk size {size_text:?}: {err}"))?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = raw.get(..size).ok_or("a chunk cut short")?;
        out.extend_from_slice(chunk);
        raw = raw.get(size + 2..).unwrap_or(&[]);
    }
}
