//! An ACME test double in front of Pebble ([`AcmeProxy`]): an HTTPS reverse proxy that adds what
//! Pebble 2.4 lacks — ACME Renewal Information (RFC 9773) and profiles in the directory — and lets a
//! test see and steer what certd sends.
//!
//! It serves HTTPS with the harness's test PKI leaf (127.0.0.1 / localhost), so certd's `ca_roots`
//! stays Pebble's, and forwards every request to Pebble's ACME port keeping the `Host` header: Pebble
//! builds its URLs (and checks each JWS `url` and `kid`) from that header, so every URL it hands out
//! already points at the proxy. URLs naming Pebble's own port are rewritten anyway, in headers and
//! bodies, so no request can slip past the proxy.
//!
//! What it adds:
//! - the directory gains `renewalInfo` (unless [`ProxyOptions::renewal_info`] is off) and
//!   `meta.profiles` ([`ProxyOptions::profiles`], none when empty);
//! - `GET /renewal-info/<certID>` answers from a table the test controls ([`AcmeProxy::set_window`],
//!   a default window otherwise) with a `Retry-After`, and records each request;
//! - every new-order payload is decoded (not verified) and recorded ([`AcmeProxy::orders`]); Pebble
//!   ignores the fields it does not know (`profile`, `replaces`), so the signed payload is forwarded
//!   untouched, and the order object Pebble returns gets them echoed back (RFC 9773 §5: the server
//!   reflects `replaces`; instant-acme checks it);
//! - a new-order for a profile the directory does not list fails with 400 `invalidProfile`, as at a
//!   CA that offers profiles (Pebble would ignore it and issue);
//! - [`AcmeProxy::refuse_next_replaces`] makes the next new-order carrying `replaces` fail with a 409
//!   `alreadyReplaced` problem (with a fresh `Replay-Nonce`), never reaching Pebble;
//! - [`AcmeProxy::rate_limit_next_order`] makes the next new-order fail with 429 `rateLimited` and a
//!   `Retry-After` of the test's choosing, and [`AcmeProxy::fail_renewal_info`] answers a
//!   certificate's renewal-information requests with an error and a `Retry-After` (absurd ones too).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, TRANSFER_ENCODING};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate};

use super::certd::CertdConfig;
use super::daemon::{RunConfig, Site};
use super::pebble::Pebble;
use super::pki::init_crypto;

/// The problem type of a CA refusing `replaces` because the certificate was already replaced.
pub const ALREADY_REPLACED: &str = "urn:ietf:params:acme:error:alreadyReplaced";

/// The problem type of a CA refusing an order for a profile it does not offer (ACME profiles draft).
pub const INVALID_PROFILE: &str = "urn:ietf:params:acme:error:invalidProfile";

/// The problem type of a CA's rate limit.
pub const RATE_LIMITED: &str = "urn:ietf:params:acme:error:rateLimited";

/// How long one forwarded request to Pebble may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// A renewal window as `GET /renewal-info/<certID>` serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// `suggestedWindow.start`.
    pub start: OffsetDateTime,
    /// `suggestedWindow.end`.
    pub end: OffsetDateTime,
    /// The `Retry-After` header, in seconds.
    pub retry_after_secs: u64,
    /// `explanationURL`, when set.
    pub explanation_url: Option<String>,
}

impl Window {
    /// A window from `now + start` to `now + end` (whole seconds, as RFC 3339 on the wire carries
    /// them), asking to be polled again after `retry_after_secs`.
    pub fn from_now(start: time::Duration, end: time::Duration, retry_after_secs: u64) -> Self {
        let now = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .expect("zero nanoseconds");
        Self {
            start: now + start,
            end: now + end,
            retry_after_secs,
            explanation_url: None,
        }
    }

    fn to_json(&self) -> serde_json::Value {
        let mut json = serde_json::json!({
            "suggestedWindow": {
                "start": self.start.format(&Rfc3339).expect("format start"),
                "end": self.end.format(&Rfc3339).expect("format end"),
            }
        });
        if let Some(url) = &self.explanation_url {
            json["explanationURL"] = url.clone().into();
        }
        json
    }
}

/// How the proxy presents the CA.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// Advertise `renewalInfo` in the directory and answer `/renewal-info/...`.
    pub renewal_info: bool,
    /// `meta.profiles` (name → description); none advertised when empty.
    pub profiles: BTreeMap<String, String>,
    /// The window served for a certificate without one of its own ([`AcmeProxy::set_window`]);
    /// `None`: such requests get 404.
    pub default_window: Option<Window>,
    /// How long a new-account request is held before it goes on to Pebble (a slow CA, so that
    /// nodes starting together are all about to create the account at once).
    pub new_account_delay: Duration,
}

