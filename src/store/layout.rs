//! Where everything lives in the state directory: the one place that builds its paths.

use std::path::{Path, PathBuf};

use super::{StoreError, CA_KEY_MAX, TMP_VERSION_PREFIX};

/// Builds every path in the state directory. No other code joins path components under the root.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
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

    /// `<root>/scheduler.json`: the daemon's renewal scheduler heartbeat, for `certd status`.
    pub fn scheduler_file(&self) -> PathBuf {
        self.root.join("scheduler.json")
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

    /// `<root>/ledger/<ca>.jsonl`: the rate-limit ledger of orders placed with one CA.
    pub fn ledger_file(&self, directory_url: &str) -> PathBuf {
        self.root
            .join("ledger")
            .join(format!("{}.jsonl", ca_key(directory_url)))
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
    pub(super) fn live_target(number: u64) -> PathBuf {
        Path::new("versions").join(format!("{number:06}"))
    }

    /// `versions/.tmp-<N>-<rand>`: where version `number` is written before it is complete.
    pub(super) fn temp_version_dir(&self, site: &str, number: u64) -> Result<PathBuf, StoreError> {
        let name = format!(
            "{TMP_VERSION_PREFIX}{number}-{:016x}",
            rand::random::<u64>()
        );
        Ok(self.versions_dir(site)?.join(name))
    }
}

/// Refuses site names that would escape `certs/` or hide among temporary and dot files.
pub(super) fn check_site(site: &str) -> Result<(), StoreError> {
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
pub(super) fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
