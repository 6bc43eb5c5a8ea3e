//! Certificate material: generating keys and CSRs, reading certificates, and checking that a new pair is
//! fit to serve (the key matches, the names are covered, it is in date) before anything is persisted.

use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};
use zeroize::Zeroizing;

use crate::config::KeyType;

/// A certificate chain and its private key, as PEM.
#[derive(Clone)]
pub struct CertifiedPem {
    /// The end-entity certificate.
    pub cert_pem: String,
    /// The intermediates, in the order the CA sent them (may be empty).
    pub chain_pem: String,
    /// The private key: PKCS#8 as certd writes it (SEC1 or PKCS#1 when imported from certbot).
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

    /// Splits a CA's PEM chain (leaf first, as RFC 8555 §7.4.2 prescribes) into leaf and intermediates.
    pub fn from_fullchain(
        fullchain_pem: &str,
        key_pem: Zeroizing<String>,
    ) -> Result<Self, CertificateError> {
        const END: &str = "-----END CERTIFICATE-----";
        let end = fullchain_pem
            .find(END)
            .ok_or_else(|| CertificateError::Parse("no PEM certificate in the chain".into()))?
            + END.len();
        let cert_pem = format!("{}\n", fullchain_pem[..end].trim());
        let rest = fullchain_pem[end..].trim();
        let chain_pem = if rest.is_empty() {
            String::new()
        } else {
            format!("{rest}\n")
        };
        Ok(Self {
            cert_pem,
            chain_pem,
            key_pem,
        })
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

/// What certd needs to know about a certificate: enough for `status` and for renewal decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// Serial number, lower-case hex without separators.
    pub serial: String,
    /// The issuer's distinguished name.
    pub issuer: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// The DNS names (lower-cased) and IP addresses (as `IpAddr` prints them) in the
    /// subjectAltName extension, in certificate order.
    pub names: Vec<String>,
}

/// Why certificate material was rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// The PEM or DER could not be read.
    #[error("cannot parse certificate: {0}")]
    Parse(String),
    /// The key could not be generated, read or used.
    #[error("private key: {0}")]
    Key(String),
    /// The private key is not the certificate's.
    #[error("the private key does not match the certificate")]
    KeyMismatch,
    /// The certificate lacks a configured name.
    #[error("the certificate does not cover {missing:?} (it covers {covered:?})")]
    NamesNotCovered {
        /// Configured names missing from the certificate.
        missing: Vec<String>,
        /// The names it does cover.
        covered: Vec<String>,
    },
    /// The certificate is not valid at the time of the check.
    #[error("the certificate is not valid now (valid from {not_before} to {not_after})")]
    OutOfDate {
        /// Start of validity.
        not_before: OffsetDateTime,
        /// End of validity.
        not_after: OffsetDateTime,
    },
}

/// Generates a fresh private key of the configured type.
pub fn generate_key(key_type: KeyType) -> Result<rcgen::KeyPair, CertificateError> {
    let key = match key_type {
        KeyType::EcdsaP256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        KeyType::EcdsaP384 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
        KeyType::Rsa2048 => {
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        }
        KeyType::Rsa4096 => {
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_4096)
        }
    };
    key.map_err(|err| CertificateError::Key(format!("cannot generate a {key_type} key: {err}")))
}

/// A DER certificate signing request for `names` (all as SANs, empty subject, as Let's Encrypt expects).
pub fn csr_der(names: &[String], key: &rcgen::KeyPair) -> Result<Vec<u8>, CertificateError> {
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .map_err(|err| CertificateError::Parse(format!("names for the CSR: {err}")))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(key)
        .map_err(|err| CertificateError::Key(format!("cannot sign the CSR: {err}")))?;
    Ok(csr.der().to_vec())
}

/// Reads the first certificate of a PEM text.
pub fn parse_pem(cert_pem: &str) -> Result<CertificateInfo, CertificateError> {
    let der = leaf_der(cert_pem)?;
    let (_, cert) =
        X509Certificate::from_der(&der).map_err(|err| CertificateError::Parse(err.to_string()))?;
    info(&cert)
}

/// Checks that `pem` may be served for `names` at `now`: the key belongs to the leaf, the leaf covers
/// every name, and it is within its validity period. Returns what the leaf says about itself.
pub fn check_pair(
    pem: &CertifiedPem,
    names: &[String],
    now: OffsetDateTime,
) -> Result<CertificateInfo, CertificateError> {
    let der = leaf_der(&pem.cert_pem)?;
    let (_, cert) =
        X509Certificate::from_der(&der).map_err(|err| CertificateError::Parse(err.to_string()))?;
    let info = info(&cert)?;

    let key = rcgen::KeyPair::from_pem(&pem.key_pem)
        .map_err(|err| CertificateError::Key(format!("cannot read the private key: {err}")))?;
    let cert_key_bits: &[u8] = &cert.public_key().subject_public_key.data;
    if rcgen::PublicKeyData::der_bytes(&key) != cert_key_bits {
        return Err(CertificateError::KeyMismatch);
    }

    let missing: Vec<String> = names
        .iter()
        .filter(|name| !info.names.iter().any(|covered| covered == *name))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(CertificateError::NamesNotCovered {
            missing,
            covered: info.names.clone(),
        });
    }

    if now < info.not_before || now > info.not_after {
        return Err(CertificateError::OutOfDate {
            not_before: info.not_before,
            not_after: info.not_after,
        });
    }
    Ok(info)
}

