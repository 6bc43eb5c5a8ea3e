//! How certd publishes DNS-01 TXT records: `[acme.dns]` / `dns_hook` for every site, or a site's own
//! `[site.dns]` / `dns_hook`, validated into a [`DnsConfig`].
//!
//! Two methods, exactly one per scope: RFC 2136 dynamic update signed with TSIG (`server`, `zone`,
//! `tsig_key`, `tsig_algorithm`, `tsig_secret_file`), or an exec hook (`dns_hook = "/path"`, called
//! `hook add|remove <record-name> <value>`). The remaining keys say how certd waits for the record to
//! reach every authoritative server: `resolver` (else `[preflight] resolver`, else the system's),
//! `nameserver_port` (the port the authoritative servers are asked on) and `propagation_timeout`.
//!
//! The TSIG secret is read from a file that only its owner may read (mode 0600 or stricter), either the
//! bare base64 secret or a BIND key file as `tsig-keygen` writes it; it is checked here and read again
//! at each use, so a rotated key needs no restart and no secret is kept in the `Config`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use toml::Spanned;
use zeroize::Zeroizing;

use super::problems::Problems;
use super::raw::RawDuration;
use crate::hostname;

/// How long certd waits, by default, for every authoritative server to answer the TXT record.
pub const DEFAULT_PROPAGATION_TIMEOUT: Duration = Duration::from_secs(120);
/// The longest `propagation_timeout` allowed (an order's authorizations stay pending meanwhile).
const MAX_PROPAGATION_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long the exec hook may run, by default, before it is killed.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest `hook_timeout` allowed.
const MAX_HOOK_TIMEOUT: Duration = Duration::from_secs(600);
/// The largest TSIG secret file read (a BIND key file is well under 1 KiB).
const MAX_SECRET_FILE: u64 = 16 * 1024;

/// `[acme.dns]` or `[site.dns]` as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDns {
    pub(super) server: Option<Spanned<String>>,
    pub(super) zone: Option<Spanned<String>>,
    pub(super) tsig_key: Option<Spanned<String>>,
    pub(super) tsig_algorithm: Option<Spanned<String>>,
    pub(super) tsig_secret_file: Option<Spanned<String>>,
    pub(super) resolver: Option<Spanned<String>>,
    pub(super) nameserver_port: Option<Spanned<i64>>,
    pub(super) propagation_timeout: Option<Spanned<RawDuration>>,
    pub(super) hook_timeout: Option<Spanned<RawDuration>>,
}

/// A validated DNS-01 setup: how records are published and how certd waits for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// How the TXT records are added and removed.
    pub method: DnsMethod,
    /// `resolver`: where NS, SOA and CNAME lookups go; `None` = `[preflight] resolver`, else the
    /// system's nameservers.
    pub resolver: Option<SocketAddr>,
    /// `nameserver_port`: the port the zone's authoritative servers are asked on (default 53).
    pub nameserver_port: u16,
    /// `propagation_timeout`: how long every authoritative server gets to answer the new value.
    pub propagation_timeout: Duration,
}

/// How TXT records are published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsMethod {
    /// RFC 2136 dynamic update with TSIG to the zone's primary.
    Rfc2136(Rfc2136Config),
    /// `dns_hook`: a program run as `program add|remove <record-name> <value>`.
    Hook {
        /// The program (resolved against the config folder).
        program: PathBuf,
        /// How long one call may take before it is killed.
        timeout: Duration,
    },
}

/// `server`, `zone` and the TSIG key of an RFC 2136 setup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rfc2136Config {
    /// The primary that accepts updates (`address:port`, port 53 when left out).
    pub server: SocketAddr,
    /// The zone updated, lower-case without the trailing dot; `None` = found with an SOA lookup.
    pub zone: Option<String>,
    /// The TSIG key's name, as the server knows it.
    pub key_name: String,
    /// The TSIG MAC algorithm.
    pub algorithm: TsigAlgorithm,
    /// The file holding the secret (0600 or stricter).
    pub secret_file: PathBuf,
}

