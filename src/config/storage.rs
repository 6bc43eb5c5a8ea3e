//! The `[storage]` table: where certd keeps its state. `backend = "filesystem"` (the default, the
//! state directory) or `"postgres"` (a fleet's shared database, `crate::storage::postgres`).
//!
//! Only what can be checked without the network is checked here (the URL parses, files exist, modes
//! and names are known); the password and the sealing key are read when the store is opened, so a
//! secret never sits in the parsed config.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use toml::Spanned;

use super::problems::Problems;

/// Where certd keeps its state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StorageConfig {
    /// The state directory (`state_dir`).
    #[default]
    Filesystem,
    /// A PostgreSQL database shared by a fleet of nodes.
    Postgres(PostgresConfig),
}

/// `[storage] backend = "postgres"`.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// The connection string (`postgres://user@host:port/db` or libpq `key=value` form), without
    /// `sslmode` (that is [`Self::sslmode`]).
    pub url: String,
    /// A file holding the password (its trailing newline ignored); when absent, the environment
    /// variable [`PASSWORD_ENV`], when set.
    pub password_file: Option<PathBuf>,
    /// How the connection is encrypted.
    pub sslmode: SslMode,
    /// PEM roots the server's certificate must chain to (`sslmode = "verify-full"` only).
    pub ca_roots: Option<PathBuf>,
    /// This node's name in leases and installs (default: the machine's hostname).
    pub node_name: String,
    /// The fleet's 32-byte sealing key (mode 0600).
    pub key_file: PathBuf,
    /// How long a site's lease lasts unless renewed (`lease`, default
    /// [`DEFAULT_LEASE_SECONDS`]): how soon another node takes over from one that died or
    /// was paused mid-renewal.
    pub lease_seconds: u32,
    /// How often the daemon compares the live versions with what it serves, for changes whose
    /// notification it missed (`poll`, default 60 s).
    pub poll: std::time::Duration,
    /// Whether the daemon LISTENs for the fleet's change notifications (`notify`, default true);
    /// false leaves it to the poll.
    pub notify: bool,
}

impl std::fmt::Debug for PostgresConfig {
    // The URL may carry a password: never in a debug log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &"..")
            .field("password_file", &self.password_file)
            .field("sslmode", &self.sslmode)
            .field("ca_roots", &self.ca_roots)
            .field("node_name", &self.node_name)
            .field("key_file", &self.key_file)
            .field("lease_seconds", &self.lease_seconds)
            .field("poll", &self.poll)
            .field("notify", &self.notify)
            .finish()
    }
}

/// The environment variable holding the database password when `password_file` is not set.
pub const PASSWORD_ENV: &str = "CERTD_STORAGE_PASSWORD";

/// libpq's `sslmode`, the subset certd implements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, plain otherwise; the certificate is not verified (libpq's
    /// default and meaning).
    #[default]
    Prefer,
    /// TLS or nothing; the certificate is not verified (as in libpq).
    Require,
    /// TLS, the certificate chains to `ca_roots` and names the host.
    VerifyFull,
}

const SSLMODES: [(&str, SslMode); 4] = [
    ("disable", SslMode::Disable),
    ("prefer", SslMode::Prefer),
    ("require", SslMode::Require),
    ("verify-full", SslMode::VerifyFull),
];

/// `[storage]` as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStorage {
    backend: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    sslmode: Option<Spanned<String>>,
    ca_roots: Option<Spanned<String>>,
    node_name: Option<Spanned<String>>,
    key_file: Option<Spanned<String>>,
    lease: Option<Spanned<super::raw::RawDuration>>,
    poll: Option<Spanned<super::raw::RawDuration>>,
    notify: Option<Spanned<bool>>,
}

/// How long a site's lease lasts before it must be renewed unless `lease` says otherwise (a paused
/// node loses it after this). Here, not in `storage`, so that the config does not depend on the
/// store it configures.
pub const DEFAULT_LEASE_SECONDS: u32 = 60;

/// The default `[storage] poll`.
pub const DEFAULT_POLL: std::time::Duration = std::time::Duration::from_secs(60);
/// `poll` bounds: more often than every second is load on the database for nothing, less often
/// than hourly leaves a missed change unserved too long.
const POLL_BOUNDS: (std::time::Duration, std::time::Duration) = (
    std::time::Duration::from_secs(1),
    std::time::Duration::from_secs(3600),
);

/// Longest `node_name` (it is stored in every lease and install).
const NODE_NAME_MAX: usize = 64;

