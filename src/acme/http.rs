//! The HTTP client instant-acme talks to the CA with: trusted roots, bounded connect and request
//! times, a size cap on response bodies, and a record of the CA's `Retry-After`.
//!
//! The whole answer (headers and body) is read here, inside one deadline: instant-acme reads the body
//! later and without a deadline, so a CA that sent its headers and then stalled would otherwise hold
//! the renewal lock (and `certd issue`) forever.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use super::trust::{native_roots, CaTrust};
use super::AcmeError;

/// How long one HTTP request to the CA may take, from sending it to the last byte of the answer,
/// before it counts as unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest response body accepted from the CA. The largest legitimate answers are a certificate
/// chain (a leaf with 100 names, the most Let's Encrypt allows, plus two intermediates: under 20 KiB
/// of PEM) and an order or authorization listing 100 names (about 10 KiB); 1 MiB leaves fifty times
/// that and is still nothing to hold in memory.
const BODY_LIMIT: usize = 1024 * 1024;
/// How long to wait for a TCP connection to the CA.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The most recent `Retry-After` the CA sent on an error response.
#[derive(Debug, Clone, Default)]
pub(super) struct RetryAfter(Arc<Mutex<Option<OffsetDateTime>>>);

impl RetryAfter {
    pub(super) fn set(&self, at: OffsetDateTime) {
        *self.0.lock().unwrap_or_else(|poison| poison.into_inner()) = Some(at);
    }

    pub(super) fn take(&self) -> Option<OffsetDateTime> {
        self.0
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take()
    }
}

/// The HTTP client instant-acme talks to the CA with: system and web roots plus `acme.ca_roots`, bounded
/// connect and request times, and a record of `Retry-After` (instant-acme's error keeps only the body).
#[derive(Clone)]
pub(super) struct CaHttpClient {
    inner: Client<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>,
    retry_after: RetryAfter,
    /// [`REQUEST_TIMEOUT`]; shorter in tests.
    deadline: Duration,
    /// [`BODY_LIMIT`]; smaller in tests.
    body_limit: usize,
}

impl CaHttpClient {
    pub(super) fn new(
        extra_roots: Option<&Path>,
        retry_after: RetryAfter,
    ) -> Result<Self, AcmeError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = extra_roots {
            add_pem_roots(&mut roots, path)?;
        }
        let tls_error = |reason: String| AcmeError::Tls {
            url: String::new(),
            reason,
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        // The system store is read only if a chain needs it (see `trust.rs`): about 300 PEM
        // certificates on Debian, which no public CA and no `ca_roots` CA needs.
        let trust = CaTrust::new(provider.clone(), roots, native_roots)
            .map_err(|err| tls_error(err.to_string()))?
            .into_verifier();
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| tls_error(err.to_string()))?
            // Not a weaker check: the standard WebPKI verifier, over the same roots as before.
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(trust))
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Ok(Self {
            inner: Client::builder(TokioExecutor::new()).build(connector),
            retry_after,
            deadline: REQUEST_TIMEOUT,
            body_limit: BODY_LIMIT,
        })
    }

    /// The same client with another deadline and body cap, so tests need not wait 30 s.
    #[cfg(test)]
    fn with_limits(mut self, deadline: Duration, body_limit: usize) -> Self {
        self.deadline = deadline;
        self.body_limit = body_limit;
        self
    }
}

fn add_pem_roots(roots: &mut rustls::RootCertStore, path: &Path) -> Result<(), AcmeError> {
    let bad = |reason: String| AcmeError::CaRoots {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|err| bad(err.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| bad(err.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in the file".into()));
    }
    for cert in certs {
        roots
            .add(cert)
            .map_err(|err| bad(format!("not a usable root certificate: {err}")))?;
    }
    Ok(())
}

/// Why the CA's answer was not read: handed to instant-acme as `Error::Other`, which keeps it as the
/// source that [`super::error::classify_ca_error`] reports.
#[derive(Debug, thiserror::Error)]
pub(super) enum CaResponseError {
    /// Headers and body did not arrive within the deadline.
    #[error("no complete answer within {}", Seconds(*.0))]
    TimedOut(Duration),
    /// The body was larger than the cap.
    #[error("the CA's response body exceeded {}", Size(*.0))]
    TooLarge(usize),
    /// The connection failed while the body was read.
    #[error("reading the CA's response body failed: {0}")]
    Body(#[source] hyper::Error),
}

/// A duration the way the messages say it: "30 s", "0.2 s".
struct Seconds(Duration);

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.subsec_millis() == 0 {
            write!(f, "{} s", self.0.as_secs())
        } else {
            write!(f, "{} s", self.0.as_secs_f64())
        }
    }
}

/// A size the way the messages say it: "1 MiB", "64 KiB", "100 bytes".
struct Size(usize);

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const KIB: usize = 1024;
        const MIB: usize = 1024 * 1024;
        match self.0 {
            n if n >= MIB && n % MIB == 0 => write!(f, "{} MiB", n / MIB),
            n if n >= KIB && n % KIB == 0 => write!(f, "{} KiB", n / KIB),
            n => write!(f, "{n} bytes"),
        }
    }
}

