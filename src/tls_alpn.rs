//! TLS-ALPN-01 (RFC 8737): the challenge certificates of the orders in flight, and how a TLS listener
//! answers with them.
//!
//! An order publishes one self-signed certificate per name ([`AlpnCertificates::publish`]): its only
//! subjectAltName is the name (or IP address, RFC 8738), and its critical `acmeIdentifier` extension
//! holds the SHA-256 digest of the key authorization. The CA connects to port 443 and offers exactly
//! one ALPN protocol, `acme-tls/1`, with the name in SNI (for an IP address its reverse-DNS name,
//! RFC 8738 §6). Only such a ClientHello is answered from here ([`is_challenge_hello`]), with a rustls
//! configuration of its own ([`challenge_config`]) whose only protocol is `acme-tls/1`: a site's
//! configuration never offers it, so a normal client offering `h2` or `http/1.1` can never be given a
//! challenge certificate, and a challenge handshake never gets a site's certificate. After the
//! handshake the connection is closed; nothing is served on it.
//!
//! A certificate is withdrawn when its [`PublishedAlpn`] guard drops, like HTTP-01 tokens (both
//! are [`crate::answers::Answers`]). In a fleet the identifier and key authorization are also
//! published through the store, and a node without the certificate makes it from those on a
//! ClientHello it does not know ([`AlpnCertificates::fleet_config`]). The store
//! lives in [`crate::challenge::ChallengeTokens`] so that everything that hands HTTP-01 tokens from
//! an order to a listener hands these over too. [`AlpnResponder`] is the short-lived listener
//! `certd issue` runs on `[https] listen`; the daemon's own :443 does the same per connection.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_rustls::LazyConfigAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, Instrument};

use crate::answers::{Answers, PublishedAnswer};
use crate::certificate::CertificateError;
use crate::fleet_answers::{FleetAnswers, FleetGuard};
use crate::storage::AnswerKind;
use crate::store::StoreError;

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// How long a validation connection may take for its ClientHello and handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The challenge certificates currently answerable, by the server name the CA will send.
///
/// Cheap to clone; all clones share the same set.
#[derive(Debug, Clone, Default)]
pub struct AlpnCertificates {
    inner: Answers<Arc<CertifiedKey>>,
    /// How many listeners answer from this set now (the daemon's :443, `certd issue`'s own).
    listeners: Arc<std::sync::atomic::AtomicUsize>,
    /// The fleet's store, when answers are shared between nodes.
    fleet: Option<Arc<FleetAnswers>>,
}

/// Keeps a challenge certificate answerable; dropping it withdraws the certificate (here, and from
/// the fleet's store).
#[derive(Debug)]
pub struct PublishedAlpn {
    _local: PublishedAnswer<Arc<CertifiedKey>>,
    _fleet: Option<FleetGuard>,
}

