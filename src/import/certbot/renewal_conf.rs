//! certbot's renewal configuration, `renewal/<lineage>.conf`: the few keys `certd import certbot` needs.
//!
//! certbot writes the file with Python's configobj: `key = value` lines, `[section]` headers (and nested
//! `[[subsection]]`s such as `[[webroot_map]]`), `#` comments. Only the top-level file paths
//! (`cert`, `chain`, `fullchain`, `privkey`) and `[renewalparams]`'s `server` and `account` matter
//! here, plus how certbot validated (`authenticator`, `pref_challs`, the manual hooks and the
//! `dns-rfc2136` credentials file), so the import can say how certd must renew a DNS-01 lineage;
//! everything else (deploy hooks, key type, webroot map) is certbot's own business and is ignored. Parsing is lenient: a line that is not understood is skipped, never an error.

use std::path::PathBuf;

/// What certd reads from one renewal configuration. Every field is `None` when absent or empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenewalConf {
    /// Top-level `cert`: where certbot keeps the lineage's current leaf (under `live/`).
    pub cert: Option<PathBuf>,
    /// Top-level `chain`: the intermediates.
    pub chain: Option<PathBuf>,
    /// Top-level `fullchain`: leaf and intermediates.
    pub fullchain: Option<PathBuf>,
    /// Top-level `privkey`: the certificate's private key.
    pub privkey: Option<PathBuf>,
    /// `[renewalparams] server`: the ACME directory URL the lineage was issued from.
    pub server: Option<String>,
    /// `[renewalparams] account`: the id of the certbot account (a folder under `accounts/`).
    pub account: Option<String>,
    /// `[renewalparams] authenticator`: `webroot`, `standalone`, `nginx`, `manual`, `dns-rfc2136`, …
    pub authenticator: Option<String>,
    /// `[renewalparams] pref_challs`: `--preferred-challenges`, e.g. `dns-01,`.
    pub pref_challs: Option<String>,
    /// `[renewalparams] manual_auth_hook`: the shell command certbot ran to publish a challenge.
    pub manual_auth_hook: Option<String>,
    /// `[renewalparams] manual_cleanup_hook`: the shell command certbot ran afterwards.
    pub manual_cleanup_hook: Option<String>,
    /// `[renewalparams] dns_rfc2136_credentials`: the dns-rfc2136 plugin's credentials file.
    pub dns_rfc2136_credentials: Option<PathBuf>,
}

/// Where a key = value line sits.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    /// Before any section header.
    TopLevel,
    /// Directly in `[renewalparams]`.
    RenewalParams,
    /// Anywhere else (another section, or a subsection of any section).
    Elsewhere,
}

/// Parses the text of a renewal configuration. Never fails: unknown or malformed lines are skipped.
pub fn parse(text: &str) -> RenewalConf {
    let mut conf = RenewalConf::default();
    let mut place = Place::TopLevel;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            let depth = line.bytes().take_while(|&b| b == b'[').count();
            let name = line.trim_start_matches('[').split(']').next().unwrap_or("");
            place = if depth == 1 && name.trim().eq_ignore_ascii_case("renewalparams") {
                Place::RenewalParams
            } else {
                Place::Elsewhere
            };
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim().to_ascii_lowercase();
        let Some(value) = unquote(value) else {
            continue;
        };
        match (&place, key.as_str()) {
            (Place::TopLevel, "cert") => conf.cert = Some(PathBuf::from(value)),
            (Place::TopLevel, "chain") => conf.chain = Some(PathBuf::from(value)),
            (Place::TopLevel, "fullchain") => conf.fullchain = Some(PathBuf::from(value)),
            (Place::TopLevel, "privkey") => conf.privkey = Some(PathBuf::from(value)),
            (Place::RenewalParams, "server") => conf.server = Some(value),
            (Place::RenewalParams, "account") => conf.account = Some(value),
            (Place::RenewalParams, "authenticator") => conf.authenticator = Some(value),
            (Place::RenewalParams, "pref_challs") => conf.pref_challs = Some(value),
            (Place::RenewalParams, "manual_auth_hook") => conf.manual_auth_hook = Some(value),
            (Place::RenewalParams, "manual_cleanup_hook") => conf.manual_cleanup_hook = Some(value),
            (Place::RenewalParams, "dns_rfc2136_credentials") => {
                conf.dns_rfc2136_credentials = Some(PathBuf::from(value))
            }
            _ => {}
        }
    }
    conf
}

