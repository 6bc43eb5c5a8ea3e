//! certbot's ACME account, `accounts/<server host and path>/<id>/`: reading it and, when its key is
//! ECDSA P-256, turning it into the credentials certd's ACME client (instant-acme) loads.
//!
//! certbot keeps the account key as a JWK in `private_key.json` (RSA-2048 unless the operator chose
//! otherwise) and the account URL as `"uri"` in `regr.json`. instant-acme signs with ECDSA P-256 only,
//! so only such a key can be carried over: it is rewritten as PKCS#8 DER (by aws-lc-rs, which also
//! checks the scalar against the public point) and checked by loading it the way instant-acme will. Any other key is reported
//! as not reusable; certd then registers an account of its own at its first order, which leaves the
//! imported certificates untouched.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use zeroize::Zeroizing;

use super::base64url::{base64url_decode, base64url_encode};

/// Why a certbot account could not be read or converted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccountError {
    /// A file of the account could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A file of the account is not what certbot writes.
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// A certbot account as found on disk.
#[derive(Debug)]
pub struct CertbotAccount {
    /// certbot's id for it (the folder name, as in the renewal configuration's `account`).
    pub id: String,
    /// The account URL at the CA (`regr.json`'s `uri`).
    pub url: String,
    /// Its private key.
    pub key: AccountKey,
}

/// A certbot account key, as far as certd is concerned.
pub enum AccountKey {
    /// ECDSA P-256: usable by certd, here as PKCS#8 DER.
    P256(Zeroizing<Vec<u8>>),
    /// Anything else, described for the operator ("RSA 2048-bit", "EC P-384").
    Unsupported(String),
}

impl std::fmt::Debug for AccountKey {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::P256(_) => f.write_str("P256(..)"),
            Self::Unsupported(kind) => f.debug_tuple("Unsupported").field(kind).finish(),
        }
    }
}

/// The folder holding certbot's accounts for the CA at `server`: `<from>/accounts/<host[:port]><path>`,
/// as certbot derives it from the directory URL. `None` for a URL that cannot name a folder safely.
pub fn accounts_dir(from: &Path, server: &str) -> Option<PathBuf> {
    let rest = server
        .strip_prefix("https://")
        .or_else(|| server.strip_prefix("http://"))?;
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let mut dir = from.join("accounts");
    let mut parts = 0;
    for part in rest.split('/').filter(|part| !part.is_empty()) {
        if !is_plain_component(part) {
            return None;
        }
        dir.push(part);
        parts += 1;
    }
    (parts > 0).then_some(dir)
}

/// The account ids (folder names) under `dir`, sorted; empty when it cannot be listed.
pub fn account_ids(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.path().join("private_key.json").is_file())
        .filter_map(|entry| entry.file_name().to_str().map(str::to_owned))
        .filter(|id| is_plain_component(id))
        .collect();
    ids.sort();
    ids
}

/// Reads account `id` from `dir` (see [`accounts_dir`]): its key and its URL at the CA.
pub fn read_account(dir: &Path, id: &str) -> Result<CertbotAccount, AccountError> {
    let account_dir = dir.join(id);
    if !is_plain_component(id) {
        return Err(AccountError::Invalid {
            path: account_dir,
            reason: format!("{id:?} is not an account id"),
        });
    }
    let key_path = account_dir.join("private_key.json");
    let key_json = read_secret(&key_path)?;
    let key = key_from_jwk(&key_json).map_err(|reason| AccountError::Invalid {
        path: key_path.clone(),
        reason,
    })?;

    let regr_path = account_dir.join("regr.json");
    let regr = fs::read_to_string(&regr_path).map_err(|source| AccountError::Read {
        path: regr_path.clone(),
        source,
    })?;
    let url = account_url(&regr).map_err(|reason| AccountError::Invalid {
        path: regr_path,
        reason,
    })?;
    Ok(CertbotAccount {
        id: id.to_owned(),
        url,
        key,
    })
}

