//! The state directory: certificates, keys, ACME accounts, per-site records and the lock.
//!
//! Layout (every path is built by [`Layout`], nowhere else):
//!
//! ```text
//! state/
//!   lock                               held (flock) by the certd process that may write; holds its pid
//!   control.sock                       `certd run`'s control socket (0600), for `certd issue`
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
//!
//! Every operation that writes assumes the caller holds the [`StateLock`] (see [`Store::lock`]): the lock
//! is what makes "max version + 1" and the cleanup of leftovers safe.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{symlink, DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use zeroize::{Zeroize, Zeroizing};

use crate::certificate::CertifiedPem;

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

/// Builds every path in the state directory. No other code joins path components under the root.
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

impl Layout {
    /// A layout rooted at `root` (the state directory). Touches nothing on disk.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The state directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/lock`: flocked by the writer, holds its pid.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("lock")
    }

    /// `<root>/control.sock`: where a running `certd run` takes requests from `certd issue`.
    pub fn control_socket(&self) -> PathBuf {
        self.root.join("control.sock")
    }

    /// `<root>/accounts`.
    pub fn accounts_dir(&self) -> PathBuf {
        self.root.join("accounts")
    }

    /// `<root>/accounts/<ca>/account.json`, where `<ca>` is [`ca_key`] of `directory_url`.
    pub fn account_file(&self, directory_url: &str) -> PathBuf {
        self.accounts_dir()
            .join(ca_key(directory_url))
            .join("account.json")
    }

    /// `<root>/certs`.
    pub fn certs_dir(&self) -> PathBuf {
        self.root.join("certs")
    }

    /// `<root>/certs/<site>`. Fails for a name that is not a single safe path component.
    pub fn site_dir(&self, site: &str) -> Result<PathBuf, StoreError> {
        check_site(site)?;
        Ok(self.certs_dir().join(site))
    }

    /// `<root>/certs/<site>/versions`.
    pub fn versions_dir(&self, site: &str) -> Result<PathBuf, StoreError> {
        Ok(self.site_dir(site)?.join("versions"))
    }

    /// `<root>/certs/<site>/versions/<NNNNNN>`: the folder of version `number`.
    pub fn version_dir(&self, site: &str, number: u64) -> Result<PathBuf, StoreError> {
        Ok(self.site_dir(site)?.join(Self::live_target(number)))
    }

    /// `<root>/certs/<site>/live`: the symlink naming the served version.
    pub fn live_link(&self, site: &str) -> Result<PathBuf, StoreError> {
        Ok(self.site_dir(site)?.join("live"))
    }

    /// `<root>/certs/<site>/record.json`.
    pub fn record_file(&self, site: &str) -> Result<PathBuf, StoreError> {
        Ok(self.site_dir(site)?.join("record.json"))
    }

    /// `<root>/certs/<site>/cert.pem`: the leaf certificate (contract path, links through `live`).
    pub fn cert_pem(&self, site: &str) -> Result<PathBuf, StoreError> {
        Ok(self.site_dir(site)?.join("cert.pem"))
    }

    /// `<root>/certs/<site>/chain.pem`: the intermediates (contract path, links through `live`).
    pub fn chain_pem(&self, site: &str) -> Result<PathBuf, StoreError> {
        Ok(self.site_dir(site)?.join("chain.pem"))
    }

    /// `<root>/certs/<site>/fullchain.pem`: leaf then intermediates (contract path, links through `live`).
    pub fn fullchain_pem(&self, site: &str) -> Result<PathBuf, StoreError> {
        Ok(self.site_dir(site)?.join("fullchain.pem"))
    }

    /// `<root>/certs/<site>/privkey.pem`: the private key (contract path, links through `live`).
    pub fn privkey_pem(&self, site: &str) -> Result<PathBuf, StoreError> {
        Ok(self.site_dir(site)?.join("privkey.pem"))
    }

    /// `versions/<NNNNNN>`, relative to the site folder: what `live` points at. Relative so that the
    /// state directory can be moved or mounted elsewhere without breaking the links.
    fn live_target(number: u64) -> PathBuf {
        Path::new("versions").join(format!("{number:06}"))
    }

    /// `versions/.tmp-<N>-<rand>`: where version `number` is written before it is complete.
    fn temp_version_dir(&self, site: &str, number: u64) -> Result<PathBuf, StoreError> {
        let name = format!(
            "{TMP_VERSION_PREFIX}{number}-{:016x}",
            rand::random::<u64>()
        );
        Ok(self.versions_dir(site)?.join(name))
    }
}

