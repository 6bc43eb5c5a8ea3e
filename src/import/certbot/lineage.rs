//! certbot's lineages: one certificate each, named after a folder in `live/` and a file in `renewal/`.
//!
//! ```text
//! <from>/
//!   live/<name>/{cert,chain,fullchain,privkey}.pem   symlinks to the current files in archive/<name>/
//!   archive/<name>/{cert,chain,fullchain,privkey}N.pem
//!   renewal/<name>.conf                              see renewal_conf.rs
//!   accounts/<server host and path>/<account id>/    see account.rs
//! ```
//!
//! A lineage is read through its `live/` links (followed), which is what a server configured by certbot
//! serves. When a link is absolute and dangles (a copy of `/etc/letsencrypt` made elsewhere), the file of
//! the same name in this folder's `archive/<name>/` is used; when `live/<name>/` lacks a file, the path
//! in the renewal configuration is tried. The pair is then checked on its own terms — the key belongs to
//! the certificate and it is in date — before anyone compares it with the configuration.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::renewal_conf::{self, RenewalConf};
use crate::certificate::{self, CertificateError, CertificateInfo, CertifiedPem};
use crate::time_format::rfc3339;

/// Why `--from` cannot be imported from at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    /// The folder (or its `live/` or `renewal/`) cannot be listed.
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        /// The folder.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Neither `live/` nor `renewal/` is there.
    #[error("{} is not a certbot configuration folder: it has neither live/ nor renewal/ (certbot's is usually /etc/letsencrypt)", path.display())]
    NotCertbot {
        /// The folder.
        path: PathBuf,
    },
}

/// Why one lineage is skipped: what the operator reads after `<lineage>: skipped: `.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LineageError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A file is not a certificate or key certd can read.
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The private key belongs to another certificate.
    #[error("the private key {} does not match the certificate {}", key.display(), cert.display())]
    KeyMismatch {
        /// Where the certificate was read.
        cert: PathBuf,
        /// Where the key was read.
        key: PathBuf,
    },
    /// The certificate has expired.
    #[error("the certificate expired on {} (serial {serial})", rfc3339(*not_after))]
    Expired {
        /// The leaf's serial.
        serial: String,
        /// End of validity.
        not_after: OffsetDateTime,
    },
    /// The certificate is not valid yet.
    #[error("the certificate is not valid before {} (serial {serial})", rfc3339(*not_before))]
    NotYetValid {
        /// The leaf's serial.
        serial: String,
        /// Start of validity.
        not_before: OffsetDateTime,
    },
}

/// One lineage's current pair, checked: the key is the certificate's and it is in date.
#[derive(Debug, Clone)]
pub struct Lineage {
    /// The lineage's name (its folder in `live/`).
    pub name: String,
    /// The leaf, intermediates and key, as certbot stored them.
    pub pem: CertifiedPem,
    /// What the leaf says about itself.
    pub info: CertificateInfo,
}

/// The names of the lineages under `from`: every folder in `live/` and every `*.conf` in `renewal/`,
/// sorted and without duplicates.
pub fn lineage_names(from: &Path) -> Result<Vec<String>, ScanError> {
    fs::read_dir(from).map_err(|source| ScanError::Unreadable {
        path: from.to_owned(),
        source,
    })?;
    let live = list(&from.join("live"))?;
    let renewal = list(&from.join("renewal"))?;
    if live.is_none() && renewal.is_none() {
        return Err(ScanError::NotCertbot {
            path: from.to_owned(),
        });
    }
    let mut names: Vec<String> = Vec::new();
    for (path, name) in live.unwrap_or_default() {
        if path.is_dir() {
            names.push(name);
        }
    }
    for (path, name) in renewal.unwrap_or_default() {
        if let Some(stem) = name.strip_suffix(".conf") {
            if path.is_file() && !stem.is_empty() {
                names.push(stem.to_owned());
            }
        }
    }
    names.retain(|name| !name.starts_with('.'));
    names.sort();
    names.dedup();
    Ok(names)
}

