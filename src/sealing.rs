//! Sealing secrets at rest: private keys and ACME account credentials that a backend keeps off this
//! machine (a database, whose dumps and backups travel) are encrypted with AES-256-GCM under a key
//! every node of the fleet has (`[storage] key_file`), so a dump alone leaks no key.
//!
//! A leaf below both `storage` (whose backends seal) and `store` (whose `StoreError` carries a
//! [`SealError`]), so neither has to import the other for it.
//!
//! A sealed value is `version (1 byte) || nonce (12 bytes) || ciphertext || tag (16 bytes)`. The
//! nonce is random per seal (96 bits; far below the birthday bound at certd's write rates). The
//! caller's `context` (say `cert:example.test:42`) is the AEAD's associated data: a sealed key copied
//! into another row does not open there.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

/// Length of the key in `key_file`: AES-256.
pub const KEY_LEN: usize = 32;
/// The format version written as a sealed value's first byte.
const FORMAT_V1: u8 = 1;
/// The permission bits a key file may not have: any access for group or others.
const FORBIDDEN_MODE: u32 = 0o077;

/// Errors loading the sealing key or opening a sealed value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The key file cannot be read.
    #[error("storage key_file {}: {source}", path.display())]
    KeyFileUnreadable {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The key file can be read by other users (it must be 0600 or stricter).
    #[error("storage key_file {}: mode {mode:04o} lets other users read it; chmod 600 it", path.display())]
    KeyFileMode {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file does not hold exactly [`KEY_LEN`] bytes.
    #[error("storage key_file {}: holds {len} bytes, not {KEY_LEN} (make one with `head -c 32 /dev/urandom`)", path.display())]
    KeyFileLength {
        /// The key file.
        path: PathBuf,
        /// How many bytes it holds (counted up to one more than expected).
        len: usize,
    },
    /// The system's random number generator failed.
    #[error("cannot draw a random nonce")]
    Random,
    /// A sealed value does not open: another key, another context, or altered.
    #[error("sealed {context} does not open with this key_file (another fleet's key, or altered)")]
    Open {
        /// What was being opened.
        context: String,
    },
}

/// The fleet's sealing key, loaded from `[storage] key_file`.
pub struct SealingKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for SealingKey {
    // Never the key itself, not even in a debug log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey(..)")
    }
}