/// A challenge certificate could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The certificate could not be made.
    #[error(transparent)]
    Certificate(#[from] CertificateError),
    /// The fleet's store did not take the answer.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AlpnCertificates {
    /// Certificates shared through `fleet` (see [`crate::challenge::ChallengeTokens::shared_through`]).
    pub(crate) fn shared_through(fleet: Option<Arc<FleetAnswers>>) -> Self {
        Self {
            fleet,
            ..Self::default()
        }
    }

    /// Makes the challenge certificate for `identifier` (a DNS name or an IP address) with the
    /// SHA-256 `digest` of the key authorization answerable until the returned guard drops.
    pub fn publish(
        &self,
        identifier: &str,
        digest: &[u8],
    ) -> Result<PublishedAlpn, CertificateError> {
        let certificate = challenge_certificate(identifier, digest)?;
        Ok(PublishedAlpn {
            _local: self.inner.publish(server_name_for(identifier), certificate),
            _fleet: None,
        })
    }

    /// [`AlpnCertificates::publish`] for `key_authorization`, and in the fleet's store when answers
    /// are shared, so that any node answers it: returns once it is there.
    pub async fn publish_to_fleet(
        &self,
        identifier: &str,
        key_authorization: &str,
    ) -> Result<PublishedAlpn, PublishError> {
        let certificate = challenge_certificate(identifier, &digest_of(key_authorization))?;
        let server_name = server_name_for(identifier);
        let fleet = match &self.fleet {
            // The identifier goes along: for an IP address it is the SAN, not the server name.
            Some(fleet) => Some(
                fleet
                    .publish(
                        AnswerKind::TlsAlpn01,
                        &server_name,
                        &format!("{identifier} {key_authorization}"),
                    )
                    .await?,
            ),
            None => None,
        };
        Ok(PublishedAlpn {
            _local: self.inner.publish(server_name, certificate),
            _fleet: fleet,
        })
    }

    /// The challenge certificate for a ClientHello naming `server_name`, if an order published one.
    pub fn lookup(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
        let name = server_name.trim_end_matches('.').to_ascii_lowercase();
        self.inner.get(&name)
    }

    /// For a ClientHello naming `server_name` that no order of this process published: the
    /// challenge configuration with the certificate another node of the fleet published for it.
    pub async fn fleet_config(&self, server_name: &str) -> Option<Arc<rustls::ServerConfig>> {
        let fleet = self.fleet.as_ref()?;
        let name = server_name.trim_end_matches('.').to_ascii_lowercase();
        let answer = fleet.lookup(AnswerKind::TlsAlpn01, &name).await?;
        let (identifier, key_authorization) = answer.split_once(' ')?;
        // A row for another name cannot answer this one.
        if server_name_for(identifier) != name {
            return None;
        }
        let certificate = challenge_certificate(identifier, &digest_of(key_authorization))
            .map_err(|err| debug!(%err, "cannot make the fleet's challenge certificate"))
            .ok()?;
        debug!(
            server_name = name,
            "answering a TLS-ALPN-01 challenge of another node"
        );
        config_with(Arc::new(Fixed(certificate))).ok()
    }

    /// Whether a listener answers TLS-ALPN-01 from this set now: without one, choosing
    /// TLS-ALPN-01 could only fail validation.
    pub fn is_answered(&self) -> bool {
        self.listeners.load(std::sync::atomic::Ordering::Relaxed) > 0
    }

    /// Counts a listener answering from this set until the guard drops.
    pub fn answering(&self) -> Answering {
        self.listeners
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Answering(self.listeners.clone())
    }

    /// How many certificates are answerable now.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The SHA-256 digest of a key authorization, which the acmeIdentifier extension carries.
fn digest_of(key_authorization: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(key_authorization.as_bytes()).into()
}

/// One challenge certificate, for challenge handshakes only.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        is_challenge_hello(client_hello.alpn()).then(|| self.0.clone())
    }
}

/// A listener answering TLS-ALPN-01 (see [`AlpnCertificates::answering`]).
#[derive(Debug)]
pub struct Answering(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl ResolvesServerCert for AlpnCertificates {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // Checked here too, so this resolver can never answer anything but a challenge handshake.
        if !is_challenge_hello(client_hello.alpn()) {
            return None;
        }
        let name = client_hello.server_name()?;
        let found = self.lookup(name);
        if found.is_none() {
            debug!(server_name = name, "no TLS-ALPN-01 challenge for this name");
        }
        found
    }
}

/// Whether a ClientHello's ALPN list is exactly `acme-tls/1`, as RFC 8737 §3 has the CA send it.
pub fn is_challenge_hello<'a>(alpn: Option<impl Iterator<Item = &'a [u8]>>) -> bool {
    let Some(mut protocols) = alpn else {
        return false;
    };
    protocols.next() == Some(ACME_TLS_ALPN) && protocols.next().is_none()
}

/// The rustls configuration for challenge handshakes: TLS 1.2 and 1.3, ALPN `acme-tls/1` only,
/// certificates from `certificates`.
pub fn challenge_config(
    certificates: AlpnCertificates,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    config_with(Arc::new(certificates))
}

fn config_with(
    resolver: Arc<dyn ResolvesServerCert>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// The SNI the CA sends for `identifier`: the name itself, or for an IP address its reverse-DNS name
/// (`1.0.0.127.in-addr.arpa`, nibbles under `ip6.arpa`; RFC 8738 §6).
pub fn server_name_for(identifier: &str) -> String {
    match identifier.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => {
            let [a, b, c, d] = ip.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa")
        }
        Ok(IpAddr::V6(ip)) => {
            let mut name = String::with_capacity(72);
            for byte in ip.octets().iter().rev() {
                name.push_str(&format!("{:x}.{:x}.", byte & 0x0f, byte >> 4));
            }
            name.push_str("ip6.arpa");
            name
        }
        Err(_) => identifier.to_ascii_lowercase(),
    }
}

