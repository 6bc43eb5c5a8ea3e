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

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::hostname;

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
    let raw: RawConfig = toml::from_str(text).map_err(|err| ConfigError {
        file: path.to_path_buf(),
        problems: deserializer_problems(text, &err),
    })?;
    let mut problems = Problems {
        text,
        found: Vec::new(),
    };
    let config = validate(raw, path, &mut problems);
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

// ---------------------------------------------------------------------------------------------------
// Step 1: the file as written.
//
// Every key is optional here so that validation, not the deserializer, reports what is missing (and
// reports all of it). Tables are `Spanned` so problems about a missing key can point at the table's
// header line. To add a key: add an `Option` field here (a table gets its own `Raw*` struct with
// `deny_unknown_fields`), then a function in step 2 that turns it into the typed form. The top-level
// `[https]` table becomes `https: Option<Spanned<RawHttp>>`-like, and each site's
// `[[site.route]]` / `[site.error_pages]` become `route: Vec<Spanned<RawRoute>>` and
// `error_pages: Option<Spanned<RawErrorPages>>` on `RawSite`, validated in `sites`.
// ---------------------------------------------------------------------------------------------------

/// The whole file.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: Option<Spanned<String>>,
    acme: Option<Spanned<RawAcme>>,
    http: Option<Spanned<RawHttp>>,
    renewal: Option<Spanned<RawRenewal>>,
    #[serde(default)]
    site: Vec<Spanned<RawSite>>,
}

/// `[acme]`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAcme {
    directory: Option<Spanned<String>>,
    email: Option<Spanned<String>>,
    agree_tos: Option<Spanned<bool>>,
    ca_roots: Option<Spanned<String>>,
    /// A string rather than [`KeyType`], so a bad value is a validation problem reported alongside
    /// the others instead of a deserializer error that stops at the first.
    key_type: Option<Spanned<String>>,
    concurrency: Option<Spanned<i64>>,
}

/// `[http]`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `[renewal]`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRenewal {
    remaining_fraction: Option<Spanned<f64>>,
}

/// One `[[site]]`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSite {
    names: Option<Spanned<Vec<Spanned<String>>>>,
}

// ---------------------------------------------------------------------------------------------------
// Step 2: validation into the typed `Config`. Each function records its problems and returns a value
// regardless (a default or placeholder where the input was unusable); `from_toml` discards the value
// when any problem was recorded.
// ---------------------------------------------------------------------------------------------------

const DEFAULT_STATE_DIR: &str = "state";
/// `0.0.0.0:80`.
const DEFAULT_HTTP_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::UNSPECIFIED,
    80,
));
const DEFAULT_CONCURRENCY: usize = 4;
const CONCURRENCY_RANGE: std::ops::RangeInclusive<i64> = 1..=64;
/// Every [`KeyType`], in the order the documentation lists them.
const KEY_TYPES: [KeyType; 4] = [
    KeyType::EcdsaP256,
    KeyType::EcdsaP384,
    KeyType::Rsa2048,
    KeyType::Rsa4096,
];

/// The problems found so far, and the text they refer to (to turn byte offsets into lines).
struct Problems<'a> {
    text: &'a str,
    found: Vec<ConfigProblem>,
}

impl Problems<'_> {
    fn add(
        &mut self,
        key: impl Into<String>,
        span: Option<Range<usize>>,
        reason: impl Into<String>,
    ) {
        self.found.push(ConfigProblem {
            key: key.into(),
            line: span.map(|span| line_at(self.text, span.start)),
            reason: reason.into(),
        });
    }
}

fn validate(raw: RawConfig, path: &Path, problems: &mut Problems<'_>) -> Config {
    let folder = config_folder(path);
    Config {
        source: path.to_path_buf(),
        state_dir: state_dir(raw.state_dir, &folder, problems),
        acme: acme(raw.acme, &folder, problems),
        http: http(raw.http, problems),
        renewal: renewal(raw.renewal, problems),
        sites: sites(raw.site, problems),
    }
}