pub(super) fn storage(
    raw: Option<Spanned<RawStorage>>,
    folder: &Path,
    problems: &mut Problems<'_>,
) -> StorageConfig {
    let Some(raw) = raw else {
        return StorageConfig::Filesystem;
    };
    let span = raw.span();
    let raw = raw.into_inner();
    let backend = raw.backend.as_ref().map(|b| b.get_ref().as_str());
    match backend {
        None | Some("filesystem") => {
            for (key, value) in [
                ("url", &raw.url),
                ("password_file", &raw.password_file),
                ("sslmode", &raw.sslmode),
                ("ca_roots", &raw.ca_roots),
                ("node_name", &raw.node_name),
                ("key_file", &raw.key_file),
            ]
            .into_iter()
            .filter_map(|(key, value)| Some((key, value.as_ref()?.span())))
            .chain(raw.lease.as_ref().map(|lease| ("lease", lease.span())))
            {
                problems.add(
                    format!("storage.{key}"),
                    Some(value),
                    "only used with backend = \"postgres\"; the filesystem backend keeps \
                     everything in state_dir",
                );
            }
            for (key, span) in [
                ("poll", raw.poll.as_ref().map(Spanned::span)),
                ("notify", raw.notify.as_ref().map(Spanned::span)),
            ] {
                if let Some(span) = span {
                    problems.add(
                        format!("storage.{key}"),
                        Some(span),
                        "only used with backend = \"postgres\" (it is how a node hears of \
                         another node's certificates)",
                    );
                }
            }
            StorageConfig::Filesystem
        }
        Some("postgres") => postgres(raw, span, folder, problems),
        Some(other) => {
            problems.add(
                "storage.backend",
                raw.backend.as_ref().map(Spanned::span),
                format!("`{other}` is not a storage backend: use \"filesystem\" or \"postgres\""),
            );
            StorageConfig::Filesystem
        }
    }
}

fn postgres(
    raw: RawStorage,
    span: std::ops::Range<usize>,
    folder: &Path,
    problems: &mut Problems<'_>,
) -> StorageConfig {
    let mut config = PostgresConfig {
        url: String::new(),
        password_file: None,
        sslmode: SslMode::default(),
        ca_roots: None,
        node_name: String::new(),
        key_file: PathBuf::new(),
        lease_seconds: DEFAULT_LEASE_SECONDS,
        poll: DEFAULT_POLL,
        notify: raw.notify.as_ref().is_none_or(|notify| *notify.get_ref()),
    };
    if let Some(lease) = &raw.lease {
        match lease_seconds(lease.get_ref()) {
            Ok(seconds) => config.lease_seconds = seconds,
            Err(reason) => problems.add("storage.lease", Some(lease.span()), reason),
        }
    }
    if let Some(poll) = &raw.poll {
        match super::serving::parse_duration(poll.get_ref()) {
            Ok(every) if (POLL_BOUNDS.0..=POLL_BOUNDS.1).contains(&every) => config.poll = every,
            Ok(_) => problems.add(
                "storage.poll",
                Some(poll.span()),
                "must be from \"1s\" to \"1h\"",
            ),
            Err(reason) => problems.add("storage.poll", Some(poll.span()), reason),
        }
    }
    match raw.url {
        None => problems.add(
            "storage.url",
            Some(span.clone()),
            "backend = \"postgres\" needs url, such as \"postgres://certd@db.internal/certd\"",
        ),
        Some(url) => {
            if let Err(err) = tokio_postgres::Config::from_str(url.get_ref()) {
                problems.add(
                    "storage.url",
                    Some(url.span()),
                    format!("is not a PostgreSQL connection string: {err}"),
                );
            } else if url.get_ref().contains("sslmode") {
                problems.add(
                    "storage.url",
                    Some(url.span()),
                    "sets sslmode: set it with the [storage] sslmode key instead (one place, \
                     checked)",
                );
            }
            config.url = url.into_inner();
        }
    }
    if let Some(file) = raw.password_file {
        let path = folder.join(file.get_ref());
        if !path.is_file() {
            problems.add(
                "storage.password_file",
                Some(file.span()),
                format!("{} is not a readable file", path.display()),
            );
        }
        config.password_file = Some(path);
    }
    if let Some(mode) = raw.sslmode {
        match SSLMODES.iter().find(|(name, _)| name == mode.get_ref()) {
            Some((_, known)) => config.sslmode = *known,
            None => problems.add(
                "storage.sslmode",
                Some(mode.span()),
                format!(
                    "`{}` is not supported: use \"disable\", \"prefer\" (the default), \
                     \"require\" or \"verify-full\" (verify-ca, allow are not implemented)",
                    mode.get_ref()
                ),
            ),
        }
    }
    match (raw.ca_roots, config.sslmode) {
        (Some(roots), SslMode::VerifyFull) => {
            let path = folder.join(roots.get_ref());
            if let Err(reason) = super::validate::check_pem_file(&path) {
                problems.add("storage.ca_roots", Some(roots.span()), reason);
            }
            config.ca_roots = Some(path);
        }
        (Some(roots), _) => problems.add(
            "storage.ca_roots",
            Some(roots.span()),
            "only used with sslmode = \"verify-full\" (the other modes do not verify the server)",
        ),
        (None, SslMode::VerifyFull) => problems.add(
            "storage.ca_roots",
            Some(span.clone()),
            "sslmode = \"verify-full\" needs ca_roots: the PEM file of the roots the database \
             server's certificate chains to",
        ),
        (None, _) => {}
    }
    match raw.node_name {
        Some(name) => {
            let value = name.get_ref();
            if value.is_empty()
                || value.len() > NODE_NAME_MAX
                || !value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            {
                problems.add(
                    "storage.node_name",
                    Some(name.span()),
                    format!(
                        "must be 1 to {NODE_NAME_MAX} letters, digits, `-`, `.` or `_` (it names \
                         this node in leases and installs)"
                    ),
                );
            }
            config.node_name = name.into_inner();
        }
        None => match system_hostname() {
            Some(name) => config.node_name = name,
            None => problems.add(
                "storage.node_name",
                Some(span.clone()),
                "the machine's hostname cannot be read: set node_name",
            ),
        },
    }
    match raw.key_file {
        Some(file) => config.key_file = folder.join(file.get_ref()),
        None => problems.add(
            "storage.key_file",
            Some(span),
            "backend = \"postgres\" needs key_file: the fleet's 32-byte key (mode 0600) that \
             private keys and ACME accounts are encrypted with (make one with `head -c 32 \
             /dev/urandom > key`)",
        ),
    }
    StorageConfig::Postgres(config)
}