fn leaf_der(cert_pem: &str) -> Result<Vec<u8>, CertificateError> {
    for pem in x509_parser::pem::Pem::iter_from_buffer(cert_pem.as_bytes()) {
        let pem = pem.map_err(|err| CertificateError::Parse(format!("bad PEM: {err}")))?;
        if pem.label == "CERTIFICATE" {
            return Ok(pem.contents);
        }
    }
    Err(CertificateError::Parse("no PEM certificate found".into()))
}

/// An iPAddress SAN (4 or 16 octets) as text; `None` for any other length.
fn ip_name(bytes: &[u8]) -> Option<String> {
    let ip: std::net::IpAddr = match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok()?.into(),
        16 => <[u8; 16]>::try_from(bytes).ok()?.into(),
        _ => return None,
    };
    Some(ip.to_string())
}

fn info(cert: &X509Certificate<'_>) -> Result<CertificateInfo, CertificateError> {
    let validity = cert.validity();
    let names = cert
        .extensions()
        .iter()
        .filter_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => Some(san),
            _ => None,
        })
        .flat_map(|san| san.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
            // As config validation writes IP names (RFC 8738 certificates).
            GeneralName::IPAddress(bytes) => ip_name(bytes),
            _ => None,
        })
        .collect();
    let serial = cert
        .raw_serial()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    Ok(CertificateInfo {
        serial,
        issuer: cert.issuer().to_string(),
        not_before: validity.not_before.to_datetime(),
        not_after: validity.not_after.to_datetime(),
        names,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn self_signed(names: &[&str], key: &rcgen::KeyPair) -> String {
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.self_signed(key).unwrap().pem()
    }

    fn pair(names: &[&str]) -> CertifiedPem {
        let key = generate_key(KeyType::EcdsaP256).unwrap();
        CertifiedPem {
            cert_pem: self_signed(names, &key),
            chain_pem: String::new(),
            key_pem: Zeroizing::new(key.serialize_pem()),
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_matching_pair_passes_and_reports_its_names() {
        let pem = pair(&["a.test", "www.a.test"]);
        let info = check_pair(
            &pem,
            &names(&["a.test", "www.a.test"]),
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        assert_eq!(info.names, names(&["a.test", "www.a.test"]));
        assert!(!info.serial.is_empty());
        assert!(info.not_after > info.not_before);
    }

    #[test]
    fn ip_address_sans_count_as_names() {
        let pem = pair(&["127.0.0.1", "::1", "a.test"]);
        let wanted = names(&["127.0.0.1", "::1", "a.test"]);
        let info = check_pair(&pem, &wanted, OffsetDateTime::now_utc()).unwrap();
        assert_eq!(info.names, wanted);
        let csr = csr_der(
            &names(&["192.0.2.7"]),
            &generate_key(KeyType::EcdsaP256).unwrap(),
        );
        assert!(csr.is_ok());
    }

    #[test]
    fn a_key_from_another_pair_is_rejected() {
        let mut pem = pair(&["a.test"]);
        pem.key_pem = pair(&["a.test"]).key_pem;
        let err = check_pair(&pem, &names(&["a.test"]), OffsetDateTime::now_utc()).unwrap_err();
        assert!(matches!(err, CertificateError::KeyMismatch), "{err}");
    }

    #[test]
    fn a_missing_name_is_rejected() {
        let pem = pair(&["a.test"]);
        let err = check_pair(
            &pem,
            &names(&["a.test", "b.test"]),
            OffsetDateTime::now_utc(),
        )
        .unwrap_err();
        match err {
            CertificateError::NamesNotCovered { missing, .. } => {
                assert_eq!(missing, names(&["b.test"]))
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn an_expired_certificate_is_rejected() {
        let pem = pair(&["a.test"]);
        let far_future = OffsetDateTime::now_utc() + time::Duration::days(365 * 5000);
        let err = check_pair(&pem, &names(&["a.test"]), far_future).unwrap_err();
        assert!(matches!(err, CertificateError::OutOfDate { .. }), "{err}");
    }

    #[test]
    fn every_key_type_generates_and_signs_a_csr() {
        for key_type in [KeyType::EcdsaP256, KeyType::EcdsaP384, KeyType::Rsa2048] {
            let key = generate_key(key_type).unwrap();
            let csr = csr_der(&names(&["a.test", "b.test"]), &key).unwrap();
            let (_, parsed) =
                x509_parser::certification_request::X509CertificationRequest::from_der(&csr)
                    .unwrap();
            parsed.verify_signature().unwrap();
        }
    }

    #[test]
    fn a_fullchain_splits_into_leaf_and_intermediates() {
        let leaf = pair(&["a.test"]);
        let inter = pair(&["intermediate.test"]);
        let full = format!("{}{}", leaf.cert_pem, inter.cert_pem);
        let split = CertifiedPem::from_fullchain(&full, leaf.key_pem.clone()).unwrap();
        assert_eq!(
            parse_pem(&split.cert_pem).unwrap().names,
            names(&["a.test"])
        );
        assert_eq!(
            parse_pem(&split.chain_pem).unwrap().names,
            names(&["intermediate.test"])
        );
        assert_eq!(
            split.fullchain_pem().matches("BEGIN CERTIFICATE").count(),
            2
        );
    }
}
