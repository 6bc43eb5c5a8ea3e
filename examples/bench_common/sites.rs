//! Making the many sites of the scale setups (`bench_gen_sites`, `bench_fleet`), included with
//! `#[path]`: a throwaway rcgen ECDSA P-256 CA, leaves shaped like a Let's Encrypt leaf (ECDSA
//! P-256, 90 days, serverAuth, the CA as the chain) so certd loads and serves what it would in
//! production, and the threads that make and install one certificate per site.

use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use certd::certificate::CertifiedPem;

/// A CA that signs the sites' certificates.
pub struct BenchCa {
    /// Its signer.
    pub issuer: Issuer<'static, KeyPair>,
    /// Its certificate (PEM): the chain of every leaf, and what clients trust.
    pub pem: String,
}

impl BenchCa {
    /// A new CA named `common_name`, valid from an hour before `now` for 100 days (longer than any
    /// leaf), and its private key's PEM for a setup that signs with it again later.
    pub fn generate(common_name: &str, now: OffsetDateTime) -> anyhow::Result<(Self, String)> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(100);
        let pem = params.self_signed(&key)?.pem();
        let key_pem = key.serialize_pem();
        let issuer = Issuer::new(params, key);
        Ok((Self { issuer, pem }, key_pem))
    }

    /// A fresh P-256 leaf for `name`, valid from an hour before `now` for 90 days: (its PEMs, its
    /// DER).
    pub fn leaf(&self, name: &str, now: OffsetDateTime) -> anyhow::Result<(CertifiedPem, Vec<u8>)> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(vec![name.to_owned()])?;
        params.distinguished_name = DistinguishedName::new();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(90);
        let cert = params.signed_by(&key, &self.issuer)?;
        let der = cert.der().to_vec();
        Ok((
            CertifiedPem {
                cert_pem: cert.pem(),
                chain_pem: self.pem.clone(),
                key_pem: Zeroizing::new(key.serialize_pem()),
            },
            der,
        ))
    }
}

/// Runs `each(index)` for every site index below `sites` on `threads` threads (at least one),
/// handing the indexes out in order; the first error ends the run.
pub fn for_each_site(
    sites: usize,
    threads: usize,
    each: impl Fn(usize) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<()> {
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        if index >= sites {
                            return Ok(());
                        }
                        each(index)?;
                    }
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("an installing thread panicked"))??;
        }
        Ok(())
    })
}