/// A self-signed certificate whose only SAN is `identifier` and whose critical `acmeIdentifier`
/// extension carries `digest` (RFC 8737 §3), with a fresh P-256 key.
pub fn challenge_certificate(
    identifier: &str,
    digest: &[u8],
) -> Result<Arc<CertifiedKey>, CertificateError> {
    if digest.len() != 32 {
        return Err(CertificateError::Key(format!(
            "the key authorization digest is {} bytes, not 32",
            digest.len()
        )));
    }
    let key = crate::certificate::generate_key(crate::config::KeyType::EcdsaP256)?;
    let mut params = rcgen::CertificateParams::new(vec![identifier.to_owned()]).map_err(|err| {
        CertificateError::Parse(format!(
            "{identifier:?} as a challenge certificate name: {err}"
        ))
    })?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let certificate = params.self_signed(&key).map_err(|err| {
        CertificateError::Key(format!("cannot sign the challenge certificate: {err}"))
    })?;
    let chain = vec![CertificateDer::from(certificate.der().to_vec())];
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    // Not `CertifiedKey::from_der`: its key check parses the certificate with webpki, which refuses
    // the critical acmeIdentifier extension it does not know. The key was made for this very
    // certificate, so there is nothing to check.
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signer = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|err| CertificateError::Key(err.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(chain, signer)))
}

/// Completes a challenge handshake on a connection whose ClientHello [`is_challenge_hello`] accepted,
/// then closes it: the CA only looks at the certificate.
pub async fn answer<IO>(start: tokio_rustls::StartHandshake<IO>, config: Arc<rustls::ServerConfig>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let server_name = start.client_hello().server_name().map(str::to_owned);
    match start.into_stream(config).await {
        Ok(mut tls) => {
            debug!(?server_name, "answered a TLS-ALPN-01 challenge");
            let _ = tls.shutdown().await;
        }
        Err(err) => debug!(?server_name, %err, "TLS-ALPN-01 handshake failed"),
    }
}

/// The listener could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for TLS-ALPN-01 challenges on {addr} (`[https] listen`): {source}")]
pub struct AlpnListenError {
    /// The address from `[https] listen`.
    pub addr: SocketAddr,
    /// Why binding failed.
    pub source: std::io::Error,
}

/// The short-lived TLS listener of `certd issue`: answers TLS-ALPN-01 handshakes from `certificates`
/// and closes every other connection after reading its ClientHello.
#[derive(Debug)]
pub struct AlpnResponder {
    local_addrs: Vec<SocketAddr>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    _answering: Answering,
}

impl AlpnResponder {
    /// Binds every address (all or nothing) and starts answering.
    pub async fn start(
        addrs: &[SocketAddr],
        certificates: AlpnCertificates,
    ) -> Result<Self, AlpnListenError> {
        let answering = certificates.answering();
        let config = challenge_config(certificates).map_err(|err| AlpnListenError {
            addr: addrs
                .first()
                .copied()
                .unwrap_or_else(|| ([0, 0, 0, 0], 443).into()),
            source: std::io::Error::other(err),
        })?;
        let mut listeners = Vec::with_capacity(addrs.len());
        for &addr in addrs {
            let listener = crate::listener::bind_tcp(addr)
                .map_err(|source| AlpnListenError { addr, source })?;
            let local = listener
                .local_addr()
                .map_err(|source| AlpnListenError { addr, source })?;
            listeners.push((local, listener));
        }
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let mut local_addrs = Vec::with_capacity(listeners.len());
        for (local, listener) in listeners {
            local_addrs.push(local);
            info!(%local, "answering TLS-ALPN-01 challenges");
            tasks.spawn(
                accept_loop(listener, config.clone(), shutdown.clone(), tasks.clone())
                    .instrument(tracing::info_span!("tls-alpn-01", %local)),
            );
        }
        Ok(Self {
            local_addrs,
            shutdown,
            tasks,
            _answering: answering,
        })
    }