impl Default for ProxyOptions {
    /// ARI on with a window 30 to 31 days ahead (polled again after an hour), and Let's Encrypt's
    /// three profiles.
    fn default() -> Self {
        let profiles = [
            ("classic", "The same profile you're accustomed to"),
            ("tlsserver", "Only serverAuth, no common name"),
            ("shortlived", "Six-day certificates"),
        ];
        Self {
            renewal_info: true,
            profiles: profiles
                .iter()
                .map(|(name, description)| ((*name).to_owned(), (*description).to_owned()))
                .collect(),
            default_window: Some(Window::from_now(
                time::Duration::days(30),
                time::Duration::days(31),
                3600,
            )),
            new_account_delay: Duration::ZERO,
        }
    }
}

/// One new-order request as the proxy saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenOrder {
    /// The identifiers' values, in payload order.
    pub identifiers: Vec<String>,
    /// The payload's `profile`.
    pub profile: Option<String>,
    /// The payload's `replaces` (an ARI certID).
    pub replaces: Option<String>,
    /// The status certd got back (201 when Pebble created the order).
    pub status: u16,
    /// Whether the proxy refused it itself (an unknown profile, or
    /// [`AcmeProxy::refuse_next_replaces`]) instead of passing it to Pebble.
    pub refused_by_proxy: bool,
}

/// One `GET /renewal-info/<certID>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalInfoRequest {
    /// The certID asked for.
    pub cert_id: String,
    /// When it was asked.
    pub at: OffsetDateTime,
    /// The status answered (200, or 404 for a certificate without a window).
    pub status: u16,
}

#[derive(Default)]
struct State {
    windows: BTreeMap<String, Window>,
    refuse_next_replaces: bool,
    orders: Vec<SeenOrder>,
    renewal_info: Vec<RenewalInfoRequest>,
    // Order path → the (profile, replaces) to reflect in that order's object.
    order_fields: BTreeMap<String, (Option<String>, Option<String>)>,
    // "METHOD path -> status" for every request, shown when a test fails.
    log: Vec<String>,
    // The next new-order is refused with 429 rateLimited and this Retry-After (raw header text).
    rate_limit_next_order: Option<String>,
    // certID → (status, Retry-After) answered to its renewal-information requests.
    renewal_info_errors: BTreeMap<String, (StatusCode, String)>,
}

type PebbleClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

