//! The configuration file: what the operator asked certd to manage.
//!
//! Loading happens in two steps, as in hickory-dns: the TOML text is deserialized into raw structs that
//! reject unknown keys, then validated into the typed [`Config`] the rest of certd uses. Every problem
//! found is collected (not just the first) so that `certd check` can name them all at once, each with the
//! file, the key, the line where known, and the reason. [`load`] reads a file; [`from_toml`] parses a
//! string so tests need no files.
//!
//! The file, with every key and its default:
//!
//! ```toml
//! state_dir = "state"           # default "state"; relative paths are against the config file's folder
//!
//! [acme]                        # required
//! directory = "letsencrypt"     # required: "letsencrypt", "letsencrypt-staging", or an https:// URL
//! email = "ops@example.org"     # optional contact (a `mailto:` prefix is accepted and removed)
//! agree_tos = true              # required, and must be true: the CA's terms are accepted explicitly
//! ca_roots = "pebble-root.pem"  # optional: extra PEM roots for the CA's own HTTPS; must exist
//! key_type = "ecdsa-p256"       # ecdsa-p256 (default), ecdsa-p384, rsa2048, rsa4096
//! concurrency = 4               # orders in flight at once, 1..=64 (default 4)
//!
//! [http]                        # optional
//! listen = ["0.0.0.0:80"]       # default ["0.0.0.0:80"]; each an IP address with a port
//!
//! [renewal]                     # optional
//! remaining_fraction = 0.333    # renew when less than this part of the lifetime remains (default 1/3)
//!
//! [[site]]                      # at least one; one certificate per site
//! names = ["example.org", "www.example.org"]  # DNS names, each used once in the whole file
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

mod raw;
#[cfg(test)]
mod tests;
mod validate;

/// The Let's Encrypt production directory.
pub const LETSENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// The Let's Encrypt staging directory.
pub const LETSENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this configuration was read from (used in messages and to resolve relative paths).
    pub source: PathBuf,
    /// Where certificates, keys, accounts and the lock live. Relative paths in the file are resolved
    /// against the config file's folder.
    pub state_dir: PathBuf,
    /// How to talk to the CA.
    pub acme: AcmeConfig,
    /// The plain-HTTP listener that answers HTTP-01 challenges.
    pub http: HttpConfig,
    /// When certificates are renewed.
    pub renewal: RenewalConfig,
    /// The sites, in file order. Each gets one certificate covering all its names.
    pub sites: Vec<SiteConfig>,
}

/// The `[acme]` table.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// The ACME directory URL (the `letsencrypt` / `letsencrypt-staging` shorthands already expanded).
    pub directory_url: String,
    /// Optional contact e-mail, sent as `mailto:` when the account is created.
    pub email: Option<String>,
    /// Extra PEM roots to trust for the CA's own HTTPS endpoint (resolved against the config folder).
    pub ca_roots: Option<PathBuf>,
    /// The kind of key generated for each certificate.
    pub key_type: KeyType,
    /// How many orders may be in flight at once.
    pub concurrency: usize,
}

/// The kind of private key generated for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256 (the default: small, fast, universally supported).
    #[default]
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    #[serde(rename = "ecdsa-p384")]
    EcdsaP384,
    /// RSA with a 2048-bit modulus.
    #[serde(rename = "rsa2048")]
    Rsa2048,
    /// RSA with a 4096-bit modulus.
    #[serde(rename = "rsa4096")]
    Rsa4096,
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::EcdsaP256 => "ecdsa-p256",
            Self::EcdsaP384 => "ecdsa-p384",
            Self::Rsa2048 => "rsa2048",
            Self::Rsa4096 => "rsa4096",
        })
    }
}

/// The `[http]` table.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Addresses the HTTP-01 responder listens on.
    pub listen: Vec<SocketAddr>,
}

/// The `[renewal]` table.
#[derive(Debug, Clone, Copy)]
pub struct RenewalConfig {
    /// Renew when less than this fraction of the certificate's lifetime remains (default 1/3).
    pub remaining_fraction: f64,
}

impl Default for RenewalConfig {
    fn default() -> Self {
        Self {
            remaining_fraction: 1.0 / 3.0,
        }
    }
}

/// One `[[site]]`: one certificate covering all of `names`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteConfig {
    /// The DNS names, lower-cased, in file order; the first one names the site.
    pub names: Vec<String>,
}

impl SiteConfig {
    /// The site's name: its first DNS name. It names the folder under `state/certs/`.
    pub fn name(&self) -> &str {
        &self.names[0]
    }
}

/// Everything wrong with a configuration file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file that was read.
    pub file: PathBuf,
    /// Each problem found, in file order.
    pub problems: Vec<ConfigProblem>,
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The key in dotted form (`acme.agree_tos`, `site[1].names[0]`), empty when the whole file is at fault.
    pub key: String,
    /// The 1-based line, where it is known.
    pub line: Option<usize>,
    /// What is wrong, in words an operator can act on.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        write!(
            f,
            "{}: {count} problem{} in the configuration",
            self.file.display(),
            if count == 1 { "" } else { "s" }
        )?;
        for problem in &self.problems {
            write!(f, "\n  {}", self.file.display())?;
            if let Some(line) = problem.line {
                write!(f, ":{line}")?;
            }
            if !problem.key.is_empty() {
                write!(f, ": {}", problem.key)?;
            }
            write!(f, ": {}", problem.reason)?;
        }
        Ok(())
    }
}

/// Reads and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
        file: path.to_path_buf(),
        problems: vec![ConfigProblem {
            key: String::new(),
            line: None,
            reason: format!("cannot read the file: {err}"),
        }],
    })?;
    from_toml(&text, path)
}

/// Parses and validates configuration `text`; `path` is where it came from (for messages and for
/// resolving relative paths against its folder).
pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let raw: raw::RawConfig = toml::from_str(text).map_err(|err| ConfigError {
        file: path.to_path_buf(),
        problems: raw::deserializer_problems(text, &err),
    })?;
    let mut problems = validate::Problems::new(text);
    let config = validate::validate(raw, path, &mut problems);
    if problems.found.is_empty() {
        Ok(config)
    } else {
        let mut problems = problems.found;
        // Stable, so problems on one line keep the order they were found in; those without a line
        // (a missing table) come last.
        problems.sort_by_key(|problem| problem.line.unwrap_or(usize::MAX));
        Err(ConfigError {
            file: path.to_path_buf(),
            problems,
        })
    }
}
