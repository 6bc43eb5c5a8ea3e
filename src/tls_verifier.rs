//! How certd's TLS clients judge a server's certificate: one rustls [`ServerCertVerifier`],
//! [`Verifier`], whose chain decision is a [`ChainPolicy`] and whose handshake-signature checks are
//! always the crypto provider's.
//!
//! The CA client (the roots it trusts, `acme/trust.rs`), PostgreSQL's `sslmode` (`storage/postgres/
//! tls.rs`, [`AnyChain`] for `require`) and the test harness's recording client differ only in
//! which chains they accept; the
//! signature checks are the same code for all of them (what rustls's own webpki verifier does: the
//! provider's algorithms over the certificate's key), so a policy cannot forget or weaken them.

use std::fmt;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// What a server presented in one handshake, as rustls hands it to a verifier.
#[derive(Debug)]
pub struct Presented<'a> {
    /// The leaf certificate.
    pub end_entity: &'a CertificateDer<'a>,
    /// The rest of the chain, as sent.
    pub intermediates: &'a [CertificateDer<'a>],
    /// The name the client asked for.
    pub server_name: &'a ServerName<'a>,
    /// A stapled OCSP response (empty when none was sent).
    pub ocsp_response: &'a [u8],
    /// The time the chain is judged at.
    pub now: UnixTime,
}

impl Presented<'_> {
    /// Judges this chain with `verifier` (typically rustls's webpki verifier over some roots).
    pub fn verify_with(
        &self,
        verifier: &dyn ServerCertVerifier,
    ) -> Result<ServerCertVerified, rustls::Error> {
        verifier.verify_server_cert(
            self.end_entity,
            self.intermediates,
            self.server_name,
            self.ocsp_response,
            self.now,
        )
    }
}

/// Which certificate chains a [`Verifier`] accepts.
pub trait ChainPolicy: fmt::Debug + Send + Sync {
    /// Accepts or refuses the chain `presented`; the handshake's signatures are checked apart.
    fn verify_chain(&self, presented: &Presented<'_>) -> Result<ServerCertVerified, rustls::Error>;
}

/// Accepts every chain, as libpq's `sslmode = require` does: the [`Verifier`] still checks the
/// handshake's signatures, so the session is at least bound to the key the server showed.
#[derive(Debug)]
pub struct AnyChain;

impl ChainPolicy for AnyChain {
    fn verify_chain(
        &self,
        _presented: &Presented<'_>,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
}

/// A server-certificate verifier: the chain is judged by `P`, the handshake's signatures by the
/// provider's algorithms.
pub struct Verifier<P> {
    policy: P,
    algorithms: WebPkiSupportedAlgorithms,
}

impl<P> Verifier<P> {
    /// A verifier whose chains `policy` judges, checking signatures with `provider`'s algorithms.
    pub fn new(provider: &CryptoProvider, policy: P) -> Self {
        Self {
            policy,
            algorithms: provider.signature_verification_algorithms,
        }
    }

    /// The chain policy (for what it has recorded or read).
    pub fn policy(&self) -> &P {
        &self.policy
    }
}

impl<P: fmt::Debug> fmt::Debug for Verifier<P> {
    // The algorithm list says nothing a reader of a debug line needs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Verifier").field(&self.policy).finish()
    }
}

impl<P: ChainPolicy> ServerCertVerifier for Verifier<P> {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.policy.verify_chain(&Presented {
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use rustls::server::{ClientHello, ResolvesServerCert};
    use rustls::sign::CertifiedKey;
    use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};
    use rustls_pki_types::PrivateKeyDer;

    use super::*;

    /// Refuses every chain with one error, to see it reach the handshake unchanged.
    #[derive(Debug)]
    struct NoChain;

    impl ChainPolicy for NoChain {
        fn verify_chain(&self, _: &Presented<'_>) -> Result<ServerCertVerified, rustls::Error> {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    /// Serves one certificate with a signing key that need not be its own (rustls's
    /// `with_single_cert` would refuse the mismatch up front).
    #[derive(Debug)]
    struct Serve(Arc<CertifiedKey>);

    impl ResolvesServerCert for Serve {
        fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            Some(self.0.clone())
        }
    }

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    /// A server for `a.test` whose handshake signatures are made with `signing_key`.
    fn server(cert: CertificateDer<'static>, signing_key: &rcgen::KeyPair) -> ServerConnection {
        let key = PrivateKeyDer::try_from(signing_key.serialize_der()).unwrap();
        let signer = provider().key_provider.load_private_key(key).unwrap();
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Serve(Arc::new(CertifiedKey::new(
                vec![cert],
                signer,
            )))));
        ServerConnection::new(Arc::new(config)).unwrap()
    }

    /// Runs a whole in-memory handshake between a client using `verifier` and `server`.
    fn handshake(
        verifier: impl ServerCertVerifier + 'static,
        mut server: ServerConnection,
    ) -> Result<(), rustls::Error> {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        let name = ServerName::try_from("a.test").unwrap();
        let mut client = ClientConnection::new(Arc::new(config), name).unwrap();
        // Each round moves everything one side has to say; a handshake needs a few.
        for _ in 0..10 {
            let mut wire = Vec::new();
            client.write_tls(&mut wire).unwrap();
            server.read_tls(&mut wire.as_slice()).unwrap();
            server.process_new_packets()?;
            let mut wire = Vec::new();
            server.write_tls(&mut wire).unwrap();
            client.read_tls(&mut wire.as_slice()).unwrap();
            client.process_new_packets()?;
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
        }
        panic!("the handshake did not finish");
    }

    fn certificate(key: &rcgen::KeyPair) -> CertificateDer<'static> {
        let params = rcgen::CertificateParams::new(vec!["a.test".to_owned()]).unwrap();
        params.self_signed(key).unwrap().der().clone()
    }

    #[test]
    fn a_handshake_signed_by_the_certificates_key_passes() {
        let key = rcgen::KeyPair::generate().unwrap();
        let verifier = Verifier::new(&provider(), AnyChain);
        handshake(verifier, server(certificate(&key), &key)).unwrap();
    }

    #[test]
    fn a_policy_that_accepts_any_chain_still_refuses_a_signature_by_another_key() {
        let key = rcgen::KeyPair::generate().unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        let verifier = Verifier::new(&provider(), AnyChain);
        let err = handshake(verifier, server(certificate(&key), &other)).unwrap_err();
        assert_eq!(
            err,
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature)
        );
    }

    #[test]
    fn the_policys_refusal_is_the_handshakes_error() {
        let key = rcgen::KeyPair::generate().unwrap();
        let verifier = Verifier::new(&provider(), NoChain);
        let err = handshake(verifier, server(certificate(&key), &key)).unwrap_err();
        assert_eq!(
            err,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
        );
    }
}