/// The folder relative paths in the file are resolved against: the file's own folder, or `.` for a
/// bare file name. Not canonicalized, so messages show paths as the operator wrote them.
fn config_folder(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `state_dir`. Only a path computation: nothing is created until the whole file is valid.
fn state_dir(raw: Option<Spanned<String>>, folder: &Path, problems: &mut Problems<'_>) -> PathBuf {
    let Some(raw) = raw else {
        return folder.join(DEFAULT_STATE_DIR);
    };
    if raw.get_ref().trim().is_empty() {
        problems.add(
            "state_dir",
            Some(raw.span()),
            format!(
                "is empty: name a folder, or leave the key out for `{DEFAULT_STATE_DIR}` next to \
                 the config file"
            ),
        );
    }
    folder.join(raw.get_ref())
}

fn acme(raw: Option<Spanned<RawAcme>>, folder: &Path, problems: &mut Problems<'_>) -> AcmeConfig {
    let mut acme = AcmeConfig {
        directory_url: String::new(),
        email: None,
        ca_roots: None,
        key_type: KeyType::default(),
        concurrency: DEFAULT_CONCURRENCY,
    };
    let Some(raw) = raw else {
        problems.add(
            "acme",
            None,
            "the [acme] table is missing: it needs at least `directory` and `agree_tos = true`",
        );
        return acme;
    };
    let table = raw.span();
    let raw = raw.into_inner();

    match raw.directory {
        None => problems.add(
            "acme.directory",
            Some(table.clone()),
            "missing: set `directory = \"letsencrypt\"`, `\"letsencrypt-staging\"`, or the CA's \
             https:// directory URL",
        ),
        Some(directory) => match directory_url(directory.get_ref()) {
            Ok(url) => acme.directory_url = url,
            Err(reason) => problems.add("acme.directory", Some(directory.span()), reason),
        },
    }

    if let Some(email) = raw.email {
        match email_address(email.get_ref()) {
            Ok(address) => acme.email = Some(address),
            Err(reason) => problems.add("acme.email", Some(email.span()), reason),
        }
    }

    match raw.agree_tos {
        None => problems.add(
            "acme.agree_tos",
            Some(table),
            "missing: the CA's terms of service must be accepted explicitly; read them, then add \
             `agree_tos = true` to [acme]",
        ),
        Some(agree) if !*agree.get_ref() => problems.add(
            "acme.agree_tos",
            Some(agree.span()),
            "is false: certd cannot create an ACME account unless the CA's terms of service are \
             accepted; read them, then set `agree_tos = true`",
        ),
        Some(_) => {}
    }

    if let Some(ca_roots) = raw.ca_roots {
        let path = folder.join(ca_roots.get_ref());
        if let Err(reason) = check_pem_file(&path) {
            problems.add("acme.ca_roots", Some(ca_roots.span()), reason);
        }
        acme.ca_roots = Some(path);
    }

    if let Some(key_type) = raw.key_type {
        match KEY_TYPES
            .iter()
            .find(|known| known.to_string() == *key_type.get_ref())
        {
            Some(known) => acme.key_type = *known,
            None => {
                let allowed: Vec<String> = KEY_TYPES.iter().map(|k| format!("`{k}`")).collect();
                problems.add(
                    "acme.key_type",
                    Some(key_type.span()),
                    format!(
                        "`{}` is not a key type certd knows; use one of {} (the default is `{}`)",
                        key_type.get_ref(),
                        allowed.join(", "),
                        KeyType::default()
                    ),
                );
            }
        }
    }

    if let Some(concurrency) = raw.concurrency {
        let value = *concurrency.get_ref();
        match usize::try_from(value) {
            Ok(n) if CONCURRENCY_RANGE.contains(&value) => acme.concurrency = n,
            _ => problems.add(
                "acme.concurrency",
                Some(concurrency.span()),
                format!(
                    "{value} is out of range: allow between {} and {} orders at once (default \
                     {DEFAULT_CONCURRENCY})",
                    CONCURRENCY_RANGE.start(),
                    CONCURRENCY_RANGE.end()
                ),
            ),
        }
    }

    acme
}

/// Expands the `letsencrypt` shorthands, and otherwise checks for an `https://` URL with a host.
fn directory_url(value: &str) -> Result<String, String> {
    match value {
        "letsencrypt" => return Ok(LETSENCRYPT_PRODUCTION.to_owned()),
        "letsencrypt-staging" => return Ok(LETSENCRYPT_STAGING.to_owned()),
        _ => {}
    }
    let expected = "write `letsencrypt`, `letsencrypt-staging`, or the CA's https:// directory URL";
    let Some(rest) = value
        .get(..8)
        .filter(|scheme| scheme.eq_ignore_ascii_case("https://"))
        .and_then(|_| value.get(8..))
    else {
        return Err(if value.contains("://") {
            format!(
                "`{value}` is not an https:// URL: ACME servers are only reached over HTTPS \
                 (RFC 8555 section 6.1)"
            )
        } else {
            format!("`{value}` is not a directory: {expected}")
        });
    };
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{value}` contains whitespace: {expected}"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(format!(
            "`{value}` contains a user name: the directory URL must not carry credentials"
        ));
    }
    let (host, port) = match authority.strip_prefix('[') {
        // An IPv6 literal, as in `https://[::1]:14000/dir`.
        Some(bracketed) => match bracketed.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, after)) => (host, Some(after.strip_prefix(':').unwrap_or(after))),
            None => return Err(format!("`{value}` has an unclosed `[` in its host")),
        },
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return Err(format!("`{value}` has no host: {expected}"));
    }
    if let Some(port) = port {
        if port.parse::<u16>().is_err() {
            return Err(format!("`{value}` has an invalid port `{port}`"));
        }
    }
    Ok(value.to_owned())
}

