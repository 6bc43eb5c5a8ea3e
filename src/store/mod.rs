//! The state directory: certificates, keys, ACME accounts, per-site records and the lock.
//!
//! Layout (every path is built by [`Layout`], nowhere else):
//!
//! ```text
//! state/
//!   lock                               held (flock) by the certd process that may write; holds its pid
//!   control.sock                       `certd run`'s control socket (0600), for `certd issue`
//!   scheduler.json                     when `certd run`'s renewal scheduler last ran (0600), for `status`
//!   accounts/<ca>/account.json         ACME account credentials for one CA directory URL (0600)
//!   ledger/<ca>.jsonl                  every order placed with that CA and its outcome (0600)
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
//!
//! Every operation that writes assumes the caller holds the [`StateLock`] (see [`Store::lock`]): the lock
//! is what makes "max version + 1" and the cleanup of leftovers safe.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::certificate::CertifiedPem;

mod atomic;
mod heartbeat;
mod layout;
#[cfg(test)]
mod tests;

use atomic::*;
pub use atomic::{ensure_dir, write_atomic};
pub use heartbeat::SchedulerHeartbeat;
use layout::check_site;
pub use layout::{ca_key, Layout};

/// Mode of every directory certd creates in the state directory.
const DIR_MODE: u32 = 0o700;
/// Mode of every file certd writes in the state directory (keys, account credentials, records).
const FILE_MODE: u32 = 0o600;
/// The files in a version folder, which are also the contract names in the site folder.
const PEM_FILES: [&str; 4] = ["cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"];
/// Marks a temporary name; anything carrying it is a leftover once its writer is gone.
const TMP_MARK: &str = ".tmp-";
/// Prefix of a version folder being written, in `versions/`.
const TMP_VERSION_PREFIX: &str = ".tmp-";
/// Longest readable part of a CA key, leaving room for a hash suffix within a 255-byte file name.
const CA_KEY_MAX: usize = 200;

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
    /// A site name that cannot be used as a folder name (the config validates names; this is a backstop).
    #[error("site name {site:?} cannot be stored: {reason}")]
    InvalidSite {
        /// The name as given.
        site: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A database backend's statement failed or did not answer in time.
    #[error("{store}: cannot {action}: {reason}")]
    Database {
        /// The store ([`crate::storage::StateStore::describe`]).
        store: String,
        /// What certd was doing.
        action: &'static str,
        /// The database's or the network's error.
        reason: String,
    },
    /// An install refused because this node does not hold the site's live lease (another node
    /// renewed it; the certificate it installed stays live).
    #[error("install of {site} refused: {reason}")]
    Fenced {
        /// The site.
        site: String,
        /// What the database said.
        reason: String,
    },
    /// The sealing key cannot be loaded, or a sealed value does not open.
    #[error(transparent)]
    Sealing(#[from] crate::sealing::SealError),
}

/// Builds the closure that wraps an IO error with what was being done and to which path.
fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct Store {
    layout: Layout,
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
    /// Set when an order starts and cleared when its outcome is recorded: still set at start-up means
    /// certd died mid-order, which counts as a failed attempt so that a crash loop cannot order again
    /// and again.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub attempt_started: Option<time::OffsetDateTime>,
    /// The directory URL of the CA that issued the certificate in service (so a staging CA never
    /// replaces a production certificate).
    #[serde(default)]
    pub issued_by: Option<String>,
    /// The certificate (serial) the ARI choice below belongs to.
    #[serde(default)]
    pub ari_serial: Option<String>,
    /// The renewal time picked at random inside the CA's ARI window, kept so restarts keep it.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub ari_renew_at: Option<time::OffsetDateTime>,
    /// When to ask the CA for the window again (its `Retry-After`).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub ari_poll_at: Option<time::OffsetDateTime>,
    /// The challenge the certificate in service was validated with: what a site with the
    /// automatic choice uses again at renewal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<crate::config::ChallengeKind>,
}

/// Proof that this process holds the state directory's lock; released on drop.
#[derive(Debug)]
pub struct StateLock {
    // The lock belongs to this open file; closing it (drop) releases the lock.
    _file: std::fs::File,
    path: PathBuf,
}

impl StateLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The pair currently live for a site.
#[derive(Debug, Clone)]
pub struct StoredCert {
    /// The version folder it was read from.
    pub version: PathBuf,
    /// The certificate chain and key.
    pub pem: CertifiedPem,
}

/// The number of a complete version folder's name (`000042` → 42); `None` for anything else.
fn version_number(name: &OsStr) -> Option<u64> {
    let name = name.to_str()?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

/// The version number `live` points at, when its target has the form `versions/<digits>`.
fn live_number(target: &Path) -> Option<u64> {
    let mut components = target.components();
    match (components.next(), components.next(), components.next()) {
        (Some(Component::Normal(dir)), Some(Component::Normal(name)), None)
            if dir == "versions" =>
        {
            version_number(name)
        }
        _ => None,
    }
}

/// The numbers of the complete versions in `versions_dir`, ascending; empty when the folder is missing.
fn version_numbers(versions_dir: &Path) -> Result<Vec<u64>, StoreError> {
    let entries = match fs::read_dir(versions_dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(io_err("list", versions_dir)(err)),
    };
    let mut numbers = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("list", versions_dir))?;
        if let Some(number) = version_number(&entry.file_name()) {
            numbers.push(number);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

impl Store {
    /// Opens the state directory at `root`, creating it (with any missing parents), `accounts/` and
    /// `certs/` with mode 0700 when missing and setting them to 0700 when they exist with other permissions. Takes no lock: call
    /// [`Store::lock`] before writing.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        let layout = Layout::new(root);
        for dir in [
            layout.root().to_owned(),
            layout.accounts_dir(),
            layout.certs_dir(),
        ] {
            ensure_dir(&dir)?;
        }
        Ok(Self { layout })
    }

    /// Where everything is.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Takes the state directory's lock without waiting, and writes this process's pid into it.
    ///
    /// Only one holder at a time may write to the state directory (issue, renew, `run`). The lock is an
    /// flock on `<root>/lock`, held by one open file: a second `lock()` fails with
    /// [`StoreError::Locked`] even from the same process, and the lock is released when the returned
    /// [`StateLock`] is dropped (or the process dies, so a crash never leaves it stuck).
    pub fn lock(&self) -> Result<StateLock, StoreError> {
        let path = self.layout.lock_file();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            // Not truncated before the lock is ours: the holder's pid is in there.
            .truncate(false)
            .mode(FILE_MODE)
            .open(&path)
            .map_err(io_err("open lock file", &path))?;
        let locked = file.try_lock();
        match locked {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                // The pid is only for the message; an unreadable or half-written one is left out.
                let pid = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Err(StoreError::Locked { path, pid });
            }
            Err(fs::TryLockError::Error(err)) => return Err(io_err("lock", &path)(err)),
        }
        file.set_len(0).map_err(io_err("truncate", &path))?;
        // Opened just now and not yet read or written, so the cursor is at the start.
        writeln!(file, "{}", std::process::id()).map_err(io_err("write", &path))?;
        file.sync_all().map_err(io_err("fsync", &path))?;
        Ok(StateLock { _file: file, path })
    }

    /// The saved ACME account (JSON credentials, as written by [`Store::save_account`]) for the CA at
    /// `directory_url`, or `None` when there is none yet.
    pub fn load_account(&self, directory_url: &str) -> Result<Option<String>, StoreError> {
        read_optional(&self.layout.account_file(directory_url))
    }

    /// Saves the ACME account credentials for the CA at `directory_url`, atomically and 0600 (they hold
    /// the account key). Precondition: the caller holds the [`StateLock`].
    pub fn save_account(&self, directory_url: &str, json: &str) -> Result<(), StoreError> {
        let path = self.layout.account_file(directory_url);
        ensure_dir(&self.layout.accounts_dir())?;
        ensure_dir(parent_dir(&path))?;
        write_atomic(&path, json.as_bytes(), FILE_MODE)
    }

    /// Stores `pem` as the next version of `site` and makes it the one served.
    ///
    /// Precondition: `pem` has been validated (key matches, names covered, in date) — this only persists
    /// — and the caller holds the [`StateLock`] and installs one site at a time.
    ///
    /// The new version is written and fsynced completely in a temporary folder and renamed into
    /// `versions/`; the four contract links are made sure of; then one rename of a fresh `live` link
    /// publishes it. If anything fails before that rename the old version keeps being served. Afterwards
    /// the previous version is kept and older versions and crash leftovers are removed; a failure there
    /// is only logged, since the new certificate is already in place.
    pub fn install(&self, site: &str, pem: &CertifiedPem) -> Result<StoredCert, StoreError> {
        let site_dir = self.layout.site_dir(site)?;
        let versions_dir = self.layout.versions_dir(site)?;
        let live = self.layout.live_link(site)?;
        ensure_dir(&self.layout.certs_dir())?;
        ensure_dir(&site_dir)?;
        ensure_dir(&versions_dir)?;

        // Above every existing version, including one that was completed but never made live.
        let number = version_numbers(&versions_dir)?
            .last()
            .map_or(1, |last| last + 1);
        let version = self.layout.version_dir(site, number)?;
        let tmp = self.layout.temp_version_dir(site, number)?;
        if let Err(err) = write_version(&tmp, pem) {
            let _ = fs::remove_dir_all(&tmp);
            return Err(err);
        }
        if let Err(source) = fs::rename(&tmp, &version) {
            let _ = fs::remove_dir_all(&tmp);
            return Err(io_err("rename version folder to", &version)(source));
        }
        sync_dir(&versions_dir)?;

        // The contract links resolve through `live`, so they can be put in place before the swap.
        let mut links_changed = false;
        for file in PEM_FILES {
            let link = site_dir.join(file);
            let target = Path::new("live").join(file);
            if fs::read_link(&link).ok().as_deref() != Some(target.as_path()) {
                replace_symlink(&target, &link)?;
                links_changed = true;
            }
        }
        if links_changed {
            sync_dir(&site_dir)?;
        }

        let previous = fs::read_link(&live).ok().as_deref().and_then(live_number);
        replace_symlink(&Layout::live_target(number), &live)?;
        sync_dir(&site_dir)?;
        tracing::info!(site = %site, version = %version.display(), "installed certificate");

        if let Err(err) = prune(&site_dir, &versions_dir, number, previous) {
            tracing::warn!(site = %site, error = %err, "could not remove old certificate versions");
        }
        Ok(StoredCert {
            version,
            pem: pem.clone(),
        })
    }

    /// The pair `live` points at, or `None` when `site` has none yet.
    ///
    /// `live` is read once and the files are read from the version folder it named, so a concurrent
    /// install cannot yield the old certificate with the new key. A version folder missing a file (or
    /// a `live` that names no version) is [`StoreError::Corrupt`].
    pub fn current(&self, site: &str) -> Result<Option<StoredCert>, StoreError> {
        let live = self.layout.live_link(site)?;
        let target = match fs::read_link(&live) {
            Ok(target) => target,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(io_err("read link", &live)(err)),
        };
        if live_number(&target).is_none() {
            return Err(StoreError::Corrupt {
                path: live,
                reason: format!("points at {}, not versions/<NNNNNN>", target.display()),
            });
        }
        let version = self.layout.site_dir(site)?.join(&target);
        if !version.is_dir() {
            return Err(StoreError::Corrupt {
                path: live,
                reason: format!("points at {}, which does not exist", target.display()),
            });
        }
        let pem = CertifiedPem {
            cert_pem: read_version_file(&version.join("cert.pem"))?,
            chain_pem: read_version_file(&version.join("chain.pem"))?,
            key_pem: read_key_file(&version.join("privkey.pem"))?,
        };
        Ok(Some(StoredCert { version, pem }))
    }

    /// The complete version folders of `site`, oldest first (empty when there are none).
    pub fn versions(&self, site: &str) -> Result<Vec<PathBuf>, StoreError> {
        version_numbers(&self.layout.versions_dir(site)?)?
            .into_iter()
            .map(|number| self.layout.version_dir(site, number))
            .collect()
    }

    /// The record of `site`'s renewal attempts; the default (nothing attempted) when there is none.
    pub fn load_record(&self, site: &str) -> Result<SiteRecord, StoreError> {
        let path = self.layout.record_file(site)?;
        match read_optional(&path)? {
            None => Ok(SiteRecord::default()),
            Some(text) => serde_json::from_str(&text).map_err(|err| StoreError::Corrupt {
                path,
                reason: format!("not a site record: {err}"),
            }),
        }
    }

    /// Saves `record` for `site` (pretty JSON, atomically, 0600), creating the site folder if needed.
    /// Precondition: the caller holds the [`StateLock`].
    pub fn save_record(&self, site: &str, record: &SiteRecord) -> Result<(), StoreError> {
        let path = self.layout.record_file(site)?;
        let mut json = serde_json::to_string_pretty(record).map_err(|err| StoreError::Corrupt {
            path: path.clone(),
            reason: format!("cannot encode the record: {err}"),
        })?;
        json.push('\n');
        ensure_dir(&self.layout.certs_dir())?;
        ensure_dir(&self.layout.site_dir(site)?)?;
        write_atomic(&path, json.as_bytes(), FILE_MODE)
    }

    /// The sites that have a folder under `certs/` (including ones no longer configured), sorted.
    pub fn sites_on_disk(&self) -> Result<Vec<String>, StoreError> {
        let certs = self.layout.certs_dir();
        let entries = match fs::read_dir(&certs) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(io_err("list", &certs)(err)),
        };
        let mut sites = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("list", &certs))?;
            let is_dir = entry
                .file_type()
                .map_err(io_err("inspect", &entry.path()))?
                .is_dir();
            if let Some(name) = entry.file_name().to_str() {
                if is_dir && check_site(name).is_ok() {
                    sites.push(name.to_owned());
                }
            }
        }
        sites.sort();
        Ok(sites)
    }
}