/// Refuses site names that would escape `certs/` or hide among temporary and dot files.
fn check_site(site: &str) -> Result<(), StoreError> {
    let reason = if site.is_empty() {
        "empty"
    } else if site.contains('/') {
        "contains '/'"
    } else if site.starts_with('.') {
        "starts with '.'"
    } else if site.contains('\0') {
        "contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(StoreError::InvalidSite {
        site: site.to_owned(),
        reason,
    })
}

/// The folder name for an ACME directory URL: readable and one-to-one.
///
/// A plain `https://host[:port]/seg/seg` URL whose parts use only letters, digits, '.' and '-' maps to
/// `host[_port]_seg_seg` (`https://acme-v02.api.letsencrypt.org/directory` →
/// `acme-v02.api.letsencrypt.org_directory`, `https://127.0.0.1:14000/dir` → `127.0.0.1_14000_dir`); the
/// host is lower-cased and port 443 dropped, as they do not change the URL. Such keys never contain `__`.
/// Any other URL (another scheme, a query, '_' or other characters that had to be replaced, empty
/// segments, an over-long name) gets its unsafe characters replaced by '_' and `__` plus a 64-bit hash of
/// the whole URL appended, so two different URLs cannot share a folder.
pub fn ca_key(directory_url: &str) -> String {
    let (scheme, rest) = directory_url
        .split_once("://")
        .unwrap_or(("", directory_url));
    let mut lossless = scheme.eq_ignore_ascii_case("https");
    let rest = match rest.find(['?', '#']) {
        Some(at) => {
            lossless = false;
            &rest[..at]
        }
        None => rest,
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            (host, Some(port))
        }
        _ => (authority, None),
    };
    let mut parts = vec![host.to_ascii_lowercase()];
    match port {
        Some("443") => {}
        Some(port) => parts.push(port.to_owned()),
        // Without a port, an all-digit first segment would read like one.
        None if path
            .split('/')
            .next()
            .is_some_and(|seg| !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit())) =>
        {
            lossless = false
        }
        None => {}
    }
    if !path.is_empty() {
        parts.extend(path.split('/').map(str::to_owned));
    }

    let mut key = String::new();
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            lossless = false;
        }
        if i > 0 {
            key.push('_');
        }
        for c in part.chars() {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                key.push(c);
            } else {
                lossless = false;
                key.push('_');
            }
        }
    }
    if key.starts_with('.') || key.is_empty() {
        lossless = false;
        key.insert(0, '_');
    }
    if key.len() > CA_KEY_MAX {
        lossless = false;
        key.truncate(CA_KEY_MAX); // all ASCII by now, so any index is a char boundary
    }
    if !lossless {
        key.push_str(&format!("__{:016x}", fnv1a64(directory_url.as_bytes())));
    }
    key
}