/// A contact address, without the `mailto:` the ACME account needs (it is added when the account is
/// created).
fn email_address(value: &str) -> Result<String, String> {
    let address = value
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case("mailto:"))
        .and_then(|_| value.get(7..))
        .unwrap_or(value);
    let plausible = !address.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(address.split_once('@'), Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if plausible {
        Ok(address.to_owned())
    } else {
        Err(format!(
            "`{value}` does not look like an e-mail address: expected one `@` with text on both \
             sides and no spaces, such as `ops@example.org`"
        ))
    }
}

/// Checks that `path` can be read and holds at least one PEM certificate. Reading is harmless; what
/// the certificates are is for the ACME client to judge.
fn check_pem_file(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("cannot read `{}`: {err}", path.display()))?;
    if text.contains("-----BEGIN CERTIFICATE-----") {
        Ok(())
    } else {
        Err(format!(
            "`{}` holds no PEM certificate (no `-----BEGIN CERTIFICATE-----` line)",
            path.display()
        ))
    }
}

fn http(raw: Option<Spanned<RawHttp>>, problems: &mut Problems<'_>) -> HttpConfig {
    match raw.and_then(|table| table.into_inner().listen) {
        Some(listen) => HttpConfig {
            listen: listen_addresses("http.listen", listen, problems),
        },
        None => HttpConfig {
            listen: default_http_listen(),
        },
    }
}

fn default_http_listen() -> Vec<SocketAddr> {
    vec![DEFAULT_HTTP_LISTEN]
}

/// A `listen = [...]` list under `key` (shared with the HTTPS listener when it comes).
fn listen_addresses(
    key: &str,
    raw: Spanned<Vec<Spanned<String>>>,
    problems: &mut Problems<'_>,
) -> Vec<SocketAddr> {
    if raw.get_ref().is_empty() {
        problems.add(
            key,
            Some(raw.span()),
            "is empty: list at least one address, such as \"0.0.0.0:80\" or \"[::]:80\"",
        );
    }
    let mut addresses: Vec<SocketAddr> = Vec::new();
    for (i, entry) in raw.into_inner().into_iter().enumerate() {
        let entry_key = format!("{key}[{i}]");
        match entry.get_ref().parse::<SocketAddr>() {
            Ok(address) => match addresses.iter().position(|seen| *seen == address) {
                Some(first) => problems.add(
                    entry_key,
                    Some(entry.span()),
                    format!("{address} is listed twice (also {key}[{first}])"),
                ),
                None => addresses.push(address),
            },
            Err(_) => problems.add(
                entry_key,
                Some(entry.span()),
                format!(
                    "`{}` is not an IP address with a port, such as \"0.0.0.0:80\" or \"[::]:80\"",
                    entry.get_ref()
                ),
            ),
        }
    }
    addresses
}

fn renewal(raw: Option<Spanned<RawRenewal>>, problems: &mut Problems<'_>) -> RenewalConfig {
    let mut renewal = RenewalConfig::default();
    if let Some(fraction) = raw.and_then(|table| table.into_inner().remaining_fraction) {
        let value = *fraction.get_ref();
        // Written so that NaN fails too.
        if value > 0.0 && value < 1.0 {
            renewal.remaining_fraction = value;
        } else {
            problems.add(
                "renewal.remaining_fraction",
                Some(fraction.span()),
                format!(
                    "{value} is out of range: it must be more than 0 and less than 1 (the default, \
                     0.333, renews when a third of the certificate's lifetime remains)"
                ),
            );
        }
    }
    renewal
}