/// A configobj value: a quoted string's contents, or an unquoted value up to a `#` comment, trimmed.
/// `None` when it is empty.
fn unquote(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let value = match raw.chars().next() {
        Some(quote @ ('"' | '\'')) => {
            let inner = &raw[1..];
            match inner.find(quote) {
                Some(end) => &inner[..end],
                // An unterminated quote: take the rest as it is rather than lose the line.
                None => inner,
            }
        }
        _ => raw.split('#').next().unwrap_or("").trim(),
    };
    (!value.is_empty()).then(|| value.to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// What certbot 2.x writes for a webroot lineage (trimmed to the usual keys).
    const TYPICAL: &str = "\
# renew_before_expiry = 30 days
version = 2.9.0
archive_dir = /etc/letsencrypt/archive/example.org
cert = /etc/letsencrypt/live/example.org/cert.pem
privkey = /etc/letsencrypt/live/example.org/privkey.pem
chain = /etc/letsencrypt/live/example.org/chain.pem
fullchain = /etc/letsencrypt/live/example.org/fullchain.pem

# Options used in the renewal process
[renewalparams]
account = 0123456789abcdef0123456789abcdef
authenticator = webroot
webroot_path = /var/www/html,
server = https://acme-v02.api.letsencrypt.org/directory
key_type = ecdsa
elliptic_curve = secp256r1
[[webroot_map]]
example.org = /var/www/html
server = https://not-this-one.example/
";

    #[test]
    fn the_paths_server_and_account_are_read() {
        let conf = parse(TYPICAL);
        assert_eq!(
            conf,
            RenewalConf {
                cert: Some("/etc/letsencrypt/live/example.org/cert.pem".into()),
                chain: Some("/etc/letsencrypt/live/example.org/chain.pem".into()),
                fullchain: Some("/etc/letsencrypt/live/example.org/fullchain.pem".into()),
                privkey: Some("/etc/letsencrypt/live/example.org/privkey.pem".into()),
                server: Some("https://acme-v02.api.letsencrypt.org/directory".into()),
                account: Some("0123456789abcdef0123456789abcdef".into()),
                authenticator: Some("webroot".into()),
                ..RenewalConf::default()
            }
        );
    }

    #[test]
    fn keys_count_only_in_their_own_section() {
        let conf = parse(
            "server = https://top-level.example/\n\
             [other]\naccount = nope\ncert = /nope\n\
             [renewalparams]\n[[sub]]\nserver = https://nested.example/\n",
        );
        assert_eq!(conf, RenewalConf::default());
    }

    #[test]
    fn quotes_comments_spacing_and_case_are_tolerated() {
        let conf = parse(
            "  CERT='/a b/cert.pem'\n\
             chain=\"/x/chain.pem\" # trailing comment\n\
             fullchain = /x/fullchain.pem # comment\n\
             privkey =\n\
             garbage line without equals\n\
             [ RenewalParams ]\n\
             server=\"https://ca.example/dir\"\n\
             account =   abc   \n",
        );
        assert_eq!(conf.cert, Some("/a b/cert.pem".into()));
        assert_eq!(conf.chain, Some("/x/chain.pem".into()));
        assert_eq!(conf.fullchain, Some("/x/fullchain.pem".into()));
        assert_eq!(conf.privkey, None, "an empty value is absent");
        assert_eq!(conf.server.as_deref(), Some("https://ca.example/dir"));
        assert_eq!(conf.account.as_deref(), Some("abc"));
    }

    #[test]
    fn an_empty_or_foreign_file_yields_nothing() {
        assert_eq!(parse(""), RenewalConf::default());
        assert_eq!(parse("\u{0}\u{1}binary\n[[[\n]]]"), RenewalConf::default());
    }
}
