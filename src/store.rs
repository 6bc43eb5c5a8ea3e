//! The state directory: certificates, keys, ACME accounts, per-site records and the lock.
//!
//! Layout (every path is built by [`Layout`], nowhere else):
//!
//! ```text
//! state/
//!   lock                               held (flock) by the certd process that may write; holds its pid
//!   accounts/<ca>/account.json         ACME account credentials for one CA directory URL (0600)
//!   certs/<site>/
//!     versions/<NNNNNN>/               one issued pair per folder, never modified once complete
//!       cert.pem chain.pem fullchain.pem privkey.pem (0600)
//!     live -> versions/<NNNNNN>        the current pair; replaced with one rename
//!     cert.pem -> live/cert.pem        the fixed contract other tools (nginx) read, like certbot's live/
//!     chain.pem, fullchain.pem, privkey.pem   likewise
//!     record.json                      last attempt, last error, next attempt (for `status`)
//! ```
//!
//! Directories are 0700 and every file 0600. A new pair is written into a temporary folder, each file
//! fsynced, the folder renamed into `versions/`, then a new `live` link is created beside the old one and
//! renamed over it. So after a crash at any moment `live` names either the old complete pair or the new
//! complete pair, never a mix. The previous version is kept; older ones are pruned.

use std::path::{Path, PathBuf};

use crate::certificate::CertifiedPem;

/// Errors reading or writing the state directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What certd was doing ("create directory", "write", "rename", ...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Another process holds the state directory's lock.
    #[error("state directory {} is locked by another certd process{}", path.display(), pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default())]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The pid written by the holder, if it could be read.
        pid: Option<u32>,
    },
    /// A stored file is not what certd wrote (bad JSON, missing file in a version, ...).
    #[error("{}: {reason}", path.display())]
    Corrupt {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct Store {
    layout: Layout,
}

/// Builds every path in the state directory.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

/// Per-site record of renewal attempts, shown by `certd status` and used to space out retries.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SiteRecord {
    /// When an order was last attempted.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_attempt: Option<time::OffsetDateTime>,
    /// When a certificate was last obtained and installed.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_success: Option<time::OffsetDateTime>,
    /// The last failure, as shown to the operator (with the CA's problem document), cleared on success.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Failures since the last success.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// The earliest time the next attempt should be made (backoff, `Retry-After`).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub next_attempt: Option<time::OffsetDateTime>,
}

/// Proof that this process holds the state directory's lock; released on drop.
#[derive(Debug)]
pub struct StateLock {
    _file: std::fs::File,
}

/// The pair currently live for a site.
#[derive(Debug, Clone)]
pub struct StoredCert {
    /// The version folder it was read from.
    pub version: PathBuf,
    /// The certificate chain and key.
    pub pem: CertifiedPem,
}

impl Store {
    /// Opens (creating it 0700 when missing) the state directory at `root`.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        let _ = root;
        unimplemented!("store is being written")
    }
}