/// The `[[site]]` tables. Names are validated and lower-cased; a name may appear only once in the
/// whole file, because it selects exactly one certificate.
fn sites(raw: Vec<Spanned<RawSite>>, problems: &mut Problems<'_>) -> Vec<SiteConfig> {
    if raw.is_empty() {
        problems.add(
            "site",
            None,
            "no [[site]] tables: add one per certificate, e.g. `[[site]]` followed by \
             `names = [\"example.org\"]`",
        );
    }
    // Lower-cased name -> (site index, name index, that site's name), for duplicate reports.
    let mut seen: HashMap<String, (usize, usize, String)> = HashMap::new();
    let mut sites = Vec::new();
    for (i, site) in raw.into_iter().enumerate() {
        let table = site.span();
        let Some(names) = site.into_inner().names else {
            problems.add(
                format!("site[{i}].names"),
                Some(table),
                "missing: each [[site]] needs `names = [\"example.org\", ...]`",
            );
            continue;
        };
        if names.get_ref().is_empty() {
            problems.add(
                format!("site[{i}].names"),
                Some(names.span()),
                "is empty: list at least one DNS name",
            );
            continue;
        }
        let site_name = names
            .get_ref()
            .first()
            .map(|first| first.get_ref().to_ascii_lowercase())
            .unwrap_or_default();
        let mut valid = Vec::new();
        for (j, name) in names.into_inner().into_iter().enumerate() {
            let key = format!("site[{i}].names[{j}]");
            let span = Some(name.span());
            match hostname::validate_dns_name(name.get_ref()) {
                Err(reason) => problems.add(key, span, format!("{:?}: {reason}", name.get_ref())),
                Ok(dns) => match seen.get(&dns) {
                    Some((other, other_j, _)) if *other == i => problems.add(
                        key,
                        span,
                        format!("{dns:?} is listed twice in this site (also site[{i}].names[{other_j}])"),
                    ),
                    Some((other, _, other_name)) => problems.add(
                        key,
                        span,
                        format!("{dns:?} is already used by site[{other}] ({other_name})"),
                    ),
                    None => {
                        seen.insert(dns.clone(), (i, j, site_name.clone()));
                        valid.push(dns);
                    }
                },
            }
        }
        if !valid.is_empty() {
            sites.push(SiteConfig { names: valid });
        }
    }
    sites
}

// ---------------------------------------------------------------------------------------------------
// Deserializer errors: syntax errors, unknown keys, and values of the wrong type.
// ---------------------------------------------------------------------------------------------------

/// Turns a failed deserialization into problems. Syntax errors are all reported (the parser recovers
/// and continues); a serde error (an unknown key, a wrong type) stops deserialization, so it is the
/// only one, and its key is found by locating its span in the parsed document.
fn deserializer_problems(text: &str, err: &toml::de::Error) -> Vec<ConfigProblem> {
    let (document, syntax_errors) = DeTable::parse_recoverable(text);
    let problem = |key: String, error: &toml::de::Error| ConfigProblem {
        key,
        line: error.span().map(|span| line_at(text, span.start)),
        reason: error.message().to_owned(),
    };
    if syntax_errors.is_empty() {
        let key = err
            .span()
            .and_then(|span| key_at(document.get_ref(), "", span.start))
            .unwrap_or_default();
        vec![problem(key, err)]
    } else {
        let mut problems: Vec<ConfigProblem> = syntax_errors
            .iter()
            .map(|error| problem(String::new(), error))
            .collect();
        problems.sort_by_key(|problem| problem.line.unwrap_or(usize::MAX));
        problems
    }
}

/// The dotted path (`acme.key_type`, `site[1].names[0]`) of the innermost key or value in `table`
/// whose span holds byte `offset`. Every entry is searched, because a table's own span covers only its
/// header line, not its contents.
fn key_at(table: &DeTable<'_>, prefix: &str, offset: usize) -> Option<String> {
    table.iter().find_map(|(key, value)| {
        let path = join_key(prefix, key.get_ref());
        if key.span().contains(&offset) {
            Some(path)
        } else {
            value_key_at(value, &path, offset)
        }
    })
}

fn value_key_at(value: &Spanned<DeValue<'_>>, path: &str, offset: usize) -> Option<String> {
    let inner = match value.get_ref() {
        DeValue::Table(table) => key_at(table, path, offset),
        DeValue::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| value_key_at(item, &format!("{path}[{i}]"), offset)),
        _ => None,
    };
    inner.or_else(|| value.span().contains(&offset).then(|| path.to_owned()))
}