/// Reads `body` whole, refusing more than `limit` bytes (a declared `Content-Length` over the limit
/// is refused before anything is read).
async fn collect_capped(
    mut body: hyper::body::Incoming,
    limit: usize,
) -> Result<Bytes, CaResponseError> {
    use hyper::body::Body as _;
    if body.size_hint().lower() > limit as u64 {
        return Err(CaResponseError::TooLarge(limit));
    }
    let mut collected = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(CaResponseError::Body)?;
        if let Ok(data) = frame.into_data() {
            if collected.len().saturating_add(data.len()) > limit {
                return Err(CaResponseError::TooLarge(limit));
            }
            collected.extend_from_slice(&data);
        }
    }
    Ok(collected.freeze())
}

impl HttpClient for CaHttpClient {
    fn request(
        &self,
        req: hyper::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let response = self.inner.request(req);
        let retry_after = self.retry_after.clone();
        let (deadline, body_limit) = (self.deadline, self.body_limit);
        Box::pin(async move {
            let answer = async {
                let response = response
                    .await
                    .map_err(|err| instant_acme::Error::Other(Box::new(err)))?;
                let (parts, body) = response.into_parts();
                let body = collect_capped(body, body_limit)
                    .await
                    .map_err(|err| instant_acme::Error::Other(Box::new(err)))?;
                Ok::<_, instant_acme::Error>((parts, body))
            };
            let (parts, body) = match tokio::time::timeout(deadline, answer).await {
                Ok(answer) => answer?,
                Err(_) => {
                    return Err(instant_acme::Error::Other(Box::new(
                        CaResponseError::TimedOut(deadline),
                    )))
                }
            };
            if !parts.status.is_success() {
                if let Some(at) = parts
                    .headers
                    .get(hyper::header::RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| parse_retry_after(value, SystemTime::now()))
                {
                    retry_after.set(at);
                }
            }
            Ok(BytesResponse {
                parts,
                body: Box::new(body),
            })
        })
    }
}

/// The longest wait a CA's `Retry-After` can impose (on an error, a rate limit or ARI). Let's
/// Encrypt's rate limits refill within a week at most (the duplicate-certificate limit counts over 7
/// days), so a longer wait is a CA defect or a typo; after it certd simply asks again, and the CA can
/// repeat itself. It also keeps every later date computation far from overflow (the raw header can
/// say 300000000000 seconds, beyond year 9999, where converting to a date panics).
pub(super) const MAX_RETRY_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// `Retry-After` is either delay-seconds or an HTTP-date (RFC 9110 §10.2.3); either way at most
/// [`MAX_RETRY_AFTER`] after `now`. A run of digits too long for a `u64` is still delay-seconds.
pub(super) fn parse_retry_after(value: &str, now: SystemTime) -> Option<OffsetDateTime> {
    let value = value.trim();
    let latest = now.checked_add(MAX_RETRY_AFTER)?;
    let at = if !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit()) {
        let seconds = value.parse::<u64>().unwrap_or(u64::MAX);
        now.checked_add(Duration::from_secs(seconds))
            .map_or(latest, |at| at.min(latest))
    } else {
        httpdate::parse_http_date(value).ok()?.min(latest)
    };
    // Within a week of the real clock, so well inside what `OffsetDateTime` holds; checked anyway.
    let nanos = at.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_nanos();
    OffsetDateTime::from_unix_timestamp_nanos(i128::try_from(nanos).ok()?).ok()
}

/// The same client with every `Retry-After` it returns rewritten to delay-seconds of at most
/// [`MAX_RETRY_AFTER`]: instant-acme adds the raw number to `SystemTime::now()` (ARI polling, order
/// polling), which panics for values near `u64::MAX`, and would wait as long as it says.
#[derive(Clone)]
pub(super) struct BoundedRetryAfter(pub(super) CaHttpClient);

impl HttpClient for BoundedRetryAfter {
    fn request(
        &self,
        req: hyper::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let response = self.0.request(req);
        Box::pin(async move {
            let mut response = response.await?;
            bound_retry_after_header(&mut response.parts.headers, SystemTime::now());
            Ok(response)
        })
    }
}

