//! Access control per route: nginx's `allow`/`deny` (ngx_http_access_module), HTTP basic auth from an
//! htpasswd file (ngx_http_auth_basic_module), and `satisfy all|any` between the two.
//!
//! A route's [`Policy`] is fixed when the configuration is loaded (site-level keys inherited by routes
//! that do not set their own, as nginx inherits from `server` to `location`). [`Guard::check`] runs
//! once per request, after routing and before the route's target, on the real client address (the
//! one nginx's realip module would give: see [`crate::proxy::Proxy::client_ip`]).
//!
//! Rules are evaluated in order and the first that matches decides, as in nginx; when none matches,
//! the request is not refused by them. bcrypt is slow on purpose, so it runs on a blocking thread
//! (a bounded number at once) and successful checks are remembered for a few minutes in a bounded
//! cache keyed by a salted hash of the credentials, so a page with 50 assets runs bcrypt once.

pub mod htpasswd;
pub mod limit_except;
mod verified;

use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine as _;
use hyper::header::{HeaderMap, AUTHORIZATION};
use ipnet::IpNet;
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

pub use self::htpasswd::Htpasswd;
pub use self::limit_except::LimitExcept;
use self::verified::VerifiedCache;

/// One `allow`/`deny` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// `allow` (true) or `deny`.
    pub allow: bool,
    /// The addresses it covers; `None` is `all`.
    pub range: Option<IpNet>,
}

impl Rule {
    /// Reads `"allow 10.0.0.0/8"`, `"deny 2001:db8::/32"`, `"allow 192.0.2.1"`, `"deny all"`.
    /// Host bits below the prefix are cleared, as nginx does (with a warning) for `10.1.2.3/8`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut words = text.split_whitespace();
        let allow = match words.next() {
            Some("allow") => true,
            Some("deny") => false,
            _ => {
                return Err(format!(
                    "{text:?} must start with `allow` or `deny`, e.g. \"allow 10.0.0.0/8\" or \
                     \"deny all\""
                ))
            }
        };
        let (Some(what), None) = (words.next(), words.next()) else {
            return Err(format!(
                "{text:?} must name one address, CIDR range or `all` after `allow`/`deny`"
            ));
        };
        let range = if what == "all" {
            None
        } else if what.starts_with("unix:") {
            return Err(format!(
                "{text:?}: `unix:` rules are not supported (certd listens on TCP only)"
            ));
        } else {
            Some(crate::trusted_proxies::parse_range(what)?)
        };
        Ok(Self { allow, range })
    }

    fn matches(&self, ip: IpAddr) -> bool {
        self.range.is_none_or(|range| range.contains(&ip))
    }
}

/// What the `allow`/`deny` list says about an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// An `allow` rule matched first.
    Allowed,
    /// A `deny` rule matched first.
    Denied,
    /// No rule matched (or there are none): the list neither allows nor refuses.
    NoMatch,
}

/// An ordered `allow`/`deny` list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessList {
    rules: Arc<[Rule]>,
}

impl AccessList {
    /// The list of `rules`, in the order given.
    pub fn new(rules: Vec<Rule>) -> Self {
        Self {
            rules: rules.into(),
        }
    }

    /// The first matching rule's verdict for `ip`. An IPv4-mapped IPv6 address (what a dual-stack
    /// socket reports for an IPv4 client) is checked as its IPv4 address, as nginx does.
    pub fn verdict(&self, ip: IpAddr) -> Verdict {
        let ip = ip.to_canonical();
        match self.rules.iter().find(|rule| rule.matches(ip)) {
            Some(rule) if rule.allow => Verdict::Allowed,
            Some(_) => Verdict::Denied,
            None => Verdict::NoMatch,
        }
    }

    /// Whether the list has no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// `satisfy`: whether both the address rules and basic auth must let a request in, or either.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Satisfy {
    /// `all` (the default): a denied address gets 403 whatever its password; then auth must pass.
    #[default]
    All,
    /// `any`: an allowed address needs no password, and a right password lets in a denied address.
    Any,
}

/// `auth_basic` with its `auth_basic_user_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicAuth {
    /// The realm shown by the browser's password prompt.
    pub realm: String,
    /// The users and their hashes.
    pub users: Arc<Htpasswd>,
}

/// Everything a route checks before its target runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// The `access` list.
    pub rules: AccessList,
    /// Basic auth, unless off.
    pub auth: Option<BasicAuth>,
    /// How the two combine.
    pub satisfy: Satisfy,
}

impl Policy {
    /// Whether the policy lets everyone in without looking (no rules, no auth): then a route
    /// needs no policy at all.
    pub fn is_open(&self) -> bool {
        self.rules.is_empty() && self.auth.is_none()
    }
}

