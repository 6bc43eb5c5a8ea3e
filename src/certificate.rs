//! Certificate material: generating keys and CSRs, reading certificates, and checking that a new pair is
//! fit to serve (the key matches, the names are covered, it is in date) before anything is persisted.

use zeroize::Zeroizing;

/// A certificate chain and its private key, as PEM.
#[derive(Clone)]
pub struct CertifiedPem {
    /// The end-entity certificate.
    pub cert_pem: String,
    /// The intermediates, leaf first order as the CA sent them (may be empty).
    pub chain_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: Zeroizing<String>,
}

impl CertifiedPem {
    /// The leaf followed by the intermediates, as servers want it.
    pub fn fullchain_pem(&self) -> String {
        let mut full = self.cert_pem.clone();
        if !full.ends_with('\n') {
            full.push('\n');
        }
        full.push_str(&self.chain_pem);
        full
    }
}

impl std::fmt::Debug for CertifiedPem {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertifiedPem")
            .field("cert_pem", &self.cert_pem)
            .field("chain_pem", &self.chain_pem)
            .finish_non_exhaustive()
    }
}
