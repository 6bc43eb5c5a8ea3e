//! TLS client settings shared by the benchmark examples (`bench_tls`, `bench_ws`), included with
//! `#[path]`: TLS 1.3 only, X25519 key exchange (what OpenSSL 3.0 clients such as wrk and h2load
//! offer, so certd and nginx do the same work for our clients as for theirs), no session resumption
//! unless asked for, and either a trusted CA file or no certificate verification at all.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// How a client checks the server's certificate.
pub enum Trust<'a> {
    /// Verify the chain against the PEM roots in this file, and the name.
    // Not every example that includes this module verifies.
    #[allow(dead_code)]
    CaFile(&'a Path),
    /// Accept any certificate: for handshake-rate runs, where the client's own verification would
    /// only take CPU away from the server under test on a small machine.
    Anything,
}

/// A client configuration for the benchmark clients.
pub fn client_config(
    trust: Trust<'_>,
    alpn: &[&[u8]],
    resume: bool,
) -> anyhow::Result<Arc<ClientConfig>> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    let provider = Arc::new(provider);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let mut config = match trust {
        Trust::CaFile(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("cannot read {}", path.display()))?
            {
                roots.add(cert.with_context(|| format!("bad PEM in {}", path.display()))?)?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Anything => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider)))
            .with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(Arc::new(config))
}

/// A TCP connection to `addr` with a completed TLS handshake for `name` (the SNI).
pub async fn connect(
    config: &Arc<ClientConfig>,
    addr: SocketAddr,
    name: &str,
) -> anyhow::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let server_name = ServerName::try_from(name.to_owned())?;
    Ok(TlsConnector::from(config.clone())
        .connect(server_name, tcp)
        .await?)
}

/// Accepts any certificate and any handshake signature. Not certd's `tls_verifier::AnyChain`,
/// which still checks the signatures: that is client CPU the handshake-rate runs leave to the
/// server under test.
#[derive(Debug)]
struct AcceptAnything(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