    /// The addresses actually bound.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Stops accepting and waits for every connection task to end (each is bounded by the
    /// handshake timeout).
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    // The CA makes a few connections per name; more than this at once is not the CA.
    let connections = Arc::new(tokio::sync::Semaphore::new(256));
    loop {
        let Some((stream, peer)) = crate::listener::accept(&listener, &shutdown).await else {
            return;
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            continue;
        };
        let config = config.clone();
        tasks.spawn(
            async move {
                let _permit = permit;
                let handshake = async {
                    let acceptor = rustls::server::Acceptor::default();
                    let start = LazyConfigAcceptor::new(acceptor, stream).await?;
                    if is_challenge_hello(start.client_hello().alpn()) {
                        answer(start, config).await;
                    } else {
                        debug!("not a TLS-ALPN-01 handshake; closing");
                    }
                    Ok::<_, std::io::Error>(())
                };
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => debug!(%err, "no ClientHello"),
                    Err(_) => debug!("handshake timed out"),
                }
            }
            .instrument(tracing::debug_span!("conn", %peer)),
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_exactly_acme_tls_1_is_a_challenge_hello() {
        let list = |protocols: &'static [&'static [u8]]| Some(protocols.iter().copied());
        assert!(is_challenge_hello(list(&[b"acme-tls/1"])));
        assert!(!is_challenge_hello(list(&[b"acme-tls/1", b"h2"])));
        assert!(!is_challenge_hello(list(&[b"h2", b"acme-tls/1"])));
        assert!(!is_challenge_hello(list(&[b"h2", b"http/1.1"])));
        assert!(!is_challenge_hello(list(&[])));
        assert!(!is_challenge_hello(None::<std::iter::Empty<&[u8]>>));
    }

    #[test]
    fn ip_addresses_are_looked_up_by_their_reverse_names() {
        assert_eq!(server_name_for("127.0.0.1"), "1.0.0.127.in-addr.arpa");
        assert_eq!(
            server_name_for("::1"),
            format!("1.{}ip6.arpa", "0.".repeat(31))
        );
        assert_eq!(server_name_for("A.test"), "a.test");
    }

    #[test]
    fn a_published_certificate_carries_the_name_and_digest_until_withdrawn() {
        use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};
        let certificates = AlpnCertificates::default();
        let digest = [7u8; 32];
        let guard = certificates.publish("127.0.0.1", &digest).unwrap();
        let key = certificates.lookup("1.0.0.127.in-addr.arpa.").unwrap();
        let (_, cert) = X509Certificate::from_der(key.cert[0].as_ref()).unwrap();
        let sans: Vec<String> = cert
            .extensions()
            .iter()
            .filter_map(|ext| match ext.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => Some(san),
                _ => None,
            })
            .flat_map(|san| san.general_names.iter())
            .map(|name| match name {
                GeneralName::IPAddress(bytes) => format!("ip {bytes:?}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(sans, ["ip [127, 0, 0, 1]"]);
        // id-pe-acmeIdentifier, critical, an OCTET STRING of the digest.
        let acme = cert
            .extensions()
            .iter()
            .find(|ext| ext.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .unwrap();
        assert!(acme.critical);
        assert_eq!(acme.value[..2], [0x04, 32]);
        assert_eq!(acme.value[2..], digest);

        assert!(certificates.publish("a.test", &[1u8; 31]).is_err());
        drop(guard);
        assert!(certificates.is_empty());

        // Whether any listener answers (what the automatic choice asks before picking it).
        assert!(!certificates.is_answered());
        let listening = certificates.answering();
        assert!(certificates.clone().is_answered());
        drop(listening);
        assert!(!certificates.is_answered());
    }

    #[tokio::test]
    async fn a_node_answers_with_the_certificate_another_node_published() {
        let dir = tempfile::tempdir().unwrap();
        let store: crate::storage::SharedStore =
            crate::fleet_answers::tests::SharingStore::new(dir.path());
        let ours = crate::challenge::ChallengeTokens::shared_through(&store);
        let theirs = crate::challenge::ChallengeTokens::shared_through(&store);
        let _guard = theirs
            .alpn()
            .publish_to_fleet("127.0.0.1", "tok.thumb")
            .await
            .unwrap();
        assert!(ours.alpn().lookup("1.0.0.127.in-addr.arpa").is_none());
        assert!(ours
            .alpn()
            .fleet_config("1.0.0.127.in-addr.arpa")
            .await
            .is_some());
        assert!(ours.alpn().fleet_config("other.test").await.is_none());
        // The certificate the other node serves carries the digest of the key authorization.
        let local = theirs.alpn().lookup("1.0.0.127.in-addr.arpa").unwrap();
        let (_, cert) = x509_parser::prelude::FromDer::from_der(local.cert[0].as_ref()).unwrap();
        let cert: x509_parser::certificate::X509Certificate<'_> = cert;
        let acme = cert
            .extensions()
            .iter()
            .find(|ext| ext.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .unwrap();
        assert_eq!(acme.value[2..], digest_of("tok.thumb"));
    }
}
