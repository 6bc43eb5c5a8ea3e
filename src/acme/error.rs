//! What can go wrong talking to a CA, kept with the context an operator needs: the site and name, the
//! CA's problem document intact, `Retry-After`, and whether the CA could be reached at all.

use std::fmt;
use std::path::PathBuf;

use instant_acme::Problem;
use time::OffsetDateTime;

use crate::certificate::CertificateError;
use crate::store::StoreError;

/// Why an account could not be used or an order did not produce a certificate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcmeError {
    /// No connection to the CA could be made, or it did not answer in time.
    #[error("cannot reach the CA at {url}: {reason}")]
    Unreachable {
        /// The directory URL.
        url: String,
        /// What failed (connection refused, DNS, timeout, ...).
        reason: String,
    },
    /// A connection was made but TLS failed (typically an untrusted CA certificate).
    #[error("TLS error talking to the CA at {url}: {reason} (if the CA uses a private root, set acme.ca_roots)")]
    Tls {
        /// The directory URL.
        url: String,
        /// The TLS error.
        reason: String,
    },
    /// The server answered, but not like an ACME directory.
    #[error("the server at {url} did not answer like an ACME CA: {reason}")]
    NotAcme {
        /// The directory URL.
        url: String,
        /// What was unexpected.
        reason: String,
    },
    /// `acme.ca_roots` could not be used.
    #[error("acme.ca_roots {}: {reason}", path.display())]
    CaRoots {
        /// The configured file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The CA refused an account operation.
    #[error("the CA refused the ACME account: {}{eab_hint}", Described(problem.as_ref()))]
    AccountRejected {
        /// The CA's problem document.
        problem: Box<Problem>,
        /// What to do about it when it is about external account binding (else empty).
        eab_hint: &'static str,
    },
    /// Another node of the fleet held the CA's account lease (it was creating the account) for
    /// longer than a node waits, and stored no account meanwhile.
    #[error("another node has been creating the ACME account for {url} for {}s without storing it; trying again later", waited.as_secs())]
    AccountLeaseHeld {
        /// The directory URL.
        url: String,
        /// How long this node waited.
        waited: std::time::Duration,
    },
    /// `[acme] eab_hmac_key_file` could not be used when creating the account.
    #[error("acme.eab_hmac_key_file: {reason}")]
    Eab {
        /// The configured file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The CA rate-limited a request.
    #[error("the CA rate-limited {site}: {}{}", Described(problem.as_ref()), retry_hint(retry_after))]
    RateLimited {
        /// The site being ordered.
        site: String,
        /// The CA's problem document.
        problem: Box<Problem>,
        /// When the CA said to try again (`Retry-After`).
        retry_after: Option<OffsetDateTime>,
    },
    /// The CA could not validate control of a name.
    #[error("validation of {name} for site {site} failed: {}", Described(problem.as_ref()))]
    ChallengeFailed {
        /// The site being ordered.
        site: String,
        /// The name whose authorization failed.
        name: String,
        /// The CA's problem document for the failed challenge.
        problem: Box<Problem>,
    },
    /// The CA rejected the order for another reason.
    #[error("the CA rejected the order for {site}: {}", Described(problem.as_ref()))]
    Rejected {
        /// The site being ordered.
        site: String,
        /// The CA's problem document.
        problem: Box<Problem>,
    },
    /// The configuration asks for a profile the CA does not offer.
    #[error("site {site} asks for the ACME profile {profile:?}, which the CA does not offer (it offers: {offered}); fix `profile` in the configuration")]
    UnknownProfile {
        /// The site.
        site: String,
        /// The profile asked for.
        profile: String,
        /// What the CA offers.
        offered: String,
    },
    /// The CA offers no HTTP-01 challenge for a name (certd only answers HTTP-01).
    #[error("the CA offers no http-01 challenge for {name} (site {site})")]
    NoHttp01 {
        /// The site being ordered.
        site: String,
        /// The name without an HTTP-01 challenge.
        name: String,
    },
    /// The CA offers no challenge of the configured kind for a name.
    #[error("the CA offers no {kind} challenge for {name} (site {site}); it offers {offered}: set `challenge` for the site to one of those")]
    NoChallenge {
        /// The site being ordered.
        site: String,
        /// The name without such a challenge.
        name: String,
        /// The kind asked for.
        kind: crate::config::ChallengeKind,
        /// The types the CA offers for the name.
        offered: String,
    },
    /// certd cannot answer this kind of challenge (yet).
    #[error("site {site}: certd cannot answer {kind} challenges")]
    UnsupportedChallenge {
        /// The site being ordered.
        site: String,
        /// The kind asked for.
        kind: crate::config::ChallengeKind,
    },
    /// The order did not progress in time.
    #[error("the CA did not {stage} for {site} in time")]
    TimedOut {
        /// The site being ordered.
        site: String,
        /// What was awaited ("validate the challenges", "issue the certificate").
        stage: &'static str,
    },
    /// The order ended in a state certd cannot continue from.
    #[error("the order for {site} ended {state}")]
    Unexpected {
        /// The site being ordered.
        site: String,
        /// What happened.
        state: String,
    },
    /// Generating the key or CSR failed, or the issued certificate could not be read.
    #[error("certificate for {site}: {source}")]
    Certificate {
        /// The site being ordered.
        site: String,
        /// What went wrong.
        source: CertificateError,
    },
    /// The account could not be loaded or saved.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A DNS-01 record could not be published, did not propagate, or its name not be found. The
    /// order's pending authorizations were deactivated and the records published so far removed.
    #[error("DNS-01 for {name} (site {site}): {source}")]
    Dns {
        /// The site being ordered.
        site: String,
        /// The identifier (`*.example.org`) or record name at fault.
        name: String,
        /// What went wrong (boxed: it is large, and rare).
        source: Box<crate::dns01::DnsError>,
    },
    /// The CA offers no DNS-01 challenge for a name.
    #[error("the CA offers no dns-01 challenge for {name} (site {site})")]
    NoDns01 {
        /// The site being ordered.
        site: String,
        /// The name without a DNS-01 challenge.
        name: String,
    },
    /// The site uses DNS-01 but configures no way to publish records.
    #[error(
        "site {site} uses dns-01 but has no DNS method: set `[acme.dns]` (RFC 2136) or          `dns_hook`, for every site or in the site"
    )]
    NoDnsMethod {
        /// The site.
        site: String,
    },
}