/// FNV-1a, 64-bit: a hash whose value is fixed by its definition (std's hashers may change between
/// releases, and these values name folders on disk).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Writes `bytes` to `path` so that readers see the old content or the new, never a part.
///
/// The bytes go to a uniquely named temporary file in the same folder (`.<name>.tmp-<pid>-<rand>`, so the
/// rename stays within one filesystem), created with `mode`, fsynced, renamed over `path`, and then the
/// folder is fsynced so the rename itself survives a crash. The folder must exist. On failure the
/// temporary file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    let name = path.file_name().ok_or_else(|| StoreError::Io {
        action: "write",
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "no file name"),
    })?;
    let dir = parent_dir(path);
    let tmp = dir.join(format!(
        ".{}{TMP_MARK}{}-{:016x}",
        name.to_string_lossy(),
        std::process::id(),
        rand::random::<u64>()
    ));
    let written = write_new_file(&tmp, bytes, mode)
        .and_then(|()| fs::rename(&tmp, path).map_err(io_err("rename temporary file over", path)));
    if written.is_err() {
        // Best effort: the error being returned is the interesting one.
        let _ = fs::remove_file(&tmp);
    }
    written?;
    sync_dir(dir)
}

/// The folder holding `path` ("." for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Creates `path` (which must not exist) with exactly `mode`, writes `bytes` and fsyncs it.
fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err("create", path))?;
    // The umask may have removed bits from `mode`; the mode must be exactly what was asked for.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err("set permissions of", path))?;
    file.write_all(bytes).map_err(io_err("write", path))?;
    file.sync_all().map_err(io_err("fsync", path))
}

/// Fsyncs a folder, making the creations, renames and removals in it durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Creates `dir` (and missing parents) with mode 0700, or makes an existing one 0700.
fn ensure_dir(dir: &Path) -> Result<(), StoreError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(io_err("create directory", dir))?;
    let meta = fs::metadata(dir).map_err(io_err("inspect directory", dir))?;
    if !meta.is_dir() {
        return Err(StoreError::Io {
            action: "use directory",
            path: dir.to_owned(),
            source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    // Keys live below; a folder others can list or enter (or one a umask narrowed) is set back to 0700.
    if meta.permissions().mode() & 0o777 != DIR_MODE {
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
            .map_err(io_err("set permissions of", dir))?;
    }
    Ok(())
}

/// Points `link` at `target` in one rename: a temporary link `<name>.tmp-<rand>` beside it is renamed over
/// it, so readers see the old target or the new, never a missing file. The caller fsyncs the folder.
fn replace_symlink(target: &Path, link: &Path) -> Result<(), StoreError> {
    let name = link
        .file_name()
        .map(OsStr::to_string_lossy)
        .unwrap_or_default();
    let tmp = parent_dir(link).join(format!("{name}{TMP_MARK}{:016x}", rand::random::<u64>()));
    symlink(target, &tmp).map_err(io_err("create symlink", &tmp))?;
    if let Err(source) = fs::rename(&tmp, link) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("rename symlink over", link)(source));
    }
    Ok(())
}

/// Reads a file, mapping "not found" to `None`.
fn read_optional(path: &Path) -> Result<Option<String>, StoreError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(io_err("read", path)(err)),
    }
}

/// Reads one PEM file of a version folder; a missing file means the version is not what certd wrote.
fn read_version_file(path: &Path) -> Result<String, StoreError> {
    read_optional(path)?.ok_or_else(|| StoreError::Corrupt {
        path: path.to_owned(),
        reason: "missing from its version folder".into(),
    })
}

