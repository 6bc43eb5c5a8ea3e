//! Test PKI and certificate checks: the CA and leaf Pebble serves its own HTTPS with (generated with rcgen
//! at test time, never checked in), and the helpers that judge what certd stored — chain verification
//! with rustls's webpki verifier, the exact SAN list, and whether a key belongs to a certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use x509_parser::prelude::{FromDer, GeneralName, SubjectPublicKeyInfo, X509Certificate};

/// Installs aws-lc-rs as rustls's process-wide provider. Every test calls it (through the harness);
/// only the first call does anything.
pub fn init_crypto() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A throwaway CA and a leaf for `127.0.0.1` / `localhost` signed by it, written as PEM files.
pub struct TestPki {
    /// The CA certificate: what certd's `[acme] ca_roots` points at.
    pub ca_path: PathBuf,
    /// The leaf certificate Pebble serves.
    pub cert_path: PathBuf,
    /// The leaf's private key.
    pub key_path: PathBuf,
    /// The CA certificate, as PEM.
    pub ca_pem: String,
}

impl TestPki {
    /// Generates the CA and leaf and writes `ca.pem`, `cert.pem` and `key.pem` into `dir`.
    pub fn generate(dir: &Path) -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "certd e2e test CA");
        let ca_key = KeyPair::generate().expect("generate CA key");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("self-sign CA");

        let mut leaf_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("leaf params");
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let leaf_key = KeyPair::generate().expect("generate leaf key");
        let leaf = leaf_params.signed_by(&leaf_key, &ca).expect("sign leaf");

        let pki = Self {
            ca_path: dir.join("ca.pem"),
            cert_path: dir.join("cert.pem"),
            key_path: dir.join("key.pem"),
            ca_pem: ca.pem(),
        };
        write(&pki.ca_path, &pki.ca_pem);
        write(&pki.cert_path, &leaf.pem());
        write(&pki.key_path, &leaf_key.serialize_pem());
        pki
    }

    /// A rustls client configuration that trusts only this CA (for Pebble's management API).
    pub fn client_config(&self) -> rustls::ClientConfig {
        init_crypto();
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).expect("parse test CA"))
            .expect("add test CA");
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth()
    }
}

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
}

/// Verifies `fullchain_pem` (leaf first, then intermediates) for `name` against `root_pem`, the way a TLS
/// client would: rustls's webpki verifier, current time, no string comparison.
pub fn verify_chain(fullchain_pem: &str, root_pem: &str, name: &str) -> Result<(), String> {
    init_crypto();
    let chain = CertificateDer::pem_slice_iter(fullchain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("parse chain: {err}"))?;
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or("the chain holds no certificate")?;
    if intermediates.is_empty() {
        return Err("the chain holds no intermediate".into());
    }
    let mut roots = RootCertStore::empty();
    let root = CertificateDer::from_pem_slice(root_pem.as_bytes())
        .map_err(|err| format!("parse root: {err}"))?;
    roots.add(root).map_err(|err| format!("add root: {err}"))?;
    let verifier = WebPkiServerVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|err| format!("build verifier: {err}"))?;
    let server_name = ServerName::try_from(name.to_owned())
        .map_err(|err| format!("server name {name}: {err}"))?;
    verifier
        .verify_server_cert(leaf, intermediates, &server_name, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|err| format!("verify for {name}: {err}"))
}

/// Runs `f` on the first certificate in `pem`.
fn with_leaf<T>(pem: &str, f: impl FnOnce(&X509Certificate<'_>) -> T) -> T {
    let der = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .expect("no certificate in PEM")
        .expect("bad certificate PEM");
    let (_, cert) = X509Certificate::from_der(&der).expect("parse certificate DER");
    f(&cert)
}

/// The DNS names in the first certificate's subjectAltName, in certificate order.
pub fn sans(cert_pem: &str) -> Vec<String> {
    with_leaf(cert_pem, |cert| {
        let Some(san) = cert
            .subject_alternative_name()
            .expect("parse subjectAltName")
        else {
            return Vec::new();
        };
        san.value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some(dns.to_string()),
                _ => None,
            })
            .collect()
    })
}

/// The first certificate's serial number as lower-case hex without separators or leading zeros.
pub fn serial_hex(cert_pem: &str) -> String {
    with_leaf(cert_pem, cert_serial)
}

/// `cert`'s serial number, normalized like [`normalize_serial`].
pub fn cert_serial(cert: &X509Certificate<'_>) -> String {
    let hex: String = cert
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    normalize_serial(&hex)
}

/// A serial written as hex, lower-cased, without `:` separators or leading zeros (so certd's and ours
/// compare whatever the padding).
pub fn normalize_serial(serial: &str) -> String {
    let hex: String = serial
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() { "0" } else { trimmed }.to_owned()
}

/// The first certificate's notAfter.
pub fn not_after(cert_pem: &str) -> time::OffsetDateTime {
    with_leaf(cert_pem, |cert| cert.validity().not_after.to_datetime())
}

/// Whether `key_pem` (PKCS#8, SEC1 or PKCS#1) is the private half of the first certificate's public key.
pub fn key_matches(cert_pem: &str, key_pem: &str) -> bool {
    init_crypto();
    let Ok(key) = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()) else {
        return false;
    };
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let Ok(signing_key) = provider.key_provider.load_private_key(key) else {
        return false;
    };
    let Some(spki) = signing_key.public_key() else {
        return false;
    };
    let Ok((_, from_key)) = SubjectPublicKeyInfo::from_der(spki.as_ref()) else {
        return false;
    };
    with_leaf(cert_pem, |cert| {
        let from_cert = cert.public_key();
        from_cert.algorithm.algorithm == from_key.algorithm.algorithm
            && from_cert.subject_public_key.data == from_key.subject_public_key.data
    })
}