/// The account URL in a `regr.json`.
fn account_url(regr_json: &str) -> Result<String, String> {
    let regr: serde_json::Value =
        serde_json::from_str(regr_json).map_err(|err| format!("not JSON: {err}"))?;
    match regr.get("uri").and_then(serde_json::Value::as_str) {
        Some(uri) if uri.starts_with("https://") || uri.starts_with("http://") => {
            Ok(uri.to_owned())
        }
        Some(uri) => Err(format!("the account URL {uri:?} is not an http(s) URL")),
        None => Err("no account URL (\"uri\")".to_owned()),
    }
}

/// The members of a JWK that matter here. Secret members are moved into `Zeroizing` buffers at once.
#[derive(serde::Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
    #[serde(default)]
    d: Option<String>,
    #[serde(default)]
    n: Option<String>,
}

/// Converts certbot's `private_key.json` (a private JWK) into an [`AccountKey`]; an ECDSA P-256 key is
/// rewritten as PKCS#8 and checked by loading it as instant-acme does. The error is a reason in words.
pub fn key_from_jwk(json: &str) -> Result<AccountKey, String> {
    let jwk: Jwk = serde_json::from_str(json).map_err(|err| format!("not a JWK: {err}"))?;
    let d = jwk.d.map(Zeroizing::new);
    match (jwk.kty.as_str(), jwk.crv.as_deref()) {
        ("EC", Some("P-256")) => {
            let field = |name: &str, value: Option<&str>| -> Result<Zeroizing<Vec<u8>>, String> {
                let value = value.ok_or_else(|| format!("the EC key has no {name:?}"))?;
                let bytes = base64url_decode(value)
                    .ok_or_else(|| format!("the EC key's {name:?} is not base64url"))?;
                fixed_32(&bytes).ok_or_else(|| format!("the EC key's {name:?} is not 32 bytes"))
            };
            let d = field("d", d.as_deref().map(String::as_str))?;
            let x = field("x", jwk.x.as_deref())?;
            let y = field("y", jwk.y.as_deref())?;
            Ok(AccountKey::P256(p256_pkcs8(&d, &x, &y)?))
        }
        ("EC", crv) => Ok(AccountKey::Unsupported(format!(
            "EC {}",
            crv.unwrap_or("(no curve)")
        ))),
        ("RSA", _) => {
            let bits = jwk.n.as_deref().and_then(base64url_decode).map(|n| {
                let significant = n.iter().skip_while(|&&byte| byte == 0).count();
                significant * 8
            });
            Ok(AccountKey::Unsupported(match bits {
                Some(bits) if bits > 0 => format!("RSA {bits}-bit"),
                _ => "RSA".to_owned(),
            }))
        }
        (kty, _) => Ok(AccountKey::Unsupported(format!("{kty:?}"))),
    }
}

/// `bytes` as exactly 32 bytes: shorter values are left-padded with zeros (a JWK may drop leading
/// zeros), longer ones are accepted only when the extra leading bytes are zero.
fn fixed_32(bytes: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let start = bytes.len().saturating_sub(32);
    if bytes[..start].iter().any(|&byte| byte != 0) {
        return None;
    }
    let significant = &bytes[start..];
    let mut out = Zeroizing::new(vec![0_u8; 32]);
    out[32 - significant.len()..].copy_from_slice(significant);
    Some(out)
}

/// The PKCS#8 DER of the P-256 key with private scalar `d` and public point (`x`, `y`), 32 bytes each,
/// written by aws-lc-rs (which refuses a scalar that does not belong to the point) and then checked
/// by loading it as instant-acme loads account keys.
fn p256_pkcs8(d: &[u8], x: &[u8], y: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
    use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let mut point = Vec::with_capacity(65);
    point.push(0x04); // SEC 1 uncompressed point
    point.extend_from_slice(x);
    point.extend_from_slice(y);
    let pair =
        EcdsaKeyPair::from_private_key_and_public_key(&ECDSA_P256_SHA256_FIXED_SIGNING, d, &point)
            .map_err(|err| match err.description_() {
                "InconsistentComponents" => "the EC key is not a usable P-256 key pair: its \"d\" \
                                             does not belong to its \"x\" and \"y\""
                    .to_owned(),
                _ => format!("the EC key is not a usable P-256 key pair: {err}"),
            })?;
    // The document wipes itself on drop; the copy is wiped by `Zeroizing`.
    let document = pair
        .to_pkcs8v1()
        .map_err(|_| "the EC key cannot be written as PKCS#8".to_owned())?;
    let pkcs8 = Zeroizing::new(document.as_ref().to_vec());
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_slice());
    instant_acme::Key::from_pkcs8_der(der)
        .map_err(|err| format!("the EC key is not a usable P-256 key pair: {err}"))?;
    Ok(pkcs8)
}