struct Shared {
    options: ProxyOptions,
    state: Mutex<State>,
    client: PebbleClient,
    /// `https://127.0.0.1:<pebble acme port>`.
    pebble_base: String,
    /// `https://127.0.0.1:<proxy port>`.
    proxy_base: String,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The running proxy. Stops (with every open connection) when dropped; prints its request log when a
/// test panics.
pub struct AcmeProxy {
    port: u16,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl AcmeProxy {
    /// Starts the proxy in front of `pebble` on a free loopback port.
    pub async fn start(pebble: &Pebble, options: ProxyOptions) -> Self {
        init_crypto();
        let pki = pebble.pki();
        let chain = CertificateDer::pem_file_iter(&pki.cert_path)
            .expect("open the test leaf")
            .collect::<Result<Vec<_>, _>>()
            .expect("parse the test leaf");
        let key = PrivateKeyDer::from_pem_file(&pki.key_path).expect("parse the test leaf key");
        let mut server_config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("TLS server config");
        server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));

        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("local_addr").port();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(pki.client_config())
            .https_only()
            .enable_http1()
            .build();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            options,
            client: Client::builder(TokioExecutor::new()).build(connector),
            pebble_base: format!("https://127.0.0.1:{}", pebble.acme_port),
            proxy_base: format!("https://127.0.0.1:{port}"),
        });

        let serving = shared.clone();
        let task = tokio::spawn(async move {
            // Dropped with the accept loop, which aborts every connection still open.
            let mut connections = JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    // Out of descriptors, say: let connections finish rather than spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let acceptor = acceptor.clone();
                let shared = serving.clone();
                connections.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(&shared, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Self { port, shared, task }
    }

    /// The directory URL certd should use.
    pub fn directory_url(&self) -> String {
        format!("{}/dir", self.shared.proxy_base)
    }

    /// [`CertdConfig::for_pebble`], ordering through the proxy.
    pub fn certd_config(&self, pebble: &Pebble, sites: &[&[&str]]) -> CertdConfig {
        CertdConfig {
            directory_url: self.directory_url(),
            ..CertdConfig::for_pebble(pebble, sites)
        }
    }

    /// [`RunConfig::for_pebble`], ordering through the proxy.
    pub fn run_config(&self, pebble: &Pebble, sites: Vec<Site>) -> RunConfig {
        let mut config = RunConfig::for_pebble(pebble, sites);
        config.base.directory_url = self.directory_url();
        config
    }

    /// Serves `window` for the certificate `cert_id` (see [`cert_id`]) from now on.
    pub fn set_window(&self, cert_id: &str, window: Window) {
        self.shared
            .state()
            .windows
            .insert(cert_id.to_owned(), window);
    }

    /// Refuses the next new-order that carries `replaces` with 409 `alreadyReplaced`.
    pub fn refuse_next_replaces(&self) {
        self.shared.state().refuse_next_replaces = true;
    }

    /// Refuses the next new-order with 429 `rateLimited` and `Retry-After: <retry_after>` (sent as
    /// is, so it can be absurd).
    pub fn rate_limit_next_order(&self, retry_after: &str) {
        self.shared.state().rate_limit_next_order = Some(retry_after.to_owned());
    }

    /// Answers every renewal-information request for `cert_id` from now on with `status` (a
    /// `serverInternal` problem) and `Retry-After: <retry_after>`, instead of a window.
    pub fn fail_renewal_info(&self, cert_id: &str, status: StatusCode, retry_after: &str) {
        self.shared
            .state()
            .renewal_info_errors
            .insert(cert_id.to_owned(), (status, retry_after.to_owned()));
    }

    /// Every new-order seen so far, in order.
    pub fn orders(&self) -> Vec<SeenOrder> {
        self.shared.state().orders.clone()
    }

    /// Every renewal-information request seen so far, in order.
    pub fn renewal_info_requests(&self) -> Vec<RenewalInfoRequest> {
        self.shared.state().renewal_info.clone()
    }

    /// Every request as `METHOD path -> status`, in order.
    pub fn log(&self) -> Vec<String> {
        self.shared.state().log.clone()
    }
}

impl Drop for AcmeProxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- ACME proxy (port {}) requests -----\n{}",
                self.port,
                self.log().join("\n")
            );
        }
        self.task.abort();
    }
}

