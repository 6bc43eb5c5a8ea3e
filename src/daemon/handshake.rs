//! The start of every :443 connection: read the ClientHello, then pick the TLS configuration.
//!
//! - ALPN exactly `acme-tls/1` (a CA validating TLS-ALPN-01): the challenge configuration, whose
//!   only certificates are the orders' challenge certificates; the connection is closed after the
//!   handshake ([`crate::tls_alpn`]). Sites' configuration never offers `acme-tls/1`, so nothing else
//!   can end up there.
//! - No SNI, on a local address that is a site's IP name (RFC 8738 certificates; clients do not
//!   send IP addresses in SNI): that site's certificate, and the connection belongs to that site.
//! - Everything else: the sites' configuration and its SNI resolver, as before.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{LazyConfigAcceptor, TlsAcceptor};

use crate::resolver::SniResolver;
use crate::tls_alpn::{self, AlpnCertificates};

/// What a finished handshake is.
pub(super) enum Accepted {
    /// A connection for a site, with the name it is for: the SNI, or the IP name of the local
    /// address when the client sent none (`None`: the default site's connection).
    Site {
        tls: Box<TlsStream<TcpStream>>,
        name: Option<String>,
    },
    /// A TLS-ALPN-01 validation, answered and closed.
    Challenge,
}

/// The TLS configurations a connection can get, shared by every worker.
pub(super) struct Handshake {
    resolver: Arc<SniResolver>,
    challenge: Arc<rustls::ServerConfig>,
    /// The daemon's :443 answers TLS-ALPN-01 for as long as it runs.
    _answering: tls_alpn::Answering,
    /// Asked for the challenges another node of the fleet published.
    challenges: AlpnCertificates,
}

impl Handshake {
    /// Answers TLS-ALPN-01 from `challenges` and IP names from `resolver`.
    pub fn new(
        resolver: Arc<SniResolver>,
        challenges: AlpnCertificates,
    ) -> Result<Self, rustls::Error> {
        Ok(Self {
            resolver,
            _answering: challenges.answering(),
            challenge: tls_alpn::challenge_config(challenges.clone())?,
            challenges,
        })
    }

    /// Reads the ClientHello on `stream` (which arrived on `local`) and completes the handshake
    /// with the configuration it calls for; `sites` is the sites' acceptor.
    pub async fn accept(
        &self,
        sites: &TlsAcceptor,
        stream: TcpStream,
        local: Option<SocketAddr>,
    ) -> std::io::Result<Accepted> {
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await?;
        let hello = start.client_hello();
        if tls_alpn::is_challenge_hello(hello.alpn()) {
            let config = match hello.server_name().map(str::to_owned) {
                Some(name) if self.challenges.lookup(&name).is_none() => {
                    self.challenges.fleet_config(&name).await
                }
                _ => None,
            };
            let config = config.unwrap_or_else(|| self.challenge.clone());
            tls_alpn::answer(start, config).await;
            return Ok(Accepted::Challenge);
        }
        if hello.server_name().is_none() {
            if let Some((name, config)) = local.and_then(|local| self.for_address(sites, local)) {
                let tls = start.into_stream(config).await?;
                return Ok(Accepted::Site {
                    tls: Box::new(tls),
                    name: Some(name),
                });
            }
        }
        let tls = start.into_stream(sites.config().clone()).await?;
        let name = tls.get_ref().1.server_name().map(str::to_owned);
        Ok(Accepted::Site {
            tls: Box::new(tls),
            name,
        })
    }

    /// For a handshake without SNI to `local`: the name and a configuration serving its site's
    /// certificate, when `local`'s address is a site's name.
    fn for_address(
        &self,
        sites: &TlsAcceptor,
        local: SocketAddr,
    ) -> Option<(String, Arc<rustls::ServerConfig>)> {
        // A dual-stack socket sees IPv4 clients as ::ffff:a.b.c.d.
        let name = local.ip().to_canonical().to_string();
        let key = self.resolver.lookup(&name)?;
        // A copy of the sites' configuration (ALPN, session tickets) with just this certificate.
        let mut config = rustls::ServerConfig::clone(sites.config());
        config.cert_resolver = Arc::new(Fixed(key));
        Some((name, Arc::new(config)))
    }
}