/// The JSON instant-acme deserializes into `AccountCredentials` (what certd stores per CA), checked by
/// deserializing it.
pub fn credentials_json(
    account_url: &str,
    pkcs8: &[u8],
    directory_url: &str,
) -> Result<Zeroizing<String>, String> {
    let key = base64url_encode(pkcs8);
    let json = Zeroizing::new(
        serde_json::json!({
            "id": account_url,
            "key_pkcs8": key.as_str(),
            "directory": directory_url,
        })
        .to_string(),
    );
    let credentials: instant_acme::AccountCredentials = serde_json::from_str(&json)
        .map_err(|err| format!("instant-acme does not accept the credentials: {err}"))?;
    if credentials.private_key().secret_pkcs8_der() != pkcs8 {
        return Err("instant-acme reads another key from the credentials".to_owned());
    }
    Ok(json)
}

/// The account URL (`"id"`) in stored instant-acme credentials, if it can be read.
pub fn stored_account_url(credentials_json: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(credentials_json).ok()?;
    value.get("id")?.as_str().map(str::to_owned)
}

/// Whether `name` is a single, ordinary path component (no separators, not `.` or `..`).
fn is_plain_component(name: &str) -> bool {
    let mut components = Path::new(name).components();
    matches!(
        (components.next(), components.next()),
        (Some(Component::Normal(_)), None)
    ) && !name.contains('/')
}