impl AcmeError {
    /// Whether the CA says the account certd used does not exist (RFC 8555 `accountDoesNotExist`).
    pub fn is_unknown_account(&self) -> bool {
        match self {
            Self::Rejected { problem, .. } | Self::AccountRejected { problem, .. } => problem
                .r#type
                .as_deref()
                .is_some_and(|kind| kind.ends_with(":accountDoesNotExist")),
            _ => false,
        }
    }

    /// When the CA asked certd to try again, if it did.
    pub fn retry_after(&self) -> Option<OffsetDateTime> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether this error concerns the CA as a whole (unreachable, TLS, not ACME, account) rather than
    /// one site's order.
    pub fn is_ca_wide(&self) -> bool {
        matches!(
            self,
            Self::Unreachable { .. }
                | Self::Tls { .. }
                | Self::NotAcme { .. }
                | Self::CaRoots { .. }
                | Self::AccountRejected { .. }
                | Self::UnknownProfile { .. }
        )
    }
}

impl AcmeError {
    /// Whether an order that failed with this error should go to the next configured CA: the CA is
    /// down (unreachable, timed out, a 5xx or `serverInternal`), or it rate-limits. A failed
    /// validation would fail at every CA, and a configuration problem (TLS roots, profile, EAB, a
    /// DNS method) is ours to fix, so those stay with the first CA's error.
    pub fn falls_through(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::RateLimited { .. } | Self::TimedOut { .. } => true,
            Self::Rejected { problem, .. } | Self::AccountRejected { problem, .. } => {
                is_outage(problem) || is_rate_limit(problem)
            }
            _ => false,
        }
    }
}

/// A problem document that says the CA itself is failing (HTTP 5xx, `serverInternal`).
fn is_outage(problem: &Problem) -> bool {
    problem.status.is_some_and(|status| status >= 500)
        || problem
            .r#type
            .as_deref()
            .is_some_and(|kind| kind.ends_with(":serverInternal"))
}

fn retry_hint(retry_after: &Option<OffsetDateTime>) -> String {
    match retry_after {
        Some(at) => format!(" (the CA asks to retry after {at})"),
        None => String::new(),
    }
}

/// Displays a problem document in full: `type: detail`, then each subproblem.
pub struct Described<'a>(pub &'a Problem);

impl fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let problem = self.0;
        f.write_str(problem.r#type.as_deref().unwrap_or("(no problem type)"))?;
        if let Some(detail) = &problem.detail {
            write!(f, ": {detail}")?;
        }
        if let Some(status) = problem.status {
            write!(f, " (HTTP {status})")?;
        }
        for sub in &problem.subproblems {
            f.write_str("; ")?;
            if let Some(identifier) = &sub.identifier {
                write!(f, "{}: ", identifier.authorized(false))?;
            }
            f.write_str(sub.r#type.as_deref().unwrap_or("(no problem type)"))?;
            if let Some(detail) = &sub.detail {
                write!(f, ": {detail}")?;
            }
        }
        Ok(())
    }
}

