//! The TLS side of `sslmode`: libpq's meanings on rustls (already certd's TLS stack).
//!
//! `prefer` and `require` encrypt without verifying the server, exactly as libpq does (they protect
//! against passive eavesdropping only); `verify-full` checks the chain against `ca_roots` and the
//! host name. tokio-postgres itself falls back to plain TCP under `prefer` when the server has no
//! TLS.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::SslMode;
use crate::tls_verifier::{AnyChain, Verifier};

/// The rustls connector for `mode`, or `None` for `disable`.
pub(super) fn connector(
    mode: SslMode,
    ca_roots: Option<&Path>,
) -> Result<Option<MakeRustlsConnect>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())?;
    let config = match mode {
        SslMode::Disable => return Ok(None),
        SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Verifier::new(&provider, AnyChain)))
            .with_no_client_auth(),
        SslMode::VerifyFull => {
            let path = ca_roots.ok_or("sslmode verify-full without ca_roots")?;
            let pem = std::fs::read(path).map_err(|err| format!("{}: {err}", path.display()))?;
            let mut roots = RootCertStore::empty();
            for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
                let cert: CertificateDer<'static> =
                    cert.map_err(|err| format!("{}: {err}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|err| format!("{}: {err}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("{}: holds no certificate", path.display()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Some(MakeRustlsConnect::new(config)))
}
