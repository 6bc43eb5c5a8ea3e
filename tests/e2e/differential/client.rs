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
const DEADLINE: Duration = Duration::from_secs(10);

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