impl StorageConfig {
    /// How long a site's lease lasts: `[storage] lease`, or the default.
    pub fn lease_seconds(&self) -> u32 {
        match self {
            Self::Postgres(pg) => pg.lease_seconds,
            Self::Filesystem => DEFAULT_LEASE_SECONDS,
        }
    }
}

/// The shortest `lease`: the holder renews it every third of its length, and a database round trip
/// or a busy moment must not lose it.
pub const LEASE_MIN_SECONDS: u32 = 3;
/// The longest `lease`: how long a dead node may keep a site from being renewed.
pub const LEASE_MAX_SECONDS: u32 = 3600;

/// `lease` in whole seconds, within [`LEASE_MIN_SECONDS`]..=[`LEASE_MAX_SECONDS`].
fn lease_seconds(raw: &super::raw::RawDuration) -> Result<u32, String> {
    let parsed = super::serving::parse_duration(raw)?;
    let seconds = u32::try_from(parsed.as_secs()).unwrap_or(u32::MAX);
    if parsed.subsec_nanos() != 0 || !(LEASE_MIN_SECONDS..=LEASE_MAX_SECONDS).contains(&seconds) {
        return Err(format!(
            "must be whole seconds from {LEASE_MIN_SECONDS}s to {}h (how long a node that died \
             mid-renewal keeps the site's lease)",
            LEASE_MAX_SECONDS / 3600
        ));
    }
    Ok(seconds)
}