/// Appends `key` to a dotted path, quoting it as TOML would if it is not a bare key.
fn join_key(prefix: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if prefix.is_empty() {
        key
    } else {
        format!("{prefix}.{key}")
    }
}

/// The 1-based line holding byte `offset` of `text`.
fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PATH: &str = "/etc/certd/certd.toml";

    /// The smallest valid file; tests append or swap lines to break it.
    const MINIMAL: &str = r#"[acme]
directory = "letsencrypt"
agree_tos = true
[[site]]
names = ["example.org"]
"#;

    fn parse(text: &str) -> Config {
        match from_toml(text, Path::new(PATH)) {
            Ok(config) => config,
            Err(err) => panic!("expected a valid config, got:\n{err}"),
        }
    }

    fn problems(text: &str) -> Vec<ConfigProblem> {
        match from_toml(text, Path::new(PATH)) {
            Ok(config) => panic!("expected problems, got {config:#?}"),
            Err(err) => {
                assert_eq!(err.file, Path::new(PATH));
                assert!(!err.problems.is_empty());
                err.problems
            }
        }
    }

    /// Asserts that `text` has exactly one problem, on `key` at `line`, whose reason mentions `fragment`.
    #[track_caller]
    fn assert_problem(text: &str, key: &str, line: Option<usize>, fragment: &str) {
        let found = problems(text);
        assert_eq!(found.len(), 1, "expected one problem, got {found:#?}");
        assert_eq!(found[0].key, key, "{found:#?}");
        assert_eq!(found[0].line, line, "{found:#?}");
        assert!(
            found[0].reason.contains(fragment),
            "reason {:?} does not mention {fragment:?}",
            found[0].reason
        );
    }

    #[test]
    fn the_documented_example_parses() {
        let folder = tempfile::tempdir().unwrap();
        std::fs::write(
            folder.path().join("pebble-root.pem"),
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let text = r#"state_dir = "state"                 # default "state", relative to the config file's folder
[acme]
directory = "letsencrypt"           # "letsencrypt", "letsencrypt-staging", or a directory URL
email = "ops@example.org"           # optional contact
agree_tos = true                    # required: the CA's terms must be accepted explicitly
ca_roots = "pebble-root.pem"        # optional: extra PEM roots for the CA's own HTTPS
key_type = "ecdsa-p256"             # ecdsa-p256 (default), ecdsa-p384, rsa2048, rsa4096
[http]
listen = ["0.0.0.0:80"]
[[site]]
names = ["example.org", "www.example.org"]
"#;
        let path = folder.path().join("certd.toml");
        let config = from_toml(text, &path).unwrap();
        assert_eq!(config.source, path);
        assert_eq!(config.state_dir, folder.path().join("state"));
        assert_eq!(config.acme.directory_url, LETSENCRYPT_PRODUCTION);
        assert_eq!(config.acme.email.as_deref(), Some("ops@example.org"));
        assert_eq!(
            config.acme.ca_roots,
            Some(folder.path().join("pebble-root.pem"))
        );
        assert_eq!(config.acme.key_type, KeyType::EcdsaP256);
        assert_eq!(config.acme.concurrency, 4);
        assert_eq!(
            config.http.listen,
            vec!["0.0.0.0:80".parse::<SocketAddr>().unwrap()]
        );
        assert!((config.renewal.remaining_fraction - 1.0 / 3.0).abs() < f64::EPSILON);
        assert_eq!(
            config.sites,
            vec![SiteConfig {
                names: vec!["example.org".into(), "www.example.org".into()]
            }]
        );
        assert_eq!(config.sites[0].name(), "example.org");
    }

    #[test]
    fn defaults_and_relative_state_dir() {
        let config = parse(MINIMAL);
        assert_eq!(config.state_dir, Path::new("/etc/certd/state"));
        assert_eq!(config.acme.email, None);
        assert_eq!(config.acme.ca_roots, None);
        assert_eq!(config.acme.key_type, KeyType::EcdsaP256);
        assert_eq!(config.acme.concurrency, DEFAULT_CONCURRENCY);
        assert_eq!(config.http.listen, ["0.0.0.0:80".parse().unwrap()]);

        let relative = format!("state_dir = \"var/certd\"\n{MINIMAL}");
        assert_eq!(
            parse(&relative).state_dir,
            Path::new("/etc/certd/var/certd")
        );

        // A bare file name has no folder: paths are relative to the working directory.
        let bare = from_toml(MINIMAL, Path::new("certd.toml")).unwrap();
        assert_eq!(bare.state_dir, Path::new("./state"));
    }

    #[test]
    fn absolute_state_dir_is_kept() {
        let text = format!("state_dir = \"/var/lib/certd\"\n{MINIMAL}");
        assert_eq!(parse(&text).state_dir, Path::new("/var/lib/certd"));
    }

    #[test]
    fn optional_keys() {
        let text = r#"[acme]
directory = "https://localhost:14000/dir"
email = "mailto:Ops@Example.org"
agree_tos = true
key_type = "rsa4096"
concurrency = 64
[http]
listen = ["[::]:80", "127.0.0.1:5002"]
[renewal]
remaining_fraction = 0.5
[[site]]
names = ["WWW.Example.ORG"]
[[site]]
names = ["a.test", "b.test"]
"#;
        let config = parse(text);
        assert_eq!(config.acme.directory_url, "https://localhost:14000/dir");
        assert_eq!(config.acme.email.as_deref(), Some("Ops@Example.org"));
        assert_eq!(config.acme.key_type, KeyType::Rsa4096);
        assert_eq!(config.acme.concurrency, 64);
        assert_eq!(
            config.http.listen,
            vec![
                "[::]:80".parse::<SocketAddr>().unwrap(),
                "127.0.0.1:5002".parse().unwrap()
            ]
        );
        assert!((config.renewal.remaining_fraction - 0.5).abs() < f64::EPSILON);
        let names: Vec<&str> = config.sites.iter().map(SiteConfig::name).collect();
        assert_eq!(names, ["www.example.org", "a.test"]);
    }

    #[test]
    fn directory_shorthands_and_urls() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("letsencrypt", Ok(LETSENCRYPT_PRODUCTION)),
            ("letsencrypt-staging", Ok(LETSENCRYPT_STAGING)),
            ("https://acme.example/dir", Ok("https://acme.example/dir")),
            ("https://[::1]:14000/dir", Ok("https://[::1]:14000/dir")),
            ("http://acme.example/dir", Err("not an https:// URL")),
            ("letsencrypt-prod", Err("not a directory")),
            ("https:///dir", Err("has no host")),
            ("https://", Err("has no host")),
            ("https://acme.example:https/dir", Err("invalid port")),
            ("https://user@acme.example/dir", Err("user name")),
            ("https://acme example/dir", Err("whitespace")),
        ];
        for (input, expected) in cases {
            let result = directory_url(input);
            match expected {
                Ok(url) => assert_eq!(result.as_deref(), Ok(*url), "{input:?}"),
                Err(fragment) => {
                    let reason = result.expect_err(input);
                    assert!(reason.contains(fragment), "{input:?}: {reason:?}");
                }
            }
        }
    }

    #[test]
    fn email_addresses() {
        assert_eq!(email_address("ops@example.org").unwrap(), "ops@example.org");
        assert_eq!(
            email_address("mailto:ops@example.org").unwrap(),
            "ops@example.org"
        );
        for bad in [
            "",
            "ops",
            "@example.org",
            "ops@",
            "a@b@c",
            "ops @example.org",
            "mailto:",
        ] {
            assert!(email_address(bad).is_err(), "{bad:?} was accepted");
        }
        let text = MINIMAL.replace("agree_tos", "email = \"ops at example.org\"\nagree_tos");
        assert_problem(
            &text,
            "acme.email",
            Some(3),
            "does not look like an e-mail address",
        );
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let top = format!("{MINIMAL}colour = \"blue\"\n");
        // After [[site]], a bare key belongs to that site.
        assert_problem(&top, "site[0].colour", Some(6), "unknown field `colour`");
        let top = format!("colour = \"blue\"\n{MINIMAL}");
        assert_problem(&top, "colour", Some(1), "unknown field `colour`");

        let acme = MINIMAL.replace("agree_tos = true", "agree_tos = true\nagree = true");
        assert_problem(&acme, "acme.agree", Some(4), "unknown field `agree`");

        let site = format!("{MINIMAL}[[site]]\nnames = [\"b.test\"]\nroot = \"/srv\"\n");
        assert_problem(&site, "site[1].root", Some(8), "unknown field `root`");

        let table = format!("{MINIMAL}[tls]\ncert = \"x\"\n");
        assert_problem(&table, "tls", Some(6), "unknown field `tls`");
    }

    #[test]
    fn wrong_types_are_named() {
        let text = MINIMAL.replace("agree_tos = true", "agree_tos = \"yes\"");
        assert_problem(&text, "acme.agree_tos", Some(3), "expected a boolean");
        let text = MINIMAL.replace("names = [\"example.org\"]", "names = [\"a.test\", 7]");
        assert_problem(&text, "site[0].names[1]", Some(5), "expected a string");
        let text = MINIMAL.replace("[[site]]", "[site]");
        assert_problem(&text, "site", Some(4), "expected a sequence");
    }

    #[test]
    fn syntax_errors_have_lines() {
        let text = MINIMAL.replace("agree_tos = true", "agree_tos = tru");
        assert_problem(&text, "", Some(3), "invalid boolean");

        let text = MINIMAL
            .replace("agree_tos = true", "agree_tos = tru")
            .replace("names = [\"example.org\"]", "names = [\"example.org\"");
        let found = problems(&text);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert_eq!(found[0].line, Some(3));
        assert_eq!(found[1].line, Some(5));

        let text = format!("{MINIMAL}[acme]\nemail = \"ops@example.org\"\n");
        let found = problems(&text);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].line, Some(6), "{found:#?}");
        assert!(found[0].reason.contains("duplicate"), "{found:#?}");
    }

    #[test]
    fn missing_file_names_the_file() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("missing.toml");
        let err = load(&path).unwrap_err();
        assert_eq!(err.file, path);
        assert_eq!(err.problems.len(), 1);
        assert!(err.problems[0].reason.contains("cannot read the file"));
        assert!(err.to_string().contains("missing.toml"));
    }

    #[test]
    fn load_reads_a_file() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("certd.toml");
        std::fs::write(&path, MINIMAL).unwrap();
        let config = load(&path).unwrap();
        assert_eq!(config.state_dir, folder.path().join("state"));
    }

    #[test]
    fn bad_host_names() {
        let long_label = format!("{}.example.org", "a".repeat(64));
        let cases: &[(&str, &str)] = &[
            ("a..example.org", "empty label"),
            ("foo_bar.example.org", "underscores are not allowed"),
            ("example.org.", "trailing dot"),
            ("192.0.2.7", "an IP address"),
            ("::1", "an IP address"),
            (&long_label, "at most 63"),
            ("*.example.org", "DNS-01"),
            ("", "empty"),
        ];
        for (name, fragment) in cases {
            let text = MINIMAL.replace(
                "names = [\"example.org\"]",
                &format!("names = [\"example.org\",\n  \"{name}\"]"),
            );
            assert_problem(&text, "site[0].names[1]", Some(6), fragment);
        }
    }

    #[test]
    fn duplicate_names_name_both_places() {
        let text = r#"[acme]
directory = "letsencrypt"
agree_tos = true
[[site]]
names = ["example.org", "www.example.org"]
[[site]]
names = ["other.example"]
[[site]]
names = ["WWW.example.org", "other.example", "x.test", "x.test"]
"#;
        let found = problems(text);
        assert_eq!(found.len(), 3, "{found:#?}");
        assert_eq!(found[0].key, "site[2].names[0]");
        assert_eq!(found[0].line, Some(9));
        assert_eq!(
            found[0].reason,
            "\"www.example.org\" is already used by site[0] (example.org)"
        );
        assert_eq!(found[1].key, "site[2].names[1]");
        assert!(found[1].reason.contains("site[1] (other.example)"));
        assert_eq!(found[2].key, "site[2].names[3]");
        assert!(found[2]
            .reason
            .contains("listed twice in this site (also site[2].names[2])"));
    }

    #[test]
    fn terms_of_service_must_be_agreed() {
        let missing = MINIMAL.replace("agree_tos = true\n", "");
        assert_problem(&missing, "acme.agree_tos", Some(1), "agree_tos = true");
        let refused = MINIMAL.replace("agree_tos = true", "agree_tos = false");
        assert_problem(&refused, "acme.agree_tos", Some(3), "agree_tos = true");
    }

    #[test]
    fn acme_table_and_directory_are_required() {
        assert_problem("[[site]]\nnames = [\"a.test\"]\n", "acme", None, "[acme]");
        let text = MINIMAL.replace("directory = \"letsencrypt\"\n", "");
        assert_problem(&text, "acme.directory", Some(1), "missing");
        let text = MINIMAL.replace("\"letsencrypt\"", "\"http://localhost:14000/dir\"");
        assert_problem(&text, "acme.directory", Some(2), "https://");
    }

    #[test]
    fn bad_key_type_lists_the_allowed_ones() {
        let text = MINIMAL.replace(
            "agree_tos = true",
            "agree_tos = true\nkey_type = \"ed25519\"",
        );
        assert_problem(
            &text,
            "acme.key_type",
            Some(4),
            "`ecdsa-p256`, `ecdsa-p384`, `rsa2048`, `rsa4096`",
        );
    }

    #[test]
    fn ranges_are_checked() {
        for bad in ["0", "65", "-1"] {
            let text = MINIMAL.replace(
                "agree_tos = true",
                &format!("agree_tos = true\nconcurrency = {bad}"),
            );
            assert_problem(&text, "acme.concurrency", Some(4), "between 1 and 64");
        }
        for bad in ["0.0", "1.0", "1", "-0.5", "nan"] {
            let text = format!("{MINIMAL}[renewal]\nremaining_fraction = {bad}\n");
            assert_problem(&text, "renewal.remaining_fraction", Some(7), "less than 1");
        }
    }

    #[test]
    fn ca_roots_must_exist() {
        let text = MINIMAL.replace(
            "agree_tos = true",
            "agree_tos = true\nca_roots = \"no-such-root.pem\"",
        );
        assert_problem(
            &text,
            "acme.ca_roots",
            Some(4),
            "/etc/certd/no-such-root.pem",
        );
    }

    #[test]
    fn bad_listen_addresses() {
        let text = format!("{MINIMAL}[http]\nlisten = [\"0.0.0.0:80\", \"localhost:80\"]\n");
        assert_problem(
            &text,
            "http.listen[1]",
            Some(7),
            "not an IP address with a port",
        );
        let text = format!("{MINIMAL}[http]\nlisten = [\"0.0.0.0\"]\n");
        assert_problem(&text, "http.listen[0]", Some(7), "\"[::]:80\"");
        let text = format!("{MINIMAL}[http]\nlisten = []\n");
        assert_problem(&text, "http.listen", Some(7), "is empty");
        let text = format!("{MINIMAL}[http]\nlisten = [\"[::]:80\", \"[::]:80\"]\n");
        assert_problem(&text, "http.listen[1]", Some(7), "listed twice");
    }

    #[test]
    fn sites_are_required_and_need_names() {
        let text = "[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n";
        assert_problem(text, "site", None, "no [[site]] tables");
        let text = MINIMAL.replace("names = [\"example.org\"]", "names = []");
        assert_problem(&text, "site[0].names", Some(5), "is empty");
        let text = MINIMAL.replace("names = [\"example.org\"]", "");
        assert_problem(&text, "site[0].names", Some(4), "missing");
    }

    #[test]
    fn every_problem_is_reported_in_file_order() {
        let text = r#"state_dir = ""
[acme]
directory = "ftp://ca.example"
agree_tos = false
key_type = "dsa"
[http]
listen = ["nowhere"]
[[site]]
names = ["ok.example", "bad_name.example", "ok.example"]
[[site]]
names = []
"#;
        let err = from_toml(text, Path::new("certd.toml")).unwrap_err();
        let found: Vec<(&str, Option<usize>)> = err
            .problems
            .iter()
            .map(|p| (p.key.as_str(), p.line))
            .collect();
        assert_eq!(
            found,
            [
                ("state_dir", Some(1)),
                ("acme.directory", Some(3)),
                ("acme.agree_tos", Some(4)),
                ("acme.key_type", Some(5)),
                ("http.listen[0]", Some(7)),
                ("site[0].names[1]", Some(9)),
                ("site[0].names[2]", Some(9)),
                ("site[1].names", Some(11)),
            ]
        );
        let shown = err.to_string();
        assert!(shown.starts_with("certd.toml: 8 problems in the configuration\n"));
        assert!(
            shown.contains("\n  certd.toml:9: site[0].names[1]: \"bad_name.example\": underscores"),
            "{shown}"
        );
    }

    #[test]
    fn key_paths_are_quoted_when_not_bare() {
        let text = format!("\"odd key\" = 1\n{MINIMAL}");
        assert_problem(&text, "\"odd key\"", Some(1), "unknown field");
    }
}