/// The TSIG algorithms certd signs with (RFC 8945 §6: SHA-256 is mandatory to implement).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsigAlgorithm {
    /// `hmac-sha256` (the default).
    HmacSha256,
    /// `hmac-sha384`.
    HmacSha384,
    /// `hmac-sha512`.
    HmacSha512,
}

impl TsigAlgorithm {
    const ALL: [(Self, &'static str); 3] = [
        (Self::HmacSha256, "hmac-sha256"),
        (Self::HmacSha384, "hmac-sha384"),
        (Self::HmacSha512, "hmac-sha512"),
    ];

    /// The algorithm's name as BIND and RFC 8945 spell it.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(known, _)| *known == self)
            .map_or("hmac-sha256", |(_, name)| name)
    }
}

/// The DNS-01 setup of one scope (`acme` or `site[i]`), or `None` when it configures none.
pub(super) fn dns(
    scope: &str,
    table: Option<Spanned<RawDns>>,
    hook: Option<Spanned<String>>,
    folder: &Path,
    problems: &mut Problems<'_>,
) -> Option<DnsConfig> {
    if table.is_none() && hook.is_none() {
        return None;
    }
    let (span, raw) = match table {
        Some(table) => {
            let span = table.span();
            (Some(span), table.into_inner())
        }
        None => (
            hook.as_ref().map(Spanned::span),
            RawDns {
                server: None,
                zone: None,
                tsig_key: None,
                tsig_algorithm: None,
                tsig_secret_file: None,
                resolver: None,
                nameserver_port: None,
                propagation_timeout: None,
                hook_timeout: None,
            },
        ),
    };
    let key = |name: &str| format!("{scope}.dns.{name}");
    let mut config = DnsConfig {
        method: DnsMethod::Hook {
            program: PathBuf::new(),
            timeout: DEFAULT_HOOK_TIMEOUT,
        },
        resolver: None,
        nameserver_port: 53,
        propagation_timeout: DEFAULT_PROPAGATION_TIMEOUT,
    };

    if let Some(resolver) = raw.resolver {
        match socket_address(resolver.get_ref()) {
            Ok(addr) => config.resolver = Some(addr),
            Err(reason) => problems.add(key("resolver"), Some(resolver.span()), reason),
        }
    }
    if let Some(port) = raw.nameserver_port {
        match u16::try_from(*port.get_ref()) {
            Ok(p) if p > 0 => config.nameserver_port = p,
            _ => problems.add(
                key("nameserver_port"),
                Some(port.span()),
                format!("{} is not a port (1 to 65535)", port.get_ref()),
            ),
        }
    }
    if let Some(timeout) = raw.propagation_timeout {
        match bounded_duration(timeout.get_ref(), MAX_PROPAGATION_TIMEOUT) {
            Ok(value) => config.propagation_timeout = value,
            Err(reason) => problems.add(key("propagation_timeout"), Some(timeout.span()), reason),
        }
    }
    let mut hook_timeout = DEFAULT_HOOK_TIMEOUT;
    let hook_timeout_span = raw.hook_timeout.as_ref().map(Spanned::span);
    if let Some(timeout) = raw.hook_timeout {
        match bounded_duration(timeout.get_ref(), MAX_HOOK_TIMEOUT) {
            Ok(value) => hook_timeout = value,
            Err(reason) => problems.add(key("hook_timeout"), Some(timeout.span()), reason),
        }
    }

    match (raw.server, hook) {
        (Some(_), Some(hook)) => {
            problems.add(
                format!("{scope}.dns_hook"),
                Some(hook.span()),
                format!(
                    "both `dns_hook` and `{scope}.dns.server` are set: DNS-01 records are published \
                     one way, by the hook or by RFC 2136 updates to the server; remove one"
                ),
            );
            None
        }
        (None, Some(hook)) => {
            for (name, present) in [
                ("zone", raw.zone.as_ref().map(Spanned::span)),
                ("tsig_key", raw.tsig_key.as_ref().map(Spanned::span)),
                (
                    "tsig_algorithm",
                    raw.tsig_algorithm.as_ref().map(Spanned::span),
                ),
                (
                    "tsig_secret_file",
                    raw.tsig_secret_file.as_ref().map(Spanned::span),
                ),
            ] {
                if let Some(span) = present {
                    problems.add(
                        key(name),
                        Some(span),
                        "only used for RFC 2136 updates (with `server`); `dns_hook` publishes the \
                         records itself",
                    );
                }
            }
            let program = folder.join(hook.get_ref());
            if let Err(reason) = check_program(&program) {
                problems.add(format!("{scope}.dns_hook"), Some(hook.span()), reason);
            }
            config.method = DnsMethod::Hook {
                program,
                timeout: hook_timeout,
            };
            Some(config)
        }
        (None, None) => {
            problems.add(
                key("server"),
                span,
                format!(
                    "missing: DNS-01 needs a way to publish TXT records: `server` (with `tsig_key` \
                     and `tsig_secret_file`) for RFC 2136 dynamic updates, or `dns_hook = \
                     \"/path/to/program\"` in [{scope}]"
                ),
            );
            None
        }
        (Some(server), None) => {
            if let Some(span) = hook_timeout_span {
                problems.add(key("hook_timeout"), Some(span), "only used with `dns_hook`");
            }
            let server_addr = match socket_address(server.get_ref()) {
                Ok(addr) => Some(addr),
                Err(reason) => {
                    problems.add(key("server"), Some(server.span()), reason);
                    None
                }
            };
            let zone = raw.zone.and_then(|zone| {
                let text = zone.get_ref().trim_end_matches('.');
                match hostname::validate_dns_name(text) {
                    Ok(name) => Some(name),
                    Err(reason) => {
                        problems.add(
                            key("zone"),
                            Some(zone.span()),
                            format!("{:?}: {reason}", zone.get_ref()),
                        );
                        None
                    }
                }
            });
            let key_name = match raw.tsig_key {
                None => {
                    problems.add(
                        key("tsig_key"),
                        span.clone(),
                        "missing: the name of the TSIG key the server accepts updates with \
                         (BIND: the `key \"...\"` name in named.conf)",
                    );
                    None
                }
                Some(name) => match key_name(name.get_ref()) {
                    Ok(valid) => Some(valid),
                    Err(reason) => {
                        problems.add(key("tsig_key"), Some(name.span()), reason);
                        None
                    }
                },
            };
            let mut algorithm = TsigAlgorithm::HmacSha256;
            if let Some(name) = raw.tsig_algorithm {
                let wanted = name
                    .get_ref()
                    .trim()
                    .trim_end_matches('.')
                    .to_ascii_lowercase();
                match TsigAlgorithm::ALL
                    .iter()
                    .find(|(_, known)| *known == wanted)
                {
                    Some((known, _)) => algorithm = *known,
                    None => problems.add(
                        key("tsig_algorithm"),
                        Some(name.span()),
                        format!(
                            "`{}` is not a TSIG algorithm certd signs with; use `hmac-sha256` (the \
                             default), `hmac-sha384` or `hmac-sha512`",
                            name.get_ref()
                        ),
                    ),
                }
            }
            let secret_file = match raw.tsig_secret_file {
                None => {
                    problems.add(
                        key("tsig_secret_file"),
                        span,
                        "missing: a file (mode 0600) holding the TSIG secret, in base64 or as the \
                         key file `tsig-keygen` writes",
                    );
                    None
                }
                Some(file) => {
                    let path = folder.join(file.get_ref());
                    match read_tsig_secret(&path) {
                        Ok(_) => Some(path),
                        Err(reason) => {
                            problems.add(key("tsig_secret_file"), Some(file.span()), reason);
                            None
                        }
                    }
                }
            };
            let (Some(server), Some(key_name), Some(secret_file)) =
                (server_addr, key_name, secret_file)
            else {
                return None;
            };
            config.method = DnsMethod::Rfc2136(Rfc2136Config {
                server,
                zone,
                key_name,
                algorithm,
                secret_file,
            });
            Some(config)
        }
    }
}