/// The machine's hostname, as the kernel reports it.
fn system_hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty() && name.len() <= NODE_NAME_MAX).then(|| name.to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::from_toml;
    use super::*;

    const BASE: &str = "[acme]\ndirectory = \"https://127.0.0.1:14000/dir\"\nagree_tos = true\n\n[[site]]\nnames = [\"a.test\"]\n";

    fn problems(storage: &str) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("{BASE}{storage}");
        match from_toml(&text, &dir.path().join("certd.toml")) {
            Ok(_) => Vec::new(),
            Err(err) => err
                .problems
                .iter()
                .map(|p| format!("{}: {}", p.key, p.reason))
                .collect(),
        }
    }

    #[test]
    fn the_default_is_the_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let config = from_toml(BASE, &dir.path().join("certd.toml")).unwrap();
        assert_eq!(config.storage, StorageConfig::Filesystem);
    }

    #[test]
    fn postgres_is_read_with_its_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "{BASE}[storage]\nbackend = \"postgres\"\nurl = \"postgres://certd@127.0.0.1:5432/certd\"\nkey_file = \"fleet.key\"\nnode_name = \"node-a\"\n"
        );
        let config = from_toml(&text, &dir.path().join("certd.toml")).unwrap();
        let StorageConfig::Postgres(pg) = config.storage else {
            panic!("not postgres");
        };
        assert_eq!(pg.sslmode, SslMode::Prefer);
        assert_eq!(pg.node_name, "node-a");
        assert_eq!(pg.key_file, dir.path().join("fleet.key"));
        assert_eq!(pg.lease_seconds, DEFAULT_LEASE_SECONDS);
        assert_eq!(pg.poll, DEFAULT_POLL);
        assert!(pg.notify);
        assert!(!format!("{pg:?}").contains("127.0.0.1"));
    }

    #[test]
    fn poll_and_notify_are_read_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let base = "[storage]\nbackend = \"postgres\"\nurl = \"postgres://certd@127.0.0.1/certd\"\nkey_file = \"k\"\nnode_name = \"n\"\n";
        let text = format!("{BASE}{base}poll = \"2s\"\nnotify = false\n");
        let config = from_toml(&text, &dir.path().join("certd.toml")).unwrap();
        let StorageConfig::Postgres(pg) = config.storage else {
            panic!("not postgres");
        };
        assert_eq!(pg.poll, std::time::Duration::from_secs(2));
        assert!(!pg.notify);
        for (poll, why) in [
            ("\"500ms\"", "must be from"),
            ("\"2h\"", "must be from"),
            ("\"soon\"", "soon"),
        ] {
            let found = problems(&format!("{base}poll = {poll}\n"));
            assert!(
                found
                    .iter()
                    .any(|p| p.starts_with("storage.poll:") && p.contains(why)),
                "{poll}: {found:?}"
            );
        }
        let found = problems("[storage]\npoll = \"5s\"\nnotify = false\n");
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("storage.poll: only used")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("storage.notify: only used")),
            "{found:?}"
        );
    }

    #[test]
    fn postgres_needs_url_and_key_file_and_refuses_what_it_cannot_do() {
        let found = problems("[storage]\nbackend = \"postgres\"\n");
        assert!(
            found.iter().any(|p| p.starts_with("storage.url:")),
            "{found:?}"
        );
        assert!(
            found.iter().any(|p| p.starts_with("storage.key_file:")),
            "{found:?}"
        );

        let found = problems(
            "[storage]\nbackend = \"postgres\"\nurl = \"postgres://h/db?sslmode=disable\"\nkey_file = \"k\"\nsslmode = \"verify-ca\"\n",
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("storage.url: sets sslmode")),
            "{found:?}"
        );
        assert!(
            found.iter().any(|p| p.starts_with("storage.sslmode:")),
            "{found:?}"
        );

        let found = problems(
            "[storage]\nbackend = \"postgres\"\nurl = \"postgres://h/db\"\nkey_file = \"k\"\nsslmode = \"verify-full\"\n",
        );
        assert!(
            found.iter().any(|p| p.starts_with("storage.ca_roots:")),
            "{found:?}"
        );
    }

    #[test]
    fn unknown_keys_backends_and_misplaced_keys_are_refused() {
        assert!(!problems("[storage]\nbackend = \"etcd\"\n").is_empty());
        assert!(!problems("[storage]\nbackend = \"postgres\"\nusername = \"x\"\n").is_empty());
        let found = problems("[storage]\nurl = \"postgres://h/db\"\n");
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("storage.url: only used")),
            "{found:?}"
        );
    }

    #[test]
    fn the_lease_length_is_bounded() {
        let pg = "[storage]\nbackend = \"postgres\"\nurl = \"postgres://certd@127.0.0.1/certd\"\nkey_file = \"k\"\nnode_name = \"a\"\n";
        for bad in ["\"1s\"", "\"2h\"", "\"1500ms\""] {
            let found = problems(&format!("{pg}lease = {bad}\n"));
            assert!(
                found
                    .iter()
                    .any(|p| p.contains("storage.lease") && p.contains("3s")),
                "{bad}: {found:?}"
            );
        }
        assert!(problems(&format!("{pg}lease = \"5s\"\n")).is_empty());
        let found = problems("[storage]\nlease = \"5s\"\n");
        assert!(
            found
                .iter()
                .any(|p| p.contains("storage.lease") && p.contains("only used")),
            "{found:?}"
        );
    }
}