/// The ARI certificate identifier (RFC 9773 §4.1) of the first certificate in `cert_pem`:
/// base64url(authorityKeyIdentifier.keyIdentifier) "." base64url(serial number DER content octets).
pub fn cert_id(cert_pem: &str) -> String {
    let der = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .next()
        .expect("no certificate in PEM")
        .expect("bad certificate PEM");
    let (_, cert) = X509Certificate::from_der(&der).expect("parse certificate DER");
    let key_id = cert
        .extensions()
        .iter()
        .find_map(|extension| match extension.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref(),
            _ => None,
        })
        .expect("the certificate has an authority key identifier");
    format!(
        "{}.{}",
        base64url_encode(key_id.0),
        base64url_encode(cert.raw_serial())
    )
}

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// base64url without padding (RFC 4648 §5), as ACME uses it.
pub fn base64url_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, byte)| n | u32::from(*byte) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(BASE64URL[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// Decodes base64url with or without padding; `None` on any other character.
pub fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.trim_end_matches('=').bytes() {
        let value = BASE64URL.iter().position(|b| *b == c)? as u32;
        acc = acc << 6 | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The decoded `payload` of a flattened JWS (not verified); `None` for POST-as-GET or garbage.
fn jws_payload(body: &[u8]) -> Option<serde_json::Value> {
    let jws: serde_json::Value = serde_json::from_slice(body).ok()?;
    let payload = base64url_decode(jws["payload"].as_str()?)?;
    serde_json::from_slice(&payload).ok()
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_str(content_type).expect("content type"),
    );
    response
}

fn problem(status: StatusCode, r#type: &str, detail: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "type": r#type, "detail": detail, "status": status.as_u16() });
    respond(
        status,
        "application/problem+json",
        serde_json::to_vec(&body).expect("serialize problem"),
    )
}

/// Answers one request and logs it.
async fn handle(shared: &Shared, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = route(shared, request).await;
    shared
        .state()
        .log
        .push(format!("{method} {path} -> {}", response.status().as_u16()));
    response
}

/// Renewal information from the table; new-orders recorded, refused or forwarded with their fields
/// reflected; the directory extended; everything else forwarded as is.
async fn route(shared: &Shared, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    if let Some(cert_id) = path.strip_prefix("/renewal-info/") {
        if shared.options.renewal_info && request.method() == Method::GET {
            return renewal_info(shared, cert_id);
        }
    }
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(body) => body.to_bytes(),
        Err(err) => return problem(StatusCode::BAD_REQUEST, "about:blank", &err.to_string()),
    };

    if parts.method == Method::POST && path == "/sign-me-up" {
        tokio::time::sleep(shared.options.new_account_delay).await;
    }
    let mut new_order = None;
    if parts.method == Method::POST && path == "/order-plz" {
        let payload = jws_payload(&body).unwrap_or_default();
        let field = |name: &str| payload[name].as_str().map(str::to_owned);
        let seen = SeenOrder {
            identifiers: payload["identifiers"]
                .as_array()
                .map(|ids| {
                    ids.iter()
                        .filter_map(|id| id["value"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            profile: field("profile"),
            replaces: field("replaces"),
            status: 0,
            refused_by_proxy: false,
        };
        let unknown_profile = seen.profile.as_ref().filter(|profile| {
            !shared.options.profiles.is_empty() && !shared.options.profiles.contains_key(*profile)
        });
        let refusal = if let Some(profile) = unknown_profile {
            Some((
                StatusCode::BAD_REQUEST,
                INVALID_PROFILE,
                format!("profile {profile:?} is not offered (test proxy)"),
            ))
        } else if seen.replaces.is_some()
            && std::mem::take(&mut shared.state().refuse_next_replaces)
        {
            Some((
                StatusCode::CONFLICT,
                ALREADY_REPLACED,
                "the certificate named in replaces has already been replaced (test proxy)".into(),
            ))
        } else {
            None
        };
        let rate_limited = match refusal {
            None => shared.state().rate_limit_next_order.take(),
            Some(_) => None,
        };
        let refusal = refusal.or(rate_limited.as_ref().map(|_| {
            (
                StatusCode::TOO_MANY_REQUESTS,
                RATE_LIMITED,
                "too many new orders (test proxy)".to_owned(),
            )
        }));
        if let Some((status, r#type, detail)) = refusal {
            let mut response = problem(status, r#type, &detail);
            if let Some(retry_after) = rate_limited {
                response.headers_mut().insert(
                    "retry-after",
                    HeaderValue::from_str(&retry_after).expect("retry-after"),
                );
            }
            if let Some(nonce) = fresh_nonce(shared).await {
                response.headers_mut().insert("replay-nonce", nonce);
            }
            shared.state().orders.push(SeenOrder {
                status: status.as_u16(),
                refused_by_proxy: true,
                ..seen
            });
            return response;
        }
        new_order = Some(seen);
    }

    let reflect = shared.state().order_fields.get(&path).cloned();
    let (parts, mut body) = match forward(shared, parts, body).await {
        Ok(response) => response,
        Err(reason) => {
            return problem(
                StatusCode::BAD_GATEWAY,
                "about:blank",
                &format!("test proxy: {reason}"),
            )
        }
    };

    if path == "/dir" && parts.status == StatusCode::OK {
        body = edit_json(body, |directory| {
            if shared.options.renewal_info {
                directory["renewalInfo"] = format!("{}/renewal-info", shared.proxy_base).into();
            }
            if !shared.options.profiles.is_empty() {
                if !directory["meta"].is_object() {
                    directory["meta"] = serde_json::json!({});
                }
                directory["meta"]["profiles"] =
                    serde_json::to_value(&shared.options.profiles).expect("profiles");
            }
        });
    }
    if let Some(seen) = new_order {
        if parts.status == StatusCode::CREATED {
            let fields = (seen.profile.clone(), seen.replaces.clone());
            if let Some(location) = parts
                .headers
                .get(LOCATION)
                .and_then(|value| value.to_str().ok())
            {
                let order_path = location
                    .strip_prefix(&shared.proxy_base)
                    .unwrap_or(location)
                    .to_owned();
                shared
                    .state()
                    .order_fields
                    .insert(order_path, fields.clone());
            }
            body = reflect_fields(body, &fields);
        }
        shared.state().orders.push(SeenOrder {
            status: parts.status.as_u16(),
            ..seen
        });
    } else if let Some(fields) = reflect {
        if parts.status == StatusCode::OK {
            body = reflect_fields(body, &fields);
        }
    }
    Response::from_parts(parts, Full::new(body))
}

/// Echoes `profile` and `replaces` in an order object, as a CA that knows them does.
fn reflect_fields(body: Bytes, (profile, replaces): &(Option<String>, Option<String>)) -> Bytes {
    edit_json(body, |order| {
        if let Some(profile) = profile {
            order["profile"] = profile.clone().into();
        }
        if let Some(replaces) = replaces {
            order["replaces"] = replaces.clone().into();
        }
    })
}

/// Applies `edit` to a JSON object body; any other body is returned as it was.
fn edit_json(body: Bytes, edit: impl FnOnce(&mut serde_json::Value)) -> Bytes {
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(mut json) if json.is_object() => {
            edit(&mut json);
            Bytes::from(serde_json::to_vec(&json).expect("serialize JSON"))
        }
        _ => body,
    }
}

fn renewal_info(shared: &Shared, cert_id: &str) -> Response<Full<Bytes>> {
    let mut state = shared.state();
    let window = state
        .windows
        .get(cert_id)
        .or(shared.options.default_window.as_ref())
        .cloned();
    let failure = state.renewal_info_errors.get(cert_id).cloned();
    let response = match (failure, window) {
        (Some((status, retry_after)), _) => {
            let mut response = problem(
                status,
                "urn:ietf:params:acme:error:serverInternal",
                "renewal information unavailable (test proxy)",
            );
            response.headers_mut().insert(
                "retry-after",
                HeaderValue::from_str(&retry_after).expect("retry-after"),
            );
            response
        }
        (None, Some(window)) => {
            let mut response = respond(
                StatusCode::OK,
                "application/json",
                serde_json::to_vec(&window.to_json()).expect("serialize window"),
            );
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(window.retry_after_secs));
            response
        }
        (None, None) => problem(
            StatusCode::NOT_FOUND,
            "urn:ietf:params:acme:error:malformed",
            "no renewal window for this certificate (test proxy)",
        ),
    };
    state.renewal_info.push(RenewalInfoRequest {
        cert_id: cert_id.to_owned(),
        at: OffsetDateTime::now_utc(),
        status: response.status().as_u16(),
    });
    response
}

/// A fresh nonce from Pebble's newNonce, for a response the proxy makes up itself.
async fn fresh_nonce(shared: &Shared) -> Option<HeaderValue> {
    let request = Request::builder()
        .method(Method::HEAD)
        .uri(format!("{}/nonce-plz", shared.pebble_base))
        .body(Full::new(Bytes::new()))
        .ok()?;
    let response = tokio::time::timeout(FORWARD_TIMEOUT, shared.client.request(request))
        .await
        .ok()?
        .ok()?;
    response.headers().get("replay-nonce").cloned()
}

/// Sends the request on to Pebble (same method, path, headers — `Host` included — and body) and
/// returns its response (head and body) with Pebble's base URL replaced by the proxy's in headers and body.
async fn forward(
    shared: &Shared,
    parts: hyper::http::request::Parts,
    body: Bytes,
) -> Result<(hyper::http::response::Parts, Bytes), String> {
    let target = parts.uri.path_and_query().map_or("/", |path| path.as_str());
    let mut request = Request::builder()
        .method(parts.method.clone())
        .uri(format!("{}{target}", shared.pebble_base));
    for (name, value) in &parts.headers {
        request = request.header(name, value);
    }
    let request = request
        .body(Full::new(body))
        .map_err(|err| err.to_string())?;
    let response = tokio::time::timeout(FORWARD_TIMEOUT, shared.client.request(request))
        .await
        .map_err(|_| "Pebble did not answer in time".to_owned())?
        .map_err(|err| err.to_string())?;
    let (mut parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|err| err.to_string())?
        .to_bytes();
    parts.headers.remove(CONTENT_LENGTH);
    parts.headers.remove(TRANSFER_ENCODING);
    for value in parts.headers.values_mut() {
        if let Ok(text) = value.to_str() {
            if text.contains(&shared.pebble_base) {
                let text = text.replace(&shared.pebble_base, &shared.proxy_base);
                *value = HeaderValue::from_str(&text).map_err(|err| err.to_string())?;
            }
        }
    }
    let body = match std::str::from_utf8(&body) {
        Ok(text) if text.contains(&shared.pebble_base) => {
            Bytes::from(text.replace(&shared.pebble_base, &shared.proxy_base))
        }
        _ => body,
    };
    Ok((parts, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_round_trips() {
        for (bytes, text) in [
            (&b""[..], ""),
            (b"f", "Zg"),
            (b"fo", "Zm8"),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg"),
            (&[0xfb, 0xff, 0xfe][..], "-__-"),
        ] {
            assert_eq!(base64url_encode(bytes), text);
            assert_eq!(base64url_decode(text).as_deref(), Some(bytes));
        }
        assert_eq!(base64url_decode("Zm8=").as_deref(), Some(&b"fo"[..]));
        assert_eq!(base64url_decode("Zm+8"), None);
    }
}