/// Replaces a `Retry-After` in `headers` by the number of seconds [`parse_retry_after`] allows (0
/// for a date already past); one that is neither delay-seconds nor a date is left for instant-acme
/// to ignore.
pub(super) fn bound_retry_after_header(headers: &mut hyper::HeaderMap, now: SystemTime) {
    let Some(at) = headers
        .get(hyper::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| parse_retry_after(value, now))
    else {
        return;
    };
    let now_seconds = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
        });
    let seconds = at.unix_timestamp().saturating_sub(now_seconds).max(0);
    headers.insert(
        hyper::header::RETRY_AFTER,
        hyper::header::HeaderValue::from(seconds),
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! A hand-written HTTPS server on loopback that answers with headers and then misbehaves in the
    //! body, and the client's answer to it.

    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// What the test server does after sending its response headers.
    #[derive(Clone, Copy)]
    enum Body {
        /// Promises 100 bytes, sends 7, then holds the connection open.
        Stall,
        /// Sends 16 KiB chunks until the client goes away.
        Endless,
    }

    /// Starts the server; returns its URL and the CA root file the client must trust.
    async fn misbehaving_ca(body: Body) -> (String, tempfile::NamedTempFile) {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let roots = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(roots.path(), ca_pem).unwrap();

        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}/directory", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    // Read the request head; the client sends no body on GET.
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if tls.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    match body {
                        Body::Stall => {
                            let _ = tls
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
                                .await;
                            let _ = tls.flush().await;
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                        }
                        Body::Endless => {
                            let _ = tls
                                .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                                .await;
                            let chunk = format!("4000\r\n{}\r\n", "x".repeat(0x4000));
                            while tls.write_all(chunk.as_bytes()).await.is_ok() {}
                        }
                    }
                });
            }
        });
        (url, roots)
    }

    /// Asks `url` through the client with a 500 ms deadline and a 64 KiB cap, reading the body the
    /// way instant-acme does; bounded by 10 s so that a hang fails the test instead of stalling it.
    async fn ask(url: &str, roots: &Path) -> (Result<Bytes, String>, Duration) {
        let client = CaHttpClient::new(Some(roots), RetryAfter::default())
            .unwrap()
            .with_limits(Duration::from_millis(500), 64 * 1024);
        let request = hyper::Request::get(url)
            .body(BodyWrapper::from(Vec::new()))
            .unwrap();
        let started = Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(10), async {
            let mut response = client
                .request(request)
                .await
                .map_err(|err| err.to_string())?;
            response
                .body
                .into_bytes()
                .await
                .map_err(|err| err.to_string())
        })
        .await
        .expect("the client must give up by itself, not hang");
        (answer, started.elapsed())
    }

    #[tokio::test]
    async fn a_body_that_stalls_fails_at_the_deadline() {
        let (url, roots) = misbehaving_ca(Body::Stall).await;
        let (answer, took) = ask(&url, roots.path()).await;
        let err = answer.expect_err("a stalled body is an error");
        assert_eq!(err, "no complete answer within 0.5 s");
        assert!(took < Duration::from_secs(3), "took {took:?}");
    }

    #[tokio::test]
    async fn an_endless_body_fails_at_the_size_cap() {
        let (url, roots) = misbehaving_ca(Body::Endless).await;
        let (answer, took) = ask(&url, roots.path()).await;
        let err = answer.expect_err("an endless body is an error");
        assert_eq!(err, "the CA's response body exceeded 64 KiB");
        assert!(took < Duration::from_secs(3), "took {took:?}");
        // The operator sees the CA misbehaving, not an unreachable CA.
        let acme_error = super::super::error::classify_ca_error(
            &url,
            instant_acme::Error::Other(Box::new(CaResponseError::TooLarge(BODY_LIMIT))),
        );
        assert_eq!(
            acme_error.to_string(),
            format!(
                "the server at {url} did not answer like an ACME CA: the CA's response body \
                 exceeded 1 MiB"
            )
        );
    }

    #[test]
    fn sizes_and_durations_read_like_the_messages_say() {
        assert_eq!(Size(BODY_LIMIT).to_string(), "1 MiB");
        assert_eq!(Size(1000).to_string(), "1000 bytes");
        assert_eq!(Seconds(REQUEST_TIMEOUT).to_string(), "30 s");
        assert_eq!(
            CaResponseError::TimedOut(REQUEST_TIMEOUT).to_string(),
            "no complete answer within 30 s"
        );
    }
}