/// Writes a complete version into `dir` (which must not exist): the folder 0700, the four files 0600,
/// each fsynced, then the folder itself.
fn write_version(dir: &Path, pem: &CertifiedPem) -> Result<(), StoreError> {
    fs::DirBuilder::new()
        .mode(DIR_MODE)
        .create(dir)
        .map_err(io_err("create directory", dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
        .map_err(io_err("set permissions of", dir))?;
    let fullchain = pem.fullchain_pem();
    for (file, bytes) in [
        ("cert.pem", pem.cert_pem.as_bytes()),
        ("chain.pem", pem.chain_pem.as_bytes()),
        ("fullchain.pem", fullchain.as_bytes()),
        ("privkey.pem", pem.key_pem.as_bytes()),
    ] {
        write_new_file(&dir.join(file), bytes, FILE_MODE)?;
    }
    sync_dir(dir)
}

/// Removes what is no longer needed once version `current` is live: complete versions other than it and
/// `previous` (the one served until now), temporary version folders and links left by a crash, and
/// temporary files of other processes.
fn prune(
    site_dir: &Path,
    versions_dir: &Path,
    current: u64,
    previous: Option<u64>,
) -> Result<(), StoreError> {
    for entry in fs::read_dir(versions_dir).map_err(io_err("list", versions_dir))? {
        let entry = entry.map_err(io_err("list", versions_dir))?;
        let name = entry.file_name();
        let stale = match version_number(&name) {
            Some(number) => number < current && Some(number) != previous,
            None => name.to_string_lossy().starts_with(TMP_VERSION_PREFIX),
        };
        if stale {
            let path = entry.path();
            let is_dir = entry
                .file_type()
                .map_err(io_err("inspect", &path))?
                .is_dir();
            if is_dir {
                fs::remove_dir_all(&path).map_err(io_err("remove", &path))?;
            } else {
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
            }
            tracing::debug!(path = %path.display(), "removed old version");
        }
    }
    sync_dir(versions_dir)?;

    // This process's own temporary files may belong to a write still under way (a record being saved).
    let own = format!("{TMP_MARK}{}-", std::process::id());
    for entry in fs::read_dir(site_dir).map_err(io_err("list", site_dir))? {
        let entry = entry.map_err(io_err("list", site_dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let file_type = entry.file_type().map_err(io_err("inspect", &path))?;
        let leftover = name.contains(TMP_MARK)
            && (file_type.is_symlink() || (file_type.is_file() && !name.contains(&own)));
        if leftover {
            fs::remove_file(&path).map_err(io_err("remove", &path))?;
            tracing::debug!(path = %path.display(), "removed leftover temporary file");
        }
    }
    sync_dir(site_dir)
}
