//! Which roots certd trusts for the CA's own HTTPS: `acme.ca_roots`, the Mozilla web roots and the
//! system store, with the system store read only when a chain needs it.
//!
//! Reading the system store is work: on Debian openssl-probe finds both the bundle and the hashed
//! folder, so about 300 PEM certificates are read, decoded and parsed into trust anchors for every
//! CA connection (about 2 % of `certd issue`'s CPU, bench/README.md). The web roots are ready-made
//! trust anchors and
//! `acme.ca_roots` is one small file, so [`CaTrust`] first checks a chain against those two, and
//! only a chain they do not accept is checked again against all three, with the system store read
//! on that first need and kept for the client's life. Let's Encrypt, every public CA and a private
//! CA named in `ca_roots` (Pebble) never need it.
//!
//! The chains accepted are exactly those accepted with all three loaded up front: a chain that
//! verifies against some of the anchors verifies against all of them, and any failure against the
//! first set (unknown issuer, but also an expired or wrong path that another root might avoid) is
//! retried against the whole set, whose answer is final.

use std::fmt;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::ServerCertVerified;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;

use crate::tls_verifier::{ChainPolicy, Presented, Verifier};

/// Reads the system store's certificates (those that cannot be read are skipped: the web roots and
/// `ca_roots` still apply).
pub(super) type SystemRoots = fn() -> Vec<CertificateDer<'static>>;

/// The system store as rustls-native-certs finds it.
pub(super) fn native_roots() -> Vec<CertificateDer<'static>> {
    rustls_native_certs::load_native_certs().certs
}

/// The chains the CA's HTTPS may present: the policy of its [`Verifier`], which reads the system
/// store only when a chain needs it.
pub(super) struct CaTrust {
    provider: Arc<CryptoProvider>,
    /// The web roots and `ca_roots`: the anchors the full set starts from.
    base: RootCertStore,
    /// A verifier over `base` alone.
    quick: Arc<WebPkiServerVerifier>,
    system_roots: SystemRoots,
    /// A verifier over `base` and the system store, built on first need.
    full: OnceLock<Option<Arc<WebPkiServerVerifier>>>,
}

impl fmt::Debug for CaTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaTrust")
            .field("base_roots", &self.base.len())
            .field("system_store_read", &self.system_store_read())
            .finish()
    }
}

impl CaTrust {
    /// Trusts `base` (the web roots and `ca_roots`, already collected) and, when a chain needs it,
    /// what `system_roots` reads. `base` must not be empty (the web roots are always in it).
    pub(super) fn new(
        provider: Arc<CryptoProvider>,
        base: RootCertStore,
        system_roots: SystemRoots,
    ) -> Result<Self, rustls::client::VerifierBuilderError> {
        let quick =
            WebPkiServerVerifier::builder_with_provider(Arc::new(base.clone()), provider.clone())
                .build()?;
        Ok(Self {
            provider,
            base,
            quick,
            system_roots,
            full: OnceLock::new(),
        })
    }

    /// The verifier for the CA's HTTPS: chains judged by these roots, signatures by the provider.
    pub(super) fn into_verifier(self) -> Verifier<Self> {
        let provider = self.provider.clone();
        Verifier::new(&provider, self)
    }

    /// Whether the system store has been read (for tests and the debug output).
    pub(super) fn system_store_read(&self) -> bool {
        self.full.get().is_some()
    }

    /// The verifier over every root, reading the system store the first time.
    fn full(&self) -> Option<&Arc<WebPkiServerVerifier>> {
        self.full
            .get_or_init(|| {
                let mut roots = self.base.clone();
                let (added, skipped) = roots.add_parsable_certificates((self.system_roots)());
                tracing::debug!(added, skipped, "read the system root store");
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                    .build()
                    .ok()
            })
            .as_ref()
    }
}

impl ChainPolicy for CaTrust {
    fn verify_chain(&self, presented: &Presented<'_>) -> Result<ServerCertVerified, rustls::Error> {
        match presented.verify_with(self.quick.as_ref()) {
            Ok(verified) => Ok(verified),
            Err(first) => match self.full() {
                Some(full) => presented.verify_with(full.as_ref()),
                // Not reached: the full set holds the base, which is never empty.
                None => Err(first),
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rustls::client::danger::ServerCertVerifier;
    use rustls_pki_types::{ServerName, UnixTime};

    use super::*;

    /// A CA and a leaf for `ca.test` it signed.
    struct TestCa {
        root: CertificateDer<'static>,
        leaf: CertificateDer<'static>,
    }

    /// Each CA gets a name of its own: a chain is matched to its root by name first.
    fn test_ca(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let root = params.self_signed(&key).unwrap();
        let root_der = root.der().clone();
        let issuer = rcgen::Issuer::new(params, key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["ca.test".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        TestCa {
            root: root_der,
            leaf: leaf.der().clone(),
        }
    }

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    fn web_roots() -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        roots
    }

    fn verify(trust: &Verifier<CaTrust>, ca: &TestCa) -> Result<ServerCertVerified, rustls::Error> {
        trust.verify_server_cert(
            &ca.leaf,
            &[],
            &ServerName::try_from("ca.test").unwrap(),
            &[],
            UnixTime::now(),
        )
    }

    static SYSTEM_READS: AtomicUsize = AtomicUsize::new(0);
    static SYSTEM_CA: OnceLock<TestCa> = OnceLock::new();

    fn system_ca() -> &'static TestCa {
        SYSTEM_CA.get_or_init(|| test_ca("system store CA"))
    }

    /// A system store holding only [`system_ca`]'s root.
    fn fake_system_store() -> Vec<CertificateDer<'static>> {
        vec![system_ca().root.clone()]
    }

    /// The same, counting its reads (used by one test only, so the count is that test's).
    fn counted_system_store() -> Vec<CertificateDer<'static>> {
        SYSTEM_READS.fetch_add(1, Ordering::SeqCst);
        fake_system_store()
    }

    #[test]
    fn a_ca_roots_chain_is_trusted_without_reading_the_system_store() {
        let ca = test_ca("ca_roots CA");
        let mut base = web_roots();
        base.add(ca.root.clone()).unwrap();
        let trust = CaTrust::new(provider(), base, fake_system_store)
            .unwrap()
            .into_verifier();
        verify(&trust, &ca).unwrap();
        assert!(!trust.policy().system_store_read());
    }

    #[test]
    fn a_chain_only_the_system_store_knows_is_trusted_and_the_store_read_once() {
        let trust = CaTrust::new(provider(), web_roots(), counted_system_store)
            .unwrap()
            .into_verifier();
        verify(&trust, system_ca()).unwrap();
        verify(&trust, system_ca()).unwrap();
        assert!(trust.policy().system_store_read());
        assert_eq!(SYSTEM_READS.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_chain_no_root_knows_is_refused_as_an_unknown_issuer() {
        let trust = CaTrust::new(provider(), web_roots(), fake_system_store)
            .unwrap()
            .into_verifier();
        let err = verify(&trust, &test_ca("unknown CA")).unwrap_err();
        assert_eq!(
            err,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
        );
        assert!(trust.policy().system_store_read());
    }
}