/// The entries of `dir` with their UTF-8 names, or `None` when it does not exist.
fn list(dir: &Path) -> Result<Option<Vec<(PathBuf, String)>>, ScanError> {
    let unreadable = |source| ScanError::Unreadable {
        path: dir.to_owned(),
        source,
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(unreadable(err)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(unreadable)?;
        if let Some(name) = entry.file_name().to_str() {
            found.push((entry.path(), name.to_owned()));
        }
    }
    Ok(Some(found))
}

/// `renewal/<name>.conf`, parsed; the default (nothing known) when it is missing or unreadable, since
/// the certificate itself is in `live/` and the configuration only adds the CA and the account.
pub fn read_conf(from: &Path, name: &str) -> RenewalConf {
    let path = from.join("renewal").join(format!("{name}.conf"));
    match fs::read_to_string(&path) {
        Ok(text) => renewal_conf::parse(&text),
        Err(err) => {
            if err.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %err, "cannot read certbot's renewal configuration");
            }
            RenewalConf::default()
        }
    }
}

/// Reads lineage `name`'s current pair and checks it at `now`: readable, the key belongs to the leaf,
/// the leaf names at least one DNS name and is in date.
pub fn read_lineage(
    from: &Path,
    name: &str,
    conf: &RenewalConf,
    now: OffsetDateTime,
) -> Result<Lineage, LineageError> {
    let fullchain_path = locate(from, name, "fullchain.pem", conf.fullchain.as_deref());
    let (pem_without_key, cert_path) = match fs::read_to_string(&fullchain_path) {
        Ok(fullchain) => {
            let pem =
                CertifiedPem::from_fullchain(&fullchain, Zeroizing::default()).map_err(|err| {
                    LineageError::Invalid {
                        path: fullchain_path.clone(),
                        reason: err.to_string(),
                    }
                })?;
            (pem, fullchain_path)
        }
        // No fullchain.pem: the leaf and the intermediates apart, as certbot also keeps them.
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            let cert_path = locate(from, name, "cert.pem", conf.cert.as_deref());
            let chain_path = locate(from, name, "chain.pem", conf.chain.as_deref());
            let pem = CertifiedPem {
                cert_pem: read_text(&cert_path)?,
                chain_pem: read_text(&chain_path)?,
                key_pem: Zeroizing::default(),
            };
            (pem, cert_path)
        }
        Err(source) => {
            return Err(LineageError::Read {
                path: fullchain_path,
                source,
            })
        }
    };
    let key_path = locate(from, name, "privkey.pem", conf.privkey.as_deref());
    let pem = CertifiedPem {
        key_pem: read_secret(&key_path)?,
        ..pem_without_key
    };

    let info = certificate::parse_pem(&pem.cert_pem).map_err(|err| LineageError::Invalid {
        path: cert_path.clone(),
        reason: err.to_string(),
    })?;
    if info.names.is_empty() {
        return Err(LineageError::Invalid {
            path: cert_path,
            reason: "the certificate names no DNS name".to_owned(),
        });
    }
    match certificate::check_pair(&pem, &info.names, now) {
        Ok(_) => {}
        Err(CertificateError::KeyMismatch) => {
            return Err(LineageError::KeyMismatch {
                cert: cert_path,
                key: key_path,
            })
        }
        Err(CertificateError::Key(reason)) => {
            return Err(LineageError::Invalid {
                path: key_path,
                reason,
            })
        }
        Err(CertificateError::OutOfDate { not_before, .. }) if now < not_before => {
            return Err(LineageError::NotYetValid {
                serial: info.serial,
                not_before,
            })
        }
        Err(CertificateError::OutOfDate { not_after, .. }) => {
            return Err(LineageError::Expired {
                serial: info.serial,
                not_after,
            })
        }
        Err(err) => {
            return Err(LineageError::Invalid {
                path: cert_path,
                reason: err.to_string(),
            })
        }
    }
    Ok(Lineage {
        name: name.to_owned(),
        pem,
        info,
    })
}

