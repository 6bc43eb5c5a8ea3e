//! Fallback CAs: `[[acme.ca]]`, an ordered list of CAs used instead of the single `[acme] directory`.
//!
//! Each table names a CA (`directory`, and optionally `ca_roots`, `eab_kid` / `eab_hmac_key_file`
//! and `profile`); the first is the one certd orders from, and an order goes to the next only when the
//! one before is down or rate-limits (see `AcmeError::falls_through`). Everything else in `[acme]`
//! (email, key type, challenge, DNS method) is shared by all of them. Accounts and the rate-limit
//! ledger stay per CA, keyed by the directory URL as with a single CA.

use std::path::{Path, PathBuf};

use toml::Spanned;

use super::problems::Problems;
use super::validate::{check_pem_file, directory_url, profile_name};
use super::{AcmeConfig, EabConfig};

/// One `[[acme.ca]]` table as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCa {
    directory: Option<Spanned<String>>,
    ca_roots: Option<Spanned<String>>,
    eab_kid: Option<Spanned<String>>,
    eab_hmac_key_file: Option<Spanned<String>>,
    profile: Option<Spanned<String>>,
}

/// One CA of `[[acme.ca]]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaConfig {
    /// The ACME directory URL (shorthands expanded).
    pub directory_url: String,
    /// Extra PEM roots to trust for this CA's HTTPS endpoint.
    pub ca_roots: Option<PathBuf>,
    /// The external account binding new accounts at this CA are created with.
    pub eab: Option<EabConfig>,
    /// The profile to ask this CA for, overriding `[acme] profile` (a site's own still wins).
    pub profile: Option<String>,
}

impl AcmeConfig {
    /// How many CAs an order may go to: 1 plus the fallbacks.
    pub fn ca_count(&self) -> usize {
        1 + self.fallback.len()
    }

    /// The `[acme]` settings for the CA at `index` (0 is the first, as configured), or `None`
    /// past the last one.
    pub fn for_ca(&self, index: usize) -> Option<AcmeConfig> {
        let mut acme = self.clone();
        acme.fallback = Vec::new();
        if index == 0 {
            return Some(acme);
        }
        let ca = self.fallback.get(index - 1)?;
        acme.directory_url = ca.directory_url.clone();
        acme.ca_roots = ca.ca_roots.clone();
        acme.eab = ca.eab.clone();
        if ca.profile.is_some() {
            acme.profile = ca.profile.clone();
        }
        Some(acme)
    }
}