/// Always the same certificate.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::certificate::CertifiedPem;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};
    use zeroize::Zeroizing;

    /// Accepts any certificate: the tests look at which one was presented. Not
    /// `tls_verifier::AnyChain`, which checks the handshake's signature against the leaf: webpki
    /// will not parse a TLS-ALPN-01 certificate (its acmeIdentifier extension is critical).
    #[derive(Debug)]
    struct AnyCertificate;

    impl ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            rustls::crypto::aws_lc_rs::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }

    fn site_key(names: &[&str]) -> Arc<CertifiedKey> {
        let key = crate::certificate::generate_key(crate::config::KeyType::EcdsaP256).unwrap();
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .self_signed(&key)
            .unwrap();
        crate::resolver::certified_key(&CertifiedPem {
            cert_pem: cert.pem(),
            chain_pem: String::new(),
            key_pem: Zeroizing::new(key.serialize_pem()),
        })
        .unwrap()
    }

    /// What the client got: the presented leaf and the negotiated ALPN, or the handshake error.
    type Outcome = Result<(CertificateDer<'static>, Option<Vec<u8>>), String>;

    /// Serves `handshake` on a loopback port and handshakes once per call with the given SNI
    /// (`None`: an IP address, so no SNI) and ALPN list.
    struct Server {
        addr: SocketAddr,
        accepted: tokio::sync::mpsc::UnboundedReceiver<&'static str>,
    }

    async fn server(handshake: Handshake, sites: TlsAcceptor) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (report, accepted) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let local = stream.local_addr().ok();
                let what = match handshake.accept(&sites, stream, local).await {
                    Ok(Accepted::Challenge) => "challenge",
                    Ok(Accepted::Site { name: Some(_), .. }) => "site",
                    Ok(Accepted::Site { name: None, .. }) => "site without a name",
                    Err(_) => "refused",
                };
                let _ = report.send(what);
            }
        });
        Server { addr, accepted }
    }

    impl Server {
        async fn connect(&mut self, sni: Option<&str>, alpn: &[&[u8]]) -> (Outcome, &'static str) {
            let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate))
            .with_no_client_auth();
            config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
            let name = match sni {
                Some(name) => ServerName::try_from(name.to_owned()).unwrap(),
                None => ServerName::IpAddress(self.addr.ip().into()),
            };
            let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let outcome = match connector.connect(name, tcp).await {
                Ok(tls) => {
                    let connection = tls.get_ref().1;
                    let leaf = connection.peer_certificates().unwrap()[0]
                        .clone()
                        .into_owned();
                    Ok((leaf, connection.alpn_protocol().map(<[u8]>::to_vec)))
                }
                Err(err) => Err(err.to_string()),
            };
            (outcome, self.accepted.recv().await.unwrap())
        }
    }

    #[tokio::test]
    async fn only_an_acme_tls_1_hello_gets_the_challenge_certificate() {
        let resolver = Arc::new(SniResolver::new());
        let site = site_key(&["a.test"]);
        resolver.publish(&["a.test".to_owned()], site.clone());
        let challenges = AlpnCertificates::default();
        let _published = challenges.publish("a.test", &[9u8; 32]).unwrap();
        let challenge = challenges.lookup("a.test").unwrap();
        let sites = TlsAcceptor::from(super::super::https::tls_config(resolver.clone()).unwrap());
        let mut server = server(Handshake::new(resolver, challenges).unwrap(), sites).await;

        let (got, accepted) = server.connect(Some("a.test"), &[b"acme-tls/1"]).await;
        let (leaf, alpn) = got.unwrap();
        assert_eq!(leaf, challenge.cert[0]);
        assert_eq!(alpn.as_deref(), Some(&b"acme-tls/1"[..]));
        assert_eq!(accepted, "challenge");

        // Normal clients, and anything else offering more than acme-tls/1, get the site's.
        let normal: [&[&[u8]]; 4] = [
            &[b"h2", b"http/1.1"],
            &[b"http/1.1"],
            &[b"acme-tls/1", b"h2"],
            &[],
        ];
        for offered in normal {
            let (got, accepted) = server.connect(Some("a.test"), offered).await;
            let (leaf, alpn) = got.unwrap();
            assert_eq!(leaf, site.cert[0], "{offered:?}");
            assert_ne!(alpn.as_deref(), Some(&b"acme-tls/1"[..]), "{offered:?}");
            assert_eq!(accepted, "site", "{offered:?}");
        }

        // A challenge hello for a name with no challenge in flight is refused, not given the site's.
        let (got, accepted) = server.connect(Some("b.test"), &[b"acme-tls/1"]).await;
        assert!(got.is_err());
        assert_eq!(accepted, "challenge");
        drop(_published);
        let (got, _) = server.connect(Some("a.test"), &[b"acme-tls/1"]).await;
        assert!(got.is_err(), "withdrawn with its order");
    }

    #[tokio::test]
    async fn without_sni_the_local_address_picks_an_ip_sites_certificate() {
        let resolver = Arc::new(SniResolver::new());
        let site = site_key(&["a.test"]);
        let ip_site = site_key(&["127.0.0.1"]);
        resolver.publish(&["a.test".to_owned()], site.clone());
        let sites = TlsAcceptor::from(super::super::https::tls_config(resolver.clone()).unwrap());
        let handshake = Handshake::new(resolver.clone(), AlpnCertificates::default()).unwrap();
        let mut server = server(handshake, sites).await;

        // No IP site yet and no default site: refused.
        let (got, accepted) = server.connect(None, &[b"h2"]).await;
        assert!(got.is_err());
        assert_eq!(accepted, "refused");

        resolver.publish(&["127.0.0.1".to_owned()], ip_site.clone());
        let (got, accepted) = server.connect(None, &[b"h2"]).await;
        let (leaf, alpn) = got.unwrap();
        assert_eq!(leaf, ip_site.cert[0]);
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]), "the sites' ALPN is kept");
        assert_eq!(accepted, "site");
        // SNI still wins.
        let (got, _) = server.connect(Some("a.test"), &[b"h2"]).await;
        assert_eq!(got.unwrap().0, site.cert[0]);
    }
}
