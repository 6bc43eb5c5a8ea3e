//! The HTTP client instant-acme talks to the CA with: trusted roots, bounded connect and request
//! times, and a record of the CA's `Retry-After`.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use super::AcmeError;

/// How long one HTTP request to the CA may take before it counts as unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
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
}

impl CaHttpClient {
    pub(super) fn new(
        extra_roots: Option<&Path>,
        retry_after: RetryAfter,
    ) -> Result<Self, AcmeError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        // The system store may be missing or partly unreadable; the web roots above still apply.
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if let Some(path) = extra_roots {
            add_pem_roots(&mut roots, path)?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|err| AcmeError::Tls {
            url: String::new(),
            reason: err.to_string(),
        })?
        .with_root_certificates(roots)
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
        })
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

#[derive(Debug, thiserror::Error)]
#[error("no answer within {} s", REQUEST_TIMEOUT.as_secs())]
struct RequestTimedOut;

impl HttpClient for CaHttpClient {
    fn request(
        &self,
        req: hyper::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let response = self.inner.request(req);
        let retry_after = self.retry_after.clone();
        Box::pin(async move {
            let response = match tokio::time::timeout(REQUEST_TIMEOUT, response).await {
                Ok(Ok(response)) => response,
                Ok(Err(err)) => return Err(instant_acme::Error::Other(Box::new(err))),
                Err(_) => return Err(instant_acme::Error::Other(Box::new(RequestTimedOut))),
            };
            if !response.status().is_success() {
                if let Some(at) = response
                    .headers()
                    .get(hyper::header::RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| parse_retry_after(value, SystemTime::now()))
                {
                    retry_after.set(at);
                }
            }
            Ok(BytesResponse::from(response))
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
