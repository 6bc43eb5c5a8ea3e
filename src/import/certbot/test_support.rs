//! Test material shared by the import's unit tests: a CA that signs leaves with chosen validity, a
//! certbot-shaped lineage on disk, and a certbot-style P-256 account key.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::base64url::base64url_encode;
use crate::certificate::CertifiedPem;

/// A CA and the leaves it signs, like Let's Encrypt's chain (leaf + one intermediate).
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA certificate, as the chain.
    pub pem: String,
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "certbot import test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A leaf for `names` valid from `days_from` to `days_to` days from now, with a fresh key.
    pub fn leaf(&self, names: &[&str], days_from: i64, days_to: i64) -> CertifiedPem {
        let key = rcgen::KeyPair::generate().unwrap();
        self.leaf_for(names, days_from, days_to, &key)
    }

    /// [`TestCa::leaf`] for `key`, stored as PKCS#8.
    pub fn leaf_for(
        &self,
        names: &[&str],
        days_from: i64,
        days_to: i64,
        key: &rcgen::KeyPair,
    ) -> CertifiedPem {
        let mut params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .unwrap();
        let now = OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(days_from);
        params.not_after = now + time::Duration::days(days_to);
        let cert = params.signed_by(key, &self.issuer).unwrap();
        CertifiedPem {
            cert_pem: cert.pem(),
            chain_pem: self.pem.clone(),
            key_pem: Zeroizing::new(key.serialize_pem()),
        }
    }
}

/// Lays out lineage `name` as certbot does: `archive/<name>/{cert,chain,fullchain,privkey}<n>.pem`,
/// relative links in `live/<name>/` to version `n`, and `renewal/<name>.conf` naming `server`.
pub fn write_lineage(from: &Path, name: &str, n: u32, pem: &CertifiedPem, server: &str) {
    let archive = from.join("archive").join(name);
    let live = from.join("live").join(name);
    fs::create_dir_all(&archive).unwrap();
    fs::create_dir_all(&live).unwrap();
    fs::create_dir_all(from.join("renewal")).unwrap();
    for (file, contents) in [
        ("cert", pem.cert_pem.clone()),
        ("chain", pem.chain_pem.clone()),
        ("fullchain", pem.fullchain_pem()),
        ("privkey", pem.key_pem.to_string()),
    ] {
        fs::write(archive.join(format!("{file}{n}.pem")), contents).unwrap();
        let link = live.join(format!("{file}.pem"));
        let _ = fs::remove_file(&link);
        symlink(format!("../../archive/{name}/{file}{n}.pem"), &link).unwrap();
    }
    let etc = "/etc/letsencrypt";
    fs::write(
        from.join("renewal").join(format!("{name}.conf")),
        format!(
            "version = 2.9.0\narchive_dir = {etc}/archive/{name}\n\
             cert = {etc}/live/{name}/cert.pem\nprivkey = {etc}/live/{name}/privkey.pem\n\
             chain = {etc}/live/{name}/chain.pem\nfullchain = {etc}/live/{name}/fullchain.pem\n\n\
             [renewalparams]\naccount = 0123abcd\nauthenticator = standalone\n\
             server = {server}\nkey_type = ecdsa\n"
        ),
    )
    .unwrap();
}

/// The private scalar of a P-256 key: ECPrivateKey's `INTEGER 1, OCTET STRING (32)` precedes it in
/// any encoder's PKCS#8.
fn p256_scalar(pair: &rcgen::KeyPair) -> Vec<u8> {
    let der = pair.serialize_der();
    let at = der
        .windows(5)
        .position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x20])
        .unwrap()
        + 5;
    der[at..at + 32].to_vec()
}

/// A P-256 key in SEC1 (`EC PRIVATE KEY`), as OpenSSL's traditional format writes it.
pub fn p256_sec1_pem(pair: &rcgen::KeyPair) -> String {
    let mut der = vec![0x30, 0x77, 0x02, 0x01, 0x01, 0x04, 0x20];
    der.extend_from_slice(&p256_scalar(pair));
    der.extend_from_slice(&[
        0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0xa1, 0x44, 0x03,
        0x42, 0x00,
    ]);
    der.extend_from_slice(pair.public_key_raw());
    let base64: String = base64url_encode(&der)
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    let mut pem = String::from("-----BEGIN EC PRIVATE KEY-----\n");
    for line in base64.as_bytes().chunks(64) {
        pem += std::str::from_utf8(line).unwrap();
        pem.push('\n');
    }
    // 121 bytes of DER: 162 base64 characters, two of them padding.
    pem.insert_str(pem.len() - 1, "==");
    pem + "-----END EC PRIVATE KEY-----\n"
}

/// A fresh P-256 key as certbot would write it: a JWK with d, x and y.
pub fn fresh_p256_jwk() -> (String, rcgen::KeyPair) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let d = p256_scalar(&pair);
    let point = pair.public_key_raw();
    let jwk = serde_json::json!({
        "kty": "EC",
        "crv": "P-256",
        "x": *base64url_encode(&point[1..33]),
        "y": *base64url_encode(&point[33..65]),
        "d": *base64url_encode(&d),
    });
    (jwk.to_string(), pair)
}
