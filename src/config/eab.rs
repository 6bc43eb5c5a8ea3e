//! External account binding (RFC 8555 §7.3.4): `[acme] eab_kid` and `eab_hmac_key_file`, for CAs that
//! tie every ACME account to an account on their website (ZeroSSL, Google Trust Services, most
//! commercial CAs), and the directory shorthands of the CAs that need it.
//!
//! The MAC key is a secret: it lives in a file of its own, which must not be readable by others, and
//! the configuration keeps only its path. The file holds the key as the CA hands it out (base64url,
//! with or without `=` padding); whitespace around it is ignored. It is read and checked when the
//! configuration loads, so `certd check` reports a bad key, and read again when the account is
//! created.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use toml::Spanned;
use zeroize::Zeroizing;

use super::problems::Problems;

/// ZeroSSL's ACME directory (EAB required; the credentials are on the ZeroSSL dashboard).
pub const ZEROSSL: &str = "https://acme.zerossl.com/v2/DV90";
/// Google Trust Services' ACME directory (EAB required; credentials from `gcloud publicca
/// external-account-keys create`).
pub const GOOGLE: &str = "https://dv.acme-v02.api.pki.goog/directory";

/// The largest MAC key file read: real keys are 32 to 64 bytes.
const MAX_KEY_FILE: u64 = 4096;

/// `[acme] eab_kid` and `eab_hmac_key_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EabConfig {
    /// The key identifier the CA gave out with the MAC key.
    pub kid: String,
    /// The file holding the base64url MAC key (resolved against the config folder).
    pub hmac_key_file: PathBuf,
}

/// The directory shorthands of CAs that need EAB, and their URLs.
pub(super) fn shorthand(value: &str) -> Option<&'static str> {
    match value {
        "zerossl" => Some(ZEROSSL),
        "google" => Some(GOOGLE),
        _ => None,
    }
}

/// Validates the two keys together: both or neither, a plausible key id, and a key file that can be
/// used. `directory` is the raw `directory` value, for the shorthands that need EAB.
pub(super) fn eab(
    kid: Option<Spanned<String>>,
    key_file: Option<Spanned<String>>,
    directory: Option<&str>,
    table: std::ops::Range<usize>,
    folder: &Path,
    problems: &mut Problems<'_>,
) -> Option<EabConfig> {
    let (kid, key_file) = match (kid, key_file) {
        (Some(kid), Some(key_file)) => (kid, key_file),
        (None, None) => {
            if let Some(ca) = directory.filter(|directory| shorthand(directory).is_some()) {
                problems.add(
                    "acme.eab_kid",
                    Some(table),
                    format!(
                        "missing: the `{ca}` CA only creates accounts with external account \
                         binding; set `eab_kid` and `eab_hmac_key_file` to the key id and MAC \
                         key from its website"
                    ),
                );
            }
            return None;
        }
        (Some(kid), None) => {
            problems.add(
                "acme.eab_hmac_key_file",
                Some(kid.span()),
                "missing: `eab_kid` needs `eab_hmac_key_file`, a file holding the CA's MAC key",
            );
            return None;
        }
        (None, Some(key_file)) => {
            problems.add(
                "acme.eab_kid",
                Some(key_file.span()),
                "missing: `eab_hmac_key_file` needs `eab_kid`, the key id the CA gave out with it",
            );
            return None;
        }
    };
    let mut valid = true;
    let id = kid.get_ref().trim();
    if id.is_empty() || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        valid = false;
        problems.add(
            "acme.eab_kid",
            Some(kid.span()),
            "is not a key id: empty, or with spaces or control characters",
        );
    }
    let path = folder.join(key_file.get_ref());
    if let Err(reason) = read_mac_key(&path) {
        valid = false;
        problems.add("acme.eab_hmac_key_file", Some(key_file.span()), reason);
    }
    valid.then(|| EabConfig {
        kid: id.to_owned(),
        hmac_key_file: path,
    })
}

/// Reads and decodes the MAC key in `path`, refusing a file that others may read.
pub fn read_mac_key(path: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    use std::io::Read as _;
    use std::os::unix::fs::PermissionsExt as _;
    let file = std::fs::File::open(path)
        .map_err(|err| format!("cannot read `{}`: {err}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|err| format!("cannot read `{}`: {err}", path.display()))?;
    let mode = meta.permissions().mode();
    if mode & 0o004 != 0 {
        return Err(format!(
            "`{}` is readable by every user (mode {:03o}): the MAC key is a secret; \
             `chmod 600` it (or 640 for a group the service runs in)",
            path.display(),
            mode & 0o777
        ));
    }
    let mut text = Zeroizing::new(String::new());
    file.take(MAX_KEY_FILE)
        .read_to_string(&mut text)
        .map_err(|err| format!("cannot read `{}`: {err}", path.display()))?;
    let encoded = text.trim().trim_end_matches('=');
    if encoded.is_empty() {
        return Err(format!(
            "`{}` is empty: it must hold the CA's MAC key",
            path.display()
        ));
    }
    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|err| {
            format!(
                "`{}` does not hold a base64url MAC key ({err}); paste the key exactly as the \
                 CA shows it",
                path.display()
            )
        })?;
    Ok(Zeroizing::new(key))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn key_file(dir: &Path, text: &str, mode: u32) -> PathBuf {
        let path = dir.join("eab.key");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn the_key_is_base64url_with_whitespace_and_padding_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = key_file(
            dir.path(),
            "\n  zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W=\n",
            0o600,
        );
        let key = read_mac_key(&path).unwrap();
        assert_eq!(key.len(), 48);
        // URL-safe characters decode; standard base64's `+` and `/` do not.
        let path = key_file(dir.path(), "ab-_", 0o640);
        assert_eq!(*read_mac_key(&path).unwrap(), [0x69, 0xbf, 0xbf]);
        let path = key_file(dir.path(), "ab+/", 0o600);
        assert!(read_mac_key(&path).unwrap_err().contains("base64url"));
        let path = key_file(dir.path(), " \n", 0o600);
        assert!(read_mac_key(&path).unwrap_err().contains("empty"));
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = key_file(dir.path(), "abcd", 0o644);
        let err = read_mac_key(&path).unwrap_err();
        assert!(err.contains("readable by every user (mode 644)"), "{err}");
        assert!(read_mac_key(&dir.path().join("missing"))
            .unwrap_err()
            .contains("cannot read"));
    }
}