/// Where to read `file` of lineage `name`: `live/<name>/<file>` when it resolves; else, for an absolute
/// link that dangles, the same file name in `archive/<name>/` here; else the renewal configuration's
/// path when that exists. Falls back to the `live/` path, so a read error names what certbot would use.
fn locate(from: &Path, name: &str, file: &str, conf_path: Option<&Path>) -> PathBuf {
    let live = from.join("live").join(name).join(file);
    if live.exists() {
        return live;
    }
    if let Ok(target) = fs::read_link(&live) {
        if target.is_absolute() {
            if let Some(file_name) = target.file_name() {
                let archived = from.join("archive").join(name).join(file_name);
                if archived.is_file() {
                    return archived;
                }
            }
        }
    }
    match conf_path {
        Some(path) if path.exists() => path.to_owned(),
        _ => live,
    }
}

fn read_text(path: &Path) -> Result<String, LineageError> {
    fs::read_to_string(path).map_err(|source| LineageError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads a private key into a buffer that is wiped when dropped.
fn read_secret(path: &Path) -> Result<Zeroizing<String>, LineageError> {
    match super::read_secret(path) {
        Ok(Some(text)) => Ok(text),
        Ok(None) => Err(LineageError::Invalid {
            path: path.to_owned(),
            reason: "not a PEM private key (not UTF-8)".to_owned(),
        }),
        Err(source) => Err(LineageError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::test_support::{write_lineage, TestCa};
    use super::*;
    use std::os::unix::fs::symlink;

    const SERVER: &str = "https://ca.example/dir";

    fn read(from: &Path, name: &str) -> Result<Lineage, LineageError> {
        let conf = read_conf(from, name);
        read_lineage(from, name, &conf, OffsetDateTime::now_utc())
    }

    #[test]
    fn a_lineage_is_read_through_its_live_links() {
        let from = tempfile::tempdir().unwrap();
        let ca = TestCa::new();
        let old = ca.leaf(&["a.test"], -80, 10);
        let current = ca.leaf(&["a.test", "www.a.test"], -1, 89);
        write_lineage(from.path(), "a.test", 1, &old, SERVER);
        write_lineage(from.path(), "a.test", 2, &current, SERVER);
        fs::write(from.path().join("live").join("README"), "certbot's note").unwrap();

        assert_eq!(lineage_names(from.path()).unwrap(), vec!["a.test"]);
        let conf = read_conf(from.path(), "a.test");
        assert_eq!(conf.server.as_deref(), Some(SERVER));
        assert_eq!(conf.account.as_deref(), Some("0123abcd"));
        let lineage = read(from.path(), "a.test").unwrap();
        assert_eq!(lineage.info.names, vec!["a.test", "www.a.test"]);
        assert_eq!(lineage.pem.cert_pem.trim(), current.cert_pem.trim());
        assert_eq!(lineage.pem.chain_pem.trim(), ca.pem.trim());
        assert_eq!(*lineage.pem.key_pem, *current.key_pem);
    }

    #[test]
    fn without_fullchain_the_leaf_and_chain_are_read_apart() {
        let from = tempfile::tempdir().unwrap();
        let ca = TestCa::new();
        let pem = ca.leaf(&["a.test"], -1, 89);
        write_lineage(from.path(), "a.test", 1, &pem, SERVER);
        fs::remove_file(from.path().join("live/a.test/fullchain.pem")).unwrap();
        let lineage = read(from.path(), "a.test").unwrap();
        assert_eq!(lineage.pem.cert_pem, pem.cert_pem);
        assert_eq!(lineage.pem.chain_pem, ca.pem);
    }

    #[test]
    fn absolute_links_into_another_tree_fall_back_to_this_archive() {
        let from = tempfile::tempdir().unwrap();
        let ca = TestCa::new();
        let pem = ca.leaf(&["a.test"], -1, 89);
        write_lineage(from.path(), "a.test", 3, &pem, SERVER);
        for file in ["cert", "chain", "fullchain", "privkey"] {
            let link = from.path().join(format!("live/a.test/{file}.pem"));
            fs::remove_file(&link).unwrap();
            symlink(
                format!("/nonexistent-certbot-copy/archive/a.test/{file}3.pem"),
                &link,
            )
            .unwrap();
        }
        let lineage = read(from.path(), "a.test").unwrap();
        assert_eq!(lineage.pem.cert_pem.trim(), pem.cert_pem.trim());
    }

    #[test]
    fn expired_future_mismatched_and_missing_lineages_say_why() {
        let from = tempfile::tempdir().unwrap();
        let ca = TestCa::new();
        write_lineage(
            from.path(),
            "expired",
            1,
            &ca.leaf(&["e.test"], -100, -10),
            SERVER,
        );
        write_lineage(
            from.path(),
            "future",
            1,
            &ca.leaf(&["f.test"], 5, 95),
            SERVER,
        );
        let mut mismatched = ca.leaf(&["m.test"], -1, 89);
        mismatched.key_pem = ca.leaf(&["other.test"], -1, 89).key_pem;
        write_lineage(from.path(), "mismatched", 1, &mismatched, SERVER);
        write_lineage(
            from.path(),
            "broken",
            1,
            &ca.leaf(&["b.test"], -1, 89),
            SERVER,
        );
        fs::write(from.path().join("archive/broken/fullchain1.pem"), "garbage").unwrap();
        write_lineage(
            from.path(),
            "gone",
            1,
            &ca.leaf(&["g.test"], -1, 89),
            SERVER,
        );
        fs::remove_file(from.path().join("archive/gone/privkey1.pem")).unwrap();
        fs::create_dir_all(from.path().join("renewal")).unwrap();
        fs::write(
            from.path().join("renewal/conf-only.conf"),
            "[renewalparams]\n",
        )
        .unwrap();

        assert_eq!(
            lineage_names(from.path()).unwrap(),
            vec![
                "broken",
                "conf-only",
                "expired",
                "future",
                "gone",
                "mismatched"
            ]
        );
        let reason = |name: &str| read(from.path(), name).unwrap_err();
        assert!(matches!(reason("expired"), LineageError::Expired { .. }));
        assert!(reason("expired")
            .to_string()
            .starts_with("the certificate expired on "));
        assert!(matches!(reason("future"), LineageError::NotYetValid { .. }));
        let err = reason("mismatched");
        assert!(matches!(err, LineageError::KeyMismatch { .. }), "{err}");
        assert!(
            err.to_string().contains("live/mismatched/privkey.pem"),
            "{err}"
        );
        let err = reason("broken");
        assert!(matches!(err, LineageError::Invalid { .. }), "{err}");
        assert!(err.to_string().contains("fullchain.pem"), "{err}");
        let err = reason("gone");
        assert!(matches!(err, LineageError::Read { .. }), "{err}");
        assert!(err.to_string().contains("live/gone/privkey.pem"), "{err}");
        assert!(matches!(reason("conf-only"), LineageError::Read { .. }));
    }

    #[test]
    fn a_folder_that_is_not_certbots_is_refused() {
        let from = tempfile::tempdir().unwrap();
        assert!(matches!(
            lineage_names(from.path()),
            Err(ScanError::NotCertbot { .. })
        ));
        assert!(matches!(
            lineage_names(&from.path().join("missing")),
            Err(ScanError::Unreadable { .. })
        ));
        fs::create_dir(from.path().join("live")).unwrap();
        assert_eq!(lineage_names(from.path()).unwrap(), Vec::<String>::new());
    }
}