/// The answer of [`Guard::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Go on to the route's target.
    Allowed,
    /// 403.
    Forbidden,
    /// 401, with `WWW-Authenticate: Basic realm="..."` for this realm.
    Unauthorized(String),
}

/// What basic auth said about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthVerdict {
    Passed,
    Failed,
}

/// Checks requests against policies; one per proxy, holding the verification cache.
#[derive(Debug)]
pub struct Guard {
    cache: VerifiedCache,
    /// At most this many bcrypt verifications run at once, so a flood of wrong passwords cannot
    /// take every blocking thread.
    slow: Arc<Semaphore>,
}

impl Default for Guard {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Self {
            cache: VerifiedCache::default(),
            slow: Arc::new(Semaphore::new(cores.max(2))),
        }
    }
}

impl Guard {
    /// Whether a request with `headers` from `client` (the real client) may reach the route.
    pub async fn check(&self, policy: &Policy, headers: &HeaderMap, client: IpAddr) -> Outcome {
        let address = policy.rules.verdict(client);
        match policy.satisfy {
            Satisfy::All => {
                if address == Verdict::Denied {
                    return Outcome::Forbidden;
                }
                match &policy.auth {
                    Some(auth) if self.authenticate(auth, headers).await == AuthVerdict::Failed => {
                        Outcome::Unauthorized(auth.realm.clone())
                    }
                    _ => Outcome::Allowed,
                }
            }
            // nginx's order: an allowed address passes at once; otherwise a right password does,
            // a wrong or missing one gets 401 (the prompt), and only without auth does a denied
            // address get 403.
            Satisfy::Any => {
                if address == Verdict::Allowed {
                    return Outcome::Allowed;
                }
                match &policy.auth {
                    Some(auth) => match self.authenticate(auth, headers).await {
                        AuthVerdict::Passed => Outcome::Allowed,
                        AuthVerdict::Failed => Outcome::Unauthorized(auth.realm.clone()),
                    },
                    None if address == Verdict::Denied => Outcome::Forbidden,
                    None => Outcome::Allowed,
                }
            }
        }
    }

    async fn authenticate(&self, auth: &BasicAuth, headers: &HeaderMap) -> AuthVerdict {
        let Some((user, password)) = credentials(headers) else {
            return AuthVerdict::Failed;
        };
        let Some(hash) = auth.users.user(&user) else {
            tracing::debug!(user, "basic auth: no such user");
            return AuthVerdict::Failed;
        };
        let passed = if hash.is_slow() {
            let key = self.cache.key(&user, &password, hash.text());
            if self.cache.contains(&key, std::time::Instant::now()) {
                true
            } else {
                let passed = self.verify_slow(hash.clone(), password).await;
                if passed {
                    self.cache.insert(key, std::time::Instant::now());
                }
                passed
            }
        } else {
            hash.verify(&password)
        };
        if passed {
            AuthVerdict::Passed
        } else {
            tracing::debug!(user, "basic auth: wrong password");
            AuthVerdict::Failed
        }
    }

    /// Runs a bcrypt verification on a blocking thread, a bounded number at once.
    async fn verify_slow(&self, hash: htpasswd::Hash, password: Zeroizing<Vec<u8>>) -> bool {
        let Ok(_permit) = self.slow.clone().acquire_owned().await else {
            return false;
        };
        tokio::task::spawn_blocking(move || hash.verify(&password))
            .await
            .unwrap_or(false)
    }
}

/// The user and password of an `Authorization: Basic ...` header; `None` when there is none or it
/// is malformed. The password stays bytes (browsers send UTF-8, but it is not checked) and is wiped
/// from memory when dropped.
fn credentials(headers: &HeaderMap) -> Option<(String, Zeroizing<Vec<u8>>)> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, encoded) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let encoded = encoded.trim_ascii();
    let decoded = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?,
    );
    let colon = decoded.iter().position(|b| *b == b':')?;
    let user = std::str::from_utf8(&decoded[..colon]).ok()?.to_owned();
    let password = Zeroizing::new(decoded[colon + 1..].to_vec());
    Some((user, password))
}

/// The `WWW-Authenticate` value for `realm`: a quoted string, `"` and `\` escaped.
pub fn challenge(realm: &str) -> String {
    let mut value = String::with_capacity(realm.len() + 14);
    value.push_str("Basic realm=\"");
    for c in realm.chars() {
        if c == '"' || c == '\\' {
            value.push('\\');
        }
        value.push(c);
    }
    value.push('"');
    value
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