/// `192.0.2.1:53`, `[2001:db8::1]:5353`, or a bare address (port 53). Host names are refused: the
/// server must be reachable without first asking DNS.
fn socket_address(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    Err(format!(
        "{text:?} is not an IP address with an optional port (e.g. \"192.0.2.1:53\" or \
         \"[2001:db8::1]:53\"); host names are not accepted here"
    ))
}

/// A TSIG key name: a DNS name (labels may contain `_`, as key names often do), trailing dot optional.
fn key_name(text: &str) -> Result<String, String> {
    let name = text.trim().trim_end_matches('.');
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if valid {
        Ok(name.to_ascii_lowercase())
    } else {
        Err(format!(
            "{text:?} is not a TSIG key name: letters, digits, `-` and `_` in dot-separated labels"
        ))
    }
}

fn bounded_duration(raw: &RawDuration, max: Duration) -> Result<Duration, String> {
    let value = super::serving::parse_duration(raw)?;
    if value.is_zero() {
        return Err("must be longer than zero".to_owned());
    }
    if value > max {
        return Err(format!(
            "is more than the longest allowed, {}s",
            max.as_secs()
        ));
    }
    Ok(value)
}

/// The hook must be an executable file.
fn check_program(path: &Path) -> Result<(), String> {
    let meta =
        std::fs::metadata(path).map_err(|err| format!("cannot use {}: {err}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o111 == 0 {
            return Err(format!(
                "{} is not executable (chmod +x it)",
                path.display()
            ));
        }
    }
    Ok(())
}