/// Validates `[[acme.ca]]`; every table that has problems is reported and left out.
pub(super) fn cas(
    raw: Spanned<Vec<Spanned<RawCa>>>,
    folder: &Path,
    problems: &mut Problems<'_>,
) -> Vec<CaConfig> {
    let list = raw.span();
    let raw = raw.into_inner();
    if raw.is_empty() {
        problems.add(
            "acme.ca",
            Some(list),
            "is empty: list at least one CA with `directory`, or remove `ca` and set `[acme] \
             directory`",
        );
        return Vec::new();
    }
    let mut cas: Vec<CaConfig> = Vec::new();
    for (index, table) in raw.into_iter().enumerate() {
        let span = table.span();
        let table = table.into_inner();
        let key = |name: &str| format!("acme.ca[{index}].{name}");
        let mut valid = true;
        let directory_text = table.directory.as_ref().map(|d| d.get_ref().clone());
        let mut ca = CaConfig {
            directory_url: String::new(),
            ca_roots: None,
            eab: super::eab::eab(
                table.eab_kid,
                table.eab_hmac_key_file,
                directory_text.as_deref(),
                span.clone(),
                folder,
                problems,
            ),
            profile: None,
        };
        match table.directory {
            None => {
                valid = false;
                problems.add(
                    key("directory"),
                    Some(span),
                    "missing: every [[acme.ca]] needs the CA's `directory` (a shorthand or its \
                     https:// directory URL)",
                );
            }
            Some(directory) => {
                match directory_url(directory.get_ref()) {
                    Ok(url) if cas.iter().any(|other| other.directory_url == url) => {
                        valid = false;
                        problems.add(
                        key("directory"),
                        Some(directory.span()),
                        format!("`{url}` is listed twice: falling back to the same CA gains nothing"),
                    );
                    }
                    Ok(url) => ca.directory_url = url,
                    Err(reason) => {
                        valid = false;
                        problems.add(key("directory"), Some(directory.span()), reason);
                    }
                }
            }
        }
        if let Some(ca_roots) = table.ca_roots {
            let path = folder.join(ca_roots.get_ref());
            if let Err(reason) = check_pem_file(&path) {
                valid = false;
                problems.add(key("ca_roots"), Some(ca_roots.span()), reason);
            }
            ca.ca_roots = Some(path);
        }
        if let Some(profile) = table.profile {
            match profile_name(profile.get_ref()) {
                Ok(name) => ca.profile = Some(name),
                Err(reason) => {
                    valid = false;
                    problems.add(key("profile"), Some(profile.span()), reason);
                }
            }
        }
        if valid {
            cas.push(ca);
        }
    }
    cas
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::config::{from_toml, Config, ConfigError};
    use std::path::Path;

    fn load(body: &str) -> Result<Config, ConfigError> {
        let text =
            format!("[acme]\nagree_tos = true\n{body}\n[[site]]\nnames = [\"example.org\"]\n");
        from_toml(&text, Path::new("/etc/certd/certd.toml"))
    }

    fn problems(body: &str) -> Vec<(String, Option<usize>, String)> {
        load(body)
            .unwrap_err()
            .problems
            .into_iter()
            .map(|p| (p.key, p.line, p.reason))
            .collect()
    }

    #[test]
    fn the_list_orders_the_cas_and_the_first_is_the_directory() {
        let config = load(
            "profile = \"classic\"\n\
             [[acme.ca]]\ndirectory = \"https://one.example/dir\"\n\
             [[acme.ca]]\ndirectory = \"letsencrypt\"\nprofile = \"shortlived\"\n",
        )
        .unwrap();
        let acme = &config.acme;
        assert_eq!(acme.directory_url, "https://one.example/dir");
        assert_eq!(acme.ca_count(), 2);
        assert_eq!(
            acme.fallback[0].directory_url,
            crate::config::LETSENCRYPT_PRODUCTION
        );
        let first = acme.for_ca(0).unwrap();
        assert_eq!(first.directory_url, "https://one.example/dir");
        assert_eq!(first.profile.as_deref(), Some("classic"));
        assert!(first.fallback.is_empty());
        let second = acme.for_ca(1).unwrap();
        assert_eq!(second.directory_url, crate::config::LETSENCRYPT_PRODUCTION);
        assert_eq!(second.profile.as_deref(), Some("shortlived"));
        assert!(acme.for_ca(2).is_none());
    }

    #[test]
    fn the_single_directory_form_is_unchanged() {
        let config = load("directory = \"https://one.example/dir\"\n").unwrap();
        assert_eq!(config.acme.directory_url, "https://one.example/dir");
        assert_eq!(config.acme.ca_count(), 1);
        assert!(config.acme.fallback.is_empty());
    }

    #[test]
    fn both_forms_at_once_and_bad_tables_are_config_errors() {
        let found = problems(
            "directory = \"https://one.example/dir\"\n\
             [[acme.ca]]\ndirectory = \"https://two.example/dir\"\n",
        );
        assert!(
            found.iter().any(|(key, line, reason)| key == "acme.ca"
                && *line == Some(3)
                && reason.contains("both")),
            "{found:?}"
        );
        let found = problems(
            "ca_roots = \"roots.pem\"\n[[acme.ca]]\ndirectory = \"https://two.example/dir\"\n",
        );
        assert!(
            found
                .iter()
                .any(|(key, _, reason)| key == "acme.ca_roots" && reason.contains("[[acme.ca]]")),
            "{found:?}"
        );
        let found = problems(
            "[[acme.ca]]\ndirectory = \"https://one.example/dir\"\n\
             [[acme.ca]]\nprofile = \"classic\"\n\
             [[acme.ca]]\ndirectory = \"https://one.example/dir\"\n",
        );
        assert!(
            found
                .iter()
                .any(|(key, _, reason)| key == "acme.ca[1].directory" && reason.contains("missing")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|(key, line, reason)| key == "acme.ca[2].directory"
                    && *line == Some(8)
                    && reason.contains("twice")),
            "{found:?}"
        );
        let found =
            problems("[[acme.ca]]\ndirectory = \"https://one.example/dir\"\nemail = \"x\"\n");
        assert!(!found.is_empty());
        let found = problems("ca = []\n");
        assert!(
            found
                .iter()
                .any(|(key, _, reason)| key == "acme.ca" && reason.contains("empty")),
            "{found:?}"
        );
    }
}