/// Reads a file holding a secret into a buffer that is wiped when dropped.
fn read_secret(path: &Path) -> Result<Zeroizing<String>, AccountError> {
    match super::read_secret(path) {
        Ok(Some(text)) => Ok(text),
        Ok(None) => Err(AccountError::Invalid {
            path: path.to_owned(),
            reason: "not UTF-8".to_owned(),
        }),
        Err(source) => Err(AccountError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::test_support::fresh_p256_jwk;
    use super::*;

    /// The EC P-256 private key of RFC 7517, appendix A.2.
    const RFC7517_EC: &str = r#"{"kty":"EC","crv":"P-256",
        "x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
        "y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM",
        "d":"870MB6gfuTJ4HtUnUvYMyJpr5eUZNP4Bk43bVdj3eAE",
        "use":"enc","kid":"1"}"#;

    fn p256_der(key: &AccountKey) -> &[u8] {
        match key {
            AccountKey::P256(der) => der,
            other => panic!("expected a P-256 key, got {other:?}"),
        }
    }

    #[test]
    fn the_rfc_7517_p256_key_becomes_pkcs8_that_instant_acme_loads() {
        let key = key_from_jwk(RFC7517_EC).unwrap();
        let der = p256_der(&key);
        assert_eq!(der.len(), 138);
        instant_acme::Key::from_pkcs8_der(rustls_pki_types::PrivatePkcs8KeyDer::from(der)).unwrap();
        let pair = rcgen::KeyPair::try_from(der).unwrap();
        assert!(pair.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256));
    }

    #[test]
    fn a_fresh_p256_key_round_trips_to_the_same_public_key() {
        let (jwk, original) = fresh_p256_jwk();
        let key = key_from_jwk(&jwk).unwrap();
        let converted = rcgen::KeyPair::try_from(p256_der(&key)).unwrap();
        assert_eq!(converted.public_key_raw(), original.public_key_raw());
    }

    #[test]
    fn a_public_point_that_does_not_belong_to_d_is_refused() {
        let (jwk, _) = fresh_p256_jwk();
        let (other, _) = fresh_p256_jwk();
        let mut jwk: serde_json::Value = serde_json::from_str(&jwk).unwrap();
        let other: serde_json::Value = serde_json::from_str(&other).unwrap();
        jwk["x"] = other["x"].clone();
        jwk["y"] = other["y"].clone();
        let err = key_from_jwk(&jwk.to_string()).unwrap_err();
        assert!(err.contains("P-256 key pair"), "{err}");
        assert!(err.contains("does not belong"), "{err}");
    }

    #[test]
    fn rsa_and_other_curves_are_described_not_converted() {
        let n = base64url_encode(&[0xc5; 256]);
        let rsa = format!(r#"{{"kty":"RSA","n":"{}","e":"AQAB","d":"AQAB"}}"#, *n);
        match key_from_jwk(&rsa).unwrap() {
            AccountKey::Unsupported(kind) => assert_eq!(kind, "RSA 2048-bit"),
            other => panic!("{other:?}"),
        }
        match key_from_jwk(r#"{"kty":"EC","crv":"P-384","x":"AA","y":"AA","d":"AA"}"#).unwrap() {
            AccountKey::Unsupported(kind) => assert_eq!(kind, "EC P-384"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn broken_jwks_are_errors_with_a_reason() {
        for (json, expected) in [
            ("not json", "not a JWK"),
            (
                r#"{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}"#,
                "no \"d\"",
            ),
            (
                r#"{"kty":"EC","crv":"P-256","x":"!!","y":"AA","d":"AA"}"#,
                "not base64url",
            ),
        ] {
            let err = key_from_jwk(json).unwrap_err();
            assert!(err.contains(expected), "{json}: {err}");
        }
        let long = base64url_encode(&[1; 33]);
        let json = format!(
            r#"{{"kty":"EC","crv":"P-256","x":"AA","y":"AA","d":"{}"}}"#,
            *long
        );
        assert!(key_from_jwk(&json).unwrap_err().contains("not 32 bytes"));
    }

    #[test]
    fn credentials_are_what_instant_acme_stores() {
        let key = key_from_jwk(RFC7517_EC).unwrap();
        let json = credentials_json(
            "https://ca.example/acct/1",
            p256_der(&key),
            "https://ca.example/dir",
        )
        .unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["id"], "https://ca.example/acct/1");
        assert_eq!(value["directory"], "https://ca.example/dir");
        assert_eq!(
            *base64url_decode(value["key_pkcs8"].as_str().unwrap()).unwrap(),
            p256_der(&key)
        );
        assert_eq!(
            stored_account_url(&json).as_deref(),
            Some("https://ca.example/acct/1")
        );
    }

    #[test]
    fn the_accounts_folder_follows_certbots_server_path() {
        let from = Path::new("/etc/letsencrypt");
        assert_eq!(
            accounts_dir(from, "https://acme-v02.api.letsencrypt.org/directory").unwrap(),
            Path::new("/etc/letsencrypt/accounts/acme-v02.api.letsencrypt.org/directory")
        );
        assert_eq!(
            accounts_dir(from, "https://127.0.0.1:14000/dir").unwrap(),
            Path::new("/etc/letsencrypt/accounts/127.0.0.1:14000/dir")
        );
        assert!(accounts_dir(from, "https://ca.example/../../etc").is_none());
        assert!(accounts_dir(from, "ftp://ca.example/dir").is_none());
        assert!(accounts_dir(from, "https://").is_none());
    }

    #[test]
    fn an_account_folder_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let account = dir.path().join("abc123");
        fs::create_dir(&account).unwrap();
        fs::write(account.join("private_key.json"), RFC7517_EC).unwrap();
        fs::write(
            account.join("regr.json"),
            r#"{"body": {}, "uri": "https://ca.example/acct/7"}"#,
        )
        .unwrap();
        fs::write(account.join("meta.json"), "{}").unwrap();
        assert_eq!(account_ids(dir.path()), vec!["abc123".to_owned()]);

        let read = read_account(dir.path(), "abc123").unwrap();
        assert_eq!(read.url, "https://ca.example/acct/7");
        assert!(matches!(read.key, AccountKey::P256(_)));

        fs::write(account.join("regr.json"), r#"{"body": {}}"#).unwrap();
        let err = read_account(dir.path(), "abc123").unwrap_err().to_string();
        assert!(err.contains("regr.json") && err.contains("uri"), "{err}");
        assert!(read_account(dir.path(), "..").is_err());
        assert!(matches!(
            read_account(dir.path(), "missing"),
            Err(AccountError::Read { .. })
        ));
    }
}