/// Reads the TSIG secret at `path`: the file must be readable by its owner only (mode 0600 or
/// stricter) and hold either the bare base64 secret or a BIND key clause (`secret "…";`). The reason
/// on failure names the file.
pub fn read_tsig_secret(path: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|err| format!("cannot read {shown}: {err}"))?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a file"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "{shown} has mode {mode:04o}: a TSIG secret must be readable by its owner only \
                 (chmod 600 {shown})"
            ));
        }
    }
    if meta.len() > MAX_SECRET_FILE {
        return Err(format!(
            "{shown} is {} bytes; a TSIG secret file is at most {MAX_SECRET_FILE}",
            meta.len()
        ));
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path).map_err(|err| format!("cannot read {shown}: {err}"))?,
    );
    parse_tsig_secret(&text).map_err(|reason| format!("{shown}: {reason}"))
}

/// The secret in a secret file's text (see [`read_tsig_secret`]).
fn parse_tsig_secret(text: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    let encoded: Zeroizing<String> = match text.find("secret") {
        Some(at) => {
            let rest = &text[at + "secret".len()..];
            let quoted = rest
                .trim_start()
                .strip_prefix('"')
                .and_then(|inner| inner.split('"').next())
                .ok_or("a key clause whose `secret` is not followed by a quoted value")?;
            Zeroizing::new(quoted.to_owned())
        }
        None => Zeroizing::new(text.split_whitespace().collect()),
    };
    if encoded.is_empty() {
        return Err("no secret in the file".to_owned());
    }
    let secret = base64::engine::general_purpose::STANDARD
        .decode(encoded.as_bytes())
        .map_err(|err| format!("the secret is not base64: {err}"))?;
    if secret.len() < 16 {
        return Err(format!(
            "the secret is {} bytes; use at least 16 (tsig-keygen makes 32)",
            secret.len()
        ));
    }
    Ok(Zeroizing::new(secret))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SECRET: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ=";

    #[test]
    fn secrets_are_read_bare_or_from_a_bind_key_file() {
        let bare = parse_tsig_secret(&format!("  {SECRET}\n")).unwrap();
        let bind = parse_tsig_secret(&format!(
            "key \"certd\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{SECRET}\";\n}};\n"
        ))
        .unwrap();
        assert_eq!(*bare, *bind);
        assert_eq!(&bare[..6], b"secret");
        assert!(parse_tsig_secret("not base64!").is_err());
        assert!(parse_tsig_secret("c2hvcnQ=")
            .unwrap_err()
            .contains("at least 16"));
        assert!(parse_tsig_secret("").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn a_secret_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tsig.key");
        std::fs::write(&path, SECRET).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_tsig_secret(&path).unwrap_err();
        assert!(
            err.contains("mode 0644") && err.contains("chmod 600"),
            "{err}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read_tsig_secret(&path).is_ok());
    }

    #[test]
    fn addresses_take_port_53_unless_given() {
        assert_eq!(
            socket_address("192.0.2.1").unwrap(),
            "192.0.2.1:53".parse().unwrap()
        );
        assert_eq!(
            socket_address("[::1]:5353").unwrap(),
            "[::1]:5353".parse().unwrap()
        );
        assert!(socket_address("ns1.example.org").is_err());
    }

    #[test]
    fn key_names_allow_underscores_and_drop_the_trailing_dot() {
        assert_eq!(key_name("Certd_Key.").unwrap(), "certd_key");
        assert!(key_name("bad key").is_err());
        assert!(key_name("").is_err());
    }

    fn load(dir: &Path, body: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
        let text =
            format!("[acme]\ndirectory = \"https://ca.example/dir\"\nagree_tos = true\n{body}");
        crate::config::from_toml(&text, &dir.join("certd.toml"))
    }

    fn problems(dir: &Path, body: &str) -> Vec<(String, String)> {
        load(dir, body)
            .unwrap_err()
            .problems
            .into_iter()
            .map(|p| (p.key, p.reason))
            .collect()
    }

    #[cfg(unix)]
    fn secret_file(dir: &Path) {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("tsig.key");
        std::fs::write(&path, SECRET).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn sites_inherit_the_acme_method_and_the_preflight_resolver() {
        let dir = tempfile::tempdir().unwrap();
        secret_file(dir.path());
        let config = load(
            dir.path(),
            "[acme.dns]\nserver = \"192.0.2.1\"\ntsig_key = \"certd.\"\n\
             tsig_secret_file = \"tsig.key\"\ntsig_algorithm = \"hmac-sha512\"\n\
             [preflight]\nresolver = \"127.0.0.1:5353\"\n\
             [[site]]\nnames = [\"example.org\", \"*.example.org\"]\nchallenge = \"dns-01\"\n",
        )
        .unwrap();
        let dns = config.sites[0].dns.as_ref().unwrap();
        assert_eq!(dns.resolver, Some("127.0.0.1:5353".parse().unwrap()));
        assert_eq!(dns.propagation_timeout, DEFAULT_PROPAGATION_TIMEOUT);
        let DnsMethod::Rfc2136(rfc2136) = &dns.method else {
            panic!("{dns:?}");
        };
        assert_eq!(rfc2136.server, "192.0.2.1:53".parse().unwrap());
        assert_eq!(rfc2136.key_name, "certd");
        assert_eq!(rfc2136.algorithm, TsigAlgorithm::HmacSha512);
        assert_eq!(rfc2136.zone, None);
    }

    #[test]
    fn dns01_without_a_method_is_refused_with_what_to_set() {
        let dir = tempfile::tempdir().unwrap();
        let found = problems(
            dir.path(),
            "[[site]]\nnames = [\"*.example.org\"]\nchallenge = \"dns-01\"\n",
        );
        assert!(
            found.iter().any(|(key, reason)| key == "site[0].challenge"
                && reason.contains("needs a DNS method")
                && reason.contains("dns_hook")),
            "{found:?}"
        );
    }

    #[test]
    fn a_hook_and_a_server_together_or_half_a_tsig_setup_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let hook = dir.path().join("hook");
        std::fs::write(&hook, "#!/bin/sh\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let found = problems(
            dir.path(),
            "dns_hook = \"hook\"\n[acme.dns]\nserver = \"192.0.2.1:53\"\n\
             [[site]]\nnames = [\"a.example.org\"]\n\
             [site.dns]\nserver = \"192.0.2.1:53\"\nnameserver_port = 0\n",
        );
        let has = |key: &str, text: &str| {
            found
                .iter()
                .any(|(k, reason)| k == key && reason.contains(text))
        };
        assert!(has("acme.dns_hook", "remove one"), "{found:?}");
        assert!(has("site[0].dns.tsig_key", "missing"), "{found:?}");
        assert!(has("site[0].dns.tsig_secret_file", "missing"), "{found:?}");
        assert!(
            has("site[0].dns.nameserver_port", "not a port"),
            "{found:?}"
        );
        let unknown = problems(dir.path(), "[acme.dns]\nsever = \"192.0.2.1\"\n");
        assert!(
            unknown.iter().any(|(key, _)| key.contains("sever")),
            "{unknown:?}"
        );
    }
}
