//! Step 2 of loading: validation of the raw file into the typed [`Config`](super::Config), one function
//! per table, every problem recorded with its key and line.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::problems::Problems;
use super::raw::{RawAcme, RawConfig, RawRenewal, RawSite};
use super::*;
use super::{access, challenge, http_rules, listeners, operations, serving};
use crate::hostname;

// ---------------------------------------------------------------------------------------------------
// Step 2: validation into the typed `Config`. Each function records its problems and returns a value
// regardless (a default or placeholder where the input was unusable); `from_toml` discards the value
// when any problem was recorded.
// ---------------------------------------------------------------------------------------------------

const DEFAULT_STATE_DIR: &str = "state";
pub(super) const DEFAULT_CONCURRENCY: usize = 4;
const CONCURRENCY_RANGE: std::ops::RangeInclusive<i64> = 1..=64;
/// Every [`KeyType`], in the order the documentation lists them.
const KEY_TYPES: [KeyType; 4] = [
    KeyType::EcdsaP256,
    KeyType::EcdsaP384,
    KeyType::Rsa2048,
    KeyType::Rsa4096,
];

pub(super) fn validate(raw: RawConfig, path: &Path, problems: &mut Problems<'_>) -> Config {
    let folder = config_folder(path);
    let default_site = raw
        .https
        .as_ref()
        .and_then(|https| https.get_ref().default_site.clone());
    // Before `[http]`, whose `proxy_protocol` needs `[https] trusted_proxies`.
    let https = listeners::https(raw.https, problems);
    // Before the sites, whose routes name them.
    let upstreams = super::upstreams::upstreams(raw.upstream, problems);
    // For the sites that name no challenge; its problems are reported with `[acme]`.
    let default_challenge = raw
        .acme
        .as_ref()
        .and_then(|acme| acme.get_ref().challenge.as_ref())
        .and_then(|kind| challenge::parse(kind.get_ref()).ok());
    let default_challenge_span = raw
        .acme
        .as_ref()
        .and_then(|acme| acme.get_ref().challenge.as_ref())
        .map(Spanned::span);
    let mut config = Config {
        source: path.to_path_buf(),
        state_dir: state_dir(raw.state_dir, &folder, problems),
        acme: acme(raw.acme, &folder, problems),
        http: listeners::http(raw.http, &https.trusted_proxies, problems),
        https,
        limits: serving::limits(raw.limits, problems),
        renewal: renewal(raw.renewal, problems),
        operations: operations::operations(
            raw.status,
            raw.metrics,
            raw.hook,
            raw.preflight,
            problems,
        ),
        sites: Vec::new(),
        upstreams,
        storage: super::storage::storage(raw.storage, &folder, problems),
        log: super::log::log(raw.log, &folder, problems),
    };
    // Before the sites, whose headers, returns and rewrites may name their variables.
    let maps = super::map::maps(raw.map, problems);
    config.sites = crate::proxy::variables::with_maps(&maps, || {
        sites(
            raw.site,
            &folder,
            &config.upstreams,
            default_challenge,
            (config.acme.dns.is_some(), default_challenge_span),
            problems,
        )
    });
    // DNS-01 lookups go through `[preflight] resolver` unless the dns table names its own.
    let preflight_resolver = config.operations.preflight_resolver;
    if let Some(dns) = config.acme.dns.as_mut() {
        dns.resolver = dns.resolver.or(preflight_resolver);
    }
    for site in &mut config.sites {
        match site.dns.as_mut() {
            Some(dns) => dns.resolver = dns.resolver.or(preflight_resolver),
            None => site.dns = config.acme.dns.clone(),
        }
    }
    config.https.default_site = listeners::default_site(default_site, &config.sites, problems);
    config
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
        profile: None,
        challenge: None,
        dns: None,
        eab: None,
        fallback: Vec::new(),
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
    let listed = raw.ca.is_some();
    if listed {
        if let Some(directory) = &raw.directory {
            problems.add(
                "acme.ca",
                Some(directory.span()),
                "`[acme] directory` and `[[acme.ca]]` are both set: use `directory` for one CA, \
                 or list every CA (the first included) as [[acme.ca]] tables",
            );
        }
        for (name, span) in [
            ("ca_roots", raw.ca_roots.as_ref().map(Spanned::span)),
            ("eab_kid", raw.eab_kid.as_ref().map(Spanned::span)),
            (
                "eab_hmac_key_file",
                raw.eab_hmac_key_file.as_ref().map(Spanned::span),
            ),
        ] {
            if let Some(span) = span {
                problems.add(
                    format!("acme.{name}"),
                    Some(span),
                    format!(
                        "belongs to one CA: with [[acme.ca]], set `{name}` in the CA's own table"
                    ),
                );
            }
        }
    }
    let directory_text = raw
        .directory
        .as_ref()
        .map(|directory| directory.get_ref().clone());
    acme.eab = super::eab::eab(
        raw.eab_kid,
        raw.eab_hmac_key_file,
        directory_text.as_deref(),
        table.clone(),
        folder,
        problems,
    );

    match raw.directory {
        None if listed => {}
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

    if let Some(profile) = raw.profile {
        match profile_name(profile.get_ref()) {
            Ok(name) => acme.profile = Some(name),
            Err(reason) => problems.add("acme.profile", Some(profile.span()), reason),
        }
    }

    if let Some(kind) = raw.challenge {
        match challenge::parse(kind.get_ref()) {
            Ok(kind) => acme.challenge = Some(kind),
            Err(reason) => problems.add("acme.challenge", Some(kind.span()), reason),
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

    acme.dns = super::dns::dns("acme", raw.dns, raw.dns_hook, folder, problems);

    if let Some(list) = raw.ca {
        let mut cas = super::fallback::cas(list, folder, problems).into_iter();
        if let Some(first) = cas.next() {
            acme.directory_url = first.directory_url;
            acme.ca_roots = first.ca_roots;
            acme.eab = first.eab;
            acme.profile = first.profile.or(acme.profile);
        }
        acme.fallback = cas.collect();
    }

    acme
}

/// An ACME profile name as CAs spell them (`classic`, `tlsserver`, `shortlived`): whether the CA
/// offers it is checked against its directory when certd connects.
pub(super) fn profile_name(value: &str) -> Result<String, String> {
    let valid = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if valid {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "{value:?} is not a profile name (letters, digits, '-', '_', '.'), such as \"tlsserver\""
        ))
    }
}

/// Expands the `letsencrypt` shorthands, and otherwise checks for an `https://` URL with a host.
pub(super) fn directory_url(value: &str) -> Result<String, String> {
    match value {
        "letsencrypt" => return Ok(LETSENCRYPT_PRODUCTION.to_owned()),
        "letsencrypt-staging" => return Ok(LETSENCRYPT_STAGING.to_owned()),
        _ => {}
    }
    if let Some(url) = super::eab::shorthand(value) {
        return Ok(url.to_owned());
    }
    let expected = "write `letsencrypt`, `letsencrypt-staging`, `zerossl`, `google`, or the CA's \
                    https:// directory URL";
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
pub(super) fn email_address(value: &str) -> Result<String, String> {
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
pub(super) fn check_pem_file(path: &Path) -> Result<(), String> {
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

fn renewal(raw: Option<Spanned<RawRenewal>>, problems: &mut Problems<'_>) -> RenewalConfig {
    let mut renewal = RenewalConfig::default();
    let Some(raw) = raw.map(Spanned::into_inner) else {
        return renewal;
    };
    let (first_span, longest_span) = (
        raw.first_retry.as_ref().map(Spanned::span),
        raw.longest_retry.as_ref().map(Spanned::span),
    );
    let mut delays_valid = true;
    for (key, value, into) in [
        (
            "renewal.first_retry",
            raw.first_retry,
            &mut renewal.first_retry,
        ),
        (
            "renewal.longest_retry",
            raw.longest_retry,
            &mut renewal.longest_retry,
        ),
    ] {
        if let Some(value) = value {
            match serving::parse_duration_at_most(value.get_ref(), LONGEST_RETRY) {
                Ok(parsed) if !parsed.is_zero() => *into = parsed,
                Ok(_) => {
                    delays_valid = false;
                    problems.add(key, Some(value.span()), "must be more than zero");
                }
                Err(reason) => {
                    delays_valid = false;
                    problems.add(key, Some(value.span()), reason);
                }
            }
        }
    }
    // The backoff starts at first_retry and grows to longest_retry; the other way round, longest_retry
    // would silently win.
    if delays_valid && renewal.longest_retry < renewal.first_retry {
        let (first, longest) = (
            DurationText(renewal.first_retry),
            DurationText(renewal.longest_retry),
        );
        match longest_span {
            Some(span) => problems.add(
                "renewal.longest_retry",
                Some(span),
                format!("{longest} is shorter than renewal.first_retry ({first}): the wait after a failure starts at first_retry and grows up to longest_retry"),
            ),
            None => problems.add(
                "renewal.first_retry",
                first_span,
                format!("{first} is longer than renewal.longest_retry ({longest}, the default): set longest_retry to at least as much"),
            ),
        }
    }
    if let Some(count) = raw.slow_after_failures {
        match u32::try_from(*count.get_ref()) {
            Ok(count) => renewal.slow_after_failures = count,
            Err(_) => problems.add(
                "renewal.slow_after_failures",
                Some(count.span()),
                "must be a whole number, 0 or more (0: never slow down)",
            ),
        }
    }
    if let Some(fraction) = raw.remaining_fraction {
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

/// The longest `[renewal] first_retry` or `longest_retry` may be: CA rate limits refill within a
/// week, so waiting a month between attempts is already generous, and anything longer is a typo that
/// would stop renewals until the certificate lapses.
const LONGEST_RETRY: (std::time::Duration, &str) = (
    std::time::Duration::from_secs(30 * 24 * 3600),
    "720h (30 days)",
);

/// A duration as `[renewal]` messages show it: `90s`, `5m`, `6h`, or `1500ms`.
struct DurationText(std::time::Duration);

impl std::fmt::Display for DurationText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let millis = self.0.as_millis();
        match millis {
            m if m % 3_600_000 == 0 => write!(f, "{}h", m / 3_600_000),
            m if m % 60_000 == 0 => write!(f, "{}m", m / 60_000),
            m if m % 1000 == 0 => write!(f, "{}s", m / 1000),
            m => write!(f, "{m}ms"),
        }
    }
}

/// The `[[site]]` tables. Names are validated and lower-cased; a name may appear only once in the
/// whole file, because it selects exactly one certificate.
fn sites(
    raw: Vec<Spanned<RawSite>>,
    folder: &Path,
    upstreams: &[super::UpstreamConfig],
    default_challenge: Option<ChallengeKind>,
    // Whether `[acme]` has a DNS method, and where `[acme] challenge` is written.
    (acme_dns, default_challenge_span): (bool, Option<Range<usize>>),
    problems: &mut Problems<'_>,
) -> Vec<SiteConfig> {
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
        let RawSite {
            names,
            route,
            error_pages,
            profile,
            access,
            auth_basic,
            auth_basic_user_file,
            satisfy,
            compress,
            headers,
            hsts,
            max_body_size,
            expires,
            etag,
            index,
            error_page,
            challenge: site_challenge,
            dns,
            dns_hook,
        } = site.into_inner();
        let challenge_span = site_challenge.as_ref().map(Spanned::span);
        let site_challenge = match site_challenge {
            Some(kind) => match challenge::parse(kind.get_ref()) {
                Ok(kind) => Some(kind),
                Err(reason) => {
                    problems.add(format!("site[{i}].challenge"), Some(kind.span()), reason);
                    None
                }
            },
            None => default_challenge,
        };
        let dns = super::dns::dns(&format!("site[{i}]"), dns, dns_hook, folder, problems);
        if site_challenge == Some(ChallengeKind::Dns01) && dns.is_none() && !acme_dns {
            // Reported where dns-01 was chosen: the site, or once at `[acme] challenge`.
            let (key, span) = match challenge_span {
                Some(span) => (format!("site[{i}].challenge"), Some(span)),
                None => ("acme.challenge".to_owned(), default_challenge_span.clone()),
            };
            let reported = problems.found.iter().any(|p| p.key == key);
            if !reported {
                problems.add(
                key,
                span,
                "\"dns-01\" needs a DNS method: an RFC 2136 server (`[acme.dns]` or `[site.dns]` \
                 with `server`, `tsig_key`, `tsig_secret_file`) or a `dns_hook` program, in [acme] \
                 for every site or in this site",
                );
            }
        }
        let site_access = access::AccessKeys {
            access,
            auth_basic,
            auth_basic_user_file,
            satisfy,
        };
        let access = access::site_scope(i, site_access, folder, problems);
        let mut http = http_rules::site(i, headers, hsts, max_body_size, expires, problems);
        http.etag = etag.map(Spanned::into_inner);
        let profile = profile.and_then(|profile| match profile_name(profile.get_ref()) {
            Ok(name) => Some(name),
            Err(reason) => {
                problems.add(format!("site[{i}].profile"), Some(profile.span()), reason);
                None
            }
        });
        let mut references = Vec::new();
        let inherited = serving::Inherited {
            access,
            compress: super::compress::policy(&format!("site[{i}].compress"), compress, problems),
            index: super::error_page::index(&format!("site[{i}].index"), index, problems)
                .unwrap_or_else(|| vec!["index.html".to_owned()]),
            error_page: std::sync::Arc::new(
                super::error_page::error_pages(
                    &format!("site[{i}].error_page"),
                    error_page,
                    &mut references,
                    problems,
                )
                .unwrap_or_default(),
            ),
        };
        let routes = serving::routes(i, route, folder, &inherited, upstreams, problems);
        super::location::check_references(&references, &routes, problems);
        let error_pages = serving::error_pages(i, error_pages, folder, problems);
        let Some(names) = names else {
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
            let checked = hostname::validate_site_name(name.get_ref()).and_then(|name| {
                let shape = challenge::NameShape::of(&name);
                challenge::name_allows(shape, site_challenge).map(|()| name)
            });
            match checked {
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
            sites.push(SiteConfig {
                names: valid,
                routes,
                error_pages,
                profile,
                http,
                error_page: inherited.error_page.clone(),
                challenge: site_challenge,
                dns,
            });
        }
    }
    sites
}