pub(super) fn is_rate_limit(problem: &Problem) -> bool {
    problem
        .r#type
        .as_deref()
        .is_some_and(|kind| kind.ends_with(":rateLimited"))
}

/// Maps a transport-level failure to the message an operator can act on.
pub(super) fn classify_ca_error(url: &str, err: instant_acme::Error) -> AcmeError {
    let url = url.to_owned();
    match err {
        instant_acme::Error::Api(problem) => AcmeError::AccountRejected {
            problem: Box::new(problem),
            eab_hint: "",
        },
        instant_acme::Error::Json(err) => AcmeError::NotAcme {
            url,
            reason: err.to_string(),
        },
        instant_acme::Error::InvalidUri(err) => AcmeError::NotAcme {
            url,
            reason: format!("invalid URL: {err}"),
        },
        instant_acme::Error::Timeout(_) => AcmeError::Unreachable {
            url,
            reason: "timed out".into(),
        },
        // A CA that answers with megabytes is reachable but not behaving like an ACME CA.
        instant_acme::Error::Other(inner)
            if matches!(
                inner.downcast_ref(),
                Some(super::http::CaResponseError::TooLarge(_))
            ) =>
        {
            AcmeError::NotAcme {
                url,
                reason: inner.to_string(),
            }
        }
        other => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&other);
            let mut reasons = Vec::new();
            while let Some(err) = source {
                if let Some(tls) = err.downcast_ref::<rustls::Error>() {
                    return AcmeError::Tls {
                        url,
                        reason: tls.to_string(),
                    };
                }
                if let Some(io) = err.downcast_ref::<std::io::Error>() {
                    if let Some(tls) = io
                        .get_ref()
                        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                    {
                        return AcmeError::Tls {
                            url,
                            reason: tls.to_string(),
                        };
                    }
                }
                let text = err.to_string();
                if reasons.last() != Some(&text) {
                    reasons.push(text);
                }
                source = err.source();
            }
            AcmeError::Unreachable {
                url,
                reason: reasons.join(": "),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod fallback_tests {
    use super::*;

    fn problem(kind: &str, status: Option<u16>) -> Box<Problem> {
        let json = match status {
            Some(status) => format!(r#"{{"type":"{kind}","detail":"x","status":{status}}}"#),
            None => format!(r#"{{"type":"{kind}","detail":"x"}}"#),
        };
        Box::new(serde_json::from_str(&json).unwrap())
    }

    #[test]
    fn outages_and_rate_limits_fall_through_validation_and_config_errors_do_not() {
        let site = || "example.org".to_owned();
        let url = || "https://ca.example/dir".to_owned();
        let through = [
            AcmeError::Unreachable {
                url: url(),
                reason: "connection refused".into(),
            },
            AcmeError::TimedOut {
                site: site(),
                stage: "issue the certificate",
            },
            AcmeError::RateLimited {
                site: site(),
                problem: problem("urn:ietf:params:acme:error:rateLimited", Some(429)),
                retry_after: None,
            },
            AcmeError::Rejected {
                site: site(),
                problem: problem("urn:ietf:params:acme:error:serverInternal", None),
            },
            AcmeError::Rejected {
                site: site(),
                problem: problem("about:blank", Some(503)),
            },
            AcmeError::AccountRejected {
                problem: problem("urn:ietf:params:acme:error:rateLimited", Some(429)),
                eab_hint: "",
            },
        ];
        for err in &through {
            assert!(err.falls_through(), "{err}");
        }
        let stays = [
            AcmeError::ChallengeFailed {
                site: site(),
                name: site(),
                problem: problem("urn:ietf:params:acme:error:unauthorized", Some(403)),
            },
            AcmeError::Rejected {
                site: site(),
                problem: problem("urn:ietf:params:acme:error:rejectedIdentifier", Some(400)),
            },
            AcmeError::AccountRejected {
                problem: problem(
                    "urn:ietf:params:acme:error:externalAccountRequired",
                    Some(403),
                ),
                eab_hint: "",
            },
            AcmeError::Tls {
                url: url(),
                reason: "unknown issuer".into(),
            },
            AcmeError::NotAcme {
                url: url(),
                reason: "not JSON".into(),
            },
            AcmeError::UnknownProfile {
                site: site(),
                profile: "x".into(),
                offered: "classic".into(),
            },
            AcmeError::NoDnsMethod { site: site() },
        ];
        for err in &stays {
            assert!(!err.falls_through(), "{err}");
        }
    }
}