impl SealingKey {
    /// Loads the key from `path`: exactly [`KEY_LEN`] bytes (no newline), in a file no other user can
    /// read (checked before it is read, so a mistake is reported rather than used).
    pub fn load(path: &Path) -> Result<Self, SealError> {
        let unreadable = |source| SealError::KeyFileUnreadable {
            path: path.to_owned(),
            source,
        };
        let mut file = fs::File::open(path).map_err(unreadable)?;
        let mode = file.metadata().map_err(unreadable)?.permissions().mode() & 0o7777;
        if mode & FORBIDDEN_MODE != 0 {
            return Err(SealError::KeyFileMode {
                path: path.to_owned(),
                mode,
            });
        }
        // One byte more than a key, so an oversized file is told apart without reading it all.
        let mut bytes = Zeroizing::new(Vec::with_capacity(KEY_LEN + 1));
        (&mut file)
            .take(KEY_LEN as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(unreadable)?;
        Self::from_bytes(&bytes).ok_or(SealError::KeyFileLength {
            path: path.to_owned(),
            len: bytes.len(),
        })
    }

    /// The key made of `bytes`, or `None` when they are not [`KEY_LEN`] long.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != KEY_LEN {
            return None;
        }
        let key = UnboundKey::new(&AES_256_GCM, bytes).ok()?;
        Some(Self {
            key: LessSafeKey::new(key),
        })
    }

    /// Encrypts `plaintext`, bound to `context` (what it is and where it belongs).
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::Random)?;
        let mut in_out = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut in_out,
            )
            // Only fails for inputs beyond GCM's limit (64 GiB), which no key or account reaches.
            .map_err(|_| SealError::Random)?;
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + in_out.len());
        sealed.push(FORMAT_V1);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&in_out);
        Ok(sealed)
    }

    /// Decrypts what [`SealingKey::seal`] made for the same `context`; [`SealError::Open`] for
    /// anything else (wrong key, wrong context, altered, truncated, unknown format).
    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let refused = || SealError::Open {
            context: context.to_owned(),
        };
        let (&version, rest) = sealed.split_first().ok_or_else(refused)?;
        if version != FORMAT_V1 || rest.len() < NONCE_LEN {
            return Err(refused());
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| refused())?;
        let mut in_out = Zeroizing::new(ciphertext.to_vec());
        let len = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut in_out)
            .map_err(|_| refused())?
            .len();
        in_out.truncate(len);
        Ok(in_out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const KEY: [u8; KEY_LEN] = [7; KEY_LEN];
    const PEM: &[u8] = b"-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----\n";

    fn key_file(bytes: &[u8], mode: u32) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("storage.key");
        fs::write(&path, bytes).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        (dir, path)
    }

    #[test]
    fn a_sealed_value_opens_with_its_key_and_context_only() {
        let key = SealingKey::from_bytes(&KEY).unwrap();
        let sealed = key.seal("cert:a.test:1", PEM).unwrap();
        assert!(
            !sealed.windows(6).any(|window| window == b"secret"),
            "the plaintext shows through"
        );
        assert_eq!(key.open("cert:a.test:1", &sealed).unwrap().as_slice(), PEM);
        // Moved to another row: refused.
        assert!(matches!(
            key.open("cert:b.test:1", &sealed),
            Err(SealError::Open { .. })
        ));
        // Another fleet's key: refused.
        let other = SealingKey::from_bytes(&[8; KEY_LEN]).unwrap();
        assert!(other.open("cert:a.test:1", &sealed).is_err());
    }

    #[test]
    fn altered_truncated_or_unknown_values_do_not_open() {
        let key = SealingKey::from_bytes(&KEY).unwrap();
        let sealed = key.seal("account:ca", PEM).unwrap();
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let mut future = sealed.clone();
        future[0] = 2;
        for bad in [&flipped[..], &sealed[..10], &[][..], &future[..]] {
            assert!(key.open("account:ca", bad).is_err());
        }
    }

    #[test]
    fn each_seal_draws_a_new_nonce() {
        let key = SealingKey::from_bytes(&KEY).unwrap();
        assert_ne!(key.seal("c", PEM).unwrap(), key.seal("c", PEM).unwrap());
    }

    #[test]
    fn the_key_file_must_be_private_and_exactly_32_bytes() {
        let (_dir, good) = key_file(&KEY, 0o600);
        let key = SealingKey::load(&good).unwrap();
        let sealed = key.seal("c", PEM).unwrap();
        assert_eq!(
            SealingKey::from_bytes(&KEY)
                .unwrap()
                .open("c", &sealed)
                .unwrap()
                .as_slice(),
            PEM
        );
        SealingKey::load(&key_file(&KEY, 0o400).1).unwrap();

        let (_dir, loose) = key_file(&KEY, 0o644);
        let err = SealingKey::load(&loose).unwrap_err();
        assert!(
            matches!(err, SealError::KeyFileMode { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("storage.key"), "{err}");

        let mut with_newline = KEY.to_vec();
        with_newline.push(b'\n');
        for (bytes, len) in [(&KEY[..16], 16), (&with_newline[..], 33)] {
            let (_dir, path) = key_file(bytes, 0o600);
            let err = SealingKey::load(&path).unwrap_err();
            assert!(
                matches!(err, SealError::KeyFileLength { len: found, .. } if found == len),
                "{err}"
            );
        }
        assert!(matches!(
            SealingKey::load(Path::new("/nonexistent/storage.key")),
            Err(SealError::KeyFileUnreadable { .. })
        ));
    }

    #[test]
    fn the_key_is_not_in_its_debug_form() {
        let key = SealingKey::from_bytes(&KEY).unwrap();
        assert_eq!(format!("{key:?}"), "SealingKey(..)");
    }
}