/// Reads a private key into memory that is wiped when dropped, including on the error paths.
fn read_key_file(path: &Path) -> Result<Zeroizing<String>, StoreError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(StoreError::Corrupt {
                path: path.to_owned(),
                reason: "missing from its version folder".into(),
            })
        }
        Err(err) => return Err(io_err("open", path)(err)),
    };
    // Sized up front so the buffer is not reallocated, which would leave unwiped copies behind.
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut bytes = Zeroizing::new(Vec::with_capacity(
        usize::try_from(len).unwrap_or(0).saturating_add(1),
    ));
    file.read_to_end(&mut bytes).map_err(io_err("read", path))?;
    match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(text) => Ok(Zeroizing::new(text)),
        Err(err) => {
            err.into_bytes().zeroize();
            Err(StoreError::Corrupt {
                path: path.to_owned(),
                reason: "not UTF-8".into(),
            })
        }
    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SITE: &str = "example.test";

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state")).unwrap();
        (dir, store)
    }

    /// Distinguishable fake material: the store does not parse PEM.
    fn pem(tag: &str) -> CertifiedPem {
        CertifiedPem {
            cert_pem: format!(
                "-----BEGIN CERTIFICATE-----\nleaf {tag}\n-----END CERTIFICATE-----\n"
            ),
            chain_pem: format!(
                "-----BEGIN CERTIFICATE-----\nintermediate {tag}\n-----END CERTIFICATE-----\n"
            ),
            key_pem: Zeroizing::new(format!(
                "-----BEGIN PRIVATE KEY-----\nkey {tag}\n-----END PRIVATE KEY-----\n"
            )),
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn assert_same(stored: &StoredCert, expected: &CertifiedPem) {
        assert_eq!(stored.pem.cert_pem, expected.cert_pem);
        assert_eq!(stored.pem.chain_pem, expected.chain_pem);
        assert_eq!(*stored.pem.key_pem, *expected.key_pem);
    }

    fn live_target(store: &Store) -> PathBuf {
        fs::read_link(store.layout().live_link(SITE).unwrap()).unwrap()
    }

    #[test]
    fn install_then_current_returns_the_same_pair() {
        let (_dir, store) = open();
        assert!(store.current(SITE).unwrap().is_none());
        let pem = pem("one");
        let installed = store.install(SITE, &pem).unwrap();
        assert_eq!(
            installed.version,
            store.layout().version_dir(SITE, 1).unwrap()
        );
        let current = store.current(SITE).unwrap().unwrap();
        assert_eq!(current.version, installed.version);
        assert_same(&current, &pem);
        assert_eq!(live_target(&store), Path::new("versions/000001"));
    }

    #[test]
    fn contract_paths_are_links_through_live_with_the_installed_content() {
        let (_dir, store) = open();
        let pem = pem("one");
        store.install(SITE, &pem).unwrap();
        let layout = store.layout();
        let read = |path: PathBuf| {
            assert!(fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink());
            assert_eq!(
                fs::read_link(&path).unwrap(),
                Path::new("live").join(path.file_name().unwrap())
            );
            fs::read_to_string(path).unwrap()
        };
        assert_eq!(read(layout.cert_pem(SITE).unwrap()), pem.cert_pem);
        assert_eq!(read(layout.chain_pem(SITE).unwrap()), pem.chain_pem);
        assert_eq!(read(layout.privkey_pem(SITE).unwrap()), *pem.key_pem);
        let fullchain = read(layout.fullchain_pem(SITE).unwrap());
        assert_eq!(fullchain, format!("{}{}", pem.cert_pem, pem.chain_pem));
        assert_eq!(fullchain, pem.fullchain_pem());
    }

    #[test]
    fn files_are_0600_and_folders_0700() {
        let (_dir, store) = open();
        store.install(SITE, &pem("one")).unwrap();
        store.save_record(SITE, &SiteRecord::default()).unwrap();
        let layout = store.layout();
        let version = layout.version_dir(SITE, 1).unwrap();
        for dir in [
            layout.root().to_owned(),
            layout.accounts_dir(),
            layout.certs_dir(),
            layout.site_dir(SITE).unwrap(),
            layout.versions_dir(SITE).unwrap(),
            version.clone(),
        ] {
            assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        }
        for file in PEM_FILES {
            assert_eq!(mode(&version.join(file)), 0o600, "{file}");
        }
        assert_eq!(mode(&layout.record_file(SITE).unwrap()), 0o600);
    }

    #[test]
    fn open_tightens_existing_loose_folders() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("state");
        fs::create_dir_all(root.join("certs")).unwrap();
        for path in [&root, &root.join("certs")] {
            fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let store = Store::open(&root).unwrap();
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&store.layout().certs_dir()), 0o700);
        assert_eq!(mode(&store.layout().accounts_dir()), 0o700);
    }

    #[test]
    fn second_install_keeps_the_previous_version_and_third_prunes_the_oldest() {
        let (_dir, store) = open();
        let layout = store.layout();
        store.install(SITE, &pem("one")).unwrap();
        let second = store.install(SITE, &pem("two")).unwrap();
        assert_eq!(
            store.versions(SITE).unwrap(),
            [
                layout.version_dir(SITE, 1).unwrap(),
                layout.version_dir(SITE, 2).unwrap()
            ]
        );
        assert_eq!(live_target(&store), Path::new("versions/000002"));
        assert_eq!(
            store.current(SITE).unwrap().unwrap().version,
            second.version
        );
        // The previous version is intact, for a manual rollback.
        assert_eq!(
            fs::read_to_string(layout.version_dir(SITE, 1).unwrap().join("cert.pem")).unwrap(),
            pem("one").cert_pem
        );

        store.install(SITE, &pem("three")).unwrap();
        assert_eq!(
            store.versions(SITE).unwrap(),
            [
                layout.version_dir(SITE, 2).unwrap(),
                layout.version_dir(SITE, 3).unwrap()
            ]
        );
        assert_same(&store.current(SITE).unwrap().unwrap(), &pem("three"));
        assert_eq!(
            fs::read_to_string(layout.cert_pem(SITE).unwrap()).unwrap(),
            pem("three").cert_pem
        );
    }

    #[test]
    fn crash_leftovers_are_not_served_and_are_cleaned_by_the_next_install() {
        let (_dir, store) = open();
        let layout = store.layout();
        store.install(SITE, &pem("one")).unwrap();
        let site_dir = layout.site_dir(SITE).unwrap();
        let versions_dir = layout.versions_dir(SITE).unwrap();

        // A crash while writing version 2: a partial temporary folder and a temporary live link that
        // was never renamed (dangling, since the folder was never renamed either).
        let partial = versions_dir.join(".tmp-2-00000000deadbeef");
        fs::create_dir(&partial).unwrap();
        fs::write(partial.join("cert.pem"), "partial").unwrap();
        let dangling = site_dir.join("live.tmp-00000000deadbeef");
        symlink("versions/000002", &dangling).unwrap();
        let stale_record = site_dir.join(".record.json.tmp-1-00000000deadbeef");
        fs::write(&stale_record, "{").unwrap();

        assert_same(&store.current(SITE).unwrap().unwrap(), &pem("one"));
        assert_eq!(
            store.versions(SITE).unwrap(),
            [layout.version_dir(SITE, 1).unwrap()]
        );

        store.install(SITE, &pem("two")).unwrap();
        assert!(!partial.exists());
        assert!(fs::symlink_metadata(&dangling).is_err());
        assert!(!stale_record.exists());
        assert_eq!(live_target(&store), Path::new("versions/000002"));
        assert_same(&store.current(SITE).unwrap().unwrap(), &pem("two"));
        let leftovers: Vec<_> = fs::read_dir(&site_dir)
            .unwrap()
            .chain(fs::read_dir(&versions_dir).unwrap())
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains(TMP_MARK))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_version_renamed_in_but_never_made_live_is_not_served() {
        let (_dir, store) = open();
        let layout = store.layout();
        store.install(SITE, &pem("one")).unwrap();
        // A crash between the rename into versions/ and the live swap.
        write_version(&layout.version_dir(SITE, 2).unwrap(), &pem("orphan")).unwrap();

        assert_same(&store.current(SITE).unwrap().unwrap(), &pem("one"));
        assert_eq!(
            fs::read_to_string(layout.cert_pem(SITE).unwrap()).unwrap(),
            pem("one").cert_pem
        );

        let installed = store.install(SITE, &pem("two")).unwrap();
        assert_eq!(installed.version, layout.version_dir(SITE, 3).unwrap());
        assert_same(&store.current(SITE).unwrap().unwrap(), &pem("two"));
        // The version served until now is the one kept; the orphan is pruned.
        assert_eq!(
            store.versions(SITE).unwrap(),
            [
                layout.version_dir(SITE, 1).unwrap(),
                layout.version_dir(SITE, 3).unwrap()
            ]
        );
    }

    #[test]
    fn a_version_missing_a_file_is_corrupt() {
        let (_dir, store) = open();
        let installed = store.install(SITE, &pem("one")).unwrap();
        let key = installed.version.join("privkey.pem");
        fs::remove_file(&key).unwrap();
        match store.current(SITE) {
            Err(StoreError::Corrupt { path, .. }) => assert_eq!(path, key),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn a_live_link_outside_versions_is_corrupt() {
        let (_dir, store) = open();
        store.install(SITE, &pem("one")).unwrap();
        let live = store.layout().live_link(SITE).unwrap();
        replace_symlink(Path::new("/etc"), &live).unwrap();
        match store.current(SITE) {
            Err(StoreError::Corrupt { path, .. }) => assert_eq!(path, live),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn the_state_directory_can_be_moved() {
        let (dir, store) = open();
        store.install(SITE, &pem("one")).unwrap();
        let moved = dir.path().join("moved");
        fs::rename(store.layout().root(), &moved).unwrap();
        let store = Store::open(&moved).unwrap();
        assert_same(&store.current(SITE).unwrap().unwrap(), &pem("one"));
        assert_eq!(
            fs::read_to_string(store.layout().fullchain_pem(SITE).unwrap()).unwrap(),
            pem("one").fullchain_pem()
        );
    }

    #[test]
    fn lock_is_exclusive_names_the_holder_and_is_released_on_drop() {
        let (_dir, store) = open();
        let held = store.lock().unwrap();
        assert_eq!(held.path(), store.layout().lock_file());
        assert_eq!(mode(held.path()), 0o600);
        assert_eq!(
            fs::read_to_string(held.path()).unwrap().trim(),
            std::process::id().to_string()
        );
        // flock belongs to the open file, so a second open in this same process conflicts.
        match store.lock() {
            Err(StoreError::Locked { path, pid }) => {
                assert_eq!(path, store.layout().lock_file());
                assert_eq!(pid, Some(std::process::id()));
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        // A clone of the store shares nothing with the held lock either.
        assert!(matches!(
            store.clone().lock(),
            Err(StoreError::Locked { .. })
        ));
        drop(held);
        let again = store.lock().unwrap();
        drop(again);
    }

    #[test]
    fn accounts_are_kept_per_directory_url() {
        let (_dir, store) = open();
        let le = "https://acme-v02.api.letsencrypt.org/directory";
        let pebble = "https://127.0.0.1:14000/dir";
        assert_eq!(store.load_account(le).unwrap(), None);
        store.save_account(le, r#"{"id":"le"}"#).unwrap();
        store.save_account(pebble, r#"{"id":"pebble"}"#).unwrap();
        assert_eq!(store.load_account(le).unwrap().unwrap(), r#"{"id":"le"}"#);
        assert_eq!(
            store.load_account(pebble).unwrap().unwrap(),
            r#"{"id":"pebble"}"#
        );
        let layout = store.layout();
        let le_file = layout.account_file(le);
        let pebble_file = layout.account_file(pebble);
        assert_eq!(
            le_file,
            layout
                .accounts_dir()
                .join("acme-v02.api.letsencrypt.org_directory/account.json")
        );
        assert_eq!(
            pebble_file,
            layout
                .accounts_dir()
                .join("127.0.0.1_14000_dir/account.json")
        );
        for file in [&le_file, &pebble_file] {
            assert_eq!(mode(file), 0o600);
            assert_eq!(mode(file.parent().unwrap()), 0o700);
        }
        // Saving again replaces the content.
        store.save_account(le, r#"{"id":"le2"}"#).unwrap();
        assert_eq!(store.load_account(le).unwrap().unwrap(), r#"{"id":"le2"}"#);
    }

    #[test]
    fn ca_keys_are_readable_and_distinct() {
        let table = [
            (
                "https://acme-v02.api.letsencrypt.org/directory",
                "acme-v02.api.letsencrypt.org_directory",
            ),
            ("https://127.0.0.1:14000/dir", "127.0.0.1_14000_dir"),
            ("https://ACME.example:443/dir", "acme.example_dir"),
            ("https://acme.example", "acme.example"),
            ("https://acme.example/a/b", "acme.example_a_b"),
            ("https://acme.example:1/b", "acme.example_1_b"),
        ];
        for (url, key) in table {
            assert_eq!(ca_key(url), key, "{url}");
        }
        // URLs the readable form alone would confuse get a hash suffix and differ.
        let urls = [
            "https://acme.example/a/b",
            "https://acme.example/a_b",
            "http://acme.example/a/b",
            "https://acme.example/a/b/",
            "https://acme.example/a//b",
            "https://acme.example/a/b?x=1",
            "https://acme.example:1/b",
            "https://acme.example/1/b",
            "https://[::1]:14000/dir",
            "https://[::1]/dir",
            "",
            "https://.hidden/dir",
        ];
        let keys: std::collections::HashSet<String> = urls.iter().map(|url| ca_key(url)).collect();
        assert_eq!(keys.len(), urls.len(), "{keys:?}");
        for key in &keys {
            assert!(
                !key.is_empty() && !key.starts_with('.') && !key.contains('/'),
                "{key}"
            );
            assert!(key.len() <= 255, "{key}");
        }
        let long = format!("https://acme.example/{}", "a".repeat(400));
        assert!(ca_key(&long).len() <= 255);
        assert_ne!(ca_key(&long), ca_key(&format!("{long}b")));
    }

    #[test]
    fn records_round_trip_and_bad_json_is_corrupt() {
        let (_dir, store) = open();
        assert_eq!(store.load_record(SITE).unwrap(), SiteRecord::default());
        let record = SiteRecord {
            last_attempt: Some(time::OffsetDateTime::from_unix_timestamp(1_735_787_045).unwrap()),
            last_success: None,
            last_error: Some("urn:ietf:params:acme:error:rateLimited".into()),
            consecutive_failures: 3,
            next_attempt: Some(time::OffsetDateTime::from_unix_timestamp(1_735_790_645).unwrap()),
        };
        store.save_record(SITE, &record).unwrap();
        assert_eq!(store.load_record(SITE).unwrap(), record);
        let path = store.layout().record_file(SITE).unwrap();
        assert_eq!(mode(&path), 0o600);

        fs::write(&path, "{ not json").unwrap();
        match store.load_record(SITE) {
            Err(StoreError::Corrupt { path: at, .. }) => assert_eq!(at, path),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn write_atomic_replaces_content_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file.json");
        write_atomic(&path, b"one", FILE_MODE).unwrap();
        write_atomic(&path, b"two", FILE_MODE).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        match write_atomic(&dir.path().join("missing/file"), b"x", FILE_MODE) {
            Err(StoreError::Io { path, .. }) => {
                assert!(path.starts_with(dir.path().join("missing")))
            }
            other => panic!("expected Io, got {other:?}"),
        }
    }

    #[test]
    fn unsafe_site_names_are_refused() {
        let (_dir, store) = open();
        for site in ["", "../etc", "a/b", ".hidden", ".."] {
            assert!(
                matches!(
                    store.layout().site_dir(site),
                    Err(StoreError::InvalidSite { .. })
                ),
                "{site:?}"
            );
            assert!(store.install(site, &pem("x")).is_err(), "{site:?}");
            assert!(store.current(site).is_err(), "{site:?}");
        }
    }

    #[test]
    fn sites_on_disk_lists_site_folders() {
        let (_dir, store) = open();
        assert!(store.sites_on_disk().unwrap().is_empty());
        store.install("b.test", &pem("b")).unwrap();
        store.save_record("a.test", &SiteRecord::default()).unwrap();
        fs::write(store.layout().certs_dir().join("stray-file"), "").unwrap();
        assert_eq!(store.sites_on_disk().unwrap(), ["a.test", "b.test"]);
    }
}
